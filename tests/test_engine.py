"""Engine: ideal == float IR, int4 bit-exact vs the numpy integer twin, streaming parity,
step_many == independent steps, voting, reproducibility, errors."""

from __future__ import annotations

import numpy as np
import pytest

import nvmstream as nvm
from naive import int_twin
from onnx_util import FIXTURES, fixture_files

FILES = fixture_files()
CAUSAL = [f for f in FILES if f["causal"]]
PROFILES = ["ideal", "int4", "pcm", "pcm-1y", "rram", "snr0db", "nand-eol"]


def _prog(name, cal_seed=7):
    cal = np.random.default_rng(cal_seed).normal(0, 1, (8, 20, 12)).astype(np.float32)
    return nvm.convert(FIXTURES / name, calibration=cal)


def _x(b=3, t=11, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (b, t, 12)).astype(np.float32)


@pytest.mark.parametrize("meta", FILES, ids=[m["file"] for m in FILES])
def test_ideal_equals_float_ir(meta):
    prog = _prog(meta["file"])
    eng = nvm.Engine(prog, nvm.Device("ideal"))
    x = _x()
    want = prog.model.run_steps(x)
    got = eng.run_all(x)
    for k in want:
        assert got[k].shape == want[k].shape
        assert np.max(np.abs(got[k] - want[k])) <= 1e-5


@pytest.mark.parametrize("meta", CAUSAL, ids=[m["file"] for m in CAUSAL])
def test_int4_bit_exact_against_numpy_integer_twin(meta):
    prog = _prog(meta["file"])
    eng = nvm.Engine(prog, nvm.Device("int4"))
    assert eng.plan.exact
    segs = {s.key: s for s in eng.plan.segments}
    x = _x(b=2, t=6, seed=1)
    got = eng.run_all(x)
    want = int_twin(prog.model, segs, x)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    # and it is a real quantized path: visibly different from float
    ref = prog.model.run_steps(x)
    assert max(np.max(np.abs(got[k] - ref[k])) for k in ref) > 1e-4


@pytest.mark.parametrize("profile", ["int4", "pcm-1d", "rram", "nand-eol"])
@pytest.mark.parametrize("name", ["lstm2_bf.ts.onnx", "gru2_tm.dynamo.onnx",
                                  "lstm_hn_bf.ts.onnx"])
def test_streaming_step_equals_run(profile, name):
    """Fixed seed, no per-read noise: step by step equals the whole-sequence run exactly."""
    prog = _prog(name)
    # programming noise, drift, faults and storage errors stay on; per-read noise goes off
    dev = nvm.Device(profile, seed=3, overrides=["read.model=none", "adc.noise_lsb=0"])
    eng = nvm.Engine(prog, dev)
    assert not eng.plan.per_read_noise
    x = _x(b=2, t=9, seed=2)
    whole = eng.run_all(x)
    for b in range(2):
        s = eng.stream(seed=b)
        ys = np.stack([s.step_all(x[b, t])[prog.model.outputs[0].name] for t in range(9)])
        np.testing.assert_array_equal(ys, whole[prog.model.outputs[0].name][b])


def test_streaming_equals_run_even_with_per_read_noise():
    """Each (stream, layer) owns its random state, so chunking does not change the draws."""
    prog = _prog("lstm2_bf.dynamo.onnx")
    eng = nvm.Engine(prog, nvm.Device("pcm", seed=1))
    assert eng.plan.per_read_noise
    x = _x(b=1, t=8, seed=3)
    whole = eng.run(x, seed=5)
    s = eng.stream(seed=5)
    ys = np.stack([s.step(x[0, t]) for t in range(8)])
    np.testing.assert_array_equal(ys, whole[0])


