"""ONNX -> IR.

One handler per ONNX op, registered explicitly in ``HANDLERS``. Values flowing through the graph
at conversion time are symbolic:

* ``Const``   -- a constant array (initializers, ``Constant`` nodes, anything folded from them);
* ``Shape``   -- a shape vector whose entries are ints or the symbols ``"B"``/``"T"`` (what
  TorchScript builds its zero initial states from);
* ``Zeros``   -- an all-zero tensor of symbolic shape (``ConstantOfShape(0)``/``Expand`` of 0);
* ``TRef``    -- a run-time tensor: an IR tensor name plus its ONNX view (axis labels).

Nodes whose inputs are all constant are evaluated with onnx's reference evaluator (so any weight
plumbing an exporter emits -- Slice/Concat gate reorders, Unsqueeze, Transpose -- folds away).
Layout ops on run-time tensors (Transpose/Squeeze/Unsqueeze/Reshape) only change the view.
Everything else is an error that names the node, its op and why.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper

from . import ir
from .conventions import GATES, parse_activations
from .errors import NvmConversionError

log = logging.getLogger(__name__)

MIN_OPSET, MAX_OPSET = 7, 22
MAX_IR_VERSION = 13
RECURRENT_OPS = ("LSTM", "GRU", "RNN")
_LAYOUT_PASSTHROUGH = ("Transpose", "Identity", "Cast", "Dropout")


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

    @property
    def features(self) -> int:
        f = 1
        for ax, s in zip(self.axes, self.sizes):
            if ax in ("D", "H", "F"):
                f *= s
        return f

    def feature_axis_ok(self) -> bool:
        """True when the last axis is the whole feature axis (F, or H with no D left)."""
        last = self.axes[-1]
        return last == "F" or (last == "H" and "D" not in self.axes)


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
        return self.values[name]

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


# ------------------------------------------------------------------------------- load + check
def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and check an ONNX file; errors name the file and what is wrong with it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise NvmConversionError("no such file", file=path)
    try:
        model = onnx.load(path)
    except Exception as e:  # onnx raises DecodeError, OSError, ... for a bad file
        raise NvmConversionError(f"not a readable ONNX model ({type(e).__name__}: {e})",
                                 file=path) from None
    if not model.graph.node and not model.graph.output:
        raise NvmConversionError("not an ONNX model (no graph: empty, truncated or another "
                                 "format)", file=path)
    if model.ir_version > MAX_IR_VERSION:
        raise NvmConversionError(f"IR version {model.ir_version} is newer than supported "
                                 f"(<= {MAX_IR_VERSION})", file=path)
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise NvmConversionError(f"ONNX checker rejected the model: {e}", file=path) from None
    return model


def to_ir(model: onnx.ModelProto, path: str = "<model>") -> ir.Model:
    """Convert a checked ONNX ``ModelProto`` into the IR."""
    ctx = _Ctx(model, path)
    if not MIN_OPSET <= ctx.opset <= MAX_OPSET:
        raise ctx.err(None, f"opset {ctx.opset} not supported (supported {MIN_OPSET}..{MAX_OPSET})")
    g = model.graph
    for init in g.initializer:
        ctx.values[init.name] = Const(numpy_helper.to_array(init))
    for sp in g.sparse_initializer:
        raise ctx.err(None, f"sparse initializer {sp.values.name!r} is not supported")
    _bind_inputs(ctx, g)
    needed = _live_nodes(g)
    for k, node in enumerate(g.node):
        if k not in needed:
            continue
        if node.domain not in ("", "ai.onnx"):
            raise ctx.err(node, f"unsupported op: domain {node.domain!r} is not ai.onnx")
        for o in node.output:
            ctx.producers[o] = node
        inputs = [ctx.get(node, i) for i in range(len(node.input))]
        present = [v for v in inputs if v is not None]
        if (present and all(isinstance(v, Const) for v in present)
                and node.op_type not in RECURRENT_OPS):
            outs = _fold(ctx, node)
        elif not present and node.op_type in ("Constant",):
            outs = _fold(ctx, node)
        else:
            handler = HANDLERS.get(node.op_type)
            if handler is None:
                raise ctx.err(node, f"unsupported op {node.op_type!r} on a run-time tensor "
                                    f"(supported: {', '.join(sorted(HANDLERS))})")
            outs = handler(ctx, node)
        for name, v in zip(node.output, outs):
            if name:
                ctx.values[name] = v
    outputs = []
    for o in g.output:
        v = ctx.values.get(o.name)
        if not isinstance(v, TRef) or v.aux is not None:
            raise ctx.err(None, f"graph output {o.name!r} does not depend on the sequence input "
                                f"(constant or pass-through outputs are not supported)")
        outputs.append(ir.Output(o.name, v.tensor, v.axes, v.sizes, v.pick, v.features))
    if ctx.seq_input is None:
        raise ctx.err(None, "no sequence input feeds a recurrent layer")
    if not any(isinstance(l, ir.Recurrent) for l in ctx.layers):
        raise ctx.err(None, "model has no LSTM/GRU/RNN layer")
    lens_sources = {(l.sequence_lens, None if l.sequence_lens_value is None
                     else tuple(l.sequence_lens_value.tolist()))
                    for l in ctx.layers if isinstance(l, ir.Recurrent)
                    and (l.sequence_lens or l.sequence_lens_value is not None)}
    if len(lens_sources) > 1:
        raise ctx.err(None, "recurrent layers take different sequence_lens; not supported")
    layers = _fuse_bias(ctx.layers)
    meta = {p.key: p.value for p in model.metadata_props}
    return ir.Model(input=ctx.seq_input, aux_inputs=tuple(ctx.aux_inputs), layers=tuple(layers),
                    outputs=tuple(outputs), opset=ctx.opset, source=path,
                    producer=f"{model.producer_name} {model.producer_version}".strip(),
                    metadata=meta)


def _live_nodes(g: onnx.GraphProto) -> set[int]:
    """Indices of the nodes the graph outputs depend on (dead nodes are ignored)."""
    prod = {o: k for k, n in enumerate(g.node) for o in n.output if o}
    live: set[int] = set()
    stack = [o.name for o in g.output]
    seen = set()
    while stack:
        t = stack.pop()
        if t in seen or t not in prod:
            continue
        seen.add(t)
        k = prod[t]
        if k not in live:
            live.add(k)
            stack.extend(i for i in g.node[k].input if i)
    return live


def _bind_inputs(ctx: _Ctx, g: onnx.GraphProto) -> None:
    """Give each graph input a value: the sequence input gets its axis labels from the recurrent
    node it reaches; sequence_lens/initial states become auxiliary inputs."""
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for n in g.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    init_names = {i.name for i in g.initializer}
    for inp in g.input:
        if inp.name in init_names:
            continue
        tt = inp.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        role = _input_role(inp.name, consumers)
        if role is None:
            ctx.values[inp.name] = TRef(inp.name, (), (), aux=inp.name)  # unused or unknown
            continue
        kind, node, perm_to_node = role
        if kind == "X":
            if tt.elem_type != onnx.TensorProto.FLOAT:
                raise NvmConversionError(f"sequence input {inp.name!r} has element type "
                                         f"{onnx.TensorProto.DataType.Name(tt.elem_type)}; only "
                                         f"float32 is supported", file=ctx.path)
            layout = _attrs(node).get("layout", 0)
            node_axes = ("T", "B", "F") if layout == 0 else ("B", "T", "F")
            axes = [None] * 3
            for i, p in enumerate(perm_to_node):
                axes[p] = node_axes[i]
            if ctx.seq_input is not None:
                raise NvmConversionError(f"two sequence inputs ({ctx.seq_input.name!r}, "
                                         f"{inp.name!r}) are not supported", file=ctx.path)
            w = ctx.values.get(node.input[1])
            feats = int(w.value.shape[2]) if isinstance(w, Const) else None
            if feats is None:
                raise NvmConversionError(f"dynamic weight: input W of node {node.name!r} "
                                         f"(op {node.op_type}) is not a constant", file=ctx.path)
            if len(dims) == 3:
                fdim = dims[axes.index("F")]
                if fdim not in (None, feats):
                    raise NvmConversionError(f"input {inp.name!r} declares {fdim} features; "
                                             f"node {node.name!r} expects {feats}", file=ctx.path)
            ctx.seq_input = ir.SeqInput(inp.name, tuple(axes), feats)
            ctx.values[inp.name] = TRef(inp.name, tuple(axes), tuple(
                feats if a == "F" else None for a in axes))
        else:
            ctx.values[inp.name] = TRef(inp.name, (), (), aux=inp.name)


def _input_role(name: str, consumers) -> tuple[str, onnx.NodeProto, tuple[int, ...]] | None:
    """Follow ``name`` through layout pass-through ops to a recurrent node's X input."""
    perm = (0, 1, 2)
    cur = name
    for _ in range(16):
        cons = consumers.get(cur, [])
        rec = [(n, i) for n, i in cons if n.op_type in RECURRENT_OPS]
        if rec:
            n, i = rec[0]
            return ("X" if i == 0 else "aux", n, perm)
        nxt = [(n, i) for n, i in cons if n.op_type in _LAYOUT_PASSTHROUGH and i == 0]
        if not nxt:
            return None
        n = nxt[0][0]
        if n.op_type == "Transpose":
            p = tuple(_attrs(n).get("perm", (2, 1, 0)))
            if len(p) != 3:
                return None
            perm = tuple(perm[j] for j in p)
        cur = n.output[0]
    return None


