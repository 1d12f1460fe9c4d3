"""Tsetlin Machine: interpretable classification by conjunctive clauses over binary features and
their negations (Granmo 2018), as used for text categorisation by Berge et al. (2019), with
integer-weighted clauses (Abeyrathna et al. 2020) and an optional coalesced clause pool
(Glimsdal & Granmo 2021). Training and prediction run in Rust, or in CUDA on cupy input.

>>> import numpy as np
>>> from fastcore_ad import TsetlinMachine
>>> rng = np.random.default_rng(0)
>>> X = rng.integers(0, 2, size=(600, 6), dtype=np.uint8)
>>> y = X[:, 0] ^ X[:, 1]                      # XOR of the first two features
>>> tm = TsetlinMachine(20, 10, 3.0, seed=1).fit(X, y, epochs=30)
>>> tm.score(X, y) > 0.95
True
>>> tm.decision_function(X[:2]).dtype
dtype('int64')
>>> str(tm.rules(feature_names=list("abcdef"))[0]).startswith("IF ")
True

Numeric features are thermometer-encoded (``booleanizer``): each becomes the bits ``x > t`` for up
to ``max_bits`` thresholds learnt at fit, and the rules speak in thresholds.

>>> age, income = rng.uniform(18, 90, 400), rng.normal(50, 15, 400)
>>> risky = ((age > 60) & (income < 45)).astype(int)
>>> tab = TsetlinMachine(20, 10, 3.0, seed=1).fit(np.c_[age, income], risky, epochs=20)
>>> tab.score(np.c_[age, income], risky) > 0.9
True
>>> print(tab.rules(feature_names=["age", "income"])[0])
IF ...age > ... THEN ... (weight ...)

The model is the state of every Tsetlin automaton, kept bit-sliced: ``action_`` holds the
include bit (top bit plane) of every literal of every clause, ``lower_`` the lower planes and
``weights_`` the signed integer clause weights. Literals are the ``n`` features followed by
their ``n`` negations. See :func:`TsetlinMachine.save` for the file format. On CPUs with
AVX-512BW or AVX2 and ``state_bits <= 8``, a training call of 16 or more examples works on a copy with
one byte per automaton (the same size as the planes again, freed when the call returns) and
writes the planes back: the model is bit-identical either way.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import gzip
import hashlib
import inspect
import json
import os
import threading
import time
import weakref
import zipfile
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.feature_selection import SelectKBest, chi2
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, column_or_1d

from . import _core
from ._base import ComplexDataError, FastcoreEstimator, as_dense_array, check_shape, check_text_items, checked_labels
from ._dispatch import check_switch, is_cupy, is_dask, kernels, to_backend, xp_of
from ._thermometer import Thermometer
from ._memory import check_fits
from .progress import progress

__all__ = ["TsetlinMachine", "TsetlinEnsemble", "TsetlinOneVsRest", "TsetlinVote", "Rule", "text_pipeline", "text_views",
           "TextTsetlinPipeline", "FORMAT_VERSION", "demo", "load_mtsamples_sample"]

#: Version of the ``save`` file format (bumped on any incompatible change). Version 2 added the
#: thermometer thresholds; version 1 files still load.
FORMAT_VERSION = 2
_FORMAT_NAME = "fastcore_ad.tsetlin"


# ------------------------------------------------------------------------------------------------
# One call at a time per model: training mutates the automata the prediction kernels read.

_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _model_lock(model) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def _serialised(method):
    """Run ``method`` holding the model's lock: concurrent calls on one model wait their turn."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with _model_lock(self):
            return method(self, *args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------------------------------
# Input intake


def _is_sparse(X) -> bool:
    return hasattr(X, "tocsr") and hasattr(X, "nnz") and hasattr(X, "format")


def _check_sparse_structure(X, name="X"):
    """Refuses a scipy sparse matrix whose index arrays contradict its shape: scipy's own
    conversions and sorts trust them, and read or write out of bounds when they lie."""
    if X.format in ("csr", "csc"):
        major, minor = X.shape if X.format == "csr" else X.shape[::-1]
        indptr, indices = np.asarray(X.indptr), np.asarray(X.indices)
        stored = min(indices.size, np.asarray(X.data).size)
        if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
            problem = "index arrays are not integers"
        elif indptr.ndim != 1 or len(indptr) != major + 1:
            problem = f"indptr holds {indptr.size} entries for {major} {'rows' if X.format == 'csr' else 'columns'}"
        elif indptr[0] != 0 or bool((np.diff(indptr) < 0).any()):
            problem = "indptr must start at 0 and never decrease"
        elif indptr[-1] > stored:
            problem = f"indptr ends at {int(indptr[-1])}, past the {stored} stored entries"
        else:
            used = indices[:int(indptr[-1])]
            problem = (f"an index lies outside [0, {minor})"
                       if used.size and (int(used.min()) < 0 or int(used.max()) >= minor) else None)
    elif X.format == "coo":
        rows, cols = np.asarray(X.row), np.asarray(X.col)
        n_rows, n_cols = X.shape
        if rows.shape != cols.shape or rows.shape != np.shape(X.data):
            problem = "row, col and data differ in length"
        else:
            problem = ("a row or column index lies outside the shape"
                       if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= n_rows
                                         or int(cols.min()) < 0 or int(cols.max()) >= n_cols) else None)
    else:
        problem = None
    if problem is not None:
        raise ValueError(f"{name}: malformed {X.format.upper()} matrix of shape {X.shape}: {problem}")


# A held-out split steers early stopping only with enough documents per class: with fewer, its
# accuracy jumps by whole documents from epoch to epoch (MTSamples: 108 notes for 17 classes).
_MIN_HELD_OUT_PER_CLASS = 20
# Epochs on all the data when no held-out split is drawn: on MTSamples and Ohsumed, both too small
# to hold out, 25 epochs on everything beat early stopping (see bench/RESULTS.md).
_EPOCHS_WITHOUT_HOLDOUT = 25


def _holdout(y_idx, fraction: float, seed):
    """``(train_rows, held_out_rows)``: a stratified split drawn from ``seed``, every class
    keeping at least one training and one held-out document; ``(None, None)`` when a class has
    fewer than two documents or the held-out part would hold fewer than
    ``_MIN_HELD_OUT_PER_CLASS`` documents per class on average."""
    counts = np.bincount(y_idx)
    if counts.min() < 2 or fraction * len(y_idx) < _MIN_HELD_OUT_PER_CLASS * len(counts):
        return None, None
    rng = np.random.default_rng([0 if seed is None else int(seed), 0x5E1EC7])
    held = []
    for cls, count in enumerate(counts):
        rows = rng.permutation(np.flatnonzero(y_idx == cls))
        held.append(rows[: min(count - 1, max(1, int(round(fraction * count))))])
    held_out = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(len(y_idx)), held_out)
    return train.astype(np.int64), held_out


# Bounds that keep the kernels' integer arithmetic exact: 2T and T + |class sum| in 64 bits, and
# literal budgets far beyond any model's literal count.
_MAX_THRESHOLD = 2**62
_MAX_LITERALS = 2**32
_MAX_ESTIMATORS = 1000
_ENSEMBLE_FORMAT = "fastcore_ad.tsetlin_ensemble"
_ENSEMBLE_MANIFEST = "ensemble.json"
_MAX_MANIFEST_BYTES = 4096
_OVR_FORMAT = "fastcore_ad.tsetlin_one_vs_rest"
_OVR_MANIFEST = "one_vs_rest.npz"
# features_per_class="auto": a class reads the terms whose presence chi2 against the class
# exceeds the 1-degree-of-freedom quantile of p = 1e-4. Chosen on held-out training data: it
# beat every fixed count on Ohsumed (5-fold CV) and 20 Newsgroups (held-out 10%), where the
# best fixed counts differ 16-fold (bench/RESULTS.md).
_SIGNIFICANT_CHI2 = 15.1367052
# ... and at least this many (a class too small for any term to reach significance).
_MIN_CLASS_COLUMNS = 10


def _check_validation_data(validation_data, n_features: int, y):
    """``fit``'s ``validation_data``: a pair (X_val, y_val) with ``n_features`` columns and one
    label per row, of the kind of ``y`` (strings or numbers); ValueError naming it otherwise."""
    try:
        X_val, y_val = validation_data
    except (TypeError, ValueError):
        raise ValueError("validation_data: expected a pair (X_val, y_val)") from None
    try:
        _, n, _, _ = _intake(X_val, n_features)
        y_val = np.asarray(y_val)
        if y_val.ndim != 1 or len(y_val) != n:
            raise ValueError(f"y_val: expected {n} labels (one per row of X_val), got shape {y_val.shape}")
        checked_labels(y_val, "y_val")
        if _label_kind(y_val) != _label_kind(y):
            raise ValueError(f"y_val: labels are {_label_kind(y_val)}s but y's are {_label_kind(y)}s")
        unseen = np.setdiff1d(np.unique(y_val), np.unique(y))
        if unseen.size:
            # No model trained on y can ever predict them: the accuracy would steer nothing.
            raise ValueError(f"y_val: labels {unseen[:5].tolist()} never occur in y")
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"validation_data: {exc}") from None


def _label_kind(labels) -> str:
    """"string" or "number" (bool included), from the dtype or, for object arrays, the values."""
    if labels.dtype.kind in "US":
        return "string"
    if labels.dtype.hasobject:
        return "string" if any(isinstance(v, (str, bytes)) for v in labels.tolist()) else "number"
    return "number"


def _take_rows(X, rows):
    """Rows of a CSR matrix or a dense (numpy / cupy) array."""
    if _is_sparse(X):
        return X[rows]
    return X[to_backend(rows, "cupy") if is_cupy(X) else rows]


