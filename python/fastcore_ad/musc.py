"""MuSc: zero-shot anomaly classification and segmentation by mutual scoring (Li et al., ICLR 2024).

No training and no prompts: a normal patch of one unlabeled image finds close patches in the
other images of the batch, an anomalous patch does not. The steps, on patch features of N
images from one or more layers (``[N, H, W, C]`` each):

1. LNAMD per layer and degree r: standardise each image's map, r x r box mean (zero padding,
   divided by r*r), L2-normalise every patch (:func:`lnamd`);
2. mutual scoring: for image i, patch p and every other image j, the distance to the nearest
   patch of j; the score is the mean of the ``k = max(1, int((N-1) * top_ratio))`` smallest
   (:func:`mutual_scores`);
3. the patch map is the mean over layers and degrees, the image score its maximum;
4. optional RsCIN re-scoring with image embeddings (:func:`rscin`);
5. pixel maps by bilinear upsampling and optional Gaussian smoothing (:mod:`fastcore_ad.maps`).

numpy inputs run in Rust, cupy inputs on the GPU (CUDA), and come back as the same type.

>>> import numpy as np
>>> from fastcore_ad.musc import MuSc
>>> rng = np.random.default_rng(0)
>>> texture = rng.normal(size=(6, 6, 16))
>>> feats = (texture + 0.1 * rng.normal(size=(4, 6, 6, 16))).astype(np.float32)
>>> feats[2, 3, 3] += 3.0                       # one odd patch in image 2
>>> result = MuSc(degrees=(1,)).predict(feats)
>>> result.patch_scores.shape, int(result.image_scores.argmax())
((4, 6, 6), 2)
>>> result.anomaly_maps(24).shape
(4, 24, 24)
"""

from __future__ import annotations

import time

import numpy as np

from . import _core
from . import maps as _maps
from ._base import FastcoreEstimator
from ._dispatch import as_array, check_switch, float_array, is_cupy, is_dask, kernels, square_safe_scale, to_backend, to_numpy, xp_of
from .progress import progress

__all__ = ["MuSc", "MuScResult", "lnamd", "mutual_scores", "scores_against_bank", "rscin", "demo", "top_k"]

_PROGRESS_FLOPS = 2e11  # show a bar when the passes together exceed about a second of work


def _check_ratio(top_ratio) -> float:
    if isinstance(top_ratio, (bool, np.bool_)) or not isinstance(top_ratio, (int, float, np.integer, np.floating)):
        raise TypeError(f"top_ratio: expected a number in (0, 1], got {top_ratio!r}")
    value = float(top_ratio)
    if not (0.0 < value <= 1.0):
        raise ValueError(f"top_ratio: must lie in (0, 1], got {top_ratio}")
    return value


def _check_degree(r, name="degrees") -> int:
    try:
        whole = int(r)
    except (TypeError, ValueError, OverflowError):  # None, "3", NaN, inf
        whole = None
    if isinstance(r, bool) or whole is None or whole != r or whole < 1 or whole % 2 == 0 or whole >= 1 << 31:
        what = "every box size" if name == "degrees" else "the box size"
        raise ValueError(f"{name}: {what} must be a positive odd integer, got {r!r}")
    return int(r)


def _check_memory(max_memory):
    if max_memory is None:
        return None
    if isinstance(max_memory, (bool, np.bool_)) or not isinstance(max_memory, (int, np.integer, float, np.floating)):
        raise TypeError(f"max_memory: expected None or a number of bytes, got {max_memory!r}")
    whole = isinstance(max_memory, (int, np.integer)) or (np.isfinite(max_memory) and max_memory == int(max_memory))
    if not (whole and max_memory >= 1):
        raise ValueError(f"max_memory: must be a positive whole number of bytes, got {max_memory!r}")
    return min(int(max_memory), 2**63 - 1)  # more than any machine holds; keeps it a 64-bit size


def _check_window(window) -> int:
    """Grid cells around a patch's position in aligned scoring (any size past the grid is the whole grid)."""
    if isinstance(window, (bool, np.bool_)) or not isinstance(window, (int, np.integer)) or window < 0:
        raise ValueError(f"window: must be an integer >= 0 (grid cells), got {window!r}")
    return min(int(window), (1 << 31) - 1)


