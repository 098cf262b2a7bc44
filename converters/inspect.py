"""Human- and machine-readable description of an IR model (``nvmstream inspect``)."""

from __future__ import annotations

import math
from typing import Any

from . import ir

DEFAULT_TILE = (256, 256)


def tiles_needed(n_in: int, n_out: int, rows: int = 256, cols: int = 256) -> int:
    """Crossbar tiles for an ``n_out x n_in`` weight matrix: inputs drive rows, outputs are
    read on columns; one tile holds ``rows x cols`` signed weights (each a differential pair)."""
    return math.ceil(n_in / rows) * math.ceil(n_out / cols)


def describe(model: ir.Model, tile: tuple[int, int] = DEFAULT_TILE) -> dict[str, Any]:
    from .compile import crossbar_matrices    # the one crossbar mapping (plan and ledger too)
    rows, cols = tile
    tiles_of: dict[int, int] = {}
    for m in crossbar_matrices(model):
        tiles_of[m.layer] = tiles_of.get(m.layer, 0) + tiles_needed(m.W.shape[1], m.W.shape[0],
                                                                     rows, cols)
    layers = []
    for k, l in enumerate(model.layers):
        d: dict[str, Any] = {"name": l.name, "type": type(l).__name__, "runs_on": ir.runs_on(l),
                             "engine": isinstance(l, ir.ENGINE_LAYERS)}
        if isinstance(l, ir.Recurrent):
            d.update(kind=l.kind, direction=l.direction, input_size=l.input_size,
                     hidden_size=l.hidden_size, out_features=l.out_features,
                     activations=[[str(a) for a in acts] for acts in l.activations],
                     clip=l.clip, input_forget=l.input_forget,
                     linear_before_reset=l.linear_before_reset,
                     peepholes=l.P is not None,
                     sequence_lens=l.sequence_lens or (None if l.sequence_lens_value is None
                                                       else l.sequence_lens_value.tolist()),
                     initial_state=("input" if l.initial_h and l.initial_h.input else
                                    "constant" if l.initial_h else "zeros"),
                     mask=l.mask,
                     macs_per_step=l.macs_per_step,
                     tiles=tiles_of.get(k, 0))
        elif isinstance(l, ir.Dense):
            d.update(in_features=l.in_features, out_features=l.out_features,
                     bias=l.b is not None, macs_per_step=l.macs_per_step,
                     tiles=tiles_of.get(k, 0))
        elif isinstance(l, ir.Conv1d):
            d.update(in_channels=l.channels, out_features=l.out_features, kernel=l.taps,
                     dilation=l.dilation, pad_begin=l.pad_begin, delay=l.delay,
                     stride=l.stride,
                     in_features=l.in_features, bias=l.b is not None,
                     macs_per_step=l.macs_per_step, tiles=tiles_of.get(k, 0))
        elif isinstance(l, ir.FrameConv):
            d.update(in_channels=l.channels, out_channels=l.out_channels, kernel=l.taps,
                     stride=l.stride, dilation=l.dilation, pads=[l.pad_begin, l.pad_end],
                     positions=[l.positions, l.out_positions], in_features=l.in_features,
                     out_features=l.out_features, bias=l.b is not None,
                     macs_per_step=l.macs_per_step, tiles=tiles_of.get(k, 0))
        elif isinstance(l, ir.Binary):
            d.update(function=l.op)
        elif isinstance(l, ir.Unary):
            d.update(function=l.op if l.op == "sqrt" else f"pow {l.p:g}")
        elif isinstance(l, ir.ReduceMean):
            d.update(function="mean")
        elif isinstance(l, ir.StepMask):
            d.update(function=f"mask: any feature != {l.value:g}")
        elif isinstance(l, ir.FeaturePad):
            d.update(function=f"{l.mode} {l.begin}+{l.end}")
        elif isinstance(l, ir.Elementwise):
            d.update(function=str(l.fn))
        elif isinstance(l, ir.Softmax):
            d.update(log=l.log)
        elif isinstance(l, ir.FeatureSlice):
            d.update(start=l.start, stop=l.stop)
        elif isinstance(l, ir.LayerNorm):
            d.update(features=int(l.scale.size), epsilon=l.epsilon)
        layers.append(d)
    return {
        "source": model.source,
        "producer": model.producer,
        "opset": model.opset,
        "input": {"name": model.input.name, "axes": "BF" if model.input.frame
                  else "".join(model.input.axes), "features": model.input.features,
                  "frame": model.input.frame},
        "aux_inputs": [{"name": a.name, "role": a.role, "layer": a.layer} for a in model.aux_inputs],
        "outputs": [{"name": o.name, "axes": "".join(o.axes), "features": o.features,
                     "per_step": o.per_step} for o in model.outputs],
        "layers": layers,
        "macs_per_step": model.macs_per_step,
        "tiles": sum(l.get("tiles", 0) for l in layers),
        "tile_size": [rows, cols],
        "streamable": model.streamable,
        "not_streamable_because": model.why_not_streamable(),
        "metadata": dict(model.metadata),
    }


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]],
                 right: tuple[int, ...] = ()) -> list[str]:
    """Lines of a text table whose columns are as wide as their longest cell (header included),
    two spaces apart; the columns numbered in ``right`` are right-aligned; no trailing blanks."""
    widths = [max(len(r[c]) for r in (header, *rows)) for c in range(len(header))]

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(v.rjust(w) if c in right else v.ljust(w)
                         for c, (v, w) in enumerate(zip(r, widths))).rstrip()
    return [line(header)] + [line(r) for r in rows]


