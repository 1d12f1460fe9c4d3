"""The synthetic text-like workload of the Tsetlin Machine speed table (shared by the benchmarks).

10,000 train / 10,000 test documents x 5,000 binary features, ~1.4% background density, 2 classes
each owning 20 indicative words (present with p=0.15 in their class, 0.02 elsewhere).

The background words are drawn over every feature, indicative ones included, so an indicative
word is present with p = 1 - 0.85 x 0.986 = 0.162 in its class and 0.034 elsewhere. The two
classes are symmetric, so the Bayes-optimal rule compares the counts of the two classes'
indicative words (a coin for ties): ``bayes_accuracy()`` is its exact accuracy (91.95%), and
``bayes_rule(X)`` applies it to documents.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

PARAMS = dict(n_clauses=2000, threshold=80, specificity=10.0)
WORDS, P_OWN, P_OTHER, DENSITY = 20, 0.15, 0.02, 0.014


def make(n=10_000, n_features=5_000, density=DENSITY, words=WORDS, seed=0):
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
        p = np.where(y == cls, P_OWN, P_OTHER)
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


def bayes_accuracy(words=WORDS, density=DENSITY) -> float:
    """Exact accuracy of the Bayes-optimal classifier on this workload (equal priors)."""
    from scipy.stats import binom

    own, other = 1 - (1 - P_OWN) * (1 - density), 1 - (1 - P_OTHER) * (1 - density)
    k = np.arange(words + 1)
    # joint law of (own-class count, other-class count) for a document of either class
    joint = np.outer(binom.pmf(k, words, own), binom.pmf(k, words, other))
    return float(np.tril(joint, -1).sum() + 0.5 * np.trace(joint))


def bayes_rule(X, words=WORDS):
    """``(predictions, ties)``: the Bayes-optimal class of each document (its own class's
    indicative words outnumber the other's), ties marked so they can be scored as 1/2."""
    own0 = np.asarray(X[:, :words].sum(axis=1)).ravel()
    own1 = np.asarray(X[:, words:2 * words].sum(axis=1)).ravel()
    return (own1 > own0).astype(np.int64), own0 == own1
