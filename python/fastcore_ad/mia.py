"""Membership detection for language models: Min-K% Prob (Shi et al., ICLR 2024), Min-K%++
(Zhang et al., 2024) and the standard loss, zlib, lowercase and reference-model scores.

Sign convention: **every score returned here is higher for texts more likely to be members**
(seen in training). So ``score_logits(...)["loss"]`` is the *negated* mean negative
log-likelihood, and :func:`zlib_ratio`, :func:`lowercase_ratio` and :func:`reference_ratio`
are oriented the same way; :func:`loss` itself is the plain (positive) mean NLL.

Definitions, for logits ``z[t, :]`` and the scored ids ``targets[t]`` (pass ``logits`` of an
input and ``targets = input_ids[:, 1:]``: position t is scored by the logits at t):

- ``logp[t] = z[t, targets[t]] - logsumexp(z[t, :])``
- ``mu[t] = sum_v p_v log p_v`` and ``sigma[t] = sqrt(sum_v p_v (log p_v - mu[t])^2)``,
  ``p = softmax(z[t, :])`` over the whole vocabulary (-inf logits have p = 0 and add nothing)
- Min-K%: the mean of the ``k = int(n * ratio)`` (at least 1) smallest ``logp`` of a sequence
  with n scored tokens, k computed in float64 exactly as Python's ``int(n * ratio)``
- Min-K%++: the same on ``(logp - mu) / sigma``. When ``sigma == 0`` (every token with nonzero
  probability is equally likely) the normalised value is defined as 0 if the target has nonzero
  probability (then ``logp == mu``) and -inf if it has none; never NaN. ``sigma`` is also 0 when
  every token but the top one lies beyond the exponent range below it (about 87 nats in float32
  accumulation, 708 in float64): a target among them (``logp`` more than 1 nat below ``mu``) gets
  -inf, the exact value being around -1e18 or beyond, as a direct ``(logp - mu) / sigma`` gives.

The logits are read once (numpy: Rust kernel; cupy, or CUDA tensors through DLPack: CUDA
kernel), in float32, float64, float16 or bfloat16 (``ml_dtypes.bfloat16`` or torch bf16).

>>> import numpy as np
>>> from fastcore_ad import mia
>>> logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]], dtype=np.float32))
>>> stats = mia.token_stats(logits, np.array([[0, 2]]))
>>> np.round(np.exp(stats.logp), 4).tolist()
[[0.5, 0.8]]
>>> round(float(mia.min_k(stats.logp, ratio=0.5)[0]), 4) == round(float(np.log(0.5)), 4)
True
"""

from __future__ import annotations

import math
import time
import zlib
from typing import NamedTuple

import numpy as np

from . import _core
from ._base import check_text_items
from ._dispatch import as_array, binary_labels, check_batch_size, check_switch, is_cupy, is_dask, kernels, real_or_inf, to_backend, xp_of
from ._memory import check_fits
from .progress import progress

__all__ = [
    "TokenStats",
    "token_stats",
    "normalised",
    "min_k",
    "min_k_plus_plus",
    "loss",
    "zlib_ratio",
    "lowercase_ratio",
    "reference_ratio",
    "TokenStatsWithMax",
    "gap_k",
    "token_frequencies",
    "dc_pdd",
    "recall_ratio",
    "score_logits",
    "score_texts",
    "DEFAULT_RATIOS", "demo"]

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


class TokenStats(NamedTuple):
    """Per-token statistics, each float64 ``[B, T]``; masked positions hold NaN."""

    logp: object
    mu: object
    sigma: object


class TokenStatsWithMax(NamedTuple):
    """:class:`TokenStats` plus ``max_logp``, the log-probability of the top-1 token."""

    logp: object
    mu: object
    sigma: object
    max_logp: object


# ---------------------------------------------------------------------------------------------
# Intake


def _torch_half_bits(x):
    """A torch bfloat16 / float16 tensor as int16 bits plus its format name (DLPack cannot carry
    bfloat16 into numpy); anything else unchanged with None."""
    if type(x).__module__.split(".")[0] != "torch":
        return x, None
    dtype = str(getattr(x, "dtype", ""))
    if dtype in ("torch.bfloat16", "torch.float16"):
        import torch  # noqa: PLC0415

        half = "bfloat16" if dtype == "torch.bfloat16" else "float16"
        return x.detach().contiguous().view(torch.int16), half
    return x, None


def _half_format(dtype):
    """"bfloat16" or "float16" for those formats, None for float32/float64; a TypeError else."""
    if str(dtype) == "bfloat16":
        return "bfloat16"
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return "float16" if dtype.itemsize == 2 else None
    raise TypeError(f"logits: expected float32, float64, float16 or bfloat16, got dtype {dtype}")


def _check_dask_intake(logits, targets):
    """What dask ``logits`` and ``targets`` declare, checked before any task runs, as the
    in-memory path checks it: the logits' dtype and the targets' length."""
    _half_format(logits.dtype)
    shape = np.shape(targets)
    if logits.ndim == 3 and len(shape) == 2 and not np.isnan(shape[1]):
        if shape[1] not in _target_lengths(int(logits.shape[1])):
            raise _targets_shape_error(logits.shape[0], int(logits.shape[1]), shape)


def _target_lengths(logits_time: int):
    """One target per logits position, or one fewer (logits of a whole sequence, targets shifted)."""
    return (logits_time, logits_time - 1) if logits_time > 1 else (1,)


def _targets_shape_error(batch, logits_time: int, shape):
    return ValueError(
        f"targets: expected shape [{batch}, {' or '.join(map(str, _target_lengths(logits_time)))}] (logits have "
        f"{logits_time} position{'s' if logits_time > 1 else ''}), got {tuple(shape)}")


