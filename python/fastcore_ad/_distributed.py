"""Dask arrays in, exact results out: the distributed plans behind the public functions.

Every plan runs the in-memory functions on the chunks (numpy chunks: the Rust kernels, cupy
chunks: the CUDA kernels) and merges statistics that add up exactly:

- Gaussian fits: per-chunk :class:`~fastcore_ad._moments.GaussianMoments` about one shift,
  merged by a tree reduction; only ``d x d`` matrices travel, never rows.
- Scoring: ``map_blocks`` over row chunks; the fitted mean and factor are one graph key that
  each worker fetches once (not a copy embedded in every chunk task).
- Ranking metrics: per-chunk tables of (distinct score, positives, negatives) from the Rust sort,
  cut into value ranges at common splitters and merged per range on the workers; the curve is
  walked range by range with the counts above each range as offsets, so the result is the
  in-memory curve's, ties included, and only small terms reach the client.

Results are lazy dask arrays for per-row outputs and numpy / Python values for small ones
(a fitted model, a metric). The scheduler is whatever dask uses by default (the active
``distributed.Client`` if there is one): a lost worker's tasks are rerun by dask. This module
imports dask; the family modules import it only when they are given a dask array.
"""

from __future__ import annotations

import functools

import dask
import dask.array as da
import numpy as np

from . import _core
from ._dispatch import (as_array, binary_labels, check_paired_shapes, cupy_module, float_array, is_cupy, to_backend,
                        to_numpy, xp_of)
from ._moments import GaussianMoments

__all__ = ["check_array", "tree_reduce", "gaussian_moments", "map_rows", "binary_summary", "pro_curve", "token_stats",
           "score_logits", "map_method", "mutual_scores",
           "scores_against_bank"]

_FAN_IN = 8  # parts merged per reduction task


def check_array(x, name: str, ndim=None):
    """``x`` after the checks that need no data: a numeric dtype (TypeError otherwise), the
    number of dimensions, and chunk sizes that are known (NaN chunk sizes, as left by boolean
    indexing, are a ValueError saying how to fix them)."""
    if x.dtype == object or x.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a numeric dask array, got dtype {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name}: expected {want} dimensions, got shape {tuple(x.shape)}")
    if any(np.isnan(size) for sizes in x.chunks for size in sizes):
        raise ValueError(f"{name}: a dask array with chunks of unknown size (NaN); call "
                         f"{name}.compute_chunk_sizes() first")
    if x.size == 0:
        raise ValueError(f"{name}: empty array (shape {tuple(x.shape)})")
    return x


def rows_only(x):
    """``x`` chunked along the first axis only (one chunk across every other axis), without
    empty row chunks (boolean masks leave them): the in-memory functions refuse empty input."""
    rows = tuple(n for n in x.chunks[0] if n != 0) if x.ndim else ()
    wanted = {axis: -1 for axis in range(1, x.ndim)}
    if x.ndim and rows and len(rows) != len(x.chunks[0]) and not any(np.isnan(n) for n in rows):
        wanted[0] = rows
    return x.rechunk(wanted) if wanted else x


def tree_reduce(parts, merge):
    """One delayed value: ``parts`` merged ``_FAN_IN`` at a time, level by level."""
    fold = dask.delayed(_fold, pure=True)
    parts = list(parts)
    while len(parts) > 1:
        parts = [fold(merge, *parts[i:i + _FAN_IN]) for i in range(0, len(parts), _FAN_IN)]
    return parts[0]


def _fold(merge, *items):
    out = items[0]
    for item in items[1:]:
        out = merge(out, item)
    return out


def _host_chunk(block, name):
    """A chunk as a finite float numpy array (cupy chunks are copied to the host)."""
    block, backend = as_array(block, name)
    return float_array(to_numpy(block, backend), name)


# ------------------------------------------------------------------------------------------------
# Gaussian fits


def _first_chunk_summary(block, name):
    block = _host_chunk(block, name)
    return float(np.max(np.abs(block))), block.astype(np.float64).mean(axis=0), block.dtype


def _chunk_moments(block, shift, scale, name):
    block = _host_chunk(block, name)
    if scale != 1.0:
        block = block * block.dtype.type(scale)
    return GaussianMoments.of(block, shift)


