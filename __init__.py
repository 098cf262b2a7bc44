"""nvmstream: streaming inference of recurrent networks on emulated analog NVM accelerators.

The public API lives here; the implementation is in the subpackages
``nvmstream.converters`` (ONNX -> IR -> int4 program), ``nvmstream.devices`` (the emulated chip)
and ``nvmstream.runtime`` (engine, server, CLI).
"""

from __future__ import annotations

import logging

from nvmstream.converters import NvmConversionError, NvmInputError, load_ir
from nvmstream.converters.compile import CompiledModel, convert, load
from nvmstream.converters.ir import Model
from nvmstream.devices import Device, DeviceProfile, list_profiles, load_profile
from nvmstream.runtime.engine import Engine, Stream

__all__ = ["load_ir", "Model", "NvmConversionError", "NvmInputError", "convert", "load",
           "CompiledModel", "Device", "DeviceProfile", "list_profiles", "load_profile", "Engine",
           "Stream", "__version__"]
__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
