"""The operation ledger: what every executed stream-step of every layer costs, in counts.

Counting convention (docs/energy.md, section 1 and the worked example):

* per crossbar matrix (a *segment*) split into tiles ``matrix_tiles(n_in, n_out, rows, cols)``:
  DAC conversions = sum of rows used over its tiles (an input feeding k column blocks is
  converted k times), ADC conversions = sum of columns used, cell reads = 2 n_in n_out
  (differential pairs), tile activations = number of tiles, MACs = n_in n_out, and one digital
  multiply per ADC output (scaling by the ADC step, weight scale and DAC step); a dynamic DAC
  range (``dac.range = dynamic``) adds n_in - 1 compares (adds), n_in + 1 + n_out multiplies;
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

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

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
    if seg.dac is not None and seg.dac.dynamic:
        # dynamic DAC range: a max-finder over the vector (n_in - 1 compares, priced as adds),
        # one reciprocal (priced as a multiply), the input rescale (n_in multiplies) and the
        # per-vector output rescale after the tile merge (n_out multiplies)
        c.digital_adds += max(seg.n_in - 1, 0)
        c.digital_muls += seg.n_in + 1 + seg.n_out
    return c, tiles


def _dynamic_dac_depth(seg) -> int:
    """Digital ops a dynamic DAC range adds to the step's critical path: a max-finder tree
    (ceil(log2 n_in) compares), the reciprocal, the input rescale and the output rescale."""
    if seg.dac is None or not seg.dac.dynamic:
        return 0
    return int(np.ceil(np.log2(max(seg.n_in, 1)))) + 3


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
        if isinstance(l, ir.FrameConv):
            # the kernel's tiles are read once per output position of the frame (im2col)
            c = c.scaled(l.out_positions)
            c.steps = 1
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
        elif isinstance(l, ir.Conv1d):
            # im2col: a Dense on the window of K frames; the window moves frames through the
            # ring of the last (K-1)*dilation frames (one frame in, the window out)
            partials = sum(s.row_tiles for s in segs) or 1
            c.digital_adds += l.out_features * (partials - 1) + (l.out_features if l.b is not None
                                                                 else 0)
            c.state_reads_bytes += F32 * (l.in_features + l.history * l.channels)
            c.state_writes_bytes += F32 * (l.out_features + l.history * l.channels)
            crit = 1 + (partials - 1) + 1
        elif isinstance(l, ir.FrameConv):
            # im2col over the positions within one frame: the patch gather reads every patch
            # value, each position's partial sums merge and add the bias, and the outputs are
            # written back in channel-major order; the positions' VMMs are sequential phases
            # on the same tiles
            partials = sum(s.row_tiles for s in segs) or 1
            P = l.out_positions
            c.digital_adds += P * (l.out_channels * (partials - 1) +
                                   (l.out_channels if l.b is not None else 0))
            c.state_reads_bytes += F32 * (P * l.patch + l.out_features)
            c.state_writes_bytes += F32 * (P * l.patch + 2 * l.out_features)
            seq_vmms = P
            crit = P * (1 + (partials - 1) + 1)
        elif isinstance(l, ir.LayerNorm):
            # mean (F adds, 1 mul by 1/F), centring (F subtracts), variance (F squares,
            # F adds, 1 mul, + eps), one reciprocal square root on the activation unit,
            # normalise and scale (2F muls), bias (F adds)
            w = plan.widths[l.x]
            c.digital_adds += 3 * w + 1 + (w if l.bias is not None else 0)
            c.digital_muls += 3 * w + 2
            c.activation_evals += 1
            c.state_reads_bytes += F32 * w
            c.state_writes_bytes += F32 * w
            # critical path: sum, /F, centre, square, sum, /F, +eps, rsqrt, normalise, scale
            # (+ bias); a reduction counts as one operation of the vector unit, as elsewhere
            crit = 10 + (1 if l.bias is not None else 0)
        elif isinstance(l, ir.StepMask):
            # Keras Masking: F comparisons with the mask value (priced as adds) and an OR
            # (one more add-class operation); reads the frame, writes one flag
            w = plan.widths[l.x]
            c.digital_adds += w + 1
            c.state_reads_bytes += F32 * w
            c.state_writes_bytes += F32
            crit = 2
        elif isinstance(l, (ir.Binary, ir.Unary, ir.ReduceMean, ir.FeaturePad)):
            # elementwise arithmetic: one add (add/sub) or multiply (mul, pow 2) per feature;
            # sqrt and other powers on the activation unit; a mean: F adds and one multiply;
            # padding moves data only
            w_in = plan.widths[l.xs[0] if isinstance(l, ir.Binary) else l.x]
            w_out = plan.widths[l.y]
            reads = w_in * (2 if isinstance(l, ir.Binary) else 1)
            if isinstance(l, ir.Binary):
                if l.op == "mul":
                    c.digital_muls += w_in
                else:
                    c.digital_adds += w_in
            elif isinstance(l, ir.Unary):
                if l.op == "pow" and l.p == 2.0:
                    c.digital_muls += w_in
                elif not (l.op == "pow" and l.p == 1.0):
                    c.activation_evals += w_in
            elif isinstance(l, ir.ReduceMean):
                c.digital_adds += w_in
                c.digital_muls += 1
            c.state_reads_bytes += F32 * reads
            c.state_writes_bytes += F32 * w_out
            crit = 2 if isinstance(l, ir.ReduceMean) else (0 if isinstance(l, ir.FeaturePad)
                                                             else 1)
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
        crit += max((_dynamic_dac_depth(s) for s in segs), default=0)
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

    @classmethod
    def merged(cls, parts: "Sequence[Ledger]") -> "Ledger":
        """One ledger holding the sum of ``parts`` (same unit costs and geometry)."""
        out = cls(parts[0].unit, parts[0].geometry)
        for p in parts:
            out.add(p.steps, p.replica_steps, p.inferences, p.stream_steps)
        return out

    def reset(self) -> None:
        self.steps.clear()
        self.replica_steps.clear()
        self.inferences = 0
        self.stream_steps = 0


#: The batch of streams whose weight fetches a batched digital baseline shares. The server
#: steps up to ``max_batch`` (512) streams together and forms batches of 178-255 at 256 busy
#: streams (docs/protocol.md), but a single stream is stepped alone: the report prices both
#: reuse 1 and this batch; ``nvmstream energy --batch`` chooses others.
DEFAULT_BATCH = 16


@dataclass(frozen=True)
class InferenceReport:
    """``Engine.report()``: the analog chip's energy/latency per inference (true sequence
    lengths, voting replicas charged) and per step, by component and layer, with leakage and
    the bottleneck of each layer's latency; the digital baselines (int4/int8/fp16/fp32 MAC
    arrays, weights from SRAM/DRAM, alone and with weights shared by a batch) on the same
    counts; the area of each; the one-off programming cost."""

    analog: E.EnergyReport
    baselines: tuple[E.BaselineReport, ...]
    comparison: E.Comparison
    one_off: E.OneOffReport
    inferences: int
    stream_steps: int
    area: E.AreaReport | None = None
    baseline_areas: tuple[E.AreaReport, ...] = ()
    iso_precision: str = ""
    votes: int = 1
    #: what the counts came from, ``{"runs" | "streams": (inferences, stream_steps)}``
    #: (``Engine.report``; empty when the counts were priced directly)
    sources: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def strongest(self) -> E.BaselineReport:
        """The baseline with the least energy per inference."""
        return min(self.baselines, key=lambda b: b.energy_pJ_per_inference)

    def area_ratios(self) -> dict[str, float]:
        """(TOPS/mm^2 analog) / (TOPS/mm^2 baseline) for each baseline."""
        if self.area is None:
            return {}
        return {a.name: (self.area.tops_per_mm2 / a.tops_per_mm2 if a.tops_per_mm2 else 0.0)
                for a in self.baseline_areas}

    def to_dict(self) -> dict[str, Any]:
        out = {"inferences": self.inferences, "stream_steps": self.stream_steps,
               "votes": self.votes,
               "sources": {k: {"inferences": n, "stream_steps": st}
                           for k, (n, st) in self.sources.items()}, "analog": self.analog.to_dict(),
               "baselines": {b.name: b.to_dict() for b in self.baselines},
               "comparison": self.comparison.to_dict(), "one_off": self.one_off.to_dict(),
               "iso_precision": self.iso_precision}
        if self.area is not None:
            out["area"] = {"analog": self.area.to_dict(),
                           "baselines": {a.name: a.to_dict() for a in self.baseline_areas},
                           "area_efficiency_ratio": self.area_ratios()}
        s = self.strongest
        out["verdict"] = {"strongest_baseline": s.name,
                          "ratio": self.comparison.ratios[s.name],
                          "iso_precision_ratio": self.comparison.ratios.get(
                              f"{self.iso_precision}/sram"),
                          "votes": self.votes}
        return out

    def _mixed_lines(self) -> list[str]:
        if len(self.sources) < 2:
            return []
        parts = [f"{n} {'sequence run' if k == 'runs' else 'stream'}(s) of "
                 f"{st / n:g} steps on average" for k, (n, st) in self.sources.items()]
        return ["  MIXED: " + " + ".join(parts) + "; per-inference figures average over both "
                "(Engine.report('runs') / report('streams') shows them apart)"]

    def format_text(self) -> str:
        a = self.analog
        lines = [f"energy and latency on profile {a.profile} at {a.node_nm:g} nm "
                 f"({a.periphery_precision} periphery): {self.inferences} inference(s), "
                 f"{a.steps_per_inference:g} true steps each, votes {self.votes}",
                 *self._mixed_lines(),
                 f"  energy      {a.energy_pJ_per_inference:12.6g} pJ/inference "
                 f"{a.energy_pJ_per_step:12.6g} pJ/step",
                 f"  latency     {a.latency_ns_per_inference:12.6g} ns/inference "
                 f"{a.latency_ns_per_step:12.6g} ns/step",
                 f"  efficiency  {a.tops_per_w:12.4g} TOPS/W  {a.tops:10.4g} TOPS  "
                 f"{a.power_mW:10.4g} mW (leakage {a.leakage_mW:.4g} mW)  "
                 f"{a.throughput_inferences_per_s:10.4g} inferences/s",
                 "", "  by component (pJ/inference):"]
        for k, v in a.by_component.items():
            share = 100 * v / a.energy_pJ_per_inference if a.energy_pJ_per_inference else 0
            lines.append(f"    {k:<16}{v:14.6g}  {share:5.1f}%")
        lines.append("  by layer (pJ/inference, ns/step, bound by):")
        for k, v in a.by_layer.items():
            lines.append(f"    {k[:28]:<28}{v:14.6g}  {a.latency_ns_by_layer.get(k, 0):10.4g}"
                         f"  {a.bottleneck_by_layer.get(k, '')}")
        lines.append("  digital baselines (MAC array, same MACs):  pJ/inference     TOPS/W   "
                     "digital/analog")
        for b in self.baselines:
            tag = " (iso-precision)" if b.datapath == self.iso_precision else ""
            lines.append(f"    {b.name + tag:<40}{b.energy_pJ_per_inference:14.6g}"
                         f"{b.tops_per_w:11.4g}{self.comparison.ratios[b.name]:12.3g}x")
        s = self.strongest
        lines.append(f"  verdict: vs the strongest baseline ({s.name}) the analog chip is "
                     f"{self.comparison.ratios[s.name]:.3g}x (> 1: analog uses less energy"
                     f"; {self.votes} vote(s) charged)")
        if self.area is not None:
            lines.append(f"  area: analog {self.area.area_mm2:.4g} mm^2, "
                         f"{self.area.tops_per_mm2:.4g} TOPS/mm^2 ("
                         + ", ".join(f"{k} {v:.3g}"
                                     for k, v in self.area.by_part.items()) + " mm^2)")
            for ab, r in zip(self.baseline_areas, self.area_ratios().values()):
                lines.append(f"    {ab.name:<40}{ab.area_mm2:10.4g} mm^2 {ab.tops_per_mm2:10.4g}"
                             f" TOPS/mm^2  analog/digital {r:8.3g}x")
        lines.append(f"  one-off programming: {self.one_off.total_pJ:.6g} pJ")
        if self.one_off.adc_retune_pJ:
            lines.append(f"  ADC range retune (adc.track_drift, per retune event): "
                         f"{self.one_off.adc_retune_pJ:.6g} pJ")
        return "\n".join(lines)


def one_off_counts(plan: Plan, weight_bits: int, profile=None) -> E.OneOffCounts:
    """Programming counts: every stored code is read once from weight storage (its stored bits
    include the profile's redundancy: guard bits, parity, unary; ``storage_bits_per_code``) and
    both cells of its differential pair are written."""
    if profile is not None and weight_bits:
        bits = E._profile(profile).storage_bits_per_code
    else:
        bits = weight_bits if weight_bits else 32
    n = sum(s.n_in * s.n_out for s in plan.segments)
    return E.OneOffCounts(storage_bits_read=round(n * bits), cells_programmed=2 * n)


def retune_counts(plan: Plan, vectors: int) -> dict[str, E.OpCounts]:
    """Operations of one ADC-range retune (``adc.track_drift``), per layer: every crossbar
    matrix read ``vectors`` times (its DAC, cell, ADC, tile and scaling counts of one step), one
    compare (a digital add) per ADC output per vector to track each range's max, and one
    reference-DAC write per ADC range (a DAC conversion: ``per_tile`` one per (row tile,
    column tile), ``per_column`` one per (row tile, column))."""
    out: dict[str, E.OpCounts] = {}
    for s in plan.segments:
        c, tiles = _seg_counts(s)
        c = c.scaled(int(vectors))
        c.macs = 0
        c.digital_adds += c.adc_conversions          # one compare per ADC output per vector
        ranges = (s.row_tiles * s.col_tiles if s.adc is None or s.adc.range == "per_tile"
                  else s.row_tiles * s.n_out)
        c.dac_conversions += ranges
        name = s.layer
        out[name] = out.get(name, E.OpCounts()) + c
    return out


def make_report(ledger: Ledger, profile, plan: Plan, weight_bits: int, *,
                batch: int | tuple[int, ...] = (1, DEFAULT_BATCH), votes: int = 1
                ) -> InferenceReport:
    """Price the ledger: analog report, every baseline at each weight reuse in ``batch``,
    areas, one-off cost."""
    if ledger.inferences == 0:
        raise ValueError("nothing has run on this engine yet (run, predict or stream steps)")
    counts = ledger.counts()
    return price_counts(counts, ledger.geometry, profile, plan, weight_bits,
                        inferences=ledger.inferences, stream_steps=ledger.stream_steps,
                        batch=batch, votes=votes)


def price_counts(counts, geometry, profile, plan: Plan | None, weight_bits: int, *,
                 inferences: int, stream_steps: int,
                 batch: int | tuple[int, ...] = (1, DEFAULT_BATCH), votes: int = 1
                 ) -> InferenceReport:
    """The whole report from counts (``nvmstream energy`` re-prices the same counts under
    other profiles, batches and vote counts)."""
    spi = stream_steps / inferences
    analog = E.price(counts, geometry, profile, inferences=inferences, steps_per_inference=spi)
    reuse = (batch,) if isinstance(batch, int) else tuple(batch)
    bases = tuple(E.all_baselines(counts, profile, inferences=inferences,
                                  steps_per_inference=spi, weight_reuse=reuse,
                                  geometry=geometry))
    one = (E.price_one_off(one_off_counts(plan, weight_bits, profile), profile) if plan is not None
           else E.OneOffReport(0.0, 0.0, 0.0))
    prof = E._profile(profile)
    if plan is not None and prof.adc.track_drift and prof.adc.bits:
        rc = retune_counts(plan, prof.energy.adc_retune_vectors)
        geo = {k: v for k, v in geometry.items() if k in rc}
        one = dataclasses.replace(one, adc_retune_pJ=E.price_adc_retune(rc, geo, prof))
    return InferenceReport(analog=analog, baselines=bases, comparison=E.compare(analog, bases),
                           one_off=one, inferences=inferences, stream_steps=stream_steps,
                           area=E.analog_area(analog, geometry, profile),
                           baseline_areas=tuple(E.baseline_area(b, profile) for b in bases
                                                if b.weight_reuse == reuse[0]),
                           iso_precision=E.iso_precision(_iso_bits(profile)), votes=votes)


def _iso_bits(profile) -> int:
    """Bits of the analog program: the larger of weight and DAC bits (0 if either is float)."""
    p = E._profile(profile)
    w, d = p.weights.bits, p.dac.bits
    return max(w, d) if w and d else 0
