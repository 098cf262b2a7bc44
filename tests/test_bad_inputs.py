"""Ladder rung 4: bad input gets a clear error naming the problem, and a non-zero CLI exit with
nothing half-written."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nvmstream as nvm
from onnx_util import FIXTURES

GOOD = FIXTURES / "lstm1_bf.ts.onnx"


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nvmstream.runtime.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def _lstm_then(node: onnx.NodeProto, extra_inits=(), weight_as_input=False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    W = numpy_helper.from_array(rng.normal(size=(1, 16, 3)).astype(np.float32), "W")
    R = numpy_helper.from_array(rng.normal(size=(1, 16, 4)).astype(np.float32), "R")
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "N", 3])]
    inits = [R, *extra_inits]
    if weight_as_input:
        inputs.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [1, 16, 3]))
    else:
        inits.append(W)
    nodes = [helper.make_node("LSTM", ["X", "W", "R"], ["Y"], name="lstm", hidden_size=4)]
    out = "Y"
    if node is not None:
        nodes.append(node)
        out = node.output[0]
    g = helper.make_graph(nodes, "g", inputs,
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["a", "b", "c", "d"])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_truncated_file(tmp_path):
    p = tmp_path / "trunc.onnx"
    data = GOOD.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(nvm.NvmConversionError) as e:
        nvm.load_ir(p)
    assert str(p) in str(e.value)
    r = cli("inspect", p)
    assert r.returncode != 0 and str(p) in r.stderr and "Traceback" not in r.stderr


def test_not_an_onnx_file(tmp_path):
    p = tmp_path / "notes.onnx"
    p.write_text("this is a README, not a model\n" * 20)
    with pytest.raises(nvm.NvmConversionError, match="notes.onnx"):
        nvm.load_ir(p)
    r = cli("inspect", p)
    assert r.returncode != 0 and "notes.onnx" in r.stderr


def test_missing_file(tmp_path):
    r = cli("inspect", tmp_path / "nope.onnx")
    assert r.returncode != 0 and "nope.onnx" in r.stderr and "no such file" in r.stderr


def test_unsupported_op_names_node_and_op(tmp_path):
    erf = helper.make_node("Erf", ["Y"], ["Z"], name="my_erf")
    p = tmp_path / "erf.onnx"
    onnx.save(_lstm_then(erf, []), p)
    with pytest.raises(nvm.NvmConversionError) as e:
        nvm.load_ir(p)
    msg = str(e.value)
    assert "my_erf" in msg and "Erf" in msg and "unsupported op" in msg and "erf.onnx" in msg
    r = cli("inspect", p)
    assert r.returncode != 0 and "my_erf" in r.stderr


def test_dynamic_weight_names_node(tmp_path):
    p = tmp_path / "dyn.onnx"
    onnx.save(_lstm_then(None, weight_as_input=True), p)
    with pytest.raises(nvm.NvmConversionError) as e:
        nvm.load_ir(p)
    assert "dynamic weight" in str(e.value) and "lstm" in str(e.value)


def test_unsupported_attribute_value(tmp_path):
    m = _lstm_then(None)
    m.graph.node[0].attribute.append(helper.make_attribute("direction", "sideways"))
    p = tmp_path / "attr.onnx"
    onnx.save(m, p)
    with pytest.raises(nvm.NvmConversionError, match="direction='sideways'"):
        nvm.load_ir(p)


def test_unknown_attribute_is_not_silently_ignored(tmp_path):
    m = _lstm_then(None)
    m.graph.node[0].attribute.append(helper.make_attribute("mystery_mode", 1))
    p = tmp_path / "attr2.onnx"
    onnx.save(m, p)
    with pytest.raises(nvm.NvmConversionError, match="mystery_mode"):
        nvm.load_ir(p)


def test_softmax_over_time_axis_is_rejected(tmp_path):
    m = _lstm_then(helper.make_node("Squeeze", ["Y", "ax"], ["Ys"], name="sq"),
                   [numpy_helper.from_array(np.array([1], np.int64), "ax")])
    m.graph.node.append(helper.make_node("Softmax", ["Ys"], ["Z"], name="sm", axis=0))
    m.graph.output[0].name = "Z"
    p = tmp_path / "sm.onnx"
    onnx.save(m, p)
    with pytest.raises(nvm.NvmConversionError, match="axis=0"):
        nvm.load_ir(p)


def test_wrong_input_shape_at_run_time(tmp_path):
    model = nvm.load_ir(GOOD)
    with pytest.raises(nvm.NvmInputError, match="7 features, model expects 12"):
        model.run({"x": np.zeros((2, 5, 7), np.float32)})
    with pytest.raises(nvm.NvmInputError, match="3-D"):
        model.run({"x": np.zeros((5, 12), np.float32)})
    with pytest.raises(nvm.NvmInputError, match="NaN"):
        model.run_steps(np.full((1, 3, 12), np.nan, np.float32))
    s = model.stream(batch=2)
    with pytest.raises(nvm.NvmInputError, match="frame 0"):
        s.step(np.zeros((3, 12), np.float32))


def test_cli_run_wrong_shape_writes_nothing(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 5, 7), np.float32))
    out = tmp_path / "y.npy"
    r = cli("run", GOOD, "--input", x, "--output", out)
    assert r.returncode != 0
    assert "7 features" in r.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]


def test_cli_run_bad_input_file(tmp_path):
    x = tmp_path / "x.npy"
    x.write_text("garbage")
    r = cli("run", GOOD, "--input", x, "--output", tmp_path / "y.npy")
    assert r.returncode != 0 and "x.npy" in r.stderr and "Traceback" not in r.stderr
