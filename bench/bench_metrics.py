"""Metric speed on ~10 million pixels, side by side with scikit-learn and an exact numpy AUPRO.

    python -m pytest bench/bench_metrics.py --benchmark-enable --benchmark-columns=min,mean,rounds
"""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fastcore_ad import metrics
from tests.reference.metrics import aupro_mvtec


@pytest.fixture(scope="module")
def pixels():
    rng = np.random.default_rng(0)
    n, h, w = 160, 256, 256  # 10.5 M pixels
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            r, c = rng.integers(0, h - 40, 2)
            masks[i, r:r + rng.integers(4, 40), c:c + rng.integers(4, 40)] = True
    maps = (rng.normal(size=masks.shape) + 1.2 * masks).astype(np.float32)
    return maps, masks


def run(benchmark, fn, *args):
    return benchmark.pedantic(fn, args=args, rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="pixel AUROC 10.5M")
def test_auroc__fastcore(benchmark, pixels):
    maps, masks = pixels
    run(benchmark, metrics.auroc, maps.ravel(), masks.ravel())


@pytest.mark.benchmark(group="pixel AUROC 10.5M")
def test_auroc__sklearn(benchmark, pixels):
    maps, masks = pixels
    benchmark.pedantic(roc_auc_score, args=(masks.ravel(), maps.ravel()), rounds=1, iterations=1)


@pytest.mark.benchmark(group="pixel AP 10.5M")
def test_average_precision__fastcore(benchmark, pixels):
    maps, masks = pixels
    run(benchmark, metrics.average_precision, maps.ravel(), masks.ravel())


@pytest.mark.benchmark(group="pixel AP 10.5M")
def test_average_precision__sklearn(benchmark, pixels):
    maps, masks = pixels
    benchmark.pedantic(average_precision_score, args=(masks.ravel(), maps.ravel()), rounds=1, iterations=1)


@pytest.mark.benchmark(group="all ranking metrics 10.5M (one sort)")
def test_evaluate__fastcore(benchmark, pixels):
    maps, masks = pixels
    run(benchmark, metrics.evaluate, maps.ravel(), masks.ravel())


@pytest.mark.benchmark(group="AUPRO@0.3 10.5M")
def test_aupro__fastcore(benchmark, pixels):
    maps, masks = pixels
    run(benchmark, metrics.aupro, maps, masks)


@pytest.mark.benchmark(group="AUPRO@0.3 10.5M")
def test_aupro__numpy_mvtec_exact(benchmark, pixels):
    maps, masks = pixels
    benchmark.pedantic(aupro_mvtec, args=(maps, masks), rounds=1, iterations=1)
