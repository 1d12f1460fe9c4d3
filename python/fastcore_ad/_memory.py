"""Memory an input implies, checked before allocating it."""

from __future__ import annotations

import os


def _first_int(path: str, prefix: str = "") -> int | None:
    """The first integer of ``path`` (of its line starting with ``prefix``), or None."""
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith(prefix):
                    return int(line[len(prefix):].split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _system_bytes() -> int:
    """MemAvailable from /proc/meminfo, else physical memory."""
    kib = _first_int("/proc/meminfo", "MemAvailable:")
    if kib is not None:
        return kib * 1024
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return 1 << 62


def _address_space_bytes() -> int | None:
    """Headroom under ``ulimit -v`` (RLIMIT_AS): the limit less the process's virtual size. A
    failed allocation in the Rust core aborts the interpreter, so this limit counts too."""
    try:
        import resource  # noqa: PLC0415
    except ImportError:  # pragma: no cover - non-POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    used_kib = _first_int("/proc/self/status", "VmSize:")
    return max(0, soft - (used_kib or 0) * 1024)


def _cgroup_bytes() -> int | None:
    """Headroom under the memory limit of the process's cgroup (v2, else v1), if it has one."""
    for limit_path, usage_path in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit = _first_int(limit_path)  # "max" (no limit) reads as None
        if limit is not None and limit < 1 << 60:
            return max(0, limit - (_first_int(usage_path) or 0))
    return None


def available_bytes() -> int:
    """Memory the process can still take: the least of the system's available memory, the
    headroom under ``ulimit -v`` and the headroom under the cgroup's limit."""
    return min(b for b in (_system_bytes(), _address_space_bytes(), _cgroup_bytes()) if b is not None)


def check_fits(nbytes: int, what: str) -> None:
    """MemoryError naming ``what`` when ``nbytes`` exceed the memory available now."""
    available = available_bytes()
    if nbytes > available:
        raise MemoryError(f"{what}: needs {nbytes / 2**30:.3g} GiB, only {available / 2**30:.3g} GiB of memory is available")
