"""The Python API a user trusts: an onnxruntime-style session over the emulated engine (ideal
profile == onnxruntime), compact reprs, per-run reports, ``lens`` in predict."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import nvmstream as nvm
from onnx_util import FIXTURES, fixture_files, ort_run

FILES = fixture_files()


def _x(meta: dict, b: int, t: int, seed: int) -> np.ndarray:
    f = meta["input"]["features"] if "features" in meta["input"] else None
    f = f or nvm.load_ir(FIXTURES / meta["file"]).input.features
    x = np.random.default_rng(seed).normal(size=(b, t, f)).astype(np.float32)
    return np.swapaxes(x, 0, 1).copy() if meta["input"]["layout"] == "TBF" else x


@pytest.mark.parametrize("meta", FILES, ids=[m["file"] for m in FILES])
def test_session_ideal_equals_onnxruntime(meta):
    path = FIXTURES / meta["file"]
    m = nvm.load_ir(path)
    cal = np.random.default_rng(9).normal(size=(4, 8, m.input.features)).astype(np.float32)
    sess = nvm.InferenceSession(nvm.convert(path, calibration=cal), "ideal")
    inputs = sess.get_inputs()
    assert inputs[0].name == meta["input"]["name"]
    assert [o.name for o in sess.get_outputs()] == [o.name for o in m.outputs]
    x = _x(meta, 3, 7, seed=1)
    want = ort_run(onnx.load(path), {inputs[0].name: x})
    got = sess.run(None, {inputs[0].name: x})
    for o, g in zip(sess.get_outputs(), got):
        w = want[o.name]
        assert g.shape == w.shape, (o.name, g.shape, w.shape)
        scale = max(1.0, float(np.max(np.abs(w))))
        assert float(np.max(np.abs(g - w))) <= 1e-5 * scale
        assert len(o.shape) == w.ndim
    # one named output, in the order asked
    last = sess.get_outputs()[-1].name
    (only,) = sess.run([last], {inputs[0].name: x})
    np.testing.assert_array_equal(only, got[-1])


def test_session_report_is_per_run_and_errors_name_the_input():
    path = FIXTURES / "lstm1_bf.ts.onnx"
    x = np.random.default_rng(0).normal(size=(2, 6, 12)).astype(np.float32)
    sess = nvm.InferenceSession(path, "int4", calibration=x)
    assert "profile 'int4'" in repr(sess) and len(repr(sess)) < 200
    sess.run(None, {"x": x})
    r1 = sess.report()
    sess.run(None, {"x": x[:1, :3]})
    r2 = sess.report()
    assert r1.analog.inferences == 2 and r2.analog.inferences == 1     # not accumulated
    with pytest.raises(nvm.NvmInputError, match="'x' missing"):
        sess.run(None, {"X": x})
    with pytest.raises(nvm.NvmInputError, match="unknown output"):
        sess.run(["nope"], {"x": x})


def test_compact_reprs_and_docstrings():
    path = FIXTURES / "lstm1_bf.ts.onnx"
    x = np.random.default_rng(0).normal(size=(2, 6, 12)).astype(np.float32)
    prog = nvm.convert(path, calibration=x)
    r = repr(prog)
    assert len(r) < 300 and "4-bit" in r and "lstm1_bf" in r
    eng = nvm.Engine(prog, nvm.Device("int4"))
    assert len(repr(eng)) < 300 and "int4" in repr(eng)
    for obj in (nvm.Engine, nvm.Engine.run_all, nvm.Engine.predict, nvm.Engine.stream,
                nvm.InferenceSession, nvm.InferenceSession.run, nvm.CompiledModel):
        assert obj.__doc__ and len(obj.__doc__) > 40, obj


def test_predict_takes_lens():
    """Padding after a sequence's true length never changes its prediction up to that length,
    and the energy ledger counts only the true steps."""
    path = FIXTURES / "lstm1_bf.ts.onnx"
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 8, 12)).astype(np.float32)
    lens = np.array([3, 8, 5])
    eng = nvm.Engine(nvm.convert(path, calibration=x), nvm.Device("int4"))
    p = eng.predict(x, lens=lens)
    for b, n in enumerate(lens):
        q = eng.predict(x[b:b + 1, :n])
        np.testing.assert_array_equal(p[b, :n], q[0])
    eng.reset_ledger()
    eng.predict(x, lens=lens)
    rep = eng.report().analog
    assert rep.inferences == 3
    assert abs(rep.steps_per_inference - lens.mean()) < 1e-9
