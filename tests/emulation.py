"""Run the CUDA kernels of ``cuda/`` on the CPU through the HIP CPU Runtime.

For each family a C++ launcher is generated: the family's CUDA source (exactly what NVRTC
compiles) behind ``cuda_compat.h``, and one ``extern "C"`` entry per name expression that
launches the kernel with the grid and block it is given, wrapped so that every thread of every
block is checked to enter and leave. Launchers are compiled once and cached by the hash of
everything that goes into them. :class:`EmulatedRuntime` plugs into ``fastcore_ad._cuda`` like
the CuPy runtime does, with numpy as the array module (device memory is host memory there), so
the emulated run executes the package's own host code and launch plans.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading

import numpy as np

from fastcore_ad import _cuda
from fastcore_ad._cuda import _runtime

HERE = os.path.dirname(os.path.abspath(__file__))
OPT_FLAGS = ("-O1",)


def hip_cpu_dir() -> str | None:
    """The HIP CPU Runtime folder (FASTCORE_AD_HIP_CPU or ../shared/tools/hip-cpu), or None."""
    path = os.environ.get("FASTCORE_AD_HIP_CPU") or os.path.join(HERE, "..", "..", "shared", "tools", "hip-cpu")
    path = os.path.abspath(path)
    return path if os.path.isfile(os.path.join(path, "cuda_compat.h")) else None


def _has_tbb() -> bool:
    for folder in ("/usr/include", "/usr/local/include"):
        if os.path.isdir(os.path.join(folder, "tbb")) or os.path.isdir(os.path.join(folder, "oneapi", "tbb")):
            return True
    return False


def missing() -> str | None:
    """Why the emulated kernels cannot run here, or None when they can."""
    if hip_cpu_dir() is None:
        return "HIP CPU Runtime not found (../shared/tools/hip-cpu or FASTCORE_AD_HIP_CPU)"
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        return "no C++ compiler (g++)"
    if not _has_tbb():
        return "TBB headers not installed (apt-get install -y libtbb-dev)"
    return None


_GLUE = r"""
#include <cstddef>
#include <type_traits>
#include <utility>

namespace fca_emu {
// The real kernel between EMU_ENTER and EMU_EXIT (HIP-CPU kernels are plain functions).
template <auto K, typename... P>
__global__ void body(P... a) { EMU_ENTER(); K(a...); EMU_EXIT(); }

template <auto K, typename... P, std::size_t... I>
int call(const unsigned* g, const unsigned* b, void** slots, std::index_sequence<I...>) {
    EMU_LAUNCH((body<K, P...>), dim3(g[0], g[1], g[2]), dim3(b[0], b[1], b[2]),
               (*static_cast<std::decay_t<P>*>(slots[I]))...);
}

template <auto K, typename... P>
int launch(void (*)(P...), const unsigned* g, const unsigned* b, void** slots) {
    return call<K, P...>(g, b, slots, std::index_sequence_for<P...>{});
}

template <typename... P>
int sizes(void (*)(P...), int* out, int cap) {
    const int s[] = {0, (int)sizeof(std::decay_t<P>)...};
    const int n = (int)sizeof...(P);
    for (int i = 0; i < n && i < cap; ++i) out[i] = s[i + 1];
    return n;
}
}  // namespace fca_emu
"""


def launcher_source(family: str) -> tuple[str, tuple[str, ...]]:
    """The C++ launcher of ``family`` and the name expressions of its entries, in order."""
    expressions = _cuda.name_expressions()[family]
    lines = ['#include "cuda_compat.h"', _cuda.source(family), _GLUE]
    for index, expr in enumerate(expressions):
        lines.append(
            f'extern "C" int fca_launch_{index}(const unsigned* g, const unsigned* b, void** slots) '
            f"{{ return fca_emu::launch<&{expr}>(&{expr}, g, b, slots); }}")
        lines.append(
            f'extern "C" int fca_sizes_{index}(int* out, int cap) {{ return fca_emu::sizes(&{expr}, out, cap); }}')
    return "\n".join(lines) + "\n", expressions


def cache_dir() -> str:
    path = os.environ.get("FASTCORE_AD_EMU_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fastcore_ad",
                                                                   "emulated")
    os.makedirs(path, exist_ok=True)
    return path


def _compile_command(src: str, out: str) -> list[str]:
    hip = hip_cpu_dir()
    return [os.environ.get("CXX", "g++"), "-std=c++17", *OPT_FLAGS, "-shared", "-fPIC", "-w",
            f"-I{hip}", f"-I{os.path.join(hip, 'include')}", "-o", out, src, "-ltbb", "-lpthread"]


def _library_path(family: str) -> tuple[str, str, tuple[str, ...]]:
    text, expressions = launcher_source(family)
    hip = hip_cpu_dir()
    with open(os.path.join(hip, "cuda_compat.h"), "rb") as fh:
        compat = fh.read()
    key = hashlib.sha256(text.encode() + compat + " ".join(_compile_command("x", "y")).encode()).hexdigest()[:20]
    return os.path.join(cache_dir(), f"{family}-{key}.so"), text, expressions


def _start_build(family: str):
    """Start compiling one family's launcher unless it is cached; returns (path, process or None)."""
    path, text, _ = _library_path(family)
    if os.path.exists(path):
        return path, None, None
    work = tempfile.mkdtemp(prefix=f"fca-emu-{family}-")
    src = os.path.join(work, f"{family}_launcher.cpp")
    with open(src, "w") as fh:
        fh.write(text)
    tmp_out = os.path.join(work, "launcher.so")
    proc = subprocess.Popen(_compile_command(src, tmp_out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return path, proc, tmp_out


def build(families, parallel: int = 2) -> dict[str, str]:
    """Compile the launchers of ``families`` (``parallel`` compilers at once); paths by family."""
    pending, done = list(families), {}
    running = []
    while pending or running:
        while pending and len(running) < parallel:
            family = pending.pop(0)
            path, proc, tmp_out = _start_build(family)
            if proc is None:
                done[family] = path
            else:
                running.append((family, path, proc, tmp_out))
        if running:
            family, path, proc, tmp_out = running.pop(0)
            log = proc.communicate()[0].decode(errors="replace")
            if proc.returncode != 0:
                raise RuntimeError(f"compiling the emulated launcher of {family} failed:\n{log[-4000:]}")
            os.replace(tmp_out, path)
            done[family] = path
    return done


class _Library:
    def __init__(self, path: str, expressions: tuple[str, ...]):
        self.dll = ctypes.CDLL(path)
        self.entries = {}
        for index, expr in enumerate(expressions):
            fn = getattr(self.dll, f"fca_launch_{index}")
            fn.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_void_p)]
            fn.restype = ctypes.c_int
            sizes_fn = getattr(self.dll, f"fca_sizes_{index}")
            buf = (ctypes.c_int * 64)()
            count = sizes_fn(buf, 64)
            self.entries[expr] = (fn, tuple(buf[:count]))
        self.dll.emu_set_mode.argtypes = [ctypes.c_int, ctypes.c_ulonglong]


