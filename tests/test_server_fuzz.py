"""Malformed and hostile messages: each is answered with an error naming the problem, and the
server keeps serving a well-behaved stream bit-exactly."""

from __future__ import annotations


import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nvmstream as nvm
from nvmstream.runtime import protocol as P
from nvmstream.runtime.client import Client
from nvmstream.runtime.frontend import FrontendParams
from server_util import RawClient, ServerProcess, compile_fixture, frame_msg

MAX_MSG = 65536


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return compile_fixture("lstm1_bf.ts.onnx", tmp_path_factory.mktemp("m") / "lstm1.nvm",
                           frontend=FrontendParams(n_mels=12).to_dict())


@pytest.fixture(scope="module")
def server(model):
    with ServerProcess(model, "--profile", "ideal", "--max-message-bytes", str(MAX_MSG),
                       "--max-streams", "2000") as s:
        yield s


class GoodStream:
    """A well-behaved stream on its own socket, checked against the in-process engine."""

    def __init__(self, endpoint, model):
        self.client = Client(endpoint, timeout_s=20)
        self.remote = self.client.open(seed=99)
        self.ref = nvm.Engine(nvm.load(model), nvm.Device("ideal")).stream(seed=99)
        self.rng = np.random.default_rng(0)

    def check(self):
        x = self.rng.standard_normal(12).astype(np.float32)
        np.testing.assert_array_equal(self.remote.step(x), self.ref.step(x))


@pytest.fixture(scope="module")
def good(server, model):
    g = GoodStream(server.endpoint, model)
    yield g
    g.client.close()


def _err(rc, hdr, *payload, timeout_s=10.0):
    rc.send(hdr, *payload)
    h, _ = rc.recv(timeout_s)
    assert h["op"] == "error", h
    return h


