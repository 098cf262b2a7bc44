"""Energy and latency of an inference on the emulated chip, and of the same work on a digital one.

The runtime fills one :class:`OpCounts` per layer while it runs (accumulated over steps and
streams) and describes each layer's placement on the chip with a :class:`LayerGeometry`.
:func:`price` turns both into an :class:`EnergyReport` using the profile's ``energy`` section
(``devices/profile.py``, :class:`~nvmstream.devices.profile.EnergySection`), every price first
converted to the profile's technology node (:func:`prices`, ``devices/technology.py``);
:func:`digital_baseline` prices the same multiply-accumulates on a systolic MAC array (int4,
int8, fp16 or fp32) whose weights come from SRAM or DRAM, possibly shared by a batch of
streams, and :func:`compare` gives the analog/digital ratios. :func:`analog_area` and
:func:`baseline_area` give mm^2 and TOPS/mm^2. Programming-time costs (storage read, cell
programming) are priced apart, by :func:`price_one_off`.

Units: energies in pJ, times in ns, conductances in uS, voltages in V. Every formula, default and
source is in ``docs/energy.md``. The model is linear in every count and in every price except
``read_voltage_V`` (quadratic); :attr:`EnergyReport.by_field` gives, for each linear price, the
energy that is proportional to it (doubling the price adds exactly that much).

This module uses numpy and the standard library only.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from nvmstream.devices import technology as T
from nvmstream.devices.profile import DeviceProfile, EnergySection, load_profile

__all__ = [
    "OpCounts",
    "OneOffCounts",
    "LayerGeometry",
    "LayerLatency",
    "EnergyReport",
    "BaselineReport",
    "Comparison",
    "OneOffReport",
    "AreaReport",
    "Datatype",
    "DATATYPES",
    "SOURCE_NODES",
    "COMPONENTS",
    "BASELINE_COMPONENTS",
    "DATAPATHS",
    "WEIGHT_SOURCES",
    "price",
    "digital_baseline",
    "all_baselines",
    "compare",
    "iso_precision",
    "analog_area",
    "baseline_area",
    "with_votes",
    "prices",
    "node_factor",
    "price_one_off",
    "matrix_tiles",
    "adcs_per_tile",
    "priced_bits",
    "adc_energy_pJ",
    "dac_energy_pJ",
    "cell_read_energy_pJ",
    "default_mean_cell_uS",
    "mean_cell_conductance_uS",
    "layer_latency",
]

#: Energy components of the analog chip, in report order.
COMPONENTS: tuple[str, ...] = (
    "adc", "dac", "cell_read", "tile_overhead", "interconnect", "digital", "activation",
    "state_sram", "leakage",
)
#: Energy components of the digital baseline, in report order.
BASELINE_COMPONENTS: tuple[str, ...] = (
    "mac", "weight_fetch", "array_buffer", "activation", "state_sram", "leakage",
)
#: Digital baseline datapaths (keys of DATATYPES): iso-precision int4 and int8, fp16, fp32.
DATAPATHS: tuple[str, ...] = ("int4", "int8", "fp16", "fp32")
#: Where the digital baseline fetches its weights from: name -> price field (pJ per byte).
WEIGHT_SOURCES: dict[str, str] = {
    "sram": "weight_sram_pJ_per_byte",
    "dram": "dram_pJ_per_byte",
}


# --- counts ---------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool)


class _Counter:
    """Integer counters: ``+=``, ``+``, ``scaled``, ``to_dict``, ``from_dict``, ``check``."""

    def __iadd__(self, other: Any) -> Any:
        if type(other) is not type(self):
            return NotImplemented
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def __add__(self, other: Any) -> Any:
        if type(other) is not type(self):
            return NotImplemented
        out = dataclasses.replace(self)  # type: ignore[type-var]
        out += other
        return out

    def scaled(self, k: int) -> Any:
        """A copy with every counter multiplied by the non-negative integer ``k``."""
        if not _is_int(k) or k < 0:
            raise ValueError(f"scaled: k must be a non-negative integer, got {k!r}")
        return type(self)(**{f.name: getattr(self, f.name) * int(k)
                             for f in dataclasses.fields(self)})  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, int]:
        """Counter name -> Python int."""
        return {f.name: int(getattr(self, f.name))
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Build from a mapping of counters (missing ones are 0); unknown names are errors."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown counter(s) {', '.join(unknown)}; "
                f"counters: {', '.join(sorted(names))}"
            )
        return cls(**dict(data))

    def check(self, where: str = "") -> None:
        """Raise ValueError naming the counter if one is not a non-negative integer."""
        pre = f"{where}: " if where else ""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if not _is_int(v) or v < 0:
                raise ValueError(f"{pre}{f.name} must be a non-negative integer, got {v!r}")


@dataclass
class OpCounts(_Counter):
    """Operation counts of ONE layer, accumulated over steps and streams (the runtime fills them).

    Every counter is a non-negative integer (Python or numpy); all of them already include the
    work of voting replicas.
    """

    #: stream-steps executed by the layer (a stream advancing one time step = 1; voting
    #: replicas count as streams).
    steps: int = 0
    #: input DAC conversions: every tile converts its own rows' inputs, so an input feeding
    #: k tiles is converted k times.
    dac_conversions: int = 0
    #: column ADC conversions (one per used column per tile read).
    adc_conversions: int = 0
    #: physical cells read: a signed weight is a differential pair, so reading an r x c block
    #: of weights reads 2 r c cells.
    cell_reads: int = 0
    #: one tile doing one VMM read.
    tile_activations: int = 0
    #: digital adds: partial-sum accumulation across tiles, bias, cell update.
    digital_adds: int = 0
    #: digital multiplies: ADC-output scaling, gate products.
    digital_muls: int = 0
    #: sigmoid / tanh / exp evaluations.
    activation_evals: int = 0
    #: bytes read from the SRAM holding recurrent state and activations.
    state_reads_bytes: int = 0
    #: bytes written to that SRAM.
    state_writes_bytes: int = 0
    #: the stream-steps among ``steps`` that were extra voting replicas (K replicas of S
    #: streams for T steps: steps = K S T, vote_replicas = (K - 1) S T). Informational: the
    #: counters above already include them.
    vote_replicas: int = 0
    #: multiply-accumulates in model terms (weights x stream-steps), for TOPS and TOPS/W.
    macs: int = 0

    def useful_fraction(self) -> float:
        """(steps - vote_replicas) / steps: the share of the work that is not voting (1 if none)."""
        if self.steps <= 0:
            return 1.0
        return (int(self.steps) - int(self.vote_replicas)) / int(self.steps)

    def check(self, where: str = "") -> None:
        super().check(where)
        if self.vote_replicas > self.steps:
            pre = f"{where}: " if where else ""
            raise ValueError(
                f"{pre}vote_replicas ({int(self.vote_replicas)}) cannot exceed steps "
                f"({int(self.steps)})"
            )


@dataclass
class OneOffCounts(_Counter):
    """Costs paid once when a model is loaded and programmed, kept apart from inferences."""

    #: bits of weight codes read from NVM storage.
    storage_bits_read: int = 0
    #: cells programmed to a target conductance (each with its write-verify pulses).
    cells_programmed: int = 0


# --- geometry -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerGeometry:
    """Where a layer sits on the chip: what the latency model and the converter prices need.

    ``tiles`` lists every tile the layer reads in one step as ``(rows_used, cols_used)``:
    rows are inputs (one DAC each), columns are outputs (ADCs shared by ``cols_per_adc``
    columns). ``dac_bits``/``adc_bits`` = 0 means the simulation does not quantize (float);
    such conversions are priced at ``energy.unquantized_converter_bits``. A purely digital
    layer has no tiles. ``sequential_vmms`` counts the dependent VMM phases of one step (1 for
    LSTM/RNN/Dense, 2 for a GRU with linear_before_reset = 0, whose R_h acts on r * h);
    ``digital_ops_critical`` the digital operations on the step's critical path (run one after
    another). ``mean_cell_uS``: mean conductance of the layer's programmed cells (both cells
    of every pair); None = derive it from the profile (:func:`default_mean_cell_uS`).
    """

    name: str
    tiles: tuple[tuple[int, int], ...] = ()
    dac_bits: int = 0
    adc_bits: int = 0
    sequential_vmms: int = 1
    digital_ops_critical: int = 0
    mean_cell_uS: float | None = None

    def __post_init__(self) -> None:
        where = f"layer {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"LayerGeometry.name must be a non-empty string, got {self.name!r}")
        tiles = []
        for t in self.tiles:
            if (not isinstance(t, (tuple, list)) or len(t) != 2
                    or not all(_is_int(v) and v >= 1 for v in t)):
                raise ValueError(
                    f"{where}: tiles must be (rows_used, cols_used) pairs of positive "
                    f"integers, got {t!r}"
                )
            tiles.append((int(t[0]), int(t[1])))
        object.__setattr__(self, "tiles", tuple(tiles))
        for name in ("dac_bits", "adc_bits"):
            v = getattr(self, name)
            if not _is_int(v) or not (v == 0 or 1 <= v <= 16):
                raise ValueError(f"{where}: {name} must be 0 (float) or 1..16, got {v!r}")
            object.__setattr__(self, name, int(v))
        for name, lo in (("sequential_vmms", 1), ("digital_ops_critical", 0)):
            v = getattr(self, name)
            if not _is_int(v) or v < lo:
                raise ValueError(f"{where}: {name} must be an integer >= {lo}, got {v!r}")
            object.__setattr__(self, name, int(v))
        g = self.mean_cell_uS
        if g is not None:
            if isinstance(g, bool) or not isinstance(g, (numbers.Real, np.floating)) \
                    or not math.isfinite(g) or g < 0:
                raise ValueError(f"{where}: mean_cell_uS must be a finite number >= 0, got {g!r}")
            object.__setattr__(self, "mean_cell_uS", float(g))

    @property
    def weights(self) -> int:
        """Weights the layer's tiles hold: sum of rows_used * cols_used."""
        return sum(r * c for r, c in self.tiles)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tiles": [list(t) for t in self.tiles],
            "dac_bits": self.dac_bits,
            "adc_bits": self.adc_bits,
            "sequential_vmms": self.sequential_vmms,
            "digital_ops_critical": self.digital_ops_critical,
            "mean_cell_uS": self.mean_cell_uS,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LayerGeometry":
        d = dict(data)
        d["tiles"] = tuple(tuple(t) for t in d.get("tiles", ()))
        return cls(**d)