def _csr_to_packed(docs, n: int, f: int) -> np.ndarray:
    """A CSR pair -> packed rows ``[n, ceil(f / 64)]``, built without densifying."""
    indptr, indices = docs
    rows = np.repeat(np.arange(n), np.diff(indptr))
    out = np.zeros((n, (f + 63) // 64), dtype=np.uint64)
    np.bitwise_or.at(out, (rows, indices // 64), np.left_shift(np.uint64(1), (indices % 64).astype(np.uint64)))
    return out


def _intake(X, n_features=None):
    """``(X, n_samples, n_features, backend)``: a scipy CSR matrix or a dense numeric array
    (numpy or cupy), two-dimensional, not empty, with ``n_features`` columns when given."""
    if _is_sparse(X):
        check_shape(X.shape, "X")
        _check_sparse_structure(X)
        X, backend = (X.tocsr() if X.format != "csr" else X), "numpy"
        if not X.has_canonical_format:
            # Duplicate entries add up, as in the dense matrix; indices sorted. Never in place.
            X = X.copy()
            X.sum_duplicates()
        dtype = X.data.dtype
    else:
        X, backend = as_dense_array(X, "X")
        check_shape(X.shape, "X")
        dtype = X.dtype
    if dtype.kind == "c":
        raise ComplexDataError(f"X: Complex data not supported (dtype {dtype})")
    if dtype != np.bool_ and dtype.kind not in "iuf":
        raise TypeError(f"X: expected bool or numeric features, got dtype {dtype}")
    n, f = X.shape
    if n_features is not None and f != n_features:
        raise ValueError(f"X has {f} features, but TsetlinMachine is expecting {n_features} features as input")
    return X, n, f, backend


def _values(X):
    """The stored values of a CSR matrix, or the dense array itself."""
    return X.data if _is_sparse(X) else X


def _all_binary(X) -> bool:
    values = _values(X)
    return values.dtype == np.bool_ or not values.size or bool(((values == 0) | (values == 1)).all())


def _check_finite(X):
    values = _values(X)
    if values.dtype.kind == "f" and not bool(xp_of("cupy" if is_cupy(values) else "numpy").isfinite(values).all()):
        raise ValueError("X: contains NaN or infinity")


def _binary_docs(X, backend, fitted_on_bits=False):
    """Documents of 0/1 input, never densified: a packed uint64 array ``[n, ceil(f / 64)]``
    (bit ``j % 64`` of word ``j // 64`` is feature j) or a CSR pair ``(indptr int64, indices int32)``.
    ``fitted_on_bits``: a model that chose no encoding because its training input was 0/1."""
    if not _all_binary(X):
        _check_finite(X)
        if fitted_on_bits:
            raise ValueError("X: expected binary features (bool or 0/1): the model was fitted on 0/1 input, "
                             "so it learnt no thresholds for other values")
        if _is_sparse(X):
            raise ValueError("X: expected binary features (0/1); binarise counts first, "
                             "e.g. CountVectorizer(binary=True), or use booleanizer='auto'")
        raise ValueError("X: expected binary features (bool or 0/1), or use booleanizer='auto'")
    if not _is_sparse(X):
        return _pack(X, xp_of(backend))
    if X.data.size and not bool(X.data.all()):
        X = X.copy()
        X.eliminate_zeros()
    return np.ascontiguousarray(X.indptr, dtype=np.int64), np.ascontiguousarray(X.indices, dtype=np.int32)


def _docs(X, encoder, backend, fitted_on_bits=False):
    """Rust-ready documents of intake ``X``: its bits under the thermometer ``encoder``, or
    ``X`` itself when there is none (0/1 input; ``fitted_on_bits`` as in ``_binary_docs``)."""
    if encoder is None:
        return _binary_docs(X, backend, fitted_on_bits)
    _check_finite(X)
    if _is_sparse(X):
        return encoder.encode_csr(X)
    xp = xp_of(backend)
    return _pack(encoder.encode_dense(X, xp), xp)


def _on_host(docs):
    """Documents for the CPU kernels: packed words moved off a GPU, CSR pairs as they are."""
    return docs if isinstance(docs, tuple) else to_backend(docs, "numpy")


def _pack(X, xp=np):
    """0/1 ``[n, f]`` -> uint64 ``[n, ceil(f/64)]``; bit ``j % 64`` of word ``j // 64`` is feature j.

    numpy packs bytes; other array modules (cupy) pack on their own device.
    """
    n, f = X.shape
    fw = (f + 63) // 64
    if xp is not np:
        bits = xp.zeros((n, fw * 64), dtype=np.uint64)
        bits[:, :f] = X != 0
        shifts = xp.arange(64, dtype=np.uint64)
        return xp.ascontiguousarray((bits.reshape(n, fw, 64) << shifts).sum(axis=2, dtype=np.uint64))
    packed = np.packbits(X.astype(bool, copy=False), axis=1, bitorder="little")
    out = np.zeros((n, fw * 8), dtype=np.uint8)
    out[:, :packed.shape[1]] = packed
    return out.view("<u8").astype(np.uint64, copy=False)


# ------------------------------------------------------------------------------------------------
# Rules


def _exact_text(value: float) -> str:
    """Six significant figures when they give ``value`` back, else every digit it needs: a
    printed threshold must say the same as the stored one."""
    short = f"{value:.6g}"
    return short if float(short) == value else repr(float(value))


@dataclass(frozen=True)
class Rule:
    """One clause read as a rule: ``IF literal AND ... THEN class_label (weight w)``.

    ``weight`` is signed: positive votes for ``class_label``, negative against it. ``literals``
    are ``(feature_index, negated)`` pairs; the rule fires when every literal holds. A model
    that thermometer-encodes its input (``booleanizer``) has ``thresholds``, one per literal:
    the literal is then ``x[feature_index] > threshold`` (read ``"x3 > 0.27"``), else the
    feature itself.
    """

    class_label: object
    weight: int
    literals: tuple
    clause: int
    feature_names: tuple | None = None
    class_name: object = None
    thresholds: tuple | None = None
    n_features: int | None = None

    def _name(self, j: int) -> str:
        return str(self.feature_names[j]) if self.feature_names is not None else f"x{j}"

    def _terms(self):
        """(feature_index, threshold or None, negated) per literal."""
        thresholds = self.thresholds if self.thresholds is not None else (None,) * len(self.literals)
        return [(j, t, neg) for (j, neg), t in zip(self.literals, thresholds)]

    def __str__(self) -> str:
        terms = [("NOT " if neg else "") + self._name(j) + ("" if t is None else f" > {_exact_text(t)}")
                 for j, t, neg in self._terms()]
        label = self.class_name if self.class_name is not None else self.class_label
        return f"IF {' AND '.join(terms)} THEN {label} (weight {self.weight})"

    def fires(self, x) -> bool:
        """Whether the rule holds for one document (a 1-D array or a 1-row sparse matrix) with
        the model's features (``n_features``)."""
        width = self.n_features if self.n_features is not None else (
            None if self.feature_names is None else len(self.feature_names))
        row = _one_document(x, width)
        last = max((j for j, _ in self.literals), default=-1)
        if last >= row.shape[1]:
            raise ValueError(f"x: the rule reads feature {last}, but x has {row.shape[1]} features")
        if _is_sparse(row):
            stored = dict(zip(row.indices.tolist(), row.data.tolist()))
            values = [stored.get(j, 0) for j, _ in self.literals]
        else:
            values = [row[0, j] for j, _ in self.literals]
        return all((bool(v) if t is None else bool(v > t)) != neg for v, (_, t, neg) in zip(values, self._terms()))


# ------------------------------------------------------------------------------------------------
# The estimator


class _ScoredClassifier(ClassifierMixin):
    """``decision_function``, ``predict`` and ``score`` from per-class scores ``_scores(X)``
    (``[n_samples, n_classes]``: a machine's class sums, an ensemble's votes)."""

    def decision_function(self, X):
        """scikit-learn's decision values: for two classes the margin ``[n_samples]`` (class 1's
        score minus class 0's; > 0 exactly when ``predict`` gives ``classes_[1]``), else the
        per-class scores ``[n_samples, n_classes]`` (a machine's int64 :meth:`class_sums`, an
        ensemble's float64 ``votes``)."""
        scores = self._scores(X)  # checks fitted first
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, X):
        """The class with the largest score (ties go to the first class in ``classes_``); lazy for
        dask input."""
        scores = self._scores(X)
        if is_dask(scores):
            return scores.argmax(axis=1).map_blocks(self.classes_.take, dtype=self.classes_.dtype)
        if is_cupy(scores):
            scores = scores.get()
        return self.classes_[np.argmax(scores, axis=1)]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy of ``predict(X)`` against ``y``."""
        pred = np.asarray(self.predict(X))
        y = _checked_y(y, len(pred))
        if _label_kind(y) != _label_kind(self.classes_):
            raise ValueError(f"y: labels are {_label_kind(y)}s but classes_ are {_label_kind(self.classes_)}s "
                             f"({y.dtype} against {self.classes_.dtype}); no prediction could match")
        hits = (pred == y).astype(np.float64)
        if sample_weight is None:
            return float(hits.mean())
        try:
            weights = np.asarray(sample_weight, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError("sample_weight: expected one number per row") from None
        if weights.shape != hits.shape:
            raise ValueError(f"sample_weight: expected shape {hits.shape} (one per row), got {weights.shape}")
        if not np.isfinite(weights).all() or (weights < 0).any() or not 0 < weights.sum() < np.inf:
            raise ValueError("sample_weight: must be finite, non-negative and not all zero")
        return float(np.average(hits, weights=weights))


class TsetlinMachine(_ScoredClassifier, FastcoreEstimator):
    """A multi-class Tsetlin Machine with a scikit-learn estimator interface.

    Parameters
    ----------
    n_clauses : clauses per class (half vote for the class, half against; must be even), or
        with ``coalesced=True`` the size of the one clause pool shared by every class.
        "auto" (the default): 14 sqrt(n_samples) rounded to even, within [20, 2000] and at most
        16,000 clauses in all (about 1,000 per class for 5,000 documents).
    threshold : T, the voting margin; class sums are clamped to [-T, T] during training.
        "auto": 0.8 n_clauses, or 3.6 n_clauses from 20 classes on (not coalesced). A margin
        close to the clause count keeps most clauses learning from every example for longer; on
        text this is worth 1 point over T = n_clauses / 5. With many classes each class sees its own
        documents rarely, and a wider margin lets its clauses keep learning from them
        (cross-validated on training splits: +2.3 points on Ohsumed's 23 classes, +3.2 on 20
        Newsgroups' 20, +0.9 on MTSamples' 17, -0.1 on R8's 8; see ``bench/RESULTS.md``).
    specificity : s >= 1; literals are forgotten with probability 1/s. "auto": 3.
    state_bits : each automaton has 2**state_bits states (2..16); the upper half includes.
    weighted : integer clause weights (Abeyrathna et al. 2020). A weight's magnitude grows by
        1 on Type I feedback when the clause outputs 1 and shrinks by 1 on Type II feedback
        when it outputs 1, with lower bound 1 (weights stay positive integers, so a clause
        keeps its polarity and keeps voting). Coalesced weights are signed and unbounded.
    boost_true_positive : reward true literals of firing clauses always, not with prob (s-1)/s.
    negative_sampling : "focused" draws the negative class in proportion to (T + v_k) / 2T,
        "uniform" uniformly among the other classes.
    max_included_literals : literal budget per clause (None: no budget).
    negated_literals : whether clauses may include negated features ("NOT word"). False
        restricts every clause to present features, so each rule reads as words that must
        occur (on text, rules become readable at a small cost in accuracy; see
        ``bench/RESULTS.md``).
    max_negated_literals : at most this many negated literals per clause (None: no cap; 0 is
        ``negated_literals=False``). A negation that would cross into "include" beyond the cap
        is not rewarded; the cap applies before ``max_included_literals``.
    absorbing : None, or an exclude state a in [0, 2**(state_bits-1) - 1]: states at or below it
        absorb, so an automaton that gets there is never incremented again and its literal
        stays excluded for good (decrements still move it down to 0). None: no absorbing states.
    clause_drop_p : each clause is left out of voting and feedback with this probability,
        drawn afresh for every training example.
    coalesced : one shared clause pool with a signed weight per class and clause.
    seed : seed of the counter-based random streams; None draws one at fit time (``seed_``).
    n_jobs : threads: None (FASTCORE_AD_NUM_THREADS or all CPUs) or a nonzero integer, -1 all
        CPUs, -2 all but one. Results do not depend on it.
    device : "auto" (training and prediction run where X lives), "cpu" or "cuda" (X moves
        there). Training on CUDA gives the model the CPU gives for the same seed, bit for bit;
        the model's state stays in host memory between calls.
    booleanizer : "auto": input whose values are all 0/1 (or bool) is used as it is; other
        numeric input is thermometer-encoded, each feature j becoming the bits ``x_j > t`` for up
        to ``max_bits`` thresholds t learnt at fit (quantiles of the training column; see
        ``fastcore_ad._thermometer``), stored in ``thermometer_`` and in saved files. Rules then
        read ``"x3 > 0.27"``. Sparse input is encoded without densifying. The first ``fit`` or
        ``partial_fit`` decides. "none": input must be 0/1 (a ValueError otherwise).
    max_bits : the most thresholds per feature of the thermometer encoding (>= 1).
    max_epochs, n_iter_no_change, validation_fraction : ``fit`` without ``epochs`` holds out
        ``validation_fraction`` of the training set (stratified, drawn from ``seed``), trains
        until the validation accuracy has not improved for ``n_iter_no_change`` epochs or
        ``max_epochs`` have run, and keeps the model of the best epoch (``best_epoch_``). An
        epoch that reaches validation accuracy 1.0 ends training at once: no later epoch could
        replace it as the best. Training sets too small for a held-out part of 20 documents per
        class on average (or with a class of a single document) train on every document for
        ``min(max_epochs, 25)`` epochs instead; their ``history_`` has no validation accuracy.

    The sizes used are ``n_clauses_``, ``threshold_`` and ``specificity_``.

    ``decision_function`` follows scikit-learn (for two classes the margin
    ``class_sums[:, 1] - class_sums[:, 0]``, else the class sums); ``class_sums`` gives the
    raw sums of every class.
    """

    _fitted_attribute = "action_"

    def __init__(self, n_clauses="auto", threshold="auto", specificity="auto", *, state_bits=8, weighted=True,
                 boost_true_positive=True, negative_sampling="focused", max_included_literals=None,
                 negated_literals=True, max_negated_literals=None, absorbing=None, clause_drop_p=0.0, coalesced=False, seed=None, n_jobs=None, device="auto",
                 booleanizer="auto", max_bits=8, max_epochs=40, n_iter_no_change=3, validation_fraction=0.1):
        self.n_clauses = n_clauses
        self.threshold = threshold
        self.specificity = specificity
        self.state_bits = state_bits
        self.weighted = weighted
        self.boost_true_positive = boost_true_positive
        self.negative_sampling = negative_sampling
        self.max_included_literals = max_included_literals
        self.negated_literals = negated_literals
        self.max_negated_literals = max_negated_literals
        self.absorbing = absorbing
        self.clause_drop_p = clause_drop_p
        self.coalesced = coalesced
        self.seed = seed
        self.n_jobs = n_jobs
        self.device = device
        self.booleanizer = booleanizer
        self.max_bits = max_bits
        self.max_epochs = max_epochs
        self.n_iter_no_change = n_iter_no_change
        self.validation_fraction = validation_fraction

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.non_deterministic = self.seed is None  # fit draws a fresh seed each time
        return tags

    # -- parameters ------------------------------------------------------------------------

    def _check_params(self):
        def integer(name, low, high=None):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name}: expected an integer, got {type(v).__name__}")
            if v < low or (high is not None and v > high):
                rng = f"[{low}, {high}]" if high is not None else f">= {low}"
                raise ValueError(f"{name}: must be {rng}, got {v}")
            return int(v)

        def auto(name):
            return isinstance(getattr(self, name), str) and getattr(self, name) == "auto"

        if not auto("n_clauses"):
            n_clauses = integer("n_clauses", 1)
            if not self.coalesced and n_clauses % 2:
                raise ValueError(f"n_clauses: must be even (half vote for, half against), got {n_clauses}")
        if not auto("threshold"):
            integer("threshold", 1, _MAX_THRESHOLD)
        bits = integer("state_bits", 2, 16)
        s = self.specificity
        if not auto("specificity"):
            if isinstance(s, bool) or not isinstance(s, (int, float, np.integer, np.floating)):
                raise TypeError(f"specificity: expected a number or 'auto', got {type(s).__name__}")
            try:
                value = float(s)
            except OverflowError:  # an int past float64
                value = float("inf")
            if not (np.isfinite(value) and value >= 1.0):
                raise ValueError(f"specificity: must be a finite number >= 1, got {s}")
        integer("max_epochs", 1)
        integer("n_iter_no_change", 1)
        v = self.validation_fraction
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not 0.0 < v < 1.0:
            raise ValueError(f"validation_fraction: must be a number in (0, 1), got {v!r}")
        if self.negative_sampling not in ("focused", "uniform"):
            raise ValueError(f"negative_sampling: expected 'focused' or 'uniform', got {self.negative_sampling!r}")
        if self.max_included_literals is not None:
            integer("max_included_literals", 1, _MAX_LITERALS)
        for flag in ("weighted", "boost_true_positive", "coalesced", "negated_literals"):
            check_switch(getattr(self, flag), flag)
        if self.max_negated_literals is not None:
            integer("max_negated_literals", 0, _MAX_LITERALS)
        if self.absorbing is not None:
            integer("absorbing", 0, 2 ** (bits - 1) - 1)
        p = self.clause_drop_p
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0.0 <= p < 1.0:
            raise ValueError(f"clause_drop_p: must be a number in [0, 1), got {p!r}")
        if self.seed is not None:
            integer("seed", 0, 2**64 - 1)
        if self.booleanizer not in ("auto", "none"):
            raise ValueError(f"booleanizer: expected 'auto' or 'none', got {self.booleanizer!r}")
        integer("max_bits", 1)
        self._check_common_params()

    def _layout(self) -> tuple:
        """``(coalesced, state_bits)`` of the fitted state. They shape its arrays, so a
        ``set_params`` after fitting cannot change them; ``fit`` again to do so."""
        layout = self.__dict__.get("_state_layout")
        return layout if layout is not None else (bool(self.coalesced), int(self.state_bits))

    def _check_layout_unchanged(self):
        for name, fitted in zip(("coalesced", "state_bits"), self._layout()):
            if getattr(self, name) != fitted:
                raise ValueError(f"{name}: the model was fitted with {name}={fitted!r}, which shapes its "
                                 f"state; fit() again to use {name}={getattr(self, name)!r}")

    def _config(self) -> dict:
        coalesced, state_bits = self._layout()
        return {
            "n_features": self._n_bits(),
            "n_classes": int(max(len(self.classes_), 2)),
            "n_clauses": int(self.n_clauses_),
            "state_bits": state_bits,
            "threshold": int(self.threshold_),
            "specificity": float(self.specificity_),
            "weighted": bool(self.weighted),
            "boost_true_positive": bool(self.boost_true_positive),
            "focused_negatives": self.negative_sampling == "focused",
            "max_included_literals": int(self.max_included_literals or 0),
            "negated_literals": bool(self.negated_literals) and self.max_negated_literals != 0,
            "max_negated_literals": int(self.max_negated_literals or 0),
            "absorbing": None if self.absorbing is None else int(self.absorbing),
            "clause_drop_p": float(self.clause_drop_p),
            "coalesced": coalesced,
            "seed": int(self.seed_),
        }

    def _encoder(self):
        """The thermometer encoder learnt at fit, or None when the input is used as it is."""
        return getattr(self, "thermometer_", None)

    def _fitted_on_bits(self) -> bool:
        """Whether the fitted model took its training input as it was because it was 0/1 (not
        because ``booleanizer="none"`` asked for that)."""
        return self.booleanizer == "auto" and self._encoder() is None

    def _n_bits(self) -> int:
        """The features the automata see: the encoded bits, or the input features."""
        encoder = self._encoder()
        return int(encoder.n_bits if encoder is not None else self.n_features_in_)

    def _learn_encoder(self, X):
        """The encoder of ``booleanizer`` for training input ``X`` (None: the bits as they are)."""
        if self.booleanizer == "none" or _all_binary(X):
            return None
        _check_finite(X)
        return Thermometer.learn(X if _is_sparse(X) else to_backend(X, "numpy"), int(self.max_bits))

    # -- training --------------------------------------------------------------------------

    def _encode(self, y):
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        bad = self.classes_[idx] != y
        if np.any(bad):
            raise ValueError(f"y: label {y[np.argmax(bad)]!r} is not among classes_ {list(self.classes_)}")
        return idx.astype(np.int64)

    def _sizes(self, n_samples: int, n_classes: int) -> tuple[int, int, float]:
        """``(n_clauses, threshold, specificity)``: the parameters, "auto" ones picked from
        the training set's size (see the class docstring)."""
        clauses = self.n_clauses
        if isinstance(clauses, str):
            cap = min(2000, 16_000 // (1 if self.coalesced else n_classes))
            clauses = 2 * int(round(min(max(14.0 * np.sqrt(n_samples), 20.0), max(cap, 20)) / 2))
        threshold = self.threshold
        if isinstance(threshold, str):
            threshold = max(1, int(round(_auto_margin(n_classes, self.coalesced) * clauses)))
        specificity = 3.0 if isinstance(self.specificity, str) else float(self.specificity)
        return int(clauses), int(threshold), specificity

    def _start(self, classes, n_features, encoder=None, n_samples=1):
        self._check_params()
        classes = np.unique(np.asarray(classes))
        if len(classes) < 2:
            raise ValueError(f"y: need at least 2 classes, got {len(classes)} class(es)")
        self.classes_ = classes
        self._state_layout = (bool(self.coalesced), int(self.state_bits))
        self.n_clauses_, self.threshold_, self.specificity_ = self._sizes(int(n_samples), len(classes))
        self.n_features_in_ = int(n_features)
        self.thermometer_ = encoder
        self.seed_ = int(self.seed) if self.seed is not None else int(np.random.SeedSequence().entropy % 2**63)
        self.epochs_ = 0
        cfg = self._config()
        _check_state_fits(cfg)
        action, lower, weights = _core.tsetlin_initial_state(cfg)
        cfg = self._config()
        banks = 1 if cfg["coalesced"] else cfg["n_classes"]
        lw = 2 * ((cfg["n_features"] + 63) // 64)
        self.action_ = action.reshape(banks, cfg["n_clauses"], lw)
        self.lower_ = lower.reshape(banks, cfg["n_clauses"], lw, cfg["state_bits"] - 1)
        self.weights_ = weights.reshape(banks * cfg["n_clauses"], -1) if cfg["coalesced"] else weights.reshape(banks, cfg["n_clauses"])

    def _training_docs(self, X, encoder, backend):
        """``(docs, target)``: the documents of intake ``X`` for the backend training runs on
        (``device``; "auto" follows X), on the host for the Rust kernels."""
        target = self._target_backend(backend)
        docs = _docs(X, encoder, backend, self.booleanizer == "auto" and encoder is None)
        return (_on_host(docs) if target == "numpy" else docs), target

    def _epoch(self, docs, y_idx, n, target="numpy", rows=None):
        """One pass in a random order over the documents, or over ``rows`` of them."""
        if rows is None:
            order = np.random.default_rng([self.seed_, self.epochs_]).permutation(n).astype(np.int64)
        else:
            order = rows[np.random.default_rng([self.seed_, self.epochs_]).permutation(len(rows))].astype(np.int64)
        if target == "numpy":
            self._own_state()
        # Both backends replay the same counter-based streams: the same model bit for bit.
        kernels(target).tsetlin_train_epoch(self._config(), self.action_, self.lower_, self.weights_, docs,
                                            y_idx, order, self.epochs_, self._n_jobs())
        self.epochs_ += 1

    def _own_state(self):
        """Training changes the state arrays in place: read-only ones (a model memory-mapped by
        ``joblib.load(..., mmap_mode="r")``) are copied first."""
        for name in ("action_", "lower_", "weights_"):
            state = getattr(self, name)
            if isinstance(state, np.ndarray) and not (state.flags.writeable and state.flags.c_contiguous):
                setattr(self, name, np.array(state, order="C", copy=True))

    def _frozen(self):
        """A copy that prediction can read while this model trains on: training changes the
        arrays in place, so the copy holds its own include bits and weights (lazy dask results
        are the model as it was when they were made). The lower state planes, which only
        training reads, are left out."""
        frozen = copy.copy(self)
        frozen.action_, frozen.weights_ = self.action_.copy(), self.weights_.copy()
        frozen.lower_ = np.zeros((0,), dtype=np.uint64)
        return frozen

    @_serialised
    def fit(self, X, y, epochs=None, *, validation_data=None, progress_bar=True):
        """Train from scratch; returns self.

        ``epochs=N`` makes exactly N passes over (X, y). Without it, training stops early: a
        stratified ``validation_fraction`` of (X, y) is held out (or ``validation_data`` is
        used, and all of (X, y) trains), and training runs until the validation accuracy has
        not improved for ``n_iter_no_change`` epochs, reaches 1.0, or ``max_epochs`` have run;
        the model of the best epoch is kept (``best_epoch_``, and ``epochs_`` equals it). When
        the held-out part would hold fewer than 20 documents per class on average (or a class
        has a single document), nothing is held out: all of (X, y) trains for
        ``min(max_epochs, 25)`` epochs.

        ``validation_data=(X_val, y_val)`` shows the validation accuracy on the progress bar
        (one bar step per epoch; FASTCORE_AD_PROGRESS=0 or ``progress_bar=False`` silences it).
        ``history_`` records every epoch's seconds and validation accuracy.

        Interrupted (Ctrl-C, or an error between epochs) while stopping early, the model is left
        at the best epoch seen so far (``best_epoch_``) and the interrupt goes on; with
        ``epochs=N`` it is left after the last whole epoch.
        """
        check_switch(progress_bar, "progress_bar")
        X, n, f, backend = _intake(X)
        y = _checked_y(y, n)
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer))
                                   or epochs < 1):
            raise ValueError(f"epochs: must be a positive integer or None (stop early), got {epochs!r}")
        self._check_params()
        if validation_data is not None:
            _check_validation_data(validation_data, f, y)  # before training replaces the current model
        encoder = self._learn_encoder(X)
        docs, target = self._training_docs(X, encoder, backend)
        classes, y_idx = np.unique(y, return_inverse=True)
        y_idx = y_idx.astype(np.int64)
        train_rows = monitor = None
        if epochs is None and validation_data is None:
            train_rows, held_out = _holdout(y_idx, float(self.validation_fraction), self.seed)
            if held_out is None:
                # Too few documents to hold out: all of them train, for a fixed count.
                epochs = min(int(self.max_epochs), _EPOCHS_WITHOUT_HOLDOUT)
            else:
                monitor = (_take_rows(X, held_out), y[held_out])
        elif epochs is None:
            monitor = validation_data
        n_train = n if train_rows is None else len(train_rows)
        self._start(classes, f, encoder, n_samples=n_train)
        self.history_ = []
        total = int(self.max_epochs) if epochs is None else int(epochs)
        bar = progress(range(total), total=total, desc="Tsetlin epochs", enabled=progress_bar)
        best, best_state, since_best = -1.0, None, 0
        try:
            for _ in bar:
                start = time.perf_counter()
                self._epoch(docs, y_idx, n, target, train_rows)
                entry = {"epoch": self.epochs_, "seconds": time.perf_counter() - start}
                watched = validation_data if epochs is not None else monitor
                if watched is not None:
                    entry["val_accuracy"] = self.score(*watched)
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(val_acc=f"{entry['val_accuracy']:.4f}")
                self.history_.append(entry)
                if epochs is not None:
                    continue
                if entry["val_accuracy"] > best:
                    best, since_best = entry["val_accuracy"], 0
                    best_state = (self.epochs_, self.action_.copy(), self.lower_.copy(), self.weights_.copy())
                else:
                    since_best += 1
                if since_best >= int(self.n_iter_no_change) or best == 1.0:
                    break
        finally:
            # Also on Ctrl-C or an error between epochs: the model is the best one seen so far.
            if hasattr(bar, "close"):
                bar.close()
            if best_state is not None:
                self.epochs_, self.action_, self.lower_, self.weights_ = best_state
            self.best_epoch_ = int(self.epochs_)
        return self

    @_serialised
    def partial_fit(self, X, y, classes=None):
        """One pass over (X, y), continuing from the current state (online learning).

        The first call needs ``classes`` (all labels that will ever appear) unless ``y`` holds
        them all already. The first call also learns the thermometer encoding (``booleanizer``).
        """
        first = not self.__sklearn_is_fitted__()
        X, n, f, backend = _intake(X, None if first else self.n_features_in_)
        y = _checked_y(y, n)
        if classes is not None:
            given = np.asarray(classes)
            if given.ndim != 1:
                raise ValueError(f"classes: expected a 1-D list of labels, got shape {given.shape}")
            classes = np.unique(checked_labels(given, "classes"))
        if first:
            self._check_params()
            unknown = np.zeros(0, dtype=bool) if classes is None else ~np.isin(y, classes)
            if unknown.any():
                # Checked before anything is set, so a refused first call leaves the model unfitted.
                raise ValueError(f"y: label {y[unknown][0]!r} is not among classes {list(classes)}")
        else:
            self._check_params()
            self._check_layout_unchanged()
            if classes is not None and not np.array_equal(classes, self.classes_):
                raise ValueError("classes: differ from the classes of the first partial_fit call")
        encoder = self._learn_encoder(X) if first else self._encoder()
        docs, target = self._training_docs(X, encoder, backend)
        if first:
            self._start(y if classes is None else classes, f, encoder, n_samples=n)
            self.history_ = []
        self._epoch(docs, self._encode(y), n, target)
        return self

    # -- prediction ------------------------------------------------------------------------

    @_serialised
    def class_sums(self, X):
        """Raw class sums ``[n_samples, n_classes]`` (int64, unclamped): the summed signed
        weights of the clauses that fire (empty clauses never fire at prediction).

        A dask ``X`` (dense or scipy.sparse CSR chunks along the rows; chunks split across
        columns are joined per row block) gives a lazy dask array, the model sent once per worker
        (so do ``decision_function`` and ``predict``); training stays on one machine."""
        self._check_fitted()
        if is_dask(X):
            from . import _distributed  # noqa: PLC0415

            if X.ndim == 2 and X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but TsetlinMachine is expecting "
                                 f"{self.n_features_in_} features as input")
            return _distributed.map_method(self._frozen(), "class_sums", X, len(self.classes_), np.int64)
        X, n, _, backend = _intake(X, self.n_features_in_)
        docs = _docs(X, self._encoder(), backend, self._fitted_on_bits())
        target = self._target_backend(backend)
        if isinstance(docs, tuple) and target != "numpy":
            docs = _csr_to_packed(docs, n, self._n_bits())
        docs = docs if isinstance(docs, tuple) else to_backend(docs, target)
        sums = kernels(target).tsetlin_class_sums(self._config(), self.action_, self.weights_, docs, self._n_jobs())
        return to_backend(sums[:, : len(self.classes_)], backend)

    def _scores(self, X):
        return self.class_sums(X)

    @_serialised
    def clause_outputs(self, X):
        """Prediction-time clause outputs ``[n_samples, banks, n_clauses]`` (uint8)."""
        self._check_fitted()
        X, n, _, backend = _intake(X, self.n_features_in_)
        docs = _on_host(_docs(X, self._encoder(), backend, self._fitted_on_bits()))  # outputs come from the CPU kernel
        out = _core.tsetlin_clause_outputs(self._config(), self.action_, docs, self._n_jobs())
        return out.reshape(n, self.action_.shape[0], self.action_.shape[1])

    # -- interpretability ------------------------------------------------------------------

    def _clause_literals(self):
        """Per bank and clause, the included literals as a list of (bit, negated); a bit is a
        feature, or under a thermometer encoding one ``feature > threshold`` test."""
        f = self._n_bits()
        banks, clauses, lw = self.action_.shape
        fw = lw // 2
        bits = np.unpackbits(self.action_.astype("<u8").view(np.uint8), axis=-1, bitorder="little")
        bits = bits.reshape(banks, clauses, lw * 64)
        positive = bits[:, :, :f]
        negated = bits[:, :, fw * 64: fw * 64 + f]
        out = []
        for b in range(banks):
            row = []
            for c in range(clauses):
                lits = [(int(j), False) for j in np.flatnonzero(positive[b, c])]
                lits += [(int(j), True) for j in np.flatnonzero(negated[b, c])]
                row.append(tuple(lits))
            out.append(row)
        return out

    def rules(self, feature_names=None, class_names=None):
        """Every non-empty clause as a :class:`Rule`, sorted by weight (largest first).

        With ``coalesced=True`` a clause yields one rule per class whose weight is non-zero.
        Summing the weights of the rules that fire for a document gives exactly
        ``class_sums`` for it.
        """
        self._check_fitted()
        feature_names = _checked_names(feature_names, self.n_features_in_)
        class_names = _checked_class_names(class_names, len(self.classes_))
        literals = self._clause_literals()
        encoder = self._encoder()
        rules = []
        clauses = self.action_.shape[1]
        for k, label in enumerate(self.classes_):
            name = class_names[k] if class_names is not None else None
            for c in range(clauses):
                if self._layout()[0]:
                    lits, w = literals[0][c], int(self.weights_[c, k])
                else:
                    lits, w = literals[k][c], int(self.weights_[k, c])
                if not lits or w == 0:
                    continue
                if encoder is None:
                    rules.append(Rule(label, w, lits, c, feature_names, name, n_features=self.n_features_in_))
                    continue
                tests = [encoder.literal(bit) for bit, _ in lits]
                rules.append(Rule(label, w, tuple((j, neg) for (j, _), (_, neg) in zip(tests, lits)), c,
                                  feature_names, name, tuple(t for _, t in tests), self.n_features_in_))
        rules.sort(key=lambda r: -r.weight)
        return rules

    def explain(self, x, feature_names=None, class_names=None):
        """Why one document gets its prediction: the rules that fire and the class sums.

        Returns ``{"prediction": label, "class_sums": {label: int}, "rules": [Rule, ...]}``.
        """
        self._check_fitted()
        if _is_sparse(x):
            x = x.tocsr()
            if x.shape[0] != 1:
                raise ValueError(f"x: expected one document, got {x.shape[0]} rows")
        else:
            x = np.asarray(x)
            if x.ndim == 1:
                x = x[None, :]
            if x.ndim != 2 or x.shape[0] != 1:
                raise ValueError(f"x: expected one document (1-D), got shape {x.shape}")
        outputs = self.clause_outputs(x)[0]
        sums = self.class_sums(x)[0]
        fired = []
        for rule in self.rules(feature_names, class_names):
            bank = 0 if self._layout()[0] else int(np.searchsorted(self.classes_, rule.class_label))
            if outputs[bank, rule.clause]:
                fired.append(rule)
        return {
            "prediction": self.classes_[int(np.argmax(sums))],
            "class_sums": {label: int(s) for label, s in zip(self.classes_, sums)},
            "rules": fired,
        }

    # -- persistence -----------------------------------------------------------------------

    @_serialised
    def save(self, path):
        """Write the model to ``path`` (.npz, no pickle inside).

        Format (version ``FORMAT_VERSION``): a numpy ``.npz`` archive with
        ``format`` (str ``"fastcore_ad.tsetlin"``), ``version`` (int), ``meta`` (JSON: the
        constructor parameters, ``n_features_in_``, ``seed_``, ``epochs_`` and the labels if
        they are not a plain numeric/str array), ``action`` uint64 ``[banks, clauses, 2*fw]``
        (include bits; literal j < n is feature j, literal fw*64 + j its negation),
        ``lower`` uint64 ``[banks, clauses, 2*fw, state_bits-1]`` (lower bit planes, least
        significant first), ``weights`` int32 (``[classes, clauses]``, or ``[clauses, classes]``
        when coalesced), ``classes`` (when numeric or str) and, for a thermometer-encoded model
        (version 2), ``threshold_counts`` int64 ``[n_features_in_]`` and ``thresholds`` float64
        (each feature's increasing thresholds in turn; the bits, and so the literals, are
        numbered in that order).
        """
        self._check_fitted()
        params = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self.get_params(deep=False).items()}
        params["coalesced"], params["state_bits"] = self._layout()  # the layout of the arrays written
        meta = {"params": params, "n_features_in_": int(self.n_features_in_), "seed_": int(self.seed_),
                "epochs_": int(self.epochs_), "n_clauses_": int(self.n_clauses_), "threshold_": int(self.threshold_),
                "specificity_": float(self.specificity_)}
        arrays = {"action": self.action_, "lower": self.lower_, "weights": self.weights_}
        encoder = self._encoder()
        if encoder is not None:
            arrays.update(thresholds=encoder.thresholds, threshold_counts=encoder.counts)
            # As for the layout: the encoder written is the one fit learnt, whatever set_params
            # has asked of the next fit since.
            params["booleanizer"] = "auto"
            params["max_bits"] = max(int(params["max_bits"]), int(encoder.counts.max(initial=1)))
        if self.classes_.dtype.kind in "biufU":
            arrays["classes"] = self.classes_
        else:
            try:
                meta["classes"] = [c.item() if isinstance(c, np.generic) else c for c in self.classes_.tolist()]
                json.dumps(meta["classes"])
            except TypeError as exc:
                raise TypeError("save: class labels must be numbers or strings to be saved without pickle; "
                                "use pickle for other label types") from exc
        with open(os.fspath(path), "wb") as fh:
            np.savez(fh, format=np.array(_FORMAT_NAME), version=np.array(FORMAT_VERSION),
                     meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`.

        The file is untrusted: nothing is unpickled; arrays must be stored uncompressed, as
        ``save`` writes them, each holding exactly the bytes its header declares, and every
        declared shape and dtype is checked against the model's parameters (and the memory they
        imply against what is available) before any array is read, so a small file cannot
        inflate to gigabytes. The contents are validated too: seed, epoch count and sizes in
        range, finite integer weights with each clause's polarity (even clauses >= 1, odd ones
        <= -1 per class), unique class labels in increasing order, no include bits past
        ``n_features``, finite thresholds increasing within each feature. Any defect is a
        ValueError naming the file (a MemoryError, naming it, for a model too large to hold).
        """
        try:
            return cls._load_checked(path)
        except ValueError as exc:
            if str(exc).startswith(f"{path}: "):
                raise
            raise ValueError(f"{path}: not a readable Tsetlin Machine file ({exc})") from None
        except _UNREADABLE_NPZ as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise ValueError(f"{path}: not a readable Tsetlin Machine file ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _load_checked(cls, path):
        headers = _npz_headers(path)
        with np.load(os.fspath(path), allow_pickle=False) as z:
            for key in ("format", "version", "meta"):
                if key not in headers or int(np.prod(headers[key][0])) > 1 << 20:
                    raise ValueError(f"{path}: not a fastcore_ad Tsetlin Machine file")
            if str(z["format"]) != _FORMAT_NAME:
                raise ValueError(f"{path}: not a fastcore_ad Tsetlin Machine file")
            if headers["version"][0] != () or headers["version"][1].kind not in "iu":
                raise ValueError(f"{path}: the format version must be one integer")
            version = int(z["version"])
            if version < 1:
                raise ValueError(f"{path}: format version {version} is not a version")
            if version > FORMAT_VERSION:
                raise ValueError(f"{path}: format version {version} is newer than this library's {FORMAT_VERSION}")
            meta = json.loads(str(z["meta"]))
            if not isinstance(meta, dict) or not isinstance(meta.get("params"), dict):
                raise ValueError(f"{path}: model metadata is not a dict of parameters")
            model = cls(**meta["params"])
            model._check_params()
            model._state_layout = (bool(model.coalesced), int(model.state_bits))
            model.n_features_in_ = meta["n_features_in_"]
            model.seed_ = meta["seed_"]
            model.epochs_ = meta["epochs_"]
            for name, high in (("seed_", 2**64 - 1), ("epochs_", 2**63 - 1)):
                value = getattr(model, name)
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
                    raise ValueError(f"{path}: {name} must be an integer in [0, {high}], got {value!r}")
            model._load_sizes(path, meta)
            if isinstance(model.n_features_in_, bool) or not isinstance(model.n_features_in_, int) or \
                    not 1 <= model.n_features_in_ <= 1 << 31:
                raise ValueError(f"{path}: n_features_in_ must be a positive integer")
            if "classes" in headers:
                classes_shape, classes_dtype = headers["classes"]
                if len(classes_shape) != 1 or not 2 <= classes_shape[0] <= 1 << 20 or classes_dtype.kind not in "biufU":
                    raise ValueError(f"{path}: classes must be a 1-D array of at least 2 labels")
                model.classes_ = z["classes"]
            else:
                model.classes_ = np.array(meta["classes"], dtype=object)
            classes = model.classes_
            if classes.ndim != 1 or len(classes) < 2 or len(set(classes.tolist())) != len(classes):
                raise ValueError(f"{path}: classes must be 1-D, unique, at least 2 labels")
            try:
                ordered = np.array_equal(np.unique(classes), classes)
            except TypeError:
                ordered = False
            if not ordered:
                # Labels are looked up by binary search: class k's bank is the k-th smallest label.
                raise ValueError(f"{path}: classes must be in increasing order")
            model.classes_ = classes
            model.thermometer_ = _read_thermometer(path, z, headers, model)
            cfg = model._config()
            try:
                _check_state_fits(cfg)
            except MemoryError as exc:
                raise MemoryError(f"{path}: {exc}") from None
            banks = 1 if cfg["coalesced"] else cfg["n_classes"]
            lw = 2 * ((cfg["n_features"] + 63) // 64)
            expected = {"action": (banks, cfg["n_clauses"], lw),
                        "lower": (banks, cfg["n_clauses"], lw, cfg["state_bits"] - 1),
                        "weights": model._weights_shape(banks)}
            for key, shape in expected.items():
                if key not in headers or tuple(headers[key][0]) != shape:
                    got = headers.get(key, ((None,),))[0]
                    raise ValueError(f"{path}: array {key!r} has shape {tuple(got)}, the parameters need {shape}")
            for key in ("action", "lower"):
                if headers[key][1].kind not in "iu" or headers[key][1].itemsize != 8:
                    raise ValueError(f"{path}: array {key!r} must hold 64-bit words")
            if headers["weights"][1].kind not in "iuf":
                raise ValueError(f"{path}: weights must be numbers")
            # A cast, not a view: a big-endian file's words must be converted, not reread.
            action = np.asarray(z["action"]).astype(np.uint64)
            lower = np.asarray(z["lower"]).astype(np.uint64)
            weights = np.asarray(z["weights"])
        if weights.dtype.kind == "f" and not (np.isfinite(weights).all() and (weights == np.round(weights)).all()):
            raise ValueError(f"{path}: weights must be finite integers")
        if weights.size and (weights.min() < -(2**31) or weights.max() > 2**31 - 1):
            raise ValueError(f"{path}: weights outside the int32 range")
        if not cfg["coalesced"] and ((weights[:, 0::2] < 1).any() or (weights[:, 1::2] > -1).any()):
            # A class's even clauses vote for it and its odd ones against, weights never below 1.
            raise ValueError(f"{path}: weights must be >= 1 on even clauses and <= -1 on odd ones")
        padding = _padding_mask(cfg["n_features"])
        fw = lw // 2
        if padding is not None and ((action[..., fw - 1] & padding).any() or (action[..., lw - 1] & padding).any()):
            raise ValueError(f"{path}: include bits past n_features={cfg['n_features']}")
        model.action_ = np.ascontiguousarray(action, dtype=np.uint64)
        model.lower_ = np.ascontiguousarray(lower, dtype=np.uint64)
        model.weights_ = np.ascontiguousarray(weights, dtype=np.int32)
        model.history_ = []
        return model

    def _load_sizes(self, path, meta):
        """The sizes a saved model trained with: recorded ones (files since "auto" sizes), else
        the parameters themselves, checked like parameters."""
        for name, kind in (("n_clauses", int), ("threshold", int), ("specificity", float)):
            value = meta.get(name + "_", getattr(self, name))
            if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
                raise ValueError(f"{path}: {name} must be a number, got {value!r}")
            setattr(self, name + "_", kind(value))
        if self.n_clauses_ < 1 or (not self.coalesced and self.n_clauses_ % 2) or \
                not 1 <= self.threshold_ <= _MAX_THRESHOLD or \
                not (np.isfinite(self.specificity_) and self.specificity_ >= 1.0):
            raise ValueError(f"{path}: n_clauses_, threshold_ or specificity_ out of range")

    def _weights_shape(self, banks) -> tuple:
        """The shape of ``weights_``: ``[banks * n_clauses, n_classes]`` coalesced, else ``[banks, n_clauses]``."""
        cfg = self._config()
        if cfg["coalesced"]:
            return (banks * cfg["n_clauses"], cfg["n_classes"])
        return (banks, cfg["n_clauses"])


class TsetlinEnsemble(_ScoredClassifier, FastcoreEstimator):
    """Independent Tsetlin Machines voting together: ``n_estimators`` copies of ``estimator``
    (a :class:`TsetlinMachine`; default ``TsetlinMachine()``), trained on the same data with the
    seeds ``s, s + 1, ...`` (``s`` the estimator's ``seed``, drawn once when it is None). Each
    machine's class sums are divided by its threshold T, so every machine has the same say, and
    added: ``votes`` gives them, ``predict`` the class with the largest.

    One machine's accuracy varies with its seed (on MTSamples 0.856-0.881 over five seeds);
    the vote of five is steadier and higher: +0.65 points in 5-fold cross-validation on the
    MTSamples training split and 0.8864 against 0.8704 on average for its members on the test
    split; Ohsumed 0.6300 against 0.6164 (``bench/RESULTS.md``). Training, prediction and memory
    cost ``n_estimators`` machines.

    ``features_per_machine`` (None: every feature; an integer count; or a fraction in (0, 1],
    ``max(1, int(fraction x n_features))``) gives each machine its own random columns, drawn from
    its seed (``feature_subsets_``): weaker machines that err less alike, a random-subspace vote.
    On IMDb, machines on half of a 10,000-term vocabulary score about 0.857 alone, and twelve
    of them vote 0.8990 against 0.8961 for ten machines on the 5,000 best terms. Rules and
    ``explain`` speak of the columns of X.

    >>> import numpy as np
    >>> from fastcore_ad.tsetlin import TsetlinEnsemble, TsetlinMachine
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 2, size=(400, 8), dtype=np.uint8)
    >>> y = X[:, 0] & ~X[:, 1] & 1
    >>> vote = TsetlinEnsemble(TsetlinMachine(20, 10, 3.0, seed=1), n_estimators=3).fit(X, y, epochs=10)
    >>> vote.score(X, y) > 0.95
    True
    >>> [m.seed for m in vote.estimators_]
    [1, 2, 3]
    >>> half = TsetlinEnsemble(TsetlinMachine(20, 10, 3.0, seed=1), 3, features_per_machine=0.5)
    >>> [len(cols) for cols in half.fit(X, y, epochs=1).feature_subsets_]
    [4, 4, 4]
    """

    _fitted_attribute = "estimators_"

    def __init__(self, estimator=None, n_estimators=5, features_per_machine=None):
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.features_per_machine = features_per_machine

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.non_deterministic = self.estimator is None or self.estimator.seed is None
        # Machines on a part of two features (scikit-learn's checks) each see one.
        tags.classifier_tags.poor_score = self.features_per_machine is not None
        return tags

    def _check_params(self):
        if self.estimator is not None and not isinstance(self.estimator, TsetlinMachine):
            raise TypeError(f"estimator: expected a TsetlinMachine or None, got {type(self.estimator).__name__}")
        _check_n_estimators(self.n_estimators)
        _check_features_per_machine(self.features_per_machine)
        template = TsetlinMachine() if self.estimator is None else self.estimator
        template._check_params()
        return template

    def _members(self):
        """The first seed and unfitted copies of the estimator with the seeds ``s, s + 1, ...``
        (modulo 2**64)."""
        template = self._check_params()
        base = template.seed
        base = int(np.random.SeedSequence().entropy % 2**63) if base is None else int(base)
        return base, [clone(template).set_params(seed=(base + i) % 2**64) for i in range(int(self.n_estimators))]

    def fit(self, X, y, epochs=None, *, validation_data=None, progress_bar=True):
        """Fit every machine on (X, y) with :meth:`TsetlinMachine.fit`'s arguments (without
        ``epochs`` each stops early on its own held-out split, drawn from its own seed); returns
        self. The machines are in ``estimators_``."""
        check_switch(progress_bar, "progress_bar")
        base, members = self._members()
        width, subsets = self._draw_subsets(X, base)
        bar = progress(members, total=len(members), desc="Tsetlin machines",
                       enabled=progress_bar and len(members) > 1)
        fitted = []
        for i, m in enumerate(bar):
            held = validation_data
            if subsets is not None and validation_data is not None:
                held = (_columns(validation_data[0], subsets[i], "validation_data"), validation_data[1])
            fitted.append(m.fit(_columns(X, _subset(subsets, i), "X"), y, epochs, validation_data=held,
                                progress_bar=progress_bar))
            if len(fitted) == 1 and len(members) > 1:
                _check_members_fit(m, len(members))
        if hasattr(bar, "close"):
            bar.close()
        # Set together, only once every machine has fitted: a failed fit keeps the previous vote.
        self._adopt(fitted, base, width, subsets)
        return self

    def partial_fit(self, X, y, classes=None):
        """One pass of every machine over (X, y) (:meth:`TsetlinMachine.partial_fit`),
        continuing from their current states; the first call starts the machines from the seeds
        ``s, s + 1, ...`` and needs ``classes`` unless ``y`` holds every label. Returns self.

        A first call that fails leaves the ensemble as it was. A later call interrupted between
        machines (an exception, Ctrl-C) leaves the first machines one pass ahead of the others;
        such an ensemble still votes, but refuses further ``partial_fit`` calls until ``fit``.

        >>> import numpy as np
        >>> from fastcore_ad.tsetlin import TsetlinEnsemble, TsetlinMachine
        >>> X = np.random.default_rng(0).integers(0, 2, size=(400, 8), dtype=np.uint8)
        >>> y = X[:, 0] & ~X[:, 1] & 1
        >>> vote = TsetlinEnsemble(TsetlinMachine(20, 10, 3.0, seed=1), n_estimators=2)
        >>> for _ in range(10):
        ...     vote = vote.partial_fit(X, y, classes=[0, 1])
        >>> vote.score(X, y) > 0.95
        True
        """
        first = not self.__sklearn_is_fitted__()
        if first:
            base, members = self._members()
            width, subsets = self._draw_subsets(X, base)
            passes = [0] * len(members)
        else:
            members, base, subsets = self.estimators_, self.seed_, self.feature_subsets_
            if subsets is not None:
                _check_fitted_width(self, X)
            passes = list(getattr(self, "_passes", [0] * len(members)))
            if len(set(passes)) > 1:
                behind = passes.index(min(passes))
                raise RuntimeError(f"partial_fit: an earlier call was interrupted after machine {behind - 1}, "
                                   f"so machines {behind}-{len(members) - 1} are one pass behind; call fit "
                                   f"to start again")
            self._passes = passes  # counted as it goes, for the next call should this one stop part way
        for i, m in enumerate(members):
            m.partial_fit(_columns(X, _subset(subsets, i), "X"), y, classes)
            passes[i] += 1
            if first and i == 0 and len(members) > 1:
                _check_members_fit(m, len(members))
        if first:
            self._adopt(members, base, width, subsets)
            self._passes = passes
        return self

    def _adopt(self, machines, base, width, subsets):
        self.estimators_, self.seed_ = machines, base
        self.classes_ = machines[0].classes_
        self.n_features_in_ = machines[0].n_features_in_ if subsets is None else width
        self.feature_subsets_ = subsets
        self._passes = [0] * len(machines)

    def _draw_subsets(self, X, base):
        """``(width of X, the sorted columns of each machine)``; the columns are None when every
        machine reads every feature. Each machine's columns come from its own seed, so a saved
        ensemble needs only the seeds to recover them."""
        if self.features_per_machine is None:
            return None, None
        width = _width(X, "X")
        if width < 1:
            raise ValueError(f"X: 0 feature(s) (shape={(_n_rows(X), 0)}) while a minimum of 1 is required.")
        k = _subset_size(self.features_per_machine, width)
        return width, _feature_subsets(base, int(self.n_estimators), width, k)

    def votes(self, X):
        """The votes ``[n_samples, n_classes]`` (float64): every machine's class sums divided by
        its ``threshold_``, added. Lazy for dask input, cupy for cupy input, as the machines'."""
        self._check_fitted()
        subsets = getattr(self, "feature_subsets_", None)
        _check_fitted_width(self, X)  # here, so that the error names the ensemble
        votes = None
        for i, m in enumerate(self.estimators_):
            part = m.class_sums(_columns(X, _subset(subsets, i), "X")) / float(m.threshold_)
            votes = part if votes is None else votes + part
        return votes

    def _scores(self, X):
        return self.votes(X)

    def rules(self, feature_names=None, class_names=None):
        """Every machine's rules (:meth:`TsetlinMachine.rules`), heaviest first, each as
        ``(machine index, Rule)``; a rule's share of the vote is its weight over that machine's
        ``threshold_``."""
        self._check_fitted()
        subsets = getattr(self, "feature_subsets_", None)
        if subsets is None:
            out = [(i, r) for i, m in enumerate(self.estimators_) for r in m.rules(feature_names, class_names)]
        else:
            names = _checked_names(feature_names, self.n_features_in_)
            width = self.n_features_in_
            out = [(i, _global_rule(r, subsets[i], names, width)) for i, m in enumerate(self.estimators_)
                   for r in m.rules(None, class_names)]
        out.sort(key=lambda item: -item[1].weight / self.estimators_[item[0]].threshold_)
        return out

    def explain(self, x, feature_names=None, class_names=None):
        """Why one document gets its prediction: ``{"prediction": label, "votes": {label: float},
        "machines": [each machine's :meth:`TsetlinMachine.explain`]}``."""
        self._check_fitted()
        subsets = getattr(self, "feature_subsets_", None)
        if subsets is None:
            parts = [m.explain(x, feature_names, class_names) for m in self.estimators_]
        else:
            names = _checked_names(feature_names, self.n_features_in_)
            row = _one_document(x, self.n_features_in_)
            parts = [m.explain(row[:, subsets[i]], None, class_names) for i, m in enumerate(self.estimators_)]
            for part, cols in zip(parts, subsets):
                part["rules"] = [_global_rule(r, cols, names, self.n_features_in_) for r in part["rules"]]
        votes = {label: sum(p["class_sums"][label] / m.threshold_ for p, m in zip(parts, self.estimators_))
                 for label in self.classes_}
        best = max(votes.values())
        return {"prediction": next(label for label in self.classes_ if votes[label] == best),
                "votes": votes, "machines": parts}

    def save(self, path):
        """Write the ensemble to the folder ``path`` (created if needed): ``ensemble.json``
        (format name, version, the estimator's ``seed`` and ``seed_``) and one
        :meth:`TsetlinMachine.save` file per machine, ``machine_0.npz``, ``machine_1.npz``, ..."""
        self._check_fitted()
        os.makedirs(path, exist_ok=True)
        manifest_path = os.path.join(path, _ENSEMBLE_MANIFEST)
        if os.path.exists(manifest_path):
            os.remove(manifest_path)  # written last: a save cut short leaves no loadable half-ensemble
        for i, m in enumerate(self.estimators_):
            m.save(os.path.join(path, f"machine_{i}.npz"))
        seed = None if self.estimator is None else self.estimator.seed
        manifest = {"format": _ENSEMBLE_FORMAT, "version": 1, "n_estimators": len(self.estimators_),
                    "seed": None if seed is None else int(seed), "seed_": int(self.seed_)}
        if getattr(self, "feature_subsets_", None) is not None:
            fpm = self.features_per_machine
            manifest["features_per_machine"] = float(fpm) if isinstance(fpm, (float, np.floating)) else int(fpm)
            manifest["n_features_in"] = int(self.n_features_in_)
            manifest["feature_subsets_sha256"] = _subsets_digest(self.feature_subsets_)
        with open(manifest_path, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh)

    @classmethod
    def load(cls, path):
        """Read an ensemble written by :meth:`save`. The folder is untrusted: the manifest is
        small JSON checked field by field, each machine goes through :meth:`TsetlinMachine.load`
        (nothing unpickled, shapes checked before reading), and the machines must agree on their
        classes, input features and parameters (all but the seed); any defect is a ValueError
        naming the folder."""
        manifest_path = os.path.join(os.fspath(path), _ENSEMBLE_MANIFEST)
        try:
            with open(manifest_path, "rb") as fh:
                raw = fh.read(_MAX_MANIFEST_BYTES + 1)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no {_ENSEMBLE_MANIFEST} (not a saved TsetlinEnsemble)") from None
        except OSError as exc:  # a file where the folder should be, a manifest that is a folder, ...
            raise ValueError(f"{path}: not a saved TsetlinEnsemble folder ({type(exc).__name__}: {exc})") from None
        if len(raw) > _MAX_MANIFEST_BYTES:
            raise ValueError(f"{path}: {_ENSEMBLE_MANIFEST} is over {_MAX_MANIFEST_BYTES} bytes")
        try:
            manifest = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"{path}: {_ENSEMBLE_MANIFEST} is not JSON ({exc})") from None

        def field(name, low, high, optional=False):
            v = manifest.get(name) if isinstance(manifest, dict) else None
            if v is None and optional:
                return None
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise ValueError(f"{path}: {_ENSEMBLE_MANIFEST} field {name!r} must be an integer in "
                                 f"[{low}, {high}], got {v!r}")
            return v

        if not isinstance(manifest, dict) or manifest.get("format") != _ENSEMBLE_FORMAT:
            raise ValueError(f"{path}: not a saved TsetlinEnsemble (format {_ENSEMBLE_FORMAT!r} expected)")
        field("version", 1, 1)
        n = field("n_estimators", 1, _MAX_ESTIMATORS)
        seed, seed_ = field("seed", 0, 2**64 - 1, optional=True), field("seed_", 0, 2**64 - 1)
        fpm, width, subsets = manifest.get("features_per_machine"), None, None
        if fpm is not None:
            try:
                _check_features_per_machine(fpm)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}: {_ENSEMBLE_MANIFEST} field 'features_per_machine': {exc}") from None
            width = field("n_features_in", 1, 2**31 - 1)
        members = [_load_member(TsetlinMachine, path, f"machine_{i}.npz", n) for i in range(n)]
        first = members[0]
        if fpm is not None:
            try:
                k = _subset_size(fpm, width)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
            if first.n_features_in_ != k:
                raise ValueError(f"{path}: the machines read {first.n_features_in_} features, not the "
                                 f"{k} that features_per_machine={fpm!r} of {width} gives")
            subsets = _feature_subsets(seed_, n, width, k)
            if manifest.get("feature_subsets_sha256") != _subsets_digest(subsets):
                raise ValueError(f"{path}: the columns drawn from the seeds and n_features_in do not match "
                                 f"feature_subsets_sha256 (a changed or foreign manifest)")
        shared = {k: v for k, v in first.get_params().items() if k != "seed"}
        for i, m in enumerate(members):
            same = (np.array_equal(m.classes_, first.classes_) and m.n_features_in_ == first.n_features_in_
                    and {k: v for k, v in m.get_params().items() if k != "seed"} == shared)
            if not same or m.seed_ != (seed_ + i) % 2**64:
                raise ValueError(f"{path}: machine_{i}.npz does not belong with this ensemble (its classes, features "
                                 f"or parameters differ from machine_0.npz's, or its seed is not {(seed_ + i) % 2**64})")
        model = cls(TsetlinMachine(**shared, seed=seed), n_estimators=n, features_per_machine=fpm)
        model._adopt(members, seed_, width, subsets)
        return model


class TsetlinOneVsRest(_ScoredClassifier, FastcoreEstimator):
    """One binary Tsetlin Machine per class, "this class or not", each reading its own class's
    vocabulary: the ``features_per_class`` columns of X whose presence (``x != 0``) is most
    associated with the class by chi2 (scikit-learn's ``chi2`` of the presence bits against
    ``y == class``; ties go to the lower column, columns no document uses come last). A class's
    vote is its machine's margin, class sums divided by ``threshold_`` (``"class"`` minus
    ``"not class"``); ``predict`` takes the class with the largest vote.

    ``estimator`` is the binary model each class gets: a :class:`TsetlinMachine` (default
    ``TsetlinMachine()``, sized from the data) or a :class:`TsetlinEnsemble`. Class ``j``
    (of ``classes_``) gets the seed ``s + j`` (an ensemble of ``M`` machines the seeds
    ``s + j M, ..., s + j M + M - 1``), ``s`` the estimator's seed, drawn once when None.
    ``features_per_class`` None gives every class all columns; an integer K its K best;
    ``"auto"`` each class the columns whose chi2 exceeds 15.14 (significant at p < 0.0001; at
    least 10), so that larger corpora and more distinctive classes get more words: Ohsumed's
    classes (3,357 documents) read 179-378 of 12,883 words, 20 Newsgroups' (11,314) 1,425-6,244
    of 56,436. A number or "auto" needs finite, non-negative X (words, counts, tf-idf), as
    presence means nothing for signed values.

    Why: a multi-class machine reads one vocabulary for every class, and on corpora with many
    small classes a larger vocabulary adds more literals to sort out than signal. Giving each
    class a short list of its own words keeps every machine small and lets the classes together
    read a large vocabulary. On Ohsumed (23 classes) one machine per class on its 250 best words
    of the whole vocabulary scores 0.6423 against 0.6077 for the default multi-class machine, and
    five machines per class on their 500 best of words and count levels 0.6743, 0.3 below
    LinearSVC; on 20 Newsgroups 4,000 words per class give 0.8305 against 0.7861. With few
    classes it gains nothing (R8, MTSamples; ``bench/RESULTS.md``, "One machine per class").
    ``rules`` and ``explain`` speak of the columns of X.

    >>> import numpy as np
    >>> from fastcore_ad.tsetlin import TsetlinMachine, TsetlinOneVsRest
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 2, size=(600, 12), dtype=np.uint8)
    >>> y = np.where(X[:, 0] & ~X[:, 1] & 1, "a", np.where(X[:, 2] == 1, "b", "c"))
    >>> ovr = TsetlinOneVsRest(TsetlinMachine(20, 10, 3.0, seed=1), features_per_class=4)
    >>> ovr.fit(X, y, epochs=10).score(X, y) > 0.95
    True
    >>> [cols.tolist() for cols in ovr.feature_columns_]   # the words that decide each class
    [[0, 1, 3, 8], [0, 1, 2, 9], [0, 1, 2, 11]]
    >>> print(ovr.rules(feature_names=[f"w{j}" for j in range(12)])[0])
    IF w2 AND NOT w0 THEN b (weight 10)
    """

    _fitted_attribute = "estimators_"

    def __init__(self, estimator=None, features_per_class=None):
        self.estimator = estimator
        self.features_per_class = features_per_class

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        template = self.estimator
        machine = getattr(template, "estimator", None) if isinstance(template, TsetlinEnsemble) else template
        tags.non_deterministic = getattr(machine, "seed", None) is None
        return tags

    def _check_params(self):
        if self.estimator is not None and not isinstance(self.estimator, (TsetlinMachine, TsetlinEnsemble)):
            raise TypeError(f"estimator: expected a TsetlinMachine, a TsetlinEnsemble or None, "
                            f"got {type(self.estimator).__name__}")
        k = self.features_per_class
        if k is not None and not (isinstance(k, str) and k == "auto"):
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
                raise TypeError(f"features_per_class: expected None, an integer or 'auto', got {k!r}")
            if k < 1:
                raise ValueError(f"features_per_class: must be >= 1, got {k}")
        template = TsetlinMachine() if self.estimator is None else self.estimator
        template._check_params()
        return template

    def _members(self, n_classes):
        """The first seed and an unfitted copy of the estimator per class, seeded apart."""
        template = self._check_params()
        if isinstance(template, TsetlinEnsemble):
            inner = TsetlinMachine() if template.estimator is None else template.estimator
            base, step = inner.seed, int(template.n_estimators)
        else:
            inner, base, step = template, template.seed, 1
        base = int(np.random.SeedSequence().entropy % 2**63) if base is None else int(base)
        members = []
        for j in range(n_classes):
            seeded = clone(inner).set_params(seed=(base + j * step) % 2**64)
            members.append(seeded if template is inner else clone(template).set_params(estimator=seeded))
        return base, members

    def fit(self, X, y, epochs=None, *, validation_data=None, progress_bar=True):
        """Fit one binary model per class on (X[:, its columns], y == class), with
        :meth:`TsetlinMachine.fit`'s arguments (``validation_data`` as ``(X, y)`` with the labels
        of y); returns self. The models are in ``estimators_``, their columns in
        ``feature_columns_``."""
        self._check_params()
        check_switch(progress_bar, "progress_bar")
        X = _array_like(X, "X")
        width, n = _width(X, "X"), _n_rows(X)
        if n < 1 or width < 1:
            what = "sample(s)" if n < 1 else "feature(s)"
            raise ValueError(f"X: 0 {what} (shape={(n, width)}) while a minimum of 1 is required.")
        y = _checked_y(y, n)
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y: one class only ({classes[0]!r}); TsetlinOneVsRest needs at least 2 classes")
        held = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data: expected a pair (X, y)")
            Xv = _array_like(validation_data[0], "validation_data")
            yv = _checked_y(validation_data[1], _n_rows(Xv))
            unknown = np.setdiff1d(yv, classes)
            if len(unknown):
                raise ValueError(f"validation_data: labels {unknown[:5].tolist()} are not in y")
            held = (Xv, yv)
        columns = None
        if self.features_per_class is not None:
            k = self.features_per_class
            columns = _class_columns(X, y_idx, len(classes), k if isinstance(k, str) else min(int(k), width))
        base, members = self._members(len(classes))
        bar = progress(members, total=len(members), desc="Tsetlin one-vs-rest classes", enabled=progress_bar)
        fitted = []
        for j, m in enumerate(bar):
            cols = _subset(columns, j)
            member_held = None if held is None else (_columns(held[0], cols, "validation_data"),
                                                     (held[1] == classes[j]).astype(np.int64))
            fitted.append(m.fit(_columns(X, cols, "X"), (y == classes[j]).astype(np.int64), epochs,
                                validation_data=member_held, progress_bar=False))
            if j == 0:
                check_fits((len(members) - 1) * _kept_bytes(m), f"{len(members)} classes of "
                           f"{_kept_bytes(m) / 2**20:.3g} MiB each")
        if hasattr(bar, "close"):
            bar.close()
        # Set together once every class has fitted: a failed fit keeps the previous model.
        self.estimators_, self.seed_, self.classes_ = fitted, base, classes
        self.n_features_in_, self.feature_columns_ = width, columns
        return self

    def votes(self, X):
        """The votes ``[n_samples, n_classes]`` (float64): each class's margin, its model's
        ``"class"`` minus ``"not class"`` sums over ``threshold_`` (for an ensemble, its
        ``votes``). Lazy for dask input, cupy for cupy input."""
        self._check_fitted()
        X = _array_like(X, "X")
        _check_fitted_width(self, X)
        parts = []
        for j, m in enumerate(self.estimators_):
            v = _binary_votes(m, _columns(X, _subset(self.feature_columns_, j), "X"))
            parts.append(v[:, 1] - v[:, 0])
        if is_dask(parts[0]):
            import dask.array as da  # noqa: PLC0415

            return da.stack(parts, axis=1)
        return xp_of("cupy" if is_cupy(parts[0]) else "numpy").stack(parts, axis=1)

    def _scores(self, X):
        return self.votes(X)

    def rules(self, feature_names=None, class_names=None):
        """Every class model's rules read for the class: a rule of ``"class"`` keeps its weight,
        one of ``"not class"`` votes against the class and has its weight negated. Each is a
        :class:`Rule` over the columns of X whose ``class_label`` is the class, heaviest share
        of the vote (weight over its machine's ``threshold_``) first."""
        self._check_fitted()
        names = _checked_names(feature_names, self.n_features_in_)
        labels = _checked_class_names(class_names, len(self.classes_))
        scored = [(self._class_rule(rule, j, names, labels), threshold)
                  for j, m in enumerate(self.estimators_) for rule, threshold in _binary_rules(m)]
        return _by_share(scored)

    def explain(self, x, feature_names=None, class_names=None):
        """Why one document gets its prediction: ``{"prediction": label, "votes": {label: float},
        "rules": [the rules that fire, as :meth:`rules` gives them]}``."""
        self._check_fitted()
        names = _checked_names(feature_names, self.n_features_in_)
        labels = _checked_class_names(class_names, len(self.classes_))
        row = _one_document(x, self.n_features_in_)
        votes = np.asarray(self.votes(row))[0]
        fired = [(self._class_rule(rule, j, names, labels), threshold) for j, m in enumerate(self.estimators_)
                 for rule, threshold in _binary_rules(m, _columns(row, _subset(self.feature_columns_, j), "x"))]
        return {"prediction": self.classes_[int(np.argmax(votes))],
                "votes": {label: float(v) for label, v in zip(self.classes_, votes)},
                "rules": _by_share(fired)}

    def save(self, path):
        """Write the model to the folder ``path`` (created if needed): ``one_vs_rest.npz``
        (format name, version, JSON metadata, ``classes`` and, with ``features_per_class``,
        each class's ``columns`` one after another (int64) and their ``column_counts`` (int64
        ``[n_classes]``); no pickle inside) and each class's model, a
        :meth:`TsetlinMachine.save` file ``class_0.npz``, ... or a :meth:`TsetlinEnsemble.save`
        folder ``class_0``, ..."""
        self._check_fitted()
        classes = self.classes_
        if classes.dtype.kind == "O":  # strings or numbers held as objects (pandas) are saved as such
            plain = np.array(classes.tolist())
            classes = plain if plain.dtype.kind in "biufU" and np.array_equal(plain, classes) else classes
        if classes.dtype.kind not in "biufU":
            raise TypeError("save: class labels must be numbers or strings to be saved without pickle; "
                            "use pickle for other label types")
        os.makedirs(path, exist_ok=True)
        manifest_path = os.path.join(path, _OVR_MANIFEST)
        if os.path.exists(manifest_path):
            os.remove(manifest_path)  # written last: a save cut short leaves nothing loadable
        ensembles = isinstance(self.estimators_[0], TsetlinEnsemble)
        for j, m in enumerate(self.estimators_):
            m.save(os.path.join(path, f"class_{j}" if ensembles else f"class_{j}.npz"))
        template = self._check_params()
        seed = (template.estimator.seed if template.estimator is not None else None) if ensembles else template.seed
        k = self.features_per_class
        meta = {"seed": None if seed is None else int(seed), "seed_": int(self.seed_),
                "n_features_in": int(self.n_features_in_), "members": "ensemble" if ensembles else "machine",
                "features_per_class": k if k is None or isinstance(k, str) else int(k)}
        arrays = {"classes": classes}
        if self.feature_columns_ is not None:
            arrays["columns"] = np.concatenate(self.feature_columns_).astype(np.int64)
            arrays["column_counts"] = np.array([len(c) for c in self.feature_columns_], dtype=np.int64)
        with open(manifest_path, "wb") as fh:
            np.savez(fh, format=np.array(_OVR_FORMAT), version=np.array(2), meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`. The folder is untrusted: nothing is unpickled,
        array shapes are checked before reading, each class's model goes through its own
        ``load``, and the models must agree with the manifest (binary, columns, parameters and
        seeds); any defect is a ValueError naming the folder."""
        manifest_path = os.path.join(os.fspath(path), _OVR_MANIFEST)
        if not os.path.isfile(manifest_path):
            raise FileNotFoundError(f"{path}: no {_OVR_MANIFEST} (not a saved TsetlinOneVsRest)")
        try:
            headers = _npz_headers(manifest_path)
            small = all(k in headers and int(np.prod(headers[k][0])) <= 1 << 16 for k in ("format", "version", "meta"))
            if not small:
                raise ValueError("format, version or meta missing or oversized")
            with np.load(manifest_path, allow_pickle=False) as z:
                if str(z["format"]) != _OVR_FORMAT or int(z["version"]) != 2:
                    raise ValueError(f"format {_OVR_FORMAT!r} version 2 expected")
                meta = json.loads(str(z["meta"]))
                classes_shape, classes_dtype = headers.get("classes", ((), np.dtype(object)))
                if len(classes_shape) != 1 or not 2 <= classes_shape[0] <= 1 << 20 or \
                        classes_dtype.kind not in "biufU":
                    raise ValueError("classes must be a 1-D array of at least 2 numbers or strings")
                classes = z["classes"]
                columns = None
                if "columns" in headers or "column_counts" in headers:
                    shape, dtype = headers.get("column_counts", ((), None))
                    if dtype != np.dtype("<i8") or shape != (len(classes),):
                        raise ValueError(f"column_counts: int64 [{len(classes)}] expected, got {dtype} {shape}")
                    counts = z["column_counts"]
                    if counts.min() < 1 or counts.max() > 1 << 31:
                        raise ValueError("column_counts: every class reads between 1 and 2**31 columns")
                    shape, dtype = headers.get("columns", ((), None))
                    if dtype != np.dtype("<i8") or shape != (int(counts.sum()),):
                        raise ValueError(f"columns: int64 [{int(counts.sum())}] (the column_counts' sum) expected, "
                                         f"got {dtype} {shape}")
                    columns = np.split(z["columns"], np.cumsum(counts)[:-1])
        except _UNREADABLE_NPZ as exc:
            raise ValueError(f"{path}: {_OVR_MANIFEST} is not a saved TsetlinOneVsRest "
                             f"({type(exc).__name__}: {exc})") from None
        except ValueError as exc:
            raise ValueError(f"{path}: {_OVR_MANIFEST}: {exc}") from None
        if not isinstance(meta, dict) or meta.get("members") not in ("machine", "ensemble"):
            raise ValueError(f"{path}: {_OVR_MANIFEST} metadata must say whether the classes hold machines or ensembles")
        for name, low, high, optional in (("seed", 0, 2**64 - 1, True), ("seed_", 0, 2**64 - 1, False),
                                          ("n_features_in", 1, 2**31, False), ("features_per_class", 1, 2**31, True)):
            v = meta.get(name)
            if name == "features_per_class" and v == "auto":
                continue
            if not (v is None and optional) and (isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high):
                raise ValueError(f"{path}: {_OVR_MANIFEST} field {name!r} must be an integer in [{low}, {high}], "
                                 f"got {v!r}")
        if not np.all(classes[1:] > classes[:-1]):
            raise ValueError(f"{path}: the classes must be distinct and sorted, as fit leaves them")
        width, k = meta["n_features_in"], meta.get("features_per_class")
        lengths = None if columns is None else {len(c) for c in columns}
        if (k is None) != (columns is None) or (isinstance(k, int) and lengths != {min(k, width)}) or \
                (k == "auto" and max(lengths) > width):
            raise ValueError(f"{path}: the columns do not match features_per_class={k!r} of {width} features")
        if columns is not None and any(c[0] < 0 or c[-1] >= width or np.any(np.diff(c) <= 0) for c in columns):
            raise ValueError(f"{path}: each class's columns must be increasing, in [0, {width})")
        ensembles = meta["members"] == "ensemble"
        members = [_load_member(TsetlinEnsemble, path, f"class_{j}", len(classes)) if ensembles else
                   _load_member(TsetlinMachine, path, f"class_{j}.npz", len(classes)) for j in range(len(classes))]
        first = members[0]
        step = len(first.estimators_) if ensembles else 1

        def settings(m):
            machine = m.estimators_[0] if ensembles else m
            params = {key: v for key, v in machine.get_params().items() if key != "seed"}
            return params, (len(m.estimators_), m.features_per_machine) if ensembles else None

        for j, m in enumerate(members):
            reads = width if columns is None else len(columns[j])
            if (not np.array_equal(m.classes_, [0, 1]) or m.n_features_in_ != reads or settings(m) != settings(first)
                    or m.seed_ != (meta["seed_"] + j * step) % 2**64):
                raise ValueError(f"{path}: class_{j} does not belong with this model (binary 0/1 labels, "
                                 f"{reads} features, class_0's parameters and seed {meta['seed_']} + {j * step} expected)")
        params, vote = settings(first)
        machine = TsetlinMachine(**params, seed=meta["seed"])
        template = TsetlinEnsemble(machine, vote[0], vote[1]) if ensembles else machine
        model = cls(template, k)
        model.estimators_, model.seed_, model.classes_ = members, meta["seed_"], classes
        model.n_features_in_ = width
        model.feature_columns_ = columns
        return model

    def _class_rule(self, rule, j, names, labels):
        """A binary model's rule (over class j's columns) as a rule of class j over X."""
        cols = _subset(self.feature_columns_, j)
        literals = rule.literals if cols is None else tuple((int(cols[f]), neg) for f, neg in rule.literals)
        weight = rule.weight if rule.class_label == 1 else -rule.weight
        return dataclasses.replace(rule, class_label=self.classes_[j], weight=weight, literals=literals,
                                   feature_names=names, class_name=None if labels is None else labels[j],
                                   n_features=self.n_features_in_)


def _array_like(X, name):
    """X itself when it has a shape (numpy, scipy.sparse, cupy, dask), else as a numpy array."""
    if getattr(X, "shape", None) is not None:
        return X
    try:
        return np.asarray(X)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: not a 2-D array of numbers ({exc})") from None


def _load_member(cls, folder, name: str, listed: int):
    """One saved member of an ensemble or one-vs-rest folder; a missing one is a defect of the
    folder (its manifest lists it), a ValueError naming the folder."""
    try:
        return cls.load(os.path.join(os.fspath(folder), name))
    except FileNotFoundError:
        raise ValueError(f"{folder}: {name} is missing (the manifest lists {listed} members)") from None


def _class_columns(X, y_idx, n_classes, k):
    """Each class's ``k`` columns with the largest chi2 of presence against "this class", sorted;
    with ``k="auto"`` those above ``_SIGNIFICANT_CHI2`` (at least ``_MIN_CLASS_COLUMNS``)."""
    counts = _class_presence_counts(X, y_idx, n_classes)
    n = len(y_idx)
    per_class = np.bincount(y_idx, minlength=n_classes)
    total = counts.sum(axis=0)
    columns = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for j in range(n_classes):
            # scikit-learn's chi2 with the binary target: observed and expected counts of the
            # documents holding the term, "not class" row then "class" row, in its order of operations.
            inside = per_class[j] / n
            outside = (n - per_class[j]) / n
            expected_out, expected_in = outside * total, inside * total
            score = (total - counts[j] - expected_out) ** 2 / expected_out + (counts[j] - expected_in) ** 2 / expected_in
            score = np.where(np.isnan(score), -np.inf, score)
            keep = k
            if isinstance(k, str):
                keep = max(int(np.count_nonzero(score > _SIGNIFICANT_CHI2)), min(_MIN_CLASS_COLUMNS, len(score)))
            columns.append(np.sort(np.argsort(-score, kind="stable")[:keep]))
    return columns


def _class_presence_counts(X, y_idx, n_classes):
    """``[n_classes, n_features]`` float64: how many documents of each class have ``x != 0``.
    Presence ranks words and counts (and tf-idf); X must be finite and non-negative."""
    width = _width(X, "X")
    check_fits(n_classes * width * 8, f"per-class term counts of {n_classes} classes x {width} features")
    if is_dask(X):
        import dask.array as da  # noqa: PLC0415

        onehot = da.from_array(np.eye(n_classes)[y_idx], chunks=(X.chunks[0], n_classes))
        counts, low, finite = da.compute(onehot.T @ (X != 0).astype(np.float64), X.min(), da.isfinite(X).all())
        _check_presence_input(float(low), bool(finite))
        return np.asarray(counts)
    if _is_sparse(X):
        import scipy.sparse as sp  # noqa: PLC0415

        bits = X.tocsr().copy()
        values = bits.data
        bits.data = (values != 0).astype(np.float64)
        onehot = sp.csr_matrix((np.ones(len(y_idx)), (y_idx, np.arange(len(y_idx)))), shape=(n_classes, len(y_idx)))
        counts = np.asarray((onehot @ bits).todense(), dtype=np.float64)
    elif is_cupy(X):
        xp = xp_of("cupy")
        values = X
        counts = (xp.asarray(np.eye(n_classes)[y_idx]).T @ (X != 0).astype(np.float64)).get()
    else:
        values = np.asarray(X)
        counts = np.stack([np.count_nonzero(values[y_idx == j], axis=0)
                           for j in range(n_classes)]).astype(np.float64)
    if values.dtype.kind not in "biuf":
        raise ValueError(f"X: features_per_class ranks numbers, got dtype {values.dtype}")
    if values.size:
        xp = xp_of("cupy" if is_cupy(values) else "numpy")
        _check_presence_input(float(values.min()), bool(xp.isfinite(values).all()))
    return counts


def _check_presence_input(low, finite):
    if not finite:
        raise ValueError("X: contains NaN or infinity")
    if low < 0:
        raise ValueError(f"X: features_per_class ranks columns by presence (x != 0), for non-negative words, "
                         f"counts or tf-idf; X holds negative values (min {low:g})")


def _binary_votes(model, X):
    """A binary model's per-class scores over its threshold(s)."""
    if isinstance(model, TsetlinEnsemble):
        return model.votes(X)
    return model.class_sums(X) / float(model.threshold_)


def _binary_rules(model, x=None):
    """``(Rule, threshold of its machine)`` of a binary model, every rule or (given one document
    ``x``) those that fire."""
    machines = model.estimators_ if isinstance(model, TsetlinEnsemble) else [model]
    subsets = getattr(model, "feature_subsets_", None) if isinstance(model, TsetlinEnsemble) else None
    out = []
    for i, m in enumerate(machines):
        cols = _subset(subsets, i)
        if x is None:
            rules = m.rules()
        else:
            rules = m.explain(_columns(x, cols, "x"))["rules"]
        if cols is not None:
            rules = [_global_rule(r, cols, None, model.n_features_in_) for r in rules]
        out += [(r, m.threshold_) for r in rules]
    return out


def _by_share(rules_and_thresholds):
    """The rules, largest share of their machine's vote (weight over threshold) first."""
    return [rule for rule, t in sorted(rules_and_thresholds, key=lambda item: -item[0].weight / item[1])]


def _kept_bytes(model):
    machines = model.estimators_ if isinstance(model, TsetlinEnsemble) else [model]
    return sum(a.nbytes for m in machines for a in (m.action_, m.lower_, m.weights_))


def _check_members_fit(first, n_members):
    """MemoryError unless ``n_members - 1`` more machines the size of the fitted ``first`` fit:
    the first machine shows what each one keeps."""
    kept = _kept_bytes(first)
    check_fits((n_members - 1) * kept + first.action_.nbytes * 64 // 8,
               f"n_estimators={n_members} machines of {kept / 2**20:.3g} MiB each")


_SUBSET_STREAM = 0x5EB5  # keeps the column draws apart from the machines' own streams of the same seed


def _check_features_per_machine(value):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"features_per_machine: expected None, an integer or a fraction, got {type(value).__name__}")
    if isinstance(value, (int, np.integer)):
        if value < 1:
            raise ValueError(f"features_per_machine: must be >= 1, got {value}")
    elif not 0.0 < value <= 1.0:
        raise ValueError(f"features_per_machine: a fraction must lie in (0, 1], got {value}")


