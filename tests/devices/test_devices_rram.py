"""RRAM (Wan et al., Nature 2022 via aihwkit ReRamWan2022NoiseModel): relaxation with age,
read noise per weight, the rram-faulty profile. Seeded; tolerances stated per test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nvmstream.devices import Device, load_profile
from nvmstream.devices.conductance import (
    RRAM_WAN2022_COEFFS_US,
    RRAM_WAN2022_TIMES_S,
    RramRelaxation,
)


def _fit(k, x):
    return sum(c * x ** i for i, c in enumerate(RRAM_WAN2022_COEFFS_US[k]))


def test_relaxation_sigma_is_the_fits_at_the_knots_and_log_interpolated_between():
    m = RramRelaxation(40.0)
    x = np.linspace(0, 1, 11)
    for k, t in enumerate(RRAM_WAN2022_TIMES_S):
        np.testing.assert_allclose(m.sigma_at(40 * x, t), _fit(k, x), rtol=1e-12)
    t = 3 * 3600.0                       # 3 h: w = ln(10800) / ln(86400) between 1 s and 1 day
    w = math.log(t) / math.log(86400.0)
    np.testing.assert_allclose(m.sigma_at(40 * x, t), (1 - w) * _fit(0, x) + w * _fit(1, x),
                               rtol=1e-12)
    np.testing.assert_allclose(m.sigma_at(40 * x, 0.1), _fit(0, x))        # held below 1 s
    np.testing.assert_allclose(m.sigma_at(40 * x, 3.2e7), _fit(2, x))      # held beyond 2 days
    # gmax = 80 uS: same relative spread (sigma scales with gmax / 40)
    np.testing.assert_allclose(RramRelaxation(80.0).sigma_at(80 * x, 86400.0), 2 * _fit(1, x))
    assert not m.applies_at(1.0) and m.applies_at(1.5)


@pytest.mark.parametrize("age", [1.0, 3 * 3600.0, 86400.0, 172800.0])
def test_rram_spread_around_target_at_age(age):
    # rram profile (1 s programming fit + relaxation): G(age) - G_target ~ N(0, sigma_age(x)^2)
    # with sigma_age the log-interpolated fit. 20k cells per level x = q/7, q = 3..7 (G >= 17 uS,
    # > 4 sigma from the clamp at 0); SE of a std sqrt(1/(2n)) = 0.5%; tolerance 3%.
    dev = Device("rram", seed=11, age_s=age)
    q = np.repeat(np.arange(3, 8), 20_000).reshape(5, -1).astype(np.int8)
    pm = dev.program(q, "W")
    m = RramRelaxation(40.0)
    for i, qi in enumerate(range(3, 8)):
        g_t = qi / 7 * 40.0
        dev_ = pm.g_pos[i].astype(np.float64) - g_t
        assert abs(dev_.std() / m.sigma_at(np.array(g_t), age) - 1) < 0.03
        assert abs(dev_.mean()) < 5 * m.sigma_at(np.array(g_t), age) / math.sqrt(dev_.size)


def test_rram_age_has_an_effect_and_one_trajectory_per_seed():
    codes = np.random.default_rng(0).integers(-7, 8, size=(40, 50)).astype(np.int8)
    w = {t: Device("rram", seed=2, age_s=t).program(codes, "W").w_eff for t in (1.0, 3600.0, 86400.0)}
    err = {t: float(np.std(w[t] - codes)) for t in w}
    assert err[1.0] < err[3600.0] < err[86400.0]
    # the programming draw is shared across ages (same seed): the 1 h state correlates with 1 s
    assert np.corrcoef((w[1.0] - codes).ravel(), (w[3600.0] - codes).ravel())[0, 1] > 0.5


def test_rram_read_noise_is_per_weight_not_per_cell():
    # weight_fraction 0.01: read_var = (0.01 qmax)^2 per pair in code units, exactly; the old
    # per-cell 'fraction' model gives twice that variance (sqrt(2) in sigma).
    codes = np.random.default_rng(1).integers(-7, 8, size=(8, 9)).astype(np.int8)
    pm = Device("rram", seed=0).program(codes, "W")
    np.testing.assert_allclose(pm.read_var, (0.01 * 7) ** 2, rtol=1e-6)
    cell = Device("rram", seed=0, overrides=["read.model=fraction"]).program(codes, "W")
    np.testing.assert_allclose(cell.read_var / pm.read_var, 2.0, rtol=1e-6)
    # with gmin > 0 the weight range is gmax - gmin
    g = Device("rram", seed=0, overrides=["mapping.gmin_uS=4"]).program(codes, "W")
    np.testing.assert_allclose(g.read_var, (0.01 * 7) ** 2, rtol=1e-6)


def test_rram_faulty_profile_stuck_rates():
    # 1% of cells at gmin, 0.5% at gmax: counts within 5 binomial sigma over 2 x 200 x 200 cells
    p = load_profile("rram-faulty")
    assert (p.faults.p_stuck_low, p.faults.p_stuck_high) == (0.01, 0.005)
    assert p.base == "rram" and p.drift.model == "rram_wan2022"
    pm = Device(p, seed=3).program(np.zeros((200, 200), np.int8), "W")
    n = pm.stats["cells"]
    for key, prob in (("cells_stuck_low", 0.01), ("cells_stuck_high", 0.005)):
        assert abs(pm.stats[key] - n * prob) < 5 * math.sqrt(n * prob * (1 - prob))
    # stuck-high cells read gmax exactly (they neither relax nor get programming noise)
    assert np.count_nonzero(np.concatenate([pm.g_pos.ravel(), pm.g_neg.ravel()]) == 40.0) \
        == pm.stats["cells_stuck_high"]
