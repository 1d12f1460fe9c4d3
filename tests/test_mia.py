"""Membership detection: token statistics, Min-K% and Min-K%++ against the float64 oracle."""

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcore_ad import metrics, mia

from .reference import mia as ref

# float32 kernels accumulate in float32 within 2048-logit chunks and in float64 across them.
F32_TOL = dict(rtol=2e-5, atol=2e-5)
F64_TOL = dict(rtol=1e-10, atol=1e-10)


def random_logits(rng, shape, dtype=np.float32, neg_inf_fraction=0.0, scale=4.0):
    z = (rng.standard_normal(shape) * scale).astype(dtype)
    if neg_inf_fraction:
        z[rng.random(shape) < neg_inf_fraction] = -np.inf
        z[..., 0] = 0.5  # keep one finite logit per row
    return z


def assert_stats(stats, expected, tol):
    for got, want, name in zip(stats, expected, ("logp", "mu", "sigma")):
        np.testing.assert_allclose(got, want, err_msg=name, **tol)


# ---------------------------------------------------------------------------------------------
# token_stats


@pytest.mark.parametrize("vocab", [1, 2, 15, 16, 17, 2047, 2048, 2049, 4113, 6200])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_token_stats_matches_oracle_across_chunk_boundaries(rng, vocab, dtype):
    logits = random_logits(rng, (2, 3, vocab), dtype)
    targets = rng.integers(0, vocab, (2, 3))
    stats = mia.token_stats(logits, targets)
    assert all(s.dtype == np.float64 and s.shape == (2, 3) for s in stats)
    assert_stats(stats, ref.token_stats(logits, targets), F32_TOL if dtype == np.float32 else F64_TOL)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_negative_infinity_logits_contribute_nothing(rng, dtype):
    logits = random_logits(rng, (3, 5, 3001), dtype, neg_inf_fraction=0.3)
    targets = rng.integers(0, 3001, (3, 5))
    targets[0, 0] = 1 + int(np.flatnonzero(np.isinf(logits[0, 0, 1:]))[0])  # a zero-probability target
    stats = mia.token_stats(logits, targets)
    expected = ref.token_stats(logits, targets)
    assert stats.logp[0, 0] == -np.inf
    assert np.isfinite(stats.mu).all() and np.isfinite(stats.sigma).all()
    assert_stats(stats, expected, F32_TOL if dtype == np.float32 else F64_TOL)


def test_near_uniform_rows_keep_relative_accuracy(rng):
    # Deviations of 1e-4 around a constant: E[x^2] - E[x]^2 would lose every digit of sigma.
    logits = (7.0 + 1e-4 * rng.standard_normal((2, 4, 50257))).astype(np.float32)
    targets = rng.integers(0, 50257, (2, 4))
    stats = mia.token_stats(logits, targets)
    logp, mu, sigma = ref.token_stats(logits, targets)
    np.testing.assert_allclose(stats.sigma, sigma, rtol=1e-4)
    np.testing.assert_allclose(stats.logp, logp, rtol=1e-6)
    np.testing.assert_allclose(stats.mu, mu, rtol=1e-6)


