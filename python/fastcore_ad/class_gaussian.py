"""Class-conditional Gaussians for open-set recognition and out-of-distribution detection
(Lee et al. 2018): one mean per known class and a pooled (tied) or per-class covariance fitted on
a classifier's features; the Mahalanobis distance to the nearest class mean scores how far a
sample lies outside the known classes.

>>> import numpy as np
>>> from fastcore_ad import ClassGaussian
>>> rng = np.random.default_rng(0)
>>> X = np.vstack([rng.normal(size=(100, 4)), rng.normal(size=(100, 4)) + 5.0])
>>> y = np.r_[np.zeros(100, int), np.ones(100, int)]
>>> model = ClassGaussian().fit(X, y)
>>> model.predict([[0.0, 0, 0, 0], [5.0, 5, 5, 5]]).tolist()
[0, 1]
>>> bool(model.decision_function([[20.0, -20, 20, -20]])[0] > model.decision_function([[0.0, 0, 0, 0]])[0])
True
"""

from __future__ import annotations

import numpy as np

from . import _core
from ._core import SingularCovarianceError
from ._base import FastcoreEstimator, as_dense_array, check_shape, checked_labels
from ._dispatch import check_switch, float_array, kernels, real_or_inf, to_backend, xp_of
from ._memory import check_fits
from .gaussian import _factor_layout, _fit_bytes, _power_of_two_scale, _singular_hint, _unscaled

__all__ = ["ClassGaussian"]

COVARIANCES = ("ledoit_wolf", "empirical", "oas")



def _log_normalised(logits, xp):
    """Log posteriors of per-class logits ``[m, C]``: each row minus its log-sum-exp."""
    top = logits.max(axis=1, keepdims=True)
    return logits - (top + xp.log(xp.exp(logits - top).sum(axis=1, keepdims=True)))

