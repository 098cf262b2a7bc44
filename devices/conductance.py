"""Conductance-level mechanisms: differential mapping, programming noise, stuck-at faults,
drift (+ global compensation) and read-noise sigma. All conductances are in microsiemens (uS).

Each mechanism is one small class built from a :class:`~nvmstream.devices.profile.DeviceProfile`
by ``from_profile`` and chosen by name from a registry (``PROGRAMMING_MODELS``,
``DRIFT_MODELS``, ``READ_MODELS``). Random draws take an explicit ``numpy.random.Generator``.
Formulas and sources: devices/README.md.
"""

from __future__ import annotations

import math

import numpy as np

from nvmstream.devices.profile import PCM_PROG_COEFFS_US, PCM_PROG_GMAX_REF_US, DeviceProfile
from nvmstream.devices.registry import Registry

__all__ = [
    "DifferentialMapping",
    "PROGRAMMING_MODELS",
    "DRIFT_MODELS",
    "READ_MODELS",
    "READ_SPLITS",
    "NoProgrammingNoise",
    "ConstantProgrammingNoise",
    "FractionProgrammingNoise",
    "PolyProgrammingNoise",
    "PcmPolyProgrammingNoise",
    "StuckAtFaults",
    "NoDrift",
    "ConstantDrift",
    "PcmDrift",
    "RramRelaxation",
    "GlobalDriftCompensation",
    "NoReadNoise",
    "ConstantReadNoise",
    "FractionReadNoise",
    "WeightFractionReadNoise",
    "Pcm1fReadNoise",
    "pcm_drift_mu_sd",
    "pcm_q_s",
]

#: aihwkit clamps the relative conductance at this value before taking logs (``_ZERO_CLIP``).
ZERO_CLIP = 1e-7

PROGRAMMING_MODELS: Registry[type] = Registry("programming noise model")
DRIFT_MODELS: Registry[type] = Registry("drift model")
READ_MODELS: Registry[type] = Registry("read noise model")


# --- mapping -------------------------------------------------------------------------------

