"""The energy model configured like published analog chips, against their published figures.

Each :class:`Design` describes one published chip or design as a profile (shipped profile +
overrides: node, tile size, converters) and the operation counts of one fully parallel
matrix-vector multiplication (MVM) on all its tiles; :func:`validate` prices them with
:func:`~nvmstream.devices.energy.price` and compares the result with the published figure.
docs/energy.md, section "Validation", prints the table (the tests check that the page and the
code agree). Published figures are cited in each design's ``source``; everything else is a
modelling choice stated in ``config``.

This module uses numpy and the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from nvmstream.devices import energy as E
from nvmstream.devices.profile import load_profile

__all__ = ["Design", "DESIGNS", "validate"]


@dataclass(frozen=True)
class Design:
    name: str
    metric: str                 # "TOPS/W" or "pJ per read"
    published: float
    source: str
    config: str
    profile: str
    overrides: tuple[str, ...]
    tiles: int                  # tiles working in parallel
    tile_shape: tuple[int, int]  # (rows, weight columns) of one tile's MVM
    reads: int = 1              # sequential reads (phases) per MVM
    cells_per_weight: int = 2   # the model prices 2 (a differential pair); 4 doubles G
    adc_per_tile: int | None = None   # conversions per tile read (default: weight columns)
    digital_muls_per_output: int = 1
    component: Callable[[E.EnergyReport], float] | None = None
    dac_bits: int | None = None  # the converters' bits when the profile cannot hold them


def _isaac_read(r: E.EnergyReport) -> float:
    return r.by_component["adc"] + r.by_component["dac"] + r.by_component["cell_read"]


DESIGNS: tuple[Design, ...] = (
    Design(
        "IBM HERMES, one-phase read", "TOPS/W", 9.76,
        "Le Gallo et al., 'A 64-core mixed-signal in-memory compute chip based on phase-change "
        "memory for deep neural network inference', Nature Electronics 6, 680 (2023): 14 nm, "
        "64 cores of 256 x 256 unit cells, 8-bit input/output MVMs, 63.1 TOPS at 9.76 TOPS/W",
        "profile pcm at 14 nm; 256 x 256 tiles, one 8-bit ADC per column (cols_per_adc 1), "
        "8-bit DACs, int16 periphery (one affine multiply per output); 64 tiles read at once; "
        "MVM time 133 ns (= 64 x 256 x 256 x 2 ops / 63.1 TOPS) as tile_settle_ns",
        "pcm", ("energy.node_nm=14", "tile.rows=256", "tile.cols=256", "energy.cols_per_adc=1",
                "dac.bits=8", "adc.bits=8", "energy.periphery_precision=int16",
                "energy.tile_settle_ns=131"),
        64, (256, 256)),
    Design(
        "IBM HERMES, four-phase read", "TOPS/W", 2.48,
        "Le Gallo et al. 2023 (as above): 16.1 TOPS at 2.48 TOPS/W in the four-phase "
        "(high-precision) read mode",
        "as the one-phase row, with four sequential reads (and conversions) per MVM",
        "pcm", ("energy.node_nm=14", "tile.rows=256", "tile.cols=256", "energy.cols_per_adc=1",
                "dac.bits=8", "adc.bits=8", "energy.periphery_precision=int16",
                "energy.tile_settle_ns=131"),
        64, (256, 256), reads=4),
    Design(
        "IBM analog-AI speech chip", "TOPS/W", 12.4,
        "Ambrogio et al., 'An analog-AI chip for energy-efficient speech recognition and "
        "transcription', Nature 620, 768 (2023): 14 nm, 34 tiles of 512 x 2,048 PCMs (4 per "
        "weight: 512 x 512 weights), 8-bit inputs as pulse durations, up to 12.4 TOPS/W "
        "chip-sustained",
        "profile pcm at 14 nm; 512 x 512 tiles, 4 PCM per weight (twice the model's cell "
        "energy), one 8-bit conversion per column (the chip converts charge to durations, "
        "no ADC), 8-bit DACs, int16 periphery; 34 tiles read at once",
        "pcm", ("energy.node_nm=14", "tile.rows=512", "tile.cols=512", "energy.cols_per_adc=1",
                "dac.bits=8", "adc.bits=8", "energy.periphery_precision=int16"),
        34, (512, 512), cells_per_weight=4),
    Design(
        "ISAAC IMA, one 100 ns read (ADC + DAC + crossbar)", "pJ per read", 2240.0,
        "Shafiee et al., ISAAC, ISCA 2016, component table as coded in the PUMA simulator "
        "(include/constants.py, 'models from ISAAC paper'): per IMA 8 ADCs of 2 mW, "
        "8 x 128 DACs of 3.9 uW, 8 crossbars of 0.3 mW: 22.4 mW over a 100 ns read",
        "profile int4 at 32 nm; 8 tiles of 128 x 128 cells (2-bit cells, one per weight "
        "slice: 128 x 64 differential pairs in the model), 1-bit DACs, 8-bit ADCs, 128 "
        "conversions per tile read; adc + dac + cell_read only",
        "int4", ("tile.rows=128", "tile.cols=128", "energy.cols_per_adc=128", "adc.bits=8"),
        8, (128, 64), adc_per_tile=128, component=_isaac_read, dac_bits=1),
)


def design_report(d: Design) -> E.EnergyReport:
    """Price one MVM of design ``d`` (all its tiles at once)."""
    prof = load_profile(d.profile, list(d.overrides))
    rows, cols = d.tile_shape
    adc = d.adc_per_tile if d.adc_per_tile is not None else cols
    c = E.OpCounts(steps=1, dac_conversions=d.tiles * rows * d.reads,
                   adc_conversions=d.tiles * adc * d.reads,
                   cell_reads=d.tiles * 2 * rows * cols * d.reads,
                   tile_activations=d.tiles * d.reads,
                   digital_muls=d.tiles * cols * d.digital_muls_per_output,
                   macs=d.tiles * rows * cols)
    g_mean = E.default_mean_cell_uS(prof) * d.cells_per_weight / 2
    dac = d.dac_bits if d.dac_bits is not None else prof.dac.bits
    geom = E.LayerGeometry("mvm", ((rows, cols),) * d.tiles, dac, prof.adc.bits,
                           sequential_vmms=d.reads, mean_cell_uS=g_mean)
    return E.price({"mvm": c}, {"mvm": geom}, prof, inferences=1, steps_per_inference=1)


def validate() -> list[dict[str, Any]]:
    """One row per design: published figure, the model's, and the error (model / published
    - 1), with the model's energy split by component."""
    rows = []
    for d in DESIGNS:
        r = design_report(d)
        model = d.component(r) if d.component else r.tops_per_w
        rows.append({"design": d.name, "metric": d.metric, "published": d.published,
                     "model": model, "error": model / d.published - 1.0,
                     "by_component": dict(r.by_component), "source": d.source,
                     "config": d.config})
    return rows