def _subset_size(value, width):
    """The number of columns each machine reads, of ``width``."""
    if isinstance(value, (int, np.integer)):
        if value > width:
            raise ValueError(f"features_per_machine: {value} is more than the {width} features of X")
        return int(value)
    return max(1, int(value * width))


def _feature_subsets(base, n_machines, width, k):
    """Machine i's sorted columns: ``k`` of ``width`` drawn without replacement from its seed."""
    return [np.sort(np.random.default_rng([(base + i) % 2**64, _SUBSET_STREAM]).choice(width, k, replace=False))
            for i in range(n_machines)]


def _subsets_digest(subsets):
    digest = hashlib.sha256()
    for cols in subsets:
        digest.update(np.asarray(cols, dtype="<i8").tobytes() + b"|")
    return digest.hexdigest()


def _subset(subsets, i):
    return None if subsets is None else subsets[i]


def _check_fitted_width(model, X):
    width = _width(X, "X")
    if width != model.n_features_in_:
        raise ValueError(f"X has {width} features, but {type(model).__name__} is expecting "
                         f"{model.n_features_in_} features as input")


def _n_rows(X):
    shape = getattr(X, "shape", None)
    return int(shape[0]) if shape is not None else len(X)


def _width(X, name):
    if _is_sparse(X):
        _check_sparse_structure(X, name)
    shape = getattr(X, "shape", None)
    if shape is None:
        shape = np.shape(np.asarray(X, dtype=object))
    if len(shape) != 2:
        hint = ("; Reshape your data with array.reshape(-1, 1) (one feature) or array.reshape(1, -1) "
                "(one sample)") if len(shape) == 1 else ""
        raise ValueError(f"{name}: expected 2 dimensions, got shape {tuple(shape)}{hint}")
    return int(shape[1])


