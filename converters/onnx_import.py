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
Shape values carry symbolic dims (``B``, ``T``, ``T*B`` merged axes, ``T-1``), so the shape
plumbing exporters build is understood by what it computes. Layout ops on run-time tensors
(Transpose/Squeeze/Unsqueeze/Reshape) only change the view. Loop bodies and unrolled cells are
recognised as recurrent layers by converters/loops.py and converters/unrolled.py (tested against
the original graph). Everything else is an error that names the node, its op and why.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from . import ir
from .conventions import GATES, parse_activations
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
        """True when the last axis is the whole feature axis (F, or H with no D left)."""
        last = self.axes[-1]
        return last == "F" or (last == "H" and "D" not in self.axes)


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


# ------------------------------------------------------------------------------- load + check
def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and check an ONNX file; errors name the file and what is wrong with it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise NvmConversionError("no such file", file=path)
    _check_external_data(path)
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


def _check_external_data(path: str) -> None:
    """Weights stored as external data (torch writes ``model.onnx.data`` for larger models)
    are loaded from beside the model; a missing or escaping data file is named."""
    try:
        bare = onnx.load(path, load_external_data=False)
    except Exception:
        return   # load_model reports an unreadable file
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, \
        uses_external_data
    base = os.path.dirname(os.path.abspath(path))
    for t in _get_all_tensors(bare):
        if not uses_external_data(t):
            continue
        loc = ExternalDataInfo(t).location
        full = os.path.normpath(os.path.join(base, loc))
        if os.path.isabs(loc) or not full.startswith(base + os.sep):
            raise NvmConversionError(f"tensor {t.name!r}: external data location {loc!r} is "
                                     f"outside the model's folder", file=path)
        if not os.path.isfile(full):
            raise NvmConversionError(f"tensor {t.name!r} is stored in external data file "
                                     f"{loc!r}, which is missing (it must sit beside the model)",
                                     file=path)


def to_ir(model: onnx.ModelProto, path: str = "<model>",
          constants: Mapping[str, Any] | None = None) -> ir.Model:
    """Convert a checked ONNX ``ModelProto`` into the IR.

    ``constants`` fixes graph inputs at conversion (e.g. ``{"sr": 16000}``, a sample rate):
    they become constants, so an ``If`` on them folds to the branch taken."""
    ctx = _Ctx(model, path)
    graph_inputs = {i.name: i for i in model.graph.input}
    for name, value in (constants or {}).items():
        if name not in graph_inputs:
            raise ctx.err(None, f"constant for {name!r}: the model has no input of that name "
                                f"(inputs: {sorted(graph_inputs)})")
        et = graph_inputs[name].type.tensor_type.elem_type
        ctx.fixed[name] = np.asarray(value, onnx.helper.tensor_dtype_to_np_dtype(et))
    if not MIN_OPSET <= ctx.opset <= MAX_OPSET:
        raise ctx.err(None, f"opset {ctx.opset} not supported (supported {MIN_OPSET}..{MAX_OPSET})")
    g = model.graph
    for init in g.initializer:
        ctx.values[init.name] = Const(numpy_helper.to_array(init))
    for sp in g.sparse_initializer:
        raise ctx.err(None, f"sparse initializer {sp.values.name!r} is not supported")
    for name, value in ctx.fixed.items():
        ctx.values[name] = Const(value)
    _bind_inputs(ctx, g)
    needed = _live_nodes(g, stop=ctx.prebound)
    _run_nodes(ctx, [n for k, n in enumerate(g.node) if k in needed])
    outputs = []
    for o in g.output:
        v = ctx.values.get(o.name)
        if not isinstance(v, TRef) or v.aux is not None:
            raise ctx.err(None, f"graph output {o.name!r} does not depend on the sequence input "
                                f"(constant or pass-through outputs are not supported)")
        if v.step is not None:
            if v.step != ctx.unrolled_steps - 1:
                raise ctx.err(None, f"graph output {o.name!r} is step {v.step} of a sequence "
                                    f"(only the last step, or every step, can be an output)")
            v = replace(v, pick=("T-1",), step=None)
        outputs.append(ir.Output(o.name, v.tensor, v.axes, v.sizes, v.pick, v.features,
                                 delay=_delay_of(ctx.layers, v.tensor, ctx.seq_input)))
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
    for name, value in ctx.fixed.items():
        meta[f"nvmstream.fixed_input.{name}"] = str(value.tolist())
    result = ir.Model(input=ctx.seq_input, aux_inputs=tuple(ctx.aux_inputs), layers=tuple(layers),
                    outputs=tuple(outputs), opset=ctx.opset, source=path,
                    producer=f"{model.producer_name} {model.producer_version}".strip(),
                    metadata=meta)
    if ctx.unrolled_steps is not None:
        _check_unrolled(ctx, result)
    return result


def _run_nodes(ctx: _Ctx, nodes) -> None:
    """Give every node's outputs a value, in order (constant folding or the op's handler)."""
    for node in nodes:
        if node.domain not in ("", "ai.onnx"):
            raise ctx.err(node, f"unsupported op: domain {node.domain!r} is not ai.onnx")
        for o in node.output:
            ctx.producers[o] = node
        inputs = [ctx.get(node, i) for i in range(len(node.input))]
        present = [v for v in inputs if v is not None]
        if node.op_type not in ("Conv", "Pad") and any(
                isinstance(v, TRef) and v.tpad for v in present):
            raise ctx.err(node, "reads a tensor zero-padded in time; only a Conv may read one "
                                "(the padding is folded into it)")
        if (present and all(isinstance(v, Const) for v in present)
                and node.op_type not in RECURRENT_OPS + ("If", "Loop", "Scan")):
            outs = _fold(ctx, node)
        elif not present and node.op_type in ("Constant",):
            outs = _fold(ctx, node)
        else:
            handler = HANDLERS.get(node.op_type)
            if handler is None:
                raise ctx.err(node, f"unsupported op {node.op_type!r} on a run-time tensor "
                                    f"(supported: {', '.join(sorted(HANDLERS))})")
            n_layers = len(ctx.layers)
            outs = handler(ctx, node)
            outs = _dedupe_layers(ctx, n_layers, outs)
        for name, v in zip(node.output, outs):
            if name:
                ctx.values[name] = v