# ----------------------------------------------------------------------- deterministic cases
def test_each_bad_message_gets_its_error(server, good):
    x = np.zeros((1, 12), "<f4").tobytes()
    with RawClient(server.endpoint) as rc:
        assert rc.request({"v": 1, "op": "open", "id": 1})[0]["op"] == "open"
        cases = [
            ([b"\xc1"], "bad_message"),                               # not msgpack
            ([msgpack.packb([1, 2])], "bad_message"),                 # not a map
            ([msgpack.packb({1: 2})], "bad_message"),                 # non-string key
            ([msgpack.packb({"v": 1, "op": "ping"}) + b"\x00"], "bad_message"),  # trailing
            ([b"\x81" + b"\x00" * 9000], "bad_message"),              # header too big
            ([P.pack({"v": 1, "op": "ping"}), b"", b""], "bad_message"),  # 3 frames
            ([P.pack({"op": "ping"})], "bad_version"),
            ([P.pack({"v": 2, "op": "ping"})], "bad_version"),
            ([P.pack({"v": True, "op": "ping"})], "bad_version"),
            ([P.pack({"v": 1, "op": "fly"})], "unknown_op"),
            ([P.pack({"v": 1})], "unknown_op"),
            ([P.pack({"v": 1, "op": "ping"}), b"x"], "bad_message"),  # payload on ping
            ([P.pack({"v": 1, "op": "frame", "id": 1, "seq": 0})], "bad_message"),  # no payload
            # (an error found after the seq check uses up the seq: 1 is next)
            ([P.pack({"v": 1, "op": "frame", "id": 1, "seq": 2, "dtype": "<f4",
                      "shape": [1, 12]}), x], "out_of_order"),
            ([P.pack({"v": 1, "op": "frame", "id": 1, "seq": 1, "dtype": "<f8",
                      "shape": [1, 12]}), x], "bad_payload"),         # wrong dtype
            ([P.pack({"v": 1, "op": "frame", "id": 1, "seq": 0, "dtype": "<f4",
                      "shape": [1, 12]}), x], "duplicate"),
            ([P.pack({"v": 1, "op": "frame", "id": 1, "seq": 2, "dtype": "<f4",
                      "shape": [1, 11]}), x], "bad_payload"),         # wrong shape
            ([P.pack({"v": 1, "op": "frame", "id": 1, "seq": 3, "dtype": "<f4",
                      "shape": [2, 12]}), x], "bad_payload"),         # size mismatch
            ([P.pack({"v": 1, "op": "frame", "id": 1, "seq": 4, "dtype": "<f4",
                      "shape": [2 ** 31 - 1, 12]}), x], "too_large"),  # huge shape
            ([P.pack({"v": 1, "op": "frame", "id": 1, "seq": 5, "dtype": "<f4",
                      "shape": [1, 12]}), np.full((1, 12), np.nan, "<f4").tobytes()],
             "bad_payload"),                                          # NaN
            ([P.pack({"v": 1, "op": "frame", "id": 1, "seq": 6, "dtype": "<f4",
                      "shape": "1,12"}), x], "bad_field"),
            ([P.pack({"v": 1, "op": "frame", "id": 1, "seq": -1, "dtype": "<f4",
                      "shape": [1, 12]}), x], "bad_field"),
            ([P.pack({"v": 1, "op": "frame", "id": 1, "seq": 2 ** 64 - 1, "dtype": "<f4",
                      "shape": [1, 12]}), x], "bad_field"),
            ([P.pack({"v": 1, "op": "frame", "id": 1, "seq": 1.0, "dtype": "<f4",
                      "shape": [1, 12]}), x], "bad_field"),
            ([P.pack({"v": 1, "op": "frame", "id": 7, "seq": 0, "dtype": "<f4",
                      "shape": [1, 12]}), x], "unknown_stream"),
            ([P.pack({"v": 1, "op": "frame", "id": 2 ** 40, "seq": 0})], "bad_field"),
            ([P.pack({"v": 1, "op": "open", "id": 1})], "stream_exists"),
            ([P.pack({"v": 1, "op": "open", "id": 2, "kind": "video"})], "bad_field"),
            ([P.pack({"v": 1, "op": "open", "id": 2, "profile": "../devices/profiles/pcm"})],
             "bad_profile"),
            ([P.pack({"v": 1, "op": "open", "id": 2, "profile": 5})], "bad_field"),
            ([P.pack({"v": 1, "op": "open", "id": 2, "overrides": "adc.bits=4"})], "bad_field"),
            ([P.pack({"v": 1, "op": "open", "id": 2, "overrides": ["x" * 1000]})], "bad_field"),
            ([P.pack({"v": 1, "op": "open", "id": 2, "seed": -1})], "bad_field"),
            ([P.pack({"v": 1, "op": "open", "id": 2, "votes": 17})], "bad_field"),
            ([P.pack({"v": 1, "op": "open"})], "bad_field"),
            ([P.pack({"v": 1, "op": "close", "id": 9})], "unknown_stream"),
            ([P.pack({"v": 1, "op": "ping", "id": 9})], "unknown_stream"),
            ([P.pack({"v": 1, "op": "batch", "r": []})], "bad_field"),
            ([P.pack({"v": 1, "op": "batch", "r": [{}] * 2000})], "too_large"),
        ]
        for parts, code in cases:
            rc.send_parts(parts)
            h, _ = rc.recv()
            assert (h["op"], h.get("code")) == ("error", code), (parts[0][:60], h)
            assert h["msg"]
        # the stream used seqs 0..6 (an error after the seq check consumes it); 7 is next
        h, p = rc.request(*frame_msg(1, 7, np.ones(12)))
        assert h["op"] == "frame" and h["f0"] == 0
        # a batch whose payload does not match its items: every item answered
        items = [{"op": "frame", "id": 1, "seq": 8, "dtype": "<f4", "shape": [1, 12]},
                 {"op": "frame", "id": 1, "seq": 9, "dtype": "<f4", "shape": [1, 12]}]
        rc.send({"v": 1, "op": "batch", "r": items}, x)
        assert [h["code"] for h, _ in rc.recv_n(2)] == ["bad_payload", "bad_payload"]
        rc.send({"v": 1, "op": "batch", "r": [items[0] | {"seq": 10}, {"op": "ping"}, 5]},
                x)
        hs = [h for h, _ in rc.recv_n(3)]
        assert [h["op"] for h in hs] == ["error"] * 3, hs   # sizes of items 2, 3 unknown
        rc.send({"v": 1, "op": "batch", "r": [items[0] | {"seq": 11}, {"op": "ping"}]}, x)
        assert sorted(h.get("code", h["op"]) for h, _ in rc.recv_n(2)) == ["bad_payload",
                                                                           "unknown_op"]
        # close, then frames for the closed stream
        h, _ = rc.request({"v": 1, "op": "close", "id": 1, "rid": 5})
        assert h["op"] == "close" and h["rid"] == 5 and h["frames"] == 1
        h = _err(rc, *frame_msg(1, 12, np.ones(12)))
        assert h["code"] == "unknown_stream" and "closed" in h["msg"]
    good.check()


