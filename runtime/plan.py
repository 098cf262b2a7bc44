"""CompiledModel + Device -> the program the kernels run (layout: runtime/kernels/layout.py).

This is where the device profile meets the model: every crossbar matrix is quantized for the
profile's weight bits, programmed on the device (storage errors, mapping, programming noise,
faults, drift), split into tiles, and given its DAC and ADC ranges by calibration.

Calibration rule (documented in docs/architecture.md):
* the float32 IR runs on the compiled model's calibration set; every matrix's input vectors are
  collected (layer inputs; previous hidden states for recurrent matrices, in the direction's time
  order; r*h for GRU with linear_before_reset=0);
* the periphery stages are :mod:`nvmstream.devices.periphery` classes; this module calls
  their ``calibrate``:
* DAC step of a matrix = max |input| / qmax_dac (one range per matrix: all its rows);
  ``dac.range = dynamic``: each vector's own max |v| / qmax at run time (the ADC ranges are then
  calibrated on the calibration inputs' dynamic codes);
* ADC step of each (row-tile, column tile) (``adc.range = per_tile``; of each (row-tile,
  column) with ``per_column``) = max |partial sum| / qmax_adc, the partial sums computed
  with the *ideal* codes and the DAC codes of the calibration inputs (the chip's designer
  calibrates before programming noise and drift exist);
* digital drift compensation (``drift.compensation = global | per_column``): the factor of
  :class:`~nvmstream.devices.periphery.DriftCompensation` from reference readouts
  (``drift.reference``; one-hot by default) through read noise and ADC at t0 and at the age, multiplied into the per-output scale
  (after the ADC); ADC-instance offset/gain/INL drawn once per matrix from the device's
  ``KEY/adc_mismatch`` stream (``ADC.draw_mismatch``); with ``adc.track_drift`` the ADC steps are re-set at the age on the
  drifted noise-free weights ``w_eff`` (same rule, calibration inputs);
* IR drop (``tile.wire_ohm`` > 0): the conductances (G+ + G-)/qmax_dac of the programmed cells
  at the age, on an exact grid like the variances, multiply |DAC codes| into each column's
  accumulated current (a third product block), and each tile column's output is scaled by
  max(1 - r n_blk S / 3, 0) before its ADC (``IRDrop``);
* VMM-noise power P of a matrix = mean over calibration of its float output squared
  (``vmm_noise.reference = layer``; per gate block or per output with ``gate`` / ``unit``);
  the noise sigma is sqrt(P / 10^(snr_db/10)) in model units, converted to code units per tile
  when it enters before the ADC (``vmm_noise.position = before_adc``).

Exactness proof (what lets BLAS and the in-kernel loop agree bit for bit): effective weights
(code units) are stored as integers ``k`` on a grid ``2^-f`` (``w = k 2^-f``; f = 0 for integer
codes), read-noise variances likewise on ``2^-g``. For every tile column the plan computes the
largest possible partial sum ``qmax_dac * sum_i |k_ij|`` (``qmax_dac^2 * sum_i k_ij`` for
variances) and picks the finest grid whose bound stays below 2^24, so float32 products are exact
integers; if that grid would be coarser than :data:`MIN_FRAC_BITS` (weights) or
:data:`MIN_VAR_FRAC_BITS` (variances), the segment switches to float64 accumulation (exact
below 2^53). A matrix that no grid makes exact is an error, never a warning. Matrices without a
DAC (float inputs: the ideal profile) keep float64 weights and only ever use the in-kernel loop,
whose order is fixed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np

from nvmstream.converters import ir
from nvmstream.converters.compile import crossbar_matrices
from nvmstream.converters.compile import CompiledModel
from nvmstream.converters.conventions import GATE_ORDER
from nvmstream.converters.errors import NvmConversionError
from nvmstream.devices import Device, quantize_weights
from nvmstream.devices.periphery import (ADC, DAC, DriftCompensation, IRDrop, ReadNoise,
                                         VMMNoise)

from .kernels import layout as LY

log = logging.getLogger(__name__)

F32_EXACT = 2 ** 24
F64_EXACT = 2 ** 53
MIN_FRAC_BITS = 10        # float32 weights on a grid no coarser than 2^-10 of a weight level
MIN_VAR_FRAC_BITS = 16    # float32 variances on a grid no coarser than 2^-16 code units^2
MAX_FRAC_BITS_32, MAX_FRAC_BITS_64 = 20, 40


@dataclass
class SegmentInfo:
    """What the engine, the energy ledger and the tests need to know about one programmed
    matrix (its kernel record is ``plan.segs[index]``)."""

    key: str
    layer: str
    n_in: int
    n_out: int
    tile_rows: int
    tile_cols: int
    row_tiles: int
    col_tiles: int
    dac_bits: int
    adc_bits: int
    exact: bool
    has_read_noise: bool
    dac_step: float
    vmm_sigma: float
    scales: np.ndarray = None            # per-output weight scale s_w [n_out]
    adc_steps: np.ndarray | None = None  # [row_tiles, n_out], code-product units
    codes: np.ndarray = None             # codes as read from storage [n_out, n_in]
    w_eff: np.ndarray = None             # effective weights on the grid (code units) [n_out, n_in]
    read_var: np.ndarray | None = None   # read-noise variances on the grid [n_out, n_in]
    mean_cell_uS: float | None = None    # mean programmed conductance of its cells (uS)
    stats: dict = field(default_factory=dict)
    index: int = 0                       # position in plan.segs
    accumulator: str = "float32"         # dtype whose exact-integer range holds the products
    frac_bits: int = 0                   # weight grid 2^-frac_bits
    dac: DAC = None
    adc: ADC = None
    read: ReadNoise = None
    vmm: VMMNoise = None
    comp: DriftCompensation = None       # digital drift compensation after the ADC
    vmm_code_sigmas: np.ndarray | None = None  # VMM noise before the ADC: per tile, code units
    ir: IRDrop = None                    # first-order IR drop (off: wire_ohm 0)
    gates: tuple = ("out",)              # gate names of the output blocks (conventions order)
    vmm_snr_db: np.ndarray | None = None  # effective VMM-noise SNR per gate, calibration set

    @property
    def tiles(self) -> int:
        return self.row_tiles * self.col_tiles


@dataclass
class Plan:
    layers: np.ndarray            # LAYER records (runtime/kernels/layout.py)
    segs: np.ndarray              # SEG records
    w32: np.ndarray
    w64: np.ndarray
    pf: np.ndarray
    max_w: int
    env_width: int
    offsets: dict[str, int]       # IR tensor -> env column offset
    widths: dict[str, int]
    state_width: int
    rng_slots: int
    segments: list[SegmentInfo]
    state_slots: list[tuple[ir.Recurrent, int, int]]   # (layer, direction, state offset)
    exact: bool                   # integer codes, no noise, ideal periphery: outputs = the int twin
    per_read_noise: bool          # read/VMM/ADC noise drawn at every step
    pre_x: list[int] = field(default_factory=list)     # per layer: columns of x-products
    pre_h: list[int] = field(default_factory=list)     # per layer: columns of h-products


class _Buffers:
    def __init__(self):
        self.pf: list[float] = [0.0]
        self.b32: list[np.ndarray] = []
        self.n32 = 0
        self.b64: list[np.ndarray] = []
        self.n64 = 0

    def f64(self, values) -> int:
        off = len(self.pf)
        self.pf.extend(float(v) for v in np.asarray(values, np.float64).reshape(-1))
        return off

    def weights(self, arr: np.ndarray, wide: bool) -> int:
        a = np.ascontiguousarray(arr, np.float64 if wide else np.float32).reshape(-1)
        if wide:
            off, self.n64 = self.n64, self.n64 + a.size
            self.b64.append(a)
        else:
            off, self.n32 = self.n32, self.n32 + a.size
            self.b32.append(a)
        return off

    def arrays(self):
        w32 = np.concatenate(self.b32) if self.b32 else np.zeros(1, np.float32)
        w64 = np.concatenate(self.b64) if self.b64 else np.zeros(1, np.float64)
        return w32, w64, np.array(self.pf, np.float64)


def _tile_bound(K: np.ndarray, tile_rows: int, umax: float) -> float:
    """Largest |tile partial sum| of integer weights ``K[n_out, n_in]`` for inputs |u| <= umax."""
    a = np.abs(K)
    n_in = a.shape[1]
    best = 0.0
    for r0 in range(0, max(n_in, 1), tile_rows):
        if n_in:
            best = max(best, float(a[:, r0:r0 + tile_rows].sum(axis=1).max(initial=0.0)))
    return best * umax


def exact_grid(M: np.ndarray, tile_rows: int, umax: float, integer: bool, min_frac: int,
               what: str) -> tuple[bool, int, np.ndarray]:
    """Choose the accumulator and grid of matrix ``M[n_out, n_in]`` (code units) so every tile
    partial sum is an exact integer: returns ``(float64?, frac_bits, K)`` with ``K`` the
    integers ``rint(M 2^f)`` (see the module docstring)."""
    M = np.asarray(M, np.float64)
    fracs32 = [0] if integer else range(MAX_FRAC_BITS_32, min_frac - 1, -1)
    for f in fracs32:
        K = np.rint(M * 2.0 ** f)
        if _tile_bound(K, tile_rows, umax) < F32_EXACT:
            return False, f, K
    fracs64 = [0] if integer else range(MAX_FRAC_BITS_64, -1, -1)
    for f in fracs64:
        K = np.rint(M * 2.0 ** f)
        if _tile_bound(K, tile_rows, umax) < F64_EXACT:
            return True, f, K
    raise NvmConversionError(f"{what}: tile partial sums exceed float64's exact integer range "
                             f"(tile rows {tile_rows}, largest input code {umax:g})")


def gate_names(layer, role: str) -> tuple[str, ...]:
    """Names of the equal output blocks of a crossbar matrix (conventions.GATE_ORDER): an
    LSTM's ``i, o, f, c``; a GRU's ``z, r, h`` (``z, r`` / ``h`` when the candidate's recurrent
    rows sit apart, role ``h`` / ``rh``); ``out`` for a Dense layer."""
    if isinstance(layer, ir.Recurrent):
        order = GATE_ORDER[layer.kind]
        if layer.kind == "GRU" and not layer.linear_before_reset and role in ("h", "rh"):
            return ("z", "r") if role == "h" else ("h",)
        return tuple(order)
    return ("out",)


def _calibration_inputs(model: ir.Model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Float IR run on the calibration set: the input vectors of every crossbar matrix."""
    for l in model.recurrent_layers:      # a constant initial state fixes the batch size
        for init in (l.initial_h, l.initial_c):
            if init is not None and init.value is not None and init.value.shape[1] != x.shape[0]:
                x = x[np.arange(init.value.shape[1]) % x.shape[0]]
    feeds = {}
    for a in model.aux_inputs:          # calibrate from zero initial states
        if a.role in ("initial_h", "initial_c"):
            feeds[a.name] = np.zeros((a.shape[0], x.shape[0], a.shape[2]), np.float32)
    env, _ = model._execute(np.ascontiguousarray(x, np.float32), feeds, whole=True)
    out: dict[str, np.ndarray] = {}
    for m in crossbar_matrices(model):
        layer = model.layers[m.layer]
        if m.role == "x" and isinstance(layer, ir.Conv1d):
            skip = model.delays.get(layer.x, 0)
            v = layer.windows(env[layer.x], skip)         # im2col windows
            d = model.delays[layer.y]                     # its first defined output
            v = v[:, d::layer.stride] if v.shape[1] > d else v
        elif m.role == "x" and isinstance(layer, ir.FrameConv):
            v = layer.patches(env[layer.x])               # every position's im2col patch
        elif m.role == "x":
            v = env[layer.x]
            s = model.strides.get(layer.x, 1)
            if s > 1 and isinstance(layer, ir.Recurrent):   # the steps it takes
                v = v[:, model.delays.get(layer.x, 0)::s]
        else:
            h = layer.hidden_size
            y = env[layer.y][:, :, m.direction * h:(m.direction + 1) * h]
            rev = layer.direction == "reverse" or m.direction == 1
            z = np.zeros_like(y[:, :1])
            prev = np.concatenate([y[:, 1:], z], 1) if rev else np.concatenate([z, y[:, :-1]], 1)
            s = model.strides.get(layer.x, 1)
            sl = slice(model.delays.get(layer.x, 0) if s > 1 else 0, None, s)
            y, prev = y[:, sl], prev[:, sl]                # the steps it takes
            if m.role == "rh":
                d = m.direction
                xin = env[layer.x][:, sl]
                rs = layer.gate_slice("r")
                pre = (xin @ layer.W[d][rs].T + layer.Wb[d][rs]
                       + prev @ layer.R[d][rs].T + layer.Rb[d][rs])
                if layer.clip is not None:
                    pre = np.clip(pre, -layer.clip, layer.clip)
                r = layer.activations[d][0](pre.astype(np.float32))
                v = r * prev
            else:
                v = prev
        out[m.key] = np.asarray(v, np.float32).reshape(-1, v.shape[-1])
    return out


