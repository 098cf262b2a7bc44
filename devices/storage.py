"""Weight storage with raw bit errors, encodings, redundancy and weight nulling (arXiv 1709.06173).

The b-bit weight codes live in NVM storage without ECC; they are read once when the device is
programmed. Each stored bit (data, guard and parity bits alike) flips independently with
probability ``ber``. What a flip does depends on the representation; a code is *detected* when
its word decodes outside [-qmax, qmax] (qmax = 2^(b-1) - 1), when its guard bits disagree with
its most significant bit, or when the parity of its group fails; ``detection = "nulling"``
zeroes every detected code.

Encodings of a code c in [-qmax, qmax] (the only out-of-range value a b-bit binary decoder can
produce is -2^(b-1)):

=================  ==========================================  =============================
encoding           word                                        out-of-range words
=================  ==========================================  =============================
twos_complement    c mod 2^b                                   1 0...0  (decodes to -2^(b-1))
offset_binary      c + 2^(b-1)  (excess-2^(b-1))               0 0...0  (decodes to -2^(b-1))
sign_magnitude     sign bit (MSB, 1 = negative) then |c|        none (1 0...0 is -0 -> 0)
gray               gray(c + 2^(b-1)), gray(n) = n xor (n >> 1)  0 0...0  (decodes to -2^(b-1))
unary              2 qmax bits, the low c + qmax of them set    none (every word is legal)
=================  ==========================================  =============================

offset_binary is two's complement with the MSB inverted, so for every code and every flip
pattern e, decode_ob(enc_ob(c) ^ e) == decode_tc(enc_tc(c) ^ e): the two are identical under
bit flips (kept as a name for users who describe their storage format; a sweep should not count
it as a separate point).

Redundancy (each costs stored bits, :func:`bits_per_code`):

* ``guard_bits = g``: g copies of the word's MSB stored above it (for two's complement this is
  sign extension: an int4 kept in a (4+g)-bit integer). A read whose g+1 top bits disagree is
  detected, so every single flip of the MSB or a guard bit, (g+1)/(b+g) of all single flips,
  is detected; flips of the b-1 low bits go undetected unless they decode out of range.
* ``parity_group = n``: one even-parity bit per group of n consecutive codes (row-major) over
  all their stored bits; any odd number of flips in a group (in particular every single flip)
  detects the whole group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nvmstream.devices.registry import Registry

__all__ = [
    "ENCODINGS",
    "DETECTIONS",
    "Encoding",
    "TwosComplement",
    "OffsetBinary",
    "SignMagnitude",
    "Gray",
    "Unary",
    "NoDetection",
    "Nulling",
    "StorageReadResult",
    "BitErrorStorage",
    "flip_bits",
    "bits_per_code",
    "single_flip_damage",
]

ENCODINGS: Registry[type["Encoding"]] = Registry("storage encoding")
DETECTIONS: Registry[type] = Registry("storage detection")


def _qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


class Encoding:
    """A b-bit binary representation of signed codes: ``encode`` and ``decode`` (its inverse).

    ``decode`` maps every b-bit word to an integer in [-2^(b-1), 2^(b-1)-1]; words that decode
    to values outside [-qmax, qmax] are listed by :meth:`out_of_range_words`.
    """

    def __init__(self, bits: int) -> None:
        bits = int(bits)
        if not 2 <= bits <= 8:
            raise ValueError(f"storage needs integer codes of 2..8 bits, got bits={bits}")
        self.bits = bits
        self.qmax = _qmax(bits)
        self.half = 1 << (bits - 1)
        self.mask = (1 << bits) - 1
        #: stored bits per word (b for the binary encodings)
        self.word_bits = bits

    def encode(self, codes: np.ndarray) -> np.ndarray:
        """Words (uint64) for codes in [-qmax, qmax]; codes outside raise ValueError."""
        c = np.asarray(codes).astype(np.int64)
        if c.size and (c.min() < -self.qmax or c.max() > self.qmax):
            raise ValueError(f"codes outside [-{self.qmax}, {self.qmax}] cannot be stored")
        return self._encode(c).astype(np.uint64)

    def decode(self, words: np.ndarray) -> np.ndarray:
        """Codes (int32) for b-bit words."""
        return self._decode(np.asarray(words).astype(np.int64) & self.mask).astype(np.int32)

    def out_of_range_words(self) -> np.ndarray:
        """All b-bit words whose decoded value lies outside [-qmax, qmax] (from decode)."""
        words = np.arange(1 << self.bits)
        dec = self.decode(words)
        return words[(dec < -self.qmax) | (dec > self.qmax)]

    def _encode(self, c: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode(self, w: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


@ENCODINGS.register("twos_complement")
class TwosComplement(Encoding):
    """Two's complement: word = c mod 2^b; the word 10...0 decodes to -2^(b-1) (out of range)."""

    def _encode(self, c):
        return c & self.mask

    def _decode(self, w):
        return np.where(w >= self.half, w - (1 << self.bits), w)


