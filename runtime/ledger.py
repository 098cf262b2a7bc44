"""The operation ledger: what every executed stream-step of every layer costs, in counts.

Counting convention (docs/energy.md, section 1 and the worked example):

* per crossbar matrix (a *segment*) split into tiles ``matrix_tiles(n_in, n_out, rows, cols)``:
  DAC conversions = sum of rows used over its tiles (an input feeding k column blocks is
  converted k times), ADC conversions = sum of columns used, cell reads = 2 n_in n_out
  (differential pairs), tile activations = number of tiles, MACs = n_in n_out, and one digital
  multiply per ADC output (scaling by the ADC step, weight scale and DAC step);
* per output of a layer: (partial sums - 1) digital adds to merge the tiles of every segment
  feeding it, one add per bias vector;
* gate arithmetic per hidden unit: LSTM f*c, i*g, o*tanh(c) (3 muls) and c = f c + i g (1 add),
  peepholes +3 muls +3 adds, 5 activations (4 with input_forget); GRU r*(.) and
  (1-z) hh + z h (3 muls, 3 adds), 3 activations; RNN 1 activation;
* state SRAM: recurrent layers read x, h (and c) and write h (and c), float32 (4 bytes); other
  layers read their input and write their output;
* digital operations on the step's critical path: scale (1) + merge (partials - 1) + bias (1)
  + the cell's chain (LSTM 5, GRU 6, RNN 1, Dense 0).

The engine multiplies these per-stream-step counts by the stream-steps each layer actually
executed (sequence lengths respected, voting replicas included and recorded), so the ledger is
filled as the engine runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from nvmstream.converters import ir
from nvmstream.devices import energy as E

from .plan import Plan

F32 = 4


def _seg_counts(seg) -> tuple[E.OpCounts, tuple[tuple[int, int], ...]]:
    tiles = E.matrix_tiles(seg.n_in, seg.n_out, seg.tile_rows, seg.tile_cols)
    c = E.OpCounts(dac_conversions=sum(r for r, _ in tiles),
                   adc_conversions=sum(k for _, k in tiles),
                   cell_reads=2 * seg.n_in * seg.n_out, tile_activations=len(tiles),
                   digital_muls=sum(k for _, k in tiles), macs=seg.n_in * seg.n_out)
    return c, tiles


def step_costs(model: ir.Model, plan: Plan) -> tuple[dict[str, E.OpCounts],
                                                      dict[str, E.LayerGeometry]]:
    """Counts of ONE stream-step through each layer, and each layer's geometry on the chip."""
    segs_by_layer: dict[int, list] = {}
    for s in plan.segments:
        k = int(s.key.split("/")[0][len("layer"):])
        segs_by_layer.setdefault(k, []).append(s)
    counts: dict[str, E.OpCounts] = {}
    geom: dict[str, E.LayerGeometry] = {}
    for k, l in enumerate(model.layers):
        c = E.OpCounts(steps=1)
        tiles: list[tuple[int, int]] = []
        segs = segs_by_layer.get(k, [])
        mean_g = []
        for s in segs:
            sc, t = _seg_counts(s)
            c += sc
            tiles.extend(t)
        dac_bits = segs[0].dac_bits if segs else 0
        adc_bits = segs[0].adc_bits if segs else 0
        seq_vmms, crit = 1, 0
        if isinstance(l, ir.Recurrent):
            h, nd = l.hidden_size, l.num_directions
            c.steps = 1
            per_dir = [s for s in segs]
            # partial sums per gate output, per direction: row tiles of every segment feeding it
            partials = sum(s.row_tiles for s in per_dir) // nd
            outs = l.gates * h
            adds = nd * (outs * max(partials - 1, 0) + outs)          # merge + bias
            muls = 0
            acts = 0
            if l.kind == "LSTM":
                muls += nd * 3 * h
                adds += nd * h
                acts += nd * (4 if l.input_forget else 5) * h
                if l.P is not None:
                    muls += nd * 3 * h
                    adds += nd * 3 * h
                chain = 5   # act, f*c & i*g, add, tanh, o*tanh(c)
                state_r, state_w = (l.input_size + 2 * h) * nd, 2 * h * nd
            elif l.kind == "GRU":
                muls += nd * 3 * h
                adds += nd * (3 * h + 3 * h)     # Rb biases and the (1-z) hh + z h update
                acts += nd * 3 * h
                chain = 6   # act, r*(.), add, tanh, (1-z)*hh & z*h, add
                if not l.linear_before_reset:
                    seq_vmms = 2
                state_r, state_w = (l.input_size + h) * nd, h * nd
            else:
                acts += nd * h
                chain = 1
                state_r, state_w = (l.input_size + h) * nd, h * nd
            c.digital_adds += adds
            c.digital_muls += muls
            c.activation_evals += acts
            c.state_reads_bytes += F32 * state_r
            c.state_writes_bytes += F32 * state_w
            crit = 1 + max(partials - 1, 0) + 1 + chain
        elif isinstance(l, ir.Dense):
            partials = sum(s.row_tiles for s in segs) or 1
            c.digital_adds += l.out_features * (partials - 1) + (l.out_features if l.b is not None
                                                                 else 0)
            if not segs:     # a bias-only layer: no crossbar
                c.digital_adds = l.out_features
            c.state_reads_bytes += F32 * l.in_features
            c.state_writes_bytes += F32 * l.out_features
            crit = (1 + (partials - 1) + 1) if segs else 1
        elif isinstance(l, (ir.Elementwise, ir.Softmax)):
            w = plan.widths[l.x]
            c.activation_evals += w
            if isinstance(l, ir.Softmax):
                c.digital_adds += 2 * w
                c.digital_muls += w
            c.state_reads_bytes += F32 * w
            c.state_writes_bytes += F32 * w
            crit = 1 if isinstance(l, ir.Elementwise) else 3
        else:   # slices and concatenations move data only
            w = plan.widths[l.y]
            c.state_reads_bytes += F32 * w
            c.state_writes_bytes += F32 * w
        for s in segs:
            if s.mean_cell_uS is not None:
                mean_g.append((s.mean_cell_uS, s.n_in * s.n_out))
        g = (sum(a * n for a, n in mean_g) / sum(n for _, n in mean_g)) if mean_g else None
        counts[l.name] = c
        geom[l.name] = E.LayerGeometry(name=l.name, tiles=tuple(tiles), dac_bits=dac_bits,
                                       adc_bits=adc_bits, sequential_vmms=seq_vmms,
                                       digital_ops_critical=crit, mean_cell_uS=g)
    return counts, geom