def build_plan(prog: CompiledModel, device: Device) -> Plan:
    model = prog.model
    prof = device.profile
    wbits = prof.weights.bits
    tr, tc = prof.tile.rows, prof.tile.cols
    buf = _Buffers()
    max_w = 1

    # ---- env layout
    offsets: dict[str, int] = {model.input.name: 0}
    widths: dict[str, int] = {model.input.name: model.input.features}
    width = model.input.features

    def alloc(name: str, w: int) -> int:
        nonlocal width, max_w
        offsets[name] = width
        widths[name] = w
        width += w
        max_w = max(max_w, w)
        return offsets[name]

    # ---- matrices: quantize, program, calibrate the periphery, prove exactness
    cal = _calibration_inputs(model, prog.calibration)
    mats = crossbar_matrices(model)
    segs = LY.segments(len(mats))
    segs_by_key: dict[str, list[int]] = {}
    infos: list[SegmentInfo] = []
    exact = True
    read_noise = False
    for si, m in enumerate(mats):
        W = m.W
        if wbits == prog.weight_bits and m.key in prog.codes:
            codes, scale = prog.codes[m.key], prog.scales[m.key]
        else:
            codes, scale = quantize_weights(W, wbits)
        pm = device.program(codes, m.key, scales=scale)
        n_out, n_in = W.shape
        V = cal[m.key]
        dac = DAC.from_profile(prof).calibrate(V)
        adc = ADC.from_profile(prof).calibrate(dac.apply(V), codes, tr, tc)
        adc = adc.draw_mismatch(n_out, max(1, math.ceil(n_in / tr)), tc,
                                device.rng_for(f"{m.key}/adc_mismatch"))
        comp = DriftCompensation.from_profile(prof)
        if pm.stats.get("drift_applied"):
            adc_t0 = adc
            if prof.adc.track_drift and adc.bits:    # ranges re-set on the drifted weights
                adc = adc.calibrate(dac.apply(V), pm.w_eff, tr, tc)
            if comp.digital:
                comp = comp.calibrate(pm.w_t0, pm.read_var_t0 if pm.has_read_noise else None,
                                      adc_t0, pm.w_eff,
                                      pm.read_var if pm.has_read_noise else None, adc, tr,
                                      float(dac.qmax) if dac.qmax else 1.0,
                                      device.rng_for(f"{m.key}/drift_reference"), codes)
        gates = gate_names(model.layers[m.layer], m.role)
        vmm = VMMNoise.from_profile(prof).calibrate(V, W, len(gates))
        read = ReadNoise.from_programmed(pm)
        if read.on and not np.any(read.var):
            read = ReadNoise(None)       # no per-read variance left: no second product, no draws
        nblk = max(1, math.ceil(n_in / tr))
        s = segs[si]
        s["n_in"], s["n_out"], s["src"] = n_in, n_out, LY.SOURCES[m.role]
        s["tile_rows"], s["nblk"] = tr, nblk
        s["dac_q"], s["dac_step"] = dac.qmax, dac.step
        s["dac_dyn"] = int(dac.dynamic)
        if dac.qmax:
            wide, f, K = exact_grid(pm.w_eff, tr, dac.qmax, pm.exact, MIN_FRAC_BITS,
                                    f"matrix {m.key} weights")
            w_grid = K * 2.0 ** -f
        else:                               # float inputs: float64, fixed in-kernel order
            wide, f, K = True, 0, np.asarray(pm.w_eff, np.float64)
            w_grid = K
        s["w64"], s["wgrid"] = int(wide), 2.0 ** -f
        s["w"] = buf.weights(K.T, wide)
        var_grid = None
        if read.on:
            if dac.qmax:
                vwide, g, KV = exact_grid(read.var, tr, float(dac.qmax) ** 2, False,
                                          MIN_VAR_FRAC_BITS, f"matrix {m.key} read noise")
                var_grid = KV * 2.0 ** -g
            else:
                vwide, g, KV = True, 0, np.asarray(read.var, np.float64)
                var_grid = KV
            s["var64"], s["vgrid"] = int(vwide), 2.0 ** -g
            s["var"] = buf.weights(KV.T, vwide)
            read = ReadNoise(var_grid)
        ir_drop = IRDrop.from_profile(prof)
        if ir_drop.wire_ohm > 0:                  # IR drop: (G+ + G-)/umax on an exact grid
            ir_drop = ir_drop.calibrate(pm.g_pos, pm.g_neg, float(dac.qmax), tr)
            cwide, cg, KC = exact_grid(ir_drop.cond, tr, float(dac.qmax), False,
                                       MIN_VAR_FRAC_BITS, f"matrix {m.key} IR drop")
            ir_drop = replace(ir_drop, cond=KC * 2.0 ** -cg)
            s["cur64"], s["cgrid"] = int(cwide), 2.0 ** -cg
            s["cur"] = buf.weights(KC.T, cwide)
            s["irk"] = buf.f64(ir_drop.k)
        s["sw"] = buf.f64(comp.apply(scale))      # weight scale x digital compensation
        if adc.bits:
            s["adc"] = buf.f64(adc.steps)
            s["adc_q"], s["adc_noise"] = adc.qmax, adc.noise_lsb
            if adc.mismatched:
                s["adc_gain"], s["adc_off"] = buf.f64(adc.gain), buf.f64(adc.offset)
                if adc.thresholds is not None:
                    s["adc_thr"] = buf.f64(adc.thresholds)
        s["vmm_sigma"] = vmm.sigma
        vmm_code = None
        if vmm.on:
            if vmm.before_adc:
                vmm_code = vmm.code_sigmas(scale, dac.scale, nblk)
                s["vmm"], s["vmm_pre"] = buf.f64(vmm_code), 1
            else:
                s["vmm"] = buf.f64(vmm.sigmas)
        segs_by_key.setdefault(f"{m.layer}/{m.direction}", []).append(si)
        max_w = max(max_w, n_in, n_out)
        per_read = read.on or vmm.sigma > 0 or (adc.bits and adc.noise_lsb > 0)
        read_noise |= bool(per_read)
        exact &= (pm.exact and not per_read and (wbits > 0) and not ir_drop.on
                  and not adc.mismatched and not dac.dynamic)
        infos.append(SegmentInfo(
            key=m.key, layer=model.layers[m.layer].name, n_in=n_in, n_out=n_out,
            tile_rows=tr, tile_cols=tc, row_tiles=nblk, col_tiles=math.ceil(n_out / tc),
            dac_bits=dac.bits, adc_bits=adc.bits, exact=pm.exact,
            has_read_noise=read.on, dac_step=dac.step, vmm_sigma=vmm.sigma,
            scales=np.asarray(scale, np.float64), adc_steps=adc.steps, codes=pm.codes_read,
            w_eff=w_grid, read_var=var_grid,
            mean_cell_uS=float((pm.g_pos.mean() + pm.g_neg.mean()) / 2) if pm.g_pos.size else None,
            stats=dict(pm.stats), index=si, accumulator="float64" if wide else "float32",
            frac_bits=f, dac=dac, adc=adc, read=read, vmm=vmm, comp=comp,
            vmm_code_sigmas=vmm_code, gates=gates, ir=ir_drop,
            vmm_snr_db=vmm.snr_per_gate_db(V, W, len(gates))))

    # ---- layers
    recs: list[dict] = []
    state_off = 0
    state_slots = []
    pre_x: list[int] = []
    pre_h: list[int] = []

    def layer(**kw):
        recs.append(kw)
        # products precomputed by BLAS: columns of each source's array, per layer
        px = ph = 0
        for si in range(kw.get("seg0", 0), kw.get("seg0", 0) + kw.get("nseg", 0)):
            src = int(segs[si]["src"])
            if src == LY.SRC_X:
                segs[si]["pre"] = px
                px += LY.pre_width(segs[si])
            elif src == LY.SRC_H:
                segs[si]["pre"] = ph
                ph += LY.pre_width(segs[si])
        pre_x.append(px)
        pre_h.append(ph)

    delays = model.delays
    ctr = -1                                 # the frame counter's state column (valid Convs)
    if any(isinstance(l, ir.Conv1d) and (l.delay or l.stride > 1) for l in model.layers):
        ctr, state_off = 0, 1
    for li, l in enumerate(model.layers):
        if isinstance(l, ir.Conv1d):
            first = not any(r.get("op") == LY.OP_WINDOW for r in recs)
            state_off = _conv_layers(l, segs_by_key[f"{li}/0"], offsets, alloc, layer, recs,
                                     buf, state_off, ctr, int(first and ctr >= 0),
                                     delays.get(l.x, 0))
            continue
        if isinstance(l, ir.Recurrent):
            h, nd = l.hidden_size, l.num_directions
            yo = alloc(l.y, nd * h)
            co = alloc(l.c, nd * h) if l.c else -1
            max_w = max(max_w, l.gates * h, l.input_size)
            for d in range(nd):
                acts = l.activations[d]
                codes = [LY.ACT_CODES[a.name] for a in acts] + [0] * (3 - len(acts))
                params = [v for a in acts for v in (a.alpha, a.beta)]
                params += [0.0] * (6 - len(params))
                if l.kind == "GRU":
                    bias = np.concatenate([l.Wb[d], l.Rb[d]])
                else:
                    bias = l.Wb[d].astype(np.float64) + l.Rb[d].astype(np.float64)
                segl = segs_by_key[f"{li}/{d}"]
                layer(op=LY.OPS[l.kind], x=offsets[l.x], xw=l.input_size, y=yo + d * h, yw=h,
                      h=h, rev=1 if (l.direction == "reverse" or d == 1) else 0,
                      state=state_off, rng=len(recs), act0=codes[0], act1=codes[1],
                      act2=codes[2], actp=buf.f64(params),
                      clip=l.clip if l.clip is not None else math.inf,
                      input_forget=int(l.input_forget), lbr=int(l.linear_before_reset),
                      nseg=len(segl), seg0=segl[0], bias=buf.f64(bias),
                      peep=buf.f64(l.P[d]) if l.P is not None else -1,
                      cout=(co + d * h) if co >= 0 else -1,
                      mask=offsets[l.mask] if l.mask else -1)
                skip = delays.get(l.x, 0)
                every = model.strides.get(l.x, 1)
                if skip or every > 1:
                    if recs[-1]["rev"]:
                        raise NvmConversionError(f"layer {l.name!r} runs backwards after a "
                                                 f"Conv1d with undefined leading steps")
                    recs[-1].update(skip=skip, ctr=ctr, every=every)
                state_slots.append((l, d, state_off))
                state_off += 2 * h
        elif isinstance(l, ir.FrameConv):
            _frame_conv_layers(l, segs_by_key[f"{li}/0"], offsets, alloc, layer, recs, buf)
        elif isinstance(l, ir.Dense):
            yo = alloc(l.y, l.out_features)
            segl = segs_by_key.get(f"{li}/0", [])
            layer(op=LY.OP_DENSE, x=offsets[l.x], xw=l.in_features, y=yo, yw=l.out_features,
                  nseg=len(segl), seg0=segl[0] if segl else 0, rng=len(recs),
                  bias=buf.f64(l.b) if l.b is not None else -1)
        elif isinstance(l, ir.Elementwise):
            w = widths[l.x]
            yo = alloc(l.y, w)
            layer(op=LY.OP_ACT, x=offsets[l.x], xw=w, y=yo, yw=w,
                  act0=LY.ACT_CODES[l.fn.name], actp=buf.f64([l.fn.alpha, l.fn.beta]))
        elif isinstance(l, ir.Softmax):
            w = widths[l.x]
            yo = alloc(l.y, w)
            layer(op=LY.OP_LOGSOFTMAX if l.log else LY.OP_SOFTMAX, x=offsets[l.x], xw=w,
                  y=yo, yw=w)
        elif isinstance(l, ir.FeatureSlice):
            w = l.stop - l.start
            yo = alloc(l.y, w)
            layer(op=LY.OP_COPY, x=offsets[l.x] + l.start, xw=w, y=yo, yw=w)
        elif isinstance(l, ir.FeatureConcat):
            w = sum(widths[n] for n in l.xs)
            yo = alloc(l.y, w)
            o = yo
            for n in l.xs:
                layer(op=LY.OP_COPY, x=offsets[n], xw=widths[n], y=o, yw=widths[n])
                o += widths[n]
        elif isinstance(l, ir.LayerNorm):
            w = widths[l.x]
            yo = alloc(l.y, w)
            layer(op=LY.OP_LAYERNORM, x=offsets[l.x], xw=w, y=yo, yw=w,
                  actp=buf.f64(np.concatenate([[l.epsilon], l.scale])),
                  bias=buf.f64(l.bias) if l.bias is not None else -1)
        elif isinstance(l, ir.Binary):
            w = widths[l.xs[0]]
            yo = alloc(l.y, w)
            layer(op=LY.OP_BINARY, x=offsets[l.xs[0]], x2=offsets[l.xs[1]], xw=w, y=yo, yw=w,
                  mode=LY.BINARY_MODES[l.op])
        elif isinstance(l, ir.Unary):
            w = widths[l.x]
            yo = alloc(l.y, w)
            layer(op=LY.OP_UNARY, x=offsets[l.x], xw=w, y=yo, yw=w,
                  mode=LY.UNARY_MODES[l.op], actp=buf.f64([l.p]))
        elif isinstance(l, ir.ReduceMean):
            yo = alloc(l.y, 1)
            layer(op=LY.OP_REDUCEMEAN, x=offsets[l.x], xw=widths[l.x], y=yo, yw=1)
        elif isinstance(l, ir.StepMask):
            yo = alloc(l.y, 1)
            layer(op=LY.OP_MASK, x=offsets[l.x], xw=widths[l.x], y=yo, yw=1,
                  actp=buf.f64([l.value]))
        elif isinstance(l, ir.FeaturePad):
            w = widths[l.x]
            yo = alloc(l.y, w + l.begin + l.end)
            layer(op=LY.OP_PAD, x=offsets[l.x], xw=w, y=yo, yw=w + l.begin + l.end,
                  mode=LY.PAD_MODES[l.mode], actp=buf.f64([l.begin, l.end, l.value]))
        else:  # pragma: no cover - the IR has no other layer types
            raise TypeError(f"unknown layer {l!r}")
    layers = LY.layers(len(recs))
    for i, r in enumerate(recs):
        for k, v in r.items():
            layers[i][k] = v
    w32, w64, pf = buf.arrays()
    return Plan(layers=layers, segs=segs, w32=w32, w64=w64, pf=pf, max_w=max_w,
                env_width=width, offsets=offsets, widths=widths,
                state_width=max(state_off, 1), rng_slots=len(recs) + 1,
                segments=infos, state_slots=state_slots, exact=exact,
                per_read_noise=read_noise, pre_x=pre_x, pre_h=pre_h)


