"""MuSc mutual scoring: fastcore_ad against the reference algorithm as the official code runs it.

Target workload: N=32 images, P=784 patches (28 x 28), C=1024 channels, float32.

- ``__fastcore``: Rust kernel (symmetric pairs, fused GEMM tile + minima, exact winner recheck).
- ``__numpy_reference``: the official code's algorithm in numpy (torch is not installed here):
  per image, the distance matrix to all other images' patches (expanded ``||a||^2 + ||b||^2 -
  2ab`` as ``torch.cdist`` computes it for large inputs), the minimum per other image, the mean
  of the k smallest.

Run:  .venv/bin/python -m pytest bench/bench_musc.py --benchmark-enable -q
Peak memory (each implementation in a fresh process):  .venv/bin/python bench/bench_musc.py --peak
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest

from fastcore_ad import musc

N, GRID, C = 32, 28, 1024
P = GRID * GRID


def _features(seed=0):
    rng = np.random.default_rng(seed)
    # Shared texture plus noise, like patch features of one object class.
    texture = rng.normal(size=(GRID, GRID, C)).astype(np.float32)
    return texture + 0.7 * rng.normal(size=(N, GRID, GRID, C)).astype(np.float32)


def _unit_patches():
    return musc.lnamd(_features(), 3).reshape(N, P, C)


def numpy_reference_mutual_scores(z, top_ratio=0.3):
    """The official per-image loop, in numpy float32."""
    n, p, _ = z.shape
    k = max(1, int((n - 1) * top_ratio))
    norms = (z * z).sum(axis=-1)
    out = np.empty((n, p), dtype=z.dtype)
    for i in range(n):
        others = np.concatenate([z[j] for j in range(n) if j != i])          # [(N-1)P, C]
        other_norms = np.concatenate([norms[j] for j in range(n) if j != i])
        d2 = norms[i][:, None] + other_norms[None, :] - 2.0 * (z[i] @ others.T)  # [P, (N-1)P]
        dist = np.sqrt(np.maximum(d2, 0.0)).reshape(p, n - 1, p).min(axis=-1)   # [P, N-1]
        out[i] = np.sort(dist, axis=1)[:, :k].mean(axis=1)
    return out


def numpy_lnamd(x, r):
    """LNAMD in numpy: standardise, r*r shifted sums of the zero-padded map, normalise."""
    n, h, w, c = x.shape
    flat = x.reshape(n, -1)
    mean = flat.mean(axis=1, dtype=np.float64)[:, None, None, None]
    std = np.sqrt(flat.var(axis=1, dtype=np.float64) + 1e-5)[:, None, None, None]
    s = ((x - mean) / std).astype(x.dtype)
    pad = (r - 1) // 2
    padded = np.pad(s, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    boxed = sum(padded[:, dy:dy + h, dx:dx + w] for dy in range(r) for dx in range(r)) / (r * r)
    return boxed / np.maximum(np.linalg.norm(boxed, axis=-1, keepdims=True), 1e-12)


@pytest.fixture(scope="module")
def unit_patches():
    return _unit_patches()


@pytest.fixture(scope="module")
def features():
    return _features()


@pytest.mark.benchmark(group="mutual_scores N=32 P=784 C=1024 float32")
def test_mutual_scores__fastcore(benchmark, unit_patches):
    out = benchmark.pedantic(musc.mutual_scores, args=(unit_patches,), rounds=3, iterations=1, warmup_rounds=1)
    assert out.shape == (N, P)


@pytest.mark.benchmark(group="mutual_scores N=32 P=784 C=1024 float32")
def test_mutual_scores__numpy_reference(benchmark, unit_patches):
    out = benchmark.pedantic(numpy_reference_mutual_scores, args=(unit_patches,), rounds=1, iterations=1)
    ours = musc.mutual_scores(unit_patches)
    # The expanded formula loses small distances; on these features both agree closely.
    np.testing.assert_allclose(out, ours, rtol=1e-3, atol=1e-3)


@pytest.mark.benchmark(group="lnamd r=3 N=32 28x28 C=1024 float32")
def test_lnamd__fastcore(benchmark, features):
    benchmark.pedantic(musc.lnamd, args=(features, 3), rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="lnamd r=3 N=32 28x28 C=1024 float32")
def test_lnamd__numpy_reference(benchmark, features):
    out = benchmark.pedantic(numpy_lnamd, args=(features, 3), rounds=2, iterations=1)
    np.testing.assert_allclose(out, musc.lnamd(features, 3), atol=1e-5)


def _cached_patches():
    """The unit patches, saved once under bench/out/ so a child process loads them without the
    generation's temporaries inflating its peak memory."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "musc_patches.npy")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, _unit_patches())
    return path


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_child(which: str, path: str) -> None:
    z = np.load(path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu0, start = _cpu_seconds(), time.perf_counter()
    if which == "fastcore":
        musc.mutual_scores(z)
    else:
        numpy_reference_mutual_scores(z)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{which}: {seconds:.2f} s wall, {cpu:.2f} s CPU (all threads), peak RSS {after / 1024:.0f} MiB "
          f"(before the call {before / 1024:.0f} MiB, added by the call {(after - before) / 1024:.0f} MiB); "
          f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--child":
        _peak_child(sys.argv[2], sys.argv[3])
    elif "--peak" in sys.argv:
        data = _cached_patches()
        for which in ("fastcore", "numpy_reference"):
            subprocess.run([sys.executable, os.path.abspath(__file__), "--child", which, data], check=True)
    else:
        print(__doc__)


def gpu_cases():
    """CUDA case for bench/gpu_check.py: one (layer, degree) pass, N=64, P=1369 (37 x 37), C=1024."""
    import cupy as cp

    n, p, c = 64, 1369, 1024
    rng = np.random.default_rng(0)
    texture = rng.normal(size=(1, p, c)).astype(np.float32)
    z = cp.asarray(texture + 0.7 * rng.normal(size=(n, p, c)).astype(np.float32))
    z /= cp.linalg.norm(z, axis=-1, keepdims=True)
    k = max(1, int((n - 1) * 0.3))

    def reference():
        # The official per-image loop in cupy: expanded-formula distances to all other images.
        norms = (z * z).sum(axis=-1)
        out = cp.empty((n, p), dtype=z.dtype)
        for i in range(n):
            others = cp.concatenate([z[:i], z[i + 1:]]).reshape(-1, c)
            other_norms = cp.concatenate([norms[:i], norms[i + 1:]]).reshape(-1)
            d2 = norms[i][:, None] + other_norms[None, :] - 2.0 * (z[i] @ others.T)
            dist = cp.sqrt(cp.maximum(d2, 0.0)).reshape(p, n - 1, p).min(axis=-1)
            out[i] = cp.sort(dist, axis=1)[:, :k].mean(axis=1)
        return out

    pairs = n * (n - 1) // 2
    return [{"kernel": "musc mutual_scores", "shape": f"N={n} P={p} C={c} f32",
             "ours": lambda: musc.mutual_scores(z), "peer": reference,
             "peer_name": "reference loop in cupy (cuBLAS)", "flops": 2 * pairs * 2 * p * p * c}]
