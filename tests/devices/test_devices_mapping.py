"""Weight-to-conductance mapping: per_row vs per_matrix scope, finite on/off ratio (gmin > 0).
Seeded; tolerances stated per test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nvmstream.devices import Device
from nvmstream.devices.conductance import DifferentialMapping

SCALES = np.array([0.02, 0.01, 0.005, 0.04], np.float32)     # row 3 has the largest scale


def _codes(n_in=5000, seed=0):
    c = np.random.default_rng(seed).integers(1, 8, size=(4, n_in))
    return c.astype(np.int8)


def test_row_gain():
    m = DifferentialMapping(0.0, 25.0, 7, "per_matrix")
    codes = _codes(10)
    np.testing.assert_allclose(m.row_gain(codes, SCALES), SCALES / 0.04)
    # an all-zero row's placeholder scale (1.0 from quantize_weights) does not set the range
    z = codes.copy()
    z[1] = 0
    s = SCALES.copy()
    s[1] = 1.0
    np.testing.assert_allclose(m.row_gain(z, s), [0.5, 1.0, 0.125, 1.0])
    np.testing.assert_array_equal(DifferentialMapping(0.0, 25.0, 7).row_gain(codes, SCALES), 1.0)
    with pytest.raises(ValueError, match="per_matrix' needs the per-row weight scales"):
        m.row_gain(codes, None)
    with pytest.raises(ValueError, match="scales must be 4 finite positive"):
        m.row_gain(codes, SCALES[:3])


def test_per_matrix_targets_and_exact_weights():
    dev = Device("int4", overrides=["mapping.scope=per_matrix"])
    codes = _codes(6)
    pm = dev.program(codes, "W", scales=SCALES)
    r = SCALES.astype(np.float64) / 0.04
    np.testing.assert_allclose(pm.g_pos, 25.0 * codes / 7 * r[:, None], rtol=1e-6)
    assert pm.exact
    np.testing.assert_array_equal(pm.w_eff, codes)                  # still the codes: w = q r / r
    with pytest.raises(ValueError, match="needs the per-row weight scales"):
        dev.program(codes, "W")


def test_per_matrix_amplifies_noise_of_small_rows_by_1_over_r():
    # constant programming noise sigma = 0.5 uS per cell, gmin = 5 uS (so no cell is clipped at
    # 0): the weight error of row j in code units has variance 2 sigma^2 (qmax/(gmax-gmin))^2 /
    # r_j^2 (per_row: r = 1). 5000 pairs per row; SE of
    # a variance ratio ~2%; tolerance 8%. read_var scales the same way (exactly).
    ov = ["mapping.gmin_uS=5", "programming.model=constant", "programming.sigma_uS=0.5",
          "read.model=constant", "read.sigma_uS=0.2"]
    codes = _codes()
    row = Device("int4", seed=1, overrides=ov).program(codes, "W", scales=SCALES)
    mat = Device("int4", seed=1, overrides=ov + ["mapping.scope=per_matrix"]).program(
        codes, "W", scales=SCALES)
    r = SCALES.astype(np.float64) / 0.04
    k = 7 / 20.0
    var_row = (row.w_eff - codes).var(axis=1)
    var_mat = (mat.w_eff - codes).var(axis=1)
    np.testing.assert_allclose(var_row / (2 * 0.25 * k * k), 1.0, atol=0.08)
    np.testing.assert_allclose(var_mat * r * r / (2 * 0.25 * k * k), 1.0, atol=0.08)
    np.testing.assert_allclose(mat.read_var, (2 * 0.04 * k * k / (r * r))[:, None]
                               * np.ones_like(codes), rtol=1e-5)


def test_gmin_cancels_in_the_pair_but_its_cells_still_drift():
    # gmin = 5 uS (on/off ratio 5), drift nu ~ N(0.05, 0.02^2) at t = 1e5 s, no programming
    # noise. Code 0 pairs are (gmin, gmin): w = gmin (f+ - f-) qmax/(gmax - gmin) with
    # f = (t/t0)^-nu, so Var w = 2 (gmin qmax/(gmax-gmin))^2 Var f, Var f = e^{-2 mu L}
    # (e^{2 sd^2 L^2} - e^{sd^2 L^2}), L = ln(t/t0); mean 0. 40k pairs; tolerance 5% on the
    # variance (SE ~0.7%), mean within 5 SE. Noise-free codes read exactly (gmin cancels).
    t, mu, sd = 1e5, 0.05, 0.02
    ov = ["mapping.gmin_uS=5", "drift.model=constant", f"drift.nu_mean={mu}", f"drift.nu_sd={sd}"]
    pm = Device("int4", seed=2, age_s=t, overrides=ov).program(np.zeros((200, 200), np.int8), "W")
    L = math.log(t / 20.0)
    var_f = math.exp(-2 * mu * L) * (math.exp(2 * sd * sd * L * L) - math.exp(sd * sd * L * L))
    expect = 2 * (5 * 7 / 20.0) ** 2 * var_f
    w = pm.w_eff.astype(np.float64)
    assert abs(w.var() / expect - 1) < 0.05
    assert abs(w.mean()) < 5 * math.sqrt(expect / w.size)
    codes = _codes(8)
    ideal = Device("int4", overrides=["mapping.gmin_uS=5", "read.model=fraction",
                                      "read.fraction=0.01"]).program(codes, "W")
    np.testing.assert_array_equal(ideal.w_eff, codes)
    np.testing.assert_allclose(ideal.g_neg, 5.0)                   # idle cells sit at gmin


def test_engine_passes_the_row_scales_to_per_matrix_mapping():
    # The engine programs with the compiled per-row scales: on the ideal int4 array per_matrix
    # equals per_row bit for bit; on pcm at 1 year it changes the weights.
    import nvmstream as nvm
    from onnx_util import FIXTURES
    cal = np.random.default_rng(0).normal(0, 1, (8, 20, 12)).astype(np.float32)
    prog = nvm.convert(FIXTURES / "lstm1_bf.ts.onnx", calibration=cal)
    x = np.random.default_rng(1).normal(0, 1, (2, 7, 12)).astype(np.float32)
    a = nvm.Engine(prog, nvm.Device("int4")).run(x)
    b = nvm.Engine(prog, nvm.Device("int4", overrides=["mapping.scope=per_matrix"])).run(x)
    np.testing.assert_array_equal(a, b)
    p_row = nvm.Engine(prog, nvm.Device("pcm-1y", seed=0)).plan.segments[0]
    p_mat = nvm.Engine(prog, nvm.Device("pcm-1y", seed=0,
                                        overrides=["mapping.scope=per_matrix"])).plan.segments[0]
    assert not np.array_equal(p_row.w_eff, p_mat.w_eff)
