"""Evaluation metrics for anomaly and membership detection, computed in Rust from one sort.

Higher scores mean "more anomalous" (or "more likely a member"). Labels are bool or 0/1,
of the shape of the scores (a column ``[n, 1]`` pairs with ``[n]``). The ranking metrics
(``auroc`` to ``evaluate``) also accept a dict of score arrays (as returned by
:func:`fastcore_ad.mia.score_logits`) and then return a dict with one value per key. They and
the PRO metrics also take dask arrays: per-chunk counts per distinct score, merged exactly; the
counts and curve points equal the in-memory ones, and sums of many terms (AUROC, AP, AUPRO) may
differ from them in the last bits, from the order of the additions.

>>> import numpy as np
>>> from fastcore_ad import metrics
>>> scores = np.array([0.1, 0.4, 0.35, 0.8])
>>> labels = np.array([0, 0, 1, 1])
>>> metrics.auroc(scores, labels)
0.75
>>> round(metrics.average_precision(scores, labels), 4)
0.8333
"""

from __future__ import annotations

import functools

import numpy as np

from . import _core
from ._base import check_n_jobs
from ._dispatch import (as_array, binary_labels, check_paired_shapes, check_switch, float_array, is_dask, real_or_inf,
                        to_numpy)
from ._memory import check_fits

__all__ = [
    "auroc",
    "average_precision",
    "f1_max",
    "tpr_at_fpr",
    "fpr_at_tpr",
    "evaluate",
    "roc_curve",
    "aupro",
    "pro_curve", "demo"]


def _per_key(fn):
    """Let `fn(scores, labels, ...)` take a dict of score arrays and return a dict."""

    @functools.wraps(fn)
    def wrapper(scores, labels, *args, **kwargs):
        if isinstance(scores, dict):
            return {key: fn(value, labels, *args, **kwargs) for key, value in scores.items()}
        return fn(scores, labels, *args, **kwargs)

    return wrapper


def _prepare(scores, labels):
    """``(scores, labels, values)``: float64 scores and 0/1 labels for the kernels. Integer
    scores that float64 would round (beyond 2**53) become their dense ranks, which keep every
    order and tie, and ``values`` maps a rank back to its score (None otherwise)."""
    scores, b1 = as_array(scores, "scores")
    labels, b2 = as_array(labels, "labels")
    # Metrics run in Rust: GPU inputs are brought to the host once.
    scores, labels = to_numpy(scores, b1), to_numpy(labels, b2)
    if scores.ndim and scores.size != labels.size:  # before any conversion copies a large input
        raise ValueError(f"scores and labels differ in length: {scores.size} != {labels.size}")
    if scores.ndim:
        check_paired_shapes(scores.shape, labels.shape)
    scores, values = _exact_order(scores, "scores")
    scores = scores.reshape(-1) if scores.ndim else scores
    scores = float_array(scores, "scores", ndim=1)
    labels = binary_labels(labels.reshape(-1), "labels")
    n_pos = int(np.count_nonzero(labels))
    if n_pos == 0 or n_pos == labels.shape[0]:
        only = "positive" if n_pos else "negative"
        raise ValueError(f"labels: only {only} samples are present; the metric needs both classes")
    return scores, labels, values


def _exact_order(x, name):
    """``(x, values)``: integers that float64 would round (beyond 2**53) become their dense
    ranks, which keep every order and tie, and ``values`` maps a rank back (None otherwise)."""
    if x.dtype.kind not in "iu" or not x.size:
        return x, None
    # Before the scan of x: a broadcast view can stand for terabytes of values.
    check_fits(int(x.size) * 8, f"{name} (a contiguous float64 copy of shape {tuple(x.shape)})")
    if max(abs(int(x.min())), abs(int(x.max()))) <= 2**53:
        return x, None
    # np.unique's sorted copy, order, inverse and the ranks
    check_fits(int(x.size) * 32, f"{name} (ranks of {x.size} integers beyond 2**53)")
    values, ranks = np.unique(x, return_inverse=True)
    return ranks.reshape(x.shape).astype(np.float64), values


