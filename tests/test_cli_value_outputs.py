"""The CLI on a model whose first output is one value per step (a regression head; silero-vad's
speech probability is the real-model case in tests/test_silero_vad.py): no command prints a
class for it. `stream` summarises the value per stream; `sweep` refuses with one line unless
`--threshold` reads the value as a binary classifier; `Engine.predict` likewise."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nvmstream as nvm
from server_util import REPO, ServerProcess, reference_outputs

I, H = 5, 6


def _regression_onnx(path) -> None:
    """X [T, N, 5] -> LSTM(6) -> Squeeze -> MatMul [6, 1]: y [T, N, 1], one value per step."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (rng.normal(0, .5, (1, 4 * H, I)).astype(np.float32), "W"),
        (rng.normal(0, .5, (1, 4 * H, H)).astype(np.float32), "R"),
        (rng.normal(0, .3, (1, 8 * H)).astype(np.float32), "B"),
        (rng.normal(0, .5, (H, 1)).astype(np.float32), "V"),
        (np.array([1], np.int64), "axis"))]
    nodes = [helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], name="lstm", hidden_size=H),
             helper.make_node("Squeeze", ["Y", "axis"], ["Ys"], name="squeeze"),
             helper.make_node("MatMul", ["Ys", "V"], ["y"], name="head")]
    g = helper.make_graph(
        nodes, "regression", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "N", I])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", "N", 1])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The ONNX file, it compiled, and a labelled .npz (integer labels, as sweep demands)."""
    d = tmp_path_factory.mktemp("value")
    _regression_onnx(d / "reg.onnx")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 7, I)).astype(np.float32)
    lengths = np.array([7, 4, 6, 2])
    np.savez(d / "d.npz", x_train=x, y_train=np.array([0, 1, 0, 1]), x_test=x,
             y_test=np.array([0, 1, 0, 1]), lengths_test=lengths, lengths_train=lengths)
    nvm.convert(d / "reg.onnx", calibration=x).save(d / "reg.nvm")
    return d


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "nvmstream.runtime.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_the_model_has_a_one_value_output(files):
    (out,) = nvm.load_ir(files / "reg.onnx").outputs
    assert out.name == "y" and out.features == 1 and out.per_step


@pytest.mark.parametrize("model", ["reg.onnx", "reg.nvm"])
def test_sweep_refuses_a_value_output_with_one_line(files, tmp_path, model):
    """Accuracy of the argmax of one value is the share of label 0: sweep says why it will not
    run, exit non-zero, and writes no CSV."""
    out = tmp_path / "s.csv"
    r = cli("sweep", files / model, "--data", files / "d.npz", "--workers", 1, "--out", out,
            "--quiet")
    err = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(err) == 1, r.stdout + r.stderr
    assert str(files / model) in err[0] and "first output 'y' is one value per step" in err[0]
    assert "nvmstream run" in err[0] and "--threshold" in err[0]
    assert not out.exists() and "accuracy" not in r.stdout


