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

This module loads and checks the file, binds the graph inputs, walks the nodes and assembles
the IR; the handlers live by concern: converters/shape_ops.py (shape plumbing and layout),
converters/layer_ops.py (activations, normalisation, Pad, Conv, Dense), converters/
recurrent_ops.py (LSTM/GRU/RNN nodes and Loops), on the values of converters/values.py.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any, Callable, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from . import ir, mask_ops
from .errors import NvmConversionError
from .layer_ops import (_fuse_bias, h_act, h_conv, h_gemm, h_layernorm, h_matmul, h_pad, h_pow,
                        h_reduce_mean, h_softmax, h_sqrt)
from .recurrent_ops import (h_loop, h_recurrent)
from .shape_ops import (h_arith, h_cast, h_compare, h_concat, h_constant_of_shape, h_dropout,
                        h_equal, h_expand, h_gather, h_identity, h_if, h_reduce_prod,
                        h_reshape_any, h_shape, h_size, h_slice, h_squeeze, h_transpose, h_unsqueeze)
from .values import (MIN_OPSET, MAX_OPSET, MAX_IR_VERSION, RECURRENT_OPS, Const, Shape, TRef, Value,
                     _Ctx, _attrs, _outer_names, _graph_input_dims)

log = logging.getLogger(__name__)


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
          constants: Mapping[str, Any] | None = None,
          frame_size: int | None = None) -> ir.Model:
    """Convert a checked ONNX ``ModelProto`` into the IR.

    ``constants`` fixes graph inputs at conversion (e.g. ``{"sr": 16000}``, a sample rate):
    they become constants, so an ``If`` on them folds to the branch taken.
    ``frame_size`` fixes the length of a frame model's input ``[B, samples]`` (one call, one
    recurrent step: silero-vad's 512-sample chunk plus its 64 samples of context is 576) when
    the model leaves it symbolic."""
    ctx = _Ctx(model, path)
    if frame_size is not None:
        if int(frame_size) < 1:
            raise ctx.err(None, f"frame size {frame_size} must be a positive number of values")
        ctx.frame_size = int(frame_size)
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
    _bind_shape_only(ctx, g)
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
        delay, stride = _delay_of(ctx.layers, v.tensor, ctx.seq_input)
        outputs.append(ir.Output(o.name, v.tensor, v.axes, v.sizes, v.pick, v.features,
                                 delay=delay, stride=stride))
    if ctx.seq_input is None:
        raise ctx.err(None, "no sequence input feeds a recurrent layer")
    if ctx.frame_size is not None and not ctx.seq_input.frame:
        raise ctx.err(None, f"frame size {ctx.frame_size} given, but input "
                            f"{ctx.seq_input.name!r} is a sequence, not a frame [batch, samples] "
                            f"per call")
    if not any(isinstance(l, ir.Recurrent) for l in ctx.layers):
        raise ctx.err(None, "model has no LSTM/GRU/RNN layer")
    lens_sources = {(l.sequence_lens, None if l.sequence_lens_value is None
                     else tuple(l.sequence_lens_value.tolist()))
                    for l in ctx.layers if isinstance(l, ir.Recurrent)
                    and (l.sequence_lens or l.sequence_lens_value is not None)}
    if len(lens_sources) > 1:
        raise ctx.err(None, "recurrent layers take different sequence_lens; not supported")
    layers = _fuse_bias(ctx.layers)
    # a Keras mask no recurrent layer reads (x * mask with mask value 0 is x itself) is dropped
    masks = {l.mask for l in layers if isinstance(l, ir.Recurrent) and l.mask}
    layers = [l for l in layers if not (isinstance(l, ir.StepMask) and l.y not in masks)]
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


def _delay_of(layers, tensor: str, seq) -> tuple[int, int]:
    """(delay, stride) of ``tensor`` (ir.frame_rates); a layer joining tensors whose defined
    steps differ is an error."""
    if seq is None:
        return 0, 1
    d, s = ir.frame_rates(layers, seq.name)
    for l in layers:
        ins = l.xs if isinstance(l, (ir.FeatureConcat, ir.Binary)) else (l.x,)
        rates = {(d.get(n, 0), s.get(n, 1)) for n in ins}
        if len(rates) > 1:
            raise NvmConversionError(f"layer {l.name!r} joins tensors with different Conv "
                                     f"delays/strides {sorted(rates)}")
    return d.get(tensor, 0), s.get(tensor, 1)


