"""Progress bars for long work (tqdm when installed and enabled, silent otherwise).

Set ``FASTCORE_AD_PROGRESS=0`` to silence every bar.
"""

from __future__ import annotations

import os

__all__ = ["progress"]


def progress(iterable, *, total=None, desc=None, enabled=True):
    if not enabled or os.environ.get("FASTCORE_AD_PROGRESS", "1") == "0":
        return iterable
    try:
        from tqdm.auto import tqdm  # noqa: PLC0415
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False)
