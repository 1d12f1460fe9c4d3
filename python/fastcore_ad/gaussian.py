"""Gaussian anomaly detection: a multivariate Gaussian fitted on normal deep features, scored by
the Mahalanobis distance (Rippel et al. 2020), globally or per feature-map position (PaDiM).

>>> import numpy as np
>>> from fastcore_ad import GaussianAD
>>> rng = np.random.default_rng(0)
>>> normal = rng.normal(size=(500, 8))
>>> model = GaussianAD().fit(normal)
>>> scores = model.decision_function(np.vstack([normal[:3], normal[:3] + 6.0]))
>>> bool(scores[:3].max() < scores[3:].min())
True
>>> model.predict(normal[:3] + 6.0).tolist()
[1, 1, 1]
"""

from __future__ import annotations

import functools
import os

import numpy as np

from . import _core
from ._base import FastcoreEstimator, NotFittedError, as_dense_array, check_shape
from ._dispatch import check_switch, float_array, is_dask, kernels, real_or_inf, same_backend, to_backend, xp_of
from ._memory import check_fits
from ._moments import OVERFLOW, GaussianMoments
from .progress import progress

__all__ = ["mahalanobis", "GaussianAD", "SingularCovarianceError", "demo", "mahalanobis_per_position"]

SingularCovarianceError = _core.SingularCovarianceError

def _factor_layout(factors, xp) -> str:
    """'lower' / 'upper' when the other triangle of every factor is exactly zero, else 'full'."""
    if factors.shape[-2] != factors.shape[-1]:
        return "full"
    if not bool(xp.triu(factors, 1).any()):
        return "lower"
    if not bool(xp.tril(factors, -1).any()):
        return "upper"
    return "full"


_SAFE_EXPONENT = 64  # features within 2**+-64 fit every moment the estimators form (4th powers too)


def _fit_bytes(n: int, d: int) -> int:
    """Peak bytes of one Gaussian fit of ``n`` rows of ``d`` features in the Rust core: the
    centred rows and five d x d float64 matrices (covariance, Cholesky work, factor)."""
    return 8 * (n * d + 5 * d * d)


def _power_of_two_scale(X, reg: float = 0.0) -> float:
    """A power of two that brings max |X| near 1 when it lies outside 2**+-64, else 1.

    Multiplying by a power of two is exact, so the fit on the scaled data is the fit on the data
    (shrinkage is scale-invariant) without the squares and fourth powers of the Ledoit-Wolf / OAS
    estimates overflowing (features of 1e77 gave shrinkage 1.0 instead of 0.04).
    """
    return _scale_for_peak(float(np.max(np.abs(X))), reg)


