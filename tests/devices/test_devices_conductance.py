"""Conductance mechanisms against their own formulas: mapping, programming noise, stuck-at,
drift (+ compensation) and read noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nvmstream.devices import (
    DRIFT_MODELS,
    PROGRAMMING_MODELS,
    READ_MODELS,
    Device,
    DifferentialMapping,
    GlobalDriftCompensation,
    StuckAtFaults,
    load_profile,
)
from nvmstream.devices.conductance import (
    ConstantDrift,
    PcmDrift,
    PcmPolyProgrammingNoise,
    Pcm1fReadNoise,
    PolyProgrammingNoise,
    pcm_drift_mu_sd,
)
from nvmstream.devices.registry import UnknownMechanismError

PCM_POLY = (0.26348, 1.9650, -1.1731)


def phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


# --- registries -----------------------------------------------------------------------------

def test_every_registered_mechanism_builds_from_a_profile_and_runs(rng):
    """cross-sim style: call every model once so a broken one fails here, not in a run."""
    base = load_profile("pcm", ["programming.sigma_uS=1", "programming.fraction=0.05",
                                "programming.poly_coeffs_uS=[0.5, 1.0]", "read.sigma_uS=0.3",
                                "read.fraction=0.01", "drift.nu_mean=0.05", "drift.nu_sd=0.01"])
    g = np.linspace(0, 25, 11)
    for name in PROGRAMMING_MODELS.names():
        m = PROGRAMMING_MODELS.get(name).from_profile(base.with_overrides([f"programming.model={name}"]))
        assert np.all(np.isfinite(m.apply(g, rng))) and m.sigma(g).shape == g.shape
    for name in DRIFT_MODELS.names():
        m = DRIFT_MODELS.get(name).from_profile(base.with_overrides([f"drift.model={name}"]))
        assert np.all(np.isfinite(m.apply(g, g, 1e5, rng)))
    for name in READ_MODELS.names():
        m = READ_MODELS.get(name).from_profile(base.with_overrides([f"read.model={name}"]))
        assert np.all(m.sigma(g, g, 1e5) >= 0)
    with pytest.raises(UnknownMechanismError, match="pcm_poly"):
        PROGRAMMING_MODELS.get("gaussian")
    with pytest.raises(UnknownMechanismError, match="pcm_1f"):
        READ_MODELS.get("shot")


# --- mapping --------------------------------------------------------------------------------

@pytest.mark.parametrize("gmin, gmax, bits", [(0.0, 25.0, 4), (1.0, 40.0, 4), (2.0, 10.0, 8)])
def test_mapping_round_trip(gmin, gmax, bits):
    q = 2 ** (bits - 1) - 1
    m = DifferentialMapping(gmin, gmax, q)
    codes = np.arange(-q, q + 1)
    gp, gn = m.to_conductance(codes)
    assert gp.min() >= gmin and gp.max() <= gmax and gn.min() >= gmin and gn.max() <= gmax
    assert np.all((gp == gmin) | (gn == gmin))  # one cell of each pair idles at gmin
    np.testing.assert_allclose(gp[codes == q], gmax)
    np.testing.assert_allclose(gn[codes == -q], gmax)
    np.testing.assert_allclose(m.to_weight(gp, gn), codes, atol=1e-12)


# --- programming noise ----------------------------------------------------------------------

def _binned_sigma_check(model, gmax, rng, n_per_level=20000, levels=8):
    """Per conductance level: sample std of G_prog - G vs model.sigma(G).

    Levels whose sigma is more than G/3 are skipped (the clip at 0 would bind). With
    n = 20000 draws per level, a sample std has relative standard error 1/sqrt(2n) = 0.5%;
    tolerance 3% (6 standard errors).
    """
    checked = 0
    for g in np.linspace(0, gmax, levels):
        sig = float(model.sigma(np.array([g]))[0])
        if g < 3 * sig:
            continue
        draws = model.apply(np.full(n_per_level, g), rng)
        assert abs(draws.mean() - g) < 5 * sig / math.sqrt(n_per_level)
        assert abs(draws.std() / sig - 1) < 0.03, (g, draws.std(), sig)
        checked += 1
    assert checked >= 4


def test_pcm_poly_sigma_is_the_polynomial(rng):
    m = PcmPolyProgrammingNoise(25.0)
    x = np.linspace(0, 1, 11)
    np.testing.assert_allclose(m.sigma(25 * x), PCM_POLY[0] + PCM_POLY[1] * x + PCM_POLY[2] * x**2)
    _binned_sigma_check(m, 25.0, rng)


def test_pcm_poly_scales_with_gmax(rng):
    # sigma(G) = poly(G/gmax) * gmax/25: at gmax = 50 the spread doubles at the same x
    m = PcmPolyProgrammingNoise(50.0)
    x = np.linspace(0, 1, 5)
    np.testing.assert_allclose(m.sigma(50 * x), 2 * (PCM_POLY[0] + PCM_POLY[1] * x + PCM_POLY[2] * x**2))
    _binned_sigma_check(m, 50.0, rng)


def test_rram_poly_sigma_binned(rng):
    p = load_profile("rram")
    m = PROGRAMMING_MODELS.get("poly").from_profile(p)
    c = p.programming.poly_coeffs_uS
    x = np.linspace(0, 1, 9)
    np.testing.assert_allclose(m.sigma(40 * x), sum(ci * x**i for i, ci in enumerate(c)))
    _binned_sigma_check(m, 40.0, rng)


def test_poly_sigma_clipped_at_zero_and_g_clipped():
    m = PolyProgrammingNoise([-1.0, 0.5], gmax_uS=10.0, gmax_ref_uS=10.0, gclip_uS=20.0)
    np.testing.assert_allclose(m.sigma(np.array([0.0, 10.0, 40.0])), [0.0, 0.0, 1.0])
    wild = PROGRAMMING_MODELS.get("constant")(50.0, gclip_uS=20.0)
    out = wild.apply(np.full(10000, 10.0), np.random.default_rng(1))
    assert out.min() == 0.0 and out.max() == 20.0


@pytest.mark.parametrize("model, field_, value, expect",
                         [("constant", "sigma_uS", 0.8, 0.8), ("fraction", "fraction", 0.04, 1.0)])
def test_constant_and_fraction_programming_noise(model, field_, value, expect, rng):
    p = load_profile("int4", [f"programming.model={model}", f"programming.{field_}={value}"])
    m = PROGRAMMING_MODELS.get(model).from_profile(p)
    np.testing.assert_allclose(m.sigma(np.array([5.0, 20.0])), expect)
    _binned_sigma_check(m, 25.0, rng)


def test_device_programming_noise_matches_pcm_polynomial():
    # Through the whole Device chain (drift/read off): residuals g_pos - target per code level.
    # 64 x 1024 codes ~ 4681 cells per level; rel. SE of a std 1/sqrt(2n) ~ 1%: tolerance 5%.
    dev = Device("pcm", seed=3, overrides=["drift.model=none", "read.model=none"])
    codes = np.random.default_rng(0).integers(-7, 8, size=(64, 1024)).astype(np.int8)
    pm = dev.program(codes, "W")
    target = np.clip(codes, 0, None) * 25.0 / 7
    for q in range(2, 8):  # skip levels where the clip at 0 binds
        sel = codes == q
        x = q / 7
        sig = PCM_POLY[0] + PCM_POLY[1] * x + PCM_POLY[2] * x**2
        res = pm.g_pos[sel].astype(np.float64) - target[sel]
        assert abs(res.std() / sig - 1) < 0.05


# --- stuck-at faults ------------------------------------------------------------------------

def test_stuck_fractions_binomial(rng):
    # 200k cells; counts ~ Binomial(n, p); bound 5 sd each.
    n, p_low, p_high = 200_000, 0.05, 0.02
    f = StuckAtFaults(p_low, p_high, 1.0, 30.0)
    g = rng.uniform(1, 30, size=n)
    out, stuck = f.apply(g, rng)
    low, high = out == 1.0, out == 30.0
    for k, p in [(low.sum(), p_low), (high.sum(), p_high)]:
        assert abs(k - n * p) < 5 * math.sqrt(n * p * (1 - p))
    assert stuck.sum() == low.sum() + high.sum()
    np.testing.assert_array_equal(out[~stuck], g[~stuck])


def test_device_stuck_counts_and_values():
    dev = Device("int4", seed=5, overrides=["faults.p_stuck_low=0.1", "faults.p_stuck_high=0.05"])
    codes = np.random.default_rng(0).integers(-7, 8, size=(200, 250)).astype(np.int8)
    pm = dev.program(codes, "W")
    n = 2 * codes.size
    for key, p in [("cells_stuck_low", 0.1), ("cells_stuck_high", 0.05)]:
        assert abs(pm.stats[key] - n * p) < 5 * math.sqrt(n * p * (1 - p))
    g = np.stack([pm.g_pos, pm.g_neg])
    assert int((g == 25.0).sum()) >= pm.stats["cells_stuck_high"]
    assert not pm.exact


# --- drift ----------------------------------------------------------------------------------

def expected_factor_gaussian(mu, sd, L):
    """E[exp(-L nu)] for nu ~ N(mu, sd^2)."""
    return math.exp(-mu * L + sd**2 * L**2 / 2)


def expected_factor_folded(mu, sd, L):
    """E[exp(-L |nu|)] for nu ~ N(mu, sd^2) (aihwkit takes |nu|)."""
    a = math.exp(-mu * L + sd**2 * L**2 / 2) * phi(mu / sd - L * sd)
    b = math.exp(mu * L + sd**2 * L**2 / 2) * phi(-mu / sd - L * sd)
    return a + b


@pytest.mark.parametrize("t", [3600.0, 86400.0, 31536000.0])
def test_constant_drift_mean_factor(t, rng):
    # nu ~ N(0.06, 0.03^2): mean of (t/t0)^-nu vs exp(-mu L + sd^2 L^2 / 2), L = ln(t/t0).
    # n = 200k; the factor's CV is sqrt(exp(sd^2 L^2) - 1) <= 0.6, SE <= 0.14%; tolerance 1%.
    m = ConstantDrift(0.06, 0.03, t0_s=20.0)
    g = np.full(200_000, 10.0)
    out = m.apply(g, g, t, rng)
    L = math.log(t / 20.0)
    assert abs(out.mean() / 10.0 / expected_factor_gaussian(0.06, 0.03, L) - 1) < 0.01


@pytest.mark.parametrize("x", [1.0, 0.3, 0.05, 0.0])
def test_pcm_drift_mean_factor(x, rng):
    # mu(x), sd(x) from the aihwkit formulas; nu = |N(mu, sd)|. Tolerance 1% (SE < 0.15%).
    gmax, t, t0 = 25.0, 86400.0, 20.0
    g = np.full(200_000, x * gmax)
    mu, sd = (float(v[0]) for v in pcm_drift_mu_sd(g[:1], gmax))
    xc = max(x, 1e-7)
    assert mu == pytest.approx(min(max(-0.0155 * math.log(xc) + 0.0244, 0.049), 0.1))
    assert sd == pytest.approx(min(max(-0.0125 * math.log(xc) - 0.0059, 0.008), 0.045))
    m = PcmDrift(gmax, t0)
    g_prog = np.full_like(g, 7.0)  # drift multiplies the programmed G; nu comes from the target
    out = m.apply(g_prog, g, t, rng)
    L = math.log(t / t0)
    assert abs(out.mean() / 7.0 / expected_factor_folded(mu, sd, L) - 1) < 0.01
    # and the nu draws themselves: mean of |N(mu, sd)| = sd sqrt(2/pi) e^{-mu^2/2sd^2} + mu(1-2Phi(-mu/sd))
    nu = m.sample_nu(g, rng)
    folded_mean = sd * math.sqrt(2 / math.pi) * math.exp(-mu**2 / (2 * sd**2)) + mu * (1 - 2 * phi(-mu / sd))
    assert abs(nu.mean() - folded_mean) < 5 * sd / math.sqrt(len(nu))
    assert nu.min() >= 0


def test_no_drift_up_to_t0_and_stuck_cells_frozen(rng):
    m = ConstantDrift(0.1, 0.02, t0_s=20.0)
    g = rng.uniform(1, 25, size=1000)
    np.testing.assert_array_equal(m.apply(g, g, 20.0, rng), g)
    np.testing.assert_array_equal(m.apply(g, g, 5.0, rng), g)
    frozen = np.arange(1000) % 2 == 0
    out = m.apply(g, g, 1e6, rng, frozen=frozen)
    np.testing.assert_array_equal(out[frozen], g[frozen])
    assert np.all(out[~frozen] < g[~frozen])


def test_compensation_recovers_scale_for_uniform_drift():
    # nu identical for every cell (sd = 0): W(age) = W(t0) (t/t0)^-nu exactly, the factor is
    # (t/t0)^nu and w_eff equals the codes again (float32 rounding: 1e-5 code units).
    t = 31536000.0
    dev = Device("int4", seed=1, age_s=t,
                 overrides=["drift.model=constant", "drift.nu_mean=0.08", "drift.compensation=analog_fold"])
    codes = np.random.default_rng(0).integers(-7, 8, size=(40, 60)).astype(np.int8)
    pm = dev.program(codes, "W")
    assert pm.drift_compensation == pytest.approx((t / 20.0) ** 0.08, rel=1e-9)
    np.testing.assert_allclose(pm.w_eff, codes, atol=1e-5)
    assert not pm.exact and pm.stats["drift_applied"]
    off = Device("int4", seed=1, age_s=t, overrides=["drift.model=constant", "drift.nu_mean=0.08"])
    np.testing.assert_allclose(off.program(codes, "W").w_eff, codes * (t / 20.0) ** -0.08, rtol=1e-5)


def test_compensation_factor_matches_mean_drift():
    # nu ~ N(0.06, 0.02): factor = mean|W(t0)| / mean|W(age)| -> 1 / E[(t/t0)^-nu] as the
    # matrix grows. 300 x 400 codes: SE of the mean factor ~ CV/sqrt(n) < 0.1%; tolerance 1%.
    t = 86400.0
    dev = Device("int4", seed=2, age_s=t, overrides=[
        "drift.model=constant", "drift.nu_mean=0.06", "drift.nu_sd=0.02", "drift.compensation=analog_fold"])
    codes = np.random.default_rng(1).integers(-7, 8, size=(300, 400)).astype(np.int8)
    pm = dev.program(codes, "W")
    L = math.log(t / 20.0)
    assert abs(pm.drift_compensation * expected_factor_gaussian(0.06, 0.02, L) - 1) < 0.01
    # after compensation the mean |w_eff| equals the mean |code| (the reference readout)
    assert np.abs(pm.w_eff).mean() == pytest.approx(np.abs(codes).mean(), rel=1e-5)


def test_global_compensation_readout():
    w0 = np.array([[1.0, -2.0], [0.0, 3.0]])
    assert GlobalDriftCompensation.readout(w0) == pytest.approx(1.5)
    assert GlobalDriftCompensation.factor(w0, w0 / 2) == pytest.approx(2.0)
    assert GlobalDriftCompensation.factor(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


# --- read noise -----------------------------------------------------------------------------

def test_pcm_1f_sigma_formula():
    m = Pcm1fReadNoise(25.0, 250e-9)
    t = 86400.0
    g_prog = np.array([0.0, 0.01, 2.5, 12.5, 25.0])
    g_now = g_prog * 0.7
    x = g_prog / 25.0
    qs = np.minimum(0.0088 / np.maximum(x**0.65, 1e-3), 0.2)
    expect = g_now * qs * math.sqrt(math.log((t + 250e-9) / (2 * 250e-9)))
    np.testing.assert_allclose(m.sigma(g_now, g_prog, t), expect, rtol=1e-12)
    assert np.all(m.sigma(g_now, g_prog, 1e-7) == 0)  # t <= t_read: log term clipped at 0


def test_read_noise_sample_matches_sigma(rng):
    # Monte Carlo per cell: 50k reads of 5 cells; rel. SE of a std 0.32%; tolerance 2%.
    m = Pcm1fReadNoise(25.0)
    g = np.array([1.0, 5.0, 12.0, 20.0, 25.0])
    gb = np.broadcast_to(g, (50_000, 5))
    reads = m.sample(gb, rng, gb, 3600.0)
    np.testing.assert_allclose(reads.std(axis=0) / m.sigma(g, g, 3600.0), 1.0, atol=0.02)


@pytest.mark.parametrize("profile, extra", [
    ("pcm", ["drift.model=none", "read.split=per_read"]),
    ("rram", []),
    ("int4", ["read.model=constant", "read.sigma_uS=0.5", "programming.model=fraction",
              "programming.fraction=0.02"]),
])
def test_device_read_var_vs_monte_carlo(profile, extra):
    # read_var[j, i] must be the variance, in code units^2, of (G+ - G-) * qmax/(gmax-gmin)
    # when every cell is read with its own N(0, sigma_read^2). Monte Carlo: 20k reads of a
    # 6 x 8 matrix; rel. SE of a variance sqrt(2/n) = 1%; tolerance 5% per entry.
    dev = Device(profile, seed=4, overrides=extra)
    codes = np.random.default_rng(2).integers(-7, 8, size=(6, 8)).astype(np.int8)
    codes[0, :3] = [7, -7, 0]
    pm = dev.program(codes, "W")
    p = dev.profile
    k = (dev.qmax / (p.mapping.gmax_uS - p.mapping.gmin_uS)) * pm.drift_compensation
    rng = np.random.default_rng(99)
    gp = pm.g_pos.astype(np.float64)
    gn = pm.g_neg.astype(np.float64)
    n = 20_000
    gp = np.broadcast_to(gp, (n,) + codes.shape)
    gn = np.broadcast_to(gn, (n,) + codes.shape)
    w = (dev.read_noise.sample(gp, rng, gp, dev.age_s)
         - dev.read_noise.sample(gn, rng, gn, dev.age_s)) * k
    np.testing.assert_allclose(w.var(axis=0) / pm.read_var, 1.0, atol=0.05)
    np.testing.assert_allclose(w.mean(axis=0), pm.w_eff, atol=6 * np.sqrt(pm.read_var.max() / n))


def test_read_var_scales_with_compensation_squared():
    t = 86400.0
    common = ["read.model=constant", "read.sigma_uS=0.5", "drift.model=constant", "drift.nu_mean=0.05"]
    on = Device("int4", seed=1, age_s=t, overrides=common + ["drift.compensation=analog_fold"])
    codes = np.random.default_rng(0).integers(-7, 8, size=(10, 10)).astype(np.int8)
    pm = on.program(codes, "W")
    k = 7 / 25.0 * pm.drift_compensation
    np.testing.assert_allclose(pm.read_var, 2 * 0.5**2 * k**2, rtol=1e-6)
