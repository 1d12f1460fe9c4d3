"""Min-K% / Min-K%++ token statistics, side by side with the reference code's math.

    python -m pytest bench/bench_mia.py --benchmark-enable --benchmark-columns=min,mean,rounds

The reference implementations (Min-K% Prob and Min-K%++) materialise softmax and log_softmax
over [T, V] in float32 and take sigma from E[log p^2] - mu^2; `numpy_reference` reproduces that
math in numpy on the whole batch (torch is not installed on the benchmark machine).
"""

import numpy as np
import pytest

from fastcore_ad import mia

B, T, V = 8, 512, 50257
ROUNDS = 3


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((B, T, V), dtype=np.float32) * 3.0)
    targets = rng.integers(0, V, (B, T))
    return logits, targets


def run(benchmark, fn, *args, rounds=ROUNDS):
    return benchmark.pedantic(fn, args=args, rounds=rounds, iterations=1, warmup_rounds=1)


def numpy_reference(logits, targets):
    """The reference code's math: log_softmax and softmax materialised, variance by E[x^2] - mu^2."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    probs = np.exp(log_probs)
    logp = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    mu = (probs * log_probs).sum(axis=-1)
    sigma = np.sqrt((probs * np.square(log_probs)).sum(axis=-1) - np.square(mu))
    return logp, mu, sigma


@pytest.mark.benchmark(group=f"token_stats [{B}, {T}, {V}] f32")
def test_token_stats__fastcore(benchmark, batch):
    run(benchmark, mia.token_stats, *batch)


@pytest.mark.benchmark(group=f"token_stats [{B}, {T}, {V}] f32")
def test_token_stats__fastcore_1_thread(benchmark, batch):
    run(benchmark, lambda x, t: mia.token_stats(x, t, n_jobs=1), *batch)


@pytest.mark.benchmark(group=f"token_stats [{B}, {T}, {V}] f32")
def test_token_stats__numpy_reference(benchmark, batch):
    run(benchmark, numpy_reference, *batch, rounds=1)


@pytest.mark.benchmark(group=f"token_stats [{B}, {T}, {V}] bf16")
def test_token_stats_bf16__fastcore(benchmark, batch):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    logits = batch[0].astype(ml_dtypes.bfloat16)
    run(benchmark, mia.token_stats, logits, batch[1])


@pytest.mark.benchmark(group=f"score_logits [{B}, {T}, {V}] f32, 6 ratios")
def test_score_logits__fastcore(benchmark, batch):
    run(benchmark, mia.score_logits, *batch)


@pytest.mark.benchmark(group=f"score_logits [{B}, {T}, {V}] f32, 6 ratios")
def test_score_logits__numpy_reference(benchmark, batch):
    def reference_scores(logits, targets):
        logp, mu, sigma = numpy_reference(logits, targets)
        z = (logp - mu) / sigma
        out = {"loss": logp.mean(axis=1)}
        for ratio in mia.DEFAULT_RATIOS:
            k = int(T * ratio)
            out[f"min_k@{ratio:g}"] = np.sort(logp, axis=1)[:, :k].mean(axis=1)
            out[f"min_k++@{ratio:g}"] = np.sort(z, axis=1)[:, :k].mean(axis=1)
        return out

    run(benchmark, reference_scores, *batch, rounds=1)


EVERY = f"every score [{B}, {T}, {V}] f32: score_logits (loss, zlib-free, Min-K%, Min-K%++, Gap-K%, DC-PDD) vs token_stats"


@pytest.mark.benchmark(group=EVERY)
def test_every_score__fastcore(benchmark, batch):
    counts = np.bincount(np.random.default_rng(1).integers(0, V, 200_000), minlength=V)
    run(benchmark, lambda x, t: mia.score_logits(x, t, counts=counts), *batch, rounds=5)


@pytest.mark.benchmark(group=EVERY)
def test_every_score__token_stats_alone(benchmark, batch):
    run(benchmark, mia.token_stats, *batch, rounds=5)
