"""GPU check for the mia CUDA kernel: agreement with the Rust kernel and read bandwidth.

    python bench/gpu_check_mia.py [--peak-tbs 4.3]

For bfloat16 logits [B, T, V] with V = 32k, 50k and 128k: the CUDA token_stats result against
the Rust result on the same bits, the time per call (CUDA events, best of 5), the read
bandwidth it implies against the read-once floor (bytes of logits / peak bandwidth; about
4.3 TB/s on an H200), and the reference code's math (softmax and log_softmax materialised in
float32, E[x^2] - mu^2) in cupy on the same GPU. Prints one table; exits 0 with a message when
no GPU is present.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from fastcore_ad import _cuda


def bf16_bits(cp, x):
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (uint16)."""
    bits = x.view(cp.uint32)
    rounding = ((bits >> 16) & 1) + cp.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(cp.uint16)


def reference_math(cp, logits32, targets):
    shifted = logits32 - logits32.max(axis=-1, keepdims=True)
    log_probs = shifted - cp.log(cp.exp(shifted).sum(axis=-1, keepdims=True))
    probs = cp.exp(log_probs)
    logp = cp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    mu = (probs * log_probs).sum(axis=-1)
    sigma = cp.sqrt((probs * log_probs * log_probs).sum(axis=-1) - mu * mu)
    return logp, mu, sigma


def best_time(cp, fn, repeats=5):
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    fn()  # compile / warm up
    best = float("inf")
    for _ in range(repeats):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        best = min(best, cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peak-tbs", type=float, default=4.3, help="peak DRAM bandwidth, TB/s")
    parser.add_argument("--tokens", type=int, default=8192, help="B x T rows per call")
    args = parser.parse_args(argv)
    try:
        import cupy as cp

        if not cp.is_available():
            raise RuntimeError
    except Exception:
        print("skip: no CUDA GPU (cupy.is_available() is False)")
        return 0

    from fastcore_ad import _core, mia

    rng = np.random.default_rng(0)
    print(f"GPU: {cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)['name']}")
    print("| V | logits GB | fastcore CUDA s | GB/s | x floor | reference math s | max |rust - cuda| |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for vocab in (32000, 50257, 128256):
        batch, time = 8, args.tokens // 8
        x32 = cp.random.RandomState(vocab).standard_normal((batch, time, vocab), dtype=cp.float32) * 3.0
        bits = bf16_bits(cp, x32)
        del x32
        targets = cp.asarray(rng.integers(0, vocab, (batch, time)), dtype=cp.int64)
        def run():
            return _cuda.token_stats(bits, targets, None, "bfloat16")

        seconds = best_time(cp, run)
        nbytes = bits.size * 2
        floor = nbytes / (args.peak_tbs * 1e12)
        got = [cp.asnumpy(a) for a in run()]
        # Rust on a host copy of 2 sequences (the same bits).
        host_bits = cp.asnumpy(bits[:2])
        expected = _core.token_stats(host_bits, cp.asnumpy(targets[:2]), None, "bfloat16", None)
        err = max(float(np.max(np.abs(g[:2] - e))) for g, e in zip(got, expected))
        ok &= err < 1e-4
        widened = (bits.astype(cp.uint32) << 16).view(cp.float32)
        try:
            ref_seconds = best_time(cp, lambda: reference_math(cp, widened, targets), repeats=2)
            ref_text = f"{ref_seconds:.4f}"
        except cp.cuda.memory.OutOfMemoryError:
            ref_text = "out of memory"
        del widened
        print(f"| {vocab} | {nbytes / 1e9:.2f} | {seconds:.5f} | {nbytes / seconds / 1e9:.0f} | "
              f"{seconds / floor:.2f} | {ref_text} | {err:.1e} |")
        del bits
        cp.get_default_memory_pool().free_all_blocks()
    print("agreement with Rust:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
