"""Training with torch (the `train` extra), end to end on a tiny synthetic task.

The torch-free parts (noise draws, calibration rule, recipes) are tested in
test_training_hardware.py; here: a QAT model's torch forward (frozen, emulator-calibrated
ranges) equals the emulator's integer dataflow on the same profile, including row tiles; the
hwa recipe draws chips while training; `nvmstream train` writes a standard ONNX file with the
hardware target in its metadata.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import onnx  # noqa: E402

import nvmstream as nvm  # noqa: E402
from nvmstream.runtime.stats import calibration_set  # noqa: E402
from nvmstream.runtime.training import loop, qat  # noqa: E402
from nvmstream.runtime.training.tasks import (Split, TrainData, make_recipe,  # noqa: E402
                                              task_config)


def _toy(n=90, t=6, f=5, seed=0) -> TrainData:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    centres = rng.standard_normal((3, f)) * 1.5
    x = (centres[y][:, None, :] + rng.standard_normal((n, t, f))).astype(np.float32)
    last = np.full(n, t - 1)
    idx = rng.permutation(n)
    tr, te = idx[: n * 2 // 3], idx[n * 2 // 3:]
    return TrainData("toy", Split(x[tr], y[tr], last[tr]), Split(x[te], y[te], last[te]),
                     ("a", "b", "c"), False)


def _save_npz(path, d: TrainData):
    np.savez(path, x_train=d.train.x, y_train=d.train.y, x_test=d.test.x, y_test=d.test.y,
             labels=np.array(d.labels))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_qat_forward_equals_the_emulator(kind, tmp_path):
    data = _toy()
    sets = ("tile.rows=2", "tile.cols=4")    # several row and column tiles: per-tile ADCs
    tc = task_config("toy", kind=kind, hidden=6, epochs=2, qat_epochs=2, batch=16)
    recipe = make_recipe("qat4", "int4", overrides=sets)
    assert (recipe.spec.tile_rows, recipe.spec.tile_cols, recipe.spec.adc_range) == (2, 4, "per_tile")
    base = loop.train_float(data, tc, 0)
    model = loop.fine_tune(data, tc, recipe, base)
    out = tmp_path / "m.onnx"
    loop.export_onnx(model.export_module(), out, data.n_features, {"task": "toy"})
    prog = nvm.convert(out, calibration_set(data.train.x, data.train.y))
    eng = nvm.Engine(prog, nvm.Device("int4", seed=0, overrides=list(sets)))
    got = eng.run(data.test.x)
    model.eval()
    with torch.no_grad():
        ref = model(torch.as_tensor(data.test.x)).numpy()
    scale = np.abs(ref).max()
    err = np.abs(got - ref) / scale
    # identical integer dataflow; a rare DAC rounding flip from float32 vs float64 gate maths
    # may move a few outputs by one LSB: the median is float rounding, predictions agree
    assert np.median(err) < 1e-5
    assert np.mean(got.argmax(-1) == ref.argmax(-1)) >= 0.97


def test_hwa_draws_a_chip_per_batch_and_exports(tmp_path):
    data = _toy()
    tc = task_config("toy", hidden=6, epochs=1, qat_epochs=1, batch=30)
    recipe = make_recipe("hwa", "pcm-1d", age_s=3600.0)
    base = loop.train_float(data, tc, 0)
    seen = []
    orig = qat.resample_device

    def spy(model, sampler, draw):
        orig(model, sampler, draw)
        seen.append((draw, model.rnn.W.delta.clone()))
    qat.resample_device = spy
    try:
        model = loop.fine_tune(data, tc, recipe, base)
    finally:
        qat.resample_device = orig
    assert [d for d, _ in seen] == [0, 1]                # 60 sequences / batch 30
    assert not torch.equal(seen[0][1], seen[1][1])       # a different chip each batch
    assert model.rnn.W.delta is None                     # cleared after training
    entry = loop.train_model(data, tc, recipe, tmp_path / "h.onnx", do_eval=False)
    meta = {p.key: p.value for p in onnx.load(tmp_path / "h.onnx").metadata_props}
    hw = json.loads(meta["recipe_args"])["hardware"]
    assert meta["recipe"] == "hwa" and meta["profile"] == "pcm-1d"
    assert hw["device_noise"] and hw["age_s"] == 3600.0 and meta["train_age_s"] == "3600.0"
    assert entry["hardware"]["profile"] == "pcm-1d"


def test_cli_train(tmp_path):
    data = _toy()
    _save_npz(tmp_path / "toy.npz", data)
    out = tmp_path / "toy.onnx"
    r = subprocess.run([sys.executable, "-m", "nvmstream.runtime.cli", "train", "--data",
                        str(tmp_path / "toy.npz"), "--recipe", "qat4_noise", "--profile",
                        "snr0db", "--epochs", "1", "--fine-tune-epochs", "1", "--hidden", "4",
                        "--out", str(out), "--json", str(tmp_path / "rec.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "rec.json").read_text())
    assert rec["hardware"]["snr_db"] == 0.0 and "snr0db" in rec["nvmstream"]
    assert rec["command"].startswith("nvmstream train --task toy --data")
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["train_snr_db"] == "0.0" and json.loads(meta["labels"]) == ["a", "b", "c"]
    # stderr redirected: one plain progress line per epoch, no carriage returns
    lines = [ln for ln in r.stderr.splitlines() if " epoch " in ln]
    assert [ln.split(":")[0] for ln in lines] == ["toy/float epoch 1/1", "toy/qat4_noise epoch 1/1"]
    assert all("train_acc" in ln for ln in lines) and "\r" not in r.stderr
    bad = subprocess.run([sys.executable, "-m", "nvmstream.runtime.cli", "train", "--data",
                          str(tmp_path / "none.npz"), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 3 and "none.npz" in bad.stderr


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_train_progress_is_a_bar_on_a_terminal_and_lines_otherwise():
    from nvmstream.runtime.train_cli import EpochProgress
    data = _toy()
    tc = task_config("toy", hidden=4, epochs=2, qat_epochs=1, batch=20)
    tty, plain = _Tty(), io.StringIO()
    loop.train_float(data, tc, 0, progress=EpochProgress(tty))
    loop.train_float(data, tc, 0, progress=EpochProgress(plain))
    assert "\r" in tty.getvalue() and "3/3" in tty.getvalue()     # 60 sequences / batch 20
    assert "toy/float epoch 2/2" in tty.getvalue()
    lines = plain.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("toy/float epoch 2/2: 3/3 steps")
    assert "train_acc" in lines[1]
    quiet = io.StringIO()
    loop.train_float(data, tc, 0, progress=EpochProgress(quiet, enabled=False))
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("adc_range", ["per_tile", "per_column"])
def test_running_adc_ranges_are_grouped_like_the_emulators(adc_range):
    # before the ranges freeze, training quantizes with running ranges: they must share one
    # range per tile of columns when the emulator does (adc.range=per_tile), else training
    # learns a finer ADC than the chip has
    data = _toy()
    sets = ("tile.cols=4", f"adc.range={adc_range}")
    recipe = make_recipe("qat4", "int4", overrides=sets)
    tc = task_config("toy", kind="LSTM", hidden=3, epochs=1, qat_epochs=1, batch=16)
    model = loop.train_float(data, tc, 0).with_spec(recipe.spec)
    model.train()
    model(torch.as_tensor(data.train.x[:16]))
    qat.commit_stats(model)
    r = model.rnn.W.adc_range[0]            # 12 gate columns in 3 tiles of 4
    groups = r.reshape(3, 4)
    if adc_range == "per_tile":
        assert torch.all(groups == groups.max(dim=1, keepdim=True).values)
    else:
        assert not torch.all(groups == groups.max(dim=1, keepdim=True).values)


def test_quantizer_forward_is_the_codes_and_its_gradient_straight_through():
    # the one-node quantizer: forward = the emulator's codes x out_scale exactly; gradient to
    # the input out_scale / scale inside the range [-qmax, qmax] and 0 outside
    v = torch.tensor([0.3, 1.2, -2.6, 9.0, -4.0], requires_grad=True)
    a = torch.tensor(0.5)
    c = np.clip(np.rint(v.detach().numpy() / 0.5), -7, 7)
    y = qat._ste_codes(v, a, 7, c, a)
    assert torch.equal(y.detach(), torch.from_numpy(c.astype(np.float32)) * 0.5)
    y.sum().backward()
    inside = np.abs(v.detach().numpy() / 0.5) <= 7
    np.testing.assert_array_equal(v.grad.numpy(), inside.astype(np.float32))
    v.grad = None
    qat._ste_codes(v, a, 7, c).sum().backward()       # no out_scale: gradient 1 / scale
    np.testing.assert_array_equal(v.grad.numpy(), inside.astype(np.float32) * 2.0)


def _hwa_chip(kind: str, comp: float, t: int = 100, seed: int = 0):
    """A pcm-1d hwa model on a drawn chip whose recurrent matrix carries the digital drift
    compensation factor ``comp`` (the engine measured 102-201 on the shipped basic_motions_hwa
    R matrix, chips 0-3), a batch of ``t``-step sequences and its loss."""
    torch.manual_seed(seed)
    data = _toy(t=t, seed=seed)
    recipe = make_recipe("hwa", "pcm-1d")
    model = qat.SeqClassifier(kind, data.n_features, 16, data.n_classes, recipe.spec)
    with torch.no_grad():     # strong recurrent weights, as trained models have
        model.rnn.R.weight.mul_(4.0)
    qat.calibrate_like_emulator(model, calibration_set(data.train.x, data.train.y))
    qat.resample_device(model, qat.ProgrammedWeightSampler(recipe.spec, seed=0), 0)
    assert model.rnn.R.draw.comp_mode == "global"        # pcm: digital, after the ADC
    model.rnn.R.comp = torch.full((model.rnn.R.n_out,), float(comp))
    model.train()
    x = torch.as_tensor(data.train.x[:16])
    logits = model(x)
    loss = loop._loss(logits, torch.as_tensor(data.train.y[:16]),
                      torch.as_tensor(data.train.last[:16]), 0.0)
    return model, loss


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_hwa_gradient_is_finite_on_a_chip_with_a_large_compensation_factor(kind):
    # before the per-step clip of dL/dh_t the backward grew by ~the factor per step and
    # overflowed float32 (inf, then nan in the matmul's backward): the batch was skipped
    model, loss = _hwa_chip(kind, 300.0)
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    assert float(model.rnn.R.weight.grad.abs().max()) > 0


def test_hwa_gradient_clip_leaves_a_sane_chip_alone(monkeypatch):
    # factor 1.5 (the drift itself): the bound is never reached, the gradient is unchanged
    grads = []
    for clip in (qat.HIDDEN_GRAD_CLIP, float("inf")):
        monkeypatch.setattr(qat, "HIDDEN_GRAD_CLIP", clip)
        model, loss = _hwa_chip("LSTM", 1.5, t=20)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.equal(a, b)
