"""Speed table of the synthetic Tsetlin workload (bench/tsetlin_workload.py), one configuration
per run: `.venv/bin/python bench/speed_tsetlin.py N_JOBS [EPOCHS]`.

Prints seconds per epoch, prediction time for the 10k test documents, test accuracy beside the
Bayes-optimal accuracy (exact, and of the Bayes rule on the same test documents, ties scored 1/2),
and the process's peak resident memory (data included).
"""

import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from tsetlin_workload import PARAMS, bayes_accuracy, bayes_rule, split  # noqa: E402

from fastcore_ad import TsetlinMachine  # noqa: E402


def main():
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    Xtr, ytr, Xte, yte = split()
    tm = TsetlinMachine(**PARAMS, seed=1, n_jobs=jobs)
    t = time.perf_counter()
    tm.fit(Xtr, ytr, epochs=epochs, progress_bar=False)
    fit = time.perf_counter() - t
    t = time.perf_counter()
    acc = tm.score(Xte, yte)
    predict = time.perf_counter() - t
    bayes, ties = bayes_rule(Xte)
    bayes_test = float(np.mean(np.where(ties, 0.5, bayes == yte)))
    per_epoch = ", ".join(f"{h['seconds']:.1f}" for h in tm.history_)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"n_jobs={jobs}: {fit / epochs:.2f} s/epoch (epochs: {per_epoch} s), predict 10k {predict:.3f} s, "
          f"accuracy {acc:.4f} (Bayes-optimal {bayes_accuracy():.4f}, on these test documents {bayes_test:.4f}), "
          f"peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
