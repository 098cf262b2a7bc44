"""Frame models beyond silero-vad: a hand-built ONNX graph whose input is one frame
``[B, 32]`` per call (no time axis), with strided, padded and dilated Convs over the frame's
positions, a one-step LSTM whose h and c come in and go out as separate inputs/outputs, and a
Dense head. The float IR and the engine (ideal) equal onnxruntime called frame by frame with
the states fed back; int4 is bit-exact against the numpy twin; streams equal whole runs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import nvmstream as nvm
from naive import int_twin
from nvmstream.converters import ir
from nvmstream.converters.onnx_import import load_ir

F, H = 32, 6


def _frame_model(path):
    rng = np.random.default_rng(5)
    w1 = (rng.standard_normal((4, 1, 5)) * 0.4).astype(np.float32)
    b1 = (rng.standard_normal(4) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((5, 4, 3)) * 0.3).astype(np.float32)
    w3 = (rng.standard_normal((8, 5, 4)) * 0.3).astype(np.float32)
    W = (rng.standard_normal((1, 4 * H, 8)) * 0.4).astype(np.float32)
    R = (rng.standard_normal((1, 4 * H, H)) * 0.4).astype(np.float32)
    B = (rng.standard_normal((1, 8 * H)) * 0.1).astype(np.float32)
    wd = (rng.standard_normal((H, 2)) * 0.5).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (w1, "w1"), (b1, "b1"), (w2, "w2"), (w3, "w3"), (W, "W"), (R, "R"), (B, "B"),
        (wd, "wd"), (np.array([1], np.int64), "a1"), (np.array([0], np.int64), "a0"),
        (np.array([2], np.int64), "a2"))]
    nodes = [
        helper.make_node("Unsqueeze", ["x", "a1"], ["x1"]),                   # [B, 1, 32]
        helper.make_node("Conv", ["x1", "w1", "b1"], ["c1"], kernel_shape=[5], strides=[2],
                         pads=[2, 2]),                                         # [B, 4, 16]
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3], dilations=[2],
                         pads=[1, 2]),                                         # [B, 5, 15]
        helper.make_node("Tanh", ["c2"], ["t2"]),
        helper.make_node("Conv", ["t2", "w3"], ["c3"], kernel_shape=[4], strides=[5]),  # [B,8,3]
        helper.make_node("ReduceMean", ["c3"], ["m3"], axes=[2], keepdims=0),  # unsupported
    ]
    return inits, nodes


def _model(path):
    inits, nodes = _frame_model(path)
    rng = np.random.default_rng(6)
    w4 = (rng.standard_normal((8, 8, 3)) * 0.3).astype(np.float32)
    inits.append(numpy_helper.from_array(w4, "w4"))
    nodes = nodes[:-1] + [
        helper.make_node("Conv", ["c3", "w4"], ["c4"], kernel_shape=[3]),    # [B, 8, 1]
        helper.make_node("Squeeze", ["c4", "a2"], ["s4"]),                     # [B, 8]
        helper.make_node("Unsqueeze", ["s4", "a0"], ["seq"]),                  # [1, B, 8]
        helper.make_node("LSTM", ["seq", "W", "R", "B", "", "h0", "c0"], ["Y", "hn", "cn"],
                         hidden_size=H),
        helper.make_node("Squeeze", ["hn", "a0"], ["h"]),
        helper.make_node("MatMul", ["h", "wd"], ["y"]),
    ]
    g = helper.make_graph(
        nodes, "frame",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", F]),
         helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "B", H]),
         helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, "B", H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 2]),
         helper.make_tensor_value_info("hn", TensorProto.FLOAT, [1, "B", H]),
         helper.make_tensor_value_info("cn", TensorProto.FLOAT, [1, "B", H])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


@pytest.fixture(scope="module")
def frame_onnx(tmp_path_factory):
    return _model(tmp_path_factory.mktemp("frame") / "frame.onnx")


def _reference(path, x, h0, c0):
    """onnxruntime one frame per call, hn/cn fed back as h0/c0; outputs stacked per call."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = {"y": [], "hn": [], "cn": []}
    for t in range(x.shape[1]):
        y, h0, c0 = sess.run(["y", "hn", "cn"], {"x": x[:, t], "h0": h0, "c0": c0})
        outs["y"].append(y), outs["hn"].append(h0), outs["cn"].append(c0)
    return {k: np.stack(v) for k, v in outs.items()}