def _logits_array(logits):
    """(array, backend, half): float32/float64 as is, 16-bit formats as uint16 bit patterns."""
    logits, half = _torch_half_bits(logits)
    arr, backend = as_array(logits, "logits")
    xp = xp_of(backend)
    if half is None:
        half = _half_format(arr.dtype)
    if arr.ndim != 3:
        raise ValueError(f"logits: expected 3 dimensions [B, T, V], got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"logits: empty array (shape {tuple(arr.shape)})")
    if not arr.dtype.isnative:  # big-endian floats: a native copy, once the shape is known good
        arr = arr.astype(arr.dtype.newbyteorder("="))
    arr = xp.ascontiguousarray(arr)
    if half is not None:
        arr = arr.view(np.uint16)
    return arr, backend, half


def _targets_array(targets, batch: int, logits_time: int, vocab: int, backend: str):
    arr, tb = as_array(targets, "targets")
    if tb != backend:
        raise TypeError("logits, targets: mix of CPU (numpy) and GPU (cupy) arrays; put them on one device")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"targets: expected integer token ids, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] != batch or arr.shape[1] not in _target_lengths(logits_time):
        raise _targets_shape_error(batch, logits_time, arr.shape)
    return xp_of(backend).ascontiguousarray(arr, dtype=np.int64)


def _mask_array(mask, batch: int, time: int, backend: str):
    """uint8 ``[B, T]`` from a bool / 0-1 mask ``[B, T]`` or integer lengths ``[B]``; None stays."""
    if mask is None:
        return None
    arr, mb = as_array(mask, "mask")
    if mb != backend:
        arr = xp_of(backend).asarray(arr.get() if mb == "cupy" else arr)
    xp = xp_of(backend)
    if arr.ndim == 1 and arr.dtype.kind in "iu":
        if arr.shape[0] != batch:
            raise ValueError(f"mask: lengths must have one entry per sequence ({batch}), got {arr.shape[0]}")
        if arr.size and (bool((arr < 0).any()) or bool((arr > time).any())):
            raise ValueError(f"mask: lengths must lie in [0, {time}]")
        return xp.ascontiguousarray(xp.arange(time)[None, :] < arr[:, None]).view(np.uint8)
    if arr.ndim != 2 or tuple(arr.shape) != (batch, time):
        raise ValueError(f"mask: expected shape [{batch}, {time}] (or lengths [{batch}]), got {tuple(arr.shape)}")
    return binary_labels(arr, "mask", backend=backend)


def _one_ratio(ratio) -> list[float]:
    values = _ratios(ratio)
    if len(values) != 1:
        raise ValueError(f"ratio: this score takes one ratio, got {len(values)}; score_logits takes several")
    return values


def _ratios(ratios, name="ratio") -> list[float]:
    if isinstance(ratios, (list, tuple)):
        values = list(ratios)
    elif isinstance(ratios, np.ndarray):
        values = ratios.reshape(-1).tolist()
    else:
        values = [ratios]  # one ratio; its type is checked below
    if not values:
        raise ValueError(f"{name}: give at least one ratio")
    out = []
    for r in values:
        if isinstance(r, (bool, np.bool_)) or not isinstance(r, (int, float, np.integer, np.floating)):
            several = " or a list of them" if name == "ratios" else ""
            raise TypeError(f"{name}: expected a number in (0, 1]{several}, got {r!r}")
        r = float(r)
        if not 0.0 < r <= 1.0:
            raise ValueError(f"{name}: must lie in (0, 1], got {r}")
        out.append(r)
    return out


# ---------------------------------------------------------------------------------------------
# Kernels


def token_stats(logits, targets, mask=None, *, n_jobs=None, with_max=False):
    """``logp``, ``mu`` and ``sigma`` (float64 ``[B, T]``) from one read of ``logits``;
    ``with_max=True`` adds ``max_logp = max(z) - logsumexp(z)``, the log-probability of the
    top-1 token (a :class:`TokenStatsWithMax`), from the same pass.

    ``logits`` is ``[B, T_logits, V]`` (float32, float64, float16 or bfloat16; numpy, cupy or
    torch), ``targets`` integer ``[B, T]`` with ``T == T_logits`` or ``T == T_logits - 1``: in
    the latter case the last logits position is not read, so a causal LM's full logits can be
    passed with ``input_ids[:, 1:]`` and no copy. ``mask`` is a bool / 0-1 ``[B, T]`` array
    (True = scored) or integer lengths ``[B]`` (the first ``lengths[b]`` positions are scored);
    unscored positions give NaN and their target ids are not checked (``-100`` padding is fine).

    Raises ValueError for a wrong shape, a target id outside ``[0, V)``, or a scored row that
    holds NaN or +inf or has no finite logit.

    >>> import numpy as np
    >>> logits = np.zeros((1, 2, 4), dtype=np.float32)   # uniform over 4 tokens
    >>> s = token_stats(logits, np.array([[1, 3]]))
    >>> np.allclose(s.logp, np.log(0.25)), np.allclose(s.mu, np.log(0.25)), float(s.sigma.max())
    (True, True, 0.0)

    Dask ``logits`` (chunked along the batch) give lazy dask arrays, each chunk read once where
    it lives.
    """
    if is_dask(logits):
        from . import _distributed  # noqa: PLC0415

        check_switch(with_max, "with_max")
        _check_dask_intake(logits, targets)
        outs = _distributed.token_stats(token_stats, logits, targets, mask, 4 if with_max else 3, n_jobs=n_jobs,
                                        with_max=bool(with_max))
        return TokenStatsWithMax(*outs) if with_max else TokenStats(*outs)
    arr, backend, half = _logits_array(logits)
    batch, logits_time, vocab = (int(v) for v in arr.shape)
    tg = _targets_array(targets, batch, logits_time, vocab, backend)
    time_ = int(tg.shape[1])
    m = _mask_array(mask, batch, time_, backend)
    xp = xp_of(backend)
    scored = tg if m is None else xp.where(m != 0, tg, 0)
    if bool((scored < 0).any()) or bool((scored >= vocab).any()):
        raise ValueError(f"targets: token ids must lie in [0, {vocab}) (the vocabulary size of logits)")
    check_switch(with_max, "with_max")
    outs = kernels(backend).token_stats(arr, tg, m, half or "bfloat16", n_jobs, bool(with_max))
    logp = outs[0]
    bad = xp.isnan(logp) if m is None else (xp.isnan(logp) & (m != 0))
    if bool(bad.any()):
        b, t = (int(v) for v in xp.argwhere(bad)[0])
        raise ValueError(f"logits: row [{b}, {t}] holds NaN or +inf, or has no finite value")
    return TokenStatsWithMax(*outs) if with_max else TokenStats(*outs)


def normalised(logp, mu, sigma):
    """The Min-K%++ per-token score ``(logp - mu) / sigma``, with the ``sigma == 0`` rule of the
    module docstring (0 when the target has nonzero probability and ``logp == mu`` up to
    rounding, -inf when it has none or lies more than 1 nat below ``mu``).

    >>> normalised(np.array([-1.0, -2.0, -np.inf, -88.0, np.nan]), np.array([-1.5, -2.0, -2.0, 0.0, 0.0]),
    ...            np.array([0.5, 0.0, 0.0, 0.0, 1.0])).tolist()
    [1.0, 0.0, -inf, -inf, nan]
    """
    xp = xp_of("cupy" if is_cupy(logp) else "numpy")
    diff = logp - mu
    safe = xp.where(sigma > 0, sigma, 1.0)
    # sigma == 0 exactly means every token with nonzero probability has logp == mu; a target
    # far below mu got there only because its probability underflowed in sigma's sum.
    zero_sigma = xp.where(xp.isfinite(logp) & (diff >= -1.0), 0.0, -xp.inf)
    out = xp.where(sigma > 0, diff / safe, zero_sigma)
    # A NaN (a masked position of token_stats) stays NaN, so that min_k refuses it unmasked.
    return xp.where(xp.isnan(logp) | xp.isnan(mu) | xp.isnan(sigma), xp.nan, out)


def _values_2d(values, name: str):
    arr, backend = as_array(values, name)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a float array, got dtype {arr.dtype}")
    single = arr.ndim == 1
    if single:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected [B, T] (or [T]), got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"{name}: empty array (shape {tuple(arr.shape)})")
    return arr, backend, single


