"""Package-level behaviour: info, CLI, thread control, fork safety, DLPack intake."""

import json
import os
import time
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastcore_ad
from fastcore_ad import _core, cli, metrics
from fastcore_ad._dispatch import as_array


def test_info_reports_backends_and_threads():
    info = fastcore_ad.info()
    assert info["version"] == fastcore_ad.__version__
    assert "rust" in info["backends"]
    assert info["threads"] >= 1
    assert "gaussian" in info["cuda_families"]


def test_cli_info_and_demo(capsys):
    assert cli.main(["info"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == fastcore_ad.__version__
    assert cli.main(["demo", "--only", "metrics", "gaussian"]) == 0
    out = capsys.readouterr().out
    assert "AUROC" in out and "AUPRO" in out and "seconds" in out


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "fastcore_ad.cli", "info"], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout)["backends"][0] == "rust"


def test_thread_count_resolution(monkeypatch):
    assert _core.resolve_threads(3) == 3
    monkeypatch.setenv("FASTCORE_AD_NUM_THREADS", "1")
    assert _core.resolve_threads(None) == 1
    assert _core.resolve_threads(2) == 2  # the argument wins over the environment
    cpus = os.cpu_count()
    monkeypatch.delenv("FASTCORE_AD_NUM_THREADS")
    assert _core.resolve_threads(-1) == _core.resolve_threads(None) <= cpus


def test_thread_cap_and_an_unreadable_thread_variable(monkeypatch):
    cpus = _core.resolve_threads(-1)
    assert _core.resolve_threads(10**6) == 4 * cpus  # the documented cap
    assert _core.resolve_threads(-10**6) == 1
    for raw in ("abc", "0", "1_000", "2.5", str(2**63)):
        monkeypatch.setenv("FASTCORE_AD_NUM_THREADS", raw)
        assert _core.resolve_threads(None) == cpus  # ignored by the pool ...
        with pytest.warns(RuntimeWarning, match="FASTCORE_AD_NUM_THREADS=.* ignored, every CPU is used"):
            fastcore_ad._check_thread_variable(raw)  # ... and said so at import
    monkeypatch.setenv("FASTCORE_AD_NUM_THREADS", " -1 ")
    assert _core.resolve_threads(None) == cpus
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for raw in (None, "", " 3 ", "-1", "+2"):
            fastcore_ad._check_thread_variable(raw)
    env = dict(os.environ, FASTCORE_AD_NUM_THREADS="many")
    run = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", "import fastcore_ad"], env=env,
                         capture_output=True, text=True)
    assert run.returncode != 0 and "FASTCORE_AD_NUM_THREADS='many'" in run.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_kernels_work_in_a_forked_child():
    scores = np.random.default_rng(0).random(200_000)
    labels = np.arange(200_000) % 2
    expect = metrics.auroc(scores, labels)  # the pool exists in the parent now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not hang on the parent's dead pool threads
        try:
            value = metrics.auroc(scores, labels)
            os.write(write, repr(value).encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    got = os.read(read, 100).decode()
    os.close(read)
    assert status == 0 and float(got) == expect


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_while_other_threads_start_pools():
    """Threads keep asking for pools of new sizes while the main thread forks: no child may
    inherit the pool cache's lock held by a thread that does not exist there (it would hang)."""
    import threading

    scores = np.random.default_rng(1).random(20_000)
    labels = np.arange(20_000) % 2
    expect = metrics.auroc(scores, labels)
    stop = threading.Event()

    def churn(offset):
        n = 0
        while not stop.is_set():
            metrics.auroc(scores, labels, n_jobs=1 + (n + offset) % 8)  # pools built and dropped
            n += 1

    threads = [threading.Thread(target=churn, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    os.write(write, repr(metrics.auroc(scores, labels, n_jobs=3)).encode())
                finally:
                    os._exit(0)
            os.close(write)
            deadline = time.monotonic() + 30
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    pytest.fail("a forked child hung")
                time.sleep(0.01)
            got = os.read(read, 100).decode()
            os.close(read)
            assert status == 0 and float(got) == expect
    finally:
        stop.set()
        for t in threads:
            t.join()


class DLPackOnly:
    """An array-like that only offers the DLPack protocol (as torch tensors do)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_dlpack_inputs_take_the_cpu_path_without_copy():
    base = np.arange(10, dtype=np.float64)
    array, backend = as_array(DLPackOnly(base), "x")
    assert backend == "numpy" and np.shares_memory(array, base)
    assert metrics.auroc(DLPackOnly(base), DLPackOnly(np.arange(10) % 2)) == metrics.auroc(base, np.arange(10) % 2)


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    scores = torch.linspace(0, 1, 50)
    labels = (torch.arange(50) % 3 == 0)
    assert metrics.auroc(scores, labels) == metrics.auroc(scores.numpy(), labels.numpy())


def test_non_arrays_are_rejected_with_the_argument_name():
    with pytest.raises(TypeError, match="scores"):
        metrics.auroc(object(), [0, 1])