# ------------------------------------------------------------------------------ constant folding
def _fold(ctx: _Ctx, node: onnx.NodeProto) -> list[Value]:
    from onnx.reference import ReferenceEvaluator

    names = [n for n in node.input if n]
    feeds = {n: ctx.values[n].value for n in names}
    inputs = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(
        feeds[n].dtype), feeds[n].shape) for n in names]
    outputs = [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
               for o in node.output if o]
    graph = onnx.helper.make_graph([node], "fold", inputs, outputs)
    m = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", ctx.opset)])
    try:
        res = ReferenceEvaluator(m).run(None, feeds)
    except Exception as e:
        raise ctx.err(node, f"cannot fold constant node: {e}") from None
    return [Const(np.asarray(r)) for r in res]


# ----------------------------------------------------------------------------- shape symbols
def _as_shape(ctx: _Ctx, node, v: Value) -> Shape | None:
    if isinstance(v, Shape):
        return v
    if isinstance(v, Const) and np.issubdtype(v.value.dtype, np.integer):
        return Shape(tuple(int(x) for x in v.value.reshape(-1)), scalar=v.value.ndim == 0)
    return None


def h_shape(ctx: _Ctx, node) -> list[Value]:
    at = _check_attrs(ctx, node, {"start", "end"})
    v = ctx.get(node, 0)
    if isinstance(v, TRef) and v.aux is None:
        dims = tuple(s if s is not None else a for a, s in zip(v.axes, v.sizes))
    elif isinstance(v, Zeros):
        dims = v.dims
    else:
        raise ctx.err(node, "Shape of an unsupported value")
    start, end = at.get("start", 0), at.get("end", None)
    return [Shape(tuple(dims[start:end]))]


