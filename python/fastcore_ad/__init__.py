"""fastcore_ad: fast kernels for anomaly detection, membership inference and interpretable
text classification, in Rust (numpy arrays) and CUDA (cupy arrays).

>>> import fastcore_ad
>>> sorted(fastcore_ad.info()["backends"])[0]
'rust'
"""

from __future__ import annotations

import os as _os

from . import _core
from ._core import FastcoreError, SingularCovarianceError
from . import metrics, gaussian, mia, musc, patchcore, tsetlin
from .gaussian import GaussianAD, mahalanobis
from .musc import MuSc
from .patchcore import PatchCore, knn
from .class_gaussian import ClassGaussian
from .tsetlin import TsetlinEnsemble, TsetlinMachine, TsetlinOneVsRest, TsetlinVote
from . import features

__version__ = _core.__version__

__all__ = [
    "FastcoreError",
    "SingularCovarianceError",
    "GaussianAD",
    "mahalanobis",
    "metrics",
    "gaussian",
    "mia",
    "musc",
    "MuSc",
    "patchcore",
    "knn",
    "PatchCore",
    "ClassGaussian",
    "tsetlin",
    "TsetlinMachine",
    "TsetlinEnsemble",
    "TsetlinOneVsRest",
    "TsetlinVote",
    "features",
    "info",
]

if hasattr(_os, "register_at_fork"):
    # rayon's threads do not survive fork(): the child starts fresh pools. The pool cache's lock
    # is held across the fork, so no other thread can hold it there.
    _os.register_at_fork(before=_core.before_fork, after_in_parent=_core.after_fork_in_parent,
                         after_in_child=_core.reset_after_fork)


def _check_thread_variable(raw):
    """The Rust pool reads ``FASTCORE_AD_NUM_THREADS`` as a nonzero 64-bit integer and ignores
    anything else (every CPU is used): say so once, at import, rather than silently."""
    text = (raw or "").strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not text or (digits.isascii() and digits.isdigit() and 0 != int(text) and -2**63 <= int(text) < 2**63):
        return
    import warnings  # noqa: PLC0415

    warnings.warn(f"FASTCORE_AD_NUM_THREADS={raw!r} is not a nonzero integer: ignored, every CPU is used",
                  RuntimeWarning, stacklevel=3)


_check_thread_variable(_os.environ.get("FASTCORE_AD_NUM_THREADS"))


def info() -> dict:
    """Version, available backends, default thread count and the GPU (if any)."""
    from ._dispatch import cupy_module  # noqa: PLC0415

    backends = ["rust"]
    gpu = None
    cp = cupy_module()
    if cp is not None:
        try:
            if cp.is_available():
                backends.append("cuda")
                props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
                name = props["name"]
                gpu = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:  # pragma: no cover - depends on the machine
            pass
    return {
        "version": __version__,
        "backends": backends,
        "threads": _core.resolve_threads(None),
        "gpu": gpu,
        "cupy": getattr(cp, "__version__", None),
        "cuda_families": list(_core.cuda_families()),
    }
