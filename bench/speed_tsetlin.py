"""Speed table of the synthetic Tsetlin workload (bench/tsetlin_workload.py), one configuration
per run: `.venv/bin/python bench/speed_tsetlin.py N_JOBS [EPOCHS]`.

Prints seconds per epoch, prediction time for the 10k test documents, test accuracy and the
process's peak resident memory (data included).
"""

import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from tsetlin_workload import PARAMS, split  # noqa: E402

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
    per_epoch = ", ".join(f"{h['seconds']:.1f}" for h in tm.history_)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"n_jobs={jobs}: {fit / epochs:.2f} s/epoch (epochs: {per_epoch} s), predict 10k {predict:.3f} s, "
          f"accuracy {acc:.4f}, peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
