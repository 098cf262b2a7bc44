"""The Python client and the `stream` / `keys` commands against a real server."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import nvmstream as nvm
from nvmstream.runtime.client import Client, ServerError, stream_sequences
from nvmstream.runtime.frontend import FrontendParams, offline_features, write_wav
from server_util import REPO, ServerProcess, compile_fixture

FRONTEND = FrontendParams(n_mels=12, feature_mean=(-8.0,) * 12, feature_std=(4.0,) * 12)
LABELS = ("up", "down", "left", "right")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return compile_fixture("lstm1_bf.ts.onnx", tmp_path_factory.mktemp("m") / "kw.nvm",
                           frontend=FRONTEND.to_dict(), labels=LABELS)


@pytest.fixture(scope="module")
def server(model):
    with ServerProcess(model, "--profile", "int4") as s:
        yield s


def stream_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "nvmstream.runtime.server_cli", "stream",
                           *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def _engine(model, profile="int4"):
    return nvm.Engine(nvm.load(model), nvm.Device(profile, seed=0))


def test_client_api(server, model):
    x = np.random.default_rng(0).standard_normal((6, 12)).astype(np.float32)
    with Client(server.endpoint, timeout_s=20) as c:
        a = c.open(seed=3)
        b = c.open(seed=4, wait=False)                  # frames may follow the open at once
        for t in range(6):
            b.send(x[t])
            a.send(x[t])
        order = [c.recv_any() for _ in range(12)]       # arrival order over both streams
        assert sorted((r.sid, r.seq) for r in order) == sorted(
            (s.sid, t) for s in (a, b) for t in range(6))
        assert all(r.rtt_s is not None and r.rtt_s > 0 for r in order)
        eng = _engine(model)
        for s, seed in ((a, 3), (b, 4)):
            ref = eng.stream(seed=seed)
            got = np.concatenate([r.y for r in order if r.sid == s.sid])
            np.testing.assert_array_equal(got, np.stack([ref.step(f) for f in x]))
        sa = a.close()
        assert sa["frames"] == 6 and sa["e_pJ"] > 0 and sa["lat_ns"] > 0
        with pytest.raises(ServerError) as e:
            a.step(x[0])
        assert e.value.code == "unknown_stream" and "closed" in e.value.msg
        with pytest.raises(ValueError):
            a.close()
        with pytest.raises(ServerError) as e:           # errors of pipelined frames
            c.open(profile="nope", wait=False).recv()
        assert e.value.code == "bad_profile"
        b.close()


def test_client_timeout_without_server():
    with Client("tcp://127.0.0.1:9", timeout_s=0.3) as c:
        with pytest.raises(TimeoutError):
            c.info()


def test_stream_sequences_summary(server, model):
    x = np.random.default_rng(1).standard_normal((5, 7, 12)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 0])
    chunks = [[x[i, t] for t in range(7 - i)] for i in range(5)]     # ragged lengths
    res = stream_sequences(server.endpoint, chunks, labels=y, seed=10, sockets=2)
    eng = _engine(model)
    preds = []
    for i in range(5):
        s = eng.stream(seed=10 + i)
        for t in range(7 - i):
            s.step(x[i, t])
        preds.append(s.last_class)
    assert [r.prediction for r in res["results"]] == preds
    assert res["accuracy"] == pytest.approx(np.mean(np.array(preds) == y))
    assert res["frames"] == sum(7 - i for i in range(5)) and res["errors"] == 0
    assert res["energy_pJ_per_frame"] > 0 and res["rtt_ms"]["p50"] > 0
    assert res["labels"] == list(LABELS)


def test_stream_command_npz(server, model, tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 9, 12)).astype(np.float32)
    lengths = np.array([9, 5, 7, 3])
    y = np.array([1, 0, 3, 2])
    np.savez(tmp_path / "d.npz", x_test=x, y_test=y, lengths_test=lengths,
             labels=np.array(LABELS))
    r = stream_cli("--connect", server.endpoint, "--data", tmp_path / "d.npz", "--seed", 0,
                   "--json", tmp_path / "out.json", "--sockets", 2)
    assert r.returncode == 0, r.stderr
    eng = _engine(model)
    preds = []
    for i in range(4):
        s = eng.stream(seed=i)
        for t in range(lengths[i]):
            s.step(x[i, t])
        preds.append(s.last_class)
    lines = [l for l in r.stdout.splitlines() if l.startswith("#")]
    assert len(lines) == 4
    for i, line in enumerate(lines):
        assert f"predicted {LABELS[preds[i]]} ({preds[i]}) after {lengths[i]} frames" in line
        assert ("ok" if preds[i] == y[i] else "WRONG") in line
    acc = np.mean(np.array(preds) == y)
    assert f"accuracy {acc:.4f} (4 labelled streams)" in r.stdout
    assert "round trip ms: p50" in r.stdout and "energy per inference" in r.stdout
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["frames"] == lengths.sum() and out["accuracy"] == pytest.approx(acc)
    # paced (real time): 4 messages at 40 Hz take >= 75 ms
    r = stream_cli("--connect", server.endpoint, "--data", tmp_path / "d.npz", "--rate", 40,
                   "--limit", 1, "--frames-per-message", 2, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "streams 1, frames 9" in r.stdout and "#0" not in r.stdout


def test_stream_command_wav(server, model, tmp_path):
    rng = np.random.default_rng(3)
    words = ["left", "up", "zebra"]
    pcms = []
    for i, w in enumerate(words):
        n = 8000 + 977 * i
        t = np.arange(n) / 16000
        pcm = (2000 * np.sin(2 * np.pi * (300 + 200 * i) * t)
               + 300 * rng.standard_normal(n)).astype(np.int16)
        write_wav(tmp_path / f"{w}.wav", pcm, 16000)
        pcms.append(pcm)
    (tmp_path / "manifest.json").write_text(json.dumps(
        [{"file": f"{w}.wav", "word": w} for w in words]))
    r = stream_cli("--connect", server.endpoint, "--data", *[tmp_path / f"{w}.wav" for w in words],
                   "--chunk", 700, "--seed", 5)
    assert r.returncode == 0, r.stderr
    eng = _engine(model)
    preds = []
    for i, pcm in enumerate(pcms):
        s = eng.stream(seed=5 + i)
        for f in offline_features(pcm, FRONTEND):
            s.step(f)
        preds.append(s.last_class)
        line = next(l for l in r.stdout.splitlines() if l.startswith(f"{words[i]}.wav"))
        assert f"predicted {LABELS[preds[i]]} ({preds[i]})" in line, line
        assert f"after {FRONTEND.n_frames(len(pcm))} frames" in line
    # "zebra" is not a label of the model: it counts as a wrong answer
    acc = np.mean([preds[0] == 2, preds[1] == 0, False])
    assert f"accuracy {acc:.4f} (3 labelled streams)" in r.stdout


def test_stream_command_errors(server, tmp_path):
    r = stream_cli("--connect", server.endpoint, "--data", tmp_path / "missing.npz")
    assert r.returncode == 3 and "no such file" in r.stderr
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 3, 5), np.float32))   # 5 features, not 12
    r = stream_cli("--connect", server.endpoint, "--data", tmp_path / "bad.npz", "--quiet")
    assert r.returncode == 3 and "5 features per frame; the server's model takes 12" in r.stderr
    np.savez(tmp_path / "ok.npz", x=np.zeros((2, 3, 12), np.float32))
    r = stream_cli("--connect", server.endpoint, "--data", tmp_path / "ok.npz",
                   "--profile", "nope")
    assert r.returncode == 3 and "bad_profile" in r.stderr
    r = stream_cli("--connect", "tcp://127.0.0.1:9", "--data", tmp_path / "bad.npz",
                   "--timeout", "0.3")
    assert r.returncode == 3 and "is the server running" in r.stderr


def test_keys_command(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nvmstream.runtime.server_cli", "keys",
                        tmp_path / "k", "--name", "edge"], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    import zmq.auth
    pub, sec = zmq.auth.load_certificate(tmp_path / "k" / "edge.key_secret")
    assert len(pub) == 40 and len(sec) == 40
    assert (tmp_path / "k" / "edge.key_secret").stat().st_mode & 0o077 == 0


def test_serve_onnx_with_calibration_frontend_and_extra_profile(tmp_path):
    from server_util import FIXTURES
    cal = np.random.default_rng(4).standard_normal((4, 10, 12)).astype(np.float32)
    np.save(tmp_path / "cal.npy", cal)
    (tmp_path / "mychip.toml").write_text('base = "pcm"\nname = "mychip"\n\n[adc]\nbits = 6\n')
    fe = FrontendParams(n_mels=12, kind="logmel", hop_length=200)
    with ServerProcess(FIXTURES / "lstm1_bf.ts.onnx", "--calibration", tmp_path / "cal.npy",
                       "--frontend", json.dumps(fe.to_dict()), "--allow-profile",
                       f"mychip={tmp_path / 'mychip.toml'}", "--set", "adc.bits=5") as srv, \
            Client(srv.endpoint, timeout_s=20) as c:
        info = c.info()
        assert FrontendParams.from_dict(info["model"]["frontend"]) == fe
        assert "mychip" in info["profiles"] and info["default"]["overrides"] == ["adc.bits=5"]
        x = np.random.default_rng(5).standard_normal((6, 12)).astype(np.float32)
        prog = nvm.convert(FIXTURES / "lstm1_bf.ts.onnx", calibration=cal)
        for kw, dev in [(dict(profile="mychip"), nvm.Device(tmp_path / "mychip.toml")),
                        (dict(), nvm.Device("ideal", overrides=["adc.bits=5"]))]:
            s = c.open(seed=2, **kw)
            got = np.stack([s.step(f) for f in x])
            ref = nvm.Engine(prog, dev).stream(seed=2)
            np.testing.assert_array_equal(got, np.stack([ref.step(f) for f in x]))
            s.close()
