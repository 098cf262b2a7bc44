"""Server benchmark (part of ``nvmstream bench`` / ``make bench``): round trip per frame and
frames per second over ZeroMQ, nvmstream server vs a raw pyzmq DEALER/ROUTER echo, same run.

Both servers run as subprocesses on loopback; one client process drives them with the same
message sizes (a msgpack header and a float32 frame). Measured:

* 1 stream: one frame at a time (send, wait for the reply): round trip p50/p99, frames/s;
* 256 streams on 4 client sockets, each stream keeping ``depth`` frames in flight: frames/s
  and per-frame round trip p50/p99.

The echo server uses the same loop shape as the nvmstream server (block for one message,
then drain without blocking) and answers each message as it is, so the difference is what the
protocol, validation, batching, the engine and the client library cost. Targets (issue):
p50 round trip <= 1.5x the echo's; >= 30k frames/s with 256 streams on 2 cores.

``python -m nvmstream.runtime.bench_server [--quick] [--out DIR] [--profile P]`` prints a
table; :func:`run_bench` returns the figures (and writes ``server_bench.json``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

from . import protocol as P

log = logging.getLogger(__name__)

TARGET_P50_RATIO = 1.5
TARGET_FPS_256 = 30000.0


# ------------------------------------------------------------------------------ echo server
def echo_server(bind: str) -> None:
    """Raw ROUTER echo with the nvmstream server's loop shape (used as a subprocess)."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.SNDHWM, 100000)
    s.setsockopt(zmq.RCVHWM, 100000)
    s.setsockopt(zmq.RCVTIMEO, 100)
    s.bind(bind)
    sys.stdout.write(s.getsockopt_string(zmq.LAST_ENDPOINT) + "\n")
    sys.stdout.flush()
    recv, send = s.recv_multipart, s.send_multipart
    while True:
        try:
            m = recv()
        except zmq.Again:
            continue
        if m[1] == b"quit":
            break
        send(m)
        while True:
            try:
                m = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            send(m)
    s.close(0)
    ctx.term()


def _spawn(args: list[str], timeout_s: float = 60.0) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    line = p.stdout.readline()
    if "tcp://" not in line or time.monotonic() - t0 > timeout_s:
        p.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    ep = line[line.index("tcp://"):].split()[0]
    return p, ep


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ----------------------------------------------------------------------------- echo client
def _echo_pingpong(ep: str, frame: np.ndarray, n: int) -> np.ndarray:
    ctx = zmq.Context.instance()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(ep)
    rtt = np.empty(n)
    payload = frame.tobytes()
    for i in range(n + 200):
        hdr = P.pack({"v": 1, "op": "frame", "id": 0, "seq": i, "dtype": "<f4",
                      "shape": [1, frame.size]})
        t = time.perf_counter()
        d.send_multipart((hdr, payload))
        r = d.recv_multipart()
        P.unpack_header(r[0])
        if i >= 200:
            rtt[i - 200] = time.perf_counter() - t
    d.close(0)
    return rtt


def _echo_many(ep: str, frame: np.ndarray, streams: int, sockets: int, rounds: int,
               depth: int) -> tuple[float, np.ndarray]:
    ctx = zmq.Context.instance()
    socks = []
    for _ in range(sockets):
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.setsockopt(zmq.SNDHWM, 100000)
        d.setsockopt(zmq.RCVHWM, 100000)
        d.connect(ep)
        socks.append(d)
    payload = frame.tobytes()
    per = [list(range(k, streams, sockets)) for k in range(sockets)]
    sent = {}
    rtts = []

    def send_round(r):
        for k, d in enumerate(socks):
            for sid in per[k]:
                d.send_multipart((P.pack({"v": 1, "op": "frame", "id": sid, "seq": r,
                                          "dtype": "<f4", "shape": [1, frame.size]}), payload))
                sent[(sid, r)] = time.perf_counter()

    def recv_round():
        for k, d in enumerate(socks):
            for _ in per[k]:
                m = d.recv_multipart()
                t = time.perf_counter()
                h = P.unpack_header(m[0])
                rtts.append(t - sent.pop((h["id"], h["seq"])))

    for r in range(min(depth, rounds)):
        send_round(r)
    t0 = time.perf_counter()
    for r in range(rounds):
        recv_round()
        if r + depth < rounds:
            send_round(r + depth)
    el = time.perf_counter() - t0
    for d in socks:
        d.close(0)
    return streams * rounds / el, np.asarray(rtts)