def test_stream_step_frame_layouts_and_errors():
    """Stream.step hands a float32 vector to the kernel as it is (contiguous or a strided
    view: the compiled step is typed for any stride and checks the length) and converts
    anything else (float64, a list); every spelling of the same frames gives the same bits
    on four streams of one seed (per-read noise on). A wrong shape (too short a vector: the
    kernel's check; two dimensions: Python's) and a closed stream raise one-line errors,
    and nothing runs: the state and the step count stay."""
    prog = _prog("lstm2_bf.dynamo.onnx")
    eng = nvm.Engine(prog, nvm.Device("pcm", seed=1))
    x = _x(b=1, t=5, seed=3)[0]                                  # [T, F] float32
    f = x.shape[1]
    wide = np.zeros((5, 2 * f), np.float32)
    wide[:, ::2] = x
    spell = [lambda t: x[t], lambda t: wide[t, ::2], lambda t: x[t].astype(np.float64),
             lambda t: x[t].tolist()]
    assert not wide[0, ::2].flags.c_contiguous
    streams = [eng.stream(seed=7) for _ in spell]
    ys = [np.stack([s.step(sp(t)) for t in range(5)]) for s, sp in zip(streams, spell)]
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])
    assert all(s.steps == 5 for s in streams)
    before = streams[0].state
    with pytest.raises(nvm.NvmInputError, match=r"frame 5: expected shape"):
        streams[0].step(x[0, :-1])
    with pytest.raises(nvm.NvmInputError, match=r"frame 5: expected shape"):
        streams[0].step(wide[0])                  # too long (would overrun the env columns)
    with pytest.raises(nvm.NvmInputError, match=r"frame 5: expected shape"):
        streams[0].step(np.zeros((1, f), np.float32))
    np.testing.assert_array_equal(streams[0].state, before)
    streams[1].close()
    with pytest.raises(nvm.NvmInputError, match=r"frame 5: stream 7 is closed"):
        streams[1].step(x[0])
    assert streams[0].steps == 5


@pytest.mark.parametrize("profile,n", [("int4", 5), ("pcm", 5), ("pcm", 17), ("snr0db", 6)])
def test_step_many_equals_independent_steps(profile, n):
    """Batches of >= BLAS_MIN_ROWS rows (17 streams; 6 streams x 3 votes) take the BLAS
    route for the recurrent products too."""
    from nvmstream.runtime.engine import BLAS_MIN_ROWS
    prog = _prog("gru_bf.ts.onnx")
    k = 3 if profile == "snr0db" else 1
    eng = nvm.Engine(prog, nvm.Device(profile, seed=2), votes=k)
    assert (n * k >= BLAS_MIN_ROWS) == (n > 5)
    x = _x(b=n, t=6, seed=4)
    a = [eng.stream(seed=10 + i) for i in range(n)]
    b = [eng.stream(seed=10 + i) for i in range(n)]
    for t in range(6):
        batched = eng.step_many(a, x[:, t])
        single = np.stack([s.step(x[i, t]) for i, s in enumerate(b)])
        np.testing.assert_array_equal(batched, single)
        assert [s.last_class for s in a] == [s.last_class for s in b]
    # and a subset in another order gives the same as well
    c = [eng.stream(seed=10 + i) for i in (3, 1)]
    ys = eng.step_many(c, x[[3, 1], 0])
    d = eng.stream(seed=13)
    np.testing.assert_array_equal(ys[0], d.step(x[3, 0]))


@pytest.mark.parametrize("profile,k", [("int4", 1), ("pcm", 1), ("snr0db", 3)])
def test_few_stream_step_many_route_equals_batched_route(profile, k, monkeypatch):
    """Below FUSED_MAX_ROWS rows step_many runs each stream's fused step (what the server
    calls for a lone stream): every output, class and the ledger equal the layer-by-layer
    route's, and one stream equals Stream.step."""
    import nvmstream.runtime.engine as E
    prog = _prog("lstm_hn_bf.ts.onnx")
    assert len(prog.model.outputs) > 1
    x = _x(b=3, t=5, seed=8)
    res = {}
    for route, rows in (("fused", E.FUSED_MAX_ROWS), ("layers", 0)):
        monkeypatch.setattr(E, "FUSED_MAX_ROWS", rows)
        eng = nvm.Engine(prog, nvm.Device(profile, seed=2), votes=k)
        ss = [eng.stream(seed=20 + i) for i in range(3)]
        one = eng.stream(seed=30)
        outs, cls = [], []
        for t in range(5):
            outs.append(eng.step_many_all(ss, x[:, t]))
            outs.append(eng.step_many_all([one], x[0, t]))
            cls.append([s.last_class for s in ss + [one]])
        res[route] = (outs, cls, eng.report("streams").stream_steps,
                      eng.report("streams").inferences, [s.energy_pJ for s in ss])
    f, l = res["fused"], res["layers"]
    for a, b in zip(f[0], l[0]):
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    assert f[1:] == l[1:]
    # one stream through step_many == its own Stream.step
    monkeypatch.setattr(E, "FUSED_MAX_ROWS", 16)
    eng = nvm.Engine(prog, nvm.Device(profile, seed=2), votes=k)
    a, b = eng.stream(seed=5), eng.stream(seed=5)
    for t in range(5):
        np.testing.assert_array_equal(eng.step_many([a], x[1, t][None])[0], b.step(x[1, t]))
        assert a.last_class == b.last_class
    # a bad frame among several leaves every stream untouched
    ss = [eng.stream(seed=i) for i in range(3)]
    eng.step_many(ss, x[:, 0])
    before = [(s.state, s.steps) for s in ss]
    bad = x[:, 1].copy()
    bad[2, 3] = np.nan
    with pytest.raises(nvm.NvmInputError, match="NaN"):
        eng.step_many(ss, bad)
    with pytest.raises(nvm.NvmInputError, match="NaN"):
        eng.step_many(ss[2:], bad[2:])
    for s, (st, n) in zip(ss, before):
        np.testing.assert_array_equal(s.state, st)
        assert s.steps == n


