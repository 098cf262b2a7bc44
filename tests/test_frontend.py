"""Tests of the audio front end (runtime/frontend.py): numpy + pytest + hypothesis only."""

from __future__ import annotations

import json
import math
import wave

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nvmstream.runtime.frontend import (
    FrontendParams,
    StreamingFrontend,
    WavFormatError,
    dct_matrix,
    mel_filterbank,
    offline_features,
    power_spectrum,
    read_wav,
    wav_features,
    write_wav,
)

SR = 16000


def noise_pcm(n: int, seed: int = 0, scale: float = 3000.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal(n) * scale, -32768, 32767).astype(np.int16)


def sine_pcm(freq_hz: float, n: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(n) / SR
    return np.round(amplitude * 32767 * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


def stream_in_chunks(params: FrontendParams, pcm: np.ndarray, sizes: list[int]) -> np.ndarray:
    fe = StreamingFrontend(params)
    outs, i = [], 0
    for n in sizes:
        outs.append(fe.push(pcm[i : i + n]))
        i += n
    outs.append(fe.push(pcm[i:]))
    for out in outs:
        assert out.dtype == np.float32 and out.ndim == 2 and out.shape[1] == params.n_features
    return np.concatenate(outs)


# A few parameter sets that exercise every branch: defaults, MFCC with normalisation, no
# pre-emphasis, hop > win (samples skipped between frames), hop == win, n_fft == win.
PARAM_SETS = [
    FrontendParams(),
    FrontendParams(
        kind="mfcc",
        n_mfcc=13,
        feature_mean=tuple(np.linspace(-5, 5, 13)),
        feature_std=tuple(np.linspace(0.5, 3, 13)),
    ),
    FrontendParams(preemphasis=0.0, window="hamming", fmax_hz=None, n_mels=23),
    FrontendParams(win_length=64, hop_length=100, n_fft=64, n_mels=8, window="rect"),
    FrontendParams(win_length=128, hop_length=128, n_fft=256, n_mels=16, fmin_hz=100.0),
]


# -- defaults, framing, shapes ---------------------------------------------------------------------
def test_defaults() -> None:
    p = FrontendParams()
    assert (p.sample_rate_hz, p.win_length, p.hop_length, p.n_fft) == (16000, 400, 160, 512)
    assert (p.n_mels, p.fmin_hz, p.fmax_hz, p.preemphasis) == (40, 20.0, 8000.0, 0.97)
    assert (p.window, p.log_floor, p.kind, p.n_mfcc) == ("hann", 1e-6, "logmel", 13)
    assert p.n_features == 40 and p.n_bins == 257
    assert p.replace(kind="mfcc").n_features == 13


@pytest.mark.parametrize(
    "n, frames", [(0, 0), (1, 0), (399, 0), (400, 1), (401, 1), (559, 1), (560, 2), (16000, 98)]
)
def test_frame_count_no_padding(n: int, frames: int) -> None:
    out = offline_features(noise_pcm(n), FrontendParams())
    assert out.shape == (frames, 40) and out.dtype == np.float32
    assert FrontendParams().n_frames(n) == frames


def test_silence_gives_log_floor() -> None:
    out = offline_features(np.zeros(1000, np.int16), FrontendParams())
    assert np.array_equal(out, np.full_like(out, np.float32(math.log(1e-6))))


def test_features_finite_at_full_scale() -> None:
    pcm = np.tile(np.array([32767, -32768], np.int16), 4000)
    for p in PARAM_SETS:
        assert np.isfinite(offline_features(pcm, p)).all()


# -- streaming == offline, bit for bit -------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    p_index=st.integers(0, len(PARAM_SETS) - 1),
    n=st.integers(0, 2500),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_streaming_equals_offline_any_chunking(p_index: int, n: int, seed: int, data) -> None:
    params = PARAM_SETS[p_index]
    pcm = noise_pcm(n, seed, scale=8000.0)
    sizes = data.draw(st.lists(st.integers(0, 700), max_size=12), label="chunk sizes")
    streamed = stream_in_chunks(params, pcm, sizes)
    assert np.array_equal(streamed, offline_features(pcm, params))


@pytest.mark.parametrize("params", PARAM_SETS, ids=range(len(PARAM_SETS)))
def test_streaming_equals_offline_seeded_chunkings(params: FrontendParams) -> None:
    pcm = noise_pcm(SR, seed=1, scale=6000.0)
    expected = offline_features(pcm, params)
    rng = np.random.default_rng(2)
    for max_chunk in (1, 3, 160, 401, 5000):
        sizes = rng.integers(0, max_chunk + 1, size=2 * pcm.size // max_chunk + 10).tolist()
        assert np.array_equal(stream_in_chunks(params, pcm, sizes), expected), max_chunk


def test_sample_by_sample_and_frame_latency() -> None:
    p = FrontendParams()
    pcm = noise_pcm(1200, seed=3)
    fe = StreamingFrontend(p)
    emitted_at = []
    for i in range(pcm.size):
        k = fe.push(pcm[i : i + 1]).shape[0]
        assert k in (0, 1)
        if k:
            emitted_at.append(i + 1)  # samples seen when the frame came out
    # Frame j needs samples [j*hop, j*hop + win): it is emitted exactly when that last one arrives.
    assert emitted_at == [j * p.hop_length + p.win_length for j in range(p.n_frames(pcm.size))]
    assert fe.samples_seen == pcm.size and fe.frames_emitted == len(emitted_at)


def test_preemphasis_state_crosses_chunks_and_reset_clears_it() -> None:
    # Hamming, not Hann: the periodic Hann window is 0 at the frame's first sample, which would
    # hide the pre-emphasis predecessor entirely.
    p = FrontendParams(window="hamming")
    pcm = noise_pcm(2000, seed=4)
    fe = StreamingFrontend(p)
    first = np.concatenate([fe.push(pcm[:799]), fe.push(pcm[799:])])
    assert np.array_equal(first, offline_features(pcm, p))
    # The second frame starts at 160: its pre-emphasis uses sample 159, not 0.
    wrong = power_spectrum(pcm[160:560], p, prev=0)
    right = power_spectrum(pcm[160:560], p, prev=int(pcm[159]))
    assert not np.array_equal(wrong, right)
    fe.reset()
    assert fe.samples_seen == 0
    again = np.concatenate([fe.push(pcm[:1000]), fe.push(pcm[1000:])])
    assert np.array_equal(again, first)


def test_empty_push_returns_empty_float32() -> None:
    out = StreamingFrontend().push(np.zeros(0, np.int16))
    assert out.shape == (0, 40) and out.dtype == np.float32


# -- the numbers, against independent references --------------------------------------------------
def _naive_features(pcm: np.ndarray, p: FrontendParams) -> np.ndarray:
    """Slow, obvious twin: explicit DFT sums and textbook formulas, loops over frames/filters."""
    x = pcm.astype(np.float64) / 32768.0
    y = x.copy()
    y[1:] -= p.preemphasis * x[:-1]  # x[-1] = 0 for the very first sample
    n = np.arange(p.win_length)
    win = 0.5 - 0.5 * np.cos(2 * np.pi * n / p.win_length)  # periodic Hann
    k = np.arange(p.n_fft // 2 + 1)
    dft = np.exp(-2j * np.pi * np.outer(k, n) / p.n_fft)  # zero padding = the missing columns

    def mel(f: float) -> float:  # HTK
        return 2595.0 * math.log10(1.0 + f / 700.0)

    def imel(m: float) -> float:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    lo, hi = mel(p.fmin_hz), mel(p.upper_hz)
    edges = [imel(lo + (hi - lo) * i / (p.n_mels + 1)) for i in range(p.n_mels + 2)]
    freqs = k * p.sample_rate_hz / p.n_fft
    out = []
    for j in range(p.n_frames(pcm.size)):
        frame = y[j * p.hop_length : j * p.hop_length + p.win_length] * win
        power = np.abs(dft @ frame) ** 2
        logmel = []
        for m in range(p.n_mels):
            a, c, b = edges[m], edges[m + 1], edges[m + 2]
            w = [max(0.0, min((f - a) / (c - a), (b - f) / (b - c))) for f in freqs]
            logmel.append(math.log(max(float(np.dot(w, power)), p.log_floor)))
        if p.kind == "mfcc":
            M = p.n_mels
            logmel = [
                sum(logmel[i] * math.cos(math.pi * q * (i + 0.5) / M) for i in range(M))
                * math.sqrt((1.0 if q == 0 else 2.0) / M)
                for q in range(p.n_mfcc)
            ]
        out.append(logmel)
    return np.array(out).reshape(-1, p.n_features)


@pytest.mark.parametrize("kind", ["logmel", "mfcc"])
def test_matches_naive_reference(kind: str) -> None:
    p = FrontendParams(kind=kind)
    pcm = noise_pcm(1200, seed=5, scale=4000.0)
    got = offline_features(pcm, p)
    ref = _naive_features(pcm, p)
    assert got.shape == ref.shape == (6, p.n_features)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("freq_hz", [300.0, 1000.0, 2500.0, 6000.0])
def test_sine_energy_lands_in_the_right_mel_bin(freq_hz: float) -> None:
    p = FrontendParams(preemphasis=0.0)
    out = offline_features(sine_pcm(freq_hz, 4000), p)
    # Centres of the HTK filters, computed here from the formula, not from the module.
    mel_lo, mel_hi = 2595 * np.log10(1 + 20 / 700), 2595 * np.log10(1 + 8000 / 700)
    centres = 700 * (10 ** (np.linspace(mel_lo, mel_hi, p.n_mels + 2)[1:-1] / 2595) - 1)
    expected = int(np.argmin(np.abs(centres - freq_hz)))
    peak_bins = np.argmax(out, axis=1)
    assert np.all(np.abs(peak_bins - expected) <= 1), (peak_bins, expected)
    # Far from the tone the energy is many orders of magnitude lower (Hann sidelobes).
    far = np.abs(np.arange(p.n_mels) - expected) > 6
    assert np.all(out[:, far].max(axis=1) < out.max(axis=1) - np.log(1e4))


def test_parseval_on_power_spectrum() -> None:
    p = FrontendParams()
    frame = noise_pcm(p.win_length, seed=6)
    power = power_spectrum(frame, p, prev=1234)
    # Time-domain energy of the pre-emphasised, windowed frame, computed independently.
    x = frame.astype(np.float64) / 32768.0
    prev = np.concatenate([[1234 / 32768.0], x[:-1]])
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(p.win_length) / p.win_length)
    energy = np.sum(((x - 0.97 * prev) * w) ** 2)
    # One-sided spectrum of a real signal of even length N: DC and Nyquist once, the rest twice.
    total = (power[0] + power[-1] + 2 * power[1:-1].sum()) / p.n_fft
    assert total == pytest.approx(energy, rel=1e-10)


def test_filterbank_is_a_partition_of_unity_between_first_and_last_centre() -> None:
    p = FrontendParams()
    fb = mel_filterbank(p)
    assert fb.shape == (257, 40) and fb.min() >= 0.0 and fb.max() <= 1.0
    mel_lo, mel_hi = 2595 * np.log10(1 + 20 / 700), 2595 * np.log10(1 + 8000 / 700)
    edges = 700 * (10 ** (np.linspace(mel_lo, mel_hi, 42) / 2595) - 1)
    freqs = np.arange(257) * 16000 / 512
    inside = (freqs >= edges[1]) & (freqs <= edges[-2])
    np.testing.assert_allclose(fb[inside].sum(axis=1), 1.0, atol=1e-12)
    outside = (freqs <= edges[0]) | (freqs >= edges[-1])
    assert np.all(fb[outside] == 0.0)


def test_dct_is_orthonormal_dct_ii() -> None:
    c = dct_matrix(40, 40)
    np.testing.assert_allclose(c @ c.T, np.eye(40), atol=1e-12)
    k, m = 3, 7
    assert c[k, m] == pytest.approx(math.sqrt(2 / 40) * math.cos(math.pi * k * (m + 0.5) / 40))
    assert c[0, 5] == pytest.approx(math.sqrt(1 / 40))
    with pytest.raises(ValueError, match="n_out"):
        dct_matrix(41, 40)


def test_mfcc_is_dct_of_logmel_and_normalisation_applies() -> None:
    pcm = noise_pcm(3000, seed=7)
    logmel = offline_features(pcm, FrontendParams()).astype(np.float64)
    mfcc = offline_features(pcm, FrontendParams(kind="mfcc"))
    np.testing.assert_allclose(mfcc, logmel @ dct_matrix(13, 40).T, rtol=1e-5, atol=1e-4)
    mean, std = np.linspace(-1, 1, 13), np.linspace(1, 4, 13)
    p = FrontendParams(kind="mfcc", feature_mean=tuple(mean), feature_std=tuple(std))
    np.testing.assert_allclose(offline_features(pcm, p), (mfcc - mean) / std, rtol=1e-5, atol=1e-5)


# -- parameters: serialisation and validation ------------------------------------------------------
def test_to_dict_from_dict_round_trip_through_json() -> None:
    for p in PARAM_SETS:
        d = json.loads(json.dumps(p.to_dict()))
        back = FrontendParams.from_dict(d)
        assert back == p and hash(back) == hash(p)
    assert FrontendParams.from_dict({}) == FrontendParams()
    assert FrontendParams.from_dict({"feature_mean": [0.0] * 40}).feature_mean == (0.0,) * 40


def test_from_dict_rejects_unknown_and_non_dict() -> None:
    with pytest.raises(ValueError, match="hop_len"):
        FrontendParams.from_dict({"hop_len": 160})
    with pytest.raises(TypeError, match="dict"):
        FrontendParams.from_dict("n_mels=40")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"win_length": 600}, "n_fft"),
        ({"win_length": 400.0}, "win_length"),
        ({"hop_length": 0}, "hop_length"),
        ({"sample_rate_hz": True}, "sample_rate_hz"),
        ({"fmax_hz": 9000.0}, "fmax_hz"),
        ({"fmin_hz": 8000.0}, "fmin_hz"),
        ({"fmin_hz": float("nan")}, "fmin_hz"),
        ({"preemphasis": 1.0}, "preemphasis"),
        ({"preemphasis": -0.1}, "preemphasis"),
        ({"log_floor": 0.0}, "log_floor"),
        ({"window": "blackman"}, "window"),
        ({"kind": "mel"}, "kind"),
        ({"kind": "mfcc", "n_mfcc": 41}, "n_mfcc"),
        ({"feature_mean": (0.0,) * 13}, "feature_mean"),
        ({"feature_std": (0.0,) * 40}, "feature_std"),
        ({"feature_std": [[1.0] * 40]}, "feature_std"),
        ({"n_mels": 128}, "n_mels"),  # too many mels for 257 bins from 20 Hz: empty filters
    ],
)
def test_validation_names_the_field(changes: dict, field: str) -> None:
    with pytest.raises((ValueError, TypeError), match=f"FrontendParams.{field}"):
        FrontendParams(**changes)


