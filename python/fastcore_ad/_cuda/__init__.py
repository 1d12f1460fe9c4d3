"""The CUDA backend: one module per family with the names and signatures of the Rust entry
points in ``_core``, so the dispatch picks one or the other by array type alone.

Kernels are compiled from the sources embedded in the extension (``_core.cuda_source``) by
NVRTC through CuPy, lazily and once per device; launch geometry comes from :mod:`.plans`.
"""

from __future__ import annotations

from ._runtime import (COMPILE_OPTIONS, CupyRuntime, Kernel, Runtime, ctype, current, kernels_of,
                       name_expressions, nvrtc_compile, source, using)
from .gaussian import mahalanobis, mahalanobis_per_position
from .mia import token_stats
from .musc import musc_aligned_mutual_scores, musc_lnamd, musc_mutual_scores, musc_scores_against_bank
from .patchcore import greedy_coreset, knn
from .tsetlin import tsetlin_class_sums, tsetlin_train_epoch

NAME_EXPRESSIONS = name_expressions()

__all__ = [
    "COMPILE_OPTIONS", "CupyRuntime", "Kernel", "NAME_EXPRESSIONS", "Runtime", "ctype", "current", "kernels_of",
    "name_expressions", "nvrtc_compile", "source", "using",
    "mahalanobis", "mahalanobis_per_position", "token_stats", "musc_lnamd", "musc_mutual_scores", "musc_aligned_mutual_scores",
    "musc_scores_against_bank", "knn", "greedy_coreset", "tsetlin_class_sums",
    "tsetlin_train_epoch",
]
