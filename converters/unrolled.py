"""Recurrences unrolled into cell ops over a fixed length (torch ``LSTMCell``/``GRUCell`` Python
loops, the dynamo export of ``nn.RNN``): recognised as one IR ``Recurrent`` layer.

The graph is run once in onnxruntime on a seeded random sequence with every intermediate
tensor exposed. Candidate cells are built from the graph's constant matrices (an input matrix
acting on the sequence's features, a state matrix ``[G*H, H]``), its bias vectors, every gate
order, GRU variant and RNN activation; a candidate is accepted when, at every step ``k``, its
hidden state equals some tensor of the graph (to 1e-5 of its scale). Those tensors (and the cell
states of an LSTM) are then bound to step ``k`` of the layer's output, so the per-step head after
them converts as usual and its ``T`` copies fold into one layer. ``to_ir`` finally compares the
whole converted model with onnxruntime at the exported length and refuses on mismatch.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper

from . import ir
from .conventions import parse_activations

if TYPE_CHECKING:
    from .values import _Ctx

log = logging.getLogger(__name__)
TOL = 1e-5


def probe_inputs(model: onnx.ModelProto, x_name: str, x_shape: tuple[int, ...]):
    rng = np.random.default_rng(4321)
    return {x_name: rng.standard_normal(x_shape).astype(np.float32)}


def intermediates(model: onnx.ModelProto, feeds) -> dict[str, np.ndarray]:
    """Every float tensor of the graph on ``feeds`` (onnxruntime, all node outputs exposed)."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for n in m.graph.node:
        for o in n.output:
            if o and o not in known:
                m.graph.output.append(onnx.helper.make_empty_tensor_value_info(o))
                known.add(o)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return {k: np.asarray(v) for k, v in zip(names, sess.run(None, feeds))
            if isinstance(v, np.ndarray) and v.dtype == np.float32}


def constant_matrices(g: onnx.GraphProto, consts: dict[str, np.ndarray]):
    """(name, M[in, out]) of every constant matrix used by a MatMul/Gemm, plus 1-D biases."""
    mats, biases = {}, {}
    for n in g.node:
        if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in consts:
            w = np.asarray(consts[n.input[1]], np.float32)
            if n.op_type == "Gemm" and any(a.name == "transB" and a.i for a in n.attribute):
                w = w.T
            if w.ndim == 2:
                mats[n.input[1]] = w
            if n.op_type == "Gemm" and len(n.input) > 2 and n.input[2] in consts:
                b = np.asarray(consts[n.input[2]], np.float32).reshape(-1)
                biases[n.input[2]] = b
        if n.op_type == "Add":
            for i in n.input:
                if i in consts and np.asarray(consts[i]).dtype == np.float32 \
                        and np.asarray(consts[i]).ndim == 1:
                    biases[i] = np.asarray(consts[i], np.float32)
    return mats, biases


def recognise(ctx: "_Ctx", x_name: str, time_axis: int, n_steps: int, feats: int):
    """Find the unrolled cell. Returns ``(layer, bindings)`` where bindings maps graph tensor
    names to ``("h" | "c", k)``; raises a conversion error when no candidate fits."""
    g = ctx.model.graph
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in next(i for i in g.input if i.name == x_name).type.tensor_type.shape.dim]
    shape = tuple(2 if d is None else d for d in dims)
    feeds = probe_inputs(ctx.model, x_name, shape)
    vals = intermediates(ctx.model, feeds)
    x_btf = np.moveaxis(feeds[x_name], time_axis, 1)
    b = x_btf.shape[0]
    consts = {k: v.value for k, v in ctx.values.items() if type(v).__name__ == "Const"}
    for n in g.node:                                  # Constant nodes
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    mats, biases = constant_matrices(g, consts)
    by_shape: dict[tuple, list[tuple[str, np.ndarray]]] = {}
    order = {o: k for k, n in enumerate(g.node) for o in n.output}
    for name, v in sorted(vals.items(), key=lambda kv: order.get(kv[0], 1 << 30)):
        if v.ndim == 3 and v.shape[0] == 1:          # [1, B, H]: a state kept 3-D
            by_shape.setdefault(v.shape[1:], []).append((name, v[0], 3))
        else:
            by_shape.setdefault(v.shape, []).append((name, v, v.ndim))
    tried = 0
    for wname, W in mats.items():
        if W.shape[0] != feats:
            continue
        gh = W.shape[1]
        for kind, gcount in (("LSTM", 4), ("GRU", 3), ("RNN", 1)):
            if gh % gcount:
                continue
            h = gh // gcount
            Rs = [(n, R) for n, R in mats.items() if n != wname and R.shape == (h, gh)]
            bs = [v for v in biases.values() if v.shape == (gh,)] + [np.zeros(gh, np.float32)]
            acts_opts = ([None] if kind != "RNN" else [["Tanh"], ["Relu"]])
            lbrs = (True, False) if kind == "GRU" else (False,)
            for (_rn, R), wb, rb, acts, lbr in itertools.product(Rs, bs, bs, acts_opts, lbrs):
                for perm in itertools.permutations(range(gcount)):
                    idx = np.concatenate([np.arange(p * h, (p + 1) * h) for p in perm])
                    tried += 1
                    layer = ir.Recurrent(
                        name=ctx.fresh("unrolled_" + kind), kind=kind, input_size=feats,
                        hidden_size=h, direction="forward", W=W.T[idx][None].copy(),
                        R=R.T[idx][None].copy(), Wb=wb[idx][None].copy(), Rb=rb[idx][None].copy(),
                        P=None, activations=parse_activations(kind, 1, acts, None, None),
                        clip=None, input_forget=False, linear_before_reset=lbr, x=x_name,
                        y=ctx.fresh("unrolled:Y"), c=None)
                    h0 = np.zeros((1, b, h), np.float32)
                    y, c, _, _ = ir.run_recurrent(layer, x_btf, h0,
                                                  h0.copy() if kind == "LSTM" else None, None)
                    bind = _bind(y, c, by_shape, n_steps)
                    if bind is not None:
                        log.info("%s: unrolled %s recognised (%d candidates tried)", ctx.path,
                                 kind, tried)
                        if any(r[0] == "c" for r in bind.values()):
                            import dataclasses
                            layer = dataclasses.replace(layer, c=ctx.fresh("unrolled:Y_c"))
                        return layer, bind
    raise ctx.err(None, f"no LSTM/GRU/RNN node, and none of {tried} candidate cells built from "
                        f"the graph's weights reproduces its per-step states: the recurrence is "
                        f"unrolled into ops nvmstream cannot read back as a cell")


def _bind(y, c, by_shape, n_steps):
    """Graph tensors equal to h_k (and c_k) for every step k, or None."""
    bind = {}
    for k in range(n_steps):
        hk = y[:, k]
        found = False
        for name, v, nd in by_shape.get(hk.shape, []):
            if np.max(np.abs(v - hk)) <= TOL * max(float(np.abs(hk).max()), 1e-6):
                bind.setdefault(name, ("h", k, nd))
                found = True
        if not found:
            return None
        if c is not None:
            ck = c[:, k]
            for name, v, nd in by_shape.get(ck.shape, []):
                if name not in bind and np.max(np.abs(v - ck)) <= \
                        TOL * max(float(np.abs(ck).max()), 1e-6):
                    bind[name] = ("c", k, nd)
    return bind
