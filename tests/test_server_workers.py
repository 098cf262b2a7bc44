"""`nvmstream serve --workers N`: a broker in front of engine worker processes, streams pinned
to a worker, a killed worker's streams told by a `worker_lost` notice while the others carry
on, workers joining from two loopback addresses, SIGTERM through the broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

import nvmstream as nvm
from nvmstream.runtime import protocol as P
from nvmstream.runtime.client import Client, ServerError
from nvmstream.runtime.server import ServerConfig
from nvmstream.runtime.serving import control as C
from nvmstream.runtime.serving.broker import Broker
from server_util import REPO, RawClient, ServerProcess, compile_fixture, frame_msg


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return compile_fixture("lstm1_bf.ts.onnx", tmp_path_factory.mktemp("m") / "lstm1.nvm")


def _reference(model, profile, seeds, x):
    eng = nvm.Engine(nvm.load(model), nvm.Device(profile, seed=0))
    out = []
    for i, seed in enumerate(seeds):
        s = eng.stream(seed=seed)
        out.append(np.stack([s.step(x[i, t]) for t in range(x.shape[1])]))
    return np.stack(out)


def _wait(pred, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_two_workers_serve_pinned_streams_exactly(model):
    n, steps = 12, 5
    x = np.random.default_rng(0).standard_normal((n, steps, 12)).astype(np.float32)
    with ServerProcess(model, "--profile", "pcm", "--workers", "2") as srv, \
            Client(srv.endpoint, timeout_s=30) as c:
        streams = [c.open(seed=100 + i) for i in range(n)]
        for t in range(steps):
            if t % 2:
                c.send_frames([(s, x[i, t]) for i, s in enumerate(streams)])   # split by worker
            else:
                for i, s in enumerate(streams):
                    s.send(x[i, t])
        got = np.stack([np.concatenate([s.recv().y for _ in range(steps)]) for s in streams])
        st = _wait(lambda: (lambda s: s if len(s["workers"]) == 2 and s["frames"] == n * steps
                            else None)(c.stats()))
        assert sorted(w["streams"] for w in st["workers"]) == [n // 2, n // 2]
        assert st["streams"] == n
        for s in streams:
            assert s.close()["frames"] == steps
    np.testing.assert_array_equal(got, _reference(model, "pcm", 100 + np.arange(n), x))


def test_killed_worker_streams_get_a_notice_others_continue(model):
    x = np.ones(12, np.float32)
    with ServerProcess(model, "--profile", "ideal", "--workers", "2") as srv, \
            Client(srv.endpoint, timeout_s=30) as c:
        streams = [c.open(seed=i) for i in range(8)]
        for s in streams:
            s.step(x)
        st = _wait(lambda: (lambda s: s if all(w["pid"] for w in s["workers"])
                            and len(s["workers"]) == 2 else None)(c.stats()))
        victim = st["workers"][0]
        os.kill(victim["pid"], signal.SIGKILL)
        notice = _wait(lambda: (c._recv_one(0.2), next((r for r in c.notices
                                                        if r.op == "worker_lost"), None))[1])
        lost = set(notice.hdr["ids"])
        assert len(lost) == victim["streams"] == 4 and notice.hdr["reason"]
        for s in streams:
            if s.sid in lost:
                assert s.ended == "worker_lost"
                with pytest.raises(ServerError) as e:
                    s.recv(timeout_s=5)
                assert e.value.code == "worker_lost"
            else:                                          # the other worker's streams go on
                assert s.step(x).shape == (4,)
                assert s.close()["frames"] == 2
        # recovery: open again; the broker has started a new worker meanwhile
        st = _wait(lambda: (lambda s: s if len(s["workers"]) == 2 else None)(c.stats()), 60)
        assert st["broker"]["workers_lost"] == 1 and st["broker"]["streams_lost"] == 4
        again = [c.open(seed=i) for i in range(4)]
        assert all(s.step(x).shape == (4,) for s in again)
        # SIGTERM through the broker: drains every worker, exits 0
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0


def test_workers_on_two_loopback_addresses(model):
    """A broker with worker endpoints on 127.0.0.1 and 127.0.0.2: one spawned worker, one
    started by hand with `nvmstream worker --connect` on the other address; streams spread
    over both and each equals the in-process engine."""
    with ServerProcess(model, "--profile", "ideal", "--workers", "1",
                       "--worker-bind", "tcp://127.0.0.1:*",
                       "--worker-bind", "tcp://127.0.0.2:*") as srv:
        eps = srv.stdout_lines[0].split("workers connect to ")[1].strip(")\n ").split()
        assert [e.split(":")[1] for e in eps] == ["//127.0.0.1", "//127.0.0.2"]
        w = subprocess.Popen([sys.executable, "-m", "nvmstream.runtime.server_cli", "worker",
                              str(model), "--profile", "ideal", "--connect", eps[1]],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            with Client(srv.endpoint, timeout_s=30) as c:
                _wait(lambda: len(c.stats()["workers"]) == 2, 120)
                n = 6
                x = np.random.default_rng(1).standard_normal((n, 3, 12)).astype(np.float32)
                streams = [c.open(seed=i) for i in range(n)]
                got = np.stack([np.stack([s.step(x[i, t]) for t in range(3)])
                                for i, s in enumerate(streams)])
                st = c.stats()
                assert sorted(wk["streams"] for wk in st["workers"]) == [3, 3]
                assert {wk["pid"] for wk in st["workers"]} >= {w.pid}
            np.testing.assert_array_equal(got, _reference(model, "ideal", range(n), x))
            srv.proc.send_signal(signal.SIGTERM)
            assert srv.proc.wait(30) == 0
            assert w.wait(30) == 0                  # the broker's stop drains it too
        finally:
            if w.poll() is None:
                w.kill()
                w.wait(5)


def test_broker_answers_garbage_and_unknown_streams(model):
    with ServerProcess(model, "--profile", "ideal", "--workers", "1") as srv, \
            RawClient(srv.endpoint) as rc:
        rc.send_parts([b"\xc1"])
        assert rc.recv(30)[0]["code"] == "bad_message"
        h, _ = rc.request(*frame_msg(9, 0, np.ones(12)))
        assert h["code"] == "unknown_stream"
        h, _ = rc.request({"v": 1, "op": "ping", "rid": 4})
        assert h["op"] == "ping" and h["rid"] == 4
        assert rc.request({"v": 1, "op": "info"})[0]["model"]["features"] == 12
        # frames the broker passes on together, then close, then a late frame: in order
        assert rc.request({"v": 1, "op": "open", "id": 3})[0]["op"] == "open"
        # (some in another key order, which the broker decodes; a NaN frame; a payload of
        # the wrong size: each answered on its own, in order)
        for t in range(40):
            hdr, pay = frame_msg(3, t, np.full(12, np.nan) if t == 17 else np.ones(12))
            if t % 5 == 1:
                hdr = dict(reversed(hdr.items()))
            rc.send(hdr, pay[:-4] if t == 23 else pay)
        rc.send({"v": 1, "op": "close", "id": 3})
        rc.send(*frame_msg(3, 40, np.ones(12)))
        reps = [h for h, _ in rc.recv_n(42, timeout_s=60)]
        assert [h.get("seq") for h in reps[:40]] == list(range(40))
        assert [h.get("code") for h in reps[:40] if h["op"] != "frame"] == ["bad_payload"] * 2
        assert reps[17]["code"] == reps[23]["code"] == "bad_payload"
        assert reps[40]["op"] == "close" and reps[40]["frames"] == 38
        assert reps[41]["code"] == "unknown_stream"


def test_broker_routes_frames_on_their_first_bytes_and_bundles_them():
    """In process, with a stand-in worker: frame requests in the canonical key order are
    routed without being decoded, and the frames one client sent to one worker in one turn
    reach it as one bundle of the client's own header bytes and payloads (never re-encoded);
    a header in another key order is decoded, and routed to the same worker. Spawned workers
    connect over ipc in a private folder, removed at close."""
    ctx = zmq.Context()
    b = Broker(ServerConfig(bind="tcp://127.0.0.1:*"), context=ctx)
    b.bind()
    wk = ctx.socket(zmq.DEALER)
    cl = ctx.socket(zmq.DEALER)
    try:
        assert b.local_worker_endpoint.startswith("ipc://")
        folder = os.path.dirname(b.local_worker_endpoint[len("ipc://"):])
        assert os.stat(folder).st_mode & 0o077 == 0
        wk.connect(b.local_worker_endpoint)
        wk.send_multipart([b"", C.pack({"op": C.READY, "pid": 1, "host": "here"})])
        _wait(lambda: (b.back.poll(100) and b._from_workers(), b._live())[1])
        cl.connect(b.endpoint)
        cl.send(P.pack({"v": 1, "op": "open", "id": 300}))
        assert b.front.poll(10000)
        b._from_clients()
        assert wk.poll(10000)
        peer, opened = wk.recv_multipart()
        assert P.unpack_header(opened)["op"] == "open"
        heads = [P.pack({"v": 1, "op": "frame", "id": 300, "seq": i, "dtype": "<f4",
                         "shape": [1, 12]}) for i in range(5)]
        heads.append(P.pack({"seq": 5, "op": "frame", "v": 1, "id": 300, "dtype": "<f4",
                             "shape": [1, 12]}))
        assert [P.frame_stream_id(h) for h in heads] == [300] * 5 + [None]
        pays = [bytes([i]) * 48 for i in range(6)]
        for h, p in zip(heads, pays):
            cl.send_multipart([h, p])
        time.sleep(0.5)                       # all six wait in the broker's socket
        b._from_clients()
        assert wk.poll(10000)
        m = wk.recv_multipart()
        assert m[:3] == [b"", C.BUNDLE, peer]
        assert m[3::2] == heads and m[4::2] == pays
        assert b.stats()["broker"]["coalesced"] == 6
    finally:
        wk.close(0)
        cl.close(0)
        b.close()
    assert not os.path.exists(folder)
    ctx.term()


def test_a_new_broker_removes_the_ipc_folder_of_a_sigkilled_one():
    """A broker killed by SIGKILL cannot remove its ipc folder; the next broker on the host
    removes folders whose broker pid is gone, and leaves a live broker's folder alone."""
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(dir="/tmp", prefix="nvt-")   # short: ipc paths are <= 107 bytes
    env = dict(os.environ, TMPDIR=tmp)
    code = ("import sys, time\n"
            "from nvmstream.runtime.server import ServerConfig\n"
            "from nvmstream.runtime.serving.broker import Broker\n"
            "b = Broker(ServerConfig(bind='tcp://127.0.0.1:*'))\n"
            "b.bind()\n"
            "print(b.local_worker_endpoint, flush=True)\n"
            "time.sleep(600)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    old_tempdir = tempfile.tempdir
    try:
        folders = []
        for p in procs:
            ep = p.stdout.readline().strip()
            assert ep.startswith("ipc://"), ep
            folders.append(os.path.dirname(ep[len("ipc://"):]))
        dead, live = folders
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        assert os.path.isdir(dead) and os.path.isdir(live)
        tempfile.tempdir = tmp
        b = Broker(ServerConfig(bind="tcp://127.0.0.1:*"))
        b.bind()
        try:
            assert not os.path.exists(dead)
            assert os.path.isdir(live)
            mine = os.path.dirname(b.local_worker_endpoint[len("ipc://"):])
            assert os.path.basename(mine).startswith(f"nvmstream-broker-{os.getpid()}-")
        finally:
            b.close()
        assert not os.path.exists(mine)
    finally:
        tempfile.tempdir = old_tempdir
        for p in procs:
            p.kill()
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
