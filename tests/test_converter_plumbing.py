"""Hand-built graphs for the converter's symbolic shape propagation, state plumbing, Loop
recognition and validation, each compared with onnxruntime (or rejected where it rejects)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nvmstream as nvm
from nvmstream.converters.errors import NvmConversionError
from nvmstream.converters.onnx_import import to_ir
from onnx_util import ort_run

CORPUS = Path(__file__).resolve().parent / "corpus"
I, H = 5, 6


def _lstm_weights(seed=0, d=1):
    rng = np.random.default_rng(seed)
    return [numpy_helper.from_array(rng.normal(0, 0.5, (d, 4 * H, I)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.normal(0, 0.5, (d, 4 * H, H)).astype(np.float32), "R"),
            numpy_helper.from_array(rng.normal(0, 0.3, (d, 8 * H)).astype(np.float32), "B")]


def _model(nodes, inputs, outputs, inits, opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return m


def _i64(name, v):
    return numpy_helper.from_array(np.asarray(v, np.int64), name)


def packed_state_model():
    """silero's interface: one ``state [2, B, H]`` input holding h and c, ``stateN`` out."""
    nodes = [
        helper.make_node("Gather", ["state", "k0"], ["h"], axis=0),
        helper.make_node("Gather", ["state", "k1"], ["c"], axis=0),
        helper.make_node("Unsqueeze", ["h", "ax0"], ["h3"]),
        helper.make_node("Unsqueeze", ["c", "ax0"], ["c3"]),
        helper.make_node("LSTM", ["x", "W", "R", "B", "", "h3", "c3"], ["Y", "Yh", "Yc"],
                         hidden_size=H, name="lstm"),
        helper.make_node("Concat", ["Yh", "Yc"], ["stateN"], axis=0),
        helper.make_node("Squeeze", ["Y", "ax1"], ["y"]),
    ]
    inits = _lstm_weights() + [_i64("k0", 0), _i64("k1", 1), _i64("ax0", [0]), _i64("ax1", [1])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", I]),
                          helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "N", H])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", "N", H]),
                   helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "N", H])],
                  inits)


def test_packed_state_input_matches_onnxruntime_and_streams():
    m = packed_state_model()
    model = to_ir(m)
    rng = np.random.default_rng(1)
    feeds = {"x": rng.normal(size=(7, 3, I)).astype(np.float32),
             "state": rng.normal(0, 0.5, (2, 3, H)).astype(np.float32)}
    want = ort_run(m, feeds)
    got = model.run(feeds)
    for k in want:
        assert np.max(np.abs(got[k] - want[k])) <= 1e-5 * np.abs(want[k]).max()
    rows = {(l.initial_h.rows, l.initial_c.rows) for l in model.recurrent_layers}
    assert rows == {((0, 1), (1, 2))}
    # streaming with the same packed state equals the whole run
    s = model.stream(3, state=feeds["state"])
    x_btf = np.swapaxes(feeds["x"], 0, 1)
    steps = [s.step(x_btf[:, t]) for t in range(7)]
    whole = model.run_steps(x_btf, state=feeds["state"])
    np.testing.assert_array_equal(np.stack([st["y"] for st in steps], 1), whole["y"])


def test_packed_state_runs_on_the_engine():
    m = packed_state_model()
    prog = nvm.convert(to_ir(m))
    eng = nvm.Engine(prog, nvm.Device("ideal"))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 7, I)).astype(np.float32)
    state = rng.normal(0, 0.5, (2, 3, H)).astype(np.float32)
    want = prog.model.run_steps(x, state=state)
    got = eng.run_all(x, state=state)
    assert np.max(np.abs(got["y"] - want["y"])) <= 1e-5


