"""ADC-instance offset, gain and INL/DNL, drawn once at programming (seeded): the draws have
the profile's spreads, columns that share an ADC share its errors, the transfer curve has its
transitions at the closed-form points, and the kernel equals the numpy twin bit for bit."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from naive import vmm as twin_vmm
from nvmstream.devices.periphery import ADC
from nvmstream.runtime import kernels as K
from test_engine_periphery import _engine, _kernel


def test_draws_have_the_profile_spreads_and_columns_sharing_an_adc_share_them():
    rng = np.random.default_rng(0)
    a = ADC(4, offset_lsb=0.3, gain_sd=0.02, inl_lsb=0.1, cols_per_adc=4)
    a = a.draw_mismatch(n_out=4000, row_tiles=2, tile_cols=256, rng=rng)
    assert a.gain.shape == a.offset.shape == (2, 4000) and a.thresholds.shape == (2, 4000, 14)
    inst = a.instance_of(4000, 256)
    # columns of one ADC share it; the first column of each group stands for its instance
    for blk in range(2):
        for arr in (a.gain[blk], a.offset[blk]):
            for c in range(0, 4000, 997):
                same = inst == inst[c]
                assert np.all(arr[same] == arr[c])
    first = np.r_[True, inst[1:] != inst[:-1]]
    n = int(first.sum()) * 2                       # instances (2 row tiles)
    assert n == 2 * (15 * 64 + 40)                 # 4000 cols = 15 tiles of 256 + 160 cols
    off = a.offset[:, first].ravel()
    gain = a.gain[:, first].ravel()
    # sample sd within 5 sd of its estimator (rel. sd sqrt(1/(2n)))
    tol = 5 / math.sqrt(2 * n)
    assert abs(off.std(ddof=1) / 0.3 - 1) < tol and abs(off.mean()) < 5 * 0.3 / math.sqrt(n)
    assert abs((gain - 1).std(ddof=1) / 0.02 - 1) < tol
    d = a.thresholds[:, first].reshape(n, 14) - (np.arange(-7, 7) + 0.5)
    # sorting barely changes N(0, 0.1) levels 1 LSB apart: sd of the displacement = INL sd
    assert abs(d.std(ddof=1) / 0.1 - 1) < 5 / math.sqrt(2 * d.size) + 0.01


def test_transfer_curve_transitions_at_closed_form_points():
    a = ADC(4, offset_lsb=0.4, gain_sd=0.05, inl_lsb=0.15, cols_per_adc=1)
    a = a.draw_mismatch(3, 1, 256, np.random.default_rng(1))
    a = replace(a, steps=np.ones((1, 3)))
    x = np.linspace(-10, 10, 200001)
    p = np.repeat(x[:, None], 3, axis=1)
    codes = a.apply(p, 0)
    for j in range(3):
        jumps = np.nonzero(np.diff(codes[:, j]))[0]
        got = x[jumps + 1]                               # first input on the new code
        want = (a.thresholds[0, j] - a.offset[0, j]) / a.gain[0, j]
        want = want[(want > -10) & (want < 10)]
        np.testing.assert_allclose(np.unique(got), np.unique(want), atol=2e-4)   # grid 1e-4
        assert codes[:, j].min() == -7 and codes[:, j].max() == 7


def test_offset_and_gain_without_inl_are_clip_rint_of_the_affine_input():
    a = ADC(4, offset_lsb=0.5, gain_sd=0.1, cols_per_adc=2).draw_mismatch(
        6, 1, 4, np.random.default_rng(2))
    a = replace(a, steps=np.full((1, 6), 0.5))
    assert a.thresholds is None
    p = np.random.default_rng(3).normal(0, 3, (100, 6))
    want = np.clip(np.rint(p / 0.5 * a.gain[0] + a.offset[0]), -7, 7) * 0.5
    np.testing.assert_array_equal(a.apply(p, 0), want)
    assert np.all(a.gain[0, 0::2] == a.gain[0, 1::2])     # 2 columns per ADC


def test_off_by_default_and_unchanged_draws():
    eng = _engine("pcm")
    assert all(not s.adc.mismatched for s in eng.plan.segments)
    assert all(int(eng.plan.segs[s.index]["adc_gain"]) == -1 for s in eng.plan.segments)


@pytest.mark.parametrize("ov", [["adc.offset_lsb=0.3", "adc.gain_sd=0.05"],
                                ["adc.inl_lsb=0.2", "adc.noise_lsb=0.3", "tile.rows=5"],
                                ["adc.offset_lsb=0.3", "adc.inl_lsb=0.3", "energy.cols_per_adc=8",
                                 "read.model=pcm_1f", "vmm_noise.snr_db=10",
                                 "vmm_noise.position=before_adc"]])
def test_kernel_equals_twin_with_mismatch(ov):
    eng = _engine("pcm", ov)
    for seg in eng.plan.segments:
        assert seg.adc.mismatched
        for v in np.random.default_rng(1).normal(0, 1, (10, seg.n_in)):
            s1 = np.empty((1, 4), np.uint64)
            K.seed_states(np.array([5], np.uint64), s1)
            s2 = s1.copy()
            np.testing.assert_array_equal(_kernel(eng, seg, v, s1[0]), twin_vmm(seg, v, s2[0]))
            np.testing.assert_array_equal(s1, s2)


def test_mismatch_is_seeded_by_the_device():
    a = _engine("pcm", ["adc.offset_lsb=0.3"]).plan.segments[0].adc.offset
    b = _engine("pcm", ["adc.offset_lsb=0.3"]).plan.segments[0].adc.offset
    np.testing.assert_array_equal(a, b)
    import nvmstream as nvm
    from test_engine_periphery import FIXTURES
    cal = np.random.default_rng(0).normal(0, 1, (16, 40, 12)).astype(np.float32)
    prog = nvm.convert(FIXTURES / "lstm1_bf.ts.onnx", calibration=cal)
    c = nvm.Engine(prog, nvm.Device("pcm", seed=1, overrides=["adc.offset_lsb=0.3"]))
    assert not np.array_equal(a, c.plan.segments[0].adc.offset)
