"""Torch layers that compute, in the forward pass, what nvmstream's emulator computes (needs torch).

One :class:`CrossbarMatrix` is one crossbar matrix ``W[out, in]`` as runtime/plan.py programs it:

* weight codes per output row ``s_j = max_i |W_ji| / qmax_w``, ``q = clip(rint(W / s), +-qmax_w)``
  (:func:`nvmstream.devices.quant.quantize_weights`' rule; straight-through gradient);
* hardware-aware training (``HardwareSpec.device_noise``): the programmed weights
  ``q + delta`` with ``delta = w_eff - q`` drawn from the profile's own Device
  (:class:`~.hardware.ProgrammedWeightSampler`, a new chip per batch): storage errors,
  programming noise, stuck cells, drift at the chosen age with compensation;
* one DAC per matrix: the codes are :meth:`nvmstream.devices.periphery.DAC.apply` of the input
  (the engine's own stage, computed by that numpy method; the gradient is that of
  ``clip(v / d)``);
* per row tile: read noise ``N(0, sum_i u_i^2 read_var_ji)`` when the profile has it, then
  the ADC, :meth:`nvmstream.devices.periphery.ADC.apply` with the profile's range granularity
  (``adc.range``: one step per (row tile, column tile) or per (row tile, column)) and, for
  ``hwa``, its ADC noise in LSB; partial sums of the tiles added digitally;
* in model units ``sum * s_j * d``; VMM noise ``N(0, P / 10^(snr_db/10))``
  (:func:`nvmstream.devices.noise.vmm_noise_sigma`) on every output in training -- the
  deep-noise-injection setting of arXiv 1807.06555 when ``snr_db`` is the inference SNR.

Ranges are running statistics of the training batches (EMA of each batch's max |value|, ADC
ranges grouped as the profile's ``adc.range`` groups them: per tile or per column) until
:func:`calibrate_like_emulator` sets them exactly as ``nvm.convert`` + ``Engine`` will
(:func:`~.hardware.calibrate_matrix`) and freezes them. Noise is applied only in training mode.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from nvmstream.devices.noise import vmm_noise_sigma
from nvmstream.devices.periphery import ADC, DAC
from nvmstream.devices.quant import qmax_for_bits

from .hardware import HardwareSpec, ProgrammedWeightSampler, calibrate_matrix

__all__ = ["CrossbarMatrix", "QRecurrent", "SeqClassifier", "ExportModel",
           "calibrate_like_emulator", "commit_stats", "set_frozen", "set_mode",
           "resample_device", "clear_device"]


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    """rint in the forward pass (round half to even, like numpy), identity gradient."""
    return x + (torch.round(x) - x).detach()


class _CodesSTE(torch.autograd.Function):
    """Forward value ``codes x out_scale`` (codes computed by the emulator's numpy quantizer),
    gradient that of ``clip(v / scale, -qmax, qmax) x out_scale`` (zero outside the range).

    One autograd node instead of the five of ``soft + (codes - soft).detach()``: the recurrent
    loop calls it twice per matrix and time step, and autograd overhead dominated the quantized
    training step. The forward value is the codes exactly (the old form added back ``soft``
    in float32, off by up to an ulp)."""

    @staticmethod
    def forward(ctx, v, scale, qmax, codes, out_scale):
        inside = (v / scale).abs() <= qmax
        ctx.save_for_backward(inside, scale, out_scale)
        return codes * out_scale

    @staticmethod
    def backward(ctx, grad):
        inside, scale, out_scale = ctx.saved_tensors
        return grad * inside * (out_scale / scale), None, None, None, None


def _ste_codes(v: torch.Tensor, scale: torch.Tensor, qmax: int, codes: np.ndarray,
               out_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Forward value ``codes`` (computed by the emulator's numpy quantizer) times
    ``out_scale`` (default 1), gradient of ``clip(v / scale, -qmax, qmax) * out_scale``
    (zero outside the range); ``scale`` and ``out_scale`` carry no gradient."""
    c = torch.from_numpy(np.asarray(codes, np.float32))
    one = torch.ones((), dtype=v.dtype) if out_scale is None else out_scale.detach()
    return _CodesSTE.apply(v, scale.detach(), float(qmax), c, one)


def _adc_codes(p: np.ndarray, steps: np.ndarray, bits: int, noise_lsb: float,
               rng: np.random.Generator | None) -> np.ndarray:
    """ADC codes of partial sums ``p[..., n_out]`` by the engine's own stage,
    :meth:`nvmstream.devices.periphery.ADC.apply` (steps ``[n_out]``), divided back by the step
    (``rint`` removes the rounding of ``code * step / step``)."""
    st = np.asarray(steps, np.float64)
    adc = ADC(int(bits), float(noise_lsb), steps=st[None, :])
    p = np.asarray(p, np.float64)
    normals = rng.standard_normal(p.shape) if noise_lsb > 0 else None
    return np.rint(adc.apply(p, 0, normals) / st)


class CrossbarMatrix(nn.Module):
    """One crossbar matrix ``W[out, in]`` (no bias) as the emulator runs it.

    Modes (:func:`set_mode`): ``"train"`` (quantizers; running ranges updated unless frozen;
    noise if configured and ``self.training``), ``"collect"`` (float inputs with the quantized
    weights, inputs recorded: what the emulator's calibration sees).
    """

    EMA = 0.9

    def __init__(self, n_in: int, n_out: int, spec: HardwareSpec, name: str):
        super().__init__()
        self.n_in, self.n_out, self.spec, self.name = n_in, n_out, spec, name
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.row_tiles = math.ceil(n_in / spec.tile_rows)
        self.register_buffer("dac_range", torch.zeros(()))
        self.register_buffer("adc_range", torch.zeros(self.row_tiles, n_out))
        self.register_buffer("power", torch.zeros(()))
        self.register_buffer("stats_seen", torch.zeros((), dtype=torch.bool))
        self.frozen = False
        self.mode = "train"
        self.collected: list[torch.Tensor] = []
        self.delta: torch.Tensor | None = None      # programmed - ideal codes (device draw)
        self.read_var: torch.Tensor | None = None   # per-read noise variance (code units^2)
        self.np_rng = np.random.default_rng(0)      # ADC noise in training
        self.cal = None                             # MatrixCalibration once calibrated
        self.draw = None                            # the chip's WeightDraw (hwa)
        self.comp = None                            # its digital drift compensation [out]

    # ------------------------------------------------------------------ weights
    def codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes with straight-through gradient [out, in], per-row scale s [out], detached)."""
        w = self.weight
        bits = self.spec.weight_bits
        qw = qmax_for_bits(bits)
        rowmax = w.detach().abs().amax(dim=1)
        live = rowmax >= torch.finfo(torch.float32).tiny
        s = torch.where(live, rowmax / qw, torch.ones_like(rowmax))
        q = w / s[:, None]
        if bits:
            q = torch.clamp(_ste_round(q), -qw, qw)
        return q, s

    def int_codes(self) -> np.ndarray:
        """The ideal integer codes (int8 [out, in]) the device is programmed with."""
        with torch.no_grad():
            return self.codes()[0].numpy().astype(np.int8)

    def effective_weight(self) -> torch.Tensor:
        """The float weight the exported model carries (codes x scale), detached."""
        with torch.no_grad():
            q, s = self.codes()
            return (q * s[:, None]).detach().clone()

    # ------------------------------------------------------------------ forward
    def forward(self, v: torch.Tensor, wq: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> torch.Tensor:
        q, s = wq if wq is not None else self.codes()
        spec = self.spec
        if self.mode == "collect":
            self.collected.append(v.detach().reshape(-1, self.n_in).clone())
            return v @ (q * s[:, None]).t()
        noisy = self.training
        if noisy and self.delta is not None:
            q = q + self.delta
        track = self.training and not self.frozen
        first = not bool(self.stats_seen)      # no range yet: use this call's own statistics
        qd = qmax_for_bits(spec.dac_bits) if spec.dac_bits else 0
        if qd:
            vmax = v.detach().abs().max()
            if track:
                self._pending("dac", vmax)
            r = vmax if first else self.dac_range
            d = torch.where(r > 0, r / qd, torch.ones_like(r))
            # frozen: the emulator's exact (float64) step; else the running range's
            d_np = self.cal.dac_step if (self.frozen and self.cal is not None) else float(d)
            u = _ste_codes(v, d, qd, DAC(spec.dac_bits, d_np).apply(v.detach().numpy()))
        else:
            d = torch.ones(())
            u = v
        qa = qmax_for_bits(spec.adc_bits) if spec.adc_bits else 0
        tr = spec.tile_rows
        total = None
        for blk in range(self.row_tiles):
            r0, r1 = blk * tr, min(self.n_in, (blk + 1) * tr)
            ub = u[..., r0:r1]
            p = ub @ q[:, r0:r1].t()
            if noisy and self.read_var is not None:
                var = (ub.detach() ** 2) @ self.read_var[:, r0:r1].t()
                p = p + torch.sqrt(var) * torch.randn_like(p)
            if qa:
                amax = self._adc_group_max(p.detach().reshape(-1, self.n_out).abs().amax(dim=0))
                if track:
                    self._pending(f"adc{blk}", amax)
                ar = amax if first else self.adc_range[blk]
                a = torch.where(ar > 0, ar / qa, torch.ones_like(ar))
                anz = spec.adc_noise_lsb if noisy else 0.0
                a_np = (self.cal.adc_steps[blk] if (self.frozen and self.cal is not None)
                        else a.numpy())
                c = _adc_codes(p.detach().numpy(), a_np, spec.adc_bits, anz,
                               self.np_rng if anz > 0 else None)
                p = _ste_codes(p, a, qa, c, a)
            total = p if total is None else total + p
        out = total * (s * d)
        if noisy and self.draw is not None and self.draw.comp_mode is not None:
            if self.comp is None:      # the engine's factor, measured through this chip's ADC
                f = self.draw.compensation(self._adc_steps(), spec.adc_bits,
                                           spec.adc_noise_lsb, tr, float(qd) if qd else 1.0)
                self.comp = torch.from_numpy(np.asarray(f, np.float32))
            out = out * self.comp
        if math.isfinite(spec.snr_db):
            pw = out.detach().pow(2).mean()
            if track:
                self._pending("power", pw, mean=True)
            if noisy:
                power = pw if first else self.power
                sigma = float(vmm_noise_sigma(float(power), spec.snr_db))
                out = out + sigma * torch.randn_like(out)
        return out

    def _adc_group_max(self, amax: torch.Tensor) -> torch.Tensor:
        """Per-column max |partial sum| -> the ADC's range groups (``adc.range``): one range per
        ``tile_cols`` columns for ``per_tile`` (broadcast back to the columns), as the
        emulator's ADC calibrates; unchanged for ``per_column``."""
        if self.spec.adc_range != "per_tile":
            return amax
        tc = self.spec.tile_cols or self.n_out
        out = amax.clone()
        for c0 in range(0, self.n_out, tc):
            out[c0:c0 + tc] = amax[c0:c0 + tc].max()
        return out

    # ------------------------------------------------------------------ running ranges
    def _adc_steps(self) -> np.ndarray | None:
        """The ADC steps ``[row_tiles, n_out]`` in force: the emulator's once calibrated and
        frozen, else the running ranges / qmax."""
        if not self.spec.adc_bits:
            return None
        if self.frozen and self.cal is not None:
            return np.asarray(self.cal.adc_steps, np.float64)
        r = self.adc_range.detach().double().numpy()
        return np.where(r > 0, r / qmax_for_bits(self.spec.adc_bits), 1.0)

    def _pending(self, key: str, value: torch.Tensor, mean: bool = False) -> None:
        """Accumulate this batch's statistic (max, or mean for power) until :meth:`commit`."""
        pend = self.__dict__.setdefault("_stats", {})
        if key not in pend:
            pend[key] = [value.clone(), 1]
        elif mean:
            pend[key][0] += value
            pend[key][1] += 1
        else:
            pend[key][0] = torch.maximum(pend[key][0], value)

    def commit(self) -> None:
        """Fold the batch statistics into the running ranges (EMA of per-batch max |value|)."""
        pend = self.__dict__.pop("_stats", {})
        if not pend:
            return
        first = not bool(self.stats_seen)
        with torch.no_grad():
            for key, (val, n) in pend.items():
                if key == "dac":
                    buf = self.dac_range
                elif key == "power":
                    buf, val = self.power, val / n
                else:
                    buf = self.adc_range[int(key[3:])]
                if first:
                    buf.copy_(val)
                else:
                    buf.mul_(self.EMA).add_((1 - self.EMA) * val)
            self.stats_seen.fill_(True)

    # ------------------------------------------------------------------ calibration
    def calibrate_from_collected(self) -> dict:
        """Set the ranges exactly as runtime/plan.py does from the collected float inputs."""
        spec = self.spec
        with torch.no_grad():
            V = torch.cat(self.collected).double().numpy()
            self.collected = []
            q, s = self.codes()
            W = (q * s[:, None]).numpy()
            cal = calibrate_matrix(V, q.numpy(), W, spec.dac_bits, spec.adc_bits,
                                   spec.tile_rows, spec.tile_cols, spec.adc_range,
                                   spec.adc_calibration, spec.adc_percentile)
            qd = qmax_for_bits(spec.dac_bits) if spec.dac_bits else 1
            self.dac_range.fill_(cal.dac_step * qd)
            if cal.adc_steps is not None:
                qa = qmax_for_bits(spec.adc_bits)
                self.adc_range.copy_(torch.from_numpy(cal.adc_steps * qa))
            self.power.fill_(cal.power)
            self.stats_seen.fill_(True)
            self.cal = cal
        return {"dac_step": cal.dac_step, "power": cal.power}