def _inputs(b, t, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((b, t, F)).astype(np.float32),
            (0.5 * rng.standard_normal((1, b, H))).astype(np.float32),
            (0.5 * rng.standard_normal((1, b, H))).astype(np.float32))


def test_float_ir_and_engine_equal_onnxruntime(frame_onnx):
    model = load_ir(frame_onnx)
    assert model.input.frame and model.input.features == F
    convs = [l for l in model.layers if isinstance(l, ir.FrameConv)]
    assert [(l.stride, l.dilation, l.pad_begin, l.pad_end, l.out_positions) for l in convs] == \
        [(2, 1, 2, 2, 16), (1, 2, 1, 2, 15), (5, 1, 0, 0, 3), (1, 1, 0, 0, 1)]
    x, h0, c0 = _inputs(3, 7, 1)
    want = _reference(frame_onnx, x, h0, c0)
    got = model.run({"x": x, "h0": h0, "c0": c0})
    sess = nvm.InferenceSession(nvm.convert(model, calibration=x), "ideal")
    eng = dict(zip(["y", "hn", "cn"], sess.run(["y", "hn", "cn"], {"x": x, "h0": h0,
                                                                   "c0": c0})))
    for n in want:
        scale = np.abs(want[n]).max()
        assert got[n].shape == want[n].shape == eng[n].shape
        assert np.abs(got[n] - want[n]).max() <= 1e-5 * scale
        assert np.abs(eng[n] - want[n]).max() <= 1e-5 * scale
    one = model.run({"x": x[:, 0], "h0": h0, "c0": c0})     # one call: ONNX shapes
    assert one["y"].shape == (3, 2) and one["hn"].shape == (1, 3, H)


def test_stream_starts_from_zero_state_and_equals_whole_run(frame_onnx):
    model = load_ir(frame_onnx)
    x, _, _ = _inputs(2, 6, 2)
    z = np.zeros((1, 2, H), np.float32)
    want = _reference(frame_onnx, x, z, z)
    got = model.run({"x": x})                     # states left out: zeros
    assert np.abs(got["y"] - want["y"]).max() <= 1e-5 * np.abs(want["y"]).max()
    eng = nvm.Engine(nvm.convert(model, calibration=x), nvm.Device("pcm", seed=1))
    whole = eng.run_all(x, seed=4)
    streams = [eng.stream(seed=4 + i) for i in range(2)]
    steps = [eng.step_many_all(streams, x[:, t]) for t in range(6)]
    for n in whole:
        np.testing.assert_array_equal(np.stack([s[n] for s in steps], 1), whole[n])


def test_int4_bit_exact_against_numpy_twin(frame_onnx):
    model = load_ir(frame_onnx)
    x, _, _ = _inputs(2, 5, 3)
    prog = nvm.convert(model, calibration=x)
    eng = nvm.Engine(prog, nvm.Device("int4", overrides=["tile.rows=16"]))
    assert eng.plan.exact
    got = eng.run_all(x)
    want = int_twin(prog.model, {s.key: s for s in eng.plan.segments}, x)
    for n in ("y", "hn", "cn"):
        np.testing.assert_array_equal(got[n], want[n])


def test_mean_over_the_positions_of_a_frame_is_refused_by_node(tmp_path):
    """A mean over the positions of a [B, C, P] frame (one value per channel: not the whole
    feature vector) is refused, naming the node, rather than averaged over C*P values."""
    inits, nodes = _frame_model(None)
    rng = np.random.default_rng(7)
    inits += [numpy_helper.from_array((rng.standard_normal((1, 4 * H, 8)) * .4)
                                      .astype(np.float32), "W2"),
              numpy_helper.from_array((rng.standard_normal((1, 4 * H, H)) * .4)
                                      .astype(np.float32), "R2")]
    nodes = nodes + [helper.make_node("Unsqueeze", ["m3", "a0"], ["seq"]),
                     helper.make_node("LSTM", ["seq", "W2", "R2"], ["Y", "hn"], hidden_size=H)]
    g = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["B", F])], [helper.make_tensor_value_info(
            "hn", TensorProto.FLOAT, [1, "B", H])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "bad.onnx"
    onnx.save(m, path)
    with pytest.raises(nvm.NvmConversionError, match=r"ReduceMean.*only the feature axis"):
        load_ir(path)
