"""The ``fastcore-ad`` command: ``info`` prints the environment, ``demo`` runs every family on
embedded or generated data and prints a table of results and timings, ``detect`` scores a
folder of images (anomaly scores as CSV, overlays as PNG, a summary table)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

FAMILIES = ("metrics", "gaussian", "musc", "mia", "tsetlin", "textures")


def _demo_rows(only=None):
    rows = []
    for family in FAMILIES:
        if only and family not in only:
            continue
        try:
            module = importlib.import_module(f"fastcore_ad.{family}")
        except ImportError:
            continue
        step = getattr(module, "demo", None)
        if step is None:
            continue
        start = time.perf_counter()
        family_rows = step()
        if not family_rows:
            family_rows = [{"step": family, "result": "ran", "seconds": time.perf_counter() - start}]
        rows.extend(family_rows)
    return rows


def _print_table(rows, out=None):
    out = out or sys.stdout
    headers = ("step", "result", "seconds")
    cells = [(str(r["step"]), str(r["result"]), f"{float(r['seconds']):.3f}") for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line, file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)), file=out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastcore-ad", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, backends, threads, GPU")
    demo = sub.add_parser("demo", help="run every detector family on embedded or generated data")
    demo.add_argument("--only", nargs="*", choices=FAMILIES, help="run only these families")
    detect = sub.add_parser("detect", help="score a folder of images with a pretrained backbone")
    detect.add_argument("folder", help="images to score")
    detect.add_argument("--method", choices=("musc", "gaussian"), default="musc",
                        help="musc: zero-shot on the folder itself; gaussian: per-position Gaussians fitted on --train")
    detect.add_argument("--train", help="folder of defect-free images (needed by --method gaussian)")
    detect.add_argument("--out", default="fastcore_ad_detect", help="output folder (scores.csv, overlays/)")
    detect.add_argument("--pattern", help="glob inside FOLDER, e.g. '*.jpg' or '*/*.jpg' (default: every image file)")
    detect.add_argument("--train-pattern", help="glob inside --train (default: every image file)")
    detect.add_argument("--image-size", type=int, default=224, help="side of the square network input")
    detect.add_argument("--layers", nargs="+", default=["stage3", "stage5"], help="backbone levels")
    detect.add_argument("--weights", help="EfficientNet-Lite0 .pth file (default: the installed package)")
    detect.add_argument("--max-overlays", type=int, default=None, help="write overlays for the N highest scores only")
    detect.add_argument("--top", type=int, default=10, help="rows of the summary table")
    args = parser.parse_args(argv)

    import fastcore_ad  # noqa: PLC0415

    if args.command == "info":
        print(json.dumps(fastcore_ad.info(), indent=2))
        return 0
    if args.command == "demo":
        info = fastcore_ad.info()
        print(f"fastcore_ad {info['version']}  backends: {', '.join(info['backends'])}  threads: {info['threads']}")
        _print_table(_demo_rows(args.only))
        return 0
    if args.command == "detect":
        return _detect(args)
    return 2  # pragma: no cover - argparse rejects other commands


def _detect(args) -> int:
    import csv  # noqa: PLC0415
    import os  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from . import features, pipeline  # noqa: PLC0415
    from .features import WeightsNotFoundError  # noqa: PLC0415

    timings = {}

    def timed(name, fn, *a, **k):
        start = time.perf_counter()
        value = fn(*a, **k)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
        return value

    if args.method == "gaussian" and not args.train:
        print("error: --method gaussian needs --train FOLDER of defect-free images", file=sys.stderr)
        return 2
    if args.method == "musc":
        try:
            import fastcore_ad.musc  # noqa: F401, PLC0415
        except ImportError:
            print("error: --method musc needs fastcore_ad.musc, which is not part of this build; "
                  "use --method gaussian --train FOLDER", file=sys.stderr)
            return 2
    try:
        model = features.backbone(args.weights)
    except WeightsNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = args.image_size
    try:
        test = timed("load", features.load_images, args.folder, size, pattern=args.pattern)
        train = None
        if args.train:
            train = timed("load", features.load_images, args.train, size, pattern=args.train_pattern)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for loaded in (test, train):
        for path, reason in (loaded.skipped if loaded else []):
            print(f"skipped {path}: {reason}", file=sys.stderr)
    test_features = timed("features", model.extract, test, args.layers, size, pooled=False)
    if args.method == "gaussian":
        if len(train) < 2:
            print("error: --train needs at least 2 readable images", file=sys.stderr)
            return 2
        train_features = timed("features", model.extract, train, args.layers, size, pooled=False)
        scores, maps = timed("scoring", pipeline.per_position_gaussian, train_features.concatenated(),
                             test_features.concatenated(), (size, size))
    else:
        scores, maps = timed("scoring", pipeline.musc_zero_shot, test_features.maps, (size, size))

    os.makedirs(os.path.join(args.out, "overlays"), exist_ok=True)
    order = np.argsort(-scores, kind="stable")
    csv_path = os.path.join(args.out, "scores.csv")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "score", "rank", "height", "width"])
        ranks = np.empty(len(scores), dtype=np.int64)
        ranks[order] = np.arange(1, len(scores) + 1)
        for i, path in enumerate(test.paths):
            writer.writerow([path, f"{scores[i]:.6g}", int(ranks[i]), *test.sizes[i]])
    chosen = order if args.max_overlays is None else order[:max(0, args.max_overlays)]
    # One colour scale for the whole folder, so overlays compare.
    vmin, vmax = float(np.percentile(maps, 1)), float(np.percentile(maps, 99.9))
    written = timed("overlays", _write_overlays, test, maps, chosen, os.path.join(args.out, "overlays"), vmin, vmax)

    print(f"fastcore-ad detect: {len(test)} image(s) from {args.folder} scored with {args.method}"
          + (f" (trained on {len(train)} from {args.train})" if train is not None else "")
          + f"; {len(test.skipped) + (len(train.skipped) if train else 0)} file(s) skipped")
    rows = [{"step": f"#{rank + 1} {os.path.relpath(test.paths[i], args.folder)}", "result": f"{scores[i]:.4g}",
             "seconds": 0.0} for rank, i in enumerate(order[:args.top])]
    quantiles = np.percentile(scores, [0, 50, 90, 100])
    rows.append({"step": "scores min / median / p90 / max",
                 "result": " / ".join(f"{q:.4g}" for q in quantiles), "seconds": 0.0})
    for name, seconds in timings.items():
        rows.append({"step": f"time: {name}", "result": f"{1000 * seconds / max(1, len(test)):.1f} ms/image",
                     "seconds": seconds})
    rows.append({"step": "written", "result": f"{csv_path}, {written} overlay(s) in {args.out}/overlays",
                 "seconds": 0.0})
    _print_table(rows)
    return 0


def _write_overlays(loaded, maps, chosen, folder, vmin, vmax) -> int:
    import os  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    from .plot import save_overlay  # noqa: PLC0415

    used = set()
    for i in chosen:
        path = loaded.paths[i]
        with Image.open(path) as handle:
            image = np.asarray(handle.convert("RGB"))
        name = os.path.splitext(os.path.basename(path))[0]
        parent = os.path.basename(os.path.dirname(path))
        if name in used:
            name = f"{parent}_{name}"
        used.add(name)
        save_overlay(os.path.join(folder, f"{name}.png"), image, maps[i], vmin=vmin, vmax=vmax)
    return len(chosen)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