def test_message_above_max_size_is_dropped_with_the_connection(server, good):
    with RawClient(server.endpoint) as rc:
        assert rc.request({"v": 1, "op": "ping"})[0]["op"] == "ping"
        rc.send({"v": 1, "op": "frame", "id": 0, "seq": 0, "dtype": "<f4",
                 "shape": [MAX_MSG, 12]}, b"\x00" * (MAX_MSG * 4))
        with pytest.raises(TimeoutError):      # ZeroMQ closes the connection: no reply
            rc.recv(1.0)
    good.check()
    with RawClient(server.endpoint) as rc:
        assert rc.request({"v": 1, "op": "ping"})[0]["op"] == "ping"


def test_audio_stream_errors(server, good):
    with RawClient(server.endpoint) as rc:
        assert rc.request({"v": 1, "op": "open", "id": 3, "kind": "audio"})[0]["op"] == "open"
        pcm = np.zeros(250, "<i2").tobytes()
        seq = 0
        for hdr, code in [({"dtype": "<f4", "shape": [125]}, "bad_payload"),
                          ({"dtype": "<i2", "shape": [250, 1]}, "bad_payload"),
                          ({"dtype": "<i2", "shape": [251]}, "bad_payload"),
                          ({"dtype": "<i2", "shape": [10 ** 7]}, "too_large")]:
            h = _err(rc, {"v": 1, "op": "frame", "id": 3, "seq": seq, **hdr}, pcm)
            seq += 1
            assert h["code"] == code, (hdr, h)
        h, p = rc.request({"v": 1, "op": "frame", "id": 3, "seq": seq, "dtype": "<i2",
                           "shape": [250]}, pcm)
        assert h["op"] == "frame" and h["n"] == 0 and h["shape"] == [0, 4] and p == b""
    good.check()


# ------------------------------------------------------------------------------ property
# Messages are mostly *nearly* valid so that the fuzzing reaches deep into the checks. Streams
# 0, 1 (features) and 2, 3 (audio) of the fuzzing socket stay open for the whole test; the
# test tracks their next sequence number exactly (`SeqModel`), so `Rel(k)` means "expected
# + k". Fuzzed opens and closes use ids 4..7.
class Rel:
    def __init__(self, k):
        self.k = k

    def __repr__(self):
        return f"Rel({self.k})"


AUTO, MISSING = "<auto>", "<missing>"
FEATURE_IDS, AUDIO_IDS, FREE_IDS = (0, 1), (2, 3), (4, 5, 6, 7)

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 63, 2 ** 64 - 1),
                     st.floats(allow_nan=True), st.text(max_size=12), st.binary(max_size=12))
