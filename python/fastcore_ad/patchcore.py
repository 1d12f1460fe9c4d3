"""Memory-bank kernels: exact k nearest neighbours against a bank and the greedy k-center coreset
of PatchCore (Roth et al., CVPR 2022).

numpy arrays run on the Rust kernels, cupy arrays on the CUDA kernels (and come back as cupy).

>>> import numpy as np
>>> from fastcore_ad import knn
>>> bank = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
>>> distances, indices = knn(np.array([[0.9, 0.1]]), bank, k=2)
>>> indices.tolist(), np.round(distances, 4).tolist()
([[1, 0]], [[0.1414, 0.9055]])
"""

from __future__ import annotations

import numpy as np

from ._dispatch import as_array, float_array, kernels, same_backend
from .progress import progress

__all__ = ["knn", "greedy_coreset"]

METRICS = ("euclidean", "cosine")


def _whole(value, name: str, low: int, high: int | None = None) -> int:
    """An integer in [low, high] (bool and non-integers refused), naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f", {high}"
        raise ValueError(f"{name}: must lie in [{low}{upper}], got {value}")
    return value


def knn(queries, bank, k=1, *, metric="euclidean", n_jobs=None):
    """Exact k nearest neighbours of each row of ``queries [m, d]`` among the rows of
    ``bank [n, d]``: ``(distances [m, k] float64, indices [m, k] int64)``, ascending, ties
    broken by the lower bank index.

    ``metric="euclidean"`` gives ``||q - b||``, ``"cosine"`` gives ``1 - q.b / (|q| |b|)``.
    Dot products come from tiled GEMM; every candidate that could enter the top k is
    re-measured exactly in float64, so the result equals a float64 brute force while memory
    stays at one tile per thread (the full distance matrix is never formed).

    >>> d, i = knn(np.eye(3), np.eye(3), k=1)
    >>> i.ravel().tolist(), d.ravel().tolist()
    ([0, 1, 2], [0.0, 0.0, 0.0])
    """
    arrays, backend = same_backend({"queries": queries, "bank": bank})
    q = float_array(arrays["queries"], "queries", backend=backend, ndim=2)
    b = float_array(arrays["bank"], "bank", backend=backend, ndim=2, dtype=q.dtype)
    if b.shape[1] != q.shape[1]:
        raise ValueError(f"bank: expected {q.shape[1]} features like the queries, got {b.shape[1]}")
    k = _whole(k, "k", 1, int(b.shape[0]))
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    return kernels(backend).knn(q, b, k, metric, n_jobs)


def greedy_coreset(X, n_select, *, start=0, n_jobs=None, progress_bar=True):
    """Exact greedy k-center selection (PatchCore's coreset): ``n_select`` row indices of
    ``X [n, d]`` (int64), beginning with ``start``; each step takes the point whose minimum
    squared distance to the points selected so far is largest (ties: the lowest index).

    The minimum distances are updated incrementally (one pass over ``X`` per step, in
    parallel) and compared in float64, so the selection equals a float64 implementation of
    the rule index for index.

    >>> X = np.array([[0.0], [1.0], [10.0], [4.0]])
    >>> greedy_coreset(X, 3, progress_bar=False).tolist()
    [0, 2, 3]
    """
    x, backend = as_array(X, "X")
    x = float_array(x, "X", backend=backend, ndim=2)
    n = int(x.shape[0])
    n_select = _whole(n_select, "n_select", 1, n)
    start = _whole(start, "start", 0, n - 1)
    # A bar when the passes together read over ~5e9 values (seconds of work).
    bar = progress(None, total=n_select, desc="coreset", enabled=progress_bar and n_select * n * x.shape[1] > 5e9)
    done = [0]

    def advance(count):
        if bar is not None:
            bar.update(count - done[0])
        done[0] = count

    try:
        return kernels(backend).greedy_coreset(x, n_select, start, advance, n_jobs)
    finally:
        if bar is not None:
            bar.close()