def h_gather(ctx: _Ctx, node) -> list[Value]:
    at = _check_attrs(ctx, node, {"axis"})
    axis = at.get("axis", 0)
    data, idx = ctx.get(node, 0), ctx.get(node, 1)
    if not isinstance(idx, Const):
        raise ctx.err(node, "Gather indices must be constant")
    shp = _as_shape(ctx, node, data)
    if isinstance(data, Shape):
        ii = idx.value
        picked = tuple(data.dims[int(k)] for k in ii.reshape(-1))
        return [Shape(picked, scalar=ii.ndim == 0)]
    if isinstance(data, TRef) and data.aux is None:
        return [_select(ctx, node, data, axis, idx.value)]
    raise ctx.err(node, f"Gather on an unsupported value ({type(data).__name__})" if shp is None
                  else "Gather on a shape")


def _select(ctx: _Ctx, node, t: TRef, axis: int, idx: np.ndarray) -> TRef:
    """Gather/Select of one index on a run-time tensor's axis."""
    rank = len(t.axes)
    axis = axis + rank if axis < 0 else axis
    if idx.size != 1:
        raise ctx.err(node, "Gather of several indices on a run-time tensor is not supported")
    k = int(idx.reshape(-1)[0])
    label, size = t.axes[axis], t.sizes[axis]
    keep_axis = idx.ndim > 0
    if label == "T":
        if k != -1:
            raise ctx.err(node, f"Gather on the time axis supports only index -1 (last step), "
                                f"got {k}")
        pick = t.pick if t.pick is not None else None
        if pick is not None:
            raise ctx.err(node, "time axis already selected")
        nblk = t.sizes[t.axes.index("D")] if "D" in t.axes else 1
        axes, sizes = _drop_or_unit(t, axis, keep_axis)
        return TRef(t.tensor, axes, sizes, pick=("T-1",) * nblk)
    if label == "D":
        ndir = size
        k = k + ndir if k < 0 else k
        if not 0 <= k < ndir:
            raise ctx.err(node, f"direction index {k} out of range for {ndir} directions")
        h = t.sizes[t.axes.index("H")]
        out = ctx.fresh(t.tensor + ":dir")
        ctx.layers.append(ir.FeatureSlice(node.name or out, k * h, (k + 1) * h, t.tensor, out))
        axes, sizes = _drop_or_unit(t, axis, keep_axis)
        if not keep_axis:
            axes = tuple("F" if a == "H" else a for a in axes)
        else:
            sizes = tuple(1 if a == "D" else s for a, s in zip(axes, sizes))
        pick = (t.pick[k],) if t.pick is not None else None
        return TRef(out, axes, sizes, pick=pick)
    if label == "1" and k in (0, -1):
        axes, sizes = _drop_or_unit(t, axis, keep_axis)
        return TRef(t.tensor, axes, sizes, pick=t.pick)
    raise ctx.err(node, f"Gather on axis {axis} ({label}) of a run-time tensor is not supported")


def _drop_or_unit(t: TRef, axis: int, keep: bool):
    axes, sizes = list(t.axes), list(t.sizes)
    if keep:
        axes[axis], sizes[axis] = "1", 1
    else:
        del axes[axis], sizes[axis]
    return tuple(axes), tuple(sizes)


def _axes_arg(ctx: _Ctx, node, at: dict, rank: int, attr_until: int) -> list[int] | None:
    if ctx.opset < attr_until:
        axes = at.get("axes")
    else:
        axes = ctx.const(node, 1, "axes") if len(node.input) > 1 else None
        axes = None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
    if axes is None:
        return None
    return [a + rank if a < 0 else a for a in axes]


def h_unsqueeze(ctx: _Ctx, node) -> list[Value]:
    at = _check_attrs(ctx, node, {"axes"})
    v = ctx.get(node, 0)
    if isinstance(v, Shape):
        axes = _axes_arg(ctx, node, at, 1, 13)
        if v.scalar and axes in ([0], [-1]):
            return [Shape(v.dims, scalar=False)]
        raise ctx.err(node, "Unsqueeze of a shape vector")
    if isinstance(v, TRef) and v.aux is None:
        out_rank = len(v.axes) + len(_axes_arg(ctx, node, at, 0, 13) or [])
        axes = sorted(a + out_rank if a < 0 else a for a in (_axes_arg(ctx, node, at, 0, 13) or []))
        ax, sz = list(v.axes), list(v.sizes)
        for a in axes:
            ax.insert(a, "1"); sz.insert(a, 1)
        return [replace(v, axes=tuple(ax), sizes=tuple(sz))]
    if isinstance(v, Zeros):
        axes = _axes_arg(ctx, node, at, len(v.dims) + 1, 13) or []
        d = list(v.dims)
        for a in sorted(axes):
            d.insert(a, 1)
        return [Zeros(tuple(d))]
    raise ctx.err(node, "Unsqueeze of an unsupported value")


def h_squeeze(ctx: _Ctx, node) -> list[Value]:
    at = _check_attrs(ctx, node, {"axes"})
    v = ctx.get(node, 0)
    if isinstance(v, Shape):
        if len(v.dims) == 1:
            return [Shape(v.dims, scalar=True)]
        raise ctx.err(node, "Squeeze of a shape vector")
    if isinstance(v, Zeros):
        axes = _axes_arg(ctx, node, at, len(v.dims), 13)
        d = [x for i, x in enumerate(v.dims) if not (x == 1 and (axes is None or i in axes))]
        return [Zeros(tuple(d))]
    if not (isinstance(v, TRef) and v.aux is None):
        raise ctx.err(node, "Squeeze of an unsupported value")
    axes = _axes_arg(ctx, node, at, len(v.axes), 13)
    if axes is None:
        axes = [i for i, (a, s) in enumerate(zip(v.axes, v.sizes)) if s == 1]
    ax, sz = [], []
    for i, (a, s) in enumerate(zip(v.axes, v.sizes)):
        if i in axes:
            if s != 1:
                raise ctx.err(node, f"Squeeze of axis {i} ({a}) whose size is not known to be 1")
            continue
        ax.append(a); sz.append(s)
    if "D" not in ax:
        ax = ["F" if a == "H" else a for a in ax]
    return [TRef(v.tensor, tuple(ax), tuple(sz), v.pick)]