# --------------------------------------------------------------------------- nvmstream client
def _nvm_pingpong(ep: str, frame: np.ndarray, n: int) -> np.ndarray:
    from .client import Client
    with Client(ep) as c:
        s = c.open(seed=0)
        for _ in range(200):
            s.step(frame)
        rtt = np.empty(n)
        for i in range(n):
            t = time.perf_counter()
            s.step(frame)
            rtt[i] = time.perf_counter() - t
        s.close()
    return rtt


def _nvm_many(ep: str, frame: np.ndarray, streams: int, sockets: int, rounds: int,
              depth: int, batched: bool = False) -> tuple[float, np.ndarray, dict]:
    """``streams`` streams over ``sockets`` clients, ``depth`` frames in flight per stream.
    ``batched``: each client sends one ``batch`` message per round for all its streams (a
    gateway multiplexing sensors) instead of one message per stream and frame."""
    from .client import Client
    clients = [Client(ep, timeout_s=60) for _ in range(sockets)]
    sts = [clients[i % sockets].open(seed=i, wait=False) for i in range(streams)]
    for s in sts:
        s.wait_open()
    groups = [[(s, frame) for s in sts if s.client is c] for c in clients]

    def send_round():
        if batched:
            for c, g in zip(clients, groups):
                c.send_frames(g)
        else:
            for s in sts:
                s.send(frame)

    send_round()                   # warm up
    for s in sts:
        s.recv()
    rtts = []
    for r in range(min(depth, rounds)):
        send_round()
    t0 = time.perf_counter()
    for r in range(rounds):
        for s in sts:
            rtts.append(s.recv().rtt_s)
        if r + depth < rounds:
            send_round()
    el = time.perf_counter() - t0
    stats = clients[0].stats()
    for s in sts:
        s.close()
    for c in clients:
        c.close()
    return streams * rounds / el, np.asarray(rtts), stats


def _pct_us(a: np.ndarray) -> dict:
    return {"p50": float(np.percentile(a, 50) * 1e6), "p99": float(np.percentile(a, 99) * 1e6)}


def _model(workdir: Path) -> tuple[Path, str]:
    import nvmstream as nvm
    rng = np.random.default_rng(0)
    try:
        from .bench import lstm_onnx
        onnx_path = lstm_onnx(workdir / "lstm12x64.onnx", 12, 64, 8, state_io=False)
        desc = "LSTM 12->64 + Linear 64->8"
    except ImportError:
        onnx_path = Path(__file__).resolve().parent.parent / "tests/fixtures/onnx/lstm1_bf.ts.onnx"
        desc = "tests/fixtures/onnx/lstm1_bf.ts.onnx"
    prog = nvm.convert(onnx_path, calibration=rng.standard_normal((16, 50, 12)).astype(np.float32))
    path = workdir / "bench.nvm"
    prog.save(path)
    return path, desc


