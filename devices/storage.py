"""Weight storage with raw bit errors, binary encodings and weight nulling (arXiv 1709.06173).

The b-bit weight codes live in NVM storage without ECC; they are read once when the device is
programmed. Each stored bit flips independently with probability ``ber``. What a flip does to
the value depends on the encoding; ``detection = "nulling"`` zeroes any code that decodes
outside the legal range [-qmax, qmax], qmax = 2^(b-1) - 1.

Encodings of a code c in [-qmax, qmax] as a b-bit word, and the words that decode out of range
(the only out-of-range value any b-bit decoder can produce is -2^(b-1)):

=================  ==========================================  =============================
encoding           word                                        out-of-range words
=================  ==========================================  =============================
twos_complement    c mod 2^b                                   1 0...0  (decodes to -2^(b-1))
offset_binary      c + 2^(b-1)  (excess-2^(b-1))               0 0...0  (decodes to -2^(b-1))
sign_magnitude     sign bit (MSB, 1 = negative) then |c|        none (1 0...0 is -0 -> 0)
gray               gray(c + 2^(b-1)), gray(n) = n xor (n >> 1)  0 0...0  (decodes to -2^(b-1))
=================  ==========================================  =============================
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
    "NoDetection",
    "Nulling",
    "StorageReadResult",
    "BitErrorStorage",
    "flip_bits",
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

    def encode(self, codes: np.ndarray) -> np.ndarray:
        """Words (uint16) for codes in [-qmax, qmax]; codes outside raise ValueError."""
        c = np.asarray(codes).astype(np.int32)
        if c.size and (c.min() < -self.qmax or c.max() > self.qmax):
            raise ValueError(f"codes outside [-{self.qmax}, {self.qmax}] cannot be stored")
        return self._encode(c).astype(np.uint16)

    def decode(self, words: np.ndarray) -> np.ndarray:
        """Codes (int32) for b-bit words."""
        return self._decode(np.asarray(words).astype(np.int32) & self.mask).astype(np.int32)

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
    ber), then K distinct bit positions uniformly at random. Returns (new words, K).
    """
    w = np.array(words, dtype=np.uint16, copy=True)
    nbits = w.size * bits
    if ber <= 0 or nbits == 0:
        return w, 0
    k = int(rng.binomial(nbits, ber))
    if k == 0:
        return w, 0
    pos = rng.choice(nbits, size=k, replace=False)
    flat = w.reshape(-1)
    np.bitwise_xor.at(flat, pos // bits, (1 << (pos % bits)).astype(np.uint16))
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


class BitErrorStorage:
    """Storage read with raw bit errors: encode -> flip bits (ber) -> decode -> detection."""

    def __init__(self, bits: int, ber: float, encoding: str = "twos_complement",
                 detection: str = "none") -> None:
        if not 0.0 <= ber <= 0.5:
            raise ValueError(f"ber must be in [0, 0.5], got {ber}")
        self.bits = int(bits)
        self.ber = float(ber)
        self.encoding = ENCODINGS.get(encoding)(self.bits)
        self.detection = DETECTIONS.get(detection)()
        self.qmax = self.encoding.qmax

    def read(self, codes: np.ndarray, rng: np.random.Generator) -> StorageReadResult:
        """Store ``codes`` and read them back once, with bit errors; returns codes as int8."""
        codes = np.asarray(codes)
        words = self.encoding.encode(codes)
        words, nflip = flip_bits(words, self.bits, self.ber, rng)
        if nflip == 0:
            out = codes.astype(np.int8, copy=True)
            return StorageReadResult(out, 0, 0, 0, 0)
        dec = self.encoding.decode(words)
        oor = int(np.count_nonzero((dec < -self.qmax) | (dec > self.qmax)))
        dec, nnull = self.detection.apply(dec, self.qmax)
        out = dec.astype(np.int8)
        changed = int(np.count_nonzero(out != codes))
        return StorageReadResult(out, nflip, nnull, changed, oor)
