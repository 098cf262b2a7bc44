"""Energy and latency model: formulas, linearity, per-field shares, baselines, profiles, docs.

The worked example and the scaling table of docs/energy.md are recomputed from the numbers the
page states; any disagreement between the page and the code fails here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from nvmstream.devices import DeviceProfile, ProfileError, list_profiles, load_profile
from nvmstream.devices.energy import (
    BASELINE_COMPONENTS,
    COMPONENTS,
    LayerGeometry,
    OneOffCounts,
    OpCounts,
    adc_energy_pJ,
    adcs_per_tile,
    all_baselines,
    cell_read_energy_pJ,
    compare,
    dac_energy_pJ,
    default_mean_cell_uS,
    digital_baseline,
    layer_latency,
    matrix_tiles,
    mean_cell_conductance_uS,
    DATATYPES,
    SOURCE_NODES,
    analog_area,
    baseline_area,
    iso_precision,
    node_factor,
    price,
    price_one_off,
    priced_bits,
    prices,
    with_votes,
)
from nvmstream.devices import technology as TECH
from nvmstream.devices.profile import SECTIONS, EnergySection

DOC = Path(__file__).resolve().parents[2] / "docs" / "energy.md"
REL = 1e-12  # float rounding only: the model is exact arithmetic on the counts


# --- a slow, obvious reference counter (the convention of docs/energy.md's example) ----------

def lstm_step(I: int, H: int, tile_rows: int, tile_cols: int, dac_bits: int = 4,
              adc_bits: int = 4, name: str = "lstm") -> tuple[OpCounts, LayerGeometry]:
    """Counts and geometry of one step of one stream of an LSTM I -> H, counted cell by cell."""
    tiles = []
    for n_in in (I, H):  # W [4H x I] and R [4H x H], each tiled on its own row blocks
        for r0 in range(0, n_in, tile_rows):
            for c0 in range(0, 4 * H, tile_cols):
                tiles.append((min(tile_rows, n_in - r0), min(tile_cols, 4 * H - c0)))
    row_blocks = math.ceil(I / tile_rows) + math.ceil(H / tile_rows)
    c = OpCounts()
    c.steps = 1
    for r, cols in tiles:
        c.tile_activations += 1
        c.dac_conversions += r
        c.adc_conversions += cols
        c.cell_reads += 2 * r * cols
    c.digital_muls = c.adc_conversions + 3 * H          # scale partial sums; f c, i g, o tanh(c)
    c.digital_adds = 4 * H * (row_blocks - 1) + 4 * H + H  # partial sums, bias, cell update
    c.activation_evals = 5 * H
    c.state_reads_bytes = (I + 2 * H) * 4
    c.state_writes_bytes = 2 * H * 4
    c.macs = 4 * H * (I + H)
    geom = LayerGeometry(name, tuple(tiles), dac_bits, adc_bits, 1, row_blocks + 6)
    return c, geom


def random_counts(rng: np.random.Generator, steps: int = 10) -> OpCounts:
    vals = {f.name: int(rng.integers(0, 10_000)) for f in dataclasses.fields(OpCounts)}
    vals["steps"] = steps
    vals["vote_replicas"] = 0
    return OpCounts(**vals)


def two_layers(profile: DeviceProfile, rng: np.random.Generator):
    t = profile.tile
    geom = {
        "a": LayerGeometry("a", matrix_tiles(min(t.rows, 7), 3 * t.cols, t.rows, t.cols),
                           dac_bits=4, adc_bits=5, digital_ops_critical=3),
        "b": LayerGeometry("b", matrix_tiles(t.rows + 1, 2, t.rows, t.cols), dac_bits=3,
                           adc_bits=6, sequential_vmms=2, digital_ops_critical=7),
    }
    counts = {"a": random_counts(rng), "b": random_counts(rng)}
    return counts, geom


def hand_leak_uW(geom: LayerGeometry, p: DeviceProfile) -> float:
    """Static power of a layer's allocated tiles (docs/energy.md section 2, leakage)."""
    if not geom.tiles:
        return 0.0
    e, q = p.energy, prices(p)
    b = geom.adc_bits or e.unquantized_converter_bits
    n = len(geom.tiles)
    n_adc = math.ceil(p.tile.cols / e.cols_per_adc)
    return (n * n_adc * q["adc_leak_uW"] * 2.0 ** (b - 8) + n * p.tile.rows * q["dac_leak_uW"]
            + n * q["tile_leak_uW"] + q["periphery_leak_uW"])


def hand_price(c: OpCounts, geom: LayerGeometry, p: DeviceProfile,
               latency_ns: float = 0.0) -> dict[str, float]:
    """Every component straight from the formulas of docs/energy.md section 2, with the prices
    converted to the node by hand (Stillmaker & Baas factor from each source node)."""
    e = p.energy
    k45 = TECH.energy_factor(45, e.node_nm)
    k32 = TECH.energy_factor(32, e.node_nm)
    kc = k32 ** e.converter_node_scaling
    ba = geom.adc_bits or e.unquantized_converter_bits
    bd = geom.dac_bits or e.unquantized_converter_bits
    g = e.read_voltage_V ** 2 * default_mean_cell_uS(p) * 1e-6 * e.read_time_ns * 1e-9 * 1e12
    add, mult, width = {"fp32": (0.9, 3.7, 4), "fp16": (0.4, 1.1, 2), "int16": (0.05, 0.8, 2),
                        "int8": (0.03, 0.2, 1)}[e.periphery_precision]
    return {
        "adc": c.adc_conversions * (e.adc_fom_fJ_per_step * 1e-3 * 2 ** ba + e.adc_floor_pJ) * kc,
        "dac": c.dac_conversions * e.dac_1bit_fJ * 1e-3 * 2 ** (bd - 1) * kc,
        "cell_read": c.cell_reads * g,
        "tile_overhead": c.tile_activations * e.tile_overhead_pJ * k32,
        "interconnect": (c.dac_conversions + c.adc_conversions) * e.interconnect_pJ_per_byte * k32,
        "digital": (c.digital_adds * add + c.digital_muls * mult) * k45,
        "activation": c.activation_evals * e.activation_pJ * k32,
        "state_sram": (c.state_reads_bytes + c.state_writes_bytes) * width / 4
        * e.sram_pJ_per_byte * k45,
        "leakage": hand_leak_uW(geom, p) * latency_ns * 1e-3,
    }


