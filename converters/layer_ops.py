"""ONNX -> IR handlers for the layers around the recurrences: activations, Softmax,
LayerNormalization, Pad, Conv (Conv1d over time), MatMul/Gemm/Add (Dense) and bias fusion
(see converters/onnx_import.py)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable

import numpy as np

from . import ir
from .values import (Const, TRef, Value, _Ctx, _check_attrs)

log = logging.getLogger(__name__)


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
    Conv1d): kept on the view and folded into the Conv that reads it. Padding of the feature
    axis only (modes constant, reflect, edge): an ``ir.FeaturePad`` (digital periphery)."""
    at = _check_attrs(ctx, node, {"mode", "pads", "value"})
    x = _seq(ctx, node)
    mode = at.get("mode", "constant")
    pads = at["pads"] if ctx.opset < 11 else ctx.const(node, 1, "pads").reshape(-1).tolist()
    value = at.get("value", 0.0) if ctx.opset < 11 else (
        ctx.const(node, 2, "constant_value") if len(node.input) > 2 and node.input[2] else 0.0)
    if len(node.input) > 3 and node.input[3]:
        raise ctx.err(node, "Pad with an axes input is not supported")
    r = len(x.axes)
    begin, end = [int(v) for v in pads[:r]], [int(v) for v in pads[r:]]
    last = r - 1
    if x.feature_axis_ok() and (begin[last] or end[last]) and not any(
            begin[:last] + end[:last]):
        if mode not in ir.PAD_MODES:
            raise ctx.err(node, f"unsupported attribute value mode={mode!r} (supported: "
                                f"{', '.join(ir.PAD_MODES)})")
        n = x.features
        if min(begin[last], end[last]) < 0:
            raise ctx.err(node, f"Pad {pads}: negative padding (cropping) is not supported")
        if mode == "reflect" and max(begin[last], end[last]) >= n:
            raise ctx.err(node, f"Pad {pads}: reflect padding wider than the {n} features - 1")
        out = ctx.fresh(node.output[0])
        ctx.layers.append(ir.FeaturePad(node.name or out, mode, begin[last], end[last],
                                        float(np.asarray(value).reshape(-1)[0]) if np.size(value)
                                        else 0.0, x.tensor, out))
        return [_with_features(x, out, n + begin[last] + end[last])]
    if mode != "constant":
        raise ctx.err(node, f"unsupported attribute value mode={mode!r} on the time axis "
                            f"(only zero padding at the start of time; {mode} padding of the "
                            f"feature axis alone is supported)")
    if np.any(np.asarray(value) != 0) or any(end) or any(
            b for a, b in zip(x.axes, begin) if a != "T"):
        raise ctx.err(node, f"Pad {pads} (value {np.asarray(value).tolist()}) on axes "
                            f"{list(x.axes)}: only zero padding at the start of the time axis "
                            f"or padding of the feature axis alone is supported")
    return [replace(x, tpad=x.tpad + int(begin[x.axes.index("T")]))]


def h_binary(ctx: _Ctx, node, op: str) -> list[Value]:
    """Add/Sub/Mul of two run-time tensors with the same view (digital periphery)."""
    _check_attrs(ctx, node, set())
    a, b = ctx.get(node, 0), ctx.get(node, 1)
    for v in (a, b):
        if isinstance(v, TRef) and v.aux is not None:
            raise ctx.err(node, f"{node.op_type} reads model input {v.aux!r} as a value; only "
                                f"sequences, states and lengths can be run-time inputs: fix it at "
                                f"conversion with --constant {v.aux}=VALUE")
    if not all(isinstance(v, TRef) and v.pick is None for v in (a, b)):
        raise ctx.err(node, f"{node.op_type} supports two run-time tensors, or (Add) a run-time "
                            f"tensor plus a constant bias")
    if (a.axes, a.sizes, a.tpad) != (b.axes, b.sizes, b.tpad):   # elementwise: any layout
        raise ctx.err(node, f"{node.op_type} of tensors with views {list(a.axes)} {a.sizes} and "
                            f"{list(b.axes)} {b.sizes}: only equal views (no broadcasting)")
    out = ctx.fresh(node.output[0])
    ctx.layers.append(ir.Binary(node.name or out, op, (a.tensor, b.tensor), out))
    return [replace(a, tensor=out)]


def h_sqrt(ctx: _Ctx, node) -> list[Value]:
    _check_attrs(ctx, node, set())
    return _pointwise(ctx, node, lambda n, x, y: ir.Unary(n, "sqrt", 0.5, x, y))


def h_pow(ctx: _Ctx, node) -> list[Value]:
    _check_attrs(ctx, node, set())
    p = ctx.const(node, 1, "Y (the exponent)")
    if p is None or np.size(p) != 1:
        raise ctx.err(node, "Pow supports a constant scalar exponent only")
    p = float(np.asarray(p).reshape(-1)[0])
    return _pointwise(ctx, node, lambda n, x, y: ir.Unary(n, "pow", p, x, y))


