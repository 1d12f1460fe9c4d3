"""CUDA kernels: one NVRTC-compiled module per family, compiled lazily and cached per device.

The sources are embedded in the compiled extension (`_core.cuda_source`), so they ship with
every wheel. Template kernels are instantiated by name expressions chosen from the dtypes.
"""

from __future__ import annotations

import functools

from . import _core

# Template instantiations each family needs, by kernel.
NAME_EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "gaussian": (
        "whitened_sq_norms<float, float>",
        "whitened_sq_norms<double, double>",
    ),
    "mia": (
        "token_stats<float>",
        "token_stats<double>",
        "token_stats<fca_bf16>",
        "token_stats<fca_f16>",
    ),
    "musc": (
        "musc_lnamd<float>",
        "musc_lnamd<double>",
        "musc_pair_minima<float>",
        "musc_pair_minima<double>",
        "musc_top_k_mean<float>",
        "musc_top_k_mean<double>",
    ),
    "tsetlin": ("tsetlin_class_sums",),
}

COMPILE_OPTIONS = ("-std=c++17",)


def source(family: str) -> str:
    return _core.cuda_source(family)


@functools.lru_cache(maxsize=None)
def _module(family: str, device_id: int):
    import cupy  # noqa: PLC0415

    with cupy.cuda.Device(device_id):
        return cupy.RawModule(
            code=source(family),
            options=COMPILE_OPTIONS,
            name_expressions=NAME_EXPRESSIONS.get(family, ()),
        )


def kernel(family: str, name_expression: str):
    """The compiled kernel `name_expression` of `family` on the current device."""
    import cupy  # noqa: PLC0415

    return _module(family, cupy.cuda.Device().id).get_function(name_expression)


def ctype(dtype) -> str:
    import numpy as np  # noqa: PLC0415

    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return "float"
    if dtype == np.float64:
        return "double"
    raise TypeError(f"no CUDA kernel for dtype {dtype}")


def launch(kernel_fn, grid, block, args) -> None:
    """Launch unless the grid is empty; the block size is capped by the kernel's limit."""
    if any(int(g) == 0 for g in grid):
        return
    limit = int(kernel_fn.max_threads_per_block)
    threads = 1
    for b in block:
        threads *= int(b)
    if threads > limit:
        raise RuntimeError(f"{kernel_fn.__name__ if hasattr(kernel_fn, '__name__') else 'kernel'}: "
                           f"block of {threads} threads exceeds this kernel's limit of {limit}")
    kernel_fn(tuple(int(g) for g in grid), tuple(int(b) for b in block), args)


def nvrtc_compile(family: str, arch: str) -> bytes:
    """Compile one family's source to a cubin for `arch` (e.g. 'sm_90') with NVRTC alone.

    Needs no GPU: used by the test suite to prove every kernel compiles.
    """
    from cupy_backends.cuda.libs import nvrtc  # noqa: PLC0415

    prog = nvrtc.createProgram(source(family), f"{family}.cu", [], [])
    try:
        for expr in NAME_EXPRESSIONS.get(family, ()):
            nvrtc.addNameExpression(prog, expr)
        options = [*COMPILE_OPTIONS, f"--gpu-architecture={arch}"]
        try:
            nvrtc.compileProgram(prog, options)
        except Exception as exc:
            log = nvrtc.getProgramLog(prog)
            raise RuntimeError(f"NVRTC failed to compile {family}.cu for {arch}:\n{log}") from exc
        return nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
