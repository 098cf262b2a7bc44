"""Statistics for accuracy claims, and the calibration-set rule (numpy only).

* :func:`wilson_interval`: 95% (or any level) Wilson score interval of a proportion over n test
  items (Wilson 1927; Brown, Cai & DasGupta, Stat. Sci. 2001 recommend it over the Wald interval
  for the n and p of classification benchmarks).
* :func:`bootstrap_accuracy`: percentile bootstrap over test items x device seeds: both are
  resampled (a two-way bootstrap), so the interval covers test-set sampling error and
  chip-to-chip variation.
* :func:`mcnemar_exact`: exact McNemar test of two classifiers on the same items (two-sided
  binomial test on the discordant pairs); :func:`paired_bootstrap`: paired bootstrap of the
  accuracy difference over items x seeds. Use one of them for every "A beats B".
* :func:`balanced_subsample` / :func:`calibration_set`: a seeded random, class-balanced subset
  for calibration (never the first N rows: the shipped datasets are class-sorted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["wilson_interval", "bootstrap_accuracy", "mcnemar_exact", "paired_bootstrap",
           "balanced_subsample", "calibration_set", "Interval", "z_for_level"]


def z_for_level(level: float) -> float:
    """Two-sided normal quantile: z with P(|Z| <= z) = level (bisection on math.erf)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    lo, hi = 0.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if math.erf(mid / math.sqrt(2)) < level:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval [lo, hi] at ``level``."""

    estimate: float
    lo: float
    hi: float
    level: float = 0.95

    def fmt(self, scale: float = 100.0, digits: int = 1) -> str:
        """``"94.3 [91.4, 96.3]"`` (percent by default)."""
        f = f"{{:.{digits}f}}"
        return (f"{f.format(scale * self.estimate)} [{f.format(scale * self.lo)}, "
                f"{f.format(scale * self.hi)}]")


def wilson_interval(successes: int | float, n: int, level: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion ``successes / n``.

    centre = (p + z^2/2n) / (1 + z^2/n), half-width = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n).
    ``successes`` may be fractional (e.g. a mean over device seeds times n): the interval is
    then that of the mean accuracy over the n items.
    """
    if n <= 0:
        raise ValueError("n must be > 0")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    z = z_for_level(level)
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    lo = 0.0 if successes == 0 else max(0.0, centre - half)     # exact at the ends
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(p, lo, hi, level)


def _as_matrix(correct: np.ndarray) -> np.ndarray:
    c = np.asarray(correct, dtype=np.float64)
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2 or c.shape[1] == 0:
        raise ValueError(f"correct must be [items] or [seeds, items], got shape {c.shape}")
    return c


def bootstrap_accuracy(correct: np.ndarray, n_boot: int = 2000, level: float = 0.95,
                       seed: int = 0) -> Interval:
    """Percentile bootstrap CI of the mean accuracy of ``correct[seeds, items]`` (0/1).

    Each replicate resamples the items and, independently, the device seeds (with replacement)
    and takes the mean of the resampled block. One seed: an items-only bootstrap.
    """
    c = _as_matrix(correct)
    rng = np.random.default_rng(seed)
    s, n = c.shape
    est = float(c.mean())
    reps = np.empty(n_boot)
    for b in range(n_boot):
        ii = rng.integers(0, n, n)
        ss = rng.integers(0, s, s) if s > 1 else np.zeros(1, np.int64)
        reps[b] = c[np.ix_(ss, ii)].mean()
    a = (1 - level) / 2
    return Interval(est, float(np.quantile(reps, a)), float(np.quantile(reps, 1 - a)), level)


