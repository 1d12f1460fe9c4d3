"""Real texture photographs with synthetic defects, for demos and smoke tests that need no
download: scikit-image's CC0 brick, grass and gravel (shipped in ``fastcore_ad/data/textures``),
with scratches, blobs and CutPaste-style patches pasted in, and simple filter-bank features.

>>> import numpy as np
>>> from fastcore_ad.textures import add_defect
>>> rng = np.random.default_rng(0)
>>> image, mask = add_defect(np.full((64, 64), 0.5), "blob", rng)
>>> bool(mask.any()) and image.shape == (64, 64)
True
"""

from __future__ import annotations

import importlib.resources
import time

import numpy as np

__all__ = ["TEXTURES", "load_texture", "add_defect", "make_dataset", "filter_features", "demo"]

TEXTURES = ("brick", "grass", "gravel")
DEFECTS = ("scratch", "blob", "cutpaste")


def load_texture(name: str) -> np.ndarray:
    """One shipped texture as float ``[512, 512]`` in [0, 1] (needs Pillow)."""
    if name not in TEXTURES:
        raise ValueError(f"name: expected one of {TEXTURES}, got {name!r}")
    try:
        from PIL import Image  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("reading the shipped textures needs Pillow: pip install pillow") from exc
    resource = importlib.resources.files("fastcore_ad") / "data" / "textures" / f"{name}.png"
    with resource.open("rb") as handle, Image.open(handle) as image:
        return np.asarray(image.convert("L"), dtype=np.float64) / 255.0