def _scale_for_peak(peak: float, reg: float = 0.0) -> float:
    if peak == 0.0 or 2.0 ** -_SAFE_EXPONENT <= peak <= 2.0 ** _SAFE_EXPONENT:
        return 1.0
    exponent = -int(np.frexp(peak)[1])
    if reg > 0.0:
        # The scaled fit adds reg * scale**2, which must stay finite: tiny features under a
        # regulariser scale up less (the regulariser dominates their covariance anyway).
        exponent = min(exponent, int((_MAX_SCALED_EXPONENT - np.log2(reg)) // 2))
    # 2**+-1000 is a float64 (subnormal features would need a scale past the float range).
    return float(np.ldexp(1.0, max(-_MAX_SCALED_EXPONENT, min(_MAX_SCALED_EXPONENT, exponent))))


_MAX_SCALED_EXPONENT = 1000


def _singular_hint(exc, covariance: str):
    """``exc`` with advice that fits the estimator in use: a shrinkage estimator already
    shrinks, so the remedy left is ``reg`` (or features that vary)."""
    message = str(exc)
    generic = "or use a shrinkage estimator (covariance='ledoit_wolf' or 'oas')"
    if covariance == "empirical" or generic not in message:
        return exc
    return SingularCovarianceError(message.replace(generic, (
        f"(covariance={covariance!r} shrinks towards the average variance, which cannot help when "
        "features do not vary or the shrinkage is 0, as with 2 samples)")))


def _unscaled(mean, cov, factor, scale: float, name: str):
    """The fit of data times ``scale`` brought back to the data's units. A covariance past the
    float range (features near 1e300) is infinite, which its inverse factor still describes; a
    precision factor past it (subnormal features, no ``reg``) could score nothing."""
    if scale == 1.0:
        return mean, cov, factor
    with np.errstate(over="ignore"):
        mean, cov, factor = mean / scale, cov / scale / scale, factor * scale
    if not np.isfinite(factor).all():
        raise ValueError(f"{name}: features this small (about 2**{-np.log2(scale):.0f}) have a precision "
                         "past float64's range; rescale them or add reg > 0")
    return mean, cov, factor


def _check_result(distances, backend, inputs):
    """Large inputs are checked through the result (a pass over a small array) instead of up
    front: NaN or infinity in the data (the first of ``inputs``) or a factor makes a distance
    non-finite. Only then are the inputs scanned, to name the culprit; finite inputs whose
    squared whitened norm passes the float range (features beyond about 1e154 in float64) are
    reported as an overflow of the data."""
    xp = xp_of(backend)
    if bool(xp.isfinite(distances).all()):
        return
    for name, value in inputs.items():
        if not bool(xp.isfinite(value).all()):
            raise ValueError(f"{name}: contains NaN or infinity")
    raise ValueError(f"{next(iter(inputs))}: the distances overflow {distances.dtype}; rescale the features")


def _distributed():
    from . import _distributed as module  # noqa: PLC0415 - imports dask, only for dask inputs

    return module


def _score_dtype(dtype):
    return dtype if dtype in (np.float32, np.float64) else (np.float32 if dtype == np.float16 else np.float64)


def _dask_distances(function, x, parameters, ndim, n_jobs):
    """``function`` over the row chunks of a dask ``x`` (lazy), the small parameters sent once per
    worker; each chunk runs on its own side (numpy: Rust, cupy: CUDA)."""
    dist = _distributed()
    x = dist.check_array(x, "x", ndim=ndim)
    parameters = [np.asarray(p.compute() if is_dask(p) else to_backend(p, "numpy")) for p in parameters]
    return dist.map_rows(function, x, parameters, out_ndim=x.ndim - 1, dtype=_score_dtype(x.dtype), n_jobs=n_jobs)


def mahalanobis(x, mean, precision_cholesky, *, n_jobs=None):
    """Mahalanobis distance (not squared) of each row of ``x`` to a Gaussian.

    ``precision_cholesky`` is a triangular factor ``L`` with ``precision = L @ L.T`` (lower, as
    stored by :class:`GaussianAD`, or upper, as scikit-learn's ``GaussianMixture`` stores it;
    a dense whitening matrix ``[d, k]`` also works). The distance is ``||(x - mean) @ L||``,
    computed by whitening with a fused row norm (half the FLOPs of a dense product for a
    triangular factor, and more accurate than the quadratic form with the precision matrix).

    ``x`` is ``[m, d]`` (or ``[d]``), float32 or float64; numpy runs on the Rust kernel, cupy on
    the CUDA kernel, and the result has x's dtype and array type.

    >>> import numpy as np
    >>> x = np.array([[3.0, 4.0]])
    >>> float(mahalanobis(x, np.zeros(2), np.eye(2))[0])
    5.0

    A dask ``x`` (``[m, d]``) gives a lazy dask array: the chunks are scored where they live.
    """
    if is_dask(x):
        d = x.shape[-1]
        if np.shape(mean) != (d,) or np.shape(precision_cholesky)[:1] != (d,):
            raise ValueError(f"mean / precision_cholesky: expected {d} features like x, got shapes "
                             f"{np.shape(mean)} and {np.shape(precision_cholesky)}")
        return _dask_distances(mahalanobis, x, [mean, precision_cholesky], 2, n_jobs)
    return _distances(x, mean, precision_cholesky, n_jobs, "x")


def _distances(x, mean, precision_cholesky, n_jobs, name):
    """:func:`mahalanobis` of in-memory ``x``, whose errors call it ``name``."""
    arrays, backend = same_backend({name: x, "mean": mean, "precision_cholesky": precision_cholesky})
    x = arrays[name]
    single = x.ndim == 1
    x = float_array(x[None] if single else x, name, backend=backend, ndim=2, allow_nonfinite=True)
    dtype = x.dtype
    mean = float_array(arrays["mean"], "mean", backend=backend, ndim=1, dtype=dtype)
    factor = float_array(arrays["precision_cholesky"], "precision_cholesky", backend=backend, ndim=2, dtype=dtype,
                         allow_nonfinite=True)
    d = x.shape[1]
    if mean.shape[0] != d:
        raise ValueError(f"mean: expected {d} features like {name}, got {mean.shape[0]}")
    if factor.shape[0] != d:
        raise ValueError(f"precision_cholesky: expected {d} rows like {name}'s features, got shape {factor.shape}")
    shape = _factor_layout(factor, xp_of(backend))
    out = kernels(backend).mahalanobis(x, mean, factor, shape, n_jobs)
    _check_result(out, backend, {name: x, "precision_cholesky": factor})
    return out[0] if single else out


def mahalanobis_per_position(x, means, precision_choleskys, *, n_jobs=None):
    """Per-position distances: ``x [m, P, d]`` (or ``[m, H, W, d]``) against ``P`` Gaussians.

    ``means`` is ``[P, d]`` and ``precision_choleskys`` ``[P, d, d]`` (lower triangular factors
    of the precisions); returns ``[m, P]`` (or ``[m, H, W]``). A dask ``x`` gives a lazy dask array.
    """
    if is_dask(x):
        return _dask_distances(mahalanobis_per_position, x, [means, precision_choleskys], (3, 4), n_jobs)
    return _distances_per_position(x, means, precision_choleskys, n_jobs, "x")


def _distances_per_position(x, means, precision_choleskys, n_jobs, name):
    """:func:`mahalanobis_per_position` of in-memory ``x``, whose errors call it ``name``."""
    arrays, backend = same_backend({name: x, "means": means, "precision_choleskys": precision_choleskys})
    x = arrays[name]
    spatial = x.shape[1:-1] if x.ndim == 4 else None
    x = float_array(x, name, backend=backend, ndim=(3, 4), allow_nonfinite=True)
    m, d = x.shape[0], x.shape[-1]
    x = x.reshape(m, -1, d)
    positions = x.shape[1]
    means = float_array(arrays["means"], "means", backend=backend, dtype=x.dtype)
    factors = float_array(arrays["precision_choleskys"], "precision_choleskys", backend=backend, dtype=x.dtype,
                          allow_nonfinite=True)
    # [P, d], or [H, W, d] for feature maps; anything else is not reshaped silently.
    mean_shapes = ((positions, d),) if spatial is None else ((positions, d), (*spatial, d))
    if tuple(means.shape) not in mean_shapes or factors.shape != (positions, d, d):
        raise ValueError(
            f"means / precision_choleskys: expected [{positions}, {d}] and [{positions}, {d}, {d}] for {name} of "
            f"shape {tuple(x.shape)}, got {tuple(means.shape)} and {tuple(factors.shape)}")
    out = kernels(backend).mahalanobis_per_position(x, means, factors, _factor_layout(factors, xp_of(backend)), n_jobs)
    _check_result(out, backend, {name: x, "precision_choleskys": factors})
    return out.reshape((m, *spatial)) if spatial is not None else out


def _check_one_kind(grids):
    """Levels are all ``[n, d]`` (grid None) or all feature maps on one grid ``(H, W)``: their
    scores are summed, position by position for maps."""
    grids = [None if g is None else tuple(int(v) for v in g) for g in grids]
    if len({g is None for g in grids}) > 1:
        raise ValueError("X: mix of [n, d] and [n, H, W, d] levels; use one kind")
    for i, grid in enumerate(grids):
        if grid != grids[0]:
            raise ValueError(f"X[{i}]: feature maps on a {grid[0]} x {grid[1]} grid, X[0] on {grids[0][0]} x "
                             f"{grids[0][1]}; the levels' scores are summed position by position, so resize "
                             "the feature maps to one grid first")


class _Level:
    """One fitted Gaussian (or one per position) for one feature level."""

    def __init__(self, mean, covariance, shrinkage, factor, per_position, spatial):
        self.mean = mean
        self.covariance = covariance
        self.shrinkage = shrinkage
        self.factor = factor
        self.per_position = per_position
        self.spatial = spatial
        self._device_cache = None

    def arrays_on(self, backend: str):
        """The level's mean and factor on ``backend``'s side (copied to a GPU once)."""
        if backend == "numpy":
            return self.mean, self.factor
        if self._device_cache is None:
            self._device_cache = (to_backend(self.mean, backend), to_backend(self.factor, backend))
        return self._device_cache


class GaussianAD(FastcoreEstimator):
    """Multivariate Gaussian anomaly detector on deep features (Rippel et al. 2020; PaDiM mode).

    Parameters
    ----------
    covariance : {"ledoit_wolf", "empirical", "oas"}
        Covariance estimator; "ledoit_wolf" and "oas" equal scikit-learn's estimators.
    reg : float
        Added to the covariance diagonal (``reg * I``).
    npca : float or None
        Negated PCA: drop the leading principal components that explain this fraction of the
        variance and score in the remaining (low-variance) subspace. 2-D features only.
    contamination : float
        Expected outlier fraction; ``threshold_`` is the ``1 - contamination`` quantile of the
        training scores and ``predict`` flags scores above it.
    n_jobs : int or None
        Threads for the Rust kernels: None (``FASTCORE_AD_NUM_THREADS`` or all CPUs) or a
        nonzero integer, -1 all CPUs, -2 all but one.
    progress : bool
        Show a progress bar while fitting many positions.
    device : {"auto", "cpu", "cuda"}
        Where scoring runs: "auto" where X lives (numpy: Rust, cupy: CUDA), "cpu" / "cuda" move
        X there; the scores come back on X's side. Fitting always runs in Rust.

    ``fit(X)`` takes ``[n, d]`` features, ``[n, H, W, d]`` feature maps (one Gaussian per
    position), or a list of such arrays (one Gaussian per level, scores summed). ``partial_fit``
    streams chunks of rows into the same fit. Dask arrays are accepted everywhere: ``fit``
    merges per-chunk statistics computed on the workers (with the first chunk's power-of-two
    scale, as ``partial_fit``), scoring returns lazy dask arrays scored chunk by chunk (on the
    chunk's own side: ``device`` does not move dask chunks).

    A scikit-learn estimator (``Pipeline``, ``clone``, ``check_estimator``), but not one of its
    outlier detectors, whose ``predict`` gives -1 for outliers and +1 for inliers: here
    ``predict`` gives 1 for anomalies and 0 for normal samples, and ``decision_function`` is
    higher for anomalies.
    """

    _fitted_attribute = "levels_"

    def __init__(self, covariance="ledoit_wolf", reg=0.0, npca=None, contamination=0.01, n_jobs=None, progress=True,
                 device="auto"):
        self.covariance = covariance
        self.reg = reg
        self.npca = npca
        self.contamination = contamination
        self.n_jobs = n_jobs
        self.progress = progress
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False  # unsupervised: y is ignored
        return tags

    def _check_params(self):
        self._check_common_params()
        if self.covariance not in ("ledoit_wolf", "empirical", "oas"):
            raise ValueError(f"covariance: expected 'ledoit_wolf', 'empirical' or 'oas', got {self.covariance!r}")
        for name in ("reg", "contamination") + (() if self.npca is None else ("npca",)):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name}: expected a number, got {value!r}")
        check_switch(self.progress, "progress")
        if not (0.0 <= real_or_inf(self.reg) < float("inf")):
            raise ValueError(f"reg: must be finite and >= 0, got {self.reg}")
        if not (0.0 <= real_or_inf(self.contamination) < 0.5):
            raise ValueError(f"contamination: must lie in [0, 0.5), got {self.contamination}")
        if self.npca is not None and not (0.0 < real_or_inf(self.npca) < 1.0):
            raise ValueError(f"npca: must lie in (0, 1), got {self.npca}")

    @staticmethod
    def _is_level_list(X) -> bool:
        """Whether ``X`` is a list (or tuple) of feature levels, each an array of 2 or 4
        dimensions, rather than one array written as nested lists of rows."""
        if not isinstance(X, (list, tuple)):
            return False
        try:
            return not X or np.ndim(X[0]) >= 2
        except ValueError:  # ragged nested lists: taken as levels, whose intake names the defect
            return True

    @classmethod
    def _levels_of(cls, X):
        return list(X) if cls._is_level_list(X) else [X]

    def _level_count_error(self, X, expected: int):
        """The ValueError for ``X`` whose levels do not match the fitted ones."""
        if self._is_level_list(X) != self._multi:
            kind = f"a list of {expected} feature levels" if self._multi else "one array (not a list of levels)"
            return ValueError(f"X: the model was fitted on {kind}; pass the same kind")
        return ValueError(f"X: expected {expected} feature level(s), got {len(self._levels_of(X))}")

    def _fit_problem(self, n: int, d: int, name: str):
        """The error that fitting ``n`` rows of ``d`` features would raise, else None."""
        if n < 2:
            return ValueError(f"{name}: need at least 2 samples to fit a covariance, got n_samples={n}")
        if self.covariance == "empirical" and self.reg == 0.0 and d >= n:
            return SingularCovarianceError(
                f"{name}: the empirical covariance of {n} samples in {d} dimensions is singular; "
                "use covariance='ledoit_wolf' or 'oas', or reg > 0")
        return None

    def _check_fit_memory(self, n: int, d: int, positions: int | None, itemsize: int, name: str):
        """MemoryError before a fit whose d x d matrices cannot fit (see ``_fit_bytes``): one
        fit per thread at a time for feature maps, whose covariances and factors are kept (and
        copied once when their chunks are joined); ``npca``'s eigendecomposition adds two more."""
        per_fit = _fit_bytes(n, d)
        if positions is None:
            need = per_fit + (16 * d * d if self.npca is not None else 0)
            what = f"{name}: a Gaussian over {d} features"
        else:
            kept = 2 * 2 * positions * (d * d + d) * itemsize
            need = kept + min(positions, os.cpu_count() or 1) * per_fit
            what = f"{name}: Gaussians over {d} features at {positions} positions"
        check_fits(need, what)

    def _fit_level(self, X, name: str) -> _Level:
        if is_dask(X):  # per-chunk statistics on the workers, merged exactly (see _distributed)
            # The moments alone hold d x d per position: checked before the workers make them.
            if X.ndim in (2, 4):
                spatial = None if X.ndim == 2 else int(X.shape[1]) * int(X.shape[2])
                self._check_fit_memory(0, int(X.shape[-1]), spatial, 8, name)
            moments, scale, dtype = _distributed().gaussian_moments(
                X, name, functools.partial(_scale_for_peak, reg=float(self.reg)))
            return self._level_from_moments(moments, scale, dtype, X.shape[1:3] if X.ndim == 4 else None, name)
        X, backend = as_dense_array(X, name)
        X = to_backend(X, "numpy")  # the fit runs in Rust (float64); scoring of cupy inputs stays on the GPU
        check_shape(X.shape, name, (2, 4))
        X = float_array(X, name, ndim=(2, 4))
        n, d = X.shape[0], X.shape[-1]
        problem = self._fit_problem(n, d, name)
        if problem is not None:
            raise problem
        self._check_fit_memory(n, d, None if X.ndim == 2 else X.shape[1] * X.shape[2], X.itemsize, name)
        scale = _power_of_two_scale(X, float(self.reg))
        if scale != 1.0:
            X = X * X.dtype.type(scale)
        reg = float(self.reg) * scale * scale
        if X.ndim == 2:
            mean, cov, shrinkage, factor = _core.fit_gaussian(X, self.covariance, reg, self._n_jobs())
            if self.npca is not None:
                factor = self._npca_whitening(cov)  # of the scaled data: _unscaled brings it back
            mean, cov, factor = _unscaled(mean, cov, factor, scale, name)
            dtype = X.dtype
            return _Level(mean.astype(dtype), cov, shrinkage, factor.astype(dtype), False, None)
        if self.npca is not None:
            raise ValueError("npca: not supported for per-position feature maps")
        spatial = X.shape[1:3]
        flat = X.reshape(n, -1, d)
        positions = flat.shape[1]
        # Bounded memory: positions in chunks, each chunk copied contiguous once.
        chunk = max(1, min(positions, (64 << 20) // max(1, n * d * flat.itemsize)))
        means, covs, factors, shrinks = [], [], [], []
        starts = range(0, positions, chunk)
        for start in progress(starts, total=len(starts), desc="fit positions", enabled=self.progress and len(starts) > 4):
            part = np.ascontiguousarray(flat[:, start:start + chunk])
            mu, cv, fc, sh = _core.fit_gaussian_per_position(part, self.covariance, reg, self._n_jobs())
            mu, cv, fc = _unscaled(mu, cv, fc, scale, name)
            means.append(mu), covs.append(cv), factors.append(fc), shrinks.append(sh)
        return _Level(np.concatenate(means), np.concatenate(covs), np.concatenate(shrinks),
                      np.concatenate(factors), True, spatial)

    def _level_from_moments(self, moments: GaussianMoments, scale: float, dtype, spatial, name: str) -> _Level:
        """The fitted level of streamed statistics (of the data times ``scale``), as ``_fit_level``
        would fit it on the same rows."""
        n, d = moments.count, moments.offset.shape[-1]
        problem = self._fit_problem(n, d, name)
        if problem is not None:
            raise problem
        self._check_fit_memory(0, d, None if spatial is None else int(np.prod(spatial)), np.dtype(dtype).itemsize, name)
        mean, cov, shrinkage, factor = moments.finish(self.covariance, float(self.reg) * scale * scale)
        if spatial is None and self.npca is not None:
            factor = self._npca_whitening(cov)  # of the scaled data: _unscaled brings it back
        mean, cov, factor = _unscaled(mean, cov, factor, scale, name)
        if spatial is not None:
            if self.npca is not None:
                raise ValueError("npca: not supported for per-position feature maps")
            return _Level(mean.astype(dtype), cov.astype(dtype), shrinkage, factor.astype(dtype), True,
                          tuple(spatial))
        return _Level(mean.astype(dtype), cov, float(shrinkage), factor.astype(dtype), False, None)

    @staticmethod
    def _check_like_stream(shape, name: str, previous):
        """A later chunk must have the first chunk's layout, features and positions."""
        moments, _, _, spatial = previous
        features = moments.offset.shape[-1]
        if shape[-1] != features:
            raise ValueError(f"{name} has {shape[-1]} features, but GaussianAD is expecting {features} features "
                             "as input")
        layout = "[n, d]" if spatial is None else "[n, H, W, d]"
        if len(shape) != (2 if spatial is None else 4):
            raise ValueError(f"{name}: expected {layout} like the first chunk, got shape {tuple(shape)}")
        if spatial is not None and tuple(shape[1:3]) != tuple(spatial):
            raise ValueError(f"{name}: expected feature maps of {tuple(spatial)} positions, got {tuple(shape[1:3])}")

    def _chunk_moments(self, X, name: str, previous):
        """``(moments, scale, dtype, spatial)`` of one chunk; the first chunk fixes the shift
        (its mean) and the power-of-two scale, later chunks must match its layout."""
        if is_dask(X):
            if previous is None:
                moments, scale, dtype = _distributed().gaussian_moments(
                X, name, functools.partial(_scale_for_peak, reg=float(self.reg)))
                return moments, scale, dtype, (X.shape[1:3] if X.ndim == 4 else None)
            self._check_like_stream(X.shape, name, previous)
            moments, scale, dtype, spatial = previous
            part, _, _ = _distributed().gaussian_moments(X, name, lambda _: scale, shift=moments.shift)
            return part, scale, dtype, spatial
        X, _ = as_dense_array(X, name)
        X = to_backend(X, "numpy")
        check_shape(X.shape, name, (2, 4))
        if previous is not None:
            self._check_like_stream(X.shape, name, previous)
        X = float_array(X, name, ndim=(2, 4))
        spatial = X.shape[1:3] if X.ndim == 4 else None
        flat = X.reshape(X.shape[0], -1, X.shape[-1]) if spatial is not None else X
        if previous is None:
            scale, dtype = _power_of_two_scale(X, float(self.reg)), X.dtype
            shift = flat.astype(np.float64).mean(axis=0) * scale
        else:
            scale, dtype, shift = previous[1], previous[2], previous[0].shift
        scaled = flat * flat.dtype.type(scale) if scale != 1.0 else flat
        return GaussianMoments.of(scaled, shift), scale, dtype, spatial

    def partial_fit(self, X, y=None):
        """Add a chunk of normal samples to the fit (``y`` is ignored); returns self.

        The model keeps mergeable float64 statistics (count, mean and centred scatter merged
        with Chan's update, and the raw moments about the first chunk's mean that Ledoit-Wolf
        needs), so any chunking of the rows gives ``fit`` on all of them to rounding (1e-9
        relative), for every ``covariance`` and for per-position maps; peak memory is one chunk
        plus the statistics. The first chunk fixes the power-of-two scale that ``fit`` takes
        from all the data (a later chunk so large that its fourth powers overflow float64 even
        at that scale, about 2**250 times the first chunk, is a ValueError). X may be a dask
        array (its chunks are reduced on the workers).

        The model is refreshed after each call once it can be fitted (2 samples, and a
        covariance that is not singular); until then it stays unfitted, without an error, so a
        stream may start with few rows (``fit`` raises on singular data). ``predict`` needs
        ``threshold_``, which only ``fit`` sets (from the training scores). ``fit`` keeps no
        statistics: it starts over, and a ``partial_fit`` after it starts a new stream.
        """
        self._check_params()
        levels = self._levels_of(X)
        if not levels:
            raise ValueError("X: empty list of feature levels")
        multi = self._is_level_list(X)
        stream = getattr(self, "_stream", None)
        if stream is not None and (len(levels) != len(stream) or multi != self._multi):
            raise self._level_count_error(X, len(stream))
        self._multi = multi
        name = (lambda i: f"X[{i}]") if multi else (lambda i: "X")
        parts = [self._chunk_moments(level, name(i), None if stream is None else stream[i])
                 for i, level in enumerate(levels)]
        _check_one_kind(spatial for *_, spatial in parts)
        if stream is not None:
            parts = [(old[0].merge(new[0]), *old[1:]) for old, new in zip(stream, parts)]
        if not all(p[0].finite() for p in parts):  # refused before the stream takes it in
            raise ValueError(OVERFLOW)
        self._stream = parts
        for attribute in ("threshold_", "decision_scores_"):
            self.__dict__.pop(attribute, None)
        features = [int(p[0].offset.shape[-1]) for p in parts]
        self.n_features_in_ = features if multi else features[0]
        self.__dict__.pop("levels_", None)
        if all(self._fit_problem(p[0].count, features[i], "") is None for i, p in enumerate(parts)):
            try:
                self.levels_ = [self._level_from_moments(m, scale, dtype, spatial, name(i))
                                for i, (m, scale, dtype, spatial) in enumerate(parts)]
            except SingularCovarianceError:
                pass  # not yet: the rows so far span too few directions; later chunks may fix it
        return self

    def _npca_whitening(self, cov):
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
        ratio = np.cumsum(eigenvalues) / eigenvalues.sum()
        # Drop the leading components that together explain `npca` of the variance.
        first_kept = int(np.searchsorted(ratio, float(self.npca), side="left")) + 1
        first_kept = min(first_kept, len(eigenvalues) - 1)
        kept = eigenvalues[first_kept:]
        if kept.min() <= eigenvalues.max() * 1e-12:
            raise SingularCovarianceError(
                "npca: the kept components have (near) zero variance; use reg > 0 or a shrinkage estimator")
        return eigenvectors[:, first_kept:] / np.sqrt(kept)

    def fit(self, X, y=None):
        """Fit the Gaussian(s) on normal samples; ``y`` is ignored."""
        self._check_params()
        levels = self._levels_of(X)
        if not levels:
            raise ValueError("X: empty list of feature levels")
        multi = self._is_level_list(X)
        try:
            fitted = [self._fit_level(level, f"X[{i}]" if multi else "X") for i, level in enumerate(levels)]
        except SingularCovarianceError as exc:
            raise _singular_hint(exc, self.covariance) from None
        _check_one_kind(lv.spatial for lv in fitted)
        previous = dict(self.__dict__)  # a refit that fails from here on keeps the model it had
        try:
            self._multi, self.levels_ = multi, fitted
            self._stream = None  # fit starts over; partial_fit continues from here on
            features = [int(lv.mean.shape[-1]) for lv in fitted]
            self.n_features_in_ = features if multi else features[0]
            self.decision_scores_ = self.decision_function(X)
            if is_dask(self.decision_scores_):  # the threshold is an exact quantile: bring the scores back once
                self.decision_scores_ = self.decision_scores_.compute()
            scores = np.asarray(self.decision_scores_)
            self.threshold_ = float(np.quantile(scores, 1.0 - float(self.contamination)))
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(previous)
            raise
        return self

    def _attr(self, name):
        self._check_fitted()
        values = [getattr(lv, name) for lv in self.levels_]
        return values if self._multi else values[0]

    @property
    def mean_(self):
        return self._attr("mean")

    @property
    def covariance_(self):
        return self._attr("covariance")

    @property
    def shrinkage_(self):
        return self._attr("shrinkage")

    @property
    def precision_cholesky_(self):
        """Lower-triangular factor ``L`` of the precision (``precision = L @ L.T``); with
        ``npca`` the ``[d, k]`` whitening matrix of the kept components."""
        return self._attr("factor")

    def _score_level(self, level: _Level, X, index: int):
        name = f"X[{index}]" if self._multi else "X"
        if is_dask(X):
            return self._score_dask_level(level, X, name)
        X, source = as_dense_array(X, name)
        backend = self._target_backend(source)
        X = to_backend(X, backend)
        want = 4 if level.per_position else 2
        check_shape(X.shape, name, want)
        # Finiteness is checked through the distances (see _check_result): one pass less over X.
        X = float_array(X, name, backend=backend, ndim=want, allow_nonfinite=True)
        if X.shape[-1] != level.mean.shape[-1]:
            raise ValueError(f"{name} has {X.shape[-1]} features, but GaussianAD is expecting "
                             f"{level.mean.shape[-1]} features as input")
        if level.per_position and X.shape[1:3] != tuple(level.spatial):
            raise ValueError(f"{name}: expected feature maps of {tuple(level.spatial)} positions, got {X.shape[1:3]}")
        dtype = X.dtype
        mean, factor = level.arrays_on(backend)
        mean, factor = mean.astype(dtype, copy=False), factor.astype(dtype, copy=False)
        if level.per_position:
            scores = _distances_per_position(X, mean, factor, self._n_jobs(), name)
        else:
            scores = _distances(X, mean, factor, self._n_jobs(), name)
        return to_backend(scores, source)

    def _score_dask_level(self, level: _Level, X, name: str):
        """Lazy scores of a dask level; each chunk is scored on its own side (numpy or cupy)."""
        want = 4 if level.per_position else 2
        X = _distributed().check_array(X, name, ndim=want)
        if X.shape[-1] != level.mean.shape[-1]:
            raise ValueError(f"{name} has {X.shape[-1]} features, but GaussianAD is expecting "
                             f"{level.mean.shape[-1]} features as input")
        if level.per_position and tuple(X.shape[1:3]) != tuple(level.spatial):
            raise ValueError(f"{name}: expected feature maps of {tuple(level.spatial)} positions, "
                             f"got {X.shape[1:3]}")
        if level.per_position:
            return mahalanobis_per_position(X, level.mean, level.factor, n_jobs=self._n_jobs())
        return mahalanobis(X, level.mean, level.factor, n_jobs=self._n_jobs())

    def decision_function(self, X):
        """Mahalanobis distances (higher = more anomalous): ``[m]``, or ``[m, H, W]`` per position."""
        self._check_fitted()
        levels = self._levels_of(X)
        if len(levels) != len(self.levels_) or self._is_level_list(X) != self._multi:
            raise self._level_count_error(X, len(self.levels_))
        total = None
        for i, (level, data) in enumerate(zip(self.levels_, levels)):
            s = self._score_level(level, data, i)
            if total is not None and s.shape[0] != total.shape[0]:
                raise ValueError(f"X[{i}]: expected {total.shape[0]} samples like X[0], got {s.shape[0]}")
            total = s if total is None else total + s
        return total

    def predict(self, X):
        """1 for scores above ``threshold_`` (anomalous), 0 otherwise (same shape as the scores)."""
        scores = self.decision_function(X)
        if not hasattr(self, "threshold_"):
            raise NotFittedError("predict needs threshold_, which fit sets from the training scores; after "
                                 "partial_fit, call fit or set threshold_ (e.g. a quantile of decision_function)")
        return (scores > self.threshold_).astype(np.int64)

    def score_samples(self, X):
        """Negated distances (higher = more normal), as scikit-learn's outlier detectors return."""
        return -self.decision_function(X)


def demo():
    """Gaussian AD on generated correlated features: global and per-position (PaDiM) modes."""
    import time  # noqa: PLC0415

    from .metrics import auroc  # noqa: PLC0415

    rng = np.random.default_rng(0)
    d = 256
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    normal = (rng.normal(size=(2000, d)) @ mix).astype(np.float32)
    test_normal = (rng.normal(size=(500, d)) @ mix).astype(np.float32)
    # Anomalies keep every feature's marginal distribution but break the correlations:
    # each column is shuffled independently across samples.
    test_anomalous = (rng.normal(size=(500, d)) @ mix).astype(np.float32)
    test_anomalous = np.take_along_axis(test_anomalous, rng.random(test_anomalous.shape).argsort(axis=0), axis=0)
    test = np.vstack([test_normal, test_anomalous])
    labels = np.r_[np.zeros(500), np.ones(500)]
    start = time.perf_counter()
    model = GaussianAD(progress=False).fit(normal)
    scores = model.decision_function(test)
    global_seconds = time.perf_counter() - start

    maps = rng.normal(size=(200, 8, 8, 32)).astype(np.float32)
    defect = rng.normal(size=(20, 8, 8, 32)).astype(np.float32)
    defect[:, 2:4, 3:6] += 2.5
    start = time.perf_counter()
    padim = GaussianAD(progress=False).fit(maps)
    pixel = padim.decision_function(np.concatenate([maps[:20], defect]))
    image_scores = pixel.reshape(len(pixel), -1).max(axis=1)
    padim_seconds = time.perf_counter() - start
    return [
        {"step": f"gaussian: Ledoit-Wolf fit + score ({len(normal)} x {d})",
         "result": f"AUROC {auroc(scores, labels):.4f} (shrinkage {model.shrinkage_:.3f})", "seconds": global_seconds},
        {"step": "gaussian: per-position (PaDiM) 8x8 maps, d=32",
         "result": f"image AUROC {auroc(image_scores, np.r_[np.zeros(20), np.ones(20)]):.4f}", "seconds": padim_seconds},
    ]
