"""The faults an independent client found (issue 11), each against a real server process on
loopback: more device configurations than the cache holds, a client that never reads its
replies, reply order under overload, pipelined frames behind a device being programmed,
profile names given by the server's operator."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

import nvmstream as nvm
from nvmstream.runtime import protocol as P
from nvmstream.runtime.client import Client
from server_util import RawClient, ServerProcess, compile_fixture, frame_msg, rss_bytes

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return compile_fixture("lstm1_bf.ts.onnx", tmp_path_factory.mktemp("m") / "lstm1.nvm")


def _open(rc, sid, **kw):
    rc.send({"v": 1, "op": "open", "id": sid, **kw})


def test_more_configurations_than_the_cache_never_starve(model):
    """10 distinct drift ages with a cache of 8: the configurations that fit are served (every
    frame answered, close answered), the others are refused at open with too_many_devices;
    closing streams frees room; SIGTERM then drains and exits 0."""
    x = np.random.default_rng(0).standard_normal((3, 12)).astype(np.float32)
    with ServerProcess(model, "--profile", "pcm", "--max-devices", "8",
                       "--idle-timeout", "30") as srv, RawClient(srv.endpoint) as rc:
        ages = [3600.0 * (i + 2) for i in range(10)]
        for i, age in enumerate(ages):
            _open(rc, i, overrides=[f"drift.age_s={age}"], seed=i)
        opens = {h["id"]: h for h, _ in rc.recv_n(10, timeout_s=120)}
        ok = sorted(i for i, h in opens.items() if h["op"] == "open")
        refused = sorted(i for i, h in opens.items() if h["op"] == "error")
        assert len(ok) == 7 and ok == list(range(7))      # the default device holds slot 8
        assert all(opens[i]["code"] == "too_many_devices" for i in refused)
        assert refused == [7, 8, 9]
        for t in range(3):
            for i in ok:
                rc.send(*frame_msg(i, t, x[t]))
        reps = rc.recv_n(3 * len(ok), timeout_s=60)
        assert all(h["op"] == "frame" for h, _ in reps)
        assert sorted((h["id"], h["seq"]) for h, _ in reps) == [(i, t) for i in ok
                                                                for t in range(3)]
        # every configuration was programmed as asked: stream 0 equals the in-process engine
        got0 = np.stack([np.frombuffer(p, "<f4") for h, p in sorted(
            ((h, p) for h, p in reps if h["id"] == 0), key=lambda r: r[0]["seq"])])
        eng = nvm.Engine(nvm.load(model), nvm.Device("pcm", seed=0,
                                                     overrides=[f"drift.age_s={ages[0]}"]))
        s = eng.stream(seed=0)
        np.testing.assert_array_equal(got0, np.stack([s.step(x[t]) for t in range(3)]))
        # close always answers; closing frees a configuration for a new one
        rc.send({"v": 1, "op": "close", "id": 0})
        assert rc.recv(30)[0]["op"] == "close"
        _open(rc, 7, overrides=[f"drift.age_s={ages[7]}"], seed=7)
        assert rc.recv(60)[0]["op"] == "open"
        rc.send(*frame_msg(7, 0, x[0]))
        assert rc.recv(30)[0]["op"] == "frame"
        # frames in flight on every stream, then SIGTERM: all answered, exit 0
        for i in [1, 2, 3, 4, 5, 6, 7]:
            rc.send(*frame_msg(i, 3 if i != 7 else 1, x[0]))
        srv.proc.send_signal(signal.SIGTERM)
        got = [rc.recv(30)[0] for _ in range(7 + 1)]
        # each frame is stepped, or refused if it arrived after the signal
        assert sorted(h["id"] for h in got[:7]) == [1, 2, 3, 4, 5, 6, 7]
        assert all(h["op"] == "frame" or h["code"] == "shutting_down" for h in got[:7])
        assert got[-1]["op"] == "shutdown"
        assert srv.proc.wait(30) == 0


def test_never_reading_client_is_bounded_and_others_are_served(model):
    """A client that sends `info` in a loop and never reads: the server drops its replies
    beyond the unread-reply cap (counted), its memory stays bounded, and another client's
    requests are still answered meanwhile."""
    with ServerProcess(model, "--profile", "ideal", "--unread-replies", "20") as srv:
        ctx = zmq.Context()
        flood = ctx.socket(zmq.DEALER)
        flood.setsockopt(zmq.LINGER, 0)
        flood.setsockopt(zmq.RCVHWM, 10)
        flood.setsockopt(zmq.RCVBUF, 4096)
        flood.connect(srv.endpoint)
        msg = P.pack({"v": 1, "op": "info"})
        with Client(srv.endpoint, timeout_s=30) as c:
            c.info()
            rss0 = rss_bytes(srv.proc.pid)
            sent = 0
            pings = 0
            t0 = time.monotonic()
            while True:
                for _ in range(2000):
                    try:
                        flood.send(msg, zmq.NOBLOCK)
                        sent += 1
                    except zmq.Again:
                        break
                c.ping()                              # answered while the flood goes on
                pings += 1
                # at least 6 s; on a loaded machine the server may need longer to read
                # enough of the flood to fill the cap
                if time.monotonic() - t0 >= 6.0:
                    st = c.stats()
                    if st["dropped_replies"] > 0 or time.monotonic() - t0 >= 40.0:
                        break
            rss1 = rss_bytes(srv.proc.pid)
        flood.close(0)
        ctx.term()
    assert sent > 20000 and pings > 0
    assert st["dropped_replies"] > 0
    # 20 unread reply messages (each a batch of at most 1024 ~600-byte info replies), plus
    # kernel socket buffers: well under 64 MB (without the cap it grew by ~100 MB per 10 s)
    assert rss1 - rss0 < 64 * 2 ** 20, (rss0, rss1)


def test_busy_and_out_of_order_keep_seq_order(model):
    """Overload with a tiny queue: every reply of the stream arrives in seq order, `busy`
    included; a gap's out_of_order reply comes after the replies of the frames before it."""
    n = 300
    x = np.random.default_rng(2).standard_normal((n, 12)).astype(np.float32)
    with ServerProcess(model, "--profile", "ideal", "--max-queue", "4") as srv, \
            RawClient(srv.endpoint) as rc:
        assert rc.request({"v": 1, "op": "open", "id": 1, "seed": 3})[0]["op"] == "open"
        for t in range(n):
            rc.send(*frame_msg(1, t, x[t]))
        rc.send(*frame_msg(1, n + 5, x[0]))                    # a gap
        reps = [h for h, _ in rc.recv_n(n + 1, timeout_s=60)]
        assert [h["seq"] for h in reps] == list(range(n)) + [n + 5]
        codes = {h.get("code") for h in reps[:n]}
        assert codes <= {None, "busy"} and "busy" in codes and None in codes
        assert reps[-1]["code"] == "out_of_order"
        # and close comes after everything of the stream
        for t in range(n, n + 20):
            rc.send(*frame_msg(1, t, x[0]))
        rc.send({"v": 1, "op": "close", "id": 1})
        rc.send(*frame_msg(1, n + 20, x[0]))                    # after close: unknown_stream
        tail = [h for h, _ in rc.recv_n(22, timeout_s=30)]
        assert [h.get("seq") for h in tail[:20]] == list(range(n, n + 20))
        assert tail[20]["op"] == "close"
        assert tail[21]["code"] == "unknown_stream"