def matrix_tiles(n_in: int, n_out: int, tile_rows: int, tile_cols: int) -> tuple[tuple[int, int], ...]:
    """Tiles of one matrix with ``n_in`` inputs (rows) and ``n_out`` outputs (columns).

    Row blocks of ``tile_rows`` inputs times column blocks of ``tile_cols`` outputs, as
    ``(rows_used, cols_used)``, row block by row block. An LSTM's W [4H x I] and R [4H x H]
    are tiled separately: ``matrix_tiles(I, 4H, ...) + matrix_tiles(H, 4H, ...)``.
    """
    for name, v in (("n_in", n_in), ("n_out", n_out), ("tile_rows", tile_rows),
                    ("tile_cols", tile_cols)):
        if not _is_int(v) or v < 1:
            raise ValueError(f"matrix_tiles: {name} must be a positive integer, got {v!r}")
    rows = [min(tile_rows, n_in - r) for r in range(0, n_in, tile_rows)]
    cols = [min(tile_cols, n_out - c) for c in range(0, n_out, tile_cols)]
    return tuple((r, c) for r in rows for c in cols)


# --- prices at the node ---------------------------------------------------------------------

@dataclass(frozen=True)
class Datatype:
    """One number format's digital operation prices and areas at 45 nm (Horowitz, ISSCC 2014).

    ``acc_*`` is the accumulator add a MAC of this format uses (int4 into 16 bits, int8 into
    32 bits, floats in their own format); ``bytes`` the storage width of a weight (int4 packs
    two per byte) and ``state_bytes`` that of a stored activation/state value.
    """

    name: str
    bytes: float
    state_bytes: float
    add_pJ: float
    mult_pJ: float
    acc_pJ: float
    acc_bytes: float
    add_um2: float
    mult_um2: float
    acc_um2: float


