"""Layers with no crossbar form run in the engine's digital periphery and are priced:
LayerNormalization (runtime/kernels/digital.py). ideal == onnxruntime, int4 bit-exact against
the numpy twin, streaming == whole runs, the ledger's counts follow the documented formula."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import nvmstream as nvm
from naive import int_twin
from nvmstream.converters import ir
from nvmstream.converters.inspect import describe
from nvmstream.runtime.ledger import step_costs
from onnx_util import ort_run

CORPUS = Path(__file__).resolve().parent / "corpus" / "torch"


@pytest.mark.parametrize("name", ["lstm_layernorm.ts.onnx", "lstm_layernorm.dynamo.onnx"])
def test_layernorm_runs_digitally_on_the_engine(name):
    path = CORPUS / name
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 8)).astype(np.float32)
    prog = nvm.convert(path, calibration=rng.standard_normal((8, 20, 8)).astype(np.float32))
    want = ort_run(onnx.load(path), {"x": x})["y"]
    ideal = nvm.Engine(prog, nvm.Device("ideal")).run(x)
    assert np.max(np.abs(ideal - want)) <= 1e-5 * np.max(np.abs(want))
    eng = nvm.Engine(prog, nvm.Device("int4"))
    got = eng.run(x)
    np.testing.assert_array_equal(
        got, int_twin(prog.model, {s.key: s for s in eng.plan.segments}, x)["y"])
    s = eng.stream()
    np.testing.assert_array_equal(np.stack([s.step(x[0, t]) for t in range(9)]), got[0])
    (ln,) = [l for l in prog.model.layers if isinstance(l, ir.LayerNorm)]
    info = {l["name"]: l for l in describe(prog.model)["layers"]}
    assert info[ln.name]["runs_on"] == "digital" and info[ln.name]["engine"]
    f = ln.scale.size
    c = step_costs(prog.model, eng.plan)[0][ln.name]
    assert (c.digital_adds, c.digital_muls, c.activation_evals) == (
        3 * f + 1 + (f if ln.bias is not None else 0), 3 * f + 2, 1)
    assert c.dac_conversions == c.adc_conversions == c.cell_reads == 0
    # priced: the report carries the layer's digital energy
    eng.reset_ledger()
    eng.run(x)
    rep = eng.report().analog
    assert rep.by_layer[ln.name] > 0 and rep.latency_ns_by_layer[ln.name] > 0
    assert rep.by_layer_component[ln.name].get("activation", 0) > 0