def test_seeds_make_runs_reproducible_and_distinct():
    prog = _prog("lstm1_bf.ts.onnx")
    x = _x()
    y1 = nvm.Engine(prog, nvm.Device("pcm", seed=4)).run(x)
    y2 = nvm.Engine(prog, nvm.Device("pcm", seed=4)).run(x)
    y3 = nvm.Engine(prog, nvm.Device("pcm", seed=5)).run(x)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(y1, y3)
    eng = nvm.Engine(prog, nvm.Device("pcm", seed=4))
    assert not np.array_equal(eng.run(x, seed=0), eng.run(x, seed=100))


def test_voting_majority_and_mean():
    prog = _prog("gru_bf.ts.onnx")
    eng1 = nvm.Engine(prog, nvm.Device("snr0db", seed=0), votes=1)
    eng5 = nvm.Engine(prog, nvm.Device("snr0db", seed=0), votes=5)
    x = _x(b=4, t=7, seed=6)
    y5 = eng5.run(x)
    cls = eng5.predict(x)
    assert y5.shape == (4, 7, 4) and cls.shape == (4, 7)
    np.testing.assert_allclose(y5.sum(-1), 1.0, atol=1e-5)   # mean of softmaxes
    ideal = nvm.Engine(prog, nvm.Device("int4")).predict(x)
    # voting over 5 noisy replicas agrees with the noise-free answer more often than one replica
    one = np.mean([np.mean(eng1.predict(x, seed=s) == ideal) for s in range(6)])
    five = np.mean([np.mean(eng5.predict(x, seed=s) == ideal) for s in range(6)])
    assert five > one


def test_majority_rule():
    from nvmstream.runtime.engine import majority
    reps = np.zeros((1, 3, 1, 3))
    reps[0, 0, 0] = [0.9, 0.1, 0.0]
    reps[0, 1, 0] = [0.1, 0.8, 0.1]
    reps[0, 2, 0] = [0.2, 0.7, 0.1]
    assert majority(reps)[0, 0] == 1
    reps[0, 2, 0] = [0.1, 0.0, 0.9]          # 1-1-1 tie -> highest mean (class 0: 0.37)
    assert majority(reps)[0, 0] == 0


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_runs_every_kind(profile):
    for name in ("bilstm_bf.ts.onnx", "gru2_tm.ts.onnx", "rnn_tanh_bf.ts.onnx",
                 "lstm_last_bf.dynamo.onnx"):
        prog = _prog(name)
        y = nvm.Engine(prog, nvm.Device(profile, seed=1)).run_all(_x(b=2, t=5))
        assert all(np.all(np.isfinite(v)) for v in y.values())


def test_save_load_roundtrip(tmp_path):
    prog = _prog("lstm2_bf.ts.onnx")
    prog.save(tmp_path / "m.nvm")
    back = nvm.load(tmp_path / "m.nvm")
    for k in prog.codes:
        np.testing.assert_array_equal(prog.codes[k], back.codes[k])
    x = _x()
    a = nvm.Engine(prog, nvm.Device("pcm", seed=1)).run(x)
    b = nvm.Engine(back, nvm.Device("pcm", seed=1)).run(x)
    np.testing.assert_array_equal(a, b)
    assert (tmp_path / "m.nvm").stat().st_size < 60_000


def test_int4_codes_are_packed_two_per_byte():
    from nvmstream.converters.compile import pack_int4, unpack_int4
    codes = np.arange(-7, 8, dtype=np.int8).repeat(3).reshape(5, 9)
    packed = pack_int4(codes)
    assert packed.size == (codes.size + 1) // 2
    np.testing.assert_array_equal(unpack_int4(packed, codes.shape), codes)