def _columns(X, cols, name):
    """The columns ``cols`` of X (numpy, scipy.sparse, cupy, dask, or a nested list); X itself
    when ``cols`` is None."""
    if cols is None:
        return X
    if _is_sparse(X):
        return X.tocsr()[:, cols]
    if not hasattr(X, "shape") or not hasattr(X, "__getitem__"):
        X = np.asarray(X)
    if len(X.shape) != 2:
        raise ValueError(f"{name}: expected 2 dimensions, got shape {tuple(X.shape)}")
    return X[:, cols]


def _checked_names(feature_names, width):
    if feature_names is None:
        return None
    names = tuple(str(n) for n in feature_names)
    if len(names) != width:
        raise ValueError(f"feature_names: {len(names)} names for {width} features")
    return names


def _checked_class_names(class_names, n_classes):
    if class_names is None:
        return None
    class_names = list(class_names)
    if len(class_names) != n_classes:
        raise ValueError(f"class_names: {len(class_names)} names for {n_classes} classes")
    return class_names


def _one_document(x, width):
    """``x`` (1-D, a 1-row 2-D array or a 1-row sparse matrix) as one row of ``width`` features
    (of any width when ``width`` is None)."""
    if _is_sparse(x):
        _check_sparse_structure(x, "x")
    row = x.tocsr() if _is_sparse(x) else np.asarray(x)
    row = row[None, :] if not _is_sparse(row) and row.ndim == 1 else row
    if row.ndim != 2 or row.shape[0] != 1 or (width is not None and row.shape[1] != width):
        features = "" if width is None else f" of {width} features"
        raise ValueError(f"x: expected one document{features}, got shape {row.shape}")
    return row


