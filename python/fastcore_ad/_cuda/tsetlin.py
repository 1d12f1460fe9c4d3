"""Tsetlin Machine prediction on CUDA: the same entry point as ``_core.tsetlin_class_sums``."""

from __future__ import annotations

import numpy as np

from . import _runtime, plans

CLASS_SUMS = _runtime.Kernel("tsetlin", "tsetlin_class_sums")


def tsetlin_class_sums(config, action, weights, docs, n_jobs=None):
    """Class sums int64 ``[n, n_classes]`` of packed documents ``docs [n, words]`` (uint64).

    ``action`` is the include plane ``[banks, clauses, 2 * words]`` and ``weights`` the clause
    weights, as for the Rust kernel (host or device arrays).
    """
    rt = _runtime.current()
    xp = rt.xp
    n, fw = int(docs.shape[0]), int(docs.shape[1])
    banks, clauses, lw = (int(v) for v in action.shape)
    if lw != 2 * fw:
        raise ValueError(f"docs: expected {lw // 2} words per document like the model, got {fw}")
    total = banks * clauses
    k = int(config["n_classes"])
    # Word-major include bits, so a warp's clauses read contiguous memory.
    action_t = xp.ascontiguousarray(xp.asarray(action).reshape(total, lw).T)
    w = xp.ascontiguousarray(xp.asarray(weights), dtype=np.int32)
    docs = xp.ascontiguousarray(xp.asarray(docs), dtype=np.uint64)
    sums = xp.zeros((n, k), dtype=np.int64)
    for piece in plans.tsetlin_class_sums(n, total):
        rt.launch(CLASS_SUMS, (), piece, (
            docs, np.int64(n), np.int64(fw), action_t, np.int64(total), np.int64(clauses), w, np.int64(k),
            np.int32(1 if config["coalesced"] else 0), np.int64(piece.offsets["doc0"]),
            np.int64(piece.offsets["clause_tile0"]), sums))
    return sums