def gaussian_moments(X, name: str, scale_of, shift=None):
    """``(moments, scale, dtype)`` of a dask ``X`` (``[n, d]`` or ``[n, H, W, d]``): the shift is
    the first chunk's mean and the power-of-two scale ``scale_of(max |X|)``, unless ``shift``
    is given (a stream that goes on: ``scale_of(None)`` is then its scale); per-position maps
    are flattened to ``[n, H*W, d]``."""
    X = rows_only(check_array(X, name, ndim=(2, 4)))
    if X.ndim == 4:
        X = X.reshape(X.shape[0], -1, X.shape[-1])
    blocks = [block for block, rows in zip(X.to_delayed().ravel(), X.chunks[0]) if rows > 0]
    if shift is None:
        # The scale from the largest magnitude of all chunks, as the in-memory fit takes it: the
        # first chunk's alone would refuse a later chunk far larger than it.
        (peak, first_mean, dtype), largest = dask.compute(
            dask.delayed(_first_chunk_summary, pure=True)(blocks[0], name), abs(X).max())
        largest = float(largest)
        scale = scale_of(max(peak, largest) if np.isfinite(largest) else peak)
        shift = first_mean * scale
    else:
        scale, dtype = scale_of(None), X.dtype
    moments = dask.delayed(_chunk_moments, pure=True)
    total = tree_reduce([moments(block, shift, scale, name) for block in blocks], GaussianMoments.merge)
    return dask.compute(total)[0], scale, dtype


# ------------------------------------------------------------------------------------------------
# Scoring


def _apply_to_chunk(block, function, kwargs, *parameters):
    """``function(block, *parameters, **kwargs)`` with the parameters moved to the chunk's side."""
    _, backend = as_array(block, "x")
    parameters = [to_backend(np.asarray(p), backend) for p in parameters]
    return function(block, *parameters, **kwargs)


def map_rows(function, x, parameters, *, out_ndim, dtype, **kwargs):
    """``function(chunk, *parameters, **kwargs)`` on each row chunk of ``x``, lazily.

    The parameters (numpy arrays) become single graph keys shared by every chunk task: each
    worker receives them once. The output keeps the first ``out_ndim`` axes of ``x``.
    """
    x = rows_only(x)
    shared = [dask.delayed(np.asarray(p), pure=True) for p in parameters]
    dropped = tuple(range(out_ndim, x.ndim))
    return da.map_blocks(_apply_to_chunk, x, function, kwargs, *shared, drop_axis=dropped, dtype=dtype,
                         meta=np.empty((0,) * out_ndim, dtype=dtype))


# ------------------------------------------------------------------------------------------------
# Ranking metrics
#
# A table is (distinct values in decreasing order, positives, negatives) per value. Each chunk's
# table comes from the Rust sort (_core.curve_counts); past a few million scores the tables are cut
# at common splitters into value ranges, each range merged on one worker, and the curve is walked
# range by range with the counts above the range as offsets: no task and not the client ever
# holds the whole table. Smaller inputs merge into one table and are walked in one round trip.

_SAMPLES_PER_CHUNK = 64  # values per chunk table from which the range splitters are chosen
_SCORES_PER_RANGE = 1 << 22  # below this many scores per range, one merged table in one task


def _chunk_table(scores, labels):
    """(distinct scores in decreasing order, positives, negatives at each). Integer scores
    stay integers, so those that float64 would merge (beyond 2**53) keep their order."""
    scores, backend = as_array(scores, "scores")
    labels, label_backend = as_array(labels, "labels")
    scores = to_numpy(scores, backend).reshape(-1)
    labels = binary_labels(to_numpy(labels, label_backend).reshape(-1), "labels")
    if scores.dtype.kind in "iu" or scores.size == 0:  # an empty chunk gives an empty table
        values, inverse = np.unique(scores, return_inverse=True)
        inverse = inverse.reshape(-1)
        positives = np.bincount(inverse[labels == 1], minlength=values.size)
        negatives = np.bincount(inverse[labels == 0], minlength=values.size)
        return values[::-1], positives[::-1].astype(np.int64), negatives[::-1].astype(np.int64)
    scores = float_array(scores, "scores", ndim=1)
    false_positives, true_positives, values = _core.curve_counts(scores, labels, None)
    return (values, np.diff(true_positives, prepend=0).astype(np.int64),
            np.diff(false_positives, prepend=0).astype(np.int64))


