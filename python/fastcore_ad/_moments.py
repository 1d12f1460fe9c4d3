"""Mergeable sufficient statistics of a Gaussian fit: what :meth:`GaussianAD.partial_fit` keeps
between chunks and what the workers of a distributed fit send back (``d x d`` matrices, never
rows).

Per Gaussian, in float64:

- ``count`` rows, ``offset`` = mean - ``shift`` and ``scatter`` = sum of the centred outer
  products, merged with Chan et al.'s parallel update (exact in exact arithmetic, no
  cancellation: each part is centred on its own mean);
- ``cubic`` = sum ||y||^2 y and ``quartic`` = sum ||y||^4 with ``y = x - shift``, the raw
  moments that the Ledoit-Wolf shrinkage needs (sum over rows of ||x - mean||^4). They are kept
  about a fixed ``shift`` (the first chunk's mean), so they merge by plain addition and their
  expansion about the final mean does not cancel: ``mean - shift`` is small next to the spread.

The closing step (:meth:`GaussianMoments.finish`) forms the covariance and the shrinkage with
the formulas of the Rust kernel (``rust/gaussian/mod.rs``: ``ledoit_wolf_shrinkage``,
``oas_shrinkage``, scikit-learn's definitions) and the same lower-triangular precision factor.

>>> import numpy as np
>>> X = np.random.default_rng(0).normal(size=(100, 3))
>>> parts = [GaussianMoments.of(X[i:i + 30], X[:30].mean(axis=0)) for i in range(0, 100, 30)]
>>> merged = parts[0].merge(parts[1]).merge(parts[2]).merge(parts[3])
>>> bool(np.allclose(merged.finish("empirical", 0.0)[1], np.cov(X.T, bias=True)))
True
"""

from __future__ import annotations

import numpy as np

from ._core import SingularCovarianceError

__all__ = ["GaussianMoments", "ESTIMATORS"]

ESTIMATORS = ("ledoit_wolf", "empirical", "oas")
OVERFLOW = ("X: the statistics overflow float64 (a chunk far larger than the first one, whose scale the stream "
            "keeps); rescale the features")
_PIVOT_TOLERANCE = 1e-12  # the Rust Cholesky's: a pivot at or below 1e-12 x the largest diagonal is singular


def _sum_of_squares(a):
    return (a * a).sum(axis=(-2, -1))


