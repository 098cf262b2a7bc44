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
from onnx_util import (assert_engine_guarantees, assert_streams_equal_run,
                       late_join_frame_energy_sums)

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


# ------------------------------------------------------------------ energy of masked frames
def _kept(x: np.ndarray, lens=None) -> np.ndarray:
    """Per row, the frames a masked recurrent layer runs: not all features 0, within length."""
    kept = np.any(x != 0.0, axis=-1)
    if lens is not None:
        kept &= np.arange(x.shape[1])[None, :] < np.asarray(lens)[:, None]
    return kept


def _step_price(eng, layer: str) -> tuple[float, float]:
    """Energy (pJ) and latency (ns) of one step of ``layer`` for all K replicas, priced from
    the ledger's unit counts alone (every other layer at 0 steps: the leakage of every tile
    over that layer's time only): what a masked frame saves."""
    from nvmstream.devices import energy as E
    led, k = eng.ledger, eng.votes
    one = {}
    for n, u in led.unit.items():
        runs = k if n == layer else 0
        one[n] = u.scaled(runs)
        one[n].steps, one[n].vote_replicas = runs, max(runs - 1, 0)
    r = E.price(one, led.geometry, eng.device.profile, inferences=1, steps_per_inference=1)
    return r.energy_pJ_per_inference, r.latency_ns_per_inference


@pytest.mark.parametrize("votes", [1, 3])
def test_masked_frames_are_not_charged_to_the_recurrent_layer(masked, votes):
    """Whole runs (run_all with true lengths, predict): the LSTM's ledger steps are the
    unmasked frames within each row's length x votes (masked at the start, in the middle, at
    the end; a row's masked frames past its length count once, as padding), the mask and the
    Dense head (which re-reads the held output) every frame x votes; the energy and latency
    of the run are those of the same run with no frame masked minus exactly one recurrent
    step's price per masked frame."""
    path, prog = masked
    (rec,) = prog.model.recurrent_layers
    x = _x(3, 9, seed=5)
    lens = np.array([9, 6, 9])
    full = x.copy()
    full[x == 0.0] = 0.25                                 # the same frames, none masked
    eng = nvm.Engine(prog, nvm.Device("pcm", seed=1), votes=votes)
    kept = _kept(x, lens)
    m = int(lens.sum() - kept.sum())
    assert m == 4                                          # row 0: 3, row 1: 0, row 2: 1
    for call in (lambda a: eng.run_all(a, lens=lens), lambda a: eng.predict(a, lens=lens)):
        got = {}
        for name, a in (("masked", x), ("full", full)):
            eng.reset_ledger()
            call(a)
            steps = eng.ledger.steps
            want = kept.sum() if name == "masked" else lens.sum()
            assert steps[rec.name] == votes * want
            assert all(v == votes * lens.sum() for n, v in steps.items() if n != rec.name)
            r = eng.report("runs").analog
            got[name] = (r.energy_pJ_per_inference * 3, r.latency_ns_per_inference * 3)
        e1, l1 = _step_price(eng, rec.name)
        assert e1 > 0 and l1 > 0
        assert got["masked"][0] == pytest.approx(got["full"][0] - m * e1, rel=1e-9)
        assert got["masked"][1] == pytest.approx(got["full"][1] - m * l1, rel=1e-9)


