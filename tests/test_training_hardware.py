"""Training's view of the hardware (runtime/training/hardware.py, tasks.py): no torch needed.

* the calibration rule training uses equals the emulator's (plan segments of a shipped model);
* device-noise draws follow the profile's own formulas (programming-noise variance, drift at the
  chosen age, read-noise variance), are reproducible per draw and differ between draws;
* recipes resolve their profiles, SNRs and ages as documented.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import nvmstream as nvm
from nvmstream.devices import Device
from nvmstream.runtime.stats import calibration_set
from nvmstream.runtime.training.hardware import (HardwareSpec, ProgrammedWeightSampler,
                                                 WeightDraw,
                                                 calibrate_matrix, parse_age_s)
from nvmstream.runtime.training.tasks import load_data, make_recipe

DEMOS = Path(__file__).resolve().parent.parent / "demos"


@pytest.mark.parametrize("profile", ["int4", "snr0db"])
def test_calibration_rule_equals_the_emulators(profile):
    """DAC step, ADC steps per (tile, column) and VMM-noise sigma of the input matrix of a
    shipped model: training's calibrate_matrix == the plan the Engine builds."""
    data = load_data(DEMOS / "data" / "japanese_vowels.npz")
    x_cal = calibration_set(data.train.x, data.train.y)
    prog = nvm.convert(DEMOS / "models" / "japanese_vowels_qat4.onnx", x_cal)
    eng = nvm.Engine(prog, nvm.Device(profile, seed=0))
    seg = {s.key: s for s in eng.plan.segments}["layer0/d0/x"]
    layer = prog.model.recurrent_layers[0]
    spec = HardwareSpec.from_profile(profile, snr_db=None)
    cal = calibrate_matrix(x_cal.reshape(-1, x_cal.shape[2]), seg.codes, layer.W[0],
                           spec.dac_bits, spec.adc_bits, spec.tile_rows)
    assert cal.dac_step == pytest.approx(seg.dac_step, rel=1e-12)
    np.testing.assert_allclose(cal.adc_steps, seg.adc_steps, rtol=1e-12)
    assert cal.vmm_sigma(spec.snr_db) == pytest.approx(seg.vmm_sigma, rel=1e-9)
    assert (cal.vmm_sigma(spec.snr_db) > 0) == (profile == "snr0db")


def test_calibration_tiles_split_rows():
    rng = np.random.default_rng(0)
    V = rng.standard_normal((50, 10))
    Q = rng.integers(-7, 8, (3, 10))
    cal = calibrate_matrix(V, Q, Q * 0.1, dac_bits=4, adc_bits=4, tile_rows=4,
                           adc_range="per_column")
    assert cal.adc_steps.shape == (3, 3)              # ceil(10 / 4) row tiles
    U = np.clip(np.rint(V / cal.dac_step), -7, 7)
    assert np.allclose(cal.adc_steps[2], np.abs(U[:, 8:] @ Q[:, 8:].T).max(0) / 7)
    assert cal.dac_step == pytest.approx(np.abs(V).max() / 7)
    # per_tile (the default): columns 0-1 share a tile (tile_cols = 2), column 2 has its own
    cal = calibrate_matrix(V, Q, Q * 0.1, dac_bits=4, adc_bits=4, tile_rows=4, tile_cols=2)
    col = np.abs(U[:, 8:] @ Q[:, 8:].T).max(0) / 7
    np.testing.assert_allclose(cal.adc_steps[2], [col[:2].max(), col[:2].max(), col[2]])


def _codes(rng, shape=(64, 64)):
    return rng.integers(-7, 8, shape).astype(np.int8)


def test_programming_noise_draws_follow_the_profile_formula():
    """delta = w_eff - codes ~ N(0, (sigma(G+)^2 + sigma(G-)^2) (qmax / (gmax - gmin))^2);
    constant sigma 0.5 uS, gmin 5 uS (no clipping at 0), 3 draws x 4096 cells."""
    sets = ("mapping.gmin_uS=5.0", "mapping.gmax_uS=25.0", "programming.model=constant",
            "programming.sigma_uS=0.5")
    spec = HardwareSpec.from_profile("int4", sets, device_noise=True)
    sampler = ProgrammedWeightSampler(spec, seed=3)
    codes = _codes(np.random.default_rng(1))
    d = np.concatenate([sampler.draw({"W": codes}, k)["W"].delta.ravel() for k in range(3)])
    want_var = 2 * 0.5 ** 2 * (7 / 20.0) ** 2
    # sd of a sample variance ~ var sqrt(2/n) = 1.3%: 6% is > 4 sd
    assert np.var(d) == pytest.approx(want_var, rel=0.06)
    assert abs(np.mean(d)) < 4 * math.sqrt(want_var / d.size)


