"""The nvmstream wire protocol, version 1 (docs/protocol.md is the specification).

Transport: the server binds a ZeroMQ ROUTER, clients connect DEALERs. Every message is

* ``[header]`` or ``[header, payload]``: the header is a msgpack map with string keys, the
  payload one raw little-endian array buffer described by the header's ``dtype`` and ``shape``.
  (The ROUTER sees the peer identity frame in front; it is not part of the protocol.)

Requests carry ``v`` (protocol version), ``op`` and op-specific fields; replies carry ``v``,
``op`` (the request's op, ``"error"`` for an error, or a notice op) and echo ``id``, ``seq`` and
``rid`` when the request had them. Nothing is ever pickled; every header field is validated
(type, range, size) and a bad one is answered with an ``error`` reply naming the field.

This module holds the constants, the error codes and the header checks shared by the server
(:mod:`nvmstream.runtime.server`) and the client (:mod:`nvmstream.runtime.client`). It does no
I/O.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

__all__ = [
    "VERSION", "OPS", "REQUEST_OPS", "NOTICE_OPS", "KINDS", "DTYPES", "ERROR_CODES",
    "MAX_HEADER_BYTES", "MAX_REPLY_HEADER_BYTES", "MAX_STREAM_ID", "MAX_SEQ", "MAX_RID", "MAX_SEED",
    "ProtocolError", "pack", "unpack_header", "get_int", "get_str", "get_str_list",
    "payload_array", "frame_nbytes", "split_batch", "error_reply", "echo", "frame_reply",
    "encode_replies", "BATCH", "WORKER_LOST", "TOO_MANY_DEVICES", "NO_WORKER",
    "frame_stream_id",
]

VERSION = 1
"""Protocol version: every request carries ``v = VERSION``; the server rejects others."""

# ---------------------------------------------------------------------------------------- ops
OPEN, FRAME, CLOSE, INFO, STATS, PING = "open", "frame", "close", "info", "stats", "ping"
BATCH = "batch"
"""A message holding several requests (frames of several streams) or several replies."""
REQUEST_OPS = (OPEN, FRAME, BATCH, CLOSE, INFO, STATS, PING)
ERROR = "error"
EVICTED = "evicted"        # notice: a stream was evicted (idle timeout); no request answered
SHUTDOWN = "shutdown"      # notice: the server is closing; every stream of this peer is closed
WORKER_LOST = "worker_lost"  # notice: the worker process holding these streams died
NOTICE_OPS = (EVICTED, SHUTDOWN, WORKER_LOST)
OPS = REQUEST_OPS + (ERROR,) + NOTICE_OPS

# ------------------------------------------------------------------------------ input kinds
FEATURES, AUDIO = "features", "audio"
KINDS = (FEATURES, AUDIO)
F32, I16 = "<f4", "<i2"
DTYPES = {FEATURES: F32, AUDIO: I16}
"""Payload dtype of a ``frame`` message per stream kind (little-endian numpy dtype strings)."""

# ------------------------------------------------------------------------------ error codes
BAD_MESSAGE = "bad_message"          # frame count, header not a msgpack map, header too big
BAD_VERSION = "bad_version"          # v missing or not VERSION
BAD_FIELD = "bad_field"              # a header field missing, of the wrong type or out of range
UNKNOWN_OP = "unknown_op"
BAD_PAYLOAD = "bad_payload"          # dtype / shape / byte count / NaN or infinity
TOO_LARGE = "too_large"              # more frames or samples per message than the server allows
UNKNOWN_STREAM = "unknown_stream"    # never opened, closed, closing or evicted
STREAM_EXISTS = "stream_exists"      # open of an id this peer already has open
OUT_OF_ORDER = "out_of_order"        # seq greater than the next expected one (a gap)
DUPLICATE = "duplicate"              # seq already used on this stream
BUSY = "busy"                        # the server's frame queue is full: not queued, resend later
TOO_MANY_STREAMS = "too_many_streams"
TOO_MANY_DEVICES = "too_many_devices"  # every device configuration slot has open streams
NO_WORKER = "no_worker"              # a broker with no live worker to place the stream on
BAD_PROFILE = "bad_profile"          # unknown profile name, bad overrides, votes out of range
NOT_STREAMABLE = "not_streamable"    # the model needs whole sequences (e.g. bidirectional)
NO_FRONTEND = "no_frontend"          # audio stream opened on a model without front end params
SHUTTING_DOWN = "shutting_down"      # the server is draining after SIGINT/SIGTERM
INTERNAL = "internal"                # a server bug; the message says what; the server carries on
ERROR_CODES = (BAD_MESSAGE, BAD_VERSION, BAD_FIELD, UNKNOWN_OP, BAD_PAYLOAD, TOO_LARGE,
               UNKNOWN_STREAM, STREAM_EXISTS, OUT_OF_ORDER, DUPLICATE, BUSY, TOO_MANY_STREAMS,
               TOO_MANY_DEVICES, NO_WORKER, BAD_PROFILE, NOT_STREAMABLE, NO_FRONTEND, SHUTTING_DOWN, INTERNAL)

# ----------------------------------------------------------------------------------- limits
MAX_HEADER_BYTES = 131072
"""Largest header frame the server unpacks (a ``batch`` of 1024 frame requests is ~45 kB)."""
MAX_REPLY_HEADER_BYTES = 64 * 1024 * 1024
"""Largest reply header a client unpacks (a ``batch`` of up to MAX_BATCH_ITEMS replies)."""
MAX_STREAM_ID = 2 ** 32 - 1
MAX_SEQ = 2 ** 63 - 1
MAX_RID = 2 ** 63 - 1
MAX_SEED = 2 ** 63 - 1
MAX_NAME_CHARS = 256          # profile names, override strings
MAX_OVERRIDES = 64
MAX_BATCH_ITEMS = 1024
"""Most replies (or requests) in one ``batch`` message."""


class ProtocolError(Exception):
    """A request the server rejects: ``code`` (one of :data:`ERROR_CODES`) and a message."""

    def __init__(self, code: str, msg: str):
        super().__init__(msg)
        self.code = code
        self.msg = msg


# ---------------------------------------------------------------------------- encode/decode
_packer = msgpack.Packer(use_bin_type=True)


def pack(header: dict[str, Any]) -> bytes:
    """A header map -> msgpack bytes (str keys, ints, floats, str, lists, None, bools)."""
    return _packer.pack(header)


_unpackb = msgpack.unpackb


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def unpack_header(raw: bytes, max_bytes: int = MAX_HEADER_BYTES) -> dict[str, Any]:
    """Header bytes -> dict; raises :class:`ProtocolError` (``bad_message``) for anything that
    is not one msgpack map with string keys of at most ``max_bytes`` bytes (requests: at most
    :data:`MAX_HEADER_BYTES`; clients pass :data:`MAX_REPLY_HEADER_BYTES` for replies, whose
    ``batch`` headers are bigger)."""
    if len(raw) > max_bytes:
        raise ProtocolError(BAD_MESSAGE, f"header is {len(raw)} bytes; at most "
                                         f"{max_bytes} allowed")
    try:
        # msgpack >= 1.0 defaults: str keys only (strict_map_key), str as str, lists, and
        # every length bounded by len(raw) (<= max_bytes); passing those again costs ~40% of
        # a small header's decode time
        hdr = _unpackb(raw, ext_hook=_no_ext, max_ext_len=0)
    except Exception as e:  # msgpack raises several types (ExtraData, ValueError, ...)
        raise ProtocolError(BAD_MESSAGE, f"header is not valid msgpack: "
                                         f"{type(e).__name__}: {e}"[:300]) from None
    if type(hdr) is not dict:
        raise ProtocolError(BAD_MESSAGE, f"header must be a msgpack map, got "
                                         f"{type(hdr).__name__}")
    for k in hdr:
        if type(k) is not str:
            raise ProtocolError(BAD_MESSAGE, f"header keys must be strings, got "
                                             f"{type(k).__name__} {k!r}"[:200])
    return hdr


_FRAME_PREFIX = b"\xa1v\x01\xa2op\xa5frame\xa2id"
"""msgpack of ``"v": 1, "op": "frame", "id"``: the first keys of a canonical frame request."""
_UINT_BYTES = {0xcc: 1, 0xcd: 2, 0xce: 4}


def frame_stream_id(raw: bytes) -> int | None:
    """The stream id of a ``frame`` request header that starts in the canonical key order --
    a map of at most 15 entries whose first three are ``v: 1``, ``op: "frame"``, ``id`` (an
    unsigned integer of at most 32 bits), as the Python client writes them -- read from its
    first 17-21 bytes without decoding the rest; None for anything else, which must then be
    decoded. (A broker routes on it; the worker decodes and checks the whole header.)"""
    if len(raw) < 17 or not 0x80 <= raw[0] <= 0x8f or raw[1:16] != _FRAME_PREFIX:
        return None
    b = raw[16]
    if b < 0x80:                              # positive fixint
        return b
    n = _UINT_BYTES.get(b)                    # uint 8 / 16 / 32
    if n is None or len(raw) < 17 + n:
        return None
    return int.from_bytes(raw[17:17 + n], "big")


# ---------------------------------------------------------------------------- field checks
def get_int(hdr: dict, key: str, lo: int, hi: int, default: Any = ...) -> Any:
    """``hdr[key]`` as an int in ``[lo, hi]``; a missing key returns ``default`` (or is an
    error when no default is given). Booleans are not ints here."""
    v = hdr.get(key, ...)
    if v is ...:
        if default is ...:
            raise ProtocolError(BAD_FIELD, f"header field {key!r} is missing")
        return default
    if v is None and default is not ...:
        return default
    if type(v) is not int:
        raise ProtocolError(BAD_FIELD, f"header field {key!r} must be an integer, got "
                                       f"{type(v).__name__}")
    if not lo <= v <= hi:
        raise ProtocolError(BAD_FIELD, f"header field {key!r} = {v} is out of range "
                                       f"[{lo}, {hi}]")
    return v


def get_str(hdr: dict, key: str, choices: tuple[str, ...] | None = None,
            default: Any = ..., max_chars: int = MAX_NAME_CHARS) -> Any:
    """``hdr[key]`` as a str (optionally one of ``choices``); see :func:`get_int`."""
    v = hdr.get(key, ...)
    if v is ...:
        if default is ...:
            raise ProtocolError(BAD_FIELD, f"header field {key!r} is missing")
        return default
    if v is None and default is not ...:
        return default
    if type(v) is not str:
        raise ProtocolError(BAD_FIELD, f"header field {key!r} must be a string, got "
                                       f"{type(v).__name__}")
    if len(v) > max_chars:
        raise ProtocolError(BAD_FIELD, f"header field {key!r} is longer than {max_chars} "
                                       f"characters")
    if choices is not None and v not in choices:
        raise ProtocolError(BAD_FIELD, f"header field {key!r} = {v!r}; expected one of "
                                       f"{', '.join(choices)}")
    return v


def get_str_list(hdr: dict, key: str, max_items: int = MAX_OVERRIDES) -> list[str]:
    """``hdr[key]`` as a list of short strings (missing or None: empty list)."""
    v = hdr.get(key)
    if v is None:
        return []
    if type(v) is not list:
        raise ProtocolError(BAD_FIELD, f"header field {key!r} must be a list of strings, got "
                                       f"{type(v).__name__}")
    if len(v) > max_items:
        raise ProtocolError(BAD_FIELD, f"header field {key!r} has {len(v)} items; at most "
                                       f"{max_items}")
    for s in v:
        if type(s) is not str or len(s) > MAX_NAME_CHARS:
            raise ProtocolError(BAD_FIELD, f"header field {key!r} must hold strings of at "
                                           f"most {MAX_NAME_CHARS} characters")
    return v


_ITEMSIZE = {F32: 4, I16: 2}


def _check_dtype_shape(hdr: dict) -> str:
    """``bad_field`` when ``dtype`` is missing or not a string or ``shape`` is missing or not a
    list of integers (a well-typed value that does not fit the stream is ``bad_payload``)."""
    dt = hdr.get("dtype")
    if type(dt) is not str:
        raise ProtocolError(BAD_FIELD, "header field 'dtype' is missing" if dt is None else
                            f"header field 'dtype' must be a string, got {type(dt).__name__}")
    shape = hdr.get("shape")
    if type(shape) is not list or not all(type(d) is int for d in shape):
        raise ProtocolError(BAD_FIELD, "header field 'shape' is missing" if shape is None else
                            f"header field 'shape' must be a list of integers, got "
                            f"{shape!r}"[:200])
    return dt


def frame_nbytes(hdr: Any) -> int:
    """Payload bytes a frame request's ``dtype`` and ``shape`` declare (no stream checks)."""
    if type(hdr) is dict:                     # the common case first: one float32 frame row
        shape = hdr.get("shape")
        if (type(shape) is list and len(shape) == 2 and hdr.get("dtype") == F32
                and type(shape[0]) is int and type(shape[1]) is int
                and 0 <= shape[0] < 2 ** 31 and 0 <= shape[1] < 2 ** 31):
            return 4 * shape[0] * shape[1]
    if type(hdr) is not dict:
        raise ProtocolError(BAD_FIELD, "request is not a map")
    dt = _check_dtype_shape(hdr)
    size = _ITEMSIZE.get(dt)
    if size is None:
        raise ProtocolError(BAD_PAYLOAD, f"dtype {dt!r}: expected one of "
                                         f"{', '.join(_ITEMSIZE)}"[:200])
    shape = hdr["shape"]
    if not 1 <= len(shape) <= 2 or not all(0 <= d < 2 ** 31 for d in shape):
        raise ProtocolError(BAD_PAYLOAD, f"shape must be a list of 1 or 2 non-negative "
                                         f"integers, got {shape!r}"[:200])
    for d in shape:
        size *= d
    return size


