"""Every CUDA kernel compiles with NVRTC for Ampere (sm_80) and Hopper (sm_90), no GPU needed."""

import pytest

from fastcore_ad import _core, _cuda

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


def test_a_broken_kernel_is_reported(monkeypatch):
    monkeypatch.setattr(_cuda, "source", lambda family: "__global__ void k() { this is not cuda }")
    with pytest.raises(RuntimeError, match="NVRTC failed"):
        _cuda.nvrtc_compile("gaussian", "sm_90")
