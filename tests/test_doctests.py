"""The docstring examples of every public module run and give what they show."""

import doctest
import importlib

import pytest

MODULES = ["fastcore_ad", "fastcore_ad.metrics", "fastcore_ad.gaussian", "fastcore_ad.musc", "fastcore_ad.mia",
           "fastcore_ad.tsetlin", "fastcore_ad.features", "fastcore_ad.plot", "fastcore_ad.textures",
           "fastcore_ad.pipeline", "fastcore_ad.maps",
           "fastcore_ad.patchcore", "fastcore_ad.class_gaussian"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            pytest.skip(f"{name} is not part of this build")
        raise
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
    if name != "fastcore_ad":
        assert result.attempted > 0, f"{name} has no runnable docstring example"