def test_stream_summarises_the_value_and_compares_no_labels(files, tmp_path):
    """`nvmstream stream` over a real server with a labelled .npz: each stream's line is the
    first output's last/mean/min/max over its frames (equal to the in-process engine's, to the 4
    printed digits), the labels are set aside with one note on stderr, no accuracy is printed,
    and --json carries the summary with prediction null."""
    with ServerProcess(files / "reg.nvm", "--profile", "int4") as srv:
        r = cli("stream", "-c", srv.endpoint, "--data", files / "d.npz", "--seed", 0,
                "--json", tmp_path / "s.json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "predicted" not in r.stdout and "accuracy" not in r.stdout, r.stdout
    assert "labels not compared" in r.stderr and "'y'" in r.stderr
    with np.load(files / "d.npz") as z:
        x, lengths = z["x_test"], z["lengths_test"]
    detail = json.loads((tmp_path / "s.json").read_text())["streams_detail"]
    num = r"([-+0-9.e]+)"
    for i in range(len(x)):
        want, _, _ = reference_outputs(files / "reg.nvm", "int4", i, x[i, :lengths[i]])
        v = want[:, 0].astype(np.float64)
        stats = {"last": v[-1], "mean": v.mean(), "min": v.min(), "max": v.max()}
        m = re.search(rf"^#{i}: y last {num}, mean {num}, min {num}, max {num} over "
                      rf"{lengths[i]} frames$", r.stdout, re.M)
        assert m, r.stdout
        for k, got in zip(stats, m.groups()):
            assert float(got) == pytest.approx(stats[k], rel=6e-4, abs=1e-6), (i, k)
        assert detail[i]["prediction"] is None and detail[i]["output"]["name"] == "y"
        for k, want_k in stats.items():
            assert detail[i]["output"][k] == pytest.approx(want_k, rel=1e-6, abs=1e-9), (i, k)


def test_predict_reads_a_value_output_only_with_a_threshold(files):
    """``Engine.predict`` on a one-value output: refused without a threshold (one line naming
    the output), with one the class is value > threshold at every step (votes 1); a threshold
    on class scores is refused; a stream of such a model reports no class."""
    prog = nvm.load(files / "reg.nvm")
    with np.load(files / "d.npz") as z:
        x = z["x_test"]
    eng = nvm.Engine(prog, nvm.Device("pcm", seed=2))
    assert eng.value_output == "y"
    with pytest.raises(nvm.NvmInputError, match="first output 'y' is one value per step.*"
                                                "pass a threshold"):
        eng.predict(x)
    with pytest.raises(nvm.NvmInputError, match="threshold: must be a finite number, got nan"):
        eng.predict(x, threshold=float("nan"))
    y = eng.run(x, seed=7)[..., 0]
    for t in (0.0, float(np.median(y))):
        cls = eng.predict(x, seed=7, threshold=t)
        np.testing.assert_array_equal(cls, (y > t).astype(np.int64))
    assert 0 < (cls == 1).mean() < 1                        # both classes occur
    s = eng.stream()
    s.step(x[0, 0])
    assert s.last_class is None
    from nvmstream.runtime.bench import lstm_onnx
    scores = nvm.convert(lstm_onnx(files / "cls.onnx", I, 4, 3, state_io=False),
                         calibration=x)
    e3 = nvm.Engine(scores, nvm.Device("int4", seed=0))
    assert e3.value_output is None
    with pytest.raises(nvm.NvmInputError, match="has 3 class scores per step"):
        e3.predict(x, threshold=0.5)
    s3 = e3.stream()
    assert s3.last_class is None                            # before the first frame
    s3.step(x[0, 0])
    assert s3.last_class == int(np.argmax(e3.run(x[:1, :1])[0, 0]))


def test_sweep_scores_a_value_output_as_a_binary_classifier(files, tmp_path):
    """``sweep --threshold 0``: each row's accuracy is the share of sequences whose last value
    lies on its label's side of 0 (from Engine.run at the sweep's seeds), the threshold is in
    the provenance, and a resume with another threshold is refused."""
    from nvmstream.runtime.outputs import read_csv_provenance
    out = tmp_path / "s.csv"
    r = cli("sweep", files / "reg.nvm", "--data", files / "d.npz", "--profile", "pcm",
            "--seeds", "0,1", "--threshold", 0, "--workers", 1, "--out", out, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    assert read_csv_provenance(out)["threshold"] == 0.0
    with np.load(files / "d.npz") as z:
        x, y, lengths = z["x_test"], z["y_test"], z["lengths_test"]
    import csv
    from nvmstream.runtime.outputs import csv_rows
    with open(out, newline="") as f:
        rows = list(csv.DictReader(csv_rows(f)))
    assert len(rows) == 2
    prog = nvm.load(files / "reg.nvm")
    for row in rows:
        seed = int(row["seed"])
        v = nvm.Engine(prog, nvm.Device("pcm", seed=seed)).run(x, seed=1000 * seed,
                                                                lens=lengths)[..., 0]
        last = v[np.arange(len(x)), lengths - 1]
        assert float(row["accuracy"]) == pytest.approx(np.mean((last > 0) == y))
    r = cli("sweep", files / "reg.nvm", "--data", files / "d.npz", "--profile", "pcm",
            "--seeds", "0,1", "--threshold", 0.5, "--workers", 1, "--out", out, "--quiet",
            "--resume")
    assert r.returncode != 0 and "threshold" in r.stderr, r.stdout + r.stderr


def test_sweep_threshold_needs_a_value_output_and_binary_labels(files, tmp_path):
    from nvmstream.runtime.bench import lstm_onnx
    cls_model = lstm_onnx(tmp_path / "cls.onnx", I, 4, 3, state_io=False)
    r = cli("sweep", cls_model, "--data", files / "d.npz", "--threshold", 0.5,
            "--out", tmp_path / "a.csv", "--quiet")
    err = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(err) == 1 and "class scores" in err[0], r.stderr
    r = cli("sweep", files / "reg.nvm", "--data", files / "d.npz", "--threshold", "nan",
            "--out", tmp_path / "c.csv", "--quiet")
    assert r.returncode == 2 and "expected a finite number" in r.stderr, r.stderr
    with np.load(files / "d.npz") as z:
        d = dict(z)
    d["y_test"] = np.array([0, 2, 1, 0])
    np.savez(tmp_path / "three.npz", **d)
    r = cli("sweep", files / "reg.nvm", "--data", tmp_path / "three.npz", "--threshold", 0,
            "--out", tmp_path / "b.csv", "--quiet")
    err = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(err) == 1 and "labels include [2]" in err[0], r.stderr
    assert not any(tmp_path.glob("*.csv"))