def h_transpose(ctx: _Ctx, node) -> list[Value]:
    at = _check_attrs(ctx, node, {"perm"})
    v = ctx.get(node, 0)
    if isinstance(v, TRef) and v.aux is None:
        perm = at.get("perm", list(range(len(v.axes)))[::-1])
        return [TRef(v.tensor, tuple(v.axes[p] for p in perm), tuple(v.sizes[p] for p in perm),
                     v.pick)]
    if isinstance(v, Zeros):
        perm = at.get("perm", list(range(len(v.dims)))[::-1])
        return [Zeros(tuple(v.dims[p] for p in perm))]
    raise ctx.err(node, "Transpose of an unsupported value")


def h_reshape(ctx: _Ctx, node) -> list[Value]:
    """Reshape of a run-time tensor: only layout changes (merging the direction and hidden
    axes, adding/removing unit axes). A fixed size where the view has the batch or time axis is
    what the dynamo exporter leaves when it freezes an example length; it is read as that axis
    (with a warning), so the model runs at every length."""
    at = _check_attrs(ctx, node, {"allowzero"})
    v = ctx.get(node, 0)
    shp = _as_shape(ctx, node, ctx.get(node, 1)) if len(node.input) > 1 else None
    if shp is None:
        raise ctx.err(node, "Reshape target shape must be constant or built from Shape")
    if not (isinstance(v, TRef) and v.aux is None):
        raise ctx.err(node, "Reshape of an unsupported value")
    target = list(shp.dims)
    if not at.get("allowzero", 0):
        target = [(v.axes[i] if v.sizes[i] is None else v.sizes[i]) if d == 0 else d
                  for i, d in enumerate(target)]
    if sum(1 for d in target if d == -1) > 1:
        raise ctx.err(node, "Reshape with two -1 dims")
    src = [(a, s) for a, s in zip(v.axes, v.sizes)]
    frozen: list[str] = []

    def match(d, axes, rev=False):
        """How target dim d maps onto the start of axes (reversed when walking from the
        right): (n consumed, label, size) or None."""
        if not axes:
            return (0, "1", 1) if d == 1 else None
        a, sz = axes[0]
        if d == a:
            return 1, a, sz
        if isinstance(d, int):
            if a in ("D", "H", "F") and sz == d:
                return 1, a, sz
            pair = ["H", "D"] if rev else ["D", "H"]
            if len(axes) > 1 and [a, axes[1][0]] == pair and sz * axes[1][1] == d:
                return 2, "F", d
            if a in ("B", "T") and d > 1:
                frozen.append(f"{a}={d}")
                return 1, a, None
            if d == 1:
                return (1, "1", 1) if a == "1" else (0, "1", 1)
        if a == "1":
            return 1, None, None      # drop a unit axis the target does not keep
        return None

    def walk(dims, axes, rev=False):
        out, i = [], 0
        for d in dims:
            while True:
                m = match(d, axes[i:], rev)
                if m is None:
                    raise ctx.err(node, f"Reshape to {shp.dims} from axes {list(v.axes)} is "
                                        f"not a supported layout change (only merging "
                                        f"direction and hidden axes and adding/removing unit "
                                        f"axes)")
                n, lab, sz = m
                i += n
                if lab is not None:
                    out.append((lab, sz))
                    break
        return out, i

    if -1 in target:
        k = target.index(-1)
        left, i = walk(target[:k], src)
        rrev, j = walk(target[k + 1:][::-1], src[i:][::-1], rev=True)
        right = rrev[::-1]
        mid = [x for x in src[i:len(src) - j] if x[0] != "1"]
        if len(mid) == 1:
            middle = [mid[0]]
        elif [a for a, _ in mid] == ["D", "H"]:
            middle = [("F", mid[0][1] * mid[1][1])]
        elif not mid:
            middle = [("1", 1)]
        else:
            raise ctx.err(node, f"Reshape -1 would merge axes {[a for a, _ in mid]}")
        out = left + middle + right
    else:
        out, i = walk(target, src)
        rest = [a for a, _ in src[i:] if a != "1"]
        if rest:
            raise ctx.err(node, f"Reshape to {shp.dims} drops axes {rest}")
    if frozen:
        log.warning("%s: node %r (Reshape) fixes %s; the exporter froze an example length - "
                    "treated as a run-time size", ctx.path, node.name or node.output[0],
                    ", ".join(frozen))
    out_ax = [a for a, _ in out]
    out_sz = [sz for _, sz in out]
    if "D" not in out_ax:
        out_ax = ["F" if a == "H" else a for a in out_ax]
    return [TRef(v.tensor, tuple(out_ax), tuple(out_sz), v.pick)]


def _non_unit(dims):
    return [d for d in dims if d != 1]