@ENCODINGS.register("offset_binary")
class OffsetBinary(Encoding):
    """Offset (excess-2^(b-1)) binary: word = c + 2^(b-1); the word 0 decodes to -2^(b-1)."""

    def _encode(self, c):
        return c + self.half

    def _decode(self, w):
        return w - self.half


@ENCODINGS.register("sign_magnitude")
class SignMagnitude(Encoding):
    """Sign bit (MSB, 1 = negative) then |c| in b-1 bits; every word decodes in range (-0 = 0)."""

    def _encode(self, c):
        return np.where(c < 0, self.half | (-c), c)

    def _decode(self, w):
        mag = w & (self.half - 1)
        return np.where(w & self.half, -mag, mag)


@ENCODINGS.register("gray")
class Gray(Encoding):
    """Reflected Gray code of the offset-binary word: adjacent codes differ in one bit.

    The word 0 decodes to -2^(b-1) (out of range).
    """

    def _encode(self, c):
        n = c + self.half
        return n ^ (n >> 1)

    def _decode(self, w):
        n = w.copy()
        shift = w >> 1
        while np.any(shift):
            n ^= shift
            shift >>= 1
        return n - self.half


@ENCODINGS.register("unary")
class Unary(Encoding):
    """Unary (thermometer) words of 2 qmax bits: c is stored as c + qmax set bits.

    Every bit has the same significance, so any single flip moves the value by exactly one
    step, whatever bit it hits; the damage of a flip relative to the range, 1/(2 qmax), vanishes
    as the number of stored bits grows, at the price of 2 qmax = 2^b - 2 stored bits per code
    (14 for int4). Every word decodes in range (popcount - qmax). Our adaptation to b-bit codes
    of 1709.06173's alternative representation (devices/README.md says what is and is not
    verified against the paper). b <= 6 (words of at most 62 bits).
    """

    def __init__(self, bits: int) -> None:
        super().__init__(bits)
        if self.bits > 6:
            raise ValueError(f"unary storage supports 2..6 bits (2^b - 2 <= 62 stored bits), "
                             f"got bits={self.bits}")
        self.word_bits = 2 * self.qmax
        self.mask = (1 << self.word_bits) - 1

    def _encode(self, c):
        n = (c + self.qmax).astype(np.uint64)
        return (np.left_shift(np.uint64(1), n) - np.uint64(1)).astype(np.int64)

    def _decode(self, w):
        return _popcount(w) - self.qmax

    def out_of_range_words(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)


def _popcount(w: np.ndarray) -> np.ndarray:
    """Number of set bits of each (non-negative, < 2^63) integer."""
    w = np.asarray(w).astype(np.uint64)
    n = np.zeros(w.shape, dtype=np.int64)
    while np.any(w):
        n += (w & np.uint64(1)).astype(np.int64)
        w = w >> np.uint64(1)
    return n


def bits_per_code(bits: int, encoding: str = "twos_complement", guard_bits: int = 0,
                  parity_group: int = 0) -> float:
    """Stored bits per weight code: word bits (b, or 2^b - 2 for unary) + guard bits
    + 1/parity_group (one parity bit per group; 0 = no parity). 32 for float weights (bits 0)."""
    if not bits:
        return 32.0
    word = 2 * _qmax(bits) if encoding == "unary" else int(bits)
    return float(word + guard_bits) + (1.0 / parity_group if parity_group else 0.0)


@DETECTIONS.register("none")
class NoDetection:
    """Keep every decoded code, including an out-of-range -2^(b-1)."""

    def apply(self, decoded: np.ndarray, qmax: int) -> tuple[np.ndarray, int]:
        return decoded, 0


@DETECTIONS.register("nulling")
class Nulling:
    """Weight nulling (arXiv 1709.06173): a code decoded outside [-qmax, qmax] becomes 0."""

    def apply(self, decoded: np.ndarray, qmax: int) -> tuple[np.ndarray, int]:
        bad = (decoded < -qmax) | (decoded > qmax)
        n = int(np.count_nonzero(bad))
        if n:
            decoded = np.where(bad, 0, decoded)
        return decoded, n