def _merge_tables(*tables):
    """One table from several (equal values summed), in decreasing order."""
    values = np.concatenate([t[0] for t in tables])
    positives = np.concatenate([t[1] for t in tables])
    negatives = np.concatenate([t[2] for t in tables])
    order = np.argsort(values, kind="stable")[::-1]  # decreasing, without negating unsigned or INT64_MIN
    values, positives, negatives = values[order], positives[order], negatives[order]
    if not values.size:
        return values, positives, negatives
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return values[starts], np.add.reduceat(positives, starts), np.add.reduceat(negatives, starts)


def _sample(table):
    values = table[0]
    return values[np.linspace(0, values.size - 1, min(values.size, _SAMPLES_PER_CHUNK)).astype(np.int64)]


def _split(table, splitters):
    """The table cut into ``len(splitters) + 1`` ranges: values above ``splitters[0]``, then
    each range down to the next splitter (a value equal to a splitter ends its range)."""
    # Positions in the increasing reversal: values above a splitter are the last ones there.
    values = table[0]
    cuts = values.size - np.searchsorted(values[::-1], splitters, side="right")
    bounds = [0, *cuts.tolist(), table[0].size]
    return [tuple(column[a:b] for column in table) for a, b in zip(bounds[:-1], bounds[1:])]


def _totals(table):
    return int(table[1].sum()), int(table[2].sum())


def _walk(table, above, totals, max_fprs, min_tprs):
    """The metrics' terms over one range of the curve, which starts at ``above`` = (true, false
    positives at higher scores), in the order and arithmetic of ``_core.binary_summary``."""
    values, positives, negatives = table
    p, n = totals
    tp = above[0] + np.cumsum(positives).astype(np.float64)
    fp = above[1] + np.cumsum(negatives).astype(np.float64)
    previous_tp, previous_fp = np.r_[float(above[0]), tp[:-1]], np.r_[float(above[1]), fp[:-1]]
    gained = tp > previous_tp
    f1 = np.where(tp > 0, 2.0 * tp / (tp + fp + p), 0.0)
    best = int(np.argmax(f1)) if f1.size else 0
    tpr, fpr = tp / p, fp / n
    return {"twice_area": float(((fp - previous_fp) * (tp + previous_tp)).sum()),
            "ap_sum": float(((tp - previous_tp)[gained] * (tp[gained] / (tp + fp)[gained])).sum()),
            "f1": (float(f1[best]), _threshold(values[best])) if f1.size and f1[best] > 0 else (0.0, float("inf")),
            "tpr_at_fpr": [float(tpr[fpr <= limit].max(initial=0.0)) for limit in max_fprs],
            "fpr_at_tpr": [float(fpr[tpr >= need].min(initial=0.0 if need <= 0.0 else 1.0)) for need in min_tprs]}


def _threshold(value):
    """A score as the in-memory metrics report it: a float, or the exact integer where float64
    would round it (beyond 2**53)."""
    value = value.item()
    return float(value) if not isinstance(value, int) or abs(value) <= 2**53 else value


def _combine(parts, totals):
    """The summary of the whole curve from the walks of its ranges, highest range first."""
    p, n = totals
    if p == 0 or n == 0:
        only = "positive" if p else "negative"
        raise ValueError(f"labels: only {only} samples are present; the metric needs both classes")
    f1_max, f1_threshold = 0.0, float("inf")
    for part in parts:  # the first threshold reaching the maximum wins, as in the sorted walk
        if part["f1"][0] > f1_max:
            f1_max, f1_threshold = part["f1"]
    return {"auroc": sum(part["twice_area"] for part in parts) / (2.0 * p * n),
            "average_precision": sum(part["ap_sum"] for part in parts) / p,
            "f1_max": f1_max, "f1_threshold": f1_threshold,
            "tpr_at_fpr": [max(values) for values in zip(*(part["tpr_at_fpr"] for part in parts))],
            "fpr_at_tpr": [min(values) for values in zip(*(part["fpr_at_tpr"] for part in parts))]}


