"""ONNX -> IR handlers for shape plumbing and layout ops: symbolic dims, Shape, Gather,
Squeeze/Unsqueeze, Transpose, Reshape, Concat, ConstantOfShape/Expand, Cast, Slice, shape
arithmetic, comparisons and If on known conditions (see converters/onnx_import.py)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from . import ir, mask_ops
from .errors import NvmConversionError
from .layer_ops import h_add, h_binary
from .values import (Const, MaskRef, Shape, Zeros, TRef, Value, _Ctx, _check_attrs)

log = logging.getLogger(__name__)


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
    elif isinstance(v, TRef) and all(s is not None or a == "B" for a, s in zip(v.axes, v.sizes)):
        dims = tuple(s if s is not None else a for a, s in zip(v.axes, v.sizes))   # a state
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
    if isinstance(v, MaskRef):
        return mask_ops.unsqueeze(ctx, node, v, _axes_arg(ctx, node, at, 0, 13) or [])
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
    v = mask_ops.finish(ctx, node, ctx.get(node, 0))
    if isinstance(v, MaskRef):
        return mask_ops.transpose(ctx, node, v, at.get("perm"))
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
        if label == "1" and t0.axes == ("1", "B", "F") and axis == 0:
            # states stacked on a new first axis (silero's packed [h, c] output): the
            # blocks of a [S, B, H] view, like directions
            t0 = replace(t0, axes=("D", "B", "H"))
            vals = [replace(v, axes=t0.axes) for v in vals]
            label = "D"
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
    m = mask_ops.cast(ctx, node, v, at.get("to"))
    if m is not None:
        return m
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
            # the flat feature range: only feature axes of size 1 may precede this one
            feat = [i for i, a in enumerate(t.axes) if a in ("D", "H", "F")]
            outer = int(np.prod([t.sizes[i] for i in feat if i < ax] or [1]))
            inner = int(np.prod([t.sizes[i] for i in feat if i > ax] or [1]))
            if 0 <= k < e and (label == "F" or "D" not in t.axes) and outer == 1:
                out = ctx.fresh(t.tensor + ":slice")
                ctx.layers.append(ir.FeatureSlice(node.name or out, k * inner, e * inner,
                                                  t.tensor, out))
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
        if op in ("Mul", "Add"):                  # Keras Masking's select (mask_ops)
            r = (mask_ops.mul if op == "Mul" else mask_ops.add)(ctx, node, a, b)
            if r is not None:
                return r
        if op == "Add" and (isinstance(a, TRef) or isinstance(b, TRef)):
            return h_add(ctx, node)
        if op in ("Sub", "Mul") and (isinstance(a, TRef) or isinstance(b, TRef)):
            return h_binary(ctx, node, op.lower())
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
        if op == "Greater":                      # Keras Masking: any feature != mask_value
            r = mask_ops.greater(ctx, node, ctx.get(node, 0), ctx.get(node, 1))
            if r is not None:
                return r
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
    from .onnx_import import _run_nodes      # the walk that called us (recursive dispatch)
    _run_nodes(ctx, list(branch.node))
    outs = []
    for o in branch.output:
        if o.name not in ctx.values:
            raise ctx.err(node, f"branch output {o.name!r} is not computed")
        outs.append(ctx.values[o.name])
    return outs


def h_size(ctx: _Ctx, node) -> list[Value]:
    """Size of a shape vector (its rank): a constant."""
    _check_attrs(ctx, node, set())
    v = _as_shape(ctx, node, ctx.get(node, 0))
    if v is None or v.scalar:
        raise ctx.err(node, "Size is supported only on a shape vector")
    return [Const(np.array(len(v.dims), np.int64))]


def h_equal(ctx: _Ctx, node) -> list[Value]:
    """Equal on shape values with known ints (e.g. a static dim compared with 1)."""
    _check_attrs(ctx, node, set())
    va, vb = ctx.get(node, 0), ctx.get(node, 1)
    ft = mask_ops.equal(ctx, node, va, vb)           # Keras Masking: x == mask_value
    if ft is not None:
        return [ft]
    a, b = _as_shape(ctx, node, va), _as_shape(ctx, node, vb)
    if a is None or b is None or len(a.dims) != len(b.dims) or not all(
            isinstance(d, int) for d in a.dims + b.dims):
        aux = [v.aux for v in (va, vb) if isinstance(v, TRef) and v.aux]
        hint = (f"; input {aux[0]!r} is known only at run time: give it a fixed value at "
                f"conversion (constants={{{aux[0]!r}: ...}})") if aux else ""
        raise ctx.err(node, "Equal is supported only on values known at conversion" + hint)
    r = np.array([x == y for x, y in zip(a.dims, b.dims)])
    return [Const(r.reshape(()) if a.scalar and b.scalar else r)]


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
