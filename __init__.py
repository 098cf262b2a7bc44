"""nvmstream: streaming inference of recurrent networks on emulated analog NVM accelerators.

The public API lives here; the implementation is in the subpackages
``nvmstream.converters`` (ONNX -> IR -> int4 program), ``nvmstream.devices`` (the emulated chip)
and ``nvmstream.runtime`` (engine, server, CLI).

Names are imported lazily on first use (PEP 562), so ``import nvmstream`` is cheap and a client
(``nvmstream.runtime.client``) or ``nvmstream --help`` needs neither onnx nor numba:

    import nvmstream as nvm
    prog = nvm.convert("model.onnx", calibration=x_train)     # onnx is imported here
    eng = nvm.Engine(prog, nvm.Device("int4", seed=0))       # numba is imported here
    sess = nvm.InferenceSession(prog, "pcm-1d")              # onnxruntime-style interface
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "load_ir": "nvmstream.converters.onnx_import",
    "Model": "nvmstream.converters.ir",
    "NvmConversionError": "nvmstream.converters.errors",
    "NvmInputError": "nvmstream.converters.errors",
    "convert": "nvmstream.converters.compile",
    "load": "nvmstream.converters.compile",
    "CompiledModel": "nvmstream.converters.compile",
    "Device": "nvmstream.devices.device",
    "DeviceProfile": "nvmstream.devices.profile",
    "list_profiles": "nvmstream.devices.profile",
    "load_profile": "nvmstream.devices.profile",
    "Engine": "nvmstream.runtime.engine",
    "Stream": "nvmstream.runtime.engine",
    "InferenceSession": "nvmstream.runtime.session",
}
_SUBPACKAGES = ("converters", "devices", "runtime")

__all__ = [*_LAZY, "__version__"]

if TYPE_CHECKING:                       # for type checkers and IDEs; never executed
    from nvmstream.converters.compile import CompiledModel, convert, load
    from nvmstream.converters.errors import NvmConversionError, NvmInputError
    from nvmstream.converters.ir import Model
    from nvmstream.converters.onnx_import import load_ir
    from nvmstream.devices.device import Device
    from nvmstream.devices.profile import DeviceProfile, list_profiles, load_profile
    from nvmstream.runtime.engine import Engine, Stream
    from nvmstream.runtime.session import InferenceSession


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is not None:
        value = getattr(importlib.import_module(mod), name)
        globals()[name] = value           # next access is a plain attribute
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"nvmstream.{name}")
    raise AttributeError(f"module 'nvmstream' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, *_SUBPACKAGES])


logging.getLogger(__name__).addHandler(logging.NullHandler())