def format_text(info: dict[str, Any]) -> str:
    lines = [f"model      {info['source']}  ({info['producer'] or 'unknown producer'}, "
             f"opset {info['opset']})",
             f"input      {info['input']['name']} [{info['input']['axes']}] "
             f"features={info['input']['features']}" +
             (" (a frame per call: each call is one recurrent step, the state carried by the "
              "stream)" if info["input"].get("frame") else "")]
    aux: dict[str, list[str]] = {}
    for a in info["aux_inputs"]:
        aux.setdefault(a["name"], []).append(f"{a['role']} of {a['layer']}")
    for name, roles in aux.items():
        lines.append(f"aux input  {name} ({', '.join(roles)})")
    for o in info["outputs"]:
        kind = "per step" if o["per_step"] else "final"
        lines.append(f"output     {o['name']} [{o['axes']}] features={o['features']} ({kind})")
    lines.append("")
    rows = []
    for k, l in enumerate(info["layers"]):
        if l["type"] == "Recurrent":
            t = l["kind"]
            shape = f"{l['input_size']} -> {l['hidden_size']} x{2 if l['direction'] == 'bidirectional' else 1}"
            extra = l["direction"] + (", masked" if l.get("mask") else "")
        elif l["type"] == "Dense":
            t, shape, extra = "Dense", f"{l['in_features']} -> {l['out_features']}", ""
        elif l["type"] == "Conv1d":
            t = "Conv1d"
            shape = (f"{l['kernel']}x{l['in_channels']} -> {l['out_features']} (im2col "
                     f"{l['in_features']})")
            extra = (f"dil {l['dilation']}" + (f", delay {l['delay']}" if l["delay"] else "")
                     + (f", stride {l['stride']}" if l.get("stride", 1) > 1 else ""))
        elif l["type"] == "FrameConv":
            t = "FrameConv"
            shape = (f"{l['kernel']}x{l['in_channels']} -> {l['out_channels']} "
                     f"@{l['positions'][1]} pos")
            extra = f"stride {l['stride']}" if l["stride"] > 1 else "in frame"
        else:
            t = l["type"]
            shape = l.get("function", "log" if l.get("log") else "")
            extra = ""
        where = l["runs_on"] + ("" if l["engine"] else " (float IR only)")
        rows.append((str(k), l["name"], t, shape, extra, str(l.get("macs_per_step", "")),
                     str(l.get("tiles", "")), where))
    lines += format_table(("#", "layer", "type", "shape", "dir", "MACs/step", "tiles", "runs on"),
                          rows, right=(0, 5, 6))
    lines.append("")
    lines.append(f"MACs per time step: {info['macs_per_step']}")
    r, c = info["tile_size"]
    lines.append(f"crossbar tiles ({r}x{c}): {info['tiles']}")
    if info["streamable"]:
        lines.append("streamable: yes (causal: every output at step t depends only on steps <= t)")
    else:
        lines.append(f"streamable: no ({info['not_streamable_because']})")
    return "\n".join(lines)
