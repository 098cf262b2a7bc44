"""Quantizers: weight codes, input DAC, column ADC (slow, obvious numpy references).

All quantizers are signed and symmetric: b bits give the codes k in [-qmax, qmax] with
qmax = 2^(b-1) - 1 (2^b - 1 levels; the code -2^(b-1) is never produced). ``bits = 0`` means
"no quantization" everywhere.

The engine's stages (:mod:`devices.periphery`: ``DAC.apply`` multiplies by ``1/step``,
``ADC.apply`` divides by the step) and its numba kernels compute the same roundings as
:func:`dac_codes` / :func:`adc_codes` here, in the same float64 operations; training
(runtime/training/qat.py) calls the periphery stages themselves.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "qmax_for_bits",
    "quantize_weights",
    "dequantize",
    "symmetric_step",
    "dac_codes",
    "dac_quantize",
    "adc_codes",
    "adc_quantize",
]


def qmax_for_bits(bits: int) -> int:
    """Largest signed symmetric code 2^(bits-1) - 1; 1 for ``bits = 0`` (float, unit range)."""
    bits = int(bits)
    if bits == 0:
        return 1
    if bits < 2 or bits > 32:
        raise ValueError(f"bits must be 0 or in [2, 32], got {bits}")
    return 2 ** (bits - 1) - 1


def quantize_weights(W: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-row symmetric quantization of a weight matrix ``W[out, in]``.

    ``s_j = max_i |W[j, i]| / qmax`` (an all-zero row gets ``s_j = 1``), codes
    ``q = clip(rint(W / s), -qmax, qmax)`` as int8, so ``|W - q s| <= s/2`` elementwise. A row
whose largest |W| is subnormal (< 1.2e-38) counts as all-zero (scale 1, codes 0).
    ``bits = 0``: no quantization; the "codes" are float32 ``W / s`` in [-1, 1] with
    ``s_j = max_i |W[j, i]|`` (qmax = 1).

    Returns ``(codes, scale[out] float32)``.
    """
    W = np.asarray(W, dtype=np.float32)
    if W.ndim != 2:
        raise ValueError(f"W must be 2-D [out, in], got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise ValueError("W has non-finite values")
    bits = int(bits)
    if bits != 0 and not 2 <= bits <= 8:
        raise ValueError(f"weight bits must be 0 or in [2, 8], got {bits}")
    qmax = qmax_for_bits(bits)
    amax = np.max(np.abs(W), axis=1) if W.shape[1] else np.zeros(W.shape[0], np.float32)
    # rows whose largest weight is subnormal (< 1.2e-38) are treated as zero rows: a subnormal
    # scale would lose precision and such weights are zero for any practical purpose
    live = amax >= np.finfo(np.float32).tiny
    scale = np.where(live, amax / np.float32(qmax), np.float32(1.0)).astype(np.float32)
    ratio = np.where(live[:, None], W / scale[:, None], np.float32(0.0))
    if bits == 0:
        return np.clip(ratio, -1.0, 1.0).astype(np.float32), scale
    codes = np.clip(np.rint(ratio), -qmax, qmax).astype(np.int8)
    return codes, scale


def dequantize(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``codes * scale[:, None]`` as float32 (inverse of :func:`quantize_weights` up to s/2)."""
    return (np.asarray(codes, dtype=np.float32) * np.asarray(scale, np.float32)[:, None]).astype(
        np.float32
    )


def symmetric_step(absmax: np.ndarray | float, bits: int) -> np.ndarray:
    """Calibration helper: the step (LSB) that maps ``absmax`` to the top code qmax.

    A zero ``absmax`` gets step 1 (nothing to represent). For ``bits = 0`` the step is absmax
    (the value is only normalised).
    """
    a = np.asarray(absmax, dtype=np.float64)
    q = qmax_for_bits(bits)
    return np.where(a > 0, a / q, 1.0).astype(np.float32)


def _check_bits(bits: int, lo: int, hi: int, what: str) -> int:
    bits = int(bits)
    if bits != 0 and not lo <= bits <= hi:
        raise ValueError(f"{what} bits must be 0 or in [{lo}, {hi}], got {bits}")
    return bits


def dac_codes(x: np.ndarray, scale: np.ndarray | float, bits: int) -> np.ndarray:
    """Input DAC codes ``clip(rint(x * (1/scale)), -qmax, qmax)`` as int32 (``bits`` in 2..12).

    ``scale`` is the DAC step (input units per code), scalar or broadcastable to ``x``.
    ``bits = 0``: no quantization, returns float32 ``x / scale``.
    """
    bits = _check_bits(bits, 2, 12, "DAC")
    # x * (1 / scale), as devices.periphery.DAC.apply and the kernels compute it (one rule:
    # x / scale rounds ties differently in the last bit)
    r = np.asarray(x, dtype=np.float64) * (1.0 / np.asarray(scale, dtype=np.float64))
    if bits == 0:
        return r.astype(np.float32)
    q = qmax_for_bits(bits)
    return np.clip(np.rint(r), -q, q).astype(np.int32)


def dac_quantize(x: np.ndarray, scale: np.ndarray | float, bits: int) -> np.ndarray:
    """DAC output in input units: ``dac_codes(x, scale, bits) * scale`` (float32).

    ``bits = 0`` returns ``x`` unchanged (as float32).
    """
    if int(bits) == 0:
        return np.asarray(x, dtype=np.float32).copy()
    return (dac_codes(x, scale, bits) * np.asarray(scale, dtype=np.float64)).astype(np.float32)


def adc_codes(
    p: np.ndarray,
    step: np.ndarray | float,
    bits: int,
    noise_lsb: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Column ADC codes: ``clip(rint(p / step + n), -qmax, qmax)``, ``n ~ N(0, noise_lsb^2)``.

    ``step`` (the LSB, in the units of ``p``) comes from calibration: the clip range is
    ``[-qmax step, qmax step]``. At most 2^bits - 1 distinct codes. ``bits`` in 2..16;
    ``noise_lsb > 0`` needs ``rng``. ``bits = 0``: no ADC, returns float32 ``p / step``.
    """
    bits = _check_bits(bits, 2, 16, "ADC")
    r = np.asarray(p, dtype=np.float64) / np.asarray(step, dtype=np.float64)
    if bits == 0:
        return r.astype(np.float32)
    if noise_lsb < 0:
        raise ValueError(f"noise_lsb must be >= 0, got {noise_lsb}")
    if noise_lsb > 0:
        if rng is None:
            raise ValueError("ADC noise needs a numpy.random.Generator (rng)")
        r = r + noise_lsb * rng.standard_normal(r.shape)
    q = qmax_for_bits(bits)
    return np.clip(np.rint(r), -q, q).astype(np.int32)


def adc_quantize(
    p: np.ndarray,
    step: np.ndarray | float,
    bits: int,
    noise_lsb: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """ADC output in the units of ``p``: ``adc_codes(...) * step`` (float32).

    ``bits = 0`` returns ``p`` unchanged (no ADC, no ADC noise).
    """
    if int(bits) == 0:
        return np.asarray(p, dtype=np.float32).copy()
    return (adc_codes(p, step, bits, noise_lsb, rng) * np.asarray(step, dtype=np.float64)).astype(
        np.float32
    )
