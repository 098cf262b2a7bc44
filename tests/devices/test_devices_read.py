"""Read noise split into a static part (frozen into w_eff at programming/aging) and a per-read
part (read_var), against the 1/f integral (devices/README.md, "Read noise"). Seeded; each
statistical test states its tolerance."""

from __future__ import annotations

import math

import numpy as np
import pytest

import nvmstream as nvm
from nvmstream.devices import Device
from nvmstream.devices.conductance import Pcm1fReadNoise, pcm_q_s

T_READ = 250e-9


def _T(t):
    """The 1/f integral of aihwkit: max(ln((t + t_read) / (2 t_read)), 0)."""
    return max(math.log((t + T_READ) / (2 * T_READ)), 0.0)


@pytest.mark.parametrize("age", [0.5, 1.0, 3600.0, 86400.0, 31536000.0])
@pytest.mark.parametrize("window", [1e-3, 1.0, 60.0])
def test_split_variances_are_the_two_integrals(age, window):
    g = np.array([2.0, 10.0, 25.0])
    k2 = (g * pcm_q_s(g, 25.0)) ** 2
    win = Pcm1fReadNoise(25.0, T_READ, "window", window)
    s, r = win.split_var(g, g, age)
    per_read = _T(min(age, window))                       # band [1/window, 1/(2 t_read)]
    static = _T(age) - per_read                           # band [1/age, 1/window]
    np.testing.assert_allclose(r, k2 * per_read, rtol=1e-12)
    np.testing.assert_allclose(s, k2 * static, rtol=1e-12, atol=1e-300)
    if age > window:
        np.testing.assert_allclose(s, k2 * math.log((age + T_READ) / (window + T_READ)), rtol=1e-9)
    # the two parts always sum to aihwkit's total; 'frozen' puts all of it in the static part
    np.testing.assert_allclose(s + r, win.sigma(g, g, age) ** 2, rtol=1e-12)
    fs, fr = Pcm1fReadNoise(25.0, T_READ, "frozen", window).split_var(g, g, age)
    np.testing.assert_allclose(fs, k2 * _T(age), rtol=1e-12)
    assert np.all(fr == 0)
    ps, pr = Pcm1fReadNoise(25.0, T_READ, "per_read", window).split_var(g, g, age)
    assert np.all(ps == 0)
    np.testing.assert_allclose(pr, k2 * _T(age), rtol=1e-12)


def test_one_day_static_share_is_about_44_percent():
    # ln(86400 / 1) / ln(86400 / 5e-7) = 11.37 / 25.88: "roughly half" of the 1/f variance is
    # frozen over a 1 s inference window at 1 day
    m = Pcm1fReadNoise(25.0, T_READ, "window", 1.0)
    assert m.static_fraction(86400.0) == pytest.approx(math.log(86400 / 1) / math.log(86400 / 5e-7),
                                                       rel=1e-6)
    assert 0.43 < m.static_fraction(86400.0) < 0.45


def test_white_models_are_all_per_read_unless_frozen():
    g = np.array([1.0, 20.0])
    win = Device("int4", overrides=["read.model=constant", "read.sigma_uS=0.3"]).read_noise
    s, r = win.split_var(g, g, 86400.0)
    assert np.all(s == 0) and np.allclose(r, 0.09)
    fro = Device("int4", overrides=["read.model=constant", "read.sigma_uS=0.3",
                                    "read.split=frozen"]).read_noise
    s, r = fro.split_var(g, g, 86400.0)
    assert np.allclose(s, 0.09) and np.all(r == 0)


def _codes(n_out=300, n_in=300, seed=0):
    # codes in +-1..+-7: the idle cell of each pair sits at G = 0 (no noise there, no clamp)
    rng = np.random.default_rng(seed)
    c = rng.integers(1, 8, size=(n_out, n_in)) * rng.choice([-1, 1], size=(n_out, n_in))
    return c.astype(np.int8)


COMMON = ["programming.model=none", "drift.compensation=none"]