def h_concat(ctx: _Ctx, node) -> list[Value]:
    at = _check_attrs(ctx, node, {"axis"})
    axis = at["axis"] if "axis" in at else 0
    vals = [ctx.get(node, i) for i in range(len(node.input))]
    shapes = [_as_shape(ctx, node, v) for v in vals]
    if all(s is not None for s in shapes):
        dims: list = []
        for s in shapes:
            dims.extend(s.dims)
        return [Shape(tuple(dims))]
    if all(isinstance(v, TRef) and v.aux is None for v in vals):
        t0 = vals[0]
        rank = len(t0.axes)
        axis = axis + rank if axis < 0 else axis
        label = t0.axes[axis]
        if any(v.axes != t0.axes for v in vals):
            raise ctx.err(node, "Concat of tensors with different layouts")
        if label not in ("D", "F"):
            raise ctx.err(node, f"Concat along axis {axis} ({label}) is not supported")
        if label == "D" and t0.axes[-1] != "H":
            raise ctx.err(node, "Concat along directions needs the hidden axis last")
        if (t0.pick is None) != all(v.pick is None for v in vals) or \
           any((v.pick is None) != (t0.pick is None) for v in vals):
            raise ctx.err(node, "Concat of per-step and final-state tensors")
        out = ctx.fresh(node.output[0])
        ctx.layers.append(ir.FeatureConcat(node.name or out, tuple(v.tensor for v in vals), out))
        sizes = list(t0.sizes)
        sizes[axis] = sum(v.sizes[axis] for v in vals)
        pick = None
        if t0.pick is not None:
            pick = tuple(p for v in vals for p in v.pick)
            if label == "F":
                raise ctx.err(node, "Concat of final states along features is not supported")
        return [TRef(out, t0.axes, tuple(sizes), pick)]
    raise ctx.err(node, "Concat of unsupported values")


def h_constant_of_shape(ctx: _Ctx, node) -> list[Value]:
    at = _check_attrs(ctx, node, {"value"})
    shp = _as_shape(ctx, node, ctx.get(node, 0))
    val = numpy_helper.to_array(at["value"]) if "value" in at else np.zeros(1, np.float32)
    if shp is None:
        raise ctx.err(node, "ConstantOfShape of an unsupported value")
    if np.any(val != 0):
        raise ctx.err(node, "ConstantOfShape with a non-zero fill and a run-time shape")
    return [Zeros(shp.dims)]


def h_expand(ctx: _Ctx, node) -> list[Value]:
    _check_attrs(ctx, node, set())
    v, shp = ctx.get(node, 0), _as_shape(ctx, node, ctx.get(node, 1))
    if shp is None:
        raise ctx.err(node, "Expand shape must be constant or built from Shape")
    if isinstance(v, Zeros) or (isinstance(v, Const) and not np.any(v.value)):
        return [Zeros(shp.dims)]
    raise ctx.err(node, "Expand of a non-zero value to a run-time shape is not supported")


def h_cast(ctx: _Ctx, node) -> list[Value]:
    at = _check_attrs(ctx, node, {"to", "saturate", "round_mode"})
    v = ctx.get(node, 0)
    if isinstance(v, (Shape, Zeros)):
        return [v]
    if isinstance(v, TRef) and v.aux is None and at.get("to") == onnx.TensorProto.FLOAT:
        return [v]
    raise ctx.err(node, "Cast of a run-time tensor to another type than float32")


def h_identity(ctx: _Ctx, node) -> list[Value]:
    _check_attrs(ctx, node, set())
    return [ctx.get(node, 0)]


def h_dropout(ctx: _Ctx, node) -> list[Value]:
    _check_attrs(ctx, node, {"ratio", "seed", "is_test"})
    if len(node.input) > 2 and node.input[2]:
        tm = ctx.const(node, 2, "training_mode")
        if tm is not None and bool(np.asarray(tm).reshape(-1)[0]):
            raise ctx.err(node, "Dropout with training_mode=true")
    if len(node.output) > 1 and node.output[1]:
        raise ctx.err(node, "Dropout mask output is not supported")
    return [ctx.get(node, 0)]


def _seq(ctx: _Ctx, node, i: int = 0) -> TRef:
    v = ctx.get(node, i)
    if not (isinstance(v, TRef) and v.aux is None):
        raise ctx.err(node, f"input {node.input[i]!r} must be the run-time sequence tensor")
    return v


def _pointwise(ctx: _Ctx, node, make) -> list[Value]:
    x = _seq(ctx, node)
    out = ctx.fresh(node.output[0])
    ctx.layers.append(make(node.name or out, x.tensor, out))
    return [replace(x, tensor=out)]


def h_act(fn_name: str) -> Callable:
    from .conventions import Activation

    def handler(ctx: _Ctx, node) -> list[Value]:
        _check_attrs(ctx, node, set())
        return _pointwise(ctx, node, lambda n, x, y: ir.Elementwise(n, Activation(fn_name), x, y))
    return handler


def h_softmax(log: bool) -> Callable:
    def handler(ctx: _Ctx, node) -> list[Value]:
        at = _check_attrs(ctx, node, {"axis"})
        x = _seq(ctx, node)
        rank = len(x.axes)
        axis = at.get("axis", -1 if ctx.opset >= 13 else 1)
        axis = axis + rank if axis < 0 else axis
        if not x.feature_axis_ok():
            raise ctx.err(node, "softmax input's last axis is not the feature axis")
        if ctx.opset >= 13:
            ok = axis == rank - 1
        else:  # coerced to 2-D at `axis`: fine when only unit axes precede the last one
            ok = all(a == "1" for a in x.axes[axis:-1])
        if not ok:
            raise ctx.err(node, f"unsupported attribute value axis={at.get('axis')}: softmax must "
                                f"run over the feature axis only")
        return _pointwise(ctx, node, lambda n, xi, y: ir.Softmax(n, log, xi, y))
    return handler


def h_matmul(ctx: _Ctx, node) -> list[Value]:
    _check_attrs(ctx, node, set())
    x = _seq(ctx, node, 0)
    w = ctx.const(node, 1, "B (the weight matrix)")
    if w.ndim != 2:
        raise ctx.err(node, f"weight must be 2-D, got shape {w.shape}")
    if not x.feature_axis_ok() or w.shape[0] != x.features:
        raise ctx.err(node, f"weight {w.shape} does not act on the feature axis "
                            f"({x.features} features, axes {list(x.axes)})")
    out = ctx.fresh(node.output[0])
    ctx.layers.append(ir.Dense(node.name or out, np.ascontiguousarray(w.T, np.float32), None,
                               x.tensor, out))
    return [_with_features(x, out, w.shape[1])]