def test_errors_are_clear(tmp_path):
    prog = _prog("lstm1_bf.ts.onnx")
    eng = nvm.Engine(prog, nvm.Device("int4"))
    with pytest.raises(nvm.NvmInputError, match=r"\[batch, time, 12\]"):
        eng.run(np.zeros((2, 3, 5), np.float32))
    s = eng.stream()
    with pytest.raises(nvm.NvmInputError, match="frame 0"):
        s.step(np.zeros(5, np.float32))
    with pytest.raises(nvm.NvmInputError, match=r"frames: expected shape \(2, 12\)"):
        eng.step_many([s, eng.stream()], np.zeros((3, 12)))
    bi = nvm.Engine(_prog("bilstm_bf.ts.onnx"), nvm.Device("int4"))
    with pytest.raises(nvm.NvmInputError, match="bidirectional"):
        bi.stream()
    with pytest.raises(ValueError, match="votes"):
        nvm.Engine(prog, nvm.Device("int4"), votes=0)
    with pytest.raises(nvm.NvmInputError, match="calibration"):
        nvm.convert(FIXTURES / "lstm1_bf.ts.onnx", calibration=np.zeros((2, 3, 4)))
    (tmp_path / "bad.nvm").write_bytes(b"not a zip")
    with pytest.raises(nvm.NvmConversionError, match="bad.nvm"):
        nvm.load(tmp_path / "bad.nvm")
    with pytest.raises(ValueError, match="unknown profile 'no-such-profile'.*pcm"):
        nvm.Device("no-such-profile")


HANDBUILT = [
    dict(kind="LSTM", clip=0.7, peep=True, direction="bidirectional"),
    dict(kind="LSTM", input_forget=1, peep=True),
    dict(kind="LSTM", activations=["HardSigmoid", "ScaledTanh", "Affine"],
         activation_alpha=[0.3, 0.9, 0.5], activation_beta=[0.4, 1.2, 0.1]),
    dict(kind="LSTM", direction="reverse", lens_input=True, init_input=True),
    dict(kind="GRU", linear_before_reset=0, direction="bidirectional", lens_input=True),
    dict(kind="GRU", linear_before_reset=1, clip=0.5, init_input=True),
    dict(kind="GRU", activations=["Sigmoid", "Softsign"]),
    dict(kind="RNN", activations=["Relu"], direction="reverse"),
    dict(kind="RNN", activations=["LeakyRelu"], activation_alpha=[0.1], clip=2.0,
         init_const=True),
]


@pytest.mark.parametrize("spec", HANDBUILT, ids=[str(i) for i in range(len(HANDBUILT))])
def test_ideal_engine_honours_every_recurrent_option(spec, tmp_path):
    """The kernel has its own implementation of every ONNX option: check it against the IR."""
    import onnx
    from test_handbuilt_graphs import build
    m = build(seed=3, **spec)
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    prog = nvm.convert(p, calibration=np.random.default_rng(0).normal(size=(4, 6, 5)))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 7, 5)).astype(np.float32)
    aux = {}
    if spec.get("lens_input"):
        aux["lens"] = np.array([7, 3, 1], np.int32)
    if spec.get("init_input"):
        d = 2 if spec.get("direction") == "bidirectional" else 1
        aux["h0"] = rng.normal(size=(d, 3, 6)).astype(np.float32)
        if spec["kind"] == "LSTM":
            aux["c0"] = rng.normal(size=(d, 3, 6)).astype(np.float32)
    want = prog.model.run_steps(x, **aux)
    got = nvm.Engine(prog, nvm.Device("ideal")).run_all(x, **aux)
    for k in want:
        assert got[k].shape == want[k].shape, k
        assert np.max(np.abs(got[k] - want[k])) <= 1e-5, k
    # and the int4 path runs the same graph
    y = nvm.Engine(prog, nvm.Device("int4")).run_all(x, **aux)
    assert all(np.all(np.isfinite(v)) for v in y.values())


def test_kernel_cache_is_dropped_when_any_kernel_source_changes(tmp_path, monkeypatch):
    """numba checks only a function's own file; a kernel inlines callees from other files, so
    the package drops its whole cache when the hash of the kernel sources changes."""
    import hashlib
    import os
    from nvmstream.runtime import kernels as K
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    src = os.path.dirname(os.path.abspath(K.__file__))
    d = tmp_path / f"kernels_{hashlib.sha1(src.encode()).hexdigest()}"
    d.mkdir()
    (d / "program.run_program-1.py311.nbi").write_bytes(b"old")
    (d / "kernels-sources.sha1").write_text("a hash of other sources")
    K._drop_stale_cache()
    assert not (d / "program.run_program-1.py311.nbi").exists()
    (d / "program.run_program-1.py311.nbi").write_bytes(b"new")
    K._drop_stale_cache()                       # sources unchanged: the cache stays
    assert (d / "program.run_program-1.py311.nbi").read_bytes() == b"new"