# --- unit prices ----------------------------------------------------------------------------

def test_unit_price_formulas():
    e = EnergySection()
    assert adc_energy_pJ(4, e) == pytest.approx(3.7e-3 * 16 + 0.73, rel=REL)
    assert adc_energy_pJ(8, e) == pytest.approx(3.7e-3 * 256 + 0.73, rel=REL)
    assert dac_energy_pJ(1, e) == pytest.approx(3.9e-3, rel=REL)
    assert dac_energy_pJ(4, e) == pytest.approx(0.0312, rel=REL)
    # V^2 G t: 0.2 V, 10 uS, 100 ns -> 0.04 * 1e-5 S * 1e-7 s = 4e-14 J = 0.04 pJ
    assert cell_read_energy_pJ(10.0, e) == pytest.approx(0.04, rel=REL)
    # bits = 0 (float) is priced at unquantized_converter_bits; 0 there means free
    assert priced_bits(0, e) == 8 and priced_bits(5, e) == 5
    assert adc_energy_pJ(0, e) == adc_energy_pJ(8, e)
    free = EnergySection(unquantized_converter_bits=0)
    assert adc_energy_pJ(0, free) == 0.0 and dac_energy_pJ(0, free) == 0.0
    assert adc_energy_pJ(4, free) == adc_energy_pJ(4, e)


def test_node_scaling_of_prices():
    """Every price is converted from its source node: Horowitz's 45 nm digital figures by
    Stillmaker & Baas's factor, ISAAC/PUMA's 32 nm figures likewise, converters by the factor
    to the power converter_node_scaling, cell reads and DRAM not at all."""
    p32 = load_profile("int4")
    assert p32.energy.node_nm == 32.0
    q32 = prices(p32)
    for node in (45, 22, 14, 7):
        p = p32.with_overrides({"energy.node_nm": node})
        q = prices(p)
        k45, k32 = TECH.energy_factor(45, node), TECH.energy_factor(32, node)
        assert q["op.fp32.mult"] == pytest.approx(3.7 * k45, rel=REL)
        assert q["sram_pJ_per_byte"] == pytest.approx(1.25 * k45, rel=REL)
        assert q["activation_pJ"] == pytest.approx(0.26 * k32, rel=REL)
        assert q["adc_floor_pJ"] == pytest.approx(0.73 * k32, rel=REL)
        assert q["dram_pJ_per_byte"] == q32["dram_pJ_per_byte"] == 162.5
        assert adc_energy_pJ(8, p) == pytest.approx(adc_energy_pJ(8, p32) * k32, rel=REL)
        frozen = p.with_overrides({"energy.converter_node_scaling": 0.0})
        assert adc_energy_pJ(8, frozen) == pytest.approx(adc_energy_pJ(8, p32), rel=REL)
        half = p.with_overrides({"energy.converter_node_scaling": 0.5})
        assert dac_energy_pJ(4, half) == pytest.approx(dac_energy_pJ(4, p32) * k32 ** 0.5,
                                                       rel=REL)
        assert cell_read_energy_pJ(5.0, p) == cell_read_energy_pJ(5.0, p32)
    # smaller nodes are cheaper, monotonically, and the tables are the published ones
    ks = [TECH.energy_factor(45, n) for n in TECH.TECH_NODES_NM]
    assert ks == sorted(ks, reverse=True) and TECH.energy_factor(45, 45) == 1.0
    assert TECH.area_factor(45, 32) == 0.46 and TECH.area_factor(32, 45) == 2.2
    # every scaled field names its source node and rule
    for name, (node, rule) in SOURCE_NODES.items():
        assert rule in ("digital", "converter", "none")
        assert (node > 0) == (rule != "none"), name
    with pytest.raises(ValueError, match="technology node"):
        TECH.energy_factor(45, 3)


def test_adc_fit_passes_through_isaac_figures():
    # docs/energy.md section 7: ISAAC's 8-bit ADC (1.67 pJ) and its 4-bit scaling (0.79 pJ)
    e = EnergySection()
    assert adc_energy_pJ(8, e) == pytest.approx(1.67, abs=0.01)
    assert adc_energy_pJ(4, e) == pytest.approx(0.79, abs=0.01)


def test_mean_cell_conductance():
    p = load_profile("rram")
    assert default_mean_cell_uS(p) == pytest.approx(0 + 40 * 0.25 / 2, rel=REL)
    p2 = p.with_overrides(["mapping.gmin_uS=2", "energy.mean_abs_code_fraction=0.5"])
    assert default_mean_cell_uS(p2) == pytest.approx(2 + 38 * 0.5 / 2, rel=REL)
    gp = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    gn = np.zeros((2, 2), np.float32)
    assert mean_cell_conductance_uS(gp, gn) == pytest.approx(10 / 8, rel=REL)
    with pytest.raises(ValueError):
        mean_cell_conductance_uS()


def test_geometry_mean_cell_overrides_profile_default(rng):
    p = load_profile("pcm")
    c, g = lstm_step(5, 4, p.tile.rows, p.tile.cols)
    r0 = price({"lstm": c}, {"lstm": g}, p, inferences=1, steps_per_inference=1)
    g2 = dataclasses.replace(g, mean_cell_uS=2 * default_mean_cell_uS(p))
    r1 = price({"lstm": c}, {"lstm": g2}, p, inferences=1, steps_per_inference=1)
    assert r1.by_component["cell_read"] == pytest.approx(2 * r0.by_component["cell_read"], rel=REL)
    assert r1.by_component["adc"] == r0.by_component["adc"]


# --- pricing formulas, shares, linearity ----------------------------------------------------

