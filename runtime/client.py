"""Python client of the nvmstream server (protocol: docs/protocol.md).

    from nvmstream.runtime.client import Client
    with Client("tcp://127.0.0.1:5555") as c:
        s = c.open(profile="pcm", seed=7)          # a stream; many may share one client
        y = s.step(x_t)                             # one round trip: output [F_out]
        for t in range(T): s.send(x[t])             # pipelined: send many, then ...
        replies = [s.recv() for _ in range(T)]      # ... read them (Reply: y, cls, e_pJ, ...)
        summary = s.close()

One :class:`Client` is one DEALER socket (not thread-safe; use one per thread). Replies of
all its streams arrive on that socket; each is routed to its stream's inbox, so streams can be
read in any order. ``stream_sequences`` streams many sequences concurrently over several
sockets and summarises predictions, accuracy, latency and energy (what ``nvmstream stream``
prints).
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import zmq

from . import protocol as P

log = logging.getLogger(__name__)

_SNDMORE, _RCVMORE = int(zmq.SNDMORE), int(zmq.RCVMORE)

__all__ = ["Client", "RemoteStream", "Reply", "ServerError", "decode", "first_output_is_value",
           "stream_sequences"]


class ServerError(Exception):
    """An ``error`` reply (or a notice that ended a stream): ``code``, ``msg``, the header."""

    def __init__(self, code: str, msg: str, hdr: dict | None = None):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.hdr = hdr or {}


@dataclass
class Reply:
    """One message from the server. ``y`` is the output payload ``[n, width]`` (frame
    replies), ``cls`` the class per frame, ``rtt_s`` the client-measured round trip."""

    op: str
    hdr: dict
    y: np.ndarray | None = None
    t_recv: float = 0.0
    rtt_s: float | None = None

    @property
    def sid(self) -> int | None:
        return self.hdr.get("id")

    @property
    def seq(self) -> int | None:
        return self.hdr.get("seq")

    @property
    def cls(self) -> list[int]:
        return self.hdr.get("cls") or []

    @property
    def e_pJ(self) -> float | None:
        return self.hdr.get("e_pJ")

    @property
    def lat_ns(self) -> float | None:
        return self.hdr.get("lat_ns")

    @property
    def srv_us(self) -> int | None:
        return self.hdr.get("srv_us")

    @property
    def n(self) -> int:
        return self.hdr.get("n", 0)

    @property
    def is_error(self) -> bool:
        return self.op == P.ERROR

    def error(self) -> ServerError:
        return ServerError(self.hdr.get("code", "?"), self.hdr.get("msg", ""), self.hdr)


def decode(parts: list[bytes], t: float = 0.0) -> list[Reply]:
    """One message from the server -> its replies (several for a ``batch``)."""
    hdr = P.unpack_header(parts[0], P.MAX_REPLY_HEADER_BYTES)
    if hdr.get("op") != "batch":              # the common case: one reply
        y = None
        if len(parts) > 1 and type(hdr.get("shape")) is list:
            y = np.frombuffer(parts[1], P.F32).reshape(hdr["shape"])
        return [Reply(str(hdr.get("op")), hdr, y, t)]
    out = []
    for h, pay in P.split_batch(hdr, parts[1] if len(parts) > 1 else None):
        y = None
        if pay is not None and type(h.get("shape")) is list:
            y = np.frombuffer(pay, P.F32).reshape(h["shape"])
        out.append(Reply(str(h.get("op")), h, y, t))
    return out


class Client:
    """A DEALER connection to a server (see module docstring).

    ``curve_server_key``: the server's public certificate file; ``curve_cert``: this client's
    certificate with its secret key (``zmq.auth.create_certificates`` makes both kinds).
    """

    def __init__(self, addr: str, *, timeout_s: float = 10.0,
                 curve_server_key: str | None = None, curve_cert: str | None = None,
                 context: zmq.Context | None = None, hwm: int = 100000) -> None:
        self.addr = addr
        self.timeout_s = float(timeout_s)
        self._ctx = context or zmq.Context.instance()
        s = self._ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, hwm)
        s.setsockopt(zmq.RCVHWM, hwm)
        s.setsockopt(zmq.SNDTIMEO, int(self.timeout_s * 1000))
        if curve_server_key or curve_cert:
            from zmq import auth as zauth
            if not (curve_server_key and curve_cert):
                s.close(0)
                raise ValueError("CURVE needs both curve_server_key and curve_cert")
            server_pub, _ = zauth.load_certificate(curve_server_key)
            pub, sec = zauth.load_certificate(curve_cert)
            if not sec:
                s.close(0)
                raise ValueError(f"{curve_cert}: holds no secret key")
            s.curve_serverkey = server_pub
            s.curve_publickey = pub
            s.curve_secretkey = sec
        s.connect(addr)
        self.sock = s
        self._rcvtimeo = -1
        self._streams: dict[int, RemoteStream] = {}
        self._next_sid = 0
        self._next_rid = 1
        self._by_rid: dict[int, Reply] = {}
        self._open_rids: dict[int, RemoteStream] = {}
        self.notices: collections.deque[Reply] = collections.deque(maxlen=1000)
        self._arrivals: collections.deque[RemoteStream] = collections.deque()
        self._arrivals_cap = 4096
        self.closed = False

    # ------------------------------------------------------------------------- plumbing
    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.sock.close(0)
            self.closed = True

    def _rid(self) -> int:
        r = self._next_rid
        self._next_rid += 1
        return r

    def send_raw(self, hdr: dict, payload: Any = None) -> None:
        """Send one request as is (``v`` is added if missing)."""
        hdr.setdefault("v", P.VERSION)
        if payload is None:
            self.sock.send(P.pack(hdr))
        else:
            self.sock.send(P.pack(hdr), _SNDMORE)
            self.sock.send(payload, copy=len(payload) < 65536)

    def _recv_one(self, timeout_s: float | None) -> list[Reply] | None:
        """Receive one message (waiting up to ``timeout_s``) and route its replies; None on
        timeout."""
        if timeout_s is None:
            timeout_s = self.timeout_s
        ms = max(0, int(timeout_s * 1000))
        if ms != self._rcvtimeo:
            self.sock.setsockopt(zmq.RCVTIMEO, ms)
            self._rcvtimeo = ms
        try:
            parts = [self.sock.recv()]
            while self.sock.getsockopt(_RCVMORE):
                parts.append(self.sock.recv())
        except zmq.Again:
            return None
        rs = decode(parts, time.perf_counter())
        for r in rs:
            self._route(r)
        return rs

    def _route(self, r: Reply) -> None:
        h = r.hdr
        rid = h.get("rid")
        if rid in self._open_rids:
            st = self._open_rids.pop(rid)
            st._opened(r)
            return
        sid = h.get("id")
        st = self._streams.get(sid) if sid is not None else None
        if r.op == P.SHUTDOWN:                   # the listed streams (all, without a list)
            self.notices.append(r)
            ids = h.get("ids")
            targets = ([self._streams[i] for i in ids if type(i) is int and i in self._streams]
                       if type(ids) is list else list(self._streams.values()))
            for st in targets:
                st._inbox.append(r)
                self._note_arrival(st)
            return
        if r.op == P.WORKER_LOST:               # the named streams are gone (worker died)
            self.notices.append(r)
            for sid in h.get("ids") or ():
                st = self._streams.get(sid)
                if st is not None:
                    st.ended = P.WORKER_LOST
                    st._inbox.append(r)
                    self._note_arrival(st)
            return
        if r.op == P.EVICTED:
            self.notices.append(r)
        if st is not None and (r.op in (P.FRAME, P.EVICTED) or
                               (r.op == P.ERROR and h.get("req") == P.FRAME)):
            st._arrived(r)
        elif rid is not None:
            self._by_rid[rid] = r
        else:
            self.notices.append(r)

    def _note_arrival(self, st: "RemoteStream") -> None:
        """Remember that a reply of ``st`` arrived (the order :meth:`recv_any` follows)."""
        a = self._arrivals
        a.append(st)
        if len(a) > self._arrivals_cap:
            self._compact_arrivals()

    def _compact_arrivals(self) -> None:
        """Forget the arrivals whose replies :meth:`RemoteStream.recv` already took, so that a
        client that never calls :meth:`recv_any` does not grow by one entry per reply."""
        left: dict[RemoteStream, int] = {}
        keep = []
        for st in reversed(self._arrivals):       # a stream's newest arrivals are unread
            k = left.get(st)
            if k is None:
                k = len(st._inbox)
            if k > 0:
                keep.append(st)
            left[st] = max(0, k - 1)
        keep.reverse()
        self._arrivals = collections.deque(keep)
        self._arrivals_cap = max(4096, 2 * len(keep))

    def _wait_rid(self, rid: int, timeout_s: float | None) -> Reply:
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while rid not in self._by_rid:
            left = deadline - time.monotonic()
            if left <= 0 or self._recv_one(left) is None and time.monotonic() >= deadline:
                raise TimeoutError(f"no reply from {self.addr} within "
                                   f"{self.timeout_s if timeout_s is None else timeout_s} s")
        return self._by_rid.pop(rid)

    def request(self, hdr: dict, timeout_s: float | None = None) -> dict:
        """Send a request with a fresh ``rid`` and wait for its reply header; error replies
        raise :class:`ServerError`."""
        rid = self._rid()
        hdr = dict(hdr, rid=rid)
        self.send_raw(hdr)
        r = self._wait_rid(rid, timeout_s)
        if r.is_error:
            raise r.error()
        return r.hdr

    # --------------------------------------------------------------------------- ops
    def info(self) -> dict:
        return self.request({"op": P.INFO})

    def stats(self) -> dict:
        return self.request({"op": P.STATS})

    def ping(self, sid: int | None = None) -> float:
        """Heartbeat (keeps this client's streams, or stream ``sid``, from idling out);
        returns the round trip in seconds."""
        t0 = time.perf_counter()
        hdr = {"op": P.PING}
        if sid is not None:
            hdr["id"] = sid
        self.request(hdr)
        return time.perf_counter() - t0

    def open(self, kind: str = P.FEATURES, *, profile: str | None = None,
             overrides: Sequence[str] | None = None, seed: int | None = None,
             votes: int | None = None, wait: bool = True,
             timeout_s: float | None = None) -> "RemoteStream":
        """Open a stream. ``wait=False`` returns at once (frames may follow immediately; an
        open error then surfaces on the stream's first ``recv``)."""
        sid = self._next_sid
        self._next_sid += 1
        hdr: dict[str, Any] = {"op": P.OPEN, "id": sid, "kind": kind}
        if profile is not None:
            hdr["profile"] = profile
        if overrides:
            hdr["overrides"] = list(overrides)
        if seed is not None:
            hdr["seed"] = int(seed)
        if votes is not None:
            hdr["votes"] = int(votes)
        st = RemoteStream(self, sid, kind)
        rid = self._rid()
        hdr["rid"] = rid
        self._streams[sid] = st
        self._open_rids[rid] = st
        self.send_raw(hdr)
        if wait:
            st.wait_open(timeout_s)
        return st

    def recv_any(self, timeout_s: float | None = None) -> Reply:
        """The next stream reply of any stream, in arrival order (replies already taken with
        :meth:`RemoteStream.recv` are skipped); TimeoutError if none comes."""
        deadline = None
        while True:
            while self._arrivals:
                st = self._arrivals.popleft()
                if st._inbox:
                    return st._take()
            if deadline is None:
                deadline = time.monotonic() + (self.timeout_s if timeout_s is None
                                               else timeout_s)
            left = deadline - time.monotonic()
            if left <= 0 or self._recv_one(left) is None:
                raise TimeoutError(f"no reply from {self.addr}")

    def send_frames(self, items: Sequence[tuple["RemoteStream", np.ndarray]]) -> list[int]:
        """Frames of several streams of this client in one ``batch`` message (fewer messages
        for gateways that multiplex many sensors); returns each item's sequence number."""
        hdrs, pays, seqs = [], [], []
        for st, x in items:
            x = st._prepare(x)
            seq = st.next_seq
            hdrs.append({"op": P.FRAME, "id": st.sid, "seq": seq, "dtype": st._dtype,
                         "shape": list(x.shape)})
            pays.append(x.tobytes())
            seqs.append(seq)
        self.sock.send(P.pack({"v": P.VERSION, "op": P.BATCH, "r": hdrs}), _SNDMORE)
        self.sock.send(b"".join(pays))
        t = time.perf_counter()
        for st, _ in items:
            st._sent[st.next_seq] = t
            st.next_seq += 1
            st.outstanding += 1
        return seqs


class RemoteStream:
    """One stream on the server (made by :meth:`Client.open`)."""

    def __init__(self, client: Client, sid: int, kind: str):
        self.client = client
        self.sid = sid
        self.kind = kind
        self.info: dict | None = None
        self.open_error: ServerError | None = None
        self.next_seq = 0
        self.outstanding = 0
        self.closed = False
        self.ended: str | None = None      # "evicted" / "shutdown" when the server ended it
        self._inbox: collections.deque[Reply] = collections.deque()
        self._sent: dict[int, float] = {}
        self._dtype = P.DTYPES[kind]

    def _opened(self, r: Reply) -> None:
        if r.is_error:
            self.open_error = r.error()
            self.ended = "open failed"
            self.client._streams.pop(self.sid, None)
        else:
            self.info = r.hdr

    def wait_open(self, timeout_s: float | None = None) -> dict:
        deadline = time.monotonic() + (self.client.timeout_s if timeout_s is None
                                       else timeout_s)
        while self.info is None and self.open_error is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply to open from {self.client.addr}")
            self.client._recv_one(left)
        if self.open_error is not None:
            raise self.open_error
        return self.info

    def _arrived(self, r: Reply) -> None:
        seq = r.hdr.get("seq")
        t = self._sent.pop(seq, None) if seq is not None else None
        if t is not None:
            r.rtt_s = r.t_recv - t
            self.outstanding -= 1
        if r.op == P.EVICTED:
            self.ended = P.EVICTED
        self._inbox.append(r)
        self.client._note_arrival(self)

    def _take(self) -> Reply:
        r = self._inbox.popleft()
        if r.op == P.SHUTDOWN:
            self.ended = P.SHUTDOWN
        return r

    # ---------------------------------------------------------------------------- frames
    def _prepare(self, x: np.ndarray) -> np.ndarray:
        if self.kind == P.FEATURES:
            x = np.ascontiguousarray(x, P.F32)
            return x[None] if x.ndim == 1 else x
        return np.ascontiguousarray(x, P.I16)

    def send(self, x: np.ndarray) -> int:
        """Queue frames ``[F]``/``[n, F]`` (features) or int16 samples ``[n]`` (audio) without
        waiting; returns the message's sequence number."""
        x = self._prepare(x)
        if self.closed or self.ended:       # keep routing replies (errors) to this stream
            self.client._streams.setdefault(self.sid, self)
        seq = self.next_seq
        hdr = {"v": P.VERSION, "op": P.FRAME, "id": self.sid, "seq": seq, "dtype": self._dtype,
               "shape": list(x.shape)}
        sock = self.client.sock
        sock.send(P.pack(hdr), _SNDMORE)           # (send_multipart costs ~3 us more)
        sock.send(x, copy=x.nbytes < 65536)
        self._sent[seq] = time.perf_counter()
        self.next_seq = seq + 1
        self.outstanding += 1
        return seq

    def recv(self, timeout_s: float | None = None, *, raise_errors: bool = True) -> Reply:
        """The next reply of this stream, in order. Error replies raise :class:`ServerError`
        unless ``raise_errors`` is False; TimeoutError when nothing comes."""
        if self.open_error is not None:
            raise self.open_error
        c = self.client
        if not self._inbox:
            wait = c.timeout_s if timeout_s is None else timeout_s
            deadline = time.monotonic() + wait
            while True:
                c._recv_one(wait)
                if self.open_error is not None:
                    raise self.open_error
                if self._inbox:
                    break
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise TimeoutError(f"stream {self.sid}: no reply from {c.addr}")
        r = self._take()
        if raise_errors and r.op in (P.ERROR, P.EVICTED, P.SHUTDOWN, P.WORKER_LOST):
            if r.op == P.ERROR:
                raise r.error()
            raise ServerError(r.op, f"stream {self.sid} was ended by the server ({r.op})", r.hdr)
        return r

    def step(self, x: np.ndarray, timeout_s: float | None = None) -> np.ndarray:
        """One round trip: send ``x`` and return the outputs (``[W]`` for one frame,
        ``[n, W]`` otherwise)."""
        self.send(x)
        r = self.recv(timeout_s)
        y = r.y
        return y[0] if (y is not None and y.shape[0] == 1 and np.ndim(x) == 1
                        and self.kind == P.FEATURES) else y

    def close(self, timeout_s: float | None = None) -> dict:
        """Close the stream after its queued frames; returns the server's summary (frames,
        energy ``e_pJ``, device latency ``lat_ns``, last class). Unread frame replies stay
        readable with :meth:`recv`."""
        if self.closed:
            raise ValueError(f"stream {self.sid} is already closed")
        self.closed = True
        try:
            return self.client.request({"op": P.CLOSE, "id": self.sid}, timeout_s)
        finally:
            if not self._inbox:
                self.client._streams.pop(self.sid, None)


# ------------------------------------------------------------------------------ streaming
@dataclass
class StreamResult:
    """What happened to one streamed sequence."""

    index: int
    frames: int = 0
    cls: list[int] = field(default_factory=list)      # class per output frame
    rtt_s: list[float] = field(default_factory=list)  # per message
    srv_us: list[int] = field(default_factory=list)
    e_pJ: float | None = 0.0
    lat_ns: float | None = 0.0
    errors: list[str] = field(default_factory=list)
    busy_resent: int = 0        # messages answered `busy` and sent again (docs/protocol.md)
    ys: list[np.ndarray] = field(default_factory=list)   # replies' outputs (keep_outputs)
    #: the first output's name when it is one value per frame (:func:`first_output_is_value`):
    #: then ``prediction`` is None and :meth:`value_summary` describes the stream
    value_name: str | None = None
    _v: list[float] = field(default_factory=lambda: [0.0, 0.0, np.inf, -np.inf, 0.0],
                            init=False, repr=False)   # last, sum, min, max, frames

    def outputs(self) -> np.ndarray | None:
        """Every output of every frame, ``[frames, width]`` (with ``keep_outputs=True``)."""
        return np.concatenate(self.ys) if self.ys else None

    @property
    def prediction(self) -> int | None:
        """The class of the last frame (the server's argmax of the first output); None when
        the first output is a value, not class scores."""
        if self.value_name is not None:
            return None
        return self.cls[-1] if self.cls else None

    def _add_values(self, v: np.ndarray) -> None:
        if v.size:
            s = self._v
            s[0] = float(v[-1])
            s[1] += float(np.sum(v, dtype=np.float64))
            s[2] = min(s[2], float(v.min()))
            s[3] = max(s[3], float(v.max()))
            s[4] += v.size

    def value_summary(self) -> dict[str, Any] | None:
        """The first output over the stream's frames when it is a value (``name``, ``last``,
        ``mean``, ``min``, ``max``); None for a class-score output or before any frame."""
        if self.value_name is None or not self._v[4]:
            return None
        last, total, lo, hi, n = self._v
        return {"name": self.value_name, "last": last, "mean": total / n, "min": lo,
                "max": hi}


def first_output_is_value(model_info: dict) -> bool:
    """True when the model's first output (``info()["model"]["outputs"]``, ``[name, width]``
    pairs) is one value per frame, e.g. silero-vad's speech probability, rather than a vector
    of class scores: the class the server reports (its argmax) is then always 0 and means
    nothing, so ``nvmstream stream`` summarises the value instead."""
    outs = model_info.get("outputs") or []
    return bool(outs) and int(outs[0][1]) == 1


def _pct(a: Iterable[float]) -> dict[str, float | None]:
    a = np.asarray(list(a), np.float64)
    if not a.size:
        return {"p50": None, "p90": None, "p99": None}
    return {f"p{q}": float(np.percentile(a, q)) for q in (50, 90, 99)}


def _resend_busy(st: "RemoteStream", chunk: np.ndarray, r: Reply, res: StreamResult,
                 timeout_s: float) -> Reply:
    """Send a message refused with ``busy`` again after a growing pause, until the server
    takes it or ``timeout_s`` has passed; returns the last reply."""
    deadline = time.monotonic() + timeout_s
    pause = 0.001
    while r.op != P.FRAME and r.hdr.get("code") == "busy" and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(0.1, 2 * pause)
        st.send(chunk)
        res.busy_resent += 1
        r = st.recv(timeout_s, raise_errors=False)
    return r


def stream_sequences(addr: str, chunks: Sequence[Sequence[np.ndarray]], *, kind: str = P.FEATURES,
                     labels: Sequence[int] | None = None, profile: str | None = None,
                     overrides: Sequence[str] | None = None, votes: int | None = None,
                     seed: int | None = None, rate_hz: float = 0.0, sockets: int = 1,
                     timeout_s: float = 30.0, client_kw: dict | None = None,
                     keep_outputs: bool = False) -> dict:
    """Stream sequences concurrently, one stream each, spread over ``sockets`` clients.

    ``chunks[i]`` is sequence i as a list of messages (feature frames ``[F]``/``[n, F]`` or
    int16 audio chunks). All streams send their message t, then every reply of step t is read
    (so a step is one batch on the server); ``rate_hz`` > 0 paces the steps in real time.
    A message answered ``busy`` (the server's queue bound, docs/protocol.md) is sent again,
    under the next seq, after a growing pause (1 ms doubling to 100 ms) until ``timeout_s``
    has passed since the first refusal; the count is in ``busy_resent``. Stream i gets stream
    seed ``seed + i`` when ``seed`` is given. Returns a summary dict (see
    ``nvmstream stream``) with ``results`` (one :class:`StreamResult` per sequence; with
    ``keep_outputs`` each holds its frames' outputs, :meth:`StreamResult.outputs`).
    """
    clients = [Client(addr, timeout_s=timeout_s, **(client_kw or {}))
               for _ in range(max(1, sockets))]
    try:
        info = clients[0].info()
        streams: list[RemoteStream] = []
        for i in range(len(chunks)):
            c = clients[i % len(clients)]
            streams.append(c.open(kind, profile=profile, overrides=overrides, votes=votes,
                                  seed=None if seed is None else seed + i, wait=False))
        for st in streams:
            st.wait_open(timeout_s)
        value = (info["model"]["outputs"][0][0] if first_output_is_value(info["model"])
                 else None)
        results = [StreamResult(i, value_name=value) for i in range(len(chunks))]
        t_start = time.perf_counter()
        steps = max((len(c) for c in chunks), default=0)
        for t in range(steps):
            if rate_hz > 0:
                due = t_start + t / rate_hz
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            active = [i for i in range(len(chunks)) if t < len(chunks[i])]
            for i in active:
                streams[i].send(chunks[i][t])
            for i in active:
                r = streams[i].recv(timeout_s, raise_errors=False)
                res = results[i]
                if r.op != P.FRAME and r.hdr.get("code") == "busy":
                    r = _resend_busy(streams[i], chunks[i][t], r, res, timeout_s)
                if r.op != P.FRAME:
                    res.errors.append(f"{r.hdr.get('code', r.op)}: {r.hdr.get('msg', '')}")
                    continue
                res.frames += r.n
                res.cls.extend(r.cls)
                if value is not None and r.n and r.y is not None:
                    res._add_values(r.y[:, 0])
                if keep_outputs and r.n:
                    res.ys.append(np.array(r.y, np.float32))
                if r.rtt_s is not None:
                    res.rtt_s.append(r.rtt_s)
                res.srv_us.append(r.srv_us)
                res.e_pJ = None if r.e_pJ is None or res.e_pJ is None else res.e_pJ + r.e_pJ
                res.lat_ns = (None if r.lat_ns is None or res.lat_ns is None
                              else res.lat_ns + r.lat_ns)
        elapsed = time.perf_counter() - t_start
        for st in streams:
            if not st.closed and st.ended is None:
                st.close(timeout_s)
    finally:
        for c in clients:
            c.close()
    frames = sum(r.frames for r in results)
    out: dict[str, Any] = {"streams": len(results), "frames": frames, "elapsed_s": elapsed,
                           "busy_resent": sum(r.busy_resent for r in results),
                           "frames_per_s": frames / elapsed if elapsed > 0 else None,
                           "rtt_ms": {k: (None if v is None else 1e3 * v) for k, v in
                                      _pct(x for r in results for x in r.rtt_s).items()},
                           "server_us": _pct(x for r in results for x in r.srv_us),
                           "errors": sum(len(r.errors) for r in results),
                           "labels": list(info["model"].get("labels") or []),
                           "value_output": value,
                           "results": results}
    energies = [r.e_pJ for r in results if r.frames]
    lats = [r.lat_ns for r in results if r.frames]
    if energies and all(e is not None for e in energies):
        out["energy_pJ_per_frame"] = sum(energies) / frames
        out["energy_pJ_per_inference"] = sum(energies) / len(energies)
    else:
        out["energy_pJ_per_frame"] = out["energy_pJ_per_inference"] = None
    out["device_latency_ns_per_frame"] = (sum(lats) / frames if lats and
                                          all(v is not None for v in lats) else None)
    if labels is not None:
        preds = [r.prediction for r in results]
        ok = [p == int(y) for p, y in zip(preds, labels) if p is not None]
        out["accuracy"] = sum(ok) / len(ok) if ok else None
        out["labelled"] = len(ok)
    return out