def vmm_snr_table(plan: Plan) -> list[dict]:
    """The effective VMM-noise SNR per gate of every crossbar matrix on the calibration set
    (``nvmstream inspect MODEL --profile P`` and the run report): dB, inf without noise."""
    rows = []
    for s in plan.segments:
        snr = s.vmm_snr_db if s.vmm_snr_db is not None else np.full(len(s.gates), np.inf)
        rows.append({"matrix": s.key, "layer": s.layer, "reference": s.vmm.reference,
                     "position": s.vmm.position, "snr_db_profile": s.vmm.snr_db,
                     "snr_db_per_gate": {g: float(v) for g, v in zip(s.gates, snr)}})
    return rows


def _conv_layers(l: ir.Conv1d, segl: list[int], offsets: dict[str, int], alloc, layer,
                 recs: list[dict], buf: _Buffers, state_off: int, ctr: int, tick: int,
                 skip: int) -> int:
    """A Conv1d over time as two program layers (runtime/kernels/conv.py): the im2col
    window (digital; its ring of the last ``history`` frames in the state at ``state_off``)
    and a Dense on the window (crossbar). Returns the next free state column."""
    win = alloc(f"{l.y}#window", l.in_features)
    layer(op=LY.OP_WINDOW, x=offsets[l.x], xw=l.channels, y=win, yw=l.in_features,
          taps=l.taps, dil=l.dilation, state=state_off, ctr=ctr, tick=tick, skip=skip)
    yo = alloc(l.y, l.out_features)
    layer(op=LY.OP_DENSE, x=win, xw=l.in_features, y=yo, yw=l.out_features, nseg=len(segl),
          seg0=segl[0], rng=len(recs), bias=buf.f64(l.b) if l.b is not None else -1)
    return state_off + l.history * l.channels


