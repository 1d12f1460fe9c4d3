"""MuSc aligned mode and per-pair minima against a plain numpy transcription of the definitions."""

from __future__ import annotations

import numpy as np
import pytest

from fastcore_ad import MuSc, musc


def _minima_oracle(x, window=None):
    """a[i, j, p] = min over q (within the window when given) of ||x_i(p) - x_j(q)||, 0 for i == j."""
    n, h, w, c = x.shape
    x = x.astype(np.float64)
    out = np.zeros((n, n, h * w))
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            for y in range(h):
                for xx in range(w):
                    if window is None:
                        cand = x[j].reshape(-1, c)
                    else:
                        cand = x[j, max(0, y - window):y + window + 1, max(0, xx - window):xx + window + 1].reshape(-1, c)
                    out[i, j, y * w + xx] = np.sqrt(((cand - x[i, y, xx]) ** 2).sum(-1)).min()
    return out


def _scores(minima, ratio):
    n = minima.shape[0]
    k = max(1, int((n - 1) * ratio))
    return np.stack([np.sort(np.delete(minima[i], i, axis=0), axis=0)[:k].mean(0) for i in range(n)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window", [0, 1, 2])
@pytest.mark.parametrize("ratio", [0.01, 0.5, 1.0])
def test_aligned_scores_equal_the_oracle(dtype, window, ratio, rng):
    x = rng.normal(size=(5, 4, 6, 3)).astype(dtype)
    x[3] = x[1]                                               # a duplicate image: ties at distance 0
    got = musc.mutual_scores(x, ratio, aligned=True, window=window)
    want = _scores(_minima_oracle(x, window), ratio).reshape(5, 4, 6)
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_a_window_covering_the_grid_is_plain_mutual_scoring(rng):
    x = rng.normal(size=(4, 3, 3, 5))
    np.testing.assert_allclose(musc.mutual_scores(x, 0.5, aligned=True, window=3), musc.mutual_scores(x, 0.5),
                               rtol=1e-12)


@pytest.mark.parametrize("aligned", [False, True])
def test_pair_minima_equal_the_oracle(aligned, rng):
    x = rng.normal(size=(4, 3, 5, 2))
    scores, minima = musc.mutual_scores(x, 0.5, aligned=aligned, window=1, return_pair_minima=True)
    want = _minima_oracle(x, 1 if aligned else None)
    np.testing.assert_allclose(minima, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scores.reshape(4, -1), _scores(want, 0.5), rtol=1e-12)



@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("scale", [1e160, 1e-200])
def test_pair_minima_ignore_a_scale_whose_squares_overflow_or_vanish(aligned, scale, rng):
    x = rng.normal(size=(3, 3, 4, 2))
    _, minima = musc.mutual_scores(x, 0.5, aligned=aligned, return_pair_minima=True)
    _, scaled = musc.mutual_scores(x * scale, 0.5, aligned=aligned, return_pair_minima=True)
    np.testing.assert_allclose(scaled / scale, minima, rtol=1e-12)
    with pytest.raises(TypeError, match="return_pair_minima"):
        musc.mutual_scores(x, aligned=aligned, return_pair_minima="no")

def test_musc_estimator_aligned_mode(rng):
    x = rng.normal(size=(4, 5, 5, 6))
    result = MuSc(degrees=(1,), aligned=True, window=0).predict(x)
    z = musc.lnamd(x, 1)
    np.testing.assert_allclose(result.patch_scores, musc.mutual_scores(z, 0.3, aligned=True, window=0), rtol=1e-6)
    with pytest.raises(ValueError, match="window"):
        MuSc(aligned=True, window=-1).predict(x)
    with pytest.raises(ValueError, match="aligned"):
        musc.mutual_scores(x.reshape(4, 25, 6), aligned=True)
