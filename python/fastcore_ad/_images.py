"""Images and maps: bilinear resizing and smoothing of feature maps, and images read from files
and folders (Pillow), resized to one size.

Public through :mod:`fastcore_ad.features` (``resize_maps``, ``gaussian_blur``, ``read_image``,
``load_images``, ``LoadedImages``).
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._base import ComplexDataError
from ._dispatch import check_switch
from ._memory import check_fits
from .maps import _check_size, _linear_taps, smooth
from .progress import progress

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


def _as_rgb(image, name):
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"{name}: expected an image [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image[:, :, :3]

def _resize_image(image, size):
    """One RGB image resized to ``size`` (height, width), bilinear."""
    if image.shape[:2] == tuple(size):
        return image
    try:
        from PIL import Image  # noqa: PLC0415
    except ImportError:
        return resize_maps(image[None].astype(np.float32), size)[0]
    if image.dtype != np.uint8:
        image = np.rint(np.clip(image, 0, 255)).astype(np.uint8)  # rounded, as 8-bit pixels would be
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))



# ---------------------------------------------------------------------------------------------
# Resizing and smoothing maps
# ---------------------------------------------------------------------------------------------


def resize_maps(maps, size):
    """Bilinear resize of ``[n, h, w, C]`` (or ``[n, h, w]``) maps to ``size = (H, W)``, with
    half-pixel centres (align_corners=False): the taps of :mod:`fastcore_ad.maps`."""
    maps = np.asarray(maps)
    if maps.dtype.kind == "c":
        raise ComplexDataError(f"maps: Complex data not supported (dtype {maps.dtype})")
    if maps.dtype.kind not in "fiub":
        raise TypeError(f"maps: expected real numbers, got dtype {maps.dtype}")
    given = maps.shape
    squeeze = maps.ndim == 3
    if squeeze:
        maps = maps[..., None]
    if maps.ndim != 4 or 0 in maps.shape[1:3]:
        raise ValueError(f"maps: expected non-empty [n, h, w, C] or [n, h, w], got {given}")
    height, width = _check_size(size, "size")
    if maps.dtype.kind == "f" and maps.size and maps.dtype.itemsize > 4 and \
            np.nanmax(np.abs(np.where(np.isinf(maps), 0, maps))) > np.finfo(np.float32).max:
        raise ValueError("maps: finite values beyond float32's range, where the resized maps are computed")
    # float32 copy of the input, the rows-resized intermediate, the output and one temporary of its size.
    n, h, w, channels = maps.shape
    copied = 0 if maps.dtype == np.float32 else maps.size
    check_fits(4 * (copied + n * height * channels * (w + 2 * width)),
               f"size: {n} map(s) of {height} x {width} pixels with {channels} channel(s)")
    maps = maps.astype(np.float32, copy=False)
    # Gathers rather than the matrices of fastcore_ad.maps: with hundreds of channels a matrix
    # product per axis costs h (or w) times more than two taps per output pixel.
    low, high, frac = _linear_taps(maps.shape[1], height, align_corners=False)
    frac = frac.astype(np.float32)[None, :, None, None]
    maps = maps[:, low] * (1.0 - frac) + maps[:, high] * frac
    low, high, frac = _linear_taps(maps.shape[2], width, align_corners=False)
    frac = frac.astype(np.float32)[None, None, :, None]
    maps = maps[:, :, low] * (1.0 - frac) + maps[:, :, high] * frac
    return maps[..., 0] if squeeze else maps


def gaussian_blur(maps, sigma: float, *, mode="mirror"):
    """Gaussian smoothing of ``[n, H, W]`` float32 maps: :func:`fastcore_ad.maps.smooth` with
    this function's historical border, ``mode="mirror"`` (the anomaly maps of the package use
    ``"reflect"``, see :mod:`fastcore_ad.maps`); ``sigma=0`` returns the maps unchanged."""
    maps = np.asarray(maps, dtype=np.float32)
    if isinstance(sigma, numbers.Real) and not isinstance(sigma, bool) and sigma == 0:
        return maps
    if maps.ndim != 3:
        raise ValueError(f"maps: expected [n, H, W], got {maps.shape}")
    return smooth(maps, sigma, mode=mode)



# ---------------------------------------------------------------------------------------------
# Images from folders
# ---------------------------------------------------------------------------------------------


@dataclass
class LoadedImages:
    """Images read from disk: ``images [n, S, S, 3]`` uint8, their ``paths`` and original
    ``sizes`` (height, width), and the files that could not be read, as ``(path, reason)``."""

    images: np.ndarray
    paths: list
    sizes: list
    skipped: list

    def __len__(self):
        return len(self.paths)


def _image_files(folder: Path, pattern):
    if pattern:
        # A pattern selects within the folder: an absolute one or one climbing out with ".."
        # would read files the folder does not hold.
        if not isinstance(pattern, str) or Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise ValueError(f"pattern: expected a glob relative to the folder, such as '*/*.png', got {pattern!r}")
        files = sorted(p for p in folder.glob(pattern) if p.is_file())
    else:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return files


def _pillow():
    try:
        from PIL import Image, UnidentifiedImageError  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("loading images needs Pillow: pip install pillow") from exc
    return Image, UnidentifiedImageError


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value


def _integer_top(handle):
    """``(largest value, signed, bits)`` that an integer image's file declares. Pillow keeps
    16-bit grayscale as ``I;16`` (``I;16S`` signed), every other integer depth above 8 bits as
    32-bit ``I`` and 8 bits as ``L``; a TIFF's tags say what that holds (12-bit samples in a
    16-bit container, signed samples); ``I`` from other formats (16-bit PNG in older Pillow,
    PGM) is 16-bit."""
    mode = handle.mode
    tags = getattr(handle, "tag_v2", None) if handle.format == "TIFF" else None
    if mode.startswith("I;16"):
        bits, signed = 16, mode.endswith("S")
    elif mode == "L":
        bits, signed = 8, False
    else:
        bits, signed = (32 if tags is not None else 16), False
    if tags is not None:
        declared = int(_first(tags.get(258, bits)))  # BitsPerSample
        bits = declared if 1 <= declared <= bits else bits
        signed = int(_first(tags.get(339, 2 if signed else 1))) == 2  # SampleFormat: 1 unsigned, 2 signed
    return (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1, signed, bits


def _declares_signed_bytes(handle) -> bool:
    """An 8-bit TIFF whose samples are signed: Pillow reads their bytes as unsigned ``L``."""
    tags = getattr(handle, "tag_v2", None) if handle.format == "TIFF" else None
    return handle.mode == "L" and tags is not None and int(_first(tags.get(339, 1))) == 2


def _to_byte_range(handle):
    """The grayscale pixels of an integer (``I``, ``I;16``) or float (``F``) image in 0..255,
    or ValueError when they lie outside the documented range (so no map is silently wrong)."""
    array = np.asarray(handle)
    if handle.mode == "F":
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise ValueError("float pixels with NaN or infinity")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(f"float pixels must lie in [0, 1], found {low:g}..{high:g}; "
                             "save them rescaled to [0, 1] or as 8/16-bit integers")
        return np.rint(array * 255.0).astype(np.uint8)
    top, signed, bits = _integer_top(handle)
    if handle.mode == "I" and not signed and bits == 32:
        array = array.view(np.uint32)  # unsigned 32-bit samples in Pillow's int32 storage
    elif handle.mode == "L" and signed:
        array = array.view(np.int8)
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > top:
        kind = f"{'signed' if signed else 'unsigned'} {bits}-bit"
        raise ValueError(f"{kind} pixels must lie in 0..{top} to map onto 0..255, found {low}..{high}")
    return np.rint(array.astype(np.float64) * (255.0 / top)).astype(np.uint8)


def read_image(path) -> np.ndarray:
    """The pixels of one image file as uint8 RGB ``[H, W, 3]``, whatever its bit depth.

    8-bit files (and every colour mode Pillow converts to RGB) are read as they are. Deeper
    integer images are scaled from the range of their sample type onto 0..255: unsigned n-bit
    from 0..2**n-1 (16-bit: divided by 257; a TIFF's BitsPerSample decides n, so 12-bit
    samples in a 16-bit container span 0..4095), signed n-bit from 0..2**(n-1)-1 (negative
    pixels are refused). Float images (mode ``F``, e.g. float32 TIFF) must hold values in [0, 1],
    multiplied by 255. Grayscale is replicated to three channels. An EXIF Orientation tag is
    applied, as image viewers apply it. A file outside its range is a ValueError naming it,
    never a saturated or black image.

    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     Image.fromarray(np.array([[0, 257, 65535]], np.uint16)).save(Path(folder) / "deep.tif")
    ...     read_image(Path(folder) / "deep.tif")[..., 0].tolist()
    [[0, 1, 255]]
    """
    image_module, _ = _pillow()
    with image_module.open(path) as handle:
        # The declared size, before decoding: a small compressed file can unpack to gigabytes.
        # Decoded bands, a float64 working copy of them and the 8-bit RGB result.
        width, height = handle.size
        check_fits(width * height * (16 * len(handle.getbands()) + 3), f"{path}: a {width} x {height} image")
        try:
            handle.load()
        except OSError as exc:  # e.g. a truncated file: Pillow's message does not say which
            raise OSError(f"{path}: {exc}") from None
        try:
            if handle.mode in ("I", "F") or handle.mode.startswith("I;16") or _declares_signed_bytes(handle):
                gray = _to_byte_range(handle)
                return _upright(np.repeat(gray[:, :, None], 3, axis=2), handle)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        return _upright(np.asarray(handle.convert("RGB"), dtype=np.uint8), handle)


def _upright(pixels, handle):
    """``pixels [H, W, 3]`` turned as the file's EXIF Orientation tag says (photos from phones
    and cameras store it rather than turn the pixels), as image viewers show them."""
    try:
        orientation = int(handle.getexif().get(0x0112, 1))
    except (ValueError, TypeError, OSError, SyntaxError):  # a damaged EXIF block: the pixels as stored
        return pixels
    swapped = pixels.transpose(1, 0, 2)
    turned = {2: pixels[:, ::-1], 3: pixels[::-1, ::-1], 4: pixels[::-1], 5: swapped, 6: swapped[:, ::-1],
              7: swapped[::-1, ::-1], 8: swapped[::-1]}.get(orientation, pixels)
    return np.ascontiguousarray(turned)


def load_images(source, image_size=224, *, pattern=None, grayscale_to_rgb=True, progress_bar=True):
    """Read images with Pillow (:func:`read_image`: any bit depth, converted to RGB in 0..255)
    and resize them to ``image_size``.

    ``source`` is a folder (every image file directly in it, or those matching the glob
    ``pattern``, e.g. ``"*/*.jpg"``) or a list of file paths. Unreadable files, and files whose
    pixels lie outside their documented range (float images outside [0, 1], negative signed
    integers), do not stop the run: they are listed in ``skipped`` with the reason.
    ``grayscale_to_rgb`` is kept for compatibility: images always come back as RGB.
    """
    check_switch(progress_bar, "progress_bar")
    image_module, unidentified = _pillow()
    size = _check_size(image_size, "image_size")
    if isinstance(source, (str, bytes, os.PathLike)):
        folder = Path(os.fsdecode(source))
        if not folder.exists():
            raise FileNotFoundError(f"source: no such folder {str(folder)!r}")
        files = [folder] if folder.is_file() else _image_files(folder, pattern)
        if not files:
            raise ValueError(f"source: no image files in {str(folder)!r}"
                             + (f" matching {pattern!r}" if pattern else ""))
    else:
        try:
            files = [Path(os.fsdecode(p)) for p in source]
        except TypeError:
            raise TypeError(f"source: expected a folder or a list of file paths, got {source!r:.200}") from None
        if not files:
            raise ValueError("source: empty list of files")
    # The resized images, and their stacked copy at the end.
    check_fits(2 * len(files) * size[0] * size[1] * 3, f"load_images: {len(files)} image(s) of {size[0]} x {size[1]} pixels")
    images, paths, sizes, skipped = [], [], [], []
    for path in progress(files, total=len(files), desc="load images", enabled=progress_bar and len(files) > 50):
        try:
            pixels = read_image(path)
            resized = image_module.fromarray(pixels).resize((size[1], size[0]), image_module.BILINEAR)
            array = np.asarray(resized, dtype=np.uint8)
        except (unidentified, OSError, ValueError, image_module.DecompressionBombError) as exc:
            skipped.append((str(path), f"{type(exc).__name__}: {exc}"))
            continue
        images.append(array)
        paths.append(str(path))
        sizes.append(pixels.shape[:2])
    if not images:
        reasons = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
        raise ValueError(f"source: none of the {len(files)} file(s) could be read ({reasons})")
    return LoadedImages(np.stack(images), paths, sizes, skipped)