def _frame_conv_layers(l: ir.FrameConv, segl: list[int], offsets: dict[str, int], alloc, layer,
                       recs: list[dict], buf: _Buffers) -> None:
    """A Conv over the positions within one frame (ir.FrameConv) as program layers: a gather of
    every output position's im2col patch (digital), one Dense per position on the same
    segments (the kernel's tiles, read once per position, each read with its own DAC/ADC
    conversions and noise draws), and a gather to ONNX's channel-major layout."""
    P, KC, O = l.out_positions, l.patch, l.out_channels
    pat = alloc(f"{l.y}#patches", P * KC)
    layer(op=LY.OP_GATHER, x=offsets[l.x], xw=l.in_features, y=pat, yw=P * KC,
          actp=buf.f64(l.patch_index.reshape(-1).astype(np.float64)))
    pos = alloc(f"{l.y}#positions", P * O)
    bias = buf.f64(l.b) if l.b is not None else -1
    for p in range(P):
        layer(op=LY.OP_DENSE, x=pat + p * KC, xw=KC, y=pos + p * O, yw=O, nseg=len(segl),
              seg0=segl[0], rng=len(recs), bias=bias)
    yo = alloc(l.y, O * P)
    order = (np.arange(P)[None, :] * O + np.arange(O)[:, None]).reshape(-1)   # [o, p] <- p*O+o
    layer(op=LY.OP_GATHER, x=pos, xw=P * O, y=yo, yw=O * P,
          actp=buf.f64(order.astype(np.float64)))
