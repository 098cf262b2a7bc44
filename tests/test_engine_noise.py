"""Statistics of the engine's per-read noise, drawn by the numba kernels, against the model's
own formulas (seeded; tolerances stated per test)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import nvmstream as nvm
from nvmstream.runtime import kernels as K
from nvmstream.runtime.kernels.rng import _ZIG_R
from onnx_util import FIXTURES


def _engine(profile, overrides, cal_seed=0):
    cal = np.random.default_rng(cal_seed).normal(0, 1, (16, 40, 12)).astype(np.float32)
    prog = nvm.convert(FIXTURES / "lstm1_bf.ts.onnx", calibration=cal)
    return nvm.Engine(prog, nvm.Device(profile, seed=0, overrides=overrides))


def _segment_runner(eng, key):
    """Call the kernel's segment (DAC, products, periphery) of one matrix directly, for one
    stream; returns (output, DAC codes)."""
    plan = eng.plan
    seg = next(s for s in plan.segments if s.key == key)
    rec = plan.segs[seg.index]
    scr = K.scratch(plan.layers, plan.segs, plan.max_w)
    rng = np.empty((1, 1, 4), np.uint64)
    K.seed_states(np.array([12345], np.uint64), rng[0])
    ridx = np.zeros(1, np.int64)
    none = np.empty((1, 1), np.float32)

    def run(v):
        out = np.zeros((1, seg.n_out))
        V = np.zeros((K.BB, plan.max_w + 1))
        V[0, :seg.n_in] = v
        K.segment_at(plan.segs, seg.index, plan.w32, plan.w64, plan.pf, V, 1, rng, ridx, 0, out,
                     none, ridx, False, scr)
        return out[0], scr[1][5][0, :seg.n_in].copy()
    return run, seg


def test_gaussian_generator_moments():
    st = np.empty((1, 4), np.uint64)
    K.seed_states(np.array([7], np.uint64), st)
    z = np.empty(400_000)
    K.fill_normals(st[0], z, z.size)
    # mean within 5 sigma of 0 (sigma = 1/sqrt(n)); variance within 1.5%; kurtosis 3 +- 0.05
    assert abs(z.mean()) < 5 / math.sqrt(z.size)
    assert abs(z.var() - 1) < 0.015
    assert abs(np.mean(z ** 4) / z.var() ** 2 - 3) < 0.05


def _normal_cdf(x):
    return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def test_ziggurat_sampler_distribution_and_tails():
    """The sampler itself (kernels/rng.py, 256-layer ziggurat) against N(0, 1), seed 11,
    10^6 draws: Kolmogorov-Smirnov distance below 1.95/sqrt(n) (the 0.1% critical value; a
    wrong layer table or wedge test moves it by far more), the tail rates P(|z| > t) for
    t = 1..4 within 5 binomial sigmas of 2 Q(t) (t = 4: ~63 expected of 10^6, the tail
    algorithm beyond the base layer's edge r = 3.654 is exercised), and both halves of the
    rare paths (wedges, tail) present."""
    st = np.empty((1, 4), np.uint64)
    K.seed_states(np.array([11], np.uint64), st)
    n = 1_000_000
    z = K.normals(st[0], n)
    xs = np.sort(z[:200_000])
    m = xs.size
    cdf = _normal_cdf(xs)
    ks = max(np.max(np.arange(1, m + 1) / m - cdf), np.max(cdf - np.arange(m) / m))
    assert ks < 1.95 / math.sqrt(m), ks
    for t in (1.0, 2.0, 3.0, 4.0):
        p = math.erfc(t / math.sqrt(2.0))
        got = np.count_nonzero(np.abs(z) > t)
        assert abs(got - n * p) < 5 * math.sqrt(n * p * (1 - p)) + 1, (t, got, n * p)
    assert np.count_nonzero(np.abs(z) > _ZIG_R) > 0    # the tail path ran
    assert np.all(np.isfinite(z))


def test_normals_split_into_calls_equal_one_call():
    """Draws are consumed in order: n then m normals from a state equal n + m in one call
    (what lets batching, chunking and frame-by-frame streaming reproduce a run)."""
    st = np.empty((1, 4), np.uint64)
    K.seed_states(np.array([3], np.uint64), st)
    one = K.normals(st[0].copy(), 5000)
    s = st[0].copy()
    parts = np.concatenate([K.normals(s, k) for k in (1, 7, 256, 8, 3000, 1728)])
    assert np.array_equal(one, parts)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_vmm_noise_snr_within_0p3_db(snr_db):
    eng = _engine("ideal", [f"vmm_noise.snr_db={snr_db}"])
    run, seg = _segment_runner(eng, "layer1/d0/x")       # the Linear head, float path
    # the head's calibration inputs are the LSTM outputs on the calibration set
    from nvmstream.runtime.plan import _calibration_inputs
    V = _calibration_inputs(eng.prog.model, eng.prog.calibration)["layer1/d0/x"]
    W = eng.prog.model.layers[1].W.astype(np.float64)
    clean = V.astype(np.float64) @ W.T
    noisy = np.stack([run(v)[0] for v in np.tile(V, (5, 1))])
    noise = noisy - np.tile(clean, (5, 1))
    snr = 10 * math.log10(np.mean(clean ** 2) / np.mean(noise ** 2))
    # 3200 x 4 noise samples: the variance estimate's relative sd is ~1.1% (0.05 dB)
    assert abs(snr - snr_db) < 0.3, snr
    assert abs(noise.mean()) < 5 * noise.std() / math.sqrt(noise.size)


def test_read_noise_variance_matches_column_formula():
    # pcm read noise on, no ADC/DAC quantization of the noise, 4-row tiles: the noise of output
    # j is a sum over tiles of N(0, sum_i u_i^2 read_var[j, i]), scaled to model units (weight
    # scale x digital drift compensation x DAC step).
    eng = _engine("pcm", ["adc.bits=0", "tile.rows=4", "tile.cols=4", "drift.age_s=86400"])
    run, seg = _segment_runner(eng, "layer0/d0/x")
    assert seg.has_read_noise and seg.row_tiles == 3
    v = np.random.default_rng(2).normal(0, 1, 12)
    draws = np.stack([run(v)[0] for _ in range(6000)])
    u = run(v)[1].astype(np.float64)
    var = seg.read_var.T.astype(np.float64)                       # on the plan's grid
    col_var = (u ** 2) @ var                                      # code units^2
    # pcm's digital drift compensation multiplies the ADC outputs (noise included) by c_j
    gain = seg.comp.apply(seg.scales) * seg.dac_step
    assert seg.comp.mode == "global" and np.all(seg.comp.factor > 1)
    want = col_var * gain ** 2
    got = draws.var(axis=0)
    ratio = got / want
    # 6000 draws: each variance estimate has relative sd sqrt(2/6000) = 1.8%; allow 4 sd per
    # output and 1% on the pooled mean ratio over 64 outputs
    assert np.all(np.abs(ratio - 1) < 0.08), ratio
    assert abs(ratio.mean() - 1) < 0.01
    # and the mean is the noise-free w_eff product (read noise has zero mean)
    clean = (seg.w_eff.astype(np.float64) @ u) * gain
    np.testing.assert_allclose(draws.mean(axis=0), clean, atol=5 * np.sqrt(want / 6000).max())


@pytest.mark.parametrize("bits", [2, 3, 4, 6])
def test_adc_has_at_most_2_pow_bits_levels_and_dac_codes_in_range(bits):
    eng = _engine("int4", [f"adc.bits={bits}", f"dac.bits={bits}"])
    run, seg = _segment_runner(eng, "layer1/d0/x")           # 16 rows: one tile
    assert seg.row_tiles == 1
    qa = 2 ** (bits - 1) - 1
    outs, codes = [], []
    for v in np.random.default_rng(3).normal(0, 2, (3000, 16)):
        o, u = run(v)
        outs.append(o)
        codes.append(u)
    outs, codes = np.array(outs), np.array(codes)
    levels = [np.unique(outs[:, j]).size for j in range(seg.n_out)]
    assert max(levels) <= 2 ** bits - 1 and max(levels) >= min(2 ** bits - 1, 3)
    # every level is an integer multiple of the column's ADC step (times the output scale)
    lsb = seg.adc_steps[0] * seg.scales * seg.dac_step
    k = outs / lsb
    np.testing.assert_allclose(k, np.rint(k), atol=1e-6)
    assert np.all(np.abs(np.rint(k)) <= qa)
    assert np.all(codes == np.rint(codes)) and np.all(np.abs(codes) <= qa)
    assert np.abs(codes).max() == qa      # inputs at 2 sigma do reach the DAC's full scale


def test_adc_noise_in_lsb():
    eng = _engine("int4", ["adc.bits=8", "adc.noise_lsb=0.7"])
    clean_eng = _engine("int4", ["adc.bits=8"])
    run, seg = _segment_runner(eng, "layer1/d0/x")
    run0, _ = _segment_runner(clean_eng, "layer1/d0/x")
    from nvmstream.runtime.plan import _calibration_inputs
    v = _calibration_inputs(eng.prog.model, eng.prog.calibration)["layer1/d0/x"][5]
    assert np.all(np.abs(run0(v)[0] / (seg.adc_steps[0] * seg.scales * seg.dac_step)) < 120)
    d = np.stack([run(v)[0] for _ in range(20000)]) - run0(v)[0]
    lsb = seg.adc_steps[0] * seg.scales * seg.dac_step
    err = d / lsb
    # rounding of (x + N(0, 0.7^2)): variance 0.49 + ~1/12 (uniform rounding), within 5%
    assert abs(err.var(axis=0).mean() / (0.49 + 1 / 12) - 1) < 0.05
