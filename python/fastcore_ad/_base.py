"""The scikit-learn estimator base shared by :class:`~fastcore_ad.GaussianAD`,
:class:`~fastcore_ad.TsetlinMachine` and :class:`~fastcore_ad.MuSc`.

Parameters are declared once, in each class's ``__init__`` (``get_params``, ``set_params``,
``clone`` and the repr come from scikit-learn's ``BaseEstimator``); ``n_jobs`` has one rule
(:func:`check_n_jobs`), ``device`` one resolution (``_dispatch.resolve_device``), and a method
that needs a fitted model raises :class:`NotFittedError`.
"""

from __future__ import annotations

from numbers import Number

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from sklearn.utils.multiclass import check_classification_targets

from ._dispatch import as_array, resolve_device

__all__ = ["FastcoreEstimator", "NotFittedError", "ComplexDataError", "check_n_jobs", "as_dense_array", "check_shape"]


class NotFittedError(_SklearnNotFittedError, RuntimeError):
    """A method that needs a fitted model was called before ``fit``.

    scikit-learn's ``NotFittedError`` (so ``check_is_fitted`` and its users recognise it) and a
    RuntimeError, which is what the estimators raised before they followed scikit-learn.
    """


class ComplexDataError(TypeError, ValueError):
    """Complex input: a TypeError by this library's rule (a wrong dtype), a ValueError by
    scikit-learn's (its checks expect ``ValueError("Complex data not supported")``)."""


def check_text_items(texts, name: str) -> None:
    """TypeError naming the first item of ``texts`` that is not a str or bytes, so a stray None
    or number is reported where it sits, not met deep in a tokenizer."""
    for i, text in enumerate(texts):
        if not isinstance(text, (str, bytes)):
            raise TypeError(f"{name}: item {i} is {type(text).__name__}, expected str or bytes")


def check_n_jobs(n_jobs):
    """The one ``n_jobs`` rule: None (``FASTCORE_AD_NUM_THREADS``, else every CPU) or a nonzero
    integer; -1 means every CPU, -2 all but one, and so on. A request past four threads per CPU
    is capped there (below minus the CPU count: one thread) instead of failing. Returns the int
    (or None).

    >>> check_n_jobs(-2**40), check_n_jobs(None)
    (-1099511627776, None)
    """
    if n_jobs is None:
        return None
    if isinstance(n_jobs, (bool, np.bool_)) or not isinstance(n_jobs, (int, np.integer)):
        raise TypeError(f"n_jobs: expected None or a nonzero integer, got {type(n_jobs).__name__} {n_jobs!r}")
    if n_jobs == 0:
        raise ValueError("n_jobs: must be None or a nonzero integer (-1: every CPU, -2: all but one), got 0")
    return int(n_jobs)


def as_dense_array(X, name: str):
    """``(array, backend)`` for a dense numeric input, as ``_dispatch.as_array``, with the
    cases scikit-learn's checks expect spelled out: sparse matrices are a TypeError saying so,
    object arrays of numbers are converted to float64 (anything else in them is a TypeError
    from the conversion), complex arrays are a :class:`ComplexDataError`."""
    if hasattr(X, "tocsr") and hasattr(X, "nnz"):
        raise TypeError(f"{name}: sparse input is not supported here; pass a dense array")
    X, backend = as_array(X, name)
    if X.dtype == object:
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}: {exc}") from None
    if X.dtype.kind == "c":
        raise ComplexDataError(f"{name}: Complex data not supported (dtype {X.dtype})")
    return X, backend


def check_shape(shape, name: str, ndim=2):
    """ValueError for a wrong number of dimensions, no samples or no features, worded as
    scikit-learn's ``check_array`` words it (its estimator checks look for those words)."""
    shape = tuple(int(s) for s in shape)
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if len(shape) not in allowed:
        hint = (" Reshape your data with X.reshape(-1, 1) if it has one feature or X.reshape(1, -1) if it is "
                "one sample." if len(shape) == 1 and 2 in allowed else "")
        raise ValueError(f"{name}: expected {' or '.join(map(str, allowed))} dimensions, got shape {shape}.{hint}")
    if shape[0] == 0:
        raise ValueError(f"{name}: no samples: 0 sample(s) (shape={shape}) while a minimum of 1 is required.")
    if shape[-1] == 0:
        raise ValueError(f"{name}: no features: 0 feature(s) (shape={shape}) while a minimum of 1 is required.")


class FastcoreEstimator(BaseEstimator):
    """Base of the estimators: the fitted check, ``n_jobs`` and ``device`` resolution.

    A subclass names in ``_fitted_attribute`` the attribute that ``fit`` sets (its presence
    means fitted) and declares ``n_jobs`` (and ``device`` where it has one) in ``__init__``.
    """

    _fitted_attribute: str = ""

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, self._fitted_attribute)

    def _check_fitted(self):
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit before using it")

    def _n_jobs(self):
        """``n_jobs`` under :func:`check_n_jobs`'s rule (checked at every use: ``set_params``
        may change it after ``fit``)."""
        return check_n_jobs(self.n_jobs)

    def _target_backend(self, backend: str, *, check_only: bool = False) -> str:
        """The backend a computation on ``backend``'s arrays runs on under ``self.device``."""
        return resolve_device(self.device, backend, check_only=check_only)

    def _check_common_params(self):
        """The checks every estimator shares: ``n_jobs``, and ``device`` where it has one."""
        self._n_jobs()
        if "device" in self.get_params(deep=False):
            self._target_backend("numpy", check_only=True)


def checked_labels(y, name: str):
    """1-D labels ``y`` that can be classes: no NaN, infinity or None (in float or object
    arrays), not continuous, and of types that can be ordered (``np.unique`` sorts them)."""
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise ValueError(f"{name}: contains NaN or infinity")
        check_classification_targets(y)  # continuous values are a regression target: "Unknown label type"
    elif y.dtype.hasobject:
        values = y.tolist()
        if any(v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v)) for v in values):
            raise ValueError(f"{name}: contains NaN, infinity or None")
        # Sets, tuples and the like compare (sets by inclusion) without a total order: np.unique
        # would then give classes that are neither sorted nor unique.
        odd = sorted({type(v).__name__ for v in values if not isinstance(v, (str, bytes, Number, np.generic))})
        if odd:
            raise TypeError(f"{name}: labels must be numbers or strings, got {odd}")
        try:
            np.unique(y)
        except TypeError:
            kinds = sorted({type(v).__name__ for v in values})
            raise TypeError(f"{name}: labels of types {kinds} cannot be ordered; use one type") from None
    return y
