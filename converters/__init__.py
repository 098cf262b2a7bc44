"""ONNX -> typed IR -> a quantized, calibrated program for the emulated accelerator.

Names are imported lazily (PEP 562): ``nvmstream.converters.errors`` and ``.ir`` need no onnx;
``load_ir``/``convert`` import onnx on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "NvmConversionError": "errors", "NvmInputError": "errors", "Model": "ir",
    "load_ir": "onnx_import", "load_model": "onnx_import", "to_ir": "onnx_import",
    "CompiledModel": "compile", "convert": "compile", "load": "compile",
}

__all__ = list(_LAZY)
_SUBMODULES = ("compile", "conventions", "errors", "inspect", "ir", "onnx_import")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:                 # nvm.converters.ir works without an import
        return importlib.import_module(f"{__name__}.{name}")
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'nvmstream.converters' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, *_SUBMODULES])
