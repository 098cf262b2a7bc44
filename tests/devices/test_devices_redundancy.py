"""Storage redundancy (arXiv 1709.06173 on int4): parity, guard bits, the unary representation,
offset binary == two's complement under flips, storage bits per code. Exhaustive where the
space is small, statistical (seeded, stated tolerance) otherwise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nvmstream.devices import BitErrorStorage, Device, ENCODINGS, load_profile
from nvmstream.devices.storage import bits_per_code

BITS = [2, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("bits", BITS)
def test_offset_binary_is_twos_complement_under_every_flip_pattern(bits):
    tc, ob = ENCODINGS.get("twos_complement")(bits), ENCODINGS.get("offset_binary")(bits)
    q = 2 ** (bits - 1) - 1
    c = np.arange(-q, q + 1)
    for e in range(2 ** bits):
        e64 = np.uint64(e)
        np.testing.assert_array_equal(ob.decode(ob.encode(c) ^ e64), tc.decode(tc.encode(c) ^ e64))


def _single_flips(st: BitErrorStorage, codes: np.ndarray):
    """Yield (flat code index or -1 for a parity bit, detected mask, decoded) for every single
    stored-bit flip of ``codes``, data, guard and parity bits alike."""
    words = st.store(codes)
    par = st.parity_bits(words)
    flat = words.reshape(-1)
    for i in range(flat.size):
        for b in range(st.word_bits):
            w = flat.copy()
            w[i] ^= np.uint64(1) << np.uint64(b)
            dec, _, det = st.check(w.reshape(words.shape), par)
            yield i, b, det, dec
    if par is not None:
        for g in range(par.size):
            p2 = par.copy()
            p2[g] ^= np.uint64(1)
            dec, _, det = st.check(words, p2)
            yield -1, g, det, dec


@pytest.mark.parametrize("encoding", ["twos_complement", "gray", "sign_magnitude", "unary"])
@pytest.mark.parametrize("group", [1, 3, 8])
def test_parity_detects_every_single_flip_and_flags_exactly_its_group(encoding, group):
    st = BitErrorStorage(4, 0.0, encoding, "nulling", parity_group=group)
    codes = np.arange(-7, 8).reshape(3, 5).astype(np.int8)          # 15 codes, last group partial
    n = 0
    for i, b, det, _ in _single_flips(st, codes):
        g = i // group if i >= 0 else b                 # the group of the flipped bit
        expect = np.zeros(codes.size, bool)
        expect[g * group:(g + 1) * group] = True
        np.testing.assert_array_equal(det.reshape(-1), expect)
        n += 1
    assert n == codes.size * st.word_bits + math.ceil(codes.size / group)


@pytest.mark.parametrize("encoding", ["twos_complement", "gray", "sign_magnitude"])
@pytest.mark.parametrize("bits, g", [(4, 1), (4, 4), (3, 2), (6, 2)])
def test_guard_bits_detect_every_flip_of_the_msb_and_guards(encoding, bits, g):
    # Every single flip of the MSB or a guard bit is detected; a flip of the b-1 low bits is
    # detected iff it decodes out of range. So at least (g+1)/(b+g) of single flips are
    # detectable, exactly that for sign_magnitude (no out-of-range words).
    st = BitErrorStorage(bits, 0.0, encoding, "nulling", guard_bits=g)
    q = 2 ** (bits - 1) - 1
    codes = np.arange(-q, q + 1).astype(np.int8).reshape(1, -1)
    det_count = 0
    for i, b, det, dec in _single_flips(st, codes):
        oor = not -q <= dec.reshape(-1)[i] <= q
        assert bool(det.reshape(-1)[i]) == (b >= bits - 1 or oor)
        assert det.reshape(-1).sum() == det.reshape(-1)[i]          # only the flipped code
        det_count += int(det.reshape(-1)[i])
    frac = det_count / (codes.size * (bits + g))
    assert frac >= (g + 1) / (bits + g)
    if encoding == "sign_magnitude":
        assert frac == pytest.approx((g + 1) / (bits + g))


def test_int4_guard_bits_stated_fraction():
    # int4 two's complement with 4 guard bits (an int4 kept in an int8): 5/8 of single flips hit
    # the MSB or a guard bit and are detected (75 of 15 codes x 8 bits = 120); the low-bit
    # flips that land on the word 1000 = -8 (from -7 = 1001, -6 = 1010, -4 = 1100) add 3:
    # 78/120 = 65% in all.
    st = BitErrorStorage(4, 0.0, "twos_complement", "nulling", guard_bits=4)
    codes = np.arange(-7, 8).astype(np.int8).reshape(1, -1)
    det = sum(int(d.reshape(-1)[i]) for i, b, d, _ in _single_flips(st, codes))
    assert det == 75 + 3
    # without guard bits only the flips that land on -8 are detectable (the same 3, and the MSB
    # of 0): 4/60 = 6.7%
    st0 = BitErrorStorage(4, 0.0, "twos_complement", "nulling")
    assert sum(int(d.reshape(-1)[i]) for i, b, d, _ in _single_flips(st0, codes)) == 4


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6])
def test_unary_every_flip_moves_the_value_by_one_step(bits):
    st = BitErrorStorage(bits, 0.0, "unary", "none")
    q = 2 ** (bits - 1) - 1
    codes = np.arange(-q, q + 1).astype(np.int8).reshape(1, -1)
    assert st.word_bits == 2 * q
    np.testing.assert_array_equal(st.encoding.decode(st.store(codes)), codes)
    for i, b, det, dec in _single_flips(st, codes):
        assert abs(int(dec.reshape(-1)[i]) - int(codes.reshape(-1)[i])) == 1
        assert not det.any()
    with pytest.raises(ValueError, match="unary storage supports 2..6 bits"):
        BitErrorStorage(7, 0.0, "unary")


def test_parity_detection_rate_and_nulling_at_a_ber():
    # 4-bit two's complement, one parity bit per 4 codes (17 stored bits per group), ber 0.01:
    # a group is flagged iff it has an odd number of flips: P = (1 - (1 - 2p)^17) / 2 = 0.1448.
    # 10k groups: binomial sd 0.0035; tolerance 5 sd. Every flagged code is nulled.
    p = 0.01
    st = BitErrorStorage(4, p, "twos_complement", "nulling", parity_group=4)
    codes = np.random.default_rng(0).integers(-7, 8, size=(100, 400)).astype(np.int8)
    res = st.read(codes, np.random.default_rng(1))
    expect = (1 - (1 - 2 * p) ** 17) / 2
    frac = res.codes_detected / codes.size
    assert abs(frac - expect) < 5 * math.sqrt(expect * (1 - expect) / (codes.size / 4))
    assert res.codes_nulled == res.codes_detected


@pytest.mark.parametrize("enc, bits, g, n, expect", [
    ("twos_complement", 4, 0, 0, 4.0), ("twos_complement", 4, 4, 0, 8.0),
    ("gray", 4, 1, 8, 5.125), ("unary", 4, 0, 0, 14.0), ("unary", 3, 0, 2, 6.5),
    ("sign_magnitude", 8, 0, 16, 8.0625)])
def test_storage_bits_per_code(enc, bits, g, n, expect):
    p = load_profile("int4", [f"weights.bits={bits}", f"storage.encoding={enc}",
                              f"storage.guard_bits={g}", f"storage.parity_group={n}"])
    assert p.storage_bits_per_code == expect == bits_per_code(bits, enc, g, n)
    assert BitErrorStorage(bits, 0.0, enc, "none", g, n).bits_per_code == expect
    assert load_profile("ideal").storage_bits_per_code == 32.0


def test_profile_errors_for_impossible_redundancy():
    with pytest.raises(ValueError, match="storage.guard_bits: guard bits protect"):
        load_profile("int4", ["storage.encoding=unary", "storage.guard_bits=2"])
    with pytest.raises(ValueError, match="storage.encoding: 'unary' needs weights.bits <= 6"):
        load_profile("int4", ["storage.encoding=unary", "weights.bits=8"])


def test_device_nulls_detected_codes():
    dev = Device("nand-eol", seed=0, overrides=["storage.ber=0.02", "storage.guard_bits=4",
                                                "storage.detection=nulling"])
    codes = np.random.default_rng(3).integers(-7, 8, size=(64, 64)).astype(np.int8)
    pm = dev.program(codes, "W")
    assert pm.stats["codes_detected"] > 0
    assert pm.stats["codes_nulled"] == pm.stats["codes_detected"]
    assert pm.stats["codes_clipped"] == 0


@pytest.mark.parametrize("enc, g, par, det", [
    ("twos_complement", 0, 0, "none"), ("sign_magnitude", 0, 0, "none"),
    ("twos_complement", 4, 0, "nulling"), ("twos_complement", 0, 1, "nulling"),
    ("unary", 0, 0, "none")])
def test_single_flip_damage_predicts_the_mse_at_small_ber(enc, g, par, det):
    # MSE per code at ber p is p D + O(p^2). Monte Carlo at p = 2e-3 over 400k uniform codes;
    # relative tolerance 12% (the SE is ~4-6% here, the O(p) double-flip term < 2%).
    from nvmstream.devices.storage import single_flip_damage
    st0 = BitErrorStorage(4, 0.0, enc, det, g, par)
    frac, dmg = single_flip_damage(st0)
    p = 2e-3
    codes = np.random.default_rng(0).integers(-7, 8, size=(400, 1000)).astype(np.int8)
    res = BitErrorStorage(4, p, enc, det, g, par).read(codes, np.random.default_rng(1))
    got = np.clip(res.codes.astype(np.int64), -7, 7)
    mse = float(np.mean((got - codes) ** 2))
    assert abs(mse / (p * dmg) - 1) < 0.12
    if enc == "unary":
        assert frac == 0.0 and dmg == pytest.approx(14.0, rel=1e-12)  # 14 bits, each a step of 1
    if par == 1:
        assert frac == pytest.approx(1.0, abs=1e-12)   # parity detects every single flip
