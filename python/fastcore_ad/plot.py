"""Pictures of anomaly detection results (matplotlib, optional): an image with its anomaly map
overlaid and the ground-truth contour, ROC and PRO curves, and grids of cases.

>>> import numpy as np
>>> from fastcore_ad.plot import overlay_rgb
>>> image = np.zeros((4, 4, 3), np.uint8)
>>> anomaly = np.zeros((4, 4)); anomaly[1, 1] = 1.0
>>> overlay_rgb(image, anomaly).shape
(4, 4, 3)
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["overlay_rgb", "show_overlay", "plot_roc", "plot_pro", "save_grid", "save_overlay"]


def _pyplot():
    try:
        import os  # noqa: PLC0415
        import sys  # noqa: PLC0415

        import matplotlib  # noqa: PLC0415

        # Headless: draw to files without probing for a GUI (probing is slow).
        if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND") \
                and not os.environ.get("DISPLAY"):
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("fastcore_ad.plot needs matplotlib: pip install matplotlib") from exc
    return plt


def _jet(values):
    """A blue-cyan-yellow-red colour ramp for values in [0, 1] (no matplotlib needed)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    anchors = np.array([0.0, 0.35, 0.65, 1.0])
    colours = np.array([[0.0, 0.0, 0.6], [0.0, 0.8, 1.0], [1.0, 0.9, 0.0], [0.8, 0.0, 0.0]])
    return np.stack([np.interp(v[..., 0], anchors, colours[:, c]) for c in range(3)], axis=-1)


def _as_rgb_float(image):
    """RGB in [0, 1], scaled by the dtype: uint16 / 65535, other integers as 8-bit (0..255) / 255,
    floats in [0, 1] as they are (float images in 0..255, any value above 1, / 255)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or 0 in image.shape[:2]:
        raise ValueError(f"image: expected a non-empty [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {image.shape}")
    if image.dtype.kind == "b" or image.dtype.kind not in "uif":
        raise TypeError(f"image: expected integer or float pixels, got dtype {image.dtype}")
    image = image[..., :3]
    if image.dtype.kind in "ui":
        top = 65535 if image.dtype == np.uint16 else 255
        low, high = int(image.min()), int(image.max())
        if low < 0 or high > top:
            raise ValueError(f"image: {image.dtype} pixels must lie in 0..{top}, found {low}..{high}")
        return image.astype(np.float64) / top
    image = image.astype(np.float64)
    low, high = float(image.min()), float(image.max())
    if not (0.0 <= low and high <= 255.0):
        raise ValueError(f"image: float pixels must lie in [0, 1] (or 0..255), found {low:g}..{high:g}")
    return image / 255.0 if high > 1.0 else image


def _fit_map(anomaly_map, shape):
    anomaly_map = np.asarray(anomaly_map, dtype=np.float64)
    if anomaly_map.ndim != 2:
        raise ValueError(f"anomaly_map: expected [h, w], got {anomaly_map.shape}")
    if not np.isfinite(anomaly_map).all():
        raise ValueError("anomaly_map: contains NaN or infinity")
    if anomaly_map.shape != tuple(shape):
        from .maps import upsample  # noqa: PLC0415

        anomaly_map = upsample(anomaly_map, shape)  # the package's one convention (fastcore_ad.maps)
    return anomaly_map


def overlay_rgb(image, anomaly_map, mask=None, *, vmin=None, vmax=None, alpha=0.5):
    """The image blended with the colour-coded anomaly map, as float RGB ``[H, W, 3]`` in [0, 1],
    with the outline of the ground-truth ``mask`` (if given) drawn in white.

    ``vmin``/``vmax`` fix the colour scale (use the same for every image of a dataset so colours
    compare); by default the map's own range.
    """
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.integer, np.floating)) \
            or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: must be a number in [0, 1], got {alpha!r}")
    for name, value in (("vmin", vmin), ("vmax", vmax)):
        if value is not None and (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real)
                                  or not np.isfinite(value)):
            raise ValueError(f"{name}: expected a finite number or None, got {value!r}")
    if vmin is not None and vmax is not None and vmin > vmax:
        raise ValueError(f"vmin: {vmin!r} exceeds vmax ({vmax!r}); the colour scale runs from vmin up to vmax")
    rgb = _as_rgb_float(image)
    anomaly_map = _fit_map(anomaly_map, rgb.shape[:2])
    lo = float(np.min(anomaly_map)) if vmin is None else float(vmin)
    hi = float(np.max(anomaly_map)) if vmax is None else float(vmax)
    if hi > lo:
        # Clipped first, so that no difference exceeds hi - lo; halved when hi - lo itself
        # overflows (bounds of opposite signs beyond half the float range).
        clipped = np.clip(anomaly_map, lo, hi)
        scaled = (clipped - lo) / (hi - lo) if np.isfinite(hi - lo) else (clipped / 2 - lo / 2) / (hi / 2 - lo / 2)
    else:
        scaled = np.zeros_like(anomaly_map)
    out = (1.0 - alpha) * rgb + alpha * _jet(scaled)
    if mask is not None:
        out[_outline(_check_mask(mask, rgb.shape[:2]))] = 1.0
    return out


def _check_mask(mask, shape):
    mask = np.asarray(mask).astype(bool)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask: expected shape {tuple(shape)} like the image, got {mask.shape}")
    return mask


def _outline(mask):
    """Mask pixels with a 4-neighbour outside the mask."""
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def show_overlay(ax, image, anomaly_map, mask=None, *, vmin=None, vmax=None, alpha=0.5, title=None):
    """Draw the overlay on a matplotlib axis, with the ground-truth ``mask`` outlined in white."""
    rgb = overlay_rgb(image, anomaly_map, vmin=vmin, vmax=vmax, alpha=alpha)
    ax.imshow(rgb)
    if mask is not None:
        mask = _check_mask(mask, rgb.shape[:2])
        if mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1.0)
    if title:
        ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return ax


def plot_roc(scores, labels, ax=None, *, label=None):
    """ROC curve (``fastcore_ad.metrics.roc_curve``) with the AUROC in the legend."""
    from .metrics import auroc, roc_curve  # noqa: PLC0415

    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    fpr, tpr, _ = roc_curve(scores, labels)
    area = auroc(scores, labels)
    ax.plot(fpr, tpr, label=f"{label + ' ' if label else ''}AUROC {area:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.5, linestyle="--")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right", fontsize=8)
    return ax


def plot_pro(anomaly_maps, masks, ax=None, *, max_fpr=0.3, label=None):
    """Per-region overlap curve (``fastcore_ad.metrics.pro_curve``) up to ``max_fpr``, AUPRO in the legend."""
    from .metrics import aupro, pro_curve  # noqa: PLC0415

    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    fpr, pro = pro_curve(anomaly_maps, masks, max_fpr=max_fpr)
    area = aupro(anomaly_maps, masks, max_fpr=max_fpr)
    ax.plot(fpr, pro, label=f"{label + ' ' if label else ''}AUPRO@{max_fpr:g} {area:.3f}")
    ax.set_xlim(0, max_fpr)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("per-region overlap")
    ax.legend(loc="lower right", fontsize=8)
    return ax


def save_overlay(path, image, anomaly_map, mask=None, *, vmin=None, vmax=None):
    """Write one overlay PNG at the image's own size (Pillow; no matplotlib needed)."""
    try:
        from PIL import Image  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("writing overlays needs Pillow: pip install pillow") from exc
    rgb = overlay_rgb(image, anomaly_map, mask, vmin=vmin, vmax=vmax)
    Image.fromarray((np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)).save(path)
    return path


