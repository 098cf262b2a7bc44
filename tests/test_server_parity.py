"""Server outputs over the wire equal the in-process engine's (same seed, profile, votes),
for feature frames, multi-frame messages, per-stream profiles and raw audio."""

from __future__ import annotations

import numpy as np
import pytest

import nvmstream as nvm
from nvmstream.runtime.client import Client, ServerError
from nvmstream.runtime.frontend import FrontendParams, offline_features
from server_util import ServerProcess, compile_fixture, reference_outputs

FRONTEND = FrontendParams(n_mels=12)
LABELS = ("a", "b", "c", "d")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    # two outputs (y [4] and h_n [16]) and a speech front end making 12 features
    return compile_fixture("lstm_hn_bf.ts.onnx", tmp_path_factory.mktemp("m") / "hn.nvm",
                           frontend=FRONTEND.to_dict(), labels=LABELS)


@pytest.fixture(scope="module")
def server(model):
    with ServerProcess(model, "--profile", "pcm", "--device-seed", "3") as s:
        yield s


@pytest.fixture
def client(server):
    with Client(server.endpoint, timeout_s=30) as c:
        yield c


def _frames(n, seed):
    return np.random.default_rng(seed).standard_normal((n, 12)).astype(np.float32)


def test_pipelined_frames_equal_engine(client, model):
    x = _frames(40, 1)
    s = client.open(seed=7)
    assert s.info["profile"] == "pcm" and s.info["outputs"] == [["y", 4], ["h_n", 16]]
    assert s.info["labels"] == list(LABELS)
    for t in range(40):
        s.send(x[t])
    reps = [s.recv() for _ in range(40)]
    ref, cls, energy = reference_outputs(model, "pcm", 7, x, device_seed=3)
    assert [r.seq for r in reps] == list(range(40))
    assert [r.hdr["f0"] for r in reps] == list(range(40))
    got = np.concatenate([r.y for r in reps])
    assert got.dtype == np.float32 and got.shape == (40, 20)
    np.testing.assert_array_equal(got, ref)
    assert [c for r in reps for c in r.cls] == cls
    assert [r.e_pJ for r in reps] == pytest.approx(energy, rel=1e-12)
    assert all(r.lat_ns and r.lat_ns > 0 and r.srv_us >= 0 for r in reps)
    summary = s.close()
    assert summary["frames"] == 40 and summary["e_pJ"] == pytest.approx(sum(energy))


def test_multi_frame_messages_and_step(client, model):
    x = _frames(23, 2)
    s = client.open(seed=11)
    y0 = s.step(x[0])                       # one frame -> [W]
    assert y0.shape == (20,)
    s.send(x[1:6])                          # five frames in one message
    s.send(x[6:7])
    s.send(x[7:23])
    r1, r2, r3 = s.recv(), s.recv(), s.recv()
    assert (r1.hdr["f0"], r1.n, r2.hdr["f0"], r3.hdr["f0"], r3.n) == (1, 5, 6, 7, 16)
    assert r1.cls and len(r1.cls) == 5
    got = np.concatenate([y0[None], r1.y, r2.y, r3.y])
    ref, cls, _ = reference_outputs(model, "pcm", 11, x, device_seed=3)
    np.testing.assert_array_equal(got, ref)
    assert r3.cls == cls[7:]
    s.close()


def test_per_stream_profiles_overrides_votes(client, model):
    x = _frames(15, 3)
    specs = [dict(profile="rram", overrides=["adc.bits=6"], seed=5),
             dict(seed=5),                                       # server default: pcm
             dict(profile="ideal", seed=9),
             dict(profile="pcm", votes=3, seed=4),
             dict(profile="snr0db", seed=1, votes=2)]
    streams = [client.open(**sp) for sp in specs]
    assert streams[0].info["profile"] == "rram" and streams[0].info["overrides"] == ["adc.bits=6"]
    assert streams[3].info["votes"] == 3
    for t in range(15):                    # interleaved: one batch per profile per step
        for s in streams:
            s.send(x[t])
    for sp, s in zip(specs, streams):
        reps = [s.recv() for _ in range(15)]
        ref, cls, _ = reference_outputs(model, sp.get("profile", "pcm"), sp["seed"], x,
                                        votes=sp.get("votes", 1),
                                        overrides=sp.get("overrides"), device_seed=3)
        np.testing.assert_array_equal(np.concatenate([r.y for r in reps]), ref, err_msg=str(sp))
        assert [r.cls[0] for r in reps] == cls, sp
        s.close()


