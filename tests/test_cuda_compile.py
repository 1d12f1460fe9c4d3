"""Every CUDA kernel compiles with NVRTC for Ampere (sm_80) and Hopper (sm_90), no GPU needed."""

import re

import pytest

from fastcore_ad import _core, _cuda
from fastcore_ad._cuda import _runtime

nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="cupy-cuda13x is not installed")


def test_every_family_has_a_source():
    families = _core.cuda_families()
    assert "gaussian" in families
    for family in families:
        src = _cuda.source(family)
        assert f'#line 1 "{family}.cu"' in src


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("family", list(_core.cuda_families()))
def test_nvrtc_compiles(family, arch):
    cubin = _cuda.nvrtc_compile(family, arch)
    assert len(cubin) > 1000


def _ptx(family, options):
    prog = nvrtc.createProgram(_cuda.source(family), f"{family}.cu", [], [])
    try:
        for expr in _cuda.name_expressions().get(family, ()):
            nvrtc.addNameExpression(prog, expr)
        nvrtc.compileProgram(prog, [*options, "--gpu-architecture=compute_90"])
        ptx = nvrtc.getPTX(prog)
        return ptx.decode() if isinstance(ptx, bytes) else ptx
    finally:
        nvrtc.destroyProgram(prog)


def test_exact_distances_are_not_fused_into_fma():
    """knn and the coreset measure float64 distances that must round as Rust's (separate
    multiply and add): their order decides indices. NVRTC fuses by default; not here."""
    assert "fma.rn.f64" in _ptx("patchcore", _runtime.COMPILE_OPTIONS)  # the default would fuse
    assert "fma.rn.f64" not in _ptx("patchcore", _runtime.compile_options("patchcore"))
    assert _runtime.compile_options("gaussian") == _runtime.COMPILE_OPTIONS  # GEMM tiles keep their FMAs


def test_a_broken_kernel_is_reported(monkeypatch):
    monkeypatch.setattr(_runtime, "source", lambda family: "__global__ void k() { this is not cuda }")
    with pytest.raises(RuntimeError, match="NVRTC failed"):
        _cuda.nvrtc_compile("gaussian", "sm_90")


def test_kernel_names_are_written_once():
    """Every instantiation compiled by NVRTC comes from a Kernel declared in a family module."""
    expressions = _cuda.name_expressions()
    assert set(expressions) == set(_core.cuda_families())
    for family in expressions:
        declared = set(re.findall(r"__global__\s+void\s+(\w+)\s*\(", _cuda.source(family)))
        assert declared == {kernel.name for kernel in _cuda.kernels_of(family)}, family


def test_family_modules_do_not_branch_on_the_backend():
    import pathlib

    import fastcore_ad

    root = pathlib.Path(fastcore_ad.__file__).parent
    for path in root.glob("*.py"):
        if path.name == "_dispatch.py":
            continue
        assert 'backend == "cupy"' not in path.read_text(), path.name