def test_zero_initial_state_wider_than_hidden_is_rejected_like_onnxruntime():
    """The dynamo export of LSTM(proj_size) writes a zero initial_c of the full hidden size
    for a node whose hidden_size is the projection size."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "k1"], ["b"], axis=0),
             helper.make_node("Concat", ["one", "b", "wide"], ["shp"], axis=0),
             helper.make_node("ConstantOfShape", ["shp"], ["c0"]),
             helper.make_node("LSTM", ["x", "W", "R", "B", "", "", "c0"], ["Y"], hidden_size=H,
                              name="lstm")]
    inits = _lstm_weights() + [_i64("k1", [1]), _i64("one", [1]), _i64("wide", [H + 3])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", I])],
               [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 1, "N", H])], inits)
    with pytest.raises(Exception):
        ort_run(m, {"x": np.zeros((2, 1, I), np.float32)})
    with pytest.raises(NvmConversionError, match=r"node 'lstm' \(op LSTM\): initial_c \(zeros\) "
                                                 r"has shape .*onnxruntime rejects"):
        to_ir(m)


def test_state_input_of_the_wrong_size_is_rejected():
    m = packed_state_model()
    m.graph.input[1].type.tensor_type.shape.dim[2].dim_value = H + 1
    with pytest.raises(NvmConversionError, match="needs \\(1, batch, 6\\)"):
        to_ir(m)


def tensordot_model(time_major=True):
    """Keras's Tensordot: Reshape[-1, H] -> MatMul -> Reshape(Concat(Shape(y)[0:2], [O]))."""
    rng = np.random.default_rng(3)
    o = 4
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B"], ["Y"], hidden_size=H, name="lstm"),
             helper.make_node("Squeeze", ["Y", "ax1"], ["y3"]),
             helper.make_node("Shape", ["y3"], ["s"]),
             helper.make_node("Slice", ["s", "z", "two"], ["s2"]),
             helper.make_node("Concat", ["s2", "od"], ["shp"], axis=0),
             helper.make_node("Reshape", ["y3", "flat"], ["m"]),
             helper.make_node("MatMul", ["m", "K"], ["p"]),
             helper.make_node("Reshape", ["p", "shp"], ["out"])]
    inits = _lstm_weights() + [_i64("ax1", [1]), _i64("z", [0]), _i64("two", [2]),
                               _i64("od", [o]), _i64("flat", [-1, H]),
                               numpy_helper.from_array(rng.normal(size=(H, o)).astype(np.float32),
                                                       "K")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", I])],
                  [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["T", "N", o])], inits)


def test_merged_batch_time_axis_round_trips():
    m = tensordot_model()
    model = to_ir(m)
    x = np.random.default_rng(4).normal(size=(6, 2, I)).astype(np.float32)
    want = ort_run(m, {"x": x})["out"]
    got = model.run({"x": x})["out"]
    assert got.shape == want.shape == (6, 2, 4)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.abs(want).max()
    assert model.streamable


def test_reshape_merging_time_with_features_is_refused():
    m = tensordot_model()
    # flatten [T, B, H] -> [T, -1] keeps T but merges batch with features
    for init in m.graph.initializer:
        if init.name == "flat":
            init.CopyFrom(numpy_helper.from_array(np.array([0, -1], np.int64), "flat"))
    with pytest.raises(NvmConversionError, match="-1 would merge axes"):
        to_ir(m)