def test_params_are_frozen() -> None:
    with pytest.raises(AttributeError):
        FrontendParams().n_mels = 80  # type: ignore[misc]


# -- input validation ------------------------------------------------------------------------------
def test_rejects_float_2d_and_non_arrays() -> None:
    fe = StreamingFrontend()
    with pytest.raises(TypeError, match="int16.*float32"):
        offline_features(np.zeros(1000, np.float32))
    with pytest.raises(TypeError, match="int16"):
        fe.push(np.zeros(10, np.float64))
    with pytest.raises(TypeError, match="int16"):
        fe.push(np.zeros(10, np.int32))
    with pytest.raises(ValueError, match="1-D"):
        offline_features(np.zeros((2, 1000), np.int16))
    with pytest.raises(ValueError, match="1-D"):
        fe.push(np.zeros((10, 1), np.int16))
    big_endian = noise_pcm(1000).astype(">i2")
    assert np.array_equal(offline_features(big_endian), offline_features(noise_pcm(1000)))
    with pytest.raises(TypeError, match="numpy int16 array"):
        offline_features([0] * 1000)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="win_length=400"):
        power_spectrum(np.zeros(10, np.int16))


# -- WAV files -------------------------------------------------------------------------------------
def _write_raw_wav(path, n_channels: int, sampwidth: int, rate: int, n: int = 800) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(n_channels)
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        w.writeframes(b"\x01" * (n * n_channels * sampwidth))


