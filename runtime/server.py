"""The nvmstream ZeroMQ server: many streams, one poll loop, micro-batched engine steps.

    prog = nvm.load("model.nvm")
    srv = Server(prog, ServerConfig(bind="tcp://127.0.0.1:5555", profile="pcm"))
    endpoint = srv.bind()
    install_signal_handlers(srv)      # SIGINT/SIGTERM: graceful drain, then exit
    srv.run()

Wire format, ops, error codes and limits: docs/protocol.md (implemented in
:mod:`nvmstream.runtime.protocol`).

How it works. One thread, one ROUTER socket. Each loop iteration receives every waiting message
(without blocking, up to a bound), validates it and queues its frames on its stream; then every
engine with streams waiting takes the *first* queued frame of up to ``max_batch`` of them and
steps them together (one ``Engine.step_many_all`` call, one numba call). A stream's frames are
therefore stepped strictly in order, at most one per batch, and streams take turns (round robin)
when more than ``max_batch`` wait. Batches fill by themselves under load: while one batch runs,
the next messages queue up in ZeroMQ; with no load a frame is stepped as soon as it arrives
(``batch_window_us`` > 0 trades latency for fuller batches). Replies leave as soon as a
message's last frame has been stepped.

Per-stream profiles: each (profile, overrides, votes) gets its own Engine (a Device programmed
for it on a background thread, so opens do not stall other streams), cached
(``max_engines``; :mod:`.serving.devices`), so profiles swap without a restart.

The parts: :mod:`.serving.config` (configuration, the clients' socket), :mod:`.serving.streams`
(per-stream state), :mod:`.serving.devices` (device cache and programming thread), this module
(the loop: receive, validate, queue, step, reply), :mod:`.serving.worker` and
:mod:`.serving.broker` (scale-out), :mod:`.protocol` (the wire codec).
"""

from __future__ import annotations

import collections
import gc
import logging
import signal
import sys
import time
from typing import Any

import numpy as np
import zmq

from nvmstream.converters.compile import CompiledModel
from nvmstream.converters.errors import NvmInputError

from . import protocol as P
from .engine import Engine
from .frontend import FrontendParams, StreamingFrontend
from .serving.config import ServerConfig, is_loopback, router_socket
from .serving.devices import DeviceCache, Slot as _Slot
from .serving.streams import Stream as _Stream, Work as _Work

log = logging.getLogger(__name__)

__all__ = ["ServerConfig", "Server", "install_signal_handlers", "is_loopback", "router_socket"]


# ------------------------------------------------------------------------------- internals
_LAT_RING = 16384
_NOBLOCK, _RCVMORE = int(zmq.NOBLOCK), int(zmq.RCVMORE)
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
_SNDMORE_NB = int(zmq.SNDMORE) | int(zmq.NOBLOCK)


def _classes(es) -> list[int]:
    """A reply's ``cls`` for a stream's last frame: its class, or nothing for a model whose
    first output is one value per frame (no classes: docs/protocol.md)."""
    c = es.last_class
    return [] if c is None else [c]


