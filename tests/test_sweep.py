"""`nvmstream sweep`: a tiny grid returns the right rows, locally, in processes, on a Dask
LocalCluster and from the CLI (CSV + PNG)."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest

from nvmstream.runtime import sweep as S
from onnx_util import FIXTURES


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A labelled set whose labels are the float model's own predictions: ideal accuracy 100%."""
    import nvmstream as nvm
    d = tmp_path_factory.mktemp("sweep")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 10, 12)).astype(np.float32)
    lens = rng.integers(4, 11, 24)
    model = nvm.load_ir(FIXTURES / "gru_bf.ts.onnx")
    y = model.run_steps(x)["y"]
    labels = np.argmax(y[np.arange(24), lens - 1], axis=1)
    path = d / "data.npz"
    np.savez(path, x_test=x, y_test=labels, lengths_test=lens, x_train=x)
    return path


def test_grid_points_and_axis_parsing():
    g = S.Grid()
    g.add(*S.parse_axis("weights.bits+dac.bits=2,4"))
    g.add(*S.parse_axis("storage.encoding=gray,twos_complement"))
    pts = g.points()
    assert len(pts) == 4
    assert (("weights.bits", 2), ("dac.bits", 2), ("storage.encoding", "gray")) in pts
    with pytest.raises(ValueError, match="FIELD=V1"):
        S.parse_axis("adc.bits")


def test_sweep_rows_in_process_and_in_processes(data):
    grid = S.Grid()
    grid.add(("weights.bits", "dac.bits", "adc.bits"), [3, 8])
    jobs = S.make_jobs(str(FIXTURES / "gru_bf.ts.onnx"), str(data), "int4", grid, [0, 1], [1])
    rows = S.run_sweep(jobs, workers=1)
    assert len(rows) == 4
    assert {(r["weights.bits"], r["seed"]) for r in rows} == {(3, 0), (3, 1), (8, 0), (8, 1)}
    assert all(r["n"] == 24 and 0 <= r["accuracy"] <= 1 for r in rows)
    acc8 = [r["accuracy"] for r in rows if r["weights.bits"] == 8]
    acc3 = [r["accuracy"] for r in rows if r["weights.bits"] == 3]
    assert min(acc8) >= 0.9 and np.mean(acc8) >= np.mean(acc3)
    par = S.run_sweep(jobs, workers=2)
    assert [r["accuracy"] for r in par] == [r["accuracy"] for r in rows]   # reproducible
    ideal = S.run_sweep(S.make_jobs(str(FIXTURES / "gru_bf.ts.onnx"), str(data), "ideal",
                                    S.Grid(), [0], [1]), workers=1)
    assert ideal[0]["accuracy"] == 1.0


@pytest.mark.slow
def test_sweep_on_a_dask_local_cluster(data):
    from distributed import LocalCluster
    grid = S.Grid()
    grid.add(("vmm_noise.snr_db",), [0.0, 20.0])
    jobs = S.make_jobs(str(FIXTURES / "gru_bf.ts.onnx"), str(data), "int4", grid, [0], [1, 3])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, host="127.0.0.1") as cluster:
        rows = S.run_sweep(jobs, dask_address=cluster.scheduler_address)
    local = S.run_sweep(jobs, workers=1)
    assert len(rows) == 4
    assert [r["accuracy"] for r in rows] == [r["accuracy"] for r in local]


def test_sweep_cli_writes_csv_and_png(data, tmp_path):
    out, png = tmp_path / "s.csv", tmp_path / "s.png"
    r = subprocess.run([sys.executable, "-m", "nvmstream.runtime.cli", "sweep",
                        str(FIXTURES / "gru_bf.ts.onnx"), "--data", str(data), "--profile",
                        "int4", "--grid", "adc.bits=2,6", "--votes", "1,3", "--seeds", "0",
                        "--workers", "1", "--out", str(out), "--plot", str(png)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(l for l in open(out) if not l.startswith("#")))
    assert len(rows) == 4 and {"adc.bits", "votes", "accuracy", "seed"} <= set(rows[0])
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sweep: 4/4 runs" in r.stderr   # progress, plain lines when redirected
    assert "\r" not in r.stderr
    bad = subprocess.run([sys.executable, "-m", "nvmstream.runtime.cli", "sweep",
                          str(FIXTURES / "gru_bf.ts.onnx"), "--data", str(data), "--grid",
                          "adc.bitz=2"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert bad.returncode != 0 and "adc.bitz" in bad.stderr
    assert not (tmp_path / "sweep.csv").exists()     # a rejected grid writes nothing
