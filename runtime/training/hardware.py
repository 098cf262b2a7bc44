"""What a training run emulates of a device profile (numpy only: no torch here).

Everything is taken from the emulator's own definitions, so "trained for profile P" means the
chip that ``nvm.Engine(prog, nvm.Device(P))`` runs:

* bit widths, tile height and ADC noise come from the loaded :class:`DeviceProfile`;
* the quantizers are :func:`nvmstream.devices.quant.dac_codes` and
  :func:`~nvmstream.devices.quant.adc_codes` (the training layers call them for their forward
  values and use straight-through gradients), weight codes are
  :func:`~nvmstream.devices.quant.quantize_weights`' rule;
* :func:`calibrate_matrix` is the calibration rule of runtime/plan.py (DAC step from max |input|,
  ADC step per (row tile, column) from max |partial sum| of the ideal codes, VMM-noise power from
  the float product); ``tests/test_training_hardware.py`` checks it against ``build_plan``;
* :class:`ProgrammedWeightSampler` draws the programmed weights from the profile's
  :class:`~nvmstream.devices.Device` itself (storage bit errors and nulling, programming noise,
  stuck cells, drift at the chosen age with compensation, per-read noise variance): a new device
  seed per draw, so training sees the distribution of chips, not one chip.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np

from nvmstream.devices import Device, load_profile
from nvmstream.devices.noise import vmm_noise_sigma
from nvmstream.devices.periphery import ADC
from nvmstream.devices.profile import DeviceProfile
from nvmstream.devices.quant import qmax_for_bits

__all__ = ["HardwareSpec", "MatrixCalibration", "calibrate_matrix", "ProgrammedWeightSampler",
           "WeightDraw", "parse_age_s", "AGE_UNITS_S"]

#: seconds per unit accepted by :func:`parse_age_s`
AGE_UNITS_S = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
               "y": 365.25 * 86400.0}


def parse_age_s(text: str | float | int) -> float:
    """A device age in seconds from ``"3600"``, ``"1h"``, ``"1d"``, ``"1y"`` (units: s, min, h,
    d, w, y = 365.25 d). Raises ValueError with the accepted forms."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        v = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z]*)\s*", str(text))
        if not m or (m.group(2) and m.group(2) not in AGE_UNITS_S):
            raise ValueError(f"age {text!r}: expected seconds or a number with a unit "
                             f"({', '.join(AGE_UNITS_S)}), e.g. 1d")
        v = float(m.group(1)) * AGE_UNITS_S.get(m.group(2) or "s", 1.0)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"age {text!r}: must be a finite number of seconds >= 0")
    return v


@dataclass(frozen=True)
class HardwareSpec:
    """The quantizers and noise a training run applies. ``bits = 0``: that quantizer is off.

    ``snr_db``: VMM noise N(0, P / 10^(snr_db/10)) on every matrix output in training
    (``inf``: none); ``device_noise``: draw programmed weights from the profile's Device each
    batch; ``adc_noise_lsb``: ADC input noise in LSB (training only); ``age_s``: device age for
    drift and read noise (None: the profile's ``drift.age_s``).
    """

    weight_bits: int = 0
    dac_bits: int = 0
    adc_bits: int = 0
    tile_rows: int = 256
    tile_cols: int = 256
    adc_range: str = "per_tile"
    adc_calibration: str = "max"
    adc_percentile: float = 99.9
    snr_db: float = math.inf
    device_noise: bool = False
    adc_noise_lsb: float = 0.0
    age_s: float | None = None
    profile: str | None = None
    overrides: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_profile(cls, name: str, overrides: tuple[str, ...] | list[str] = (), *,
                     snr_db: float | None = math.inf, device_noise: bool = False,
                     adc_noise: bool = False, age_s: float | None = None) -> "HardwareSpec":
        """Bits and tile height of profile ``name`` (+ ``overrides``). ``snr_db=None`` takes the
        profile's ``vmm_noise.snr_db``; ``adc_noise`` takes its ``adc.noise_lsb``."""
        p = load_profile(name, list(overrides) or None)
        snr = p.vmm_noise.snr_db if snr_db is None else float(snr_db)
        return cls(weight_bits=p.weights.bits, dac_bits=p.dac.bits, adc_bits=p.adc.bits,
                   tile_rows=p.tile.rows, tile_cols=p.tile.cols, adc_range=p.adc.range,
                   adc_calibration=p.adc.calibration, adc_percentile=p.adc.percentile,
                   snr_db=float(snr), device_noise=bool(device_noise),
                   adc_noise_lsb=float(p.adc.noise_lsb) if adc_noise else 0.0,
                   age_s=None if age_s is None else float(age_s),
                   profile=str(name),       # as given: a shipped name or a .toml path
                   overrides=tuple(overrides))

    @property
    def quantized(self) -> bool:
        return bool(self.weight_bits or self.dac_bits or self.adc_bits)

    @property
    def noisy(self) -> bool:
        return math.isfinite(self.snr_db) or self.device_noise or self.adc_noise_lsb > 0

    def device_profile(self) -> DeviceProfile:
        """The profile (with overrides and age) the device-noise draws use."""
        if self.profile is None:
            raise ValueError("a float HardwareSpec has no device profile")
        p = load_profile(self.profile, list(self.overrides) or None)
        if self.age_s is not None:
            p = p.with_overrides({"drift.age_s": float(self.age_s)})
        return p

    def to_dict(self) -> dict:
        d = asdict(self)
        d["snr_db"] = None if math.isinf(self.snr_db) else self.snr_db
        d["overrides"] = list(self.overrides)
        return d