def _with_features(x: TRef, tensor: str, n: int) -> TRef:
    axes = tuple("F" if a == "H" else a for a in x.axes)
    sizes = x.sizes[:-1] + (n,)
    return TRef(tensor, axes, sizes, x.pick)


def h_gemm(ctx: _Ctx, node) -> list[Value]:
    at = _check_attrs(ctx, node, {"alpha", "beta", "transA", "transB", "broadcast"})
    if at.get("transA", 0):
        raise ctx.err(node, "unsupported attribute value transA=1 on a run-time tensor")
    x = _seq(ctx, node, 0)
    if len(x.axes) != 2 or not x.feature_axis_ok():
        raise ctx.err(node, f"Gemm input must be [batch, features], got axes {list(x.axes)}")
    w = ctx.const(node, 1, "B (the weight matrix)").astype(np.float32)
    if at.get("transB", 0):
        w = w.T
    w = w * np.float32(at.get("alpha", 1.0))
    if w.shape[0] != x.features:
        raise ctx.err(node, f"weight {w.shape} does not match {x.features} features")
    c = ctx.const(node, 2, "C (the bias)")
    b = None
    if c is not None:
        c = np.broadcast_to(np.asarray(c, np.float32), (1, w.shape[1])) \
            if np.asarray(c).size in (1, w.shape[1]) else None
        if c is None:
            raise ctx.err(node, "bias C must broadcast over the batch")
        b = (c.reshape(-1) * np.float32(at.get("beta", 1.0))).astype(np.float32)
    out = ctx.fresh(node.output[0])
    ctx.layers.append(ir.Dense(node.name or out, np.ascontiguousarray(w.T), b, x.tensor, out))
    return [_with_features(x, out, w.shape[1])]


def h_add(ctx: _Ctx, node) -> list[Value]:
    _check_attrs(ctx, node, set())
    a, b = ctx.get(node, 0), ctx.get(node, 1)
    if isinstance(a, Const):
        a, b = b, a
    if not (isinstance(a, TRef) and a.aux is None) or not isinstance(b, Const):
        raise ctx.err(node, "Add supports a run-time tensor plus a constant bias only")
    bias = np.asarray(b.value, np.float32)
    if not a.feature_axis_ok() or bias.size not in (1, a.features) or \
            any(s != 1 for s in bias.shape[:-1]):
        raise ctx.err(node, f"bias of shape {bias.shape} does not broadcast over the feature axis")
    bias = np.broadcast_to(bias.reshape(-1), (a.features,)).astype(np.float32)
    out = ctx.fresh(node.output[0])
    ident = np.eye(a.features, dtype=np.float32)
    ctx.layers.append(ir.Dense((node.name or out) + ":bias", ident, bias, a.tensor, out))
    return [replace(a, tensor=out)]


def _fuse_bias(layers: list[ir.Layer]) -> list[ir.Layer]:
    """Fold identity-weight bias layers into the Dense that feeds them (MatMul + Add)."""
    uses: dict[str, int] = {}
    for l in layers:
        for name in _layer_inputs(l):
            uses[name] = uses.get(name, 0) + 1
    out: list[ir.Layer] = []
    for l in layers:
        if (isinstance(l, ir.Dense) and l.name.endswith(":bias") and out
                and isinstance(out[-1], ir.Dense) and out[-1].y == l.x and uses.get(l.x) == 1
                and out[-1].b is None):
            prev = out.pop()
            out.append(ir.Dense(prev.name, prev.W, l.b, prev.x, l.y))
        else:
            out.append(l)
    return out


def _layer_inputs(l: ir.Layer) -> tuple[str, ...]:
    if isinstance(l, ir.FeatureConcat):
        return l.xs
    return (l.x,)


# ------------------------------------------------------------------------------- recurrent ops
_REC_ATTRS = {
    "LSTM": {"activation_alpha", "activation_beta", "activations", "clip", "direction",
             "hidden_size", "input_forget", "layout"},
    "GRU": {"activation_alpha", "activation_beta", "activations", "clip", "direction",
            "hidden_size", "linear_before_reset", "layout"},
    "RNN": {"activation_alpha", "activation_beta", "activations", "clip", "direction",
            "hidden_size", "layout"},
}


