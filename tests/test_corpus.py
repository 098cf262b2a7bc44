"""The converter corpus: recurrent models made by other people's tools (Keras 2/3 through
tf2onnx, torch's TorchScript and dynamo exporters, silero-vad's shipped file), committed under
tests/corpus/ with the scripts that made them and a manifest of what converts.

For every model the manifest says converts: the float IR and the engine (ideal profile) equal
onnxruntime to 1e-5 of the output scale at several batch sizes and lengths, and for causal
models streaming step by step equals the whole run bit for bit. For every model it says is rejected: conversion fails with
that exact reason (naming the node), and a model onnxruntime itself rejects is rejected too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

CORPUS = Path(__file__).resolve().parent / "corpus"
# The corpus scripts import each other as top-level modules; put the folder on sys.path only
# while importing them (left there, its `torch/` and `keras*/` model folders would shadow the
# real packages as namespace packages, e.g. for test_training_torch.py in the same worker).
sys.path.insert(0, str(CORPUS))
try:
    import check_corpus as cc  # noqa: E402
    import corpus_manifest as cm  # noqa: E402
finally:   # check_corpus inserts the folder itself too: remove every copy
    while str(CORPUS) in sys.path:
        sys.path.remove(str(CORPUS))

from nvmstream.converters.errors import NvmConversionError  # noqa: E402
from nvmstream.converters.onnx_import import load_ir  # noqa: E402

ENTRIES = [e for e in cm.load() if "export_error" not in e]
CONVERTS = [e for e in ENTRIES if e["status"] == "converts"]
REJECTED = [e for e in ENTRIES if e["status"].startswith("rejected")]


def _id(e):
    return e["file"]


def test_manifest_covers_every_file():
    files = {p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*.onnx")}
    listed = {e["file"] for e in ENTRIES}
    assert files == listed
    assert all("status" in e for e in ENTRIES)


def test_corpus_has_every_source():
    sources = {e["file"].split("/")[0] for e in CONVERTS}
    assert {"torch", "keras3"} <= sources


@pytest.mark.parametrize("entry", CONVERTS, ids=_id)
def test_float_ir_equals_onnxruntime(entry):
    model = cc.load(entry)
    sess = ort.InferenceSession(str(CORPUS / entry["file"]), providers=["CPUExecutionProvider"])
    err = cc.compare(entry, model, sess)
    assert err <= cc.TOL, f"max relative error {err:.2e}"


@pytest.mark.parametrize("entry", CONVERTS, ids=_id)
def test_engine_equals_onnxruntime_and_digital_layers_are_listed(entry):
    """Every converting model also runs on the engine (ideal profile, through
    nvm.InferenceSession, ONNX shapes) within 1e-5 of onnxruntime, and the manifest lists
    exactly the layers it runs in the digital periphery."""
    model = cc.load(entry)
    sess = ort.InferenceSession(str(CORPUS / entry["file"]), providers=["CPUExecutionProvider"])
    err = cc.engine_compare(entry, model, sess)
    assert err <= cc.TOL, f"max relative error {err:.2e}"
    assert cc.digital_layers(model) == entry["digital"]


@pytest.mark.parametrize("entry", [e for e in CONVERTS if e["causal"]], ids=_id)
def test_streaming_equals_whole_run(entry):
    model = cc.load(entry)
    assert model.streamable, model.why_not_streamable()
    assert cc.stream_matches(entry, model)


@pytest.mark.parametrize("entry", [e for e in CONVERTS if not e["causal"]], ids=_id)
def test_non_causal_models_refuse_to_stream(entry):
    model = cc.load(entry)
    assert not model.streamable and model.why_not_streamable()


@pytest.mark.parametrize("entry", REJECTED, ids=_id)
def test_rejected_with_the_recorded_reason(entry):
    with pytest.raises(NvmConversionError) as ei:
        load_ir(CORPUS / entry["file"])
    reason = entry["status"][len("rejected: "):]
    assert reason in str(ei.value)
    assert "node '" in str(ei.value) or "no LSTM/GRU/RNN node" in str(ei.value)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if "ort_error" in e], ids=_id)
def test_models_onnxruntime_rejects_are_rejected(entry):
    with pytest.raises(Exception):
        sess = ort.InferenceSession(str(CORPUS / entry["file"]),
                                    providers=["CPUExecutionProvider"])
        sess.run(None, cm.feeds(entry, 2, 9, seed=1))
    with pytest.raises(NvmConversionError, match="onnxruntime rejects"):
        load_ir(CORPUS / entry["file"])


def test_external_data_is_loaded(tmp_path):
    entry = next(e for e in CONVERTS if e.get("external_data"))
    model = cc.load(entry)
    assert model.recurrent_layers[0].hidden_size == 32
    # without its data file the model is refused with a message naming the missing file
    src = CORPUS / entry["file"]
    (tmp_path / src.name).write_bytes(src.read_bytes())
    with pytest.raises(NvmConversionError, match=entry["external_data"].replace(".", r"\.")):
        load_ir(tmp_path / src.name)


def test_merged_batch_time_output_formats_like_onnxruntime():
    """The CRNN head's view(T*b, h) -> Linear -> view(T, b, -1): a merged axis inside, the
    ONNX shape outside."""
    entry = next(e for e in CONVERTS if e["model"] == "crnn_head")
    model = cc.load(entry)
    feeds = cm.feeds(entry, 3, 5, seed=3)
    got = model.run(feeds)["y"]
    assert got.shape == (5, 3, 5)
    sess = ort.InferenceSession(str(CORPUS / entry["file"]), providers=["CPUExecutionProvider"])
    want = sess.run(["y"], feeds)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


ENGINE_READY = [e for e in CONVERTS if e["file"].endswith(("opset18.onnx", ".dynamo.onnx",
                                                          ".ts.onnx"))]


@pytest.mark.parametrize("entry", ENGINE_READY, ids=_id)
def test_ideal_engine_equals_float_ir(entry):
    """Every corpus model the engine can run (no float-only layer) runs on the ideal profile
    with the float IR's results; a float-only layer is refused by name."""
    import nvmstream as nvm
    from nvmstream.converters import ir
    model = cc.load(entry)
    if not all(isinstance(l, ir.ENGINE_LAYERS) for l in model.layers):
        with pytest.raises(NvmConversionError, match="runs in the float IR only"):
            nvm.convert(model)
        return
    prog = nvm.convert(model)
    eng = nvm.Engine(prog, nvm.Device("ideal"))
    feeds = cm.feeds(entry, 2, cm.fixed_time(entry) or 6, seed=11)
    x = feeds.pop(entry["inputs"][0]["name"])
    if model.input.axes[:2] == ("T", "B"):
        x = np.swapaxes(x, 0, 1)
    want = model.run_steps(x, **feeds)
    got = eng.run_all(x, **feeds)
    for k in want:
        assert got[k].shape == want[k].shape
        assert np.max(np.abs(got[k] - want[k])) <= 1e-5 * max(np.abs(want[k]).max(), 1.0)
