"""CompiledModel + Device -> the flat program the kernels run (see runtime/kernels.py).

This is where the device profile meets the model: every crossbar matrix is quantized for the
profile's weight bits, programmed on the device (storage errors, mapping, programming noise,
faults, drift), split into tiles, and given its DAC and ADC ranges by calibration.

Calibration rule (documented in docs/architecture.md):
* the float32 IR runs on the compiled model's calibration set; every matrix's input vectors are
  collected (layer inputs; previous hidden states for recurrent matrices, in the direction's time
  order; r*h for GRU with linear_before_reset=0);
* DAC step of a matrix = max |input| / qmax_dac (one range per matrix: all its rows);
* ADC step of each (row-tile, column) = max |partial sum| / qmax_adc, the partial sums computed
  with the *ideal* codes and the DAC codes of the calibration inputs (the chip's designer
  calibrates before programming noise and drift exist);
* VMM-noise power P of a matrix = mean over calibration of its float output squared; the noise
  sigma is sqrt(P / 10^(snr_db/10)) in model units.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from nvmstream.converters import ir
from nvmstream.converters.compile import CompiledModel, MatrixSpec, crossbar_matrices
from nvmstream.devices import Device, quantize_weights
from nvmstream.devices.quant import qmax_for_bits

from . import kernels as K

log = logging.getLogger(__name__)


@dataclass
class SegmentInfo:
    """What the engine (and the energy ledger) needs to know about one programmed matrix."""

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
    w_eff: np.ndarray = None             # effective weights (code units) [n_out, n_in]
    mean_cell_uS: float | None = None    # mean programmed conductance of its cells (uS)
    stats: dict = field(default_factory=dict)

    @property
    def tiles(self) -> int:
        return self.row_tiles * self.col_tiles


@dataclass
class Plan:
    meta: np.ndarray
    wf: np.ndarray
    pf: np.ndarray
    env_width: int
    offsets: dict[str, int]       # IR tensor -> env column offset
    widths: dict[str, int]
    state_width: int
    rng_slots: int
    segments: list[SegmentInfo]
    state_slots: list[tuple[ir.Recurrent, int, int]]   # (layer, direction, state offset)
    exact: bool                   # no analog noise and integer codes: outputs are deterministic
    per_read_noise: bool          # read/VMM/ADC noise drawn at every step


class _Builder:
    def __init__(self):
        self.meta_layers: list[list[int]] = []
        self.meta_segs: list[list[int]] = []
        self.wf: list[np.ndarray] = []
        self.wf_len = 0
        self.pf: list[float] = [0.0, 1.0, math.inf]   # shared constants: 0, 1, inf
        self.max_w = 1

    def f64(self, values) -> int:
        off = len(self.pf)
        self.pf.extend(float(v) for v in np.asarray(values, np.float64).reshape(-1))
        return off

    def f32(self, arr: np.ndarray) -> int:
        off = self.wf_len
        a = np.ascontiguousarray(arr, np.float32).reshape(-1)
        self.wf.append(a)
        self.wf_len += a.size
        return off

    def layer(self, **kw) -> list[int]:
        rec = [-1] * K.LREC
        rec[K.L_REV] = 0
        for k, v in kw.items():
            rec[getattr(K, "L_" + k)] = int(v)
        self.meta_layers.append(rec)
        return rec

    def build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_layers = len(self.meta_layers)
        seg_base = 8 + n_layers * K.LREC
        head = [n_layers, seg_base, self.max_w, 0, 0, 0, 0, 0]
        meta = np.array(head + [v for r in self.meta_layers for v in r]
                        + [v for s in self.meta_segs for v in s], np.int64)
        wf = np.concatenate(self.wf) if self.wf else np.zeros(1, np.float32)
        return meta, wf, np.array(self.pf, np.float64)


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
        if m.role == "x":
            v = env[layer.x]
        else:
            h = layer.hidden_size
            y = env[layer.y][:, :, m.direction * h:(m.direction + 1) * h]
            rev = layer.direction == "reverse" or m.direction == 1
            z = np.zeros_like(y[:, :1])
            prev = np.concatenate([y[:, 1:], z], 1) if rev else np.concatenate([z, y[:, :-1]], 1)
            if m.role == "rh":
                d = m.direction
                xin = env[layer.x]
                pre = (xin @ layer.W[d][h:2 * h].T + layer.Wb[d][h:2 * h]
                       + prev @ layer.R[d][h:2 * h].T + layer.Rb[d][h:2 * h])
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
    wbits, dbits, abits = prof.weights.bits, prof.dac.bits, prof.adc.bits
    tr, tc = prof.tile.rows, prof.tile.cols
    qd = qmax_for_bits(dbits) if dbits else 0
    qa = qmax_for_bits(abits) if abits else 0
    snr = prof.vmm_noise.snr_db
    bld = _Builder()
    PF_ZERO, PF_ONE, PF_INF = 0, 1, 2
    anz_off = bld.f64([prof.adc.noise_lsb])

    # ---- env layout
    offsets: dict[str, int] = {model.input.name: 0}
    widths: dict[str, int] = {model.input.name: model.input.features}
    width = model.input.features

    def alloc(name: str, w: int) -> int:
        nonlocal width
        offsets[name] = width
        widths[name] = w
        width += w
        bld.max_w = max(bld.max_w, w)
        return offsets[name]

    # ---- matrices: quantize, program, calibrate
    cal = _calibration_inputs(model, prog.calibration)
    segs_by_key: dict[str, list[int]] = {}
    infos: list[SegmentInfo] = []
    exact = True
    read_noise = False
    for m in crossbar_matrices(model):
        W = m.W
        if wbits == prog.weight_bits and m.key in prog.codes:
            codes, scale = prog.codes[m.key], prog.scales[m.key]
        else:
            codes, scale = quantize_weights(W, wbits)
        pm = device.program(codes, m.key, scales=scale)
        n_out, n_in = W.shape
        V = cal[m.key]
        absmax = float(np.max(np.abs(V))) if V.size else 0.0
        dstep = (absmax / qd if absmax > 0 else 1.0) if qd else 1.0
        dac_off = bld.f64([dstep])
        w_off = bld.f32(pm.w_eff.T)
        var_off = bld.f32(pm.read_var.T) if pm.has_read_noise else -1
        sw_off = bld.f64(scale)
        adc_off = -1
        nblk = math.ceil(n_in / tr)
        if qa:
            if qd:
                U = np.clip(np.rint(V.astype(np.float64) / dstep), -qd, qd)
            else:
                U = V.astype(np.float64)
            Q = np.asarray(codes, np.float64)
            steps = np.ones((nblk, n_out))
            for blk in range(nblk):
                r0, r1 = blk * tr, min(n_in, (blk + 1) * tr)
                part = U[:, r0:r1] @ Q[:, r0:r1].T if U.size else np.zeros((1, n_out))
                amax = np.max(np.abs(part), axis=0) if part.size else np.zeros(n_out)
                steps[blk] = np.where(amax > 0, amax / qa, 1.0)
            adc_off = bld.f64(steps)
        else:
            steps = None
        sigma = 0.0
        if math.isfinite(snr):
            power = float(np.mean((V.astype(np.float64) @ W.T.astype(np.float64)) ** 2)) \
                if V.size else 0.0
            sigma = math.sqrt(power / 10 ** (snr / 10))
        vmm_off = bld.f64([sigma])
        role_src = {"x": K.SRC_X, "h": K.SRC_H, "rh": K.SRC_RH}[m.role]
        dst = {"x": K.DST_ZX, "h": K.DST_ZH, "rh": K.DST_ZR}[m.role]
        rec = [0] * K.SREC
        rec[K.S_IN], rec[K.S_OUT], rec[K.S_W], rec[K.S_VAR] = n_in, n_out, w_off, var_off
        rec[K.S_DAC], rec[K.S_DQ], rec[K.S_SW], rec[K.S_ADC] = dac_off, qd, sw_off, adc_off
        rec[K.S_AQ], rec[K.S_TR], rec[K.S_ANZ], rec[K.S_SRC] = qa, tr, anz_off, role_src
        rec[K.S_DST], rec[K.S_VMM], rec[K.S_DSTOFF] = dst, vmm_off, 0
        segs_by_key.setdefault(f"{m.layer}/{m.direction}", []).append(len(bld.meta_segs))
        bld.meta_segs.append(rec)
        bld.max_w = max(bld.max_w, n_in, n_out)
        per_read = pm.has_read_noise or sigma > 0 or prof.adc.noise_lsb > 0
        read_noise |= per_read
        exact &= pm.exact and not per_read and (wbits > 0)
        infos.append(SegmentInfo(
            key=m.key, layer=model.layers[m.layer].name, n_in=n_in, n_out=n_out,
            tile_rows=tr, tile_cols=tc, row_tiles=nblk, col_tiles=math.ceil(n_out / tc),
            dac_bits=dbits, adc_bits=abits, exact=pm.exact, has_read_noise=pm.has_read_noise,
            dac_step=dstep, vmm_sigma=sigma, scales=np.asarray(scale, np.float64),
            adc_steps=steps, codes=pm.codes_read, w_eff=pm.w_eff,
            mean_cell_uS=float((pm.g_pos.mean() + pm.g_neg.mean()) / 2) if pm.g_pos.size else None,
            stats=dict(pm.stats)))
        if wbits and qd and tr * qmax_for_bits(wbits) * qd >= 2 ** 24:
            log.warning("matrix %s: tile partial sums may exceed float32's exact integer range",
                        m.key)

    # ---- layers
    state_off = 0
    state_slots = []
    for li, l in enumerate(model.layers):
        if isinstance(l, ir.Recurrent):
            h, nd = l.hidden_size, l.num_directions
            yo = alloc(l.y, nd * h)
            co = alloc(l.c, nd * h) if l.c else -1
            bld.max_w = max(bld.max_w, l.gates * h, l.input_size)
            for d in range(nd):
                acts = l.activations[d]
                codes = [K.ACT_CODES[a.name] for a in acts] + [0] * (3 - len(acts))
                params = [v for a in acts for v in (a.alpha, a.beta)]
                params += [0.0] * (6 - len(params))
                if l.kind == "GRU":
                    bias = np.concatenate([l.Wb[d], l.Rb[d]])
                else:
                    bias = l.Wb[d].astype(np.float64) + l.Rb[d].astype(np.float64)
                segs = segs_by_key[f"{li}/{d}"]
                op = {"LSTM": K.OP_LSTM, "GRU": K.OP_GRU, "RNN": K.OP_RNN}[l.kind]
                bld.layer(OP=op, X=offsets[l.x], XW=l.input_size, Y=yo + d * h, YW=h, H=h,
                          REV=1 if (l.direction == "reverse" or d == 1) else 0,
                          STATE=state_off, RNG=len(bld.meta_layers), ACT0=codes[0],
                          ACT1=codes[1], ACT2=codes[2], ACTP=bld.f64(params),
                          CLIP=bld.f64([l.clip if l.clip is not None else math.inf]),
                          IF=int(l.input_forget), LBR=int(l.linear_before_reset),
                          NSEG=len(segs), SEG0=segs[0], BIAS=bld.f64(bias),
                          PEEP=bld.f64(l.P[d]) if l.P is not None else -1,
                          COUT=(co + d * h) if co >= 0 else -1)
                state_slots.append((l, d, state_off))
                state_off += 2 * h
        elif isinstance(l, ir.Dense):
            yo = alloc(l.y, l.out_features)
            segs = segs_by_key.get(f"{li}/0", [])
            bias = l.b if l.b is not None else None
            bld.layer(OP=K.OP_DENSE, X=offsets[l.x], XW=l.in_features, Y=yo,
                      YW=l.out_features, NSEG=len(segs), SEG0=segs[0] if segs else 0,
                      RNG=len(bld.meta_layers), BIAS=bld.f64(bias) if bias is not None else -1)
        elif isinstance(l, ir.Elementwise):
            w = widths[l.x]
            yo = alloc(l.y, w)
            bld.layer(OP=K.OP_ACT, X=offsets[l.x], XW=w, Y=yo, YW=w,
                      ACT0=K.ACT_CODES[l.fn.name], ACTP=bld.f64([l.fn.alpha, l.fn.beta]))
        elif isinstance(l, ir.Softmax):
            w = widths[l.x]
            yo = alloc(l.y, w)
            bld.layer(OP=K.OP_LOGSOFTMAX if l.log else K.OP_SOFTMAX, X=offsets[l.x], XW=w,
                      Y=yo, YW=w)
        elif isinstance(l, ir.FeatureSlice):
            w = l.stop - l.start
            yo = alloc(l.y, w)
            bld.layer(OP=K.OP_COPY, X=offsets[l.x] + l.start, XW=w, Y=yo, YW=w)
        elif isinstance(l, ir.FeatureConcat):
            w = sum(widths[n] for n in l.xs)
            yo = alloc(l.y, w)
            o = yo
            for n in l.xs:
                bld.layer(OP=K.OP_COPY, X=offsets[n], XW=widths[n], Y=o, YW=widths[n])
                o += widths[n]
        else:  # pragma: no cover - the IR has no other layer types
            raise TypeError(f"unknown layer {l!r}")
    meta, wf, pf = bld.build()
    return Plan(meta=meta, wf=wf, pf=pf, env_width=width, offsets=offsets, widths=widths,
                state_width=max(state_off, 1), rng_slots=len(bld.meta_layers) + 1,
                segments=infos, state_slots=state_slots, exact=exact,
                per_read_noise=read_noise)
