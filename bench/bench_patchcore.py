"""Exact kNN against a bank and the greedy k-center coreset, side by side with their peers.

    python -m pytest bench/bench_patchcore.py --benchmark-enable --benchmark-columns=min,mean,rounds

kNN peers: scikit-learn NearestNeighbors(algorithm="brute") and faiss-cpu IndexFlatL2 (exact
L2; `pip install faiss-cpu`, in the bench extra). Coreset peer: a vectorised numpy rewrite of
anomalib's KCenterGreedy (one full distance pass per step, argmax), the same rule as ours.
Sizes are scaled down from the PatchCore workload (m = 100,000, n = 200,000, d = 384) so one
run fits in minutes on 2 cores; FASTCORE_AD_BENCH_SCALE multiplies m and n, and
FASTCORE_AD_CORESET="n,d,n_select" sets the coreset workload (FASTCORE_AD_BENCH_ROUNDS: rounds per
case, default 2).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from fastcore_ad import knn, patchcore

SCALE = float(os.environ.get("FASTCORE_AD_BENCH_SCALE", "1"))
M, N, D = int(10_000 * SCALE), int(40_000 * SCALE), 384
# FASTCORE_AD_CORESET="200000,128,20000" runs the full PatchCore coreset workload (the numpy
# rule then takes about 25 minutes).
CORESET_N, CORESET_D, CORESET_SELECT = (
    int(v) for v in os.environ.get("FASTCORE_AD_CORESET", "50000,128,1000").split(","))


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((M, D), dtype=np.float32), rng.standard_normal((N, D), dtype=np.float32))


ROUNDS = int(os.environ.get("FASTCORE_AD_BENCH_ROUNDS", "2"))


def run(benchmark, fn, rounds=ROUNDS):
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)


@pytest.mark.parametrize("k", [1, 9])
def test_knn__fastcore(benchmark, vectors, k):
    benchmark.group = f"knn {M} x {N} x {D} f32, k={k}"
    q, b = vectors
    run(benchmark, lambda: knn(q, b, k))


@pytest.mark.parametrize("k", [1, 9])
def test_knn__faiss_flat_l2(benchmark, vectors, k):
    faiss = pytest.importorskip("faiss")
    benchmark.group = f"knn {M} x {N} x {D} f32, k={k}"
    q, b = vectors
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index = faiss.IndexFlatL2(D)
    index.add(b)
    run(benchmark, lambda: index.search(q, k))


@pytest.mark.parametrize("k", [1, 9])
def test_knn__sklearn_brute(benchmark, vectors, k):
    from sklearn.neighbors import NearestNeighbors

    benchmark.group = f"knn {M} x {N} x {D} f32, k={k}"
    q, b = vectors
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(b)
    run(benchmark, lambda: nn.kneighbors(q), rounds=1)


@pytest.fixture(scope="module")
def coreset_data():
    return np.random.default_rng(1).standard_normal((CORESET_N, CORESET_D), dtype=np.float32)


def kcenter_greedy_numpy(x, n_select, start=0):
    """anomalib's KCenterGreedy rule, vectorised: per step one distance pass and an argmax."""
    min_d2 = None
    chosen = [start]
    for _ in range(n_select - 1):
        d2 = ((x - x[chosen[-1]]) ** 2).sum(axis=1)
        min_d2 = d2 if min_d2 is None else np.minimum(min_d2, d2)
        chosen.append(int(np.argmax(min_d2)))
    return np.array(chosen)


def test_coreset__fastcore(benchmark, coreset_data):
    benchmark.group = f"greedy coreset {CORESET_N} x {CORESET_D} f32, {CORESET_SELECT} selected"
    run(benchmark, lambda: patchcore.greedy_coreset(coreset_data, CORESET_SELECT, progress_bar=False))


def test_coreset__numpy_kcenter_greedy(benchmark, coreset_data):
    benchmark.group = f"greedy coreset {CORESET_N} x {CORESET_D} f32, {CORESET_SELECT} selected"
    run(benchmark, lambda: kcenter_greedy_numpy(coreset_data, CORESET_SELECT), rounds=1)


def gpu_cases():
    """CUDA cases for bench/gpu_check.py: exact kNN and one greedy coreset run against cupy
    (cuBLAS distance GEMM + argmin, and the vectorised greedy rule)."""
    import cupy as cp

    rng = np.random.default_rng(0)
    m, n, d = 20_000, 100_000, 384
    q = cp.asarray(rng.standard_normal((m, d), dtype=np.float32))
    b = cp.asarray(rng.standard_normal((n, d), dtype=np.float32))
    bn = (b * b).sum(axis=1)

    def peer_knn():
        keys = bn[None, :] - 2.0 * (q @ b.T)      # cuBLAS GEMM, expanded float32 keys
        return cp.argmin(keys, axis=1)

    x = cp.asarray(rng.standard_normal((200_000, 128), dtype=np.float32))

    def peer_coreset(n_select=200):
        min_d2 = cp.full(x.shape[0], cp.inf, dtype=cp.float32)
        chosen = [0]
        for _ in range(n_select - 1):
            min_d2 = cp.minimum(min_d2, ((x - x[chosen[-1]]) ** 2).sum(axis=1))
            chosen.append(int(cp.argmax(min_d2)))
        return chosen

    return [
        {"kernel": "knn (k=1, exact)", "shape": f"{m} x {n} x {d} f32", "ours": lambda: knn(q, b, 1),
         "peer": peer_knn, "peer_name": "cupy GEMM + argmin", "flops": 2 * m * n * d},
        {"kernel": "greedy_coreset", "shape": "200,000 x 128 f32, 200 selected",
         "ours": lambda: patchcore.greedy_coreset(x, 200, progress_bar=False), "peer": peer_coreset,
         "peer_name": "cupy greedy rule", "bytes": x.nbytes * 199},
    ]