def payload_array(hdr: dict, payload: bytes, kind: str, features: int, max_rows: int
                  ) -> np.ndarray:
    """Check a ``frame`` message's ``dtype``/``shape`` against the stream and the payload size
    and return a read-only numpy view of the payload (no copy).

    features streams: dtype ``<f4``, shape ``[n, features]`` with ``1 <= n <= max_rows``, all
    finite. audio streams: dtype ``<i2``, shape ``[n]`` with ``0 <= n <= max_rows`` samples.
    """
    want = DTYPES[kind]
    dt = _check_dtype_shape(hdr)
    if dt != want:
        raise ProtocolError(BAD_PAYLOAD, f"dtype {dt!r}: a {kind} stream takes {want!r}"[:200])
    shape = hdr["shape"]
    if kind == FEATURES:
        if len(shape) != 2 or shape[1] != features:
            raise ProtocolError(BAD_PAYLOAD, f"shape {shape}: a features stream takes "
                                             f"[frames, {features}]"[:200])
        lo = 1
    else:
        if len(shape) != 1:
            raise ProtocolError(BAD_PAYLOAD, f"shape {shape}: an audio stream takes [samples]"
                                [:200])
        lo = 0
    n = shape[0]
    if n < lo:
        raise ProtocolError(BAD_PAYLOAD, f"shape {shape}: needs at least {lo} rows")
    if n > max_rows:
        raise ProtocolError(TOO_LARGE, f"shape {shape}: at most {max_rows} "
                                       f"{'frames' if kind == FEATURES else 'samples'} per "
                                       f"message")
    nbytes = n * (features if kind == FEATURES else 1) * (4 if kind == FEATURES else 2)
    if len(payload) != nbytes:
        raise ProtocolError(BAD_PAYLOAD, f"payload is {len(payload)} bytes; dtype {want} shape "
                                         f"{shape} needs {nbytes}")
    x = np.frombuffer(payload, dtype=want)
    if kind == FEATURES:
        x = x.reshape(n, features)
        if not np.isfinite(x).all():
            raise ProtocolError(BAD_PAYLOAD, "frames contain NaN or infinity")
    return x


