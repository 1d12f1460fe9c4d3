"""Array intake and backend dispatch shared by every family.

numpy arrays (and CPU tensors through DLPack) go to the Rust kernels; cupy arrays (and CUDA
tensors through DLPack) go to the CUDA kernels and come back as cupy; dask arrays go to
``_distributed``, whose chunk tasks call the two above.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_DLPACK_CPU = 1
_DLPACK_CUDA = (2, 3, 13)  # CUDA, CUDA host, CUDA managed


def cupy_module():
    """The cupy module if it imports, else None (never raises)."""
    try:
        import cupy  # noqa: PLC0415

        return cupy
    except Exception:  # pragma: no cover - depends on the machine
        return None


def is_cupy(x: Any) -> bool:
    cp = cupy_module() if type(x).__module__.startswith("cupy") else None
    return cp is not None and isinstance(x, cp.ndarray)


def is_dask(x: Any) -> bool:
    """True for a dask array (the distributed path in ``_distributed``); never imports dask."""
    return type(x).__module__.startswith("dask.") and hasattr(x, "__dask_graph__") and hasattr(x, "chunks")


def as_array(x: Any, name: str):
    """numpy or cupy array for `x`, zero-copy where possible. Returns (array, backend)."""
    if isinstance(x, np.ndarray):
        return x, "numpy"
    if is_cupy(x):
        return x, "cupy"
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        device_type = int(x.__dlpack_device__()[0])
        if device_type == _DLPACK_CPU:
            if getattr(x, "requires_grad", False):
                x = x.detach()
            return np.from_dlpack(x), "numpy"
        if device_type in _DLPACK_CUDA:
            cp = cupy_module()
            if cp is None:
                raise TypeError(f"{name}: a CUDA array needs cupy (pip install 'fastcore_ad[cuda]')")
            if getattr(x, "requires_grad", False):
                x = x.detach()
            return cp.from_dlpack(x), "cupy"
        raise TypeError(f"{name}: unsupported DLPack device type {device_type}")
    if hasattr(x, "__array__") or isinstance(x, (list, tuple, int, float)):
        try:
            return np.asarray(x), "numpy"
        except ValueError as exc:  # ragged nested lists
            raise ValueError(f"{name}: not a rectangular array ({exc})") from None
    raise TypeError(f"{name}: expected an array (numpy, cupy, torch or DLPack), got {type(x).__name__}")


def same_backend(arrays: dict[str, Any]):
    """Intake several arrays; all must live on the same side. Returns (dict, backend)."""
    out, backends = {}, set()
    for name, value in arrays.items():
        out[name], backend = as_array(value, name)
        backends.add(backend)
    if len(backends) > 1:
        names = ", ".join(arrays)
        raise TypeError(f"{names}: mix of CPU (numpy) and GPU (cupy) arrays; put them on one device")
    return out, (backends.pop() if backends else "numpy")


def xp_of(backend: str):
    return cupy_module() if backend == "cupy" else np


def float_array(x, name: str, *, backend: str = "numpy", ndim=None, dtype=None, allow_nonfinite=False):
    """A C-contiguous float32/float64 array (float16 and integer inputs are widened).

    Raises ValueError naming `name` for a wrong number of dimensions, an empty array or
    NaN / infinity.
    """
    xp = xp_of(backend)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a numeric array, got dtype {x.dtype}")
    if dtype is None:
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else (
            np.float32 if x.dtype in (np.float16,) else np.float64)
    # Shape first, on the view: a broadcast view of 2**40 elements must fail by name, not by
    # numpy's "Unable to allocate" in the copy below.
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name}: expected {want} dimensions, got shape {tuple(x.shape)}")
    if x.size == 0:
        raise ValueError(f"{name}: empty array (shape {tuple(x.shape)})")
    if backend == "numpy" and (x.dtype != dtype or not x.flags.c_contiguous):
        from ._memory import check_fits  # noqa: PLC0415

        check_fits(int(x.size) * np.dtype(dtype).itemsize, f"{name} (a contiguous {np.dtype(dtype)} copy of shape {tuple(x.shape)})")
    x = xp.ascontiguousarray(x, dtype=dtype)
    if not allow_nonfinite and not bool(xp.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or infinity")
    return x


def binary_labels(y, name: str, *, backend: str = "numpy"):
    """uint8 0/1 labels from bool, integer or float arrays; anything else is a ValueError."""
    xp = xp_of(backend)
    if y.dtype == np.bool_:
        return xp.ascontiguousarray(y).view(np.uint8)
    if y.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected bool or 0/1 labels, got dtype {y.dtype}")
    if y.size and not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f"{name}: labels must be 0/1 or bool")
    return xp.ascontiguousarray(y, dtype=np.uint8)


def to_numpy(x, backend: str):
    return x.get() if backend == "cupy" else x


def kernels(backend: str):
    """The kernel namespace of a backend: ``_core`` (Rust) for numpy, the CUDA modules for cupy.

    Both expose the same function names and signatures, so family code calls
    ``kernels(backend).mahalanobis(...)`` and never branches on the backend itself.
    """
    if backend == "cupy":
        from . import _cuda  # noqa: PLC0415

        return _cuda
    from . import _core  # noqa: PLC0415

    return _core


def require_cupy(what: str):
    """The cupy module with a usable GPU, or RuntimeError naming what needed it."""
    cp = cupy_module()
    try:
        available = cp is not None and bool(cp.is_available())
    except Exception:  # pragma: no cover - depends on the machine
        available = False
    if not available:
        raise RuntimeError(f"{what}: needs cupy and a CUDA GPU (pip install 'fastcore_ad[cuda]'); use device='cpu'")
    return cp


def to_backend(x, backend: str):
    """``x`` (numpy or cupy) moved to ``backend``'s side."""
    if backend == "cupy":
        return x if is_cupy(x) else require_cupy("device='cuda'").asarray(x)
    return x.get() if is_cupy(x) else x


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device, backend: str, *, check_only: bool = False) -> str:
    """The backend a computation runs on: ``"auto"`` follows the input's ``backend``, ``"cpu"``
    runs the Rust kernels, ``"cuda"`` the CUDA kernels (RuntimeError without cupy and a GPU)."""
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"device: expected one of {DEVICES}, got {device!r}")
    if check_only or device == "auto":
        return backend
    if device == "cpu":
        return "numpy"
    require_cupy("device='cuda'")
    return "cupy"


