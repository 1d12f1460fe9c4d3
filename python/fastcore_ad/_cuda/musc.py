"""MuSc on CUDA: the same entry points as ``_core.musc_lnamd``, ``_core.musc_mutual_scores`` and
``_core.musc_scores_against_bank``."""

from __future__ import annotations

import numpy as np

from . import _runtime, plans

LNAMD = _runtime.Kernel("musc", "musc_lnamd", (("float",), ("double",)))
PAIR_MINIMA = _runtime.Kernel("musc", "musc_pair_minima", (("float",), ("double",)))
TOP_K_MEAN = _runtime.Kernel("musc", "musc_top_k_mean", (("float",), ("double",)))
ALIGNED_MINIMA = _runtime.Kernel("musc", "musc_aligned_minima", (("float",), ("double",)))

_LNAMD_MAX_GRID_X = plans.MAX_GRID_X  # patches per launch (lowered by the tests to split small inputs)
LNAMD_EPS = 1e-5  # added to each image's variance, as in the Rust kernel


def musc_lnamd(features, r, n_jobs=None):
    """LNAMD of ``features [N, H, W, C]`` with an ``r x r`` box: ``[N, H, W, C]``, unit-norm patches."""
    rt = _runtime.current()
    xp = rt.xp
    n, h, w, c = (int(v) for v in features.shape)
    flat = features.reshape(n, -1).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # caught below (the host runtime is numpy)
        mean = flat.mean(axis=1)
        inv_std = 1.0 / xp.sqrt(((flat - mean[:, None]) ** 2).mean(axis=1) + LNAMD_EPS)
    huge = ~(xp.isfinite(mean) & xp.isfinite(inv_std) & (inv_std > 0))
    if bool(huge.any()):
        # Squares past float64's range: the Rust kernel's rule, statistics of the image over its
        # largest magnitude.
        top = xp.abs(flat[huge]).max(axis=1)
        scaled = flat[huge] / top[:, None]
        m = scaled.mean(axis=1)
        v = ((scaled - m[:, None]) ** 2).mean(axis=1)
        mean[huge] = m * top
        inv_std[huge] = 1.0 / (xp.sqrt(v + LNAMD_EPS / top / top) * top)
    out = xp.empty_like(features)
    for piece in plans.musc_lnamd(n * h * w, max_grid_x=_LNAMD_MAX_GRID_X):
        rt.launch(LNAMD, (_runtime.ctype(features.dtype),), piece, (
            features, xp.ascontiguousarray(mean), xp.ascontiguousarray(inv_std),
            np.int64(h), np.int64(w), np.int64(c), np.int64(r), np.int64(piece.offsets["patch0"]), out))
    return out


def _jobs(q0: int, q1: int, images: int, mutual: bool) -> np.ndarray:
    """(query image i, reference image j, symmetric) rows for the queries q0..q1.

    Mutual scoring computes a pair of two queries of the chunk once and writes both directions.
    """
    i = np.repeat(np.arange(q0, q1, dtype=np.int64), images)
    j = np.tile(np.arange(images, dtype=np.int64), q1 - q0)
    in_chunk = (j >= q0) & (j < q1)
    keep = ~((j == i) | (in_chunk & (j < i))) if mutual else np.ones(i.shape, dtype=bool)
    symmetric = (in_chunk if mutual else np.zeros(i.shape, dtype=bool)).astype(np.int64)
    return np.ascontiguousarray(np.stack([i, j, symmetric], axis=1)[keep])


def _pair_scores(q, bank, top_ratio, max_memory):
    """Mutual scores (``bank`` None) or scores against a bank: ``[M, P]`` in q's dtype."""
    rt = _runtime.current()
    xp = rt.xp
    mutual = bank is None
    b = q if mutual else bank
    m, p, c = (int(v) for v in q.shape)
    nb, pb = int(b.shape[0]), int(b.shape[1])
    refs = m - 1 if mutual else nb
    qn = (q.astype(np.float64) ** 2).sum(axis=-1)
    bn = qn if mutual else (b.astype(np.float64) ** 2).sum(axis=-1)
    plan = plans.musc_pairs(m, refs, p, c, top_ratio, max_memory, q.dtype.itemsize,
                            float(xp.sqrt(qn.max())), float(xp.sqrt(bn.max())))
    qn, bn = xp.ascontiguousarray(qn.astype(q.dtype)), xp.ascontiguousarray(bn.astype(q.dtype))
    ct = _runtime.ctype(q.dtype)
    out = xp.empty((m, p), dtype=q.dtype)
    for q0 in range(0, m, plan.chunk):
        q1 = min(m, q0 + plan.chunk)
        jobs = _jobs(q0, q1, m if mutual else nb, mutual)
        keys = xp.full((q1 - q0, refs, p), np.iinfo(np.uint64).max, dtype=np.uint64)
        table = xp.asarray(jobs)
        for piece in plans.musc_pair_minima(len(jobs), p, pb):
            j0 = piece.offsets["job0"]
            rt.launch(PAIR_MINIMA, (ct,), piece, (
                q, qn, b, bn, xp.ascontiguousarray(table[j0:j0 + piece.grid[0]]), np.int64(p), np.int64(pb),
                np.int64(c), np.int64(q0), np.int64(refs), np.int32(1 if mutual else 0), np.float64(plan.tol), keys))
        count = (q1 - q0) * p
        part = out[q0:q1]
        for piece in plans.musc_top_k_mean(count):
            rt.launch(TOP_K_MEAN, (ct,), piece, (
                keys, np.int64(q1 - q0), np.int64(refs), np.int64(p), np.int64(plan.k), part))
    return out


def musc_mutual_scores(patches, top_ratio, max_memory=None, n_jobs=None):
    """Mutual scores of ``patches [N, P, C]``: ``[N, P]``."""
    return _pair_scores(patches, None, top_ratio, max_memory)


def musc_scores_against_bank(queries, bank, top_ratio, max_memory=None, n_jobs=None):
    """Scores of ``queries [M, P, C]`` against ``bank [Nb, Pb, C]``: ``[M, P]``."""
    return _pair_scores(queries, bank, top_ratio, max_memory)


def musc_aligned_mutual_scores(patches, top_ratio, window, n_jobs=None):
    """Aligned mutual scores of ``patches [N, H, W, C]``: ``[N, H, W]``."""
    rt = _runtime.current()
    xp = rt.xp
    n, h, w, c = (int(v) for v in patches.shape)
    p, refs = h * w, n - 1
    plan = plans.musc_aligned(n, p, top_ratio)
    ct = _runtime.ctype(patches.dtype)
    out = xp.empty((n, p), dtype=patches.dtype)
    for q0 in range(0, n, plan.chunk):
        q1 = min(n, q0 + plan.chunk)
        keys = xp.empty((q1 - q0, refs, p), dtype=np.uint64)
        for piece in plans.musc_aligned_minima((q1 - q0) * refs * p):
            rt.launch(ALIGNED_MINIMA, (ct,), piece, (
                patches, np.int64(n), np.int64(h), np.int64(w), np.int64(c), np.int64(q0), np.int64(q1 - q0),
                np.int64(window), keys))
        part = out[q0:q1]
        for piece in plans.musc_top_k_mean((q1 - q0) * p):
            rt.launch(TOP_K_MEAN, (ct,), piece, (
                keys, np.int64(q1 - q0), np.int64(refs), np.int64(p), np.int64(plan.k), part))
    return out.reshape(n, h, w)
