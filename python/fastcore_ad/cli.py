"""The ``fastcore-ad`` command: ``info`` prints the environment, ``demo`` runs every family on
embedded or generated data and prints a table of results and timings."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

FAMILIES = ("metrics", "gaussian", "musc", "mia", "tsetlin")


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
    return 2  # pragma: no cover - argparse rejects other commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
