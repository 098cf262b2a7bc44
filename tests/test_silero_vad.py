"""silero-vad end to end: its shipped ONNX file (tests/corpus/silero/) converted as a frame
model (one call = one 512-sample chunk + 64 samples of context = one LSTM step; the packed
state carried by the stream), run on real audio (the shipped keyword WAVs and espeak-ng speech
with silence, demos/data/vad_speech.wav) against onnxruntime called chunk by chunk with its
state fed back, bit-exact against the numpy twin on int4, and served over ZeroMQ."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import nvmstream as nvm
from nvmstream.converters.onnx_import import load_ir
from nvmstream.runtime.client import Client
from nvmstream.runtime.frontend import context_frames, read_wav
from naive import int_twin
from server_util import ServerProcess, reference_outputs

REPO = Path(__file__).resolve().parent.parent
SILERO = REPO / "tests" / "corpus" / "silero" / "silero_vad_16k_op15.onnx"
DATA = REPO / "demos" / "data"
SPEECH = DATA / "vad_speech.wav"
KEYWORDS = sorted(e["file"] for e in json.loads((DATA / "keywords_wav" / "manifest.json")
                                                  .read_text()))
FRAME = 576
#: the raw-PCM front end `convert --sample-rate 16000 --frame-context 64` writes
RAW = {"sample_rate_hz": 16000, "win_length": FRAME, "hop_length": 512, "kind": "raw"}


def _frames(path: Path) -> np.ndarray:
    pcm, rate = read_wav(path, 16000)
    return context_frames(pcm)                      # [T, 576]


def _ort_probs(frames: np.ndarray) -> np.ndarray:
    """onnxruntime, one chunk per call, the state output fed back: probabilities [B, T]."""
    sess = ort.InferenceSession(str(SILERO), providers=["CPUExecutionProvider"])
    frames = frames if frames.ndim == 3 else frames[None]
    state = np.zeros((2, frames.shape[0], 128), np.float32)
    out = []
    for t in range(frames.shape[1]):
        p, state = sess.run(None, {"input": frames[:, t], "state": state,
                                   "sr": np.array(16000, np.int64)})
        out.append(p[:, 0])
    return np.stack(out, 1)


@pytest.fixture(scope="module")
def model():
    return load_ir(SILERO, constants={"sr": 16000}, frame_size=FRAME)


@pytest.fixture(scope="module")
def prog(model):
    cal = np.stack([_frames(DATA / "keywords_wav" / f)[:30] for f in KEYWORDS[:4]])
    return nvm.convert(model, calibration=cal)


@pytest.fixture(scope="module")
def speech():
    x = _frames(SPEECH)
    return x, _ort_probs(x)[0]


def test_the_speech_wav_has_speech_and_silence(speech):
    """The reference itself: silence for the first second (31 chunks), speech after it."""
    _, ref = speech
    assert ref[:30].max() < 0.1
    assert (ref > 0.5).sum() >= 40 and (ref < 0.5).sum() >= 40


def test_frame_model_shape(model):
    assert model.input.frame and model.input.features == FRAME
    assert [o.name for o in model.outputs] == ["output", "stateN"]
    assert model.streamable
    kinds = {type(l).__name__ for l in model.layers}
    assert {"FrameConv", "Recurrent", "FeaturePad", "Unary", "Binary"} <= kinds
    # a symbolic frame length needs frame_size=; the error says so
    with pytest.raises(nvm.NvmConversionError, match="frame_size"):
        load_ir(SILERO, constants={"sr": 16000})
    # the sample rate used as a value: the error names the input and the flag that fixes it
    with pytest.raises(nvm.NvmConversionError, match="model input 'sr'.*--constant sr=VALUE"):
        load_ir(SILERO, frame_size=FRAME)


def test_ideal_engine_stream_equals_onnxruntime_on_speech(prog, speech):
    x, ref = speech
    eng = nvm.Engine(prog, nvm.Device("ideal"))
    s = eng.stream()
    got = np.array([s.step(x[t])[0] for t in range(x.shape[0])])   # the first output
    assert np.max(np.abs(got - ref)) <= 1e-5
    np.testing.assert_array_equal(got > 0.5, ref > 0.5)


def test_keyword_wavs_as_a_batch_agree_with_onnxruntime(prog):
    """The ten keyword clips (1 s, 32 chunks each) as one batch of calls through
    InferenceSession (ONNX shapes, stacked per call): probabilities and decisions."""
    x = np.stack([_frames(DATA / "keywords_wav" / f) for f in KEYWORDS])    # [10, 32, 576]
    ref = _ort_probs(x)
    sess = nvm.InferenceSession(prog, "ideal")
    out, state = sess.run(None, {"input": x})
    assert out.shape == (x.shape[1], 10, 1) and state.shape == (x.shape[1], 2, 10, 128)
    got = out[:, :, 0].T
    assert np.max(np.abs(got - ref)) <= 1e-5
    np.testing.assert_array_equal(got > 0.5, ref > 0.5)
    assert (ref > 0.5).any(axis=1).all()          # every spoken word is found


def test_int4_bit_exact_against_numpy_twin(prog, speech):
    x, _ = speech
    eng = nvm.Engine(prog, nvm.Device("int4"))
    assert eng.plan.exact
    xs = x[None, 20:44]                              # silence into speech
    got = eng.run_all(xs)
    want = int_twin(prog.model, {s.key: s for s in eng.plan.segments}, xs)
    for name in ("output", "stateN"):
        np.testing.assert_array_equal(got[name], want[name])
    ref = prog.model.run_steps(xs)["output"]
    assert np.max(np.abs(got["output"] - ref)) > 1e-4     # a real quantized path


def test_noisy_stream_equals_whole_run(prog, speech):
    """pcm (per-read noise): chunk-by-chunk streams equal the whole run bit for bit, also in
    a batch of two streams."""
    x, _ = speech
    xs = np.stack([x[25:40], x[60:75]])
    eng = nvm.Engine(prog, nvm.Device("pcm", seed=2))
    whole = eng.run_all(xs, seed=5)
    streams = [eng.stream(seed=5 + i) for i in range(2)]
    steps = [eng.step_many_all(streams, xs[:, t]) for t in range(xs.shape[1])]
    for name in ("output", "stateN"):
        np.testing.assert_array_equal(np.stack([s[name] for s in steps], 1), whole[name])


def test_served_over_zeromq(prog, speech, tmp_path):
    """A real server on loopback streams the speech WAV's chunks: replies equal the
    in-process engine bit for bit, carry no class (the output is a probability, not class
    scores), and the speech decisions equal onnxruntime's."""
    x, ref = speech
    path = tmp_path / "silero.nvm"
    prog.save(path)
    with ServerProcess(path, "--profile", "ideal") as srv, Client(srv.endpoint,
                                                                  timeout_s=60) as c:
        s = c.open(seed=3)
        assert s.info["outputs"] == [["output", 1], ["stateN", 256]]
        reps = []
        for t in range(x.shape[0]):                   # at most 8 chunks in flight
            s.send(x[t])
            if t >= 8:
                reps.append(s.recv())
        reps += [s.recv() for _ in range(x.shape[0] - len(reps))]
        s.close()
    assert all(r.cls == [] for r in reps)             # one value per frame: no classes
    got = np.concatenate([r.y for r in reps])
    want, _, _ = reference_outputs(path, "ideal", 3, x)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[:, 0] > 0.5, ref > 0.5)


