"""Membership detection on CUDA: the same entry point as ``_core.token_stats``."""

from __future__ import annotations

import numpy as np

from . import _runtime, plans

TOKEN_STATS = _runtime.Kernel("mia", "token_stats", (("float",), ("double",), ("fca_bf16",), ("fca_f16",)))

_HALF_TYPES = {"bfloat16": "fca_bf16", "float16": "fca_f16"}


def token_stats(logits, targets, mask=None, half="bfloat16", n_jobs=None, with_max=False):
    """``(logp, mu, sigma)`` float64 ``[B, T]`` from logits ``[B, T_logits, V]`` (and
    ``max_logp``, the top-1 token's log-probability, with ``with_max=True``).

    Like the Rust entry point, uint16 logits are raw half-precision bit patterns (``half`` says
    which format); targets are int64 ``[B, T]``, mask uint8 ``[B, T]`` or None.
    """
    rt = _runtime.current()
    xp = rt.xp
    batch, logits_time, vocab = (int(v) for v in logits.shape)
    time_ = int(targets.shape[1])
    if logits.dtype == np.uint16:
        if half not in _HALF_TYPES:
            raise ValueError(f"half: expected 'bfloat16' or 'float16', got {half!r}")
        ct = _HALF_TYPES[half]
    else:
        ct = _runtime.ctype(logits.dtype)
    if mask is None:
        mask = xp.ones((batch, time_), dtype=np.uint8)
    outs = [xp.empty((batch, time_), dtype=np.float64) for _ in range(4 if with_max else 3)]
    for piece in plans.token_stats(batch * time_):
        rt.launch(TOKEN_STATS, (ct,), piece, (
            logits, np.int64(batch), np.int64(time_), np.int64(logits_time), np.int64(vocab), targets, mask, *outs[:3],
            outs[3] if with_max else _runtime.NULL))
    return tuple(outs)