def _binom_two_sided(k: int, n: int) -> float:
    """Two-sided exact binomial p-value of k successes in n trials at p = 1/2."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedResult:
    """A paired comparison of A and B: accuracy difference (A - B), its CI, a p-value and the
    discordant counts (A right / B wrong, A wrong / B right)."""

    diff: float
    lo: float
    hi: float
    p_value: float
    a_only: int
    b_only: int
    method: str

    @property
    def resolved(self) -> bool:
        """True when the 95% interval excludes 0."""
        return self.lo > 0 or self.hi < 0

    def fmt(self) -> str:
        return (f"{100 * self.diff:+.1f} pt [{100 * self.lo:+.1f}, {100 * self.hi:+.1f}], "
                f"p = {self.p_value:.3g} ({self.method})")


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray,
                  level: float = 0.95) -> PairedResult:
    """Exact McNemar test on the same items (1-D 0/1 arrays): p = two-sided binomial test of
    the discordant pairs; the CI of the difference is Wald on the paired difference (with the
    p-value, the exact part)."""
    a = np.asarray(correct_a).astype(bool).ravel()
    b = np.asarray(correct_b).astype(bool).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need equal, non-empty item vectors, got {a.shape} and {b.shape}")
    n01 = int(np.sum(a & ~b))
    n10 = int(np.sum(~a & b))
    n = a.size
    d = (n01 - n10) / n
    var = ((n01 + n10) / n - d * d) / n
    z = z_for_level(level)
    half = z * math.sqrt(max(var, 0.0))
    return PairedResult(d, d - half, d + half, _binom_two_sided(n01, n01 + n10), n01, n10,
                        "exact McNemar")


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 2000,
                     level: float = 0.95, seed: int = 0) -> PairedResult:
    """Paired bootstrap of mean(A) - mean(B) over items x seeds (``[seeds, items]`` each, rows
    in the same seed order): the same item indices are drawn for both, and the same seed
    indices when A and B have as many seeds (row s of A is paired with row s of B; with
    different counts, e.g. one deterministic run against ten seeds, each side's seeds are
    resampled on their own). Two identical settings give the interval [0, 0]. p-value: twice
    the smaller tail fraction of replicates on either side of 0 (at least 1/n_boot)."""
    a, b = _as_matrix(correct_a), _as_matrix(correct_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"A and B need the same items, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    reps = np.empty(n_boot)
    for k in range(n_boot):
        ii = rng.integers(0, n, n)
        sa = rng.integers(0, a.shape[0], a.shape[0])
        sb = sa if a.shape[0] == b.shape[0] else rng.integers(0, b.shape[0], b.shape[0])
        reps[k] = a[np.ix_(sa, ii)].mean() - b[np.ix_(sb, ii)].mean()
    q = (1 - level) / 2
    p = 2 * min(np.mean(reps <= 0), np.mean(reps >= 0))
    a1, b1 = a.mean(0) > 0.5, b.mean(0) > 0.5
    return PairedResult(float(a.mean() - b.mean()), float(np.quantile(reps, q)),
                        float(np.quantile(reps, 1 - q)), float(min(1.0, max(p, 1 / n_boot))),
                        int(np.sum(a1 & ~b1)), int(np.sum(~a1 & b1)), "paired bootstrap")


def balanced_subsample(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded random subset of size min(n, len(y)) with classes as equal as
    possible: ``n // k`` per class (k classes present), the remainder to randomly chosen
    classes; a class with too few items gives all of them and the others fill up."""
    y = np.asarray(y).ravel()
    n = min(int(n), y.size)
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    pools = {c: list(rng.permutation(np.flatnonzero(y == c))) for c in classes}
    take: list[int] = []
    order = list(rng.permutation(classes))
    while len(take) < n:
        progressed = False
        for c in order:
            if len(take) == n:
                break
            if pools[c]:
                take.append(int(pools[c].pop()))
                progressed = True
        if not progressed:  # pragma: no cover - n <= y.size guarantees progress
            break
    return np.sort(np.array(take, dtype=np.int64))


def calibration_set(x: np.ndarray, y: np.ndarray | None = None, n: int = 64, seed: int = 0,
                    max_steps: int = 256) -> np.ndarray:
    """The calibration sequences: :func:`balanced_subsample` of ``x`` by its labels ``y``
    (seeded uniform subset without labels), at most ``max_steps`` steps. ``nvm.convert`` keeps
    all of them (<= 64 sequences)."""
    x = np.asarray(x, np.float32)
    if y is None:
        idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], min(n, x.shape[0]),
                                                         replace=False))
    else:
        idx = balanced_subsample(y, n, seed)
    return np.ascontiguousarray(x[idx, :max_steps])