class DifferentialMapping:
    """Differential pair: G+ = gmin + (gmax-gmin) max(r q, 0)/qmax, G- = gmin + (gmax-gmin) max(-r q, 0)/qmax.

    r is the row's conductance gain: 1 for every row with ``scope = "per_row"`` (each row's
    largest code reaches gmax), s_j / max_k s_k with ``scope = "per_matrix"`` (only the rows
    with the largest weight scale reach gmax: aihwkit's default mapping of the matrix max).
    The weight seen by a read, in code units, is w = (G+ - G-) / (gmax - gmin) * qmax / r.
    """

    SCOPES = ("per_row", "per_matrix")

    def __init__(self, gmin_uS: float, gmax_uS: float, qmax: float, scope: str = "per_row") -> None:
        if not gmax_uS > gmin_uS >= 0:
            raise ValueError(f"need gmax > gmin >= 0, got gmin={gmin_uS}, gmax={gmax_uS}")
        if scope not in self.SCOPES:
            raise ValueError(f"unknown mapping scope {scope!r}; allowed: {', '.join(self.SCOPES)}")
        self.gmin = float(gmin_uS)
        self.gmax = float(gmax_uS)
        self.qmax = float(qmax)
        self.scope = scope
        #: code units per uS of conductance difference (for a row with gain 1)
        self.codes_per_uS = self.qmax / (self.gmax - self.gmin)

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "DifferentialMapping":
        return cls(p.mapping.gmin_uS, p.mapping.gmax_uS, p.qmax, p.mapping.scope)

    def row_gain(self, codes: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
        """Conductance gain r_j in (0, 1] of each row (float64 [out]).

        per_row: all ones. per_matrix: s_j / max s over the rows that hold a non-zero code (an
        all-zero row's scale is a placeholder and must not set the matrix range); 1 for
        all-zero rows (nothing is programmed there). ``scales`` are the per-row weight scales
        the codes were quantized with.
        """
        c = np.asarray(codes)
        n_out = c.shape[0]
        if self.scope == "per_row":
            return np.ones(n_out)
        if scales is None:
            raise ValueError("mapping.scope = 'per_matrix' needs the per-row weight scales "
                             "(Device.program(codes, name, scales=...))")
        s = np.asarray(scales, dtype=np.float64).reshape(-1)
        if s.shape != (n_out,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError(f"scales must be {n_out} finite positive numbers, got shape {s.shape}")
        live = np.any(c != 0, axis=1) if c.size else np.zeros(n_out, bool)
        if not live.any():
            return np.ones(n_out)
        return np.where(live, s / s[live].max(), 1.0)

    def to_conductance(self, codes: np.ndarray,
                       gain: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Target (G+, G-) in uS, float64, for codes in [-qmax, qmax] and row gains r."""
        q = np.asarray(codes, dtype=np.float64)
        if gain is not None:
            q = q * np.asarray(gain, dtype=np.float64)[:, None]
        span = (self.gmax - self.gmin) / self.qmax
        return self.gmin + span * np.maximum(q, 0.0), self.gmin + span * np.maximum(-q, 0.0)

    def to_weight(self, g_pos: np.ndarray, g_neg: np.ndarray,
                  gain: np.ndarray | None = None) -> np.ndarray:
        """Weight in code units (float64) that a noise-free read of the pair sees."""
        w = (np.asarray(g_pos, np.float64) - np.asarray(g_neg, np.float64)) * self.codes_per_uS
        if gain is not None:
            w = w / np.asarray(gain, dtype=np.float64)[:, None]
        return w


# --- programming noise ---------------------------------------------------------------------

class _ProgrammingNoise:
    """G_prog = clip(G + N(0, sigma(G)^2), 0, gclip), sigma from the model (uS)."""

    active = True

    def __init__(self, gclip_uS: float = math.inf) -> None:
        self.gclip = float(gclip_uS)

    def sigma(self, g_target: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, g_target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Programmed conductances (float64): one Gaussian draw per cell, then clipped."""
        g = np.asarray(g_target, dtype=np.float64)
        if not self.active:
            return g.copy()
        noisy = g + self.sigma(g) * rng.standard_normal(g.shape)
        return np.clip(noisy, 0.0, self.gclip)


@PROGRAMMING_MODELS.register("none")
class NoProgrammingNoise(_ProgrammingNoise):
    """Cells are programmed exactly to their target."""

    active = False

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "NoProgrammingNoise":
        return cls()

    def sigma(self, g_target):
        return np.zeros_like(np.asarray(g_target, dtype=np.float64))


@PROGRAMMING_MODELS.register("constant")
class ConstantProgrammingNoise(_ProgrammingNoise):
    """sigma = sigma_uS for every cell."""

    def __init__(self, sigma_uS: float, gclip_uS: float = math.inf) -> None:
        super().__init__(gclip_uS)
        self.sigma_uS = float(sigma_uS)
        self.active = self.sigma_uS > 0

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "ConstantProgrammingNoise":
        return cls(p.programming.sigma_uS, p.programming.clip_max_factor * p.mapping.gmax_uS)

    def sigma(self, g_target):
        return np.full(np.shape(g_target), self.sigma_uS)


@PROGRAMMING_MODELS.register("fraction")
class FractionProgrammingNoise(ConstantProgrammingNoise):
    """sigma = fraction * gmax for every cell."""

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "FractionProgrammingNoise":
        return cls(p.programming.fraction * p.mapping.gmax_uS,
                   p.programming.clip_max_factor * p.mapping.gmax_uS)


@PROGRAMMING_MODELS.register("poly")
class PolyProgrammingNoise(_ProgrammingNoise):
    """sigma(G) = max(0, sum_k c_k x^k) * gmax/gmax_ref, x = G/gmax (aihwkit prog_coeff form)."""

    def __init__(self, coeffs_uS, gmax_uS: float, gmax_ref_uS: float,
                 gclip_uS: float = math.inf) -> None:
        super().__init__(gclip_uS)
        self.coeffs = tuple(float(c) for c in coeffs_uS)
        self.gmax = float(gmax_uS)
        self.gmax_ref = float(gmax_ref_uS)
        self.active = any(c != 0 for c in self.coeffs)

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "PolyProgrammingNoise":
        return cls(p.programming.poly_coeffs_uS, p.mapping.gmax_uS,
                   p.programming.poly_gmax_ref_uS,
                   p.programming.clip_max_factor * p.mapping.gmax_uS)

    def sigma(self, g_target):
        x = np.asarray(g_target, dtype=np.float64) / self.gmax
        s = np.zeros_like(x)
        for c in reversed(self.coeffs):  # Horner
            s = s * x + c
        return np.maximum(s, 0.0) * (self.gmax / self.gmax_ref)


@PROGRAMMING_MODELS.register("pcm_poly")
class PcmPolyProgrammingNoise(PolyProgrammingNoise):
    """PCM: sigma = (0.26348 + 1.9650 x - 1.1731 x^2) * gmax/25 uS, x = G/gmax.

    Nandakumar et al., ICECS 2019, as aihwkit PCMLikeNoiseModel.apply_programming_noise_to_
    conductance (coefficients fitted at gmax = 25 uS; sigma scales with gmax/25).
    """

    def __init__(self, gmax_uS: float, gclip_uS: float = math.inf) -> None:
        super().__init__(PCM_PROG_COEFFS_US, gmax_uS, PCM_PROG_GMAX_REF_US, gclip_uS)

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "PcmPolyProgrammingNoise":
        return cls(p.mapping.gmax_uS, p.programming.clip_max_factor * p.mapping.gmax_uS)


# --- stuck-at faults -----------------------------------------------------------------------

class StuckAtFaults:
    """Each cell independently stuck at gmin w.p. p_low, at gmax w.p. p_high (drawn once)."""

    def __init__(self, p_low: float, p_high: float, gmin_uS: float, gmax_uS: float) -> None:
        if p_low < 0 or p_high < 0 or p_low + p_high > 1:
            raise ValueError(f"need p_low, p_high >= 0 and p_low + p_high <= 1, got {p_low}, {p_high}")
        self.p_low, self.p_high = float(p_low), float(p_high)
        self.gmin, self.gmax = float(gmin_uS), float(gmax_uS)
        self.active = (self.p_low + self.p_high) > 0

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "StuckAtFaults":
        return cls(p.faults.p_stuck_low, p.faults.p_stuck_high, p.mapping.gmin_uS, p.mapping.gmax_uS)

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Boolean masks (stuck_low, stuck_high), disjoint: one uniform draw per cell."""
        if not self.active:
            z = np.zeros(shape, dtype=bool)
            return z, z.copy()
        u = rng.random(shape)
        low = u < self.p_low
        high = (u >= self.p_low) & (u < self.p_low + self.p_high)
        return low, high

    def apply(self, g: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(G with stuck cells forced to gmin/gmax, mask of stuck cells)."""
        low, high = self.sample(np.shape(g), rng)
        out = np.where(low, self.gmin, np.where(high, self.gmax, g))
        return out, low | high


# --- drift ---------------------------------------------------------------------------------

def pcm_drift_mu_sd(g_target: np.ndarray, gmax_uS: float) -> tuple[np.ndarray, np.ndarray]:
    """PCM drift exponent statistics per cell (aihwkit PCMLikeNoiseModel.generate_drift_coefficients).

    x = max(|G_target|/gmax, 1e-7); mu = clip(-0.0155 ln x + 0.0244, 0.049, 0.1);
    sd = clip(-0.0125 ln x - 0.0059, 0.008, 0.045).
    """
    x = np.maximum(np.abs(np.asarray(g_target, dtype=np.float64)) / gmax_uS, ZERO_CLIP)
    lx = np.log(x)
    mu = np.clip(-0.0155 * lx + 0.0244, 0.049, 0.1)
    sd = np.clip(-0.0125 * lx - 0.0059, 0.008, 0.045)
    return mu, sd


class _Drift:
    """G(t) = G_prog (t/t0)^-nu for t > t0, unchanged for t <= t0; nu drawn once per cell."""

    active = True

    def __init__(self, t0_s: float) -> None:
        if not t0_s > 0:
            raise ValueError(f"t0 must be > 0, got {t0_s}")
        self.t0 = float(t0_s)

    def sample_nu(self, g_target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover

    def factor(self, nu: np.ndarray, t_s: float) -> np.ndarray | float:
        """Drift factor (t/t0)^-nu (1 for t <= t0)."""
        if t_s <= self.t0:
            return np.ones_like(np.asarray(nu, dtype=np.float64))
        return np.power(t_s / self.t0, -np.asarray(nu, dtype=np.float64))

    def applies_at(self, t_s: float) -> bool:
        """True when this model changes conductances at age ``t_s``."""
        return self.active and t_s > self.t0

    def apply(self, g_prog: np.ndarray, g_target: np.ndarray, t_s: float,
              rng: np.random.Generator, frozen: np.ndarray | None = None) -> np.ndarray:
        """Drifted conductances at age ``t_s``; cells in ``frozen`` (stuck) do not drift.

        nu is drawn from the *target* conductance (as aihwkit) even when t <= t0, so the same
        seed gives the same cells' exponents at every age.
        """
        g = np.asarray(g_prog, dtype=np.float64)
        if not self.active:
            return g.copy()
        nu = self.sample_nu(g_target, rng)
        out = g * self.factor(nu, t_s)
        if frozen is not None:
            out = np.where(frozen, g, out)
        return out


@DRIFT_MODELS.register("none")
class NoDrift(_Drift):
    """Conductances do not change with time."""

    active = False

    def __init__(self, t0_s: float = 20.0) -> None:
        super().__init__(t0_s)

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "NoDrift":
        return cls(p.drift.t0_s)

    def sample_nu(self, g_target, rng):
        return np.zeros(np.shape(g_target))


@DRIFT_MODELS.register("constant")
class ConstantDrift(_Drift):
    """nu ~ N(nu_mean, nu_sd^2) per cell, independent of G (negative nu = growth)."""

    def __init__(self, nu_mean: float, nu_sd: float, t0_s: float = 20.0) -> None:
        super().__init__(t0_s)
        self.nu_mean, self.nu_sd = float(nu_mean), float(nu_sd)
        self.active = self.nu_mean != 0 or self.nu_sd != 0

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "ConstantDrift":
        return cls(p.drift.nu_mean, p.drift.nu_sd, p.drift.t0_s)

    def sample_nu(self, g_target, rng):
        shape = np.shape(g_target)
        return self.nu_mean + self.nu_sd * rng.standard_normal(shape)


@DRIFT_MODELS.register("pcm")
class PcmDrift(_Drift):
    """PCM: nu = |N(mu(x), sd(x)^2)| per cell, x = G_target/gmax (see :func:`pcm_drift_mu_sd`).

    The absolute value follows aihwkit (``torch.abs(mu + sd * randn)``); it matters only for
    the rare draws below 0 (mu/sd >= 1.94 everywhere, >= 6 at gmax).
    """

    def __init__(self, gmax_uS: float, t0_s: float = 20.0) -> None:
        super().__init__(t0_s)
        self.gmax = float(gmax_uS)

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "PcmDrift":
        return cls(p.mapping.gmax_uS, p.drift.t0_s)

    def sample_nu(self, g_target, rng):
        mu, sd = pcm_drift_mu_sd(g_target, self.gmax)
        return np.abs(mu + sd * rng.standard_normal(mu.shape))


#: Wan et al., Nature 608, 504 (2022), NeuRRAM HfOx RRAM: standard deviation (uS) of the
#: conductance around its write-verify target vs x = G_target/gmax at 1 s, 1 day and 2 days
#: after programming, 4th-order polynomials fitted at gmax = 40 uS (aihwkit
#: ReRamWan2022NoiseModel default ``coeff_dic``, lowest order first).
RRAM_WAN2022_TIMES_S: tuple[float, ...] = (1.0, 86400.0, 172800.0)
RRAM_WAN2022_COEFFS_US: tuple[tuple[float, ...], ...] = (
    (0.348, 16.030, -43.853, 45.393, -16.815),
    (0.701, 22.086, -50.773, 47.095, -16.458),
    (0.782, 20.274, -43.507, 37.062, -11.934),
)
RRAM_WAN2022_GMAX_REF_US = 40.0


def _poly(coeffs, x):
    s = np.zeros_like(x)
    for c in reversed(coeffs):
        s = s * x + c
    return s


@DRIFT_MODELS.register("rram_wan2022")
class RramRelaxation:
    """RRAM conductance relaxation after write-verify (Wan et al., Nature 2022).

    sigma_t(x) = the measured spread around the target at age t, interpolated linearly in ln t
    between the fits at 1 s, 1 day and 2 days (held at the 1 s fit below 1 s and at the 2-day
    fit beyond 2 days: no data there), times gmax/40 uS. The 1 s spread is the programming
    noise (profile ``programming``: model 'poly' with the 1 s coefficients); relaxation adds
    an independent Gaussian increment of variance max(sigma_t^2 - sigma_1s^2, 0), so the
    spread around the target at age t is sigma_t (the measured one). One increment draw per cell
    (scaled by the age), so one seed gives one trajectory over ages. Stuck cells do not relax.
    """

    active = True

    def __init__(self, gmax_uS: float) -> None:
        self.gmax = float(gmax_uS)
        self.t0 = RRAM_WAN2022_TIMES_S[0]
        self._ln_t = np.log(np.asarray(RRAM_WAN2022_TIMES_S))

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "RramRelaxation":
        return cls(p.mapping.gmax_uS)

    def sigma_at(self, g_target: np.ndarray, t_s: float) -> np.ndarray:
        """sigma_t(G_target) in uS: the fits interpolated linearly in ln t, clipped at >= 0."""
        x = np.asarray(g_target, dtype=np.float64) / self.gmax
        sig = [np.maximum(_poly(c, x), 0.0) for c in RRAM_WAN2022_COEFFS_US]
        lt = math.log(max(t_s, 1e-300))
        if lt <= self._ln_t[0]:
            out = sig[0]
        elif lt >= self._ln_t[-1]:
            out = sig[-1]
        else:
            k = int(np.searchsorted(self._ln_t, lt)) - 1
            w = (lt - self._ln_t[k]) / (self._ln_t[k + 1] - self._ln_t[k])
            out = (1.0 - w) * sig[k] + w * sig[k + 1]
        return out * (self.gmax / RRAM_WAN2022_GMAX_REF_US)

    def increment_sigma(self, g_target: np.ndarray, t_s: float) -> np.ndarray:
        """sqrt(max(sigma_t^2 - sigma_1s^2, 0)): the spread relaxation adds by age t (uS)."""
        a = self.sigma_at(g_target, t_s)
        b = self.sigma_at(g_target, self.t0)
        return np.sqrt(np.maximum(a * a - b * b, 0.0))

    def applies_at(self, t_s: float) -> bool:
        return t_s > self.t0

    def apply(self, g_prog: np.ndarray, g_target: np.ndarray, t_s: float,
              rng: np.random.Generator, frozen: np.ndarray | None = None) -> np.ndarray:
        """G(t) = max(G_prog + increment_sigma(G_target, t) N(0, 1), 0); stuck cells unchanged."""
        g = np.asarray(g_prog, dtype=np.float64)
        z = rng.standard_normal(g.shape)
        out = np.maximum(g + self.increment_sigma(g_target, t_s) * z, 0.0)
        if frozen is not None:
            out = np.where(frozen, g, out)
        return out


class GlobalDriftCompensation:
    """One digital rescale per matrix from a noise-free reference readout (aihwkit style).

    The reference input is the set of one-hot vectors (aihwkit ``GlobalDriftCompensation.
    get_readout_tensor`` = ``eye(in)``), so the readout is mean_{j,i} |W[j, i]| with
    W = G+ - G-. It is taken once at t0 (after programming noise and faults, before drift) and
    once at the device age; the factor is readout(t0) / max(readout(age), 1e-12 * readout(t0)),
    and 1.0 for an all-zero matrix. Read noise and ADC are not part of this readout.
    """

    @staticmethod
    def readout(w: np.ndarray) -> float:
        """mean |W| over all entries: the mean |output| for the one-hot reference inputs."""
        w = np.asarray(w, dtype=np.float64)
        return float(np.mean(np.abs(w))) if w.size else 0.0

    @classmethod
    def factor(cls, w_t0: np.ndarray, w_age: np.ndarray) -> float:
        ref = cls.readout(w_t0)
        if ref == 0.0:
            return 1.0
        now = max(cls.readout(w_age), 1e-12 * ref)
        return ref / now


# --- read noise ----------------------------------------------------------------------------

def pcm_q_s(g_prog: np.ndarray, gmax_uS: float) -> np.ndarray:
    """1/f noise amplitude Q_s = min(0.0088 / max((|G_prog|/gmax)^0.65, 1e-3), 0.2)."""
    x = np.abs(np.asarray(g_prog, dtype=np.float64)) / gmax_uS
    return np.minimum(0.0088 / np.maximum(x ** 0.65, 1e-3), 0.2)


#: How the read-noise variance is split between a static part (drawn once when the device is
#: programmed or aged, folded into the effective weights) and a per-read part (fresh at every
#: read). See :class:`_ReadNoise` and devices/README.md ("Read noise").
READ_SPLITS = ("window", "frozen", "per_read")


class _ReadNoise:
    """Read noise of a cell: a read sees G + N(0, sigma_read^2) (uS), split in two parts.

    ``split`` decides which part of the variance is *static* over one inference (drawn once per
    programming/aging and frozen into the weights) and which is *per-read* (fresh each read):

    * ``"frozen"``: everything static (aihwkit's single draw per inference-time evaluation);
    * ``"per_read"``: everything per read (nvmstream <= turn 2);
    * ``"window"``: the model's own split; white-noise models (constant, fraction) are all
      per read, the 1/f model splits its spectrum at 1/window (see :class:`Pcm1fReadNoise`).
    """

    active = True

    def __init__(self, split: str = "window", window_s: float = 1.0) -> None:
        if split not in READ_SPLITS:
            raise ValueError(f"unknown read-noise split {split!r}; allowed: {', '.join(READ_SPLITS)}")
        if not window_s > 0:
            raise ValueError(f"read window must be > 0 s, got {window_s}")
        self.split = split
        self.window_s = float(window_s)

    def sigma(self, g_now: np.ndarray, g_prog: np.ndarray | None = None,
              t_s: float = 0.0) -> np.ndarray:  # pragma: no cover - abstract
        """Total read-noise standard deviation of each cell (static + per-read), uS."""
        raise NotImplementedError

    def static_fraction(self, t_s: float) -> float:
        """Fraction of the total variance that is static at age ``t_s`` (model ``window`` split)."""
        return 0.0

    def split_var(self, g_now: np.ndarray, g_prog: np.ndarray | None = None,
                  t_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(static variance, per-read variance) of each cell in uS^2; they sum to sigma^2."""
        total = self.sigma(g_now, g_prog, t_s) ** 2
        if self.split == "frozen":
            f = 1.0
        elif self.split == "per_read":
            f = 0.0
        else:
            f = self.static_fraction(t_s)
        return total * f, total * (1.0 - f)

    def sample(self, g_now: np.ndarray, rng: np.random.Generator,
               g_prog: np.ndarray | None = None, t_s: float = 0.0) -> np.ndarray:
        """One noisy read of every cell with the total variance (reference Monte Carlo)."""
        g = np.asarray(g_now, dtype=np.float64)
        return g + self.sigma(g, g_prog, t_s) * rng.standard_normal(g.shape)


@READ_MODELS.register("none")
class NoReadNoise(_ReadNoise):
    """Reads are exact."""

    active = False

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "NoReadNoise":
        return cls(p.read.split, p.read.window_s)

    def sigma(self, g_now, g_prog=None, t_s=0.0):
        return np.zeros(np.shape(g_now))


@READ_MODELS.register("constant")
class ConstantReadNoise(_ReadNoise):
    """sigma_read = sigma_uS for every cell (white: all per read under split 'window')."""

    def __init__(self, sigma_uS: float, split: str = "window", window_s: float = 1.0) -> None:
        super().__init__(split, window_s)
        self.sigma_uS = float(sigma_uS)
        self.active = self.sigma_uS > 0

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "ConstantReadNoise":
        return cls(p.read.sigma_uS, p.read.split, p.read.window_s)

    def sigma(self, g_now, g_prog=None, t_s=0.0):
        return np.full(np.shape(g_now), self.sigma_uS)


@READ_MODELS.register("fraction")
class FractionReadNoise(ConstantReadNoise):
    """sigma_read = fraction * gmax for every cell (white: all per read under split 'window')."""

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "FractionReadNoise":
        return cls(p.read.fraction * p.mapping.gmax_uS, p.read.split, p.read.window_s)


@READ_MODELS.register("weight_fraction")
class WeightFractionReadNoise(ConstantReadNoise):
    """Read noise per *weight*: sigma_w = fraction * (gmax - gmin) on G+ - G-, i.e. fraction *
    qmax in code units (aihwkit forward.w_noise with WeightNoiseType.ADDITIVE_CONSTANT, the
    short-term read noise suggested with ReRamWan2022NoiseModel). Realised as
    sigma_w / sqrt(2) on each cell of the pair: the pair difference then has variance
    sigma_w^2 exactly (model 'fraction' puts sigma on each cell: sqrt(2) more per weight).
    White: all per read under split 'window'."""

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "WeightFractionReadNoise":
        span = p.mapping.gmax_uS - p.mapping.gmin_uS
        return cls(p.read.fraction * span / math.sqrt(2.0), p.read.split, p.read.window_s)


@READ_MODELS.register("pcm_1f")
class Pcm1fReadNoise(_ReadNoise):
    """PCM 1/f read noise (aihwkit PCMLikeNoiseModel.apply_drift_noise_to_conductance):

    sigma_read = |G(t)| * Q_s(G_prog) * sqrt(T(t)), T(t) = max(ln((t + t_read) / (2 t_read)), 0),
    t = device age, Q_s = min(0.0088 / max((|G_prog|/gmax)^0.65, 1e-3), 0.2). ``g_prog``
    defaults to ``g_now``.

    T(t) is the 1/f spectrum S(f) = (G Q_s)^2 / f integrated from f = 1/t to 1/(2 t_read).
    Split ``window`` cuts it at 1/window: the per-read part is T(min(t, window)) (the band
    [1/window, 1/(2 t_read)], fluctuations faster than one inference), the static part is
    T(t) - T(min(t, window)) = ln((t + t_read)/(window + t_read)) (the band [1/t, 1/window],
    quasi-constant during one inference). The two sum to aihwkit's variance exactly.
    """

    def __init__(self, gmax_uS: float, t_read_s: float = 250e-9, split: str = "window",
                 window_s: float = 1.0) -> None:
        super().__init__(split, window_s)
        self.gmax = float(gmax_uS)
        self.t_read = float(t_read_s)

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "Pcm1fReadNoise":
        return cls(p.mapping.gmax_uS, p.read.t_read_s, p.read.split, p.read.window_s)

    def time_integral(self, t_s: float) -> float:
        """T(t) = max(ln((t + t_read) / (2 t_read)), 0): the 1/f integral up to age t."""
        return max(math.log((t_s + self.t_read) / (2.0 * self.t_read)), 0.0)

    def time_term(self, t_s: float) -> float:
        """sqrt(T(t)) = sqrt(max(ln((t + t_read) / (2 t_read)), 0))."""
        return math.sqrt(self.time_integral(t_s))

    def static_fraction(self, t_s: float) -> float:
        total = self.time_integral(t_s)
        if total <= 0.0:
            return 0.0
        per_read = self.time_integral(min(t_s, self.window_s))
        return (total - per_read) / total

    def sigma(self, g_now, g_prog=None, t_s=0.0):
        g = np.asarray(g_now, dtype=np.float64)
        gp = g if g_prog is None else np.asarray(g_prog, dtype=np.float64)
        return np.abs(g) * pcm_q_s(gp, self.gmax) * self.time_term(t_s)