def test_seed_assigned_by_server_is_reported(client, model):
    s = client.open(profile="ideal")
    x = _frames(5, 4)
    got = np.stack([s.step(f) for f in x])
    ref, _, _ = reference_outputs(model, "ideal", s.info["seed"], x, device_seed=3)
    np.testing.assert_array_equal(got, ref)
    assert s.close()["seed"] == s.info["seed"]


def test_bad_profile_requests(client):
    for kw, code in [(dict(profile="no-such-chip"), "bad_profile"),
                     (dict(profile="/etc/passwd"), "bad_profile"),
                     (dict(profile="pcm", overrides=["adc.bits=banana"]), "bad_profile"),
                     (dict(overrides=["nosection.x=1"]), "bad_profile"),
                     (dict(votes=0), "bad_field"), (dict(votes=10 ** 6), "bad_field")]:
        with pytest.raises(ServerError) as e:
            client.open(**kw)
        assert e.value.code == code, kw
    assert client.ping() > 0                 # the connection carries on


def test_audio_stream_equals_offline_front_end(client, model):
    rng = np.random.default_rng(5)
    n = 16000 + 1234
    t = np.arange(n) / 16000
    pcm = (3000 * np.sin(2 * np.pi * 440 * t) + 800 * rng.standard_normal(n)).astype(np.int16)
    cuts = np.sort(rng.choice(np.arange(1, n), 40, replace=False))
    chunks = np.split(pcm, cuts)
    chunks.insert(3, pcm[:0])                # an empty chunk is fine too
    s = client.open("audio", seed=21)
    assert s.info["kind"] == "audio" and s.info["sample_rate_hz"] == 16000
    for c in chunks:
        s.send(c)
    reps = [s.recv() for _ in chunks]
    assert [r.seq for r in reps] == list(range(len(chunks)))
    feats = offline_features(pcm, FRONTEND)
    assert sum(r.n for r in reps) == feats.shape[0] == FRONTEND.n_frames(n)
    f0 = [r.hdr["f0"] for r in reps]
    assert f0 == list(np.cumsum([0] + [r.n for r in reps])[:-1])
    got = np.concatenate([r.y for r in reps])
    ref, cls, _ = reference_outputs(model, "pcm", 21, feats, device_seed=3)
    np.testing.assert_array_equal(got, ref)
    assert [c for r in reps for c in r.cls] == cls
    assert s.close()["frames"] == feats.shape[0]


def test_info_stats_ping(client, server):
    info = client.info()
    m = info["model"]
    assert m["features"] == 12 and m["outputs"] == [["y", 4], ["h_n", 16]]
    assert m["streamable"] and m["kinds"] == ["features", "audio"]
    assert FrontendParams.from_dict(m["frontend"]) == FRONTEND
    assert set(nvm.list_profiles()) <= set(info["profiles"])
    assert info["default"]["profile"] == "pcm" and info["limits"]["max_streams"] >= 1
    s = client.open(seed=1)
    s.step(_frames(1, 0)[0])
    st = client.stats()
    assert st["streams"] >= 1 and st["frames"] >= 1 and st["srv_us"]["p50"] is not None
    assert st["queued"] == 0 and "errors" in st
    assert client.ping() < 5 and client.ping(s.sid) < 5
    s.close()


