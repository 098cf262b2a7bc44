"""Device: the programming chain, determinism, stream independence, the exact flag; and the
per-read noise references (column read noise, VMM noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nvmstream.devices import (
    Device,
    ProfileError,
    column_read_noise_sample,
    column_read_noise_var,
    load_profile,
    quantize_weights,
    vmm_noise_sample,
    vmm_noise_sigma,
)


@pytest.fixture
def codes():
    return np.random.default_rng(0).integers(-7, 8, size=(48, 64)).astype(np.int8)


def arrays(pm):
    return [pm.codes_read, pm.g_pos, pm.g_neg, pm.w_eff, pm.read_var]


@pytest.mark.parametrize("profile", ["pcm", "rram", "nand-eol", "pcm-1y"])
def test_same_seed_same_arrays(profile, codes):
    a = Device(profile, seed=7).program(codes, "layer0.W")
    b = Device(profile, seed=7).program(codes, "layer0.W")
    for x, y in zip(arrays(a), arrays(b)):
        np.testing.assert_array_equal(x, y)
    assert a.stats == b.stats and a.drift_compensation == b.drift_compensation


def test_different_seed_or_name_gives_independent_draws():
    # programming-noise residuals of the same codes under two names (or two seeds) must be
    # uncorrelated: |corr| < 5/sqrt(n) (n = 20k cells at the top level: bound 0.035)
    dev = Device("pcm", seed=1, overrides=["drift.model=none"])
    codes = np.full((100, 200), 7, np.int8)
    target = 25.0
    r_a = dev.program(codes, "A").g_pos.ravel() - target
    r_b = dev.program(codes, "B").g_pos.ravel() - target
    r_c = Device("pcm", seed=2, overrides=["drift.model=none"]).program(codes, "A").g_pos.ravel() - target
    bound = 5 / math.sqrt(codes.size)
    assert abs(np.corrcoef(r_a, r_b)[0, 1]) < bound
    assert abs(np.corrcoef(r_a, r_c)[0, 1]) < bound


def test_programming_order_does_not_matter(codes):
    d1 = Device("pcm", seed=3)
    a1, b1 = d1.program(codes, "A"), d1.program(codes[:10], "B")
    d2 = Device("pcm", seed=3)
    b2, a2 = d2.program(codes[:10], "B"), d2.program(codes, "A")
    for x, y in zip(arrays(a1) + arrays(b1), arrays(a2) + arrays(b2)):
        np.testing.assert_array_equal(x, y)


def test_switching_one_mechanism_keeps_the_others_draws(codes):
    # each stage has its own stream: turning faults on changes only the stuck cells
    # (gmin = 1 uS and programming noise: no healthy cell sits exactly at gmin)
    base = ["mapping.gmin_uS=1", "programming.model=constant", "programming.sigma_uS=0.3",
            "drift.model=constant", "drift.nu_mean=0.05", "drift.nu_sd=0.01"]
    plain = Device("int4", seed=5, age_s=1e4, overrides=base).program(codes, "W")
    faulty = Device("int4", seed=5, age_s=1e4,
                    overrides=base + ["faults.p_stuck_low=0.05"]).program(codes, "W")
    g0, g1 = np.stack([plain.g_pos, plain.g_neg]), np.stack([faulty.g_pos, faulty.g_neg])
    changed = g0 != g1
    n = g0.size
    assert changed.sum() == faulty.stats["cells_stuck_low"]
    assert abs(changed.sum() - 0.05 * n) < 5 * math.sqrt(n * 0.05 * 0.95)  # binomial, 5 sd
    assert np.all(g1[changed] == 1.0)  # stuck low at gmin, and stuck cells do not drift


def test_exact_flag(codes):
    for name in ["int4", "snr0db"]:
        pm = Device(name).program(codes, "W")
        assert pm.exact and pm.w_eff.dtype == np.float32
        np.testing.assert_array_equal(pm.w_eff, codes)
        np.testing.assert_array_equal(pm.read_var, 0)
        assert not pm.has_read_noise
    pcm = Device("pcm").program(codes, "W")
    assert not pcm.exact and pcm.has_read_noise
    assert np.any(pcm.w_eff != codes)
    # nand-eol: exact exactly when no bit flipped
    tiny = Device("nand-eol", seed=0).program(codes[:2, :2], "tiny")
    assert tiny.exact == (tiny.stats["bits_flipped"] == 0)
    big = Device("nand-eol", seed=0).program(np.zeros((256, 256), np.int8), "big")
    assert big.stats["bits_flipped"] > 0 and not big.exact
    np.testing.assert_array_equal(big.w_eff, big.codes_read)  # the analog part is still ideal
    # read noise alone does not make a matrix inexact (it is per read, in read_var)
    rn = Device("int4", overrides=["read.model=constant", "read.sigma_uS=0.1"]).program(codes, "W")
    assert rn.exact and rn.has_read_noise


def test_ideal_profile_takes_float_weights():
    W = np.random.default_rng(1).normal(size=(5, 7)).astype(np.float32)
    q, s = quantize_weights(W, 0)
    pm = Device("ideal").program(q, "W")
    assert pm.exact
    np.testing.assert_allclose(pm.w_eff * s[:, None], W, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        Device("ideal").program(W * 10, "W")


def test_program_rejects_bad_codes(codes):
    dev = Device("int4")
    with pytest.raises(ValueError, match="outside"):
        dev.program(codes.astype(np.int16) * 2, "W")
    with pytest.raises(ValueError, match="integer codes"):
        dev.program(codes.astype(np.float32), "W")
    with pytest.raises(ValueError, match="2-D"):
        dev.program(codes[0], "W")


def test_device_arguments():
    d = Device("pcm", seed=11, age_s=3600)
    assert d.age_s == 3600.0 and d.profile.drift.age_s == 3600.0 and d.seed == 11
    assert Device("pcm").age_s == 86400.0
    assert Device(load_profile("int4"), overrides={"adc.bits": 6}).profile.adc.bits == 6
    for bad in [-1, 1.5, True, "3"]:
        with pytest.raises(ValueError, match="seed"):
            Device("int4", seed=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="age_s"):
        Device("pcm", age_s=-5)
    with pytest.raises(ProfileError, match="shipped profiles"):
        Device("nope")


def test_age_changes_drift_monotonically(codes):
    # without compensation the mean |w_eff| decays with age (same seed, same nu draws)
    means = [float(np.abs(Device("pcm", seed=0, age_s=t, overrides=["drift.compensation=none"])
                         .program(codes, "W").w_eff).mean()) for t in (10.0, 3600.0, 86400.0, 3.15e7)]
    assert means[0] > means[1] > means[2] > means[3]


def test_rng_for_and_seed_for():
    d = Device("pcm", seed=9)
    a = d.rng_for("s0").standard_normal(5)
    np.testing.assert_array_equal(a, Device("pcm", seed=9).rng_for("s0").standard_normal(5))
    assert not np.array_equal(a, d.rng_for("s1").standard_normal(5))
    assert not np.array_equal(a, Device("pcm", seed=10).rng_for("s0").standard_normal(5))
    s = d.seed_for("s0")
    assert isinstance(s, int) and 0 <= s < 2**32 and s == Device("pcm", seed=9).seed_for("s0")
    assert s != d.seed_for("s1")


# --- per-read noise references --------------------------------------------------------------

def test_column_read_noise_var_formula_and_monte_carlo(rng):
    read_var = rng.uniform(0, 0.3, size=(4, 9))
    u = rng.integers(-7, 8, size=9).astype(float)
    var = column_read_noise_var(u, read_var)
    np.testing.assert_allclose(var, [sum(u[i] ** 2 * read_var[j, i] for i in range(9)) for j in range(4)])
    # batch form
    ub = np.stack([u, 2 * u])
    np.testing.assert_allclose(column_read_noise_var(ub, read_var), [var, 4 * var])
    # Monte Carlo: per-cell noise N(0, read_var) summed with weights u equals the column draw
    # in variance. 40k draws: rel. SE of a variance 0.7%; tolerance 4%.
    n = 40_000
    cell = rng.standard_normal((n, 4, 9)) * np.sqrt(read_var)
    col = cell @ u
    np.testing.assert_allclose(col.var(axis=0) / var, 1.0, atol=0.04)
    draws = np.stack([column_read_noise_sample(u, read_var, rng) for _ in range(2000)])
    np.testing.assert_allclose(draws.var(axis=0) / var, 1.0, atol=0.2)  # 2k draws: SE 3.2%


@pytest.mark.parametrize("snr_db", [0.0, 10.0, -3.0])
def test_vmm_noise_power(snr_db, rng):
    # noise power must be P / 10^(snr/10); 100k draws: rel. SE of a variance 0.45%; tol 3%
    P = 2.5
    assert vmm_noise_sigma(P, snr_db) == pytest.approx(math.sqrt(P / 10 ** (snr_db / 10)))
    pre = rng.normal(0, math.sqrt(P), size=100_000)
    noisy = vmm_noise_sample(pre, P, snr_db, rng)
    noise = noisy - pre
    assert abs(noise.var() / (P / 10 ** (snr_db / 10)) - 1) < 0.03
    # measured SNR of the draw
    assert abs(10 * math.log10(pre.var() / noise.var()) - snr_db) < 0.15


def test_vmm_noise_off_and_per_channel_power(rng):
    assert float(vmm_noise_sigma(3.0, math.inf)) == 0.0
    np.testing.assert_allclose(vmm_noise_sigma(np.array([1.0, 4.0]), 0.0), [1.0, 2.0])
    with pytest.raises(ValueError):
        vmm_noise_sigma(-1.0, 0.0)
