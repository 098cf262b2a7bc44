"""The shipped demo models (demos/models/*.onnx, made by demos/train.py with
``nvmstream.runtime.training``) on the project runtime.

No torch needed. For every model in demos/models/manifest.json:

* the file is the one recorded (sha256), converts, is streamable, takes the dataset's frames
  ``x[B, T, F]`` and returns per-step logits ``[B, T, n_classes]``;
* its ONNX metadata holds labels (== the dataset's), task, recipe, input spec, training record,
  the hardware target (profile, bits, training SNR, age), and for keywords the audio front-end
  parameters the data were made with; every recipe of a task has the same epoch budget;
* on the **full** test split, under the ``ideal`` profile, it reaches its recorded accuracy
  minus 0.5 percentage points (the float path is deterministic: only float summation order
  can move a prediction);
* QAT models (and the float ones, which show what QAT buys) on ``int4`` are within 1.5
  percentage points of their recorded int4 accuracy (deterministic integer dataflow; the
  margin covers calibration ranges shifted by float rounding on another BLAS, which can move a
  rint boundary). Noisy profiles (pcm-1d, snr0db) are recorded in the manifest, not tested.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import nvmstream as nvm
from nvmstream.runtime.stats import calibration_set

DEMOS = Path(__file__).resolve().parent.parent / "demos"
MODELS = DEMOS / "models"
MANIFEST = json.loads((MODELS / "manifest.json").read_text())["models"]
IDEAL_MARGIN = 0.005
INT4_MARGIN = 0.015
TASKS = ("japanese_vowels", "basic_motions", "digits", "keywords")
RECIPES = ("float", "qat4", "qat4_noise", "hwa")
PROFILES = {"float": None, "qat4": "int4", "qat4_noise": "snr0db", "hwa": "pcm-1d"}


def _import_datasets():
    spec = importlib.util.spec_from_file_location("nvmstream_demo_datasets", DEMOS / "datasets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


datasets = _import_datasets()


@functools.cache
def load(name: str):
    return datasets.load(name)


@functools.cache
def compiled(name: str):
    entry = MANIFEST[name]
    ds = load(entry["task"])
    return nvm.convert(MODELS / entry["file"], calibration_set(ds.x_train, ds.y_train))


def last_steps(ds) -> np.ndarray:
    if ds.lengths_test is not None:
        return ds.lengths_test - 1
    return np.full(len(ds.y_test), ds.x_test.shape[1] - 1)


def accuracy(name: str, profile: str, overrides=()) -> float:
    ds = load(MANIFEST[name]["task"])
    eng = nvm.Engine(compiled(name), nvm.Device(profile, seed=0, overrides=list(overrides)))
    y = eng.run(ds.x_test)
    pred = y[np.arange(len(ds.y_test)), last_steps(ds)].argmax(axis=1)
    return float(np.mean(pred == ds.y_test))


def test_every_task_ships_four_recipes_with_one_budget():
    assert set(MANIFEST) == {f"{t}_{r}" for t in TASKS for r in RECIPES}
    total = sum((MODELS / e["file"]).stat().st_size for e in MANIFEST.values())
    assert total < 5_000_000
    for name, e in MANIFEST.items():
        assert name == f"{e['task']}_{e['recipe']}" and e["file"] == f"{name}.onnx"
        assert e["hidden"] <= 128
        assert e["command"].startswith(f"nvmstream train --task {e['task']}")
        assert f"--recipe {e['recipe']}" in e["command"]
        assert e["profile"] == PROFILES[e["recipe"]]
    from nvmstream.runtime.training.tasks import task_config
    for name, e in MANIFEST.items():   # quantized recipes trained for the conversion choices
        if e["recipe"] != "float":     # the manifest evaluates them with
            convert = list(task_config(e["task"]).convert_for(e["recipe"]))
            assert e["hardware"]["overrides"][:len(convert)] == convert, name
            assert all(f"--set {o}" in e["command"] for o in convert), name
    for t in TASKS:   # same float phase and fine-tuning epochs for every recipe of a task
        budgets = {(MANIFEST[f"{t}_{r}"]["epochs"], MANIFEST[f"{t}_{r}"]["fine_tune_epochs"])
                   for r in RECIPES}
        assert len(budgets) == 1, (t, budgets)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_model_file_metadata_and_shapes(name):
    entry = MANIFEST[name]
    path = MODELS / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    ds = load(entry["task"])
    model = nvm.load_ir(path)
    assert model.streamable, model.why_not_streamable()
    assert model.input.features == ds.n_features
    md = model.metadata
    assert json.loads(md["labels"]) == list(ds.labels)
    assert md["task"] == entry["task"] and md["recipe"] == entry["recipe"]
    spec = json.loads(md["input"])
    assert spec["layout"] == "BTF" and spec["features"] == ds.n_features and spec["frame"]
    args = json.loads(md["recipe_args"])
    assert args["hidden"] == entry["hidden"] and args["kind"] == entry["kind"]
    assert int(md["seed"]) == entry["seed"]
    assert abs(float(md["test_accuracy_float"]) - entry["torch_test_accuracy"]) < 1e-4
    assert 0 <= float(md["train_accuracy"]) <= 1
    hw = args["hardware"]
    if entry["recipe"] == "float":
        assert "profile" not in md and hw["weight_bits"] == 0
    else:
        assert md["profile"] == entry["profile"] == hw["profile"]
        assert hw["weight_bits"] == 4
    if entry["recipe"] == "qat4_noise":
        assert float(md["train_snr_db"]) == hw["snr_db"] == 0.0    # DNI at the inference SNR
    if entry["recipe"] == "hwa":
        assert hw["device_noise"] and float(md["train_age_s"]) == 86400.0
    if entry["task"] == "keywords":
        assert json.loads(md["frontend"]) == ds.meta["frontend_params"]
    else:
        assert "frontend" not in md
    # per-step logits, whole == streamed on a few real sequences
    x = ds.x_test[:3]
    y = model.run_steps(x)["y"]
    assert y.shape == (3, x.shape[1], ds.n_classes)
    s = model.stream(batch=3)
    ys = np.stack([s.step(x[:, t])["y"] for t in range(x.shape[1])], axis=1)
    np.testing.assert_array_equal(ys, y)
    # the compiled program carries the labels (and front end) from the metadata
    prog = compiled(name)
    assert prog.labels == ds.labels
    if entry["task"] == "keywords":
        assert dict(prog.frontend) == ds.meta["frontend_params"]


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_ideal_accuracy(name):
    recorded = MANIFEST[name]["nvmstream"]["ideal"]
    acc = accuracy(name, "ideal")
    assert acc >= recorded - IDEAL_MARGIN, f"{name}: ideal {acc:.4f} < recorded {recorded:.4f}"
    # ideal is the float model: it matches torch's float evaluation of the exported model
    assert abs(acc - MANIFEST[name]["torch_test_accuracy"]) <= IDEAL_MARGIN


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_int4_accuracy(name):
    recorded = MANIFEST[name]["nvmstream"]["int4"]
    # converted as the manifest evaluates it: with the task's conversion choices (keywords:
    # adc.calibration=mse), which its quantized recipes were trained for
    from nvmstream.runtime.training.tasks import task_config
    entry = MANIFEST[name]
    acc = accuracy(name, "int4", task_config(entry["task"]).convert_for(entry["recipe"]))
    assert abs(acc - recorded) <= INT4_MARGIN, f"{name}: int4 {acc:.4f} vs recorded {recorded:.4f}"
    entry = MANIFEST[name]
    if entry["torch_qat_test_accuracy"] is not None and "adc_range" in entry["hardware"]:
        # training emulates the emulator: its noise-free torch forward with the profile's
        # quantizers and ranges (the same definitions, per-tile ADC ranges) predicts what the
        # engine computes on int4 (same bits and tiles): within 1.5 pt (or two test items),
        # the slack of float32 (torch) vs float64 (engine) DAC rounding flips
        hw = entry["hardware"]
        assert (hw["weight_bits"], hw["dac_bits"], hw["adc_bits"]) == (4, 4, 4)
        n = len(load(entry["task"]).y_test)
        torch_q = entry["torch_qat_test_accuracy"]
        assert abs(acc - torch_q) <= max(0.015, 2.0 / n) + 1e-9, (
            f"{name}: emulator int4 {acc:.4f} vs the training's own emulation {torch_q:.4f}")