def run_bench(out_dir: str | os.PathLike | None = None, *, quick: bool = False,
              profile: str = "pcm", streams: int = 256, sockets: int = 4, depth: int = 4
              ) -> dict:
    """Run the server benchmark; returns the figures and (if ``out_dir``) writes
    ``server_bench.json`` there. Never asserts on the targets: it reports them."""
    n1 = 1000 if quick else 5000
    rounds = 40 if quick else 200
    frame = np.random.default_rng(1).standard_normal(12).astype(np.float32)
    res: dict = {"profile": profile, "streams": streams, "sockets": sockets, "depth": depth,
                 "cpu_count": os.cpu_count(), "pyzmq": zmq.__version__,
                 "libzmq": zmq.zmq_version()}
    with tempfile.TemporaryDirectory() as td:
        model, desc = _model(Path(td))
        res["model"] = desc
        echo, eep = _spawn(["-m", "nvmstream.runtime.bench_server", "echo",
                            "--bind", "tcp://127.0.0.1:*"])
        srv = None
        try:
            srv, sep = _spawn(["-m", "nvmstream.runtime.server_cli", "serve", str(model),
                               "--profile", profile, "--bind", "tcp://127.0.0.1:*"])
            # interleave echo and nvmstream runs so machine load hits both alike
            e1, s1 = [], []
            for _ in range(2):
                e1.append(_echo_pingpong(eep, frame, n1 // 2))
                s1.append(_nvm_pingpong(sep, frame, n1 // 2))
            e1, s1 = np.concatenate(e1), np.concatenate(s1)
            efps, ertt = _echo_many(eep, frame, streams, sockets, rounds, depth)
            sfps, srtt, sstats = _nvm_many(sep, frame, streams, sockets, rounds, depth)
            bfps, brtt, bstats = _nvm_many(sep, frame, streams, sockets, rounds, depth,
                                           batched=True)
        finally:
            ctx = zmq.Context.instance()
            q = ctx.socket(zmq.DEALER)
            q.setsockopt(zmq.LINGER, 500)
            q.connect(eep)
            q.send(b"quit")
            q.close()
            for p in (echo, srv):
                if p is not None:
                    _stop(p)
    res["one_stream"] = {
        "echo_rtt_us": _pct_us(e1), "nvmstream_rtt_us": _pct_us(s1),
        "echo_frames_per_s": float(1 / e1.mean()), "nvmstream_frames_per_s": float(1 / s1.mean()),
    }
    res["one_stream"]["p50_ratio"] = (res["one_stream"]["nvmstream_rtt_us"]["p50"]
                                      / res["one_stream"]["echo_rtt_us"]["p50"])
    res["many_streams"] = {
        "echo_frames_per_s": efps, "nvmstream_frames_per_s": sfps,
        "echo_rtt_us": _pct_us(ertt), "nvmstream_rtt_us": _pct_us(srtt),
        "server_batch_mean": sstats.get("batch_mean"), "server_srv_us": sstats.get("srv_us"),
        "nvmstream_batched_frames_per_s": bfps, "nvmstream_batched_rtt_us": _pct_us(brtt),
    }
    res["targets"] = {
        "p50_ratio_max": TARGET_P50_RATIO, "p50_ratio_met":
            res["one_stream"]["p50_ratio"] <= TARGET_P50_RATIO,
        "fps_256_min": TARGET_FPS_256, "fps_256_met": sfps >= TARGET_FPS_256,
        "fps_256_batched_met": bfps >= TARGET_FPS_256}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "server_bench.json").write_text(json.dumps(res, indent=2))
    return res


def format_results(res: dict) -> str:
    """A plain-text table of :func:`run_bench` figures."""
    o, m, t = res["one_stream"], res["many_streams"], res["targets"]
    lines = [
        f"server: {res['model']}, profile {res['profile']}, {res['cpu_count']} CPUs, "
        f"libzmq {res['libzmq']}",
        f"{'':34}{'raw echo':>12}{'nvmstream':>12}{'ratio':>8}  target",
        f"{'1 stream  round trip p50 (us)':34}{o['echo_rtt_us']['p50']:>12.0f}"
        f"{o['nvmstream_rtt_us']['p50']:>12.0f}{o['p50_ratio']:>8.2f}  <= "
        f"{t['p50_ratio_max']} {'ok' if t['p50_ratio_met'] else 'MISSED'}",
        f"{'1 stream  round trip p99 (us)':34}{o['echo_rtt_us']['p99']:>12.0f}"
        f"{o['nvmstream_rtt_us']['p99']:>12.0f}",
        f"{'1 stream  frames/s':34}{o['echo_frames_per_s']:>12.0f}"
        f"{o['nvmstream_frames_per_s']:>12.0f}",
        f"{str(res['streams']) + ' streams frames/s':34}{m['echo_frames_per_s']:>12.0f}"
        f"{m['nvmstream_frames_per_s']:>12.0f}{'':8}  >= {t['fps_256_min']:.0f} "
        f"{'ok' if t['fps_256_met'] else 'MISSED'}",
        f"{'  same, batch messages frames/s':34}{'':>12}"
        f"{m['nvmstream_batched_frames_per_s']:>12.0f}{'':8}  >= {t['fps_256_min']:.0f} "
        f"{'ok' if t['fps_256_batched_met'] else 'MISSED'}",
        f"{str(res['streams']) + ' streams round trip p50 (us)':34}"
        f"{m['echo_rtt_us']['p50']:>12.0f}{m['nvmstream_rtt_us']['p50']:>12.0f}",
        f"{str(res['streams']) + ' streams round trip p99 (us)':34}"
        f"{m['echo_rtt_us']['p99']:>12.0f}{m['nvmstream_rtt_us']['p99']:>12.0f}",
        f"server mean batch {m['server_batch_mean'] or 0:.1f} streams",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m nvmstream.runtime.bench_server")
    sub = p.add_subparsers(dest="cmd")
    e = sub.add_parser("echo", help="run the raw echo server (used by the benchmark)")
    e.add_argument("--bind", default="tcp://127.0.0.1:*")
    b = sub.add_parser("run", help="run the benchmark (default)")
    for q in (p, b):
        q.add_argument("--quick", action="store_true")
        q.add_argument("--out", default=None)
        q.add_argument("--profile", default="pcm")
    args = p.parse_args(argv)
    if args.cmd == "echo":
        echo_server(args.bind)
        return 0
    res = run_bench(args.out, quick=args.quick, profile=args.profile)
    print(format_results(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