def _check_unrolled(ctx: _Ctx, result: ir.Model) -> None:
    """The recognised unrolled recurrence plus the converted head must reproduce the original
    graph (onnxruntime, at the exported length, on a fresh random probe)."""
    import onnxruntime as ort
    dims = _graph_input_dims(ctx, result.input.name)
    rng = np.random.default_rng(99)
    x = rng.standard_normal(tuple(3 if d is None else d for d in dims)).astype(np.float32)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(ctx.model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in result.outputs]
    want = dict(zip(names, sess.run(names, {result.input.name: x})))
    got = result.run({result.input.name: x})
    for n in names:
        scale = max(float(np.abs(want[n]).max()), 1e-6)
        if got[n].shape != want[n].shape or \
                float(np.abs(got[n] - want[n]).max()) > 1e-5 * scale:
            raise ctx.err(None, f"the unrolled recurrence was recognised but the converted model "
                                f"does not reproduce output {n!r} of the original graph")


def _same_layer(a: ir.Layer, b: ir.Layer) -> bool:
    import dataclasses
    if type(a) is not type(b):
        return False
    for f in dataclasses.fields(a):
        if f.name in ("name", "y"):
            continue
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
            if not (isinstance(va, np.ndarray) and isinstance(vb, np.ndarray)
                    and va.shape == vb.shape and np.array_equal(va, vb)):
                return False
        elif va != vb:
            return False
    return True


def _dedupe_layers(ctx: _Ctx, start: int, outs: list) -> list:
    """A layer identical to an earlier one (same type, input and parameters) is the earlier
    one: an unrolled graph's T copies of a per-step head fold into one layer."""
    rename: dict[str, str] = {}
    kept = ctx.layers[:start]
    for l in ctx.layers[start:]:
        x = getattr(l, "x", None)
        if x is not None and x in rename:
            import dataclasses
            l = dataclasses.replace(l, x=rename[x])
        twin = next((e for e in kept if _same_layer(e, l)), None) \
            if not isinstance(l, ir.Recurrent) else None
        if twin is not None:
            rename[l.y] = twin.y
        else:
            kept.append(l)
    ctx.layers[:] = kept
    if not rename:
        return outs
    return [replace(v, tensor=rename.get(v.tensor, v.tensor)) if isinstance(v, TRef) else v
            for v in outs]


def _delay_of(layers, tensor: str, seq) -> int:
    d = {seq.name: 0} if seq is not None else {}
    for l in layers:
        ins = l.xs if isinstance(l, ir.FeatureConcat) else (l.x,)
        ds = {d.get(n, 0) for n in ins}
        if len(ds) > 1:
            raise NvmConversionError(f"layer {l.name!r} joins tensors with different Conv "
                                     f"delays {sorted(ds)}")
        d[l.y] = max(ds) + (l.delay if isinstance(l, ir.Conv1d) else 0)
        if isinstance(l, ir.Recurrent) and l.c:
            d[l.c] = max(ds)
    return d.get(tensor, 0)


def _live_nodes(g: onnx.GraphProto, stop: set[str] = frozenset()) -> set[int]:
    """Indices of the nodes the graph outputs depend on (dead nodes are ignored; tensors in
    ``stop`` are already bound, so what computes them is not needed)."""
    prod = {o: k for k, n in enumerate(g.node) for o in n.output if o}
    live: set[int] = set()
    stack = [o.name for o in g.output]
    seen = set()
    while stack:
        t = stack.pop()
        if t in seen or t not in prod or t in stop:
            continue
        seen.add(t)
        k = prod[t]
        if k not in live:
            live.add(k)
            stack.extend(i for i in g.node[k].input if i)
            stack.extend(_outer_names(g.node[k]))
    return live


def _bind_inputs(ctx: _Ctx, g: onnx.GraphProto) -> None:
    """Give each graph input a value: the sequence input gets its axis labels from the recurrent
    node it reaches; sequence_lens/initial states become auxiliary inputs."""
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}

    def add(nodes):
        for n in nodes:
            for i, name in enumerate(n.input):
                consumers.setdefault(name, []).append((n, i))
            for name in _outer_names(n):     # a Loop/Scan/If body reading an outer tensor
                consumers.setdefault(name, []).append((n, -1))
            if n.op_type == "If":            # the branches' nodes, for a foldable If
                for a in n.attribute:
                    if a.type == onnx.AttributeProto.GRAPH:
                        add(a.g.node)
    add(g.node)
    init_names = {i.name for i in g.initializer}
    stops: list[tuple[str, onnx.NodeProto]] = []
    for inp in g.input:
        if inp.name in init_names or inp.name in ctx.fixed:
            continue
        tt = inp.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        kind, node, perm_to_node, changed = _input_role(inp.name, consumers)
        if kind == "stop":
            if tt.elem_type == onnx.TensorProto.FLOAT and len(dims) == 3 and node is not None:
                stops.append((inp.name, node))
            ctx.values[inp.name] = _aux_ref(inp.name, dims)   # a state, lengths, or unknown
            continue
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
            feats = int(w.value.shape[2]) if isinstance(w, Const) and w.value.ndim == 3 \
                and node.op_type in RECURRENT_OPS else None
            if changed:
                feats = dims[axes.index("F")] if len(dims) == 3 else None
                if feats is None:
                    raise NvmConversionError(f"sequence input {inp.name!r} does not declare its "
                                             f"feature size", file=ctx.path)
            elif feats is None:
                raise NvmConversionError(f"dynamic weight: input W of node {node.name!r} "
                                         f"(op {node.op_type}) is not a constant", file=ctx.path)
            if len(dims) == 3 and not changed:
                fdim = dims[axes.index("F")]
                if fdim not in (None, feats):
                    raise NvmConversionError(f"input {inp.name!r} declares {fdim} features; "
                                             f"node {node.name!r} expects {feats}", file=ctx.path)
            ctx.seq_input = ir.SeqInput(inp.name, tuple(axes), feats)
            ctx.values[inp.name] = TRef(inp.name, tuple(axes), tuple(
                feats if a == "F" else None for a in axes))
        else:
            ctx.values[inp.name] = _aux_ref(inp.name, dims)
    if ctx.seq_input is None and stops:
        name, node = stops[0]
        ops = {n.op_type for n in g.node}
        nested = [n for n in g.node if n.op_type == "If" and _subgraph_ops(n) & set(RECURRENT_OPS)]
        if nested and not ops & set(RECURRENT_OPS):
            n = nested[0]
            raise NvmConversionError(
                f"the recurrent layers sit inside the branches of an If (on "
                f"{list(n.input)[0]!r}); nvmstream converts an If only when its condition is a "
                f"constant", file=ctx.path, node=n.name or n.output[0], op=n.op_type)
        if not ops & set(RECURRENT_OPS) and not ops & {"Loop", "Scan"}:
            if _setup_unrolled(ctx, g, name):
                return
            raise NvmConversionError(
                f"no LSTM/GRU/RNN node: the recurrence is unrolled into cell ops ({len(g.node)} "
                f"nodes of {', '.join(sorted(ops))}), which nvmstream does not convert yet; "
                f"input {name!r} first reaches node {node.name!r} ({node.op_type})",
                file=ctx.path)
        what = {"Loop": "a Loop (a recurrence written as a loop body)",
                "Scan": "a Scan (a recurrence written as a scan body)"}.get(
            node.op_type, f"op {node.op_type}")
        raise NvmConversionError(
            f"input {name!r} never reaches an LSTM/GRU/RNN node: its path stops at {what}, "
            f"which nvmstream does not convert", file=ctx.path, node=node.name or node.output[0],
            op=node.op_type)


