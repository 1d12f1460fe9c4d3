"""The ``fastcore-ad`` command: ``info`` prints the environment, ``demo`` runs every family on
embedded or generated data and prints a table of results and timings, ``detect`` scores a
folder of images (anomaly scores as CSV, overlays as PNG, a summary table).

A usage error is one line ``error: ...`` on stderr and exit status 2; ``detect`` checks its
arguments, folders and output path before loading the network or computing any feature.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

__all__ = ["main"]

FAMILIES = ("metrics", "gaussian", "musc", "mia", "tsetlin", "textures")
USAGE_ERROR = 2


class _UsageError(Exception):
    """A bad command line: printed as one line ``error: ...``, exit status 2."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the usage and exits from inside parse_args; one line and a return value
    # instead, so that main() returns 2 like every other usage error.
    def error(self, message):
        raise _UsageError(f"{message} (see {self.prog} --help)")


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
        try:
            family_rows = step()
        except ValueError as exc:  # e.g. an output folder that cannot be made
            raise _UsageError(f"demo ({family}): {exc}") from None
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
    try:
        return _main(argv)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR


def _main(argv) -> int:
    parser = _Parser(prog="fastcore-ad", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, backends, threads, GPU")
    demo = sub.add_parser("demo", help="run every detector family on embedded or generated data")
    demo.add_argument("--only", nargs="+", choices=FAMILIES, help="run only these families")
    detect = sub.add_parser("detect", help="score a folder of images with a pretrained backbone")
    detect.add_argument("folder", help="images to score")
    detect.add_argument("--method", choices=("musc", "gaussian", "patchcore"), default="musc",
                        help="musc: zero-shot on the folder itself; gaussian: per-position Gaussians fitted on --train; "
                             "patchcore: a coreset memory bank of --train's patches")
    detect.add_argument("--train", help="folder of defect-free images (needed by --method gaussian and patchcore)")
    detect.add_argument("--out", default="fastcore_ad_detect", help="output folder (scores.csv, overlays/)")
    detect.add_argument("--pattern", help="glob inside FOLDER, e.g. '*.jpg' or '*/*.jpg' (default: every image file)")
    detect.add_argument("--train-pattern", help="glob inside --train (default: every image file)")
    detect.add_argument("--image-size", type=int, default=224, help="side of the square network input")
    detect.add_argument("--layers", nargs="+", default=["stage3", "stage5"], help="backbone levels")
    detect.add_argument("--weights", help="EfficientNet-Lite0 .pth file (default: the installed package)")
    detect.add_argument("--sigma", type=float, default=4.0,
                        help="Gaussian smoothing of the anomaly maps in pixels (0: none); see fastcore_ad.maps")
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


def _check_detect_arguments(args):
    """Everything about the command line that needs no file read: a _UsageError otherwise."""
    from . import features, maps  # noqa: PLC0415

    if args.method in ("gaussian", "patchcore") and not args.train:
        raise _UsageError(f"--method {args.method} needs --train FOLDER of defect-free images")
    if args.method == "musc" and args.train:
        raise _UsageError("--train: --method musc is zero-shot (the test images score each other) and reads "
                          "no training folder; drop --train or use --method gaussian / patchcore")
    if not args.out:
        raise _UsageError("--out: expected a folder name, got ''")
    if args.method == "musc":
        try:
            import fastcore_ad.musc  # noqa: F401, PLC0415
        except ImportError:
            raise _UsageError("--method musc needs fastcore_ad.musc, which is not part of this build; "
                              "use --method gaussian --train FOLDER") from None
    try:
        features._check_levels(args.layers)
    except ValueError as exc:
        raise _UsageError(f"--{exc}") from None
    if args.image_size < 1:
        raise _UsageError(f"--image-size: must be >= 1 pixel, got {args.image_size}")
    if not args.sigma >= 0:
        raise _UsageError(f"--sigma: must be >= 0 pixels (0: no smoothing), got {args.sigma:g}")
    if args.sigma:
        try:
            maps._check_smoothing(args.sigma, maps.MODE, maps.TRUNCATE)
        except ValueError as exc:
            raise _UsageError(f"--{exc}") from None
    for option, value in (("--max-overlays", args.max_overlays), ("--top", args.top)):
        if value is not None and value < 0:
            raise _UsageError(f"{option}: must be >= 0, got {value}")


def _check_detect_paths(args):
    """The input folders exist and the output folder can be made: a _UsageError otherwise."""
    import os  # noqa: PLC0415

    for option, folder in (("FOLDER", args.folder), ("--train", args.train)):
        if folder is not None and not os.path.exists(folder):
            raise _UsageError(f"{option}: no such folder {folder!r}")
    if args.weights is not None and not os.path.isfile(args.weights):
        what = ("is a folder, not the .pth file" if os.path.isdir(args.weights) else
                "is not a regular file" if os.path.exists(args.weights) else "no such file")
        raise _UsageError(f"--weights: {args.weights!r} {what}")
    out = os.path.abspath(args.out)
    for path in (out, os.path.join(out, "overlays")):
        if os.path.exists(path) and not os.path.isdir(path):
            raise _UsageError(f"--out: {path!r} exists and is not a folder")
    if os.path.isdir(os.path.join(out, "scores.csv")):
        raise _UsageError(f"--out: {os.path.join(out, 'scores.csv')!r} is a folder; scores.csv cannot be written")
    existing = out
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise _UsageError(f"--out: {existing!r} is a file, so {args.out!r} cannot be a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _UsageError(f"--out: no permission to write in {existing!r}")


def _detect(args) -> int:
    import os  # noqa: PLC0415

    _check_detect_arguments(args)
    _check_detect_paths(args)
    created = _make_output_folders(args.out)
    try:
        return _detect_run(args)
    except BaseException:
        for folder in created:  # the run stopped: leave no empty folders behind (rmdir spares others)
            try:
                os.rmdir(folder)
            except OSError:
                pass
        raise


def _make_output_folders(out) -> list:
    """Makes ``out/overlays`` before the images and the network load, so that a folder that cannot
    be made fails first; returns the folders it created, deepest first."""
    import os  # noqa: PLC0415

    target = os.path.abspath(os.path.join(out, "overlays"))
    missing = []
    while not os.path.exists(target):
        missing.append(target)
        target = os.path.dirname(target)
    try:
        os.makedirs(os.path.join(out, "overlays"), exist_ok=True)
    except OSError as exc:
        raise _UsageError(f"--out: cannot create {out!r} ({exc.strerror or exc})") from None
    return missing


def _detect_run(args) -> int:
    """Load, extract, score and write; the arguments and the output folder are checked already."""
    import csv  # noqa: PLC0415
    import os  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from . import features, pipeline  # noqa: PLC0415
    from ._core import SingularCovarianceError  # noqa: PLC0415
    from .features import WeightsNotFoundError  # noqa: PLC0415

    timings = {}

    def timed(name, fn, *a, **k):
        start = time.perf_counter()
        value = fn(*a, **k)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
        return value

    size = args.image_size

    def load(folder, pattern, options):
        try:
            return timed("load", features.load_images, folder, size, pattern=pattern)
        except (FileNotFoundError, ValueError, MemoryError) as exc:
            # load_images names its own arguments: say the command line's instead.
            message = str(exc)
            for argument, option in zip(("source: ", "pattern: "), options):
                if message.startswith(argument):
                    message = f"{option}: {message[len(argument):]}"
            raise _UsageError(message) from None

    test = load(args.folder, args.pattern, ("FOLDER", "--pattern"))
    train = load(args.train, args.train_pattern, ("--train", "--train-pattern")) if args.train else None
    for loaded in (test, train):
        for path, reason in (loaded.skipped if loaded else []):
            print(f"skipped {path}: {reason}", file=sys.stderr)
    if args.method == "musc" and len(test) < 2:
        raise _UsageError(f"--method musc scores the images against each other and needs at least 2 readable "
                          f"images in {args.folder!r}, got {len(test)}")
    # Two images leave Ledoit-Wolf no shrinkage: their covariance at a grid position is singular.
    least = 3 if args.method == "gaussian" else 2
    if train is not None and len(train) < least:
        raise _UsageError(f"--train needs at least {least} readable images for --method {args.method}, "
                          f"got {len(train)} in {args.train!r}")
    try:
        model = features.backbone(args.weights)
    except WeightsNotFoundError as exc:
        raise _UsageError(str(exc)) from None
    except (ValueError, OSError) as exc:  # a file that is not the weights of EfficientNet-Lite0
        raise _UsageError(f"--weights: {exc}") from None

    try:
        test_features = timed("features", model.extract, test, args.layers, size, pooled=False)
        if args.method == "gaussian":
            train_features = timed("features", model.extract, train, args.layers, size, pooled=False)
            scores, maps = timed("scoring", pipeline.per_position_gaussian, train_features.concatenated(),
                                 test_features.concatenated(), (size, size), sigma=args.sigma)
        elif args.method == "patchcore":
            train_features = timed("features", model.extract, train, args.layers, size, pooled=False)
            scores, maps = timed("scoring", pipeline.patchcore, train_features.maps, test_features.maps, (size, size),
                                 sigma=args.sigma)
        else:
            scores, maps = timed("scoring", pipeline.musc_zero_shot, test_features.maps, (size, size), sigma=args.sigma)
    except MemoryError as exc:  # checked before allocating: the folder or --image-size is too large here
        raise _UsageError(f"{exc}; try a smaller --image-size or fewer images") from None
    except SingularCovarianceError:  # features that do not vary at some grid position
        raise _UsageError(f"--train: the features of the {len(train)} training images do not vary enough at "
                          "some grid position for its Gaussian (a singular covariance); give more, and more "
                          "varied, defect-free images") from None

    order = np.argsort(-scores, kind="stable")
    csv_path = os.path.join(args.out, "scores.csv")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "score", "rank", "height", "width"])
        ranks = np.empty(len(scores), dtype=np.int64)
        ranks[order] = np.arange(1, len(scores) + 1)
        for i, path in enumerate(test.paths):
            writer.writerow([path, f"{scores[i]:.6g}", int(ranks[i]), *test.sizes[i]])
    chosen = order if args.max_overlays is None else order[:args.max_overlays]
    # One colour scale for the whole folder, so overlays compare.
    vmin, vmax = float(np.percentile(maps, 1)), float(np.percentile(maps, 99.9))
    written = timed("overlays", _write_overlays, test, maps, chosen, os.path.join(args.out, "overlays"), vmin, vmax)

    print(f"fastcore-ad detect: {len(test)} image(s) from {args.folder} scored with {args.method}"
          + (f" (trained on {len(train)} from {args.train})" if train is not None else "")
          + f"; {len(test.skipped) + (len(train.skipped) if train else 0)} file(s) skipped")

    def shown(path):  # relative to FOLDER, or the file's name when FOLDER is that file
        return os.path.relpath(path, args.folder) if os.path.isdir(args.folder) else os.path.basename(path)

    rows = [{"step": f"#{rank + 1} {shown(test.paths[i])}", "result": f"{scores[i]:.4g}", "seconds": 0.0}
            for rank, i in enumerate(order[:args.top])]
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

    from .features import read_image  # noqa: PLC0415
    from .plot import save_overlay  # noqa: PLC0415

    used = set()  # casefolded: a.png and A.png are one file on case-insensitive file systems
    for i in chosen:
        path = loaded.paths[i]
        stem = os.path.splitext(os.path.basename(path))[0]
        parent = os.path.basename(os.path.dirname(path))
        name = stem if stem.casefold() not in used else f"{parent}_{stem}"
        # a0.png, a0.jpg and a0.bmp in one folder clash twice: number them until unused.
        base, count = name, 1
        while name.casefold() in used:
            count += 1
            name = f"{base}_{count}"
        used.add(name.casefold())
        # The pixels as the network saw them (16-bit and float files rescaled), at full size.
        save_overlay(os.path.join(folder, f"{name}.png"), read_image(path), maps[i], vmin=vmin, vmax=vmax)
    return len(used)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