@pytest.fixture(scope="module")
def one_output_server(tmp_path_factory):
    model = compile_fixture("gru_bf.ts.onnx", tmp_path_factory.mktemp("g") / "gru.nvm")
    with ServerProcess(model, "--profile", "snr0db", "--device-seed", "2") as s:
        yield model, s


@pytest.mark.parametrize("votes", [1, 3])
def test_lone_frames_equal_engine(one_output_server, votes):
    """One frame at a time on an idle server takes the direct path (stepped as it arrives,
    without the queue): the outputs, classes and energies equal the in-process engine's, and
    a frame with NaN is refused without touching the stream's state."""
    model, server = one_output_server
    f = 12
    x = np.random.default_rng(votes).standard_normal((12, f)).astype(np.float32)
    with Client(server.endpoint, timeout_s=30) as c:
        lone0 = c.stats()["lone_frames"]
        s = c.open(seed=3, votes=votes)
        got, cls, energy = [], [], []
        for t in range(12):
            if t == 5:
                bad = x[t].copy()
                bad[2] = np.nan
                with pytest.raises(ServerError) as e:
                    s.step(bad)
                assert e.value.code == "bad_payload" and "NaN" in e.value.msg
            s.send(x[t])
            r = s.recv()
            assert r.hdr["f0"] == t and r.seq == t + (t >= 5)   # the NaN frame used seq 5
            got.append(r.y[0])
            cls.append(r.cls[0])
            energy.append(r.e_pJ)
        ref, rcls, renergy = reference_outputs(model, "snr0db", 3, x, votes=votes, device_seed=2)
        np.testing.assert_array_equal(np.stack(got), ref)
        assert cls == rcls and energy == pytest.approx(renergy, rel=1e-12)
        summary = s.close()
        assert summary["frames"] == 12 and summary["messages"] == 13
        # (a frame that comes before the server is back to waiting takes the queue instead)
        assert c.stats()["lone_frames"] > lone0


def test_replies_charge_a_conv_warm_up_as_the_ledger_does(tmp_path):
    """conv_lstm (a valid Conv1d over time: the LSTM skips the first 2 frames): each reply's
    energy and latency are what ran on that frame (lower during the warm-up), equal to the
    in-process stream's, and the stream's total is the in-process ledger's for it; also for a
    multi-frame message and votes 3."""
    from pathlib import Path
    rng = np.random.default_rng(4)
    onnx_path = Path(__file__).resolve().parent / "corpus" / "torch" / "conv_lstm.ts.onnx"
    prog = nvm.convert(onnx_path, calibration=rng.standard_normal((6, 20, 8)).astype(np.float32))
    path = tmp_path / "conv_lstm.nvm"
    prog.save(path)
    x = rng.standard_normal((7, 8)).astype(np.float32)
    with ServerProcess(path, "--profile", "pcm") as srv, Client(srv.endpoint,
                                                               timeout_s=60) as c:
        for votes in (1, 3):
            s = c.open(seed=2, votes=votes)
            reps = [s.recv() for _ in [s.send(x[t]) for t in range(4)]]
            s.send(x[4:7])                                 # three frames in one message
            reps.append(s.recv())
            summary = s.close()
            _, _, energy = reference_outputs(path, "pcm", 2, x, votes=votes)
            e = [r.e_pJ for r in reps]
            assert e[:4] == pytest.approx(energy[:4], rel=1e-12)
            assert e[4] == pytest.approx(sum(energy[4:]), rel=1e-12)
            assert e[0] == e[1] < e[2] == e[3]
            eng = nvm.Engine(nvm.load(path), nvm.Device("pcm"), votes=votes)
            st = eng.stream(seed=2)
            for t in range(7):
                st.step(x[t])
            rep = eng.report("streams").analog
            assert summary["e_pJ"] == pytest.approx(rep.energy_pJ_per_inference, rel=1e-9)
            assert summary["lat_ns"] == pytest.approx(rep.latency_ns_per_inference, rel=1e-9)