def test_wav_round_trip_and_features(tmp_path) -> None:
    pcm = noise_pcm(5000, seed=8)
    path = tmp_path / "clip.wav"
    write_wav(path, pcm, SR)
    back, rate = read_wav(path)
    assert rate == SR and back.dtype == np.int16 and np.array_equal(back, pcm)
    assert np.array_equal(wav_features(path), offline_features(pcm))


@pytest.mark.parametrize(
    "n_channels, sampwidth, rate, match",
    [(2, 2, SR, "mono"), (1, 1, SR, "16-bit"), (1, 3, SR, "16-bit"), (1, 4, SR, "16-bit")],
)
def test_read_wav_rejects_formats_naming_the_file(tmp_path, n_channels, sampwidth, rate, match):
    path = tmp_path / "bad_format.wav"
    _write_raw_wav(path, n_channels, sampwidth, rate)
    with pytest.raises(WavFormatError, match=f"bad_format.wav.*{match}"):
        read_wav(path)


def test_wrong_sample_rate_names_file_and_rates(tmp_path) -> None:
    path = tmp_path / "at44k.wav"
    write_wav(path, noise_pcm(4410), 44100)
    assert read_wav(path)[1] == 44100  # reading alone is fine
    with pytest.raises(WavFormatError, match="at44k.wav.*44100 Hz.*16000 Hz"):
        wav_features(path)
    with pytest.raises(WavFormatError, match="at44k.wav"):
        read_wav(path, expected_sample_rate_hz=16000)


