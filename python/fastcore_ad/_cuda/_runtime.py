"""How CUDA kernels are named, compiled and launched.

A :class:`Kernel` names one ``__global__`` template of one family once, with the template
instantiations it is compiled for. A runtime turns an instantiation into something that runs:
:class:`CupyRuntime` compiles the family's source with NVRTC (through CuPy, cached per device)
and launches on the GPU; the test suite's emulated runtime runs the same sources on the CPU. The
family modules of this package are written against the runtime's small interface (``xp``, the
array module, and ``launch``), so both runtimes execute exactly the same host code and launch
plans.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import numpy as np

from . import plans

COMPILE_OPTIONS = ("-std=c++17",)
# Per family, added to COMPILE_OPTIONS. The memory-bank kernels measure exact float64 distances
# that must round as the Rust kernels round them (no product fused into an add), so that knn's
# order and the coreset's picks are the CPU's on near ties too.
FAMILY_OPTIONS = {"patchcore": ("--fmad=false",)}


def compile_options(family: str) -> tuple:
    """The NVRTC options of one family's source."""
    return (*COMPILE_OPTIONS, *FAMILY_OPTIONS.get(family, ()))

# A null pointer argument: 8 zero bytes (CuPy passes numpy scalars by value, unchecked).
NULL = np.uint64(0)


class Kernel:
    """One ``__global__`` function of ``cuda/<family>.cu`` and the instantiations compiled."""

    registry: dict[str, list[Kernel]] = {}

    def __init__(self, family: str, name: str, instantiations: tuple[tuple[str, ...], ...] = ()):
        self.family = family
        self.name = name
        self.instantiations = tuple(tuple(args) for args in instantiations)
        Kernel.registry.setdefault(family, []).append(self)

    def expression(self, *template_args: str) -> str:
        """The name expression of one compiled instantiation (``name<float, float>``)."""
        args = tuple(template_args)
        if args not in self.instantiations and (args or self.instantiations):
            raise TypeError(f"{self.name}: no instantiation for {args}; compiled: {self.instantiations}")
        return f"{self.name}<{', '.join(args)}>" if args else self.name

    def expressions(self) -> tuple[str, ...]:
        if not self.instantiations:
            return (self.name,)
        return tuple(self.expression(*args) for args in self.instantiations)

    def __repr__(self) -> str:
        return f"Kernel({self.family!r}, {self.name!r})"


def name_expressions() -> dict[str, tuple[str, ...]]:
    """Every instantiation of every kernel, by family (what NVRTC and the emulator compile)."""
    from . import gaussian, mia, musc, patchcore, tsetlin  # noqa: F401, PLC0415  (they register their kernels)

    return {family: tuple(e for k in kernels for e in k.expressions())
            for family, kernels in Kernel.registry.items()}


def kernels_of(family: str) -> list[Kernel]:
    name_expressions()
    return list(Kernel.registry.get(family, ()))


def ctype(dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return "float"
    if dtype == np.float64:
        return "double"
    raise TypeError(f"no CUDA kernel for dtype {dtype}")


def source(family: str) -> str:
    from .. import _core  # noqa: PLC0415

    return _core.cuda_source(family)


class Runtime:
    """What a family module needs: ``xp`` (the array module) and ``launch``."""

    xp = None
    name = "runtime"

    def launch(self, kernel: Kernel, template_args: tuple[str, ...], launch: plans.Launch, args: tuple) -> None:
        if launch.empty:
            return
        plans.check_launch(launch)
        self._launch(kernel.expression(*template_args), kernel.family, launch, args)

    def _launch(self, expression: str, family: str, launch: plans.Launch, args: tuple) -> None:
        raise NotImplementedError

    def host(self, x):
        """A numpy copy of an array of this runtime."""
        return np.asarray(x)


class CupyRuntime(Runtime):
    """NVRTC-compiled kernels on the current CUDA device."""

    name = "cupy"

    def __init__(self):
        import cupy  # noqa: PLC0415

        self.xp = cupy

    def _launch(self, expression, family, launch, args):
        fn = _cupy_function(family, self.xp.cuda.Device().id, expression)
        threads = launch.threads
        limit = int(fn.max_threads_per_block)
        if threads > limit:
            raise RuntimeError(f"{expression}: block of {threads} threads exceeds this kernel's limit of {limit}")
        fn(launch.grid, launch.block, args, shared_mem=launch.shared_bytes)

    def host(self, x):
        return self.xp.asnumpy(x)


@functools.lru_cache(maxsize=None)
def _cupy_module(family: str, device_id: int):
    import cupy  # noqa: PLC0415

    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=source(family), options=compile_options(family),
                              name_expressions=name_expressions().get(family, ()))


def _cupy_function(family: str, device_id: int, expression: str):
    return _cupy_module(family, device_id).get_function(expression)


_CURRENT: contextvars.ContextVar[Runtime | None] = contextvars.ContextVar("fastcore_ad_cuda_runtime", default=None)


@functools.lru_cache(maxsize=1)
def _default_cupy() -> CupyRuntime:
    return CupyRuntime()


def current() -> Runtime:
    """The runtime in force: the one installed by :func:`using`, else CuPy."""
    rt = _CURRENT.get()
    return rt if rt is not None else _default_cupy()


@contextlib.contextmanager
def using(runtime: Runtime):
    """Run the CUDA family functions on ``runtime`` inside the block."""
    token = _CURRENT.set(runtime)
    try:
        yield runtime
    finally:
        _CURRENT.reset(token)


def nvrtc_compile(family: str, arch: str) -> bytes:
    """Compile one family's source to a cubin for ``arch`` (e.g. 'sm_90') with NVRTC alone.

    Needs no GPU: used by the test suite to prove every kernel compiles.
    """
    from cupy_backends.cuda.libs import nvrtc  # noqa: PLC0415

    prog = nvrtc.createProgram(source(family), f"{family}.cu", [], [])
    try:
        for expr in name_expressions().get(family, ()):
            nvrtc.addNameExpression(prog, expr)
        options = [*compile_options(family), f"--gpu-architecture={arch}"]
        try:
            nvrtc.compileProgram(prog, options)
        except Exception as exc:
            log = nvrtc.getProgramLog(prog)
            raise RuntimeError(f"NVRTC failed to compile {family}.cu for {arch}:\n{log}") from exc
        return nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
