"""Pixel anomaly maps from grid scores: one convention for every entry point.

A detector scores a coarse grid of patches ``[n, h, w]``; the pixel map ``[n, H, W]`` is that
grid upsampled bilinearly, then (optionally) smoothed with a Gaussian. MuSc results
(``MuScResult.anomaly_maps``), the pipelines (:mod:`fastcore_ad.pipeline`) and
``fastcore-ad detect`` all call :func:`anomaly_maps`, so the same scores give the same map
everywhere. The defaults are the convention:

``align_corners=False``
    Half-pixel centres, as ``torch.nn.functional.interpolate(..., align_corners=False)``,
    PaDiM and PatchCore: cell ``i`` of an ``h``-cell axis covers pixels ``[i*H/h, (i+1)*H/h)``
    and its score sits at the centre of that span; past the outermost centres the border
    value holds. ``align_corners=True`` (the MuSc authors' code) puts the outermost cells'
    scores on the outermost pixels instead.
``mode="reflect"``
    The Gaussian sees the map extended by mirroring about its edge (``d c b a | a b c d |
    d c b a``), as ``scipy.ndimage.gaussian_filter`` does by default. Also ``"mirror"``
    (``d c b | a b c d | c b a``), ``"nearest"``, ``"wrap"`` and ``"constant"`` (zeros).
``truncate=4.0``
    The kernel reaches ``int(truncate * sigma + 0.5)`` pixels to each side, as scipy's.

Each step is one matrix per axis (upsampling and smoothing fused), so the maps equal
``scipy.ndimage.map_coordinates(order=1)`` followed by ``gaussian_filter`` within float
rounding, on numpy and cupy arrays alike. A kernel wider than the map is folded onto it
(as scipy reflects again and again), so memory grows with the map, not with ``sigma``; a
``sigma`` whose kernel would exceed :data:`MAX_RADIUS` taps per side is a ValueError raised
before anything is allocated.

>>> import numpy as np
>>> from fastcore_ad.maps import anomaly_maps
>>> grid = np.array([[[0.0, 1.0]]])                      # one map, one row, two cells
>>> anomaly_maps(grid, (1, 4)).tolist()                  # cell centres at pixels 0.5 and 2.5
[[[0.0, 0.25, 0.75, 1.0]]]
>>> anomaly_maps(grid, (1, 4), align_corners=True).round(3).tolist()
[[[0.0, 0.333, 0.667, 1.0]]]
"""

from __future__ import annotations

import numbers

import numpy as np

from ._dispatch import as_array, check_switch, float_array, real_or_inf, xp_of
from ._memory import check_fits

__all__ = ["ALIGN_CORNERS", "MAX_RADIUS", "MODE", "MODES", "TRUNCATE", "anomaly_maps", "smooth", "upsample"]

ALIGN_CORNERS = False
MODE = "reflect"
TRUNCATE = 4.0
MODES = ("reflect", "mirror", "nearest", "wrap", "constant")
# Taps held per side of a kernel (8 MB of float64); sigma up to about 262,000 pixels at
# truncate 4. A larger kernel on any real image is a near-constant map, and building it would
# take the memory of the taps before any folding could shrink them.
MAX_RADIUS = 1 << 20


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def _check_size(size, name):
    """``(height, width)`` from a positive int or a pair of positive ints."""
    values = (size, size) if isinstance(size, numbers.Integral) else size
    try:
        values = tuple(values)
    except TypeError:
        raise ValueError(f"{name}: expected a positive int or (height, width), got {size!r}") from None
    if len(values) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1
                                   for v in values):
        raise ValueError(f"{name}: expected a positive int or (height, width), got {size!r}")
    return int(values[0]), int(values[1])


def _check_sigma(sigma) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not 0.0 < real_or_inf(sigma) < float("inf"):
        raise ValueError(f"sigma: must be a finite number > 0 (pixels), got {sigma!r}")
    return float(sigma)


def _check_smoothing(sigma, mode, truncate):
    """Validated ``(sigma, mode, truncate, radius)``; the radius is checked before any taps exist."""
    sigma = _check_sigma(sigma)
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if isinstance(truncate, bool) or not isinstance(truncate, numbers.Real) \
            or not 0.0 < real_or_inf(truncate) < float("inf"):
        raise ValueError(f"truncate: must be a finite number > 0 (sigmas), got {truncate!r}")
    truncate = float(truncate)
    reach = truncate * sigma + 0.5  # a float first: a huge product is inf, which int() refuses
    if not reach < MAX_RADIUS + 1:  # int(reach) > MAX_RADIUS
        raise ValueError(f"sigma: {sigma:g} pixels needs a kernel of {reach:.7g} taps per side (truncate={truncate:g}); "
                         f"at most {MAX_RADIUS} are held, i.e. sigma <= {(MAX_RADIUS - 0.5) / truncate:g}")
    return sigma, mode, truncate, int(reach)