def test_drift_draws_use_the_chosen_age():
    """Constant drift nu = 0.05 (sd 0), no compensation: delta = codes ((t/t0)^-nu - 1) exactly
    at the age given to the spec, whatever the profile's own age."""
    sets = ("drift.model=constant", "drift.nu_mean=0.05", "drift.nu_sd=0.0",
            "drift.compensation=none")
    codes = _codes(np.random.default_rng(2), (8, 16))
    for age in (3600.0, 86400.0 * 365.25):
        spec = HardwareSpec.from_profile("int4", sets, device_noise=True, age_s=age)
        d = ProgrammedWeightSampler(spec).draw({"W": codes}, 0)["W"].delta
        f = (age / 20.0) ** -0.05
        np.testing.assert_allclose(d, codes * (f - 1), rtol=1e-5, atol=1e-5)


def test_draws_are_chips_of_the_profile_and_reproducible():
    spec = HardwareSpec.from_profile("pcm-1d", device_noise=True, adc_noise=True)
    s = ProgrammedWeightSampler(spec, seed=0)
    codes = {"W": _codes(np.random.default_rng(3), (16, 12)), "R": _codes(
        np.random.default_rng(4), (16, 4))}
    a, b, c = s.draw(codes, 0), s.draw(codes, 0), s.draw(codes, 1)
    assert np.array_equal(a["W"].delta, b["W"].delta)
    assert not np.array_equal(a["W"].delta, c["W"].delta)
    pm = Device("pcm-1d", seed=s.device_seed(1)).program(codes["R"], "R")
    # pcm compensates digitally after the ADC (drift.compensation = global): training sees
    # the drifted weights before the ADC, and the engine's factor measured through the ADC
    assert not pm.compensation_folded and pm.drift_compensation > 1.0
    np.testing.assert_array_equal(c["R"].delta, (pm.w_eff.astype(np.float64) - codes["R"])
                                  .astype(np.float32))
    np.testing.assert_array_equal(c["R"].read_var, pm.read_var.astype(np.float32))
    assert c["R"].comp_mode == "global"
    np.testing.assert_array_equal(c["R"].w_t0, pm.w_t0)
    # the factor is DriftCompensation's own rule on these weights and ADC steps: with a
    # noise-free, unquantized readout it is mean|w_t0| / mean|w_age| exactly
    f = c["R"].compensation(None, 0, 0.0, 256, 7.0)
    c_free = WeightDraw(c["R"].delta, None, "global", c["R"].w_t0, None, c["R"].w_age)
    f_free = c_free.compensation(None, 0, 0.0, 256, 7.0)
    np.testing.assert_allclose(f_free, np.abs(pm.w_t0.astype(np.float64)).mean()
                               / np.abs(pm.w_eff.astype(np.float64)).mean(),
                               rtol=1e-12)
    assert f.shape == (16,) and np.all(np.isfinite(f))
    # drift.reference = eye_exact (the profile's field reaches the draw): t0 read exactly
    # from the target codes, here mean|codes| / mean|w_age| without an ADC
    assert c["R"].comp_reference == "eye" and np.array_equal(c["R"].codes, codes["R"])
    exact = WeightDraw(c["R"].delta, None, "global", c["R"].w_t0, None, c["R"].w_age,
                       comp_reference="eye_exact", codes=c["R"].codes)
    np.testing.assert_allclose(exact.compensation(None, 0, 0.0, 256, 7.0),
                               np.abs(codes["R"]).mean()
                               / np.abs(pm.w_eff.astype(np.float64)).mean(), rtol=1e-12)
    spec_x = HardwareSpec.from_profile("pcm-1d", device_noise=True, adc_noise=True,
                                       overrides=["drift.reference=eye_exact"])
    assert ProgrammedWeightSampler(spec_x, seed=0).draw(codes, 1)["R"].comp_reference == \
        "eye_exact"
    steps = np.full((1, 16), 5.0)        # a coarse ADC: the measured factor moves away
    assert not np.allclose(c["R"].compensation(steps, 4, 0.0, 256, 7.0), f_free)
    assert np.all(c["R"].read_var[codes["R"] != 0] > 0)   # pcm_1f read noise


