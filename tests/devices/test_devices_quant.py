"""Weight quantization, DAC and ADC reference quantizers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nvmstream.devices import (
    adc_codes,
    adc_quantize,
    dac_codes,
    dac_quantize,
    dequantize,
    qmax_for_bits,
    quantize_weights,
    symmetric_step,
)

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    W=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=12), elements=finite),
    bits=st.integers(2, 8),
)
def test_quantize_weights_properties(W, bits):
    codes, scale = quantize_weights(W, bits)
    qmax = 2 ** (bits - 1) - 1
    assert codes.dtype == np.int8 and scale.dtype == np.float32
    assert codes.shape == W.shape and scale.shape == (W.shape[0],)
    assert np.all(np.abs(codes.astype(int)) <= qmax)
    amax = np.abs(W).max(axis=1)
    # zero (and subnormal-only) rows get scale 1 and all-zero codes
    zero = amax < np.finfo(np.float32).tiny
    assert np.all(scale[zero] == 1.0) and np.all(codes[zero] == 0)
    # reconstruction error <= s/2 (plus float32 rounding: 1e-6 relative to the row max)
    err = np.abs(W.astype(np.float64) - dequantize(codes, scale).astype(np.float64))
    bound = scale[:, None].astype(np.float64) / 2 + 1e-6 * amax[:, None] + 1e-30
    assert np.all(err <= bound)
    # the largest |W| of each non-zero row maps to +-qmax
    nz = ~zero
    assert np.all(np.abs(codes[nz]).max(axis=1) == qmax)


def test_quantize_weights_float_mode_and_errors():
    W = np.array([[0.5, -2.0, 1.0], [0.0, 0.0, 0.0]], np.float32)
    codes, scale = quantize_weights(W, 0)
    assert codes.dtype == np.float32 and np.all(np.abs(codes) <= 1)
    np.testing.assert_allclose(dequantize(codes, scale), W, rtol=1e-6)
    assert scale.tolist() == [2.0, 1.0]
    with pytest.raises(ValueError, match="bits"):
        quantize_weights(W, 9)
    with pytest.raises(ValueError, match="2-D"):
        quantize_weights(W[0], 4)
    with pytest.raises(ValueError, match="non-finite"):
        quantize_weights(np.array([[np.nan]]), 4)


def test_qmax_and_step():
    assert [qmax_for_bits(b) for b in (0, 2, 4, 8)] == [1, 1, 7, 127]
    np.testing.assert_allclose(symmetric_step(np.array([7.0, 0.0]), 4), [1.0, 1.0])


@pytest.mark.parametrize("bits", [2, 3, 4, 8, 12])
def test_dac_codes_in_range_and_error_within_half_step(bits, rng):
    x = rng.normal(0, 3, size=20000)
    scale = 0.05
    q = 2 ** (bits - 1) - 1
    c = dac_codes(x, scale, bits)
    assert c.dtype == np.int32 and c.min() >= -q and c.max() <= q
    # inside the range the quantization error is at most half a step (float64 reference)
    inside = np.abs(x) <= q * scale
    err = np.abs(dac_quantize(x, scale, bits)[inside].astype(np.float64) - x[inside])
    assert np.all(err <= scale / 2 * (1 + 1e-6) + 1e-6 * np.abs(x[inside]))
    # outside it clips to the end codes
    assert np.all(np.abs(c[~inside]) == q)


def test_dac_per_channel_scale_and_float_mode(rng):
    x = rng.normal(size=(5, 3))
    scale = np.array([0.1, 0.2, 0.3])
    c = dac_codes(x, scale, 4)
    np.testing.assert_array_equal(c, np.clip(np.rint(x * (1.0 / scale)), -7, 7))
    np.testing.assert_array_equal(dac_quantize(x, scale, 0), x.astype(np.float32))
    with pytest.raises(ValueError, match="DAC bits"):
        dac_codes(x, 0.1, 13)


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_adc_has_at_most_2_pow_bits_levels(bits, rng):
    p = rng.normal(0, 50, size=50000)
    step = 0.37
    out = adc_quantize(p, step, bits, noise_lsb=0.7, rng=rng)
    levels = np.unique(out)
    assert len(levels) <= 2 ** bits
    q = 2 ** (bits - 1) - 1
    # symmetric: levels are k * step with |k| <= qmax, clipped to the calibrated range
    k = np.rint(levels / step)
    np.testing.assert_allclose(levels, k * step, rtol=1e-6)
    assert np.abs(k).max() <= q


def test_adc_noise_std_matches_noise_lsb(rng):
    # p = 0.3 LSB everywhere; with noise_lsb = 2 the output codes are rint(0.3 + N(0, 4)).
    # The rounding adds a (nearly independent) uniform error: std ~ sqrt(4 + 1/12) = 2.0207.
    # n = 200k: relative standard error of a std is 1/sqrt(2n) = 0.16%; tolerance 1.5%.
    n = 200_000
    c = adc_codes(np.full(n, 0.3), 1.0, 12, noise_lsb=2.0, rng=rng)
    assert abs(c.std() / np.sqrt(4 + 1 / 12) - 1) < 0.015
    # mean: E[rint(0.3 + N(0,4))] = 0.3 to within 4 standard errors (sd 2.02 / sqrt(n))
    assert abs(c.mean() - 0.3) < 4 * 2.03 / np.sqrt(n)


def test_adc_off_and_errors(rng):
    p = rng.normal(size=10)
    np.testing.assert_array_equal(adc_quantize(p, 0.1, 0), p.astype(np.float32))
    with pytest.raises(ValueError, match="Generator"):
        adc_codes(p, 0.1, 4, noise_lsb=1.0)
    with pytest.raises(ValueError, match="ADC bits"):
        adc_codes(p, 0.1, 17)


def test_quant_helpers_equal_the_engine_stages_bit_for_bit(rng):
    """dac_codes / adc_codes and devices.periphery's DAC.apply / ADC.apply (what the engine and
    training run) are one rule, ties included: inputs at k + 1/2 steps and random ones."""
    from nvmstream.devices.periphery import ADC, DAC
    step = 0.1                                    # 1/0.1 is inexact: x/step and x*(1/step) differ
    ties = (np.arange(-7, 7) + 0.5) * step
    x = np.concatenate([ties, np.nextafter(ties, np.inf), np.nextafter(ties, -np.inf),
                        rng.normal(0, 0.4, 5000)])
    dac = DAC(4, step)
    np.testing.assert_array_equal(dac_codes(x, step, 4), dac.apply(x))
    steps = np.array([[0.1, 0.3, 0.7]])
    p = np.concatenate([(np.arange(-7, 7)[:, None] + 0.5) * steps, rng.normal(0, 1, (500, 3))])
    adc = ADC(4, steps=steps)
    np.testing.assert_array_equal(adc_quantize(p, steps[0], 4),
                                  adc.apply(p, 0).astype(np.float32))
    np.testing.assert_array_equal(adc_codes(p, steps[0], 4), np.rint(adc.apply(p, 0) / steps[0]))
    # the old x / step rule disagrees on some of these ties: the test can fail
    assert np.any(np.clip(np.rint(x / step), -7, 7) != dac.apply(x))
