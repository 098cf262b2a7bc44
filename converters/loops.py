"""Recurrences written as ONNX ``Loop`` nodes (tf2onnx's Keras 3 GRU/SimpleRNN, Keras 2
SimpleRNN, ...) recognised as IR ``Recurrent`` layers.

A Loop is taken as a recurrence when its trip count is the sequence length ``T``, its body reads
one time step of the (time-major) sequence from the enclosing scope, and its loop-carried
values are zero states ``[B, H]`` plus constants. The cell's weights are the body's constant
matrices (``[F, G*H]`` on the input, ``[H, G*H]`` on the state) and biases; which gate order,
GRU variant and h/c slot they mean is not read from the exporter's naming but *tested*: every
candidate is run against the Loop itself (onnxruntime on the Loop node alone, random inputs
and random initial states, two lengths) and the first that matches every used output to 1e-5
of its scale is taken. No candidate matching is an error naming the Loop.
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
from .unrolled import constant_matrices

if TYPE_CHECKING:
    from .values import _Ctx

log = logging.getLogger(__name__)

PROBE_TOL = 1e-5


def _body(node: onnx.NodeProto) -> onnx.GraphProto:
    return next(a.g for a in node.attribute if a.name == "body")


def _body_constants(body: onnx.GraphProto, carried: dict[str, np.ndarray],
                    outer: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every constant tensor the body can see, by name (initializers, Constant nodes, constant
    loop-carried values, outer constants), with Split/Squeeze of constants folded."""
    env = dict(outer)
    env.update(carried)
    for init in body.initializer:
        env[init.name] = numpy_helper.to_array(init)
    from onnx.reference import ReferenceEvaluator
    for n in body.node:
        ins = [i for i in n.input if i]
        if n.op_type == "Constant" or (ins and all(i in env for i in ins)
                                       and n.op_type in ("Split", "Squeeze", "Unsqueeze",
                                                         "Transpose", "Identity", "Cast",
                                                         "Reshape", "Concat", "Slice",
                                                         "Gather")):
            try:
                g = onnx.helper.make_graph(
                    [n], "c", [onnx.helper.make_tensor_value_info(
                        i, onnx.helper.np_dtype_to_tensor_dtype(np.asarray(env[i]).dtype),
                        np.asarray(env[i]).shape) for i in ins],
                    [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                     for o in n.output if o])
                m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 18)])
                res = ReferenceEvaluator(m).run(None, {i: np.asarray(env[i]) for i in ins})
                env.update({o: np.asarray(r) for o, r in zip([o for o in n.output if o], res)})
            except Exception:  # not foldable: not a weight
                continue
    return env


def _candidates(kind: str, W: np.ndarray, R: np.ndarray, biases: list[np.ndarray], h: int):
    """(label, Wg, Rg, Wb, Rb, lbr) for every gate order / bias split / GRU variant, with
    W [G*H, F], R [G*H, H] in the candidate's gate order mapped to ONNX order."""
    g = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    bias_opts = []
    for b in biases:
        if b.shape == (g * h,):
            bias_opts.append((b, np.zeros_like(b)))
        elif b.shape == (2, g * h):
            bias_opts.append((b[0], b[1]))
        elif b.shape == (2 * g * h,):
            bias_opts.append((b[:g * h], b[g * h:]))
    if not bias_opts:
        bias_opts = [(np.zeros(g * h, np.float32), np.zeros(g * h, np.float32))]
    lbrs = (True, False) if kind == "GRU" else (False,)
    for perm in itertools.permutations(range(g)):
        idx = np.concatenate([np.arange(p * h, (p + 1) * h) for p in perm])
        for wb, rb in bias_opts:
            for lbr in lbrs:
                yield (f"gates {perm} lbr={int(lbr)}", W.T[idx], R.T[idx], wb[idx], rb[idx], lbr)