def h_recurrent(ctx: _Ctx, node) -> list[Value]:
    kind = node.op_type
    at = _check_attrs(ctx, node, _REC_ATTRS[kind] | ({"output_sequence"} if ctx.opset < 7 else set()))
    x = _seq(ctx, node, 0)
    layout = int(at.get("layout", 0))
    if layout not in (0, 1):
        raise ctx.err(node, f"unsupported attribute value layout={layout} (0 or 1)")
    want = ("T", "B") if layout == 0 else ("B", "T")
    if len(x.axes) != 3 or x.axes[:2] != want or not x.feature_axis_ok() or x.pick is not None:
        raise ctx.err(node, f"input X has axes {list(x.axes)}; layout={layout} needs "
                            f"[{', '.join(want)}, features]")
    direction = at.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ctx.err(node, f"unsupported attribute value direction={direction!r}")
    nd = 2 if direction == "bidirectional" else 1
    g = GATES[kind]
    W = ctx.const(node, 1, "W").astype(np.float32)
    R = ctx.const(node, 2, "R").astype(np.float32)
    if W.ndim != 3 or R.ndim != 3 or W.shape[0] != nd or R.shape[0] != nd:
        raise ctx.err(node, f"W {W.shape} / R {R.shape} do not match {nd} direction(s)")
    hsz = R.shape[2]
    if "hidden_size" in at and int(at["hidden_size"]) != hsz:
        raise ctx.err(node, f"hidden_size={at['hidden_size']} but R has hidden {hsz}")
    if W.shape[1] != g * hsz or R.shape[1] != g * hsz:
        raise ctx.err(node, f"W {W.shape} / R {R.shape} do not hold {g} gates of {hsz}")
    if W.shape[2] != x.features:
        raise ctx.err(node, f"W expects {W.shape[2]} inputs, X has {x.features} features")
    Bv = ctx.const(node, 3, "B")
    if Bv is None:
        Bv = np.zeros((nd, 2 * g * hsz), np.float32)
    Bv = np.asarray(Bv, np.float32)
    if Bv.shape != (nd, 2 * g * hsz):
        raise ctx.err(node, f"B has shape {Bv.shape}, expected {(nd, 2 * g * hsz)}")
    P = None
    if kind == "LSTM":
        P = ctx.const(node, 7, "P")
        if P is not None:
            P = np.asarray(P, np.float32)
            if P.shape != (nd, 3 * hsz):
                raise ctx.err(node, f"P has shape {P.shape}, expected {(nd, 3 * hsz)}")
            if not np.any(P):
                P = None
    try:
        acts = parse_activations(kind, nd, at.get("activations"), at.get("activation_alpha"),
                                 at.get("activation_beta"))
    except ValueError as e:
        raise ctx.err(node, f"unsupported attribute value: {e}") from None
    clip = at.get("clip")
    if clip is not None and not clip > 0:
        raise ctx.err(node, f"unsupported attribute value clip={clip} (must be > 0)")
    input_forget = bool(at.get("input_forget", 0))
    lbr = bool(at.get("linear_before_reset", 0))
    name = node.name or ctx.fresh(kind)
    # sequence_lens
    seq_name, seq_val = None, None
    sl = ctx.get(node, 4)
    if isinstance(sl, Const):
        seq_val = np.asarray(sl.value).astype(np.int64).reshape(-1)
    elif isinstance(sl, TRef) and sl.aux is not None:
        seq_name = sl.aux
        ctx.aux_inputs.append(ir.AuxInput(seq_name, "sequence_lens", name, ("B",)))
    elif sl is not None and not isinstance(sl, Zeros):
        raise ctx.err(node, "sequence_lens must be a constant or a graph input")
    inits = []
    for idx, role in ((5, "initial_h"), (6, "initial_c")):
        v = ctx.get(node, idx) if (kind == "LSTM" or idx == 5) else None
        if v is None or isinstance(v, Zeros):
            inits.append(None)
        elif isinstance(v, Const):
            val = np.asarray(v.value, np.float32)
            if val.ndim != 3 or (layout == 0 and (val.shape[0], val.shape[2]) != (nd, hsz)) or \
               (layout == 1 and (val.shape[1], val.shape[2]) != (nd, hsz)):
                raise ctx.err(node, f"{role} has shape {val.shape}")
            if layout == 1:
                val = np.swapaxes(val, 0, 1)
            inits.append(None if not np.any(val) else ir.StateInit(value=val))
        elif isinstance(v, TRef) and v.aux is not None:
            if layout == 1:
                raise ctx.err(node, f"{role} as a graph input with layout=1 is not supported")
            ctx.aux_inputs.append(ir.AuxInput(v.aux, role, name, (nd, "B", hsz)))
            inits.append(ir.StateInit(input=v.aux))
        else:
            raise ctx.err(node, f"{role} must be a constant, zeros, or a graph input")
    y = ctx.fresh(name + ":Y")
    wants_c = kind == "LSTM" and len(node.output) > 2 and bool(node.output[2])
    c = ctx.fresh(name + ":Y_c") if wants_c else None
    layer = ir.Recurrent(
        name=name, kind=kind, input_size=int(W.shape[2]), hidden_size=int(hsz),
        direction=direction, W=W, R=R, Wb=Bv[:, :g * hsz].copy(), Rb=Bv[:, g * hsz:].copy(),
        P=P, activations=acts, clip=None if clip is None else float(clip),
        input_forget=input_forget, linear_before_reset=lbr, x=x.tensor, y=y, c=c,
        sequence_lens=seq_name, sequence_lens_value=seq_val,
        initial_h=inits[0], initial_c=inits[1] if kind == "LSTM" else None)
    ctx.layers.append(layer)
    final_pick = ("end", "start") if nd == 2 else (("start",) if direction == "reverse" else ("end",))
    if layout == 0:
        y_ref = TRef(y, ("T", "D", "B", "H"), (None, nd, None, hsz))
        st = lambda t: TRef(t, ("D", "B", "H"), (nd, None, hsz), final_pick)
    else:
        y_ref = TRef(y, ("B", "T", "D", "H"), (None, None, nd, hsz))
        st = lambda t: TRef(t, ("B", "D", "H"), (None, nd, hsz), final_pick)
    outs: list[Value] = [y_ref, st(y)]
    if kind == "LSTM":
        outs.append(st(c) if c else None)
    return outs


_BIG = 2 ** 62


def _slice_args(ctx: _Ctx, node, at: dict, rank: int):
    if ctx.opset < 10:
        starts, ends = at["starts"], at["ends"]
        axes = at.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts = [int(v) for v in ctx.const(node, 1, "starts").reshape(-1)]
        ends = [int(v) for v in ctx.const(node, 2, "ends").reshape(-1)]
        a = ctx.const(node, 3, "axes")
        axes = list(range(len(starts))) if a is None else [int(v) for v in a.reshape(-1)]
        st = ctx.const(node, 4, "steps")
        steps = [1] * len(starts) if st is None else [int(v) for v in st.reshape(-1)]
    axes = [a + rank if a < 0 else a for a in axes]
    return list(zip(axes, starts, ends, steps))


