"""Gaussian AD on CUDA: the same entry points as ``_core.mahalanobis`` / ``_core.mahalanobis_per_position``."""

from __future__ import annotations

import numpy as np

from . import _runtime, plans

WHITENED_SQ_NORMS = _runtime.Kernel("gaussian", "whitened_sq_norms",
                                    (("float", "float"), ("double", "double")))

SHAPE_CODES = {"lower": 0, "upper": 1, "full": 2}


def _whitened_norms(x, mean, factor, shape: str, positions: int):
    """x ``[m, positions, d]``, mean ``[positions, d]``, factor ``[positions, d, k]`` -> ``[m, positions]``."""
    rt = _runtime.current()
    xp = rt.xp
    m, d = int(x.shape[0]), int(x.shape[-1])
    k = int(factor.shape[-1])
    out_sq = xp.zeros((positions, m), dtype=np.float64)
    ct = _runtime.ctype(x.dtype)
    for piece in plans.whitened_sq_norms(m, k, positions):
        rt.launch(WHITENED_SQ_NORMS, (ct, ct), piece, (
            x, np.int64(m), np.int64(d), np.int64(positions * d), np.int64(d), mean, factor, np.int64(k),
            np.int32(SHAPE_CODES[shape]), np.int64(piece.offsets["row_tile0"]), np.int64(piece.offsets["pos0"]),
            out_sq))
    return xp.ascontiguousarray(xp.sqrt(out_sq).T.astype(x.dtype))


def mahalanobis(x, mean, w, shape, n_jobs=None):
    """``||(x_i - mean) @ w||`` for x ``[m, d]`` and a factor ``w [d, k]`` of the given shape: ``[m]``."""
    return _whitened_norms(x, mean, w, shape, 1)[:, 0]


def mahalanobis_per_position(x, means, factors, shape, n_jobs=None):
    """x ``[m, P, d]`` against ``P`` Gaussians (means ``[P, d]``, factors ``[P, d, d]``): ``[m, P]``."""
    return _whitened_norms(x, means, factors, shape, int(x.shape[1]))