def _min_k_means(values, mask_u8, ratios, n_jobs, name):
    """[B, R] means of the k smallest kept values, on the host (B x T is small)."""
    host = values.get() if is_cupy(values) else values
    host = np.ascontiguousarray(host, dtype=np.float64)
    m = None if mask_u8 is None else np.ascontiguousarray(mask_u8.get() if is_cupy(mask_u8) else mask_u8)
    kept_nan = np.isnan(host) if m is None else (np.isnan(host) & (m != 0))
    if kept_nan.any():
        raise ValueError(f"{name}: contains NaN at a scored position")
    return _core.min_k_means(host, ratios, m, n_jobs)


def _back(x, backend):
    return to_backend(x, backend)


def min_k(logp, ratio=0.2, mask=None, *, n_jobs=None):
    """Min-K% Prob: the mean of the ``int(n * ratio)`` (at least 1) smallest token log-probs of
    each sequence, ``[B]`` (a float for a single ``[T]`` sequence). Higher = more likely member.

    >>> min_k(np.array([-3.0, -1.0, -2.0, -0.5]), ratio=0.5)
    -2.5
    >>> min_k(np.array([[-3.0, -1.0, -2.0, -9.0]]), ratio=1.0, mask=np.array([3])).tolist()
    [-2.0]
    """
    (r,) = _one_ratio(ratio)
    arr, backend, single = _values_2d(logp, "logp")
    m = _mask_array(mask, arr.shape[0], arr.shape[1], backend)
    out = _min_k_means(arr, m, [r], n_jobs, "logp")[:, 0]
    return float(out[0]) if single else _back(out, backend)


def min_k_plus_plus(logits, targets, ratio=0.2, mask=None, *, n_jobs=None):
    """Min-K%++: Min-K% on the normalised scores ``(logp - mu) / sigma``, ``[B]``.

    >>> logits = np.array([[[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]])
    >>> min_k_plus_plus(logits, np.array([[0, 2]]), ratio=1.0).round(4).tolist()
    [0.4179]
    """
    (r,) = _one_ratio(ratio)
    stats = token_stats(logits, targets, mask, n_jobs=n_jobs)
    backend = "cupy" if is_cupy(stats.logp) else "numpy"
    b, t = stats.logp.shape
    m = _mask_array(mask, b, t, backend)
    z = normalised(stats.logp, stats.mu, stats.sigma)
    return _back(_min_k_means(z, m, [r], n_jobs, "logits")[:, 0], backend)


def loss(logp, mask=None):
    """Mean negative log-likelihood of each sequence, ``[B]`` float64 (lower = more likely
    member).

    >>> loss(np.log(np.array([[0.5, 0.25]]))).round(4).tolist()
    [1.0397]
    """
    arr, backend, single = _values_2d(logp, "logp")
    xp = xp_of(backend)
    m = _mask_array(mask, arr.shape[0], arr.shape[1], backend)
    kept_nan = xp.isnan(arr) if m is None else (xp.isnan(arr) & (m != 0))
    if bool(kept_nan.any()):
        raise ValueError("logp: contains NaN at a scored position")
    arr = arr.astype(xp.float64, copy=False)  # as min_k: float64 whatever came in
    if m is None:
        kept, counts = arr, arr.shape[1]
    else:
        counts = m.sum(axis=1)
        if bool((counts == 0).any()):
            raise ValueError("mask: a sequence has no scored token")
        kept = xp.where(m != 0, arr, 0.0)
    out = -_row_means(kept, counts, xp)
    return float(out[0]) if single else out