def test_not_a_wav_names_the_file(tmp_path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(b"this is not a RIFF file at all")
    with pytest.raises(WavFormatError, match="noise.wav"):
        read_wav(path)


# ------------------------------------------------------------------------------ raw PCM frames
RAW = FrontendParams(kind="raw", win_length=576, hop_length=512)     # silero-vad's frames


def test_raw_frames_are_the_samples_with_context() -> None:
    """kind "raw": frame j is samples [512 j - 64, 512 (j + 1)) / 32768, zeros before the
    signal, n // 512 frames; equal to context_frames (silero-vad's own chunking) on whole
    chunks; only its three fields are serialised."""
    from nvmstream.runtime.frontend import context_frames
    pcm = np.random.default_rng(0).integers(-32768, 32767, 512 * 7 + 100).astype(np.int16)
    x = offline_features(pcm, RAW)
    assert x.shape == (7, 576) and x.dtype == np.float32
    assert RAW.n_features == 576 and RAW.n_frames(512 * 7 + 100) == 7 and RAW.n_frames(511) == 0
    np.testing.assert_array_equal(x[0, :64], 0)
    np.testing.assert_array_equal(x[3], pcm[3 * 512 - 64:4 * 512] / 32768.0)
    np.testing.assert_array_equal(x, context_frames(pcm[:512 * 7]))
    d = RAW.to_dict()
    assert d == {"sample_rate_hz": 16000, "win_length": 576, "hop_length": 512, "kind": "raw"}
    assert FrontendParams.from_dict(json.loads(json.dumps(d))) == RAW


@pytest.mark.parametrize("seed", range(4))
def test_raw_streaming_equals_offline_any_chunking(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pcm = rng.integers(-32768, 32767, int(rng.integers(0, 5000))).astype(np.int16)
    fe = StreamingFrontend(RAW)
    out, i = [], 0
    while i < pcm.size:
        k = int(rng.integers(0, 1300))
        out.append(fe.push(pcm[i:i + k]))
        i += k
    got = np.concatenate(out) if out else np.zeros((0, 576), np.float32)
    np.testing.assert_array_equal(got, offline_features(pcm, RAW))
    assert fe.samples_seen == pcm.size and fe.frames_emitted == pcm.size // 512


@pytest.mark.parametrize("changes, match", [({"n_mels": 20}, "n_mels does not apply"),
                                            ({"preemphasis": 0.0}, "preemphasis does not"),
                                            ({"hop_length": 600}, "hop_length")])
def test_raw_rejects_fields_it_does_not_use(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RAW.replace(**changes)