def test_frames_pipelined_behind_a_programming_open(model):
    """Frames and close sent right after `open` of a new configuration, before its reply, are
    answered after the open reply, in order, with the right outputs."""
    x = np.random.default_rng(3).standard_normal((5, 12)).astype(np.float32)
    with ServerProcess(model, "--profile", "ideal") as srv, RawClient(srv.endpoint) as rc:
        _open(rc, 4, profile="int4", seed=9)
        for t in range(5):
            rc.send(*frame_msg(4, t, x[t]))
        rc.send({"v": 1, "op": "close", "id": 4})
        reps = rc.recv_n(7, timeout_s=60)
        assert [h["op"] for h, _ in reps] == ["open"] + ["frame"] * 5 + ["close"]
        eng = nvm.Engine(nvm.load(model), nvm.Device("int4", seed=0))
        s = eng.stream(seed=9)
        ref = np.stack([s.step(x[t]) for t in range(5)])
        np.testing.assert_array_equal(np.stack([np.frombuffer(p, "<f4")
                                                for _, p in reps[1:6]]), ref)
        # a bad profile: the open and everything queued behind it get errors, in order
        _open(rc, 5, profile="int4", overrides=["adc.bitz=3"])
        rc.send(*frame_msg(5, 0, x[0]))
        reps = [h for h, _ in rc.recv_n(2, timeout_s=60)]
        assert reps[0]["code"] == "bad_profile" and "bitz" in reps[0]["msg"]
        assert reps[1]["code"] in ("unknown_stream", "bad_profile")


def test_allowed_profile_keeps_its_given_name(model, tmp_path):
    toml = (REPO / "devices" / "profiles" / "int4.toml").read_text()
    (tmp_path / "mine.toml").write_text(toml)
    with ServerProcess(model, "--profile", "ideal", "--allow-profile",
                       f"mine={tmp_path / 'mine.toml'}") as srv, Client(srv.endpoint) as c:
        s = c.open(profile="mine")
        assert s.info["profile"] == "mine"
        assert "mine" in c.info()["profiles"]
        assert any(e["profile"] == "mine" for e in c.stats()["engines"])


