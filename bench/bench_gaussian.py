"""Gaussian AD speed, side by side with its peers (pytest-benchmark groups).

    python -m pytest bench/bench_gaussian.py --benchmark-enable --benchmark-columns=min,mean,rounds
"""

import numpy as np
import pytest
import scipy.linalg

from fastcore_ad import GaussianAD, mahalanobis
from fastcore_ad.gaussian import mahalanobis_per_position

ROUNDS = 3


@pytest.fixture(scope="module")
def single():
    rng = np.random.default_rng(0)
    m, d = 100_000, 1536
    x = rng.normal(size=(m, d)).astype(np.float32)
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    cov = a @ a.T + np.eye(d)
    chol_cov = np.linalg.cholesky(cov)
    precision = np.linalg.inv(cov)
    lower = np.linalg.cholesky(precision)
    mean = rng.normal(size=d)
    return {
        "x": x, "mean": mean.astype(np.float32), "lower": lower.astype(np.float32),
        "precision": precision.astype(np.float32), "chol_cov": chol_cov.astype(np.float32),
        "cov": cov, "mean64": mean,
    }


def run(benchmark, fn, *args):
    return benchmark.pedantic(fn, args=args, rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="mahalanobis 100000x1536 f32")
def test_mahalanobis__fastcore(benchmark, single):
    run(benchmark, mahalanobis, single["x"], single["mean"], single["lower"])


@pytest.mark.benchmark(group="mahalanobis 100000x1536 f32")
def test_mahalanobis__numpy_whiten(benchmark, single):
    def whiten(x, mean, lower):
        z = (x - mean) @ lower
        return np.sqrt(np.einsum("ij,ij->i", z, z))

    run(benchmark, whiten, single["x"], single["mean"], single["lower"])


@pytest.mark.benchmark(group="mahalanobis 100000x1536 f32")
def test_mahalanobis__numpy_precision_quadratic(benchmark, single):
    def quadratic(x, mean, precision):
        delta = x - mean
        return np.sqrt(np.einsum("ij,ij->i", delta @ precision, delta))

    run(benchmark, quadratic, single["x"], single["mean"], single["precision"])


@pytest.mark.benchmark(group="mahalanobis 100000x1536 f32")
def test_mahalanobis__scipy_solve_triangular(benchmark, single):
    def solve(x, mean, chol_cov):
        z = scipy.linalg.solve_triangular(chol_cov, (x - mean).T, lower=True, check_finite=False)
        return np.sqrt(np.einsum("ij,ij->j", z, z))

    run(benchmark, solve, single["x"], single["mean"], single["chol_cov"])


@pytest.mark.benchmark(group="mahalanobis 100000x1536 f32")
def test_mahalanobis__torch_einsum(benchmark, single):
    torch = pytest.importorskip("torch")
    x, mean, precision = (torch.from_numpy(single[k]) for k in ("x", "mean", "precision"))

    def einsum():
        delta = x - mean
        return torch.sqrt(torch.einsum("ij,jk,ik->i", delta, precision, delta))

    run(benchmark, einsum)


@pytest.mark.benchmark(group="mahalanobis 100000x1536 f32")
def test_mahalanobis__sklearn_10k_rows_x10(benchmark, single):
    """scikit-learn on a tenth of the rows (its full run takes minutes): multiply by 10."""
    from sklearn.covariance import EmpiricalCovariance

    est = EmpiricalCovariance().fit(np.random.default_rng(1).normal(size=(3000, single["x"].shape[1])))
    est.location_ = single["mean64"]
    est.precision_ = single["precision"].astype(np.float64)
    x = single["x"][:10_000]
    benchmark.pedantic(est.mahalanobis, args=(x,), rounds=1, iterations=1)