# Agg, matplotlib's renderer, draws at most 2**23 - 1 pixels per side.
_MAX_FIGURE_SIDE = 2**23


def _check_figure_pixels(width, height, what):
    """The canvas a figure of ``width`` x ``height`` pixels needs, checked before matplotlib
    allocates it (an oversized one fails deep inside with std::bad_alloc)."""
    from ._memory import check_fits  # noqa: PLC0415

    if not max(width, height) < _MAX_FIGURE_SIDE:  # floats still: the product may be infinite
        raise ValueError(f"dpi: {what} make a figure of {width:.0f} x {height:.0f} pixels; matplotlib draws "
                         f"fewer than {_MAX_FIGURE_SIDE} per side (lower dpi or cell_inches)")
    width, height = math.ceil(width), math.ceil(height)
    check_fits(4 * width * height, f"dpi: {what} make a figure of {width} x {height} RGBA pixels")


def save_grid(path, images, anomaly_maps, masks=None, titles=None, *, columns=4, vmin=None, vmax=None,
              cell_inches=1.8, dpi=80):
    """A grid of overlays (e.g. the best and worst cases of a benchmark) written as one PNG,
    ``columns`` overlays per row.

    >>> import numpy as np
    >>> save_grid("grid.png", [np.zeros((4, 4))], [np.ones((4, 4))], columns=0)
    Traceback (most recent call last):
    ...
    ValueError: columns: expected a whole number of overlays per row >= 1, got 0
    """
    if isinstance(columns, bool) or not isinstance(columns, numbers.Integral) or columns < 1:
        raise ValueError(f"columns: expected a whole number of overlays per row >= 1, got {columns!r}")
    for name, value in (("cell_inches", cell_inches), ("dpi", dpi)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < float("inf"):
            raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    n = len(images)
    if n == 0:
        raise ValueError("images: nothing to draw")
    if len(anomaly_maps) != n or (masks is not None and len(masks) != n):
        raise ValueError("images, anomaly_maps and masks must have the same length")
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles: expected one per image ({n}), got {len(titles)}")
    # More columns than images only adds empty cells (a million of them take minutes to lay out).
    columns = min(int(columns), n)
    rows = -(-n // columns)
    _check_figure_pixels(columns * cell_inches * dpi, rows * cell_inches * 1.1 * dpi,
                         f"{rows} x {columns} cell(s) of {float(cell_inches):g} inches at {float(dpi):g} dpi")
    plt = _pyplot()
    fig, axes = plt.subplots(rows, columns, figsize=(columns * cell_inches, rows * cell_inches * 1.1), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.set_axis_off()
            continue
        show_overlay(ax, images[i], anomaly_maps[i], None if masks is None else masks[i],
                     vmin=vmin, vmax=vmax, title=None if titles is None else titles[i])
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
