"""ONNX -> IR handlers for recurrences: LSTM/GRU/RNN nodes and Loop bodies (the latter
recognised by converters/loops.py; see converters/onnx_import.py)."""

from __future__ import annotations

from dataclasses import replace

import logging

import numpy as np
import onnx

from . import ir
from .conventions import GATES, parse_activations
from .layer_ops import _seq
from .shape_ops import _as_shape
from .values import (Const, MaskRef, Shape, Zeros, TRef, Opaque, Value, _Ctx, _check_attrs, _outer_names,
                     _graph_input_dims)

log = logging.getLogger(__name__)


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
    if ctx.seq_input is not None and ctx.seq_input.frame and len(x.axes) == 3 and \
            x.axes[layout] == "1" and x.axes[1 - layout] == "B":
        # a frame model: the node's one-step time axis is the call (the IR's time axis)
        x = replace(x, axes=want + x.axes[2:], sizes=(None, None) + x.sizes[2:])
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
    if ctx.seq_input is not None and ctx.seq_input.frame:
        if direction != "forward":
            raise ctx.err(node, f"direction={direction!r} in a frame model: each call is one "
                                f"step, so only a forward recurrence can carry on")
        final_pick = None          # one step per call: the final state is that step's state
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
    mask, mask_name = None, None
    for name in sorted(_outer_names(node)):
        v = ctx.values.get(name)
        if isinstance(v, MaskRef):
            if mask is not None or not v.keep or v.flt or v.fill is not None:
                raise ctx.err(node, f"Loop body reads the Keras mask {name!r} in an "
                                    f"unsupported form")
            if v.axes != ("T", "B", "1"):
                raise ctx.err(node, f"Loop body reads the mask {name!r} with axes "
                                    f"{list(v.axes)}; a masked recurrence reads [T, B, 1]")
            mask, mask_name = v, name
        elif isinstance(v, TRef) and v.aux is None:
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
    if mask is not None and mask.x.tensor != x_ref.tensor:
        raise ctx.err(node, f"Loop body reads a mask computed from another tensor than its "
                            f"sequence {x_name!r}")
    layer, mapping = recognise_loop(ctx, node, x_ref, x_name, state_slots, const_slots,
                                    outer_consts, hidden, x_ref.features, sym_slots, outer_syms,
                                    (mask_name, mask.tensor) if mask is not None else None)
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