@pytest.fixture(scope="module")
def positions():
    rng = np.random.default_rng(0)
    p, d, batch = 1024, 550, 8
    x = rng.normal(size=(batch, p, d)).astype(np.float32)
    means = rng.normal(size=(p, d)).astype(np.float32)
    base = rng.normal(size=(d, d)) / np.sqrt(d)
    precision = np.linalg.inv(base @ base.T + np.eye(d))
    lower = np.linalg.cholesky(precision)
    # Per-position matrices (a small per-position scale keeps them distinct, cheaply).
    scales = (1.0 + 0.1 * rng.random(p)).astype(np.float32)
    factors = (lower.astype(np.float32)[None] * np.sqrt(scales)[:, None, None])
    inverses = (precision.astype(np.float32)[None] * scales[:, None, None])
    return {"x": x, "means": means, "factors": factors, "inverses": inverses}


@pytest.mark.benchmark(group="per-position 1024 pos, d=550, batch 8, f32")
def test_per_position__fastcore(benchmark, positions):
    run(benchmark, mahalanobis_per_position, positions["x"], positions["means"], positions["factors"])


@pytest.mark.benchmark(group="per-position 1024 pos, d=550, batch 8, f32")
def test_per_position__anomalib_pattern_numpy(benchmark, positions):
    def anomalib_pattern(x, means, inverses):
        delta = np.transpose(x - means[None], (1, 0, 2))  # [P, B, d]
        return np.sqrt((np.matmul(delta, inverses) * delta).sum(2)).T

    run(benchmark, anomalib_pattern, positions["x"], positions["means"], positions["inverses"])


@pytest.fixture(scope="module")
def fit_data():
    rng = np.random.default_rng(0)
    d = 1536
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(300, d)) @ mix).astype(np.float64)


@pytest.mark.benchmark(group="Ledoit-Wolf fit n=300 d=1536 (+ precision)")
def test_fit__fastcore(benchmark, fit_data):
    run(benchmark, lambda X: GaussianAD(progress=False).fit(X), fit_data)


@pytest.mark.benchmark(group="Ledoit-Wolf fit n=300 d=1536 (+ precision)")
def test_fit__sklearn_ledoit_wolf(benchmark, fit_data):
    from sklearn.covariance import LedoitWolf

    def sklearn_fit(X):
        est = LedoitWolf().fit(X)
        return est.get_precision()

    run(benchmark, sklearn_fit, fit_data)


def gpu_cases():
    """CUDA cases for bench/gpu_check.py."""
    import cupy as cp

    rng = np.random.default_rng(0)
    m, d = 100_000, 1536
    x = cp.asarray(rng.normal(size=(m, d)).astype(np.float32))
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    lower = cp.asarray(np.linalg.cholesky(np.linalg.inv(a @ a.T + np.eye(d))).astype(np.float32))
    mean = cp.asarray(rng.normal(size=d).astype(np.float32))

    def peer():
        z = (x - mean) @ lower
        return cp.sqrt((z * z).sum(axis=1))

    p, dp, batch = 1024, 550, 8
    xp = cp.asarray(rng.normal(size=(batch, p, dp)).astype(np.float32))
    means = cp.asarray(rng.normal(size=(p, dp)).astype(np.float32))
    b = rng.normal(size=(dp, dp)) / np.sqrt(dp)
    prec = np.linalg.inv(b @ b.T + np.eye(dp))
    factors = cp.asarray(np.broadcast_to(np.linalg.cholesky(prec).astype(np.float32), (p, dp, dp)).copy())
    inverses = cp.asarray(np.broadcast_to(prec.astype(np.float32), (p, dp, dp)).copy())

    def padim_peer():
        delta = cp.transpose(xp - means[None], (1, 0, 2))
        return cp.sqrt((cp.matmul(delta, inverses) * delta).sum(2)).T

    return [
        {"kernel": "mahalanobis", "shape": f"{m}x{d} f32", "ours": lambda: mahalanobis(x, mean, lower),
         "peer": peer, "peer_name": "cupy dense whitening GEMM", "flops": m * d * d, "bytes": x.nbytes},
        {"kernel": "mahalanobis_per_position", "shape": f"{p} pos, d={dp}, batch {batch}",
         "ours": lambda: mahalanobis_per_position(xp, means, factors), "peer": padim_peer,
         "peer_name": "anomalib pattern (cupy matmul)", "bytes": factors.nbytes // 2 + xp.nbytes},
    ]