def test_parse_age():
    assert parse_age_s("1d") == 86400.0
    assert parse_age_s("1h") == 3600.0
    assert parse_age_s("2y") == pytest.approx(2 * 365.25 * 86400)
    assert parse_age_s("90") == 90.0
    with pytest.raises(ValueError, match="unit"):
        parse_age_s("1 fortnight")
    with pytest.raises(ValueError):
        parse_age_s(float("nan"))


def test_recipes_resolve_profiles():
    assert make_recipe("float").spec.quantized is False
    q = make_recipe("qat4")
    assert (q.spec.profile, q.spec.weight_bits, q.spec.noisy) == ("int4", 4, False)
    assert make_recipe("qat4_noise").spec.snr_db == 10.0              # int4 has no VMM noise
    assert make_recipe("qat4_noise", "snr0db").spec.snr_db == 0.0     # DNI at the inference SNR
    assert make_recipe("qat4_noise", "snr0db", snr_db=5).spec.snr_db == 5.0
    h = make_recipe("hwa", age_s=3600.0)
    assert h.spec.profile == "pcm-1d" and h.spec.device_noise
    assert h.spec.device_profile().drift.age_s == 3600.0
    with pytest.raises(ValueError, match="recipe float"):
        make_recipe("float", "int4")
    with pytest.raises(ValueError, match="unknown recipe"):
        make_recipe("qat8")


def test_extra_training_files_extend_training_but_not_calibration(tmp_path):
    rng = np.random.default_rng(0)

    def arrays(n):
        return (rng.standard_normal((n, 4, 3)).astype(np.float32), np.arange(n) % 2)
    x, y = arrays(10)
    xt, yt = arrays(6)
    xe, ye = arrays(8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    np.savez(tmp_path / "e.npz", x_train=xe, y_train=ye)
    plain = load_data(tmp_path / "d.npz")
    assert plain.cal is plain.train
    d = load_data(tmp_path / "d.npz", extra_train=[tmp_path / "e.npz"])
    assert np.array_equal(d.train.x, np.concatenate([x, xe])) and len(d.train.y) == 18
    # calibration is drawn from the file's own x_train: what `nvmstream run/sweep` will use
    assert np.array_equal(d.cal.x, x) and np.array_equal(d.cal.y, y)
    np.savez(tmp_path / "bad.npz", x_train=xe[:, :3], y_train=ye)
    with pytest.raises(ValueError, match="bad.npz"):
        load_data(tmp_path / "d.npz", extra_train=[tmp_path / "bad.npz"])


def test_manifest_command_carries_conversion_choices_and_a_non_preset_freeze_frac():
    """`nvmstream train`'s reproduce command: the profile overrides a recipe trained for
    (keywords qat4: the task's adc.calibration=mse) and --freeze-frac only where it differs
    from the task preset (the previous keywords qat4_noise/hwa were made with 0.3)."""
    from nvmstream.runtime.train_cli import command_line
    from nvmstream.runtime.training.tasks import task_config
    tc = task_config("keywords")
    assert tc.convert_for("qat4") == ("adc.calibration=mse",)
    assert tc.convert_for("hwa") == () and tc.convert_for("qat4_noise") == ()
    q = make_recipe("qat4", "int4", overrides=tc.convert_for("qat4"))
    assert q.spec.adc_calibration == "mse"
    c = command_line("keywords", q, tc, "k.onnx")
    assert "--set adc.calibration=mse" in c and "--freeze-frac" not in c
    old = command_line("keywords", make_recipe("hwa"), task_config("keywords", freeze_frac=0.3),
                       "k.onnx")
    assert "--freeze-frac 0.3 " in old and "--set" not in old
    assert "--freeze-frac" not in command_line("keywords", make_recipe("float"),
                                               task_config("keywords", freeze_frac=0.3), "f")