# ------------------------------------------------------------------------------ calibration
@dataclass(frozen=True)
class MatrixCalibration:
    """DAC step (input units per code), ADC steps ``[row_tiles, out]`` (code-product units per
    LSB; None without ADC) and VMM-noise power P (model units^2) of one crossbar matrix."""

    dac_step: float
    adc_steps: np.ndarray | None
    power: float

    def vmm_sigma(self, snr_db: float) -> float:
        """sqrt(P / 10^(snr_db/10)) (0 for snr_db = inf), :func:`devices.noise.vmm_noise_sigma`."""
        return float(vmm_noise_sigma(self.power, snr_db))


def calibrate_matrix(V: np.ndarray, codes: np.ndarray, W: np.ndarray, dac_bits: int,
                     adc_bits: int, tile_rows: int, tile_cols: int | None = None,
                     adc_range: str = "per_tile", adc_calibration: str = "max",
                     adc_percentile: float = 99.9) -> MatrixCalibration:
    """The emulator's calibration of one matrix (runtime/plan.py's rule).

    ``V[n, in]``: the matrix's input vectors over the calibration set (float model);
    ``codes[out, in]``: its ideal weight codes; ``W[out, in]``: its weights in model units.
    DAC step = max |V| / qmax_dac (1 when max |V| = 0); ADC steps = the plan's
    :class:`~nvmstream.devices.periphery.ADC` calibration: max over V of |sum_{i in b} u_i
    codes_ji| / qmax_adc with u the DAC codes, per (row tile b, column tile) (``adc_range =
    "per_tile"``, ``tile_cols`` columns per tile, None = one column tile) or per (row tile b,
    column j) (``"per_column"``), the range set by ``adc_calibration`` (max, percentile, mse);
    1 when 0. P = mean((V W^T)^2).
    """
    V = np.asarray(V, np.float64).reshape(-1, np.shape(W)[1])
    Q = np.asarray(codes, np.float64)
    qd = qmax_for_bits(dac_bits) if dac_bits else 0
    absmax = float(np.max(np.abs(V))) if V.size else 0.0
    dstep = (absmax / qd if absmax > 0 else 1.0) if qd else 1.0
    steps = None
    if adc_bits:
        U = np.clip(np.rint(V / dstep), -qd, qd) if qd else V
        adc = ADC(int(adc_bits), range=adc_range, calibration=adc_calibration,
                  percentile=adc_percentile)
        steps = adc.calibrate(U, Q, tile_rows, tile_cols).steps
    power = float(np.mean((V @ np.asarray(W, np.float64).T) ** 2)) if V.size else 0.0
    return MatrixCalibration(dac_step=float(dstep), adc_steps=steps, power=power)


