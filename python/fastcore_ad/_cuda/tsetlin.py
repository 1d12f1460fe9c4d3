"""Tsetlin Machine on CUDA: the same entry points as ``_core.tsetlin_class_sums`` and
``_core.tsetlin_train_epoch`` (training gives the state the Rust kernels give, bit for bit)."""

from __future__ import annotations

import math

import numpy as np

from . import _runtime, plans

CLASS_SUMS = _runtime.Kernel("tsetlin", "tsetlin_class_sums")
MASK_POOL = _runtime.Kernel("tsetlin", "tsetlin_mask_pool")
TRAIN_EVALUATE = _runtime.Kernel("tsetlin", "tsetlin_train_evaluate")
TRAIN_PICK = _runtime.Kernel("tsetlin", "tsetlin_train_pick")
TRAIN_FEEDBACK = _runtime.Kernel("tsetlin", "tsetlin_train_feedback")

# Flags of a training call (TSETLIN_* in cuda/tsetlin.cu).
_COALESCED, _FOCUSED, _WEIGHTED, _BOOST, _POSITIVE_ONLY = 1, 2, 4, 8, 16
PLAN_WORDS = 6  # TSETLIN_PLAN_WORDS: the per-example plan the pick kernel writes


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


# -- training ----------------------------------------------------------------------------------

def _check_config(cfg: dict) -> None:
    """The checks of the Rust ``Config::validate`` that decide whether training can run."""
    if cfg["n_features"] < 1:
        raise ValueError("n_features must be at least 1")
    if cfg["n_classes"] < 2:
        raise ValueError(f"need at least 2 classes, got {cfg['n_classes']}")
    if cfg["n_clauses"] < 1 or (not cfg["coalesced"] and cfg["n_clauses"] % 2):
        raise ValueError("n_clauses must be a positive even number (half vote for, half against), "
                         f"got {cfg['n_clauses']}")
    if not 2 <= cfg["state_bits"] <= 16:
        raise ValueError(f"state_bits must be in [2, 16], got {cfg['state_bits']}")
    if cfg["threshold"] < 1:
        raise ValueError(f"threshold must be >= 1, got {cfg['threshold']}")
    if not (cfg["specificity"] >= 1.0 and math.isfinite(cfg["specificity"])):
        raise ValueError(f"specificity must be a finite number >= 1, got {cfg['specificity']}")
    if cfg["absorbing"] is not None:
        half = 1 << (cfg["state_bits"] - 1)
        if not 0 <= cfg["absorbing"] < half:
            raise ValueError(f"absorbing must be an exclude state in [0, {half - 1}], got {cfg['absorbing']}")
    if not 0.0 <= cfg["clause_drop_p"] < 1.0:
        raise ValueError(f"clause_drop_p must be in [0, 1), got {cfg['clause_drop_p']}")


def _config_of(config) -> dict:
    ints = ("n_features", "n_classes", "n_clauses", "state_bits", "threshold", "max_included_literals",
            "max_negated_literals", "seed")
    cfg = {name: int(config[name]) for name in ints}
    cfg.update(specificity=float(config["specificity"]), clause_drop_p=float(config["clause_drop_p"]),
               absorbing=None if config["absorbing"] is None else int(config["absorbing"]),
               **{name: bool(config[name]) for name in ("weighted", "boost_true_positive", "focused_negatives",
                                                       "coalesced", "negated_literals")})
    _check_config(cfg)
    return cfg


def _threshold32(p: float) -> int:
    """Probability ``p`` as the 32-bit fixed-point threshold of the mask pools (Rust ``threshold32``)."""
    return _round_half_away(min(max(p, 0.0), 1.0) * 4_294_967_296.0)


def _round_half_away(x: float) -> int:
    """Rust's ``f64::round`` (halves away from zero, not to even) for 0 <= x < 2**52, where
    ``x + 0.5`` is exact."""
    return int(math.floor(x + 0.5))


