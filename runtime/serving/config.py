"""Server configuration and the clients' ROUTER socket (limits, CURVE), shared by the
single-process server and the broker."""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

import zmq

log = logging.getLogger("nvmstream.runtime.server")

__all__ = ["ServerConfig", "is_loopback", "router_socket"]


@dataclass
class ServerConfig:
    """Everything a :class:`Server` needs besides the model. Units in the names."""

    bind: str = "tcp://127.0.0.1:5555"
    """ZeroMQ endpoint to bind; loopback unless told otherwise (``tcp://127.0.0.1:*`` picks a
    free port; :meth:`Server.bind` returns the real endpoint)."""
    profile: str = "ideal"
    """Default device profile (shipped name or .toml path) for streams that do not name one."""
    overrides: tuple[str, ...] = ()
    """Default profile overrides, ``"section.field=value"``."""
    device_seed: int = 0
    """Seed of every Device the server programs (programming noise, faults, drift)."""
    votes: int = 1
    """Default votes (noisy replicas) per stream."""
    extra_profiles: Mapping[str, str] = field(default_factory=dict)
    """Profile files clients may name besides the shipped profiles: name -> .toml path. Clients
    can only name profiles; they never give the server a path."""
    max_streams: int = 4096
    """Open streams over all clients; an ``open`` beyond it gets ``too_many_streams``."""
    max_queued_frames: int = 65536
    """Frames received but not yet stepped, over all streams; beyond it ``busy``."""
    max_queue_ms: float = 250.0
    """Admission bound in time: a message is answered ``busy`` when the queued frames would
    take longer than this to step (estimated from measured step times per frame)."""
    max_batch: int = 512
    """Most streams stepped in one engine call."""
    batch_window_us: int = 0
    """Extra time to wait for a fuller batch once a frame is ready (0: step at once; batches
    still fill by themselves under load)."""
    max_frames_per_message: int = 1024
    """Most feature frames in one ``frame`` message."""
    max_audio_samples: int = 160000
    """Most int16 samples in one audio ``frame`` message (10 s at 16 kHz)."""
    max_message_bytes: int = 4 * 1024 * 1024
    """ZMQ_MAXMSGSIZE: a peer sending a bigger message part is disconnected by ZeroMQ."""
    idle_timeout_s: float = 60.0
    """A stream with nothing queued and no message (or peer ping) for this long is evicted and
    its client sent an ``evicted`` notice."""
    max_votes: int = 16
    """Largest ``votes`` a client may ask for."""
    max_engines: int = 8
    """Device configurations (profile, overrides, votes) held at once: configurations without
    streams are dropped (least recently used first) to make room; when all have streams an
    ``open`` needing another one is answered ``too_many_devices``."""
    curve_secret_file: str | None = None
    """Server certificate with its secret key (``zmq.auth`` format): switches CURVE on."""
    curve_allow_dir: str | None = None
    """Folder of client public-key certificates allowed in (needs ``curve_secret_file``)."""
    drain_quiet_s: float = 0.2
    """Shutdown: after the queue is empty, keep answering until no message came for this
    long ..."""
    drain_max_s: float = 5.0
    """... or this long since the signal, whichever is first."""
    sndhwm: int = 1000
    """Reply messages queued per client (ZMQ_SNDHWM) before the server drops further replies
    to it (counted in ``dropped_replies``): a client that does not read costs the server at
    most this many messages of memory."""
    rcvhwm: int = 100000
    """Messages queued per client before ZeroMQ stops reading from it (back pressure)."""
    linger_ms: int = 2000
    """How long unsent replies are kept when the socket closes."""

    def check(self) -> None:
        """Raise ValueError naming the first field out of range."""
        for name, lo in (("max_streams", 1), ("max_queued_frames", 1), ("max_batch", 1),
                         ("max_frames_per_message", 1), ("max_audio_samples", 1),
                         ("max_message_bytes", 1024), ("max_votes", 1), ("max_engines", 1),
                         ("votes", 1), ("batch_window_us", 0), ("device_seed", 0),
                         ("sndhwm", 0), ("rcvhwm", 0), ("linger_ms", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"ServerConfig.{name} must be an integer >= {lo}, got {v!r}")
        for name in ("idle_timeout_s", "drain_quiet_s", "drain_max_s", "max_queue_ms"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"ServerConfig.{name} must be > 0, got {v!r}")
        if self.votes > self.max_votes:
            raise ValueError(f"ServerConfig.votes ({self.votes}) > max_votes ({self.max_votes})")
        if self.curve_allow_dir and not self.curve_secret_file:
            raise ValueError("ServerConfig.curve_allow_dir needs curve_secret_file")


def is_loopback(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// endpoints on a loopback address."""
    if not endpoint.startswith("tcp://"):
        return endpoint.startswith(("ipc://", "inproc://"))
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False          # "*", an interface name or a hostname


def router_socket(ctx: zmq.Context, cfg: ServerConfig, bind: str | None = None
                  ) -> tuple[zmq.Socket, str, Any]:
    """The clients' ROUTER socket of a server or broker: limits (ZMQ_MAXMSGSIZE, send and
    receive high-water marks), CURVE when configured, bound to ``bind`` (default
    ``cfg.bind``). Returns ``(socket, real endpoint, authenticator or None)``."""
    bind = bind or cfg.bind
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.ROUTER_MANDATORY, 1)
    s.setsockopt(zmq.MAXMSGSIZE, cfg.max_message_bytes)
    s.setsockopt(zmq.SNDHWM, cfg.sndhwm)
    s.setsockopt(zmq.RCVHWM, cfg.rcvhwm)
    s.setsockopt(zmq.LINGER, cfg.linger_ms)
    auth = None
    try:
        if cfg.curve_secret_file:
            auth = _setup_curve(ctx, cfg, s)
        elif not is_loopback(bind):
            log.warning("binding %s without CURVE: anyone who can reach it can use the "
                        "server and read its traffic", bind)
        s.bind(bind)
    except zmq.ZMQError as e:
        s.close(0)
        if auth is not None:
            auth.stop()
        raise OSError(f"cannot bind {bind}: {e}") from None
    except OSError:
        s.close(0)
        raise
    endpoint = s.getsockopt_string(zmq.LAST_ENDPOINT)
    log.info("listening on %s", endpoint)
    return s, endpoint, auth


def _setup_curve(ctx: zmq.Context, cfg: ServerConfig, s: zmq.Socket):
    import zmq.auth
    from zmq.auth.thread import ThreadAuthenticator

    if not zmq.has("curve"):
        raise OSError("this libzmq has no CURVE support")
    try:
        pub, sec = zmq.auth.load_certificate(cfg.curve_secret_file)
    except (OSError, ValueError) as e:
        raise OSError(f"{cfg.curve_secret_file}: cannot read the server certificate: {e}") \
            from None
    if not sec:
        raise OSError(f"{cfg.curve_secret_file}: holds no secret key (give the "
                      f"'.key_secret' file)")
    if cfg.curve_allow_dir and not os.path.isdir(cfg.curve_allow_dir):
        raise OSError(f"{cfg.curve_allow_dir}: no such folder of client certificates")
    auth = ThreadAuthenticator(ctx, log=logging.getLogger(__name__ + ".auth"))
    auth.start()
    if cfg.curve_allow_dir:
        auth.configure_curve(domain="*", location=cfg.curve_allow_dir)
    else:
        log.warning("CURVE without an allowlist: traffic is encrypted but any client that "
                    "knows the server key gets in")
        auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
    s.curve_secretkey = sec
    s.curve_publickey = pub
    s.curve_server = True
    return auth