def split_batch(hdr: dict, payload: bytes | memoryview | None) -> list[tuple[dict, Any]]:
    """A reply message -> ``[(header, payload bytes or None), ...]``: one item for a plain
    reply, one per entry of a ``batch`` (whose payload is the items' payloads back to back;
    an item has a payload exactly when it has ``shape``)."""
    if hdr.get("op") != BATCH:
        return [(hdr, payload)]
    buf = memoryview(payload if payload is not None else b"")
    out = []
    off = 0
    for h in hdr.get("r") or ():
        if type(h) is dict and "shape" in h:
            n = frame_nbytes(h if "dtype" in h else dict(h, dtype=F32))
            out.append((h, buf[off:off + n]))
            off += n
        else:
            out.append((h, None))
    if off != len(buf):
        raise ProtocolError(BAD_PAYLOAD, f"batch reply payload is {len(buf)} bytes; its items "
                                         f"need {off}")
    return out


# ---------------------------------------------------------------------------- reply builders
def error_reply(code: str, msg: str, req: dict | None = None) -> dict[str, Any]:
    """An ``error`` reply header: ``code``, ``msg``, the request's ``op`` as ``req`` and its
    integer ``id``, ``seq``, ``rid`` echoed."""
    hdr: dict[str, Any] = {"op": ERROR, "code": code, "msg": msg}
    if req is not None:
        if type(req.get("op")) is str:
            hdr["req"] = req["op"][:32]
        echo(req, hdr)
    return hdr