def test_static_part_is_in_w_eff_with_the_integral_variance():
    # Same seed, split 'window' vs 'per_read': the drift draws are identical (own stream), so
    # w_eff(window) - w_eff(per_read) is exactly the static draw. Its variance per pair must be
    # static_var = (qmax/gmax)^2 G^2 Q_s^2 ln((t + t_read)/(window + t_read)). z = diff / sqrt(
    # static_var) over 90k pairs: mean within 0.02 (4 SE), variance within 0.02 (SE 0.0047).
    codes = _codes()
    win = Device("pcm", seed=3, overrides=COMMON).program(codes, "W")
    per = Device("pcm", seed=3, overrides=COMMON + ["read.split=per_read"]).program(codes, "W")
    assert win.stats["static_read_noise"] and not per.stats["static_read_noise"]
    g_drift = np.abs(per.g_pos.astype(np.float64) - per.g_neg.astype(np.float64))
    g_prog = np.abs(codes.astype(np.float64)) / 7 * 25.0
    expect = (7 / 25.0) ** 2 * (g_drift * pcm_q_s(g_prog, 25.0)) ** 2 * math.log(
        (86400 + T_READ) / (1.0 + T_READ))
    np.testing.assert_allclose(win.static_var, expect, rtol=1e-5)
    z = (win.w_eff.astype(np.float64) - per.w_eff) / np.sqrt(expect)
    assert abs(z.mean()) < 0.02
    assert abs(z.var() - 1.0) < 0.02
    # the per-read part is the rest of the integral: read_var(window) + static = read_var(per_read)
    np.testing.assert_allclose(win.read_var, (7 / 25.0) ** 2 * (g_drift * pcm_q_s(g_prog, 25.0)) ** 2
                               * _T(1.0), rtol=1e-5)
    np.testing.assert_allclose(win.read_var + win.static_var, per.read_var, rtol=1e-5)


def test_frozen_reproduces_aihwkit_single_draw():
    # split 'frozen': one draw G(t) + |G(t)| Q_s sqrt(T(t)) N(0, 1), clamped at 0, the aihwkit
    # formula; read_var is zero. Variance per pair vs the aihwkit total, 90k pairs, tol 0.02.
    codes = _codes(seed=1)
    fro = Device("pcm", seed=5, overrides=COMMON + ["read.split=frozen"]).program(codes, "W")
    per = Device("pcm", seed=5, overrides=COMMON + ["read.split=per_read"]).program(codes, "W")
    assert not fro.has_read_noise
    np.testing.assert_allclose(fro.static_var, per.read_var, rtol=1e-6)
    z = (fro.w_eff.astype(np.float64) - per.w_eff) / np.sqrt(per.read_var)
    assert abs(z.mean()) < 0.02 and abs(z.var() - 1.0) < 0.02


def test_static_draw_is_deterministic_and_independent_of_other_stages():
    codes = _codes(20, 30)
    a = Device("pcm", seed=7).program(codes, "W")
    b = Device("pcm", seed=7).program(codes, "W")
    np.testing.assert_array_equal(a.w_eff, b.w_eff)     # same programming -> same frozen noise
    c = Device("pcm", seed=8).program(codes, "W")
    assert not np.array_equal(a.w_eff, c.w_eff)
    # the static draw has its own stream: the static noise of two names is uncorrelated
    d = Device("pcm", seed=7, overrides=COMMON).program(codes, "A")
    e = Device("pcm", seed=7, overrides=COMMON).program(codes, "B")
    base = Device("pcm", seed=7, overrides=COMMON + ["read.split=per_read"])
    za = (d.w_eff - base.program(codes, "A").w_eff) / np.sqrt(d.static_var)
    zb = (e.w_eff - base.program(codes, "B").w_eff) / np.sqrt(e.static_var)
    # 600 pairs: |corr| < 4 / sqrt(600) = 0.16
    assert abs(np.corrcoef(za.ravel(), zb.ravel())[0, 1]) < 0.16


def _engine(overrides, votes):
    from onnx_util import FIXTURES
    cal = np.random.default_rng(0).normal(0, 1, (8, 20, 12)).astype(np.float32)
    prog = nvm.convert(FIXTURES / "lstm1_bf.ts.onnx", calibration=cal)
    return nvm.Engine(prog, nvm.Device("pcm", seed=0, overrides=["adc.bits=0"] + overrides),
                      votes=votes)


def _states(eng, seed):
    st = eng.stream(seed=seed)
    x = np.random.default_rng(1).normal(0, 1, (6, 12)).astype(np.float32)
    for t in range(6):
        st.step(x[t])
    return st.state


def test_voting_replicas_share_the_static_part_and_differ_only_by_per_read_noise():
    # frozen: nothing is drawn per read, so every replica, stream seed and time step sees the
    # same weights -> identical states; per_read / window: the replicas differ.
    fro = _engine(["read.split=frozen"], votes=3)
    s = _states(fro, seed=1)
    np.testing.assert_array_equal(s[0], s[1])
    np.testing.assert_array_equal(s[0], s[2])
    np.testing.assert_array_equal(s, _states(fro, seed=2))
    for split in ("window", "per_read"):
        s = _states(_engine([f"read.split={split}"], votes=2), seed=1)
        assert not np.array_equal(s[0], s[1])