def _row_means(values, counts, xp):
    """Row sums over ``counts``; where a row of finite values sums past the float range, the
    sum is redone at the scale ``2**-e`` with ``2**e >= T`` (exact powers of two), so a finite
    mean stays finite."""
    with np.errstate(over="ignore"):
        sums = values.sum(axis=1)
        over = xp.isinf(sums) & xp.isfinite(values).all(axis=1)
        if not bool(over.any()):
            return sums / counts
        scale = 2.0 ** math.ceil(math.log2(values.shape[1]))
        scaled = (values / scale).sum(axis=1) / counts * scale
    return xp.where(over, scaled, sums / counts)


def _utf8(text, index: int) -> bytes:
    """The UTF-8 bytes of ``text`` (bytes as they are); a str that has none is named."""
    if not isinstance(text, str):
        return text
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a lossy decode
        raise ValueError(f"texts: item {index} has no UTF-8 form ({exc.reason} at position {exc.start})") from None


def _texts(texts, name: str) -> list[str]:
    texts = [texts] if isinstance(texts, (str, bytes)) else list(texts)
    check_text_items(texts, name)
    return texts


def _losses(values, name: str) -> np.ndarray:
    """Per-sequence losses as a 1-D float64 array: numbers only (no complex, strings or objects),
    one per sequence, at least one, no NaN (+inf is the loss of a sequence with a
    zero-probability token)."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    if arr.ndim > 1:
        raise ValueError(f"{name}: expected one loss per sequence [B], got shape {arr.shape}")
    arr = arr.astype(np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name}: no losses")
    if np.isnan(arr).any():
        raise ValueError(f"{name}: contains NaN at sequence {int(np.argmax(np.isnan(arr)))}")
    return arr


def _defined(result, names: str) -> np.ndarray:
    """``result``, unless two infinite losses made one of its values NaN."""
    if np.isnan(result).any():
        raise ValueError(f"{names}: infinite at sequence {int(np.argmax(np.isnan(result)))} in both, "
                         f"which leaves the score undefined")
    return result


def zlib_ratio(loss_values, texts):
    """Log-likelihood per zlib-compressed byte, ``-loss / len(zlib.compress(text))`` (UTF-8),
    ``[B]``. Higher = more likely member (low loss on text that compresses poorly).

    >>> zlib_ratio(np.array([2.0]), ["abc"]).round(4).tolist()
    [-0.1818]
    """
    values = _losses(loss_values, "loss_values")
    texts = _texts(texts, "texts")
    if len(texts) != values.shape[0]:
        raise ValueError(f"texts: expected {values.shape[0]} texts (one per loss), got {len(texts)}")
    sizes = np.array([len(zlib.compress(_utf8(t, i))) for i, t in enumerate(texts)], dtype=np.float64)
    return -values / sizes


def lowercase_ratio(loss_values, lowercase_loss_values):
    """``loss(lowercased text) / loss(text)``, ``[B]``: higher = more likely member.

    >>> lowercase_ratio([2.0], [3.0]).tolist()
    [1.5]
    """
    a = _losses(loss_values, "loss_values")
    b = _losses(lowercase_loss_values, "lowercase_loss_values")
    if a.shape != b.shape:
        raise ValueError(f"lowercase_loss_values: expected {a.shape[0]} values, got {b.shape[0]}")
    if (a == 0).any():
        raise ValueError("loss_values: a zero loss makes the ratio undefined")
    with np.errstate(invalid="ignore"):  # inf / inf is reported by _defined
        return _defined(b / a, "loss_values and lowercase_loss_values")


def reference_ratio(loss_values, reference_loss_values):
    """``loss(reference model) - loss(target model)``, ``[B]``: higher = more likely member.

    (The usual ``loss(target) - loss(reference)``, negated to keep the sign convention.)

    >>> reference_ratio([2.0], [3.5]).tolist()
    [1.5]
    """
    a = _losses(loss_values, "loss_values")
    b = _losses(reference_loss_values, "reference_loss_values")
    if a.shape != b.shape:
        raise ValueError(f"reference_loss_values: expected {a.shape[0]} values, got {b.shape[0]}")
    with np.errstate(invalid="ignore"):  # inf - inf is reported by _defined
        return _defined(b - a, "loss_values and reference_loss_values")


# ---------------------------------------------------------------------------------------------
# Newer logit-only scores: Gap-K% (Kwak & Kim 2026), DC-PDD (Zhang et al. 2024), ReCaLL (Xie et
# al. 2024). Per-sequence work on [B, T] statistics runs on the host (B x T is small).

GAP_K_SIGMA2_FLOOR = 1e-8  # the reference's clamp of the Min-K%++ variance


def _window(window) -> int:
    if isinstance(window, (bool, np.bool_)) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window: must be an integer >= 1, got {window!r}")
    return int(window)


def _host_rows(name, values, shape=None):
    arr, backend, single = _values_2d(values, name)
    if shape is not None and tuple(arr.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape} like logp, got {tuple(arr.shape)}")
    return np.ascontiguousarray(to_backend(arr, "numpy"), dtype=np.float64), backend, single


def _scored_rows(mask, b, t, backend):
    m = _mask_array(mask, b, t, backend)
    return np.ones((b, t), dtype=bool) if m is None else to_backend(m, "numpy") != 0


def gap_k(logp, max_logp, sigma, ratio=0.2, window=3, mask=None):
    """Gap-K%: the top-1 gap ``g_t = (logp_t - max_logp_t) / sqrt(max(sigma_t^2, 1e-8))``,
    smoothed over the valid tokens of each sequence by a moving average of ``window`` tokens
    (the 'valid' convolution; no smoothing when a sequence has fewer tokens), then the mean of
    its ``k = max(1, int(len(smoothed) * ratio))`` smallest values. ``[B]`` (a float for one
    ``[T]`` sequence); higher = more likely member.

    ``logp``, ``max_logp``, ``sigma`` come from ``token_stats(..., with_max=True)``.

    >>> gap_k(np.array([-1.0, -2.0, -1.0, -3.0]), np.array([-0.5, -0.5, -1.0, -0.5]),
    ...       np.array([1.0, 1.0, 1.0, 1.0]), ratio=0.5, window=2)
    -1.25
    """
    (ratio,) = _one_ratio(ratio)
    window = _window(window)
    lp, backend, single = _host_rows("logp", logp)
    top, _, _ = _host_rows("max_logp", max_logp, lp.shape)
    sd, _, _ = _host_rows("sigma", sigma, lp.shape)
    scored = _scored_rows(mask, *lp.shape, backend)
    out = np.empty(lp.shape[0])
    for b in range(lp.shape[0]):
        keep = scored[b]
        if not keep.any():
            raise ValueError("mask: a sequence has no scored token")
        rows = (lp[b, keep], top[b, keep], sd[b, keep])
        if any(np.isnan(r).any() for r in rows):
            raise ValueError("logp, max_logp, sigma: NaN at a scored position")
        gap = (rows[0] - rows[1]) / np.sqrt(np.maximum(rows[2] * rows[2], GAP_K_SIGMA2_FLOOR))
        # The kernel is built only for a sequence it fits, so that its size is bounded by the
        # data rather than by ``window`` (which may exceed every sequence).
        smoothed = gap if gap.size < window else np.convolve(gap, np.full(window, 1.0 / window), mode="valid")
        k = max(1, int(len(smoothed) * ratio))
        out[b] = np.mean(np.sort(smoothed)[:k])
    return float(out[0]) if single else _back(out, backend)


# The largest tokenizers hold a few hundred thousand ids: this cap (128 MiB of counts) refuses a
# mistaken vocab_size before 8 bytes per id are allocated.
MAX_VOCAB = 1 << 24


def token_frequencies(token_id_arrays, vocab_size):
    """Occurrences of each token id in a reference corpus: int64 ``[vocab_size]``.

    ``token_id_arrays`` is an iterable of integer id arrays (one per document) or one array;
    ``vocab_size`` is at most :data:`MAX_VOCAB`.

    >>> token_frequencies([[0, 2, 2], np.array([1, 2])], 4).tolist()
    [1, 1, 3, 0]
    """
    if isinstance(vocab_size, (bool, np.bool_)) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
        raise ValueError(f"vocab_size: must be a positive integer, got {vocab_size!r}")
    vocab_size = int(vocab_size)
    if vocab_size > MAX_VOCAB:
        raise ValueError(f"vocab_size: at most {MAX_VOCAB} token ids are counted, got {vocab_size}")
    check_fits(2 * 8 * vocab_size, f"vocab_size ({vocab_size} ids: the counts and one document's bincount)")
    if isinstance(token_id_arrays, np.ndarray) or (
            isinstance(token_id_arrays, (list, tuple)) and token_id_arrays
            and all(isinstance(v, (int, np.integer)) for v in token_id_arrays)):
        token_id_arrays = [token_id_arrays]
    if isinstance(token_id_arrays, (str, bytes)) or not hasattr(token_id_arrays, "__iter__"):
        raise TypeError("token_id_arrays: expected integer id arrays (one per document) or one array, "
                        f"got {type(token_id_arrays).__name__}")
    counts = np.zeros(vocab_size, dtype=np.int64)
    for index, ids in enumerate(token_id_arrays):
        arr = np.asarray(to_backend(as_array(ids, "token_id_arrays")[0], "numpy")).reshape(-1)
        if arr.size == 0:
            continue
        if arr.dtype.kind not in "iu":
            raise TypeError(f"token_id_arrays[{index}]: expected integer token ids, got dtype {arr.dtype}")
        if int(arr.min()) < 0 or int(arr.max()) >= vocab_size:
            raise ValueError(f"token_id_arrays[{index}]: ids must lie in [0, {vocab_size})")
        counts += np.bincount(arr.astype(np.int64), minlength=vocab_size)
    return counts


def _counts(counts, vocab_size=None):
    arr = np.asarray(to_backend(as_array(counts, "counts")[0], "numpy"))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"counts: expected a 1-D array with one count per vocabulary id, got shape {arr.shape}")
    if vocab_size is not None and arr.shape[0] != vocab_size:
        raise ValueError(f"counts: expected {vocab_size} counts (the vocabulary of logits), got {arr.shape[0]}")
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"counts: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError("counts: must be finite and non-negative")
    return arr


def dc_pdd(logp, targets, counts, a=0.01, mask=None):
    """DC-PDD: for the first occurrence of each distinct token id of a sequence (valid tokens,
    in order), ``ce_t = exp(logp_t) * -log(f[id_t])`` with the Laplace-smoothed corpus
    frequency ``f = (counts + 1) / (counts.sum() + V)``, clipped above at ``a``; the score is
    the mean of ``ce_t``. ``[B]`` (a float for one ``[T]`` sequence); higher = more likely member.

    >>> counts = np.array([5, 1, 0, 2])                    # f = [6, 2, 1, 3] / 12
    >>> round(dc_pdd(np.log([0.5, 0.5, 0.25]), np.array([1, 1, 3]), counts, a=10.0), 6)
    0.621227
    """
    if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, float, np.integer, np.floating)) \
            or not (np.isfinite(real_or_inf(a)) and a > 0):
        raise ValueError(f"a: must be a positive number, got {a!r}")
    c = _counts(counts)
    total = c.sum() + c.shape[0]
    if not np.isfinite(total):
        # Counts near the float64 limit: the same frequencies from counts scaled by their largest.
        top = c.max()
        freq = (c / top + 1.0 / top) / ((c / top).sum() + c.shape[0] / top)
    else:
        freq = (c + 1.0) / total
    lp, backend, single = _host_rows("logp", logp)
    tg_arr, _ = as_array(targets, "targets")
    tg = np.asarray(to_backend(tg_arr, "numpy"))
    if single:
        tg = tg.reshape(1, -1)
    if tg.dtype.kind not in "iu":
        raise TypeError(f"targets: expected integer token ids, got dtype {tg.dtype}")
    if tuple(tg.shape) != lp.shape:
        raise ValueError(f"targets: expected shape {lp.shape} like logp, got {tuple(tg.shape)}")
    scored = _scored_rows(mask, *lp.shape, backend)
    out = np.empty(lp.shape[0])
    for b in range(lp.shape[0]):
        keep = scored[b]
        if not keep.any():
            raise ValueError("mask: a sequence has no scored token")
        ids, values = tg[b, keep], lp[b, keep]
        if int(ids.min()) < 0 or int(ids.max()) >= c.shape[0]:
            raise ValueError(f"targets: ids must lie in [0, {c.shape[0]}) (the length of counts)")
        if np.isnan(values).any():
            raise ValueError("logp: NaN at a scored position")
        _, first = np.unique(ids, return_index=True)
        first.sort()
        ce = np.exp(values[first]) * -np.log(freq[ids[first]])
        out[b] = np.mean(np.minimum(ce, float(a)))
    return float(out[0]) if single else _back(out, backend)


def recall_ratio(logp_with_prefix, logp_without, mask_with=None, mask_without=None):
    """ReCaLL: the target text's mean token log-likelihood with a non-member prefix divided by
    the one without it, ``[B]`` (a float for one sequence). The two passes may score different
    numbers of tokens; masks select each pass's target-text tokens. Higher = more likely member
    (a member's likelihood drops more when conditioned on non-member text).

    >>> recall_ratio(np.array([-3.0, -1.0]), np.array([-1.0, -1.0]))
    2.0
    """
    w, backend, single_w = _host_rows("logp_with_prefix", logp_with_prefix)
    o, _, single_o = _host_rows("logp_without", logp_without)
    if w.shape[0] != o.shape[0]:
        raise ValueError(f"logp_without: expected {w.shape[0]} sequences like logp_with_prefix, got {o.shape[0]}")
    means = []
    for values, mask, name in ((w, mask_with, "mask_with"), (o, mask_without, "mask_without")):
        scored = _scored_rows(mask, *values.shape, backend)
        counts = scored.sum(axis=1)
        if (counts == 0).any():
            raise ValueError(f"{name}: a sequence has no scored token")
        if np.isnan(values[scored]).any():
            raise ValueError(f"{name.replace('mask', 'logp')}: NaN at a scored position")
        means.append(np.where(scored, values, 0.0).sum(axis=1) / counts)
    if (means[1] == 0).any():
        raise ValueError("logp_without: a mean log-likelihood of 0 makes the ratio undefined")
    with np.errstate(invalid="ignore", over="ignore"):  # inf / inf is reported by _defined
        out = _defined(means[0] / means[1], "logp_with_prefix and logp_without")
    if np.isinf(out).any() and np.isfinite(means[0]).all() and np.isfinite(means[1]).all():
        raise ValueError("logp_without: a mean log-likelihood this close to 0 makes the ratio overflow")
    return float(out[0]) if single_w and single_o else _back(out, backend)


def _vocab_of(logits) -> int:
    """V of ``[B, T, V]`` logits, read from their shape without a copy where they have one."""
    shape = getattr(logits, "shape", None)
    if not isinstance(shape, tuple) or len(shape) != 3:
        shape = _logits_array(logits)[0].shape  # the logits error for what is no [B, T, V] array
    return int(shape[-1])


def score_logits(logits, targets, mask=None, ratios=DEFAULT_RATIOS, *, texts=None, counts=None, dc_pdd_a=0.01,
                 gap_window=3, n_jobs=None) -> dict:
    """Every score from one pass over the logits, as a dict of float64 ``[B]`` numpy arrays.

    Keys: ``"loss"`` (negated mean NLL), ``"zlib"`` (when ``texts`` are given),
    ``"min_k@{r}"``, ``"min_k++@{r}"`` and ``"gap_k@{r}"`` (Gap-K% with ``gap_window``) for
    each ratio r (formatted with ``{r:g}``, e.g. ``"min_k@0.2"``), and ``"dc_pdd"`` when a
    reference corpus's token ``counts`` (``[V]``, see :func:`token_frequencies`) are given.
    Higher = more likely member for every key; the dict goes straight into
    ``fastcore_ad.metrics.auroc`` / ``tpr_at_fpr``.

    >>> rng = np.random.default_rng(0)
    >>> scores = score_logits(rng.normal(size=(2, 5, 7)), rng.integers(0, 7, (2, 5)), ratios=(0.2, 0.5))
    >>> sorted(scores)
    ['gap_k@0.2', 'gap_k@0.5', 'loss', 'min_k++@0.2', 'min_k++@0.5', 'min_k@0.2', 'min_k@0.5']

    Dask ``logits`` (chunked along the batch) give a dict of lazy ``[B]`` dask arrays.
    """
    if is_dask(logits):
        from . import _distributed  # noqa: PLC0415

        _check_dask_intake(logits, targets)
        options = dict(ratios=ratios, counts=counts, dc_pdd_a=dc_pdd_a, gap_window=gap_window, n_jobs=n_jobs)
        # The key set is score_logits's own, asked of it on one tiny sequence rather than restated.
        vocab = int(logits.shape[-1])
        # float16: the probe's two rows of V logits, the smallest that token_stats reads.
        check_fits(4 * vocab, f"logits: a probe of 2 x {vocab} logits")
        probe = score_logits(np.zeros((1, 2, vocab), np.float16), np.zeros((1, 1), np.int64),
                             texts=None if texts is None else ["probe"], **options)
        if texts is not None:  # checked whole, as zlib_ratio checks them, before being cut into chunks
            texts = _texts(texts, "texts")
            if len(texts) != logits.shape[0]:
                raise ValueError(f"texts: expected {logits.shape[0]} texts (one per sequence), got {len(texts)}")
        return _distributed.score_logits(score_logits, list(probe), logits, targets, mask, texts, **options)
    rs = _ratios(ratios, "ratios")
    keys = {}
    for r in rs:
        if keys.setdefault(f"{r:g}", r) != r:
            raise ValueError(f"ratios: {keys[f'{r:g}']!r} and {r!r} share the key {r:g}; give distinct ratios")
    gap_window = _window(gap_window)
    if counts is not None:
        counts = _counts(counts, _vocab_of(logits))
    stats = token_stats(logits, targets, mask, n_jobs=n_jobs, with_max=True)
    backend = "cupy" if is_cupy(stats.logp) else "numpy"
    b, t = stats.logp.shape
    m = _mask_array(mask, b, t, backend)
    stats = TokenStatsWithMax(*(to_backend(x, "numpy") for x in stats))
    m = None if m is None else to_backend(m, "numpy")
    z = normalised(stats.logp, stats.mu, stats.sigma)
    mink = _min_k_means(stats.logp, m, rs, n_jobs, "logp")
    minkpp = _min_k_means(z, m, rs, n_jobs, "logits")
    nll = loss(stats.logp, m)
    out = {"loss": -nll}
    if texts is not None:
        out["zlib"] = zlib_ratio(nll, texts)
    for i, r in enumerate(rs):
        out[f"min_k@{r:g}"] = np.ascontiguousarray(mink[:, i])
    for i, r in enumerate(rs):
        out[f"min_k++@{r:g}"] = np.ascontiguousarray(minkpp[:, i])
    for r in rs:
        out[f"gap_k@{r:g}"] = np.atleast_1d(gap_k(stats.logp, stats.max_logp, stats.sigma, r, gap_window, m))
    if counts is not None:
        host_targets = np.asarray(to_backend(as_array(targets, "targets")[0], "numpy"))
        out["dc_pdd"] = np.atleast_1d(dc_pdd(stats.logp, host_targets, counts, dc_pdd_a, m))
    return out


# ---------------------------------------------------------------------------------------------
# Hugging Face models


def score_texts(model, tokenizer, texts, batch_size=8, *, ratios=DEFAULT_RATIOS, max_length=None,
                lowercase=False, recall_prefix=None, counts=None, n_jobs=None, progress_bar=True) -> dict:
    """Score ``texts`` with a Hugging Face causal LM: a dict of ``[N]`` numpy arrays (keys of
    :func:`score_logits` plus ``"zlib"``, ``"lowercase"`` when ``lowercase=True``, ``"dc_pdd"``
    when reference-corpus token ``counts`` are given, and ``"recall"`` when a non-member
    ``recall_prefix`` text is given: a second pass scores each text after the prefix and
    :func:`recall_ratio` compares the two).

    Texts are batched with padding (the tokenizer's pad token, or its EOS token when it has
    none); each needs at least 2 tokens (the first is never predicted). ``max_length`` truncates
    the texts' tokens; the zlib size of a truncated text is that of its kept tokens, decoded by
    the tokenizer, so both scores describe the same tokens; the model runs under ``torch.no_grad()``; the logits stay where the model put them:
    CUDA logits go to the CUDA kernel through DLPack (needs cupy), CPU logits to the Rust kernel;
    only ``[B, T]`` statistics come back, with no per-token synchronisation. Needs torch (and
    transformers for the model/tokenizer); raises ImportError otherwise.
    """
    try:
        import torch  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ImportError("score_texts needs torch (and a transformers model/tokenizer)") from exc
    texts = _texts(texts, "texts")
    if not texts:
        raise ValueError("texts: give at least one text")
    batch_size = check_batch_size(batch_size)
    check_switch(lowercase, "lowercase")
    check_switch(progress_bar, "progress_bar")
    if recall_prefix is not None and not isinstance(recall_prefix, str):
        raise TypeError(f"recall_prefix: expected a string, got {type(recall_prefix).__name__}")
    if recall_prefix == "":
        raise ValueError("recall_prefix: give a non-empty text")
    if getattr(tokenizer, "pad_token", None) is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    prefix_ids = None
    if recall_prefix is not None:
        prefix_ids = tokenizer([recall_prefix], return_tensors="pt", padding=True, truncation=False,
                               max_length=None)["input_ids"]

    def run(batch_texts, first):
        enc = tokenizer(batch_texts, return_tensors="pt", padding=True,
                        truncation=max_length is not None, max_length=max_length)
        kept = np.asarray(enc["attention_mask"]).astype(bool)  # host tensors, before the move
        for i, n in enumerate(kept.sum(axis=1)):
            if n < 2:  # each token is predicted from those before it: the first never is
                raise ValueError(f"texts: item {first + i} has {n} token(s); scoring needs at least 2")
        ids = enc["input_ids"].to(device)
        attention = enc["attention_mask"].to(device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=attention).logits
        scored = (attention[:, 1:] * attention[:, :-1]).bool()
        if getattr(logits, "is_cuda", False) and not _has_cupy():
            raise RuntimeError("score_texts: CUDA logits need cupy for the CUDA kernel (pip install 'fastcore_ad[cuda]')")
        compressed = batch_texts if max_length is None else _scored_texts(tokenizer, batch_texts, enc, kept, max_length)
        return score_logits(logits, ids[:, 1:], scored, ratios, texts=compressed, counts=counts, n_jobs=n_jobs)

    def recall_pass(batch_texts):
        """Mean log-likelihood of each text's tokens after the prefix (ReCaLL's conditional pass)."""
        enc = tokenizer(batch_texts, return_tensors="pt", padding=True,
                        truncation=max_length is not None, max_length=max_length)
        ids, attention = enc["input_ids"], enc["attention_mask"]
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is not None and bool((np.asarray(ids)[:, 0] == bos).all()):
            ids, attention = ids[:, 1:], attention[:, 1:]  # the prefix already starts the sequence
        n, lp = np.asarray(ids).shape[0], np.asarray(prefix_ids).shape[1]
        prefix = prefix_ids.expand(n, -1)
        ids_w = torch.cat([prefix, ids], dim=1).to(device)
        attention_w = torch.cat([torch.ones_like(prefix), attention], dim=1)
        host = np.asarray(attention_w).astype(bool)
        # Score only the text's tokens: target j is token j + 1, the text starts at token lp.
        scored = host[:, 1:] & host[:, :-1] & (np.arange(host.shape[1] - 1) >= lp - 1)[None, :]
        with torch.no_grad():
            logits = model(input_ids=ids_w, attention_mask=attention_w.to(device)).logits
        stats = token_stats(logits, ids_w[:, 1:], scored, n_jobs=n_jobs)
        return -loss(to_backend(stats.logp, "numpy"), scored)

    parts: dict[str, list] = {}
    starts = range(0, len(texts), batch_size)
    for start in progress(starts, total=len(starts), desc="score_texts", enabled=progress_bar):
        batch = texts[start:start + batch_size]
        scores = run(batch, start)
        if lowercase:
            lower = run([t.lower() for t in batch], start)
            scores["lowercase"] = lowercase_ratio(-scores["loss"], -lower["loss"])
        if prefix_ids is not None:
            without = scores["loss"]  # mean log-likelihood of each text's tokens, no prefix
            if (without == 0).any():
                raise ValueError("texts: a mean log-likelihood of 0 makes the ReCaLL ratio undefined")
            scores["recall"] = recall_pass(batch) / without
        for key, value in scores.items():
            parts.setdefault(key, []).append(np.asarray(value))
    return {key: np.concatenate(values) for key, values in parts.items()}


def _scored_texts(tokenizer, batch_texts, enc, kept, max_length):
    """The texts whose tokens were scored: a text that ``max_length`` truncated is replaced by
    the decoded text of its kept tokens, so that its zlib size describes what its loss does."""
    counts = kept.sum(axis=1)
    # Only a text that kept max_length tokens can have lost some: those alone are tokenized whole.
    full = [i for i, n in enumerate(counts) if n == max_length]
    texts = list(batch_texts)
    if full:
        whole = tokenizer([texts[i] for i in full], return_tensors="pt", padding=True, truncation=False,
                          max_length=None)
        ids = np.asarray(enc["input_ids"])
        for i, length in zip(full, np.asarray(whole["attention_mask"]).astype(bool).sum(axis=1)):
            if length > counts[i]:
                texts[i] = tokenizer.decode(ids[i][kept[i]].tolist(), skip_special_tokens=True)
    return texts


def _has_cupy() -> bool:
    from ._dispatch import cupy_module  # noqa: PLC0415

    return cupy_module() is not None


# ---------------------------------------------------------------------------------------------
# Demo


def _synthetic_batch(rng, n: int, length: int, vocab: int, member: bool):
    """Logits from a random 'model'; members' tokens are drawn from its sharpened distribution
    (what training makes likely), non-members' from a flattened one."""
    logits = (rng.standard_normal((n, length + 1, vocab)) * 2.0).astype(np.float32)
    temperature = 0.95 if member else 1.1
    p = np.exp((logits[:, :-1] / temperature) - (logits[:, :-1] / temperature).max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    cdf = p.cumsum(axis=-1)
    u = rng.random((n, length, 1))
    targets = (cdf < u).sum(axis=-1).clip(0, vocab - 1)
    return logits, targets


def demo() -> list[dict]:
    """Min-K% and Min-K%++ on synthetic logits (members drawn from the model's sharpened
    distribution), scored with AUROC."""
    from . import metrics  # noqa: PLC0415

    rng = np.random.default_rng(0)
    n, length, vocab = 64, 48, 2000
    lm, tm = _synthetic_batch(rng, n, length, vocab, member=True)
    ln, tn = _synthetic_batch(rng, n, length, vocab, member=False)
    logits = np.concatenate([lm, ln])
    targets = np.concatenate([tm, tn])
    labels = np.r_[np.ones(n), np.zeros(n)]
    start = time.perf_counter()
    scores = score_logits(logits, targets, ratios=(0.2,))
    seconds = time.perf_counter() - start
    aucs = metrics.auroc(scores, labels)
    return [{
        "step": f"mia: loss / Min-K% / Min-K%++ on synthetic logits [{2 * n}, {length + 1}, {vocab}]",
        "result": (f"AUROC loss {aucs['loss']:.3f}, Min-K%@0.2 {aucs['min_k@0.2']:.3f}, "
                   f"Min-K%++@0.2 {aucs['min_k++@0.2']:.3f}"),
        "seconds": seconds,
    }]