def flip_bits(words: np.ndarray, bits: int, ber: float, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Flip each of the ``bits`` low bits of every word independently with probability ``ber``.

    Sampled exactly as i.i.d. Bernoulli(ber) per bit: the number of flips K ~ Binomial(n bits,
    ber), then K distinct bit positions uniformly at random. Returns (new words as uint64, K).
    """
    w = np.array(words, dtype=np.uint64, copy=True)
    nbits = w.size * bits
    if ber <= 0 or nbits == 0:
        return w, 0
    k = int(rng.binomial(nbits, ber))
    if k == 0:
        return w, 0
    pos = rng.choice(nbits, size=k, replace=False)
    flat = w.reshape(-1)
    np.bitwise_xor.at(flat, pos // bits,
                      np.left_shift(np.uint64(1), (pos % bits).astype(np.uint64)))
    return w, k


@dataclass(frozen=True)
class StorageReadResult:
    """Codes read back from storage and what happened on the way."""

    codes: np.ndarray
    """Codes after decoding and detection (int8, same shape as the input)."""
    bits_flipped: int
    """Number of stored bits that flipped."""
    codes_nulled: int
    """Number of codes zeroed by nulling (decoded out of range)."""
    codes_changed: int
    """Number of codes that differ from the stored ones after decode + detection."""
    codes_out_of_range: int
    """Number of codes that decoded outside [-qmax, qmax] (kept when detection = 'none')."""
    codes_detected: int = 0
    """Number of codes flagged by any check: out of range, guard-bit mismatch, failed parity."""


class BitErrorStorage:
    """Storage read with raw bit errors: encode (+ guard, parity) -> flip bits (ber) -> decode
    -> checks -> detection."""

    def __init__(self, bits: int, ber: float, encoding: str = "twos_complement",
                 detection: str = "none", guard_bits: int = 0, parity_group: int = 0) -> None:
        if not 0.0 <= ber <= 0.5:
            raise ValueError(f"ber must be in [0, 0.5], got {ber}")
        self.bits = int(bits)
        self.ber = float(ber)
        self.encoding = ENCODINGS.get(encoding)(self.bits)
        self.detection = DETECTIONS.get(detection)()
        self.qmax = self.encoding.qmax
        self.guard_bits = int(guard_bits)
        self.parity_group = int(parity_group)
        if self.guard_bits < 0 or self.parity_group < 0:
            raise ValueError("guard_bits and parity_group must be >= 0")
        if self.guard_bits and isinstance(self.encoding, Unary):
            raise ValueError("guard bits protect a binary word's MSB; unary words have none")
        #: stored bits of one code word, guard bits included (parity bits are per group)
        self.word_bits = self.encoding.word_bits + self.guard_bits
        if self.word_bits > 63:
            raise ValueError(f"a stored word of {self.word_bits} bits is too long (<= 63)")
        self.bits_per_code = bits_per_code(self.bits, encoding, self.guard_bits, self.parity_group)

    # -- word layout -------------------------------------------------------------------------
    def store(self, codes: np.ndarray) -> np.ndarray:
        """Stored words (uint64): the encoded word, with g copies of its MSB above it."""
        w = self.encoding.encode(codes)
        if self.guard_bits:
            msb = (w >> np.uint64(self.encoding.word_bits - 1)) & np.uint64(1)
            guard = msb * np.uint64((1 << self.guard_bits) - 1)
            w = w | (guard << np.uint64(self.encoding.word_bits))
        return w

    def guard_ok(self, words: np.ndarray) -> np.ndarray:
        """True where the g guard bits all equal the word's MSB (always True when g = 0)."""
        words = np.asarray(words, dtype=np.uint64)
        if not self.guard_bits:
            return np.ones(words.shape, dtype=bool)
        wb = self.encoding.word_bits
        msb = (words >> np.uint64(wb - 1)) & np.uint64(1)
        guard = (words >> np.uint64(wb)) & np.uint64((1 << self.guard_bits) - 1)
        return guard == msb * np.uint64((1 << self.guard_bits) - 1)

    def _group_parity(self, flat_words: np.ndarray) -> np.ndarray:
        """Even parity of every group of parity_group consecutive words (int8 [groups])."""
        n = self.parity_group
        ngroups = -(-flat_words.size // n)
        par = (_popcount(flat_words) & 1).astype(np.int64)
        padded = np.zeros(ngroups * n, dtype=np.int64)
        padded[:par.size] = par
        return (padded.reshape(ngroups, n).sum(axis=1) & 1).astype(np.uint64)

    def parity_bits(self, words: np.ndarray) -> np.ndarray | None:
        """The stored parity bits of ``words`` (uint64 [groups]); None without parity."""
        if not self.parity_group:
            return None
        return self._group_parity(np.asarray(words, dtype=np.uint64).reshape(-1))

    def check(self, words: np.ndarray,
              parity: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode read-back words and run every check.

        Returns (decoded codes int32, out-of-range mask, detected mask): detected = out of
        range | guard bits disagreeing with the MSB | in a group whose parity fails.
        """
        words = np.asarray(words, dtype=np.uint64)
        dec = self.encoding.decode(words)
        oor = (dec < -self.qmax) | (dec > self.qmax)
        flagged = oor | ~self.guard_ok(words)
        if parity is not None:
            bad = self._group_parity(words.reshape(-1)) != np.asarray(parity, dtype=np.uint64)
            flagged |= np.repeat(bad, self.parity_group)[:words.size].reshape(words.shape)
        return dec, oor, flagged

    # -- read --------------------------------------------------------------------------------
    def read(self, codes: np.ndarray, rng: np.random.Generator) -> StorageReadResult:
        """Store ``codes`` and read them back once, with bit errors; returns codes as int8."""
        codes = np.asarray(codes)
        words = self.store(codes)
        parity = self.parity_bits(words)
        words, nflip = flip_bits(words, self.word_bits, self.ber, rng)
        if parity is not None:
            parity, npflip = flip_bits(parity, 1, self.ber, rng)
            nflip += npflip
        if nflip == 0:
            out = codes.astype(np.int8, copy=True)
            return StorageReadResult(out, 0, 0, 0, 0, 0)
        dec, oor, flagged = self.check(words, parity)
        n_oor = int(np.count_nonzero(oor))
        if isinstance(self.detection, Nulling):
            n_null = int(np.count_nonzero(flagged))
            dec = np.where(flagged, 0, dec)
        else:
            dec, n_null = self.detection.apply(dec, self.qmax)
        out = dec.astype(np.int8)
        changed = int(np.count_nonzero(out != codes))
        return StorageReadResult(out, nflip, n_null, changed, n_oor, int(np.count_nonzero(flagged)))


def single_flip_damage(storage: BitErrorStorage,
                       code_probs: np.ndarray | None = None) -> tuple[float, float]:
    """What one stored-bit flip does, averaged exactly over every stored bit of a code word
    (data, guard and, with parity_group = 1, its parity bit) and over codes c in [-qmax, qmax]
    drawn with ``code_probs`` (uniform by default).

    Returns (fraction of single flips detected, D) with D = sum over the stored bits of the
    squared error (code units^2) that flipping that bit causes after detection (and clipping
    to [-qmax, qmax]): the mean squared weight error per code is ~ ber * D for small ber.
    Parity groups of n > 1 codes are not covered (a flip there nulls n codes).
    """
    if storage.parity_group > 1:
        raise ValueError("single_flip_damage covers parity_group 0 or 1")
    q = storage.qmax
    cs = np.arange(-q, q + 1)
    probs = np.full(cs.size, 1.0 / cs.size) if code_probs is None else np.asarray(code_probs, float)
    if probs.shape != cs.shape or np.any(probs < 0) or not np.isclose(probs.sum(), 1.0):
        raise ValueError(f"code_probs must be {cs.size} probabilities summing to 1")
    codes = cs.astype(np.int8).reshape(1, -1)
    words = storage.store(codes)
    parity = storage.parity_bits(words)
    nulling = isinstance(storage.detection, Nulling)
    det = np.zeros(cs.size)
    err = np.zeros(cs.size)
    nbits = storage.word_bits + (1 if parity is not None else 0)
    for b in range(storage.word_bits):
        dec, _, flagged = storage.check(words ^ (np.uint64(1) << np.uint64(b)), parity)
        dec, flagged = dec.reshape(-1), flagged.reshape(-1)
        val = np.clip(np.where(flagged & nulling, 0, dec), -q, q)
        det += flagged
        err += (val - cs) ** 2
    if parity is not None:       # one parity bit per code: its flip flags the code
        det += 1
        err += (cs ** 2) if nulling else 0
    return float(det @ probs / nbits), float(err @ probs)
