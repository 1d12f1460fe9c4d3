"""Tsetlin Machine benchmarks on the synthetic text-like workload of bench/tsetlin_workload.py.

Run: .venv/bin/python -m pytest bench/bench_tsetlin.py --benchmark-enable -q
Peers (pyTsetlinMachine, tmu, green-tsetlin) are measured by bench/peers_tsetlin.py in their
own virtual environment when installed; see bench/RESULTS.md.
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from tsetlin_workload import PARAMS, split  # noqa: E402

from fastcore_ad import TsetlinMachine  # noqa: E402

EPOCH_DOCS = int(os.environ.get("TSETLIN_BENCH_DOCS", "10000"))


@pytest.fixture(scope="module")
def data():
    return split()


@pytest.fixture(scope="module")
def trained(data):
    Xtr, ytr, _, _ = data
    return TsetlinMachine(**PARAMS, seed=1).fit(Xtr, ytr, epochs=2, progress_bar=False)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_train_epoch__fastcore(benchmark, data, n_jobs):
    benchmark.group = "tsetlin: one epoch, 10k docs x 5k features, 2x2000 clauses"
    Xtr, ytr, _, _ = data
    Xtr, ytr = Xtr[:EPOCH_DOCS], ytr[:EPOCH_DOCS]
    benchmark.extra_info["n_jobs"] = n_jobs

    def one_epoch():
        return TsetlinMachine(**PARAMS, seed=1, n_jobs=n_jobs).fit(Xtr, ytr, epochs=1, progress_bar=False)

    benchmark.pedantic(one_epoch, rounds=1, iterations=1)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_predict_10k__fastcore(benchmark, data, trained, n_jobs):
    benchmark.group = "tsetlin: predict 10k docs"
    _, _, Xte, yte = data
    trained.set_params(n_jobs=n_jobs)
    pred = benchmark(trained.predict, Xte)
    benchmark.extra_info["accuracy"] = float(np.mean(pred == yte))


def test_predict_10k__dense_words_fastcore(benchmark, data, trained):
    benchmark.group = "tsetlin: predict 10k docs"
    _, _, Xte, _ = data
    dense = Xte.toarray().astype(bool)
    benchmark(trained.predict, dense)


def gpu_cases():
    """CUDA cases for bench/gpu_check.py: one training epoch (the model trained on the GPU must
    equal the CPU's bit for bit, else this raises) and prediction of the 10k test documents."""
    import cupy as cp

    Xtr, ytr, Xte, _ = split()
    docs = int(os.environ.get("TSETLIN_GPU_TRAIN_DOCS", "2000"))
    X, y = Xtr[:docs], ytr[:docs]

    def train(device):
        return TsetlinMachine(**PARAMS, seed=1, device=device).fit(X, y, epochs=1, progress_bar=False)

    on_cpu, on_gpu = train("cpu"), train("cuda")
    for name in ("action_", "lower_", "weights_"):
        if not np.array_equal(getattr(on_cpu, name), getattr(on_gpu, name)):
            raise AssertionError(f"tsetlin: {name} trained on CUDA differs from the CPU model")
    dense = cp.asarray(Xte.toarray().astype(np.uint8))
    model = on_cpu.set_params(device="cuda")
    return [
        {"kernel": "tsetlin training (evaluate, pick, feedback per example)",
         "shape": f"1 epoch, {docs} docs x 5k features, 2x{PARAMS['n_clauses']} clauses",
         "ours": lambda: train("cuda"), "peer": lambda: train("cpu"), "peer_name": "the Rust CPU kernels",
         "repeat": 2},
        {"kernel": "tsetlin_class_sums", "shape": f"{dense.shape[0]} docs x 5k features",
         "ours": lambda: model.class_sums(dense), "peer": None},
    ]