def _global_rule(rule, cols, names, width):
    """A machine's rule over its own columns, read over all ``width`` features."""
    return dataclasses.replace(rule, literals=tuple((int(cols[j]), neg) for j, neg in rule.literals),
                               feature_names=names, n_features=width)


def _check_n_estimators(m, name="n_estimators"):
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {type(m).__name__}")
    if not 1 <= m <= _MAX_ESTIMATORS:
        raise ValueError(f"{name}: must be in [1, {_MAX_ESTIMATORS}], got {m}")


def _checked_y(y, n):
    """``y`` as 1-D labels of ``n`` samples, checked (the one intake of every fit and score)."""
    if y is None:
        raise ValueError("y: TsetlinMachine requires y to be passed, but the target y is None")
    y = np.asarray(y)
    if y.ndim != 1:
        try:
            y = column_or_1d(y, warn=True)  # [n, 1] with a DataConversionWarning, as scikit-learn
        except ValueError:
            raise ValueError(f"y: expected 1 dimension, got shape {y.shape}") from None
    if len(y) != n:
        raise ValueError(f"y: {len(y)} labels for {n} samples")
    return checked_labels(y, "y")


def _check_state_fits(cfg: dict):
    """MemoryError (naming the sizes) when the model state of ``cfg`` would not fit."""
    banks = 1 if cfg["coalesced"] else cfg["n_classes"]
    words = banks * int(cfg["n_clauses"]) * 2 * ((int(cfg["n_features"]) + 63) // 64)
    # Include + lower planes (8 bytes a word each), the byte-per-automaton training copy, weights.
    check_fits(words * 8 * int(cfg["state_bits"]) + words * 64 + banks * int(cfg["n_clauses"]) * cfg["n_classes"] * 4,
               f"n_clauses={cfg['n_clauses']} x n_features={cfg['n_features']} (the model state)")


def _read_thermometer(path, archive, headers, model):
    """The checked thermometer encoder of a saved model (None when it has none): the counts'
    shape from the header, then the thresholds' shape from the counts, before either is read."""
    present = [key in headers for key in ("threshold_counts", "thresholds")]
    if not any(present):
        return None
    if not all(present) or model.booleanizer == "none":
        raise ValueError(f"{path}: thresholds and threshold_counts come together, and only with booleanizer='auto'")
    n_features, max_bits = model.n_features_in_, int(model.max_bits)
    shape, dtype = headers["threshold_counts"]
    if shape != (n_features,) or dtype.kind not in "iu":
        raise ValueError(f"{path}: threshold_counts must hold one integer per feature ({n_features})")
    counts = np.asarray(archive["threshold_counts"])
    # Each count below 2**31 keeps the sum of at most 2**31 counts inside int64.
    if counts.min() < 1 or counts.max() > min(max_bits, 1 << 31):
        raise ValueError(f"{path}: threshold_counts must lie in [1, max_bits={max_bits}]")
    total = int(counts.sum())
    shape, dtype = headers["thresholds"]
    if total > 1 << 31 or shape != (total,) or dtype.kind != "f":
        raise ValueError(f"{path}: thresholds must be {total} floats (the sum of threshold_counts)")
    try:
        return Thermometer.from_arrays(archive["thresholds"], counts, max_bits)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _padding_mask(n_features: int):
    """The bits of the last feature word that lie past ``n_features`` (None when none do)."""
    used = n_features % 64
    return None if used == 0 else np.uint64(~((1 << used) - 1) & (2**64 - 1))


# What reading a damaged .npz raises besides ValueError: zipfile's errors (BadZipFile;
# NotImplementedError for a made-up zip version or method; RuntimeError for an encryption flag),
# truncation (EOFError), a missing member (KeyError), and header or JSON fields of the wrong
# kind, size or depth (TypeError, OverflowError, RecursionError).
_UNREADABLE_NPZ = (OSError, EOFError, KeyError, TypeError, NotImplementedError, RuntimeError,
                   zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, OverflowError)


def _npz_headers(path) -> dict:
    """Shape and dtype of every array of an ``.npz`` from the ``.npy`` headers alone."""
    out = {}
    if os.path.exists(os.fspath(path)) and not os.path.isfile(os.fspath(path)):
        # A device or pipe (/dev/zero) never ends: only regular files are read.
        raise ValueError(f"{path}: not a regular file")
    with zipfile.ZipFile(os.fspath(path)) as archive:
        for info in archive.infolist():
            # np.load reads a member named "lower" before "lower.npy": any member that is not a
            # checked array, or a second member of one name, could stand in for a checked one.
            if not info.filename.endswith(".npy") or info.filename[:-4] in out:
                raise ValueError(f"{path}: unexpected archive member {info.filename!r}; model files hold "
                                 "one .npy array per name")
            name = info.filename[:-4]
            if info.compress_type != zipfile.ZIP_STORED:
                # save() stores arrays uncompressed; a compressed member could inflate a small
                # file into gigabytes, so the bytes on disk must be the bytes read.
                raise ValueError(f"{path}: array {name!r} is compressed; model files hold uncompressed arrays")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                data_bytes = info.file_size - member.tell()
            shape, dtype = tuple(shape), np.dtype(dtype)
            if not dtype.hasobject and data_bytes != int(np.prod(shape, dtype=object)) * dtype.itemsize:
                raise ValueError(f"{path}: array {name!r} declares shape {shape} of {dtype} but stores "
                                 f"{data_bytes} bytes")
            out[name] = (shape, dtype)
    return out


# ------------------------------------------------------------------------------------------------
# Text


# From this many classes on, threshold="auto" is the wide margin (see TsetlinMachine).
_MANY_CLASSES = 20


def _auto_margin(n_classes: int, coalesced: bool) -> float:
    """T / n_clauses of ``threshold="auto"``. The coalesced pool is shared by every class, so its
    clause count already grows with them and keeps 0.8."""
    return 3.6 if n_classes >= _MANY_CLASSES and not coalesced else 0.8


def _auto_vocabulary(n_documents: int) -> int:
    """Terms kept by ``text_pipeline(max_features="auto")`` for a training set of this size."""
    return int(min(max(n_documents // 3, 1000), 5000))


# Bigrams join the vocabulary of ``ngram_range="auto"`` from this many training documents on. On
# smaller corpora chi2 ranks bigrams seen in a handful of documents above common words and the
# fixed-size vocabulary loses useful unigrams (see bench/RESULTS.md).
_BIGRAMS_FROM_DOCUMENTS = 20_000


def _auto_ngram_range(n_documents: int) -> tuple[int, int]:
    """N-grams of ``text_pipeline(ngram_range="auto")`` for a training set of this size."""
    return (1, 2) if n_documents >= _BIGRAMS_FROM_DOCUMENTS else (1, 1)


def _check_ngram_range(ngram_range):
    """``"auto"`` or ``(min_n, max_n)`` with ``1 <= min_n <= max_n`` (a 0-gram is no term)."""
    if isinstance(ngram_range, str) and ngram_range == "auto":
        return
    pair = isinstance(ngram_range, tuple) and len(ngram_range) == 2
    whole = pair and all(isinstance(n, Integral) and not isinstance(n, bool) for n in ngram_range)
    if not whole or not 1 <= ngram_range[0] <= ngram_range[1]:
        raise ValueError(f"ngram_range: expected 'auto' or a tuple (min_n, max_n) with 1 <= min_n <= max_n, "
                         f"got {ngram_range!r}")


def _checked_documents(raw_documents, content=True):
    """The documents as a sized sequence: not one string, and (``content``: the documents are
    the texts themselves) every item a str or bytes."""
    if isinstance(raw_documents, (str, bytes)):
        raise ValueError("raw_documents: expected an iterable of texts, got one string")
    if not hasattr(raw_documents, "__len__"):
        raw_documents = list(raw_documents)
    if content:
        check_text_items(raw_documents, "raw_documents")
    return raw_documents


class _AutoNgramVectorizer(CountVectorizer):
    """CountVectorizer whose ``ngram_range`` may be "auto" (word analyzer only): resolved at fit
    from the number of training documents, or from the longest term of a given ``vocabulary``,
    into ``ngram_range_``, which transform then uses."""

    _parameter_constraints = {**CountVectorizer._parameter_constraints,
                              "ngram_range": [tuple, StrOptions({"auto"})]}

    def _auto_range(self, n_documents=None):
        """The range "auto" stands for, or None when it needs documents and none are given."""
        if callable(self.analyzer):
            return (1, 1)  # the analyzer makes the terms; the range is not used
        if self.analyzer != "word":
            raise ValueError(f'ngram_range: "auto" picks word n-grams; give a range for analyzer={self.analyzer!r}')
        if self.vocabulary is not None:
            terms = self.vocabulary.keys() if isinstance(self.vocabulary, dict) else self.vocabulary
            return (1, max((len(str(t).split()) for t in terms), default=1))
        return None if n_documents is None else _auto_ngram_range(n_documents)

    def _resolved(self):
        """Self, or with "auto" a shallow copy holding the concrete range: transforming through
        it leaves this object's parameters alone, so concurrent transforms are safe."""
        if not isinstance(self.ngram_range, str):
            return self
        view = copy.copy(self)
        view.ngram_range = getattr(self, "ngram_range_", None) or self._auto_range()
        if view.ngram_range is None:
            raise NotFittedError('ngram_range: "auto" is resolved by fit; fit the vectorizer first')
        return view

    def fit_transform(self, raw_documents, y=None):  # CountVectorizer.fit calls this too
        raw_documents = _checked_documents(raw_documents, self.input == "content")
        self._validate_params()  # before "auto" is replaced by the range it stands for
        _check_ngram_range(self.ngram_range)
        n = len(raw_documents)
        if isinstance(self.min_df, Integral) and self.min_df > n:
            raise ValueError(f"raw_documents: {n} document(s), fewer than min_df={self.min_df} "
                             f"(the documents a term must appear in to be kept)")
        auto = isinstance(self.ngram_range, str)
        resolved = self._auto_range(len(raw_documents)) if auto else tuple(self.ngram_range)
        saved, self.ngram_range = self.ngram_range, resolved
        try:
            out = super().fit_transform(raw_documents, y)
        finally:
            self.ngram_range = saved
        self.ngram_range_ = resolved  # only once the vocabulary it belongs to is in place
        return out

    def transform(self, raw_documents):
        raw_documents = _checked_documents(raw_documents, self.input == "content")
        return CountVectorizer.transform(self._resolved(), raw_documents)

    def build_analyzer(self):
        return CountVectorizer.build_analyzer(self._resolved())


class _SelectAtMostK(SelectKBest):
    """SelectKBest keeping every feature when there are fewer than k, with ``k="auto"``
    (``k_``, the number it stands for, is set at fit). ``k`` itself is never reassigned, so
    concurrent transforms are safe."""

    _parameter_constraints = {**SelectKBest._parameter_constraints,
                              "k": [StrOptions({"all", "auto"}), Interval(Integral, 0, None, closed="left")]}

    def fit(self, X, y=None, keep_all=False, **params):
        """``keep_all``: ``k="auto"`` stands for every feature (the pipeline's one-model-per-class
        step then picks each class's own)."""
        super().fit(X, y, **params)
        auto = isinstance(self.k, str) and self.k == "auto"
        self.k_ = ("all" if keep_all else _auto_vocabulary(X.shape[0])) if auto else self.k
        return self

    def _get_support_mask(self):
        check_is_fitted(self, "k_")
        scores = np.asarray(self.scores_, dtype=np.float64)
        k = len(scores) if self.k_ == "all" else min(int(self.k_), len(scores))
        mask = np.zeros(len(scores), dtype=bool)
        if k:
            # NaN scores (constant columns) rank last; a stable sort keeps ties in column order.
            ranked = np.argsort(np.where(np.isnan(scores), -np.inf, scores), kind="mergesort")
            mask[ranked[len(scores) - k:]] = True
        return mask

    def _check_params(self, X, y):
        pass  # k is checked by its constraints; more than the features means all of them

    def transform(self, X):
        # No documents select to no rows (SelectKBest's check would name this private step):
        # the model after it says what an empty batch means for it.
        shape = getattr(X, "shape", None)
        if shape is not None and len(shape) == 2 and shape[0] == 0 and shape[1] == getattr(self, "n_features_in_", -1):
            return X[:, self.get_support()]
        return super().transform(X)


# text_pipeline(features_per_class="auto") fits one model per class from this many classes on:
# it gains on 20 Newsgroups (20 classes) and Ohsumed (23), not on MTSamples (17) or R8 (8).
_ONE_VS_REST_FROM_CLASSES = 20
# ... with count levels and a vote of this many machines per class (count_levels="auto",
# n_estimators="auto"): in 5-fold CV on Ohsumed, 0.641 with presence and one machine, 0.6437
# with levels, 0.6595 with levels and three machines.
_MANY_CLASS_LEVELS = (1, 2, 4)
_MANY_CLASS_MACHINES = 3


def _presence_chi2(X, y):
    """chi2 of whether each term occurs: counted terms ranked as the binary vocabulary ranks them."""
    return chi2(X > 0, y)


class _CountLevels(TransformerMixin, BaseEstimator):
    """Term counts -> bits "occurs at least c times", one block of every term per level c of
    ``levels`` (increasing integers >= 1; ``(1,)`` is presence alone). ``"auto"`` is
    ``_MANY_CLASS_LEVELS`` when fitted with ``many=True`` (the pipeline's many-class recipe),
    presence alone otherwise; the levels used are ``levels_``."""

    def __init__(self, levels=(1, 2, 4)):
        self.levels = levels

    def _levels(self):
        levels = self.levels
        if isinstance(levels, str) and levels == "auto":
            return levels
        ok = isinstance(levels, (tuple, list)) and len(levels) > 0 and all(
            isinstance(c, Integral) and not isinstance(c, bool) and 1 <= c < 2**63 for c in levels)
        if not ok or any(b <= a for a, b in zip(levels[:-1], levels[1:])):
            raise ValueError(f"count_levels: expected increasing whole numbers in [1, 2**63), got {levels!r}")
        return tuple(int(c) for c in levels)

    def fit(self, X, y=None, many=False):
        levels = self._levels()
        self.levels_ = (_MANY_CLASS_LEVELS if many else (1,)) if isinstance(levels, str) else levels
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        import scipy.sparse as sp  # noqa: PLC0415

        check_is_fitted(self, "n_features_in_")
        X = sp.csr_matrix(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X: {X.shape[1]} terms, fitted with {self.n_features_in_}")
        return sp.hstack([(X >= c).astype(np.uint8) for c in self.levels_], format="csr")

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "n_features_in_")
        names = np.asarray(input_features if input_features is not None else
                           [f"x{j}" for j in range(self.n_features_in_)], dtype=object)
        return np.concatenate([names if c == 1 else np.array([f"{n} ({c}+ times)" for n in names], dtype=object)
                               for c in self.levels_])


class TextTsetlinPipeline(Pipeline):
    """CountVectorizer -> SelectKBest(chi2) -> [count levels] -> TsetlinMachine, speaking in
    words: the Pipeline that :func:`text_pipeline` builds, with ``feature_names()``, ``rules()``
    and ``explain(text)`` in terms of the selected words.

    ``one_vs_rest_from`` (None or a number of classes): when set, each ``fit`` decides from y.
    From that many classes on, the last step becomes a :class:`TsetlinOneVsRest` of the step's
    model (a :class:`TsetlinEnsemble` of ``machines_per_class`` copies of it when that is > 1)
    with ``features_per_class="auto"``, a ``"select"`` step with ``k="auto"`` keeps every term
    and a ``"levels"`` step with ``levels="auto"`` uses the count levels (1, 2, 4); below, the
    model itself, the ``clip(n_documents / 3, 1000, 5000)`` best terms and presence alone. A last
    step that is already such a one-vs-rest model counts as its model (with
    ``machines_per_class`` > 1, its vote's machine), so a refit on other labels decides afresh."""

    if "transform_input" in inspect.signature(Pipeline.__init__).parameters:  # scikit-learn >= 1.6
        def __init__(self, steps, *, one_vs_rest_from=None, machines_per_class=1, transform_input=None,
                     memory=None, verbose=False):
            super().__init__(steps, transform_input=transform_input, memory=memory, verbose=verbose)
            self.one_vs_rest_from = one_vs_rest_from
            self.machines_per_class = machines_per_class
    else:
        def __init__(self, steps, *, one_vs_rest_from=None, machines_per_class=1, memory=None, verbose=False):
            super().__init__(steps, memory=memory, verbose=verbose)
            self.one_vs_rest_from = one_vs_rest_from
            self.machines_per_class = machines_per_class

    def fit(self, X, y=None, **params):
        if y is None:
            raise ValueError("y: the documents' labels are required, as in fit(texts, labels)")
        if not isinstance(X, (str, bytes)):
            if not hasattr(X, "__len__"):
                X = list(X)  # a generator: counted here, then read by the vectorizer
            if y is not None and hasattr(y, "__len__") and len(y) != len(X):
                raise ValueError(f"y: {len(y)} labels for {len(X)} documents")
        if self.one_vs_rest_from is not None:
            _check_n_estimators(self.machines_per_class, "machines_per_class")
            try:
                n_classes = len(np.unique(np.asarray(y)))
            except TypeError:
                n_classes = 0  # labels that cannot be sorted: the model's own check names the problem
            name, model = self.steps[-1]
            if isinstance(model, TsetlinOneVsRest) and isinstance(model.features_per_class, str):
                model = TsetlinMachine() if model.estimator is None else model.estimator
                if self.machines_per_class > 1 and isinstance(model, TsetlinEnsemble):
                    model = TsetlinMachine() if model.estimator is None else model.estimator
            many = n_classes >= self.one_vs_rest_from
            member = model
            if many and self.machines_per_class > 1 and isinstance(model, TsetlinMachine):
                member = TsetlinEnsemble(model, self.machines_per_class)
            # The steps list is reassigned item by item, as Pipeline.fit does with fitted steps.
            self.steps[-1] = (name, TsetlinOneVsRest(member, "auto") if many else model)
            if isinstance(self.named_steps.get("select"), _SelectAtMostK):
                params = {**params, "select__keep_all": many}
            if isinstance(self.named_steps.get("levels"), _CountLevels):
                params = {**params, "levels__many": many}
        return super().fit(X, y, **params)

    def fit_predict(self, X, y=None, **params):
        return self.fit(X, y, **params).predict(X)

    def feature_names(self):
        vec, sel = self.named_steps["vectorizer"], self.named_steps["select"]
        names = vec.get_feature_names_out()[sel.get_support()]
        levels = self.named_steps.get("levels")
        if levels is not None and levels != "passthrough":
            names = levels.get_feature_names_out(names)
        return names

    def rules(self, class_names=None):
        return self.named_steps["tm"].rules(feature_names=self.feature_names(), class_names=class_names)

    def explain(self, text, class_names=None):
        if not isinstance(text, str):
            raise TypeError(f"text: expected one document as a str, got {type(text).__name__}")
        x = self[:-1].transform([text])
        return self.named_steps["tm"].explain(x, feature_names=self.feature_names(), class_names=class_names)


def text_pipeline(max_features="auto", ngram_range="auto", min_df=2, count_levels="auto", n_estimators="auto",
                  features_per_machine=None, features_per_class="auto", **tm_params):
    """The text classifier of Berge et al. (2019) as a scikit-learn Pipeline: binary
    bag-of-words (n-grams of ``ngram_range`` seen in at least ``min_df`` documents) -> the
    ``max_features`` best by chi2 -> :class:`TsetlinMachine` (``tm_params``; by default sized
    from the data and trained until a held-out split stops improving). Its ``rules()`` and
    ``explain(text)`` use words; it pickles.

    ``max_features="auto"`` keeps ``clip(n_documents / 3, 1000, 5000)`` terms: on R8 (5,485
    documents) about 1,800. Fewer, better-ranked words are both faster and more accurate than a
    large vocabulary (see ``bench/RESULTS.md``). ``ngram_range="auto"`` uses words and word
    pairs from 20,000 training documents on (IMDb, 25,000: +1.6 points) and words alone below
    (bigrams cost 2.5-5 points on the 1,100-3,400-document MTSamples and Ohsumed, 0.4 on the
    11,300 of 20 Newsgroups); the range used is ``named_steps["vectorizer"].ngram_range_``. It is
    decided for each fit, so the folds of a cross-validation near 20,000 documents may use
    another range than a fit on all of them; pass a range to compare like with like.

    ``count_levels`` (e.g. ``(1, 2, 4)``): besides "occurs", the bits "occurs at least 2 / 4
    times" of every selected term (the same chi2-ranked vocabulary, ranked by presence; a rule
    reads ``"pain (2+ times)"``). Measured with one multi-class machine: Ohsumed +1.4 points
    (+0.5 in cross-validation), R8 +0.3, 20 Newsgroups -0.1, MTSamples -1.7
    (``bench/RESULTS.md``). ``"auto"`` (the default) uses them in the many-class recipe below
    and presence alone (None) otherwise.

    ``n_estimators`` > 1 makes the last step a :class:`TsetlinEnsemble` of that many machines
    (``TsetlinMachine(**tm_params)`` with seeds ``seed, seed + 1, ...``); its ``rules()`` then
    list ``(machine index, Rule)``. On small corpora the vote of five machines is worth about a
    point: MTSamples with ``max_features=2000, n_clauses=1000, threshold=1000,
    count_levels=(1, 2, 4), n_estimators=5`` scores 0.8864, 0.83 below LinearSVC (each step
    chosen by cross-validation on the training split; ``bench/RESULTS.md``).
    ``features_per_machine`` (a fraction or a count) gives each machine of the vote its own random
    part of the vocabulary (:class:`TsetlinEnsemble`). ``n_estimators="auto"`` (the default) is
    a vote of 3 machines per class in the many-class recipe below (one machine per class when
    ``features_per_machine`` is given) and one machine otherwise.

    ``features_per_class`` (an integer) makes the last step a :class:`TsetlinOneVsRest`: one
    binary model per class (the machine, or the vote above) on the class's own chi2-best terms,
    and ``max_features="auto"`` then keeps every term, so that each class picks from the whole
    vocabulary. Its ``rules()`` give each rule for its class, with negative weights for the
    rules that vote against it. None is always one multi-class machine.

    ``features_per_class="auto"`` (the default) decides at each fit. From 20 classes on it
    follows the many-class recipe: one vote of three machines per class
    (``TsetlinOneVsRest(TsetlinEnsemble(machine, 3), features_per_class="auto")``), each class
    reading the terms of the whole vocabulary significantly associated with it (chi2
    p < 0.0001), with count levels (1, 2, 4) unless ``count_levels`` or ``n_estimators`` say
    otherwise. Below 20 classes: one multi-class machine on the ``max_features`` vocabulary. With
    many classes a shared vocabulary serves them all badly: on Ohsumed (23 classes) and 20
    Newsgroups (20) the defaults go from 0.6077 / 0.7861 with one machine to 0.6651 / 0.8427
    (1.2 / 2.0 points below LinearSVC), in 64 s / 24 min on 2 cores; with 8 (R8) or 17 (MTSamples)
    classes one model per class gains nothing (``bench/RESULTS.md``, "One machine per class").

    >>> pipe = text_pipeline(max_features=50, min_df=1, n_clauses=20, threshold=10, specificity=3.0, seed=0)
    >>> texts = ["fever and cough", "cough and sore throat", "broken arm", "fracture of the arm"] * 20
    >>> labels = ["resp", "resp", "ortho", "ortho"] * 20
    >>> pipe.fit(texts, labels, tm__epochs=5).score(texts, labels)
    1.0
    >>> pipe.named_steps["vectorizer"].ngram_range_
    (1, 1)
    """
    # The arguments are checked here, not after the vocabulary is built.
    if not (isinstance(max_features, str) and max_features in ("auto", "all")) and (
            isinstance(max_features, bool) or not isinstance(max_features, Integral) or max_features < 1):
        raise ValueError(f"max_features: expected 'auto', 'all' or an integer >= 1, got {max_features!r}")
    _check_ngram_range(ngram_range)
    if features_per_class is not None:
        # Each class then ranks every term.
        TsetlinOneVsRest(features_per_class=features_per_class)._check_params()
    per_class_count = features_per_class is not None and not isinstance(features_per_class, str)
    decide = features_per_class is not None and not per_class_count  # from the classes, at fit
    levels = None
    if isinstance(count_levels, str) and count_levels == "auto":
        levels = _CountLevels("auto") if decide else None
    elif count_levels is not None:
        iterable = not isinstance(count_levels, (str, bytes)) and hasattr(count_levels, "__iter__")
        levels = _CountLevels(tuple(count_levels) if iterable else count_levels)
        levels._levels()  # a bad value fails here, not after the vocabulary is built
    # With count levels the vocabulary counts, and is still ranked by presence.
    machines_per_class = 1
    if isinstance(n_estimators, str) and n_estimators == "auto":
        n_estimators = 1
        machines_per_class = _MANY_CLASS_MACHINES if decide and features_per_machine is None else 1
    elif isinstance(n_estimators, str):
        raise TypeError(f"n_estimators: expected an integer or 'auto', got {n_estimators!r}")
    if per_class_count:
        max_features = "all" if isinstance(max_features, str) and max_features == "auto" else max_features
    steps = [("vectorizer", _AutoNgramVectorizer(binary=levels is None, ngram_range=ngram_range, min_df=min_df)),
             ("select", _SelectAtMostK(chi2 if levels is None else _presence_chi2, k=max_features))]
    if levels is not None:
        steps.append(("levels", levels))
    machine = TsetlinMachine(**tm_params)
    _check_n_estimators(n_estimators)  # here, not after the vocabulary is built
    _check_features_per_machine(features_per_machine)
    alone = n_estimators == 1 and features_per_machine is None
    model = machine if alone else TsetlinEnsemble(machine, n_estimators, features_per_machine)
    if per_class_count:
        model = TsetlinOneVsRest(model, features_per_class)
    return TextTsetlinPipeline([*steps, ("tm", model)], one_vs_rest_from=_ONE_VS_REST_FROM_CLASSES if decide else None,
                               machines_per_class=machines_per_class)


class TsetlinVote(_ScoredClassifier, BaseEstimator):
    """A vote of classifiers that read the same documents in different ways: each member is fitted
    on (X, y) as it is (clones of ``estimators``, with ``fit``'s keyword arguments), and the vote
    adds their per-class scores (``decision_function``; a binary member's margin counts for its
    second class). The members should speak on one scale: the votes of :class:`TsetlinOneVsRest`
    and :class:`TsetlinEnsemble` are margins over T, a single machine's class sums are not.

    Machines trained on the same terms from other seeds err alike; machines that read other terms
    err less alike. :func:`text_views` builds the vote of seven views measured on 20 Newsgroups.

    >>> texts = ["fever and cough", "cough and sore throat", "broken arm", "fracture of the arm"] * 20
    >>> labels = ["resp", "resp", "ortho", "ortho"] * 20
    >>> views = [text_pipeline(max_features=k, min_df=1, n_clauses=20, threshold=10, seed=0) for k in (3, 6)]
    >>> vote = TsetlinVote(views).fit(texts, labels, tm__epochs=5, tm__progress_bar=False)
    >>> vote.score(texts, labels)
    1.0
    """

    def __init__(self, estimators=None):
        self.estimators = estimators

    def fit(self, X, y, **fit_params):
        """Fit a clone of every member on (X, y); ``fit_params`` go to each member's ``fit``."""
        if not isinstance(self.estimators, (list, tuple)) or not self.estimators:
            raise ValueError(f"estimators: expected a non-empty list of classifiers, got {self.estimators!r}")
        members = [clone(e) for e in self.estimators]
        for i, member in enumerate(members):
            if not hasattr(member, "decision_function"):
                raise TypeError(f"estimators[{i}]: {type(member).__name__} has no decision_function")
            member.fit(X, y, **fit_params)
        for i, member in enumerate(members[1:], 1):
            if not np.array_equal(member.classes_, members[0].classes_):
                raise ValueError(f"estimators[{i}]: classes {list(member.classes_)} differ from estimators[0]'s")
        self.estimators_, self.classes_ = members, members[0].classes_
        return self

    def votes(self, X):
        """The summed per-class scores ``[n_samples, n_classes]`` (float64)."""
        if not hasattr(self, "estimators_"):
            raise NotFittedError("This TsetlinVote instance is not fitted yet; call fit first")
        total = None
        for member in self.estimators_:
            part = np.asarray(member.decision_function(X), dtype=np.float64)
            if part.ndim == 1:  # a binary member's margin: the score of its second class
                part = np.stack([np.zeros_like(part), part], axis=1)
            total = part if total is None else total + part
        return total

    def _scores(self, X):
        return self.votes(X)


def text_views(seed=0, word_pairs=True, **tm_params) -> TsetlinVote:
    """The vote of seven :func:`text_pipeline` views, one binary machine per class each. Four read
    words: the 4,000 best by chi2 (presence), the 8,000 and the 16,000 best with count levels
    (1, 2, 4), and the significant terms (chi2 p < 0.0001) with count levels. Three read words and
    word pairs, all with count levels: the 8,000 and the 16,000 best, and the significant terms.
    On 20 Newsgroups (chosen on the latest 10% of the training postings, then run once on the
    test split) it scores 0.8625, 0.04 points below tf-idf LinearSVC, in about 34 minutes on 2
    cores. ``word_pairs=False`` keeps the four word views: 0.8524 (1.05 below) in about 19
    minutes; five seeds of the first view score 0.8445 and the many-class defaults 0.8427
    (``bench/RESULTS.md``, "A vote of feature views"). ``tm_params`` go to every view's machines.

    >>> vote = text_views(seed=0, n_clauses=20, threshold=10)
    >>> [p.named_steps["vectorizer"].ngram_range for p in vote.estimators]
    [(1, 1), (1, 1), (1, 1), (1, 1), (1, 2), (1, 2), (1, 2)]
    >>> len(text_views(word_pairs=False).estimators)
    4
    """
    check_switch(word_pairs, "word_pairs")
    levels = (1, 2, 4)
    views = [dict(features_per_class=k, count_levels=None if k == 4000 else levels, ngram_range=(1, 1))
             for k in (4000, 8000, 16000, "auto")]
    if word_pairs:
        views += [dict(features_per_class=k, count_levels=levels, ngram_range=(1, 2)) for k in (8000, 16000, "auto")]
    pipelines = [text_pipeline(seed=seed, n_estimators=1, **view, **tm_params) for view in views]
    for pipeline, view in zip(pipelines, views):
        # The significant terms are one machine per class whatever the number of classes (the
        # many-class default decides from 20 classes on): every view votes on the same scale.
        if view["features_per_class"] == "auto":
            pipeline.set_params(one_vs_rest_from=2)
    return TsetlinVote(pipelines)


# ------------------------------------------------------------------------------------------------
# Demo


def _data_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "mtsamples_sample.jsonl.gz")


def load_mtsamples_sample():
    """The shipped MTSamples sample (CC0): (texts, specialties)."""
    texts, labels = [], []
    with gzip.open(_data_path(), "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            texts.append(row["text"])
            labels.append(row["specialty"])
    return texts, labels


def demo() -> list[dict]:
    """Train on the shipped MTSamples sample and report accuracy and a few learned rules."""
    rows = []
    start = time.perf_counter()
    texts, labels = load_mtsamples_sample()
    order = np.random.default_rng(0).permutation(len(texts))
    cut = int(0.8 * len(texts))
    train, test = order[:cut], order[cut:]
    pipe = text_pipeline(max_features=1000, ngram_range=(1, 1), min_df=3, n_clauses=200, threshold=40,
                         specificity=8.0, seed=1)
    pipe.fit([texts[i] for i in train], [labels[i] for i in train], tm__epochs=15, tm__progress_bar=False)
    acc = pipe.score([texts[i] for i in test], [labels[i] for i in test])
    rows.append({"step": f"tsetlin: MTSamples sample, {len(set(labels))} specialties, {len(test)} test notes",
                 "result": f"accuracy {acc:.3f}", "seconds": time.perf_counter() - start})
    rules = pipe.rules()
    shown = set()
    for rule in rules:
        if rule.class_label in shown or len(rule.literals) > 4 or rule.weight <= 0:
            continue
        shown.add(rule.class_label)
        rows.append({"step": "tsetlin: learned rule", "result": str(rule), "seconds": 0.0})
        if len(shown) == 3:
            break
    return rows