def _check_output_fits(x, size, smoothing: bool, name: str):
    """The matrices (float64), the intermediate and the output that ``size`` implies, against
    available memory before any of them exists."""
    (n, h, w), (height, width) = x.shape, size
    matrices = height * h + width * w + (height * height + width * width if smoothing else 0)
    maps = n * height * (w + width)
    check_fits(8 * matrices + x.dtype.itemsize * maps, f"{name}: {n} map(s) of {height} x {width} pixels")


def _check_maps(maps, name):
    """numpy or cupy float maps ``[n, h, w]`` (a single ``[h, w]`` map gains a leading axis),
    finite: one NaN would reach every pixel of its rows and columns through the matrices."""
    x, backend = as_array(maps, name)
    x = float_array(x, name, backend=backend, ndim=(2, 3))
    single = x.ndim == 2
    return (x[None] if single else x), backend, single


# ---------------------------------------------------------------------------------------------
# Matrices
# ---------------------------------------------------------------------------------------------


def _linear_taps(n_in: int, n_out: int, align_corners: bool = ALIGN_CORNERS):
    """Bilinear taps from ``n_in`` to ``n_out`` samples: ``(low, high, frac)`` such that output
    ``i`` is ``(1 - frac[i]) * x[low[i]] + frac[i] * x[high[i]]``.

    >>> low, high, frac = _linear_taps(2, 4)
    >>> low.tolist(), high.tolist(), frac.tolist()
    ([0, 0, 0, 1], [1, 1, 1, 1], [0.0, 0.25, 0.75, 0.0])
    """
    index = np.arange(n_out, dtype=np.float64)
    if align_corners:
        source = index * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
    else:
        source = (2.0 * index + 1.0) * n_in / (2.0 * n_out) - 0.5
    source = np.clip(source, 0.0, n_in - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    return low, high, source - low


def _upsample_matrix(n_out: int, n_in: int, align_corners: bool):
    """``[n_out, n_in]`` bilinear weights (float64)."""
    low, high, frac = _linear_taps(n_in, n_out, align_corners)
    weights = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    weights[rows, low] += 1.0 - frac  # rows are distinct, so each statement adds once per entry
    weights[rows, high] += frac
    return weights


def _fold(size: int, offsets, mode: str):
    """The taps' offsets mapped onto the few that differ on a ``size``-pixel axis, and a function
    from ``position + offset`` to the pixel read (-1 where the pixel is the constant zero)."""
    if mode == "constant":
        return np.clip(offsets, -size, size), lambda m: np.where((m < 0) | (m >= size), -1, m)
    if mode == "nearest":
        return np.clip(offsets, -size, size), lambda m: np.clip(m, 0, size - 1)
    if mode == "wrap":
        return np.mod(offsets, size), lambda m: np.mod(m, size)
    if mode == "mirror" and size == 1:
        return np.zeros_like(offsets), lambda m: np.zeros_like(m)
    period = 2 * size if mode == "reflect" else 2 * size - 2
    last = period - 1 if mode == "reflect" else period  # reflect: -1 -> 0; mirror: -1 -> 1

    def pixel(m):
        m = np.mod(m, period)
        return np.where(m >= size, last - m, m)

    return np.mod(offsets, period), pixel


def _smoothing_matrix(size: int, sigma: float, mode: str, radius: int):
    """``[size, size]`` matrix of ``scipy.ndimage.gaussian_filter1d(x, sigma, mode=mode)``
    (float64). Taps that land on the same pixel of every row (equal modulo the border's period,
    or past the whole axis) are summed first: one pass per distinct offset, at most ~2*size."""
    offsets = np.arange(-radius, radius + 1)
    taps = np.exp(-0.5 * (offsets / sigma) ** 2)
    taps /= taps.sum()
    folded, pixel = _fold(size, offsets, mode)
    distinct, where = np.unique(folded, return_inverse=True)
    weights_of = np.bincount(where.ravel(), weights=taps)
    matrix = np.zeros((size, size))
    rows = np.arange(size)
    for offset, weight in zip(distinct, weights_of):
        columns = pixel(rows + offset)
        inside = columns >= 0
        matrix[rows[inside], columns[inside]] += weight
    return matrix


def _apply(maps, rows, columns, backend):
    """``rows @ maps[i] @ columns.T`` for every map, in the maps' dtype and on their device."""
    xp = xp_of(backend)
    rows = xp.asarray(rows, dtype=maps.dtype)
    columns = xp.asarray(columns.T, dtype=maps.dtype)
    top = np.finfo(maps.dtype).max
    peak = float(xp.abs(maps).max()) if maps.size else 0.0
    if not peak > top / 64:
        return xp.ascontiguousarray(xp.matmul(xp.matmul(rows, maps), columns))
    # Every output is a weighted mean of inputs (weights >= 0, summing to 1), but its partial
    # sums can overflow near the dtype's largest value: computed at 1/64 (exact, a power of
    # two), scaled back, and rounding past the largest input clipped.
    small = xp.matmul(xp.matmul(rows, maps * maps.dtype.type(1 / 64)), columns)
    with np.errstate(over="ignore"):
        out = small * maps.dtype.type(64)
    return xp.ascontiguousarray(xp.clip(out, -peak, peak).astype(maps.dtype, copy=False))


def _matrices(grid, size, sigma, align_corners, mode, truncate):
    (h, w), (height, width) = grid, size
    align_corners = check_switch(align_corners, "align_corners")
    rows = _upsample_matrix(height, h, align_corners)
    columns = _upsample_matrix(width, w, align_corners)
    if sigma is not None:
        sigma, mode, _, radius = _check_smoothing(sigma, mode, truncate)
        rows = _smoothing_matrix(height, sigma, mode, radius) @ rows
        columns = _smoothing_matrix(width, sigma, mode, radius) @ columns
    return rows, columns


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------


def upsample(maps, size, *, align_corners=ALIGN_CORNERS):
    """Bilinear resize of ``maps [n, h, w]`` (or one ``[h, w]`` map) to ``size = (H, W)``.

    ``align_corners=False`` (the default): half-pixel centres, border values held past the
    outermost centres; ``True``: the outermost cells land on the outermost pixels. float32
    and float64 maps keep their dtype (float16 becomes float32, other types float64); cupy maps
    stay on the GPU. The memory that ``size`` implies is checked first (a MemoryError naming it).

    >>> import numpy as np
    >>> upsample(np.array([[1.0, 3.0]]), (1, 4)).tolist()
    [[1.0, 1.5, 2.5, 3.0]]
    >>> upsample(np.array([[1.0, 3.0]]), (1, 4), align_corners=True).round(3).tolist()
    [[1.0, 1.667, 2.333, 3.0]]
    """
    x, backend, single = _check_maps(maps, "maps")
    size = _check_size(size, "size")
    _check_output_fits(x, size, False, "size")
    rows, columns = _matrices(x.shape[1:], size, None, align_corners, MODE, TRUNCATE)
    out = _apply(x, rows, columns, backend)
    return out[0] if single else out


def smooth(maps, sigma, *, mode=MODE, truncate=TRUNCATE):
    """Gaussian smoothing of ``maps [n, H, W]`` (or one ``[H, W]`` map) along both image axes,
    as ``scipy.ndimage.gaussian_filter(maps, sigma=(0, sigma, sigma), mode=mode, truncate=truncate)``.

    ``sigma``: standard deviation in pixels, finite and > 0 (a ValueError naming ``sigma``
    when its kernel would exceed :data:`MAX_RADIUS` taps per side, before allocating).
    ``mode``: the border, one of :data:`MODES` (``"constant"`` pads with zeros).

    >>> import numpy as np
    >>> spike = np.zeros((1, 5)); spike[0, 2] = 1.0
    >>> smooth(spike, 1.0).round(3).tolist()
    [[0.058, 0.242, 0.399, 0.242, 0.058]]
    >>> float(smooth(np.ones((3, 3)), 2.0)[1, 1]), bool(smooth(np.ones((3, 3)), 2.0, mode="constant")[1, 1] < 1)
    (1.0, True)
    """
    x, backend, single = _check_maps(maps, "maps")
    sigma, mode, _, radius = _check_smoothing(sigma, mode, truncate)
    height, width = x.shape[1:]
    _check_output_fits(x, (height, width), True, "maps")
    out = _apply(x, _smoothing_matrix(height, sigma, mode, radius), _smoothing_matrix(width, sigma, mode, radius),
                 backend)
    return out[0] if single else out


def anomaly_maps(grid_scores, image_size, sigma=None, *, align_corners=ALIGN_CORNERS, mode=MODE,
                 truncate=TRUNCATE):
    """Pixel maps ``[n, H, W]`` from ``grid_scores [n, h, w]`` (or one ``[h, w]`` grid):
    :func:`upsample` to ``image_size`` (an int or ``(H, W)``), then :func:`smooth` with
    ``sigma`` pixels unless ``sigma`` is None. Both steps run as one matrix product per axis.

    Every entry point of the package calls this function, with these defaults (see the
    module's docstring): ``align_corners=False``, ``mode="reflect"``, ``truncate=4.0``.

    >>> import numpy as np
    >>> grid = np.zeros((1, 4, 4)); grid[0, 1, 2] = 1.0
    >>> maps = anomaly_maps(grid, 16, sigma=2.0)
    >>> maps.shape
    (1, 16, 16)
    >>> row, column = np.unravel_index(maps[0].argmax(), maps[0].shape)
    >>> bool(4 <= row < 8 and 8 <= column < 12)                       # cell (1, 2) covers these pixels
    True
    """
    x, backend, single = _check_maps(grid_scores, "grid_scores")
    size = _check_size(image_size, "image_size")
    _check_output_fits(x, size, sigma is not None, "image_size")
    rows, columns = _matrices(x.shape[1:], size, sigma, align_corners, mode, truncate)
    out = _apply(x, rows, columns, backend)
    return out[0] if single else out