def test_closed_ids_memory_is_bounded(model):
    with ServerProcess(model, "--profile", "ideal", "--max-streams", "16") as srv, \
            RawClient(srv.endpoint) as rc:
        for i in range(60):
            _open(rc, i)
            rc.send({"v": 1, "op": "close", "id": i})
        reps = rc.recv_n(120, timeout_s=60)
        assert [h["op"] for h, _ in reps] == ["open", "close"] * 60
        st = rc.request({"v": 1, "op": "stats"})[0]
        assert st["closed_ids_kept"] <= 16 and st["closed"] == 60
        h, _ = rc.request(*frame_msg(59, 0, np.ones(12)))
        assert h["code"] == "unknown_stream" and "closed" in h["msg"]


def test_bytes_keys_and_missing_dtype_codes(model):
    import msgpack
    with ServerProcess(model, "--profile", "ideal") as srv, RawClient(srv.endpoint) as rc:
        h, _ = rc.request(msgpack.packb({b"v": 1, b"op": b"info"}))
        assert h["code"] == "bad_message" and "keys" in h["msg"]
        assert rc.request({"v": 1, "op": "open", "id": 1})[0]["op"] == "open"
        h, _ = rc.request({"v": 1, "op": "frame", "id": 1, "seq": 0, "shape": [1, 12]},
                          np.ones(12, "<f4").tobytes())
        assert h["code"] == "bad_field" and "dtype" in h["msg"]
        h, _ = rc.request({"v": 1, "op": "frame", "id": 1, "seq": 1, "dtype": "<f4"},
                          np.ones(12, "<f4").tobytes())
        assert h["code"] == "bad_field" and "shape" in h["msg"]
        # a batch of 1024 one-frame items fits the header limit
        items = [{"op": "frame", "id": 1, "seq": 2 + i, "dtype": "<f4", "shape": [1, 12]}
                 for i in range(1024)]
        rc.send({"v": 1, "op": "batch", "r": items}, np.ones((1024, 12), "<f4").tobytes())
        reps = rc.recv_n(1024, timeout_s=60)
        assert [h.get("seq") for h, _ in reps] == list(range(2, 1026))
        assert {h["op"] for h, _ in reps} <= {"frame", "error"}
        assert {h.get("code") for h, _ in reps} <= {None, "busy"}


def test_stats_command_and_metrics_endpoint(model):
    """`nvmstream stats --connect` prints the live view; `--metrics-port` serves Prometheus
    text with the frame counter and per-device energy."""
    import json
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as so:                       # a free loopback port for the endpoint
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    with ServerProcess(model, "--profile", "int4", "--metrics-port", str(port)) as srv, \
            Client(srv.endpoint) as c:
        s = c.open(seed=1)
        for _ in range(3):
            s.step(np.ones(12, np.float32))
        out = subprocess.run([sys.executable, "-m", "nvmstream.runtime.server_cli", "stats",
                              "--connect", srv.endpoint, "--count", "2", "--interval", "0.1"],
                             capture_output=True, text=True, timeout=60, cwd=REPO)
        assert out.returncode == 0, out.stderr
        assert "streams 1" in out.stdout and "device int4" in out.stdout
        assert "server us p50" in out.stdout
        js = subprocess.run([sys.executable, "-m", "nvmstream.runtime.server_cli", "stats",
                             "--connect", srv.endpoint, "--count", "1", "--json"],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
        assert json.loads(js.stdout)["frames"] == 3
        time.sleep(1.2)                                # the loop publishes stats each second
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read() \
            .decode()
        assert "nvmstream_frames_total 3.0" in text
        assert 'nvmstream_device_energy_joules_total{overrides="",profile="int4",votes="1"}' \
            in text


def test_busy_bound_in_time(model):
    """`--max-queue-ms`: once a step time is measured, frames beyond that much queued work get
    `busy` (naming the bound) although the frame limit is far away; order is kept."""
    n = 200
    x = np.random.default_rng(5).standard_normal((n, 12)).astype(np.float32)
    with ServerProcess(model, "--profile", "ideal", "--max-queue-ms", "0.001") as srv, \
            RawClient(srv.endpoint) as rc:
        assert rc.request({"v": 1, "op": "open", "id": 1})[0]["op"] == "open"
        assert rc.request(*frame_msg(1, 0, x[0]))[0]["op"] == "frame"   # a measured step
        for t in range(1, n):
            rc.send(*frame_msg(1, t, x[t]))
        reps = [h for h, _ in rc.recv_n(n - 1, timeout_s=60)]
        assert [h["seq"] for h in reps] == list(range(1, n))
        busy = [h for h in reps if h["op"] == "error"]
        assert busy and all(h["code"] == "busy" and "ms of work" in h["msg"] for h in busy)
        st = rc.request({"v": 1, "op": "stats"})[0]
        assert st["busy_frames"] == len(busy) and st["step_us"]["1"] > 0