_junk = st.recursive(_scalars, lambda ch: st.lists(ch, max_size=4)
                     | st.dictionaries(st.one_of(st.text(max_size=4), st.integers(0, 3)), ch,
                                       max_size=3), max_leaves=6)


def _weighted(*pairs):
    """One of several strategies with the given integer weights."""
    total = sum(w for w, _ in pairs)

    def pick(k):
        for w, strat in pairs:
            if k < w:
                return strat
            k -= w
        return pairs[-1][1]
    return st.integers(0, total - 1).flatmap(pick)


def _mostly(valid, p_junk=1, p_missing=1, weight=12):
    """``valid`` most of the time, sometimes junk, sometimes left out."""
    return _weighted((weight, valid), (p_junk, _junk), (p_missing, st.just(MISSING)))


_seq = _mostly(_weighted((10, st.just(Rel(0))), (3, st.sampled_from([Rel(-1), Rel(1), Rel(2)])),
                         (1, st.integers(-1, 2 ** 64 - 1))), weight=16)
_frame_item = st.fixed_dictionaries({
    "op": _weighted((20, st.just("frame")), (1, st.just("ping")), (1, _junk)),
    "id": _mostly(_weighted((8, st.sampled_from(FEATURE_IDS + AUDIO_IDS)),
                            (1, st.integers(4, 9)), (1, st.integers(-1, 2 ** 33))), weight=20),
    "seq": _seq,
    "dtype": _mostly(_weighted((12, st.just(AUTO)), (1, st.sampled_from(
        ["<f4", "<i2", ">f4", "<f8", "f4", "float32"]))), weight=20),
    "shape": _mostly(_weighted((12, st.just(AUTO)), (1, st.lists(st.integers(-3, 2 ** 40),
                                                                  max_size=3))), weight=20),
    "n": st.integers(0, 3),
    "payload": _weighted((16, st.just(AUTO)), (1, st.just(b"")), (1, st.binary(max_size=120)),
                         (1, st.sampled_from(["nan", "short", "long"]))),
})


@st.composite
def _messages(draw):
    kind = draw(st.sampled_from(["frame"] * 10 + ["batch"] * 3 + ["open"] * 2 +
                                ["close", "ping", "info", "stats", "junk", "weird"]))
    v = draw(_mostly(st.just(1), weight=30))
    if kind == "junk":
        return ("raw", draw(st.lists(st.binary(max_size=40), min_size=1, max_size=4)))
    if kind == "weird":               # any header at all
        hdr = draw(st.dictionaries(st.sampled_from(["v", "op", "id", "seq", "r", "dtype",
                                                    "shape", "kind", "zz"]), _junk,
                                   max_size=5))
        return ("hdr", hdr, draw(st.one_of(st.none(), st.binary(max_size=60))))
    if kind == "frame":
        return ("frame", v, draw(_frame_item), draw(st.sampled_from([None] * 12 + ["extra"])))
    if kind == "batch":
        items = draw(st.lists(_frame_item, min_size=0, max_size=4))
        return ("batch", v, items, draw(st.sampled_from([None] * 12 + ["extra", "cut"])))
    hdr = {"v": v, "op": kind, "rid": draw(_mostly(st.integers(0, 10 ** 6)))}
    if kind in ("open", "close", "ping"):
        hdr["id"] = draw(_mostly(st.sampled_from(FREE_IDS) if kind != "ping" else
                                 st.sampled_from(FREE_IDS + FEATURE_IDS),
                                 p_missing=1 if kind != "ping" else 4))
    if kind == "open":
        hdr["kind"] = draw(_mostly(st.sampled_from(["features", "audio", "video"])))
        hdr["profile"] = draw(_mostly(st.sampled_from(["ideal", "int4", "nope", "/etc/passwd",
                                                       "../x"]), p_missing=4))
        hdr["overrides"] = draw(_mostly(st.lists(st.sampled_from(
            ["adc.bits=6", "adc.bits=x", "q", "a.b=1", "dac.bits=5"]), max_size=2), p_missing=4))
        hdr["seed"] = draw(_mostly(st.integers(-2, 2 ** 64 - 1), p_missing=3))
        hdr["votes"] = draw(_mostly(st.integers(-1, 20), p_missing=5))
    return ("hdr", hdr, draw(_weighted((8, st.none()), (1, st.binary(max_size=30)))))