def _check_rate(value: float, name: str) -> float:
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{name}: expected a number in [0, 1], got {value!r}")
    try:
        value = real_or_inf(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number in [0, 1], got {value!r}") from None
    if not 0.0 <= value <= 1.0 or value != value:
        raise ValueError(f"{name}: must lie in [0, 1], got {value}")
    return value


def _summary(scores, labels, max_fprs=(), min_tprs=(), n_jobs=None):
    check_n_jobs(n_jobs)
    if is_dask(scores) or is_dask(labels):  # exact: merged per-chunk tables of score counts
        from . import _distributed  # noqa: PLC0415

        return _distributed.binary_summary(scores, labels, max_fprs, min_tprs)
    scores, labels, values = _prepare(scores, labels)
    summary = _core.binary_summary(scores, labels, [float(v) for v in max_fprs], [float(v) for v in min_tprs], n_jobs)
    if values is not None and np.isfinite(summary["f1_threshold"]):
        summary["f1_threshold"] = values[int(summary["f1_threshold"])]  # the score the rank stands for
    return summary


@_per_key
def auroc(scores, labels, *, n_jobs=None) -> float:
    """Area under the ROC curve (ties count half), equal to scikit-learn's ``roc_auc_score``."""
    return _summary(scores, labels, n_jobs=n_jobs)["auroc"]


@_per_key
def average_precision(scores, labels, *, n_jobs=None) -> float:
    """Average precision, equal to scikit-learn's ``average_precision_score``.

    >>> average_precision([0.9, 0.8, 0.1], [1, 0, 1])
    0.8333333333333333
    """
    return _summary(scores, labels, n_jobs=n_jobs)["average_precision"]


@_per_key
def f1_max(scores, labels, *, return_threshold=False, n_jobs=None):
    """The largest F1 over all thresholds ``score >= t`` (optionally with that ``t``).

    >>> f1_max([0.9, 0.8, 0.1], [1, 0, 1])
    0.8
    """
    check_switch(return_threshold, "return_threshold")
    s = _summary(scores, labels, n_jobs=n_jobs)
    return (s["f1_max"], s["f1_threshold"]) if return_threshold else s["f1_max"]


@_per_key
def tpr_at_fpr(scores, labels, max_fpr=0.05, *, n_jobs=None) -> float:
    """The largest true positive rate whose false positive rate is at most ``max_fpr``.

    >>> tpr_at_fpr([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0], max_fpr=0.0)
    0.5
    """
    max_fpr = _check_rate(max_fpr, "max_fpr")
    return _summary(scores, labels, max_fprs=[max_fpr], n_jobs=n_jobs)["tpr_at_fpr"][0]


@_per_key
def fpr_at_tpr(scores, labels, min_tpr=0.95, *, n_jobs=None) -> float:
    """The smallest false positive rate whose true positive rate is at least ``min_tpr``."""
    min_tpr = _check_rate(min_tpr, "min_tpr")
    return _summary(scores, labels, min_tprs=[min_tpr], n_jobs=n_jobs)["fpr_at_tpr"][0]


@_per_key
def evaluate(scores, labels, *, max_fprs=(0.05, 0.01), min_tprs=(0.95,), n_jobs=None) -> dict:
    """Every ranking metric from one sort.

    Returns a dict with ``auroc``, ``average_precision``, ``f1_max``, ``tpr@fpr=<x>`` for each
    ``max_fprs`` entry and ``fpr@tpr=<x>`` for each ``min_tprs`` entry.

    >>> r = evaluate([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0])
    >>> r["auroc"], r["tpr@fpr=0.05"]
    (0.75, 0.5)
    """
    max_fprs = [_check_rate(v, "max_fprs") for v in np.atleast_1d(max_fprs).tolist()]
    min_tprs = [_check_rate(v, "min_tprs") for v in np.atleast_1d(min_tprs).tolist()]
    s = _summary(scores, labels, max_fprs, min_tprs, n_jobs)
    out = {"auroc": s["auroc"], "average_precision": s["average_precision"], "f1_max": s["f1_max"]}
    for name, rates, results in (("tpr@fpr", max_fprs, s["tpr_at_fpr"]), ("fpr@tpr", min_tprs, s["fpr_at_tpr"])):
        keys = [f"{name}={v:g}" for v in rates]
        if len(set(keys)) != len(keys):
            given = "max_fprs" if name == "tpr@fpr" else "min_tprs"
            raise ValueError(f"{given}: {rates} give repeated keys {keys} (rates are named with 6 significant "
                             "digits); pass rates that differ there")
        out.update(zip(keys, results))
    return out


def roc_curve(scores, labels, *, n_jobs=None):
    """(fpr, tpr, thresholds) at every distinct score, starting at (0, 0) with threshold +inf."""
    scores, labels, values = _prepare(scores, labels)
    fps, tps, thresholds = _core.curve_counts(scores, labels, n_jobs)
    if values is not None:  # ranks back to scores; float64 as the +inf start needs (rounded)
        thresholds = values[thresholds.astype(np.int64)].astype(np.float64)
    n_pos = float(np.count_nonzero(labels))
    n_neg = float(labels.shape[0]) - n_pos
    fpr = np.concatenate([[0.0], fps / n_neg])
    tpr = np.concatenate([[0.0], tps / n_pos])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def _prepare_maps(anomaly_maps, masks, max_fpr):
    maps, b1 = as_array(anomaly_maps, "anomaly_maps")
    masks, b2 = as_array(masks, "masks")
    maps, masks = to_numpy(maps, b1), to_numpy(masks, b2)
    if maps.ndim == 2:
        maps = maps[None]
    if masks.ndim == 2:
        masks = masks[None]
    if masks.shape != maps.shape:  # before any pass over the maps
        if maps.ndim != 3:
            float_array(maps, "anomaly_maps", ndim=3)  # names the dimensions
        raise ValueError(f"anomaly_maps and masks differ in shape: {maps.shape} != {masks.shape}")
    maps = float_array(_exact_order(maps, "anomaly_maps")[0], "anomaly_maps", ndim=3)
    masks = binary_labels(masks, "masks")
    return maps, masks, _check_positive_rate(max_fpr)


def _check_positive_rate(max_fpr) -> float:
    max_fpr = _check_rate(max_fpr, "max_fpr")
    if max_fpr == 0.0:
        raise ValueError("max_fpr: must be > 0")
    return max_fpr


def aupro(anomaly_maps, masks, max_fpr=0.3, *, n_jobs=None) -> float:
    """Area under the per-region overlap curve up to ``max_fpr``, divided by ``max_fpr``.

    The MVTec AD definition: regions are the 8-connected components of each ground-truth mask,
    the PRO at a threshold is the mean over all regions of the fraction of the region above it,
    the FPR counts normal pixels; the exact curve comes from one global sort and is
    interpolated linearly at ``max_fpr``.

    ``anomaly_maps`` and ``masks`` are ``[n, h, w]`` (or one ``[h, w]`` map).

    >>> import numpy as np
    >>> masks = np.zeros((1, 4, 4), bool); masks[0, 1:3, 1:3] = True
    >>> aupro(masks.astype(float), masks)
    1.0
    """
    check_n_jobs(n_jobs)
    if is_dask(anomaly_maps) or is_dask(masks):  # tables of per-chunk counts, merged (chunks along images)
        from . import _distributed  # noqa: PLC0415

        max_fpr = _check_positive_rate(max_fpr)
        return float(_distributed.partial_area(*_distributed.pro_curve(anomaly_maps, masks, max_fpr), max_fpr) / max_fpr)
    maps, masks, max_fpr = _prepare_maps(anomaly_maps, masks, max_fpr)
    return _core.aupro(maps, masks, max_fpr, n_jobs)


def pro_curve(anomaly_maps, masks, max_fpr=1.0, *, n_jobs=None):
    """(fpr, pro) points of the PRO curve up to the first point past ``max_fpr``."""
    check_n_jobs(n_jobs)
    if is_dask(anomaly_maps) or is_dask(masks):
        from . import _distributed  # noqa: PLC0415

        return _distributed.pro_curve(anomaly_maps, masks, _check_positive_rate(max_fpr))
    maps, masks, max_fpr = _prepare_maps(anomaly_maps, masks, max_fpr)
    return _core.pro_curve(maps, masks, max_fpr, n_jobs)


def demo():
    """Pixel-level metrics on generated anomaly maps (2 million pixels)."""
    import time  # noqa: PLC0415

    rng = np.random.default_rng(0)
    masks = np.zeros((32, 256, 256), dtype=bool)
    for i in range(masks.shape[0]):
        r, c = rng.integers(0, 200, 2)
        masks[i, r:r + rng.integers(8, 50), c:c + rng.integers(8, 50)] = True
    maps = (rng.normal(size=masks.shape) + 1.5 * masks).astype(np.float32)
    start = time.perf_counter()
    summary = evaluate(maps.ravel(), masks.ravel())
    middle = time.perf_counter()
    pro = aupro(maps, masks)
    end = time.perf_counter()
    return [
        {"step": f"metrics: pixel AUROC/AP/F1 ({maps.size:,} px, one sort)",
         "result": f"AUROC {summary['auroc']:.4f}  AP {summary['average_precision']:.4f}  F1max {summary['f1_max']:.4f}",
         "seconds": middle - start},
        {"step": "metrics: AUPRO@0.3 (MVTec definition)", "result": f"AUPRO {pro:.4f}", "seconds": end - middle},
    ]