def _loop_model(scale: float):
    """A Loop over T whose body is an RNN cell ``tanh(x W + h R + b)`` scaled by ``scale``
    (scale 1: a real RNN cell; anything else: not one)."""
    rng = np.random.default_rng(5)
    Wk = rng.normal(0, 0.5, (I, H)).astype(np.float32)
    Rk = rng.normal(0, 0.5, (H, H)).astype(np.float32)
    b = rng.normal(0, 0.3, (H,)).astype(np.float32)
    body = helper.make_graph(
        [helper.make_node("Gather", ["x", "it"], ["xt"], axis=0),
         helper.make_node("MatMul", ["xt", "Wk"], ["a"]),
         helper.make_node("MatMul", ["h", "Rk"], ["r"]),
         helper.make_node("Add", ["a", "r"], ["ar"]),
         helper.make_node("Add", ["ar", "bk"], ["pre"]),
         helper.make_node("Tanh", ["pre"], ["t"]),
         helper.make_node("Mul", ["t", "sc"], ["hn"]),
         helper.make_node("Identity", ["cond"], ["cond_out"]),
         helper.make_node("Identity", ["hn"], ["scan"])],
        "body",
        [helper.make_tensor_value_info("it", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", H])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("hn", TensorProto.FLOAT, ["N", H]),
         helper.make_tensor_value_info("scan", TensorProto.FLOAT, ["N", H])],
        [numpy_helper.from_array(Wk, "Wk"), numpy_helper.from_array(Rk, "Rk"),
         numpy_helper.from_array(b, "bk"),
         numpy_helper.from_array(np.array(scale, np.float32), "sc")])
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "k0"], ["T"], axis=0),
             helper.make_node("Gather", ["s", "k1"], ["Bd"]),
             helper.make_node("Concat", ["Bd", "hd"], ["zshape"], axis=0),
             helper.make_node("ConstantOfShape", ["zshape"], ["h0"]),
             helper.make_node("Loop", ["T", "true", "h0"], ["hT", "ys"], body=body,
                              name="rnn_loop")]
    inits = [_i64("k0", 0), _i64("k1", [1]), _i64("hd", [H]),
             numpy_helper.from_array(np.array(True), "true")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", I])],
                  [helper.make_tensor_value_info("ys", TensorProto.FLOAT, ["T", "N", H]),
                   helper.make_tensor_value_info("hT", TensorProto.FLOAT, ["N", H])], inits)


def test_loop_rnn_cell_becomes_a_recurrent_layer():
    m = _loop_model(1.0)
    model = to_ir(m)
    (layer,) = model.recurrent_layers
    assert layer.kind == "RNN" and layer.hidden_size == H
    x = np.random.default_rng(6).normal(size=(5, 2, I)).astype(np.float32)
    want = ort_run(m, {"x": x})
    got = model.run({"x": x})
    for k in want:
        assert np.max(np.abs(got[k] - want[k])) <= 1e-5 * np.abs(want[k]).max()


def test_loop_that_is_not_a_cell_is_refused_with_the_loop_named():
    with pytest.raises(NvmConversionError, match=r"node 'rnn_loop' \(op Loop\): Loop is not an "
                                                 r"LSTM/GRU/RNN over the time axis"):
        to_ir(_loop_model(0.5))


def test_missing_external_data_file_is_named(tmp_path):
    src = CORPUS / "torch" / "lstm_external.ts.onnx"
    (tmp_path / src.name).write_bytes(src.read_bytes())
    with pytest.raises(NvmConversionError, match="external data file 'lstm_external.ts.onnx."
                                                 "data', which is missing"):
        nvm.load_ir(tmp_path / src.name)


def test_ir_version_of_the_installed_onnx_is_accepted():
    m = onnx.load(str(CORPUS / "torch" / "lstm_perstep.ts.onnx"))
    m.ir_version = onnx.IR_VERSION
    assert to_ir(m).recurrent_layers


