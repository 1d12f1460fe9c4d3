"""`_core.pyi` lists exactly what the extension exports, with the same parameters."""

import ast
import inspect
import os

import fastcore_ad
from fastcore_ad import _core

STUB = os.path.join(os.path.dirname(fastcore_ad.__file__), "_core.pyi")


def stub_functions():
    with open(STUB) as handle:
        tree = ast.parse(handle.read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            args = node.args
            out[node.name] = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return out


def test_every_export_is_stubbed_with_its_parameters():
    stubs = stub_functions()
    exported = {name for name, value in vars(_core).items() if callable(value) and not isinstance(value, type)
                and not name.startswith("_")}
    assert exported == set(stubs), f"missing from stub: {exported - set(stubs)}; stale: {set(stubs) - exported}"
    for name, params in stubs.items():
        signature = inspect.signature(getattr(_core, name))
        assert list(signature.parameters) == params, name
