"""Keras Masking (tests/corpus keras2/ and keras3/ masked_lstm: Masking(0.0) -> LSTM(10,
return_sequences) -> Dense(4), a tf2onnx Loop): the mask is an ir.StepMask in the digital
periphery; at a masked frame the recurrent state is held and the held state is emitted.
Checked against onnxruntime with frames masked at the start, in the middle and at the end, on
the float IR and the engine (ideal == onnxruntime, int4 bit-exact against the numpy twin,
streams == whole runs with per-read noise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import nvmstream as nvm
from nvmstream.converters import ir
from nvmstream.converters.errors import NvmConversionError
from nvmstream.converters.inspect import describe, format_text
from nvmstream.converters.onnx_import import load_ir
from onnx_util import assert_engine_guarantees, assert_streams_equal_run

CORPUS = Path(__file__).resolve().parent / "corpus"
MASKED = ["keras2/masked_lstm.opset13.onnx", "keras3/masked_lstm.opset18.onnx"]


def _x(b: int, t: int, seed: int) -> np.ndarray:
    """Frames masked (all features 0) in the middle, at the end and at the start; one frame
    only partly 0 (not masked)."""
    x = np.random.default_rng(seed).standard_normal((b, t, 6)).astype(np.float32)
    x[0, 3:5] = 0.0                      # middle
    x[0, -1] = 0.0                       # end
    x[1, -3:] = 0.0                      # a padded row
    x[2, 0] = 0.0                        # start
    x[2, 5, :3] = 0.0                    # partly zero: kept
    return x


def _ort(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(["y"], {"x": x})[0]


@pytest.fixture(scope="module", params=MASKED)
def masked(request):
    path = CORPUS / request.param
    cal = np.random.default_rng(0).standard_normal((8, 12, 6)).astype(np.float32)
    cal[:, 4:6] = 0.0
    return path, nvm.convert(path, calibration=cal)


def test_mask_is_a_digital_step_and_the_layer_is_masked(masked):
    path, prog = masked
    m = prog.model
    masks = [l for l in m.layers if isinstance(l, ir.StepMask)]
    assert len(masks) == 1 and masks[0].value == 0.0 and ir.runs_on(masks[0]) == "digital"
    (rec,) = m.recurrent_layers
    assert rec.kind == "LSTM" and rec.mask == masks[0].y and rec.x == masks[0].x
    info = describe(m)
    row = next(l for l in info["layers"] if l["type"] == "StepMask")
    assert row["runs_on"] == "digital" and row["engine"]
    assert "masked" in format_text(info)
    assert m.streamable


def test_masked_frames_hold_the_state_as_onnxruntime_does(masked):
    """onnxruntime's own semantics: a kept frame's output equals onnxruntime on the row with
    its masked frames removed; a masked frame repeats the previous output (the zero state's
    output at the start). The float IR and the ideal engine give the same."""
    path, prog = masked
    x = _x(3, 9, seed=1)
    want = _ort(path, x)
    for b in range(3):
        kept = np.any(x[b] != 0.0, axis=-1)
        compact = _ort(path, np.ascontiguousarray(x[b:b + 1, kept]))[0]
        np.testing.assert_allclose(want[b, kept], compact, rtol=0, atol=1e-6)
        for t in np.flatnonzero(~kept):
            prev = want[b, t - 1] if t else _ort(path, np.ones((1, 1, 6), np.float32) * 0)[0, 0]
            np.testing.assert_array_equal(want[b, t], prev)
    scale = np.abs(want).max()
    assert np.abs(prog.model.run({"x": x})["y"] - want).max() <= 1e-5 * scale
    ideal = nvm.Engine(prog, nvm.Device("ideal")).run(x)
    assert np.abs(ideal - want).max() <= 1e-5 * scale


def test_engine_guarantees_with_masked_frames(masked):
    """ideal == onnxruntime, int4 bit-exact against the numpy twin (which holds the state at
    masked frames itself), a stream of row 0 (masked in the middle and at the end) == run."""
    path, prog = masked
    assert_engine_guarantees(prog, path, _x(3, 9, seed=2))


@pytest.mark.parametrize("profile", ["int4", "pcm"])
def test_stream_equals_run_with_masked_frames(masked, profile):
    """Per stream and per frame: single streams, step_many over streams masked at different
    frames, and a BLAS-sized batch give the whole run's bits, per-read noise included (a
    masked frame reads no crossbar, draws no noise, in every path alike)."""
    path, prog = masked
    eng = nvm.Engine(prog, nvm.Device(profile, seed=4))
    whole = assert_streams_equal_run(eng, _x(3, 9, seed=3))
    if profile == "int4":        # no per-read noise: the head re-reads the held state alike
        np.testing.assert_array_equal(whole[0, 4], whole[0, 2])
        np.testing.assert_array_equal(whole[0, 8], whole[0, 7])


def _masking_graph(path: Path, mask_value: float) -> Path:
    """Keras 2's Masking as tf2onnx writes it (Equal, Not, Cast, ReduceSum, Greater, Cast,
    Mul) in front of an ONNX LSTM node."""
    rng = np.random.default_rng(5)
    H, F = 4, 6
    inits = [numpy_helper.from_array(np.array(mask_value, np.float32), "v"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array([-1], np.int64), "axes"),
             numpy_helper.from_array((rng.standard_normal((1, 4 * H, F)) * .5).astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal((1, 4 * H, H)) * .5).astype(np.float32), "R")]
    nodes = [helper.make_node("Equal", ["x", "v"], ["eq"], name="masking/NotEqual"),
             helper.make_node("Not", ["eq"], ["ne"]),
             helper.make_node("Cast", ["ne"], ["nef"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["nef", "axes"], ["cnt"], keepdims=1),
             helper.make_node("Greater", ["cnt", "zero"], ["m"]),
             helper.make_node("Cast", ["m"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "mf"], ["xm"], name="masking/mul"),
             helper.make_node("Transpose", ["xm"], ["xt"], name="to_time_major", perm=[1, 0, 2]),
             helper.make_node("LSTM", ["xt", "W", "R"], ["y"], name="lstm", hidden_size=H)]
    g = helper.make_graph(nodes, "masking", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["B", "T", F])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["T", 1, "B", 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


def test_masking_with_zero_value_before_an_lstm_node_is_the_sequence(tmp_path):
    """x * mask with mask value 0 is x itself (a masked frame is all zeros)."""
    path = _masking_graph(tmp_path / "m0.onnx", 0.0)
    model = load_ir(path)
    # no layer reads the mask (an ONNX LSTM node has no mask input): nothing computes it
    assert [type(l).__name__ for l in model.layers] == ["Recurrent"]
    x = _x(3, 7, seed=4)
    want = _ort(path, x)
    got = model.run({"x": x})["y"]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_masking_with_another_value_is_refused_by_name(tmp_path):
    """With mask value 0.5 the masked sequence differs from the input (masked frames become
    0): refused, naming the node where it is used and the mask value."""
    path = _masking_graph(tmp_path / "m5.onnx", 0.5)
    with pytest.raises(NvmConversionError, match=r"to_time_major.*mask_value=0\.5"):
        load_ir(path)