def _setup_unrolled(ctx: _Ctx, g: onnx.GraphProto, name: str) -> bool:
    """A graph whose exporter unrolled the recurrence over a fixed length: find the cell
    (converters/unrolled.py) and bind its per-step states; False when the input is not a
    [T, B, F] / [B, T, F] sequence with a fixed T and a free batch."""
    from .unrolled import recognise
    dims = _graph_input_dims(ctx, name)
    if len(dims) != 3 or dims[2] is None or [d is None for d in dims[:2]].count(True) != 1:
        return False
    t_ax = 0 if dims[0] is not None else 1
    n_steps, feats = dims[t_ax], dims[2]
    axes = ("T", "B", "F") if t_ax == 0 else ("B", "T", "F")
    ctx.seq_input = ir.SeqInput(name, axes, feats)
    ctx.values[name] = TRef(name, axes, tuple(feats if a == "F" else None for a in axes))
    ctx.unrolled_steps = n_steps
    layer, bind = recognise(ctx, name, t_ax, n_steps, feats)
    ctx.layers.append(layer)
    for tensor, (role, k, nd) in bind.items():
        ctx.values[tensor] = TRef(layer.y if role == "h" else layer.c,
                                  ("B", "F") if nd == 2 else ("1", "B", "F"),
                                  (None, layer.hidden_size) if nd == 2 else
                                  (1, None, layer.hidden_size), step=k)
        ctx.prebound.add(tensor)
    log.warning("%s: the exporter unrolled the recurrence over %d steps; recognised as one %s "
                "layer that runs at any length", ctx.path, n_steps, layer.kind)
    return True


def _subgraph_ops(node: onnx.NodeProto) -> set[str]:
    ops: set[str] = set()
    for a in node.attribute:
        for sg in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
            for n in sg.node:
                ops.add(n.op_type)
                ops |= _subgraph_ops(n)
    return ops


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


def _aux_ref(name: str, dims: tuple) -> TRef:
    """A graph input that is not the sequence: a state ``[S, B, H]`` (S = layers x directions,
    or h and c packed), lengths ``[B]``, or something a handler will reject by name."""
    axes = {3: ("S", "B", "H"), 2: ("B", "H"), 1: ("B",)}.get(len(dims), ("?",) * len(dims))
    return TRef(name, axes, tuple(dims), aux=name)


# ops that keep the positions of a rank-3 tensor's axes (the channel/feature axis may change size)
_AXIS_KEEPING = ("Identity", "Cast", "Dropout", "Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip",
                 "Conv", "Pad", "LayerNormalization", "BatchNormalization", "Add", "Sub", "Mul",
                 "Div", "MatMul")
_FEATURE_CHANGING = ("Conv", "MatMul")


def _input_role(name: str, consumers):
    """Follow ``name`` to a recurrent node's X input through ops that keep axis positions,
    composing Transposes (depth first over every branch). Returns ``(kind, node, perm,
    features_changed)`` with kind ``"X"`` or ``"aux"``, or ``("stop", node_or_None, None,
    False)``: the node where the path ends (what an error names when no input reaches a
    recurrent node; a Loop or Scan is preferred, it is the usual real cause)."""
    stops: list[onnx.NodeProto] = []
    seen: set[str] = set()

    def walk(cur: str, perm: tuple, changed: bool, depth: int):
        if depth > 64 or cur in seen:
            return None
        seen.add(cur)
        cons = consumers.get(cur, [])
        for n, i in cons:
            if n.op_type in RECURRENT_OPS:
                return ("X" if i == 0 else "aux", n, perm, changed)
            if n.op_type == "Loop" and i == -1:   # a Loop body reading steps of this tensor
                return ("X", n, perm, True)
        for n, i in cons:
            if n.op_type == "Transpose":
                p = tuple(_attrs(n).get("perm", (2, 1, 0)))
                if len(p) != 3:
                    stops.append(n)
                    continue
                r = walk(n.output[0], tuple(perm[j] for j in p), changed, depth + 1)
            elif n.op_type in _AXIS_KEEPING and (i == 0 or n.op_type in ("Add", "Mul")):
                r = walk(n.output[0], perm, changed or n.op_type in _FEATURE_CHANGING,
                         depth + 1)
            else:
                stops.append(n)
                continue
            if r is not None:
                return r
        return None

    r = walk(name, (0, 1, 2), False, 0)
    if r is not None:
        return r
    loops = [n for n in stops if n.op_type in ("Loop", "Scan")]
    return ("stop", (loops or stops or [None])[0], None, False)


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
# A dim is an int or a symbol: "B", "T", a product of them ("T*B": the time and batch axes
# merged, in that order) or "T-1" (the last time index). Symbols only ever combine in these ways;
# anything else is an error naming the node.
def _factors(d) -> list[str] | None:
    if isinstance(d, str) and "-" not in d:
        return d.split("*")
    return None


