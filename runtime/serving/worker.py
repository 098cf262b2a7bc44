"""An engine worker: the stream server on a DEALER connected to a broker.

    w = Worker(prog, ServerConfig(profile="pcm"), connect="tcp://10.0.0.5:5556")
    install_signal_handlers(w)
    w.run()

The broker forwards each client message as ``[client identity, header, payload]`` -- what the
server's ROUTER would have received -- so the worker is :class:`~nvmstream.runtime.server.Server`
itself; only its socket, a heartbeat and the ``gone`` reports differ (see :mod:`.control`).
"""

from __future__ import annotations

import logging
import os
import socket
import time

import zmq

from .. import protocol as P
from ..server import Server
from . import control as C

log = logging.getLogger(__name__)

__all__ = ["Worker"]


class Worker(Server):
    """:class:`Server` behind a broker. ``exit_with_broker``: exit when the broker is silent
    for :data:`~.control.LIVENESS_S` (workers the broker spawned); otherwise keep serving the
    streams and say ``ready`` again until a broker answers (remote workers)."""

    def __init__(self, prog, config=None, *, connect: str, exit_with_broker: bool = False,
                 context: zmq.Context | None = None) -> None:
        super().__init__(prog, config, context=context)
        self.connect = connect
        self.exit_with_broker = exit_with_broker
        self._gone_keys: list[list] = []
        self._broker_seen = time.monotonic()
        self._next_hb = 0.0

    def bind(self) -> str:
        cfg = self.cfg
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.SNDHWM, 0)          # the broker bounds what each client may leave
        s.setsockopt(zmq.RCVHWM, 0)          # unread; between broker and worker: no drops
        s.setsockopt(zmq.LINGER, cfg.linger_ms)
        s.setsockopt(zmq.IDENTITY, b"w" + os.urandom(7))
        try:
            s.connect(self.connect)
        except zmq.ZMQError as e:
            s.close(0)
            raise OSError(f"cannot connect to broker {self.connect}: {e}") from None
        self.sock = s
        self.endpoint = self.connect
        log.info("worker connected to broker %s", self.connect)
        return self.endpoint

    def _ctl(self, hdr: dict) -> None:
        try:
            self.sock.send_multipart([b"", C.pack(hdr)], zmq.NOBLOCK)
        except zmq.ZMQError as e:
            log.warning("cannot send %s to the broker: %s", hdr.get("op"), e)

    def _on_start(self) -> None:
        self._ctl({"op": C.READY, "pid": os.getpid(), "host": socket.gethostname()})
        self._broker_seen = time.monotonic()

    def _control(self, parts: list[bytes]) -> None:
        self._broker_seen = time.monotonic()
        if len(parts) < 2:
            return
        if parts[1] == C.BUNDLE:              # several frame messages of one client
            if len(parts) >= 5 and len(parts) % 2:
                peer, handle = parts[2], self._handle
                for i in range(3, len(parts), 2):
                    handle([peer, parts[i], parts[i + 1]])
            return
        hdr = C.unpack(parts[1])
        op = hdr.get("op")
        if op == C.PING and type(hdr.get("peer")) is bytes:
            self._peer_ping[hdr["peer"]] = time.monotonic()
        elif op == C.STOP:
            if not self._stop_requests:
                self.request_stop()

    def _housekeeping(self) -> None:
        super()._housekeeping()
        now = time.monotonic()
        if now < self._next_hb:
            return
        self._next_hb = now + C.HEARTBEAT_S
        silent = now - max(self._broker_seen, self._last_rx)
        if silent > C.LIVENESS_S:
            if self.exit_with_broker:
                log.warning("broker silent for %.1f s: exiting", silent)
                self._stop_requests = 2
                return
            self._on_start()                   # a restarted broker learns of this worker
        self._ctl({"op": C.HB, "stats": self.stats()})

    def _op_open(self, peer: bytes, hdr: dict) -> None:
        try:
            super()._op_open(peer, hdr)
        except P.ProtocolError as e:          # refused: the broker may forget the pin
            sid = hdr.get("id")
            if e.code != P.STREAM_EXISTS and type(sid) is int:
                self._on_removed((peer, sid))
            raise

    def _on_removed(self, key: tuple[bytes, int]) -> None:
        self._gone_keys.append([key[0], key[1]])

    def _flush(self) -> None:
        super()._flush()
        if self._gone_keys:
            keys, self._gone_keys = self._gone_keys, []
            for i in range(0, len(keys), 4096):
                self._ctl({"op": C.GONE, "s": keys[i:i + 4096]})

    def _say_goodbye(self) -> None:
        super()._say_goodbye()
        self._flush()
        self._ctl({"op": C.BYE})
