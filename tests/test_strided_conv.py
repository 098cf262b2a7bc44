"""A strided Conv1d over time before the recurrence (tests/corpus/torch/strided_conv_lstm: a
keyword spotter that halves the frame rate, Conv1d(k=4, stride=2) -> ReLU -> LSTM -> Linear,
both torch exporters). The recurrent layer steps at frames 3, 5, 7, ... (the Conv's outputs)
and holds its state in between; a stream returns, at a frame between two Conv outputs, the
output of the held state; ONNX-shaped outputs take every second frame from frame 3. Checked:
float IR and ideal engine == onnxruntime at odd and even lengths, int4 bit-exact against the
numpy twin, streams == whole runs with per-read noise, and the ledger charging the Conv, the
LSTM and the head only at the frames they run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import nvmstream as nvm
from nvmstream.converters import ir
from nvmstream.converters.errors import NvmConversionError
from nvmstream.converters.onnx_import import load_ir
from onnx_util import (assert_engine_guarantees, assert_streams_equal_run,
                       late_join_frame_energy_sums)

CORPUS = Path(__file__).resolve().parent / "corpus" / "torch"
FILES = ["strided_conv_lstm.ts.onnx", "strided_conv_lstm.dynamo.onnx"]
K, S = 4, 2                       # the Conv's kernel and stride: delay K - 1 = 3


def _x(b, t, seed):
    return np.random.default_rng(seed).standard_normal((b, t, 8)).astype(np.float32)


@pytest.fixture(scope="module", params=FILES)
def strided(request):
    path = CORPUS / request.param
    return path, nvm.convert(path, calibration=_x(6, 20, 0))


def test_the_conv_decimates_time(strided):
    path, prog = strided
    m = prog.model
    (conv,) = [l for l in m.layers if isinstance(l, ir.Conv1d)]
    assert (conv.stride, conv.delay) == (S, K - 1)
    (rec,) = m.recurrent_layers
    assert (m.delays[rec.x], m.strides[rec.x]) == (K - 1, S)
    assert (m.outputs[0].delay, m.outputs[0].stride) == (K - 1, S) and m.streamable
    from nvmstream.converters.inspect import describe, format_text
    assert "delay 3, stride 2" in format_text(describe(m))


@pytest.mark.parametrize("t", [4, 5, 10, 13])
def test_ideal_equals_onnxruntime(strided, t):
    path, prog = strided
    x = _x(3, t, t)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["y"], {"x": x})[0]
    assert want.shape == (3, (t - K) // S + 1, 4)
    scale = np.abs(want).max()
    got = prog.model.run({"x": x})["y"]
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5 * scale
    sess = nvm.InferenceSession(prog, "ideal")
    (got,) = sess.run(["y"], {"x": x})
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5 * scale


def test_engine_guarantees(strided):
    path, prog = strided
    assert_engine_guarantees(prog, path, _x(3, 11, 2))


@pytest.mark.parametrize("profile", ["int4", "pcm"])
def test_stream_equals_run(strided, profile):
    """Single streams, step_many and a BLAS-sized batch: the whole run's bits, per-read
    noise included; between two Conv outputs the LSTM reads nothing and draws no noise."""
    path, prog = strided
    eng = nvm.Engine(prog, nvm.Device(profile, seed=4))
    whole = assert_streams_equal_run(eng, _x(3, 11, 3))
    if profile == "int4":        # no per-read noise: a frame between outputs repeats the last
        for t in range(K, 11, S):
            np.testing.assert_array_equal(whole[:, t], whole[:, t - 1])


def test_ledger_charges_only_the_frames_that_run(strided):
    """Per row of T frames the Conv, the LSTM and the head run at frames 3, 5, ..., i.e.
    (T - 4) // 2 + 1 times (none below 4 frames), and so does the ReLU between them: whole
    runs, single streams and batched stream steps alike."""
    path, prog = strided
    eng = nvm.Engine(prog, nvm.Device("int4"))
    names = {type(l).__name__: l.name for l in prog.model.layers}
    runs = lambda t: max(0, (t - K) // S + 1)
    x = _x(2, 11, 4)
    eng.run_all(x)
    for n in ("Conv1d", "Elementwise", "Recurrent", "Dense"):
        assert eng.ledger.steps[names[n]] == 2 * runs(11), n
    eng.run_all(x[:, :3])                                # too short: nothing after the Conv
    assert eng.ledger.steps[names["Recurrent"]] == 2 * runs(11)
    eng.reset_ledger()
    s = eng.stream()
    for t in range(11):
        s.step(x[0, t])
    a, b = eng.stream(), eng.stream()
    for t in range(6):
        eng.step_many_all([a, b], x[:, t])
    led = eng.ledger
    for n in ("Conv1d", "Recurrent", "Dense"):
        assert led.steps[names[n]] == runs(11) + 2 * runs(6), n


def test_a_second_conv_after_a_strided_one_is_refused(tmp_path):
    import onnx
    m = onnx.load(str(CORPUS / "strided_conv_lstm.ts.onnx"))
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    w = next(i for i in m.graph.initializer if i.name == conv.input[1])
    # a second, identical-shape Conv over time on the first one's output (12 -> 12 channels)
    w2 = onnx.numpy_helper.from_array(np.zeros((12, 12, 2), np.float32), "w2")
    m.graph.initializer.append(w2)
    out = conv.output[0]
    conv2 = onnx.helper.make_node("Conv", [out + "_1", "w2"], [out], name="conv2",
                                  kernel_shape=[2], strides=[1])
    conv.output[0] = out + "_1"
    idx = list(m.graph.node).index(conv)
    m.graph.node.insert(idx + 1, conv2)
    path = tmp_path / "two.onnx"
    onnx.save(m, path)
    assert w.dims[0] == 12
    with pytest.raises(NvmConversionError, match=r"conv2.*after a strided Conv"):
        load_ir(path)


def test_a_last_step_pick_after_the_strided_conv_takes_the_last_conv_output(tmp_path):
    """A second output, the last step of the Conv's ReLU (no recurrence in between): at an odd
    length the last Conv output is not the last input frame; float IR and the session agree
    with onnxruntime."""
    import onnx
    m = onnx.load(str(CORPUS / "strided_conv_lstm.ts.onnx"))
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.array(-1, np.int64), "last"))
    m.graph.node.append(onnx.helper.make_node("Gather", ["/Transpose_1_output_0", "last"],
                                              ["z_last"], axis=1))
    m.graph.output.append(onnx.helper.make_tensor_value_info("z_last", onnx.TensorProto.FLOAT,
                                                             ["batch", 12]))
    path = tmp_path / "two_outputs.onnx"
    onnx.save(m, path)
    prog = nvm.convert(path, calibration=_x(4, 12, 0))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for t in (10, 11):
        x = _x(2, t, 5)
        want = sess.run(["z_last"], {"x": x})[0]
        got = prog.model.run({"x": x})["z_last"]
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
        (eng,) = nvm.InferenceSession(prog, "ideal").run(["z_last"], {"x": x})
        assert np.abs(eng - want).max() <= 1e-5 * np.abs(want).max()


def test_per_frame_energy_follows_the_stride_and_adds_up_to_the_ledger(strided):
    """A stream's frame energy: frames 0-2 (warm-up) and every frame between two Conv
    outputs cost the input-rate work only, frames 3, 5, 7, ... the whole step; the sums equal
    the ledger's figure for the stream (single and batched steps alike)."""
    path, prog = strided
    eng = nvm.Engine(prog, nvm.Device("pcm", seed=1))
    x = _x(2, 12, 6)
    s = eng.stream()
    e = []
    for t in range(12):
        s.step(x[0, t])
        e.append(s.last_energy_pJ)
    rep = eng.report("streams").analog
    assert sum(e) == pytest.approx(rep.energy_pJ_per_inference, rel=1e-9)
    assert s.energy_pJ == pytest.approx(rep.energy_pJ_per_inference, rel=1e-9)
    runs = [t >= K - 1 and (t - K + 1) % S == 0 for t in range(12)]
    full = max(e)
    assert full == pytest.approx(eng.step_energy_pJ)
    assert all((v == full) == r for v, r in zip(e, runs))
    assert len({v for v, r in zip(e, runs) if not r}) == 1      # the idle frames alike
    _, sums = late_join_frame_energy_sums(eng, x, 3, early=2, join_at=5)
    rep = eng.report("streams").analog
    assert sums.sum() == pytest.approx(rep.energy_pJ_per_inference * 3, rel=1e-9)
    assert eng.stream_energy_pJ(12) == pytest.approx(sum(e), rel=1e-12)
    assert eng.stream_energy_pJ(7) == pytest.approx(sum(e[:7]), rel=1e-12)