# Outside these magnitudes sums of squares (GEMM dot products and norms, squared differences)
# can overflow or lose their digits in subnormals: float32 values near 1.8e19 (float64 near
# 1.3e154) overflow, float32 values of 1e-30 underflow to zero.
_SQUARE_SAFE = {np.dtype(np.float64): 2.0**480, np.dtype(np.float32): 2.0**40}


def square_safe_bound(dtype) -> float:
    """Magnitudes within [1 / bound, bound] square and sum safely in ``dtype``."""
    return _SQUARE_SAFE.get(np.dtype(dtype), _SQUARE_SAFE[np.dtype(np.float32)])


def square_safe_scale(arrays, xp) -> float:
    """1.0, or the power of two that brings the largest magnitude of ``arrays`` (float32 or
    float64) to [0.5, 1) when it lies outside the safe range. Distances scale exactly with a
    power of two, so measuring ``x * scale`` and dividing by ``scale`` changes no digit."""
    dtype = np.dtype(arrays[0].dtype)
    # max and -min: two reads of each array, no temporary the size of it.
    top = max(max(float(a.max()), -float(a.min())) if a.size else 0.0 for a in arrays)
    safe = square_safe_bound(dtype)
    if top == 0.0 or 1.0 / safe <= top <= safe:
        return 1.0
    # The scale itself must be a number of the dtype (subnormal inputs stop short of [0.5, 1)).
    limit = np.finfo(dtype).maxexp - 8
    return float(np.ldexp(1.0, max(-limit, min(limit, -int(np.frexp(top)[1])))))


def real_or_inf(value) -> float:
    """``float(value)``, with Python ints past float64's range as +-inf (``float`` raises
    OverflowError for them), so that range checks refuse them by name."""
    try:
        return float(value)
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")


def check_switch(value, name: str) -> bool:
    """A boolean argument (Python or numpy bool; 0, 1 and strings refused), naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def check_batch_size(batch_size) -> int:
    """Items per batch: an integer >= 1 (bool refused)."""
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
    return int(batch_size)


def check_paired_shapes(scores_shape, labels_shape):
    """Scores and labels are paired element by element: their shapes must agree up to axes of
    length 1 (a column of labels pairs with a row of scores)."""
    def squeezed(shape):
        return tuple(n for n in shape if n != 1)

    if squeezed(scores_shape) != squeezed(labels_shape):
        raise ValueError(f"scores and labels differ in shape: {tuple(scores_shape)} != {tuple(labels_shape)}; "
                         "their elements would be paired by position")
