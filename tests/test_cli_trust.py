"""The CLI a user can trust (issue 12): every bad invocation is one line and a non-zero exit;
outputs go to exactly the path given, never over an input, with the umask's mode, `-` is
stdout; one data contract; provenance in every JSON/CSV; a sweep survives interruption.
All real subprocesses on real files."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

import nvmstream as nvm
from onnx_util import FIXTURES, REPO

GOOD = FIXTURES / "lstm1_bf.ts.onnx"          # 12 features -> 4, causal, no task metadata
GRU = FIXTURES / "gru_bf.ts.onnx"


def cli(*args, cwd=None, umask=None, stdout=subprocess.PIPE, timeout=300):
    def pre():
        if umask is not None:
            os.umask(umask)
    return subprocess.run([sys.executable, "-m", "nvmstream.runtime.cli", *map(str, args)],
                          stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=cwd,
                          timeout=timeout, preexec_fn=pre)


def sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A compiled model, a labelled .npz in the shipped layout, a bare .npy, an .npy renamed
    .nvm, a stereo 8 kHz WAV."""
    d = tmp_path_factory.mktemp("trust")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 9, 12)).astype(np.float32)
    lens = rng.integers(3, 10, 20)
    y = np.argmax(nvm.load_ir(GOOD).run_steps(x)["y"][np.arange(20), lens - 1], axis=1)
    np.savez(d / "data.npz", x_train=x, y_train=y, x_test=x, y_test=y, lengths_test=lens,
             lengths_train=lens)
    np.save(d / "x.npy", x)
    prog = nvm.convert(GOOD, calibration=x)
    prog.save(d / "m.nvm")
    np.save(d / "fake.npy", x)
    os.replace(d / "fake.npy", d / "fake.nvm")
    t = np.arange(8000) / 8000.0
    sig = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(d / "stereo8k.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.stack([sig, sig], 1).tobytes())
    return d


# ------------------------------------------------------------------- bad invocations, one line
# (name, argv with {d} = the fixture folder, text the error must contain)
BAD = [
    ("connect without scheme",
     ["stream", "--connect", "localhost:5555", "--data", "{d}/data.npz"], "tcp://localhost:5555"),
    (".npy renamed .nvm (run)",
     ["run", "{d}/fake.nvm", "-i", "{d}/x.npy", "-o", "{d}/y.npy", "-p", "int4"],
     "NumPy .npy array, not a model"),
    (".npy renamed .nvm (inspect)", ["inspect", "{d}/fake.nvm"], "NumPy .npy array"),
    (".npy renamed .nvm (serve)", ["serve", "{d}/fake.nvm"], "NumPy .npy array"),
    ("sweep --data x.npy", ["sweep", "{d}/m.nvm", "--data", "{d}/x.npy", "--out", "{d}/s1.csv"],
     "has no labels"),
    ("sweep --out into a missing folder",
     ["sweep", "{d}/m.nvm", "--data", "{d}/data.npz", "--out", "{d}/nodir/s.csv"],
     "folder {d}/nodir does not exist"),
    ("sweep --plot into a missing folder",
     ["sweep", "{d}/m.nvm", "--data", "{d}/data.npz", "--out", "{d}/s2.csv", "--plot",
      "{d}/nodir/p.png"], "folder {d}/nodir does not exist"),
    ("sweep --out with a suffix it cannot write",
     ["sweep", "{d}/m.nvm", "--data", "{d}/data.npz", "--out", "{d}/s.xlsx"], "use one of .csv"),
    ("run -o into a missing folder",
     ["run", "{d}/m.nvm", "-i", "{d}/x.npy", "-o", "{d}/nodir/y.npy"], "does not exist"),
    ("run -o with a suffix it cannot honour",
     ["run", "{d}/m.nvm", "-i", "{d}/x.npy", "-o", "{d}/y.dat"], "use one of .npy, .npz"),
    ("run -o onto its input", ["run", "{d}/m.nvm", "-i", "{d}/x.npy", "-o", "{d}/x.npy"],
     "is also an input"),
    ("convert onto its own input", ["convert", str(GOOD), "-o", str(GOOD)], "is also an input"),
    ("convert .onnx without calibration", ["convert", str(GOOD), "-o", "{d}/c.nvm"],
     "--calibration random"),
    ("serve .onnx without calibration", ["serve", str(GOOD), "--bind", "tcp://127.0.0.1:*"],
     "needs calibration data"),
    ("run .npz without x", ["run", "{d}/m.nvm", "-i", "{d}/nox.npz", "-o", "{d}/y.npy"],
     "no x_test or x array"),
    ("run --json with a suffix it cannot honour",
     ["run", "{d}/m.nvm", "-i", "{d}/x.npy", "-o", "{d}/y.npy", "--json", "{d}/r.txt"],
     "use one of .json"),
    ("missing model", ["run", "{d}/nope.nvm", "-i", "{d}/x.npy", "-o", "{d}/y.npy"],
     "no such file"),
    ("unknown profile", ["run", "{d}/m.nvm", "-i", "{d}/x.npy", "-o", "{d}/y.npy", "-p", "pcmm"],
     "pcmm"),
    ("no server at the endpoint",
     ["stream", "--connect", "tcp://127.0.0.1:9", "--data", "{d}/data.npz", "--timeout", "0.5"],
     "is the server running at tcp://127.0.0.1:9"),
    ("energy --json into a missing folder",
     ["energy", "{d}/m.nvm", "--data", "{d}/data.npz", "--json", "{d}/nodir/e.json"],
     "folder {d}/nodir does not exist"),
    ("energy on an .npy renamed .nvm",
     ["energy", "{d}/fake.nvm", "--data", "{d}/data.npz"], "NumPy .npy array"),
    ("missing wav",
     ["stream", "--connect", "tcp://127.0.0.1:9", "--data", "{d}/x.npy.wav"], "no such file"),
]


@pytest.mark.parametrize("name, argv, want", BAD, ids=[b[0] for b in BAD])
def test_bad_invocation_is_one_line_and_nonzero(files, name, argv, want):
    np.savez(files / "nox.npz", z=np.zeros(3), w=np.zeros(3))
    before = sorted(p.name for p in files.rglob("*"))
    fix_sha = sha(GOOD)
    r = cli(*[a.format(d=files) for a in argv], timeout=120)
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("nvmstream: error:")]
    assert len(lines) == 1, r.stderr
    assert want.format(d=files) in lines[0], r.stderr
    assert sha(GOOD) == fix_sha                       # no input overwritten
    assert sorted(p.name for p in files.rglob("*")) == before    # nothing written


