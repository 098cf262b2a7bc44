"""Server benchmark (part of ``nvmstream bench`` / ``make bench``): round trip per frame and
frames per second over ZeroMQ, nvmstream server vs a raw pyzmq DEALER/ROUTER echo, same run.

Both servers run as subprocesses on loopback; one client process drives them with the same
message sizes (a msgpack header and a float32 frame). Measured:

* 1 stream: one frame at a time (send, wait for the reply): round trip p50/p99, frames/s;
* 256 streams on 4 client sockets, each stream keeping ``depth`` frames in flight: frames/s
  and per-frame round trip p50/p99;
* the same for ``serve --workers 1`` and ``--workers 2`` (a broker in front of engine
  processes: one more hop, and on 2 cores the broker, the workers and the client share them).

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
    """Start a server subprocess and read its endpoint from its first stdout line (blocks
    until that line; ``timeout_s`` only marks a start that took too long)."""
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


# ------------------------------------------------------------------------------ CPU time
def _proc_cpu_s(pid: int) -> float | None:
    """CPU time (user + system, s) of process ``pid`` and every descendant of it that is still
    running (a broker's workers), from /proc; None where /proc is missing (not Linux)."""
    try:
        procs = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            procs[int(d)] = (int(rest[1]), (int(rest[11]) + int(rest[12])))
    except OSError:
        return None
    if pid not in procs:
        return None
    mine, todo = set(), [pid]
    while todo:
        p = todo.pop()
        mine.add(p)
        todo.extend(c for c, (pp, _) in procs.items() if pp == p and c not in mine)
    return sum(procs[p][1] for p in mine) / os.sysconf("SC_CLK_TCK")


def _cpu_per_frame_us(pid: int, fn, frames: int):
    """Run ``fn()``; returns (its result, CPU us per frame of server process ``pid`` with its
    children, CPU us per frame of this client process). CPU time, unlike wall time, hardly
    depends on what else the machine runs."""
    s0, c0 = _proc_cpu_s(pid), time.process_time()
    r = fn()
    s1, c1 = _proc_cpu_s(pid), time.process_time()
    srv = None if s0 is None or s1 is None else (s1 - s0) / frames * 1e6
    return r, srv, (c1 - c0) / frames * 1e6


# ----------------------------------------------------------------------------- echo client
def _echo_pingpong(ep: str, frame: np.ndarray, n: int) -> np.ndarray:
    ctx = zmq.Context.instance()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(ep)
    rtt = np.empty(n)
    payload = frame.tobytes()
    for i in range(n + 200):
        hdr = P.pack({"v": P.VERSION, "op": P.FRAME, "id": 0, "seq": i, "dtype": P.F32,
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
                d.send_multipart((P.pack({"v": P.VERSION, "op": P.FRAME, "id": sid, "seq": r,
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
def _nvm_pingpong(ep: str, frame: np.ndarray, n: int, settle_s: float = 0.0
                  ) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Round trips (s) and the server's own time per frame (us) of one stream, and the
    server's measured one-stream engine step (us, its ``stats.step_us``: the step as it runs
    between messages, which on a shared machine is slower than in a tight loop)."""
    from .client import Client
    with Client(ep) as c:
        s = c.open(seed=0)
        for _ in range(200):
            s.step(frame)
        rtt = np.empty(n)
        srv = np.empty(n)
        for i in range(n):
            t = time.perf_counter()
            s.send(frame)
            r = s.recv()
            rtt[i] = time.perf_counter() - t
            srv[i] = r.srv_us
        s.close()
        time.sleep(settle_s)          # a broker's stats come with the workers' heartbeats
        st = c.stats()
    steps = [st.get("step_us")] + [w.get("step_us") for w in st.get("workers") or []]
    one = [d["1"] for d in steps if type(d) is dict and d.get("1")]
    return rtt, srv, (max(one) if one else None)


def _nvm_many(ep: str, frame: np.ndarray, streams: int, sockets: int, rounds: int,
              depth: int, batched: bool = False, settle_s: float = 0.0
              ) -> tuple[float, np.ndarray, dict]:
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

    busy = [0]

    def recv(s):
        """The stream's next reply; a `busy` one is sent again (as the spec asks) and counted,
        and the stream's next reply taken instead (the frames in flight stay the same)."""
        while True:
            r = s.recv(raise_errors=False)
            if r.op != P.ERROR:
                return r
            if r.hdr.get("code") != P.BUSY:
                raise r.error()
            busy[0] += 1
            s.send(frame)

    send_round()                   # warm up
    for s in sts:
        recv(s)
    time.sleep(settle_s)           # a broker's stats come with the workers' heartbeats
    before = clients[0].stats()
    rtts = []
    for r in range(min(depth, rounds)):
        send_round()
    t0 = time.perf_counter()
    for r in range(rounds):
        for s in sts:
            rtts.append(recv(s).rtt_s)
        if r + depth < rounds:
            send_round()
    el = time.perf_counter() - t0
    time.sleep(settle_s)
    after = clients[0].stats()
    for s in sts:
        s.close()
    for c in clients:
        c.close()
    batches = after["batches"] - before["batches"]
    stats = {"batch_mean": (after["frames"] - before["frames"]) / batches if batches else None,
             "srv_us": after["srv_us"], "busy": busy[0]}
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


def _engine_step_us(model: Path, profile: str, n: int = 2000, batch: int = 1) -> float:
    """Median in-process time of one engine step of ``batch`` streams (the part of a round
    trip that is the emulated chip, not the protocol), with one BLAS thread like the server,
    by the route the server takes: ``Stream.step`` for one stream (the server's direct path
    for a lone frame), ``step_many_all`` for a batch."""
    import nvmstream as nvm

    from .bench import blas_threads
    eng = nvm.Engine(nvm.load(model), nvm.Device(profile, seed=0))
    ss = [eng.stream(seed=i) for i in range(batch)]
    x = np.ones((batch, eng.model.input.features), np.float32)
    ts = np.empty(n)
    with blas_threads(1):
        step = (lambda: ss[0].step(x[0])) if batch == 1 and len(eng.model.outputs) == 1 \
            else (lambda: eng.step_many_all(ss, x))
        for i in range(n + 20):
            t = time.perf_counter()
            step()
            if i >= 20:
                ts[i - 20] = time.perf_counter() - t
    return float(np.median(ts) * 1e6)


def run_bench(out_dir: str | os.PathLike | None = None, *, quick: bool = False,
              profiles: tuple[str, ...] = ("int4", "pcm"), streams: int = 256,
              sockets: int = 4, depth: int = 4, workers: tuple[int, ...] = (1, 2)) -> dict:
    """Run the server benchmark; returns the figures and (if ``out_dir``) writes
    ``server_bench.json`` there. Never asserts on the targets: it reports them.

    The raw echo, one nvmstream server per profile and (``workers``) a broker with N worker
    processes on the first profile run side by side; every measurement is repeated
    (interleaved: echo, then each server, in every repeat) so that load from elsewhere on the
    machine hits all of them alike; frames/s are the median over repeats, round-trip
    percentiles pool the repeats. Besides wall-clock figures it records the CPU time per frame
    of each server (with its worker processes) and of the client, which hardly depend on the
    machine's other load, and the load average before and after."""
    n1 = 600 if quick else 2000
    rounds = 40 if quick else 150
    repeats = 2 if quick else 3
    frame = np.random.default_rng(1).standard_normal(12).astype(np.float32)
    variants = [(p, p, []) for p in profiles] + \
        [(f"{profiles[0]} {n}w", profiles[0], ["--workers", str(n)]) for n in workers]
    labels = [v[0] for v in variants]
    res: dict = {"profiles": labels, "streams": streams, "sockets": sockets,
                 "depth": depth, "cpu_count": os.cpu_count(), "pyzmq": zmq.__version__,
                 "libzmq": zmq.zmq_version(), "repeats": repeats,
                 "loadavg_before": _loadavg()}
    procs: list[subprocess.Popen] = []
    keys = ["echo"] + labels + [p + "/batch" for p in labels]
    one = {k: {"rtt": [], "srv": [], "step": [], "cpu_s": [], "cpu_c": []}
           for k in ["echo"] + labels}
    many = {k: {"fps": [], "rtt": [], "cpu_s": [], "cpu_c": [], "batch": [], "busy": []}
            for k in keys}
    with tempfile.TemporaryDirectory() as td:
        model, desc = _model(Path(td))
        res["model"] = desc
        eep = None
        try:
            echo, eep = _spawn(["-m", "nvmstream.runtime.bench_server", "echo",
                                "--bind", "tcp://127.0.0.1:*"])
            procs.append(echo)
            eps, pids = {"echo": eep}, {"echo": echo.pid}
            for label, prof, extra in variants:
                p, eps[label] = _spawn(["-m", "nvmstream.runtime.server_cli", "serve",
                                        str(model), "--profile", prof,
                                        "--bind", "tcp://127.0.0.1:*", *extra], 600.0)
                procs.append(p)
                pids[label] = p.pid
            settle = {label: (1.3 if extra else 0.0) for label, _, extra in variants}
            nmany = streams * rounds
            for _ in range(repeats):
                r, cs, cc = _cpu_per_frame_us(pids["echo"],
                                              lambda: _echo_pingpong(eep, frame, n1), n1 + 200)
                one["echo"]["rtt"].append(r)
                one["echo"]["cpu_s"].append(cs)
                one["echo"]["cpu_c"].append(cc)
                for p in labels:
                    (rtt, srv, step), cs, cc = _cpu_per_frame_us(
                        pids[p], lambda: _nvm_pingpong(eps[p], frame, n1, settle[p]), n1 + 200)
                    one[p]["rtt"].append(rtt)
                    one[p]["srv"].append(srv)
                    one[p]["step"].append(step)
                    one[p]["cpu_s"].append(cs)
                    one[p]["cpu_c"].append(cc)
                (fps, rtt), cs, cc = _cpu_per_frame_us(
                    pids["echo"], lambda: _echo_many(eep, frame, streams, sockets, rounds, depth),
                    nmany)
                m = many["echo"]
                m["fps"].append(fps)
                m["rtt"].append(rtt)
                m["cpu_s"].append(cs)
                m["cpu_c"].append(cc)
                for p in labels:
                    for key, batched in ((p, False), (p + "/batch", True)):
                        (fps, rtt, st), cs, cc = _cpu_per_frame_us(
                            pids[p], lambda: _nvm_many(eps[p], frame, streams, sockets, rounds,
                                                       depth, batched=batched,
                                                       settle_s=settle[p]),
                            nmany)
                        m = many[key]
                        m["fps"].append(fps)
                        m["rtt"].append(rtt)
                        m["cpu_s"].append(cs)
                        m["cpu_c"].append(cc)
                        m["batch"].append(st["batch_mean"] or 0.0)
                        m["busy"].append(st["busy"])
            engine_us = {label: _engine_step_us(model, prof) for label, prof, _ in variants}
            engine_many_us = {label: _engine_step_us(model, prof, 200 if quick else 500,
                                                     batch=streams)
                              for label, prof, _ in variants}
        finally:
            if eep is not None:
                q = zmq.Context.instance().socket(zmq.DEALER)
                q.setsockopt(zmq.LINGER, 500)
                q.connect(eep)
                q.send(b"quit")
                q.close()
            for p in procs:
                _stop(p)
    res["loadavg_after"] = _loadavg()

    def med(a):
        a = [v for v in a if v is not None]
        return float(np.median(a)) if a else None

    e1 = np.concatenate(one["echo"]["rtt"])
    em = many["echo"]
    res["echo"] = {"rtt_1_us": _pct_us(e1), "frames_per_s_1": float(1 / e1.mean()),
                   "cpu_us_per_frame_1": med(one["echo"]["cpu_s"]),
                   "client_cpu_us_per_frame_1": med(one["echo"]["cpu_c"]),
                   "frames_per_s_many": float(np.median(em["fps"])),
                   "rtt_many_us": _pct_us(np.concatenate(em["rtt"])),
                   "cpu_us_per_frame_many": med(em["cpu_s"]),
                   "client_cpu_us_per_frame_many": med(em["cpu_c"])}
    e_p50 = float(np.median(e1))
    res["nvmstream"] = {}
    for p in labels:
        r1 = np.concatenate(one[p]["rtt"])
        m, mb = many[p], many[p + "/batch"]
        d = {"rtt_1_us": _pct_us(r1), "frames_per_s_1": float(1 / r1.mean()),
             "server_us_1": float(np.median(np.concatenate(one[p]["srv"]))),
             "engine_step_us": engine_us[p],
             "engine_step_us_in_server": med(one[p]["step"]),
             "engine_step_us_many": engine_many_us[p],
             "p50_ratio": float(np.median(r1) / e_p50)}
        # the serving overhead alone: the round trip less one engine step as the server
        # measured it (else as measured in a tight loop), over the echo's round trip
        step_s = (d["engine_step_us_in_server"] or engine_us[p]) * 1e-6
        d |= {"p50_ratio_without_engine": float((np.median(r1) - step_s) / e_p50),
              "cpu_us_per_frame_1": med(one[p]["cpu_s"]),
              "client_cpu_us_per_frame_1": med(one[p]["cpu_c"]),
              "frames_per_s_many": float(np.median(m["fps"])),
              "fps_many_ratio": float(np.median(m["fps"]) / res["echo"]["frames_per_s_many"]),
              "rtt_many_us": _pct_us(np.concatenate(m["rtt"])),
              "batch_mean_many": float(np.mean(m["batch"])),
              "busy_resent_many": int(sum(m["busy"]) + sum(mb["busy"])),
              "cpu_us_per_frame_many": med(m["cpu_s"]),
              "client_cpu_us_per_frame_many": med(m["cpu_c"]),
              "frames_per_s_many_batched": float(np.median(mb["fps"])),
              "rtt_many_batched_us": _pct_us(np.concatenate(mb["rtt"])),
              "batch_mean_many_batched": float(np.mean(mb["batch"])),
              "cpu_us_per_frame_many_batched": med(mb["cpu_s"]),
              "client_cpu_us_per_frame_many_batched": med(mb["cpu_c"])}
        d["targets_met"] = {"p50_ratio": d["p50_ratio"] <= TARGET_P50_RATIO,
                            "fps_many": d["frames_per_s_many"] >= TARGET_FPS_256,
                            "fps_many_batched": d["frames_per_s_many_batched"] >= TARGET_FPS_256}
        res["nvmstream"][p] = d
    res["targets"] = {"p50_ratio_max": TARGET_P50_RATIO, "fps_many_min": TARGET_FPS_256}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "server_bench.json").write_text(json.dumps(res, indent=2))
    return res


def _loadavg() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages (what ``uptime`` shows)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def format_results(res: dict) -> str:
    """A plain-text table of :func:`run_bench` figures."""
    e, t = res["echo"], res["targets"]
    n = res["streams"]
    profs = res["profiles"]
    w = 12

    def fmt_cell(v, fmt):
        return "" if v is None else fmt.format(v)

    def row(label, echo_v, key, fmt="{:.0f}", target=""):
        cells = [fmt_cell(echo_v, fmt)]
        for p in profs:
            v = res["nvmstream"][p]
            for k in key.split("."):
                v = v[k]
            cells.append(fmt_cell(v, fmt))
        return f"{label:<42}" + "".join(f"{c:>{w}}" for c in cells) + (f"  {target}" if target
                                                                          else "")

    def ok(key):
        return "/".join("ok" if res["nvmstream"][p]["targets_met"][key] else "MISSED"
                        for p in profs)

    la, lb = res.get("loadavg_before"), res.get("loadavg_after")
    load = f"; load average {la[0]:.1f} before, {lb[0]:.1f} after" if la and lb else ""
    lines = [
        f"server benchmark: {res['model']}; {res['cpu_count']} CPUs{load}; libzmq "
        f"{res['libzmq']}; {n} streams on {res['sockets']} sockets, {res['depth']} frames in "
        f"flight each; median of {res['repeats']} interleaved repeats",
        f"{'':<42}{'raw echo':>{w}}" + "".join(f"{'nvm ' + p:>{w}}" for p in profs),
        row("1 stream: round trip p50 (us)", e["rtt_1_us"]["p50"], "rtt_1_us.p50"),
        row("1 stream: round trip p99 (us)", e["rtt_1_us"]["p99"], "rtt_1_us.p99"),
        row("1 stream: p50 / echo p50", 1.0, "p50_ratio", "{:.2f}",
            f"target <= {t['p50_ratio_max']}: {ok('p50_ratio')}"),
        row("1 stream: (p50 - server's step) / echo p50", 1.0, "p50_ratio_without_engine",
            "{:.2f}"),
        row("1 stream: server time p50 (us)", None, "server_us_1"),
        row("1 stream: engine step in the server (us)", None, "engine_step_us_in_server"),
        row("1 stream: engine step, tight loop (us)", None, "engine_step_us"),
        row("1 stream: server CPU per frame (us)", e.get("cpu_us_per_frame_1"),
            "cpu_us_per_frame_1"),
        row("1 stream: client CPU per frame (us)", e.get("client_cpu_us_per_frame_1"),
            "client_cpu_us_per_frame_1"),
        row(f"{n} streams: frames/s", e["frames_per_s_many"], "frames_per_s_many", "{:.0f}",
            f"target >= {t['fps_many_min']:.0f}: {ok('fps_many')}"),
        row(f"{n} streams: frames/s / echo's", 1.0, "fps_many_ratio", "{:.2f}"),
        row(f"{n} streams: round trip p50 (us)", e["rtt_many_us"]["p50"], "rtt_many_us.p50"),
        row(f"{n} streams: mean engine batch", None, "batch_mean_many", "{:.1f}"),
        row(f"{n} streams: engine step of {n} (us)", None, "engine_step_us_many"),
        row(f"{n} streams: server CPU per frame (us)", e.get("cpu_us_per_frame_many"),
            "cpu_us_per_frame_many", "{:.1f}"),
        row(f"{n} streams: client CPU per frame (us)", e.get("client_cpu_us_per_frame_many"),
            "client_cpu_us_per_frame_many", "{:.1f}"),
        row(f"{n} streams, batch msgs: frames/s", None, "frames_per_s_many_batched", "{:.0f}",
            f"target >= {t['fps_many_min']:.0f}: {ok('fps_many_batched')}"),
        row(f"{n} streams, batch msgs: rtt p50 (us)", None, "rtt_many_batched_us.p50"),
        row(f"{n} streams, batch msgs: mean batch", None, "batch_mean_many_batched", "{:.1f}"),
        row(f"{n} streams, batch msgs: server CPU/frame", None,
            "cpu_us_per_frame_many_batched", "{:.1f}"),
        row(f"{n} streams, batch msgs: client CPU/frame", None,
            "client_cpu_us_per_frame_many_batched", "{:.1f}"),
        row(f"{n} streams: busy replies (sent again)", None, "busy_resent_many"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m nvmstream.runtime.bench_server echo --bind EP``: the raw pyzmq echo server the
    benchmark starts as its baseline. The benchmark itself runs (and prints) through
    ``nvmstream bench``; this module only measures and formats."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m nvmstream.runtime.bench_server")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo", help="run the raw echo server (used by the benchmark)")
    e.add_argument("--bind", default="tcp://127.0.0.1:*")
    args = p.parse_args(argv)
    echo_server(args.bind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
