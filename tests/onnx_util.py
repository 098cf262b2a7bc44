"""Helpers shared by the converter tests (not a test module)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

WEIGHT_INPUTS = {"W", "R", "B", "P"}
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures" / "onnx"


def fixture_files() -> list[dict]:
    """The committed torch-exported fixtures that exist (the manifest also lists skipped ones)."""
    files = json.loads((FIXTURES / "manifest.json").read_text())["files"]
    return [f for f in files if not f.get("skipped") and (FIXTURES / f["file"]).exists()]


def freeze_weights(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                   names=WEIGHT_INPUTS) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Turn weight graph inputs into initializers (nvmstream needs constant weights)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    keep = [i for i in g.input if i.name not in names or i.name not in feeds]
    for name in names:
        if name in feeds:
            g.initializer.append(numpy_helper.from_array(np.asarray(feeds[name]), name))
    del g.input[:]
    g.input.extend(keep)
    return m, {k: v for k, v in feeds.items() if k not in names}


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def max_err(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) if a[k].size else 0.0
               for k in b)


def layout0_twin(model: onnx.ModelProto) -> onnx.ModelProto:
    """A layout=0 twin of a model whose recurrent nodes use layout=1: the same node with
    Transposes around it, so onnxruntime (which rejects layout=1) can serve as the reference."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    new_nodes = []
    for n in g.node:
        if n.op_type not in ("LSTM", "GRU", "RNN"):
            new_nodes.append(n)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if attrs.get("layout", 0) != 1:
            new_nodes.append(n)
            continue
        ins = list(n.input)
        for k, perm in ((0, [1, 0, 2]), (5, [1, 0, 2]), (6, [1, 0, 2])):
            if k < len(ins) and ins[k]:
                t = ins[k] + "__l0"
                new_nodes.append(helper.make_node("Transpose", [ins[k]], [t], perm=perm))
                ins[k] = t
        outs = list(n.output)
        post = []
        for k, perm in ((0, [2, 0, 1, 3]), (1, [1, 0, 2]), (2, [1, 0, 2])):
            if k < len(outs) and outs[k]:
                t = outs[k] + "__l0"
                post.append(helper.make_node("Transpose", [t], [outs[k]], perm=perm))
                outs[k] = t
        a2 = [a for a in n.attribute if a.name != "layout"]
        nn = helper.make_node(n.op_type, ins, outs, name=n.name)
        nn.attribute.extend(a2)
        new_nodes.append(nn)
        new_nodes.extend(post)
    del g.node[:]
    g.node.extend(new_nodes)
    del g.value_info[:]
    return m


def reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime's outputs; for layout=1 models, those of the layout=0 twin."""
    uses_layout1 = any(a.name == "layout" and a.i == 1 for n in model.graph.node
                       for a in n.attribute)
    return ort_run(layout0_twin(model) if uses_layout1 else model, feeds)


def assert_engine_guarantees(prog, path, x: np.ndarray, out: str = "y") -> np.ndarray:
    """The engine's guarantees on ``x[B, T, F]`` for a converted ONNX file: the ideal profile
    equals onnxruntime within 1e-5 of the output scale (after the output's undefined leading
    steps, at a strided Conv's rate), int4 is bit-exact against the numpy twin, and a stream
    of ``x[0]`` equals the whole run. Returns the int4 output."""
    import nvmstream as nvm
    from naive import int_twin
    want = ort_run(onnx.load(path), {"x": x})[out]
    d, s = prog.model.outputs[0].delay, prog.model.outputs[0].stride
    ideal = nvm.Engine(prog, nvm.Device("ideal")).run(x)[:, d::s]
    assert np.max(np.abs(ideal - want)) <= 1e-5 * np.max(np.abs(want))
    eng = nvm.Engine(prog, nvm.Device("int4"))
    got = eng.run(x)
    np.testing.assert_array_equal(
        got, int_twin(prog.model, {s.key: s for s in eng.plan.segments}, x)[out])
    s = eng.stream()
    np.testing.assert_array_equal(np.stack([s.step(x[0, t]) for t in range(x.shape[1])]),
                                  got[0])
    return got


def assert_streams_equal_run(eng, x: np.ndarray, seed: int = 20) -> np.ndarray:
    """Single streams, ``step_many`` and a BLAS-sized batch (21 rows) of ``x[B, T, F]`` give the
    whole run's bits (per-read noise included: stream ``b`` seeded ``seed + b``); returns the
    whole run."""
    B, T = x.shape[:2]
    whole = eng.run(x, seed=seed)
    for b in range(B):
        s = eng.stream(seed=seed + b)
        np.testing.assert_array_equal(np.stack([s.step(x[b, t]) for t in range(T)]), whole[b])
    ss = [eng.stream(seed=seed + b) for b in range(B)]
    ys = np.stack([eng.step_many(ss, x[:, t]) for t in range(T)], 1)
    np.testing.assert_array_equal(ys, whole)
    big = eng.run(np.repeat(x, 7, 0), seed=0)        # 7 B rows (row r seeded r): BLAS products
    np.testing.assert_array_equal(big[-1], eng.run(x[B - 1:B], seed=7 * B - 1)[0])
    return whole


def late_join_frame_energy_sums(eng, x: np.ndarray, n: int, early: int, join_at: int):
    """Per-stream sums of ``last_energy_pJ`` over batched steps (``step_many_all``) of ``n``
    streams fed ``x[i % 2]``, of which ``early`` start at frame 0 and the rest join at frame
    ``join_at``; the ledger is reset first. Returns (streams, sums)."""
    eng.reset_ledger()
    streams = [eng.stream() for _ in range(n)]
    sums = np.zeros(n)
    for t in range(x.shape[1]):
        live = streams if t >= join_at else streams[:early]
        eng.step_many_all(live, np.stack([x[i % 2, t] for i in range(len(live))]))
        for i, st in enumerate(live):
            sums[i] += st.last_energy_pJ
    return streams, sums