def _bind_shape_only(ctx: _Ctx, g: onnx.GraphProto) -> None:
    """``Shape(t)`` of a tensor that nothing but Shape nodes reads (Keras 3's masked LSTM
    computes one cell step outside its Loop only to shape the Loop's zero output): ``t`` is
    never converted; its shape is measured by running the model in onnxruntime at two batch
    sizes and lengths (a dim that follows the batch is ``B``, the length ``T``, else its size).
    ONNX shape inference is not enough: it loses the batch dim through Expand."""
    if ctx.seq_input is None or ctx.seq_input.frame:
        return
    readers: dict[str, list[str]] = {o.name: ["<output>"] for o in g.output}
    for n in g.node:
        for name in list(n.input) + sorted(_outer_names(n)):
            if name:
                readers.setdefault(name, []).append(n.op_type)
    bound = {i.name for i in g.input} | {i.name for i in g.initializer}
    todo = [n for n in g.node if n.op_type == "Shape" and not n.attribute
            and n.input[0] not in bound and set(readers.get(n.input[0], [])) == {"Shape"}]
    if not todo:
        return
    import onnxruntime as ort
    m = onnx.ModelProto()
    m.CopyFrom(ctx.model)
    del m.graph.value_info[:]
    del m.graph.output[:]
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n.input[0]) for n in todo)
    shapes = []
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 4     # a failed probe is expected (a Conv longer than T = 3):
        sess = ort.InferenceSession(m.SerializeToString(), so,    # logged at debug below,
                                    providers=["CPUExecutionProvider"])   # not by onnxruntime
        for b, t in ((2, 3), (3, 5)):
            size = {"B": b, "T": t, "F": ctx.seq_input.features}
            x = np.zeros([size[a] for a in ctx.seq_input.axes], np.float32)
            x[...] = 0.5
            shapes.append([np.shape(o) for o in sess.run(None, {ctx.seq_input.name: x})])
    except Exception as e:        # noqa: BLE001 - a shortcut only: the walk reports errors
        log.debug("%s: shape-only tensors not measured (%s)", ctx.path, e)
        return
    for k, n in enumerate(todo):
        (s1, s2) = shapes[0][k], shapes[1][k]
        if len(s1) != len(s2):
            continue
        dims = []
        for d1, d2 in zip(s1, s2):
            dims.append(d1 if d1 == d2 else "B" if (d1, d2) == (2, 3) else
                        "T" if (d1, d2) == (3, 5) else None)
        if None not in dims:
            ctx.values[n.output[0]] = Shape(tuple(dims))
            ctx.prebound.add(n.output[0])


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
    frames: list[tuple[str, tuple]] = []
    for inp in g.input:
        if inp.name in init_names or inp.name in ctx.fixed:
            continue
        tt = inp.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        kind, node, perm_to_node, changed = _input_role(inp.name, consumers)
        if kind == "stop" and _is_frame_input(ctx, g, tt, dims):
            frames.append((inp.name, dims))  # bound below if no input is a sequence
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
    if ctx.seq_input is None and frames:
        if len(frames) > 1:
            raise NvmConversionError(f"inputs {[n for n, _ in frames]} could each be a frame "
                                     f"[batch, samples]; only one frame input is supported",
                                     file=ctx.path)
        _bind_frame_input(ctx, *frames[0])
        return
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


def _is_frame_input(ctx: _Ctx, g: onnx.GraphProto, tt, dims: tuple) -> bool:
    """A float ``[B, samples]`` input of a graph with a recurrent node (possibly inside If
    branches) and no other sequence input: a frame model's input, one call per step."""
    if tt.elem_type != onnx.TensorProto.FLOAT or len(dims) != 2 or dims[0] is not None:
        return False
    ops = {n.op_type for n in g.node}
    for n in g.node:
        ops |= _subgraph_ops(n)
    return bool(ops & set(RECURRENT_OPS))


def _bind_frame_input(ctx: _Ctx, name: str, dims: tuple) -> None:
    n = dims[1]
    if ctx.frame_size is not None and n is not None and n != ctx.frame_size:
        raise NvmConversionError(f"input {name!r} declares {n} values per frame; frame size "
                                 f"{ctx.frame_size} was given", file=ctx.path)
    n = n if n is not None else ctx.frame_size
    if n is None:
        raise NvmConversionError(f"input {name!r} is a frame [batch, samples] of symbolic "
                                 f"length: give its length at conversion (frame_size=, "
                                 f"`nvmstream convert --frame-size N`)", file=ctx.path)
    ctx.seq_input = ir.SeqInput(name, ("B", "T", "F"), n, frame=True)
    ctx.values[name] = TRef(name, ("B", "F"), (None, n))


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


def _aux_ref(name: str, dims: tuple) -> TRef:
    """A graph input that is not the sequence: a state ``[S, B, H]`` (S = layers x directions,
    or h and c packed), lengths ``[B]``, or something a handler will reject by name."""
    axes = {3: ("S", "B", "H"), 2: ("B", "H"), 1: ("B",)}.get(len(dims), ("?",) * len(dims))
    return TRef(name, axes, tuple(dims), aux=name)


# ops that keep the positions of a rank-3 tensor's axes (the channel/feature axis may change size)
_AXIS_KEEPING = ("Identity", "Cast", "Dropout", "Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip",
                 "Conv", "Pad", "LayerNormalization", "BatchNormalization", "Add", "Sub", "Mul",
                 "Div", "MatMul", "Pow", "Sqrt", "Slice")
_FEATURE_CHANGING = ("Conv", "MatMul", "Pad", "Slice")


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
            elif n.op_type in _AXIS_KEEPING and (i == 0 or n.op_type in ("Add", "Mul", "Sub")):
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
    "Pow": h_pow,
    "Sqrt": h_sqrt,
    "ReduceMean": h_reduce_mean,
    "Equal": h_equal,
    "Not": mask_ops.h_not,
    "ReduceSum": mask_ops.h_reduce_sum,
    "Size": h_size,
}


def load_ir(path: str | os.PathLike, constants: Mapping[str, Any] | None = None,
            frame_size: int | None = None) -> ir.Model:
    """Load an ONNX file and convert it to the IR (errors name the file, node, op and why).
    ``constants`` fixes graph inputs and ``frame_size`` a frame model's input length at
    conversion (see :func:`to_ir`)."""
    path = os.fspath(path)
    model = load_model(path)
    try:
        return to_ir(model, path, constants, frame_size)
    except NvmConversionError as e:
        raise e.with_file(path) from None
