"""The synthetic text-like workload of the Tsetlin Machine speed table (shared by the benchmarks).

10,000 train / 10,000 test documents x 5,000 binary features, ~1.4% background density, 2 classes
each owning 20 indicative words (present with p=0.15 in their class, 0.02 elsewhere).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

PARAMS = dict(n_clauses=2000, threshold=80, specificity=10.0)


def make(n=10_000, n_features=5_000, density=0.014, words=20, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    rows, cols = [], []
    # Background words: Bernoulli(density) per (document, feature), drawn sparsely.
    counts = rng.binomial(n_features, density, size=n)
    for i, c in enumerate(counts):
        cols.append(rng.choice(n_features, size=c, replace=False))
        rows.append(np.full(c, i))
    for cls in (0, 1):
        own = np.arange(cls * words, (cls + 1) * words)
        p = np.where(y == cls, 0.15, 0.02)
        hits = rng.random((n, words)) < p[:, None]
        r, c = np.nonzero(hits)
        rows.append(r)
        cols.append(own[c])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    X = sp.csr_matrix((np.ones(len(rows), dtype=np.uint8), (rows, cols)), shape=(n, n_features))
    X.data[:] = 1  # duplicates summed by the constructor
    X.sort_indices()
    return X, y


def split():
    X, y = make(20_000)
    return X[:10_000], y[:10_000], X[10_000:], y[10_000:]