def test_cli_run_feeds_states_from_npz(tmp_path):
    """`nvmstream run` feeds every model input from an .npz by name."""
    path = CORPUS / "torch" / "lstm_state_io.dynamo.onnx"
    rng = np.random.default_rng(7)
    feeds = {"x": rng.normal(size=(2, 5, 8)).astype(np.float32),
             "h0": rng.normal(0, 0.5, (2, 2, 12)).astype(np.float32),
             "c0": rng.normal(0, 0.5, (2, 2, 12)).astype(np.float32)}
    np.savez(tmp_path / "in.npz", **feeds)
    r = subprocess.run([sys.executable, "-m", "nvmstream.runtime.cli", "run", str(path),
                        "-i", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "out.npz")["y"]
    import onnxruntime as ort
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["y"], feeds)[0]
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-5 * np.abs(want).max()
    # an array that is not a model input is an error naming it, exit code 3
    np.savez(tmp_path / "bad.npz", **feeds, extra=np.zeros(3, np.float32))
    r = subprocess.run([sys.executable, "-m", "nvmstream.runtime.cli", "run", str(path),
                        "-i", str(tmp_path / "bad.npz"), "-o", str(tmp_path / "o2.npz")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and "extra" in r.stderr
    assert not (tmp_path / "o2.npz").exists()


def test_unrolled_cells_with_a_perturbed_step_are_refused():
    """torch's LSTMCell loop, unrolled over 7 steps, with one step's input weights changed: no
    cell reproduces every step, so conversion refuses (it never guesses)."""
    m = onnx.load(str(CORPUS / "torch" / "lstmcell_loop.ts.onnx"))
    w = next(i for i in m.graph.initializer if i.name == "cell.weight_ih")
    bad = numpy_helper.to_array(w) * np.float32(1.01)
    m.graph.initializer.append(numpy_helper.from_array(bad, "w_ih_step3"))
    gemms = [n for n in m.graph.node if n.op_type == "Gemm" and n.input[1] == "cell.weight_ih"]
    gemms[3].input[1] = "w_ih_step3"
    with pytest.raises(NvmConversionError, match="none of .* candidate cells"):
        to_ir(m)


def test_unrolled_cells_run_at_any_length():
    """The recognised cell is a real recurrence: at the exported length it equals onnxruntime;
    at other lengths it equals the same cell run step by step."""
    m = onnx.load(str(CORPUS / "torch" / "grucell_loop.dynamo.onnx"))
    model = to_ir(m)
    x = np.random.default_rng(8).normal(size=(7, 2, 8)).astype(np.float32)
    want = ort_run(m, {"x": x})["y"]
    assert np.max(np.abs(model.run({"x": x})["y"] - want)) <= 1e-5 * np.abs(want).max()
    longer = np.concatenate([x, x], 0)
    y = model.run({"x": longer})["y"]
    assert y.shape == (14, 2, 3)
    np.testing.assert_array_equal(y[:7], model.run({"x": x})["y"])


def test_conv1d_front_end_is_causal_with_its_warm_up():
    """Conv1d(k=3, no padding) -> ReLU -> LSTM: the output is 2 steps shorter, like
    onnxruntime's; streaming reaches the same values once the kernel has 3 frames; inspect
    says where each layer runs (the engine side: tests/test_conv_crossbar.py)."""
    from nvmstream.converters.inspect import describe, format_text
    path = CORPUS / "torch" / "conv_lstm.ts.onnx"
    model = nvm.load_ir(path)
    (out,) = model.outputs
    assert out.delay == 2
    x = np.random.default_rng(9).normal(size=(2, 6, 8)).astype(np.float32)
    import onnxruntime as ort
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    got = model.run({"x": x})["y"]
    assert got.shape == want.shape == (2, 4, 4)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.abs(want).max()
    s = model.stream(2)
    streamed = np.stack([s.step(x[:, t])["y"] for t in range(6)], 1)
    np.testing.assert_array_equal(streamed[:, 2:], got)
    text = format_text(describe(model))
    assert "Conv1d" in text and "crossbar" in text and "digital" in text
    assert "float IR only" not in text


def test_convert_refuses_a_layer_the_engine_has_no_kernel_for(monkeypatch):
    from nvmstream.converters import ir
    model = nvm.load_ir(CORPUS / "torch" / "conv_lstm.ts.onnx")
    monkeypatch.setattr(ir, "ENGINE_LAYERS", tuple(t for t in ir.ENGINE_LAYERS
                                                   if t is not ir.Conv1d))
    with pytest.raises(NvmConversionError, match=r"\(Conv1d\) runs in the float IR only"):
        nvm.convert(model)


def _if_model():
    """An If on a sample-rate input choosing between two LSTMs (silero-vad's 8/16 kHz shape)."""
    w16, w8 = _lstm_weights(10), _lstm_weights(11)
    for t in w8:
        t.name += "8"
    def branch(suffix, weights):
        return helper.make_graph(
            [helper.make_node("LSTM", ["x", "W" + suffix, "R" + suffix, "B" + suffix],
                              ["Y" + suffix], hidden_size=H, name="lstm" + suffix)],
            "b" + suffix, [], [helper.make_tensor_value_info("Y" + suffix, TensorProto.FLOAT,
                                                             ["T", 1, "N", H])])
    nodes = [helper.make_node("Equal", ["sr", "k16"], ["is16"]),
             helper.make_node("If", ["is16"], ["Y"], then_branch=branch("", None),
                              else_branch=branch("8", None), name="sr_if"),
             helper.make_node("Squeeze", ["Y", "ax1"], ["y"])]
    inits = w16 + w8 + [_i64("k16", 16000), _i64("ax1", [1])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", I]),
                          helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", "N", H])], inits)


@pytest.mark.parametrize("sr", [16000, 8000])
def test_if_on_a_fixed_input_folds_to_its_branch(sr):
    m = _if_model()
    model = to_ir(m, constants={"sr": sr})
    assert [l.name for l in model.recurrent_layers] == ["lstm" if sr == 16000 else "lstm8"]
    assert model.metadata["nvmstream.fixed_input.sr"] == str(sr)
    x = np.random.default_rng(12).normal(size=(5, 2, I)).astype(np.float32)
    want = ort_run(m, {"x": x, "sr": np.array(sr, np.int64)})["y"]
    got = model.run({"x": x})["y"]
    assert np.max(np.abs(got - want)) <= 1e-5 * np.abs(want).max()


def test_cli_convert_fixes_an_input_with_constant(tmp_path):
    import subprocess
    import sys
    src = tmp_path / "if.onnx"
    onnx.save(_if_model(), src)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "nvmstream.runtime.cli", "convert", src,
                               "--calibration", "random", *args], capture_output=True,
                              text=True, timeout=300)
    out = tmp_path / "if8.nvm"
    r = cli("--constant", "sr=8000", "-o", out)
    assert r.returncode == 0, r.stderr
    prog = nvm.load(out)
    assert [l.name for l in prog.model.recurrent_layers] == ["lstm8"]
    r = cli("--constant", "sr", "-o", tmp_path / "bad.nvm")
    assert r.returncode == 2 and "--constant 'sr': expected NAME=NUMBER" in r.stderr
    r = cli("-o", tmp_path / "bad.nvm")
    assert r.returncode == 3 and "input 'sr' is known only at run time" in r.stderr
    assert not (tmp_path / "bad.nvm").exists()


def test_if_on_a_run_time_input_is_refused_with_the_way_out():
    with pytest.raises(NvmConversionError, match=r"node 'is16' \(op Equal\): .* input 'sr' is "
                                                 r"known only at run time: give it a fixed "
                                                 r"value at conversion"):
        to_ir(_if_model())
    with pytest.raises(NvmConversionError, match="no input of that name"):
        to_ir(_if_model(), constants={"rate": 16000})


@pytest.mark.parametrize("op,x,y,want", [
    ("Mul", "T", "B", "T*B"), ("Mul", 1, "B", "B"), ("Mul", 3, 4, 12),
    ("Div", "T*B", "B", "T"), ("Div", "B*T", "B", "T"), ("Sub", "T", 1, "T-1"),
    ("Add", "T-1", 1, "T"), ("Mul", 2, "T", None), ("Sub", "T", "B", None),
])
def test_symbolic_dim_arithmetic(op, x, y, want):
    from nvmstream.converters.shape_ops import _dim_op
    assert _dim_op(op, x, y) == want


def test_pad_at_the_end_of_time_is_refused():
    """F.pad(x, (k-1, 0)) before a Conv1d folds into the Conv (causal); padding at the end of
    the time axis would need future frames."""
    m = onnx.load(str(CORPUS / "torch" / "causal_conv_gru.ts.onnx"))
    assert to_ir(m).layers[0].pad_begin == 4
    pad = next(n for n in m.graph.node if n.op_type == "Pad")
    # feed the Pad a constant pads vector [0, 0, 0, 0, 0, 4] (end of time)
    m.graph.initializer.append(_i64("end_pads", [0, 0, 0, 0, 0, 4]))
    pad.input[1] = "end_pads"
    with pytest.raises(NvmConversionError, match="only zero padding at the start of the time "
                                                 "axis"):
        to_ir(m)
