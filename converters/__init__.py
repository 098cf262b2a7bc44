"""ONNX -> typed IR -> (later) a quantized, calibrated program for the emulated accelerator."""

from .errors import NvmConversionError, NvmInputError
from .ir import Model
from .onnx_import import load_ir, load_model, to_ir

__all__ = ["NvmConversionError", "NvmInputError", "Model", "load_ir", "load_model", "to_ir"]

from .compile import CompiledModel, convert, load  # noqa: E402

__all__ += ["CompiledModel", "convert", "load"]
