"""Dask figures: streaming Gaussian fit memory, and scoring / AUROC with 1 and 2 workers against
the plain in-memory call (the peer) on the same data.

    python bench/bench_dask.py                      # 400,000 x 512 stream, 500,000 x 512 scoring, 20M scores
    python bench/bench_dask.py --stream-rows 2000000 --score-rows 4000000 --scores 100000000

Peak RSS of the streaming fit is this process's high-water mark (``ru_maxrss``) after the
stream, next to the mark before it; the fit is checked against ``fit`` on the first
``--check-rows`` rows (the same rows streamed in the same chunks).
"""

import argparse
import resource
import time

import numpy as np


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kilobytes on Linux


def chunk_of_features(index: int, rows: int, d: int, mix):
    rng = np.random.default_rng(1000 + index)
    return (rng.standard_normal((rows, d), dtype=np.float32) @ mix).astype(np.float32)


def streaming_fit(total_rows: int, d: int, chunk_rows: int, check_rows: int):
    from fastcore_ad import GaussianAD

    mix = (np.eye(d) + 0.1 * np.random.default_rng(0).standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
    before = peak_rss_mb()
    model = GaussianAD(covariance="ledoit_wolf", progress=False)
    start = time.perf_counter()
    chunks = (total_rows + chunk_rows - 1) // chunk_rows
    for index in range(chunks):
        model.partial_fit(chunk_of_features(index, min(chunk_rows, total_rows - index * chunk_rows), d, mix))
    seconds = time.perf_counter() - start
    after = peak_rss_mb()
    print(f"streaming LW fit {total_rows:,} x {d} float32 ({total_rows * d * 4 / 2**30:.1f} GiB generated) in "
          f"{chunk_rows:,}-row chunks: {seconds:.1f} s, peak RSS {after:.0f} MB (before the stream {before:.0f} MB)")

    check_chunks = check_rows // chunk_rows
    subset = np.concatenate([chunk_of_features(i, chunk_rows, d, mix) for i in range(check_chunks)])
    streamed = GaussianAD(covariance="ledoit_wolf", progress=False)
    for i in range(check_chunks):
        streamed.partial_fit(subset[i * chunk_rows:(i + 1) * chunk_rows])
    start = time.perf_counter()
    whole = GaussianAD(covariance="ledoit_wolf", progress=False).fit(subset)
    fit_seconds = time.perf_counter() - start
    error = np.max(np.abs(streamed.precision_cholesky_ - whole.precision_cholesky_)) / np.max(
        np.abs(whole.precision_cholesky_))
    print(f"  check on {len(subset):,} rows: max relative difference of the factor {error:.1e} (float32 outputs), "
          f"shrinkage {streamed.shrinkage_:.6f} vs {whole.shrinkage_:.6f}; in-memory Rust fit {fit_seconds:.1f} s")


def scaling(score_rows: int, d: int, n_scores: int):
    import dask.array as da
    import distributed

    from fastcore_ad import GaussianAD, metrics

    rng = np.random.default_rng(0)
    model = GaussianAD(covariance="ledoit_wolf", progress=False).fit(rng.standard_normal((20_000, d)).astype(np.float32))
    row_chunk = 100_000
    for workers in (1, 2):
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            features = da.random.default_rng(1).standard_normal((score_rows, d), chunks=(row_chunk, d),
                                                                dtype=np.float32)
            features = client.persist(features)
            distributed.wait(features)
            start = time.perf_counter()
            model.decision_function(features).sum().compute()
            score_seconds = time.perf_counter() - start

            scores = client.persist(da.random.default_rng(2).random(n_scores, chunks=5_000_000, dtype=np.float32))
            labels = client.persist(da.random.default_rng(3).random(n_scores, chunks=5_000_000) < 0.1)
            distributed.wait([scores, labels])
            start = time.perf_counter()
            auc = metrics.auroc(scores, labels)
            auroc_seconds = time.perf_counter() - start
            if workers == 2:
                one_chunk = features.blocks[0].compute()
                host_scores, host_labels = scores.compute(), labels.compute()
        print(f"{workers} worker(s): Mahalanobis {score_rows:,} x {d} float32 {score_seconds:.2f} s; "
              f"AUROC over {n_scores:,} float32 scores {auroc_seconds:.2f} s (AUROC {auc:.6f})")
    start = time.perf_counter()
    model.decision_function(one_chunk)
    plain = time.perf_counter() - start
    print(f"plain call on one {row_chunk:,}-row chunk: {plain * 1e3:.0f} ms "
          f"(x {score_rows // row_chunk} chunks = {plain * score_rows / row_chunk:.2f} s of kernel time)")
    start = time.perf_counter()
    in_memory = metrics.auroc(host_scores, host_labels)
    print(f"in-memory AUROC on the same {n_scores:,} scores: {time.perf_counter() - start:.2f} s "
          f"(AUROC {in_memory:.6f}, difference {abs(in_memory - auc):.1e})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes = {"features": 512, "stream-rows": 400_000, "chunk-rows": 50_000, "check-rows": 200_000,
             "score-rows": 500_000, "scores": 20_000_000}
    for name, default in sizes.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--skip-stream", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args()
    if not args.skip_stream:
        streaming_fit(args.stream_rows, args.features, args.chunk_rows, args.check_rows)
    if not args.skip_scaling:
        scaling(args.score_rows, args.features, args.scores)


if __name__ == "__main__":
    main()
