"""The symbolic values of the ONNX -> IR conversion (see converters/onnx_import.py) and the
conversion context: ``Const``, ``Shape``, ``Zeros``, ``TRef``, ``Opaque``; ``_Ctx`` holds the
values by tensor name, the layers built so far and the inputs' roles."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from . import ir
from .errors import NvmConversionError

log = logging.getLogger(__name__)


MIN_OPSET, MAX_OPSET = 7, 22
MAX_IR_VERSION = onnx.IR_VERSION   # what the installed onnx reads and checks
RECURRENT_OPS = ("LSTM", "GRU", "RNN")


# ---------------------------------------------------------------------------------- symbols
@dataclass(frozen=True, eq=False)
class Const:
    value: np.ndarray


@dataclass(frozen=True)
class Shape:
    dims: tuple          # ints or "B"/"T"
    scalar: bool = False


@dataclass(frozen=True)
class Zeros:
    dims: tuple


@dataclass(frozen=True)
class TRef:
    tensor: str
    axes: tuple[str, ...]
    sizes: tuple[int | None, ...]
    pick: tuple[str, ...] | None = None
    aux: str | None = None           # graph input that is not the sequence (lens, states)
    rows: tuple[int, int] | None = None   # aux only: rows [start, stop) of the input's axis 0
    step: int | None = None          # one time step k of a per-step tensor (unrolled graphs)
    tpad: int = 0                    # zero frames padded before the time axis (for a Conv)

    @property
    def features(self) -> int:
        f = 1
        for ax, s in zip(self.axes, self.sizes):
            if ax in ("D", "H", "F"):
                f *= s
        return f

    def feature_axis_ok(self) -> bool:
        """True when the last axis is the whole feature axis (F, or H with no D left, and no
        other feature axis longer than 1: a frame model's ``[B, C, P]`` has two)."""
        last = self.axes[-1]
        if not (last == "F" or (last == "H" and "D" not in self.axes)):
            return False
        return all(s == 1 for a, s in zip(self.axes[:-1], self.sizes[:-1])
                   if a in ("D", "H", "F"))


@dataclass(frozen=True)
class FrameTest:
    """Keras Masking's first ops on the run-time sequence ``x``: ``x == value`` per element
    (``ne``: ``x != value``, after Not), as bool or (``flt``, after Cast) as 0/1 floats;
    ``summed``: a ReduceSum of the ``!=`` floats over the feature axis (``keepdims``).
    Only :mod:`converters.mask_ops` consumes it (see there)."""
    x: TRef
    value: float
    ne: bool = False
    flt: bool = False
    summed: bool = False
    keepdims: bool = True


@dataclass(frozen=True)
class MaskRef:
    """A per-step mask: ``tensor`` is an ``ir.StepMask`` output ``[B, T, 1]`` (1.0: the frame
    has a feature != ``value``, i.e. it is kept), viewed with ``axes`` (``B``, ``T`` and unit
    axes ``1``); ``keep`` False after Not (true where masked); ``flt`` after Cast to float;
    ``fill`` set for ``fill * mask`` (a constant times the mask: Keras 3's select)."""
    tensor: str
    x: TRef
    value: float
    axes: tuple[str, ...]
    keep: bool = True
    flt: bool = False
    fill: float | None = None


@dataclass(frozen=True)
class MaskedSeq:
    """``where(mask, x, 0)`` (Keras 2's ``x * mask``) for a mask value other than 0 (with
    mask value 0 the product is ``x`` itself: a masked frame is all zeros)."""
    x: TRef
    mask: MaskRef


@dataclass(frozen=True)
class Opaque:
    """A value nvmstream cannot represent (e.g. a Loop's counter); an error if anything uses it."""
    reason: str


Value = Any


class _Ctx:
    def __init__(self, model: onnx.ModelProto, path: str):
        self.model = model
        self.path = path
        self.opset = _default_opset(model, path)
        self.values: dict[str, Value] = {}
        self.layers: list[ir.Layer] = []
        self.aux_inputs: list[ir.AuxInput] = []
        self.seq_input: ir.SeqInput | None = None
        self._n = 0
        self.producers: dict[str, onnx.NodeProto] = {}
        self.prebound: set[str] = set()      # tensors bound before the walk (unrolled cells)
        self.fixed: dict[str, np.ndarray] = {}   # graph inputs fixed at conversion
        self.unrolled_steps: int | None = None
        self.frame_size: int | None = None       # a frame model's samples per call (given)
        self.masks: dict[tuple[str, float], str] = {}   # (sequence, mask value) -> StepMask output

    def fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}#{self._n}"

    def err(self, node: onnx.NodeProto | None, reason: str) -> NvmConversionError:
        if node is None:
            return NvmConversionError(reason, file=self.path)
        return NvmConversionError(reason, file=self.path, node=node.name or node.output[0],
                                  op=node.op_type)

    def get(self, node: onnx.NodeProto, i: int) -> Value | None:
        if i >= len(node.input) or node.input[i] == "":
            return None
        name = node.input[i]
        if name not in self.values:
            raise self.err(node, f"input {name!r} is not produced by any earlier node")
        v = self.values[name]
        if isinstance(v, Opaque):
            raise self.err(node, f"input {name!r}: {v.reason}")
        return v

    def const(self, node: onnx.NodeProto, i: int, what: str) -> np.ndarray | None:
        v = self.get(node, i)
        if v is None:
            return None
        if isinstance(v, Const):
            return v.value
        if isinstance(v, Zeros) and all(isinstance(d, int) for d in v.dims):
            return np.zeros(v.dims, np.float32)
        raise self.err(node, f"dynamic weight: {what} (input {node.input[i]!r}) is not a "
                             f"constant; nvmstream programs weights onto the device once")


def _default_opset(model: onnx.ModelProto, path: str) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise NvmConversionError("model imports no default-domain (ai.onnx) opset", file=path)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _check_attrs(ctx: _Ctx, node: onnx.NodeProto, allowed: set[str]) -> dict[str, Any]:
    at = _attrs(node)
    extra = sorted(set(at) - allowed)
    if extra:
        raise ctx.err(node, f"unsupported attribute(s) {extra} (supported: {sorted(allowed)})")
    def dec(v):
        if isinstance(v, bytes):
            return v.decode()
        if isinstance(v, list):
            return [dec(x) for x in v]
        return v
    return {k: dec(v) for k, v in at.items()}


def _outer_names(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (Loop/Scan/If bodies) read from the enclosing scope."""
    out: set[str] = set()
    for a in node.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else \
            list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []
        for sg in graphs:
            local = {i.name for i in sg.input} | {i.name for i in sg.initializer}
            for n in sg.node:
                out |= {i for i in n.input if i and i not in local}
                out |= _outer_names(n)
                local |= set(n.output)
            out -= local
    return out


def _graph_input_dims(ctx: _Ctx, name: str) -> tuple:
    for inp in ctx.model.graph.input:
        if inp.name == name:
            return tuple(d.dim_value if d.HasField("dim_value") else None
                         for d in inp.type.tensor_type.shape.dim)
    return ()
