"""Ladder rungs 2 and 5: real exporter output (torch, TorchScript and dynamo exporters) against
onnxruntime and torch itself, at batch sizes and lengths not used at export; streaming parity."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import nvmstream as nvm
from onnx_util import FIXTURES, fixture_files
from onnx_util import ort_run

FILES = fixture_files()
IDS = [f["file"] for f in FILES]
ATOL = 1e-5


def test_fixture_set_is_complete():
    got = {(f["model"], f["exporter"]) for f in FILES}
    models = {f["model"] for f in FILES}
    assert {"lstm1_tm", "lstm1_bf", "lstm2_bf", "bilstm_bf", "gru_bf", "gru2_tm",
            "lstm_last_bf", "lstm_hn_bf", "rnn_tanh_bf"} <= models
    assert all((m, "torchscript") in got for m in models)
    assert sum(1 for m in models if (m, "dynamo") in got) >= 8


def _input(meta, b, t, seed):
    x = np.random.default_rng(seed).normal(0, 1, (b, t, meta["input"]["features"]))
    x = x.astype(np.float32)
    return x if meta["input"]["layout"] == "BTF" else np.ascontiguousarray(np.swapaxes(x, 0, 1))


@pytest.mark.parametrize("meta", FILES, ids=IDS)
def test_matches_onnxruntime_at_unseen_shapes(meta):
    path = FIXTURES / meta["file"]
    model = nvm.load_ir(path)
    ref_model = onnx.load(path)
    assert "".join(model.input.axes) == meta["input"]["layout"]
    worst = 0.0
    for k, (b, t) in enumerate([(1, 1), (1, 5), (4, 11), (2, 30)]):
        x = _input(meta, b, t, seed=k)
        got = model.run({meta["input"]["name"]: x})
        want = ort_run(ref_model, {meta["input"]["name"]: x})
        assert set(got) == set(want) == set(meta["outputs"])
        for name in want:
            assert got[name].shape == want[name].shape
            worst = max(worst, float(np.max(np.abs(got[name] - want[name]))))
    assert worst <= ATOL, worst


@pytest.mark.parametrize("meta", FILES, ids=IDS)
def test_matches_torch(meta):
    model = nvm.load_ir(FIXTURES / meta["file"])
    ref = np.load(FIXTURES / meta["ref"])
    x = ref["x"]  # in the model's own layout, exactly as fed to the torch module
    got = model.run({meta["input"]["name"]: x})
    for name in meta["outputs"]:
        want = ref[name]
        np.testing.assert_allclose(got[name], want, atol=ATOL, rtol=0, err_msg=name)


@pytest.mark.parametrize("meta", [m for m in FILES if m["causal"]],
                         ids=[m["file"] for m in FILES if m["causal"]])
def test_streaming_equals_whole_sequence_exactly(meta):
    model = nvm.load_ir(FIXTURES / meta["file"])
    assert model.streamable
    x = np.random.default_rng(3).normal(0, 1, (3, 13, meta["input"]["features"])).astype(np.float32)
    whole = model.run_steps(x)
    s = model.stream(batch=3)
    steps = {k: [] for k in whole}
    for t in range(x.shape[1]):
        out = s.step(x[:, t])
        for k, v in out.items():
            steps[k].append(v)
    for k in whole:
        np.testing.assert_array_equal(np.stack(steps[k], axis=1), whole[k])
    # and the per-step view agrees with the ONNX outputs of the whole sequence
    onnx_out = model.run({meta["input"]["name"]: x if meta["input"]["layout"] == "BTF"
                          else np.swapaxes(x, 0, 1)})
    for o in model.outputs:
        if o.per_step:
            want = onnx_out[o.name]
            if o.axes[0] == "T":
                want = np.swapaxes(want, 0, 1)
            np.testing.assert_array_equal(whole[o.name], want.reshape(whole[o.name].shape))
        else:
            np.testing.assert_array_equal(whole[o.name][:, -1].reshape(-1),
                                          np.moveaxis(onnx_out[o.name],
                                                      o.axes.index("B"), 0).reshape(-1))


@pytest.mark.parametrize("meta", [m for m in FILES if not m["causal"]],
                         ids=[m["file"] for m in FILES if not m["causal"]])
def test_noncausal_models_refuse_to_stream(meta):
    model = nvm.load_ir(FIXTURES / meta["file"])
    assert not model.streamable
    assert "bidirectional" in model.why_not_streamable()
    with pytest.raises(nvm.NvmInputError, match="cannot stream.*bidirectional"):
        model.stream(batch=1)


def test_dynamo_and_torchscript_give_the_same_ir():
    by_model: dict[str, dict] = {}
    for meta in FILES:
        by_model.setdefault(meta["model"], {})[meta["exporter"]] = meta
    compared = 0
    for name, ex in by_model.items():
        if {"torchscript", "dynamo"} <= set(ex):
            a = nvm.load_ir(FIXTURES / ex["torchscript"]["file"])
            b = nvm.load_ir(FIXTURES / ex["dynamo"]["file"])
            assert [type(l).__name__ for l in a.layers] == [type(l).__name__ for l in b.layers]
            for la, lb in zip(a.layers, b.layers):
                for attr in ("W", "R", "Wb", "Rb", "b"):
                    if getattr(la, attr, None) is not None:
                        np.testing.assert_array_equal(getattr(la, attr), getattr(lb, attr))
            compared += 1
    assert compared >= 8