def _dim_op(op: str, x, y):
    """x op y on dims; None when the result has no symbolic form."""
    if isinstance(x, (int, np.integer)) and isinstance(y, (int, np.integer)):
        x, y = int(x), int(y)
        return {"Mul": x * y, "Add": x + y, "Sub": x - y,
                "Div": x // y if y else None}[op]
    if op == "Mul":
        if x == 1:
            return y
        if y == 1:
            return x
        if _factors(x) and _factors(y):
            return "*".join(_factors(x) + _factors(y))
    elif op == "Div":
        if y == 1:
            return x
        fx, fy = _factors(x), _factors(y)
        if fx and fy and len(fx) > len(fy):
            for i in range(len(fx) - len(fy) + 1):
                if fx[i:i + len(fy)] == fy:
                    return "*".join(fx[:i] + fx[i + len(fy):])
    elif op == "Sub":
        if y == 0:
            return x
        if isinstance(x, str) and "-" not in x and isinstance(y, (int, np.integer)) and y > 0:
            return f"{x}-{int(y)}"
    elif op == "Add":
        if y == 0:
            return x
        if x == 0:
            return y
        if isinstance(x, str) and "-" in x and isinstance(y, (int, np.integer)):
            base, k = x.split("-")
            k = int(k) - int(y)
            return base if k == 0 else (f"{base}-{k}" if k > 0 else None)
    return None


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
    if isinstance(idx, Shape) and len(idx.dims) == 1 and isinstance(data, TRef) \
            and data.aux is None:
        # x[:, T-1] with T taken from Shape(x): the last time step
        ax = axis + len(data.axes) if axis < 0 else axis
        if idx.dims[0] == f"{data.axes[ax]}-1" and data.axes[ax] == "T":
            return [_select(ctx, node, data, ax, np.array(-1) if idx.scalar else np.array([-1]))]
        raise ctx.err(node, f"Gather index {idx.dims[0]} on axis {ax} ({data.axes[ax]}) of a "
                            f"run-time tensor is not supported")
    if not isinstance(idx, Const):
        raise ctx.err(node, "Gather indices must be constant")
    shp = _as_shape(ctx, node, data)
    if isinstance(data, Shape):
        ii = idx.value
        picked = tuple(data.dims[int(k)] for k in ii.reshape(-1))
        return [Shape(picked, scalar=ii.ndim == 0)]
    if isinstance(data, TRef) and data.aux is None:
        return [_select(ctx, node, data, axis, idx.value)]
    if isinstance(data, TRef) and axis == 0 and idx.value.size == 1:
        # state[k] of a packed state input (silero's [2, B, H] h and c)
        k = int(idx.value.reshape(-1)[0])
        v = _slice_aux(ctx, node, data, [(0, k, k + 1 if k != -1 else _BIG, 1)])
        if idx.value.ndim == 0:
            v = replace(v, axes=v.axes[1:], sizes=v.sizes[1:])
        return [v]
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
    if isinstance(v, TRef) and v.aux is not None:
        axes = _axes_arg(ctx, node, at, len(v.axes) + 1, 13)
        if axes == [0] and v.axes == ("B", "H"):
            return [replace(v, axes=("S", "B", "H"), sizes=(1,) + tuple(v.sizes))]
        raise ctx.err(node, f"Unsqueeze {axes} of input {v.aux!r} (axes {list(v.axes)})")
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
    if isinstance(v, TRef) and v.aux is not None:
        axes = _axes_arg(ctx, node, at, len(v.axes), 13)
        if axes == [0] and v.axes == ("S", "B", "H") and v.sizes[0] == 1:
            return [replace(v, axes=("B", "H"), sizes=tuple(v.sizes[1:]))]
        raise ctx.err(node, f"Squeeze {axes} of input {v.aux!r} (axes {list(v.axes)})")
    if not isinstance(v, TRef):
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
    """Reshape of a run-time tensor: a layout change on the view, found by matching the target
    dims against the view's atomic axes (B, T, D, H, F; unit axes dropped). A symbolic target
    dim (``B``, ``T``, ``T*B``) takes those axes; an int takes feature axes whose sizes multiply
    to it; ``-1`` takes what is left. Merging batch and time (``Reshape[-1, H]`` before a
    per-step MatMul) gives a merged axis ``B*T``/``T*B`` that a later Reshape splits again. A
    fixed size where the view has the batch or time axis is what the dynamo exporter leaves when
    it freezes an example length; it is read as that axis (with a warning)."""
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
    atoms: list[tuple[str, int | None]] = []
    for a, sz in zip(v.axes, v.sizes):
        if a == "1" or (sz == 1 and a == "D"):
            continue
        atoms.extend((f, None) for f in a.split("*")) if a not in ("D", "H", "F") \
            else atoms.append((a, sz))
    frozen: list[str] = []

    def bad(why: str) -> NvmConversionError:
        return ctx.err(node, f"Reshape to {list(shp.dims)} from axes {list(v.axes)}: {why}")

    def take(d, seq: list) -> tuple[int, tuple[str, int | None] | None]:
        """(atoms consumed, output axis) for target dim d at the start of seq."""
        fs = _factors(d)
        if fs is not None:
            if [a for a, _ in seq[:len(fs)]] != fs:
                raise bad(f"dim {d} does not match the axes in place")
            return len(fs), (d, None)
        if not isinstance(d, (int, np.integer)):
            raise bad(f"dim {d} has no layout meaning")
        d = int(d)
        if d == 1:
            if seq and seq[0][1] == 1:
                return 1, ("1", 1)
            return 0, ("1", 1)
        if seq and seq[0][0] in ("B", "T"):
            frozen.append(f"{seq[0][0]}={d}")
            return 1, (seq[0][0], None)
        n, prod = 0, 1
        while n < len(seq) and seq[n][1] is not None and prod < d:
            prod *= seq[n][1]
            n += 1
        if prod != d or n == 0:
            raise bad(f"dim {d} does not match the feature axes in place")
        return n, ((seq[0][0], d) if n == 1 else ("F", d))

    def walk(dims, seq):
        out, i = [], 0
        for d in dims:
            n, ax = take(d, seq[i:])
            i += n
            out.append(ax)
        return out, i

    if -1 in target:
        k = target.index(-1)
        left, i = walk(target[:k], atoms)
        rrev, j = walk(target[k + 1:][::-1], atoms[i:][::-1])
        mid = atoms[i:len(atoms) - j]
        labels = [a for a, _ in mid]
        if not mid:
            middle = ("1", 1)
        elif len(mid) == 1:
            middle = mid[0]
        elif all(a in ("B", "T") for a in labels):
            middle = ("*".join(labels), None)
        elif all(s is not None for _, s in mid):
            middle = ("F", int(np.prod([s for _, s in mid])))
        else:
            raise bad(f"-1 would merge axes {labels} (time or batch with features)")
        out = left + [middle] + rrev[::-1]
    else:
        out, i = walk(target, atoms)
        if atoms[i:]:
            raise bad(f"axes {[a for a, _ in atoms[i:]]} are dropped")
    if frozen:
        log.warning("%s: node %r (Reshape) fixes %s; the exporter froze an example length - "
                    "treated as a run-time size", ctx.path, node.name or node.output[0],
                    ", ".join(frozen))
    out_ax = [a for a, _ in out]
    out_sz = [sz for _, sz in out]
    flat = [f for a in out_ax if a not in ("D", "H", "F", "1") for f in a.split("*")]
    if v.pick is None and sorted(flat) != ["B", "T"]:
        raise bad("the batch and time axes must stay separate or merged in one axis")
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
    if all(isinstance(v, Zeros) or (isinstance(v, Const) and not np.any(v.value))
           for v in vals):
        # zero states built per direction and concatenated (Keras Bidirectional)
        zs = [v if isinstance(v, Zeros) else Zeros(tuple(v.value.shape)) for v in vals]
        rank = len(zs[0].dims)
        ax = axis + rank if axis < 0 else axis
        if any(len(z.dims) != rank for z in zs) or any(
                z.dims[:ax] + z.dims[ax + 1:] != zs[0].dims[:ax] + zs[0].dims[ax + 1:]
                for z in zs):
            raise ctx.err(node, f"Concat of zeros of shapes {[z.dims for z in zs]}")
        n = 0
        for z in zs:
            if not isinstance(z.dims[ax], int):
                raise ctx.err(node, f"Concat of zeros along a run-time-sized axis {z.dims[ax]}")
            n += z.dims[ax]
        return [Zeros(zs[0].dims[:ax] + (n,) + zs[0].dims[ax + 1:])]
    if all(isinstance(v, TRef) and v.aux is None for v in vals) and vals[0].step is not None:
        # torch.stack of the steps of an unrolled recurrence: Unsqueeze + Concat
        t0 = vals[0]
        rank = len(t0.axes)
        ax = axis + rank if axis < 0 else axis
        if (all(v.tensor == t0.tensor and v.axes == t0.axes for v in vals)
                and [v.step for v in vals] == list(range(ctx.unrolled_steps))
                and t0.axes[ax] == "1"):
            axes = t0.axes[:ax] + ("T",) + t0.axes[ax + 1:]
            sizes = t0.sizes[:ax] + (None,) + t0.sizes[ax + 1:]
            return [TRef(t0.tensor, axes, sizes, t0.pick)]
        raise ctx.err(node, f"Concat of steps {[v.step for v in vals]} of unrolled tensors is "
                            f"not the whole sequence in order")
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


def h_layernorm(ctx: _Ctx, node) -> list[Value]:
    at = _check_attrs(ctx, node, {"axis", "epsilon", "stash_type"})
    x = _seq(ctx, node)
    axis = int(at.get("axis", -1))
    if axis not in (-1, len(x.axes) - 1) or not x.feature_axis_ok():
        raise ctx.err(node, f"unsupported attribute value axis={axis}: LayerNormalization must "
                            f"normalise the feature axis only (axes {list(x.axes)})")
    if int(at.get("stash_type", 1)) != 1:
        raise ctx.err(node, f"unsupported attribute value stash_type={at['stash_type']}")
    if any(o for o in node.output[1:]):
        raise ctx.err(node, "the Mean/InvStdDev outputs are not supported")
    f = x.features
    scale = np.asarray(ctx.const(node, 1, "Scale"), np.float32)
    bias = ctx.const(node, 2, "B")
    if scale.size not in (1, f) or (bias is not None and np.asarray(bias).size not in (1, f)):
        raise ctx.err(node, f"Scale/B do not broadcast over {f} features")
    scale = np.broadcast_to(scale.reshape(-1), (f,)).astype(np.float32)
    if bias is not None:
        bias = np.broadcast_to(np.asarray(bias, np.float32).reshape(-1), (f,)).copy()
    eps = float(at.get("epsilon", 1e-5))
    return _pointwise(ctx, node, lambda n, xi, y: ir.LayerNorm(n, scale, bias, eps, xi, y))


def h_pad(ctx: _Ctx, node) -> list[Value]:
    """Zero padding at the start of the time axis (``F.pad(x, (k-1, 0))`` before a causal
    Conv1d): kept on the view and folded into the Conv that reads it."""
    at = _check_attrs(ctx, node, {"mode", "pads", "value"})
    x = _seq(ctx, node)
    if at.get("mode", "constant") != "constant":
        raise ctx.err(node, f"unsupported attribute value mode={at['mode']!r} on a run-time "
                            f"tensor (only zero padding at the start of time)")
    pads = at["pads"] if ctx.opset < 11 else ctx.const(node, 1, "pads").reshape(-1).tolist()
    value = at.get("value", 0.0) if ctx.opset < 11 else (
        ctx.const(node, 2, "constant_value") if len(node.input) > 2 and node.input[2] else 0.0)
    if len(node.input) > 3 and node.input[3]:
        raise ctx.err(node, "Pad with an axes input is not supported")
    r = len(x.axes)
    begin, end = list(pads[:r]), list(pads[r:])
    if np.any(np.asarray(value) != 0) or any(end) or any(
            b for a, b in zip(x.axes, begin) if a != "T"):
        raise ctx.err(node, f"Pad {pads} (value {np.asarray(value).tolist()}) on axes "
                            f"{list(x.axes)}: only zero padding at the start of the time axis "
                            f"is supported (it is causal)")
    return [replace(x, tpad=x.tpad + int(begin[x.axes.index("T")]))]


def h_conv(ctx: _Ctx, node) -> list[Value]:
    """Conv over the time axis of a [B, C, T] view (a Conv1d front end): causal only (padding
    at the start, none at the end), stride 1, one group."""
    at = _check_attrs(ctx, node, {"auto_pad", "dilations", "group", "kernel_shape", "pads",
                                  "strides"})
    x = _seq(ctx, node)
    if len(x.axes) != 3 or x.axes[0] != "B" or x.axes[2] != "T" or x.axes[1] not in ("F", "H") \
            or x.pick is not None:
        raise ctx.err(node, f"Conv input has axes {list(x.axes)}; supported is a Conv1d over "
                            f"time on [batch, features, time]")
    W = np.asarray(ctx.const(node, 1, "W (the kernel)"), np.float32)
    if W.ndim != 3 or W.shape[1] != x.features:
        raise ctx.err(node, f"kernel {W.shape} does not act on {x.features} channels")
    if at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ctx.err(node, f"unsupported attribute value auto_pad={at['auto_pad']}")
    if int(at.get("group", 1)) != 1:
        raise ctx.err(node, f"unsupported attribute value group={at['group']}")
    if list(at.get("strides", [1])) != [1]:
        raise ctx.err(node, f"unsupported attribute value strides={at['strides']}: a strided "
                            f"Conv over time changes the frame rate")
    pads = list(at.get("pads", [0, 0]))
    pads[0] += x.tpad                     # a Pad node before the Conv
    if pads[1] != 0:
        raise ctx.err(node, f"unsupported attribute value pads={pads}: padding at the end of "
                            f"the time axis makes the Conv non-causal")
    dil = int(list(at.get("dilations", [1]))[0])
    if pads[0] > (W.shape[2] - 1) * dil:
        raise ctx.err(node, f"unsupported attribute value pads={pads}: more padding than the "
                            f"kernel's reach")
    b = ctx.const(node, 2, "B (the bias)")
    out = ctx.fresh(node.output[0])
    ctx.layers.append(ir.Conv1d(node.name or out, W, None if b is None else
                                np.asarray(b, np.float32).reshape(-1), dil, int(pads[0]),
                                x.tensor, out))
    return [TRef(out, ("B", "F", "T"), (None, int(W.shape[0]), None))]


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
    return TRef(tensor, axes, sizes, x.pick, step=x.step)


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
        if isinstance(v, Zeros):
            # onnxruntime checks the shape of every initial state, zeros included
            want = (nd, "B", hsz) if layout == 0 else ("B", nd, hsz)
            ok = len(v.dims) == 3 and all(w == "B" or not isinstance(d, int) or d == w
                                          for d, w in zip(v.dims, want))
            if not ok:
                raise ctx.err(node, f"{role} (zeros) has shape {tuple(v.dims)} but the node "
                                    f"needs {want} (directions, batch, hidden_size={hsz}); "
                                    f"onnxruntime rejects this model too")
            inits.append(None)
        elif v is None:
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
            if v.axes != ("S", "B", "H"):
                raise ctx.err(node, f"{role} comes from input {v.aux!r} with axes "
                                    f"{list(v.axes)}; expected [directions, batch, hidden]")
            n_rows = v.sizes[0]
            if (n_rows is not None and n_rows != nd) or v.sizes[2] not in (None, hsz):
                raise ctx.err(node, f"{role} from input {v.aux!r} has shape "
                                    f"{tuple('batch' if s is None else s for s in v.sizes)} but "
                                    f"the node needs ({nd}, batch, {hsz}); onnxruntime rejects "
                                    f"this model too")
            full = _graph_input_dims(ctx, v.aux)
            if v.rows is not None and full[0] is not None and v.rows[1] > full[0]:
                raise ctx.err(node, f"{role} reads rows {v.rows} of input {v.aux!r} "
                                    f"({full[0]} rows)")
            ctx.aux_inputs.append(ir.AuxInput(v.aux, role, name, (
                full[0] if full[0] is not None else nd, "B", hsz)))
            rows = v.rows if v.rows is not None and v.rows != (0, full[0]) else None
            inits.append(ir.StateInit(input=v.aux, rows=rows))
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
    """(axis, start, end, step) per sliced axis; starts/ends may be symbolic (built from
    Shape: ``T``, ``T-1``)."""
    if ctx.opset < 10:
        starts, ends = at["starts"], at["ends"]
        axes = at.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        def dims(i, what):
            s = _as_shape(ctx, node, ctx.get(node, i))
            if s is None:
                raise ctx.err(node, f"Slice {what} must be constant or built from Shape")
            return list(s.dims)
        starts, ends = dims(1, "starts"), dims(2, "ends")
        a = ctx.const(node, 3, "axes")
        axes = list(range(len(starts))) if a is None else [int(v) for v in a.reshape(-1)]
        st = ctx.const(node, 4, "steps")
        steps = [1] * len(starts) if st is None else [int(v) for v in st.reshape(-1)]
    axes = [a + rank if a < 0 else a for a in axes]
    return list(zip(axes, starts, ends, steps))


def _to_end(end, label) -> bool:
    """An end bound that means "to the end of the axis": the axis symbol or INT32/INT64 max."""
    return end == label or (isinstance(end, int) and end >= 2 ** 31 - 1)


def _is_full(start, end, step, label=None) -> bool:
    return step == 1 and start == 0 and _to_end(end, label)


def _is_last(start, end, step, label) -> bool:
    """Slice [T-1:T] (or [-1:]) on the time axis: the last step, axis kept."""
    return step == 1 and start in (-1, f"{label}-1") and _to_end(end, label)


def h_slice(ctx: _Ctx, node) -> list[Value]:
    at = _check_attrs(ctx, node, {"starts", "ends", "axes"})
    v = ctx.get(node, 0)
    if isinstance(v, Shape):
        (ax, st, en, sp), = _slice_args(ctx, node, at, 1)
        if not all(isinstance(x, int) for x in (st, en, sp)):
            raise ctx.err(node, "Slice of a shape vector with symbolic bounds")
        return [Shape(tuple(v.dims[slice(st, min(en, _BIG), sp)]))]
    if isinstance(v, Zeros):
        dims = list(v.dims)
        for ax, st, en, sp in _slice_args(ctx, node, at, len(dims)):
            d = dims[ax]
            if isinstance(d, int) and all(isinstance(x, int) for x in (st, en, sp)):
                dims[ax] = len(range(d)[slice(st, min(en, _BIG), sp)])
            elif not _is_full(st, en, sp, d):
                raise ctx.err(node, f"Slice of a run-time-sized axis ({d}) of zeros")
        return [Zeros(tuple(dims))]
    if isinstance(v, TRef) and v.aux is not None:
        return [_slice_aux(ctx, node, v, _slice_args(ctx, node, at, len(v.axes)))]
    if not isinstance(v, TRef):
        raise ctx.err(node, "Slice of an unsupported value")
    t = v
    for ax, st, en, sp in _slice_args(ctx, node, at, len(t.axes)):
        label, size = t.axes[ax], t.sizes[ax]
        if size is not None and sp == 1 and st in (0, -size) and isinstance(en, int) and en >= size:
            continue  # whole axis
        if size is None and _is_full(st, en, sp, label):
            continue
        if label == "T" and _is_last(st, en, sp, label):
            t = _select(ctx, node, t, ax, np.array([-1]))
            continue
        if label == "D" and sp == 1 and isinstance(st, int) and isinstance(en, int):
            k = st + size if st < 0 else st
            e = min(en + size if en < 0 else en, size)
            if e - k == 1:
                t = _select(ctx, node, t, ax, np.array([k]))
                continue
        if label in ("F", "H") and sp == 1 and isinstance(st, int) and isinstance(en, int):
            k = st + size if st < 0 else st
            e = min(en + size if en < 0 else en, size)
            if 0 <= k < e and (label == "F" or "D" not in t.axes):
                out = ctx.fresh(t.tensor + ":slice")
                ctx.layers.append(ir.FeatureSlice(node.name or out, k, e, t.tensor, out))
                sizes = list(t.sizes)
                sizes[ax] = e - k
                axes = tuple("F" if a == "H" else a for a in t.axes)
                t = TRef(out, axes, tuple(sizes), t.pick)
                continue
        raise ctx.err(node, f"Slice [{st}:{en}:{sp}] on axis {ax} ({label}) of a run-time tensor "
                            f"is not supported")
    return [t]


def _slice_aux(ctx: _Ctx, node, v: TRef, args) -> TRef:
    """Slice of a state input along its first axis (layers or packed h/c), e.g. the dynamo
    exporter's ``Slice(h0, [l], [l+1])`` per layer or ``state[0:1]``."""
    rows = v.rows or (0, v.sizes[0] if v.sizes and v.sizes[0] is not None else None)
    for ax, st, en, sp in args:
        size = v.sizes[ax] if ax < len(v.sizes) else None
        if ax != 0 or v.axes[:1] != ("S",):
            if _is_full(st, en, sp, v.axes[ax] if ax < len(v.axes) else None) or (
                    size is not None and st == 0 and isinstance(en, int) and en >= size):
                continue
            raise ctx.err(node, f"Slice of input {v.aux!r} on axis {ax}: only the first (layer/"
                                f"state) axis of a state input can be sliced")
        n = rows[1] - rows[0] if rows[1] is not None else None
        if sp != 1 or not isinstance(st, int) or not isinstance(en, int) or n is None:
            raise ctx.err(node, f"Slice [{st}:{en}:{sp}] of input {v.aux!r} needs constant "
                                f"bounds and a declared size of its first axis")
        k = st + n if st < 0 else st
        e = min(en + n if en < 0 else en, n)
        if not 0 <= k < e:
            raise ctx.err(node, f"Slice [{st}:{en}] of input {v.aux!r} is empty")
        rows = (rows[0] + k, rows[0] + e)
        v = replace(v, rows=rows, sizes=(e - k,) + tuple(v.sizes[1:]))
    return v


def h_arith(op: str) -> Callable:
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
            r = _dim_op(op, x, y)
            if r is None:
                raise ctx.err(node, f"{op} of dims {x} and {y} has no symbolic form")
            out.append(r)
        return [Shape(tuple(out), scalar=sa.scalar and sb.scalar)]
    return handler


def h_reduce_prod(ctx: _Ctx, node) -> list[Value]:
    """ReduceProd of a shape vector (Keras's Tensordot: the merged batch*time size)."""
    at = _check_attrs(ctx, node, {"keepdims", "axes", "noop_with_empty_axes"})
    v = _as_shape(ctx, node, ctx.get(node, 0))
    if v is None or len(node.input) > 1 and node.input[1] and \
            ctx.const(node, 1, "axes").reshape(-1).tolist() not in ([0], [-1]):
        raise ctx.err(node, "ReduceProd is supported only on a shape vector")
    r = 1
    for d in v.dims:
        r = _dim_op("Mul", r, d)
        if r is None:
            raise ctx.err(node, f"ReduceProd of dims {list(v.dims)} has no symbolic form")
    return [Shape((r,), scalar=not at.get("keepdims", 1))]


def h_compare(op: str) -> Callable:
    """Less/Greater on shape values: ``0 < T`` is true (a sequence has at least one step)."""
    def handler(ctx: _Ctx, node) -> list[Value]:
        _check_attrs(ctx, node, set())
        def dims(v):
            if isinstance(v, Const) and v.value.size == 1 and v.value.dtype.kind in "fiu":
                return Shape((int(v.value.reshape(-1)[0]) if float(v.value.reshape(-1)[0])
                              .is_integer() else float(v.value.reshape(-1)[0]),),
                             scalar=v.value.ndim == 0)
            return _as_shape(ctx, node, v)
        a, b = dims(ctx.get(node, 0)), dims(ctx.get(node, 1))
        if a is None or b is None or len(a.dims) != 1 or len(b.dims) != 1:
            raise ctx.err(node, f"{op} is supported only on scalar shape values")
        x, y = a.dims[0], b.dims[0]
        if op in ("Greater", "GreaterOrEqual"):
            x, y = y, x                  # y > x  <=>  x < y
        strict = op in ("Less", "Greater")
        if isinstance(x, (int, float)) and _factors(y) and (x < 1 if strict else x <= 1):
            return [Const(np.array(True) if a.scalar and b.scalar else np.array([True]))]
        raise ctx.err(node, f"{op}({a.dims[0]}, {b.dims[0]}) is not known at conversion time")
    return handler


def h_if(ctx: _Ctx, node) -> list[Value]:
    """If on a condition known at conversion (a constant, a fixed input, a static dim): the
    branch taken is converted in place; a run-time condition is an error."""
    _check_attrs(ctx, node, {"then_branch", "else_branch"})
    c = ctx.get(node, 0)
    if isinstance(c, Const) and c.value.size == 1:
        cond = bool(c.value.reshape(-1)[0])
    elif isinstance(c, Shape) and len(c.dims) == 1 and isinstance(c.dims[0], int):
        cond = bool(c.dims[0])
    else:
        raise ctx.err(node, "If on a condition that is only known at run time (give the input "
                            "it depends on a fixed value at conversion, e.g. a sample rate)")
    branch = next(a.g for a in node.attribute
                  if a.name == ("then_branch" if cond else "else_branch"))
    for init in branch.initializer:
        ctx.values[init.name] = Const(numpy_helper.to_array(init))
    _run_nodes(ctx, list(branch.node))
    outs = []
    for o in branch.output:
        if o.name not in ctx.values:
            raise ctx.err(node, f"branch output {o.name!r} is not computed")
        outs.append(ctx.values[o.name])
    return outs


def h_equal(ctx: _Ctx, node) -> list[Value]:
    """Equal on shape values with known ints (e.g. a static dim compared with 1)."""
    _check_attrs(ctx, node, set())
    va, vb = ctx.get(node, 0), ctx.get(node, 1)
    a, b = _as_shape(ctx, node, va), _as_shape(ctx, node, vb)
    if a is None or b is None or len(a.dims) != len(b.dims) or not all(
            isinstance(d, int) for d in a.dims + b.dims):
        if any(isinstance(v, TRef) and v.aux is None for v in (va, vb)):
            raise ctx.err(node, "a mask computed from the sequence (Keras Masking compares "
                                "every frame with the mask value): masked recurrences are not "
                                "supported; export the model without the Masking layer")
        aux = [v.aux for v in (va, vb) if isinstance(v, TRef) and v.aux]
        hint = (f"; input {aux[0]!r} is known only at run time: give it a fixed value at "
                f"conversion (constants={{{aux[0]!r}: ...}})") if aux else ""
        raise ctx.err(node, "Equal is supported only on values known at conversion" + hint)
    r = np.array([x == y for x, y in zip(a.dims, b.dims)])
    return [Const(r.reshape(()) if a.scalar and b.scalar else r)]


def h_loop(ctx: _Ctx, node) -> list[Value]:
    """A Loop over the time axis whose body is an LSTM/GRU/RNN cell (see converters/loops.py)."""
    from .loops import recognise_loop
    _check_attrs(ctx, node, {"body"})
    m = _as_shape(ctx, node, ctx.get(node, 0)) if node.input[0] else Shape(("T",))
    if m is None or len(m.dims) != 1 or m.dims[0] != "T":
        raise ctx.err(node, f"Loop trip count is {None if m is None else m.dims}, not the "
                            f"sequence length T: not a recurrence over time")
    body = next(a.g for a in node.attribute if a.name == "body")
    state_slots, const_slots, sym_slots = [], {}, {}
    hidden = None
    for k, name in enumerate(node.input[2:]):
        v = ctx.get(node, 2 + k)
        et = body.input[2 + k].type.tensor_type.elem_type
        if isinstance(v, Zeros) and len(v.dims) == 2 and v.dims[0] == "B" \
                and isinstance(v.dims[1], int):
            if hidden not in (None, v.dims[1]):
                raise ctx.err(node, "Loop carries states of different sizes")
            hidden = v.dims[1]
            state_slots.append(k)
        elif isinstance(v, Const):
            const_slots[k] = v.value
        elif isinstance(v, Shape) and v.dims == ("T",):
            sym_slots[k] = et or onnx.TensorProto.INT64
        else:
            raise ctx.err(node, f"Loop-carried value {name!r} is neither a zero state [B, H], "
                                f"a constant nor the length T")
    if hidden is None:
        raise ctx.err(node, "Loop carries no zero state [batch, hidden]: not a recurrence")
    x_ref, x_name, outer_consts, outer_syms = None, None, {}, {}
    for name in sorted(_outer_names(node)):
        v = ctx.values.get(name)
        if isinstance(v, TRef) and v.aux is None:
            if x_ref is not None:
                raise ctx.err(node, "Loop body reads two run-time tensors")
            if v.axes != ("T", "B", "F") or v.pick is not None:
                raise ctx.err(node, f"Loop body reads {name!r} with axes {list(v.axes)}; a "
                                    f"recurrence reads a time-major [T, B, F] sequence")
            x_ref, x_name = v, name
        elif isinstance(v, Const):
            outer_consts[name] = v.value
        elif isinstance(v, Shape) and v.dims == ("T",):
            prod = ctx.producers.get(name)
            to = next((a.i for a in prod.attribute if a.name == "to"), None) \
                if prod is not None and prod.op_type == "Cast" else None
            outer_syms[name] = to or onnx.TensorProto.INT64
        elif v is None:
            raise ctx.err(node, f"Loop body reads {name!r}, which no earlier node produces")
        else:
            raise ctx.err(node, f"Loop body reads {name!r} ({type(v).__name__}), which is not "
                                f"supported")
    if x_ref is None:
        raise ctx.err(node, "Loop body reads no run-time sequence")
    layer, mapping = recognise_loop(ctx, node, x_ref, x_name, state_slots, const_slots,
                                    outer_consts, hidden, x_ref.features, sym_slots, outer_syms)
    ctx.layers.append(layer)
    outs: list[Value] = []
    for k, role in enumerate(mapping):
        if role == "Y":
            outs.append(TRef(layer.y, ("T", "B", "F"), (None, None, hidden)))
        elif role == "Yc":
            outs.append(TRef(layer.c, ("T", "B", "F"), (None, None, hidden)))
        elif role in ("hT", "cT"):
            outs.append(TRef(layer.y if role == "hT" else layer.c, ("B", "F"), (None, hidden),
                             ("end",)))
        else:
            outs.append(Opaque(f"output {k} of Loop {node.name!r} is not a recurrent state or "
                               f"the hidden sequence"))
    return outs


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
    "LayerNormalization": h_layernorm,
    "ReduceProd": h_reduce_prod,
    "Less": h_compare("Less"),
    "Greater": h_compare("Greater"),
    "Loop": h_loop,
    "Conv": h_conv,
    "If": h_if,
    "Pad": h_pad,
    "Equal": h_equal,
}


def load_ir(path: str | os.PathLike, constants: Mapping[str, Any] | None = None) -> ir.Model:
    """Load an ONNX file and convert it to the IR (errors name the file, node, op and why).
    ``constants`` fixes graph inputs at conversion (see :func:`to_ir`)."""
    path = os.fspath(path)
    model = load_model(path)
    try:
        return to_ir(model, path, constants)
    except NvmConversionError as e:
        raise e.with_file(path) from None