def _slot(value, width: int, expression: str, position: int):
    """A ctypes object holding one kernel argument, checked against the parameter's width."""
    if value is None:
        obj = ctypes.c_void_p(None)
    elif isinstance(value, np.ndarray):
        if not value.flags.c_contiguous:
            raise ValueError(f"{expression}: argument {position} is not C-contiguous")
        obj = ctypes.c_void_p(value.ctypes.data)
    elif isinstance(value, np.uint64):  # a pointer passed by value (0: nullptr)
        obj = ctypes.c_uint64(int(value))
    elif isinstance(value, np.int64):
        obj = ctypes.c_int64(int(value))
    elif isinstance(value, np.int32):
        obj = ctypes.c_int32(int(value))
    elif isinstance(value, np.float64):
        obj = ctypes.c_double(float(value))
    else:
        raise TypeError(f"{expression}: argument {position} of unsupported type {type(value).__name__}")
    if ctypes.sizeof(obj) != width:
        raise TypeError(f"{expression}: argument {position} has {ctypes.sizeof(obj)} bytes, the kernel takes {width}")
    return obj


class EmulatedRuntime(_runtime.Runtime):
    """The CUDA family modules on the CPU: numpy arrays, kernels run by the HIP CPU Runtime."""

    name = "emulated"
    xp = np

    def __init__(self, mode: int = 0, seed: int = 1):
        self.mode, self.seed = mode, seed
        self.launches: list[tuple[str, tuple, tuple]] = []
        self._libraries: dict[str, _Library] = {}
        self._lock = threading.Lock()

    def library(self, family: str) -> _Library:
        with self._lock:
            if family not in self._libraries:
                path, _, expressions = _library_path(family)
                if not os.path.exists(path):
                    build([family], parallel=1)
                self._libraries[family] = _Library(path, expressions)
            return self._libraries[family]

    def _launch(self, expression, family, launch, args):
        lib = self.library(family)
        fn, widths = lib.entries[expression]
        if len(args) != len(widths):
            raise TypeError(f"{expression}: {len(args)} arguments given, the kernel takes {len(widths)}")
        objs = [_slot(v, w, expression, i) for i, (v, w) in enumerate(zip(args, widths))]
        slots = (ctypes.c_void_p * len(objs))(*[ctypes.addressof(o) for o in objs])
        grid = (ctypes.c_uint * 3)(*launch.grid)
        block = (ctypes.c_uint * 3)(*launch.block)
        lib.dll.emu_set_mode(int(self.mode), int(self.seed))
        self.launches.append((expression, launch.grid, launch.block))
        rc = fn(grid, block, slots)
        if rc == 99:
            raise RuntimeError(f"{expression}: not every thread of grid {launch.grid} x block {launch.block} "
                               "entered and left the kernel")
        if rc != 0:
            raise RuntimeError(f"{expression}: emulated launch failed ({rc})")
