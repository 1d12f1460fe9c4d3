"""Memory an input implies, checked before allocating it."""

from __future__ import annotations

import os


def available_bytes() -> int:
    """Memory the process can still take: MemAvailable from /proc/meminfo, else physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return 1 << 62


def check_fits(nbytes: int, what: str) -> None:
    """MemoryError naming ``what`` when ``nbytes`` exceed the memory available now."""
    available = available_bytes()
    if nbytes > available:
        raise MemoryError(f"{what}: needs {nbytes / 2**30:.3g} GiB, only {available / 2**30:.3g} GiB of memory is available")