def recognise_loop(ctx: "_Ctx", node: onnx.NodeProto, x_ref, x_name_in_body: str,
                   state_slots: list[int], const_slots: dict[int, np.ndarray],
                   outer_consts: dict[str, np.ndarray], hidden: int, feats: int,
                   sym_slots: dict[int, int], outer_syms: dict[str, int],
                   mask: tuple[str, str] | None = None):
    """Find the Recurrent layer a Loop computes, checked against the Loop on random probes.
    Returns ``(layer, mapping)``: mapping[k] for each Loop output k is one of ``"hT"``,
    ``"cT"``, ``"Y"``, ``"Yc"`` or None (not a recurrent quantity). ``mask``: (the body's
    name for a Keras mask ``[T, B, 1]`` bool, the IR's ``StepMask`` tensor): the layer holds its
    state at masked steps, and the probe feeds random masks with steps masked in the middle
    and at the end (the first step kept: Keras's loop also carries the previous output, from
    zeros, which equals the held state from the first kept step on)."""
    body = _body(node)
    n_carried = len(node.input) - 2
    carried_names = {body.input[2 + k].name: v for k, v in const_slots.items()}
    env = _body_constants(body, carried_names, outer_consts)
    mats, _ = constant_matrices(body, env)
    Ws = [w for w in mats.values() if w.shape[0] == feats]
    Rs = [w for w in mats.values() if w.shape[0] == hidden]
    kinds = []
    for W in Ws:
        for R in Rs:
            if W is R or W.shape[1] != R.shape[1]:
                continue
            g = W.shape[1] // hidden
            kind = {4: "LSTM", 3: "GRU", 1: "RNN"}.get(g)
            if kind and W.shape[1] == g * hidden:
                kinds.append((kind, W, R))
    if not kinds:
        raise ctx.err(node, f"Loop body has no input matrix [{feats}, G*{hidden}] and state "
                            f"matrix [{hidden}, G*{hidden}]: not an LSTM/GRU/RNN cell")
    biases = [np.asarray(v, np.float32) for k, v in env.items()
              if np.asarray(v).dtype.kind == "f" and k not in mats
              and np.asarray(v).ndim in (1, 2) and np.asarray(v).size >= hidden]
    probe = _LoopProbe(node, body, x_name_in_body, state_slots, const_slots, outer_consts,
                       hidden, feats, ctx.model, sym_slots, outer_syms,
                       mask[0] if mask else None)
    n_states_needed = {"LSTM": 2, "GRU": 1, "RNN": 1}
    tried = 0
    for kind, W, R in kinds:
        # a masked Keras loop also carries its previous output: one slot more than the cell
        if len(state_slots) != n_states_needed[kind] + (1 if mask else 0):
            continue
        for slot_order in itertools.permutations(state_slots, n_states_needed[kind]):
            for label, Wg, Rg, wb, rb, lbr in _candidates(
                    kind, W, R, [b for b in biases if b.shape[-1] in
                                 (W.shape[1], 2 * W.shape[1])], hidden):
                tried += 1
                layer = ir.Recurrent(
                    name=node.name or ctx.fresh("Loop"), kind=kind, input_size=feats,
                    hidden_size=hidden, direction="forward", W=Wg[None].astype(np.float32),
                    R=Rg[None].astype(np.float32), Wb=wb[None].astype(np.float32),
                    Rb=rb[None].astype(np.float32), P=None,
                    activations=parse_activations(kind, 1, None, None, None), clip=None,
                    input_forget=False, linear_before_reset=lbr, x=x_ref.tensor,
                    y=ctx.fresh((node.name or "Loop") + ":Y"),
                    c=None, mask=mask[1] if mask else None)
                mapping = probe.match(layer, slot_order)
                if mapping is not None:
                    log.info("%s: Loop %r recognised as %s (%s)", ctx.path, node.name, kind, label)
                    if "Yc" in mapping:
                        import dataclasses
                        layer = dataclasses.replace(layer, c=ctx.fresh(layer.name + ":Y_c"))
                    return layer, mapping
    raise ctx.err(node, f"Loop is not an LSTM/GRU/RNN over the time axis: none of {tried} "
                        f"candidate cells built from its weights reproduces it on a random "
                        f"probe (a mask, a custom cell or other ops in the body)")


