"""The broker: one ROUTER for clients in front of engine workers, each stream pinned to one
worker (the zguide broker pattern: ROUTER front, ROUTER back with workers addressed by
identity, heartbeats both ways).

    b = Broker(ServerConfig(bind="tcp://127.0.0.1:5555"), worker_bind="tcp://127.0.0.1:5556")
    b.bind()
    b.spawn_workers(2, ["nvmstream", "worker", "model.nvm", ...])  # or start them elsewhere
    install_signal_handlers(b)
    b.run()

Routing. ``open`` goes to the live worker holding the fewest streams and pins ``(client,
id)`` to it; ``frame``, ``close`` and ``ping`` with an id follow the pin; a ``batch`` is split
by worker (its payload sliced accordingly); ``info`` goes to any worker; ``ping`` without an
id and ``stats`` are answered by the broker (``stats`` adds up the workers' heartbeat
statistics and lists the workers). Messages the broker cannot read are passed to a worker,
which answers them with the usual error. Replies pass back untouched.

A ``frame`` request whose header starts with ``v``, ``op``, ``id`` (the order the Python
client writes) is routed on those first bytes (:func:`~nvmstream.runtime.protocol.
frame_stream_id`), without decoding the header; the frames of one client for one worker in
one turn go on as one ``bundle`` (:mod:`.control`), never re-encoded. Spawned workers
connect over ``ipc://`` in a private folder (cheaper than TCP loopback); workers on other
hosts connect to the TCP ``worker_bind`` endpoints.

Faults. A worker silent for :data:`~.control.LIVENESS_S` (or a spawned worker process that
exited) is dead: every client that had streams on it gets a ``worker_lost`` notice naming
them, the pins are dropped, and a spawned worker is started again; the other workers' streams
carry on. SIGTERM: every worker drains (answers its queued frames, refuses new work, sends
``shutdown`` notices) and says ``bye``; the broker then exits (at most ``drain_max_s`` + 2 s).
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

import zmq

from .. import protocol as P
from ..server import ServerConfig, is_loopback, router_socket
from . import control as C

log = logging.getLogger(__name__)

__all__ = ["Broker", "remove_stale_ipc_dirs"]

#: spawned workers' ipc folders are ``<tmp>/nvmstream-broker-<broker pid>-<random>``
IPC_PREFIX = "nvmstream-broker-"


def remove_stale_ipc_dirs() -> list[str]:
    """Remove this user's broker ipc folders whose broker process is gone (a broker killed by
    SIGKILL cannot remove its own); return the folders removed. Folders of live brokers, of
    other users, and names without a pid are left alone."""
    tmp = tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(tmp)
    except OSError:
        return removed
    for name in names:
        pid_text = name[len(IPC_PREFIX):].split("-", 1)[0]
        if not name.startswith(IPC_PREFIX) or not pid_text.isdigit():
            continue
        path = os.path.join(tmp, name)
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            os.kill(int(pid_text), 0)
            continue                       # that broker still runs
        except ProcessLookupError:
            pass
        except OSError:                    # no permission to signal it, or the folder vanished
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        log.info("removed %d ipc folder(s) of brokers no longer running", len(removed))
    return removed


_NOBLOCK, _RCVMORE = int(zmq.NOBLOCK), int(zmq.RCVMORE)
_SNDMORE_NB = int(zmq.SNDMORE) | _NOBLOCK
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
_SUMMED = ("streams", "messages", "frames", "batches", "queued", "opened", "closed", "evicted",
           "busy_frames", "dropped_replies", "unreachable_replies", "programmed",
           "devices_dropped")


class _Worker:
    __slots__ = ("wid", "seen", "streams", "stats", "pid", "host", "proc", "bye", "argv")

    def __init__(self, wid: bytes, now: float):
        self.wid = wid
        self.seen = now
        self.streams: set[tuple[bytes, int]] = set()
        self.stats: dict = {}
        self.pid = None
        self.host = None
        self.proc: subprocess.Popen | None = None
        self.bye = False


class Broker:
    """See the module docstring. Single-threaded like the server; :meth:`request_stop` may be
    called from a signal handler."""

    def __init__(self, config: ServerConfig | None = None, *,
                 worker_bind: str | list[str] = "tcp://127.0.0.1:*",
                 context: zmq.Context | None = None) -> None:
        self.cfg = cfg = config or ServerConfig()
        cfg.check()
        self.worker_bind = [worker_bind] if isinstance(worker_bind, str) else list(worker_bind)
        self.worker_endpoints: list[str] = []
        self.local_worker_endpoint: str | None = None   # spawned workers connect here
        self._ipc_dir: str | None = None
        self._own_ctx = context is None
        self.ctx = context or zmq.Context()
        self.front: zmq.Socket | None = None
        self.back: zmq.Socket | None = None
        self.endpoint = self.worker_endpoint = None
        self._auth = None
        self._workers: dict[bytes, _Worker] = {}
        self._routes: dict[tuple[bytes, int], bytes] = {}
        self._procs: list[tuple[subprocess.Popen, list[str]]] = []   # spawned workers
        self._rr = 0
        self._stop_requests = 0
        self._draining = False
        self._drain_t0 = 0.0
        self._t_start = time.monotonic()
        self.counters: collections.Counter = collections.Counter()
        self.publish_stats = False
        self.stats_snapshot: dict | None = None
        self._held: dict[tuple[bytes, bytes], tuple[list, list]] = {}

    # --------------------------------------------------------------------------- sockets
    def bind(self) -> str:
        """Bind the clients' ROUTER and the workers' ROUTER; return the clients' endpoint."""
        self.front, self.endpoint, self._auth = router_socket(self.ctx, self.cfg)
        b = self.ctx.socket(zmq.ROUTER)
        b.setsockopt(zmq.ROUTER_MANDATORY, 1)
        b.setsockopt(zmq.SNDHWM, 0)
        b.setsockopt(zmq.RCVHWM, 0)
        b.setsockopt(zmq.LINGER, 0)
        for ep in self.worker_bind:
            try:
                b.bind(ep)
            except zmq.ZMQError as e:
                b.close(0)
                raise OSError(f"cannot bind {ep} (workers): {e}") from None
            if not is_loopback(ep):
                log.warning("workers connect to %s: broker <-> worker traffic is not "
                            "encrypted; keep it on a trusted network", ep)
            self.worker_endpoints.append(b.getsockopt_string(zmq.LAST_ENDPOINT))
        # spawned workers run on this host: an ipc endpoint in a private folder (only this
        # user may connect) costs ~20% less per message than TCP loopback
        self.local_worker_endpoint = self.worker_endpoints[0]
        if zmq.has("ipc") and os.name == "posix":
            remove_stale_ipc_dirs()
            d = tempfile.mkdtemp(prefix=f"{IPC_PREFIX}{os.getpid()}-")
            try:
                b.bind(f"ipc://{d}/workers")
                self._ipc_dir = d
                self.local_worker_endpoint = f"ipc://{d}/workers"
            except zmq.ZMQError as e:
                shutil.rmtree(d, ignore_errors=True)
                log.info("no ipc endpoint for spawned workers (%s): they use %s", e,
                         self.local_worker_endpoint)
        self.back = b
        self.worker_endpoint = self.worker_endpoints[0]
        log.info("clients: %s, workers: %s", self.endpoint, " ".join(self.worker_endpoints))
        return self.endpoint

    def close(self) -> None:
        for s in (self.front, self.back):
            if s is not None:
                s.close(self.cfg.linger_ms if s is self.front else 0)
        self.front = self.back = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        for proc, _ in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in self._procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._own_ctx:
            self.ctx.term()
        if self._ipc_dir is not None:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
            self._ipc_dir = None

    # --------------------------------------------------------------------------- workers
    def spawn_workers(self, n: int, argv: list[str]) -> None:
        """Start ``n`` worker processes ``argv + ["--connect", local worker endpoint]``; a
        spawned worker that dies is started again."""
        for _ in range(n):
            self._spawn(argv)

    def _spawn(self, argv: list[str]) -> subprocess.Popen:
        cmd = list(argv) + ["--connect", self.local_worker_endpoint, "--exit-with-broker"]
        proc = subprocess.Popen(cmd)
        proc.started_at = time.monotonic()          # (a crash loop is not restarted)
        self._procs.append((proc, argv))
        log.info("started worker process %d", proc.pid)
        return proc

    def wait_workers(self, n: int, timeout_s: float) -> int:
        """Wait until ``n`` workers said ``ready`` (or ``timeout_s``); returns how many did."""
        deadline = time.monotonic() + timeout_s
        while len(self._live()) < n and time.monotonic() < deadline:
            if self.back.poll(100):
                self._from_workers()
            for proc, _ in self._procs:
                if proc.poll() is not None:
                    raise OSError(f"worker process {proc.pid} exited with status "
                                  f"{proc.returncode} while starting")
        return len(self._live())

    def _live(self) -> list[_Worker]:
        return [w for w in self._workers.values() if not w.bye]

    def _pick(self) -> _Worker | None:
        live = self._live()
        if not live:
            return None
        least = min(len(w.streams) for w in live)
        cands = [w for w in live if len(w.streams) == least]
        self._rr += 1
        return cands[self._rr % len(cands)]

    def _lost(self, w: _Worker, why: str) -> None:
        """A worker died: tell each client which of its streams were there."""
        self._workers.pop(w.wid, None)
        self.counters["workers_lost"] += 1
        by_peer: dict[bytes, list[int]] = {}
        for key in w.streams:
            by_peer.setdefault(key[0], []).append(key[1])
            self._routes.pop(key, None)
        log.warning("worker %s (pid %s) lost (%s): %d streams of %d clients", w.wid.hex(),
                    w.pid, why, len(w.streams), len(by_peer))
        for peer, ids in by_peer.items():
            ids.sort()
            for i in range(0, len(ids), 4096):
                self._to_client([peer, P.pack({"v": P.VERSION, "op": P.WORKER_LOST,
                                               "ids": ids[i:i + 4096], "reason": why})])
            self.counters["streams_lost"] += len(ids)

    def _check_workers(self, now: float) -> None:
        for w in list(self._workers.values()):
            if not w.bye and now - w.seen > C.LIVENESS_S:
                self._lost(w, f"silent for {now - w.seen:.1f} s")
        for i, (proc, argv) in enumerate(list(self._procs)):
            if proc.poll() is None:
                continue
            for w in list(self._workers.values()):
                if w.pid == proc.pid:
                    if not w.bye:
                        self._lost(w, f"process {proc.pid} exited with status "
                                      f"{proc.returncode}")
                    else:
                        self._workers.pop(w.wid, None)
            self._procs.remove((proc, argv))
            if self._draining:
                continue
            if now - proc.started_at < 10.0 and proc.returncode != -9:
                log.error("worker process %d exited %.1f s after its start (status %s): not "
                          "restarting it", proc.pid, now - proc.started_at, proc.returncode)
                continue
            self._spawn(argv)
            self.counters["workers_restarted"] += 1

    # --------------------------------------------------------------------------- loop
    def request_stop(self) -> None:
        self._stop_requests += 1

    def run(self) -> None:
        if self.front is None:
            self.bind()
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        next_hb = 0.0
        try:
            while True:
                if self._stop_requests and not self._draining:
                    self._begin_drain()
                if self._stop_requests > 1:
                    break
                events = dict(poller.poll(int(C.HEARTBEAT_S * 250)))
                if self.back in events:
                    self._from_workers()
                if self.front in events:
                    self._from_clients()
                now = time.monotonic()
                if now >= next_hb:
                    next_hb = now + C.HEARTBEAT_S
                    self._heartbeat()
                    self._check_workers(now)
                    if self.publish_stats:
                        self.stats_snapshot = self.stats()
                if self._draining and (not self._live() or now - self._drain_t0 >
                                       self.cfg.drain_max_s + 2.0):
                    self._from_workers()            # the last replies and notices
                    break
        finally:
            self.close()
        log.info("broker stopped")

    def _begin_drain(self) -> None:
        self._draining = True
        self._drain_t0 = time.monotonic()
        log.info("shutting down: %d workers drain", len(self._live()))
        for w in self._live():
            self._to_worker(w.wid, [b"", C.pack({"op": C.STOP})])

    def _heartbeat(self) -> None:
        msg = C.pack({"op": C.HB})
        for w in self._live():
            self._to_worker(w.wid, [b"", msg])

    def _to_worker(self, wid: bytes, parts: list) -> bool:
        send = self.back.send
        try:
            send(wid, _SNDMORE_NB)
            for p in parts[:-1]:
                send(p, _SNDMORE_NB)
            send(parts[-1], _NOBLOCK)
            return True
        except zmq.ZMQError:
            return False

    def _to_client(self, parts: list) -> None:
        send = self.front.send
        try:
            for p in parts[:-1]:
                send(p, _SNDMORE_NB)
            send(parts[-1], _NOBLOCK)
        except zmq.Again:
            self.counters["dropped_replies"] += 1
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:
                self.counters["unreachable_replies"] += 1
            else:
                self.counters["dropped_replies"] += 1

    # ------------------------------------------------------------------ worker -> broker
    def _from_workers(self, limit: int = 4096) -> None:
        now = time.monotonic()
        for parts in _drain(self.back, limit):
            wid = parts[0]
            w = self._workers.get(wid)
            if w is None:
                w = self._workers[wid] = _Worker(wid, now)
                log.info("worker %s joined", wid.hex())
            w.seen = now
            if len(parts) < 2:
                continue
            if len(parts[1]) == 0:
                self._worker_control(w, parts)
            else:
                self._to_client(parts[1:])

    def _worker_control(self, w: _Worker, parts) -> None:
        if len(parts) < 3:
            return
        hdr = C.unpack(parts[2])
        op = hdr.get("op")
        if op == C.HB:
            if type(hdr.get("stats")) is dict:
                w.stats = hdr["stats"]
        elif op == C.GONE:
            for item in hdr.get("s") or ():
                if type(item) is list and len(item) == 2:
                    key = (item[0], item[1])
                    w.streams.discard(key)
                    if self._routes.get(key) == w.wid:
                        del self._routes[key]
        elif op == C.READY:
            w.pid, w.host = hdr.get("pid"), hdr.get("host")
            w.bye = False
            log.info("worker %s ready (pid %s on %s)", w.wid.hex(), w.pid, w.host)
            if self._draining:
                self._to_worker(w.wid, [b"", C.pack({"op": C.STOP})])
        elif op == C.BYE:
            w.bye = True
            for key in w.streams:
                self._routes.pop(key, None)
            w.streams.clear()

    # ------------------------------------------------------------------ client -> worker
    def _from_clients(self, limit: int = 1024) -> None:
        try:
            for parts in _drain(self.front, limit):
                self.counters["messages"] += 1
                try:
                    self._route(parts)
                except Exception:  # never die of a client's message
                    log.exception("broker: routing a message failed")
                    self._reply(parts[0], None, P.error_reply(
                        P.INTERNAL, "the broker could not route this message"))
        finally:
            self._flush_frames()

    def _hold(self, w: _Worker, parts: list) -> None:
        """Hold a one-frame-message ``[client, header, payload]`` for its worker: the frames
        a client sent to one worker in one turn go on as one ``bundle`` (fewer messages for
        the worker, fuller engine batches; see :mod:`.control`)."""
        key = (w.wid, parts[0])
        g = self._held.get(key)
        if g is None:
            self._held[key] = g = []
        g.append(parts[1])
        g.append(parts[2])
        if len(g) >= 512:
            self._flush_frames(key)

    def _flush_frames(self, only: tuple | None = None) -> None:
        """Send the held frames (of one (worker, client), or all): one alone as it came,
        several as one ``bundle`` control message. The broker never re-encodes them."""
        if not self._held:
            return
        keys = [only] if only is not None else list(self._held)
        for key in keys:
            g = self._held.pop(key, None)
            if g is None:
                continue
            wid, peer = key
            w = self._workers.get(wid)
            if len(g) == 2:
                parts = [peer, *g]
            else:
                parts = [b"", C.BUNDLE, peer, *g]
                self.counters["coalesced"] += len(g) // 2
            if w is not None and self._to_worker(wid, parts):
                continue
            for i in range(0, len(g), 2):         # the worker is gone: answer each frame
                try:
                    req = P.unpack_header(g[i])
                except P.ProtocolError:
                    req = None
                self._forward(None, [peer, g[i], g[i + 1]], req)

    def _held_for(self, peer: bytes) -> None:
        """Flush a client's held frames before forwarding another message of it (order)."""
        if self._held:
            for key in [k for k in self._held if k[1] == peer]:
                self._flush_frames(key)

    def _reply(self, peer: bytes, req: dict | None, hdr: dict) -> None:
        if req is not None:
            P.echo(req, hdr)
        hdr["v"] = P.VERSION
        self._to_client([peer, P.pack(hdr)])

    def _forward(self, w: _Worker | None, parts: list, req: dict | None) -> None:
        if w is None:
            w = self._pick()
        if w is None or not self._to_worker(w.wid, parts):
            code = P.SHUTTING_DOWN if self._draining else P.NO_WORKER
            self.counters["no_worker"] += 1
            self._reply(parts[0], req, P.error_reply(code, "no engine worker is available; "
                                                     "retry later", req))

    def _route(self, parts: list) -> None:
        peer = parts[0]
        if len(parts) == 3:
            # a frame request in the canonical key order: routed on its first bytes
            sid = P.frame_stream_id(parts[1])
            if sid is not None:
                wid = self._routes.get((peer, sid))
                w = self._workers.get(wid) if wid else None
                if w is not None:
                    self._hold(w, parts)
                    return
        hdr = None
        if 2 <= len(parts) <= 3:
            try:
                hdr = P.unpack_header(parts[1])
            except P.ProtocolError:
                hdr = None
        if hdr is None or hdr.get("v") != P.VERSION:
            self._forward(None, parts, None)           # a worker answers the precise error
            return
        op = hdr.get("op")
        sid = hdr.get("id")
        if op == P.FRAME and type(sid) is int and len(parts) == 3:
            wid = self._routes.get((peer, sid))
            w = self._workers.get(wid) if wid else None
            if w is not None:
                self._hold(w, parts)
                return
        self._held_for(peer)
        if op in (P.FRAME, P.CLOSE) or (op == P.PING and sid is not None):
            wid = self._routes.get((peer, sid)) if type(sid) is int else None
            self._forward(self._workers.get(wid) if wid else None, parts, hdr)
        elif op == P.OPEN:
            if type(sid) is not int:
                self._forward(None, parts, hdr)
                return
            key = (peer, sid)
            wid = self._routes.get(key)
            w = self._workers.get(wid) if wid else None
            if w is None:
                w = self._pick()
                if w is None:
                    self._forward(None, parts, hdr)
                    return
                self._routes[key] = w.wid
                w.streams.add(key)
            self._forward(w, parts, hdr)
        elif op == P.BATCH:
            self._route_batch(parts, hdr)
        elif op == P.PING:
            msg = C.pack({"op": C.PING, "peer": peer})
            for w in self._live():
                self._to_worker(w.wid, [b"", msg])
            self._reply(peer, hdr, {"op": P.PING, "t": time.time(), "draining": self._draining})
        elif op == P.STATS:
            self._reply(peer, hdr, {"op": P.STATS, **self.stats()})
        else:                                           # info, and errors a worker words
            self._forward(None, parts, hdr)

    def _route_batch(self, parts: list, hdr: dict) -> None:
        items = hdr.get("r")
        payload = parts[2] if len(parts) == 3 else b""
        if type(items) is not list or not items or len(items) > P.MAX_BATCH_ITEMS:
            self._forward(None, parts, hdr)
            return
        groups: dict[bytes | None, tuple[list, list]] = {}
        off = 0
        buf = memoryview(payload)
        try:
            for it in items:
                n = P.frame_nbytes(it)
                sid = it.get("id")
                wid = self._routes.get((parts[0], sid)) if type(sid) is int else None
                g = groups.setdefault(wid, ([], []))
                g[0].append(it)
                g[1].append(buf[off:off + n])
                off += n
        except P.ProtocolError:
            off = -1
        if off != len(buf) or len(groups) == 1:
            wid = next(iter(groups)) if len(groups) == 1 and off == len(buf) else None
            self._forward(self._workers.get(wid) if wid else None, parts, hdr)
            return
        for wid, (its, pays) in groups.items():
            sub = [parts[0], P.pack({"v": P.VERSION, "op": P.BATCH, "r": its}), b"".join(pays)]
            self._forward(self._workers.get(wid) if wid else None, sub, None)

    # ---------------------------------------------------------------------------- stats
    def stats(self) -> dict[str, Any]:
        live = self._live()
        out: dict[str, Any] = {k: 0 for k in _SUMMED}
        errors: collections.Counter = collections.Counter()
        engines = []
        lat = []
        for w in live:
            s = w.stats
            for k in _SUMMED:
                v = s.get(k)
                if type(v) in (int, float):
                    out[k] += v
            if type(s.get("errors")) is dict:
                errors.update({k: v for k, v in s["errors"].items() if type(v) is int})
            engines.extend(s.get("engines") or [])
            if type(s.get("srv_us")) is dict and s["srv_us"].get("p50") is not None:
                lat.append(s["srv_us"])
        c = self.counters
        out["dropped_replies"] += c["dropped_replies"]
        out["unreachable_replies"] += c["unreachable_replies"]
        out.update({
            "uptime_s": time.monotonic() - self._t_start,
            "broker": {"messages": c["messages"], "no_worker": c["no_worker"],
                       "workers_lost": c["workers_lost"], "streams_lost": c["streams_lost"],
                       "workers_restarted": c["workers_restarted"],
                       "routes": len(self._routes), "coalesced": c["coalesced"]},
            "workers": [{"id": w.wid.hex(), "pid": w.pid, "host": w.host,
                         "streams": len(w.streams), "queued": w.stats.get("queued"),
                         "frames": w.stats.get("frames"),
                         "srv_us": w.stats.get("srv_us"), "step_us": w.stats.get("step_us"),
                         "seen_s_ago": round(time.monotonic() - w.seen, 3)} for w in live],
            "engines": engines, "errors": dict(errors),
            "batch_mean": out["frames"] / out["batches"] if out["batches"] else None,
            # percentiles do not add up: the worst worker's (heartbeat, up to 1 s old)
            "srv_us": max(lat, key=lambda d: d.get("p99") or 0) if lat else
            {"p50": None, "p90": None, "p99": None},
            "draining": self._draining,
        })
        return out


def _drain(sock: zmq.Socket, limit: int):
    """The messages waiting on ``sock`` now (at most ``limit``), each as a list of frames.
    Asks ``ZMQ_EVENTS`` before each further message rather than letting a receive fail:
    a ``zmq.Again`` exception costs several times the check."""
    recv, get = sock.recv, sock.get
    for _ in range(limit):
        if not get(_EVENTS) & _POLLIN:
            return
        parts = [recv(_NOBLOCK)]              # (copies are cheaper than frames when small)
        while get(_RCVMORE):
            parts.append(recv(_NOBLOCK))
        yield parts