@pytest.mark.parametrize("name", ["int4", "pcm", "rram", "ideal"])
def test_price_matches_hand_formulas(name, rng):
    p = load_profile(name)
    counts, geom = two_layers(p, rng)
    r = price(counts, geom, p, inferences=3, steps_per_inference=2.5)
    lat = sum(layer_latency(geom[k], p).total_ns * c.steps / 3 for k, c in counts.items())
    assert r.latency_ns_per_inference == pytest.approx(lat, rel=REL)
    want = {k: 0.0 for k in COMPONENTS}
    for layer, c in counts.items():
        hp = hand_price(c, geom[layer], p, latency_ns=3 * lat)   # leakage: per inference
        assert set(hp) == set(COMPONENTS)
        for k, v in hp.items():
            assert r.by_layer_component[layer][k] == pytest.approx(v / 3, rel=1e-12, abs=1e-12)
            want[k] += v / 3
    buffer = p.energy.buffer_kB * prices(p)["sram_leak_uW_per_kB"] * lat * 1e-3
    assert r.leakage_by_part["buffer"] == pytest.approx(buffer, rel=1e-12)
    want["leakage"] += buffer
    assert r.leakage_mW == pytest.approx(
        (sum(hand_leak_uW(g, p) for g in geom.values())
         + p.energy.buffer_kB * prices(p)["sram_leak_uW_per_kB"]) * 1e-3, rel=1e-12)
    for k in COMPONENTS:
        assert r.by_component[k] == pytest.approx(want[k], rel=1e-12, abs=1e-12)
    total = sum(want.values())
    assert r.energy_pJ_per_inference == pytest.approx(total, rel=1e-12)
    assert r.energy_pJ_per_step == pytest.approx(total / 2.5, rel=1e-12)
    # the splits add up to the total (by layer: all but the shared buffer's leakage)
    for split in (r.by_component, r.by_field):
        assert sum(split.values()) == pytest.approx(total, rel=1e-12)
    assert sum(r.by_layer.values()) + buffer == pytest.approx(total, rel=1e-12)
    macs = sum(c.macs for c in counts.values()) / 3
    assert r.macs_per_inference == pytest.approx(macs, rel=REL)
    assert r.tops_per_w == pytest.approx(2 * macs / total, rel=1e-12)
    assert r.power_mW == pytest.approx(total / r.latency_ns_per_inference, rel=1e-12)
    json.dumps(r.to_dict())  # plain, serialisable
    assert r.format_text() == r.to_text() and "TOPS/W" in r.to_text()


LINEAR_FIELDS = [
    "adc_fom_fJ_per_step", "adc_floor_pJ", "dac_1bit_fJ", "read_time_ns", "tile_overhead_pJ",
    "interconnect_pJ_per_byte", "activation_pJ", "sram_pJ_per_byte", "adc_leak_uW",
    "dac_leak_uW", "tile_leak_uW", "periphery_leak_uW", "sram_leak_uW_per_kB",
]


@pytest.mark.parametrize("fname", LINEAR_FIELDS)
def test_changing_a_price_changes_energy_by_exactly_its_share(fname, rng):
    base = load_profile("pcm", ["energy.tile_overhead_pJ=0.5"])
    counts, geom = two_layers(base, rng)
    r0 = price(counts, geom, base, inferences=2, steps_per_inference=4)
    assert set(r0.by_field) == set(LINEAR_FIELDS) | {"op.fp32.add", "op.fp32.mult"}
    share = r0.by_field[fname]
    assert share > 0
    old = getattr(base.energy, fname)
    for factor in (2.0, 0.5, 3.0):
        p = base.with_overrides({f"energy.{fname}": old * factor})
        r = price(counts, geom, p, inferences=2, steps_per_inference=4)
        delta = r.energy_pJ_per_inference - r0.energy_pJ_per_inference
        assert delta == pytest.approx((factor - 1) * share, rel=1e-9)
        for other in r0.by_field:
            if other != fname:
                assert r.by_field[other] == pytest.approx(r0.by_field[other], rel=1e-12)


def test_doubling_adc_fom_adds_exactly_the_fom_part():
    p = load_profile("int4")
    c, g = lstm_step(12, 64, p.tile.rows, p.tile.cols)
    r0 = price({"lstm": c}, {"lstm": g}, p, inferences=1, steps_per_inference=1)
    r1 = price({"lstm": c}, {"lstm": g}, p.with_overrides(["energy.adc_fom_fJ_per_step=7.4"]),
               inferences=1, steps_per_inference=1)
    fom_part = c.adc_conversions * 3.7e-3 * 2 ** 4     # ISAAC's 32 nm = the default node
    assert r1.energy_pJ_per_inference - r0.energy_pJ_per_inference == pytest.approx(fom_part, rel=1e-9)
    assert r0.by_field["adc_fom_fJ_per_step"] == pytest.approx(fom_part, rel=REL)


def test_read_voltage_is_quadratic(rng):
    p = load_profile("rram")
    counts, geom = two_layers(p, rng)
    r0 = price(counts, geom, p, inferences=1, steps_per_inference=1)
    r1 = price(counts, geom, p.with_overrides(["energy.read_voltage_V=0.4"]),
               inferences=1, steps_per_inference=1)
    assert r1.by_component["cell_read"] == pytest.approx(4 * r0.by_component["cell_read"], rel=1e-12)
    assert r1.energy_pJ_per_inference - r0.energy_pJ_per_inference == pytest.approx(
        3 * r0.by_component["cell_read"], rel=1e-9)


def test_energy_is_linear_in_counts(rng):
    p = load_profile("pcm")
    counts_a, geom = two_layers(p, rng)
    counts_b, _ = two_layers(p, rng)
    ra = price(counts_a, geom, p, inferences=1, steps_per_inference=1)
    rb = price(counts_b, geom, p, inferences=1, steps_per_inference=1)
    summed = {k: counts_a[k] + counts_b[k] for k in counts_a}
    rab = price(summed, geom, p, inferences=1, steps_per_inference=1)
    for k in COMPONENTS:
        assert rab.by_component[k] == pytest.approx(ra.by_component[k] + rb.by_component[k],
                                                    rel=1e-12, abs=1e-12)
    # k runs of the same work over k inferences cost the same per inference
    scaled = {k: c.scaled(5) for k, c in counts_a.items()}
    r5 = price(scaled, geom, p, inferences=5, steps_per_inference=1)
    assert r5.energy_pJ_per_inference == pytest.approx(ra.energy_pJ_per_inference, rel=1e-12)
    r5_one = price(scaled, geom, p, inferences=1, steps_per_inference=1)
    assert r5_one.energy_pJ_per_inference == pytest.approx(5 * ra.energy_pJ_per_inference, rel=1e-12)


def test_float_converters_priced_at_fallback_bits():
    p = load_profile("ideal")
    c, g = lstm_step(6, 8, p.tile.rows, p.tile.cols, dac_bits=0, adc_bits=0)
    r = price({"lstm": c}, {"lstm": g}, p, inferences=1, steps_per_inference=1)
    assert r.by_component["adc"] == pytest.approx(c.adc_conversions * adc_energy_pJ(8, p), rel=REL)
    free = p.with_overrides(["energy.unquantized_converter_bits=0"])
    r0 = price({"lstm": c}, {"lstm": g}, free, inferences=1, steps_per_inference=1)
    assert r0.by_component["adc"] == 0.0 and r0.by_component["dac"] == 0.0
    assert r0.by_component["cell_read"] == r.by_component["cell_read"]


