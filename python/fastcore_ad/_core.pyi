# Type stubs of the compiled extension (checked against it by mypy.stubtest in tests/test_stubs.py).
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "FastcoreError", "SingularCovarianceError", "__version__", "after_fork_in_parent", "aupro", "before_fork", "binary_summary", "cuda_families",
    "cuda_source", "curve_counts", "fit_gaussian", "fit_gaussian_per_position", "greedy_coreset", "knn",
    "mahalanobis", "mahalanobis_per_position", "min_k_means", "musc_chunk_of_queries", "musc_key_tolerance",
    "musc_aligned_mutual_scores", "musc_lnamd", "musc_mutual_scores", "musc_rscin", "musc_scores_against_bank", "musc_top_k", "pro_curve",
    "reset_after_fork", "resolve_threads", "token_stats", "tsetlin_class_sums", "tsetlin_clause_outputs",
    "tsetlin_initial_state", "tsetlin_stream_key", "tsetlin_train_epoch",
]

__version__: str

class FastcoreError(Exception): ...
class SingularCovarianceError(FastcoreError): ...

_FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]

def before_fork() -> None: ...
def after_fork_in_parent() -> None: ...
def reset_after_fork() -> None: ...
def resolve_threads(n_jobs: int | None = None) -> int: ...
def cuda_source(family: str) -> str: ...
def cuda_families() -> list[str]: ...

# metrics
def binary_summary(
    scores: _FloatArray, labels: npt.NDArray[np.uint8], max_fprs: Sequence[float], min_tprs: Sequence[float], n_jobs: int | None = None
) -> dict[str, Any]: ...
def curve_counts(
    scores: _FloatArray, labels: npt.NDArray[np.uint8], n_jobs: int | None = None
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64], npt.NDArray[np.float64]]: ...
def pro_curve(
    maps: _FloatArray, masks: npt.NDArray[np.uint8], max_fpr: float, n_jobs: int | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def aupro(maps: _FloatArray, masks: npt.NDArray[np.uint8], max_fpr: float, n_jobs: int | None = None) -> float: ...

# gaussian
def mahalanobis(x: _FloatArray, mean: _FloatArray, w: _FloatArray, shape: str, n_jobs: int | None = None) -> _FloatArray: ...
def mahalanobis_per_position(
    x: _FloatArray, means: _FloatArray, factors: _FloatArray, shape: str, n_jobs: int | None = None
) -> _FloatArray: ...
def fit_gaussian(
    x: _FloatArray, estimator: str, reg: float, n_jobs: int | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float, npt.NDArray[np.float64]]: ...
def fit_gaussian_per_position(
    x: _FloatArray, estimator: str, reg: float, n_jobs: int | None = None
) -> tuple[_FloatArray, _FloatArray, _FloatArray, npt.NDArray[np.float64]]: ...

# mia
def token_stats(
    logits: _FloatArray | npt.NDArray[np.uint16],
    targets: npt.NDArray[np.int64],
    mask: npt.NDArray[np.uint8] | None = None,
    half: str = "bfloat16",
    n_jobs: int | None = None,
    with_max: bool = False,
) -> tuple[npt.NDArray[np.float64], ...]: ...
def min_k_means(
    values: npt.NDArray[np.float64], ratios: Sequence[float], mask: npt.NDArray[np.uint8] | None = None, n_jobs: int | None = None
) -> npt.NDArray[np.float64]: ...

# musc
def musc_lnamd(features: _FloatArray, r: int, n_jobs: int | None = None) -> _FloatArray: ...
def musc_mutual_scores(
    patches: _FloatArray, top_ratio: float, max_memory: int | None = None, n_jobs: int | None = None
) -> _FloatArray: ...
def musc_scores_against_bank(
    queries: _FloatArray, bank: _FloatArray, top_ratio: float, max_memory: int | None = None, n_jobs: int | None = None
) -> _FloatArray: ...
def musc_top_k(references: int, top_ratio: float) -> int: ...
def musc_chunk_of_queries(queries: int, references: int, p: int, max_memory: int | None, value_bytes: int) -> int: ...
def musc_key_tolerance(c: int, max_a: float, max_b: float, itemsize: int) -> float: ...
def musc_aligned_mutual_scores(
    patches: _FloatArray, top_ratio: float, window: int, n_jobs: int | None = None
) -> _FloatArray: ...
def musc_rscin(
    image_scores: npt.NDArray[np.float64], embeddings: npt.NDArray[np.float64], k_list: Sequence[int], n_jobs: int | None = None
) -> npt.NDArray[np.float64]: ...

# patchcore
def knn(
    queries: _FloatArray, bank: _FloatArray, k: int, metric: str = "euclidean", n_jobs: int | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]: ...
def greedy_coreset(
    x: _FloatArray, n_select: int, start: int = 0, progress: Any = None, n_jobs: int | None = None
) -> npt.NDArray[np.int64]: ...

# tsetlin: `config` is the dict built by fastcore_ad.tsetlin (n_features, n_classes, n_clauses,
# state_bits, threshold, specificity, weighted, boost_true_positive, focused_negatives,
# max_included_literals, negated_literals, max_negated_literals, clause_drop_p, coalesced, seed); `docs` is a packed uint64 array
# [n, words] or a CSR pair (indptr int64, indices int32).
_Docs = npt.NDArray[np.uint64] | tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]

def tsetlin_initial_state(
    config: dict[str, Any],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64], npt.NDArray[np.int32]]: ...
def tsetlin_train_epoch(
    config: dict[str, Any],
    action: npt.NDArray[np.uint64],
    lower: npt.NDArray[np.uint64],
    weights: npt.NDArray[np.int32],
    docs: _Docs,
    y: npt.NDArray[np.int64],
    order: npt.NDArray[np.int64],
    epoch: int,
    n_jobs: int | None = None,
) -> None: ...
def tsetlin_class_sums(
    config: dict[str, Any], action: npt.NDArray[np.uint64], weights: npt.NDArray[np.int32], docs: _Docs, n_jobs: int | None = None
) -> npt.NDArray[np.int64]: ...
def tsetlin_clause_outputs(
    config: dict[str, Any], action: npt.NDArray[np.uint64], docs: _Docs, n_jobs: int | None = None
) -> npt.NDArray[np.uint8]: ...
def tsetlin_stream_key(seed: int, parts: Sequence[int]) -> int: ...
