"""Plain oracle of the Tsetlin Machine's thermometer encoding, one column and one value at a
time, from the rule written in ``fastcore_ad._thermometer``:

- a column with one distinct value: that value;
- with at most ``max_bits + 1`` distinct values: every distinct value but the largest;
- with more: the sorted column's entries at ranks ``(i * (n - 1)) // (max_bits + 1)`` for
  i = 1..max_bits, without repeats and without the largest value; if none is left, the
  largest value below the maximum.

The bit of threshold t of feature j is ``x_j > t``.
"""

from __future__ import annotations

import numpy as np


def column_thresholds(column, max_bits: int) -> list[float]:
    values = sorted(float(v) for v in column)
    distinct = sorted(set(values))
    if len(distinct) == 1:
        return distinct
    if len(distinct) <= max_bits + 1:
        return distinct[:-1]
    n = len(values)
    picked = {values[(i * (n - 1)) // (max_bits + 1)] for i in range(1, max_bits + 1)}
    cuts = sorted(v for v in picked if v < distinct[-1])
    return cuts if cuts else [distinct[-2]]


def thresholds(X, max_bits: int) -> list[list[float]]:
    """Per feature, its increasing thresholds (X dense, implicit zeros included)."""
    X = np.asarray(X, dtype=np.float64)
    return [column_thresholds(X[:, j], max_bits) for j in range(X.shape[1])]


def encode(X, per_feature) -> np.ndarray:
    """[n, total thresholds] uint8: bit (j, t) is ``x_j > t``, feature 0's bits first."""
    X = np.asarray(X, dtype=np.float64)
    out = []
    for row in X:
        bits = []
        for j, cuts in enumerate(per_feature):
            bits.extend(1 if row[j] > t else 0 for t in cuts)
        out.append(bits)
    return np.array(out, dtype=np.uint8)
