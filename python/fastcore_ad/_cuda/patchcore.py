"""Memory-bank kernels on CUDA: the same entry points as ``_core.knn`` and ``_core.greedy_coreset``."""

from __future__ import annotations

import numpy as np

from . import _runtime, plans

KNN_EXACT = _runtime.Kernel("patchcore", "knn_exact", (("float",), ("double",)))
CORESET_UPDATE = _runtime.Kernel("patchcore", "coreset_update", (("float",), ("double",)))
CORESET_PICK = _runtime.Kernel("patchcore", "coreset_pick")
ROW_NORMS = _runtime.Kernel("patchcore", "row_norms", (("float",), ("double",)))

_METRIC_CODES = {"euclidean": 0, "cosine": 1}


def knn(queries, bank, k, metric="euclidean", n_jobs=None):
    """Exact k nearest neighbours (k <= 32 on the GPU): ``(distances [m, k], indices [m, k])``."""
    rt = _runtime.current()
    xp = rt.xp
    m, d = (int(v) for v in queries.shape)
    n = int(bank.shape[0])
    code = _METRIC_CODES[metric]
    launches = plans.knn_exact(m, k)
    if code == 1:
        q_norm, b_norm = row_norms(queries), row_norms(bank)
        for name, norms in (("queries", q_norm), ("bank", b_norm)):
            bad = xp.flatnonzero(~(norms > 0) | ~xp.isfinite(norms))
            if bad.size:
                row = int(bad[0])
                raise ValueError(f"{name}: row {row} has norm {float(norms[row])}; the cosine distance needs "
                                 "nonzero finite vectors")
    else:
        q_norm = b_norm = xp.zeros(1, dtype=np.float64)
    distances = xp.empty((m, k), dtype=np.float64)
    indices = xp.empty((m, k), dtype=np.int64)
    ct = _runtime.ctype(queries.dtype)
    for piece in launches:
        rt.launch(KNN_EXACT, (ct,), piece, (
            queries, np.int64(m), bank, np.int64(n), np.int64(d), np.int64(k), np.int32(code),
            xp.ascontiguousarray(q_norm), xp.ascontiguousarray(b_norm), np.int64(piece.offsets["query0"]),
            distances, indices))
    return distances, indices


def row_norms(x):
    """float64 norms ``[n]`` of the rows of ``x [n, d]``, summed in order as the Rust kernel sums
    them, so that cosine distances round alike on both backends."""
    rt = _runtime.current()
    n, d = (int(v) for v in x.shape)
    out = rt.xp.empty(n, dtype=np.float64)
    for piece in plans.row_norms(n):
        rt.launch(ROW_NORMS, (_runtime.ctype(x.dtype),), piece, (x, np.int64(n), np.int64(d), out))
    return out


def greedy_coreset(x, n_select, start=0, progress=None, n_jobs=None):
    """Exact greedy k-center: ``n_select`` int64 indices of ``x [n, d]`` from ``start``."""
    rt = _runtime.current()
    xp = rt.xp
    n, d = (int(v) for v in x.shape)
    ct = _runtime.ctype(x.dtype)
    (update,) = plans.coreset_update(n)
    (pick,) = plans.coreset_pick()
    blocks = update.grid[0]
    selected = xp.zeros(n_select, dtype=np.int64)
    selected[0] = start
    min_d2 = xp.full(n, np.inf, dtype=np.float64)
    block_value = xp.empty(blocks, dtype=np.float64)
    block_index = xp.empty(blocks, dtype=np.int64)
    for step in range(n_select - 1):
        rt.launch(CORESET_UPDATE, (ct,), update, (
            x, np.int64(n), np.int64(d), selected, np.int64(step), min_d2, block_value, block_index))
        rt.launch(CORESET_PICK, (), pick, (block_value, block_index, np.int64(blocks), selected, np.int64(step)))
        if progress is not None and step % 64 == 0:
            progress(step + 1)
    if progress is not None:
        progress(n_select)
    return selected
