"""`nvmstream inspect` and `nvmstream run` on every fixture, as real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import nvmstream as nvm
from onnx_util import FIXTURES, fixture_files

FILES = fixture_files()


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nvmstream.runtime.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("meta", FILES, ids=[m["file"] for m in FILES])
def test_inspect_describes_every_fixture(meta):
    from nvmstream.converters.inspect import describe, format_text
    model = nvm.load_ir(FIXTURES / meta["file"])
    info = describe(model)
    text = format_text(info)
    assert info["streamable"] == meta["causal"]
    assert ("streamable: yes" in text) == meta["causal"]
    rec = [l for l in info["layers"] if l["type"] == "Recurrent"]
    assert rec and all(l["tiles"] >= 2 for l in rec)
    # MACs per step: sum over layers of gates*H*(I+H)*D + dense in*out
    want = 0
    for l in model.layers:
        if isinstance(l, nvm.converters.ir.Recurrent):
            want += l.num_directions * l.gates * l.hidden_size * (l.input_size + l.hidden_size)
        elif isinstance(l, nvm.converters.ir.Dense):
            want += l.W.shape[0] * l.W.shape[1]
    assert info["macs_per_step"] == want


def test_inspect_cli_text_and_json():
    r = cli("inspect", FIXTURES / "bilstm_bf.ts.onnx")
    assert r.returncode == 0, r.stderr
    assert "bidirectional" in r.stdout and "streamable: no" in r.stdout
    assert "MACs per time step: " in r.stdout
    r = cli("inspect", FIXTURES / "lstm2_bf.dynamo.onnx", "--json")
    info = json.loads(r.stdout)
    # 2-layer LSTM 12->16->16: 4*16*(12+16) + 4*16*(16+16) MACs + head 16*8 + 8*4
    assert info["macs_per_step"] == 4 * 16 * 28 + 4 * 16 * 32 + 16 * 8 + 8 * 4
    assert info["tiles"] == 2 + 2 + 1 + 1 and info["streamable"]


def test_run_cli_per_step_outputs(tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 8, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = cli("run", FIXTURES / "lstm1_tm.dynamo.onnx", "--input", tmp_path / "x.npy",
            "--output", tmp_path / "y.npy")
    assert r.returncode == 0, r.stderr
    y = np.load(tmp_path / "y.npy")
    model = nvm.load_ir(FIXTURES / "lstm1_tm.dynamo.onnx")
    want = np.swapaxes(model.run({"x": np.swapaxes(x, 0, 1)})["y"], 0, 1)
    assert y.shape == (3, 8, 4)
    np.testing.assert_array_equal(y, want)
    # [time, features] input gives [time, outputs]; the last-step classifier gives per-step
    # predictions whose last step equals the ONNX output
    np.save(tmp_path / "x2.npy", x[0])
    r = cli("run", FIXTURES / "lstm_last_bf.ts.onnx", "-i", tmp_path / "x2.npy",
            "-o", tmp_path / "y2.npz")
    assert r.returncode == 0, r.stderr
    y2 = np.load(tmp_path / "y2.npz")["y"]
    assert y2.shape == (8, 4)
    last = nvm.load_ir(FIXTURES / "lstm_last_bf.ts.onnx").run({"x": x[:1]})["y"]
    np.testing.assert_array_equal(y2[-1], last[0])


def test_demo_script_runs(repo_root=None):
    from onnx_util import REPO
    r = subprocess.run([sys.executable, str(REPO / "demos" / "demo.py")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "bit for bit): True" in r.stdout


def test_convert_then_run_under_profiles(tmp_path):
    cal = np.random.default_rng(1).normal(size=(4, 20, 12)).astype(np.float32)
    np.save(tmp_path / "cal.npy", cal)
    r = cli("convert", FIXTURES / "gru_bf.ts.onnx", "-o", tmp_path / "m.nvm",
            "--calibration", tmp_path / "cal.npy")
    assert r.returncode == 0, r.stderr
    assert "4 bits" in r.stdout and (tmp_path / "m.nvm").exists()
    x = np.random.default_rng(2).normal(size=(2, 6, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    prog = nvm.load(tmp_path / "m.nvm")
    for profile, sets in (("ideal", []), ("int4", ["--set", "adc.bits=6"]),
                          ("pcm", ["--set", "drift.age_s=3600", "--seed", "3"])):
        out = tmp_path / f"y_{profile}.npy"
        r = cli("run", tmp_path / "m.nvm", "-i", tmp_path / "x.npy", "-o", out,
                "--profile", profile, *sets)
        assert r.returncode == 0, r.stderr
        y = np.load(out)
        over = [s for s in sets if "=" in s]
        seed = int(sets[sets.index("--seed") + 1]) if "--seed" in sets else 0
        eng = nvm.Engine(prog, nvm.Device(profile, seed=seed, overrides=over or None))
        np.testing.assert_array_equal(y, eng.run(x))


def test_profiles_cli():
    r = cli("profiles")
    assert r.returncode == 0
    for name in ("ideal", "int4", "rram", "pcm", "pcm-1h", "pcm-1d", "pcm-1y", "snr0db",
                 "nand-eol"):
        assert name in r.stdout
    r = cli("profiles", "show", "snr0db")
    assert r.returncode == 0 and "vmm_noise.snr_db = 0.0" in r.stdout
    r = cli("profiles", "show", "pcm", "--set", "adc.bitz=3")
    assert r.returncode != 0 and "adc.bitz" in r.stderr and "bits, noise_lsb" in r.stderr
    r = cli("profiles", "show", "pcm", "--set", "adc.bits=99")
    assert r.returncode != 0 and "adc.bits" in r.stderr


def test_run_with_bad_override_fails_cleanly(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 12), np.float32))
    r = cli("run", FIXTURES / "lstm1_bf.ts.onnx", "-i", tmp_path / "x.npy", "-o",
            tmp_path / "y.npy", "--profile", "pcm", "--set", "storage.encoding=ascii")
    assert r.returncode != 0 and "storage.encoding" in r.stderr
    assert not (tmp_path / "y.npy").exists()