def _matrices(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, CrossbarMatrix)]


def set_mode(model: nn.Module, mode: str) -> None:
    for m in _matrices(model):
        m.mode = mode


def commit_stats(model: nn.Module) -> None:
    """Call after every training step: batch statistics -> running ranges."""
    for m in _matrices(model):
        m.commit()


def set_frozen(model: nn.Module, frozen: bool) -> None:
    for m in _matrices(model):
        m.frozen = frozen


def resample_device(model: nn.Module, sampler: ProgrammedWeightSampler, draw: int) -> None:
    """Program the current codes of every matrix on chip number ``draw`` of the profile and
    keep ``delta = w_eff - codes`` and the read-noise variance for the next forward passes."""
    mats = _matrices(model)
    draws = sampler.draw({m.name: m.int_codes() for m in mats}, draw)
    for m in mats:
        wd = draws[m.name]
        m.delta = torch.from_numpy(wd.delta)
        m.draw = wd
        m.comp = None                 # measured at the next forward (needs the ADC steps)
        m.read_var = None if wd.read_var is None else torch.from_numpy(
            np.asarray(wd.read_var, np.float32))
        m.np_rng = np.random.default_rng(sampler.device_seed(draw))


def clear_device(model: nn.Module) -> None:
    for m in _matrices(model):
        m.delta = None
        m.read_var = None
        m.draw = None
        m.comp = None