#: Horowitz 45 nm table (energy pJ, area um^2). int8/int32/fp16/fp32 adds and int8/int32/
#: fp16/fp32 multiplies are the published entries; int4 and int16 multiplies are interpolated
#: quadratically in width (the table's int8 -> int32 multiply grows 0.2 -> 3.1 pJ, ~ width^2),
#: the int4 add linearly.
DATATYPES: dict[str, Datatype] = {
    "int4": Datatype("int4", 0.5, 1.0, 0.015, 0.05, 0.05, 2.0, 18.0, 70.5, 67.0),
    "int8": Datatype("int8", 1.0, 1.0, 0.03, 0.2, 0.1, 4.0, 36.0, 282.0, 137.0),
    "int16": Datatype("int16", 2.0, 2.0, 0.05, 0.8, 0.1, 4.0, 67.0, 1128.0, 137.0),
    "fp16": Datatype("fp16", 2.0, 2.0, 0.4, 1.1, 0.4, 2.0, 1360.0, 1640.0, 1360.0),
    "fp32": Datatype("fp32", 4.0, 4.0, 0.9, 3.7, 0.9, 4.0, 4184.0, 7700.0, 4184.0),
}
#: Node of the DATATYPES figures (nm).
DATATYPE_NODE_NM = 45.0

#: Source node (nm) and scaling rule of every energy-section price and area-section size:
#: "digital" (Stillmaker & Baas), "converter" (digital ** converter_node_scaling) or "none".
SOURCE_NODES: dict[str, tuple[float, str]] = {
    "adc_fom_fJ_per_step": (32.0, "converter"),
    "adc_floor_pJ": (32.0, "converter"),
    "dac_1bit_fJ": (32.0, "converter"),
    "read_voltage_V": (0.0, "none"),
    "read_time_ns": (0.0, "none"),
    "tile_overhead_pJ": (32.0, "digital"),
    "activation_pJ": (32.0, "digital"),
    "interconnect_pJ_per_byte": (32.0, "digital"),
    "sram_pJ_per_byte": (45.0, "digital"),
    "weight_sram_pJ_per_byte": (45.0, "digital"),
    "dram_pJ_per_byte": (0.0, "none"),
    "adc_leak_uW": (32.0, "converter"),
    "dac_leak_uW": (32.0, "converter"),
    "tile_leak_uW": (32.0, "digital"),
    "periphery_leak_uW": (32.0, "digital"),
    "sram_leak_uW_per_kB": (32.0, "digital"),
    "storage_read_pJ_per_bit": (0.0, "none"),
    "program_pJ_per_cell": (0.0, "none"),
    # area section
    "adc_area_um2": (32.0, "converter"),
    "dac_area_um2": (32.0, "converter"),
    "tile_periphery_area_um2": (32.0, "digital"),
    "core_periphery_area_um2": (32.0, "digital"),
    "sram_area_um2_per_kB": (32.0, "digital"),
}


def _energy(profile: DeviceProfile | EnergySection | str) -> EnergySection:
    if isinstance(profile, str):
        profile = load_profile(profile)
    return profile.energy if isinstance(profile, DeviceProfile) else profile


def _profile(profile: DeviceProfile | str) -> DeviceProfile:
    if isinstance(profile, DeviceProfile):
        return profile
    if isinstance(profile, str):
        return load_profile(profile)
    raise TypeError(f"expected a DeviceProfile or a profile name, got {profile!r}")


def node_factor(name: str, profile: DeviceProfile | EnergySection, area: bool = False) -> float:
    """Factor converting price/size ``name`` (a key of SOURCE_NODES) from its source node to
    ``energy.node_nm`` (1 for unscaled prices)."""
    e = _energy(profile)
    src, rule = SOURCE_NODES[name]
    if rule == "none":
        return 1.0
    f = T.area_factor(src, e.node_nm) if area else T.energy_factor(src, e.node_nm)
    return f ** e.converter_node_scaling if rule == "converter" else f


def prices(profile: DeviceProfile | EnergySection) -> dict[str, float]:
    """Every energy-section price converted to ``energy.node_nm`` (field name -> value), plus
    the digital operation prices ``op.<datatype>.<add|mult|acc>`` (pJ) at the node."""
    e = _energy(profile)
    out: dict[str, float] = {}
    for f in dataclasses.fields(e):
        if f.name in SOURCE_NODES:
            out[f.name] = float(getattr(e, f.name)) * node_factor(f.name, e)
    k = T.energy_factor(DATATYPE_NODE_NM, e.node_nm)
    for d in DATATYPES.values():
        out[f"op.{d.name}.add"] = d.add_pJ * k
        out[f"op.{d.name}.mult"] = d.mult_pJ * k
        out[f"op.{d.name}.acc"] = d.acc_pJ * k
    return out


def priced_bits(bits: int, profile: DeviceProfile | EnergySection) -> int:
    """Resolution a conversion is priced at: ``bits``, or ``unquantized_converter_bits`` if 0."""
    return int(bits) if bits else _energy(profile).unquantized_converter_bits


def adc_energy_pJ(bits: int, profile: DeviceProfile | EnergySection) -> float:
    """E_adc(b) = (adc_fom_fJ_per_step * 2^b * 1e-3 + adc_floor_pJ) at the node; b = priced
    bits (0 -> 0 pJ)."""
    e = _energy(profile)
    b = priced_bits(bits, e)
    if b == 0:
        return 0.0
    p = prices(e)
    return p["adc_fom_fJ_per_step"] * 2.0 ** b * 1e-3 + p["adc_floor_pJ"]


def dac_energy_pJ(bits: int, profile: DeviceProfile | EnergySection) -> float:
    """E_dac(b) = dac_1bit_fJ * 2^(b-1) * 1e-3 at the node, b = priced bits (0 -> 0 pJ)."""
    e = _energy(profile)
    b = priced_bits(bits, e)
    if b == 0:
        return 0.0
    return prices(e)["dac_1bit_fJ"] * 2.0 ** (b - 1) * 1e-3


def cell_read_energy_pJ(g_uS: float, profile: DeviceProfile | EnergySection) -> float:
    """E_cell = V^2 G t: read_voltage_V^2 [V^2] * g_uS [uS] * read_time_ns [ns] * 1e-3 -> pJ."""
    e = _energy(profile)
    return e.read_voltage_V ** 2 * float(g_uS) * e.read_time_ns * 1e-3


def default_mean_cell_uS(profile: DeviceProfile) -> float:
    """Mean cell conductance of a differential array: gmin + (gmax - gmin) * f / 2.

    f = energy.mean_abs_code_fraction = E|q|/qmax; one cell of each pair is at
    gmin + (gmax - gmin)|q|/qmax and the other at gmin, hence the 1/2.
    """
    m = profile.mapping
    return m.gmin_uS + (m.gmax_uS - m.gmin_uS) * profile.energy.mean_abs_code_fraction / 2.0