def binary_summary(scores, labels, max_fprs=(), min_tprs=()):
    """``_core.binary_summary`` of dask (or numpy) scores and labels, exactly: realigned chunks,
    one Rust-sorted table per chunk, value ranges merged on the workers, small terms back."""
    scores, labels = da.asarray(scores), da.asarray(labels)
    check_array(scores, "scores")
    check_array(labels, "labels")
    if scores.size != labels.size:
        raise ValueError(f"scores and labels differ in length: {scores.size} != {labels.size}")
    check_paired_shapes(scores.shape, labels.shape)
    scores, labels = scores.reshape(-1), labels.reshape(-1)
    _, (scores, labels) = da.core.unify_chunks(scores, "i", labels, "i")
    delayed = functools.partial(dask.delayed, pure=True)
    tables = [delayed(_chunk_table)(s, y) for s, y in zip(scores.to_delayed().ravel(), labels.to_delayed().ravel())]
    n_ranges = min(len(tables), -(-scores.shape[0] // _SCORES_PER_RANGE))
    if n_ranges <= 1:  # one merged table is small enough: one round trip
        return dask.compute(delayed(_walk_whole)(tree_reduce(tables, _merge_tables), list(max_fprs),
                                                 list(min_tprs)))[0]
    tables = dask.persist(*tables)  # kept where they were computed, for the rounds below
    samples = np.concatenate(dask.compute(*[delayed(_sample)(t) for t in tables]))
    quantiles = np.linspace(0.0, 1.0, n_ranges + 1)[1:-1]
    # Order statistics of the samples (exact for integer scores too), highest first.
    ordered = np.sort(samples)
    at = np.clip(np.ceil(quantiles * ordered.size).astype(np.int64) - 1, 0, None)  # numpy's "inverted_cdf"
    splitters = np.unique(ordered[at])[::-1] if samples.size else samples
    pieces = [dask.delayed(_split, pure=True, nout=splitters.size + 1)(t, splitters) for t in tables]
    ranges = dask.persist(*[delayed(_merge_tables)(*[piece[r] for piece in pieces])
                            for r in range(splitters.size + 1)])
    counts = dask.compute(*[delayed(_totals)(t) for t in ranges])
    totals = (sum(c[0] for c in counts), sum(c[1] for c in counts))
    if totals[0] == 0 or totals[1] == 0:
        return _combine([], totals)  # raises: one class only
    above = np.cumsum([(0, 0), *counts[:-1]], axis=0)
    walk = delayed(_walk)
    parts = dask.compute(*[walk(t, tuple(int(v) for v in a), totals, list(max_fprs), list(min_tprs))
                           for t, a in zip(ranges, above)])
    return _combine(parts, totals)


def _walk_whole(table, max_fprs, min_tprs):
    totals = _totals(table)
    if totals[0] == 0 or totals[1] == 0:
        return _combine([], totals)  # raises: one class only
    return _combine([_walk(table, (0, 0), totals, max_fprs, min_tprs)], totals)


# ------------------------------------------------------------------------------------------------
# Per-region overlap (AUPRO)


def _pro_chunk_table(maps, masks, budget):
    """(descending distinct values, normal pixels, sum of 1 / region size of anomalous pixels)
    of whole images, plus their region count; values below the point where this chunk alone
    passes the false-positive ``budget`` are dropped (the whole data passes it no later)."""
    from scipy import ndimage  # noqa: PLC0415

    maps, backend = as_array(maps, "anomaly_maps")
    masks, mask_backend = as_array(masks, "masks")
    maps = to_numpy(maps, backend)
    if maps.dtype.kind in "iu":
        # Exact integers: float64 would merge values beyond 2**53 that the in-memory curve keeps
        # apart (it ranks them); the merge below sorts any dtype.
        maps = np.asarray(maps)
    else:
        maps = float_array(maps, "anomaly_maps", ndim=3) + 0  # -0.0 and 0.0 tie
    masks = binary_labels(to_numpy(masks, mask_backend), "masks").astype(bool)
    weights = np.zeros(maps.shape, dtype=np.float64)
    regions = 0
    eight = np.ones((3, 3), dtype=bool)
    for image, mask in enumerate(masks):
        labels, count = ndimage.label(mask, structure=eight)
        if count:
            sizes = np.bincount(labels.ravel())
            weights[image] = np.where(mask, 1.0 / np.maximum(sizes, 1)[labels], 0.0)
        regions += count
    values, inverse = np.unique(maps.ravel(), return_inverse=True)
    normal = np.bincount(inverse, weights=~masks.ravel(), minlength=values.size).astype(np.int64)
    overlap = np.bincount(inverse, weights=weights.ravel(), minlength=values.size)
    return _prune((values[::-1], normal[::-1], overlap[::-1]), budget), regions


def _prune(table, budget):
    """The rows of ``table`` that the walk can reach: ``budget = (max_fpr, normal pixels)``, and
    a value is kept while the normal pixels above it, as a rate computed as the walk computes
    it, do not pass ``max_fpr`` (a product ``max_fpr * n`` rounds differently)."""
    values, normal, overlap = table
    max_fpr, n_ok = budget
    above = np.cumsum(normal) - normal  # normal pixels strictly above each value
    keep = int(np.searchsorted(above / max(n_ok, 1), max_fpr, side="right"))
    return values[:keep], normal[:keep], overlap[:keep]


def _merge_pro_tables(budget, *parts):
    tables, regions = [p[0] for p in parts], sum(p[1] for p in parts)
    values, normal, overlap = (np.concatenate([t[k] for t in tables]) for k in range(3))
    order = np.argsort(values, kind="stable")[::-1]  # descending; -values would wrap integers
    values, normal, overlap = values[order], normal[order], overlap[order]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    merged = (values[starts], np.add.reduceat(normal, starts), np.add.reduceat(overlap, starts))
    return _prune(merged, budget), regions


def pro_curve(anomaly_maps, masks, max_fpr):
    """The PRO curve of ``_core.pro_curve`` for dask maps and masks ``[n, h, w]``, chunked along
    the images (other axes are rechunked whole: regions never cross a chunk): the per-chunk
    tables are cut at the global false-positive budget and merged by sorting."""
    maps, masks = da.asarray(anomaly_maps), da.asarray(masks)
    maps = maps[None] if maps.ndim == 2 else maps
    masks = masks[None] if masks.ndim == 2 else masks
    check_array(maps, "anomaly_maps", ndim=3)
    check_array(masks, "masks")
    if masks.shape != maps.shape:
        raise ValueError(f"anomaly_maps and masks differ in shape: {maps.shape} != {masks.shape}")
    maps, masks = rows_only(maps), rows_only(masks)
    _, (maps, masks) = da.core.unify_chunks(maps, "ihw", masks, "ihw")
    n_ok = int(dask.compute((masks == 0).sum())[0])
    budget = (max_fpr, n_ok)
    table = dask.delayed(_pro_chunk_table, pure=True)
    parts = [table(m, k, budget) for m, k in zip(maps.to_delayed().ravel(), masks.to_delayed().ravel())]
    merged = tree_reduce(parts, functools.partial(_merge_pro_tables, budget))
    (values, normal, overlap), regions = dask.compute(merged)[0]
    if regions == 0:
        raise ValueError("masks: no anomalous pixel in any mask, the PRO curve is undefined")
    if n_ok == 0:
        raise ValueError("masks: every pixel is anomalous, the false positive rate is undefined")
    fpr = np.minimum(np.cumsum(normal) / n_ok, 1.0)
    pro = np.minimum(np.cumsum(overlap) / regions, 1.0)
    past = np.flatnonzero(fpr > max_fpr)
    end = past[0] + 1 if past.size else fpr.size
    fpr, pro = np.r_[0.0, fpr[:end]], np.r_[0.0, pro[:end]]
    if fpr[-1] <= max_fpr:  # every pixel was walked: the curve ends at (1, 1)
        fpr, pro = np.r_[fpr, 1.0], np.r_[pro, 1.0]
    return fpr, pro


def partial_area(x, y, x_max):
    """Area under (x, y) up to ``x_max``, interpolated linearly there (``_core``'s rule)."""
    inside = int(np.searchsorted(x, x_max, side="right"))  # x is non-decreasing
    area = float(np.sum(0.5 * (y[1:inside] + y[:inside - 1]) * np.diff(x[:inside])))
    if inside < x.size and x[inside - 1] < x_max:
        y_max = y[inside - 1] + (y[inside] - y[inside - 1]) * (x_max - x[inside - 1]) / (x[inside] - x[inside - 1])
        area += 0.5 * (y_max + y[inside - 1]) * (x_max - x[inside - 1])
    return area


# ------------------------------------------------------------------------------------------------
# Membership scores over batches of logits


def _along_batch(value, name, chunks):
    """``value`` (numpy or dask, ``[B, ...]``) as delayed blocks matching the batch ``chunks``, or
    a list of Nones when ``value`` is None."""
    if value is None:
        return [None] * len(chunks)
    value = da.asarray(value)
    check_array(value, name)
    if value.shape[0] != sum(chunks):
        raise ValueError(f"{name}: expected {sum(chunks)} sequences like logits, got {value.shape[0]}")
    return list(value.rechunk((chunks, *(-1,) * (value.ndim - 1))).to_delayed().ravel())


def _logits_blocks(logits, targets, mask):
    """Delayed (logits, targets, mask) blocks of whole sequences, the rows of each and the row
    each starts at."""
    if logits.dtype == object:
        raise TypeError("logits: expected float32, float64, float16 or bfloat16, got dtype object")
    if logits.ndim != 3:
        raise ValueError(f"logits: expected 3 dimensions [B, T, V], got shape {tuple(logits.shape)}")
    if any(np.isnan(size) for sizes in logits.chunks for size in sizes):
        raise ValueError("logits: a dask array with chunks of unknown size (NaN); call "
                         "logits.compute_chunk_sizes() first")
    if len(np.shape(targets)) != 2:
        raise ValueError(f"targets: expected integer token ids [B, T], got shape {np.shape(targets)}")
    logits = rows_only(logits)
    rows = logits.chunks[0]
    return (list(logits.to_delayed().ravel()), _along_batch(targets, "targets", rows),
            _along_batch(mask, "mask", rows), rows, np.cumsum((0, *rows))[:-1].tolist())


def _rows_named(function, first_row: int, *args, **kwargs):
    """``function(*args, **kwargs)`` on a batch chunk; an error about its rows says where the
    chunk starts, so that a row index in it can be found in the whole batch."""
    try:
        return function(*args, **kwargs)
    except ValueError as exc:
        if first_row == 0:
            raise
        raise ValueError(f"{exc} (in the batch chunk that starts at row {first_row}: row and shape figures "
                         "above count within that chunk)") from None


def _stacked(function, first_row, logits, targets, mask, kwargs):
    outputs = _rows_named(function, first_row, logits, targets, mask, **kwargs)
    xp = cupy_module() if is_cupy(outputs[0]) else np
    return xp.stack(outputs)


def token_stats(function, logits, targets, mask, n_outputs, **kwargs):
    """The ``n_outputs`` float64 ``[B, T]`` arrays of ``function(logits, targets, mask, **kwargs)``
    (``mia.token_stats``) on each batch chunk of dask ``logits``, as lazy dask arrays."""
    logit_blocks, target_blocks, mask_blocks, rows, starts = _logits_blocks(logits, targets, mask)
    time = int(np.shape(targets)[1])
    stacked = dask.delayed(_stacked, pure=True)
    pieces = [da.from_delayed(stacked(function, start, lg, tg, mk, kwargs), shape=(n_outputs, r, time),
                              dtype=np.float64)
              for lg, tg, mk, r, start in zip(logit_blocks, target_blocks, mask_blocks, rows, starts)]
    joined = da.concatenate(pieces, axis=1)
    return [joined[i] for i in range(n_outputs)]


def _score_rows(function, keys, first_row, logits, targets, mask, texts, kwargs):
    scores = _rows_named(function, first_row, logits, targets, mask, texts=texts, **kwargs)
    return np.stack([np.asarray(scores[key], dtype=np.float64) for key in keys])


def score_logits(function, keys, logits, targets, mask, texts, **kwargs):
    """``function`` (``mia.score_logits``) on each batch chunk of dask ``logits``: a dict of lazy
    float64 ``[B]`` dask arrays under ``keys``; ``texts`` are cut along the same chunks and the
    other arguments (``counts``: ``[V]``) are one graph key shared by the chunks."""
    logit_blocks, target_blocks, mask_blocks, rows, starts = _logits_blocks(logits, targets, mask)
    text_blocks = [None if texts is None else list(texts[a:a + r]) for a, r in zip(starts, rows)]
    shared = {name: (dask.delayed(value, pure=True) if isinstance(value, np.ndarray) else value)
              for name, value in kwargs.items()}
    rows_of = dask.delayed(_score_rows, pure=True)
    pieces = [da.from_delayed(rows_of(function, keys, a, lg, tg, mk, tx, shared), shape=(len(keys), r),
                              dtype=np.float64)
              for lg, tg, mk, tx, r, a in zip(logit_blocks, target_blocks, mask_blocks, text_blocks, rows, starts)]
    joined = da.concatenate(pieces, axis=1)
    return {key: joined[i] for i, key in enumerate(keys)}


# ------------------------------------------------------------------------------------------------
# Fitted models applied to row chunks


def _call_method(block, model, method):
    return getattr(model, method)(block)


def map_method(model, method: str, X, columns: int, dtype):
    """``model.<method>(chunk)`` on each row chunk of dask ``X``, lazily: ``[n, columns]``. The
    model is one graph key, so each worker receives it once."""
    X = rows_only(check_array(X, "X", ndim=2))
    shared = dask.delayed(model, pure=False)
    return da.map_blocks(_call_method, X, shared, method, chunks=(X.chunks[0], (columns,)), dtype=dtype,
                         meta=np.empty((0, 0), dtype=dtype))


# ------------------------------------------------------------------------------------------------
# MuSc mutual scores over image blocks


def _block_pair_minima(queries, references, same_block):
    """``[|I|, |J|, P]`` float64: for each image i of ``queries`` and j of ``references``, the
    distance of each patch of i to its nearest patch of j (exact kNN); +inf where i is j."""
    from .patchcore import knn  # noqa: PLC0415

    queries, backend = as_array(queries, "patches")
    references, _ = as_array(references, "patches")
    xp = xp_of(backend)
    if not (bool(xp.isfinite(queries).all()) and bool(xp.isfinite(references).all())):
        raise ValueError("patches: contains NaN or infinity")
    out = np.empty((queries.shape[0], references.shape[0], queries.shape[1]), dtype=np.float64)
    for i in range(queries.shape[0]):
        for j in range(references.shape[0]):
            if same_block and i == j:
                out[i, j] = np.inf
                continue
            out[i, j] = to_numpy(knn(queries[i], references[j], 1)[0][:, 0], backend)
    return out


def _block_scores(k, dtype, *minima):
    """Mean of the ``k`` smallest per-image minima of one query block: ``[|I|, P]``."""
    from ._memory import check_fits  # noqa: PLC0415

    rows, patches = minima[0].shape[0], minima[0].shape[2]
    images = sum(m.shape[1] for m in minima)
    check_fits(2 * rows * images * patches * 8, f"mutual_scores: the [{rows}, {images}, {patches}] float64 pair "
                                                f"minima of one image block")
    joined = np.concatenate(minima, axis=1)
    smallest = np.partition(joined, k - 1, axis=1)[:, :k] if k < images else joined
    return np.sort(smallest, axis=1).mean(axis=1).astype(dtype)


def _image_blocks(x):
    """Delayed blocks of whole images of dask ``x [N, P, C]`` and the images in each (empty
    blocks dropped)."""
    x = rows_only(x)
    return [(block, rows) for block, rows in zip(x.to_delayed().ravel(), x.chunks[0]) if rows > 0]


def _scores_over_blocks(queries, references, k: int, patches: int, dtype, same_images: bool):
    """One task per pair of (query block I, reference block J) measures ``[|I|, |J|, P]``
    per-image minima; one task per query block averages the ``k`` smallest per patch. With
    ``same_images`` the queries are the references and an image skips itself."""
    pair = dask.delayed(_block_pair_minima, pure=True)
    score = dask.delayed(_block_scores, pure=True)
    dtype = np.dtype(dtype)
    pieces = []
    for a, (query, n_rows) in enumerate(queries):
        minima = [pair(query, reference, same_images and a == b) for b, (reference, _) in enumerate(references)]
        pieces.append(da.from_delayed(score(k, dtype, *minima), shape=(n_rows, patches), dtype=dtype,
                                      meta=np.empty((0, 0), dtype=dtype)))
    return da.concatenate(pieces, axis=0)


def mutual_scores(patches, k: int):
    """MuSc mutual scores of dask ``patches [N, P, C]`` chunked along the images, lazily:
    ``[N, P]``. One task per pair of image blocks (I, J) measures ``[|I|, |J|, P]`` per-image
    minima; one task per query block I gathers its ``[|I|, N, P]`` minima and averages the
    ``k`` smallest per patch."""
    blocks = _image_blocks(patches)
    return _scores_over_blocks(blocks, blocks, k, int(patches.shape[1]), patches.dtype, True)


def scores_against_bank(queries, bank, k: int):
    """MuSc scores of ``queries [M, P, C]`` against a ``bank [Nb, Pb, C]`` (dask arrays chunked
    along the images), lazily: ``[M, P]``, the mean of the ``k`` smallest per-bank-image minima.
    One task per pair of (query block, bank block); one task per query block gathers
    ``[|I|, Nb, P]`` minima."""
    return _scores_over_blocks(_image_blocks(queries), _image_blocks(bank), k, int(queries.shape[1]), queries.dtype,
                               False)
