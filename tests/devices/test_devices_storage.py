"""Weight storage: encodings (exhaustive), bit-flip rates (binomial bounds), nulling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nvmstream.devices import DETECTIONS, ENCODINGS, BitErrorStorage
from nvmstream.devices.registry import UnknownMechanismError
from nvmstream.devices.storage import flip_bits

ENC = ["twos_complement", "offset_binary", "sign_magnitude", "gray"]
BITS = [2, 3, 4, 5, 6, 7, 8]


def documented_out_of_range(encoding: str, bits: int) -> list[int]:
    """The words the module docstring says decode outside [-qmax, qmax]."""
    return {
        "twos_complement": [1 << (bits - 1)],
        "offset_binary": [0],
        "gray": [0],
        "sign_magnitude": [],
    }[encoding]


def popcount(a: np.ndarray) -> int:
    a = np.asarray(a, dtype=np.uint64)
    return int(sum(((a >> np.uint64(i)) & np.uint64(1)).sum() for i in range(16)))


def test_registries_list_names_on_error():
    assert set(ENCODINGS.names()) == set(ENC) | {"unary"}
    with pytest.raises(UnknownMechanismError, match="twos_complement, offset_binary"):
        ENCODINGS.get("ebcdic")
    with pytest.raises(UnknownMechanismError, match="nulling"):
        DETECTIONS.get("ecc")


@pytest.mark.parametrize("encoding", ENC)
@pytest.mark.parametrize("bits", BITS)
def test_encoding_exhaustive(encoding, bits):
    enc = ENCODINGS.get(encoding)(bits)
    q = 2 ** (bits - 1) - 1
    legal = np.arange(-q, q + 1)
    words = enc.encode(legal)
    # words are b-bit, distinct, and decode back to the codes
    assert words.max() < 2 ** bits and len(np.unique(words)) == len(legal)
    np.testing.assert_array_equal(enc.decode(words), legal)
    # every b-bit word decodes into [-2^(b-1), 2^(b-1)-1]; out-of-range ones are as documented
    all_words = np.arange(2 ** bits)
    dec = enc.decode(all_words)
    assert dec.min() >= -(2 ** (bits - 1)) and dec.max() <= q
    assert enc.out_of_range_words().tolist() == documented_out_of_range(encoding, bits)
    oor = (dec < -q) | (dec > q)
    # nulling zeroes exactly the out-of-range words and leaves every other decoded value alone
    nulled, n = DETECTIONS.get("nulling")().apply(dec, q)
    assert n == int(oor.sum())
    np.testing.assert_array_equal(nulled[oor], 0)
    np.testing.assert_array_equal(nulled[~oor], dec[~oor])
    kept, n0 = DETECTIONS.get("none")().apply(dec, q)
    assert n0 == 0
    np.testing.assert_array_equal(kept, dec)
    with pytest.raises(ValueError, match="cannot be stored"):
        enc.encode(np.array([q + 1]))


@pytest.mark.parametrize("bits", BITS)
def test_gray_adjacent_codes_differ_in_one_bit(bits):
    enc = ENCODINGS.get("gray")(bits)
    q = 2 ** (bits - 1) - 1
    w = enc.encode(np.arange(-q, q + 1)).astype(np.int64)
    assert all(popcount(np.array([a ^ b])) == 1 for a, b in zip(w[:-1], w[1:]))


def test_flip_bits_rate_and_positions(rng):
    # n = 4 bits x 250k words = 1e6 bits at ber = 2e-3: K ~ Binomial(1e6, 2e-3), mean 2000,
    # sd 44.7. Bound: 5 sd. Each of the 4 bit positions: mean 500, sd 22.4, bound 5 sd.
    bits, n, ber = 4, 250_000, 2e-3
    words = rng.integers(0, 16, size=n).astype(np.uint16)
    out, k = flip_bits(words, bits, ber, rng)
    diff = (out ^ words).astype(np.uint16)
    assert popcount(diff) == k
    mean, sd = n * bits * ber, math.sqrt(n * bits * ber * (1 - ber))
    assert abs(k - mean) < 5 * sd
    for i in range(bits):
        ki = int(((diff >> i) & 1).sum())
        m_i, s_i = n * ber, math.sqrt(n * ber * (1 - ber))
        assert abs(ki - m_i) < 5 * s_i
    assert int((diff >> bits).sum()) == 0  # only the low b bits are stored


@pytest.mark.parametrize("encoding", ENC)
def test_storage_read_bit_error_rate_per_encoding(encoding, rng):
    # 200k 4-bit codes = 800k stored bits at ber = 1e-3: reported flips ~ Binomial(8e5, 1e-3),
    # mean 800, sd 28.3; bound 5 sd.
    bits, n, ber = 4, 200_000, 1e-3
    st = BitErrorStorage(bits, ber, encoding, "none")
    codes = rng.integers(-7, 8, size=(400, 500)).astype(np.int8)
    res = st.read(codes, rng)
    mean, sd = n * bits * ber, math.sqrt(n * bits * ber * (1 - ber))
    assert abs(res.bits_flipped - mean) < 5 * sd
    assert res.codes.dtype == np.int8 and res.codes.shape == codes.shape
    assert res.codes_changed == int((res.codes != codes).sum())
    enc = st.encoding
    dec_q = 2 ** (bits - 1) - 1
    assert res.codes_out_of_range == int(((res.codes < -dec_q) | (res.codes > dec_q)).sum())
    if encoding != "sign_magnitude":
        # these decoders are bijections on b-bit words: re-encoding the read codes recovers the
        # flipped words, so the Hamming distance to the stored words is exactly the flip count
        stored = enc._encode(codes.astype(np.int32))
        read = enc._encode(res.codes.astype(np.int32)) & enc.mask
        assert popcount(stored ^ read) == res.bits_flipped


@pytest.mark.parametrize("encoding", ["twos_complement", "offset_binary", "gray"])
def test_nulling_zeroes_out_of_range_codes(encoding, rng):
    codes = rng.integers(-7, 8, size=(300, 300)).astype(np.int8)
    raw = BitErrorStorage(4, 0.05, encoding, "none").read(codes, np.random.default_rng(7))
    nul = BitErrorStorage(4, 0.05, encoding, "nulling").read(codes, np.random.default_rng(7))
    bad = raw.codes == -8
    assert raw.codes_out_of_range == int(bad.sum()) > 0
    assert nul.codes_nulled == int(bad.sum()) and nul.codes_out_of_range == raw.codes_out_of_range
    np.testing.assert_array_equal(nul.codes[bad], 0)
    np.testing.assert_array_equal(nul.codes[~bad], raw.codes[~bad])
    assert nul.codes.min() >= -7


def test_sign_magnitude_never_out_of_range(rng):
    codes = rng.integers(-7, 8, size=(200, 200)).astype(np.int8)
    res = BitErrorStorage(4, 0.2, "sign_magnitude", "nulling").read(codes, rng)
    assert res.codes_out_of_range == 0 and res.codes_nulled == 0 and res.bits_flipped > 0
    assert res.codes.min() >= -7 and res.codes.max() <= 7


def test_ber_half_makes_words_uniform(rng):
    # at ber = 0.5 every stored word is uniform over the 16 words, so offset-binary decoded
    # values are uniform over [-8, 7]: expected 12500 each of 200k, sd 108; bound 5 sd.
    codes = np.zeros((400, 500), np.int8)
    res = BitErrorStorage(4, 0.5, "offset_binary", "none").read(codes, rng)
    counts = np.bincount(res.codes.astype(int).ravel() + 8, minlength=16)
    exp = codes.size / 16
    assert np.all(np.abs(counts - exp) < 5 * math.sqrt(exp * (15 / 16)))


def test_zero_ber_reads_back_exactly(rng):
    codes = rng.integers(-7, 8, size=(50, 50)).astype(np.int8)
    res = BitErrorStorage(4, 0.0, "gray", "nulling").read(codes, rng)
    np.testing.assert_array_equal(res.codes, codes)
    assert (res.bits_flipped, res.codes_nulled, res.codes_changed) == (0, 0, 0)


def test_code_minus_2_pow_b_is_clipped_to_the_reachable_range():
    # detection 'none' keeps a word that decodes to -8 (4-bit two's complement); a device cannot
    # program a cell above gmax, so that code is programmed as -7 (counted in codes_clipped).
    from nvmstream.devices import Device
    dev = Device("int4", seed=1, overrides=["storage.ber=0.2", "storage.detection=none"])
    codes = np.zeros((64, 64), np.int8)
    pm = dev.program(codes, "W")
    raw = BitErrorStorage(4, 0.2, "twos_complement", "none").read(codes, dev._rng("storage", "W"))
    n8 = int(np.count_nonzero(raw.codes == -8))
    assert n8 > 0                                     # P(word 1000 from 0000) = 0.2 * 0.8^3
    assert pm.stats["codes_out_of_range"] == n8 == pm.stats["codes_clipped"]
    np.testing.assert_array_equal(pm.codes_read, np.clip(raw.codes, -7, 7))
    assert pm.codes_read.min() >= -7
    np.testing.assert_allclose(pm.w_eff[raw.codes == -8], -7.0)    # ideal array: exactly -7
    assert float(max(pm.g_pos.max(), pm.g_neg.max())) <= dev.profile.mapping.gmax_uS
    # with nulling the same words become 0 and nothing needs clipping
    nul = Device("int4", seed=1, overrides=["storage.ber=0.2", "storage.detection=nulling"])
    pn = nul.program(codes, "W")
    assert pn.stats["codes_clipped"] == 0 and pn.stats["codes_nulled"] == n8
    assert np.all(pn.codes_read[raw.codes == -8] == 0)