#: per-element bound on dL/dh_t at every time step in device-noise (``hwa``) training.
#: The forward pass is the engine's: on a chip whose measured digital drift compensation
#: (:class:`~nvmstream.devices.periphery.DriftCompensation`, one-hot readouts through the
#: 4-bit ADC) reads a few LSBs at the age where it read hundreds at t0, the recurrent matrix's
#: output is multiplied by 20-350 (pcm-1d: the engine's own factors for chips 0-3 of the
#: shipped basic_motions_hwa are 201, 102, 134, 194; digits' drawn chips 22-57). The
#: straight-through backward then grows by about that factor per step: basic_motions overflowed
#: float32 after ~60 of 100 steps (inf, then inf * 0 = nan in the matmul's backward; those
#: batches were skipped), digits reached |dL/dh_t| of 1e6-4e8 and its loss rose to 17.8.
#: Clipping the derivatives inside the recurrence to a fixed range is Graves' remedy for LSTM
#: training (arXiv 1308.0850, sec. 2); the bound is ~17x what a chip with a sane factor gives
#: (max |dL/dh_t| 0.055-0.062 on basic_motions chips with factor 1), so it acts on the
#: exploding chips only (bit-identical gradients otherwise, tested). Forward values untouched.
HIDDEN_GRAD_CLIP = 1.0