def add_defect(image, kind: str, rng):
    """A copy of the grayscale ``image`` (floats in [0, 1]) with one synthetic defect, and its mask."""
    _check_rng(rng)
    image = np.array(image, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < 8:
        raise ValueError(f"image: expected a grayscale [H, W] image of at least 8 x 8 pixels, got shape {image.shape}")
    height, width = image.shape
    rows, cols = np.mgrid[0:height, 0:width]
    if kind == "scratch":
        # A thin straight line, brighter or darker than its surroundings.
        length = rng.uniform(0.3, 0.6) * min(height, width)
        angle = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
        dy, dx = np.sin(angle), np.cos(angle)
        along = (rows - cy) * dy + (cols - cx) * dx
        across = np.abs(-(rows - cy) * dx + (cols - cx) * dy)
        mask = (np.abs(along) <= length / 2) & (across <= rng.uniform(0.8, 1.6))
        image[mask] = np.clip(image[mask] + rng.choice([-1, 1]) * rng.uniform(0.35, 0.5), 0, 1)
    elif kind == "blob":
        # A soft elliptical stain, masked wherever it changes a pixel by a tenth of its depth or
        # more (the faint rim beyond is left out, as an annotator would leave it).
        # At least 1.5 pixels across, so that the mask holds a pixel centre whenever the stain
        # changes any pixel, on small crops too.
        ry, rx = np.maximum(rng.uniform(0.06, 0.14, 2) * min(height, width), 1.5)
        cy, cx = rng.uniform(0.25, 0.75) * height, rng.uniform(0.25, 0.75) * width
        radius = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2
        weight = np.clip(1.5 - radius, 0, 1)
        image = np.clip(image + rng.choice([-1, 1]) * rng.uniform(0.3, 0.45) * weight, 0, 1)
        mask = weight >= 0.1
    elif kind == "cutpaste":
        # A patch of the same picture moved elsewhere, rotated: locally plausible, globally wrong.
        size = int(rng.uniform(0.15, 0.25) * min(height, width))
        sy, sx = rng.integers(0, height - size), rng.integers(0, width - size)
        ty, tx = rng.integers(0, height - size), rng.integers(0, width - size)
        # Brightness jitter away from 1, as CutPaste's colour jitter.
        gain = rng.choice([rng.uniform(0.6, 0.8), rng.uniform(1.25, 1.45)])
        patch = np.rot90(image[sy:sy + size, sx:sx + size], k=int(rng.integers(1, 4))) * gain
        image[ty:ty + size, tx:tx + size] = np.clip(patch, 0, 1)
        mask = np.zeros_like(image, dtype=bool)
        mask[ty:ty + size, tx:tx + size] = True
    else:
        raise ValueError(f"kind: expected one of {DEFECTS}, got {kind!r}")
    return image, mask


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy Generator (np.random.default_rng(seed)), got {rng!r}")


def make_dataset(texture, rng, *, crop=96, n_train=60, n_test=60, anomaly_ratio=0.5):
    """Random crops of one texture: training crops from its top half; test crops from its
    bottom half, ``anomaly_ratio`` of them with a defect (kinds in turn). Returns
    ``(train [n, crop, crop], test [m, crop, crop], masks [m, crop, crop], kinds [m])``."""
    _check_rng(rng)
    texture = np.asarray(texture)
    if texture.ndim != 2:
        raise ValueError(f"texture: expected a grayscale [H, W] image, got shape {texture.shape}")
    half = texture.shape[0] // 2
    for name, value, low, high in (("crop", crop, 8, min(half, texture.shape[1])), ("n_train", n_train, 1, None),
                                   ("n_test", n_test, 1, None)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low \
                or (high is not None and value > high):
            bound = (f"in [{low}, {high}] (the crops come from halves of a {texture.shape} texture)" if high
                     else f">= {low}")
            raise ValueError(f"{name}: expected a whole number {bound}, got {value!r}")
    if isinstance(anomaly_ratio, (bool, np.bool_)) \
            or not isinstance(anomaly_ratio, (int, float, np.integer, np.floating)) or not 0.0 <= anomaly_ratio <= 1.0:
        raise ValueError(f"anomaly_ratio: expected a number in [0, 1], got {anomaly_ratio!r}")

    def crops(top, count):
        ys = rng.integers(top, top + half - crop + 1, count)
        xs = rng.integers(0, texture.shape[1] - crop + 1, count)
        return np.stack([texture[y:y + crop, x:x + crop] for y, x in zip(ys, xs)])

    train = crops(0, n_train)
    test = crops(half, n_test)
    masks = np.zeros(test.shape, dtype=bool)
    kinds = ["good"] * n_test
    n_bad = int(round(anomaly_ratio * n_test))
    for i in range(n_bad):
        kinds[i] = DEFECTS[i % len(DEFECTS)]
        test[i], masks[i] = add_defect(test[i], kinds[i], rng)
    return train, test, masks, np.array(kinds)


def _box_mean(x, radius):
    """Mean over a (2r+1)^2 window (edge-replicated), for [n, H, W]."""
    size = 2 * radius + 1
    padded = np.pad(x, ((0, 0), (radius + 1, radius), (radius + 1, radius)), mode="edge")
    summed = padded.cumsum(axis=1).cumsum(axis=2)
    window = summed[:, size:, size:] - summed[:, :-size, size:] - summed[:, size:, :-size] + summed[:, :-size, :-size]
    return window / (size * size)


def filter_features(images, cell=8):
    """Fixed filter-bank features of grayscale images ``[n, H, W]``: per ``cell x cell`` block the
    mean and standard deviation of intensity, local contrast, horizontal and vertical gradients,
    gradient magnitude and Laplacian, giving maps ``[n, H/cell, W/cell, 12]`` (float32)."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"images: expected [n, H, W], got {x.shape}")
    if isinstance(cell, (bool, np.bool_)) or not isinstance(cell, (int, np.integer)) or not 1 <= cell <= min(x.shape[1:]):
        raise ValueError(f"cell: must be an integer in [1, {min(x.shape[1:])}] (the smaller image side), got {cell!r}")
    grad_y = np.zeros_like(x)
    grad_x = np.zeros_like(x)
    grad_y[:, 1:-1] = (x[:, 2:] - x[:, :-2]) / 2
    grad_x[:, :, 1:-1] = (x[:, :, 2:] - x[:, :, :-2]) / 2
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    laplacian = 4 * x - padded[:, :-2, 1:-1] - padded[:, 2:, 1:-1] - padded[:, 1:-1, :-2] - padded[:, 1:-1, 2:]
    local_mean = _box_mean(x, 2)
    contrast = np.sqrt(np.maximum(_box_mean(x * x, 2) - local_mean ** 2, 0.0))
    responses = [x, contrast, grad_x, grad_y, np.hypot(grad_x, grad_y), laplacian]
    n, height, width = x.shape
    gh, gw = height // cell, width // cell
    out = []
    for r in responses:
        blocks = r[:, :gh * cell, :gw * cell].reshape(n, gh, cell, gw, cell)
        mean = blocks.mean(axis=(2, 4))
        out.append(mean)
        out.append(np.sqrt(np.maximum((blocks * blocks).mean(axis=(2, 4)) - mean * mean, 0.0)))
    return np.stack(out, axis=-1).astype(np.float32)


def _musc_class():
    try:
        from .musc import MuSc  # noqa: PLC0415
    except ImportError:
        return None
    return MuSc


def demo(out_dir=None):
    """Gaussian AD (and MuSc when present) on real textures with synthetic defects."""
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from .features import resize_maps  # noqa: PLC0415
    from .gaussian import GaussianAD  # noqa: PLC0415
    from .patchcore import PatchCore  # noqa: PLC0415
    from .metrics import auroc  # noqa: PLC0415

    # Made first: a folder that cannot be made fails before minutes of work, not after.
    out_dir = out_dir or os.path.join(tempfile.gettempdir(), "fastcore_ad_demo")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"out_dir: cannot make the folder {os.fspath(out_dir)!r} ({exc.strerror or exc})") from None
    try:
        textures = {name: load_texture(name) for name in TEXTURES}
    except ImportError as exc:
        return [{"step": "textures: synthetic defects on CC0 photos", "result": f"skipped ({exc})", "seconds": 0.0}]
    rng = np.random.default_rng(0)
    rows, image_results, pixel_results, musc_results, patchcore_results = [], [], [], [], []
    best = None
    start = time.perf_counter()
    for name, texture in textures.items():
        train, test, masks, kinds = make_dataset(texture, rng)
        train_maps, test_maps = filter_features(train), filter_features(test)
        d = train_maps.shape[-1]
        # Textures are stationary: one Gaussian for every cell of every training crop.
        model = GaussianAD(progress=False).fit(train_maps.reshape(-1, d))
        cell_scores = model.decision_function(test_maps.reshape(-1, d)).reshape(test_maps.shape[:3])
        labels = (kinds != "good").astype(int)
        image_scores = cell_scores.reshape(len(test), -1).max(axis=1)
        pixel_maps = resize_maps(cell_scores, test.shape[1:])
        image_results.append(f"{name} {auroc(image_scores, labels):.3f}")
        pixel_results.append(f"{name} {auroc(pixel_maps.ravel(), masks.ravel()):.3f}")
        if best is None:
            clearest = int(np.argmax(np.where(labels == 1, image_scores, -np.inf)))
            best = (test[clearest], pixel_maps[clearest], masks[clearest], name, kinds[clearest])
        MuSc = _musc_class()
        if MuSc is not None:
            result = MuSc(degrees=(1, 3, 5), top_ratio=0.3).predict([test_maps])
            musc_results.append(f"{name} {auroc(np.asarray(result.image_scores), labels):.3f}")
        memory_bank = PatchCore(coreset_ratio=0.1, projection_dim=None, seed=0).fit(train_maps)
        patchcore_results.append(f"{name} {auroc(np.asarray(memory_bank.decision_function(test_maps)), labels):.3f}")
    seconds = time.perf_counter() - start
    rows.append({"step": "textures: Gaussian AD, filter features, synthetic defects (image AUROC)",
                 "result": "  ".join(image_results), "seconds": seconds})
    rows.append({"step": "textures: same, pixel AUROC", "result": "  ".join(pixel_results), "seconds": 0.0})
    if musc_results:
        rows.append({"step": "textures: MuSc zero-shot, filter features (image AUROC)",
                     "result": "  ".join(musc_results), "seconds": 0.0})
    rows.append({"step": "textures: PatchCore, 10% coreset, filter features (image AUROC)",
                 "result": "  ".join(patchcore_results), "seconds": 0.0})
    image, anomaly_map, mask, name, kind = best
    path = os.path.join(out_dir, f"overlay_{name}_{kind}.png")
    try:
        from .plot import save_overlay  # noqa: PLC0415

        save_overlay(path, (image * 255).astype(np.uint8), anomaly_map, mask)
        rows.append({"step": "textures: overlay written", "result": path, "seconds": 0.0})
    except ImportError as exc:
        rows.append({"step": "textures: overlay", "result": f"skipped ({exc})", "seconds": 0.0})
    return rows
