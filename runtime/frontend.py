"""Audio front end: 16 kHz int16 PCM -> log-mel or MFCC feature frames (numpy only).

The same parameters (:class:`FrontendParams`) describe the features a speech model was trained on;
they are stored, as a JSON-serialisable dict (:meth:`FrontendParams.to_dict`), in compiled model
files and ONNX metadata, so a server can turn raw audio into exactly the features the model expects.

Pipeline for one frame (``win_length`` samples starting at sample ``j * hop_length``):

1. int16 -> float64 in [-1, 1): ``x = pcm / 32768``.
2. Pre-emphasis ``y[n] = x[n] - a * x[n-1]`` with ``x[-1] = 0`` (the signal starts from silence);
   ``a = preemphasis``, 0 switches it off. Each frame uses the sample just before it, so no state
   but the raw samples is needed and a stream can be cut anywhere. (With the periodic Hann window,
   whose first value is 0, that predecessor happens to have no effect; with Hamming or rect it
   does.)
3. Multiply by a *periodic* window of ``win_length`` samples (``hann``, ``hamming`` or ``rect``),
   zero-pad at the end to ``n_fft`` samples (the frame is not centred).
4. Power spectrum ``|rfft|^2`` (``n_fft // 2 + 1`` bins, unnormalised: no division by ``n_fft``).
5. Mel filterbank: ``n_mels`` triangles with peak 1 (no area normalisation), equally spaced on the
   **HTK mel scale** ``mel(f) = 2595 log10(1 + f / 700)`` between ``fmin_hz`` and ``fmax_hz``,
   evaluated at the FFT bin centre frequencies ``k * sample_rate_hz / n_fft``.
6. ``log(max(mel_energy, log_floor))`` (natural log).
7. For ``kind="mfcc"``: DCT-II with orthonormal scaling over the ``n_mels`` log energies, the first
   ``n_mfcc`` coefficients kept (no liftering).
8. Optional per-feature normalisation ``(f - feature_mean) / feature_std``.

Framing has **no padding** at either end: a signal of ``n`` samples gives
``1 + (n - win_length) // hop_length`` frames when ``n >= win_length`` and 0 frames otherwise;
samples after the last full frame are not used. This is what a stream can do without waiting for
the future, so :func:`offline_features` and :class:`StreamingFrontend` agree exactly (bit for bit):
both run every frame through the same per-frame function (``_FrameComputer.frame``), so no
batched BLAS/FFT path with a different summation order can make them diverge.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import wave
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FrontendParams",
    "StreamingFrontend",
    "context_frames",
    "WavFormatError",
    "dct_matrix",
    "hz_to_mel",
    "mel_filterbank",
    "mel_to_hz",
    "offline_features",
    "power_spectrum",
    "read_wav",
    "load_audio",
    "wav_features",
    "window",
    "write_wav",
]

log = logging.getLogger(__name__)

_KINDS = ("logmel", "mfcc", "raw")
#: the fields a "raw" front end uses; every other field must keep its default
_RAW_FIELDS = ("sample_rate_hz", "win_length", "hop_length", "kind")
_WINDOWS = ("hann", "hamming", "rect")
_PCM_SCALE = 32768.0  # int16 full scale: pcm / 32768 lies in [-1, 1)


class WavFormatError(ValueError):
    """A WAV file that the front end cannot use (not 16-bit, not mono, wrong rate, not a WAV)."""


@dataclass(frozen=True)
class FrontendParams:
    """Parameters of the log-mel / MFCC / raw-PCM front end. Every field has one meaning and
    one unit.

    ``kind="raw"`` feeds the samples themselves (a frame model such as silero-vad): frame ``j``
    holds the ``win_length`` samples ending at sample ``(j + 1) * hop_length``, scaled to
    ``pcm / 32768``; the ``win_length - hop_length`` samples of context before the signal are
    zeros (silero-vad: 512 new samples + 64 of context = 576 per call). It uses only
    sample_rate_hz, win_length and hop_length; the spectral fields must keep their defaults.
    """

    sample_rate_hz: int = 16000
    """Sample rate of the int16 PCM input, in Hz."""
    win_length: int = 400
    """Frame (analysis window) length in samples (400 = 25 ms at 16 kHz)."""
    hop_length: int = 160
    """Frame shift in samples (160 = 10 ms at 16 kHz)."""
    n_fft: int = 512
    """FFT size in samples, >= win_length; the windowed frame is zero-padded at its end."""
    n_mels: int = 40
    """Number of triangular mel filters (HTK mel scale, peak 1)."""
    fmin_hz: float = 20.0
    """Lower edge of the lowest mel filter, in Hz."""
    fmax_hz: float | None = 8000.0
    """Upper edge of the highest mel filter, in Hz; None means sample_rate_hz / 2."""
    preemphasis: float = 0.97
    """Pre-emphasis coefficient a in y[n] = x[n] - a x[n-1] (x[-1] = 0); 0 switches it off."""
    window: str = "hann"
    """Analysis window: "hann", "hamming" (both periodic) or "rect"."""
    log_floor: float = 1e-6
    """Mel energies are clamped to at least this before the natural log (silence -> log(1e-6))."""
    kind: str = "logmel"
    """"logmel": n_mels log mel energies per frame; "mfcc": n_mfcc DCT-II (ortho) coefficients;
    "raw": the win_length samples themselves (pcm / 32768), hop_length of them new per frame."""
    n_mfcc: int = 13
    """Number of cepstral coefficients kept when kind == "mfcc" (ignored for "logmel")."""
    feature_mean: tuple[float, ...] | None = None
    """Optional per-feature mean subtracted from each frame (length n_features)."""
    feature_std: tuple[float, ...] | None = None
    """Optional per-feature standard deviation each frame is divided by (length n_features, > 0)."""

    def __post_init__(self) -> None:
        # Normalise sequences to tuples of floats (so the dataclass stays hashable and comparable).
        for name in ("feature_mean", "feature_std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _float_tuple(name, value))
        self._validate()

    # -- validation -------------------------------------------------------------------------------
    def _validate(self) -> None:
        _check_int("sample_rate_hz", self.sample_rate_hz, minimum=1)
        _check_int("win_length", self.win_length, minimum=1)
        _check_int("hop_length", self.hop_length, minimum=1)
        if self.kind == "raw":
            self._validate_raw()
            return
        _check_int("n_fft", self.n_fft, minimum=2)
        _check_int("n_mels", self.n_mels, minimum=1)
        _check_int("n_mfcc", self.n_mfcc, minimum=1)
        if self.n_fft < self.win_length:
            raise ValueError(
                f"FrontendParams.n_fft ({self.n_fft}) must be >= win_length ({self.win_length})"
            )
        nyquist = self.sample_rate_hz / 2.0
        _check_float("fmin_hz", self.fmin_hz, minimum=0.0)
        if self.fmax_hz is not None:
            _check_float("fmax_hz", self.fmax_hz, minimum=0.0)
            if self.fmax_hz > nyquist:
                raise ValueError(
                    f"FrontendParams.fmax_hz ({self.fmax_hz}) must be <= sample_rate_hz / 2 "
                    f"({nyquist})"
                )
        if self.fmin_hz >= self.upper_hz:
            raise ValueError(
                f"FrontendParams.fmin_hz ({self.fmin_hz}) must be < fmax_hz ({self.upper_hz})"
            )
        _check_float("preemphasis", self.preemphasis, minimum=0.0)
        if self.preemphasis >= 1.0:
            raise ValueError(
                f"FrontendParams.preemphasis must be in [0, 1), got {self.preemphasis}"
            )
        _check_float("log_floor", self.log_floor, minimum=0.0)
        if self.log_floor <= 0.0:
            raise ValueError(f"FrontendParams.log_floor must be > 0, got {self.log_floor}")
        if self.window not in _WINDOWS:
            raise ValueError(
                f"FrontendParams.window must be one of {', '.join(_WINDOWS)}; got {self.window!r}"
            )
        if self.kind not in _KINDS:
            raise ValueError(
                f"FrontendParams.kind must be one of {', '.join(_KINDS)}; got {self.kind!r}"
            )
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError(
                f"FrontendParams.n_mfcc ({self.n_mfcc}) must be <= n_mels ({self.n_mels})"
            )
        for name in ("feature_mean", "feature_std"):
            value = getattr(self, name)
            if value is None:
                continue
            if len(value) != self.n_features:
                raise ValueError(
                    f"FrontendParams.{name} has {len(value)} values but the front end makes "
                    f"{self.n_features} features per frame (kind={self.kind!r})"
                )
            if not all(math.isfinite(v) for v in value):
                raise ValueError(f"FrontendParams.{name} must be finite")
        if self.feature_std is not None and min(self.feature_std) <= 0.0:
            raise ValueError("FrontendParams.feature_std must be > 0 for every feature")
        # An empty mel filter would give a constant log_floor feature: almost surely a mistake.
        empty = np.flatnonzero(mel_filterbank(self).max(axis=0) <= 0.0)
        if empty.size:
            raise ValueError(
                f"FrontendParams.n_mels ({self.n_mels}) is too large for n_fft ({self.n_fft}) "
                f"between fmin_hz={self.fmin_hz} and fmax_hz={self.upper_hz}: mel filters "
                f"{empty.tolist()} cover no FFT bin; use fewer mels or a larger n_fft"
            )

    def _validate_raw(self) -> None:
        if self.hop_length > self.win_length:
            raise ValueError(f"FrontendParams: a raw front end's hop_length ({self.hop_length}) "
                             f"must be <= win_length ({self.win_length}), the samples per frame")
        for f in dataclasses.fields(self):
            if f.name not in _RAW_FIELDS and getattr(self, f.name) != f.default:
                raise ValueError(f"FrontendParams.{f.name} does not apply to kind 'raw' (which "
                                 f"uses only {', '.join(_RAW_FIELDS[:3])})")

    # -- derived values ---------------------------------------------------------------------------
    @property
    def upper_hz(self) -> float:
        """Effective upper filterbank edge in Hz: fmax_hz, or sample_rate_hz / 2 if it is None."""
        return float(self.sample_rate_hz) / 2.0 if self.fmax_hz is None else float(self.fmax_hz)

    @property
    def n_features(self) -> int:
        """Features per frame: n_mels for "logmel", n_mfcc for "mfcc", win_length for "raw"."""
        if self.kind == "raw":
            return self.win_length
        return self.n_mels if self.kind == "logmel" else self.n_mfcc

    @property
    def lead_samples(self) -> int:
        """Zero samples taken as coming before the signal: the first raw frame's context
        (win_length - hop_length for "raw", 0 otherwise)."""
        return self.win_length - self.hop_length if self.kind == "raw" else 0

    @property
    def n_bins(self) -> int:
        """Number of one-sided FFT bins, n_fft // 2 + 1."""
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """Frames made from n_samples samples: 1 + (n - win) // hop if n >= win, else 0
        (after the lead_samples of zeros: n // hop for "raw")."""
        n_samples += self.lead_samples
        if n_samples < self.win_length:
            return 0
        return 1 + (n_samples - self.win_length) // self.hop_length

    # -- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field (tuples become lists); for "raw" only the
        fields it uses."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if self.kind == "raw" and f.name not in _RAW_FIELDS:
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontendParams:
        """Build from a :meth:`to_dict` dict; missing keys take defaults, unknown keys fail."""
        if not isinstance(data, dict):
            raise TypeError(f"FrontendParams.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"FrontendParams.from_dict: unknown field(s) {unknown}; valid fields are "
                f"{sorted(known)}"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> FrontendParams:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"FrontendParams.{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"FrontendParams.{name} must be >= {minimum}, got {value}")


def _check_float(name: str, value: Any, *, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"FrontendParams.{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"FrontendParams.{name} must be finite and >= {minimum}, got {value}")


def _float_tuple(name: str, value: Any) -> tuple[float, ...]:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"FrontendParams.{name} must be a sequence of numbers: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"FrontendParams.{name} must be 1-D, got shape {arr.shape}")
    return tuple(float(v) for v in arr)


# ------------------------------------------------------------------------------------------------
# Building blocks (public so tests and docs can check them against their formulas)
# ------------------------------------------------------------------------------------------------
def hz_to_mel(f_hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 2595 * log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f_hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`: 700 * (10^(mel / 2595) - 1)."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def window(kind: str, length: int) -> np.ndarray:
    """Periodic window of ``length`` samples (float64): hann, hamming, or rect (all ones)."""
    n = np.arange(length, dtype=np.float64)
    if kind == "hann":
        return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)
    if kind == "hamming":
        return 0.54 - 0.46 * np.cos(2.0 * np.pi * n / length)
    if kind == "rect":
        return np.ones(length, dtype=np.float64)
    raise ValueError(f"window must be one of {', '.join(_WINDOWS)}; got {kind!r}")


@functools.lru_cache(maxsize=32)
def _mel_filterbank_cached(
    sample_rate_hz: int, n_fft: int, n_mels: int, fmin_hz: float, fmax_hz: float
) -> np.ndarray:
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin_hz), hz_to_mel(fmax_hz), n_mels + 2))
    bins_hz = np.arange(n_fft // 2 + 1, dtype=np.float64) * sample_rate_hz / n_fft
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bins_hz[None, :]) / (upper - centre)
    fb = np.maximum(0.0, np.minimum(rising, falling)).T  # [n_bins, n_mels]
    fb = np.ascontiguousarray(fb)
    fb.setflags(write=False)
    return fb


def mel_filterbank(params: FrontendParams) -> np.ndarray:
    """The mel filterbank as float64 ``[n_fft // 2 + 1, n_mels]`` (HTK scale, triangle peak 1).

    Filter m rises linearly from edge m to edge m+1 and falls to edge m+2, the n_mels + 2 edges
    being equally spaced in HTK mel between fmin_hz and fmax_hz. Read-only.
    """
    return _mel_filterbank_cached(
        int(params.sample_rate_hz),
        int(params.n_fft),
        int(params.n_mels),
        float(params.fmin_hz),
        float(params.upper_hz),
    )


@functools.lru_cache(maxsize=32)
def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II matrix float64 ``[n_out, n_in]``.

    C[k, m] = s_k cos(pi k (m + 1/2) / n_in),

    s_0 = sqrt(1 / n_in), s_k = sqrt(2 / n_in) for k > 0 (scipy's ``dct(type=2, norm="ortho")``).
    Read-only.
    """
    if n_out > n_in:
        raise ValueError(f"dct_matrix: n_out ({n_out}) must be <= n_in ({n_in})")
    k = np.arange(n_out, dtype=np.float64)[:, None]
    m = np.arange(n_in, dtype=np.float64)[None, :]
    c = np.cos(np.pi * k * (m + 0.5) / n_in) * math.sqrt(2.0 / n_in)
    c[0, :] = math.sqrt(1.0 / n_in)
    c.setflags(write=False)
    return c


class _FrameComputer:
    """Turns one frame of raw int16 samples into one feature vector; shared by both paths."""

    def __init__(self, params: FrontendParams) -> None:
        self.params = params
        self._raw = params.kind == "raw"
        if self._raw:
            return
        self._window = window(params.window, params.win_length)
        self._fb = mel_filterbank(params)
        self._dct = dct_matrix(params.n_mfcc, params.n_mels) if params.kind == "mfcc" else None
        self._mean = (
            None if params.feature_mean is None else np.asarray(params.feature_mean, np.float64)
        )
        self._std = (
            None if params.feature_std is None else np.asarray(params.feature_std, np.float64)
        )
        self._a = float(params.preemphasis)
        self._floor = float(params.log_floor)
        self._n_fft = int(params.n_fft)

    def power(self, prev: int, samples: np.ndarray) -> np.ndarray:
        """Power spectrum float64 [n_bins] of one frame (steps 1-4 of the module docstring)."""
        x = samples.astype(np.float64) / _PCM_SCALE
        if self._a != 0.0:
            shifted = np.empty_like(x)
            shifted[0] = prev / _PCM_SCALE
            shifted[1:] = x[:-1]
            x = x - self._a * shifted
        spectrum = np.fft.rfft(x * self._window, n=self._n_fft)
        return spectrum.real * spectrum.real + spectrum.imag * spectrum.imag

    def frame(self, prev: int, samples: np.ndarray) -> np.ndarray:
        """Features float64 [n_features] of ``samples`` (int16 [win_length]); ``prev`` is the
        sample just before the frame (0 at the start of the signal)."""
        if self._raw:
            return samples.astype(np.float64) / _PCM_SCALE
        feats = np.log(np.maximum(self.power(prev, samples) @ self._fb, self._floor))
        if self._dct is not None:
            feats = self._dct @ feats
        if self._mean is not None:
            feats = feats - self._mean
        if self._std is not None:
            feats = feats / self._std
        return feats

    def frames(self, buffer: np.ndarray, first_prev: int, starts: range) -> np.ndarray:
        """Features float32 [len(starts), n_features] of the frames starting at ``starts``
        (indices into ``buffer``); the sample before index 0 of ``buffer`` is ``first_prev``."""
        win = self.params.win_length
        out = np.empty((len(starts), self.params.n_features), dtype=np.float32)
        for i, s in enumerate(starts):
            prev = int(buffer[s - 1]) if s > 0 else int(first_prev)
            out[i] = self.frame(prev, buffer[s : s + win])
        return out


@functools.lru_cache(maxsize=8)
def _computer(params: FrontendParams) -> _FrameComputer:
    return _FrameComputer(params)


def _check_pcm(pcm: Any, what: str) -> np.ndarray:
    if not isinstance(pcm, np.ndarray):
        raise TypeError(
            f"{what}: expected a 1-D numpy int16 array of PCM samples, got {type(pcm).__name__}"
        )
    if pcm.dtype.kind != "i" or pcm.dtype.itemsize != 2:  # int16 of either byte order
        hint = (
            " (float audio in [-1, 1]: convert with np.round(x * 32767).astype(np.int16))"
            if np.issubdtype(pcm.dtype, np.floating)
            else ""
        )
        raise TypeError(f"{what}: expected int16 PCM samples, got dtype {pcm.dtype}{hint}")
    if pcm.ndim != 1:
        raise ValueError(
            f"{what}: expected 1-D mono PCM, got an array of shape {pcm.shape}"
            " (mix or pick one channel first)"
        )
    return pcm


def power_spectrum(
    samples: np.ndarray, params: FrontendParams | None = None, prev: int = 0
) -> np.ndarray:
    """Power spectrum float64 ``[n_fft // 2 + 1]`` of one frame of ``win_length`` int16 samples,
    after pre-emphasis (``prev`` = the sample before the frame, 0 at the signal start) and the
    window: the quantity the mel filterbank is applied to."""
    params = FrontendParams() if params is None else params
    samples = _check_pcm(samples, "power_spectrum")
    if samples.shape[0] != params.win_length:
        raise ValueError(
            f"power_spectrum: expected one frame of win_length={params.win_length} samples, "
            f"got {samples.shape[0]}"
        )
    return _computer(params).power(int(prev), samples)


def offline_features(pcm: np.ndarray, params: FrontendParams | None = None) -> np.ndarray:
    """Features float32 ``[frames, params.n_features]`` of a whole int16 mono signal.

    ``frames = 1 + (len(pcm) - win_length) // hop_length`` if ``len(pcm) >= win_length``, else 0:
    no padding at either end, trailing samples that do not fill a frame are ignored. Equal bit for
    bit to the concatenated output of :class:`StreamingFrontend` fed the same samples in any chunks.
    """
    params = FrontendParams() if params is None else params
    pcm = _check_pcm(pcm, "offline_features")
    n = params.n_frames(pcm.shape[0])
    if params.lead_samples:
        pcm = np.concatenate([np.zeros(params.lead_samples, np.int16), pcm])
    starts = range(0, n * params.hop_length, params.hop_length)
    return _computer(params).frames(pcm, 0, starts)


class StreamingFrontend:
    """Incremental front end for one stream: push int16 chunks of any length, get frames out.

    Every frame is emitted by the ``push`` call that delivers its last sample. One instance per
    stream; it is not thread-safe (the parameters and filterbank it shares with others are
    read-only). Only the samples
    still needed by future frames (plus one for pre-emphasis) are kept, so memory is bounded by
    ``win_length + hop_length`` samples plus the current chunk.
    """

    def __init__(self, params: FrontendParams | None = None) -> None:
        self.params = FrontendParams() if params is None else params
        self._computer = _computer(self.params)
        self.reset()

    def reset(self) -> None:
        """Forget all samples: the next push starts a new signal (pre-emphasis from silence)."""
        # absolute indices count the params' lead_samples of zeros (a raw frame's context before
        # the signal) as samples already pushed
        self._lead = self.params.lead_samples
        self._buf = np.zeros(self._lead, dtype=np.int16)
        self._buf_start = 0  # absolute index of self._buf[0]
        self._prev = 0  # the sample at absolute index self._buf_start - 1 (0 before the signal)
        self._n_seen = self._lead  # samples pushed so far (plus the lead)
        self._next_frame = 0  # index of the next frame to emit

    @property
    def samples_seen(self) -> int:
        """Samples pushed since construction or the last reset."""
        return self._n_seen - self._lead

    @property
    def frames_emitted(self) -> int:
        """Frames returned since construction or the last reset."""
        return self._next_frame

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Add samples (int16, 1-D, any length including 0); return the frames they complete as
        float32 ``[k, n_features]`` (k may be 0)."""
        chunk = _check_pcm(chunk, "StreamingFrontend.push")
        p = self.params
        chunk_start = self._n_seen
        self._n_seen += chunk.shape[0]
        if self._buf_start > chunk_start:
            # hop_length > win_length: samples between frames are never used; skip them.
            skip = min(self._buf_start - chunk_start, chunk.shape[0])
            if skip:
                self._prev = int(chunk[skip - 1])
            chunk = chunk[skip:]
        buf = np.concatenate([self._buf, chunk]) if self._buf.size else chunk.copy()
        n_total = p.n_frames(self._n_seen - self._lead)
        first = self._next_frame
        starts = range(
            first * p.hop_length - self._buf_start,
            n_total * p.hop_length - self._buf_start,
            p.hop_length,
        )
        out = self._computer.frames(buf, self._prev, starts)
        self._next_frame = n_total
        # Drop every sample before the next frame's first one; _prev keeps the one just before it
        # (the pre-emphasis predecessor). Invariant: _buf holds absolute samples
        # [_buf_start, _n_seen) and _prev is the sample at _buf_start - 1 (0 before the signal).
        keep_from = self._next_frame * p.hop_length
        drop = min(keep_from - self._buf_start, buf.shape[0])
        if drop > 0:
            self._prev = int(buf[drop - 1])
            buf = buf[drop:]
            self._buf_start += drop
        # With hop_length > win_length the next frame may start beyond the samples seen so far;
        # the samples up to it are skipped on arrival (and _prev is taken from them then).
        self._buf_start = max(self._buf_start, keep_from)
        self._buf = buf
        return out


# ------------------------------------------------------------------------------------------------
# WAV files (stdlib ``wave``: uncompressed PCM only)
# ------------------------------------------------------------------------------------------------
def read_wav(
    path: str | os.PathLike[str], expected_sample_rate_hz: int | None = None
) -> tuple[np.ndarray, int]:
    """Read a 16-bit mono PCM WAV file: returns ``(pcm int16 [n], sample_rate_hz)``.

    Raises :class:`WavFormatError` naming the file if it is not a PCM WAV, not 16-bit, not mono,
    or (when ``expected_sample_rate_hz`` is given) at another sample rate; no resampling is done.
    """
    name = os.fspath(path)
    try:
        with wave.open(name, "rb") as w:
            n_channels = w.getnchannels()
            sampwidth = w.getsampwidth()
            rate = w.getframerate()
            n_frames = w.getnframes()
            raw = w.readframes(n_frames)
    except wave.Error as exc:
        raise WavFormatError(f"{name}: not a readable PCM WAV file ({exc})") from None
    except EOFError:
        raise WavFormatError(f"{name}: truncated WAV file") from None
    if sampwidth != 2:
        raise WavFormatError(
            f"{name}: expected 16-bit samples, got {8 * sampwidth}-bit "
            "(convert with e.g. `sox in.wav -b 16 out.wav`)"
        )
    if n_channels != 1:
        raise WavFormatError(
            f"{name}: expected mono audio, got {n_channels} channels "
            "(convert with e.g. `sox in.wav -c 1 out.wav`)"
        )
    if expected_sample_rate_hz is not None and rate != expected_sample_rate_hz:
        raise WavFormatError(
            f"{name}: sample rate is {rate} Hz but {expected_sample_rate_hz} Hz is expected "
            f"(resample with e.g. `sox in.wav -r {expected_sample_rate_hz} out.wav`)"
        )
    usable = len(raw) - len(raw) % 2
    pcm = np.frombuffer(raw[:usable], dtype="<i2").astype(np.int16)
    log.debug("read %s: %d samples at %d Hz", name, pcm.shape[0], rate)
    return pcm, rate


def load_audio(
    path: str | os.PathLike[str], sample_rate_hz: int = 16000
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a PCM WAV file of any common format and return int16 mono at ``sample_rate_hz``.

    Accepts 8-, 16-, 24- and 32-bit integer PCM, any number of channels (mixed down to mono by
    averaging) and any sample rate (resampled with libsoxr's high-quality band-limited
    resampler, the ``soxr`` package: a small, well-kept C library with a numpy interface, the
    resampler librosa uses by default; scipy's ``resample_poly`` would pull a 40 MB dependency
    for the same job). Returns ``(pcm int16 [n], info)`` where ``info`` says what was done:
    ``{"sample_rate_hz", "channels", "bits", "resampled", "downmixed"}``. Errors are
    :class:`WavFormatError` naming the file.
    """
    name = os.fspath(path)
    try:
        with wave.open(name, "rb") as w:
            n_channels, sampwidth = w.getnchannels(), w.getsampwidth()
            rate, n_frames = w.getframerate(), w.getnframes()
            raw = w.readframes(n_frames)
    except wave.Error as exc:
        raise WavFormatError(f"{name}: not a readable PCM WAV file ({exc})") from None
    except EOFError:
        raise WavFormatError(f"{name}: truncated WAV file") from None
    if sampwidth not in (1, 2, 3, 4):
        raise WavFormatError(f"{name}: {8 * sampwidth}-bit samples are not supported "
                             "(8, 16, 24 or 32-bit integer PCM)")
    if rate <= 0:
        raise WavFormatError(f"{name}: invalid sample rate {rate} Hz")
    frame_bytes = sampwidth * n_channels
    raw = raw[: len(raw) - len(raw) % frame_bytes]
    if sampwidth == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128.0) / 128.0
    elif sampwidth == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float64) / 32768.0
    elif sampwidth == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float64) / float(1 << 23)
    else:
        x = np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)
    x = x.reshape(-1, n_channels)
    mono = x.mean(axis=1) if n_channels > 1 else x[:, 0]
    info = {"sample_rate_hz": rate, "channels": n_channels, "bits": 8 * sampwidth,
            "resampled": rate != sample_rate_hz, "downmixed": n_channels > 1}
    if rate != sample_rate_hz and mono.size:
        import soxr

        mono = soxr.resample(mono, rate, sample_rate_hz, quality="HQ")
    if sampwidth == 2 and not info["resampled"] and not info["downmixed"]:
        pcm = np.frombuffer(raw, "<i2").astype(np.int16)       # exactly the file's samples
    else:
        pcm = np.clip(np.rint(mono * 32768.0), -32768, 32767).astype(np.int16)
    if info["resampled"] or info["downmixed"]:
        log.info("%s: %d channel(s) at %d Hz -> mono at %d Hz", name, n_channels, rate,
                 sample_rate_hz)
    return pcm, info


def write_wav(path: str | os.PathLike[str], pcm: np.ndarray, sample_rate_hz: int) -> None:
    """Write int16 mono PCM as a 16-bit WAV file."""
    pcm = _check_pcm(pcm, "write_wav")
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate_hz))
        w.writeframes(pcm.astype("<i2").tobytes())


def wav_features(path: str | os.PathLike[str], params: FrontendParams | None = None) -> np.ndarray:
    """:func:`offline_features` of a 16-bit mono WAV file at params.sample_rate_hz."""
    params = FrontendParams() if params is None else params
    pcm, _ = read_wav(path, expected_sample_rate_hz=params.sample_rate_hz)
    return offline_features(pcm, params)


def context_frames(pcm: np.ndarray, chunk: int = 512, context: int = 64) -> np.ndarray:
    """Raw-sample frames for a frame model such as silero-vad: ``float32 [T, context + chunk]``,
    frame ``j`` holding samples ``[j*chunk - context, (j+1)*chunk)`` scaled like the features
    (int16 / 32768; float input is taken as already scaled). The first frame's context is
    zeros and the last chunk is zero-padded to full length, as silero-vad's own wrapper does
    (``OnnxWrapper``: 64 samples of context at 16 kHz, 512-sample chunks)."""
    x = np.asarray(pcm)
    if x.ndim != 1:
        raise ValueError(f"context_frames: expected mono samples [n], got shape {x.shape}")
    if chunk < 1 or context < 0:
        raise ValueError(f"context_frames: chunk {chunk} must be >= 1 and context {context} >= 0")
    x = x.astype(np.float64) / _PCM_SCALE if x.dtype == np.int16 else x.astype(np.float64)
    n = -(-x.size // chunk)
    padded = np.zeros(context + n * chunk)
    padded[context:context + x.size] = x
    idx = np.arange(n)[:, None] * chunk + np.arange(context + chunk)[None, :]
    return padded[idx].astype(np.float32)
