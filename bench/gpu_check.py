"""GPU check: run the GPU tests, then time every family's CUDA kernels against the best GPU peer,
and print one table (kernel, shape, time, achieved GB/s or TFLOP/s, ratio to the peer).

    python bench/gpu_check.py            # on a machine with an NVIDIA GPU and cupy

Each `bench/bench_<family>.py` may define `gpu_cases()` returning dicts with keys
`kernel`, `shape`, `ours` (callable), `peer` (callable or None), `peer_name`, and `bytes` and/or
`flops` (the work of one call, for the achieved rates).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FAMILIES = ("gaussian", "metrics", "musc", "mia", "tsetlin", "patchcore")


def gpu_time(fn, repeat=10):
    """Median GPU time of `fn()` in seconds (after one warm-up call)."""
    from cupyx.profiler import benchmark

    result = benchmark(fn, n_repeat=repeat, n_warmup=2)
    import numpy as np

    return float(np.median(result.gpu_times[0]))


def run_tests() -> int:
    cmd = [sys.executable, "-m", "pytest", os.path.join(ROOT, "tests"), "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    print("$", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def collect_cases():
    sys.path[:0] = [HERE, ROOT]
    cases = []
    for family in FAMILIES:
        try:
            module = importlib.import_module(f"bench_{family}")
        except ImportError as exc:
            print(f"(skipping bench_{family}: {exc})")
            continue
        make = getattr(module, "gpu_cases", None)
        if make is not None:
            cases.extend(make())
    return cases


def main() -> int:
    import cupy

    if not cupy.is_available():
        print("no CUDA GPU visible to cupy; nothing to check")
        return 1
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    print(f"GPU: {name}")
    status = run_tests()
    rows = []
    for case in collect_cases():
        repeat = case.get("repeat", 10)
        ours = gpu_time(case["ours"], repeat)
        peer = gpu_time(case["peer"], repeat) if case.get("peer") is not None else None
        rate = []
        if case.get("bytes"):
            rate.append(f"{case['bytes'] / ours / 1e9:,.0f} GB/s")
        if case.get("flops"):
            rate.append(f"{case['flops'] / ours / 1e12:,.1f} TFLOP/s")
        ratio = f"{peer / ours:.2f}x vs {case.get('peer_name', 'peer')}" if peer else "-"
        rows.append((case["kernel"], case["shape"], f"{ours * 1e3:.3f} ms", ", ".join(rate) or "-", ratio))
    headers = ("kernel", "shape", "time", "achieved", "ratio to peer")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print()
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(v.ljust(w) for v, w in zip(r, widths)))
    # The membership-detection check prints its own table (bf16 sweeps over vocabulary sizes).
    try:
        import gpu_check_mia  # noqa: PLC0415

        status = gpu_check_mia.main([]) or status
    except ImportError as exc:
        print(f"(skipping gpu_check_mia: {exc})")
    return status


if __name__ == "__main__":
    sys.exit(main())