@pytest.mark.parametrize("vocab", [4, 2500])
def test_exact_ties_give_zero_sigma_and_defined_scores(vocab):
    logits = np.full((1, 3, vocab), 1.5, dtype=np.float32)
    logits[0, 1, 1::2] = -np.inf  # half the vocabulary impossible, the rest tied
    targets = np.array([[0, 2, vocab - 1]])
    targets[0, 2] = 0
    stats = mia.token_stats(logits, targets)
    assert (stats.sigma == 0).all()
    np.testing.assert_allclose(stats.logp[0], [-np.log(vocab), -np.log((vocab + 1) // 2), -np.log(vocab)], rtol=1e-6)
    z = mia.normalised(stats.logp, stats.mu, stats.sigma)
    assert (z == 0).all()
    impossible = mia.token_stats(logits, np.array([[0, 1, 0]]))
    z = mia.normalised(impossible.logp, impossible.mu, impossible.sigma)
    assert z[0, 1] == -np.inf and not np.isnan(z).any()
    assert mia.min_k_plus_plus(logits, np.array([[0, 2, 0]]), ratio=1.0)[0] == 0.0


@pytest.mark.parametrize("dtype, cutoff", [(np.float32, 88.0), (np.float64, 710.0)])
def test_a_target_whose_probability_underflows_scores_below_every_finite_one(dtype, cutoff, rng):
    """One token far above the rest: past the exponent range sigma is exactly 0, and a target
    among the others must still rank below one just inside the range (never 0, never NaN)."""
    vocab = int(rng.integers(3, 40))
    gaps = np.array([cutoff - 2.0, cutoff, cutoff + 50.0])
    logits = np.zeros((1, len(gaps), vocab), dtype=dtype)
    top = rng.integers(0, vocab, len(gaps))
    logits[0, np.arange(len(gaps)), top] = gaps
    other = (top + 1) % vocab
    stats = mia.token_stats(logits, other[None])
    z = mia.normalised(stats.logp, stats.mu, stats.sigma)[0]
    # Exact z for a vocabulary of one top token and vocab - 1 tokens `gap` below it:
    # p = e^-gap / (1 + (vocab - 1) e^-gap), z = (logp - mu) / sigma ~ -gap / (gap sqrt(vocab - 1 p))
    exact = -1.0 / np.sqrt(vocab - 1) * np.exp(gaps[0] / 2)
    assert z[0] < -1e17 and np.isclose(z[0], exact, rtol=1e-2)
    assert stats.sigma[0, 1:].max() == 0 and (z[1:] == -np.inf).all()
    assert not np.isnan(z).any()
    on_top = mia.token_stats(logits, top[None])
    assert (mia.normalised(on_top.logp, on_top.mu, on_top.sigma)[0, 1:] == 0).all()
    assert mia.min_k_plus_plus(logits, other[None], ratio=1.0)[0] == -np.inf


def test_bfloat16_matches_float64_on_the_rounded_values(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    logits = random_logits(rng, (2, 6, 5003), np.float32, neg_inf_fraction=0.05).astype(ml_dtypes.bfloat16)
    targets = rng.integers(0, 5003, (2, 6))
    stats = mia.token_stats(logits, targets)
    assert_stats(stats, ref.token_stats(logits.astype(np.float64), targets), F32_TOL)


def test_float16_matches_float64_on_the_rounded_values(rng):
    logits = random_logits(rng, (2, 6, 4099), np.float32, neg_inf_fraction=0.05).astype(np.float16)
    logits[0, 0, :7] = np.float16(6e-8)  # subnormals
    targets = rng.integers(0, 4099, (2, 6))
    stats = mia.token_stats(logits, targets)
    assert_stats(stats, ref.token_stats(logits.astype(np.float64), targets), F32_TOL)


def test_shifted_targets_read_the_full_logits_without_a_copy(rng):
    logits = random_logits(rng, (3, 9, 301))
    ids = rng.integers(0, 301, (3, 9))
    whole = mia.token_stats(logits, ids[:, 1:])
    sliced = mia.token_stats(np.ascontiguousarray(logits[:, :-1]), ids[:, 1:])
    for a, b in zip(whole, sliced):
        np.testing.assert_array_equal(a, b)
    assert_stats(whole, ref.token_stats(logits[:, :-1], ids[:, 1:]), F32_TOL)


def test_masked_positions_are_nan_and_their_ids_unchecked(rng):
    logits = random_logits(rng, (2, 4, 50))
    targets = rng.integers(0, 50, (2, 4))
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=bool)
    targets[0, 2:] = -100
    stats = mia.token_stats(logits, targets, mask)
    assert np.isnan(stats.logp[0, 2:]).all() and np.isfinite(stats.logp[mask]).all()
    lengths = mia.token_stats(logits, targets, np.array([2, 4]))
    np.testing.assert_array_equal(stats.logp, lengths.logp)


def test_thread_count_does_not_change_results(rng):
    logits = random_logits(rng, (4, 16, 3000))
    targets = rng.integers(0, 3000, (4, 16))
    one = mia.token_stats(logits, targets, n_jobs=1)
    two = mia.token_stats(logits, targets, n_jobs=2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    time=st.integers(1, 6),
    vocab=st.integers(1, 2100),
    wide=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_token_stats_random_shapes(batch, time, vocab, wide, seed):
    rng = np.random.default_rng(seed)
    dtype = np.float64 if wide else np.float32
    logits = random_logits(rng, (batch, time, vocab), dtype, neg_inf_fraction=0.1 if vocab > 1 else 0.0)
    targets = rng.integers(0, vocab, (batch, time))
    with np.errstate(invalid="ignore"):
        expected = ref.token_stats(logits, targets)
    assert_stats(mia.token_stats(logits, targets), expected, F64_TOL if wide else F32_TOL)


# ---------------------------------------------------------------------------------------------
# Min-K% selection


def test_k_follows_python_int_floor():
    assert int(90 * 0.7) == 62
    values = np.arange(90, dtype=np.float64)[None, ::-1].copy()
    assert mia.min_k(values, ratio=0.7)[0] == np.arange(62).mean()
    assert mia.min_k(np.arange(3.0), ratio=0.3) == 0.0  # 3 * 0.3 = 0.8999...: k = 1 (at least one)
    assert mia.min_k(np.arange(10.0), ratio=0.05) == 0.0
    assert mia.min_k(np.arange(10.0), ratio=1.0) == 4.5


@pytest.mark.parametrize("length", [1, 2, 7, 90, 511, 4096])
def test_min_k_matches_oracle_across_lengths_and_ratios(rng, length):
    lengths = np.array([length, max(1, length // 3), 1])
    values = rng.standard_normal((3, length))
    values[0, : length // 5] = -np.inf if length > 4 else values[0, : length // 5]
    values[1, lengths[1]:] = np.nan  # padding: never read
    for ratio in (0.05, 0.1, 0.2, 0.3, 1 / 3, 0.5, 0.6, 0.7, 0.99, 1.0):
        got = mia.min_k(values, ratio=ratio, mask=lengths)
        np.testing.assert_allclose(got, ref.min_k(values, ratio, lengths), rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(1, 300),
    ratio=st.floats(0.05, 1.0),
    ties=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_min_k_random(length, ratio, ties, seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(-3, 3, (2, length)).astype(np.float64) if ties else rng.standard_normal((2, length))
    np.testing.assert_allclose(mia.min_k(values, ratio=ratio), ref.min_k(values, ratio), rtol=1e-12, atol=1e-12)


def test_min_k_plus_plus_matches_oracle(rng):
    logits = random_logits(rng, (3, 40, 777), neg_inf_fraction=0.1)
    targets = rng.integers(0, 777, (3, 40))
    lengths = np.array([40, 13, 1])
    logp, mu, sigma = ref.token_stats(logits, targets)
    z = ref.normalised(logp, mu, sigma)
    for ratio in (0.05, 0.2, 0.5, 1.0):
        got = mia.min_k_plus_plus(logits, targets, ratio=ratio, mask=lengths)
        np.testing.assert_allclose(got, ref.min_k(z, ratio, lengths), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Scores


def test_score_logits_on_a_padded_batch_equals_one_sequence_at_a_time(rng):
    vocab = 523
    lengths = [17, 5, 1, 30]
    logits = random_logits(rng, (4, 31, vocab))
    ids = rng.integers(0, vocab, (4, 31))
    mask = np.arange(30)[None, :] < np.array(lengths)[:, None]
    texts = ["alpha beta", "gamma", "d", "a longer text with some words in it"]
    ratios = (0.1, 0.2, 0.5)
    batch = mia.score_logits(logits, ids[:, 1:], mask, ratios, texts=texts)
    assert set(batch) == {"loss", "zlib", *(f"min_k@{r:g}" for r in ratios), *(f"min_k++@{r:g}" for r in ratios),
                          *(f"gap_k@{r:g}" for r in ratios)}
    for b, n in enumerate(lengths):
        single = mia.score_logits(logits[b:b + 1, : n + 1], ids[b:b + 1, 1: n + 1], None, ratios, texts=[texts[b]])
        for key in batch:
            np.testing.assert_allclose(batch[key][b], single[key][0], rtol=1e-12, err_msg=key)
        logp, mu, sigma = ref.token_stats(logits[b, :n], ids[b, 1: n + 1])
        nll = -logp.mean()
        np.testing.assert_allclose(batch["loss"][b], -nll, rtol=1e-5)
        np.testing.assert_allclose(batch["zlib"][b], -nll / len(zlib.compress(texts[b].encode())), rtol=1e-5)
        z = ref.normalised(logp, mu, sigma)
        for r in ratios:
            np.testing.assert_allclose(batch[f"min_k@{r:g}"][b], ref.min_k(logp[None], r)[0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(batch[f"min_k++@{r:g}"][b], ref.min_k(z[None], r)[0], rtol=1e-4, atol=1e-4)


def test_metrics_take_the_score_dict(rng):
    logits = random_logits(rng, (20, 9, 50))
    targets = rng.integers(0, 50, (20, 8))
    scores = mia.score_logits(logits, targets, ratios=(0.2,))
    labels = np.r_[np.ones(10), np.zeros(10)]
    aucs = metrics.auroc(scores, labels)
    assert set(aucs) == set(scores) and all(0.0 <= v <= 1.0 for v in aucs.values())
    tprs = metrics.tpr_at_fpr(scores, labels, 0.05)
    assert set(tprs) == set(scores)


def test_helper_scores_follow_the_sign_convention():
    nll = mia.loss(np.log(np.array([[0.5, 0.5, 0.25]])), mask=np.array([2]))
    np.testing.assert_allclose(nll, [np.log(2.0)])
    np.testing.assert_allclose(mia.zlib_ratio([2.0, 1.0], ["aaaa", b"bbbb"]), [-2.0 / 12, -1.0 / 12])
    np.testing.assert_allclose(mia.lowercase_ratio([2.0], [3.0]), [1.5])
    np.testing.assert_allclose(mia.reference_ratio([2.0], [3.5]), [1.5])


def test_demo_runs():
    rows = mia.demo()
    assert rows and "AUROC" in rows[0]["result"]


class _StandInTensor(np.ndarray):
    """Just enough of a torch tensor for score_texts: .to(device), .bool(), .is_cuda."""

    is_cuda = False

    def to(self, device):
        return self

    def bool(self):
        return np.asarray(self).astype(bool).view(_StandInTensor)


class _StandInTokenizer:
    """Characters as token ids, right padding with pad id 0, in the Hugging Face call style."""

    pad_token = None
    eos_token = "<eos>"

    def __call__(self, texts, return_tensors, padding, truncation, max_length):
        ids = [[1] + [2 + (ord(c) % 30) for c in t] for t in texts]
        width = max(len(i) for i in ids)
        input_ids = np.zeros((len(ids), width), np.int64)
        attention = np.zeros((len(ids), width), np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, :len(seq)] = seq
            attention[row, :len(seq)] = 1
        return {"input_ids": input_ids.view(_StandInTensor), "attention_mask": attention.view(_StandInTensor)}


class _StandInModel:
    """A bigram 'language model' with fixed random logits per previous token."""

    def __init__(self, vocab=32, seed=0):
        self.table = np.random.default_rng(seed).normal(size=(vocab, vocab)).astype(np.float32)

    def parameters(self):
        yield _StandInTensor(())

    def __call__(self, input_ids, attention_mask):
        class Out:
            pass

        out = Out()
        out.logits = self.table[np.asarray(input_ids)].view(_StandInTensor)
        return out


def test_score_texts_batches_pads_and_shifts(monkeypatch):
    import contextlib
    import sys
    import types

    fake_torch = types.ModuleType("torch")
    fake_torch.no_grad = contextlib.nullcontext
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    model, tokenizer = _StandInModel(), _StandInTokenizer()
    texts = ["Short one", "a somewhat longer Text", "x", "Middle length"]
    scores = mia.score_texts(model, tokenizer, texts, batch_size=3, ratios=(0.2, 0.5), lowercase=True)
    assert tokenizer.pad_token == "<eos>"
    for i, text in enumerate(texts):
        ids = np.array([1] + [2 + (ord(c) % 30) for c in text])
        logits = model.table[ids][None]
        single = mia.score_logits(logits, ids[None, 1:], ratios=(0.2, 0.5), texts=[text])
        for key, value in single.items():
            np.testing.assert_allclose(scores[key][i], value[0], rtol=1e-12, err_msg=key)
        lower_ids = np.array([1] + [2 + (ord(c) % 30) for c in text.lower()])
        lower = mia.score_logits(model.table[lower_ids][None], lower_ids[None, 1:], ratios=(0.2,))
        np.testing.assert_allclose(scores["lowercase"][i], lower["loss"][0] / single["loss"][0], rtol=1e-12)
    for bad in (0, None, 1.9, True):
        with pytest.raises(ValueError, match="^batch_size: must be an integer >= 1"):
            mia.score_texts(model, tokenizer, texts, batch_size=bad)
    for name in ("progress_bar", "lowercase"):
        with pytest.raises(TypeError, match=f"^{name}: expected True or False"):
            mia.score_texts(model, tokenizer, texts, **{name: "no"})
    with pytest.raises(ValueError, match="texts"):
        mia.score_texts(model, tokenizer, [])
    # A text of one token (its BOS) has nothing scored: named by its index in texts.
    with pytest.raises(ValueError, match=r"^texts: item 9 has 1 token\(s\); scoring needs at least 2"):
        mia.score_texts(model, tokenizer, ["abc"] * 9 + [""], batch_size=8, progress_bar=False)
    with pytest.raises(ValueError, match=r"^texts: item 0 has 1 token"):
        mia.score_texts(model, tokenizer, ["", ""], progress_bar=False)


class _TruncatingTokenizer(_StandInTokenizer):
    """The stand-in tokenizer with an invertible alphabet, truncation and decode."""

    alphabet = "abcdefghijklmnopqrstuvwxyz .,!"

    def __call__(self, texts, return_tensors, padding, truncation, max_length):
        ids = [[1] + [2 + self.alphabet.index(c) for c in t] for t in texts]
        if truncation:
            ids = [seq[:max_length] for seq in ids]
        width = max(len(i) for i in ids)
        input_ids, attention = np.zeros((len(ids), width), np.int64), np.zeros((len(ids), width), np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, :len(seq)], attention[row, :len(seq)] = seq, 1
        return {"input_ids": input_ids.view(_StandInTensor), "attention_mask": attention.view(_StandInTensor)}

    def decode(self, ids, skip_special_tokens):
        return "".join(self.alphabet[i - 2] for i in ids if i >= 2 or not skip_special_tokens)


def test_score_texts_compresses_the_tokens_it_scored(monkeypatch):
    import contextlib
    import sys
    import types

    fake_torch = types.ModuleType("torch")
    fake_torch.no_grad = contextlib.nullcontext
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    model, tokenizer = _StandInModel(), _TruncatingTokenizer()
    texts = ["the quick brown fox " * 50, "short"]
    scores = mia.score_texts(model, tokenizer, texts, max_length=6, progress_bar=False)
    for i, scored_text in enumerate(["the q", "short"]):  # the BOS and five characters are kept
        ids = np.array([1] + [2 + tokenizer.alphabet.index(c) for c in scored_text])
        single = mia.score_logits(model.table[ids][None], ids[None, 1:], texts=[scored_text])
        np.testing.assert_allclose(scores["loss"][i], single["loss"][0], rtol=1e-12)
        assert scores["zlib"][i] == single["loss"][0] / len(zlib.compress(scored_text.encode()))
    untruncated = mia.score_texts(model, tokenizer, texts, progress_bar=False)
    assert untruncated["zlib"][0] == untruncated["loss"][0] / len(zlib.compress(texts[0].encode()))


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.fixture
def good(rng):
    return random_logits(rng, (2, 3, 10)), rng.integers(0, 10, (2, 3))


def test_bad_logits(good):
    logits, targets = good
    with pytest.raises(ValueError, match="logits"):
        mia.token_stats(logits[0], targets)
    with pytest.raises(ValueError, match="logits"):
        mia.token_stats(logits[None], targets)
    with pytest.raises(ValueError, match="logits"):
        mia.token_stats(np.zeros((2, 0, 10), np.float32), targets[:, :0])
    with pytest.raises(TypeError, match="logits"):
        mia.token_stats(logits.astype(np.int32), targets)
    for bad in (np.nan, np.inf):
        broken = logits.copy()
        broken[1, 2, 4] = bad
        with pytest.raises(ValueError, match=r"logits: row \[1, 2\]"):
            mia.token_stats(broken, targets)
    broken = logits.copy()
    broken[0, 1] = -np.inf
    with pytest.raises(ValueError, match=r"logits: row \[0, 1\]"):
        mia.score_logits(broken, targets)
    # A broken row that is masked out is never read into a score.
    stats = mia.token_stats(broken, targets, np.array([[1, 0, 1], [1, 1, 1]], bool))
    assert np.isnan(stats.logp[0, 1])


def test_bad_targets(good):
    logits, targets = good
    for bad in (-1, 10):
        t = targets.copy()
        t[1, 1] = bad
        with pytest.raises(ValueError, match="targets"):
            mia.token_stats(logits, t)
    with pytest.raises(ValueError, match="targets"):
        mia.token_stats(logits, targets[:1])
    with pytest.raises(ValueError, match="targets"):
        mia.token_stats(logits, np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match=r"^targets: expected shape \[2, 3 or 2\] \(logits have 3 positions\), got \(2, 1\)$"):
        mia.token_stats(logits, np.zeros((2, 1), np.int64))
    with pytest.raises(ValueError, match=r"^targets: expected shape \[2, 1\] \(logits have 1 position\)"):
        mia.token_stats(logits[:, :1], np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="targets"):
        mia.token_stats(logits, targets[0])
    with pytest.raises(TypeError, match="targets"):
        mia.token_stats(logits, targets.astype(np.float64))


def test_bad_masks(good):
    logits, targets = good
    with pytest.raises(ValueError, match="mask"):
        mia.token_stats(logits, targets, np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="mask"):
        mia.token_stats(logits, targets, np.array([1, 4]))
    with pytest.raises(ValueError, match="mask"):
        mia.token_stats(logits, targets, np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="mask"):
        mia.token_stats(logits, targets, np.full((2, 3), 2))
    with pytest.raises(ValueError, match="mask"):
        mia.score_logits(logits, targets, np.array([3, 0]))
    with pytest.raises(ValueError, match="mask"):
        mia.min_k(np.zeros((2, 3)), mask=np.array([3, 0]))


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5, float("nan"), ()])
def test_bad_ratios(good, ratio):
    logits, targets = good
    with pytest.raises(ValueError, match="ratio"):
        mia.min_k(np.zeros((2, 3)), ratio=ratio)
    with pytest.raises(ValueError, match="ratio"):
        mia.score_logits(logits, targets, ratios=ratio if ratio == () else (0.2, ratio))
    if ratio != ():
        with pytest.raises(ValueError, match="ratio"):
            mia.min_k_plus_plus(logits, targets, ratio=ratio)


def test_bad_values_and_texts():
    with pytest.raises(TypeError, match="ratio"):
        mia.min_k(np.zeros(3), ratio=True)
    with pytest.raises(ValueError, match="logp"):
        mia.min_k(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="logp"):
        mia.min_k(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="logp"):
        mia.min_k(np.zeros((2, 0)))
    with pytest.raises(ValueError, match="texts"):
        mia.zlib_ratio([1.0, 2.0], ["one"])
    with pytest.raises(TypeError, match="texts"):
        mia.zlib_ratio([1.0], [3])
    with pytest.raises(ValueError, match="^texts: item 1 has no UTF-8 form"):
        mia.zlib_ratio([1.0, 2.0], ["one", "lone \udc80 surrogate"])
    with pytest.raises(ValueError, match="lowercase"):
        mia.lowercase_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="reference"):
        mia.reference_ratio([1.0], [1.0, 2.0])
    # losses: real, finite, one per sequence; the argument at fault is named
    ratios = {"zlib": lambda a, b: mia.zlib_ratio(a, ["one"] * len(np.atleast_1d(a))),
              "lowercase": mia.lowercase_ratio, "reference": mia.reference_ratio}
    for name, ratio in ratios.items():
        for bad, error in (([np.nan], ValueError), ([1.0 + 2.0j], TypeError), (np.array(["1.0"]), TypeError),
                           (np.array([1.0], dtype=object), TypeError), (np.ones((1, 1)), ValueError),
                           (np.zeros(0), ValueError)):
            with pytest.raises(error, match="loss_values: "):
                ratio(bad, [2.0] * max(1, len(np.atleast_1d(bad))))
            if name != "zlib":
                second = f"{name}_loss_values: "
                with pytest.raises(error, match=second):
                    ratio([2.0] * max(1, len(np.atleast_1d(bad))), bad)
    assert mia.lowercase_ratio(np.float64(2.0), [3.0]).tolist() == [1.5]  # one sequence, as a scalar
    # a zero-probability token gives an infinite loss: a score while the other loss is finite,
    # undefined (not NaN) when both are infinite
    assert mia.zlib_ratio([np.inf], ["one"]).tolist() == [-np.inf]
    assert mia.lowercase_ratio([np.inf, 2.0], [3.0, np.inf]).tolist() == [0.0, np.inf]
    assert mia.reference_ratio([np.inf, 2.0], [3.0, np.inf]).tolist() == [-np.inf, np.inf]
    with pytest.raises(ValueError, match="infinite at sequence 1 in both"):
        mia.lowercase_ratio([2.0, np.inf], [3.0, np.inf])
    with pytest.raises(ValueError, match="infinite at sequence 0 in both"):
        mia.reference_ratio([np.inf], [np.inf])


# ---------------------------------------------------------------------------------------------
# CUDA (the Rust result is the oracle)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["float32", "float64", "bfloat16", "float16"])
@pytest.mark.parametrize("vocab", [1, 7, 32000, 50257])
def test_cuda_token_stats_matches_rust(rng, kind, vocab):
    import cupy as cp

    logits = random_logits(rng, (3, 17, vocab), np.float64 if kind == "float64" else np.float32,
                           neg_inf_fraction=0.05 if vocab > 1 else 0.0)
    if kind == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        host = logits.astype(ml_dtypes.bfloat16)
        device = cp.asarray(host.view(np.uint16))
        # cupy has no bfloat16: hand the kernel the bit patterns as the torch path does.
        arr, half = device, "bfloat16"
        targets = rng.integers(0, vocab, (3, 16))
        expected = mia.token_stats(host, targets)
        from fastcore_ad import _cuda

        got = _cuda.token_stats(arr, cp.asarray(targets, dtype=cp.int64), None, half)
    else:
        host = logits.astype(np.float16) if kind == "float16" else logits
        targets = rng.integers(0, vocab, (3, 16))
        expected = mia.token_stats(host, targets)
        got = mia.token_stats(cp.asarray(host), cp.asarray(targets))
    tol = F64_TOL if kind == "float64" else dict(rtol=1e-5, atol=1e-5)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(cp.asnumpy(a), b, **tol)


@pytest.mark.gpu
def test_cuda_scores_and_masks_match_rust(rng):
    import cupy as cp

    logits = random_logits(rng, (4, 33, 1000), neg_inf_fraction=0.1)
    ids = rng.integers(0, 1000, (4, 33))
    lengths = np.array([32, 10, 1, 20])
    cpu = mia.score_logits(logits, ids[:, 1:], lengths)
    gpu = mia.score_logits(cp.asarray(logits), cp.asarray(ids[:, 1:]), cp.asarray(lengths))
    for key in cpu:
        np.testing.assert_allclose(gpu[key], cpu[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_loss_rejects_nan_at_scored_positions():
    logp = np.array([[-1.0, np.nan, -2.0]])
    with pytest.raises(ValueError, match="NaN"):
        mia.loss(logp)
    assert mia.loss(logp, mask=np.array([1])).tolist() == [1.0]  # masked NaN is fine


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32])
def test_loss_matches_the_mean_of_the_scored_tokens(rng, dtype):
    lengths = np.array([17, 1, 9, 17])
    logp = (-rng.exponential(3.0, (4, 17)) * (100 if dtype == np.int32 else 1)).astype(dtype)
    if dtype != np.int32:
        logp[2, 4] = -np.inf  # a zero-probability token: infinite loss
    got = mia.loss(logp, mask=lengths)
    want = [-np.mean(logp[i, :n].astype(np.float64)) for i, n in enumerate(lengths)]
    assert got.dtype == np.float64 and (got[2] == np.inf) == (dtype != np.int32)
    np.testing.assert_allclose(got, want, rtol=1e-14)
    np.testing.assert_allclose(mia.loss(logp[[0, 3]]), [want[0], want[3]], rtol=1e-14)
    assert mia.loss(logp[1, :1]) == -float(logp[1, 0])


def test_means_near_the_float_limit_stay_finite():
    """Log-probabilities near the most negative float: sums overflow, means do not."""
    logp = np.full((2, 5), -1e308)
    logp[1, 0] = -np.finfo(np.float64).max
    np.testing.assert_array_equal(mia.loss(logp), [1e308, -np.mean(logp[1] / 8) * 8])
    assert np.isfinite(mia.loss(logp, mask=np.array([5, 3]))).all()
    np.testing.assert_array_equal(mia.min_k(logp, ratio=1.0), -mia.loss(logp))
    assert mia.min_k(logp[0], ratio=0.6) == -1e308
    assert mia.loss(np.r_[-1e308, -np.inf]) == np.inf


def test_masked_positions_stay_nan_through_normalised(rng):
    logits = rng.normal(size=(1, 4, 6))
    stats = mia.token_stats(logits, np.array([[1, 2, 0, 0]]), mask=np.array([2]))
    z = mia.normalised(stats.logp, stats.mu, stats.sigma)
    assert np.isnan(z[0, 2:]).all() and np.isfinite(z[0, :2]).all()
    with pytest.raises(ValueError, match="NaN"):
        mia.min_k(z, 0.5)  # a forgotten mask is caught, as for logp
    want = np.sort((stats.logp[0, :2] - stats.mu[0, :2]) / stats.sigma[0, :2])[:1].mean()
    assert mia.min_k(z, 0.5, mask=np.array([2]))[0] == pytest.approx(want)
    assert np.isnan(mia.normalised(np.array([-1.0]), np.array([-1.5]), np.array([np.nan]))[0])


def test_score_logits_names_its_ratios(rng):
    with pytest.raises(TypeError, match=r"ratios: expected a number in \(0, 1\] or a list of them"):
        mia.score_logits(rng.normal(size=(1, 4, 5)), rng.integers(0, 5, (1, 3)), ratios={0.2, 0.5})


def test_dc_pdd_counts_near_the_float64_limit():
    # f = [1e308 + 1, 1e308 + 1, 1, 3] / (2e308 + 4): token 1 has frequency 1/2.
    got = mia.dc_pdd(np.log([0.5]), np.array([1]), np.array([1e308, 1e308, 0, 2]), a=10.0)
    assert got == pytest.approx(0.5 * -np.log(0.5), rel=1e-12)
    with pytest.raises(TypeError, match="token_id_arrays: expected integer id arrays"):
        mia.token_frequencies(2, 3)


def test_ratios_sharing_a_key_are_rejected(rng):
    logits = rng.normal(size=(2, 5, 7))
    targets = rng.integers(0, 7, (2, 5))
    with pytest.raises(ValueError, match="ratios"):
        mia.score_logits(logits, targets, ratios=(0.2, 0.2000001))
    assert sorted(mia.score_logits(logits, targets, ratios=(0.2, 0.2))) == ["gap_k@0.2", "loss", "min_k++@0.2", "min_k@0.2"]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_big_endian_logits_equal_native(rng, dtype):
    logits = rng.normal(size=(2, 5, 7)).astype(dtype)
    targets = rng.integers(0, 7, (2, 5))
    big = logits.astype(np.dtype(dtype).newbyteorder(">"))
    assert big.tobytes() != logits.tobytes()  # really another byte order
    np.testing.assert_array_equal(mia.token_stats(big, targets).logp, mia.token_stats(logits, targets).logp)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_uniform_logits_keep_log_vocabulary(dtype):
    # max + ln(V) rounds to max for logits near 3e38: logp and mu came out 0 instead of -ln V.
    logits = np.full((1, 3, 7), 3e38, dtype=dtype)
    stats = mia.token_stats(logits, np.array([[0, 3, 6]]))
    np.testing.assert_allclose(stats.logp, -np.log(7), rtol=1e-6)
    np.testing.assert_allclose(stats.mu, -np.log(7), rtol=1e-6)
    np.testing.assert_array_equal(stats.sigma, 0.0)