def test_broken_pipe_is_quiet():
    """`nvmstream profiles | head -1`: the reader is gone before we write."""
    r_fd, w_fd = os.pipe()
    os.close(r_fd)
    p = subprocess.run([sys.executable, "-m", "nvmstream.runtime.cli", "profiles", "show", "pcm"],
                       stdout=w_fd, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(w_fd)
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
    assert p.returncode == 141


# ----------------------------------------------------------------------------- safe outputs
def test_run_writes_exactly_the_path_with_umask_mode(files, tmp_path):
    out = tmp_path / "y.txt"
    r = cli("run", files / "m.nvm", "-i", files / "data.npz", "-o", out, "-p", "int4",
            umask=0o022)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.txt"]      # no orphan temporary
    assert out.stat().st_mode & 0o777 == 0o644
    rows = [l.split() for l in out.read_text().splitlines()]
    assert rows[0][:3] == ["sequence", "step", "y_0"]
    lens = np.load(files / "data.npz")["lengths_test"]
    assert len(rows) - 1 == int(lens.sum())                # one row per valid step
    y = np.array([[float(v) for v in r_[2:]] for r_ in rows[1:]])
    # the same numbers as .npy from the Python API with the same seeds and lengths
    eng = nvm.Engine(nvm.load(files / "m.nvm"), nvm.Device("int4", seed=0))
    want = eng.run(np.load(files / "data.npz")["x_test"], seed=0, lens=lens)
    np.testing.assert_allclose(y[:lens[0]], want[0, :lens[0]], rtol=1e-6, atol=1e-6)
    r = cli("run", files / "m.nvm", "-i", files / "x.npy", "-o", tmp_path / "z.npy", umask=0o077)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "z.npy").stat().st_mode & 0o777 == 0o600


