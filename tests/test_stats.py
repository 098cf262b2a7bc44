"""runtime/stats.py: intervals, paired tests and the calibration subsample (numpy only)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nvmstream.runtime.stats import (balanced_subsample, bootstrap_accuracy, calibration_set,
                                     mcnemar_exact, paired_bootstrap, wilson_interval,
                                     z_for_level)


def test_z_for_level():
    assert z_for_level(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert z_for_level(0.99) == pytest.approx(2.575829, abs=1e-6)


def test_wilson_known_values():
    """Hand-computed from the formula (z = 1.959964)."""
    iv = wilson_interval(50, 100)
    assert (iv.lo, iv.hi) == pytest.approx((0.40383, 0.59617), abs=1e-5)
    iv = wilson_interval(0, 10)
    assert iv.lo == 0.0 and iv.hi == pytest.approx(0.27753, abs=1e-5)
    iv = wilson_interval(10, 10)
    assert iv.hi == 1.0 and iv.lo == pytest.approx(0.72247, abs=1e-5)
    assert wilson_interval(348, 370).fmt() == "94.1 [91.2, 96.0]"
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_wilson_coverage():
    """Coverage of the 95% interval over 4000 binomial draws at p = 0.9, n = 50 (Brown et al.
    2001: close to nominal): within [0.925, 0.975] (the Monte Carlo sd is 0.0034)."""
    rng = np.random.default_rng(0)
    k = rng.binomial(50, 0.9, 4000)
    cover = np.mean([wilson_interval(int(v), 50).lo <= 0.9 <= wilson_interval(int(v), 50).hi
                     for v in k])
    assert 0.925 <= cover <= 0.975


def test_bootstrap_covers_items_and_seeds():
    rng = np.random.default_rng(1)
    item_p = rng.uniform(0.5, 1.0, 300)
    one = (rng.random((1, 300)) < item_p).astype(float)
    iv1 = bootstrap_accuracy(one, n_boot=1000)
    w = wilson_interval(one.sum(), 300)
    assert iv1.lo < iv1.estimate < iv1.hi
    assert iv1.hi - iv1.lo == pytest.approx(w.hi - w.lo, rel=0.2)   # same sampling error
    # seeds that differ a lot (chip-to-chip) widen the interval
    seeds = np.stack([(rng.random(300) < item_p * s).astype(float) for s in (0.6, 0.8, 1.0)])
    iv3 = bootstrap_accuracy(seeds, n_boot=1000)
    items_only = bootstrap_accuracy(seeds.mean(0, keepdims=True), n_boot=1000)
    assert iv3.hi - iv3.lo > items_only.hi - items_only.lo


def test_mcnemar_exact():
    a = np.array([1] * 10 + [1] * 20 + [0] * 5)
    b = np.array([0] * 10 + [1] * 20 + [0] * 5)
    r = mcnemar_exact(a, b)
    assert (r.a_only, r.b_only) == (10, 0)
    assert r.p_value == pytest.approx(2 / 2 ** 10)
    assert r.diff == pytest.approx(10 / 35) and r.resolved
    same = mcnemar_exact(a, a)
    assert same.p_value == 1.0 and not same.resolved
    # symmetric discordance: 5 vs 5 -> p = 1
    c = np.array([1] * 5 + [0] * 5 + [1] * 10)
    d = np.array([0] * 5 + [1] * 5 + [1] * 10)
    assert mcnemar_exact(c, d).p_value == 1.0


def test_paired_bootstrap_resolves_real_differences_only():
    rng = np.random.default_rng(2)
    base = (rng.random((3, 400)) < 0.8).astype(float)
    better = np.maximum(base, (rng.random((3, 400)) < 0.3))   # strictly more right
    r = paired_bootstrap(better, base, n_boot=1000)
    assert r.diff > 0 and r.resolved and r.p_value < 0.01
    noise = (rng.random((3, 400)) < 0.8).astype(float)
    r0 = paired_bootstrap(noise, base, n_boot=1000)
    assert r0.lo < 0 < r0.hi


def test_paired_bootstrap_pairs_seed_with_seed():
    """Rows of A and B are the same device seeds: they are resampled together, so a setting
    compared with itself has the interval [0, 0] (seeds resampled apart gave about +-6 pt on
    seeds this different), and a constant gain on every seed is resolved however much the
    seeds differ from each other."""
    rng = np.random.default_rng(5)
    good = rng.random((10, 200)) < 0.9
    bad = rng.random((10, 200)) < 0.3
    a = np.where(np.arange(10)[:, None] % 2 == 0, good, bad).astype(float)  # seeds vary a lot
    same = paired_bootstrap(a, a.copy(), n_boot=500)
    assert same.lo == same.hi == 0.0
    better = a.copy()
    better[:, :4] = 1.0
    lifted = paired_bootstrap(better, a, n_boot=500)
    assert lifted.resolved and lifted.lo > 0
    one_vs_ten = paired_bootstrap(a[:1], a, n_boot=500)      # no seed pairing possible
    assert one_vs_ten.lo < one_vs_ten.hi


def test_balanced_subsample_of_class_sorted_data():
    y = np.repeat(np.arange(9), 30)              # class-sorted, like the shipped data
    idx = balanced_subsample(y, 64, seed=0)
    counts = np.bincount(y[idx], minlength=9)
    assert idx.size == 64 and len(set(idx)) == 64
    assert counts.min() == 7 and counts.max() == 8
    assert np.array_equal(idx, balanced_subsample(y, 64, seed=0))
    assert not np.array_equal(idx, balanced_subsample(y, 64, seed=1))
    # a rare class gives all it has, the others fill up
    y2 = np.array([0] * 2 + [1] * 100 + [2] * 100)
    c2 = np.bincount(y2[balanced_subsample(y2, 30)], minlength=3)
    assert c2[0] == 2 and c2.sum() == 30 and abs(c2[1] - c2[2]) <= 1
    assert balanced_subsample(y2, 500).size == y2.size


def test_calibration_set():
    x = np.arange(270 * 29 * 2, dtype=np.float32).reshape(270, 29, 2)
    y = np.repeat(np.arange(9), 30)
    cal = calibration_set(x, y)
    assert cal.shape == (64, 29, 2)
    rows = cal[:, 0, 0] / (29 * 2)
    assert len(np.unique(y[rows.astype(int)])) == 9      # every class, not x[:64]
    assert calibration_set(x, None).shape == (64, 29, 2)
    assert math.isclose(calibration_set(x[:10], y[:10]).shape[0], 10)