# --- latency --------------------------------------------------------------------------------

def test_latency_formula_adc_sharing_parallel_tiles_and_phases():
    p = load_profile("int4", ["energy.cols_per_adc=64"])
    e = p.energy
    assert adcs_per_tile(p) == 4  # 256 columns / 64 per ADC
    g = LayerGeometry("x", ((256, 200), (10, 256), (3, 1)), 4, 4, sequential_vmms=2,
                      digital_ops_critical=5)
    lat = layer_latency(g, p)
    slowest = e.dac_time_ns + e.tile_settle_ns + math.ceil(256 / 4) * e.adc_time_ns
    assert lat.vmm_phase_ns == pytest.approx(slowest, rel=REL)
    assert lat.vmm_ns == pytest.approx(2 * slowest, rel=REL)
    assert lat.digital_ns == pytest.approx(5 * e.digital_op_time_ns, rel=REL)
    assert lat.total_ns == pytest.approx(2 * slowest + 5, rel=REL)
    # a purely digital layer only takes its digital time
    d = layer_latency(LayerGeometry("softmax", (), digital_ops_critical=7), p)
    assert (d.vmm_ns, d.total_ns) == (0.0, 7 * e.digital_op_time_ns)
    # one ADC per tile when cols_per_adc >= tile.cols
    p1 = p.with_overrides(["energy.cols_per_adc=1000"])
    assert adcs_per_tile(p1) == 1
    assert layer_latency(g, p1).vmm_phase_ns == pytest.approx(
        e.dac_time_ns + e.tile_settle_ns + 256 * e.adc_time_ns, rel=REL)


def test_layers_in_sequence_steps_and_replicas():
    p = load_profile("int4")
    ca, ga = lstm_step(12, 64, 256, 256, name="l1")
    cb, gb = lstm_step(64, 32, 256, 256, name="l2")
    geom = {"l1": ga, "l2": gb, "head": LayerGeometry("head", (), digital_ops_critical=4)}
    r = price({"l1": ca, "l2": cb}, geom, p, inferences=1, steps_per_inference=1)
    per_layer = {k: layer_latency(g, p).total_ns for k, g in geom.items()}
    assert r.latency_ns_by_layer == pytest.approx(per_layer, rel=REL)
    assert r.latency_ns_per_step == pytest.approx(sum(per_layer.values()), rel=REL)
    # 50 steps per inference, 3 voting replicas run one after another
    T, K = 50, 3
    rc = {k: c.scaled(T * K) for k, c in {"l1": ca, "l2": cb}.items()}
    for c in rc.values():
        c.vote_replicas = T * (K - 1)
    rv = price(rc, geom, p, inferences=1, steps_per_inference=T)
    assert rv.replica_factor == pytest.approx(K, rel=REL)
    assert rv.latency_ns_per_step == pytest.approx(r.latency_ns_per_step, rel=REL)
    assert rv.latency_ns_per_inference == pytest.approx(r.latency_ns_per_step * T * K, rel=REL)
    # a head with counts that runs once per inference (per replica) is charged that often
    rc["head"] = OpCounts(steps=K, vote_replicas=K - 1, digital_adds=10)
    rh = price(rc, geom, p, inferences=1, steps_per_inference=T)
    want = (per_layer["l1"] + per_layer["l2"]) * T * K + per_layer["head"] * K
    assert rh.latency_ns_per_inference == pytest.approx(want, rel=REL)
    del rc["head"]
    assert rv.throughput_inferences_per_s == pytest.approx(1e9 / rv.latency_ns_per_inference, rel=REL)
    # the replicas' energy is paid, their MACs are not credited
    assert rv.energy_pJ_per_inference == pytest.approx(T * K * r.energy_pJ_per_inference, rel=1e-12)
    # and re-pricing the 1-vote counts for K votes gives the same (K votes cost K inferences)
    one = {k: c.scaled(T) for k, c in {"l1": ca, "l2": cb}.items()}
    kv = with_votes(one, K)
    assert {k: c.to_dict() for k, c in kv.items()} == {k: c.to_dict() for k, c in rc.items()}
    assert with_votes(kv, 1) == one and with_votes(kv, 5) == with_votes(one, 5)
    assert rv.macs_per_inference == pytest.approx(T * r.macs_per_inference, rel=REL)
    assert rv.tops_per_w == pytest.approx(r.tops_per_w / K, rel=1e-12)
    assert rv.tops == pytest.approx(rv.ops_per_inference * rv.throughput_inferences_per_s / 1e12,
                                    rel=REL)


# --- digital baseline and comparison --------------------------------------------------------