def test_demo_runs_as_printed():
    """demos/silero_vad.py (a real subprocess: convert, serve, stream over ZeroMQ) on a
    one-second keyword clip: exit 0 (the ideal profile's decisions equal onnxruntime's)."""
    import subprocess
    import sys
    wav = DATA / "keywords_wav" / KEYWORDS[0]
    r = subprocess.run([sys.executable, str(REPO / "demos" / "silero_vad.py"), "--wav",
                        str(wav)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "$ nvmstream convert tests/corpus/silero/silero_vad_16k_op15.onnx" in r.stdout
    ideal = next(ln for ln in r.stdout.splitlines() if ln.startswith("ideal "))
    assert "100.0%" in ideal


def test_cli_convert_needs_the_frame_size(tmp_path):
    """`nvmstream convert` (a real subprocess): with --constant sr=16000 --frame-size 576 it
    writes the model (with --sample-rate 16000 --frame-context 64: its raw-PCM front end);
    without the frame size it exits non-zero with one line naming it and
    writes nothing; a frame size for a sequence model is refused."""
    import subprocess
    import sys
    cal = tmp_path / "cal.npy"
    np.save(cal, _frames(DATA / "keywords_wav" / KEYWORDS[0])[None])
    cli = [sys.executable, "-m", "nvmstream.runtime.cli", "convert"]
    out = tmp_path / "s.nvm"
    r = subprocess.run(cli + [str(SILERO), "--constant", "sr=16000", "--calibration", str(cal),
                              "-o", str(out)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0 and not out.exists()
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "--frame-size" in err[0] and "'input'" in err[0]
    r = subprocess.run(cli + [str(SILERO), "--constant", "sr=16000", "--frame-size", "576",
                              "--sample-rate", "16000", "--frame-context", "64",
                              "--calibration", str(cal), "-o", str(out)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert nvm.load(out).model.input.frame and nvm.load(out).frontend == RAW
    assert nvm.load(out).meta["constants"] == {"sr": 16000}      # `run` checks an npz's sr
    assert "raw 16000 Hz PCM, 576 samples per frame (512 new, 64 of context)" in r.stdout
    r = subprocess.run(cli + [str(SILERO), "--constant", "sr=16000", "--frame-size", "576",
                              "--sample-rate", "16000", "--frame-context", "576",
                              "--calibration", str(cal), "-o", str(tmp_path / "t.nvm")],
                       capture_output=True, text=True, cwd=REPO)
    err = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(err) == 1 and "--frame-context 576 in 0..575" in err[0]
    assert not (tmp_path / "t.nvm").exists()
    seq = REPO / "tests" / "corpus" / "torch" / "lstm_perstep.ts.onnx"
    with pytest.raises(nvm.NvmConversionError, match="is a sequence, not a frame"):
        load_ir(seq, frame_size=10)


def test_ledger_reads_each_frame_conv_once_per_position(prog):
    """The ledger charges a FrameConv's tiles once per output position of the frame: crossbar
    counters are P times one read of its [O, K*C] matrix, MACs are O*C*K*P."""
    from nvmstream.converters import ir
    from nvmstream.runtime.ledger import step_costs
    eng = nvm.Engine(prog, nvm.Device("int4"))
    unit, geom = step_costs(prog.model, eng.plan)
    convs = [(k, l) for k, l in enumerate(prog.model.layers) if isinstance(l, ir.FrameConv)]
    assert [l.out_positions for _, l in convs] == [4, 4, 2, 1, 1]
    for k, l in convs:
        segs = [s for s in eng.plan.segments if s.key.startswith(f"layer{k}/")]
        n_in, n_out = l.patch, l.out_channels
        assert sum(s.n_in * s.n_out for s in segs) == n_in * n_out
        c = unit[l.name]
        assert c.macs == l.W.size * l.out_positions
        assert c.cell_reads == 2 * n_in * n_out * l.out_positions
        assert c.dac_conversions % l.out_positions == 0 and c.dac_conversions > 0
        assert geom[l.name].sequential_vmms == l.out_positions



@pytest.fixture(scope="module")
def raw_model(prog, tmp_path_factory):
    """The converted model with the raw-PCM front end `convert --sample-rate 16000
    --frame-context 64` writes (that command is tested in test_cli_convert_needs_the_frame_size)."""
    import dataclasses
    path = tmp_path_factory.mktemp("raw") / "silero_raw.nvm"
    dataclasses.replace(prog, frontend=RAW).save(path)
    return path


def test_audio_streams_over_zeromq_with_the_raw_front_end(raw_model, speech):
    """A real server on loopback takes int16 PCM in chunks that do not line up with the
    512-sample frames and cuts it into the model's frames: every reply equals the in-process
    engine fed the same frames (bit for bit), the decisions onnxruntime's, and the energy the
    server reports for the stream is the in-process ledger's for it."""
    x, ref = speech
    pcm, _ = read_wav(SPEECH, 16000)
    assert pcm.size % 512 == 0
    with ServerProcess(raw_model, "--profile", "int4") as srv, Client(srv.endpoint,
                                                                     timeout_s=60) as c:
        assert c.info()["model"]["kinds"] == ["features", "audio"]
        s = c.open("audio", seed=3)
        ys, sent = [], 0
        for k in [100, 700, 1600, 33] * 1000:
            if sent >= pcm.size:
                break
            r = s.step(pcm[sent:sent + k])
            sent += k
            if r is not None and r.shape[0]:
                ys.append(r)
        summary = s.close()
    got = np.concatenate(ys)
    want, _, es = reference_outputs(raw_model, "int4", 3, x)
    np.testing.assert_array_equal(got, want)
    assert summary["frames"] == x.shape[0]
    assert summary["e_pJ"] == pytest.approx(sum(es), rel=1e-9)
    eng = nvm.Engine(nvm.load(raw_model), nvm.Device("int4"))
    st = eng.stream(seed=3)
    for t in range(x.shape[0]):
        st.step(x[t])
    assert summary["e_pJ"] == pytest.approx(eng.report("streams").analog
                                            .energy_pJ_per_inference, rel=1e-9)


def test_cli_streams_a_wav_to_silero(raw_model, speech, tmp_path):
    """`nvmstream stream --data vad_speech.wav` (a real subprocess against a real server):
    the WAV is cut into the model's frames; the per-frame outputs it writes equal the
    in-process engine's, so its speech decisions equal onnxruntime's. The stream's line
    summarises the speech probability (last, mean, min, max of the first output, one value per
    frame), not a class, and so does --json. A WAV at another rate or with two channels is
    refused with one line naming the file, exit non-zero."""
    import re
    import subprocess
    import sys
    import wave
    x, ref = speech
    out = tmp_path / "y.npz"
    cli = [sys.executable, "-m", "nvmstream.runtime.cli", "stream"]
    with ServerProcess(raw_model, "--profile", "ideal") as srv:
        r = subprocess.run(cli + ["-c", srv.endpoint, "--data", str(SPEECH), "--seed", "0",
                                  "--outputs", str(out), "--json", str(tmp_path / "s.json")],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        for rate, ch in ((8000, 1), (16000, 2)):
            bad = tmp_path / f"bad{rate}_{ch}.wav"
            with wave.open(str(bad), "wb") as w:
                w.setnchannels(ch)
                w.setsampwidth(2)
                w.setframerate(rate)
                w.writeframes(np.zeros(4000 * ch, "<i2").tobytes())
            r2 = subprocess.run(cli + ["-c", srv.endpoint, "--data", str(bad)],
                                capture_output=True, text=True, cwd=REPO, timeout=120)
            err = r2.stderr.strip().splitlines()
            assert r2.returncode != 0 and len(err) == 1 and str(bad) in err[0], r2.stderr
            assert ("16000 Hz is expected" if ch == 1 else "mono") in err[0]
    with np.load(out) as z:
        got = z["y_0"]
        assert list(z["outputs"]) == ["output:1", "stateN:256"]
    want, _, _ = reference_outputs(raw_model, "ideal", 0, x)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[:, 0] > 0.5, ref > 0.5)
    p = got[:, 0].astype(np.float64)
    stats = {"last": p[-1], "mean": p.mean(), "min": p.min(), "max": p.max()}
    assert "predicted" not in r.stdout, r.stdout
    num = r"([-+0-9.e]+)"
    m = re.search(rf"^vad_speech\.wav: output last {num}, mean {num}, min {num}, max {num} over "
                  rf"{x.shape[0]} frames$", r.stdout, re.M)
    assert m, r.stdout
    for k, v in zip(stats, m.groups()):             # printed to 4 significant digits
        assert float(v) == pytest.approx(stats[k], rel=6e-4), k
    detail = json.loads((tmp_path / "s.json").read_text())["streams_detail"][0]
    assert detail["prediction"] is None and detail["output"]["name"] == "output"
    for k, v in stats.items():
        assert detail["output"][k] == pytest.approx(v, rel=1e-6), k


def test_cli_run_feeds_every_input_from_an_npz(prog, speech, tmp_path):
    """`nvmstream run` (real subprocesses) on silero-vad with every model input from an .npz
    (input [B, calls, 576], the packed state [2, B, 128], sr): on the .onnx itself (sr folds
    the If) and on the .nvm (sr checked against the value fixed at conversion), the state is
    carried over the calls and equals onnxruntime's; the last call's state, written as
    stateN_last, carries the streams on into a second run; one call [B, 576] also works."""
    import dataclasses
    import subprocess
    import sys
    x, _ = speech
    xs = np.stack([x[20:60], x[100:140]])                       # two streams, 40 calls each
    sess = ort.InferenceSession(str(SILERO), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 2, 128), np.float32)
    ref, states = [], []
    for t in range(40):
        p, state = sess.run(None, {"input": xs[:, t], "state": state,
                                   "sr": np.array(16000, np.int64)})
        ref.append(p[:, 0])
        states.append(state)
    ref = np.stack(ref, 1)                                       # [2, 40]
    nvm_path = tmp_path / "s.nvm"
    dataclasses.replace(prog, meta={"constants": {"sr": 16000}}).save(nvm_path)
    cli = [sys.executable, "-m", "nvmstream.runtime.cli", "run"]

    def run(model, feeds, *extra):
        np.savez(tmp_path / "in.npz", **feeds)
        out = tmp_path / "y.npz"
        r = subprocess.run(cli + [str(model), "-i", str(tmp_path / "in.npz"), "-o", str(out),
                                  *extra],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
        assert r.returncode == 0, r.stderr
        with np.load(out) as z:
            got = {k: z[k] for k in z.files}
        out.unlink()
        return got

    sr = np.array(16000, np.int64)
    for model, extra in ((SILERO, ["--frame-size", "576"]), (nvm_path, [])):
        first = run(model, {"input": xs[:, :20], "state": np.zeros((2, 2, 128), np.float32),
                            "sr": sr}, *extra)
        assert first["output"].shape == (2, 20, 1) and first["stateN_last"].shape == (2, 2, 128)
        assert np.max(np.abs(first["output"][:, :, 0] - ref[:, :20])) <= 1e-5
        assert np.max(np.abs(first["stateN_last"] - states[19])) <= 1e-5 * np.abs(
            states[19]).max()
        second = run(model, {"input": xs[:, 20:], "state": first["stateN_last"], "sr": sr},
                     *extra)
        assert np.max(np.abs(second["output"][:, :, 0] - ref[:, 20:])) <= 1e-5
        one = run(model, {"input": xs[:, 20], "state": first["stateN_last"], "sr": sr}, *extra)
        assert one["output"].shape == (2, 1, 1)
        assert np.max(np.abs(one["output"][:, 0, 0] - ref[:, 20])) <= 1e-5
    np.savez(tmp_path / "bad.npz", input=xs[:, :2], sr=np.array(8000, np.int64))
    r = subprocess.run(cli + [str(nvm_path), "-i", str(tmp_path / "bad.npz"), "-o",
                              str(tmp_path / "z.npz")], capture_output=True, text=True, cwd=REPO)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 3 and len(err) == 1 and "sr=8000" in err[0] and "sr=16000" in err[0]
    assert not (tmp_path / "z.npz").exists()