def echo(req: dict, hdr: dict) -> dict:
    """Copy the request's integer ``id``, ``seq`` and ``rid`` into a reply header."""
    for k in ("id", "seq", "rid"):
        v = req.get(k)
        if type(v) is int and k not in hdr:
            hdr[k] = v
    return hdr


def frame_reply(sid: int, seq: int, f0: int, n: int, width: int, cls: list[int],
                lat_ns: float | None, e_pJ: float | None, srv_us: int,
                rid: int | None = None) -> dict[str, Any]:
    """A ``frame`` reply header (its payload: float32 ``[n, width]``)."""
    hdr = {"op": FRAME, "id": sid, "seq": seq, "f0": f0, "n": n, "dtype": F32,
           "shape": [n, width], "cls": cls, "lat_ns": lat_ns, "e_pJ": e_pJ, "srv_us": srv_us}
    if rid is not None:
        hdr["rid"] = rid
    return hdr


def encode_replies(hdrs: list[dict], payloads: list) -> tuple[bytes, Any]:
    """Replies for one peer -> ``(header bytes, payload or None)``: the reply itself when
    there is one, else one ``batch`` message (payloads of the items with ``shape`` back to
    back). Sets ``v`` on the top-level header."""
    if len(hdrs) == 1:
        h = hdrs[0]
        h["v"] = VERSION
        return pack(h), (payloads[0] if "shape" in h else None)
    return pack({"v": VERSION, "op": BATCH, "r": hdrs}), b"".join(payloads)
