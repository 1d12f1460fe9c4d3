"""Gap-K%, DC-PDD and ReCaLL, and the top-1 log-probability of token_stats, against plain numpy
oracles written from the papers' definitions (and the Gap-K% reference code's formula)."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from fastcore_ad import mia


def _softmax_stats(z):
    """float64 log-softmax statistics of logits rows: (log p, mu, E[lp^2] - mu^2)."""
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    lp = (z - m) - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))
    p = np.exp(lp)
    mu = (p * lp).sum(-1)
    var = (p * lp * lp).sum(-1) - mu * mu  # the reference's (uncentred) variance
    return lp, mu, var


def _gap_k_oracle(z, targets, ratio, window, lengths=None):
    lp, _, var = _softmax_stats(z)
    out = []
    for b in range(z.shape[0]):
        n = targets.shape[1] if lengths is None else lengths[b]
        rows = lp[b, :n]
        logp = rows[np.arange(n), targets[b, :n]]
        gap = (logp - rows.max(-1)) / np.sqrt(np.clip(var[b, :n], 1e-8, None))
        if len(gap) < window:
            smoothed = gap
        else:
            smoothed = np.array([gap[i:i + window].sum() / window for i in range(len(gap) - window + 1)])
        k = max(1, int(len(smoothed) * ratio))
        out.append(np.sort(smoothed)[:k].mean())
    return np.array(out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, "bfloat16", np.float16])
def test_token_stats_with_max_is_the_top1_log_probability(dtype, rng):
    raw = rng.normal(size=(3, 9, 333)) * 4
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        logits = raw.astype(np.float32).astype(ml_dtypes.bfloat16)
        values = logits.astype(np.float64)
    else:
        logits = raw.astype(dtype)
        values = logits.astype(np.float64)
    targets = rng.integers(0, 333, size=(3, 8))
    stats = mia.token_stats(logits, targets, with_max=True)
    assert isinstance(stats, mia.TokenStatsWithMax)
    lp, _, _ = _softmax_stats(values[:, :8])
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(stats.max_logp, lp.max(-1), rtol=tol, atol=tol)
    plain = mia.token_stats(logits, targets)
    assert len(plain) == 3
    for a, b in zip(plain, stats[:3]):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="with_max"):
        mia.token_stats(logits, targets, with_max="yes")


@pytest.mark.parametrize("ratio", [0.05, 0.2, 1.0])
@pytest.mark.parametrize("window", [1, 3, 6])
def test_gap_k_matches_the_reference_formula(ratio, window, rng):
    z = rng.normal(size=(5, 13, 50)) * 3
    z[1, 4] = 1.5                               # all-equal row: variance 0, the 1e-8 floor applies
    targets = rng.integers(0, 50, size=(5, 12))
    lengths = np.array([12, 7, 1, 4, 5])        # one valid token; fewer tokens than the window
    stats = mia.token_stats(z, targets, lengths, with_max=True)
    got = mia.gap_k(stats.logp, stats.max_logp, stats.sigma, ratio, window, lengths)
    want = _gap_k_oracle(z[:, :12], targets, ratio, window, lengths)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    scores = mia.score_logits(z, targets, lengths, ratios=(ratio,), gap_window=window)
    np.testing.assert_allclose(scores[f"gap_k@{ratio:g}"], want, rtol=1e-9, atol=1e-9)


def test_gap_k_rejects_bad_parameters(rng):
    stats = mia.token_stats(rng.normal(size=(1, 4, 6)), rng.integers(0, 6, (1, 4)), with_max=True)
    args = (stats.logp, stats.max_logp, stats.sigma)
    for ratio in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="ratio"):
            mia.gap_k(*args, ratio=ratio)
    for window in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="window"):
            mia.gap_k(*args, window=window)
    with pytest.raises(ValueError, match="max_logp"):
        mia.gap_k(stats.logp, stats.max_logp[:, :2], stats.sigma)


def test_gap_k_window_longer_than_every_sequence_allocates_no_kernel(rng):
    """A window beyond a sequence's length leaves it unsmoothed (the documented contract), so
    its size must not allocate a kernel: 2**62 is beyond numpy, 2**24 is 128 MiB."""
    import tracemalloc

    z, targets = rng.normal(size=(2, 4, 9)), rng.integers(0, 9, (2, 3))
    stats = mia.token_stats(z, targets, with_max=True)
    args = (stats.logp, stats.max_logp, stats.sigma, 0.5)
    unsmoothed = mia.gap_k(*args, window=4)
    for window in (2**62, np.int64(2**24)):
        tracemalloc.start()
        try:
            got = mia.gap_k(*args, window=window)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        np.testing.assert_array_equal(got, unsmoothed)
        assert peak < 1 << 20, f"window={window}: {peak} bytes allocated"
        scores = mia.score_logits(z, targets, ratios=(0.5,), gap_window=window)
        np.testing.assert_array_equal(scores["gap_k@0.5"], unsmoothed)


def _dc_pdd_oracle(logp, targets, counts, a, lengths):
    f = (counts + 1.0) / (counts.sum() + len(counts))
    out = []
    for b in range(logp.shape[0]):
        seen, ce = set(), []
        for t in range(lengths[b]):
            token = int(targets[b, t])
            if token in seen:
                continue
            seen.add(token)
            ce.append(min(np.exp(logp[b, t]) * -np.log(f[token]), a))
        out.append(np.mean(ce))
    return np.array(out)


@pytest.mark.parametrize("a", [0.01, 0.5, 100.0])
def test_dc_pdd_matches_the_paper(a, rng):
    vocab = 40
    z = rng.normal(size=(4, 21, vocab)) * 2
    targets = rng.integers(0, 12, size=(4, 20))  # small id range: repeated tokens
    lengths = np.array([20, 9, 1, 15])
    corpus = [rng.integers(0, vocab, size=n) for n in (50, 7, 300)]
    counts = mia.token_frequencies(corpus, vocab)
    assert counts.tolist() == [collections.Counter(np.concatenate(corpus).tolist()).get(i, 0) for i in range(vocab)]
    stats = mia.token_stats(z, targets, lengths)
    got = mia.dc_pdd(stats.logp, targets, counts, a, lengths)
    np.testing.assert_allclose(got, _dc_pdd_oracle(stats.logp, targets, counts.astype(float), a, lengths), rtol=1e-12)
    scores = mia.score_logits(z, targets, lengths, ratios=(0.2,), counts=counts, dc_pdd_a=a)
    np.testing.assert_allclose(scores["dc_pdd"], got, rtol=1e-12)


def test_dc_pdd_and_frequencies_reject_bad_counts(rng):
    z, targets = rng.normal(size=(1, 5, 8)), np.array([[0, 7, 3, 7]])
    stats = mia.token_stats(z, targets)
    with pytest.raises(ValueError, match="counts"):
        mia.dc_pdd(stats.logp, targets, -np.ones(8), 0.01)
    with pytest.raises(ValueError, match="counts"):
        mia.score_logits(z, targets, counts=np.ones(7))
    with pytest.raises(ValueError, match="targets"):
        mia.dc_pdd(stats.logp, targets, np.ones(3), 0.01)
    with pytest.raises(ValueError, match="a"):
        mia.dc_pdd(stats.logp, targets, np.ones(8), 0.0)
    with pytest.raises(ValueError, match="token_id_arrays"):
        mia.token_frequencies([[0, 9]], 8)
    with pytest.raises(ValueError, match="vocab_size"):
        mia.token_frequencies([[0]], 0)


def test_token_frequencies_checks_the_vocabulary_before_allocating_its_counts(rng, monkeypatch):
    from fastcore_ad import _memory

    ids = [rng.integers(0, 10, 20)]
    for vocab in (mia.MAX_VOCAB + 1, 300_000_000, 2**62):  # 8 bytes of counts per id
        with pytest.raises(ValueError, match=f"^vocab_size: at most {mia.MAX_VOCAB} .* got {vocab}"):
            mia.token_frequencies(ids, vocab)
    monkeypatch.setattr(_memory, "available_bytes", lambda: 1 << 20)
    with pytest.raises(MemoryError, match="^vocab_size "):
        mia.token_frequencies(ids, 1 << 20)
    assert mia.token_frequencies(ids, 16).sum() == 20


def test_score_logits_with_counts_names_logits_that_are_no_array(rng):
    z, targets, counts = rng.normal(size=(1, 4, 6)), rng.integers(0, 6, (1, 3)), rng.integers(0, 9, 6)
    with pytest.raises(TypeError, match="^logits: expected an array"):
        mia.score_logits(None, targets, counts=counts)
    with pytest.raises(ValueError, match="^logits: expected 3 dimensions"):
        mia.score_logits(z[0], targets, counts=counts)
    with pytest.raises(ValueError, match="^counts: expected 6 counts"):
        mia.score_logits(z.tolist(), targets, counts=counts[:5])
    want = mia.score_logits(z, targets, counts=counts)["dc_pdd"]
    np.testing.assert_array_equal(mia.score_logits(z.tolist(), targets, counts=counts)["dc_pdd"], want)


def test_recall_ratio_is_the_ratio_of_mean_log_likelihoods(rng):
    with_prefix = -rng.random((3, 6)) * 4
    without = -rng.random((3, 5)) * 4
    mask_w, mask_o = np.array([6, 2, 4]), np.array([5, 5, 1])
    got = mia.recall_ratio(with_prefix, without, mask_w, mask_o)
    want = [with_prefix[b, :mask_w[b]].mean() / without[b, :mask_o[b]].mean() for b in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-14)
    with pytest.raises(ValueError, match="logp_without"):
        mia.recall_ratio(with_prefix, without[:2])
    with pytest.raises(ValueError, match="undefined"):
        mia.recall_ratio(with_prefix, np.zeros((3, 5)))
    with pytest.raises(ValueError, match="^logp_with_prefix and logp_without: infinite at sequence 0 in both"):
        mia.recall_ratio([-np.inf], [-np.inf])
    with pytest.raises(ValueError, match="^logp_without: a mean log-likelihood this close to 0"):
        mia.recall_ratio([-1.0], [-1e-320])


def test_score_texts_recall_prefix(monkeypatch):
    import contextlib
    import sys
    import types

    from .test_mia import _StandInModel, _StandInTensor, _StandInTokenizer

    fake_torch = types.ModuleType("torch")
    fake_torch.no_grad = contextlib.nullcontext
    fake_torch.cat = lambda parts, dim: np.concatenate([np.asarray(p) for p in parts], axis=dim).view(_StandInTensor)
    fake_torch.ones_like = lambda x: np.ones_like(np.asarray(x)).view(_StandInTensor)
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setattr(_StandInTensor, "expand", lambda self, n, _m: np.broadcast_to(
        np.asarray(self), (n, self.shape[1])).view(_StandInTensor), raising=False)
    model, tokenizer = _StandInModel(), _StandInTokenizer()
    texts = ["Short one", "a somewhat longer Text", "xy"]
    prefix = "Unrelated words"
    scores = mia.score_texts(model, tokenizer, texts, batch_size=2, ratios=(0.2,), recall_prefix=prefix)

    def tokens(text):
        return [1] + [2 + (ord(c) % 30) for c in text]

    def mean_ll(ids, first_scored):
        lp, _, _ = _softmax_stats(model.table[np.asarray(ids[:-1])])
        values = lp[np.arange(len(ids) - 1), ids[1:]]
        return values[first_scored:].mean()

    for i, text in enumerate(texts):
        p, t = tokens(prefix), tokens(text)
        want = mean_ll(p + t, len(p) - 1) / mean_ll(t, 0)
        np.testing.assert_allclose(scores["recall"][i], want, rtol=1e-6)  # float32 logits
