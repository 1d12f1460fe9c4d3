"""Peers on the synthetic Tsetlin workload, run in their own virtual environment:

    python3 -m venv /tmp/tm_peers && /tmp/tm_peers/bin/pip install numpy scipy green-tsetlin pyTsetlinMachine
    /tmp/tm_peers/bin/python bench/peers_tsetlin.py [green1|green2|pytm] [epochs]
    python3 -m venv /tmp/tmu_env && /tmp/tmu_env/bin/pip install "numpy<2" tmu==0.8.3 scipy
    /tmp/tmu_env/bin/python bench/peers_tsetlin.py [tmu|tmu_sparse] [epochs]

Prints one line per measurement: peer, seconds per epoch, prediction seconds for 10k docs,
test accuracy.
"""

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from tsetlin_workload import PARAMS, split  # noqa: E402


def main():
    which = sys.argv[1]
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    Xtr, ytr, Xte, yte = split()
    if which.startswith("green"):
        import green_tsetlin as gt

        jobs = int(which[-1])
        xtr, xte = Xtr.toarray().astype(np.uint8), Xte.toarray().astype(np.uint8)
        # green-tsetlin is coalesced (one shared pool): 2 x 2000 clauses in the pool.
        tm = gt.TsetlinMachine(n_literals=xtr.shape[1], n_clauses=2 * PARAMS["n_clauses"], n_classes=2,
                               s=PARAMS["specificity"], threshold=PARAMS["threshold"], boost_true_positives=True)
        trainer = gt.Trainer(tm, seed=1, n_jobs=jobs, n_epochs=epochs, progress_bar=False, load_best_state=False)
        trainer.set_train_data(xtr, ytr.astype(np.uint32))
        trainer.set_eval_data(xte[:100], yte[:100].astype(np.uint32))
        t = time.perf_counter()
        trainer.train()
        fit = (time.perf_counter() - t) / epochs
        predictor = tm.get_predictor()
        t = time.perf_counter()
        pred = np.array([predictor.predict(x) for x in xte])
        pt = time.perf_counter() - t
    elif which.startswith("tmu"):
        from tmu.models.classification.vanilla_classifier import TMClassifier

        sparse = which == "tmu_sparse"
        xtr = Xtr.astype(np.uint32) if sparse else Xtr.toarray().astype(np.uint32)
        xte = Xte.astype(np.uint32) if sparse else Xte.toarray().astype(np.uint32)
        tm = TMClassifier(PARAMS["n_clauses"], PARAMS["threshold"], PARAMS["specificity"],
                          platform="CPU_sparse" if sparse else "CPU", weighted_clauses=True,
                          boost_true_positive_feedback=1, seed=1)
        t = time.perf_counter()
        for _ in range(epochs):
            tm.fit(xtr, ytr.astype(np.uint32))
        fit = (time.perf_counter() - t) / epochs
        t = time.perf_counter()
        pred = tm.predict(xte)
        pt = time.perf_counter() - t
    else:
        from pyTsetlinMachine.tm import MultiClassTsetlinMachine

        xtr, xte = Xtr.toarray().astype(np.uint32), Xte.toarray().astype(np.uint32)
        tm = MultiClassTsetlinMachine(PARAMS["n_clauses"], PARAMS["threshold"], PARAMS["specificity"],
                                      boost_true_positive_feedback=1, weighted_clauses=True)
        t = time.perf_counter()
        tm.fit(xtr, ytr.astype(np.uint32), epochs=epochs)
        fit = (time.perf_counter() - t) / epochs
        t = time.perf_counter()
        pred = tm.predict(xte)
        pt = time.perf_counter() - t
    print(f"{which}: {fit:.2f} s/epoch, predict {pt:.3f} s, accuracy {np.mean(pred == yte):.4f}", flush=True)


if __name__ == "__main__":
    main()