class SeqModel:
    """Next expected seq of streams 0..3 on the fuzzing socket (mirrors the server's rule:
    a frame request uses its seq when id and seq are valid ints, the stream is open and seq
    is the expected one, whatever happens to the request afterwards)."""

    def __init__(self):
        self.next = {i: 0 for i in FEATURE_IDS + AUDIO_IDS}

    def resolve(self, item):
        """A frame item -> (header dict, payload bytes)."""
        sid = item["id"]
        hdr = {"op": item["op"]}
        if sid is not MISSING:
            hdr["id"] = sid
        seq = item["seq"]
        if isinstance(seq, Rel):
            base = self.next.get(sid, 0) if type(sid) is int else 0
            seq = max(0, base + seq.k)
        if seq is not MISSING:
            hdr["seq"] = seq
        audio = type(sid) is int and sid in AUDIO_IDS
        n = item["n"] * (160 if audio else 1)
        if item["dtype"] is not MISSING:
            hdr["dtype"] = ("<i2" if audio else "<f4") if item["dtype"] == AUTO else item["dtype"]
        if item["shape"] is not MISSING:
            hdr["shape"] = ([n] if audio else [n, 12]) if item["shape"] == AUTO else item["shape"]
        pay = item["payload"]
        good = (np.arange(n, dtype="<i2") if audio else
                np.linspace(-1, 1, n * 12, dtype="<f4")).tobytes()
        if pay == AUTO:
            pay = good
        elif pay == "nan":
            pay = np.full(max(1, n) * 12, np.nan, "<f4").tobytes()
        elif pay == "short":
            pay = good[:-1]
        elif pay == "long":
            pay = good + b"\x00\x00"
        return hdr, pay

    def consume(self, hdr):
        sid, seq = hdr.get("id"), hdr.get("seq")
        if type(sid) is int and type(seq) is int and sid in self.next and seq == self.next[sid]:
            self.next[sid] += 1

    def account(self, parts) -> int:
        """Replies the server owes for ``parts``; updates the tracked seqs like the server
        (a frame with a readable header uses its seq even when it has extra parts)."""
        try:
            hdr = P.unpack_header(parts[0])
        except P.ProtocolError:
            return 1
        v = hdr.get("v")
        if not (v == 1 and type(v) is int):
            return 1
        if hdr.get("op") == "frame":
            self.consume(hdr)
            return 1
        if len(parts) not in (1, 2):
            return 1
        elif hdr.get("op") == "batch":
            r = hdr.get("r")
            if type(r) is list and 1 <= len(r) <= P.MAX_BATCH_ITEMS:
                for it in r:
                    if type(it) is dict and it.get("op") == "frame":
                        self.consume(it)
                return len(r)
        return 1

    def build(self, msg):
        """A drawn message -> (parts to send, replies expected)."""
        parts = self._parts(msg)
        return parts, self.account(parts)

    def _parts(self, msg):
        tag = msg[0]
        if tag == "raw":
            return msg[1]
        if tag == "hdr":
            hdr, pay = msg[1], msg[2]
            raw = _pack({k: v for k, v in hdr.items() if v is not MISSING})
            return [raw] if pay is None else [raw, pay]
        v = msg[1]
        if tag == "frame":
            hdr, pay = self.resolve(msg[2])
            if v is not MISSING:
                hdr["v"] = v
            return [_pack(hdr), pay] + ([b"x"] if msg[3] == "extra" else [])
        items, pays = [], []
        for it in msg[2]:
            h, p = self.resolve(it)
            items.append(h)
            pays.append(p)
        hdr = {"op": "batch", "r": items}
        if v is not MISSING:
            hdr["v"] = v
        payload = b"".join(pays)
        if msg[3] == "cut":
            payload = payload[:-3]
        return [_pack(hdr), payload] + ([b"x"] if msg[3] == "extra" else [])