@pytest.mark.parametrize("votes", [1, 3])
def test_per_frame_energy_of_masked_frames_adds_up_to_the_ledger(masked, votes):
    """Single steps: a masked frame costs the unmasked frame's price minus one recurrent
    step, its latency likewise; the per-frame figures sum to the ledger's (energy and
    latency), ``Stream.energy_pJ`` and ``stream_energy_pJ(frames, masked)`` agree. Batched
    steps of streams joining late (fused: few rows, and BLAS-sized: >= 16 rows): per-stream
    sums equal the ledger's total, and the LSTM's steps are the unmasked frames x votes."""
    path, prog = masked
    (rec,) = prog.model.recurrent_layers
    eng = nvm.Engine(prog, nvm.Device("pcm", seed=1), votes=votes)
    x = _x(3, 9, seed=6)
    e1, l1 = _step_price(eng, rec.name)
    for b in range(3):
        eng.reset_ledger()
        s = eng.stream()
        e, lat, flags = [], [], []
        for t in range(9):
            s.step(x[b, t])
            e.append(s.last_energy_pJ)
            lat.append(s.last_latency_ns)
            flags.append(s.last_masked)
        masked_at = ~_kept(x[b:b + 1])[0]
        assert flags == masked_at.tolist()
        for t in range(9):
            if masked_at[t]:
                assert e[t] == pytest.approx(eng.frame_energy_pJ(t) - e1, rel=1e-12)
                assert lat[t] == pytest.approx(eng.frame_latency_ns(t) - l1, rel=1e-12)
                assert e[t] == eng.frame_energy_pJ(t, masked=True)
            else:
                assert e[t] == eng.step_energy_pJ
        rep = eng.report("streams").analog
        assert eng.ledger.steps[rec.name] == votes * int((~masked_at).sum())
        assert sum(e) == pytest.approx(rep.energy_pJ_per_inference, rel=1e-9)
        assert sum(lat) == pytest.approx(rep.latency_ns_per_inference, rel=1e-9)
        assert s.energy_pJ == pytest.approx(sum(e), rel=1e-12)
        assert eng.stream_energy_pJ(9, masked_at) == pytest.approx(sum(e), rel=1e-12)
    fused, batched = 2, -(-16 // votes)                   # streams x votes < 16, >= 16
    for n in (fused, batched):
        streams, sums = late_join_frame_energy_sums(eng, x, n, early=n // 2, join_at=2)
        rep = eng.report("streams").analog
        assert sums.sum() == pytest.approx(rep.energy_pJ_per_inference * n, rel=1e-9)
        assert [st.energy_pJ for st in streams] == pytest.approx(list(sums), rel=1e-12)
        ran = sum(int(_kept(x[i % 2:i % 2 + 1, (0 if i < n // 2 else 2):]).sum())
                  for i in range(n))
        assert eng.ledger.steps[rec.name] == votes * ran
    with pytest.raises(ValueError, match="1 mask"):
        eng.frame_energy_pJ(0, masked=2)
    # masked single steps not yet folded into the ledger are forgotten by reset_ledger too
    s = eng.stream()
    for t in range(5):
        s.step(x[0, t])                                   # frames 3, 4 masked
    eng.reset_ledger()
    s.step(x[0, 5])
    assert eng.ledger.steps[rec.name] == votes


def test_server_replies_charge_masked_frames_as_the_ledger_does(masked, tmp_path):
    """A real server on loopback: per-frame energies of streams fed masked frames (one
    ``batch`` message per frame for several streams, votes 1 and 3) equal the in-process
    stream's, masked frames cost less, and each stream's summary (energy, latency) is the
    in-process ledger's figure for it."""
    from nvmstream.runtime.client import Client
    from server_util import ServerProcess
    path, prog = masked
    model = tmp_path / "masked.nvm"
    prog.save(model)
    x = _x(3, 9, seed=7)
    with ServerProcess(model, "--profile", "pcm") as srv, Client(srv.endpoint,
                                                               timeout_s=60) as c:
        for votes in (1, 3):
            ss = [c.open(seed=i, votes=votes) for i in range(6)]
            reps = [[] for _ in ss]
            for t in range(9):
                c.send_frames([(s, x[i % 3, t]) for i, s in enumerate(ss)])
                for i, s in enumerate(ss):
                    reps[i].append(s.recv())
            summaries = [s.close() for s in ss]
            sums = [sm["e_pJ"] for sm in summaries]
            eng = nvm.Engine(nvm.load(model), nvm.Device("pcm"), votes=votes)
            for i in range(3):
                eng.reset_ledger()
                st = eng.stream(seed=i)
                want = []
                for t in range(9):
                    st.step(x[i, t])
                    want.append(st.last_energy_pJ)
                got = [r.e_pJ for r in reps[i]]
                assert got == pytest.approx(want, rel=1e-12)
                masked_at = ~_kept(x[i:i + 1])[0]
                assert all((g < eng.step_energy_pJ) == m for g, m in zip(got, masked_at))
                rep = eng.report("streams").analog
                assert sums[i] == pytest.approx(rep.energy_pJ_per_inference, rel=1e-9)
                assert summaries[i]["lat_ns"] == pytest.approx(rep.latency_ns_per_inference,
                                                               rel=1e-9)
                assert sums[i + 3] == pytest.approx(sums[i], rel=1e-12)