class Server:
    """The streaming server (see module docstring). Single-threaded: call :meth:`run` from one
    thread; :meth:`request_stop` may be called from a signal handler or another thread."""

    def __init__(self, prog: CompiledModel, config: ServerConfig | None = None, *,
                 context: zmq.Context | None = None) -> None:
        self.cfg = cfg = config or ServerConfig()
        cfg.check()
        self.prog = prog
        self.model = prog.model
        self.features = int(self.model.input.features)
        self._why_not = self.model.why_not_streamable()
        self._own_ctx = context is None
        self.ctx = context or zmq.Context()
        self.sock: zmq.Socket | None = None
        self.endpoint: str | None = None
        self._auth = None
        # device configurations (programmed on a background thread so that opens do not
        # stall other streams); profiles clients may name: shipped, --allow-profile, default
        self.devices = DeviceCache(prog, device_seed=cfg.device_seed,
                                   max_engines=cfg.max_engines,
                                   extra_profiles=dict(cfg.extra_profiles),
                                   warm_up=self._warm_up)
        self._rcvtimeo = 100
        self.devices.program_default(cfg.profile, tuple(cfg.overrides), cfg.votes)
        self.default_profile = self.devices.default_name
        # speech front end
        self.frontend: FrontendParams | None = None
        self._no_frontend = "the model carries no audio front-end parameters"
        if prog.frontend:
            fp = FrontendParams.from_dict(dict(prog.frontend))
            if fp.n_features != self.features:
                self._no_frontend = (f"the model's front end makes {fp.n_features} features per "
                                     f"frame but the model takes {self.features}")
                log.error("audio disabled: %s", self._no_frontend)
            else:
                self.frontend = fp
        # state
        self._streams: dict[tuple[bytes, int], _Stream] = {}
        self._gone: collections.OrderedDict[tuple[bytes, int], str] = collections.OrderedDict()
        self._peer_ping: dict[bytes, float] = {}
        self._queued = 0
        self._n_ready = 0
        self._out: dict[bytes, tuple[list, list]] = {}
        self._stop_requests = 0
        self._draining = False
        self._drain_t0 = 0.0
        self._last_rx = 0.0
        self._t_start = time.monotonic()
        self._next_housekeeping = 0.0
        # counters for `stats`
        self.counters = collections.Counter()
        self.errors = collections.Counter()
        self._lat = np.zeros(_LAT_RING, np.int64)
        self._lat_n = 0
        self._batch_max = 0
        self._queue_peak = 0
        self.publish_stats = False        # keep stats_snapshot fresh (metrics endpoint)
        self.stats_snapshot: dict | None = None
        # admission control in time: moving averages of the engine step time (s) by batch
        # size, one per power of two (1, 2-3, 4-7, ..., 1024)
        self._step_s = [0.0] * 11
        self._step_eff = [0.0] * 11       # per size class: the step time _work_s uses ...
        self._step_eff_pf = [0.0] * 11    # ... plus this per frame of the batch
        self._step_eff_stale = False
        self._max_queue_s = cfg.max_queue_ms / 1e3

    # ------------------------------------------------------------------------------- engines
    def _collect_programmed(self) -> None:
        """Install devices the programming thread finished; answer the opens waiting on them."""
        for slot, eng, err in self.devices.finished():
            if self.devices.programming == 0:
                self._set_rcvtimeo(self._rcvtimeo)
            waiting, slot.waiting = slot.waiting, []
            if eng is None:
                self.counters["program_failures"] += 1
                for st in waiting:
                    self._fail_open(st, err)
                continue
            self.counters["programmed"] += 1
            for st in waiting:
                if self._streams.get((st.peer, st.sid)) is st:
                    self._activate(st)

    def _warm_up(self, eng: Engine) -> None:
        """Step a throwaway stream once so numba compiles (or loads its cache) now, not on
        the first client's frame."""
        if self._why_not is not None:
            return
        try:
            es = eng.stream(seed=0)
            eng.step_many_all([es], np.zeros((1, self.features), np.float32))
            es.step(np.zeros(self.features, np.float32))      # the lone-frame route
            es.close()
        except Exception:  # the first real step will report it
            log.exception("engine warm-up failed")

    # ---------------------------------------------------------------------------- socket
    def bind(self) -> str:
        """Create the ROUTER socket, bind it and return the real endpoint."""
        self.sock, self.endpoint, self._auth = router_socket(self.ctx, self.cfg)
        return self.endpoint

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(self.cfg.linger_ms)
            self.sock = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self.devices.close()
        if self._own_ctx:
            self.ctx.term()

    # ------------------------------------------------------------------------------- loop
    def request_stop(self) -> None:
        """Begin a graceful shutdown (safe in a signal handler); a second call stops at once."""
        self._stop_requests += 1

    def _set_rcvtimeo(self, ms: int) -> None:
        self._rcvtimeo = ms
        if self.sock is not None:
            self.sock.setsockopt(zmq.RCVTIMEO, 5 if self.devices.programming else ms)

    def run(self) -> None:
        """Serve until :meth:`request_stop` (then drain and return). Binds if needed."""
        if self.sock is None:
            self.bind()
        sock = self.sock
        self._set_rcvtimeo(100)
        self._on_start()
        try:
            while True:
                if self._stop_requests and not self._draining:
                    self._begin_drain()
                    self._set_rcvtimeo(20)
                if self._stop_requests > 1:
                    log.warning("second stop request: exiting with %d frames unanswered",
                                self._queued)
                    break
                if self.devices.programming:
                    self._collect_programmed()
                    self._flush()             # the opens it answered leave now
                if not self._n_ready:
                    # nothing to step: block (with a timeout) for the next message
                    try:
                        parts = [sock.recv()]
                        while sock.getsockopt(_RCVMORE):
                            parts.append(sock.recv(_NOBLOCK))
                    except zmq.Again:
                        self._housekeeping()
                        self._flush()
                        if self._draining and self._drained():
                            break
                        continue
                    self._last_rx = time.monotonic()
                    # the server was idle: a lone one-frame message (nothing else waiting on
                    # the socket, else they are batched together) is stepped and answered at
                    # once; what comes meanwhile is received after its reply has left
                    if (sock.getsockopt(_EVENTS) & _POLLIN) or not self._lone_frame(parts):
                        self._handle(parts)
                self._receive()
                if self.cfg.batch_window_us and self._n_ready:
                    self._wait_window()
                if self._n_ready:
                    self._step_all()
                self._housekeeping()
                self._flush()
                if self._draining and self._drained():
                    break
            self._say_goodbye()
        finally:
            self.close()
        log.info("server stopped: %d streams served, %d frames", self.counters["opened"],
                 self.counters["frames"])

    def _on_start(self) -> None:
        """Hook for subclasses (a broker's worker says hello)."""

    def _receive(self, limit: int = 512) -> int:
        """Handle the messages waiting now, at most ``limit`` (ZeroMQ takes them from the
        clients in turn, so a flooding client delays another's reply by at most one turn)."""
        sock = self.sock
        handle = self._handle
        n = 0
        recv, more = sock.recv, sock.getsockopt      # (recv_multipart costs ~3 us more)
        if not more(_EVENTS) & _POLLIN:         # cheaper than a zmq.Again exception
            return 0
        while n < limit:
            try:
                parts = [recv(_NOBLOCK)]
            except zmq.Again:
                break
            while more(_RCVMORE):               # the rest of a message is already here
                parts.append(recv(_NOBLOCK))
            n += 1
            handle(parts)
        if n:
            self._last_rx = time.monotonic()
        return n

    def _wait_window(self) -> None:
        deadline = time.perf_counter() + self.cfg.batch_window_us * 1e-6
        while self._n_ready < self.cfg.max_batch and time.perf_counter() < deadline:
            if not self._receive(self.cfg.max_batch):
                time.sleep(0)

    # ------------------------------------------------------------------------ dispatching
    def _control(self, parts: list[bytes]) -> None:
        """A control message (empty peer identity): only a broker's worker gets them."""
        log.warning("ignoring a message with an empty identity")

    def _handle(self, parts: list[bytes]) -> None:
        t0 = time.perf_counter_ns()
        peer = parts[0]
        if not peer:
            self._control(parts)
            return
        hdr = None
        self.counters["messages"] += 1
        try:
            if len(parts) < 2:
                raise P.ProtocolError(P.BAD_MESSAGE, "a message needs a header frame")
            hdr = P.unpack_header(parts[1])
            v = hdr.get("v")
            if v != P.VERSION or type(v) is not int:
                raise P.ProtocolError(P.BAD_VERSION, f"protocol version {v!r}; this server "
                                                     f"speaks {P.VERSION}"[:200])
            op = hdr.get("op")
            payload = parts[2] if len(parts) == 3 else None
            if op == P.FRAME:
                if len(parts) > 3:
                    self._op_frame(peer, hdr, None, t0, (P.BAD_MESSAGE, f"a message is a header "
                                   f"frame and at most one payload frame; got {len(parts) - 1}"))
                else:
                    self._op_frame(peer, hdr, payload, t0)
                return
            if len(parts) > 3:
                raise P.ProtocolError(P.BAD_MESSAGE, f"a message is a header frame and at most "
                                                     f"one payload frame; got {len(parts) - 1}")
            if op == P.BATCH:
                self._op_batch(peer, hdr, payload, t0)
            elif op == P.OPEN:
                self._no_payload(payload, op)
                self._op_open(peer, hdr)
            elif op == P.CLOSE:
                self._no_payload(payload, op)
                self._op_close(peer, hdr, t0)
            elif op == P.PING:
                self._no_payload(payload, op)
                self._op_ping(peer, hdr)
            elif op == P.INFO:
                self._no_payload(payload, op)
                self._reply(peer, hdr, {"op": P.INFO, **self.info()})
            elif op == P.STATS:
                self._no_payload(payload, op)
                self._reply(peer, hdr, {"op": P.STATS, **self.stats()})
            else:
                raise P.ProtocolError(P.UNKNOWN_OP, f"unknown op {op!r}; ops: "
                                                    f"{', '.join(P.REQUEST_OPS)}"[:200])
        except P.ProtocolError as e:
            self._error(peer, hdr, e.code, e.msg)
        except Exception as e:  # a bug: answer, log, keep serving
            log.exception("internal error on a message")
            self._error(peer, hdr, P.INTERNAL, f"{type(e).__name__}: {e}"[:500])

    @staticmethod
    def _no_payload(payload, op) -> None:
        if payload is not None:
            raise P.ProtocolError(P.BAD_MESSAGE, f"op {op!r} takes no payload frame")

    def _send(self, peer: bytes, hdr: dict, payload=b"") -> None:
        """Queue a reply; :meth:`_flush` sends each peer's replies of this loop iteration as
        one message (a ``batch`` when there are several)."""
        q = self._out.get(peer)
        if q is None:
            self._out[peer] = ([hdr], [payload])
        else:
            q[0].append(hdr)
            q[1].append(payload)
            if len(q[0]) >= P.MAX_BATCH_ITEMS:
                self._flush_peer(peer, q)
                del self._out[peer]

    def _flush(self) -> None:
        if self._out:
            for peer, q in self._out.items():
                self._flush_peer(peer, q)
            self._out.clear()

    def _flush_peer(self, peer: bytes, q) -> None:
        hdrs, pays = q
        head, payload = P.encode_replies(hdrs, pays)
        send = self.sock.send
        try:
            send(peer, _SNDMORE_NB)              # ROUTER_MANDATORY: raises if peer is gone
            if payload is None:
                send(head, _NOBLOCK)
            else:
                send(head, _SNDMORE_NB)
                # zero-copy sends cost more than copying below ~64 kB (pyzmq docs)
                send(payload, _NOBLOCK, copy=len(payload) < 65536)
        except zmq.Again:
            self.counters["dropped_replies"] += len(hdrs)
            if self.counters["dropped_replies"] == len(hdrs) or log.isEnabledFor(logging.DEBUG):
                log.warning("client %s does not read its replies: %d replies dropped "
                            "(counted in stats.dropped_replies)", peer.hex(), len(hdrs))
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:
                self.counters["unreachable_replies"] += len(hdrs)
                log.debug("client %s is gone: %d replies dropped", peer.hex(), len(hdrs))
            else:               # never let one client's connection take the server down
                self.counters["dropped_replies"] += len(hdrs)
                log.warning("cannot send to client %s (%s): %d replies dropped", peer.hex(), e,
                            len(hdrs))

    def _reply(self, peer: bytes, req: dict | None, hdr: dict, payload=b"") -> None:
        if req is not None:
            P.echo(req, hdr)
        self._send(peer, hdr, payload)

    def _error(self, peer: bytes, req: dict | None, code: str, msg: str) -> None:
        self.errors[code] += 1
        log.debug("error to %s: %s: %s", peer.hex(), code, msg)
        self._send(peer, P.error_reply(code, msg, req))

    def _stream_error(self, st: _Stream, req: dict, code: str, msg: str) -> None:
        """An error about a stream's message: sent now when nothing of the stream is queued,
        else queued behind its earlier messages (a stream's replies keep their order)."""
        if st.queue or st.es is None:
            st.queue.append(_Work(None, None, None, 0, 0, 0, err=(req, code, msg)))
        else:
            self._error(st.peer, req, code, msg)

    # ---------------------------------------------------------------------------- ops
    def _op_open(self, peer: bytes, hdr: dict) -> None:
        sid = P.get_int(hdr, "id", 0, P.MAX_STREAM_ID)
        kind = P.get_str(hdr, "kind", P.KINDS, default=P.FEATURES)
        profile = P.get_str(hdr, "profile", default=None)
        overrides = P.get_str_list(hdr, "overrides")
        seed = P.get_int(hdr, "seed", 0, P.MAX_SEED, default=None)
        votes = P.get_int(hdr, "votes", 1, self.cfg.max_votes, default=None)
        if self._draining:
            raise P.ProtocolError(P.SHUTTING_DOWN, "the server is shutting down")
        key = (peer, sid)
        if key in self._streams:
            raise P.ProtocolError(P.STREAM_EXISTS, f"stream {sid} is already open")
        if len(self._streams) >= self.cfg.max_streams:
            raise P.ProtocolError(P.TOO_MANY_STREAMS, f"the server holds its maximum of "
                                                      f"{self.cfg.max_streams} streams")
        if self._why_not:
            raise P.ProtocolError(P.NOT_STREAMABLE, f"this model cannot stream: {self._why_not}")
        if kind == P.AUDIO and self.frontend is None:
            raise P.ProtocolError(P.NO_FRONTEND, f"audio streams are not available: "
                                                 f"{self._no_frontend}")
        slot = self.devices.get(profile, overrides, votes)
        fe = StreamingFrontend(self.frontend) if kind == P.AUDIO else None
        st = _Stream(peer, sid, slot, None, kind, fe, time.monotonic(), hdr, seed)
        self._streams[key] = st
        self._gone.pop(key, None)
        slot.streams += 1
        if slot.engine is None:
            slot.waiting.append(st)           # answered when the device is programmed
            self._set_rcvtimeo(self._rcvtimeo)
        else:
            self._activate(st)

    def _activate(self, st: _Stream) -> None:
        """The stream's device is ready: make its engine stream, answer the open, then handle
        what queued meanwhile."""
        slot = st.slot
        req, st.open_req = st.open_req, None
        try:
            st.es = slot.engine.stream(seed=st.seed)
        except Exception as e:
            log.exception("opening an engine stream failed")
            self._fail_open(st, f"internal: {type(e).__name__}: {e}"[:500], P.INTERNAL, req)
            return
        self.counters["opened"] += 1
        rep = {"op": P.OPEN, "kind": st.kind, "seed": st.es.seed, "profile": slot.profile_name,
               "overrides": list(slot.key[1]), "votes": slot.engine.votes,
               "features": self.features, "outputs": [[n, w] for n, w in
                                                      zip(slot.names, slot.widths)],
               "labels": list(self.prog.labels)}
        if st.kind == P.AUDIO:
            rep["sample_rate_hz"] = self.frontend.sample_rate_hz
            rep["dtype"] = P.I16
        else:
            rep["dtype"] = P.F32
        self._reply(st.peer, req, rep)
        q = st.queue
        if q:
            if q[0].n == 0:
                self._settle(st)
            if q and q[0].n:
                slot.ready[st] = None
                self._n_ready += 1

    def _fail_open(self, st: _Stream, why: str, code: str = P.BAD_PROFILE,
                   req: dict | None = None) -> None:
        """Programming the stream's device failed: answer its open, then every message that
        queued behind it, and forget the stream."""
        if why.startswith("internal: "):
            code, why = P.INTERNAL, why[len("internal: "):]
        req = req or st.open_req
        st.open_req = None
        items = list(st.queue)
        st.queue.clear()
        self._remove(st, f"was not opened ({code})")
        self._error(st.peer, req, code, why)
        for w in items:
            if w.err is not None:
                self._error(st.peer, *w.err)
            else:
                hdr = {"op": P.CLOSE if w.close else P.FRAME, "id": st.sid}
                if w.seq is not None:
                    hdr["seq"] = w.seq
                if w.rid is not None:
                    hdr["rid"] = w.rid
                self._error(st.peer, hdr, P.UNKNOWN_STREAM,
                            f"stream {st.sid} was not opened: {why}"[:500])

    def _lookup(self, peer: bytes, sid: int) -> _Stream:
        st = self._streams.get((peer, sid))
        if st is None or st.closing:
            why = "is closing" if st is not None else self._gone.get((peer, sid), "is not open")
            raise P.ProtocolError(P.UNKNOWN_STREAM, f"stream {sid} {why}")
        return st

    def _op_batch(self, peer: bytes, hdr: dict, payload, t0: int) -> None:
        """Frame requests of several streams in one message: ``r`` lists their headers, the
        payload is their payloads back to back. Each item is answered on its own."""
        items = hdr.get("r")
        if type(items) is not list or not items:
            raise P.ProtocolError(P.BAD_FIELD, "header field 'r' must be a non-empty list of "
                                               "frame request maps")
        if len(items) > P.MAX_BATCH_ITEMS:
            raise P.ProtocolError(P.TOO_LARGE, f"batch of {len(items)} requests; at most "
                                               f"{P.MAX_BATCH_ITEMS}")
        buf = memoryview(payload if payload is not None else b"")
        sizes = []
        fail = own = None
        for it in items:
            try:
                sizes.append(P.frame_nbytes(it))
            except P.ProtocolError as e:
                # that item gets its own error; the others cannot be located in the payload
                fail = (P.BAD_PAYLOAD, f"batch item {len(sizes)}: {e.msg}")
                own = (len(sizes), (e.code, e.msg))
                break
        if fail is None and sum(sizes) != len(buf):
            fail = (P.BAD_PAYLOAD, f"batch payload is {len(buf)} bytes but its items' dtypes "
                                   f"and shapes need {sum(sizes)}")
        off = 0
        for i, it in enumerate(items):
            try:
                if type(it) is not dict:
                    raise P.ProtocolError(P.BAD_FIELD, f"batch item {i} is not a map")
                if it.get("op") != P.FRAME:
                    raise P.ProtocolError(P.UNKNOWN_OP, f"batch item {i}: only 'frame' requests "
                                                        f"can be batched")
                if fail is None:
                    piece = buf[off:off + sizes[i]]
                    off += sizes[i]
                    self._op_frame(peer, it, piece, t0)
                else:
                    self._op_frame(peer, it, None, t0, own[1] if own and own[0] == i else fail)
            except P.ProtocolError as e:
                self._error(peer, it if type(it) is dict else None, e.code, e.msg)

    def _op_frame(self, peer: bytes, hdr: dict, payload, t0: int,
                  fail: tuple[str, str] | None = None) -> None:
        sid = hdr.get("id")
        if type(sid) is not int or not 0 <= sid <= P.MAX_STREAM_ID:
            P.get_int(hdr, "id", 0, P.MAX_STREAM_ID)            # raises the precise error
        seq = hdr.get("seq")
        if type(seq) is not int or not 0 <= seq <= P.MAX_SEQ:
            P.get_int(hdr, "seq", 0, P.MAX_SEQ)
        st = self._streams.get((peer, sid))
        if st is None:
            self._lookup(peer, sid)                             # raises unknown_stream
        try:
            if st.closing:
                self._lookup(peer, sid)
            st.last = time.monotonic()
            if seq != st.next_seq:
                if seq < st.next_seq:
                    raise P.ProtocolError(P.DUPLICATE, f"stream {sid}: seq {seq} was already "
                                                       f"received; next is {st.next_seq}")
                raise P.ProtocolError(P.OUT_OF_ORDER, f"stream {sid}: seq {seq} but "
                                                      f"{st.next_seq} is next (a gap)")
            st.next_seq = seq + 1    # from here on the message has used its sequence number
            self._queue_frame(st, hdr, payload, t0, fail)
        except P.ProtocolError as e:
            self._stream_error(st, hdr, e.code, e.msg)

    def _admit(self, n: int) -> None:
        """Raise ``busy`` when ``n`` more frames would overfill the queue (in frames, or in
        estimated work time)."""
        q = self._queued + n
        if q > self.cfg.max_queued_frames:
            self.counters["busy_frames"] += n
            raise P.ProtocolError(P.BUSY, f"server busy: {self._queued} frames queued (limit "
                                          f"{self.cfg.max_queued_frames}); not queued, send "
                                          f"again later")
        if self._queued and self._work_s(q) > self._max_queue_s:
            self.counters["busy_frames"] += n
            raise P.ProtocolError(P.BUSY, f"server busy: {self._queued} frames queued, about "
                                          f"{1e3 * self._work_s(self._queued):.0f} ms of "
                                          f"work (limit {self.cfg.max_queue_ms:g} ms); not "
                                          f"queued, send again later")

    def _work_s(self, frames: int) -> float:
        """Estimated time to step ``frames`` queued frames: the streams waiting are stepped
        together (up to ``max_batch`` per step), so ``frames / batch`` steps, each taking the
        measured step time at that batch size (see :meth:`_update_step_eff`). 0 before any
        measurement."""
        if not frames:
            return 0.0
        if self._step_eff_stale:
            self._update_step_eff()
        b = max(1, min(self._n_ready, self.cfg.max_batch, frames))
        k = b.bit_length() - 1
        return -(-frames // b) * (self._step_eff[k] + b * self._step_eff_pf[k])

    def _update_step_eff(self) -> None:
        """Per batch-size class, the step time :meth:`_work_s` uses: the class's own measured
        time, else the nearest larger measured class's (a bigger batch takes longer: an
        overestimate, but of the fixed cost that dominates a step), else scaled up linearly
        from the nearest smaller one (a larger overestimate: a batch of 256 costs a few times
        a batch of 1, not 256 times). Recomputed (11 classes) at most once per step, when
        admission needs it, so that admission costs one lookup per message."""
        self._step_eff_stale = False
        st, eff, pf = self._step_s, self._step_eff, self._step_eff_pf
        for k in range(len(st)):
            t, per = st[k], 0.0
            if not t:
                t = next((v for v in st[k + 1:] if v), 0.0)
                if not t:
                    for j in range(k - 1, -1, -1):
                        if st[j]:
                            per = st[j] / (1 << j)    # per frame, times the batch size
                            break
            eff[k], pf[k] = t, per

    def _queue_frame(self, st: _Stream, hdr: dict, payload, t0: int,
                     fail: tuple[str, str] | None) -> None:
        if self._draining:
            raise P.ProtocolError(P.SHUTTING_DOWN, "the server is shutting down: frame not "
                                                   "queued")
        if fail is not None:
            raise P.ProtocolError(*fail)
        if payload is None:
            raise P.ProtocolError(P.BAD_MESSAGE, "a frame message needs a payload frame")
        if st.kind == P.FEATURES:
            f = self.features
            shape = hdr.get("shape")
            if (hdr.get("dtype") == P.F32 and type(shape) is list and len(shape) == 2
                    and type(shape[0]) is int and type(shape[1]) is int and shape[1] == f
                    and 1 <= shape[0] <= self.cfg.max_frames_per_message
                    and len(payload) == 4 * f * shape[0]):
                n = shape[0]                    # fast path: a well-formed feature message
            else:                               # the precise error (or an odd valid case)
                n = P.payload_array(hdr, payload, P.FEATURES, f,
                                    self.cfg.max_frames_per_message).shape[0]
            if n > 1:                           # one-frame messages are checked per batch
                if not np.isfinite(np.frombuffer(payload, P.F32)).all():
                    raise P.ProtocolError(P.BAD_PAYLOAD, "frames contain NaN or infinity")
                x = memoryview(payload)
            else:
                x = payload
            self._admit(n)
        else:
            pcm = P.payload_array(hdr, payload, P.AUDIO, 1, self.cfg.max_audio_samples)
            fe = st.fe
            n = fe.params.n_frames(fe.samples_seen + pcm.shape[0]) - fe.frames_emitted
            if n:
                self._admit(n)
            feats = fe.push(pcm)
            x = feats.tobytes() if n == 1 else memoryview(feats.tobytes())
        rid = hdr.get("rid")
        w = _Work(hdr["seq"], rid if type(rid) is int else None, x, n, st.frames, t0)
        st.frames += n
        q = st.queue
        if not q and st.es is not None:
            if n == 0:
                self._complete(st, w)
                return
            st.slot.ready[st] = None
            self._n_ready += 1
        q.append(w)
        self._queued += n
        if self._queued > self._queue_peak:
            self._queue_peak = self._queued

    def _op_close(self, peer: bytes, hdr: dict, t0: int) -> None:
        sid = P.get_int(hdr, "id", 0, P.MAX_STREAM_ID)
        st = self._streams.get((peer, sid))
        if st is None:
            self._lookup(peer, sid)
        if st.closing:
            self._stream_error(st, hdr, P.UNKNOWN_STREAM, f"stream {sid} is closing")
            return
        st.closing = True
        rid = hdr.get("rid")
        w = _Work(None, rid if type(rid) is int else None, None, 0, st.frames, t0, close=True)
        if st.queue or st.es is None:
            st.queue.append(w)
        else:
            self._finish_close(st, w)

    def _op_ping(self, peer: bytes, hdr: dict) -> None:
        now = time.monotonic()
        sid = P.get_int(hdr, "id", 0, P.MAX_STREAM_ID, default=None)
        if sid is None:
            self._peer_ping[peer] = now
        else:
            self._lookup(peer, sid).last = now
        self._reply(peer, hdr, {"op": P.PING, "t": time.time(), "draining": self._draining})

    # --------------------------------------------------------------------------- stepping
    def _lone_frame(self, parts: list) -> bool:
        """The direct path of a message that found the server idle: a well-formed one-frame
        ``frame`` request of an open feature stream with nothing queued (anywhere) is
        stepped at once and its reply sent, without the queue, the batching and the poll
        for more messages. False (and nothing changed): any other message, which the caller
        handles the usual way (and words any error)."""
        if len(parts) != 3 or self._queued or self._out or self._draining:
            return False
        t0 = time.perf_counter_ns()
        try:
            hdr = P.unpack_header(parts[1])
        except P.ProtocolError:
            return False
        v, sid, seq = hdr.get("v"), hdr.get("id"), hdr.get("seq")
        if (hdr.get("op") != P.FRAME or type(v) is not int or v != P.VERSION
                or type(sid) is not int or type(seq) is not int):
            return False
        st = self._streams.get((parts[0], sid))
        if (st is None or st.closing or st.es is None or st.queue or st.kind != P.FEATURES
                or seq != st.next_seq or seq > P.MAX_SEQ):
            return False
        f = self.features
        shape, payload = hdr.get("shape"), parts[2]
        if (hdr.get("dtype") != P.F32 or type(shape) is not list or len(shape) != 2
                or type(shape[0]) is not int or shape[0] != 1 or type(shape[1]) is not int
                or shape[1] != f or len(payload) != 4 * f):
            return False
        # from here on the message is taken: it uses up its sequence number
        self.counters["messages"] += 1
        st.last = self._last_rx
        st.next_seq = seq + 1
        rid = hdr.get("rid")
        w = _Work(seq, rid if type(rid) is int else None, payload, 1, st.frames, t0)
        slot, es = st.slot, st.es
        x = np.frombuffer(payload, np.float32)
        t_step = time.perf_counter()
        try:
            # one output: the engine's one-stream step (one fused call; equal to step_many,
            # tests/test_engine.py), else every output
            if len(slot.names) == 1:
                y = es.step(x)
            else:
                outs = slot.engine.step_many_all([es], x[None])
                y = np.concatenate([outs[k].reshape(1, -1) for k in slot.names], axis=1)
        except NvmInputError as e:    # checked before any state is touched: NaN or infinity
            self._error(st.peer, hdr, P.BAD_PAYLOAD, "frames contain NaN or infinity"
                        if not np.isfinite(x).all() else str(e)[:500])
            return True
        except Exception as e:
            log.exception("engine step failed for a lone frame")
            self._error(st.peer, hdr, P.INTERNAL, f"engine step failed: {type(e).__name__}: "
                                                  f"{e}"[:500])
            return True
        self._note_step(1, time.perf_counter() - t_step)
        self.counters["lone_frames"] += 1
        st.frames += 1
        e, lat = self._charge(st, es)
        self._reply_frame(st, w, _classes(es), lat, e,
                          y.astype(np.float32, copy=False).tobytes(), time.perf_counter_ns())
        self._flush()
        return True

    def _note_step(self, n: int, dt_s: float) -> None:
        """Count an engine step of ``n`` frames that took ``dt_s`` (its moving average per
        batch-size class is what admission control in time uses)."""
        k = min(n.bit_length() - 1, 10)
        old = self._step_s[k]
        # (a sample is taken as at most 4x the average: one step preempted for milliseconds
        # on a loaded machine must not make admission refuse work for the next hundred)
        self._step_s[k] = dt_s if not old else old + 0.1 * (min(dt_s, 4 * old) - old)
        self._step_eff_stale = True
        self.counters["frames"] += n
        self.counters["batches"] += 1
        if n > self._batch_max:
            self._batch_max = n

    @staticmethod
    def _charge(st: _Stream, es) -> tuple:
        """Add a stream's last step's energy and latency (None: unknown) to its totals;
        returns them."""
        e = getattr(es, "last_energy_pJ", None)
        lat = getattr(es, "last_latency_ns", None)
        if e is None or st.e_pJ is None:
            st.e_pJ = None
        else:
            st.e_pJ += e
        if lat is None or st.lat_ns is None:
            st.lat_ns = None
        else:
            st.lat_ns += lat
        return e, lat

    def _step_all(self) -> None:
        for slot in list(self.devices.slots.values()):
            if slot.ready:
                self._step(slot)

    def _step(self, slot: _Slot) -> None:
        ready = slot.ready
        mb = self.cfg.max_batch
        if len(ready) <= mb:
            batch = list(ready)
        else:
            batch = []
            for st in ready:
                batch.append(st)
                if len(batch) == mb:
                    break
        rb = 4 * self.features
        rows = []
        for st in batch:
            w = st.queue[0]
            if w.n == 1:
                rows.append(w.x)
            else:
                d = w.done * rb
                rows.append(w.x[d:d + rb])
        x = np.frombuffer(b"".join(rows), np.float32).reshape(len(batch), self.features)
        engine = slot.engine
        t_step = time.perf_counter()
        try:
            # the engine checks the frames (finite values) before touching any state
            outs = engine.step_many_all([st.es for st in batch], x)
        except NvmInputError:
            finite = np.isfinite(x).all(axis=1)  # only one-frame messages get here unchecked
            if finite.all():
                self._fail_batch(batch)
                return
            for st, ok in zip(batch, finite.tolist()):
                if not ok:
                    self._fail_head(st, P.BAD_PAYLOAD, "frames contain NaN or infinity")
            batch = [st for st, ok in zip(batch, finite.tolist()) if ok]
            if not batch:
                return
            try:
                outs = engine.step_many_all([st.es for st in batch], x[finite])
            except Exception:
                self._fail_batch(batch)
                return
        except Exception:
            self._fail_batch(batch)
            return
        n = len(batch)
        # measured cost per frame at this batch size (admission control in time)
        self._note_step(n, time.perf_counter() - t_step)
        if len(slot.names) == 1:
            y = outs[slot.names[0]]
        else:
            y = np.concatenate([outs[k].reshape(n, -1) for k in slot.names], axis=1)
        if y.dtype != np.float32 or not y.flags.c_contiguous:
            y = np.ascontiguousarray(y, np.float32)
        self._queued -= n
        keep = []
        yb = y.tobytes()
        wb = 4 * slot.width
        now_ns = time.perf_counter_ns()       # one reply time for the whole batch
        reply = self._reply_frame
        for i, st in enumerate(batch):
            es = st.es
            q = st.queue
            w = q[0]
            e, lat = self._charge(st, es)
            if w.n == 1:                      # the common case: a one-frame message
                q.popleft()
                reply(st, w, _classes(es), lat, e, yb[i * wb:(i + 1) * wb], now_ns)
                if q and q[0].n == 0:
                    self._settle(st)
            else:
                if w.done == 0:
                    w.y = np.empty((w.n, slot.width), np.float32)
                    w.cls = []
                    w.e, w.lat = e, lat
                else:
                    w.e = None if e is None or w.e is None else w.e + e
                    w.lat = None if lat is None or w.lat is None else w.lat + lat
                w.y[w.done] = y[i]
                w.cls += _classes(es)
                w.done += 1
                if w.done == w.n:
                    q.popleft()
                    reply(st, w, w.cls, w.lat, w.e, w.y.data, now_ns)
                    if q and q[0].n == 0:
                        self._settle(st)
            if q:
                keep.append(st)
            elif st in ready:
                del ready[st]
                self._n_ready -= 1
        if keep and len(ready) > len(keep):   # round robin: stepped streams go to the back
            for st in keep:
                del ready[st]
                ready[st] = None

    def _fail_batch(self, batch: list[_Stream]) -> None:
        log.exception("engine step failed for a batch of %d streams", len(batch))
        e = sys.exc_info()[1]
        for st in batch:
            self._fail_head(st, P.INTERNAL, f"engine step failed: {type(e).__name__}: {e}"[:500])

    def _settle(self, st: _Stream) -> None:
        """Answer the zero-frame items at the head of the queue: audio chunks that completed
        no frame, queued errors, close."""
        q = st.queue
        while q and q[0].n == 0:
            w = q.popleft()
            if w.close:
                self._finish_close(st, w)
                return
            if w.err is not None:
                self._error(st.peer, *w.err)
            else:
                self._complete(st, w)

    def _complete(self, st: _Stream, w: _Work) -> None:
        """Answer a message with no frame left to step (an audio chunk that completed no
        frame)."""
        self._reply_frame(st, w, w.cls or [], w.lat, w.e, b"", time.perf_counter_ns())

    def _reply_frame(self, st: _Stream, w: _Work, cls: list, lat, e, y, now_ns: int) -> None:
        """Queue a frame reply: outputs ``y`` (float32 bytes ``[w.n, width]``)."""
        srv_us = (now_ns - w.t0) // 1000
        hdr = P.frame_reply(st.sid, w.seq, w.f0, w.n, st.slot.width, cls, lat, e, srv_us,
                            w.rid)
        self._lat[self._lat_n % _LAT_RING] = srv_us
        self._lat_n += 1
        self._send(st.peer, hdr, y)

    def _fail_head(self, st: _Stream, code: str, msg: str) -> None:
        """Answer the stream's first queued message with an error instead of stepping it."""
        w = st.queue.popleft()
        lost = w.n - w.done
        self._queued -= lost
        st.frames -= lost                     # frame numbers (f0) stay without holes
        for later in st.queue:
            later.f0 -= lost
        hdr = {"id": st.sid, "seq": w.seq, "op": P.FRAME}
        if w.rid is not None:
            hdr["rid"] = w.rid
        self._error(st.peer, hdr, code, msg)
        self._settle(st)
        if not st.queue and st in st.slot.ready:
            del st.slot.ready[st]
            self._n_ready -= 1

    def _finish_close(self, st: _Stream, w: _Work) -> None:
        rest = [r for r in st.queue if r.err is not None]   # errors queued behind the close
        self._remove(st, "was closed")
        self.counters["closed"] += 1
        hdr = {"op": P.CLOSE, "id": st.sid, "frames": st.frames,
               "messages": st.next_seq, "e_pJ": st.e_pJ, "lat_ns": st.lat_ns,
               "cls": st.es.last_class, "seed": st.es.seed}
        if w.rid is not None:
            hdr["rid"] = w.rid
        self._send(st.peer, hdr)
        for r in rest:
            self._error(st.peer, *r.err)

    def _remove(self, st: _Stream, why: str) -> None:
        key = (st.peer, st.sid)
        if self._streams.pop(key, None) is None:
            return
        st.slot.streams -= 1
        sl = st.slot
        sl.e_done_pJ = None if sl.e_done_pJ is None or st.e_pJ is None else \
            sl.e_done_pJ + st.e_pJ
        if st.es is not None:
            st.es.close()
        elif st in st.slot.waiting:
            st.slot.waiting.remove(st)
        if st in st.slot.ready:
            del st.slot.ready[st]
            self._n_ready -= 1
        for w in st.queue:
            self._queued -= w.n - w.done
        st.queue.clear()
        self._gone[key] = why
        if len(self._gone) > self.cfg.max_streams:
            self._gone.popitem(last=False)
        self._on_removed(key)

    def _on_removed(self, key: tuple[bytes, int]) -> None:
        """Hook: a stream ended (a broker's worker tells the broker)."""

    # ------------------------------------------------------------------------ housekeeping
    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now < self._next_housekeeping:
            return
        self._next_housekeeping = now + min(1.0, self.cfg.idle_timeout_s / 4)
        if self.publish_stats:
            self.stats_snapshot = self.stats()        # read by the metrics thread
        limit = self.cfg.idle_timeout_s
        pings = self._peer_ping
        idle = [st for st in self._streams.values()
                if not st.queue and st.es is not None
                and now - max(st.last, pings.get(st.peer, 0.0)) > limit]
        for st in idle:
            idle_s = now - max(st.last, pings.get(st.peer, 0.0))
            self._remove(st, "was evicted (idle)")
            self.counters["evicted"] += 1
            log.info("evicted stream %d of client %s after %.1f s idle", st.sid, st.peer.hex(),
                     idle_s)
            self._send(st.peer, {"op": P.EVICTED, "id": st.sid,
                                 "reason": "idle", "idle_s": round(idle_s, 3),
                                 "frames": st.frames, "messages": st.next_seq})
        if len(pings) > 4 * self.cfg.max_streams or idle:
            live = {st.peer for st in self._streams.values()}
            for p in [p for p, t in pings.items() if p not in live and now - t > limit]:
                del pings[p]

    def _begin_drain(self) -> None:
        self._draining = True
        self._drain_t0 = time.monotonic()
        log.info("shutting down: answering %d queued frames of %d streams, refusing new work",
                 self._queued, len(self._streams))

    def _drained(self) -> bool:
        now = time.monotonic()
        if now - self._drain_t0 >= self.cfg.drain_max_s:
            if self._queued or self._n_ready or self.devices.programming:
                self._abort_queued()
            return True
        if self._queued or self._n_ready or self.devices.programming:
            return False
        return now - self._last_rx >= self.cfg.drain_quiet_s

    def _abort_queued(self) -> None:
        """The drain cap is reached: answer every message still queued with
        ``shutting_down`` (so nothing admitted goes unanswered)."""
        log.warning("drain cap of %.1f s reached: %d queued frames answered shutting_down",
                    self.cfg.drain_max_s, self._queued)
        for st in list(self._streams.values()):
            if st.es is None:
                self._fail_open(st, "the server is shutting down", P.SHUTTING_DOWN)
                continue
            while st.queue:
                w = st.queue[0]
                if w.n == 0:
                    self._settle(st)
                    if self._streams.get((st.peer, st.sid)) is not st:
                        break
                    continue
                self._fail_head(st, P.SHUTTING_DOWN, "the server shut down before this frame "
                                                     "was stepped")

    def _say_goodbye(self) -> None:
        peers: dict[bytes, list[int]] = {}
        for (peer, sid) in list(self._streams):
            peers.setdefault(peer, []).append(sid)
        for st in list(self._streams.values()):
            self._remove(st, "was closed by the server shutdown")
        for peer, sids in peers.items():
            self._send(peer, {"op": P.SHUTDOWN, "ids": sids[:4096]})
        self._flush()

    # ---------------------------------------------------------------------------- reports
    def info(self) -> dict[str, Any]:
        m = self.model
        slot = self.devices.default
        fe = self.frontend.to_dict() if self.frontend else None
        return {
            "version": P.VERSION,
            "model": {"input": m.input.name, "features": self.features,
                      "outputs": [[n, w] for n, w in zip(slot.names, slot.widths)],
                      "labels": list(self.prog.labels), "streamable": self._why_not is None,
                      "why_not_streamable": self._why_not,
                      "kinds": [P.FEATURES] + ([P.AUDIO] if self.frontend else []),
                      "frontend": fe, "weight_bits": self.prog.weight_bits},
            "profiles": sorted(self.devices.profiles),
            "default": {"profile": self.default_profile, "overrides": list(self.cfg.overrides),
                        "votes": self.cfg.votes, "device_seed": self.cfg.device_seed},
            "limits": {"max_streams": self.cfg.max_streams,
                       "max_queued_frames": self.cfg.max_queued_frames,
                       "max_batch": self.cfg.max_batch,
                       "max_frames_per_message": self.cfg.max_frames_per_message,
                       "max_audio_samples": self.cfg.max_audio_samples,
                       "max_message_bytes": self.cfg.max_message_bytes,
                       "max_header_bytes": P.MAX_HEADER_BYTES,
                       "max_batch_items": P.MAX_BATCH_ITEMS,
                       "idle_timeout_s": self.cfg.idle_timeout_s,
                       "max_votes": self.cfg.max_votes,
                       "max_queue_ms": self.cfg.max_queue_ms,
                       "max_devices": self.cfg.max_engines,
                       "unread_reply_messages": self.cfg.sndhwm,
                       "closed_ids_kept": self.cfg.max_streams},
            "devices": {"max": self.cfg.max_engines, "held": len(self.devices.slots),
                        "programming": self.devices.programming},
        }

    def stats(self) -> dict[str, Any]:
        n = min(self._lat_n, _LAT_RING)
        lat = self._lat[:n]
        pct = ({f"p{q}": float(np.percentile(lat, q)) for q in (50, 90, 99)}
               if n else {"p50": None, "p90": None, "p99": None})
        c = self.counters
        energy = {id(s): s.e_done_pJ for s in self.devices.slots.values()}
        for st in self._streams.values():
            k = id(st.slot)
            if k in energy:
                energy[k] = None if energy[k] is None or st.e_pJ is None else \
                    energy[k] + st.e_pJ
        top = sorted((st for st in self._streams.values() if st.e_pJ),
                     key=lambda st: st.e_pJ, reverse=True)[:5]
        return {
            "uptime_s": time.monotonic() - self._t_start,
            "top_streams": [{"id": st.sid, "client": st.peer.hex(), "frames": st.frames,
                             "e_pJ": st.e_pJ} for st in top],
            "streams": len(self._streams),
            "clients": len({st.peer for st in self._streams.values()}),
            "engines": [{"profile": s.profile_name, "overrides": list(s.key[1]),
                         "votes": s.key[2], "streams": s.streams,
                         "ready": s.engine is not None, "e_pJ": energy.get(id(s)),
                         "program_ms": round(s.program_ms, 1)} for s in self.devices.slots.values()],
            "max_devices": self.cfg.max_engines,
            "programmed": c["programmed"], "devices_dropped": self.devices.dropped,
            "closed_ids_kept": len(self._gone),
            "step_us": {str(1 << k): round(1e6 * v, 1) for k, v in enumerate(self._step_s) if v},
            "queued_ms": 1e3 * self._work_s(self._queued),
            "messages": c["messages"], "frames": c["frames"], "batches": c["batches"],
            "batch_mean": c["frames"] / c["batches"] if c["batches"] else None,
            "batch_max": self._batch_max, "lone_frames": c["lone_frames"],
            "queued": self._queued, "queue_peak": self._queue_peak,
            "opened": c["opened"], "closed": c["closed"], "evicted": c["evicted"],
            "errors": dict(self.errors), "busy_frames": c["busy_frames"],
            "dropped_replies": c["dropped_replies"],
            "unreachable_replies": c["unreachable_replies"],
            "srv_us": pct, "srv_us_window": n, "draining": self._draining,
        }


def freeze_heap() -> None:
    """Move every object alive now (the model, the engines, numba's and onnx's modules) out
    of the garbage collector's sight: a full collection over them took 50-180 ms on the
    development machine, a stall of every stream each time one ran. Objects made later
    (streams, devices programmed later) are collected as usual. For a process that serves
    and does nothing else (the CLI calls it before ``run``): it is process-wide."""
    gc.collect()
    gc.freeze()


def install_signal_handlers(server: Server) -> None:
    """SIGINT/SIGTERM -> :meth:`Server.request_stop` (graceful; a second signal exits at once).
    Call from the main thread."""
    def handler(signum, frame):
        log.info("signal %d: %s", signum, "stopping now" if server._stop_requests else
                 "draining")
        server.request_stop()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