def _check_k_list(k_list) -> tuple:
    """RsCIN's windows: one integer >= 1 or a sequence of them."""
    if isinstance(k_list, (int, np.integer)) and not isinstance(k_list, (bool, np.bool_)):
        k_list = (k_list,)
    if not isinstance(k_list, (list, tuple, np.ndarray)) or not all(
            isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)) for k in k_list):
        raise TypeError(f"k_list: expected a sequence of integer windows, got {k_list!r}")
    if not len(k_list) or any(k < 1 for k in k_list):
        raise ValueError(f"k_list: needs at least one window, each >= 1, got {tuple(k_list)}")
    return tuple(int(k) for k in k_list)


def _host_budget(max_memory, backend: str, per_query: int, what: str):
    """The bytes of per-pair minima the CPU kernels keep at once: ``max_memory``, else half the
    memory free now, so that the query images go in chunks instead of all at once (the result
    is the same). One query image's minima must fit: a MemoryError naming them otherwise,
    before the kernel allocates (a failed allocation there would abort the process)."""
    if backend != "numpy":
        return max_memory  # cupy reports its own out-of-memory errors
    from ._memory import available_bytes, check_fits  # noqa: PLC0415

    check_fits(per_query, what)
    return max_memory if max_memory is not None else max(1, available_bytes() // 2)


def _unscaled(out, scale, name):
    if scale == 1.0:
        return out
    with np.errstate(over="ignore"):
        out = out / out.dtype.type(scale)
    if not bool(xp_of("cupy" if is_cupy(out) else "numpy").isfinite(out).all()):
        raise ValueError(f"{name}: the distances overflow {out.dtype}; rescale the features")
    return out


def top_k(references: int, top_ratio: float) -> int:
    """The number of smallest nearest-image distances averaged: ``max(1, int(references * top_ratio))``."""
    if isinstance(references, (bool, np.bool_)) or not isinstance(references, (int, np.integer)) \
            or not 0 <= references < 1 << 63:
        raise ValueError(f"references: must be a non-negative integer, got {references!r}")
    return int(_core.musc_top_k(int(references), _check_ratio(top_ratio)))


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------

def lnamd(features, r, *, n_jobs=None):
    """LNAMD of ``features [N, H, W, C]`` with an ``r x r`` box (r odd): ``[N, H, W, C]``.

    Each image is standardised over all its H*W*C values (eps 1e-5), averaged over r x r
    windows (zero padding, divisor r*r) and every patch vector is L2-normalised.

    >>> import numpy as np
    >>> z = lnamd(np.random.default_rng(0).normal(size=(2, 5, 5, 8)), 3)
    >>> bool(np.allclose(np.linalg.norm(z, axis=-1), 1.0))
    True
    """
    x, backend = as_array(features, "features")
    x = float_array(x, "features", backend=backend, ndim=4)
    r = _check_degree(r, "r")
    return kernels(backend).musc_lnamd(x, r, n_jobs)


def mutual_scores(patches, top_ratio=0.3, *, aligned=False, window=1, return_pair_minima=False, max_memory=None,
                  n_jobs=None):
    """Mutual scores of ``patches [N, P, C]`` (or ``[N, H, W, C]``): ``[N, P]`` (or ``[N, H, W]``).

    For every image i, patch p and other image j, ``a(i, p, j) = min_q ||z_ip - z_jq||``; the
    score is the mean of the ``k = max(1, int((N-1) * top_ratio))`` smallest ``a(i, p, .)``.
    Exact Euclidean distances for any input (not only unit vectors); ``max_memory`` bounds the
    bytes of per-pair minima kept at once (None: on the CPU, half the memory free now; one
    query image's minima must fit, else a MemoryError before any work).

    ``aligned=True`` (``[N, H, W, C]`` input) takes the minimum only over the patches q within
    ``window`` grid cells of p's position in image j (parts that sit at the same place in every
    image). ``return_pair_minima=True`` also returns ``a`` as ``[N, N, P]`` (float64, zero on the
    diagonal), what graph-based successors of MuSc consume; its memory is checked first.

    >>> import numpy as np
    >>> z = np.zeros((2, 1, 3, 1)); z[1, 0, 0, 0] = 2.0       # image 1's left patch differs
    >>> mutual_scores(z, 1.0, aligned=True, window=0).tolist()
    [[[2.0, 0.0, 0.0]], [[2.0, 0.0, 0.0]]]
    >>> mutual_scores(z, 1.0, aligned=True, window=1).tolist()
    [[[0.0, 0.0, 0.0]], [[2.0, 0.0, 0.0]]]

    >>> import numpy as np
    >>> z = np.zeros((3, 2, 4)); z[2, 1, 0] = 1.0
    >>> mutual_scores(z, top_ratio=0.5).tolist()
    [[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]

    A dask ``patches`` chunked along the images gives a lazy dask array (numpy chunks) equal to
    the in-memory scores to rounding (a few units in the last place): one task per pair of
    image blocks (I, J) finds the per-image minima by exact kNN, ``[|I|, |J|, P]`` float64 (8 bytes each), and one task per block I averages
    the k smallest of its ``[|I|, N, P]`` minima, which must fit in the worker's memory twice
    (checked there; 8 * |I| * N * P bytes: choose the image chunks so). ``aligned`` and
    ``return_pair_minima`` are not available on dask arrays; ``max_memory`` does not apply.
    """
    if is_dask(patches):
        return _dask_mutual_scores(patches, top_ratio, aligned, return_pair_minima)
    x, backend = as_array(patches, "patches")
    x = float_array(x, "patches", backend=backend, ndim=(3, 4))
    check_switch(aligned, "aligned")
    check_switch(return_pair_minima, "return_pair_minima")
    if aligned and x.ndim != 4:
        raise ValueError(f"patches: aligned scoring needs [N, H, W, C] (the patch grid), got shape {tuple(x.shape)}")
    window = _check_window(window)
    spatial = x.shape[1:3] if x.ndim == 4 else None
    if x.shape[0] < 2:
        raise ValueError(f"patches: mutual scoring needs at least 2 images, got {x.shape[0]}")
    top_ratio = _check_ratio(top_ratio)
    max_memory = _check_memory(max_memory)
    grid = x
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    minima = _pair_minima(grid, bool(aligned), int(window), backend, n_jobs) if return_pair_minima else None
    if aligned:
        scale = square_safe_scale([grid], xp_of(backend))
        out = kernels(backend).musc_aligned_mutual_scores(grid * grid.dtype.type(scale) if scale != 1.0 else grid,
                                                          top_ratio, int(window), n_jobs)
        out = _unscaled(out, scale, "patches")
        return (out, minima) if return_pair_minima else out
    n, p = int(x.shape[0]), int(x.shape[1])
    max_memory = _host_budget(max_memory, backend, n * p * x.itemsize,
                              f"patches: one image's minima against {n} images of {p} patches")
    scale = square_safe_scale([x], xp_of(backend))
    out = kernels(backend).musc_mutual_scores(x * x.dtype.type(scale) if scale != 1.0 else x, top_ratio, max_memory,
                                              n_jobs)
    out = _unscaled(out, scale, "patches")
    out = out.reshape(x.shape[0], *spatial) if spatial is not None else out
    return (out, minima) if return_pair_minima else out


def _dask_mutual_scores(patches, top_ratio, aligned, return_pair_minima):
    from . import _distributed  # noqa: PLC0415

    x = _dask_float(patches, "patches", (3, 4))
    if aligned or return_pair_minima:
        raise ValueError("patches: aligned scoring and return_pair_minima need an in-memory array, not a dask array")
    if x.shape[0] < 2:
        raise ValueError(f"patches: mutual scoring needs at least 2 images, got {x.shape[0]}")
    k = top_k(int(x.shape[0]) - 1, _check_ratio(top_ratio))
    flat = _distributed.rows_only(x)
    flat = flat.reshape(x.shape[0], -1, x.shape[-1]) if x.ndim == 4 else flat
    out = _distributed.mutual_scores(flat, k)
    return out.reshape(x.shape[:-1]) if x.ndim == 4 else out


def _dask_float(x, name, ndim, dtype=None):
    """Dask ``x`` (numpy is wrapped) checked and cast to float32 / float64 (or ``dtype``)."""
    import dask.array as da  # noqa: PLC0415

    from . import _distributed  # noqa: PLC0415

    x = _distributed.check_array(da.asarray(x), name, ndim=ndim)
    if dtype is None:  # the in-memory rule (float_array): float16 computes in float32
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32 if x.dtype == np.float16 else np.float64
    return x.astype(dtype) if x.dtype != dtype else x


def _dask_scores_against_bank(queries, bank, top_ratio):
    from . import _distributed  # noqa: PLC0415

    q = _dask_float(queries, "queries", 3)
    b = _dask_float(bank, "bank", 3, dtype=q.dtype)
    if b.shape[-1] != q.shape[-1]:
        raise ValueError(f"bank: expected {q.shape[-1]} channels like the queries, got {b.shape[-1]}")
    k = top_k(int(b.shape[0]), _check_ratio(top_ratio))
    return _distributed.scores_against_bank(_distributed.rows_only(q), _distributed.rows_only(b), k)


def _pair_minima(grid, aligned: bool, window: int, backend: str, n_jobs):
    """``[N, N, P]`` minimum distances of each patch of image i to image j (exact kNN per pair;
    aligned: within the window), zero on the diagonal. Memory is checked before allocating."""
    from ._memory import check_fits  # noqa: PLC0415
    from .patchcore import knn  # noqa: PLC0415

    xp = xp_of(backend)
    n = int(grid.shape[0])
    flat = grid.reshape(n, -1, grid.shape[-1])
    p = int(flat.shape[1])
    check_fits(n * n * p * 8, f"return_pair_minima: the [{n}, {n}, {p}] float64 pair minima")
    out = xp.zeros((n, n, p), dtype=np.float64)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            if not aligned:
                out[i, j] = knn(flat[i], flat[j], 1, n_jobs=n_jobs)[0][:, 0]
                continue
            # Aligned: each patch against its window in image j (two images, so k = 1 of 1).
            pair = xp.stack([grid[i], grid[j]])
            h, w = int(grid.shape[1]), int(grid.shape[2])
            out[i, j] = _aligned_pair(pair, h, w, window)
    return out


def _aligned_pair(pair, h: int, w: int, window: int):
    """Aligned minima of image 0's patches against image 1 (the aligned kernel with 2 images)."""
    from . import _core  # noqa: PLC0415

    host = np.ascontiguousarray(to_numpy(pair, "cupy" if not isinstance(pair, np.ndarray) else "numpy"),
                                dtype=np.float64)
    # Scaled by a power of two as the scores are, so that squares neither overflow nor vanish.
    scale = square_safe_scale([host], np)
    scores = _core.musc_aligned_mutual_scores(host * scale if scale != 1.0 else host, 1.0, window)[0].reshape(-1)
    scores = _unscaled(scores, scale, "patches")
    xp = xp_of("numpy" if isinstance(pair, np.ndarray) else "cupy")
    return xp.asarray(scores)


def scores_against_bank(queries, bank, top_ratio=0.3, *, max_memory=None, n_jobs=None):
    """Scores of ``queries [M, P, C]`` against a bank ``[Nb, Pb, C]`` of other images: ``[M, P]``.

    The same statistic as :func:`mutual_scores` with the bank's images as the references
    (``k = max(1, int(Nb * top_ratio))``). Every bank image is a reference, so a query that is
    also in the bank meets itself there and scores 0; use :func:`mutual_scores` to score a
    set of images against each other, each never compared with itself.
    ``max_memory`` as in :func:`mutual_scores` (None: on the CPU, half the memory free now).

    >>> import numpy as np
    >>> bank = np.zeros((2, 3, 4)); query = np.zeros((1, 3, 4)); query[0, 0, 0] = 2.0
    >>> scores_against_bank(query, bank).tolist()
    [[2.0, 0.0, 0.0]]

    A dask ``bank`` chunked along the images (``queries`` numpy or dask) gives a lazy dask array
    equal to the in-memory scores to rounding (a few units in the last place): one task per pair of (query block, bank block) finds the
    per-image minima by exact kNN and one task per query block I averages the k smallest of its
    ``[|I|, Nb, P]`` float64 minima (8 * |I| * Nb * P bytes, twice, on one worker). ``max_memory``
    does not apply.
    """
    if is_dask(bank) or is_dask(queries):
        return _dask_scores_against_bank(queries, bank, top_ratio)
    arrays = {}
    for name, value in (("queries", queries), ("bank", bank)):
        arrays[name] = as_array(value, name)
    (q, qb), (b, bb) = arrays["queries"], arrays["bank"]
    if qb != bb:
        raise TypeError("queries, bank: mix of CPU (numpy) and GPU (cupy) arrays; put them on one device")
    q = float_array(q, "queries", backend=qb, ndim=3)
    b = float_array(b, "bank", backend=bb, ndim=3, dtype=q.dtype)
    if b.shape[-1] != q.shape[-1]:
        raise ValueError(f"bank: expected {q.shape[-1]} channels like the queries, got {b.shape[-1]}")
    top_ratio = _check_ratio(top_ratio)
    max_memory = _check_memory(max_memory)
    nb, p = int(b.shape[0]), int(q.shape[1])
    max_memory = _host_budget(max_memory, qb, nb * p * q.itemsize,
                              f"queries: one image's minima against a bank of {nb} images ({p} patches each)")
    scale = square_safe_scale([q, b], xp_of(qb))
    if scale != 1.0:
        q, b = q * q.dtype.type(scale), b * b.dtype.type(scale)
    return _unscaled(kernels(qb).musc_scores_against_bank(q, b, top_ratio, max_memory, n_jobs), scale, "queries")


def rscin(image_scores, embeddings, k_list=(1, 2, 3), *, n_jobs=None):
    """RsCIN re-scoring of image scores ``[N]`` with image embeddings ``[N, D]``: ``[N]`` (float64).

    Scores are min-max normalised to s; W = F F^T with F the L2-normalised embeddings; for each
    window k the k largest entries of each row of W (self included) are kept and the row is
    normalised to sum 1; the result is the mean over k of W_k s, in [0, 1]. A negative
    similarity among the k kept weighs 0: an image pointing away is no neighbour (with it, the
    row's sum can approach 0 and the result leave [0, 1]). An all-zero embedding is an error.

    >>> import numpy as np
    >>> rscin(np.array([1.0, 3.0, 2.0]), np.eye(3), k_list=(1,)).tolist()
    [0.0, 1.0, 0.5]
    """
    s, b1 = as_array(image_scores, "image_scores")
    e, b2 = as_array(embeddings, "embeddings")
    backend = "cupy" if "cupy" in (b1, b2) else "numpy"
    s = float_array(to_numpy(s, b1), "image_scores", ndim=1, dtype=np.float64)
    e = float_array(to_numpy(e, b2), "embeddings", ndim=2, dtype=np.float64)
    if e.shape[0] != s.shape[0]:
        raise ValueError(f"embeddings: expected one row per image ({s.shape[0]}), got {e.shape[0]}")
    if s.shape[0] < 2:
        raise ValueError("image_scores: RsCIN re-scores images against each other (min-max over the batch); "
                         "one image has no other")
    ks = [min(k, s.shape[0]) for k in _check_k_list(k_list)]  # a window past N keeps every image (and fits 64 bits)
    # N x N with N images: small; the GPU path runs the same host kernel and returns cupy.
    out = _core.musc_rscin(s, e, ks, n_jobs)
    return to_backend(out, backend)


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------

class MuScResult:
    """Scores of one MuSc run: ``image_scores [N]``, ``patch_scores [N, H, W]``,
    ``image_scores_raw`` (before RsCIN), and :meth:`anomaly_maps` for pixel maps."""

    def __init__(self, image_scores, patch_scores, image_scores_raw, image_size=None):
        self.image_scores = image_scores
        self.patch_scores = patch_scores
        self.image_scores_raw = image_scores_raw
        self.image_size = image_size

    def __repr__(self):
        return f"MuScResult(images={self.patch_scores.shape[0]}, patch_grid={tuple(self.patch_scores.shape[1:])})"

    def anomaly_maps(self, image_size=None, sigma=None, *, align_corners=_maps.ALIGN_CORNERS, mode=_maps.MODE,
                     truncate=_maps.TRUNCATE):
        """Pixel maps ``[N, height, width]``: :func:`fastcore_ad.maps.anomaly_maps` of the patch
        map, the function every entry point uses: bilinear upsampling with half-pixel centres
        (``align_corners=True`` reproduces the MuSc authors' code), then, when ``sigma`` is
        given, a Gaussian of ``sigma`` pixels (as ``scipy.ndimage.gaussian_filter``, border
        ``mode`` 'reflect', ``truncate`` 4). cupy patch maps give cupy pixel maps."""
        image_size = image_size if image_size is not None else self.image_size
        if image_size is None:
            raise ValueError("image_size: give the output size (here or to predict)")
        size = _maps._check_size(image_size, "image_size")
        return _maps.anomaly_maps(self.patch_scores, size, sigma, align_corners=align_corners, mode=mode,
                                  truncate=truncate)


def _result(patch, embeddings, ks, n_jobs, backend, image_size):
    """The :class:`MuScResult` of a patch map ``[N, H, W]``: image scores are its maxima,
    re-scored by RsCIN when ``embeddings [N, D]`` are given."""
    n = patch.shape[0]
    image_raw = patch.reshape(n, -1).max(axis=1)
    image = image_raw
    if embeddings is not None:
        emb, _ = as_array(embeddings, "embeddings")
        if emb.ndim != 2 or emb.shape[0] != n:
            raise ValueError(f"embeddings: expected [{n}, D], got shape {tuple(emb.shape)}")
        if n < 2:
            raise ValueError("embeddings: RsCIN re-scores the images of one call against each other, so it "
                             "needs at least 2; score one image without embeddings")
        image = to_backend(rscin(image_raw, emb, ks, n_jobs=n_jobs), backend)
    return MuScResult(image, patch, image_raw, image_size)


class MuSc(FastcoreEstimator):
    """Zero-shot anomaly scoring of a batch of unlabeled images by mutual scoring.

    Parameters
    ----------
    degrees : tuple of odd ints
        LNAMD box sizes r (the paper: 1, 3, 5).
    top_ratio : float
        Fraction of the other images whose nearest-patch distances are averaged.
    k_list : tuple of ints
        RsCIN windows (used when ``predict`` gets embeddings).
    n_jobs : int or None
        Threads for the Rust kernels: None (``FASTCORE_AD_NUM_THREADS`` or all CPUs) or a
        nonzero integer, -1 all CPUs, -2 all but one.
    device : {"auto", "cpu", "cuda"}
        "auto" runs where the features live (numpy: Rust, cupy: CUDA); "cpu" / "cuda" move them.
    max_memory : int or None
        Bytes of per-pair minima held at once (None: on the CPU, half the memory free when
        scoring starts; on the GPU, no limit).
    progress : bool
        Show a progress bar over the (layer, degree) passes for long runs.
    aligned, window : bool, int
        Aligned mode for parts at the same place in every image: each patch is compared only
        with the patches within ``window`` grid cells of its position in the other images
        (batch scoring; a bank is scored the usual way).

    ``fit(bank_features)`` stores a bank of unlabeled images; ``predict(new)`` then scores the
    new images against the bank (one image at a time works) instead of against each other.
    ``predict`` needs no ``fit``: without a bank the images of the batch score each other.
    """

    _fitted_attribute = "bank_"

    def __init__(self, degrees=(1, 3, 5), top_ratio=0.3, k_list=(1, 2, 3), n_jobs=None, device="auto",
                 max_memory=None, progress=True, aligned=False, window=1):
        self.aligned = aligned
        self.window = window
        self.degrees = degrees
        self.top_ratio = top_ratio
        self.k_list = k_list
        self.n_jobs = n_jobs
        self.device = device
        self.max_memory = max_memory
        self.progress = progress

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False  # without a bank, predict scores the batch against itself
        tags.target_tags.required = False
        return tags

    def _check_params(self):
        raw = self.degrees
        if isinstance(raw, (int, np.integer)) and not isinstance(raw, bool):
            raw = (raw,)  # one box size
        if not isinstance(raw, (list, tuple, np.ndarray)):
            raise TypeError(f"degrees: expected odd box sizes such as (1, 3, 5), got {self.degrees!r}")
        degrees = tuple(raw)
        if not degrees:
            raise ValueError("degrees: needs at least one box size")
        degrees = tuple(_check_degree(r) for r in degrees)
        ks = _check_k_list(self.k_list)
        check_switch(self.aligned, "aligned")
        check_switch(self.progress, "progress")
        _check_window(self.window)
        self._check_common_params()
        return degrees, _check_ratio(self.top_ratio), ks, _check_memory(self.max_memory)

    def _layers(self, features, what):
        """Validated layers on one backend: (list of [N, H, W, C] arrays, backend)."""
        multi = isinstance(features, (list, tuple))
        raw = list(features) if multi else [features]
        if not raw:
            raise ValueError(f"{what}: empty list of layers")
        layers, backends = [], set()
        for index, layer in enumerate(raw):
            name = f"{what}[{index}]" if multi else what
            x, backend = as_array(layer, name)
            backend = self._target_backend(backend)
            x = to_backend(x, backend)
            x = float_array(x, name, backend=backend, ndim=4)
            if layers and x.shape[:3] != layers[0].shape[:3]:
                raise ValueError(
                    f"{name}: expected [N, H, W] = {tuple(layers[0].shape[:3])} like {what}[0], got shape {tuple(x.shape)}")
            layers.append(x)
            backends.add(backend)
        if len(backends) > 1:
            raise TypeError(f"{what}: mix of CPU (numpy) and GPU (cupy) layers; put them on one device")
        dtype = np.result_type(*[lv.dtype for lv in layers])
        layers = [lv.astype(dtype, copy=False) for lv in layers]
        return layers, backends.pop()

    def fit(self, bank_features, y=None):
        """Store a bank of unlabeled images (``[N, H, W, C]`` or a list of layers); ``y`` is ignored."""
        self._check_params()
        self.bank_, self.bank_backend_ = self._layers(bank_features, "bank_features")
        return self

    def predict(self, features, embeddings=None, image_size=None) -> MuScResult:
        """Score ``features`` (``[N, H, W, C]`` or a list of layers): a :class:`MuScResult`.

        Without a fitted bank the images score each other (N >= 2); after ``fit`` each image is
        scored against the bank. ``embeddings [N, D]`` turn on RsCIN, which re-scores the images
        of the call against each other (at least 2; their min-max normalised scores, smoothed
        over similar images), so an image's re-scored value depends on the rest of the batch;
        ``image_scores_raw`` keeps the scores before it. ``image_size`` is the default size of
        ``result.anomaly_maps()``.

        Dask ``features`` chunked along the images run on the dask scheduler: LNAMD per chunk of
        whole images (other axes rechunked whole), then the dask :func:`mutual_scores` (or
        :func:`scores_against_bank` after ``fit``) of every (layer, degree) pass, averaged; the
        result equals the in-memory one to rounding (a few units in the last place) and its ``patch_scores [N, H, W]`` are computed (numpy,
        as the image scores and RsCIN need them). Not with ``aligned=True``.
        """
        degrees, top_ratio, ks, max_memory = self._check_params()
        if image_size is not None:
            image_size = _maps._check_size(image_size, "image_size")
        n_jobs = self._n_jobs()
        if any(is_dask(layer) for layer in (features if isinstance(features, (list, tuple)) else [features])):
            return self._predict_dask(features, embeddings, image_size, degrees, top_ratio, ks, n_jobs)
        layers, backend = self._layers(features, "features")
        n, h, w = layers[0].shape[:3]
        bank = getattr(self, "bank_", None)
        if bank is not None:
            if len(bank) != len(layers):
                raise ValueError(f"features: expected {len(bank)} layer(s) like the fitted bank, got {len(layers)}")
            for index, (lv, bv) in enumerate(zip(layers, bank)):
                if lv.shape[-1] != bv.shape[-1]:
                    raise ValueError(f"features[{index}]: expected {bv.shape[-1]} channels like the bank, got {lv.shape[-1]}")
            bank = [self._to_backend(bv, backend, layers[0].dtype) for bv in bank]
        elif n < 2:
            raise ValueError(f"features: mutual scoring needs at least 2 images, got {n} (or fit a bank first)")
        xp = xp_of(backend)
        passes = [(li, r) for li in range(len(layers)) for r in degrees]
        refs = (n - 1) if bank is None else bank[0].shape[0]
        flops = 2.0 * n * refs * (h * w) ** 2 * sum(lv.shape[-1] for lv in layers) * len(degrees)
        total = xp.zeros((n, h * w), dtype=np.float64)
        bar = progress(passes, total=len(passes), desc="MuSc passes",
                       enabled=bool(self.progress) and flops > _PROGRESS_FLOPS)
        for li, r in bar:
            z = lnamd(layers[li], r, n_jobs=n_jobs)
            if bank is None and self.aligned:
                s = mutual_scores(z, top_ratio, aligned=True, window=self.window, n_jobs=n_jobs).reshape(n, h * w)
            elif bank is None:
                z = z.reshape(n, h * w, -1)
                s = mutual_scores(z, top_ratio, max_memory=max_memory, n_jobs=n_jobs)
            else:
                z = z.reshape(n, h * w, -1)
                bz = lnamd(bank[li], r, n_jobs=n_jobs)
                bz = bz.reshape(bz.shape[0], -1, bz.shape[-1])
                s = scores_against_bank(z, bz, top_ratio, max_memory=max_memory, n_jobs=n_jobs)
            total += s
        patch = (total / len(passes)).astype(layers[0].dtype).reshape(n, h, w)
        return _result(patch, embeddings, ks, n_jobs, backend, image_size)

    def _predict_dask(self, features, embeddings, image_size, degrees, top_ratio, ks, n_jobs):
        """``predict`` of dask layers chunked along the images: LNAMD per chunk of whole images
        (``map_blocks``), then the dask mutual scores (or scores against the fitted bank) of
        each (layer, degree) pass, averaged; the patch map is computed here (numpy)."""
        from . import _distributed  # noqa: PLC0415

        multi = isinstance(features, (list, tuple))
        raw = list(features) if multi else [features]
        if not raw:
            raise ValueError("features: empty list of layers")
        layers = [_dask_float(layer, f"features[{index}]" if multi else "features", 4)
                  for index, layer in enumerate(raw)]
        dtype = np.result_type(*[layer.dtype for layer in layers])
        layers = [_distributed.rows_only(layer.astype(dtype)) for layer in layers]
        n, h, w = layers[0].shape[:3]
        for index, layer in enumerate(layers):
            if layer.shape[:3] != (n, h, w):
                raise ValueError(f"features[{index}]: expected [N, H, W] = {(n, h, w)} like features[0], "
                                 f"got shape {tuple(layer.shape)}")
        bank = getattr(self, "bank_", None)
        if bank is None and n < 2:
            raise ValueError(f"features: mutual scoring needs at least 2 images, got {n} (or fit a bank first)")
        if bank is not None and len(bank) != len(layers):
            raise ValueError(f"features: expected {len(bank)} layer(s) like the fitted bank, got {len(layers)}")
        for index, (layer, fitted) in enumerate(zip(layers, bank if bank is not None else [])):
            if layer.shape[-1] != fitted.shape[-1]:
                raise ValueError(f"{f'features[{index}]' if multi else 'features'}: expected {fitted.shape[-1]} "
                                 f"channels like the bank, got {layer.shape[-1]}")
        if self.aligned:
            raise ValueError("features: aligned scoring needs an in-memory array, not a dask array")
        passes = [(li, r) for li in range(len(layers)) for r in degrees]
        total = None
        for li, r in passes:
            z = layers[li].map_blocks(lnamd, r, n_jobs=n_jobs, dtype=dtype)
            z = z.reshape(n, h * w, z.shape[-1])
            if bank is None:
                s = mutual_scores(z, top_ratio)
            else:
                bz = lnamd(to_numpy(bank[li], self.bank_backend_).astype(dtype, copy=False), r, n_jobs=n_jobs)
                s = scores_against_bank(z, bz.reshape(bz.shape[0], -1, bz.shape[-1]), top_ratio)
            s = s.astype(np.float64)
            total = s if total is None else total + s
        patch = (total / len(passes)).astype(dtype).reshape(n, h, w).compute()
        return _result(patch, embeddings, ks, n_jobs, "numpy", image_size)

    @staticmethod
    def _to_backend(x, backend, dtype):
        return to_backend(x, backend).astype(dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# Demo
# ---------------------------------------------------------------------------------------------

def _texture_features(n_images=12, grid=14, channels=64, anomalous=(2, 5, 9), seed=0):
    """Patch features of a periodic texture with a pasted blob in the anomalous images."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(4, channels))
    yy, xx = np.mgrid[0:grid, 0:grid]
    feats = np.empty((n_images, grid, grid, channels), dtype=np.float32)
    for i in range(n_images):
        phase = rng.uniform(0, 2 * np.pi, size=2)
        pattern = np.stack([np.sin(0.9 * xx + phase[0]), np.cos(0.9 * yy + phase[1]),
                            np.sin(0.6 * (xx + yy)), np.ones_like(xx, dtype=float)], axis=-1)
        feats[i] = pattern @ basis + 0.3 * rng.normal(size=(grid, grid, channels))
    labels = np.zeros(n_images, dtype=np.int64)
    for i in anomalous:
        y0, x0 = rng.integers(2, grid - 5, size=2)
        feats[i, y0:y0 + 3, x0:x0 + 3] += 2.5 * rng.normal(size=channels)
        labels[i] = 1
    return feats, labels


def demo() -> list[dict]:
    """MuSc on generated textures with pasted anomalies: image AUROC of the zero-shot scores."""
    from . import metrics  # noqa: PLC0415

    feats, labels = _texture_features()
    start = time.perf_counter()
    result = MuSc(progress=False).predict([feats, feats[..., ::-1].copy()])
    seconds = time.perf_counter() - start
    auroc = metrics.auroc(result.image_scores, labels)
    return [{"step": "musc: zero-shot mutual scoring of 12 generated textures (3 anomalous)",
             "result": f"image AUROC {auroc:.3f}", "seconds": seconds}]