def mean_cell_conductance_uS(*conductances: np.ndarray) -> float:
    """Mean over all cells of the given conductance arrays (e.g. ``g_pos, g_neg``), in uS."""
    if not conductances:
        raise ValueError("mean_cell_conductance_uS: give at least one conductance array")
    total = 0.0
    n = 0
    for g in conductances:
        a = np.asarray(g, dtype=np.float64)
        total += float(a.sum())
        n += a.size
    return total / n if n else 0.0


def adcs_per_tile(profile: DeviceProfile) -> int:
    """ADCs of one tile: ceil(tile.cols / energy.cols_per_adc)."""
    return -(-profile.tile.cols // profile.energy.cols_per_adc)


# --- latency --------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerLatency:
    """Latency of one layer for one stream-step (ns), and what bounds it."""

    vmm_phase_ns: float   # slowest tile: DAC + settle + ceil(cols_used / ADCs) ADC conversions
    vmm_ns: float         # sequential_vmms * vmm_phase_ns
    digital_ns: float     # digital_ops_critical * digital_op_time_ns
    total_ns: float       # vmm_ns + digital_ns
    dac_ns: float = 0.0     # sequential_vmms * dac_time_ns
    settle_ns: float = 0.0  # sequential_vmms * tile_settle_ns
    adc_ns: float = 0.0     # sequential_vmms * conversions of the slowest tile * adc_time_ns
    #: the largest of dac / settle / adc / digital: what to speed up first
    bottleneck: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _check_tiles(geom: LayerGeometry, profile: DeviceProfile) -> None:
    for r, c in geom.tiles:
        if r > profile.tile.rows or c > profile.tile.cols:
            raise ValueError(
                f"layer {geom.name!r}: tile ({r}, {c}) does not fit the profile's "
                f"{profile.tile.rows} x {profile.tile.cols} tiles (tile.rows x tile.cols)"
            )


def layer_latency(geom: LayerGeometry, profile: DeviceProfile) -> LayerLatency:
    """Latency of one step of one layer: tiles in parallel, phases and digital ops in sequence.

    t_tile = dac_time_ns + tile_settle_ns + ceil(cols_used / adcs_per_tile) * adc_time_ns;
    t_layer = sequential_vmms * max_tiles(t_tile) + digital_ops_critical * digital_op_time_ns.
    The bottleneck is the largest of the DAC, settle, ADC and digital parts.
    """
    _check_tiles(geom, profile)
    e = profile.energy
    n_adc = adcs_per_tile(profile)
    phase = 0.0
    conv = 0
    for _, c in geom.tiles:
        k = -(-c // n_adc)
        t = e.dac_time_ns + e.tile_settle_ns + k * e.adc_time_ns
        if t > phase:
            phase, conv = t, k
    s = geom.sequential_vmms if geom.tiles else 0
    vmm = s * phase
    digital = geom.digital_ops_critical * e.digital_op_time_ns
    parts = {"dac": s * e.dac_time_ns, "settle": s * e.tile_settle_ns,
             "adc": s * conv * e.adc_time_ns, "digital": digital}
    bottleneck = max(parts, key=lambda k: parts[k]) if any(parts.values()) else ""
    return LayerLatency(phase, vmm, digital, vmm + digital, parts["dac"], parts["settle"],
                        parts["adc"], bottleneck)


# --- reports --------------------------------------------------------------------------------

def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return math.inf if num > 0 else 0.0
    return num / den


@dataclass(frozen=True)
class AreaReport:
    """Silicon area (mm^2) by part, and throughput per area, of the analog chip or a baseline."""

    name: str
    area_mm2: float
    by_part: dict[str, float]
    tops: float
    tops_per_mm2: float

    def to_dict(self) -> dict[str, Any]:
        return _plain({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class EnergyReport:
    """Energy (pJ) and latency (ns) of the analog chip, per inference unless named otherwise.

    ``by_component`` splits ``energy_pJ_per_inference``; ``by_layer`` gives each layer's
    dynamic energy plus the leakage of its own tiles and periphery (the shared buffer's
    leakage, ``leakage_by_part['buffer']``, belongs to no layer). ``by_field[f]`` is the
    energy proportional to the (node-converted) price ``f``: a profile field name or
    ``op.<datatype>.<add|mult>``; the cell read energy is listed under ``read_time_ns`` (linear
    in the read time, quadratic in ``read_voltage_V``); leakage under the ``*_leak_*`` fields.
    ``macs_per_inference`` excludes voting replicas (the useful work); ``tops_per_w`` = 2 macs
    / energy, so K votes cost K inferences. ``latency_ns_per_step`` is one step through every
    layer; ``latency_ns_per_inference`` charges each layer its latency once per stream-step it
    ran (voting replicas run one after another on the same tiles); ``bottleneck_by_layer``
    names what bounds each layer's step (dac, settle, adc or digital). ``throughput`` is
    inferences per second of one chip doing one stream-step at a time; ``power_mW`` = energy /
    latency; ``leakage_mW`` the chip's static power.
    """

    profile: str
    inferences: int
    steps_per_inference: float
    energy_pJ_per_inference: float
    energy_pJ_per_step: float
    by_component: dict[str, float]
    by_layer: dict[str, float]
    by_layer_component: dict[str, dict[str, float]]
    by_field: dict[str, float]
    latency_ns_per_step: float
    latency_ns_per_inference: float
    latency_ns_by_layer: dict[str, float]
    replica_factor: float
    throughput_inferences_per_s: float
    macs_per_inference: float
    ops_per_inference: float
    tops: float
    tops_per_w: float
    power_mW: float
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    node_nm: float = 0.0
    periphery_precision: str = ""
    leakage_mW: float = 0.0
    leakage_by_part: dict[str, float] = field(default_factory=dict)
    bottleneck_by_layer: dict[str, str] = field(default_factory=dict)
    latency_parts_ns_by_layer: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-ready; infinities stay floats)."""
        return _plain({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    def format_text(self) -> str:
        """Same as :meth:`to_text`."""
        return self.to_text()

    def to_text(self) -> str:
        """A short human-readable summary."""
        lines = [
            f"analog chip ({self.profile}, {self.node_nm:g} nm, {self.periphery_precision} "
            f"periphery): {self.energy_pJ_per_inference:.6g} pJ/inference, "
            f"{self.energy_pJ_per_step:.6g} pJ/step, {self.latency_ns_per_inference:.6g} "
            f"ns/inference, {self.tops_per_w:.4g} TOPS/W, {self.power_mW:.4g} mW",
        ]
        for comp, v in self.by_component.items():
            share = _ratio(v, self.energy_pJ_per_inference) * 100
            lines.append(f"  {comp:<14} {v:14.6g} pJ  {share:5.1f}%")
        return "\n".join(lines)


@dataclass(frozen=True)
class BaselineReport:
    """The same useful work on a digital MAC array (pJ per inference unless named otherwise)."""

    datapath: str
    weights_from: str
    weight_reuse: int
    include_vote_replicas: bool
    inferences: int
    steps_per_inference: float
    energy_pJ_per_inference: float
    energy_pJ_per_step: float
    by_component: dict[str, float]
    by_field: dict[str, float]
    macs_per_inference: float
    ops_per_inference: float
    tops_per_w: float
    latency_ns_per_inference: float = 0.0
    leakage_mW: float = 0.0
    weight_kB: float = 0.0

    @property
    def name(self) -> str:
        """``datapath/weights_from`` and ``/reuseN`` when a batch shares weight fetches."""
        base = f"{self.datapath}/{self.weights_from}"
        return base if self.weight_reuse == 1 else f"{base}/reuse{self.weight_reuse}"

    def to_dict(self) -> dict[str, Any]:
        out = _plain({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        out["name"] = self.name
        return out


@dataclass(frozen=True)
class Comparison:
    """Analog chip vs digital baselines: ``ratios[name]`` = E_digital / E_analog per inference.

    A ratio above 1 means the analog chip spends less energy per inference; it equals the
    ratio of TOPS/W (analog over digital) because both count the same useful MACs.
    ``strongest`` names the baseline with the least energy per inference.
    """

    analog_pJ_per_inference: float
    analog_tops_per_w: float
    baseline_pJ_per_inference: dict[str, float]
    baseline_tops_per_w: dict[str, float]
    ratios: dict[str, float]
    strongest: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _plain({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class OneOffReport:
    """Programming-time energy (pJ, paid once per load, not per inference); ``adc_retune_pJ``:
    one ADC-range retune event of a chip with ``adc.track_drift`` (paid per retune, not in
    ``total_pJ``; 0 without track_drift)."""

    storage_read_pJ: float
    programming_pJ: float
    total_pJ: float
    adc_retune_pJ: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self)}


# --- pricing --------------------------------------------------------------------------------

def _check_run(inferences: Any, steps_per_inference: Any) -> None:
    if not _is_int(inferences) or inferences < 1:
        raise ValueError(f"inferences must be a positive integer, got {inferences!r}")
    if (isinstance(steps_per_inference, bool)
            or not isinstance(steps_per_inference, (numbers.Real, np.floating))
            or not math.isfinite(steps_per_inference) or steps_per_inference <= 0):
        raise ValueError(
            f"steps_per_inference must be a finite number > 0, got {steps_per_inference!r}"
        )


def _check_counts(counts: Mapping[str, OpCounts]) -> None:
    if not isinstance(counts, Mapping):
        raise TypeError("counts must be a mapping: layer name -> OpCounts")
    for name, c in counts.items():
        if not isinstance(c, OpCounts):
            raise TypeError(f"counts[{name!r}] must be an OpCounts, got {type(c).__name__}")
        c.check(f"counts[{name!r}]")


def _layer_terms(c: OpCounts, geom: LayerGeometry, profile: DeviceProfile,
                 p: Mapping[str, float]) -> list[tuple[str, str, float]]:
    """(component, price name, pJ) dynamic terms of one layer's counts; their sum is its
    dynamic energy. ``p``: :func:`prices` of the profile."""
    e = profile.energy
    b_adc = priced_bits(geom.adc_bits, e)
    b_dac = priced_bits(geom.dac_bits, e)
    g = geom.mean_cell_uS if geom.mean_cell_uS is not None else default_mean_cell_uS(profile)
    n_adc = float(c.adc_conversions)
    prec = e.periphery_precision
    width = DATATYPES[prec].state_bytes / 4.0      # the ledger counts float32 bytes
    return [
        ("adc", "adc_fom_fJ_per_step",
         n_adc * p["adc_fom_fJ_per_step"] * 2.0 ** b_adc * 1e-3 if b_adc else 0.0),
        ("adc", "adc_floor_pJ", n_adc * p["adc_floor_pJ"] if b_adc else 0.0),
        ("dac", "dac_1bit_fJ", float(c.dac_conversions) * p["dac_1bit_fJ"]
         * 2.0 ** (b_dac - 1) * 1e-3 if b_dac else 0.0),
        ("cell_read", "read_time_ns", float(c.cell_reads) * cell_read_energy_pJ(g, e)),
        ("tile_overhead", "tile_overhead_pJ", float(c.tile_activations) * p["tile_overhead_pJ"]),
        ("interconnect", "interconnect_pJ_per_byte",
         float(c.dac_conversions + c.adc_conversions) * p["interconnect_pJ_per_byte"]),
        ("digital", f"op.{prec}.add", float(c.digital_adds) * p[f"op.{prec}.add"]),
        ("digital", f"op.{prec}.mult", float(c.digital_muls) * p[f"op.{prec}.mult"]),
        ("activation", "activation_pJ", float(c.activation_evals) * p["activation_pJ"]),
        ("state_sram", "sram_pJ_per_byte",
         float(c.state_reads_bytes + c.state_writes_bytes) * width * p["sram_pJ_per_byte"]),
    ]


def _layer_leak_uW(geom: LayerGeometry, profile: DeviceProfile,
                   p: Mapping[str, float]) -> list[tuple[str, str, float]]:
    """(part, price name, uW) static power of one layer's allocated tiles and periphery."""
    if not geom.tiles:
        return []
    e = profile.energy
    n = len(geom.tiles)
    b = priced_bits(geom.adc_bits, e)
    adc_rel = 2.0 ** (b - 8) if b else 0.0      # leakage in proportion to area (2^b)
    return [
        ("adc", "adc_leak_uW", n * adcs_per_tile(profile) * p["adc_leak_uW"] * adc_rel),
        ("dac", "dac_leak_uW", n * profile.tile.rows * p["dac_leak_uW"]),
        ("tile", "tile_leak_uW", n * p["tile_leak_uW"]),
        ("periphery", "periphery_leak_uW", p["periphery_leak_uW"]),
    ]


def price(
    counts: Mapping[str, OpCounts],
    geometry: Mapping[str, LayerGeometry],
    profile: DeviceProfile | str,
    *,
    inferences: int,
    steps_per_inference: float,
) -> EnergyReport:
    """Price a run's counts on the analog chip described by ``profile``, at its node.

    ``counts``: layer name -> OpCounts accumulated over the run; ``geometry``: layer name ->
    LayerGeometry for every layer of the model (layers without counts still take time);
    ``inferences``: how many inferences the counts cover; ``steps_per_inference``: model time
    steps of one inference (voting replicas not included). Every layer in ``counts`` needs a
    geometry; tiles must fit the profile's tile size. Leakage: every allocated tile's ADCs,
    DACs and periphery, each layer's vector unit and the state buffer leak for the whole
    latency of the inference.
    """
    prof = _profile(profile)
    _check_run(inferences, steps_per_inference)
    _check_counts(counts)
    if not isinstance(geometry, Mapping):
        raise TypeError("geometry must be a mapping: layer name -> LayerGeometry")
    for name, g in geometry.items():
        if not isinstance(g, LayerGeometry):
            raise TypeError(f"geometry[{name!r}] must be a LayerGeometry, got {type(g).__name__}")
        if g.name != name:
            raise ValueError(f"geometry[{name!r}] describes layer {g.name!r}")
    missing = [n for n in counts if n not in geometry]
    if missing:
        raise ValueError(
            f"no geometry for layer(s) {', '.join(map(repr, missing))}; every counted layer "
            f"needs a LayerGeometry"
        )
    p = prices(prof)

    by_component = {k: 0.0 for k in COMPONENTS}
    by_field: dict[str, float] = {}
    by_layer: dict[str, float] = {}
    by_layer_component: dict[str, dict[str, float]] = {}
    macs_useful = 0.0
    replica_factor = 1.0
    for name, c in counts.items():
        geom = geometry[name]
        _check_tiles(geom, prof)
        comp = {k: 0.0 for k in COMPONENTS}
        for component, fname, pj in _layer_terms(c, geom, prof, p):
            pj /= inferences
            comp[component] += pj
            by_field[fname] = by_field.get(fname, 0.0) + pj
        by_layer_component[name] = comp
        frac = c.useful_fraction()
        macs_useful += float(c.macs) * frac
        if frac > 0:
            replica_factor = max(replica_factor, 1.0 / frac)

    lats = {name: layer_latency(g, prof) for name, g in geometry.items()}
    lat_by_layer = {name: l.total_ns for name, l in lats.items()}
    lat_step = sum(lat_by_layer.values())
    # each layer takes its time once per stream-step it ran (a head run once per inference
    # counts once; replicas count); layers without counts run every step of every replica
    lat_inf = 0.0
    for name, t in lat_by_layer.items():
        if name in counts:
            lat_inf += t * float(counts[name].steps) / inferences
        else:
            lat_inf += t * float(steps_per_inference) * replica_factor

    # leakage: static power (uW) x inference time (ns) x 1e-3 -> pJ
    leak_parts = {"adc": 0.0, "dac": 0.0, "tile": 0.0, "periphery": 0.0, "buffer": 0.0}
    leak_uW = 0.0
    for name, geom in geometry.items():
        comp = by_layer_component.setdefault(name, {k: 0.0 for k in COMPONENTS})
        for part, fname, uw in _layer_leak_uW(geom, prof, p):
            pj = uw * lat_inf * 1e-3
            leak_parts[part] += pj
            comp["leakage"] += pj
            by_field[fname] = by_field.get(fname, 0.0) + pj
            leak_uW += uw
    buf_uW = prof.energy.buffer_kB * p["sram_leak_uW_per_kB"]
    leak_parts["buffer"] = buf_uW * lat_inf * 1e-3
    by_field["sram_leak_uW_per_kB"] = (by_field.get("sram_leak_uW_per_kB", 0.0)
                                       + leak_parts["buffer"])
    leak_uW += buf_uW
    for name, comp in by_layer_component.items():
        by_layer[name] = sum(comp.values())
        for k, v in comp.items():
            by_component[k] += v
    by_component["leakage"] += leak_parts["buffer"]
    total = sum(by_component.values())

    throughput = _ratio(1e9, lat_inf)
    macs_inf = macs_useful / inferences
    ops_inf = 2.0 * macs_inf
    tops = ops_inf * throughput / 1e12 if math.isfinite(throughput) else math.inf
    if ops_inf == 0:
        tops = 0.0
    return EnergyReport(
        profile=prof.name,
        inferences=int(inferences),
        steps_per_inference=float(steps_per_inference),
        energy_pJ_per_inference=total,
        energy_pJ_per_step=total / float(steps_per_inference),
        by_component=by_component,
        by_layer=by_layer,
        by_layer_component=by_layer_component,
        by_field=by_field,
        latency_ns_per_step=lat_step,
        latency_ns_per_inference=lat_inf,
        latency_ns_by_layer=lat_by_layer,
        replica_factor=replica_factor,
        throughput_inferences_per_s=throughput,
        macs_per_inference=macs_inf,
        ops_per_inference=ops_inf,
        tops=tops,
        tops_per_w=_ratio(ops_inf, total),
        power_mW=_ratio(total, lat_inf),
        counts={name: c.to_dict() for name, c in counts.items()},
        node_nm=prof.energy.node_nm,
        periphery_precision=prof.energy.periphery_precision,
        leakage_mW=leak_uW * 1e-3,
        leakage_by_part=leak_parts,
        bottleneck_by_layer={n: l.bottleneck for n, l in lats.items()},
        latency_parts_ns_by_layer={n: {"dac": l.dac_ns, "settle": l.settle_ns, "adc": l.adc_ns,
                                       "digital": l.digital_ns} for n, l in lats.items()},
    )


def digital_baseline(
    counts: Mapping[str, OpCounts],
    profile: DeviceProfile | str,
    datapath: str = "int8",
    weights_from: str = "sram",
    *,
    inferences: int,
    steps_per_inference: float,
    weight_reuse: int = 1,
    include_vote_replicas: bool = False,
    geometry: Mapping[str, LayerGeometry] | None = None,
) -> BaselineReport:
    """Price the same useful work on a digital weight-stationary MAC array at the same node.

    Every MAC is one ``datapath`` multiply and one accumulator add (:data:`DATATYPES`) and
    fetches its weight (``bytes`` of the format) from ``weights_from`` (sram or dram) once per
    step per ``weight_reuse`` streams (a batch of streams shares each fetch). The array
    (``energy.baseline_array_dim`` square) reads each input from the buffer once per ``dim``
    outputs and moves each partial sum out and back once per ``dim`` inputs (both at
    ``sram_pJ_per_byte``). The same activation evaluations and state traffic (at the
    format's state width) are added, and leakage: the state buffer, the weight SRAM (when
    weights live in SRAM) and one vector unit, over the baseline's own latency (``ceil(MACs /
    dim^2)`` cycles per layer-step plus the layer's digital critical path when ``geometry``
    is given). Voting replicas are left out (a digital chip has no analog noise to vote away)
    unless ``include_vote_replicas``. The analog periphery's partial-sum merging is not
    charged to the baseline.
    """
    prof = _profile(profile)
    e = prof.energy
    _check_run(inferences, steps_per_inference)
    _check_counts(counts)
    if datapath not in DATAPATHS:
        raise ValueError(f"unknown datapath {datapath!r}; allowed: {', '.join(DATAPATHS)}")
    if weights_from not in WEIGHT_SOURCES:
        raise ValueError(
            f"unknown weights_from {weights_from!r}; allowed: {', '.join(WEIGHT_SOURCES)}"
        )
    if not _is_int(weight_reuse) or weight_reuse < 1:
        raise ValueError(f"weight_reuse must be a positive integer, got {weight_reuse!r}")
    d = DATATYPES[datapath]
    p = prices(prof)
    fetch_field = WEIGHT_SOURCES[weights_from]
    dim = e.baseline_array_dim

    macs = evals = sram_bytes = 0.0
    cycles = 0.0
    weights = 0.0
    for name, c in counts.items():
        frac = 1.0 if include_vote_replicas else c.useful_fraction()
        macs += float(c.macs) * frac
        evals += float(c.activation_evals) * frac
        sram_bytes += float(c.state_reads_bytes + c.state_writes_bytes) * frac
        if c.steps:
            per_step = int(c.macs) // int(c.steps)
            weights += per_step
            crit = geometry[name].digital_ops_critical if geometry and name in geometry else 0
            cycles += float(c.steps) * frac * (-(-per_step // (dim * dim)) + crit)
    macs /= inferences
    evals /= inferences
    sram_bytes /= inferences
    lat = cycles / inferences * e.digital_op_time_ns
    weight_kB = weights * d.bytes / 1024.0
    kb = e.buffer_kB + (weight_kB if weights_from == "sram" else 0.0)
    leak_uW = kb * p["sram_leak_uW_per_kB"] + p["periphery_leak_uW"]
    by_field = {
        f"op.{datapath}.mult": macs * p[f"op.{datapath}.mult"],
        f"op.{datapath}.acc": macs * p[f"op.{datapath}.acc"],
        fetch_field: macs * d.bytes / int(weight_reuse) * p[fetch_field],
        "sram_pJ_per_byte": (macs / dim * d.bytes + 2.0 * macs / dim * d.acc_bytes
                             + sram_bytes * d.state_bytes / 4.0) * p["sram_pJ_per_byte"],
        "activation_pJ": evals * p["activation_pJ"],
        "sram_leak_uW_per_kB": kb * p["sram_leak_uW_per_kB"] * lat * 1e-3,
        "periphery_leak_uW": p["periphery_leak_uW"] * lat * 1e-3,
    }
    by_component = {
        "mac": by_field[f"op.{datapath}.mult"] + by_field[f"op.{datapath}.acc"],
        "weight_fetch": by_field[fetch_field],
        "array_buffer": (macs / dim * d.bytes + 2.0 * macs / dim * d.acc_bytes)
        * p["sram_pJ_per_byte"],
        "activation": by_field["activation_pJ"],
        "state_sram": sram_bytes * d.state_bytes / 4.0 * p["sram_pJ_per_byte"],
        "leakage": by_field["sram_leak_uW_per_kB"] + by_field["periphery_leak_uW"],
    }
    total = sum(by_component.values())
    return BaselineReport(
        datapath=datapath,
        weights_from=weights_from,
        weight_reuse=int(weight_reuse),
        include_vote_replicas=bool(include_vote_replicas),
        inferences=int(inferences),
        steps_per_inference=float(steps_per_inference),
        energy_pJ_per_inference=total,
        energy_pJ_per_step=total / float(steps_per_inference),
        by_component=by_component,
        by_field=by_field,
        macs_per_inference=macs,
        ops_per_inference=2.0 * macs,
        tops_per_w=_ratio(2.0 * macs, total),
        latency_ns_per_inference=lat,
        leakage_mW=leak_uW * 1e-3,
        weight_kB=weight_kB,
    )


def all_baselines(
    counts: Mapping[str, OpCounts],
    profile: DeviceProfile | str,
    *,
    inferences: int,
    steps_per_inference: float,
    weight_reuse: int | Iterable[int] = 1,
    geometry: Mapping[str, LayerGeometry] | None = None,
) -> list[BaselineReport]:
    """Every datapath (int4, int8, fp16, fp32) x weight source (sram, dram) x reuse."""
    reuses = [weight_reuse] if _is_int(weight_reuse) else list(weight_reuse)
    return [
        digital_baseline(counts, profile, dp, src, inferences=inferences,
                         steps_per_inference=steps_per_inference, weight_reuse=int(r),
                         geometry=geometry)
        for r in reuses for dp in DATAPATHS for src in WEIGHT_SOURCES
    ]


def iso_precision(bits: int) -> str:
    """The digital datapath with the analog program's precision: int4 for <= 4 bits, int8 for
    5..8 bits, fp16 above (0 = float weights -> fp32)."""
    if bits == 0:
        return "fp32"
    return "int4" if bits <= 4 else ("int8" if bits <= 8 else "fp16")


def compare(report: EnergyReport, baselines: Iterable[BaselineReport] | BaselineReport) -> Comparison:
    """Ratios E_digital / E_analog per inference for each baseline (> 1: analog wins).

    The baselines must cover the same inferences and the same useful MACs as the report.
    """
    if isinstance(baselines, BaselineReport):
        baselines = [baselines]
    energy: dict[str, float] = {}
    tpw: dict[str, float] = {}
    ratios: dict[str, float] = {}
    for b in baselines:
        if not isinstance(b, BaselineReport):
            raise TypeError(f"expected BaselineReport, got {type(b).__name__}")
        if b.inferences != report.inferences:
            raise ValueError(
                f"baseline {b.name} covers {b.inferences} inferences, the report "
                f"{report.inferences}"
            )
        if not math.isclose(b.macs_per_inference, report.macs_per_inference, rel_tol=1e-9):
            raise ValueError(
                f"baseline {b.name} prices {b.macs_per_inference:g} MACs per inference, the "
                f"report {report.macs_per_inference:g} (different counts?)"
            )
        energy[b.name] = b.energy_pJ_per_inference
        tpw[b.name] = b.tops_per_w
        ratios[b.name] = _ratio(b.energy_pJ_per_inference, report.energy_pJ_per_inference)
    strongest = min(energy, key=lambda k: energy[k]) if energy else ""
    return Comparison(
        analog_pJ_per_inference=report.energy_pJ_per_inference,
        analog_tops_per_w=report.tops_per_w,
        baseline_pJ_per_inference=energy,
        baseline_tops_per_w=tpw,
        ratios=ratios,
        strongest=strongest,
    )


# --- area -----------------------------------------------------------------------------------

def _area_um2(name: str, prof: DeviceProfile) -> float:
    return float(getattr(prof.area, name)) * node_factor(name, prof, area=True)


def analog_area(report: EnergyReport, geometry: Mapping[str, LayerGeometry],
                profile: DeviceProfile | str) -> AreaReport:
    """Area of the analog chip holding the model: every allocated tile at full size (cells of
    area.cell_area_F2 F^2, two per weight; its ADCs and DACs; its periphery), one vector and
    activation unit per layer with tiles, and the state buffer; all at energy.node_nm."""
    prof = _profile(profile)
    e, a = prof.energy, prof.area
    f_um = e.node_nm * 1e-3
    rows, cols = prof.tile.rows, prof.tile.cols
    parts = {"cells": 0.0, "adc": 0.0, "dac": 0.0, "tile_periphery": 0.0,
             "core_periphery": 0.0, "buffer": 0.0}
    for g in geometry.values():
        if not g.tiles:
            continue
        n = len(g.tiles)
        b_adc = priced_bits(g.adc_bits, e)
        b_dac = priced_bits(g.dac_bits, e)
        parts["cells"] += n * 2 * rows * cols * a.cell_area_F2 * f_um ** 2
        parts["adc"] += n * adcs_per_tile(prof) * _area_um2("adc_area_um2", prof) \
            * 2.0 ** (b_adc - 8)
        parts["dac"] += n * rows * _area_um2("dac_area_um2", prof) * 2.0 ** (b_dac - 1)
        parts["tile_periphery"] += n * _area_um2("tile_periphery_area_um2", prof)
        parts["core_periphery"] += _area_um2("core_periphery_area_um2", prof)
    parts["buffer"] = e.buffer_kB * _area_um2("sram_area_um2_per_kB", prof)
    mm2 = {k: v * 1e-6 for k, v in parts.items()}
    total = sum(mm2.values())
    return AreaReport("analog", total, mm2, report.tops, _ratio(report.tops, total))


def baseline_area(b: BaselineReport, profile: DeviceProfile | str) -> AreaReport:
    """Area of a digital baseline: dim^2 MAC processing elements (Horowitz's adder and
    multiplier areas at 45 nm, scaled), the state buffer, the weight SRAM when weights live
    on chip, and one vector/activation unit."""
    prof = _profile(profile)
    e = prof.energy
    d = DATATYPES[b.datapath]
    k = T.area_factor(DATATYPE_NODE_NM, e.node_nm)
    sram = _area_um2("sram_area_um2_per_kB", prof)
    parts = {
        "mac_array": e.baseline_array_dim ** 2 * (d.mult_um2 + d.acc_um2) * k * 1e-6,
        "weight_sram": (b.weight_kB * sram * 1e-6 if b.weights_from == "sram" else 0.0),
        "buffer": e.buffer_kB * sram * 1e-6,
        "core_periphery": _area_um2("core_periphery_area_um2", prof) * 1e-6,
    }
    total = sum(parts.values())
    tops = _ratio(b.ops_per_inference, b.latency_ns_per_inference) * 1e-3
    return AreaReport(b.name, total, parts, tops, _ratio(tops, total))


def price_one_off(counts: OneOffCounts, profile: DeviceProfile | str) -> OneOffReport:
    """Load-time energy: storage_bits_read * storage_read_pJ_per_bit + cells_programmed *
    program_pJ_per_cell."""
    if not isinstance(counts, OneOffCounts):
        raise TypeError(f"expected OneOffCounts, got {type(counts).__name__}")
    counts.check("one-off counts")
    e = _profile(profile).energy
    storage = float(counts.storage_bits_read) * e.storage_read_pJ_per_bit
    prog = float(counts.cells_programmed) * e.program_pJ_per_cell
    return OneOffReport(storage, prog, storage + prog)


def price_adc_retune(counts: Mapping[str, OpCounts], geometry: Mapping[str, LayerGeometry],
                     profile: DeviceProfile | str) -> float:
    """Dynamic energy (pJ) of one ADC-range retune (``adc.track_drift``): ``counts`` per layer
    are the retune's operations (the runtime's ``ledger.retune_counts``: every crossbar read
    ``energy.adc_retune_vectors`` times, one compare per ADC output per vector, one
    reference-DAC write per ADC range), priced with the same per-operation prices as an
    inference (no leakage: the retune's time is not modelled)."""
    prof = _profile(profile)
    p = prices(prof)
    total = 0.0
    for name, c in counts.items():
        c.check(f"retune counts of {name}")
        total += sum(t[2] for t in _layer_terms(c, geometry[name], prof, p))
    return total


# --- voting -------------------------------------------------------------------------------

def with_votes(counts: Mapping[str, OpCounts], votes: int) -> dict[str, OpCounts]:
    """The counts of the same inferences run with ``votes`` replicas each (every counter is
    linear in stream-steps): K votes cost K inferences of analog work."""
    if not _is_int(votes) or votes < 1:
        raise ValueError(f"votes must be a positive integer, got {votes!r}")
    out = {}
    for name, c in counts.items():
        useful = int(c.steps) - int(c.vote_replicas)
        if useful <= 0:
            out[name] = dataclasses.replace(c)
            continue
        if c.vote_replicas:
            k0 = int(c.steps) // useful
            unit_counts = {f.name: getattr(c, f.name) // k0 for f in dataclasses.fields(c)}
            base = OpCounts(**unit_counts)
        else:
            base = dataclasses.replace(c)
        v = base.scaled(int(votes))
        v.vote_replicas = useful * (int(votes) - 1)
        out[name] = v
    return out