def _host_int64(x, name: str) -> np.ndarray:
    rt = _runtime.current()
    arr = np.asarray(rt.host(x) if not isinstance(x, np.ndarray) else x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array, got {arr.dtype}")
    return np.ascontiguousarray(arr.reshape(-1), dtype=np.int64)


def _packed_docs(docs, n_features: int) -> np.ndarray:
    """Host packed rows ``[n, ceil(n_features / 64)]`` of packed docs or a CSR pair, checked as
    the Rust ``Docs::validate`` checks them (messages name ``X``)."""
    rt = _runtime.current()
    fw = (n_features + 63) // 64
    if isinstance(docs, tuple):
        indptr, indices = (_host_int64(a, name) for a, name in zip(docs, ("X.indptr", "X.indices")))
        if indptr.size == 0 or indptr[0] != 0:
            raise ValueError("X: CSR indptr must start at 0")
        if np.any(np.diff(indptr) < 0):
            raise ValueError("X: CSR indptr must be non-decreasing")
        if indptr[-1] != indices.size:
            raise ValueError("X: CSR indptr does not end at the number of indices")
        if indices.size and (indices.min() < 0 or indices.max() >= n_features):
            raise ValueError(f"X: feature index outside [0, {n_features})")
        n = indptr.size - 1
        rows = np.repeat(np.arange(n), np.diff(indptr))
        out = np.zeros((n, fw), dtype=np.uint64)
        np.bitwise_or.at(out, (rows, indices // 64), np.left_shift(np.uint64(1), (indices % 64).astype(np.uint64)))
        return out
    words = docs if isinstance(docs, np.ndarray) else rt.host(docs)
    if words.dtype != np.uint64:
        raise TypeError(f"X: expected packed uint64 rows, got {words.dtype}")
    n = int(words.shape[0]) if words.ndim else 0
    if words.size != n * fw:
        raise ValueError(f"X: packed rows hold {words.size} words, expected {n * fw}")
    words = np.ascontiguousarray(words).reshape(n, fw)
    spare = fw * 64 - n_features
    if spare and n and np.any(words[:, -1] >> np.uint64(64 - spare)):
        raise ValueError("X: packed rows have bits set beyond n_features")
    return words


def _device_state(x, name: str, dtype):
    """``(device array, copied)``: ``x`` itself when it lives on the runtime's device, else a
    device copy that is written back after training."""
    xp = _runtime.current().xp
    if x.dtype != dtype:
        raise TypeError(f"{name}: expected {np.dtype(dtype).name}, got {x.dtype}")
    if not x.flags.c_contiguous or not getattr(x.flags, "writeable", True):
        raise ValueError(f"{name}: expected a writable C-contiguous array")
    device = xp.asarray(x)
    return device, device is not x


def tsetlin_train_epoch(config, action, lower, weights, docs, y, order, epoch, n_jobs=None):
    """One pass of online training over ``order``, updating ``action``, ``lower`` and ``weights``
    in place, exactly as ``_core.tsetlin_train_epoch`` does (same seed, same state after).

    ``docs`` is a packed uint64 array ``[n, words]`` or a CSR pair (indptr int64, indices
    int32), packed here on the way in. The state arrays may be device arrays of the runtime or
    host arrays (copied to the device and back); ``n_jobs`` is accepted for the same signature.
    """
    rt = _runtime.current()
    xp = rt.xp
    cfg = _config_of(config)
    state = [(x, *_device_state(x, name, dtype)) for x, name, dtype in
             ((action, "action", np.uint64), (lower, "lower", np.uint64), (weights, "weights", np.int32))]
    k, clauses, planes = cfg["n_classes"], cfg["n_clauses"], cfg["state_bits"] - 1
    banks = 1 if cfg["coalesced"] else k
    fw = (cfg["n_features"] + 63) // 64
    lw = 2 * fw
    total = banks * clauses
    sizes = (int(action.size), int(lower.size), int(weights.size))
    expected = (total * lw, total * lw * planes, total * (k if cfg["coalesced"] else 1))
    if sizes != expected:
        raise ValueError(f"model state has sizes (action {sizes[0]}, lower {sizes[1]}, weights {sizes[2]}), "
                         f"expected {expected}")
    packed = _packed_docs(docs, cfg["n_features"])
    n = packed.shape[0]
    y_host = _host_int64(y, "y")
    order_host = _host_int64(order, "order")
    if y_host.size != n:
        raise ValueError(f"y: {y_host.size} labels for {n} documents")
    bad = y_host[(y_host < 0) | (y_host >= k)]
    if bad.size:
        raise ValueError(f"y: class index {bad[0]} outside [0, {k})")
    bad = order_host[(order_host < 0) | (order_host >= n)]
    if bad.size:
        raise ValueError(f"order: index {bad[0]} outside [0, {n})")
    d_action, d_lower, d_weights = (device.reshape(-1) for _, device, _ in state)
    if order_host.size:
        _train(rt, cfg, d_action, d_lower, d_weights, xp.asarray(packed), xp.asarray(y_host),
               xp.asarray(order_host), int(epoch))
    for original, device, copied in state:
        if copied:
            original[...] = rt.host(device)


def _train(rt, cfg, action, lower, weights, docs, y, order, epoch):
    xp = rt.xp
    k, clauses, planes = cfg["n_classes"], cfg["n_clauses"], cfg["state_bits"] - 1
    banks = 1 if cfg["coalesced"] else k
    fw = (cfg["n_features"] + 63) // 64
    lw = 2 * fw
    seed, epoch = np.uint64(cfg["seed"] % 2**64), np.uint64(epoch % 2**64)
    flags = ((_COALESCED if cfg["coalesced"] else 0) | (_FOCUSED if cfg["focused_negatives"] else 0)
             | (_WEIGHTED if cfg["weighted"] else 0) | (_BOOST if cfg["boost_true_positive"] else 0)
             | (0 if cfg["negated_literals"] else _POSITIVE_ONLY))
    forget_p = 1.0 / cfg["specificity"]
    (pool_launch,) = plans.tsetlin_mask_pool()
    forget_pool = xp.empty(plans.TSETLIN_POOL_WORDS, dtype=np.uint64)
    rt.launch(MASK_POOL, (), pool_launch, (seed, epoch, np.uint64(0), np.uint64(_threshold32(forget_p)), forget_pool))
    if cfg["boost_true_positive"]:
        reward_pool = _runtime.NULL
    else:
        reward_pool = xp.empty(plans.TSETLIN_POOL_WORDS, dtype=np.uint64)
        rt.launch(MASK_POOL, (), pool_launch, (seed, epoch, np.uint64(1), np.uint64(_threshold32(1.0 - forget_p)),
                                               reward_pool))
    drop_num = _round_half_away(cfg["clause_drop_p"] * float(1 << 32))
    absorbing = -1 if cfg["absorbing"] is None else cfg["absorbing"]
    outputs = xp.zeros(banks * clauses, dtype=np.uint8)
    dropped = xp.zeros(banks * clauses, dtype=np.uint8)
    sums = xp.zeros(k, dtype=np.uint64)  # the kernels add int64 weights as two's complement
    plan = xp.zeros(PLAN_WORDS, dtype=np.uint64)
    (evaluate,) = plans.tsetlin_train_evaluate(banks * clauses)
    (pick,) = plans.tsetlin_train_pick()
    (feedback,) = plans.tsetlin_train_feedback(clauses, cfg["coalesced"])
    n_features = np.int64(cfg["n_features"])
    for step in range(int(order.shape[0])):
        rt.launch(TRAIN_EVALUATE, (), evaluate, (
            docs, np.int64(fw), n_features, y, order, np.int64(step), action, np.int64(lw), weights, np.int64(k),
            np.int64(clauses), np.int64(banks), np.int32(flags), seed, epoch, np.uint64(drop_num), outputs, dropped,
            sums))
        rt.launch(TRAIN_PICK, (), pick, (
            y, order, np.int64(step), np.int64(k), np.int64(cfg["threshold"]), np.int32(flags), seed, epoch, sums,
            plan))
        rt.launch(TRAIN_FEEDBACK, (), feedback, (
            docs, np.int64(fw), n_features, order, np.int64(step), plan, action, lower, weights, np.int64(lw),
            np.int64(planes), np.int64(k), np.int64(clauses), np.int32(flags),
            np.int64(cfg["max_included_literals"]), np.int64(cfg["max_negated_literals"]), np.int64(absorbing),
            np.int64(cfg["threshold"]), forget_pool, reward_pool, outputs, dropped))
