"""Stream lifecycle and server lifecycle: idle eviction with a notice, clients that vanish,
heartbeats, stream limits, SIGTERM with frames in flight, CURVE authentication, models that
cannot stream."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
import zmq
import zmq.auth

from nvmstream.runtime.client import Client, ServerError
from server_util import RawClient, ServerProcess, compile_fixture, frame_msg


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return compile_fixture("lstm1_bf.ts.onnx", tmp_path_factory.mktemp("m") / "lstm1.nvm")


@pytest.fixture(scope="module")
def idle_server(model):
    with ServerProcess(model, "--profile", "ideal", "--idle-timeout", "0.6",
                       "--max-streams", "6") as s:
        yield s


def _wait_for(pred, timeout_s=10.0, every_s=0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every_s)
    raise AssertionError("condition not met in time")


def test_idle_stream_is_evicted_with_a_notice(idle_server):
    x = np.ones(12, np.float32)
    with Client(idle_server.endpoint, timeout_s=10) as c:
        s = c.open(seed=1)
        s.step(x)
        t0 = time.monotonic()
        r = s.recv(timeout_s=10, raise_errors=False)       # nothing sent: the notice comes
        assert r.op == "evicted" and r.hdr["reason"] == "idle" and r.hdr["frames"] == 1
        assert 0.5 <= time.monotonic() - t0 < 5 and s.ended == "evicted"
        with pytest.raises(ServerError) as e:
            s.step(x)
        assert e.value.code == "unknown_stream" and "evicted" in e.value.msg


def test_heartbeat_keeps_streams_alive(idle_server):
    with Client(idle_server.endpoint, timeout_s=10) as c:
        a, b = c.open(seed=1), c.open(seed=2)
        for _ in range(12):                                 # 1.8 s > 3 idle timeouts
            c.ping()                                        # keeps all of this client's streams
            time.sleep(0.15)
        a.step(np.ones(12))
        b.step(np.ones(12))
        for _ in range(8):
            c.ping(b.sid)                                   # keeps only stream b
            time.sleep(0.15)
        assert b.step(np.ones(12)).shape == (4,)
        with pytest.raises(ServerError) as e:
            a.step(np.ones(12))
        assert e.value.code in ("evicted", "unknown_stream")


def test_vanished_client_state_is_evicted(idle_server):
    with Client(idle_server.endpoint) as watcher:
        _wait_for(lambda: watcher.stats()["streams"] == 0)     # earlier tests' streams gone
        base = 0
        rc = RawClient(idle_server.endpoint)
        for sid in range(3):
            assert rc.request({"v": 1, "op": "open", "id": sid})[0]["op"] == "open"
        for sid in range(3):
            rc.send(*frame_msg(sid, 0, np.ones(12)))
        assert [h["op"] for h, _ in rc.recv_n(3)] == ["frame"] * 3
        rc.close()                                          # gone mid-stream, no close
        assert watcher.stats()["streams"] == base + 3
        _wait_for(lambda: watcher.stats()["streams"] == base, timeout_s=10)
        assert watcher.stats()["evicted"] >= 3


def test_stream_limit(idle_server):
    with Client(idle_server.endpoint, timeout_s=10) as c:
        streams = []
        with pytest.raises(ServerError) as e:
            for _ in range(7):
                streams.append(c.open())
                c.ping()
        assert e.value.code == "too_many_streams" and len(streams) <= 6
        for s in streams:
            s.close()
        c.open().close()                                    # room again after closing


def test_not_streamable_model_refuses_open(tmp_path):
    bi = compile_fixture("bilstm_bf.ts.onnx", tmp_path / "bi.nvm")
    with ServerProcess(bi) as srv, Client(srv.endpoint, timeout_s=10) as c:
        info = c.info()
        assert not info["model"]["streamable"]
        assert "bidirectional" in info["model"]["why_not_streamable"]
        with pytest.raises(ServerError) as e:
            c.open()
        assert e.value.code == "not_streamable" and "bidirectional" in e.value.msg
        with pytest.raises(ServerError) as e:
            c.open("audio")
        assert e.value.code == "not_streamable"


def test_audio_needs_front_end_parameters(idle_server):
    with Client(idle_server.endpoint, timeout_s=10) as c:
        assert c.info()["model"]["kinds"] == ["features"]
        with pytest.raises(ServerError) as e:
            c.open("audio")
        assert e.value.code == "no_frontend" and "front-end" in e.value.msg


def test_sigterm_answers_every_frame_in_flight(model):
    n_streams, n_frames = 16, 150
    x = np.random.default_rng(0).standard_normal((n_frames, 12)).astype(np.float32)
    srv = ServerProcess(model, "--profile", "pcm")
    with srv:
        rc = RawClient(srv.endpoint)
        for sid in range(n_streams):
            assert rc.request({"v": 1, "op": "open", "id": sid})[0]["op"] == "open"
        for t in range(n_frames):
            for sid in range(n_streams):
                rc.send(*frame_msg(sid, t, x[t]))
        srv.proc.send_signal(signal.SIGTERM)                # with thousands in flight
        time.sleep(0.05)
        rc.send({"v": 1, "op": "ping", "rid": 1})
        answered, codes, shutdown, late = {}, {}, None, False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            h, _ = rc.recv(timeout_s=30)
            if h["op"] == "shutdown":
                shutdown = h
                break
            if h["op"] == "ping":
                if not h["draining"]:
                    rc.send({"v": 1, "op": "ping", "rid": 1})
                elif not late:                              # frames sent while draining
                    late = True
                    for sid in range(n_streams):
                        rc.send(*frame_msg(sid, n_frames, x[0]))
                continue
            key = (h["id"], h["seq"])
            assert key not in answered                      # once each
            answered[key] = h["op"] if h["op"] == "frame" else h["code"]
            codes[answered[key]] = codes.get(answered[key], 0) + 1
        rc.close()
        assert srv.proc.wait(30) == 0
    assert late and shutdown is not None and sorted(shutdown["ids"]) == list(range(n_streams))
    assert len(answered) == n_streams * (n_frames + 1), codes
    # (busy: the admission bound in time may refuse some of the burst before the signal)
    assert {"frame", "shutting_down"} <= set(codes) <= {"frame", "shutting_down", "busy"}, codes
    # per stream: results first, then refusals (at least the frame sent while draining)
    for sid in range(n_streams):
        ops = [answered[(sid, t)] for t in range(n_frames + 1)]
        ops = [o for o in ops if o != "busy"]
        k = ops.count("frame")
        assert 0 < k <= n_frames and ops == ["frame"] * k + ["shutting_down"] * (len(ops) - k)
    assert any("stopped after" in line for line in srv.stdout_lines)


@pytest.fixture(scope="module")
def curve_keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    allow = d / "allowed"
    allow.mkdir()
    for name in ("server", "alice", "mallory"):
        zmq.auth.create_certificates(d, name)
    (allow / "alice.key").write_bytes((d / "alice.key").read_bytes())
    return d


def test_curve_only_allowed_clients_get_through(model, curve_keys):
    assert zmq.has("curve"), "the pyzmq wheel's libzmq must support CURVE"
    d = curve_keys
    with ServerProcess(model, "--curve-secret", str(d / "server.key_secret"),
                       "--curve-allow", str(d / "allowed")) as srv:
        assert "CURVE" in srv.stdout_lines[0]
        with Client(srv.endpoint, timeout_s=10, curve_server_key=str(d / "server.key"),
                    curve_cert=str(d / "alice.key_secret")) as alice:
            s = alice.open(seed=0)
            assert s.step(np.ones(12)).shape == (4,)
            # no keys at all: nothing gets through, in either direction
            with RawClient(srv.endpoint) as plain:
                plain.send({"v": 1, "op": "info"})
                with pytest.raises(TimeoutError):
                    plain.recv(1.0)
            # a valid key pair that is not on the allowlist: refused too
            with Client(srv.endpoint, timeout_s=1.0, curve_server_key=str(d / "server.key"),
                        curve_cert=str(d / "mallory.key_secret")) as mallory:
                with pytest.raises(TimeoutError):
                    mallory.info()
            # the allowed client carries on
            assert s.step(np.ones(12)).shape == (4,)
            st = alice.stats()
            assert st["clients"] == 1 and st["messages"] < 10
