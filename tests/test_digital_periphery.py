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
from onnx_util import assert_engine_guarantees, ort_run

CORPUS = Path(__file__).resolve().parent / "corpus" / "torch"


@pytest.mark.parametrize("name", ["lstm_layernorm.ts.onnx", "lstm_layernorm.dynamo.onnx"])
def test_layernorm_runs_digitally_on_the_engine(name):
    path = CORPUS / name
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 8)).astype(np.float32)
    prog = nvm.convert(path, calibration=rng.standard_normal((8, 20, 8)).astype(np.float32))
    assert_engine_guarantees(prog, path, x)
    eng = nvm.Engine(prog, nvm.Device("int4"))
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


K, H = 6, 7


def _spectral_onnx(path: Path) -> Path:
    """x[B, T, 2K] (real and imaginary parts) -> magnitude sqrt(re^2 + im*im) -> reflect Pad
    (2, 1) minus constant Pad 0.5 on the features -> LSTM(7) -> y[T, B, 7] and its mean over
    the features m[T, B, 1]: every digital-periphery op on the way to and after a crossbar."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(21)
    I = K + 3
    W = (rng.standard_normal((1, 4 * H, I)) * 0.4).astype(np.float32)
    R = (rng.standard_normal((1, 4 * H, H)) * 0.4).astype(np.float32)
    B = (rng.standard_normal((1, 8 * H)) * 0.1).astype(np.float32)
    c = lambda a, n: numpy_helper.from_array(np.asarray(a), n)
    inits = [c(W, "W"), c(R, "R"), c(B, "B"), c(np.array([0], np.int64), "s0"),
             c(np.array([K], np.int64), "sK"), c(np.array([2 * K], np.int64), "s2K"),
             c(np.array([2], np.int64), "ax2"), c(np.array([1], np.int64), "ax1"),
             c(np.array(2.0, np.float32), "two"), c(np.array([0, 0, 2, 0, 0, 1], np.int64), "pads"),
             c(np.array(0.5, np.float32), "half")]
    n = helper.make_node
    nodes = [
        n("Slice", ["x", "s0", "sK", "ax2"], ["re"]),
        n("Slice", ["x", "sK", "s2K", "ax2"], ["im"]),
        n("Pow", ["re", "two"], ["re2"], name="pow"),
        n("Mul", ["im", "im"], ["im2"], name="mul"),
        n("Add", ["re2", "im2"], ["pw"], name="add"),
        n("Sqrt", ["pw"], ["mag"], name="sqrt"),
        n("Pad", ["mag", "pads"], ["pr"], mode="reflect", name="pad_reflect"),
        n("Pad", ["mag", "pads", "half"], ["pc"], mode="constant", name="pad_const"),
        n("Sub", ["pr", "pc"], ["feat"], name="sub"),
        n("Transpose", ["feat"], ["seq"], perm=[1, 0, 2]),
        n("LSTM", ["seq", "W", "R", "B"], ["Y"], name="lstm", hidden_size=H),
        n("Squeeze", ["Y", "ax1"], ["y"]),
        n("ReduceMean", ["y"], ["m"], axes=[2], keepdims=1, name="mean"),
    ]
    g = helper.make_graph(
        nodes, "spectral",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", 2 * K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", "B", H]),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, ["T", "B", 1])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


def test_arithmetic_sqrt_pow_pad_and_mean_run_digitally(tmp_path):
    path = _spectral_onnx(tmp_path / "spectral.onnx")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 8, 2 * K)).astype(np.float32)
    prog = nvm.convert(path, calibration=rng.standard_normal((6, 16, 2 * K)).astype(np.float32))
    kinds = {type(l).__name__ for l in prog.model.layers}
    assert {"Binary", "Unary", "FeaturePad", "ReduceMean"} <= kinds
    want = ort_run(onnx.load(path), {"x": x})
    sess = nvm.InferenceSession(prog, "ideal")
    got = dict(zip(["y", "m"], sess.run(["y", "m"], {"x": x})))
    for k in ("y", "m"):
        assert got[k].shape == want[k].shape
        assert np.max(np.abs(got[k] - want[k])) <= 1e-5 * np.max(np.abs(want[k]))
    eng = nvm.Engine(prog, nvm.Device("int4"))
    outs = eng.run_all(x)
    twin = int_twin(prog.model, {s.key: s for s in eng.plan.segments}, x)
    for k in ("y", "m"):
        np.testing.assert_array_equal(outs[k], twin[k])
    s = eng.stream()
    steps = [s.step_all(x[0, t]) for t in range(8)]
    for k in ("y", "m"):
        np.testing.assert_array_equal(np.stack([st[k] for st in steps]), outs[k][0])
    info = {l["name"]: l for l in describe(prog.model)["layers"]}
    for name in ("pow", "mul", "add", "sqrt", "pad_reflect", "sub", "mean"):
        assert info[name]["runs_on"] == "digital" and info[name]["engine"], name
    unit, _ = step_costs(prog.model, eng.plan)
    assert unit["pow"].digital_muls == K and unit["pow"].activation_evals == 0
    assert unit["sqrt"].activation_evals == K
    assert unit["add"].digital_adds == K and unit["mul"].digital_muls == K
    assert unit["mean"].digital_adds == H and unit["mean"].digital_muls == 1
    assert unit["pad_reflect"].state_writes_bytes == 4 * (K + 3)


def test_feature_pad_modes_against_numpy():
    from nvmstream.converters.ir import FeaturePad, run_pointwise
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 1, 5)
    for mode, want in (("reflect", [3, 2, 1, 2, 3, 4, 5, 4, 3, 2]),
                       ("edge", [1, 1, 1, 2, 3, 4, 5, 5, 5, 5]),
                       ("constant", [9, 9, 1, 2, 3, 4, 5, 9, 9, 9])):
        layer = FeaturePad("p", mode, 2, 3, 9.0, "x", "y")
        np.testing.assert_array_equal(run_pointwise(layer, {"x": x})[0, 0], want)