def _is_full(start: int, end: int, step: int) -> bool:
    return step == 1 and start == 0 and end >= _BIG // 4


def h_slice(ctx: _Ctx, node) -> list[Value]:
    at = _check_attrs(ctx, node, {"starts", "ends", "axes"})
    v = ctx.get(node, 0)
    if isinstance(v, Shape):
        (ax, st, en, sp), = _slice_args(ctx, node, at, 1)
        return [Shape(tuple(v.dims[slice(st, min(en, _BIG), sp)]))]
    if isinstance(v, Zeros):
        dims = list(v.dims)
        for ax, st, en, sp in _slice_args(ctx, node, at, len(dims)):
            d = dims[ax]
            if isinstance(d, int):
                dims[ax] = len(range(d)[slice(st, min(en, _BIG), sp)])
            elif not _is_full(st, en, sp):
                raise ctx.err(node, f"Slice of a run-time-sized axis ({d}) of zeros")
        return [Zeros(tuple(dims))]
    if not (isinstance(v, TRef) and v.aux is None):
        raise ctx.err(node, "Slice of an unsupported value")
    t = v
    for ax, st, en, sp in _slice_args(ctx, node, at, len(t.axes)):
        label, size = t.axes[ax], t.sizes[ax]
        if size is not None and sp == 1 and st in (0, -size) and en >= size:
            continue  # whole axis
        if size is None and _is_full(st, en, sp):
            continue
        if label == "T" and st == -1 and sp == 1 and en >= _BIG // 4 or (label == "T" and
                                                                        st == -1 and en == 0 and False):
            t = _select(ctx, node, t, ax, np.array([-1]))
            continue
        if label == "D" and sp == 1:
            k = st + size if st < 0 else st
            e = min(en + size if en < 0 else en, size)
            if e - k == 1:
                t = _select(ctx, node, t, ax, np.array([k]))
                continue
        raise ctx.err(node, f"Slice [{st}:{en}:{sp}] on axis {ax} ({label}) of a run-time tensor "
                            f"is not supported")
    return [t]


def h_arith(op: str) -> Callable:
    fn = {"Mul": lambda a, b: a * b, "Add": lambda a, b: a + b, "Sub": lambda a, b: a - b,
          "Div": lambda a, b: a // b}[op]

    def handler(ctx: _Ctx, node) -> list[Value]:
        a, b = ctx.get(node, 0), ctx.get(node, 1)
        if op == "Add" and (isinstance(a, TRef) or isinstance(b, TRef)):
            return h_add(ctx, node)
        _check_attrs(ctx, node, set())
        sa, sb = _as_shape(ctx, node, a), _as_shape(ctx, node, b)
        if sa is None or sb is None or not (isinstance(a, Shape) or isinstance(b, Shape)):
            raise ctx.err(node, f"{op} is supported only on shape values and as a bias Add")
        da, db = list(sa.dims), list(sb.dims)
        if len(da) == 1 and len(db) > 1:
            da = da * len(db)
        if len(db) == 1 and len(da) > 1:
            db = db * len(da)
        out = []
        for x, y in zip(da, db):
            if isinstance(x, int) and isinstance(y, int):
                out.append(int(fn(x, y)))
            elif op in ("Mul", "Div") and y == 1:
                out.append(x)
            elif op == "Mul" and x == 1:
                out.append(y)
            else:
                raise ctx.err(node, f"{op} of symbolic dims {x} and {y}")
        return [Shape(tuple(out), scalar=sa.scalar and sb.scalar)]
    return handler


def h_reshape_any(ctx: _Ctx, node) -> list[Value]:
    v = ctx.get(node, 0)
    if isinstance(v, Shape):
        _check_attrs(ctx, node, {"allowzero"})
        shp = _as_shape(ctx, node, ctx.get(node, 1))
        n = len(v.dims)
        if shp is None or int(np.prod([d for d in shp.dims if d != -1])) not in (n, 1):
            raise ctx.err(node, "Reshape of a shape vector")
        return [Shape(v.dims, scalar=len(shp.dims) == 0)]
    if isinstance(v, Zeros):
        shp = _as_shape(ctx, node, ctx.get(node, 1))
        return [Zeros(shp.dims)]
    return h_reshape(ctx, node)


HANDLERS: dict[str, Callable[[_Ctx, onnx.NodeProto], list[Value]]] = {
    "LSTM": h_recurrent,
    "GRU": h_recurrent,
    "RNN": h_recurrent,
    "MatMul": h_matmul,
    "Gemm": h_gemm,
    "Add": h_arith("Add"),
    "Mul": h_arith("Mul"),
    "Sub": h_arith("Sub"),
    "Div": h_arith("Div"),
    "Slice": h_slice,
    "Relu": h_act("relu"),
    "Sigmoid": h_act("sigmoid"),
    "Tanh": h_act("tanh"),
    "Softmax": h_softmax(False),
    "LogSoftmax": h_softmax(True),
    "Identity": h_identity,
    "Dropout": h_dropout,
    "Transpose": h_transpose,
    "Squeeze": h_squeeze,
    "Unsqueeze": h_unsqueeze,
    "Reshape": h_reshape_any,
    "Shape": h_shape,
    "Gather": h_gather,
    "Concat": h_concat,
    "ConstantOfShape": h_constant_of_shape,
    "Expand": h_expand,
    "Cast": h_cast,
}


def load_ir(path: str | os.PathLike) -> ir.Model:
    """Load an ONNX file and convert it to the IR (errors name the file, node, op and why)."""
    path = os.fspath(path)
    model = load_model(path)
    try:
        return to_ir(model, path)
    except NvmConversionError as e:
        raise e.with_file(path) from None
