"""The crossbar periphery as mechanisms: DAC, read noise, ADC and VMM noise, one effect each.

Every class is built from a profile (``from_profile``), fixed by calibration on the float
model's own inputs (``calibrate`` returns a calibrated copy; the runtime's plan calls it once
per crossbar matrix) and applied by a slow, obvious numpy ``apply``. The runtime's numba
kernels (``runtime/kernels/vmm.py``) implement the same composition, in the same float64
operations, for one segment (a crossbar matrix split into row tiles ``blk``)::

    u     = DAC.apply(v)                                   # integer codes
    p_blk = sum_{i in blk} w_ij u_i                        # exact tile products
    s_blk = sum_{i in blk} var_ij u_i^2                    # read-noise variance (code units^2)
    p_blk = ReadNoise.apply(p_blk, s_blk, normals)
    q     = sum_blk ADC.apply(p_blk, blk, normals)
    z     = q * DriftCompensation.apply(scale_w) * DAC.scale   # digital gain after the ADC
    z     = VMMNoise.apply(z, normals)

and tests compose these ``apply``s to check the kernel bit for bit (noise-free) and in
distribution (noisy). Normals come from the kernel's generator in the order documented in
``runtime/kernels/rng.py``.

Later physics slots in as more stages of this chain (post-ADC drift compensation, per-tile
ADC ranges with INL/DNL, IR drop, static + per-read read noise, dynamic DAC ranges): each is
one class with the same three methods and one call in ``vmm.periphery``.

``devices.quant`` keeps the weight quantizer and its general-purpose DAC/ADC helpers (they
divide by the step; the stages here multiply by ``1/step`` as the kernels do, so the twins are
bit-exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .quant import qmax_for_bits

__all__ = ["DAC", "ADC", "ADC_RANGES", "ADC_CALIBRATIONS", "ReadNoise", "DriftCompensation", "VMMNoise"]


@dataclass(frozen=True)
class DAC:
    """Input DAC: ``bits`` signed levels over one calibrated range per matrix.

    ``step`` (model units per code) = max |calibration input| / qmax; ``bits = 0``: no DAC
    (float inputs, step 1)."""

    bits: int
    step: float = 1.0

    @classmethod
    def from_profile(cls, profile) -> "DAC":
        return cls(int(profile.dac.bits))

    @property
    def qmax(self) -> int:
        """Largest code (0: no DAC)."""
        return qmax_for_bits(self.bits) if self.bits else 0

    @property
    def scale(self) -> float:
        """Model units per code (1 without a DAC)."""
        return self.step if self.bits else 1.0

    def calibrate(self, inputs: np.ndarray) -> "DAC":
        if not self.bits:
            return replace(self, step=1.0)
        absmax = float(np.max(np.abs(inputs))) if np.size(inputs) else 0.0
        return replace(self, step=absmax / self.qmax if absmax > 0 else 1.0)

    def apply(self, v: np.ndarray) -> np.ndarray:
        """Codes (float64 integers) of ``v`` (model units); without a DAC, ``v`` as float64."""
        v = np.asarray(v, np.float64)
        if not self.bits:
            return v.copy()
        q = float(self.qmax)
        return np.clip(np.rint(v * (1.0 / self.step)), -q, q)


@dataclass(frozen=True)
class ReadNoise:
    """Per-read conductance noise, sampled per tile output where that is exact in
    distribution: ``p + sqrt(sum_i u_i^2 var_ij) * N(0, 1)`` (code units). ``var[n_out,
    n_in]`` comes from the device (``ProgrammedMatrix.read_var``, code units^2)."""

    var: np.ndarray | None = None

    @classmethod
    def from_programmed(cls, pm) -> "ReadNoise":
        return cls(np.asarray(pm.read_var) if pm.has_read_noise else None)

    @property
    def on(self) -> bool:
        return self.var is not None

    def calibrate(self, inputs: np.ndarray) -> "ReadNoise":
        return self                       # nothing to calibrate: the device fixed var

    def column_variance(self, u: np.ndarray, rows: slice) -> np.ndarray:
        """``sum_{i in rows} u_i^2 var_ij`` for codes ``u[..., n_in]``."""
        return (np.asarray(u, np.float64)[..., rows] ** 2) @ np.asarray(
            self.var, np.float64)[:, rows].T

    def apply(self, p: np.ndarray, col_var: np.ndarray, normals: np.ndarray) -> np.ndarray:
        if not self.on:
            return p
        return p + np.sqrt(col_var) * normals


#: ADC range granularity (``adc.range``): one range per (row tile, column tile), shared by
#: every column of the tile as a shared ADC bank gives, or one per (row tile, column).
ADC_RANGES = ("per_tile", "per_column")
#: ADC range calibration strategies (``adc.calibration``): see :meth:`ADC.full_scale`.
ADC_CALIBRATIONS = ("max", "percentile", "mse")
#: Candidate ranges of the ``mse`` strategy: max |partial sum| x k / MSE_GRID, k = 1..MSE_GRID.
MSE_GRID = 128


@dataclass(frozen=True)
class ADC:
    """Column ADC of each tile: ``clip(rint(p / step + noise_lsb N(0,1)), -qmax, qmax) * step``.

    ``steps[row_tiles, n_out]``: ``full_scale(|partial sums|) / qmax`` over the calibration
    inputs (``calibration = "max"``: max |partial sum|; also ``percentile``, ``mse``),
    computed with the *ideal* codes (the chip's designer calibrates before programming noise
    and drift exist), per (row tile, column tile) with ``range = "per_tile"`` (every column of
    a tile shares its tile's step: one range for a shared ADC bank) or per (row tile, column)
    with ``range = "per_column"``. ``bits = 0``: no ADC (the partial sum passes)."""

    bits: int
    noise_lsb: float = 0.0
    steps: np.ndarray | None = None
    range: str = "per_tile"
    calibration: str = "max"
    percentile: float = 99.9

    def __post_init__(self):
        if self.range not in ADC_RANGES:
            raise ValueError(f"adc.range {self.range!r}: allowed {', '.join(ADC_RANGES)}")
        if self.calibration not in ADC_CALIBRATIONS:
            raise ValueError(f"adc.calibration {self.calibration!r}: allowed "
                             f"{', '.join(ADC_CALIBRATIONS)}")

    @classmethod
    def from_profile(cls, profile) -> "ADC":
        a = profile.adc
        return cls(int(a.bits), float(a.noise_lsb), range=str(a.range),
                   calibration=str(a.calibration), percentile=float(a.percentile))

    def full_scale(self, a: np.ndarray) -> float:
        """The calibrated range (qmax * step) of one ADC group from the magnitudes ``a`` of its
        calibration partial sums: ``max``: max a; ``percentile``: the ``percentile``-th
        percentile of a (numpy's linear interpolation); ``mse``: the range among
        ``max(a) * k / MSE_GRID`` (k = 1..MSE_GRID) minimising the mean squared error
        ``mean((a - clip(rint(a / step), 0, qmax) step)^2)``, step = range / qmax (the first
        of equal minima, i.e. the smallest range)."""
        a = np.asarray(a, np.float64).reshape(-1)
        if not a.size:
            return 0.0
        top = float(a.max())
        if self.calibration == "max" or top == 0.0:
            return top
        if self.calibration == "percentile":
            return float(np.percentile(a, self.percentile))
        q = float(self.qmax)
        best, best_err = top, math.inf
        for k in range(1, MSE_GRID + 1):
            r = top * k / MSE_GRID
            st = r / q
            err = float(np.mean((a - np.minimum(np.rint(a / st), q) * st) ** 2))
            if err < best_err:
                best, best_err = r, err
        return best

    @property
    def qmax(self) -> int:
        return qmax_for_bits(self.bits) if self.bits else 0

    def calibrate(self, codes_in: np.ndarray, weight_codes: np.ndarray,
                  tile_rows: int, tile_cols: int | None = None) -> "ADC":
        """``codes_in[N, n_in]``: DAC codes (or float inputs) of the calibration set;
        ``weight_codes[n_out, n_in]``: ideal integer weight codes; ``tile_cols``: columns per
        tile (``per_tile`` shares one step over each block of ``tile_cols`` outputs; None = all
        outputs in one column tile)."""
        if not self.bits:
            return self
        U = np.asarray(codes_in, np.float64)
        Q = np.asarray(weight_codes, np.float64)
        n_out, n_in = Q.shape
        tc = n_out if tile_cols is None else max(1, int(tile_cols))
        nblk = max(1, math.ceil(n_in / tile_rows))
        steps = np.ones((nblk, n_out))
        for blk in range(nblk):
            r0, r1 = blk * tile_rows, min(n_in, (blk + 1) * tile_rows)
            part = U[:, r0:r1] @ Q[:, r0:r1].T if U.size else np.zeros((1, n_out))
            a = np.abs(part)
            amax = np.zeros(n_out)
            groups = (range(0, n_out, tc) if self.range == "per_tile" else range(n_out))
            width = tc if self.range == "per_tile" else 1
            for c0 in groups:
                amax[c0:c0 + width] = self.full_scale(a[:, c0:c0 + width])
            steps[blk] = np.where(amax > 0, amax / self.qmax, 1.0)
        return replace(self, steps=steps)

    def apply(self, p: np.ndarray, blk: int, normals: np.ndarray | None = None) -> np.ndarray:
        """Tile ``blk``'s partial sums ``p[..., n_out]`` (code units) after the ADC."""
        if not self.bits:
            return p
        st = self.steps[blk]
        x = p / st
        if self.noise_lsb > 0:
            x = x + self.noise_lsb * normals
        q = float(self.qmax)
        return np.minimum(np.maximum(np.rint(x), -q), q) * st


@dataclass(frozen=True)
class VMMNoise:
    """VMM noise at a signal-to-noise power ratio (Qin & Vucinic, arXiv 1811.10649):
    ``z + N(0, P / 10^(snr_db/10))`` on each output, P the matrix's mean float output power
    on the calibration set."""

    snr_db: float = math.inf
    sigma: float = 0.0

    @classmethod
    def from_profile(cls, profile) -> "VMMNoise":
        return cls(float(profile.vmm_noise.snr_db))

    def calibrate(self, inputs: np.ndarray, W: np.ndarray) -> "VMMNoise":
        if not math.isfinite(self.snr_db):
            return replace(self, sigma=0.0)
        V = np.asarray(inputs, np.float64)
        power = float(np.mean((V @ np.asarray(W, np.float64).T) ** 2)) if V.size else 0.0
        return replace(self, sigma=math.sqrt(power / 10 ** (self.snr_db / 10)))

    def apply(self, z: np.ndarray, normals: np.ndarray | None = None) -> np.ndarray:
        if self.sigma <= 0:
            return z
        return z + self.sigma * normals


#: drift.compensation modes applied by the periphery (after the ADC); 'analog_fold' is the
#: device's (folded into w_eff before the ADC, devices/device.py).
DIGITAL_COMPENSATION = ("global", "per_column")


@dataclass(frozen=True)
class DriftCompensation:
    """Digital drift compensation after the ADC (aihwkit ``GlobalDriftCompensation`` /
    ``PerColumnDriftCompensation``).

    The reference input is ``eye(n_in)`` at the full-scale DAC code (one word line driven at a
    time; ``umax`` = the DAC's qmax, 1 without a DAC). It is read through the real path --
    tile products, per-read noise, ADC (with its noise), digital sum over tiles -- once with
    the weights at t0 (``w_t0``, ``var_t0``, the programming-time ADC ranges) and once at the
    device age (``w_eff``, ``read_var``, the ADC ranges in force at that age), giving outputs
    ``Y[n_in, n_out]`` in code units. ``mode = "global"``: one factor
    ``c = mean|Y(t0)| / mean|Y(age)|``; ``"per_column"``: ``c_j = mean_i|Y_ij(t0)| /
    mean_i|Y_ij(age)|``. A readout of 0 (nothing measurable) gives c = 1. ``factor[n_out]``
    multiplies the ADC outputs digitally; the kernels fold it into the per-output scale
    (``apply``), which also multiplies after the ADC. ``none``/``analog_fold``: factor None."""

    mode: str = "none"
    factor: np.ndarray | None = None

    @classmethod
    def from_profile(cls, profile) -> "DriftCompensation":
        return cls(str(profile.drift.compensation))

    @property
    def digital(self) -> bool:
        return self.mode in DIGITAL_COMPENSATION

    @staticmethod
    def readout(w: np.ndarray, var: np.ndarray | None, adc: "ADC", tile_rows: int,
                umax: float, rng: np.random.Generator) -> np.ndarray:
        """Outputs ``Y[n_in, n_out]`` (code units) of the one-hot inputs ``umax * eye(n_in)``
        through read noise (``var`` code units^2, None = none) and ``adc``."""
        w = np.asarray(w, np.float64)
        n_out, n_in = w.shape
        U = umax * np.eye(n_in)
        Y = np.zeros((n_in, n_out))
        for blk in range(max(1, math.ceil(n_in / tile_rows))):
            rows = slice(blk * tile_rows, min(n_in, (blk + 1) * tile_rows))
            p = U[:, rows] @ w[:, rows].T
            if var is not None:
                sd = np.sqrt((U[:, rows] ** 2) @ np.asarray(var, np.float64)[:, rows].T)
                p = p + sd * rng.standard_normal(p.shape)
            g = rng.standard_normal(p.shape) if adc.bits and adc.noise_lsb > 0 else None
            Y += adc.apply(p, blk, g)
        return Y

    def calibrate(self, w_t0, var_t0, adc_t0: "ADC", w_age, var_age, adc_age: "ADC",
                  tile_rows: int, umax: float, rng: np.random.Generator) -> "DriftCompensation":
        if not self.digital:
            return replace(self, factor=None)
        y0 = np.abs(self.readout(w_t0, var_t0, adc_t0, tile_rows, umax, rng))
        y1 = np.abs(self.readout(w_age, var_age, adc_age, tile_rows, umax, rng))
        n_out = y0.shape[1]
        if self.mode == "global":
            r0 = np.full(n_out, y0.mean() if y0.size else 0.0)
            r1 = np.full(n_out, y1.mean() if y1.size else 0.0)
        else:
            r0, r1 = y0.mean(axis=0), y1.mean(axis=0)
        ok = (r0 > 0) & (r1 > 0)
        factor = np.where(ok, r0 / np.where(ok, r1, 1.0), 1.0)
        return replace(self, factor=factor)

    def apply(self, scale: np.ndarray) -> np.ndarray:
        """The per-output digital gain after the ADC: ``scale * factor`` (float64)."""
        scale = np.asarray(scale, np.float64)
        return scale if self.factor is None else scale * self.factor
