import os

import numpy as np
import pytest

os.environ.setdefault("FASTCORE_AD_PROGRESS", "0")


def _gpu_available() -> bool:
    try:
        import cupy

        return bool(cupy.is_available())
    except Exception:
        return False


GPU = _gpu_available()


def pytest_collection_modifyitems(config, items):
    if GPU:
        return
    skip = pytest.mark.skip(reason="no CUDA GPU available (cupy.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    # Fresh inputs every run; the seed is printed on failure through the fixture value.
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"rng seed {seed}")
    return np.random.default_rng(seed)


def data_dir():
    """The shared datasets folder beside the repository (or FASTCORE_AD_DATA), or None."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.environ.get("FASTCORE_AD_DATA") or os.path.join(here, "..", "..", "shared", "data")
    return path if os.path.isdir(path) else None
