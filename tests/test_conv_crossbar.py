"""Conv1d over time on crossbars (im2col): the window of K frames times the unrolled kernel
[O, K*C] on its own tiles, DAC and ADC; ideal == onnxruntime, int4 bit-exact against the
numpy twin (tests/naive.py), streaming == whole runs (ring of the last (K-1)*dilation
frames; a valid Conv's undefined leading steps skipped by the recurrent layer after it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nvmstream as nvm
from naive import int_twin
from nvmstream.converters import ir
from nvmstream.converters.inspect import describe
from nvmstream.runtime.ledger import step_costs
from onnx_util import assert_engine_guarantees, ort_run

CORPUS = Path(__file__).resolve().parent / "corpus" / "torch"
CONV_MODELS = ["conv_lstm.ts.onnx", "conv_lstm.dynamo.onnx", "causal_conv_gru.ts.onnx",
               "causal_conv_gru.dynamo.onnx"]
C_IN, K1, DIL1, PAD1, O1, K2, O2, H = 20, 3, 2, 1, 24, 2, 10, 9


def _conv_gru_onnx(path: Path) -> Path:
    """x[B, T, 20] -> Conv(k=3, dilation 2, 1 frame of begin padding: 3 undefined steps) ->
    Relu -> Conv(k=2, causal) -> GRU(9) -> Y[T, B, 9]: two stacked Convs over time, the first
    wider than a 16-row tile once unrolled (60 inputs)."""
    rng = np.random.default_rng(11)
    w1 = (rng.standard_normal((O1, C_IN, K1)) * 0.2).astype(np.float32)
    b1 = (rng.standard_normal(O1) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((O2, O1, K2)) * 0.2).astype(np.float32)
    b2 = (rng.standard_normal(O2) * 0.1).astype(np.float32)
    W = (rng.standard_normal((1, 3 * H, O2)) * 0.4).astype(np.float32)
    R = (rng.standard_normal((1, 3 * H, H)) * 0.4).astype(np.float32)
    B = (rng.standard_normal((1, 6 * H)) * 0.1).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (W, "W"), (R, "R"), (B, "B"),
              (np.array([1], np.int64), "ax1"))]
    nodes = [
        helper.make_node("Transpose", ["x"], ["xc"], perm=[0, 2, 1]),
        helper.make_node("Conv", ["xc", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[K1],
                         dilations=[DIL1], pads=[PAD1, 0]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", kernel_shape=[K2],
                         pads=[K2 - 1, 0]),
        helper.make_node("Transpose", ["c2"], ["seq"], perm=[2, 0, 1]),
        helper.make_node("GRU", ["seq", "W", "R", "B"], ["Y"], name="gru", hidden_size=H,
                         linear_before_reset=1),
        helper.make_node("Squeeze", ["Y", "ax1"], ["y"]),
    ]
    g = helper.make_graph(nodes, "conv_gru",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", C_IN])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", "B", H])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


@pytest.fixture(scope="module")
def conv_gru(tmp_path_factory):
    path = _conv_gru_onnx(tmp_path_factory.mktemp("conv") / "conv_gru.onnx")
    cal = np.random.default_rng(5).standard_normal((6, 24, C_IN)).astype(np.float32)
    return path, nvm.convert(path, calibration=cal)


def _x(b, t, f, seed):
    return np.random.default_rng(seed).standard_normal((b, t, f)).astype(np.float32)


def test_conv_layers_sit_on_crossbars_as_im2col(conv_gru):
    path, prog = conv_gru
    conv = [l for l in prog.model.layers if isinstance(l, nvm.converters.ir.Conv1d)]
    assert [(c.taps, c.dilation, c.delay) for c in conv] == [(K1, DIL1, 3), (K2, 1, 0)]
    # the unrolled kernel: column j*C + c holds W[:, c, j]
    w = conv[0].W
    assert np.array_equal(conv[0].im2col[:, 2 * C_IN + 5], w[:, 5, 2])
    eng = nvm.Engine(prog, nvm.Device("int4", overrides=["tile.rows=16"]))
    segs = {s.layer: s for s in eng.plan.segments}
    assert (segs["conv1"].n_in, segs["conv1"].n_out) == (K1 * C_IN, O1)
    assert segs["conv1"].row_tiles == 4 and segs["conv1"].dac_bits > 0 and segs["conv1"].adc_bits > 0
    info = {l["name"]: l for l in describe(prog.model)["layers"]}
    assert info["conv1"]["runs_on"] == "crossbar" and info["conv1"]["engine"]
    assert info["conv1"]["tiles"] == 1 and info["conv1"]["macs_per_step"] == O1 * C_IN * K1
    unit, _ = step_costs(prog.model, eng.plan)
    # one window read per step: 4 row tiles of DACs, one ADC conversion per tile column
    assert unit["conv1"].macs == O1 * C_IN * K1
    assert unit["conv1"].adc_conversions == 4 * O1
    assert unit["conv1"].state_reads_bytes > 0


def test_ideal_equals_onnxruntime(conv_gru):
    path, prog = conv_gru
    x = _x(3, 17, C_IN, 1)
    want = ort_run(onnx.load(path), {"x": x})["y"]          # [T - 3, B, H]
    got = nvm.Engine(prog, nvm.Device("ideal")).run(x)       # [B, T, H] per step
    assert want.shape == (17 - 3, 3, H)
    got = np.swapaxes(got[:, 3:], 0, 1)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


@pytest.mark.parametrize("tile_rows", [256, 16])
def test_int4_bit_exact_against_numpy_twin(conv_gru, tile_rows):
    path, prog = conv_gru
    eng = nvm.Engine(prog, nvm.Device("int4", overrides=[f"tile.rows={tile_rows}"]))
    assert eng.plan.exact
    x = _x(2, 9, C_IN, 2)
    got = eng.run(x)
    want = int_twin(prog.model, {s.key: s for s in eng.plan.segments}, x)["y"]
    np.testing.assert_array_equal(got, want)
    assert np.all(got[:, :3] == 0)                 # the GRU skips the undefined steps
    ref = prog.model.run_steps(x)["y"]
    assert np.max(np.abs(got - ref)) > 1e-4        # a real quantized path


@pytest.mark.parametrize("profile", ["int4", "pcm"])
def test_stream_equals_run(conv_gru, profile):
    """Frames one at a time (the ring shorter and longer than a call), several streams at
    once through step_many, and BLAS-sized batches: the same bits as the whole run, per-read
    noise included (each stream owns its random states)."""
    path, prog = conv_gru
    eng = nvm.Engine(prog, nvm.Device(profile, seed=4, overrides=["tile.rows=16"]))
    x = _x(3, 11, C_IN, 3)
    whole = eng.run(x, seed=20)
    for b in range(3):
        s = eng.stream(seed=20 + b)
        ys = np.stack([s.step(x[b, t]) for t in range(11)])
        np.testing.assert_array_equal(ys, whole[b])
    ss = [eng.stream(seed=20 + b) for b in range(3)]
    ys = np.stack([eng.step_many(ss, x[:, t]) for t in range(11)], 1)
    np.testing.assert_array_equal(ys, whole)
    big = eng.run(np.repeat(x, 7, 0), seed=0)      # 21 rows: recurrent products by BLAS
    np.testing.assert_array_equal(big[20], eng.run(x[2:3], seed=20)[0])


@pytest.mark.parametrize("name", CONV_MODELS)
def test_corpus_conv_front_ends_on_the_engine(name):
    path = CORPUS / name
    x = _x(2, 12, 8, 4)
    prog = nvm.convert(path, calibration=_x(8, 30, 8, 5))
    assert_engine_guarantees(prog, path, x)


@pytest.mark.parametrize("votes", [1, 3])
def test_ledger_does_not_charge_the_recurrent_warm_up(conv_gru, votes):
    """After a valid Conv (3 undefined leading frames) the GRU runs only from frame 3 on; the
    ledger charges it exactly those steps, for whole runs, single-stream steps and batched
    stream steps alike, while the Convs are charged every frame."""
    _, prog = conv_gru
    eng = nvm.Engine(prog, nvm.Device("int4"), votes=votes)
    gru = next(l.name for l in prog.model.layers if isinstance(l, ir.Recurrent))
    conv = next(l.name for l in prog.model.layers if isinstance(l, ir.Conv1d))
    x = _x(2, 9, C_IN, 4)
    eng.run_all(x)
    assert eng.ledger.steps[gru] == 2 * (9 - 3) * votes
    assert eng.ledger.steps[conv] == 2 * 9 * votes
    eng.run_all(x[:, :2])                          # shorter than the warm-up: GRU never runs
    assert eng.ledger.steps[gru] == 2 * (9 - 3) * votes
    eng.reset_ledger()
    s = eng.stream()
    for t in range(9):
        s.step(x[0, t])
    a, b = eng.stream(), eng.stream()
    for t in range(5):
        eng.step_many_all([a, b], x[:, t])
    c = eng.stream()                               # joins late: its own warm-up
    for t in range(5, 9):
        eng.step_many_all([a, b, c], np.stack([x[0, t], x[1, t], x[0, t]]))
    led = eng.ledger
    assert led.steps[gru] == ((9 - 3) + 2 * (9 - 3) + (4 - 3)) * votes
    assert led.steps[conv] == (9 + 2 * 9 + 4) * votes