def _clip_hidden_grad(g: torch.Tensor) -> torch.Tensor:
    return g.clamp(-HIDDEN_GRAD_CLIP, HIDDEN_GRAD_CLIP)


class QRecurrent(nn.Module):
    """One forward LSTM or GRU layer (batch first, torch gate order) on two crossbar matrices.

    LSTM: gates = W x + R h + b_ih + b_hh in order i, f, g, o.
    GRU (torch / ONNX linear_before_reset=1): r, z from W x + R h + biases; n = tanh(W_n x + b_in +
    r * (R_n h + b_hn)); h = (1 - z) n + z h.
    """

    def __init__(self, kind: str, n_in: int, hidden: int, spec: HardwareSpec):
        super().__init__()
        if kind not in ("LSTM", "GRU"):
            raise ValueError(f"kind must be LSTM or GRU, got {kind!r}")
        self.kind, self.hidden = kind, hidden
        g = 4 if kind == "LSTM" else 3
        self.W = CrossbarMatrix(n_in, g * hidden, spec, "W")
        self.R = CrossbarMatrix(hidden, g * hidden, spec, "R")
        self.bias_ih = nn.Parameter(torch.empty(g * hidden))
        self.bias_hh = nn.Parameter(torch.empty(g * hidden))
        k = 1.0 / math.sqrt(hidden)
        for p in (self.W.weight, self.R.weight, self.bias_ih, self.bias_hh):
            nn.init.uniform_(p, -k, k)     # nn.LSTM / nn.GRU default init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        H = self.hidden
        spec = self.W.spec
        if not spec.quantized and not spec.noisy and self.W.mode == "train":
            # float: torch's fused cell (same maths as the loop below, checked at export)
            params = [self.W.weight, self.R.weight, self.bias_ih, self.bias_hh]
            h0 = x.new_zeros(1, b, H)
            if self.kind == "LSTM":
                y, _, _ = torch.lstm(x, (h0, h0), params, True, 1, 0.0, self.training, False,
                                     True)
            else:
                y, _ = torch.gru(x, h0, params, True, 1, 0.0, self.training, False, True)
            return y
        zx = self.W(x) + self.bias_ih                        # [B, T, G*H], all steps at once
        # one unbind, not zx[:, k] per step: the backward of each select would allocate and
        # zero-fill a whole [B, T, G*H] gradient (quadratic in T; ~70% of a training step)
        zxs = zx.unbind(1)
        rq = self.R.codes()
        h = x.new_zeros(b, H)
        c = x.new_zeros(b, H)
        ys = []
        # device-noise training: a drawn chip's recurrent matrix can carry a digital drift
        # compensation factor of 20-350 (see HIDDEN_GRAD_CLIP); bound dL/dh_t per step
        clip = self.training and spec.device_noise and torch.is_grad_enabled()
        for k in range(t):
            zh = self.R(h, rq) + self.bias_hh
            if self.kind == "LSTM":
                g = zxs[k] + zh
                i, f, gg, o = g.chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:
                xr, xz, xn = zxs[k].chunk(3, dim=1)
                hr, hz, hn = zh.chunk(3, dim=1)
                r = torch.sigmoid(xr + hr)
                z = torch.sigmoid(xz + hz)
                n = torch.tanh(xn + r * hn)
                h = (1 - z) * n + z * h
            if clip:
                h.register_hook(_clip_hidden_grad)
            ys.append(h)
        return torch.stack(ys, dim=1)