# ------------------------------------------------------------------------------ device draws
@dataclass(frozen=True)
class WeightDraw:
    """One programmed matrix as training sees it: ``delta = w_eff - codes`` (code units, added
    to the ideal codes in the forward pass) and the per-read noise variance ``read_var``
    (code units^2; None without read noise)."""

    delta: np.ndarray
    read_var: np.ndarray | None
    #: digital drift compensation after the ADC (``drift.compensation = global | per_column``
    #: with drift applied): the programmed weights and read-noise variance at t0 (code units)
    #: from which the engine measures its factor through the ADC, and that measurement's seed
    comp_mode: str | None = None
    w_t0: np.ndarray | None = None
    read_var_t0: np.ndarray | None = None
    w_age: np.ndarray | None = None
    comp_seed: int = 0
    comp_reference: str = "eye"          # drift.reference
    codes: np.ndarray | None = None      # the target codes (read exactly by eye_exact)

    def compensation(self, adc_steps: np.ndarray | None, adc_bits: int, adc_noise_lsb: float,
                     tile_rows: int, umax: float) -> np.ndarray | None:
        """The engine's digital compensation factor ``[n_out]`` for ADC steps ``[row_tiles,
        n_out]`` (runtime/plan.py: :class:`~nvmstream.devices.periphery.DriftCompensation`
        read through read noise and the ADC at t0 and at the age, the ADC ranges of t0: the
        profile's ``adc.track_drift = false``); None without digital compensation."""
        if self.comp_mode is None:
            return None
        from nvmstream.devices.periphery import DriftCompensation
        adc = ADC(int(adc_bits), float(adc_noise_lsb),
                  steps=None if not adc_bits else np.asarray(adc_steps, np.float64))
        comp = DriftCompensation(self.comp_mode, self.comp_reference).calibrate(
            self.w_t0, self.read_var_t0, adc, self.w_age, self.read_var, adc, tile_rows,
            umax, np.random.default_rng(self.comp_seed), self.codes)
        return comp.factor


class ProgrammedWeightSampler:
    """Draws programmed weights of a :class:`HardwareSpec`'s profile from the emulator's
    :class:`Device` (the one definition of every programming-time mechanism).

    Draw ``k`` programs the codes on ``Device(profile, seed=s_k)`` where ``s_k`` derives from
    (``seed``, ``k``) through ``numpy.random.SeedSequence``: reproducible, and each draw is a
    different chip. Matrices are programmed under their names, as the engine does.
    """

    def __init__(self, spec: HardwareSpec, seed: int = 0):
        self.spec = spec
        self.profile = spec.device_profile()
        self.seed = int(seed)
        if self.profile.weights.bits == 0:
            raise ValueError(f"profile {self.profile.name!r}: device-noise training needs "
                             "integer weight codes (weights.bits > 0)")

    def device_seed(self, draw: int) -> int:
        ss = np.random.SeedSequence([self.seed, int(draw)])
        return int(ss.generate_state(1, np.uint32)[0])

    def device(self, draw: int) -> Device:
        return Device(self.profile, seed=self.device_seed(draw))

    def draw(self, codes: dict[str, np.ndarray], draw: int) -> dict[str, WeightDraw]:
        dev = self.device(draw)
        out = {}
        for name, c in codes.items():
            c = np.asarray(c)
            pm = dev.program(c.astype(np.int8), name)
            # analog_fold / none: w_eff already holds what the ADC sees. Digital modes: the
            # ADC sees the drifted w_eff and the engine's factor, measured through the ADC at
            # the training ranges (WeightDraw.compensation), multiplies after it
            delta = (pm.w_eff.astype(np.float64) - c).astype(np.float32)
            var = pm.read_var.astype(np.float32) if pm.has_read_noise else None
            digital = (self.profile.drift.compensation in ("global", "per_column")
                       and bool(pm.stats.get("drift_applied")) and pm.w_t0 is not None)
            if digital and self.profile.adc.track_drift:
                raise ValueError("hwa training with adc.track_drift = true is not emulated "
                                 "(the engine re-calibrates the ADC on the drifted weights)")
            out[name] = WeightDraw(
                delta, var,
                comp_mode=self.profile.drift.compensation if digital else None,
                comp_reference=self.profile.drift.reference,
                codes=np.asarray(c, np.float64) if digital else None,
                w_t0=np.asarray(pm.w_t0, np.float64) if digital else None,
                read_var_t0=(np.asarray(pm.read_var_t0, np.float64)
                             if digital and pm.has_read_noise else None),
                w_age=np.asarray(pm.w_eff, np.float64) if digital else None,
                comp_seed=self.device_seed(draw) ^ 0x5EED)
        return out