@dataclass
class Ledger:
    """Stream-steps executed per layer (and replicas among them) since the last reset."""

    unit: dict[str, E.OpCounts]
    geometry: dict[str, E.LayerGeometry]
    steps: dict[str, int] = field(default_factory=dict)
    replica_steps: dict[str, int] = field(default_factory=dict)
    inferences: int = 0
    stream_steps: int = 0            # time steps fed (per stream, replicas not counted)

    def add(self, layer_steps: Mapping[str, int], replicas: Mapping[str, int],
            inferences: int, stream_steps: int) -> None:
        for k, v in layer_steps.items():
            self.steps[k] = self.steps.get(k, 0) + int(v)
        for k, v in replicas.items():
            self.replica_steps[k] = self.replica_steps.get(k, 0) + int(v)
        self.inferences += int(inferences)
        self.stream_steps += int(stream_steps)

    def counts(self) -> dict[str, E.OpCounts]:
        out = {}
        for name, u in self.unit.items():
            n = self.steps.get(name, 0)
            c = u.scaled(n)
            c.steps = n
            c.vote_replicas = self.replica_steps.get(name, 0)
            out[name] = c
        return out

    def reset(self) -> None:
        self.steps.clear()
        self.replica_steps.clear()
        self.inferences = 0
        self.stream_steps = 0


@dataclass(frozen=True)
class InferenceReport:
    """``Engine.report()``: the analog chip's energy/latency per inference and per step, by
    component and layer, the digital baselines on the same counts, and the one-off
    programming cost."""

    analog: E.EnergyReport
    baselines: tuple[E.BaselineReport, ...]
    comparison: E.Comparison
    one_off: E.OneOffReport
    inferences: int
    stream_steps: int

    def to_dict(self) -> dict[str, Any]:
        return {"inferences": self.inferences, "stream_steps": self.stream_steps,
                "analog": self.analog.to_dict(),
                "baselines": {b.name: b.to_dict() for b in self.baselines},
                "comparison": self.comparison.to_dict(), "one_off": self.one_off.to_dict()}

    def format_text(self) -> str:
        a = self.analog
        lines = [f"energy and latency on profile {a.profile}: {self.inferences} inference(s), "
                 f"{a.steps_per_inference:g} steps each",
                 f"  energy      {a.energy_pJ_per_inference:12.6g} pJ/inference "
                 f"{a.energy_pJ_per_step:12.6g} pJ/step",
                 f"  latency     {a.latency_ns_per_inference:12.6g} ns/inference "
                 f"{a.latency_ns_per_step:12.6g} ns/step",
                 f"  efficiency  {a.tops_per_w:12.4g} TOPS/W  {a.tops:10.4g} TOPS  "
                 f"{a.power_mW:10.4g} mW  {a.throughput_inferences_per_s:10.4g} inferences/s",
                 "", "  by component (pJ/inference):"]
        for k, v in a.by_component.items():
            share = 100 * v / a.energy_pJ_per_inference if a.energy_pJ_per_inference else 0
            lines.append(f"    {k:<16}{v:14.6g}  {share:5.1f}%")
        lines.append("  by layer (pJ/inference, ns/step):")
        for k, v in a.by_layer.items():
            lines.append(f"    {k[:28]:<28}{v:14.6g}  {a.latency_ns_by_layer.get(k, 0):10.4g}")
        lines.append("  digital baselines (same MACs):          pJ/inference     TOPS/W   "
                     "digital/analog")
        for b in self.baselines:
            lines.append(f"    {b.name:<34}{b.energy_pJ_per_inference:14.6g}{b.tops_per_w:11.4g}"
                         f"{self.comparison.ratios[b.name]:12.3g}x")
        lines.append(f"  one-off programming: {self.one_off.total_pJ:.6g} pJ")
        return "\n".join(lines)


def one_off_counts(plan: Plan, weight_bits: int) -> E.OneOffCounts:
    bits = weight_bits if weight_bits else 32
    n = sum(s.n_in * s.n_out for s in plan.segments)
    return E.OneOffCounts(storage_bits_read=n * bits, cells_programmed=2 * n)


def make_report(ledger: Ledger, profile, plan: Plan, weight_bits: int) -> InferenceReport:
    if ledger.inferences == 0:
        raise ValueError("nothing has run on this engine yet (run, predict or stream steps)")
    counts = ledger.counts()
    spi = ledger.stream_steps / ledger.inferences
    analog = E.price(counts, ledger.geometry, profile, inferences=ledger.inferences,
                     steps_per_inference=spi)
    bases = tuple(E.all_baselines(counts, profile, inferences=ledger.inferences,
                                  steps_per_inference=spi))
    return InferenceReport(analog=analog, baselines=bases, comparison=E.compare(analog, bases),
                           one_off=E.price_one_off(one_off_counts(plan, weight_bits), profile),
                           inferences=ledger.inferences, stream_steps=ledger.stream_steps)
