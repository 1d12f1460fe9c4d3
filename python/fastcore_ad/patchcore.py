"""PatchCore (Roth et al., CVPR 2022) and its kernels: exact k nearest neighbours against a bank
and the greedy k-center coreset.

numpy arrays run on the Rust kernels, cupy arrays on the CUDA kernels (and come back as cupy).

>>> import numpy as np
>>> from fastcore_ad import knn
>>> bank = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
>>> distances, indices = knn(np.array([[0.9, 0.1]]), bank, k=2)
>>> indices.tolist(), np.round(distances, 4).tolist()
([[1, 0]], [[0.1414, 0.9055]])
"""

from __future__ import annotations

import numpy as np

from . import maps as _maps
from ._base import FastcoreEstimator
from ._dispatch import (as_array, check_switch, float_array, kernels, same_backend, square_safe_bound, square_safe_scale,
                        to_backend, xp_of)
from ._memory import check_fits
from .progress import progress

__all__ = ["knn", "greedy_coreset", "PatchCore", "PatchCoreResult", "sparse_random_projection"]

METRICS = ("euclidean", "cosine")


def _whole(value, name: str, low: int, high: int | None = None) -> int:
    """An integer in [low, high] (bool and non-integers refused), naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    value = int(value)
    if high is None and value < low:
        raise ValueError(f"{name}: must be at least {low}, got {value}")
    if high is not None and not low <= value <= high:
        raise ValueError(f"{name}: must lie in [{low}, {high}], got {value}")
    return value


def _rows_scaled(x, xp):
    """``x``, or each row divided by the power of two nearest its largest magnitude when some row
    lies where its squared norm would overflow or underflow (zero rows stay zero)."""
    if not x.size:
        return x
    top = xp.maximum(x.max(axis=1, keepdims=True), -x.min(axis=1, keepdims=True))
    nonzero, bound = top[top > 0], square_safe_bound(x.dtype)
    if not nonzero.size or (float(nonzero.max()) <= bound and float(nonzero.min()) >= 1.0 / bound):
        return x
    _, exponent = xp.frexp(xp.where(top > 0, top, 1.0))
    return xp.ldexp(x, -exponent)


def knn(queries, bank, k=1, *, metric="euclidean", n_jobs=None):
    """Exact k nearest neighbours of each row of ``queries [m, d]`` among the rows of
    ``bank [n, d]``: ``(distances [m, k] float64, indices [m, k] int64)``, ascending, ties of
    the computed float64 distances broken by the lower bank index (two cosines equal in exact
    arithmetic may round to distances one unit in the last place apart, which then order them).

    ``metric="euclidean"`` gives ``||q - b||``, ``"cosine"`` gives ``1 - q.b / (|q| |b|)``.
    Queries and bank of different float types are measured in the finer one.
    Dot products come from tiled GEMM; every candidate that could enter the top k is
    re-measured exactly in float64, so the result equals a float64 brute force while memory
    stays at one tile per thread (the full distance matrix is never formed).

    >>> d, i = knn(np.eye(3), np.eye(3), k=1)
    >>> i.ravel().tolist(), d.ravel().tolist()
    ([0, 1, 2], [0.0, 0.0, 0.0])
    """
    arrays, backend = same_backend({"queries": queries, "bank": bank})
    q = float_array(arrays["queries"], "queries", backend=backend, ndim=2)
    b = float_array(arrays["bank"], "bank", backend=backend, ndim=2)
    if b.shape[1] != q.shape[1]:
        raise ValueError(f"bank: expected {q.shape[1]} features like the queries, got {b.shape[1]}")
    k = _whole(k, "k", 1, int(b.shape[0]))
    if backend == "numpy":
        # float64 distances and int64 indices, [m, k] each (on the GPU the device allocator says).
        check_fits(16 * int(q.shape[0]) * k, f"k={k}: distances and indices of {q.shape[0]} queries")
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    # One precision for both, the finer: a float64 bank is not rounded to float32 queries (pass
    # both in float32 for float32 speed).
    dtype = np.result_type(q.dtype, b.dtype)
    q, b = q.astype(dtype, copy=False), b.astype(dtype, copy=False)
    xp = xp_of(backend)
    if metric == "cosine":
        # Cosine ignores each row's scale: rows of 1e-200 or 1e200 have norms, their squares do not.
        q, b = _rows_scaled(q, xp), _rows_scaled(b, xp)
        return kernels(backend).knn(q, b, k, metric, n_jobs)
    scale = square_safe_scale([q, b], xp)
    if scale == 1.0:
        return kernels(backend).knn(q, b, k, metric, n_jobs)
    distances, indices = kernels(backend).knn(q * scale, b * scale, k, metric, n_jobs)
    with np.errstate(over="ignore"):
        distances = distances / distances.dtype.type(scale)
    if not bool(xp.isfinite(distances).all()):
        # A distance past the dtype's range (values near +-max apart): no float holds it.
        raise ValueError(f"queries, bank: a distance overflows {distances.dtype}; rescale the features")
    return distances, indices


def greedy_coreset(X, n_select, *, start=0, n_jobs=None, progress_bar=True):
    """Exact greedy k-center selection (PatchCore's coreset): ``n_select`` row indices of
    ``X [n, d]`` (int64, distinct), beginning with ``start``; each step takes the unselected
    point whose minimum squared distance to the points selected so far is largest (ties: the
    lowest index).

    On the CPU the minimum distances are updated lazily: a point is measured against the new
    centres only when its stale minimum (an upper bound) reaches the top of a max-queue, so
    points far from the frontier wait and then meet many centres at once, from cache. Distances
    are compared in float64, so the selection equals a float64 implementation of the rule index
    for index. On CUDA each step is one full pass over ``X``.

    >>> X = np.array([[0.0], [1.0], [10.0], [4.0]])
    >>> greedy_coreset(X, 3, progress_bar=False).tolist()
    [0, 2, 3]
    """
    check_switch(progress_bar, "progress_bar")
    x, backend = as_array(X, "X")
    x = float_array(x, "X", backend=backend, ndim=2)
    n = int(x.shape[0])
    n_select = _whole(n_select, "n_select", 1, n)
    start = _whole(start, "start", 0, n - 1)
    scale = square_safe_scale([x], xp_of(backend))
    if scale != 1.0:
        x = x * scale
    # A bar for runs of seconds or more: on the CPU about 5e10 values of full passes per step,
    # of which the lazy rule measures a small part (200,000 x 128 -> 20,000: 5e11, 30 s).
    bar = progress(None, total=n_select, desc="coreset", enabled=progress_bar and n_select * n * x.shape[1] > 5e10)
    done = [0]

    def advance(count):
        if bar is not None:
            bar.update(count - done[0])
        done[0] = count

    try:
        chosen = kernels(backend).greedy_coreset(x, n_select, start, advance, n_jobs)
    finally:
        if bar is not None:
            bar.close()
    return _distinct_tail(chosen, n, backend)


def _distinct_tail(chosen, n: int, backend):
    """The selection with its repeats replaced. A point is chosen again only once every point
    lies at distance 0 from the selection (all remaining maxima are 0, and the lowest index,
    already chosen, wins the tie); from there the rule goes on with the lowest indices not
    yet chosen."""
    host = np.asarray(to_backend(chosen, "numpy"))
    if np.bincount(host, minlength=n).max(initial=0) <= 1:
        return chosen
    seen = np.zeros(n, dtype=bool)
    for at, index in enumerate(host):
        if seen[index]:
            host = host.copy()
            host[at:] = np.flatnonzero(~seen)[:host.size - at]
            return to_backend(host, backend)
        seen[index] = True
    return chosen


# ---------------------------------------------------------------------------------------------
# PatchCore


class PatchCoreResult:
    """Scores of one PatchCore run: ``image_scores [N]``, ``patch_scores [N, H, W]`` (distance of
    each patch to its nearest memory-bank vector) and :meth:`anomaly_maps` for pixel maps."""

    def __init__(self, image_scores, patch_scores, image_size=None):
        self.image_scores = image_scores
        self.patch_scores = patch_scores
        self.image_size = image_size

    def __repr__(self):
        return f"PatchCoreResult(images={self.patch_scores.shape[0]}, patch_grid={tuple(self.patch_scores.shape[1:])})"

    def anomaly_maps(self, image_size=None, sigma=4.0, *, align_corners=_maps.ALIGN_CORNERS, mode=_maps.MODE,
                     truncate=_maps.TRUNCATE):
        """Pixel maps ``[N, height, width]`` through :func:`fastcore_ad.maps.anomaly_maps` (the
        paper smooths with a Gaussian of sigma 4 pixels)."""
        size = image_size if image_size is not None else self.image_size
        if size is None:
            raise ValueError("image_size: give the output size (here or to predict)")
        return _maps.anomaly_maps(self.patch_scores, size, sigma, align_corners=align_corners, mode=mode,
                                  truncate=truncate)


def sparse_random_projection(n_features: int, n_components: int, seed) -> np.ndarray:
    """A sparse random projection ``[n_features, n_components]`` (Li, Hastie & Church 2006):
    entries ``+-sqrt(s / n_components)`` with probability ``1 / (2 s)`` each, 0 otherwise,
    ``s = sqrt(n_features)``; pairwise distances are preserved in expectation."""
    n_features = _whole(n_features, "n_features", 1)
    n_components = _whole(n_components, "n_components", 1)
    check_fits(8 * 2 * n_features * n_components, f"n_features x n_components = {n_features} x {n_components}")
    rng = np.random.default_rng(seed)
    s = np.sqrt(n_features)
    u = rng.random((n_features, n_components))
    scale = np.sqrt(s / n_components)
    return np.where(u < 1 / (2 * s), scale, np.where(u > 1 - 1 / (2 * s), -scale, 0.0))


class PatchCore(FastcoreEstimator):
    """PatchCore: a memory bank of locally aggregated patch features of normal images, thinned
    by a greedy k-center coreset; a test patch scores its distance to the nearest bank vector.

    Parameters
    ----------
    coreset_ratio : float in (0, 1]
        Fraction of the training patches kept in the memory bank.
    projection_dim : int or None
        Dimension of the sparse random projection the coreset is chosen in (None: the features
        as they are). The bank keeps the full-dimension vectors.
    num_neighbors : int
        Bank neighbours of the most anomalous patch's nearest bank vector used to re-weight the
        image score (the paper's b); 1 scores the images without re-weighting.
    locality : odd int
        Neighbourhood of the local aggregation (the LNAMD box of :func:`fastcore_ad.musc.lnamd`).
        LNAMD standardises each image's features and gives every patch vector unit length (at
        any locality, 1 included), so an offset or scale of a whole image's features leaves its
        scores unchanged: anomalies are patches unlike the bank's, not images of another level.
    seed : int or None
        Seed of the projection and of the coreset's first point.
    n_jobs, device
        Threads of the Rust kernels; "auto" | "cpu" | "cuda" as for the other estimators.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> good = rng.normal(size=(4, 6, 6, 8))
    >>> bad = good[:1].copy(); bad[0, 2, 3] += 6.0
    >>> model = PatchCore(coreset_ratio=0.5, projection_dim=None, seed=0).fit(good)
    >>> result = model.predict(np.concatenate([good[1:2], bad]))
    >>> bool(result.image_scores[1] > result.image_scores[0])
    True
    """

    _fitted_attribute = "memory_bank_"

    def __init__(self, coreset_ratio=0.1, projection_dim=128, num_neighbors=9, locality=3, seed=None, n_jobs=None,
                 device="auto"):
        self.coreset_ratio = coreset_ratio
        self.projection_dim = projection_dim
        self.num_neighbors = num_neighbors
        self.locality = locality
        self.seed = seed
        self.n_jobs = n_jobs
        self.device = device

    def _check_params(self):
        ratio = self.coreset_ratio
        if isinstance(ratio, (bool, np.bool_)) or not isinstance(ratio, (int, float, np.integer, np.floating)) \
                or not 0.0 < float(ratio) <= 1.0:
            raise ValueError(f"coreset_ratio: must lie in (0, 1], got {ratio!r}")
        if self.projection_dim is not None:
            _whole(self.projection_dim, "projection_dim", 1)
        _whole(self.num_neighbors, "num_neighbors", 1)
        locality = _whole(self.locality, "locality", 1, (1 << 31) - 1)
        if locality % 2 == 0:
            raise ValueError(f"locality: must be odd, got {locality}")
        if self.seed is not None:
            _whole(self.seed, "seed", 0, 2**63 - 1)
        self._check_common_params()

    def _patches(self, features, what):
        """Aggregated patch vectors ``[N, H, W, C_total]`` of one array or a list of levels, and
        the channels of each level (a prediction must bring the levels the bank was built from)."""
        from .musc import lnamd  # noqa: PLC0415

        multi = isinstance(features, (list, tuple))
        raw = list(features) if multi else [features]
        if not raw:
            raise ValueError(f"{what}: empty list of levels")
        levels, backend = [], None
        for index, level in enumerate(raw):
            name = f"{what}[{index}]" if multi else what
            x, b = as_array(level, name)
            b = self._target_backend(b)
            if backend is not None and b != backend:
                raise TypeError(f"{what}: mix of CPU (numpy) and GPU (cupy) levels; put them on one device")
            backend = b
            x = float_array(to_backend(x, b), name, backend=b, ndim=4)
            if levels and x.shape[0] != levels[0].shape[0]:
                raise ValueError(f"{name}: expected {levels[0].shape[0]} images like {what}[0], got {x.shape[0]}")
            levels.append(lnamd(x, int(self.locality), n_jobs=self._n_jobs()))
        grid = (max(lv.shape[1] for lv in levels), max(lv.shape[2] for lv in levels))
        xp = xp_of(backend)
        resized = []
        for lv in levels:
            if lv.shape[1:3] != grid:
                n, h, w, c = lv.shape
                planes = xp.moveaxis(lv, 3, 1).reshape(n * c, h, w)
                lv = xp.moveaxis(_maps.upsample(planes, grid).reshape(n, c, *grid), 1, 3)
            resized.append(lv)
        dtype = np.result_type(*[lv.dtype for lv in resized])
        out = xp.ascontiguousarray(xp.concatenate([lv.astype(dtype, copy=False) for lv in resized], axis=3))
        return out, backend, tuple(int(lv.shape[3]) for lv in levels)

    def fit(self, features, y=None):
        """Build the memory bank from normal images' features (``[N, H, W, C]`` or a list of
        levels, resized to the largest grid and concatenated); ``y`` is ignored."""
        self._check_params()
        patches, backend, level_channels = self._patches(features, "features")
        n, h, w, c = patches.shape
        flat = patches.reshape(n * h * w, c)
        xp = xp_of(backend)
        rng = np.random.default_rng(self.seed)
        select_from = flat
        if self.projection_dim is not None and int(self.projection_dim) < c:
            projection = sparse_random_projection(c, int(self.projection_dim), rng.integers(2**63))
            select_from = xp.ascontiguousarray(flat @ xp.asarray(projection.astype(flat.dtype)))
        n_select = max(1, int(float(self.coreset_ratio) * flat.shape[0]))
        start = int(rng.integers(flat.shape[0]))
        self.coreset_indices_ = greedy_coreset(select_from, n_select, start=start, n_jobs=self._n_jobs(),
                                               progress_bar=False)
        self.memory_bank_ = xp.ascontiguousarray(flat[self.coreset_indices_])
        self.n_features_in_ = int(c)
        self.level_channels_ = level_channels
        self.patch_grid_ = (int(h), int(w))
        return self

    def predict(self, features, image_size=None):
        """Score new images: a :class:`PatchCoreResult`. The image score is the largest patch
        score re-weighted as in the paper: with ``p*`` the most anomalous patch and ``m*`` its
        nearest bank vector, ``s = (1 - exp(|p* - m*|) / sum_{m in N_b(m*)} exp(|p* - m|)) * |p* - m*|``
        over the ``num_neighbors`` bank neighbours ``N_b`` of ``m*`` (``m*`` included). With
        fewer than two such neighbours (``num_neighbors=1``, or a bank of one vector) the softmax
        would be 1 and every score 0, so the image score is ``|p* - m*|`` itself.

        ``features`` must hold the levels of :meth:`fit`, in the same order and with the same
        channels each: the bank's columns are those levels side by side."""
        self._check_fitted()
        if image_size is not None:
            image_size = _maps._check_size(image_size, "image_size")
        patches, backend, level_channels = self._patches(features, "features")
        n, h, w, c = patches.shape
        fitted = getattr(self, "level_channels_", None)
        if fitted is None:  # a model pickled before the levels were recorded: their total only
            fitted = level_channels if sum(level_channels) == self.n_features_in_ else (self.n_features_in_,)
        if level_channels != tuple(fitted):
            def described(channels):
                return f"{len(channels)} level(s) of {', '.join(map(str, channels))} channels"
            raise ValueError(f"features: the model was fitted on {described(fitted)}, got {described(level_channels)}")
        xp = xp_of(backend)
        bank = to_backend(self.memory_bank_, backend).astype(patches.dtype, copy=False)
        flat = patches.reshape(n * h * w, c)
        dist, nearest = knn(flat, bank, 1, n_jobs=self._n_jobs())
        patch_scores = dist[:, 0].reshape(n, h, w)
        per_image = patch_scores.reshape(n, h * w)
        worst = xp.argmax(per_image, axis=1)
        rows = xp.arange(n) * (h * w) + worst
        star = flat[rows]                                   # the most anomalous patch of each image
        m_star = nearest[rows, 0]
        s_star = per_image[xp.arange(n), worst].astype(np.float64)
        b = min(int(self.num_neighbors), int(bank.shape[0]))
        weight = xp.ones(n)
        if b >= 2:
            _, neighbours = knn(bank[m_star], bank, b, n_jobs=self._n_jobs())
            # Distances of p* to the neighbours of m*, then the weight 1 - softmax at m* (stable form).
            diffs = star[:, None, :].astype(np.float64) - bank[neighbours].astype(np.float64)
            to_neighbours = xp.sqrt((diffs ** 2).sum(axis=2))
            log_den = xp.log(xp.exp(to_neighbours - s_star[:, None]).sum(axis=1))
            # Rounding can take 1 - softmax a hair below 0; a score is a distance, never negative.
            weight = xp.maximum(1.0 - xp.exp(-log_den), 0.0)
        image_scores = weight * s_star
        return PatchCoreResult(image_scores, patch_scores, image_size)

    def decision_function(self, features):
        """Image scores ``[N]`` (higher = more anomalous)."""
        return self.predict(features).image_scores
