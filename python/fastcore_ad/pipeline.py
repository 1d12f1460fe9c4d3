"""From images to anomaly scores and maps: the steps shared by ``fastcore-ad detect`` and the
real-data benchmarks (features -> detector -> upsampled, smoothed anomaly maps). Every map is
made by :func:`fastcore_ad.maps.anomaly_maps` (half-pixel bilinear upsampling, Gaussian with
reflected borders), the function behind ``MuScResult.anomaly_maps`` too.

>>> import numpy as np
>>> from fastcore_ad.pipeline import pooled_gaussian
>>> rng = np.random.default_rng(0)
>>> train = [rng.normal(size=(200, 6)), rng.normal(size=(200, 4))]
>>> test = [np.vstack([t[:5], t[:5] + 5.0]) for t in train]
>>> scores = pooled_gaussian(train, test)
>>> bool(scores[:5].max() < scores[5:].min())
True
"""

from __future__ import annotations

import numpy as np

from . import maps as _maps
from ._dispatch import check_switch
from .gaussian import GaussianAD

__all__ = ["pooled_gaussian", "per_position_gaussian", "musc_zero_shot", "upsample_maps", "patchcore"]


def upsample_maps(grid_scores, image_size, sigma=4.0, *, align_corners=_maps.ALIGN_CORNERS, mode=_maps.MODE,
                  truncate=_maps.TRUNCATE):
    """Grid scores ``[n, h, w]`` -> pixel maps ``[n, H, W]``: :func:`fastcore_ad.maps.anomaly_maps`
    with a Gaussian of ``sigma`` pixels (PaDiM / PatchCore smooth their maps with 4); ``sigma=0``
    or None upsamples only. float32 scores give float32 maps.

    >>> import numpy as np
    >>> grid = np.zeros((1, 2, 2), np.float32); grid[0, 0, 0] = 1.0
    >>> maps = upsample_maps(grid, 8)
    >>> maps.shape, maps.dtype.name, bool(maps[0, 0, 0] > maps[0, 7, 7])
    ((1, 8, 8), 'float32', True)
    """
    return _maps.anomaly_maps(grid_scores, image_size, sigma or None, align_corners=align_corners, mode=mode,
                              truncate=truncate)


def pooled_gaussian(train_pooled, test_pooled, *, covariance="ledoit_wolf", progress=False):
    """Rippel et al.: one Gaussian per pooled level, Mahalanobis distances summed over levels.
    ``train_pooled`` / ``test_pooled``: lists of ``[n, C_i]`` arrays. Returns ``[m]`` scores."""
    model = GaussianAD(covariance=covariance, progress=progress).fit(list(train_pooled))
    return np.asarray(model.decision_function(list(test_pooled)))


def per_position_gaussian(train_maps, test_maps, image_size, *, sigma=4.0, covariance="ledoit_wolf",
                          progress=True, return_model=False):
    """PaDiM-style: one Gaussian per grid position on ``[n, h, w, d]`` maps (levels concatenated).
    Returns ``(image_scores [m], anomaly_maps [m, H, W])``; the image score is the map's maximum."""
    check_switch(return_model, "return_model")
    model = GaussianAD(covariance=covariance, progress=progress).fit(np.asarray(train_maps, dtype=np.float32))
    # float32 maps, like the features: half the memory of float64 for a large test set.
    grid_scores = np.asarray(model.decision_function(np.asarray(test_maps, dtype=np.float32)), dtype=np.float32)
    maps = upsample_maps(grid_scores, image_size, sigma)
    scores = maps.reshape(len(maps), -1).max(axis=1)
    return (scores, maps, model) if return_model else (scores, maps)


def _levels(maps):
    """A list of ``[n, h, w, C_i]`` levels: one array is one level (not a list of its images)."""
    return list(maps) if isinstance(maps, (list, tuple)) else [maps]


def musc_zero_shot(test_maps, image_size, *, sigma=4.0, degrees=(1, 3, 5), top_ratio=0.3):
    """MuSc on the unlabeled test set itself (no training images): ``test_maps`` is a list of
    ``[n, h, w, C_i]`` levels. Returns ``(image_scores [n], anomaly_maps [n, H, W])``; the maps
    are ``MuScResult.anomaly_maps(image_size, sigma)``, the same as :func:`upsample_maps` of the
    patch scores (one array is one level). Raises ImportError when ``fastcore_ad.musc`` is not
    part of this build."""
    from .musc import MuSc  # noqa: PLC0415

    result = MuSc(degrees=degrees, top_ratio=top_ratio).predict(_levels(test_maps))
    maps = result.anomaly_maps(image_size, sigma or None)
    return np.asarray(result.image_scores, dtype=np.float64), maps


def patchcore(train_maps, test_maps, image_size, *, sigma=4.0, coreset_ratio=0.1, projection_dim=128,
              num_neighbors=9, seed=0):
    """PatchCore: a coreset memory bank of the training images' patches (``train_maps`` and
    ``test_maps`` are lists of ``[n, h, w, C_i]`` levels). Returns ``(image_scores [m],
    anomaly_maps [m, H, W])``; the maps are ``PatchCoreResult.anomaly_maps(image_size, sigma)``."""
    from .patchcore import PatchCore  # noqa: PLC0415

    model = PatchCore(coreset_ratio=coreset_ratio, projection_dim=projection_dim, num_neighbors=num_neighbors,
                      seed=seed).fit(_levels(train_maps))
    result = model.predict(_levels(test_maps))
    maps = result.anomaly_maps(image_size, sigma or None)
    return np.asarray(result.image_scores, dtype=np.float64), maps
