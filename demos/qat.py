"""Quantization- and noise-aware training for nvmstream's emulated crossbar (torch, CPU).

The layers here compute, in the forward pass, exactly what ``nvmstream.runtime`` computes for one
crossbar matrix (see runtime/plan.py and runtime/kernels/vmm.py), with straight-through gradients:

* weight codes per output row: ``s_j = max_i |W_ji| / qmax_w``, ``q = clip(rint(W / s), +-qmax_w)``;
* one input DAC per matrix: ``u = clip(rint(v / d), +-qmax_dac)``, ``d = range / qmax_dac``
  (``v`` is ``x`` for the input matrix ``W``, ``h_{t-1}`` for the recurrent matrix ``R``, ``h_t``
  for the head);
* per (256-row tile, column) ADC on the integer partial sum ``p = u . q``:
  ``clip(rint(p / a), +-qmax_adc) a`` with ``a = range / qmax_adc``, then a digital sum over tiles;
* the result in model units is ``sum * s_j * d``; biases, gates and state update stay float.

The bit widths and the tile height come from a device profile (``nvmstream.devices.load_profile``)
so "trained for profile X" means the same quantizers the emulator builds for X. Ranges are running
statistics of the training batches (an exponential moving average of each batch's max |value|)
until :func:`calibrate_like_emulator` replaces them with exactly what ``nvmstream.convert`` +
``Engine`` will compute (max over the calibration set, on the float model) and freezes them.

Noise injection (Qin & Vucinic, arXiv 1811.10649; deep noise injection, arXiv 1807.06555): in
training mode every matrix-vector product gets ``N(0, P / 10^(snr_db/10))`` added, ``P`` a running
mean of that product's power, which is the emulator's ``vmm_noise`` model.

A :class:`SeqClassifier` holds one recurrent layer (LSTM or GRU, torch gate order) and a per-step
linear head; :meth:`SeqClassifier.export_module` copies the (quantized) weights into a standard
``nn.LSTM``/``nn.GRU`` + ``nn.Linear`` for ONNX export.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["QuantConfig", "CrossbarMatrix", "QRecurrent", "SeqClassifier", "ExportModel",
           "calibrate_like_emulator", "calibration_subset", "commit_stats", "set_frozen",
           "set_mode"]


def _qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


@dataclass(frozen=True)
class QuantConfig:
    """What the training-time quantizers emulate. ``bits = 0`` means off (float)."""

    weight_bits: int = 0
    dac_bits: int = 0
    adc_bits: int = 0
    tile_rows: int = 256
    snr_db: float = math.inf       # training noise; inf = none
    profile: str | None = None     # the device profile the bits came from

    @classmethod
    def from_profile(cls, name: str, snr_db: float = math.inf) -> "QuantConfig":
        from nvmstream.devices import load_profile
        p = load_profile(name)
        return cls(weight_bits=p.weights.bits, dac_bits=p.dac.bits, adc_bits=p.adc.bits,
                   tile_rows=p.tile.rows, snr_db=float(snr_db), profile=p.name)

    @property
    def quantized(self) -> bool:
        return bool(self.weight_bits or self.dac_bits or self.adc_bits)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["snr_db"] = None if math.isinf(self.snr_db) else self.snr_db
        return d


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    """rint in the forward pass (round half to even, like numpy), identity gradient."""
    return x + (torch.round(x) - x).detach()


class CrossbarMatrix(nn.Module):
    """One crossbar matrix ``W[out, in]`` (no bias) as the emulator runs it.

    Modes (:func:`set_mode`): ``"train"`` (fake quantizers; running ranges updated unless
    frozen; noise if configured and ``self.training``), ``"collect"`` (float inputs with the
    quantized weights, inputs recorded for calibration: what the emulator's calibration sees).
    """

    EMA = 0.9

    def __init__(self, n_in: int, n_out: int, cfg: QuantConfig, name: str):
        super().__init__()
        self.n_in, self.n_out, self.cfg, self.name = n_in, n_out, cfg, name
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.row_tiles = math.ceil(n_in / cfg.tile_rows)
        self.register_buffer("dac_range", torch.zeros(()))
        self.register_buffer("adc_range", torch.zeros(self.row_tiles, n_out))
        self.register_buffer("power", torch.zeros(()))
        self.register_buffer("stats_seen", torch.zeros((), dtype=torch.bool))
        self.frozen = False
        self.mode = "train"
        self.collected: list[torch.Tensor] = []

    # ------------------------------------------------------------------ weights
    def codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes with straight-through gradient [out, in], per-row scale s [out], detached)."""
        w = self.weight
        qw = _qmax(self.cfg.weight_bits) if self.cfg.weight_bits else 1
        rowmax = w.detach().abs().amax(dim=1)
        s = torch.where(rowmax > 0, rowmax / qw, torch.ones_like(rowmax))
        q = w / s[:, None]
        if self.cfg.weight_bits:
            q = torch.clamp(_ste_round(q), -qw, qw)
        return q, s

    def effective_weight(self) -> torch.Tensor:
        """The float weight the exported model carries (codes x scale), detached."""
        with torch.no_grad():
            q, s = self.codes()
            return (q * s[:, None]).detach().clone()

    # ------------------------------------------------------------------ forward
    def forward(self, v: torch.Tensor, wq: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> torch.Tensor:
        q, s = wq if wq is not None else self.codes()
        cfg = self.cfg
        if self.mode == "collect":
            self.collected.append(v.detach().reshape(-1, self.n_in).clone())
            return v @ (q * s[:, None]).t()
        track = self.training and not self.frozen
        first = not bool(self.stats_seen)      # no range yet: use this call's own statistics
        qd = _qmax(cfg.dac_bits) if cfg.dac_bits else 0
        if qd:
            vmax = v.detach().abs().max()
            if track:
                self._pending("dac", vmax)
            r = vmax if first else self.dac_range
            d = torch.where(r > 0, r / qd, torch.ones_like(r))
            u = torch.clamp(_ste_round(v / d), -qd, qd)
        else:
            d = torch.ones(())
            u = v
        qa = _qmax(cfg.adc_bits) if cfg.adc_bits else 0
        tr = cfg.tile_rows
        total = None
        for blk in range(self.row_tiles):
            r0, r1 = blk * tr, min(self.n_in, (blk + 1) * tr)
            p = u[..., r0:r1] @ q[:, r0:r1].t()
            if qa:
                amax = p.detach().reshape(-1, self.n_out).abs().amax(dim=0)
                if track:
                    self._pending(f"adc{blk}", amax)
                ar = amax if first else self.adc_range[blk]
                a = torch.where(ar > 0, ar / qa, torch.ones_like(ar))
                p = torch.clamp(_ste_round(p / a), -qa, qa) * a
            total = p if total is None else total + p
        out = total * (s * d)
        if math.isfinite(cfg.snr_db):
            pw = out.detach().pow(2).mean()
            if track:
                self._pending("power", pw, mean=True)
            if self.training:
                power = pw if first else self.power
                sigma = torch.sqrt(power / 10 ** (cfg.snr_db / 10))
                out = out + sigma * torch.randn_like(out)
        return out

    # ------------------------------------------------------------------ running ranges
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
        cfg = self.cfg
        with torch.no_grad():
            V = torch.cat(self.collected).double()
            self.collected = []
            q, s = self.codes()
            q = q.double()
            absmax = V.abs().max() if V.numel() else torch.zeros((), dtype=torch.float64)
            self.dac_range.copy_(absmax)
            qd = _qmax(cfg.dac_bits) if cfg.dac_bits else 0
            if qd:
                d = absmax / qd if absmax > 0 else torch.ones((), dtype=torch.float64)
                U = torch.clamp(torch.round(V / d), -qd, qd)
            else:
                U = V
            tr = cfg.tile_rows
            for blk in range(self.row_tiles):
                r0, r1 = blk * tr, min(self.n_in, (blk + 1) * tr)
                part = U[:, r0:r1] @ q[:, r0:r1].t()
                self.adc_range[blk].copy_(part.abs().amax(dim=0))
            W = (q * s.double()[:, None])
            self.power.copy_((V @ W.t()).pow(2).mean())
            self.stats_seen.fill_(True)
        return {"dac_range": float(self.dac_range), "power": float(self.power)}


def set_mode(model: nn.Module, mode: str) -> None:
    for m in model.modules():
        if isinstance(m, CrossbarMatrix):
            m.mode = mode


def commit_stats(model: nn.Module) -> None:
    """Call after every training step: batch statistics -> running ranges."""
    for m in model.modules():
        if isinstance(m, CrossbarMatrix):
            m.commit()


def set_frozen(model: nn.Module, frozen: bool) -> None:
    for m in model.modules():
        if isinstance(m, CrossbarMatrix):
            m.frozen = frozen


class QRecurrent(nn.Module):
    """One forward LSTM or GRU layer (batch first, torch gate order) on two crossbar matrices.

    LSTM: gates = W x + R h + b_ih + b_hh in order i, f, g, o.
    GRU (torch / ONNX linear_before_reset=1): r, z from W x + R h + biases; n = tanh(W_n x + b_in +
    r * (R_n h + b_hn)); h = (1 - z) n + z h.
    """

    def __init__(self, kind: str, n_in: int, hidden: int, cfg: QuantConfig):
        super().__init__()
        if kind not in ("LSTM", "GRU"):
            raise ValueError(f"kind must be LSTM or GRU, got {kind!r}")
        self.kind, self.hidden = kind, hidden
        g = 4 if kind == "LSTM" else 3
        self.W = CrossbarMatrix(n_in, g * hidden, cfg, "W")
        self.R = CrossbarMatrix(hidden, g * hidden, cfg, "R")
        self.bias_ih = nn.Parameter(torch.empty(g * hidden))
        self.bias_hh = nn.Parameter(torch.empty(g * hidden))
        k = 1.0 / math.sqrt(hidden)
        for p in (self.W.weight, self.R.weight, self.bias_ih, self.bias_hh):
            nn.init.uniform_(p, -k, k)     # nn.LSTM / nn.GRU default init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        H = self.hidden
        zx = self.W(x) + self.bias_ih                        # [B, T, G*H], all steps at once
        rq = self.R.codes()
        h = x.new_zeros(b, H)
        c = x.new_zeros(b, H)
        ys = []
        for k in range(t):
            zh = self.R(h, rq) + self.bias_hh
            if self.kind == "LSTM":
                g = zx[:, k] + zh
                i, f, gg, o = g.chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:
                xr, xz, xn = zx[:, k].chunk(3, dim=1)
                hr, hz, hn = zh.chunk(3, dim=1)
                r = torch.sigmoid(xr + hr)
                z = torch.sigmoid(xz + hz)
                n = torch.tanh(xn + r * hn)
                h = (1 - z) * n + z * h
            ys.append(h)
        return torch.stack(ys, dim=1)


class SeqClassifier(nn.Module):
    """Recurrent layer + linear head at every step: logits ``[B, T, C]``.

    Optional input normalisation ``(x - in_mean) / in_std`` (per feature) helps float training
    on raw features of large magnitude (log-mel energies); :meth:`fold_input_norm` folds it into
    the input matrix and bias (``W / s``, ``b - (W / s) m``) so the exported model, and the DAC
    of a quantized one, see the raw features.
    """

    def __init__(self, kind: str, n_in: int, hidden: int, n_classes: int, cfg: QuantConfig):
        super().__init__()
        self.kind, self.n_in, self.hidden, self.n_classes = kind, n_in, hidden, n_classes
        self.rnn = QRecurrent(kind, n_in, hidden, cfg)
        self.head = CrossbarMatrix(hidden, n_classes, cfg, "head")
        self.head_bias = nn.Parameter(torch.zeros(n_classes))
        k = 1.0 / math.sqrt(hidden)
        nn.init.uniform_(self.head.weight, -k, k)
        nn.init.uniform_(self.head_bias, -k, k)
        self.register_buffer("in_mean", torch.zeros(n_in))
        self.register_buffer("in_std", torch.ones(n_in))

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
        return self.head(self.rnn(x)) + self.head_bias

    def matrices(self) -> list[CrossbarMatrix]:
        return [self.rnn.W, self.rnn.R, self.head]

    def with_config(self, cfg: QuantConfig) -> "SeqClassifier":
        """A copy with the same float weights and other quantizers (statistics reset)."""
        new = SeqClassifier(self.kind, self.n_in, self.hidden, self.n_classes, cfg)
        state = {k: v for k, v in self.state_dict().items()
                 if not k.endswith(("dac_range", "adc_range", "power", "stats_seen"))}
        new.load_state_dict(state, strict=False)
        new.fold_input_norm()
        return new

    def export_module(self) -> "ExportModel":
        """A standard nn.LSTM/nn.GRU + nn.Linear carrying the weights as quantized (input
        normalisation folded in)."""
        if self.normalizes:
            if self.rnn.W.cfg.quantized:
                raise RuntimeError("fold the input normalisation before quantizing")
            return self.with_config(self.rnn.W.cfg).export_module()
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


def calibration_subset(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """The calibration sequences ``nvmstream.convert(path, x)`` keeps (same rule and seed)."""
    from nvmstream.converters.compile import MAX_CAL_SEQUENCES, MAX_CAL_STEPS
    x = np.asarray(x, np.float32)
    if x.shape[0] > MAX_CAL_SEQUENCES or x.shape[1] > MAX_CAL_STEPS:
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(x.shape[0], min(MAX_CAL_SEQUENCES, x.shape[0]), replace=False))
        x = x[idx, :MAX_CAL_STEPS]
    return np.ascontiguousarray(x)


def calibrate_like_emulator(model: SeqClassifier, x_cal: np.ndarray, freeze: bool = True
                            ) -> dict:
    """Set every matrix's DAC/ADC ranges and noise power as runtime/plan.py will.

    The emulator runs the *float* model (quantized weights, no DAC/ADC) over the calibration set
    and takes max |input| per matrix (DAC), max |partial sum| per (tile, column) in code units
    (ADC) and the mean squared output (VMM noise power). ``x_cal`` should be
    :func:`calibration_subset` of the data later passed to ``nvmstream.convert``.
    """
    was_training = model.training
    model.eval()
    set_mode(model, "collect")
    with torch.no_grad():
        model(torch.as_tensor(x_cal))
    set_mode(model, "train")
    info = {m.name: m.calibrate_from_collected() for m in model.matrices()}
    if freeze:
        set_frozen(model, True)
    model.train(was_training)
    return info