def _pack(hdr):
    try:
        return P.pack(hdr)
    except (TypeError, ValueError, OverflowError):
        return msgpack.packb(repr(hdr))


@pytest.fixture(scope="module")
def fuzz_client(server):
    rc = RawClient(server.endpoint)
    for sid in FEATURE_IDS + AUDIO_IDS:
        h, _ = rc.request({"v": 1, "op": "open", "id": sid,
                           "kind": "audio" if sid in AUDIO_IDS else "features"})
        assert h["op"] == "open"
    rc.model = SeqModel()
    rc.sent = rc.answered = 0
    yield rc
    rc.close()


def test_fuzzed_messages_each_answered(server, good, fuzz_client):
    """Thousands of fuzzed messages in small groups: after each group, exactly the expected
    number of replies (one per message, one per item of a well-formed batch), every error
    with a known code, and the well-behaved stream still exact."""
    rc = fuzz_client

    @settings(max_examples=700, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(msgs=st.lists(_messages(), min_size=1, max_size=24))
    def group(msgs):
        want = 0
        for m in msgs:
            parts, n = rc.model.build(m)
            rc.send_parts(parts)
            want += n
        marker = 10 ** 12 + rc.sent
        rc.sent += len(msgs)
        rc.send({"v": 1, "op": "ping", "rid": marker})
        got, seen_marker = [], False
        while not (seen_marker and len(got) >= want):
            h, _ = rc.recv(5.0)
            if h.get("op") == "ping" and h.get("rid") == marker:
                seen_marker = True
            else:
                got.append(h)
        assert len(got) == want, (msgs, got)
        rc.answered += want
        assert all(h["op"] in P.OPS for h in got)
        for h in got:
            if h["op"] == "error":
                assert h["code"] in P.ERROR_CODES and isinstance(h["msg"], str)
        good.check()

    group()
    # the tracked streams are exactly where the model says: their next seq is accepted
    for sid in FEATURE_IDS:
        h, _ = rc.request(*frame_msg(sid, rc.model.next[sid], np.ones(12)))
        assert h["op"] == "frame", h
    good.check()
    stats = good.client.stats()
    assert stats["errors"].get("internal", 0) == 0, stats["errors"]
    assert rc.answered > 2500 and len(stats["errors"]) >= 10, (rc.answered, stats["errors"])
    assert server.proc.poll() is None


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(sid=st.integers(-2 ** 40, 2 ** 40), extra=st.dictionaries(
    st.sampled_from(["seq", "dtype", "shape", "rid", "x"]),
    st.one_of(st.integers(-2 ** 63, 2 ** 64 - 1), st.text(max_size=5), st.none()), max_size=5),
    order=st.permutations(range(3)), cut=st.integers(0, 40))
def test_frame_stream_id_reads_canonical_headers_only(sid, extra, order, cut):
    """The broker's routing read: the id of a header that starts ``v: 1, op: frame, id`` (an
    id of 32 bits), else None; never an id the decoded header does not hold."""
    first = [("v", 1), ("op", "frame"), ("id", sid)]
    hdr = dict([first[i] for i in order] + list(extra.items()))
    raw = P.pack(hdr)
    got = P.frame_stream_id(raw)
    canonical = list(order) == [0, 1, 2] and 0 <= sid <= P.MAX_STREAM_ID
    assert got == (sid if canonical else None)
    assert P.frame_stream_id(raw[:cut]) in (None, sid if canonical else None)
