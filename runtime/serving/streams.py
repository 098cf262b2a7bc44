"""Per-stream state of the server: a stream and the messages queued on it."""

from __future__ import annotations

import collections

__all__ = ["Work", "Stream"]


class Work:
    """One ``frame`` (or ``close``) message of a stream waiting to be stepped, or an error
    reply (``err``) waiting behind the stream's earlier messages (replies keep seq order)."""

    __slots__ = ("seq", "rid", "x", "n", "done", "f0", "t0", "y", "cls", "e", "lat", "close",
                 "err")

    def __init__(self, seq, rid, x, n, f0, t0, close=False, err=None):
        self.seq, self.rid, self.x, self.n, self.f0, self.t0 = seq, rid, x, n, f0, t0
        self.done = 0
        self.y = None
        self.cls = None
        self.e = None
        self.lat = None
        self.close = close
        self.err = err            # (request header, code, msg) for a queued error reply


class Stream:
    """A client's stream. ``es`` is None while its device is being programmed (``open`` not
    answered yet): its messages queue and are handled when the device is ready."""

    __slots__ = ("peer", "sid", "slot", "es", "kind", "fe", "next_seq", "queue", "frames",
                 "last", "closing", "e_pJ", "lat_ns", "opened", "open_req", "seed")

    def __init__(self, peer, sid, slot, es, kind, fe, now, open_req=None, seed=None):
        self.peer, self.sid, self.slot, self.es, self.kind, self.fe = peer, sid, slot, es, kind, fe
        self.open_req = open_req  # the open request, kept until it is answered
        self.seed = seed
        self.next_seq = 0
        self.queue: collections.deque[Work] = collections.deque()
        self.frames = 0           # frames stepped (== frames queued through the front end)
        self.last = now
        self.closing = False
        self.e_pJ: float | None = 0.0
        self.lat_ns: float | None = 0.0
        self.opened = now
