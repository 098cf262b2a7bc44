"""Engine, streams, server, client and CLI of nvmstream.

Submodules load on first use (``nvmstream.runtime.engine`` imports numba; the client does not).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any


def __getattr__(name: str) -> Any:
    if name in {m.name for m in pkgutil.iter_modules(__path__)}:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
