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


# ------------------------------------------------------------------- profile hash and --resume
def _without(resolved: dict, names) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in resolved.items()}
    for name in names:
        sec, fld = name.split(".")
        out[sec].pop(fld)
    return out


def test_profile_hash_ignores_new_fields_at_their_defaults(monkeypatch):
    from nvmstream.devices import load_profile
    from nvmstream.runtime import outputs as O
    full = load_profile("pcm").to_dict()
    # the fields added after the schema-1 CSVs: absent (as before they existed) or at their
    # defaults, the same hash
    assert O.profile_sha256(_without(full, O.LEGACY_ADDED_FIELDS)) == O.profile_sha256(full)
    # a field the code does not know yet, at its default: unchanged; any other value: changed
    dflt = O._profile_defaults()
    dflt["adc"]["future_knob"] = 0.5
    monkeypatch.setattr(O, "_profile_defaults", lambda: dflt)
    with_new = {**full, "adc": {**full["adc"], "future_knob": 0.5}}
    assert O.profile_sha256(with_new) == O.profile_sha256(full)
    assert O.profile_sha256({**full, "adc": {**full["adc"], "future_knob": 0.25}}) \
        != O.profile_sha256(full)
    monkeypatch.undo()
    # a changed value of an old field, or a new field away from its default: changed
    assert O.profile_sha256(load_profile("pcm", {"adc.bits": 5}).to_dict()) \
        != O.profile_sha256(full)
    assert O.profile_sha256(load_profile("pcm", {"tile.wire_ohm": 1.0}).to_dict()) \
        != O.profile_sha256(full)
    assert O.profile_sha256(load_profile("int4").to_dict()) != O.profile_sha256(full)


def _schema1_csv(path, profile, overrides=None, sha=None):
    """A sweep CSV as written before profile_hash_schema existed: the sha256 of every field
    of the profile as it was then (without the fields added since)."""
    import hashlib
    import json
    from nvmstream.devices import load_profile
    from nvmstream.runtime import outputs as O
    old = _without(load_profile(profile, overrides).to_dict(), O.LEGACY_ADDED_FIELDS)
    prov = {"model_sha256": "m", "data_sha256": "d", "sequences": 5, "profile": profile,
            "profile_sha256": sha or hashlib.sha256(json.dumps(old, sort_keys=True)
                                                   .encode()).hexdigest()}
    cols = S.columns(S.Grid())
    path.write_text("# nvmstream provenance: " + json.dumps(prov) + "\n" + ",".join(cols)
                    + "\n" + f"{profile},0,1,5,0.8,1.0,2.0,0.1,f8\n")
    return cols


def test_resume_recognises_a_schema1_csv_of_the_same_profile_only(tmp_path):
    from nvmstream.runtime import outputs as O
    csv_path = tmp_path / "old.csv"
    cols = _schema1_csv(csv_path, "pcm")
    prov = O.provenance(profile="pcm", argv=[])
    prov.update(model_sha256="m", data_sha256="d", sequences=5)
    rows = S.CsvRows(csv_path, cols, prov, resume=True)
    job = S.Job("m.onnx", "d.npz", "pcm", (), 0, 1)
    assert rows.has(job) and not rows.has(S.Job("m.onnx", "d.npz", "pcm", (), 1, 1))
    assert rows.rows()[0]["accuracy"] == 0.8
    # the file now carries the schema-2 hash (and where it came from): a second resume
    # matches directly
    new = O.read_csv_provenance(csv_path)
    assert new["profile_hash_schema"] == O.PROFILE_HASH_SCHEMA
    assert new["profile_sha256"] == O.profile_sha256(prov["profile_resolved"])
    assert new["profile_hash_migrated_from"]
    assert S.CsvRows(csv_path, cols, prov, resume=True).has(job)
    # a schema-1 file of another profile, or of this one with an added field away from its
    # default, is a different sweep
    for profile, ov in (("int4", None), ("pcm", {"tile.wire_ohm": 1.0})):
        _schema1_csv(csv_path, "pcm")
        p = O.provenance(profile=profile, overrides=ov, argv=[])
        p.update(model_sha256="m", data_sha256="d", sequences=5)
        with pytest.raises(ValueError, match="different sweep .profile_sha256"):
            S.CsvRows(csv_path, cols, p, resume=True)


def test_a_resume_that_reuses_every_run_leaves_the_file_byte_for_byte(tmp_path):
    """A resumed CSV whose runs are all reused keeps its bytes (creation time included: a
    regeneration of the results pages changes no file it did not compute); the first run
    appended stamps ``extended_utc`` and keeps ``created_utc`` and the old rows' text."""
    from nvmstream.runtime import outputs as O
    csv_path = tmp_path / "r.csv"
    prov = O.provenance(profile="pcm", argv=[])
    prov.update(model_sha256="m", data_sha256="d", sequences=5, created_utc="2020-01-01T00:00:00Z")
    cols = S.columns(S.Grid())
    rows = S.CsvRows(csv_path, cols, prov, resume=True)
    row = {"profile": "pcm", "seed": 0, "votes": 1, "n": 5, "accuracy": 0.8,
           "energy_pJ_per_inference": 3.15576e+07, "tops_per_w": 2.0, "seconds": 0.1,
           "correct_hex": "f8"}
    rows.append(S.Job("m.onnx", "d.npz", "pcm", (), 0, 1), row)
    before = csv_path.read_bytes()
    later = dict(prov, created_utc="2030-01-01T00:00:00Z", command="nvmstream sweep again")
    again = S.CsvRows(csv_path, cols, later, resume=True)
    assert again.has(S.Job("m.onnx", "d.npz", "pcm", (), 0, 1))
    assert csv_path.read_bytes().split(b"\n", 1)[1] == before.split(b"\n", 1)[1]
    assert O.read_csv_provenance(csv_path)["created_utc"] == "2020-01-01T00:00:00Z"
    same = dict(prov)
    S.CsvRows(csv_path, cols, same, resume=True)
    again_bytes = csv_path.read_bytes()
    S.CsvRows(csv_path, cols, same, resume=True)
    assert csv_path.read_bytes() == again_bytes            # nothing new: not rewritten
    ext = S.CsvRows(csv_path, cols, same, resume=True)
    ext.append(S.Job("m.onnx", "d.npz", "pcm", (), 1, 1), dict(row, seed=1))
    p = O.read_csv_provenance(csv_path)
    assert p["created_utc"] == "2020-01-01T00:00:00Z" and "extended_utc" in p
    lines = csv_path.read_text().splitlines()
    assert lines[1:3] == before.decode().splitlines()[1:3] and lines[3].startswith("pcm,1,")