@pytest.mark.parametrize("datapath", ["int4", "int8", "fp16", "fp32"])
@pytest.mark.parametrize("src", ["sram", "dram"])
def test_digital_baseline_formulas(datapath, src, rng):
    p = load_profile("pcm", ["energy.node_nm=22"])
    e = p.energy
    counts, geom = two_layers(p, rng)
    b = digital_baseline(counts, p, datapath, src, inferences=2, steps_per_inference=5,
                         geometry=geom)
    k45 = TECH.energy_factor(45, 22)
    k32 = TECH.energy_factor(32, 22)
    # Horowitz 45 nm: multiply, accumulator add, bytes per weight/state/partial sum
    mult, acc, wb, sb, ab = {"int4": (0.05, 0.05, 0.5, 1, 2), "int8": (0.2, 0.1, 1, 1, 4),
                             "fp16": (1.1, 0.4, 2, 2, 2), "fp32": (3.7, 0.9, 4, 4, 4)}[datapath]
    macs = sum(c.macs for c in counts.values()) / 2
    fetch = e.weight_sram_pJ_per_byte * k45 if src == "sram" else e.dram_pJ_per_byte
    evals = sum(c.activation_evals for c in counts.values()) / 2
    sbytes = sum(c.state_reads_bytes + c.state_writes_bytes for c in counts.values()) / 2
    dim = e.baseline_array_dim
    sram = e.sram_pJ_per_byte * k45
    cycles = sum(c.steps * (math.ceil(c.macs // c.steps / dim ** 2)
                            + geom[k].digital_ops_critical) for k, c in counts.items()) / 2
    lat = cycles * e.digital_op_time_ns
    wkB = sum(c.macs // c.steps for c in counts.values()) * wb / 1024
    kB = e.buffer_kB + (wkB if src == "sram" else 0)
    leak_uW = kB * e.sram_leak_uW_per_kB * k32 + e.periphery_leak_uW * k32
    want = {
        "mac": macs * (mult + acc) * k45,
        "weight_fetch": macs * wb * fetch,
        "array_buffer": (macs / dim * wb + 2 * macs / dim * ab) * sram,
        "activation": evals * e.activation_pJ * k32,
        "state_sram": sbytes * sb / 4 * sram,
        "leakage": leak_uW * lat * 1e-3,
    }
    assert set(b.by_component) == set(BASELINE_COMPONENTS)
    for k, v in want.items():
        assert b.by_component[k] == pytest.approx(v, rel=1e-12), k
    assert b.latency_ns_per_inference == pytest.approx(lat, rel=REL)
    assert b.leakage_mW == pytest.approx(leak_uW * 1e-3, rel=REL)
    total = sum(want.values())
    assert b.energy_pJ_per_inference == pytest.approx(total, rel=1e-12)
    assert b.energy_pJ_per_step == pytest.approx(total / 5, rel=1e-12)
    assert b.tops_per_w == pytest.approx(2 * macs / total, rel=1e-12)
    assert b.name == f"{datapath}/{src}"
    assert sum(b.by_field.values()) == pytest.approx(total, rel=1e-12)
    # weight reuse across a batch divides the fetch only
    b4 = digital_baseline(counts, p, datapath, src, inferences=2, steps_per_inference=5,
                          weight_reuse=4, geometry=geom)
    assert b4.by_component["weight_fetch"] == pytest.approx(want["weight_fetch"] / 4, rel=1e-12)
    assert b4.by_component["mac"] == b.by_component["mac"]
    assert b4.name == f"{datapath}/{src}/reuse4"
    json.dumps(b.to_dict())
    # its area: dim^2 PEs of Horowitz adder + multiplier, buffers, weight SRAM if on chip
    a = baseline_area(b, p)
    d = DATATYPES[datapath]
    sram_um2 = p.area.sram_area_um2_per_kB * TECH.area_factor(32, 22)
    want_mm2 = (dim ** 2 * (d.mult_um2 + d.acc_um2) * TECH.area_factor(45, 22)
                + (kB * sram_um2) + p.area.core_periphery_area_um2 * TECH.area_factor(32, 22)
                ) * 1e-6
    assert a.area_mm2 == pytest.approx(want_mm2, rel=1e-12)
    assert a.tops_per_mm2 == pytest.approx(2 * macs / lat * 1e-3 / want_mm2, rel=1e-12)


def test_baseline_leaves_out_vote_replicas():
    p = load_profile("snr0db")
    c, _ = lstm_step(12, 16, 256, 256)
    c3 = c.scaled(3)
    c3.vote_replicas = 2
    b1 = digital_baseline({"l": c}, p, inferences=1, steps_per_inference=1)
    b3 = digital_baseline({"l": c3}, p, inferences=1, steps_per_inference=1)
    assert b3.energy_pJ_per_inference == pytest.approx(b1.energy_pJ_per_inference, rel=1e-12)
    b3all = digital_baseline({"l": c3}, p, inferences=1, steps_per_inference=1,
                             include_vote_replicas=True)
    assert b3all.energy_pJ_per_inference == pytest.approx(3 * b1.energy_pJ_per_inference, rel=1e-12)


def test_compare_ratios_strongest_and_mismatch_errors():
    p = load_profile("int4")
    c, g = lstm_step(12, 64, 256, 256)
    r = price({"lstm": c}, {"lstm": g}, p, inferences=1, steps_per_inference=1)
    bs = all_baselines({"lstm": c}, p, inferences=1, steps_per_inference=1, weight_reuse=(1, 16))
    assert [b.name for b in bs[:8]] == [f"{d}/{s}" for d in ("int4", "int8", "fp16", "fp32")
                                         for s in ("sram", "dram")]
    assert len(bs) == 16 and bs[8].name == "int4/sram/reuse16"
    cmp = compare(r, bs)
    for b in bs:
        ratio = b.energy_pJ_per_inference / r.energy_pJ_per_inference
        assert cmp.ratios[b.name] == pytest.approx(ratio, rel=1e-12)
        assert cmp.ratios[b.name] == pytest.approx(r.tops_per_w / b.tops_per_w, rel=1e-9)
    assert cmp.strongest == min(bs, key=lambda b: b.energy_pJ_per_inference).name
    # DRAM costs more than SRAM, wider formats more, reuse less
    for d in ("int4", "int8", "fp16", "fp32"):
        assert cmp.ratios[f"{d}/sram"] < cmp.ratios[f"{d}/dram"]
        assert cmp.ratios[f"{d}/sram/reuse16"] < cmp.ratios[f"{d}/sram"]
    assert (cmp.ratios["int4/sram"] < cmp.ratios["int8/sram"] < cmp.ratios["fp16/sram"]
            < cmp.ratios["fp32/sram"])
    json.dumps(cmp.to_dict())
    other = digital_baseline({"lstm": c.scaled(2)}, p, inferences=1, steps_per_inference=1)
    with pytest.raises(ValueError, match="MACs"):
        compare(r, other)
    with pytest.raises(ValueError, match="inferences"):
        compare(r, digital_baseline({"lstm": c.scaled(2)}, p, inferences=2, steps_per_inference=1))
    assert [iso_precision(b) for b in (0, 2, 4, 5, 8, 12)] == [
        "fp32", "int4", "int4", "int8", "int8", "fp16"]


def test_periphery_precision_reprices_digital_and_state():
    c, g = lstm_step(12, 64, 256, 256)
    rs = {}
    for prec in ("fp32", "fp16", "int16", "int8"):
        p = load_profile("int4", {"energy.periphery_precision": prec})
        rs[prec] = price({"lstm": c}, {"lstm": g}, p, inferences=1, steps_per_inference=1)
        want = hand_price(c, g, p)
        assert rs[prec].by_component["digital"] == pytest.approx(want["digital"], rel=1e-12)
        assert rs[prec].by_component["state_sram"] == pytest.approx(want["state_sram"], rel=1e-12)
        assert rs[prec].by_component["adc"] == rs["fp32"].by_component["adc"]
    e = [rs[k].energy_pJ_per_inference for k in ("fp32", "fp16", "int16", "int8")]
    assert e == sorted(e, reverse=True)


def test_analog_area_by_hand():
    p = load_profile("int4", ["energy.node_nm=14", "energy.cols_per_adc=64"])
    c, g = lstm_step(12, 300, 256, 256)
    r = price({"lstm": c}, {"lstm": g}, p, inferences=1, steps_per_inference=1)
    a = analog_area(r, {"lstm": g}, p)
    n = len(g.tiles)
    f_um = 14e-3
    kd = TECH.area_factor(32, 14)
    want = {
        "cells": n * 2 * 256 * 256 * 4.0 * f_um ** 2,
        "adc": n * 4 * 1200 * kd * 2.0 ** (4 - 8),
        "dac": n * 256 * 0.167 * kd * 2.0 ** 3,
        "tile_periphery": n * 70 * kd,
        "core_periphery": 4332 * kd,
        "buffer": 64 * 1914 * kd,
    }
    for k, v in want.items():
        assert a.by_part[k] == pytest.approx(v * 1e-6, rel=1e-12), k
    assert a.area_mm2 == pytest.approx(sum(want.values()) * 1e-6, rel=1e-12)
    assert a.tops_per_mm2 == pytest.approx(r.tops / a.area_mm2, rel=1e-12)
    # converters frozen at their source node take 32 nm's area
    frozen = p.with_overrides({"energy.converter_node_scaling": 0.0})
    af = analog_area(r, {"lstm": g}, frozen)
    assert af.by_part["adc"] == pytest.approx(want["adc"] / kd * 1e-6, rel=1e-12)
    assert node_factor("adc_area_um2", frozen, area=True) == 1.0


def test_price_one_off():
    p = load_profile("pcm")
    r = price_one_off(OneOffCounts(storage_bits_read=1000, cells_programmed=300), p)
    assert r.storage_read_pJ == pytest.approx(1000 * p.energy.storage_read_pJ_per_bit, rel=REL)
    assert r.programming_pJ == pytest.approx(300 * 50.0, rel=REL)
    assert r.total_pJ == pytest.approx(r.storage_read_pJ + r.programming_pJ, rel=REL)
    assert set(r.to_dict()) == {"storage_read_pJ", "programming_pJ", "total_pJ",
                                "adc_retune_pJ"}
    assert r.adc_retune_pJ == 0.0       # priced by the ledger only with adc.track_drift
    with pytest.raises(ValueError, match="cells_programmed"):
        price_one_off(OneOffCounts(cells_programmed=-1), p)


# --- the ledger types -----------------------------------------------------------------------

def test_opcounts_arithmetic_with_numpy_ints():
    a = OpCounts(steps=1, adc_conversions=5, macs=7)
    a.adc_conversions += np.int64(3)
    a.cell_reads += np.int64(2) * 4
    b = OpCounts(steps=2, adc_conversions=1, digital_adds=9)
    s = a + b
    assert s.to_dict()["adc_conversions"] == 9 and s.steps == 3 and s.digital_adds == 9
    assert a.adc_conversions == 8  # + does not mutate
    a += b
    assert a.adc_conversions == 9 and a.steps == 3
    d = a.to_dict()
    assert all(type(v) is int for v in d.values())
    assert set(d) == {f.name for f in dataclasses.fields(OpCounts)}
    assert OpCounts.from_dict(d) == a
    k = a.scaled(np.int64(3))
    assert k.adc_conversions == 27 and a.adc_conversions == 9
    assert a.scaled(0) == OpCounts()
    with pytest.raises(ValueError, match="k must be"):
        a.scaled(1.5)
    with pytest.raises(ValueError, match="k must be"):
        a.scaled(-1)
    with pytest.raises(ValueError, match="unknown counter"):
        OpCounts.from_dict({"adc": 1})
    with pytest.raises(TypeError):
        a += OneOffCounts()
    o = OneOffCounts(storage_bits_read=8) + OneOffCounts(cells_programmed=2)
    assert o.to_dict() == {"storage_bits_read": 8, "cells_programmed": 2}


def test_opcounts_validation_names_the_counter():
    p = load_profile("int4")
    _, g = lstm_step(3, 5, 4, 4)
    pp = p.with_overrides(["tile.rows=4", "tile.cols=4"])
    with pytest.raises(ValueError, match=r"counts\['lstm'\]: adc_conversions"):
        price({"lstm": OpCounts(adc_conversions=-1)}, {"lstm": g}, pp, inferences=1,
              steps_per_inference=1)
    with pytest.raises(ValueError, match="digital_adds"):
        price({"lstm": OpCounts(digital_adds=1.5)}, {"lstm": g}, pp, inferences=1,
              steps_per_inference=1)
    with pytest.raises(ValueError, match="vote_replicas"):
        price({"lstm": OpCounts(steps=1, vote_replicas=2)}, {"lstm": g}, pp, inferences=1,
              steps_per_inference=1)


def test_price_argument_errors():
    p = load_profile("int4")
    c, g = lstm_step(3, 5, 256, 256)
    ok = dict(inferences=1, steps_per_inference=1)
    with pytest.raises(ValueError, match="no geometry for layer"):
        price({"lstm": c, "dense": OpCounts()}, {"lstm": g}, p, **ok)
    with pytest.raises(ValueError, match="describes layer"):
        price({"x": c}, {"x": g}, p, **ok)
    with pytest.raises(ValueError, match="inferences"):
        price({"lstm": c}, {"lstm": g}, p, inferences=0, steps_per_inference=1)
    with pytest.raises(ValueError, match="steps_per_inference"):
        price({"lstm": c}, {"lstm": g}, p, inferences=1, steps_per_inference=0)
    with pytest.raises(ValueError, match="does not fit"):
        small = p.with_overrides(["tile.rows=4", "tile.cols=4"])
        price({"lstm": c}, {"lstm": g}, small, **ok)
    with pytest.raises(TypeError):
        price({"lstm": c.to_dict()}, {"lstm": g}, p, **ok)
    # a profile name works too
    assert price({"lstm": c}, {"lstm": g}, "int4", **ok).profile == "int4"


def test_geometry_validation():
    with pytest.raises(ValueError, match="tiles"):
        LayerGeometry("x", ((0, 4),))
    with pytest.raises(ValueError, match="tiles"):
        LayerGeometry("x", ((4,),))
    with pytest.raises(ValueError, match="adc_bits"):
        LayerGeometry("x", ((4, 4),), adc_bits=17)
    with pytest.raises(ValueError, match="sequential_vmms"):
        LayerGeometry("x", ((4, 4),), sequential_vmms=0)
    with pytest.raises(ValueError, match="mean_cell_uS"):
        LayerGeometry("x", ((4, 4),), mean_cell_uS=-1.0)
    with pytest.raises(ValueError, match="name"):
        LayerGeometry("", ())
    g = LayerGeometry("x", [[np.int64(3), 4], (1, 2)], np.int64(4), 4, mean_cell_uS=np.float32(2))
    assert g.tiles == ((3, 4), (1, 2)) and g.weights == 14 and g.dac_bits == 4
    assert LayerGeometry.from_dict(json.loads(json.dumps(g.to_dict()))) == g


def test_matrix_tiles():
    assert matrix_tiles(3, 20, 4, 4) == ((3, 4),) * 5
    assert matrix_tiles(5, 20, 4, 4) == ((4, 4),) * 5 + ((1, 4),) * 5
    t = matrix_tiles(300, 1030, 256, 256)
    assert len(t) == 2 * 5 and sum(r * c for r, c in t) == 300 * 1030
    with pytest.raises(ValueError, match="n_in"):
        matrix_tiles(0, 4, 4, 4)


# --- profiles -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_profiles())
def test_every_shipped_profile_prices_an_inference(name, rng):
    p = load_profile(name)
    assert isinstance(p.energy, EnergySection)
    counts, geom = two_layers(p, rng)
    r = price(counts, geom, p, inferences=2, steps_per_inference=5)
    assert math.isfinite(r.energy_pJ_per_inference) and r.energy_pJ_per_inference > 0
    assert all(v > 0 for k, v in r.by_component.items() if k != "tile_overhead")
    assert r.leakage_mW > 0 and set(r.bottleneck_by_layer) == set(geom)
    assert math.isfinite(r.latency_ns_per_inference) and r.latency_ns_per_inference > 0
    assert 0 < r.tops_per_w < math.inf
    cmp = compare(r, all_baselines(counts, p, inferences=2, steps_per_inference=5))
    assert all(0 < v < math.inf for v in cmp.ratios.values())
    one = price_one_off(OneOffCounts(storage_bits_read=64, cells_programmed=2), p)
    assert one.total_pJ > 0


def test_energy_section_is_documented_with_units_and_sources():
    assert SECTIONS["energy"] is EnergySection
    text = load_profile("pcm").describe()
    for f in dataclasses.fields(EnergySection):
        m = f.metadata
        assert m["doc"] and m["unit"], f.name
        assert m["source"], f"energy.{f.name} has no source"
        assert f"energy.{f.name} = " in text
        # every default is stated in docs/energy.md's defaults table
    doc = DOC.read_text()
    for sec in ("energy", "area"):
        for f in dataclasses.fields(SECTIONS[sec]):
            row = re.search(rf"^\| `{f.name}` \| ([^|]+) \|", doc, re.M)
            assert row, f"docs/energy.md has no defaults row for {f.name}"
            if isinstance(f.default, str):
                assert row.group(1).strip() == f.default, f.name
            else:
                assert float(row.group(1)) == pytest.approx(float(f.default), rel=1e-12), f.name


def test_energy_overrides_in_toml_inheritance_and_round_trip(write_toml):
    path = write_toml('base = "pcm"\nname = "chip"\n[energy]\nadc_fom_fJ_per_step = 10\n'
                      'cols_per_adc = 32\n')
    p = load_profile(path, ["energy.dram_pJ_per_byte=325"])
    assert p.energy.adc_fom_fJ_per_step == 10.0 and p.energy.cols_per_adc == 32
    assert p.energy.dram_pJ_per_byte == 325.0
    assert p.drift == load_profile("pcm").drift  # the rest is inherited
    q = load_profile(write_toml(p.to_toml(), name="resolved"))
    assert q.energy == p.energy


@pytest.mark.parametrize("override,field", [
    ("energy.adc_fom_fJ_per_step=-1", "energy.adc_fom_fJ_per_step"),
    ("energy.cols_per_adc=0", "energy.cols_per_adc"),
    ("energy.cols_per_adc=2.5", "energy.cols_per_adc"),
    ("energy.unquantized_converter_bits=17", "energy.unquantized_converter_bits"),
    ("energy.read_voltage_V=nan", "energy.read_voltage_V"),
    ("energy.sram_pJ_per_byte=cheap", "energy.sram_pJ_per_byte"),
    ("energy.mean_abs_code_fraction=1.5", "energy.mean_abs_code_fraction"),
    ("energy.adc_pJ=1", "energy.adc_pJ"),
])
def test_energy_validation_errors_name_the_field(override, field):
    with pytest.raises(ProfileError) as exc:
        load_profile("int4", [override])
    assert exc.value.field == field
    assert field in str(exc.value)


def test_energy_validation_in_files_and_constructor(write_toml):
    with pytest.raises(ProfileError) as exc:
        load_profile(write_toml("[energy]\ndac_time_ns = -2\n"))
    assert exc.value.field == "energy.dac_time_ns" and "chip.toml" in str(exc.value)
    with pytest.raises(ProfileError) as exc:
        load_profile(write_toml("[energy]\nnot_a_price = 1\n"))
    assert exc.value.field == "energy.not_a_price"
    with pytest.raises(ProfileError, match="energy.program_pJ_per_cell"):
        EnergySection(program_pJ_per_cell=-5.0)


# --- docs/energy.md: worked example and scaling table ---------------------------------------

def _doc_block(marker: str) -> str:
    text = DOC.read_text()
    start = text.index(f"<!-- {marker} -->")
    return text[start:]


def _decimals(s: str) -> int:
    return len(s.split(".")[1]) if "." in s else 0


def _agrees(code: float, doc: str) -> bool:
    """The code's value, rounded as the page prints it, is the page's value."""
    return abs(code - float(doc)) <= 0.5 * 10 ** -_decimals(doc) * (1 + 1e-9) + 1e-12


def _worked_example():
    block = _doc_block("worked-example-inputs")
    m = re.search(r"```json\n(.*?)```", block, re.S)
    spec = json.loads(m.group(1))
    p = load_profile(spec["profile"], spec["overrides"])
    counts = {k: OpCounts.from_dict(v) for k, v in spec["counts"].items()}
    geom = {k: LayerGeometry.from_dict(v) for k, v in spec["geometry"].items()}
    return spec, p, counts, geom


def test_worked_example_inputs_follow_the_stated_counting():
    spec, p, counts, geom = _worked_example()
    c, g = lstm_step(3, 5, 4, 4)
    assert counts["lstm"] == c
    assert geom["lstm"] == g
    assert g.tiles == matrix_tiles(3, 20, 4, 4) + matrix_tiles(5, 20, 4, 4)
    assert len(g.tiles) == 15 and g.weights == 160


def test_worked_example_numbers_match_the_code():
    spec, p, counts, geom = _worked_example()
    run = dict(inferences=spec["inferences"], steps_per_inference=spec["steps_per_inference"])
    r = price(counts, geom, p, **run)
    bs = {b.name: b for b in all_baselines(counts, p, **run, geometry=geom)}
    cmp = compare(r, list(bs.values()))
    code = {f"energy.{k}": v for k, v in r.by_component.items()}
    code.update({f"field.{k}": v for k, v in r.by_field.items()})
    code.update({
        "energy.total": r.energy_pJ_per_inference,
        "latency.step": r.latency_ns_per_step,
        "throughput": r.throughput_inferences_per_s,
        "tops_per_w": r.tops_per_w,
        "power_mW": r.power_mW,
        "leakage_mW": r.leakage_mW,
    })
    code.update({f"baseline.{k}": b.energy_pJ_per_inference for k, b in bs.items()})
    code.update({f"ratio.{k}": v for k, v in cmp.ratios.items()})
    block = _doc_block("worked-example-results")
    block = block[:block.index("<!-- /worked-example-results -->")]
    rows = re.findall(r"^\| `([\w./]+)` \| [^|]* \| ([-0-9.e+]+) \|$", block, re.M)
    assert len(rows) >= 20, "worked-example table not found or too short"
    for key, value in rows:
        assert key in code, f"docs/energy.md row {key!r} is not a reported quantity"
        assert _agrees(code[key], value), f"{key}: code {code[key]!r}, docs/energy.md {value}"
    assert {k for k, _ in rows} >= {f"energy.{c}" for c in COMPONENTS} | {"energy.total"}


def test_scaling_table_matches_the_code():
    p = load_profile("int4")
    block = _doc_block("scaling-table")
    block = block[:block.index("<!-- /scaling-table -->")]
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (.+) \|$", block, re.M)
    assert len(rows) >= 3
    for I, H, rest in rows:
        cells = [x.strip() for x in rest.split("|")]
        c, g = lstm_step(int(I), int(H), p.tile.rows, p.tile.cols, name="l")
        r = price({"l": c}, {"l": g}, p, inferences=1, steps_per_inference=1)
        cmp = compare(r, all_baselines({"l": c}, p, inferences=1, steps_per_inference=1,
                                       weight_reuse=(1, 16), geometry={"l": g}))
        got = [c.macs, len(g.tiles), r.energy_pJ_per_step, r.latency_ns_per_step, r.tops_per_w,
               cmp.ratios["int4/sram"], cmp.ratios["int4/sram/reuse16"], cmp.ratios["int8/sram"],
               cmp.ratios["fp32/dram"]]
        assert len(cells) == len(got)
        for value, doc in zip(got, cells):
            assert _agrees(value, doc), f"I={I} H={H}: code {value!r}, docs/energy.md {doc}"


# --- validation against published chips, sensitivity -----------------------------------------

def test_validation_table_of_docs_matches_the_code():
    from nvmstream.devices.validation import DESIGNS, validate
    rows = {r["design"]: r for r in validate()}
    assert len(rows) == len(DESIGNS) >= 3
    block = _doc_block("validation-table")
    block = block[:block.index("<!-- /validation-table -->")]
    doc = re.findall(r"^\| ([^|]+) \| ([^|]+) \| ([-0-9.e+]+) \| ([-0-9.e+]+) \| ([-+0-9]+)% \|",
                     block, re.M)
    assert len(doc) == len(rows)
    for name, metric, published, model, err in doc:
        r = rows[name.strip()]
        assert r["metric"] == metric.strip()
        assert r["published"] == float(published)
        assert r["model"] == pytest.approx(float(model), rel=5e-3), name
        assert round(100 * r["error"]) == int(err), name
        # the error is what it says: model / published - 1
        assert r["error"] == pytest.approx(r["model"] / r["published"] - 1, rel=1e-12)


def test_sensitivity_moves_each_knob_and_brackets_the_nominal():
    from nvmstream.devices.sensitivity import KNOBS, Knob, sensitivity, verdict
    p = load_profile("int4")
    c, g = lstm_step(12, 64, 256, 256)
    counts, geom = {"lstm": c.scaled(20)}, {"lstm": g}
    run = dict(inferences=1, steps_per_inference=20)
    s = sensitivity(counts, geom, p, reuse=(1, 16), **run)
    nominal, strongest = verdict(counts, geom, p, reuse=(1, 16), **run)
    assert (s.nominal, s.strongest) == (nominal, strongest)
    assert len(s.knobs) == len(KNOBS)
    assert s.ratio_min <= s.tornado_min <= s.nominal <= s.tornado_max <= s.ratio_max
    by = {k.name: k for k in s.knobs}
    # a price that only the analog side pays moves the ratio the expected way
    assert by["ADC energy"].ratio_high < s.nominal < by["ADC energy"].ratio_low
    assert by["read voltage"].ratio_low < s.nominal
    # int16 periphery is cheaper than fp32: the analog side gains
    assert by["periphery precision"].ratio_high > by["periphery precision"].ratio_low
    # calibrating to a measured chip multiplies the analog prices by > 1
    assert by["measured-chip calibration"].ratio_low < s.nominal
    # each knob's value is the verdict under its overrides
    k = KNOBS[0]
    assert by[k.name].ratio_low == pytest.approx(
        verdict(counts, geom, p.with_overrides(dict(k.low)), reuse=(1, 16), **run)[0], rel=1e-12)
    # a knob that changes nothing leaves the ratio alone
    same = sensitivity(counts, geom, p, knobs=[Knob("none", {}, {}, "")], **run)
    assert same.knobs[0].ratio_low == same.knobs[0].ratio_high == same.nominal
    json.dumps(s.to_dict())
