"""Reading torch checkpoints without torch: the legacy (pre-zip) pickle format and the zip format,
through unpicklers that build only tensors and (ordered) dicts and refuse every other global.

Public through :mod:`fastcore_ad.features` (``load_torch_file``).
"""

from __future__ import annotations

import collections
import importlib.util
import io
import lzma
import pickle
import pickletools
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._memory import check_fits

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


def _scanned(stream):
    """The stream, once the pickle that starts at its position has been walked opcode by opcode
    and found whole. The C unpickler allocates what a counted opcode declares before reading it
    (a few bytes can declare terabytes) and grows its memo to the largest index it is given, so
    every declared length must be backed by bytes that are there (pickletools reads them from
    the in-memory stream, which returns at most what it holds), and every memo index must be at
    most the number of opcodes before it, as a pickler numbers them."""
    start = stream.tell()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pickletools' complaints about a damaged string's escapes
        try:
            for count, (opcode, arg, at) in enumerate(pickletools.genops(stream)):
                if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= int(arg) <= count:
                    raise ValueError(f"memo index {arg} at byte {at} is out of sequence")
        except ValueError as exc:
            raise ValueError(f"not a torch checkpoint, or a damaged one (pickle: {exc})") from None
    stream.seek(start)
    return stream


def _plain_record(stream):
    return _PlainUnpickler(_scanned(stream)).load()


def _remaining_bytes(stream) -> int | None:
    try:
        here = stream.tell()
        end = stream.seek(0, io.SEEK_END)
        stream.seek(here)
        return end - here
    except (AttributeError, OSError, ValueError):
        return None


def _whole(values) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)


# A checkpoint's arrays hold about the bytes of its storages (tied weights share one): the
# arrays built from a file may hold at most this many times the file's bytes, so that views
# repeating one element, or one storage referenced thousands of times, cannot inflate a small
# file into gigabytes (the same bound as for a zip entry's inflation below).
_MAX_INFLATION = 64


def _array_budget(stream) -> list:
    return [_MAX_INFLATION * stream.getbuffer().nbytes + (1 << 20)]


def _materialize(obj, storages, budget):
    """``obj`` with its tensor references as numpy arrays; ``budget`` = [bytes still allowed]."""
    if isinstance(obj, _TensorRef):
        if obj.storage_key not in storages:
            raise ValueError(f"tensor refers to missing storage {obj.storage_key!r}")
        flat = storages[obj.storage_key].view(obj.dtype)
        # Sizes, strides and offset are read as the file gives them: negative strides would
        # reach before the storage, and a zero stride can repeat one element into any size.
        if not _whole((obj.offset, *obj.size, *obj.stride)) or len(obj.size) != len(obj.stride):
            raise ValueError(f"tensor size {obj.size}, stride {obj.stride} and offset {obj.offset} must be "
                             f"non-negative integers, one stride per dimension")
        if not obj.size:
            if obj.offset >= flat.shape[0]:
                raise ValueError(f"scalar tensor at {obj.offset} lies past its storage of {flat.shape[0]} elements")
            return flat[obj.offset].copy()
        if 0 in obj.size:
            return np.empty(obj.size, dtype=flat.dtype)
        last = obj.offset + sum((n - 1) * s for n, s in zip(obj.size, obj.stride))
        if last >= flat.shape[0]:
            raise ValueError(f"tensor of size {obj.size} runs past its storage of {flat.shape[0]} elements")
        nbytes = int(np.prod(obj.size, dtype=object)) * flat.itemsize
        if nbytes > budget[0]:
            raise ValueError(f"tensor of size {obj.size} would take the arrays past {_MAX_INFLATION} times "
                             "the file's size (repeated views or references of its storages)")
        budget[0] -= nbytes
        check_fits(nbytes, f"tensor of size {obj.size}")
        base = flat[obj.offset:]
        view = np.lib.stride_tricks.as_strided(
            base, shape=obj.size, strides=tuple(s * flat.itemsize for s in obj.stride), writeable=False)
        return np.array(view)
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialize(v, storages, budget)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v, storages, budget) for v in obj)
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
    state = _StateDictUnpickler(_scanned(stream)).load()
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
    return _materialize(state, storages, _array_budget(stream))


def _read_entry(archive, name) -> bytes:
    """The bytes of zip entry ``name``. Entries that would inflate far past their compressed
    size (a zip bomb) are refused before reading, and the entry is read with its declared size
    as the limit, so that a header understating the size cannot inflate past it either."""
    info = archive.getinfo(name)
    # zipfile bounds the output of each inflate step only for deflate; one bzip2 or lzma step
    # can inflate a few kilobytes into gigabytes. torch writes its entries stored.
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ValueError(f"{name}: compression method {info.compress_type} (torch files are stored or deflated)")
    if info.file_size > _MAX_INFLATION * info.compress_size + (1 << 20):
        raise ValueError(f"{name}: declares {info.file_size} bytes from {info.compress_size} compressed")
    check_fits(info.file_size, name)
    with archive.open(info) as entry:
        return entry.read(info.file_size)


def _load_zip(stream) -> dict:
    with zipfile.ZipFile(stream) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise ValueError("zip file without data.pkl is not a torch file")
        prefix = pkl[: -len("data.pkl")]
        state = _StateDictUnpickler(_scanned(io.BytesIO(_read_entry(archive, pkl)))).load()
        storages = {}

        def gather(obj):
            if isinstance(obj, _TensorRef) and obj.storage_key not in storages:
                name = f"{prefix}data/{obj.storage_key}"
                if name not in names:
                    raise ValueError(f"tensor refers to missing storage {obj.storage_key!r}")
                storages[obj.storage_key] = np.frombuffer(_read_entry(archive, name), dtype=obj.dtype)
            elif isinstance(obj, dict):
                for v in obj.values():
                    gather(v)
            elif isinstance(obj, (list, tuple)):
                for v in obj:
                    gather(v)

        gather(state)
    return _materialize(state, storages, _array_budget(stream))


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
    # In memory, so that no declared length makes a read allocate more than the file holds.
    stream = io.BytesIO(path.read_bytes())
    try:
        if zipfile.is_zipfile(stream):
            return _load_zip(stream)
        stream.seek(0)
        return _load_legacy(stream)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except MemoryError as exc:
        raise MemoryError(f"{path}: {exc}") from None
    except _UNREADABLE as exc:
        raise ValueError(f"{path}: not a readable torch state dict ({type(exc).__name__}: {exc})") from None


# What a damaged or crafted file raises on its way through zipfile and the unpicklers: bad
# archives (BadZipFile; NotImplementedError for unknown versions, methods and flags;
# RuntimeError for encryption; OSError for offsets before the start; zlib.error and
# lzma.LZMAError for damaged compressed data), truncation, and opcodes applied to objects of
# the wrong kind (AttributeError, TypeError, IndexError, ...).
_UNREADABLE = (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile, NotImplementedError,
               RuntimeError, OSError, zlib.error, lzma.LZMAError, AttributeError, TypeError, KeyError, IndexError,
               OverflowError)
