"""Plain float64 numpy versions of the Min-K% / Min-K%++ formulas (Shi et al. 2024; Zhang et al.
2024), written from the definitions: materialise log_softmax, then sums over the vocabulary."""

import numpy as np


def token_stats(logits, targets):
    """logp, mu, sigma ([B, T]) for logits [B, T, V] (any float dtype, widened to float64)."""
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    lse = m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True))
    log_probs = z - lse
    probs = np.exp(log_probs)
    positive = probs > 0  # zero-probability tokens (-inf logits) contribute nothing
    mu = np.where(positive, probs * np.where(positive, log_probs, 0.0), 0.0).sum(axis=-1)
    dev = np.where(positive, log_probs - mu[..., None], 0.0)
    sigma = np.sqrt((probs * dev * dev).sum(axis=-1))
    logp = np.take_along_axis(log_probs, np.asarray(targets)[..., None], axis=-1)[..., 0]
    return logp, mu, sigma


def normalised(logp, mu, sigma):
    """(logp - mu) / sigma; sigma == 0 gives 0 for a finite logp and -inf otherwise."""
    out = np.empty_like(logp)
    for idx in np.ndindex(logp.shape):
        if sigma[idx] > 0:
            out[idx] = (logp[idx] - mu[idx]) / sigma[idx]
        else:
            out[idx] = 0.0 if np.isfinite(logp[idx]) else -np.inf
    return out


def k_of(n, ratio):
    return max(1, int(n * ratio))


def min_k(values, ratio, lengths=None):
    """Mean of the int(n * ratio) smallest values of each row (the first lengths[b] are scored)."""
    values = np.asarray(values, dtype=np.float64)
    out = []
    for b, row in enumerate(values):
        n = row.shape[0] if lengths is None else int(lengths[b])
        kept = np.sort(row[:n])
        out.append(kept[: k_of(n, ratio)].mean())
    return np.array(out)