class ClassGaussian(FastcoreEstimator):
    """Gaussian class-conditional model of features: ``means_ [C, d]`` and one pooled
    within-class covariance (``tied=True``; with ``covariance="empirical"`` it equals
    scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr", store_covariance=True).covariance_``)
    or one covariance per class.

    ``distances(X)`` gives the Mahalanobis distances (not squared) to every class mean
    ``[m, C]``; ``decision_function(X)`` the distance to the nearest one (higher = more
    out-of-distribution); ``predict`` the class of highest posterior and ``predict_proba`` the
    Gaussian posteriors, with the class frequencies as priors (the rule of scikit-learn's
    linear and quadratic discriminant analysis; with a tied covariance and equal class sizes,
    the nearest class mean); ``score`` the accuracy.

    It is a scikit-learn estimator (``clone``, ``Pipeline``, ``GridSearchCV``) but not tagged as
    a classifier: its ``decision_function`` is an out-of-distribution score, not a class margin.

    Parameters
    ----------
    covariance : {"ledoit_wolf", "empirical", "oas"}
        Estimator of the (pooled or per-class) covariance.
    tied : bool
        One pooled within-class covariance (True) or one per class (False).
    reg : float
        Added to the covariance diagonal.
    n_jobs, device
        Threads of the Rust kernels; "auto" | "cpu" | "cuda" for the distance computation.
    """

    _fitted_attribute = "means_"

    def __init__(self, covariance="ledoit_wolf", tied=True, reg=0.0, n_jobs=None, device="auto"):
        self.covariance = covariance
        self.tied = tied
        self.reg = reg
        self.n_jobs = n_jobs
        self.device = device

    def _check_params(self):
        if self.covariance not in COVARIANCES:
            raise ValueError(f"covariance: expected one of {COVARIANCES}, got {self.covariance!r}")
        check_switch(self.tied, "tied")
        if isinstance(self.reg, (bool, np.bool_)) or not isinstance(self.reg, (int, float, np.integer, np.floating)):
            raise TypeError(f"reg: expected a number, got {self.reg!r}")
        if not 0.0 <= real_or_inf(self.reg) < np.inf:
            raise ValueError(f"reg: must be finite and >= 0, got {self.reg}")
        self._check_common_params()

    def _fit_one(self, X):
        """(mean, covariance, shrinkage, lower precision factor) of rows X, scale-invariant."""
        scale = _power_of_two_scale(X, float(self.reg))
        Xs = X * scale if scale != 1.0 else X
        try:
            mean, cov, shrinkage, factor = _core.fit_gaussian(np.ascontiguousarray(Xs), self.covariance,
                                                              float(self.reg) * scale * scale, self._n_jobs())
        except SingularCovarianceError as exc:
            raise _singular_hint(exc, self.covariance) from None
        mean, cov, factor = _unscaled(mean, cov, factor, scale, "X")
        return mean, cov, shrinkage, factor

    def fit(self, X, y):
        """Fit the class means and covariance(s) on features ``X [n, d]`` with labels ``y [n]``."""
        self._check_params()
        X, backend = as_dense_array(X, "X")
        X = to_backend(X, "numpy")
        check_shape(X.shape, "X")
        X = float_array(X, "X", ndim=2, dtype=np.float64)
        if y is None:
            raise ValueError("ClassGaussian requires y to be passed, but the target y is None")
        y = np.asarray(to_backend(y, "numpy"))
        if y.ndim == 2 and y.shape[1] == 1:
            import warnings  # noqa: PLC0415

            from sklearn.exceptions import DataConversionWarning  # noqa: PLC0415

            warnings.warn("y: a column vector was passed where a 1-D array was expected; it is ravelled",
                          DataConversionWarning, stacklevel=2)
            y = y.ravel()
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y: expected one label per row of X ({X.shape[0]}), got shape {y.shape}")
        y = checked_labels(y, "y")
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y: need at least 2 classes, got {len(classes)} class(es)")
        counts = np.bincount(codes, minlength=len(classes))
        if not self.tied and counts.min() < 2:
            raise ValueError("y: every class needs at least 2 samples for its own covariance (or tied=True)")
        d = X.shape[1]
        # One fit at a time; each class's covariance and factor kept, and stacked once (untied).
        kept = 1 if self.tied else len(classes)
        check_fits(_fit_bytes(X.shape[0], d) + 2 * 2 * kept * 8 * d * d,
                   f"X: {'a tied covariance' if self.tied else f'{kept} covariances'} over {d} features")
        means = np.zeros((len(classes), d))
        # Each row divided by its class size before adding: a mean never exceeds the largest
        # value, where the sum of large ones would overflow.
        np.add.at(means, codes, X / counts[codes, None])
        # Everything is computed before the first attribute changes: a failed refit keeps the model.
        if self.tied:
            # The pooled within-class covariance: the estimator on the rows centred by their class.
            centred = X - means[codes]
            if not np.isfinite(centred).all():
                raise ValueError("X: rows minus their class means overflow float64; scale the features down")
            _, covariance, shrinkage, factor = self._fit_one(centred)
            factors = factor[None]
        else:
            fits = [self._fit_one(X[codes == k]) for k in range(len(classes))]
            covariance = np.stack([f[1] for f in fits])
            shrinkage = np.array([f[2] for f in fits])
            factors = np.stack([f[3] for f in fits])
        self.classes_, self.means_, self.priors_ = classes, means, counts / counts.sum()
        self.covariance_, self.shrinkage_, self.precision_cholesky_ = covariance, shrinkage, factors
        # log|Sigma_k| from the factor: precision = L L^T, so log|Sigma| = -2 sum log diag(L).
        self._log_det = -2.0 * np.log(np.abs(np.diagonal(factors, axis1=1, axis2=2))).sum(axis=1)
        self.n_features_in_ = d
        return self

    def _input(self, X):
        self._check_fitted()
        X, backend = as_dense_array(X, "X")
        check_shape(X.shape, "X")
        target = self._target_backend(backend)
        X = float_array(to_backend(X, target), "X", backend=target, ndim=2)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but ClassGaussian is expecting {self.n_features_in_} "
                             "features as input")
        return X, target

    def distances(self, X):
        """Mahalanobis distances (not squared) of each row to every class mean: ``[m, C]``.

        Tied: one whitening GEMM of X and of the means, then the exact distances between them
        (one kNN pass with k = C); untied: the fused whitened-norm kernel once per class with the
        class's own factor.
        """
        X, backend = self._input(X)
        xp = xp_of(backend)
        k = kernels(backend)
        factors = to_backend(self.precision_cholesky_, backend).astype(X.dtype, copy=False)
        means = to_backend(self.means_, backend).astype(X.dtype, copy=False)
        layout = _factor_layout(factors, xp)
        n_classes = len(self.classes_)
        out = xp.empty((X.shape[0], n_classes), dtype=np.float64)
        if self.tied and (backend == "numpy" or n_classes <= 32):
            # One whitening GEMM, then exact distances between whitened rows and whitened means
            # (the kNN kernel with k = C re-measures every pair in float64).
            from .patchcore import knn  # noqa: PLC0415

            z = xp.ascontiguousarray(X @ factors[0])
            centres = xp.ascontiguousarray(means @ factors[0])
            dist, idx = knn(z, centres, n_classes, n_jobs=self._n_jobs())
            out[xp.arange(X.shape[0])[:, None], idx] = dist
        for c in range(0 if not self.tied or not (backend == "numpy" or n_classes <= 32) else n_classes, n_classes):
            factor = factors[0] if self.tied else factors[c]
            out[:, c] = k.mahalanobis(X, xp.ascontiguousarray(means[c]), xp.ascontiguousarray(factor), layout,
                                      self._n_jobs())
        if not bool(xp.isfinite(out).all()):
            raise ValueError("X: contains NaN or infinity, or its distances overflow")
        return out

    def decision_function(self, X):
        """Distance to the nearest class mean ``[m]``: higher = more out-of-distribution."""
        return self.distances(X).min(axis=1)

    def predict(self, X):
        """The class of highest posterior: its Gaussian density times its frequency in the
        training labels (with a tied covariance and equal class sizes, the nearest class mean)."""
        proba = self.predict_proba(X)
        return self.classes_[np.asarray(to_backend(proba, "numpy")).argmax(axis=1)]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy of ``predict(X)`` against ``y``."""
        predicted = self.predict(X)
        y = np.asarray(to_backend(y, "numpy")).ravel()
        if y.shape != predicted.shape:
            raise ValueError(f"y: expected one label per row of X ({len(predicted)}), got {y.size}")
        if sample_weight is not None:
            sample_weight = np.asarray(to_backend(sample_weight, "numpy"), dtype=np.float64).ravel()
            if sample_weight.shape != predicted.shape:
                raise ValueError(f"sample_weight: expected one weight per row of X ({len(predicted)}), "
                                 f"got {sample_weight.size}")
        return float(np.average((predicted == y).astype(np.float64), weights=sample_weight))

    def predict_log_proba(self, X):
        """Log posterior ``log p(k | x)`` with the class frequencies as priors: ``[m, C]``."""
        if self.tied:
            return self._tied_log_proba(X)
        d = self.distances(X)
        xp = xp_of("numpy" if isinstance(d, np.ndarray) else "cupy")
        const = xp.asarray(np.log(self.priors_)) - 0.5 * xp.asarray(self._log_det)
        # Relative to the nearest class: d_k^2 - d_n^2 as (d_k - d_n)(d_k + d_n), so that far rows,
        # whose squares overflow, still compare their classes (inf - inf would be NaN).
        near = d.argmin(axis=1)
        d_near = xp.take_along_axis(d, near[:, None], axis=1)
        gap = xp.where(d == d_near, 0.0, (d - d_near) * (d + d_near))
        logits = (const[None, :] - const[near][:, None]) - 0.5 * gap
        return _log_normalised(logits, xp)

    def _tied_log_proba(self, X):
        """One covariance: the classes differ by the linear terms of the squared distances only,
        ``z . w_k - |w_k|^2 / 2`` with ``z = L^T x`` and ``w_k = L^T mu_k``. Far rows keep the
        differences that their squared distances would round away (or overflow)."""
        X, backend = self._input(X)
        xp = xp_of(backend)
        factor = xp.asarray(to_backend(self.precision_cholesky_[0], backend), dtype=np.float64)
        centres = xp.asarray(to_backend(self.means_, backend), dtype=np.float64) @ factor
        z = X.astype(np.float64, copy=False) @ factor
        logits = z @ centres.T + (xp.asarray(np.log(self.priors_)) - 0.5 * (centres * centres).sum(axis=1))[None, :]
        if not bool(xp.isfinite(logits).all()):
            raise ValueError("X: contains NaN or infinity, or its distances overflow")
        return _log_normalised(logits, xp)

    def predict_proba(self, X):
        """Posterior ``p(k | x)`` under the class Gaussians and priors: ``[m, C]``."""
        log_proba = self.predict_log_proba(X)
        return xp_of("numpy" if isinstance(log_proba, np.ndarray) else "cupy").exp(log_proba)
