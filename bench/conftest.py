import os
import sys

# Benchmarks reuse the plain reference implementations kept with the tests.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
os.environ.setdefault("FASTCORE_AD_PROGRESS", "0")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU")