class GaussianMoments:
    """Statistics of ``count`` rows of ``d`` features, or of ``P`` positions at once
    (every array then has a leading ``P`` axis: ``offset [P, d]``, ``scatter [P, d, d]``, ...)."""

    __slots__ = ("count", "shift", "offset", "scatter", "cubic", "quartic")

    def __init__(self, count, shift, offset, scatter, cubic, quartic):
        self.count = int(count)
        self.shift, self.offset, self.scatter = shift, offset, scatter
        self.cubic, self.quartic = cubic, quartic

    @classmethod
    def of(cls, X, shift) -> "GaussianMoments":
        """The statistics of the rows of ``X`` (``[n, d]`` or ``[n, P, d]``, any float dtype,
        finite) about ``shift`` (``[d]`` or ``[P, d]``)."""
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported by finite()
            return cls._of(X, np.asarray(shift, dtype=np.float64))

    @classmethod
    def _of(cls, X, shift) -> "GaussianMoments":
        # One float64 copy of the chunk, centred in place: peak memory is the chunk plus twice it
        # in float32 (a 50,000 x 512 chunk used 890 MB with a temporary per step, 450 MB now).
        y = np.subtract(X, shift, dtype=np.float64)
        n = y.shape[0]
        norms = np.einsum("n...d,n...d->n...", y, y)  # ||y||^2, [n] or [n, P]
        cubic = norms @ y if y.ndim == 2 else np.einsum("np,npd->pd", norms, y)
        quartic = (norms * norms).sum(axis=0)
        offset = y.mean(axis=0)
        y -= offset
        if y.ndim == 2:
            scatter = y.T @ y
        else:  # [n, P, d] -> one d x d product per position (batched BLAS)
            scatter = np.matmul(y.transpose(1, 2, 0), y.transpose(1, 0, 2))
        scatter = 0.5 * (scatter + np.swapaxes(scatter, -1, -2))
        return cls(n, shift, offset, scatter, cubic, quartic)

    def merge(self, other: "GaussianMoments") -> "GaussianMoments":
        """The statistics of both parts' rows (Chan's update for the mean and scatter)."""
        if self.shift.shape != other.shift.shape or not np.array_equal(self.shift, other.shift):
            raise ValueError("statistics about different shifts cannot be merged")
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported by finite()
            return self._merge(other)

    def _merge(self, other: "GaussianMoments") -> "GaussianMoments":
        n = self.count + other.count
        delta = other.offset - self.offset
        weight = self.count * other.count / n
        offset = self.offset + delta * (other.count / n)
        scatter = self.scatter + other.scatter + weight * (delta[..., :, None] * delta[..., None, :])
        return GaussianMoments(n, self.shift, offset, scatter, self.cubic + other.cubic, self.quartic + other.quartic)

    def finite(self) -> bool:
        """False when a statistic overflowed float64."""
        return all(bool(np.isfinite(p).all()) for p in (self.offset, self.scatter, self.cubic, self.quartic))

    def _centred_fourth_power_sum(self):
        """sum over rows of ||x - mean||^4, expanded about the shift (c = mean - shift):
        sum ||y||^4 - 4 c.T + 4 c'Sc + 2 |c|^2 tr S + 3 n |c|^4, with S the centred scatter."""
        c = self.offset
        c2 = (c * c).sum(axis=-1)
        quadratic = np.einsum("...i,...ij,...j->...", c, self.scatter, c)
        trace = np.trace(self.scatter, axis1=-2, axis2=-1)
        return (self.quartic - 4.0 * (c * self.cubic).sum(axis=-1) + 4.0 * quadratic + 2.0 * c2 * trace
                + 3.0 * self.count * c2 * c2)

    def _shrinkage(self, estimator, cov):
        d = cov.shape[-1]
        if estimator == "empirical" or d == 1:
            return np.zeros(cov.shape[:-2])
        n = float(self.count)
        trace = np.trace(cov, axis1=-2, axis2=-1)
        mu = trace / d
        sum_sq = _sum_of_squares(cov)
        if estimator == "ledoit_wolf":
            beta = (self._centred_fourth_power_sum() / n - sum_sq) / (d * n)
            delta = (sum_sq - 2.0 * mu * trace + d * mu * mu) / d
            beta = np.minimum(beta, delta)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(beta == 0.0, 0.0, beta / np.where(beta == 0.0, 1.0, delta))
        alpha = sum_sq / (d * d)  # OAS, as scikit-learn (>= 1.3) computes it
        numerator = alpha + mu * mu
        denominator = (n + 1.0) * (alpha - mu * mu / d)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denominator == 0.0, 1.0, np.minimum(numerator / np.where(denominator == 0.0, 1.0,
                                                                                     denominator), 1.0))

    def finish(self, estimator: str, reg: float):
        """``(mean, covariance, shrinkage, precision_cholesky)`` in float64, as the Rust fit
        returns them; SingularCovarianceError when the covariance is not positive definite."""
        if estimator not in ESTIMATORS:
            raise ValueError(f"covariance: expected one of {ESTIMATORS}, got {estimator!r}")
        if self.count < 2:
            raise ValueError(f"X: need at least 2 samples to fit a covariance, got n_samples={self.count}")
        if not self.finite():
            raise ValueError(OVERFLOW)
        cov = self.scatter / self.count
        shrinkage = self._shrinkage(estimator, cov)
        d = cov.shape[-1]
        eye = np.eye(d)
        mu = np.trace(cov, axis1=-2, axis2=-1) / d
        shrunk = np.asarray(shrinkage)[..., None, None]
        cov = np.where(shrunk != 0.0, cov * (1.0 - shrunk) + (shrunk * mu[..., None, None]) * eye, cov)
        if reg != 0.0:
            cov = cov + reg * eye
        return self.shift + self.offset, cov, shrinkage, precision_cholesky(cov)


def precision_cholesky(cov):
    """Lower-triangular ``L`` with ``L @ L.T = inv(cov)`` (for ``[d, d]`` or ``[P, d, d]``), the
    factor the Rust kernel returns: reverse the order, factor, invert the triangle."""
    reversed_cov = cov[..., ::-1, ::-1]
    largest = np.abs(np.diagonal(reversed_cov, axis1=-2, axis2=-1)).max(axis=-1)
    try:
        factor = np.linalg.cholesky(reversed_cov)
    except np.linalg.LinAlgError:
        factor = None
    pivots = None if factor is None else np.diagonal(factor, axis1=-2, axis2=-1) ** 2
    if factor is None or not np.all(pivots > _PIVOT_TOLERANCE * largest[..., None]):
        raise SingularCovarianceError(
            "the covariance is singular or nearly singular; add regularisation (reg > 0) or use a shrinkage "
            "estimator (covariance='ledoit_wolf' or 'oas')")
    eye = np.broadcast_to(np.eye(cov.shape[-1]), factor.shape)
    inverse = np.linalg.solve(factor, eye)  # C^{-1}, lower triangular
    # The solve leaves rounding-level values above the diagonal: the factor is lower by definition.
    return np.ascontiguousarray(np.tril(np.swapaxes(inverse[..., ::-1, ::-1], -1, -2)))