class SeqClassifier(nn.Module):
    """Recurrent layer + linear head at every step: logits ``[B, T, C]``.

    Optional input normalisation ``(x - in_mean) / in_std`` (per feature) helps float training
    on raw features of large magnitude (log-mel energies); :meth:`fold_input_norm` folds it into
    the input matrix and bias (``W / s``, ``b - (W / s) m``) so the exported model, and the DAC
    of a quantized one, see the raw features.
    """

    def __init__(self, kind: str, n_in: int, hidden: int, n_classes: int, spec: HardwareSpec):
        super().__init__()
        self.kind, self.n_in, self.hidden, self.n_classes = kind, n_in, hidden, n_classes
        self.rnn = QRecurrent(kind, n_in, hidden, spec)
        self.head = CrossbarMatrix(hidden, n_classes, spec, "head")
        self.head_bias = nn.Parameter(torch.zeros(n_classes))
        k = 1.0 / math.sqrt(hidden)
        nn.init.uniform_(self.head.weight, -k, k)
        nn.init.uniform_(self.head_bias, -k, k)
        self.register_buffer("in_mean", torch.zeros(n_in))
        self.register_buffer("in_std", torch.ones(n_in))
        self.dropout = 0.0     # on the hidden sequence before the head, training only

    @property
    def spec(self) -> HardwareSpec:
        return self.head.spec

    def set_input_norm(self, mean, std) -> None:
        with torch.no_grad():
            self.in_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.in_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    @property
    def normalizes(self) -> bool:
        return bool(torch.any(self.in_mean != 0) or torch.any(self.in_std != 1))

    def fold_input_norm(self) -> None:
        """W x' + b, x' = (x - m) / s  ==  (W / s) x + (b - (W / s) m); then no normalisation."""
        if not self.normalizes:
            return
        with torch.no_grad():
            w = self.rnn.W.weight / self.in_std[None, :]
            self.rnn.bias_ih.sub_(w @ self.in_mean)
            self.rnn.W.weight.copy_(w)
            self.in_mean.zero_()
            self.in_std.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalizes:
            x = (x - self.in_mean) / self.in_std
        h = self.rnn(x)
        if self.training and self.dropout > 0:
            h = nn.functional.dropout(h, self.dropout)
        return self.head(h) + self.head_bias

    def matrices(self) -> list[CrossbarMatrix]:
        return [self.rnn.W, self.rnn.R, self.head]

    def with_spec(self, spec: HardwareSpec) -> "SeqClassifier":
        """A copy with the same float weights and other quantizers (statistics reset)."""
        new = SeqClassifier(self.kind, self.n_in, self.hidden, self.n_classes, spec)
        state = {k: v for k, v in self.state_dict().items()
                 if not k.endswith(("dac_range", "adc_range", "power", "stats_seen"))}
        new.load_state_dict(state, strict=False)
        new.fold_input_norm()
        return new

    def export_module(self) -> "ExportModel":
        """A standard nn.LSTM/nn.GRU + nn.Linear carrying the weights as quantized (input
        normalisation folded in)."""
        if self.normalizes:
            if self.spec.quantized:
                raise RuntimeError("fold the input normalisation before quantizing")
            return self.with_spec(self.spec).export_module()
        m = ExportModel(self.kind, self.n_in, self.hidden, self.n_classes)
        with torch.no_grad():
            m.rnn.weight_ih_l0.copy_(self.rnn.W.effective_weight())
            m.rnn.weight_hh_l0.copy_(self.rnn.R.effective_weight())
            m.rnn.bias_ih_l0.copy_(self.rnn.bias_ih)
            m.rnn.bias_hh_l0.copy_(self.rnn.bias_hh)
            m.head.weight.copy_(self.head.effective_weight())
            m.head.bias.copy_(self.head_bias)
        return m.eval()