def test_dash_means_stdout(files, tmp_path):
    r = cli("run", files / "m.nvm", "-i", files / "x.npy", "-o", "-", "-p", "int4", "--json", "-",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert list(tmp_path.iterdir()) == []                 # no file named "-"
    assert r.stdout.startswith("sequence step y_0")
    js = json.loads(r.stdout[r.stdout.index("\n{") + 1:])
    assert js["provenance"]["model_sha256"] == sha(files / "m.nvm")
    assert js["provenance"]["profile_resolved"]["adc"]["bits"] == 4
    assert js["provenance"]["seeds"] == {"device": 0, "stream": 0}


def test_convert_takes_the_shipped_layout_and_says_how_many(files, tmp_path):
    out = tmp_path / "sub" / "m.nvm"
    r = cli("convert", GOOD, "-o", out, "--calibration", files / "data.npz")
    assert r.returncode != 0 and "does not exist" in r.stderr          # folder checked first
    out = tmp_path / "m.nvm"
    r = cli("convert", GOOD, "-o", out, "--calibration", files / "data.npz")
    assert r.returncode == 0, r.stderr
    assert "calibration: 20 sequences (all) from" in r.stdout and "data.npz:x_train" in r.stdout
    prog = nvm.load(out)
    assert prog.calibration.shape[0] == 20 and "data.npz:x_train" in prog.calibration_source
    assert prog.meta["provenance"]["model_sha256"] == sha(GOOD)
    r = cli("convert", GOOD, "-o", tmp_path / "r.nvm", "--calibration", "random")
    assert r.returncode == 0 and "random N(0, 1)" in r.stdout


def test_shipped_model_calibrates_from_its_metadata(tmp_path):
    """A shipped model names its dataset (metadata task=...): no --calibration needed, and
    the calibration is the seeded random subsample of the training split, not x_train[:64]."""
    onnx_path = REPO / "demos" / "models" / "japanese_vowels_qat4.onnx"
    r = cli("convert", onnx_path, "-o", tmp_path / "jv.nvm")
    assert r.returncode == 0, r.stderr
    assert "64 sequences (a seeded random subsample (seed 0) of 270)" in r.stdout
    prog = nvm.load(tmp_path / "jv.nvm")
    x_train = np.load(REPO / "demos" / "data" / "japanese_vowels.npz")["x_train"]
    idx = np.sort(np.random.default_rng(0).choice(270, 64, replace=False))
    np.testing.assert_array_equal(prog.calibration, x_train[idx])
    assert not np.array_equal(prog.calibration, x_train[:64])


# ------------------------------------------------------------------ sweep: incremental, resume
def test_sweep_resumes_after_an_interruption(files, tmp_path):
    out = tmp_path / "s.csv"
    args = ["sweep", files / "m.nvm", "--data", files / "data.npz", "--profile", "int4",
            "--grid", "adc.bits=2,4,6", "--workers", "1", "--out", out]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    prov = json.loads(text.splitlines()[0][len("# nvmstream provenance: "):])
    assert prov["model_sha256"] == sha(files / "m.nvm") and prov["sequences"] == 20
    assert prov["nvmstream_version"] == nvm.__version__ and "sweep" in prov["command"]
    full = list(csv.DictReader(l for l in text.splitlines() if not l.startswith("#")))
    assert [r_["adc.bits"] for r_ in full] == ["2", "4", "6"]
    # an interrupted sweep: two rows written, the third cut mid-line
    lines = text.splitlines(keepends=True)
    out.write_text("".join(lines[:4]) + lines[4][:7])
    r = cli(*args)
    assert r.returncode != 0 and "--resume" in r.stderr                 # never clobbered
    r = cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert "resuming, 2 of 3 runs already" in r.stderr
    again = list(csv.DictReader(l for l in out.read_text().splitlines()
                                if not l.startswith("#")))
    assert len(again) == 3
    assert again[:2] == full[:2]                                # kept, not recomputed
    assert again[2]["accuracy"] == full[2]["accuracy"]           # the same seeded result
    # a different model under the same --out is refused
    r = cli("sweep", GRU, "--data", files / "data.npz", "--calibration", "random", "--grid",
            "adc.bits=2,4,6", "--workers", "1", "--out", out, "--resume")
    assert r.returncode != 0 and "different sweep" in r.stderr


# ------------------------------------------------------------------------- the other commands
def test_version_and_fast_help_imports():
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"nvmstream {nvm.__version__}"
    code = ("import sys, nvmstream.runtime.cli as c, nvmstream.runtime.client\n"
            "c.build_parser().format_help()\n"
            "print(sorted(m for m in ('onnx', 'numba', 'onnxruntime') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_inspect_opens_nvm(files):
    r = cli("inspect", files / "m.nvm")
    assert r.returncode == 0, r.stderr
    assert "4-bit signed codes" in r.stdout and "calibration user" in r.stdout
    r = cli("inspect", files / "m.nvm", "--json")
    info = json.loads(r.stdout)
    c = info["compiled"]
    assert info["provenance"]["nvmstream_version"] == nvm.__version__
    assert c["weight_bits"] == 4 and c["calibration"]["shape"] == [20, 9, 12]
    assert all(-7 <= m["code_min"] <= m["code_max"] <= 7 for m in c["matrices"])
    assert c["sha256"] == sha(files / "m.nvm")


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_profiles_show_exports_a_loadable_profile(tmp_path, fmt):
    out = tmp_path / f"mine.{fmt}"
    r = cli("profiles", "show", "pcm", "--set", "adc.bits=6", "--format", fmt, "-o", out)
    assert r.returncode == 0, r.stderr
    want = nvm.load_profile("pcm", {"adc.bits": 6}).to_dict()
    if fmt == "toml":
        got = nvm.load_profile(str(out)).to_dict()
    else:
        got = nvm.DeviceProfile.from_dict(json.loads(out.read_text())).to_dict()
    assert got == {**want, "base": got["base"]}
    assert got["adc"]["bits"] == 6


def test_profiles_list_explains_the_duplicate():
    r = cli("profiles", "list")
    assert r.returncode == 0
    line = next(l for l in r.stdout.splitlines() if l.startswith("pcm-1d"))
    assert "identical to pcm" in line
    assert cli("profiles", "int4").stdout.startswith("profile int4")       # `profiles NAME`


def test_wav_at_8khz_stereo_is_resampled_and_downmixed(files):
    from nvmstream.runtime.frontend import load_audio, read_wav
    pcm, info = load_audio(files / "stereo8k.wav", 16000)
    assert info == {"sample_rate_hz": 8000, "channels": 2, "bits": 16, "resampled": True,
                    "downmixed": True}
    assert pcm.dtype == np.int16 and abs(len(pcm) - 16000) <= 1
    # the 440 Hz tone stays at 440 Hz after resampling (peak of the spectrum, 1 Hz bins)
    spec = np.abs(np.fft.rfft(pcm[:16000].astype(np.float64)))
    assert abs(int(np.argmax(spec)) - 440) <= 1
    # mono 16 kHz 16-bit files come back sample for sample
    from nvmstream.runtime.frontend import write_wav
    raw = (np.arange(1000) % 200 - 100).astype(np.int16)
    write_wav(files / "m16.wav", raw, 16000)
    back, info = load_audio(files / "m16.wav", 16000)
    assert np.array_equal(back, raw) and not info["resampled"]
    assert np.array_equal(read_wav(files / "m16.wav")[0], raw)


def test_stream_8khz_stereo_wav_and_npz_json_provenance(files, tmp_path):
    """A real server with an audio front end: an 8 kHz stereo WAV is mixed down and resampled
    to the model's 16 kHz (said on stderr), never streamed as if it were 16 kHz; the shipped
    .npz layout streams with true lengths and the JSON carries provenance."""
    from nvmstream.runtime.frontend import FrontendParams
    from server_util import ServerProcess, compile_fixture
    fe = FrontendParams(n_mels=12).to_dict()
    model = compile_fixture("lstm1_bf.ts.onnx", tmp_path / "a.nvm", frontend=fe)
    with ServerProcess(model, "--profile", "int4") as srv:
        assert "profile int4" in srv.stdout_lines[0]            # default profile stated
        r = cli("stream", "-c", srv.endpoint, "-d", files / "stereo8k.wav", "--json",
                tmp_path / "w.json")
        assert r.returncode == 0, r.stderr
        assert "2 channel(s) 16-bit at 8000 Hz -> mono at 16000 Hz" in r.stderr
        res = json.loads((tmp_path / "w.json").read_text())
        # 1 s of audio at 16 kHz: 1 + (16000 - 400) // 160 = 98 frames
        assert res["frames"] == FrontendParams(n_mels=12).n_frames(16000) == 98
        r = cli("stream", "-c", srv.endpoint, "-d", files / "data.npz", "--quiet", "--json",
                tmp_path / "s.json")
        assert r.returncode == 0, r.stderr
        res = json.loads((tmp_path / "s.json").read_text())
        assert res["frames"] == int(np.load(files / "data.npz")["lengths_test"].sum())
        assert res["provenance"]["data_sha256"] == sha(files / "data.npz")
        assert res["provenance"]["nvmstream_version"] == nvm.__version__


def test_sweep_interrupted_by_sigint_keeps_finished_rows(files, tmp_path):
    """A real Ctrl-C in the middle of a sweep: exit 130, every finished run is in the CSV
    (whole lines), and --resume runs only the rest."""
    import signal
    import time
    out = tmp_path / "s.csv"
    # enough work per run (1000 sequences x 40 steps) that the sweep is still running when the
    # signal arrives, however fast the machine (the fixture's 20 short sequences run in ms)
    rng = np.random.default_rng(3)
    big = rng.normal(size=(1000, 40, 12)).astype(np.float32)
    lens = np.full(1000, 40)
    np.savez(tmp_path / "big.npz", x_train=big[:64], y_train=np.zeros(64, np.int64),
             lengths_train=lens[:64], x_test=big, y_test=np.zeros(1000, np.int64),
             lengths_test=lens)
    args = ["sweep", files / "m.nvm", "--data", tmp_path / "big.npz", "--profile", "int4",
            "--grid", "adc.bits=2,3,4,5,6,7,8", "--seeds", "0,1,2,3,4,5,6,7,8,9", "--workers", "1",
            "--out", out]
    # SIGINT at its default in the child: an xdist worker ignores SIGINT, and a child inherits
    # an ignored signal (Python then installs no KeyboardInterrupt handler)
    p = subprocess.Popen([sys.executable, "-m", "nvmstream.runtime.cli", *map(str, args)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline:
        if out.exists() and len([l for l in out.read_text().splitlines()
                                 if l and not l.startswith("#")]) >= 3:   # header + 2 runs
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err and "interrupted" in err and "Traceback" not in err
    kept = list(csv.DictReader(l for l in out.read_text().splitlines()
                               if not l.startswith("#")))
    assert 2 <= len(kept) < 70 and all(r["accuracy"] for r in kept)
    r = cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert f"resuming, {len(kept)} of 70 runs already" in r.stderr
    rows = list(csv.DictReader(l for l in out.read_text().splitlines() if not l.startswith("#")))
    assert len(rows) == 70 and rows[:len(kept)] == kept
    assert {(r["adc.bits"], r["seed"]) for r in rows} == {
        (str(b), str(s)) for b in range(2, 9) for s in range(10)}