def h_reduce_mean(ctx: _Ctx, node) -> list[Value]:
    """ReduceMean over the feature axis (one value per step)."""
    at = _check_attrs(ctx, node, {"axes", "keepdims", "noop_with_empty_axes"})
    x = _seq(ctx, node)
    r = len(x.axes)
    axes = at.get("axes") if ctx.opset < 18 else (
        ctx.const(node, 1, "axes").reshape(-1).tolist() if len(node.input) > 1 and node.input[1]
        else None)
    if axes is not None and all(x.axes[a % r] == "1" for a in axes):
        # the mean over unit axes is the value itself (silero's mean over its one frame)
        if int(at.get("keepdims", 1)):
            return [x]
        keep = [i for i in range(r) if i not in {a % r for a in axes}]
        return [TRef(x.tensor, tuple(x.axes[i] for i in keep), tuple(x.sizes[i] for i in keep),
                     x.pick)]
    if axes is None or [a % r for a in axes] != [r - 1] or not x.feature_axis_ok():
        raise ctx.err(node, f"ReduceMean over axes {axes} of a tensor with axes {list(x.axes)}: "
                            f"only the feature axis is supported")
    out = ctx.fresh(node.output[0])
    ctx.layers.append(ir.ReduceMean(node.name or out, x.tensor, out))
    if int(at.get("keepdims", 1)):
        return [_with_features(x, out, 1)]
    return [TRef(out, x.axes[:-1], x.sizes[:-1], x.pick)]


def h_conv(ctx: _Ctx, node) -> list[Value]:
    """Conv over the time axis of a [B, C, T] view (a Conv1d front end): causal only (padding
    at the start, none at the end), one group; a stride decimates time (ir.Conv1d)."""
    at = _check_attrs(ctx, node, {"auto_pad", "dilations", "group", "kernel_shape", "pads",
                                  "strides"})
    x = _seq(ctx, node)
    if ctx.seq_input is not None and ctx.seq_input.frame:
        return _frame_conv(ctx, node, x, at)
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
    stride = int(list(at.get("strides", [1]))[0])
    if stride < 1:
        raise ctx.err(node, f"unsupported attribute value strides={at['strides']}")
    if ir.frame_rates(ctx.layers, ctx.seq_input.name)[1].get(x.tensor, 1) > 1:
        raise ctx.err(node, "a Conv over time after a strided Conv (time decimated twice) is "
                            "not supported")
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
                                x.tensor, out, stride))
    return [TRef(out, ("B", "F", "T"), (None, int(W.shape[0]), None))]


def _frame_conv(ctx: _Ctx, node, x: TRef, at: dict) -> list[Value]:
    """A frame model's Conv over the positions within one frame: ``[B, C, P]`` with no time
    axis (an ``ir.FrameConv``; a 1x1 Conv on a single position is a Dense)."""
    if len(x.axes) != 3 or x.axes[0] != "B" or x.axes[1] not in ("1", "F") or \
            x.axes[2] not in ("1", "F") or x.pick is not None:
        raise ctx.err(node, f"Conv input has axes {list(x.axes)}; a frame model's Conv1d runs "
                            f"over [batch, channels, positions within the frame]")
    C, P = int(x.sizes[1]), int(x.sizes[2])
    W = np.asarray(ctx.const(node, 1, "W (the kernel)"), np.float32)
    if W.ndim != 3 or W.shape[1] != C:
        raise ctx.err(node, f"kernel {W.shape} does not act on {C} channels")
    if at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ctx.err(node, f"unsupported attribute value auto_pad={at['auto_pad']}")
    if int(at.get("group", 1)) != 1:
        raise ctx.err(node, f"unsupported attribute value group={at['group']}")
    stride = int(list(at.get("strides", [1]))[0])
    dil = int(list(at.get("dilations", [1]))[0])
    pb, pe = (int(v) for v in at.get("pads", [0, 0]))
    if min(pb, pe) < 0 or stride < 1 or dil < 1:
        raise ctx.err(node, f"unsupported attribute values pads={[pb, pe]} strides={stride} "
                            f"dilations={dil}")
    if P + pb + pe < (W.shape[2] - 1) * dil + 1:
        raise ctx.err(node, f"kernel {W.shape[2]} (dilation {dil}) is wider than the {P} "
                            f"positions of the frame plus padding")
    b = ctx.const(node, 2, "B (the bias)")
    b = None if b is None else np.asarray(b, np.float32).reshape(-1)
    out = ctx.fresh(node.output[0])
    name = node.name or out
    if P == 1 and W.shape[2] == 1 and pb == pe == 0:
        ctx.layers.append(ir.Dense(name, np.ascontiguousarray(W[:, :, 0]), b, x.tensor, out))
        return [TRef(out, ("B", "F", "1"), (None, int(W.shape[0]), 1))]
    layer = ir.FrameConv(name, W, b, stride, dil, pb, pe, P, x.tensor, out)
    ctx.layers.append(layer)
    return [TRef(out, ("B", "F", "F"), (None, layer.out_channels, layer.out_positions))]


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
    if isinstance(a, TRef) and isinstance(b, TRef):
        return h_binary(ctx, node, "add")
    if isinstance(a, Const):
        a, b = b, a
    if not (isinstance(a, TRef) and a.aux is None) or not isinstance(b, Const):
        raise ctx.err(node, "Add supports a run-time tensor plus a constant bias only")
    bias = np.asarray(b.value, np.float32)
    if not np.any(bias) and bias.ndim <= len(a.axes) and all(
            s == 1 for s in bias.shape[:-1]) and (bias.ndim == 0 or bias.shape[-1] in (
            1, a.sizes[-1])):
        return [a]                 # + 0 (silero adds sr * 0 to its state output)
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
    if isinstance(l, (ir.FeatureConcat, ir.Binary)):
        return l.xs
    return (l.x,)