class ExportModel(nn.Module):
    """What is exported to ONNX: ``x[B, T, F]`` -> logits ``y[B, T, C]`` at every step."""

    def __init__(self, kind: str, n_in: int, hidden: int, n_classes: int):
        super().__init__()
        cls = nn.LSTM if kind == "LSTM" else nn.GRU
        self.rnn = cls(n_in, hidden, num_layers=1, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head(y)


def calibrate_like_emulator(model: SeqClassifier, x_cal: np.ndarray, freeze: bool = True
                            ) -> dict:
    """Set every matrix's DAC/ADC ranges and noise power as runtime/plan.py will.

    The emulator runs the *float* model (quantized weights, no DAC/ADC) over the calibration set
    and calibrates each matrix with :func:`~.hardware.calibrate_matrix`. ``x_cal`` must be the
    calibration set later passed to ``nvm.convert`` (:func:`nvmstream.runtime.stats.calibration_set`).
    """
    was_training = model.training
    model.eval()
    set_mode(model, "collect")
    with torch.no_grad():
        model(torch.as_tensor(np.asarray(x_cal, np.float32)))
    set_mode(model, "train")
    info = {m.name: m.calibrate_from_collected() for m in model.matrices()}
    if freeze:
        set_frozen(model, True)
    model.train(was_training)
    return info
