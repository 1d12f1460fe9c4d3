"""Thermometer encoding of numeric features into the bits a Tsetlin Machine reads.

Feature j becomes the bits ``x_j > t_j1, ..., x_j > t_jm`` with increasing thresholds,
1 <= m <= ``max_bits``, learnt from the training column (sparse columns count their implicit
zeros):

- a column with at most ``max_bits + 1`` distinct values gets every split: each distinct value
  but the largest is a threshold (lossless for discrete columns; a 0/1 column gets ``x > 0``);
- a column with more gets the order statistics at ranks ``(i * (n - 1)) // (max_bits + 1)``,
  i = 1..max_bits: quantiles that are values seen in training, so a rule reads
  ``x3 > 0.27`` with a real value; duplicates and the column's largest value are dropped
  (``x > max`` never holds in training), and if nothing is left the largest value below the
  maximum is the one threshold;
- a constant column gets its value (a bit that is 0 on the training data).

Sparse input is never densified: a CSR matrix becomes a CSR pair of bits. Only features with a
threshold below zero set bits for the zeros of a row, so data that is >= 0 stays as sparse as
it was.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Thermometer"]

_BLOCK_BYTES = 16 << 20  # float64 gathers per block of rows while encoding dense input


def _column_thresholds(values, implicit_zeros: int, max_bits: int):
    """Thresholds of one column from its sorted stored ``values`` and its ``implicit_zeros``."""
    distinct = values[np.r_[True, values[1:] != values[:-1]]] if values.size else values
    if implicit_zeros:
        distinct = np.union1d(distinct, [0.0])
    if len(distinct) == 1:
        return distinct
    if len(distinct) <= max_bits + 1:
        return distinct[:-1]
    n = values.size + implicit_zeros
    ranks = (np.arange(1, max_bits + 1) * (n - 1)) // (max_bits + 1)
    # The sorted column is values[:negatives], then the implicit zeros, then values[negatives:].
    negatives = int(np.searchsorted(values, 0.0, side="left"))
    stored = np.where(ranks < negatives, ranks, ranks - implicit_zeros)
    among_zeros = (ranks >= negatives) & (ranks < negatives + implicit_zeros)
    statistics = np.where(among_zeros, 0.0, values[np.clip(stored, 0, values.size - 1)])
    cuts = np.unique(statistics)
    cuts = cuts[cuts < distinct[-1]]
    return cuts if cuts.size else distinct[-2:-1]


class Thermometer:
    """Learnt thresholds: ``thresholds`` float64 ``[n_bits]`` (feature 0's, then feature 1's,
    ...) and ``counts`` int64 ``[n_features]`` (how many each feature has)."""

    def __init__(self, thresholds, counts):
        self.thresholds = np.ascontiguousarray(thresholds, dtype=np.float64)
        self.counts = np.ascontiguousarray(counts, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self.feature_of_bit = np.repeat(np.arange(len(self.counts)), self.counts)
        # A zero sets bits of a feature when its first (smallest) threshold is below 0.
        self.zero_sets_bits = self.thresholds[self.offsets[:-1]] < 0 if self.n_bits else np.zeros(0, dtype=bool)

    @property
    def n_features(self) -> int:
        return len(self.counts)

    @property
    def n_bits(self) -> int:
        return len(self.thresholds)

    @classmethod
    def learn(cls, X, max_bits: int) -> Thermometer:
        """Thresholds from finite training data: a dense 2-D numpy array or a scipy CSR matrix."""
        if hasattr(X, "tocsr"):
            csc = X.tocsc()
            # Columns with nothing stored are all zeros: threshold 0 each, without a Python call
            # per column (text and one-hot matrices have many of them).
            counts = np.ones(csc.shape[1], dtype=np.int64)
            found = {}
            for j in np.flatnonzero(np.diff(csc.indptr)):
                stored = np.sort(csc.data[csc.indptr[j]:csc.indptr[j + 1]].astype(np.float64))
                found[j] = _column_thresholds(stored, csc.shape[0] - stored.size, max_bits)
                counts[j] = len(found[j])
            offsets = np.concatenate([[0], np.cumsum(counts)])
            thresholds = np.zeros(int(offsets[-1]))
            for j, cuts in found.items():
                thresholds[offsets[j]:offsets[j + 1]] = cuts
            return cls(thresholds + 0.0, counts)  # + 0.0: -0.0 reads as 0
        columns = np.sort(np.asarray(X, dtype=np.float64), axis=0)
        per_feature = [_column_thresholds(columns[:, j], 0, max_bits) for j in range(columns.shape[1])]
        counts = [len(t) for t in per_feature]
        return cls(np.concatenate(per_feature) + 0.0, counts)  # + 0.0: -0.0 reads as 0

    @classmethod
    def from_arrays(cls, thresholds, counts, max_bits: int) -> Thermometer:
        """An encoder from stored arrays, checked: ValueError naming what is wrong."""
        thresholds, counts = np.asarray(thresholds), np.asarray(counts)
        if counts.ndim != 1 or counts.dtype.kind not in "iu" or thresholds.ndim != 1 or thresholds.dtype.kind != "f":
            raise ValueError("threshold_counts must be 1-D integers and thresholds 1-D floats")
        if counts.size and (counts.min() < 1 or counts.max() > min(max_bits, 1 << 31)):  # no int64 overflow
            raise ValueError(f"threshold_counts must lie in [1, max_bits={max_bits}]")
        if int(counts.sum()) != thresholds.size:
            raise ValueError(f"{thresholds.size} thresholds for threshold_counts summing to {int(counts.sum())}")
        if not np.isfinite(thresholds).all():
            raise ValueError("thresholds must be finite")
        encoder = cls(thresholds, counts)
        same_feature = encoder.feature_of_bit[1:] == encoder.feature_of_bit[:-1]
        if (np.diff(encoder.thresholds)[same_feature] <= 0).any():
            raise ValueError("thresholds must increase within each feature")
        return encoder

    def literal(self, bit: int) -> tuple[int, float]:
        """The (feature, threshold) that bit ``bit`` tests (``x_feature > threshold``)."""
        return int(self.feature_of_bit[bit]), float(self.thresholds[bit])

    def encode_dense(self, X, xp=np):
        """Bits ``[n, n_bits]`` (bool) of a dense ``[n, n_features]`` array of module ``xp``."""
        thresholds, feature = xp.asarray(self.thresholds), xp.asarray(self.feature_of_bit)
        n = X.shape[0]
        out = xp.empty((n, self.n_bits), dtype=bool)
        step = max(1, _BLOCK_BYTES // max(1, 8 * self.n_bits))
        for start in range(0, n, step):
            block = X[start:start + step].astype(np.float64, copy=False)
            out[start:start + step] = block[:, feature] > thresholds
        return out

    def encode_csr(self, csr):
        """A CSR pair ``(indptr int64, indices int32)`` of the bits of a scipy CSR matrix."""
        csr = csr.copy()
        csr.sum_duplicates()
        n = csr.shape[0]
        zero_features = np.flatnonzero(self.zero_sets_bits)
        if zero_features.size:
            # These features set bits for a zero too: every row gets an explicit entry for them.
            coo = csr.tocoo()
            rows = np.concatenate([coo.row, np.repeat(np.arange(n), zero_features.size)])
            cols = np.concatenate([coo.col, np.tile(zero_features, n)])
            data = np.concatenate([coo.data.astype(np.float64), np.zeros(n * zero_features.size)])
            csr = type(coo)((data, (rows, cols)), shape=csr.shape).tocsr()
            csr.sum_duplicates()
        values = csr.data.astype(np.float64, copy=False)
        features = csr.indices.astype(np.int64, copy=False)
        # Bits per entry: the feature's thresholds below the value (one pass per threshold rank).
        bits = np.zeros(values.size, dtype=np.int64)
        for rank in range(int(self.counts.max(initial=0))):
            has_rank = self.counts > rank
            level = np.full(self.n_features, np.inf)
            level[has_rank] = self.thresholds[self.offsets[:-1][has_rank] + rank]
            bits += values > level[features]
        total = np.concatenate([[0], np.cumsum(bits)])
        entry = np.repeat(np.arange(values.size), bits)
        indices = self.offsets[features][entry] + (np.arange(total[-1]) - total[:-1][entry])
        indptr = total[np.asarray(csr.indptr, dtype=np.int64)]
        return np.ascontiguousarray(indptr, dtype=np.int64), np.ascontiguousarray(indices, dtype=np.int32)
