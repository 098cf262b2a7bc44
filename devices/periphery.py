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

__all__ = ["DAC", "DAC_RANGES", "ADC", "ADC_RANGES", "ADC_CALIBRATIONS", "ReadNoise", "DriftCompensation", "VMMNoise",
           "VMM_REFERENCES", "VMM_POSITIONS", "IRDrop"]


#: DAC range modes (``dac.range``).
DAC_RANGES = ("static", "dynamic")


@dataclass(frozen=True)
class DAC:
    """Input DAC: ``bits`` signed levels over one range.

    ``range = "static"``: one calibrated range per matrix, ``step`` (model units per code) =
    max |calibration input| / qmax. ``"dynamic"`` (aihwkit's noise management ``ABS_MAX``):
    each input vector is scaled by its own max, step_v = max_i |v_i| / qmax (1 for a zero
    vector), and the digital side multiplies the outputs by step_v; ``step`` keeps the static
    calibration as the reference scale of analog quantities given in model units (VMM noise
    before the ADC). ``bits = 0``: no DAC (float inputs, step 1)."""

    bits: int
    step: float = 1.0
    range: str = "static"

    def __post_init__(self):
        if self.range not in DAC_RANGES:
            raise ValueError(f"dac.range {self.range!r}: allowed {', '.join(DAC_RANGES)}")

    @classmethod
    def from_profile(cls, profile) -> "DAC":
        return cls(int(profile.dac.bits), range=str(profile.dac.range))

    @property
    def qmax(self) -> int:
        """Largest code (0: no DAC)."""
        return qmax_for_bits(self.bits) if self.bits else 0

    @property
    def dynamic(self) -> bool:
        return bool(self.bits) and self.range == "dynamic"

    @property
    def scale(self) -> float:
        """Model units per code of the static range (1 without a DAC)."""
        return self.step if self.bits else 1.0

    def calibrate(self, inputs: np.ndarray) -> "DAC":
        if not self.bits:
            return replace(self, step=1.0)
        absmax = float(np.max(np.abs(inputs))) if np.size(inputs) else 0.0
        return replace(self, step=absmax / self.qmax if absmax > 0 else 1.0)

    def vector_steps(self, v: np.ndarray) -> np.ndarray:
        """``dynamic``: each vector's step ``max|v| / qmax`` (1 for a zero vector), ``[...]``."""
        m = np.max(np.abs(np.asarray(v, np.float64)), axis=-1)
        safe = np.where(m > 0, m, 1.0)
        return np.where(m > 0, safe / float(self.qmax), 1.0)

    def output_scale(self, v: np.ndarray):
        """The digital factor (model units per code) the outputs of ``v`` are multiplied by:
        the static step, or each vector's own (``[..., 1]``) when dynamic."""
        if self.dynamic:
            return self.vector_steps(v)[..., None]
        return self.scale

    def apply(self, v: np.ndarray) -> np.ndarray:
        """Codes (float64 integers) of ``v`` (model units); without a DAC, ``v`` as float64."""
        v = np.asarray(v, np.float64)
        if not self.bits:
            return v.copy()
        q = float(self.qmax)
        if self.dynamic:
            inv = 1.0 / self.vector_steps(v)[..., None]
            return np.clip(np.rint(v * inv), -q, q)
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
    """Column ADC of each tile: ``clip(rint(p / step + noise_lsb N(0,1)), -qmax, qmax) * step``;
    with per-instance mismatch (:meth:`draw_mismatch`) ``x = (p / step + noise) * gain +
    offset`` is coded by the instance's decision levels (``#(levels <= x) - qmax``; without
    INL, ``clip(rint(x))``), and the digital side reads ``code * step`` as for an ideal ADC.

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
    offset_lsb: float = 0.0
    gain_sd: float = 0.0
    inl_lsb: float = 0.0
    cols_per_adc: int = 1
    gain: np.ndarray | None = None        # [row_tiles, n_out] per-column view of its ADC's gain
    offset: np.ndarray | None = None      # [row_tiles, n_out] offsets (LSB)
    thresholds: np.ndarray | None = None  # [row_tiles, n_out, 2 qmax] decision levels (LSB)

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
                   calibration=str(a.calibration), percentile=float(a.percentile),
                   offset_lsb=float(a.offset_lsb), gain_sd=float(a.gain_sd),
                   inl_lsb=float(a.inl_lsb), cols_per_adc=int(profile.energy.cols_per_adc))

    @property
    def mismatched(self) -> bool:
        """True when the ADC instances carry drawn offset/gain/INL errors."""
        return self.gain is not None

    def draw_mismatch(self, n_out: int, row_tiles: int, tile_cols: int,
                      rng: np.random.Generator) -> "ADC":
        """Draw each ADC instance's static errors (once, at programming time).

        An instance serves ``cols_per_adc`` adjacent columns of one tile (``energy.cols_per_adc``
        multiplexed columns; column j of a tile uses ADC ``(j mod tile_cols) // cols_per_adc``)
        and every row tile has its own. Per instance: gain ``1 + gain_sd N(0,1)``, offset
        ``offset_lsb N(0,1)`` LSB and (``inl_lsb > 0``) its ``2 qmax`` decision levels
        ``k + 1/2 + inl_lsb N(0,1)``, k = -qmax..qmax-1, sorted (a monotone converter; levels
        that cross leave a missing code). Draw order: gains, offsets, levels, instance by
        instance (row tile, column tile, ADC). Off (all zero): returns self unchanged."""
        if not self.bits or (self.offset_lsb == 0 and self.gain_sd == 0 and self.inl_lsb == 0):
            return self
        tc = max(1, int(tile_cols))
        cpa = max(1, min(int(self.cols_per_adc), tc))
        col_tiles = math.ceil(n_out / tc)
        per_tile = math.ceil(tc / cpa)
        n_inst = row_tiles * col_tiles * per_tile
        gains = 1.0 + self.gain_sd * rng.standard_normal(n_inst)
        offs = self.offset_lsb * rng.standard_normal(n_inst)
        q = self.qmax
        thr = None
        if self.inl_lsb > 0:
            ideal = np.arange(-q, q) + 0.5
            thr = np.sort(ideal + self.inl_lsb * rng.standard_normal((n_inst, 2 * q)), axis=1)
        j = np.arange(n_out)
        inst_of_col = (j // tc) * per_tile + (j % tc) // cpa           # within a row tile
        idx = np.arange(row_tiles)[:, None] * (col_tiles * per_tile) + inst_of_col[None, :]
        return replace(self, gain=gains[idx], offset=offs[idx],
                       thresholds=None if thr is None else thr[idx])

    def instance_of(self, n_out: int, tile_cols: int) -> np.ndarray:
        """Index of the ADC instance within a row tile that reads each column ``[n_out]``."""
        tc = max(1, int(tile_cols))
        cpa = max(1, min(int(self.cols_per_adc), tc))
        j = np.arange(n_out)
        return (j // tc) * math.ceil(tc / cpa) + (j % tc) // cpa

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
        if self.gain is not None:
            x = x * self.gain[blk] + self.offset[blk]
            if self.thresholds is not None:     # code = #(levels <= x) - qmax
                c = np.sum(self.thresholds[blk] <= np.asarray(x)[..., None], axis=-1) - q
                return c * st
        return np.minimum(np.maximum(np.rint(x), -q), q) * st


#: VMM-noise power references (``vmm_noise.reference``): what P in ``P / 10^(snr_db/10)`` is.
VMM_REFERENCES = ("layer", "gate", "unit")
#: Where the VMM noise enters (``vmm_noise.position``).
VMM_POSITIONS = ("after_adc", "before_adc")


@dataclass(frozen=True)
class VMMNoise:
    """VMM noise at a signal-to-noise power ratio (Qin & Vucinic, arXiv 1811.10649):
    ``N(0, P / 10^(snr_db/10))`` on each output of a crossbar matrix.

    P (model units^2) is the matrix's float output power on the calibration set, bias
    excluded: ``reference = "layer"`` the mean over all its outputs (the paper's per-layer
    power; one sigma per matrix); ``"gate"`` the mean over each gate's outputs (an LSTM
    matrix's i/o/f/c blocks of H rows; ``gates`` blocks of equal size; a Dense layer is one
    gate); ``"unit"`` each output's own mean square. ``sigmas[n_out]`` (model units).

    ``position = "after_adc"``: added to the digital output ``z`` (model units) after the ADC
    and the per-output scale (nvmstream <= issue 13, the paper's setting). ``"before_adc"``: an
    analog noise on each tile column's partial sum before its ADC, in code units
    ``sigmas / (scale_j * dac_scale) / sqrt(row_tiles)`` per tile (:meth:`code_sigmas`), so
    its total variance before quantization equals the after-ADC variance; the ADC then clips
    and quantizes it."""

    snr_db: float = math.inf
    sigma: float = 0.0
    reference: str = "layer"
    position: str = "after_adc"
    sigmas: np.ndarray | None = None

    def __post_init__(self):
        if self.reference not in VMM_REFERENCES:
            raise ValueError(f"vmm_noise.reference {self.reference!r}: allowed "
                             f"{', '.join(VMM_REFERENCES)}")
        if self.position not in VMM_POSITIONS:
            raise ValueError(f"vmm_noise.position {self.position!r}: allowed "
                             f"{', '.join(VMM_POSITIONS)}")

    @classmethod
    def from_profile(cls, profile) -> "VMMNoise":
        v = profile.vmm_noise
        return cls(float(v.snr_db), reference=str(v.reference), position=str(v.position))

    @property
    def on(self) -> bool:
        return self.sigma > 0

    @property
    def before_adc(self) -> bool:
        return self.on and self.position == "before_adc"

    @staticmethod
    def output_power(inputs: np.ndarray, W: np.ndarray) -> np.ndarray:
        """Mean square of each float output ``[n_out]`` (model units^2) over ``inputs``."""
        V = np.asarray(inputs, np.float64)
        W = np.asarray(W, np.float64)
        if not V.size:
            return np.zeros(W.shape[0])
        return np.mean((V @ W.T) ** 2, axis=0)

    def reference_power(self, inputs: np.ndarray, W: np.ndarray, gates: int = 1) -> np.ndarray:
        """P per output ``[n_out]`` for this reference (see the class docstring)."""
        pj = self.output_power(inputs, W)
        n_out = pj.size
        if self.reference == "unit":
            return pj
        if self.reference == "gate" and gates > 1 and n_out % gates == 0:
            return np.repeat(pj.reshape(gates, -1).mean(axis=1), n_out // gates)
        V = np.asarray(inputs, np.float64)     # layer (and one-gate matrices): as <= issue 13
        power = float(np.mean((V @ np.asarray(W, np.float64).T) ** 2)) if V.size else 0.0
        return np.full(n_out, power)

    def calibrate(self, inputs: np.ndarray, W: np.ndarray, gates: int = 1) -> "VMMNoise":
        if not math.isfinite(self.snr_db):
            return replace(self, sigma=0.0, sigmas=None)
        sig = np.sqrt(self.reference_power(inputs, W, gates) / 10 ** (self.snr_db / 10))
        rms = float(np.sqrt(np.mean(sig ** 2))) if sig.size else 0.0
        if self.reference == "layer" or (sig.size and np.all(sig == sig[0])):
            rms = float(sig[0]) if sig.size else 0.0
        return replace(self, sigma=rms, sigmas=sig)

    def snr_per_gate_db(self, inputs: np.ndarray, W: np.ndarray, gates: int = 1) -> np.ndarray:
        """Effective SNR (dB) of each gate block on ``inputs``: ``10 log10(mean_{j in gate}
        P_j / mean_{j in gate} sigma_j^2)`` (inf without noise, -inf for a silent gate)."""
        pj = self.output_power(inputs, W)
        g = gates if gates > 1 and pj.size % gates == 0 else 1
        p = pj.reshape(g, -1).mean(axis=1)
        if not self.on:
            return np.full(g, math.inf)
        nv = (np.asarray(self.sigmas, np.float64) ** 2).reshape(g, -1).mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return 10 * np.log10(p / nv)

    def code_sigmas(self, scale: np.ndarray, dac_scale: float, row_tiles: int) -> np.ndarray:
        """``before_adc``: the per-tile sigma of each column in code units (see the class)."""
        s = np.asarray(scale, np.float64) * float(dac_scale)
        safe = np.where(s > 0, s, 1.0)
        return np.where(s > 0, np.asarray(self.sigmas, np.float64) / safe, 0.0) / math.sqrt(
            max(1, int(row_tiles)))

    def apply_analog(self, p: np.ndarray, code_sigmas: np.ndarray,
                     normals: np.ndarray | None = None) -> np.ndarray:
        """``before_adc``: a tile's partial sums (code units) plus its analog VMM noise."""
        if not self.before_adc:
            return p
        return p + code_sigmas * normals

    def apply(self, z: np.ndarray, normals: np.ndarray | None = None) -> np.ndarray:
        """``after_adc``: the digital output (model units) plus the VMM noise."""
        if not self.on or self.position != "after_adc":
            return z
        return z + self.sigmas * normals


@dataclass(frozen=True)
class IRDrop:
    """First-order IR drop along each tile column (``tile.wire_ohm`` > 0).

    A column of n cells (the rows of one row tile) carries its cells' currents to the sense
    amplifier through n wire segments of resistance r (Ohm). To first order, with the currents
    spread evenly along the column and inputs applied at the read voltage for a time set by
    the input (pulse-width coding, as aihwkit's IR-drop model), each physical column loses the
    fraction ``r n (I / V) / 3`` of its current, I / V its accumulated current per volt; for
    a differential pair the output ``y = I+ - I-`` loses ``delta = r n S / 3`` with
    ``S = sum_i (G+_ij + G-_ij) |u_i| / umax`` (siemens), the total current of both columns per
    volt: ``y' = y max(1 - delta, 0)``. A full-scale column (every cell at gmax in one column
    of each pair, every input at full scale, gmin = 0) gives ``delta = r n^2 gmax / 3``.

    ``cond[n_out, n_in]``: ``(G+ + G-) / umax`` (uS per DAC code) of the programmed cells at
    the device age; ``k[row_tiles]``: ``r n_blk / 3 * 1e-6`` (n_blk the rows of each row tile
    in use)."""

    wire_ohm: float = 0.0
    cond: np.ndarray | None = None
    k: np.ndarray | None = None

    @classmethod
    def from_profile(cls, profile) -> "IRDrop":
        return cls(float(profile.tile.wire_ohm))

    @property
    def on(self) -> bool:
        return self.wire_ohm > 0 and self.cond is not None

    def calibrate(self, g_pos: np.ndarray, g_neg: np.ndarray, umax: float,
                  tile_rows: int) -> "IRDrop":
        if self.wire_ohm <= 0:
            return replace(self, cond=None, k=None)
        cond = (np.asarray(g_pos, np.float64) + np.asarray(g_neg, np.float64)) / float(umax)
        n_in = cond.shape[1]
        nblk = max(1, math.ceil(n_in / tile_rows))
        rows = np.array([min(n_in, (b + 1) * tile_rows) - b * tile_rows for b in range(nblk)])
        return replace(self, cond=cond, k=self.wire_ohm * rows / 3.0 * 1e-6)

    def current(self, u: np.ndarray, rows: slice) -> np.ndarray:
        """``S`` in uS: ``sum_{i in rows} cond_ji |u_i|`` for codes ``u[..., n_in]``."""
        return np.abs(np.asarray(u, np.float64)[..., rows]) @ np.asarray(
            self.cond, np.float64)[:, rows].T

    def apply(self, p: np.ndarray, cur: np.ndarray, blk: int) -> np.ndarray:
        """Tile ``blk``'s column outputs (code units) after the IR drop."""
        if not self.on:
            return p
        return p * np.maximum(1.0 - self.k[blk] * cur, 0.0)


#: drift.compensation modes applied by the periphery (after the ADC); 'analog_fold' is the
#: device's (folded into w_eff before the ADC, devices/device.py).
DIGITAL_COMPENSATION = ("global", "per_column")


@dataclass(frozen=True)
class DriftCompensation:
    """Digital drift compensation after the ADC (aihwkit ``GlobalDriftCompensation`` /
    ``PerColumnDriftCompensation``).

    ``reference = "eye"`` (aihwkit >= 0.7.0): the reference input is ``eye(n_in)`` at the
    full-scale DAC code (one word line driven at a time; ``umax`` = the DAC's qmax, 1 without a
    DAC). It is read through the real path -- tile products, per-read noise, ADC (with its
    noise), digital sum over tiles -- once with the weights at t0 (``w_t0``, ``var_t0``, the
    programming-time ADC ranges) and once at the device age (``w_eff``, ``read_var``, the ADC
    ranges in force at that age), giving outputs ``Y[n_in, n_out]`` in code units.
    ``mode = "global"``: one factor ``c = mean|Y(t0)| / mean|Y(age)|``; ``"per_column"``:
    ``c_j = mean_i|Y_ij(t0)| / mean_i|Y_ij(age)|``. ``"eye_exact"`` (aihwkit 1.1.0's
    ``GlobalDriftCompensationWithExactReference``; per column likewise): ``Y(t0) = umax *
    codes.T`` computed exactly from the target codes (no programming noise, read noise or
    ADC). ``"ones"`` (aihwkit < 0.7.0): one input ``umax * ones(n_in)``, ``Y[1, n_out]``, and
    the readout is ``max_j |Y_j|`` (global) or ``|Y_j|`` (per column). A readout of 0
    (nothing measurable) gives c = 1. ``factor[n_out]`` multiplies the ADC outputs digitally;
    the kernels fold it into the per-output scale (``apply``), which also multiplies after
    the ADC. ``none``/``analog_fold``: factor None."""

    mode: str = "none"
    reference: str = "eye"
    factor: np.ndarray | None = None

    @classmethod
    def from_profile(cls, profile) -> "DriftCompensation":
        return cls(str(profile.drift.compensation), str(profile.drift.reference))

    @property
    def digital(self) -> bool:
        return self.mode in DIGITAL_COMPENSATION

    @staticmethod
    def readout(w: np.ndarray, var: np.ndarray | None, adc: "ADC", tile_rows: int,
                umax: float, rng: np.random.Generator, ones: bool = False) -> np.ndarray:
        """Outputs ``Y[n_in, n_out]`` (code units) of the one-hot inputs ``umax * eye(n_in)``
        (``ones``: ``Y[1, n_out]`` of the input ``umax * ones(n_in)``) through read noise
        (``var`` code units^2, None = none) and ``adc``."""
        w = np.asarray(w, np.float64)
        n_out, n_in = w.shape
        U = umax * (np.ones((1, n_in)) if ones else np.eye(n_in))
        Y = np.zeros((U.shape[0], n_out))
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
                  tile_rows: int, umax: float, rng: np.random.Generator,
                  codes: np.ndarray | None = None) -> "DriftCompensation":
        """The factor from the reference readouts (class docstring); ``codes`` [n_out, n_in]:
        the target codes, which ``reference = "eye_exact"`` reads exactly at t0."""
        if not self.digital:
            return replace(self, factor=None)
        ones = self.reference == "ones"
        if self.reference == "eye_exact":
            if codes is None:
                raise ValueError("drift.reference = eye_exact: the target codes are needed")
            y0 = np.abs(umax * np.asarray(codes, np.float64).T)
        else:
            y0 = np.abs(self.readout(w_t0, var_t0, adc_t0, tile_rows, umax, rng, ones))
        y1 = np.abs(self.readout(w_age, var_age, adc_age, tile_rows, umax, rng, ones))
        stat = np.max if ones else np.mean
        n_out = y1.shape[1]
        if self.mode == "global":
            r0 = np.full(n_out, stat(y0) if y0.size else 0.0)
            r1 = np.full(n_out, stat(y1) if y1.size else 0.0)
        else:
            r0, r1 = stat(y0, axis=0), stat(y1, axis=0)
        ok = (r0 > 0) & (r1 > 0)
        factor = np.where(ok, r0 / np.where(ok, r1, 1.0), 1.0)
        return replace(self, factor=factor)

    def apply(self, scale: np.ndarray) -> np.ndarray:
        """The per-output digital gain after the ADC: ``scale * factor`` (float64)."""
        scale = np.asarray(scale, np.float64)
        return scale if self.factor is None else scale * self.factor
