"""The type stubs of the extension are checked against it by ``mypy.stubtest``, and every public
module's ``__all__`` lists exactly the functions and classes it defines."""

import importlib
import inspect
import subprocess
import sys

import pytest

PUBLIC_MODULES = ["fastcore_ad.metrics", "fastcore_ad.gaussian", "fastcore_ad.musc", "fastcore_ad.mia",
                  "fastcore_ad.tsetlin", "fastcore_ad.features", "fastcore_ad.plot", "fastcore_ad.textures",
                  "fastcore_ad.pipeline", "fastcore_ad.maps", "fastcore_ad.patchcore", "fastcore_ad.class_gaussian", "fastcore_ad.cli",
                  "fastcore_ad.progress"]


def test_stubs_match_the_extension():
    pytest.importorskip("mypy", reason="mypy is not installed (pip install '.[test]')")
    result = subprocess.run([sys.executable, "-m", "mypy.stubtest", "fastcore_ad._core"], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_lists_the_public_names(name):
    module = importlib.import_module(name)
    listed = set(module.__all__)
    defined = {n for n, v in vars(module).items() if not n.startswith("_") and (inspect.isfunction(v) or inspect.isclass(v))
               and getattr(v, "__module__", None) == module.__name__}
    assert defined <= listed, f"public but not in __all__: {sorted(defined - listed)}"
    assert all(hasattr(module, n) for n in listed), f"in __all__ but missing: {[n for n in listed if not hasattr(module, n)]}"