class _LoopProbe:
    """The Loop node alone as an onnxruntime model: sequence and initial states in, every Loop
    output out; compared with a candidate layer on seeded random inputs."""

    def __init__(self, node, body, x_name, state_slots, const_slots, outer_consts, hidden,
                 feats, model, sym_slots, outer_syms, mask_name=None):
        import onnxruntime as ort

        self.state_slots, self.hidden, self.feats = state_slots, hidden, feats
        n_carried = len(node.input) - 2
        inputs = [onnx.helper.make_tensor_value_info("M", onnx.TensorProto.INT64, []),
                  onnx.helper.make_tensor_value_info(x_name, onnx.TensorProto.FLOAT,
                                                     ["T", "B", feats])]
        inits = [numpy_helper.from_array(np.array(True), "cond")]
        loop_in = ["M" if node.input[0] else "", "cond"]
        if not node.input[0]:       # no trip count: the body's condition ends the loop
            inputs = inputs[1:]
        syms = {}                       # probe input -> elem type, fed the length T
        for k in range(n_carried):
            nm = f"v{k}"
            if k in state_slots:
                inputs.append(onnx.helper.make_tensor_value_info(nm, onnx.TensorProto.FLOAT,
                                                                 ["B", hidden]))
            elif k in sym_slots:
                inputs.append(onnx.helper.make_tensor_value_info(nm, sym_slots[k], []))
                syms[nm] = sym_slots[k]
            else:
                inits.append(numpy_helper.from_array(np.asarray(const_slots[k]), nm))
            loop_in.append(nm)
        for name, v in outer_consts.items():
            inits.append(numpy_helper.from_array(np.asarray(v), name))
        for name, et in outer_syms.items():
            inputs.append(onnx.helper.make_tensor_value_info(name, et, []))
            syms[name] = et
        if mask_name is not None:
            inputs.append(onnx.helper.make_tensor_value_info(mask_name, onnx.TensorProto.BOOL,
                                                             ["T", "B", 1]))
        outs = [f"o{k}" for k in range(len(node.output))]
        loop = onnx.helper.make_node("Loop", loop_in, outs, body=body)
        g = onnx.helper.make_graph([loop], "probe", inputs,
                                   [onnx.helper.make_empty_tensor_value_info(o) for o in outs],
                                   inits)
        m = onnx.helper.make_model(g, opset_imports=list(model.opset_import))
        m.ir_version = model.ir_version
        so = ort.SessionOptions()
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(m.SerializeToString(), so,
                                         providers=["CPUExecutionProvider"])
        self.x_name = x_name
        self.n_out = len(node.output)
        rng = np.random.default_rng(1234)
        self.cases = []
        for b, t in ((3, 5), (2, 2), (2, 7)):
            x = rng.standard_normal((t, b, feats)).astype(np.float32)
            st = {k: (0.5 * rng.standard_normal((b, hidden))).astype(np.float32)
                  for k in state_slots}
            m = None
            if mask_name is not None:      # masked in the middle and at the end, step 0 kept
                m = rng.random((t, b, 1)) < 0.6
                m[0] = True
                m[-1, 0] = False
                if t > 2:
                    m[1:-1, -1] = False
            feeds = {**({"M": np.array(t, np.int64)} if node.input[0] else {}), x_name: x,
                     **({mask_name: m} if m is not None else {}),
                     **{f"v{k}": v for k, v in st.items()},
                     **{nm: np.array(t, onnx.helper.tensor_dtype_to_np_dtype(et))
                        for nm, et in syms.items()}}
            self.cases.append((x, st, m, self.sess.run(None, feeds)))

    def match(self, layer, slot_order) -> list | None:
        mapping: list = [None] * self.n_out
        for x, st, m, outs in self.cases:
            h0 = st[slot_order[0]][None]
            c0 = st[slot_order[1]][None] if layer.kind == "LSTM" else None
            mb = None if m is None else np.swapaxes(m, 0, 1).astype(np.float32)
            y, c, hT, cT = ir.run_recurrent(layer, np.ascontiguousarray(np.swapaxes(x, 0, 1)),
                                            h0, c0, None, mb)
            cand = {"hT": hT[0], "Y": np.swapaxes(y, 0, 1)}
            if c is not None:
                cand["cT"], cand["Yc"] = cT[0], np.swapaxes(c, 0, 1)
            for k, o in enumerate(outs):
                o = np.asarray(o)
                if o.dtype.kind != "f" or o.size == 0:
                    continue
                hit = None
                for nm, v in cand.items():
                    if v.shape == o.shape:
                        scale = max(float(np.abs(o).max()), 1e-6)
                        if float(np.abs(v - o).max()) <= PROBE_TOL * scale:
                            hit = nm
                            break
                if mapping[k] not in (None, hit) and hit is not None:
                    return None
                if hit is None and k >= 1 + 0 and _is_state_output(k, self.state_slots):
                    return None
                if hit is not None:
                    mapping[k] = hit
        if not any(m in ("Y", "hT") for m in mapping):
            return None
        return mapping


def _is_state_output(k: int, state_slots: list[int]) -> bool:
    """Loop output k is the final value of carried slot k (outputs list carried finals first)."""
    return k in state_slots
