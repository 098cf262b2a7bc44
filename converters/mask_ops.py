"""Keras ``Masking`` as tf2onnx writes it, recognised op by op (called from the handlers of
Equal, Not, Cast, ReduceSum, Greater, Mul, Add, Unsqueeze and Transpose).

Keras computes, per frame, ``mask[b, t] = any(x[b, t, :] != mask_value)``; tf2onnx writes it as
``Greater(ReduceSum(Cast(Not(Equal(x, v))), axis=-1), 0)``. That chain becomes one digital
periphery layer, ``ir.StepMask`` (a :class:`~.values.MaskRef` names its output). The masked
sequence ``where(mask, x, fill)`` (Keras 2: ``x * Cast(mask)``; Keras 3:
``Cast(mask) * x + fill * Cast(Not(mask))``) is ``x`` itself when the value it gives a masked
frame equals ``mask_value``: a masked frame *is* all ``mask_value`` (true for the usual
``mask_value = 0``); otherwise it is refused by name. The mask then reaches the recurrent Loop
(converters/loops.py), which is recognised with it: at a masked frame the state is held and
the held state is emitted.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx

from . import ir
from .values import Const, FrameTest, MaskedSeq, MaskRef, TRef, _Ctx, _check_attrs


def _scalar(v) -> float | None:
    if isinstance(v, Const) and np.size(v.value) == 1 and v.value.dtype.kind in "fiub":
        return float(np.asarray(v.value).reshape(-1)[0])
    return None


def _is_seq(v) -> bool:
    return isinstance(v, TRef) and v.aux is None and v.pick is None and v.step is None


def equal(ctx: _Ctx, node, a, b) -> FrameTest | None:
    """Equal(x, v) of the run-time sequence and a scalar constant (Masking's first op)."""
    if _scalar(a) is not None and _is_seq(b):
        a, b = b, a
    c = _scalar(b)
    if not (_is_seq(a) and c is not None):
        return None
    if not a.feature_axis_ok() or set(a.axes) != {"B", "T", "F"} or a.tpad:
        raise ctx.err(node, f"Equal of a tensor with axes {list(a.axes)} and a constant: a "
                            f"Keras mask compares frames [batch, time, features]")
    return FrameTest(a, c)


def h_not(ctx: _Ctx, node) -> list:
    _check_attrs(ctx, node, set())
    v = ctx.get(node, 0)
    if isinstance(v, FrameTest) and not v.flt and not v.summed:
        return [replace(v, ne=not v.ne)]
    if isinstance(v, MaskRef) and not v.flt and v.fill is None:
        return [replace(v, keep=not v.keep)]
    raise ctx.err(node, "Not is supported only on constants and on a Keras mask")


def cast(ctx: _Ctx, node, v, to: int | None) -> list | None:
    if not isinstance(v, (FrameTest, MaskRef)):
        return None
    if to == onnx.TensorProto.FLOAT and not v.flt and not getattr(v, "summed", False):
        return [replace(v, flt=True)]
    if to == onnx.TensorProto.BOOL and not v.flt:
        return [v]
    raise ctx.err(node, f"Cast of a Keras mask to type {to}")


def h_reduce_sum(ctx: _Ctx, node) -> list:
    """ReduceSum over the feature axis of ``Cast(x != v)`` (Keras's ``any`` over features)."""
    at = _check_attrs(ctx, node, {"axes", "keepdims", "noop_with_empty_axes"})
    v = ctx.get(node, 0)
    if not (isinstance(v, FrameTest) and v.ne and v.flt and not v.summed):
        raise ctx.err(node, "ReduceSum is supported only as the feature reduction of a Keras "
                            "mask (x != mask_value)")
    axes = at.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = ctx.const(node, 1, "axes").reshape(-1).tolist()
    rank = len(v.x.axes)
    axes = [a + rank if a < 0 else a for a in (axes or [])]
    if axes != [v.x.axes.index("F")]:
        raise ctx.err(node, f"ReduceSum over axes {axes} of a mask on axes {list(v.x.axes)}: "
                            f"only the feature axis is supported")
    return [replace(v, summed=True, keepdims=bool(at.get("keepdims", 1)))]


def greater(ctx: _Ctx, node, a, b) -> list | None:
    """Greater(count of features != v, 0): the per-step mask, an ``ir.StepMask`` layer (one
    per sequence and mask value, however often the exporter recomputes it)."""
    if not (isinstance(a, FrameTest) and a.summed):
        return None
    if _scalar(b) != 0.0:
        raise ctx.err(node, "Greater of a feature count with anything but 0: not a Keras mask")
    key = (a.x.tensor, a.value)
    if key not in ctx.masks:
        y = ctx.fresh((node.name or "mask") + ":mask")
        ctx.layers.append(ir.StepMask(node.name or y, float(a.value), a.x.tensor, y))
        ctx.masks[key] = y
    axes = tuple(("1" if ax == "F" else ax) for ax in a.x.axes if ax != "F" or a.keepdims)
    return [MaskRef(ctx.masks[key], a.x, a.value, axes)]


def _own_seq(m: MaskRef, x) -> bool:
    """``x`` is the sequence ``m`` was computed from, in a view the mask broadcasts over."""
    return (_is_seq(x) and x.tensor == m.x.tensor and x.axes == m.x.axes
            and m.axes == tuple("1" if ax == "F" else ax for ax in x.axes))


def mul(ctx: _Ctx, node, a, b) -> list | None:
    if isinstance(a, MaskRef):
        a, b = b, a
    if not isinstance(b, MaskRef):
        return None
    m = b
    if not m.flt or m.fill is not None:
        raise ctx.err(node, "Mul of a Keras mask that is not cast to float")
    if _own_seq(m, a) and m.keep:                      # x * mask: masked frames -> 0
        return [a if m.value == 0.0 else MaskedSeq(a, m)]
    c = _scalar(a)
    if c is not None:                                  # fill * mask
        return [replace(m, fill=c)]
    raise ctx.err(node, "Mul of a Keras mask with something other than its own sequence or a "
                        "constant")


def add(ctx: _Ctx, node, a, b) -> list | None:
    """``where(mask, x, 0) + fill * Not(mask)`` = ``where(mask, x, fill)``."""
    if isinstance(a, MaskRef):
        a, b = b, a
    if not (isinstance(b, MaskRef) or isinstance(a, MaskedSeq)):
        return None
    if not (isinstance(b, MaskRef) and b.fill is not None and not b.keep):
        raise ctx.err(node, "Add of a Keras mask other than the masked sequence's select")
    m = b
    if isinstance(a, MaskedSeq):
        x, at_masked = a.x, 0.0 + m.fill
    elif _own_seq(replace(m, keep=True), a):
        x, at_masked = a, m.value + m.fill             # a masked frame of x is the mask value
    else:
        raise ctx.err(node, "Add of a Keras mask select to another tensor than its sequence")
    return [_masked_sequence(ctx, node, x, m.value, at_masked)]


def _masked_sequence(ctx: _Ctx, node, x: TRef, value: float, at_masked: float) -> TRef:
    if at_masked != value:
        raise ctx.err(node, f"Keras Masking(mask_value={value:g}) sets masked frames to "
                            f"{at_masked:g}: only a masked sequence equal to its input (masked "
                            f"frames keep the mask value, e.g. mask_value=0) is supported")
    return x


def finish(ctx: _Ctx, node, v):
    """A value leaving the mask ops where a plain tensor is needed (e.g. a Transpose of
    ``x * mask`` with a non-zero mask value): the masked sequence or an error."""
    if isinstance(v, MaskedSeq):
        return _masked_sequence(ctx, node, v.x, v.mask.value, 0.0)
    return v


def unsqueeze(ctx: _Ctx, node, m: MaskRef, axes: list[int]) -> list:
    out_rank = len(m.axes) + len(axes)
    ax = list(m.axes)
    for a in sorted(a + out_rank if a < 0 else a for a in axes):
        ax.insert(a, "1")
    return [replace(m, axes=tuple(ax))]


def transpose(ctx: _Ctx, node, m: MaskRef, perm: list[int] | None) -> list:
    perm = list(range(len(m.axes)))[::-1] if perm is None else perm
    return [replace(m, axes=tuple(m.axes[p] for p in perm))]
