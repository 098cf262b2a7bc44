"""Broker <-> worker control messages (not part of the client protocol).

Between the broker's back ROUTER and a worker's DEALER every message is
``[client identity, header, (payload)]`` -- a client's request on its way in, a reply on its
way out, exactly what a ROUTER would see -- or a **control** message ``[b"", header]`` (an empty
identity: ROUTER identities are never empty). Control headers are msgpack maps:

worker -> broker
  ``ready``  ``{op, pid, host}``: hello (sent at start and again when the broker went silent)
  ``hb``     ``{op, stats}``: heartbeat every :data:`HEARTBEAT_S`, with the worker's ``stats``
  ``gone``   ``{op, s: [[client, id], ...]}``: streams that ended (closed, evicted, failed open)
  ``bye``    ``{op}``: the worker drained and exits
broker -> worker
  ``bundle`` ``[b"", BUNDLE, client identity, header, payload, header, payload, ...]``: several
             one-frame messages of one client, each handled exactly as if it had come alone
             (the marker is not a msgpack map, so no control header can be mistaken for it)
  ``hb``     ``{op}``: heartbeat
  ``ping``   ``{op, peer}``: the client pinged without an id: refresh all its streams
  ``stop``   ``{op}``: drain (answer queued frames, refuse new work) and exit
"""

from __future__ import annotations

import msgpack

HEARTBEAT_S = 1.0
"""Both sides send a heartbeat this often."""
LIVENESS_S = 5.0
"""A side silent this long is taken for dead: the broker tells the clients of a dead worker's
streams; a worker says ``ready`` again (a restarted broker learns of it)."""

READY, HB, GONE, BYE, PING, STOP = "ready", "hb", "gone", "bye", "ping", "stop"
BUNDLE = b"\x00bundle"
"""Second frame of a ``bundle`` (a msgpack map never starts with a zero byte)."""


def pack(hdr: dict) -> bytes:
    return msgpack.packb(hdr, use_bin_type=True)


def unpack(raw: bytes) -> dict:
    """A control header; anything malformed becomes ``{}`` (ignored by both sides)."""
    try:
        hdr = msgpack.unpackb(raw, raw=False, max_bin_len=1 << 24, max_str_len=1 << 24,
                              max_array_len=1 << 20, max_map_len=1 << 16, strict_map_key=False)
    except Exception:
        return {}
    return hdr if type(hdr) is dict else {}
