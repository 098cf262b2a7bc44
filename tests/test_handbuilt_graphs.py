"""Ladder rung 3: hand-built ONNX graphs for what exporters rarely emit, vs onnxruntime (or, for
layout=1, which onnxruntime rejects, vs its layout=0 twin)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nvmstream as nvm
from onnx_util import reference

ATOL = 1e-5
G = {"LSTM": 4, "GRU": 3, "RNN": 1}


def build(kind="LSTM", I=5, H=6, direction="forward", layout=0, seed=0, peep=False,
          lens_input=False, init_input=False, init_const=False, want_c=True, opset=22,
          **attrs) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    g = G[kind]
    W = rng.normal(0, 0.5, (D, g * H, I)).astype(np.float32)
    R = rng.normal(0, 0.5, (D, g * H, H)).astype(np.float32)
    B = rng.normal(0, 0.3, (D, 2 * g * H)).astype(np.float32)
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"),
             numpy_helper.from_array(B, "B")]
    xshape = ["T", "N", I] if layout == 0 else ["N", "T", I]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, xshape)]
    node_in = ["X", "W", "R", "B", "", "", "", ""]
    if lens_input:
        inputs.append(helper.make_tensor_value_info("lens", TensorProto.INT32, ["N"]))
        node_in[4] = "lens"
    sshape = [D, "N", H] if layout == 0 else ["N", D, H]
    if init_input:
        inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, sshape))
        node_in[5] = "h0"
        if kind == "LSTM":
            inputs.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, sshape))
            node_in[6] = "c0"
    if init_const:
        shp = (D, 3, H) if layout == 0 else (3, D, H)
        inits.append(numpy_helper.from_array(rng.normal(0, 0.5, shp).astype(np.float32), "h0c"))
        node_in[5] = "h0c"
        if kind == "LSTM":
            inits.append(numpy_helper.from_array(rng.normal(0, 0.5, shp).astype(np.float32), "c0c"))
            node_in[6] = "c0c"
    if peep:
        inits.append(numpy_helper.from_array(rng.normal(0, 0.5, (D, 3 * H)).astype(np.float32), "P"))
        node_in[7] = "P"
    if kind != "LSTM":
        node_in = node_in[:6]
    while node_in and node_in[-1] == "":
        node_in.pop()
    outs = ["Y", "Y_h"] + (["Y_c"] if kind == "LSTM" and want_c else [])
    node = helper.make_node(kind, node_in, outs, name="rec0", hidden_size=H, direction=direction,
                            **({"layout": layout} if layout else {}), **attrs)
    yshape = ["T", D, "N", H] if layout == 0 else ["N", "T", D, H]
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, yshape)] + [
        helper.make_tensor_value_info(o, TensorProto.FLOAT, sshape) for o in outs[1:]]
    graph = helper.make_graph([node], "g", inputs, outputs, initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    return m


def feeds_for(m: onnx.ModelProto, T=7, N=3, seed=1, lens=None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    node = m.graph.node[0]
    at = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    layout = at.get("layout", 0)
    I = [i for i in m.graph.initializer if i.name == "W"][0].dims[2]
    H = at["hidden_size"]
    D = 2 if at.get("direction", b"forward") == b"bidirectional" else 1
    x = rng.normal(0, 1, (T, N, I) if layout == 0 else (N, T, I)).astype(np.float32)
    f = {"X": x}
    names = {i.name for i in m.graph.input}
    if "lens" in names:
        f["lens"] = np.asarray(lens if lens is not None else rng.integers(1, T + 1, N), np.int32)
    for s in ("h0", "c0"):
        if s in names:
            f[s] = rng.normal(0, 0.5, (D, N, H) if layout == 0 else (N, D, H)).astype(np.float32)
    return f


def check(m: onnx.ModelProto, tmp_path, **fk) -> float:
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    model = nvm.load_ir(p)
    feeds = feeds_for(m, **fk)
    got = model.run(feeds)
    ref = reference(m, feeds)
    err = 0.0
    for k, v in ref.items():
        assert got[k].shape == v.shape, (k, got[k].shape, v.shape)
        err = max(err, float(np.max(np.abs(got[k] - v))))
        np.testing.assert_allclose(got[k], v, rtol=0, atol=ATOL, err_msg=k)
    return err


ACT_CASES = [
    ("LSTM", ["HardSigmoid", "ScaledTanh", "Affine"], [0.3, 0.9, 0.5], [0.4, 1.2, 0.1]),
    ("LSTM", ["Sigmoid", "Softsign", "LeakyRelu"], [0.05], []),
    ("LSTM", ["HardSigmoid", "Elu", "Softplus"], [], []),          # defaults: 0.2/0.5, 1.0
    ("GRU", ["HardSigmoid", "ThresholdedRelu"], [0.25, 0.2], [0.45]),
    ("GRU", ["Sigmoid", "Relu"], [], []),
    ("RNN", ["Relu"], [], []),
    ("RNN", ["ScaledTanh"], [1.5], [0.7]),
]


@pytest.mark.parametrize("kind,acts,alpha,beta", ACT_CASES,
                         ids=[f"{k}-{'-'.join(a)}" for k, a, _, _ in ACT_CASES])
def test_activation_functions_with_packed_alpha_beta(kind, acts, alpha, beta, tmp_path):
    attrs = {"activations": acts}
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    check(build(kind, **attrs), tmp_path)


def test_bidirectional_with_different_activations_per_direction(tmp_path):
    m = build("GRU", direction="bidirectional",
              activations=["Sigmoid", "Tanh", "HardSigmoid", "Softsign"],
              activation_alpha=[0.3], activation_beta=[0.6])
    check(m, tmp_path)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("clip", [0.3, 2.0])
def test_clip(kind, clip, tmp_path):
    check(build(kind, clip=clip), tmp_path)


def test_input_forget(tmp_path):
    check(build("LSTM", input_forget=1), tmp_path)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_peepholes(direction, tmp_path):
    check(build("LSTM", peep=True, direction=direction, seed=3), tmp_path)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_mixed_sequence_lens(kind, direction, tmp_path):
    m = build(kind, direction=direction, lens_input=True, init_input=True, seed=4)
    check(m, tmp_path, lens=[7, 3, 1], T=7, N=3)
    check(m, tmp_path, lens=[2, 5, 6], T=6, N=3, seed=9)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_reverse(kind, tmp_path):
    check(build(kind, direction="reverse", seed=5), tmp_path)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_layout1_matches_layout0_twin(kind, direction, tmp_path):
    check(build(kind, layout=1, direction=direction, seed=6), tmp_path)
    check(build(kind, layout=1, direction=direction, seed=6, init_const=True), tmp_path, N=3)


@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_gru_linear_before_reset(lbr, direction, tmp_path):
    check(build("GRU", linear_before_reset=lbr, direction=direction, seed=7), tmp_path)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_initial_state_constant_and_input(kind, tmp_path):
    check(build(kind, init_const=True, seed=8), tmp_path, N=3)
    check(build(kind, init_input=True, seed=8, direction="bidirectional"), tmp_path)


@pytest.mark.parametrize("opset", [7, 9, 13, 14, 17, 22])
def test_opsets(opset, tmp_path):
    m = build("LSTM", opset=opset, peep=True)
    check(m, tmp_path)


def test_all_options_at_once(tmp_path):
    m = build("LSTM", direction="bidirectional", peep=True, lens_input=True, init_input=True,
              clip=1.5, activations=["HardSigmoid", "Tanh", "Softsign"] * 2,
              activation_alpha=[0.25, 0.3], activation_beta=[0.5, 0.45], seed=11)
    check(m, tmp_path, lens=[4, 7, 2], T=7, N=3)


def test_layout1_stack_graph(tmp_path):
    """Batch-first graph end to end: layout=1 LSTM -> Reshape merge -> MatMul/Add -> Softmax."""
    rng = np.random.default_rng(2)
    I, H, O = 4, 5, 3
    inits = [numpy_helper.from_array(rng.normal(0, .5, (2, 4 * H, I)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(0, .5, (2, 4 * H, H)).astype(np.float32), "R"),
             numpy_helper.from_array(rng.normal(0, .5, (2 * H, O)).astype(np.float32), "Wd"),
             numpy_helper.from_array(rng.normal(0, .5, (O,)).astype(np.float32), "bd"),
             numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape")]
    nodes = [helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=H, layout=1,
                              direction="bidirectional"),
             helper.make_node("Reshape", ["Y", "shape"], ["Yf"]),
             helper.make_node("MatMul", ["Yf", "Wd"], ["Z"]),
             helper.make_node("Add", ["Z", "bd"], ["Zb"]),
             helper.make_node("Softmax", ["Zb"], ["P"], axis=-1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                     ["N", "T", I])],
                          [helper.make_tensor_value_info("P", TensorProto.FLOAT, ["N", "T", O])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    model = nvm.load_ir(p)
    assert [type(l).__name__ for l in model.layers] == ["Recurrent", "Dense", "Softmax"]
    x = rng.normal(0, 1, (2, 6, I)).astype(np.float32)
    got = model.run({"X": x})["P"]
    # reference: the same network with manual layout=0 LSTM in onnxruntime
    twin = helper.make_graph(
        [helper.make_node("Transpose", ["X"], ["X0"], perm=[1, 0, 2]),
         helper.make_node("LSTM", ["X0", "W", "R"], ["Y0"], hidden_size=H,
                          direction="bidirectional"),
         helper.make_node("Transpose", ["Y0"], ["Y"], perm=[2, 0, 1, 3])] + nodes[1:],
        "t", g.input, g.output, initializer=inits)
    tm = helper.make_model(twin, opset_imports=[helper.make_opsetid("", 17)])
    tm.ir_version = 8
    from onnx_util import ort_run
    want = ort_run(tm, {"X": x})["P"]
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("shape", [[7, -1, 16], [0, 0, -1], [-1, 0, 16], [7, 3, 16]])
def test_reshape_layouts_including_frozen_example_length(shape, tmp_path):
    """Reshape after a bidirectional LSTM, as exporters write it; the dynamo exporter can
    freeze the example length (7) or batch (3) into the shape: nvmstream reads those as the
    time/batch axes, so the model works at every length (onnxruntime only at 7)."""
    rng = np.random.default_rng(5)
    H, I = 8, 4
    inits = [numpy_helper.from_array(rng.normal(0, .5, (2, 4 * H, I)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(0, .5, (2, 4 * H, H)).astype(np.float32), "R"),
             numpy_helper.from_array(np.array(shape, np.int64), "shape"),
             numpy_helper.from_array(rng.normal(0, .5, (2 * H, 3)).astype(np.float32), "Wd")]
    nodes = [helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=H,
                              direction="bidirectional"),
             helper.make_node("Transpose", ["Y"], ["Yt"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["Yt", "shape"], ["Yf"]),
             helper.make_node("MatMul", ["Yf", "Wd"], ["Z"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                     ["T", "N", I])],
                          [helper.make_tensor_value_info("Z", TensorProto.FLOAT, ["T", "N", 3])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    model = nvm.load_ir(p)
    x7 = rng.normal(size=(7, 3, I)).astype(np.float32)
    from onnx_util import ort_run
    np.testing.assert_allclose(model.run({"X": x7})["Z"], ort_run(m, {"X": x7})["Z"],
                               atol=ATOL, rtol=0)
    x11 = rng.normal(size=(11, 2, I)).astype(np.float32)
    y11 = model.run({"X": x11})["Z"]
    assert y11.shape == (11, 2, 3)
    # equals the same model with a dynamic reshape
    flex = nvm.load_ir(p) if shape == [0, 0, -1] else None
    if flex is None:
        inits[2] = numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape")
        g2 = helper.make_graph(nodes, "g", g.input, g.output, initializer=inits)
        m2 = helper.make_model(g2, opset_imports=[helper.make_opsetid("", 17)])
        m2.ir_version = 8
        onnx.save(m2, tmp_path / "m2.onnx")
        flex = nvm.load_ir(tmp_path / "m2.onnx")
    np.testing.assert_array_equal(y11, flex.run({"X": x11})["Z"])


def test_reshape_that_mixes_batch_and_features_is_rejected(tmp_path):
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(size=(1, 16, 4)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(size=(1, 16, 4)).astype(np.float32), "R"),
             numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape")]
    nodes = [helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=4),
             helper.make_node("Reshape", ["Y", "shape"], ["Yf"], name="bad_reshape")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                     ["T", "N", 4])],
                          [helper.make_tensor_value_info("Yf", TensorProto.FLOAT, ["a", "b", "c"])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "m.onnx")
    with pytest.raises(nvm.NvmConversionError, match="bad_reshape.*merge"):
        nvm.load_ir(tmp_path / "m.onnx")
