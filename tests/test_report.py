"""runtime/report.py: summaries with intervals, paired comparisons, printed commands, plots;
and demos/results.py --quick end to end (every printed command run as printed)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nvmstream.runtime import report as R
from nvmstream.runtime.stats import wilson_interval

REPO = Path(__file__).resolve().parent.parent


def _row(correct, seed=0, **kw):
    c = np.asarray(correct, bool)
    return {"seed": seed, "n": c.size, "accuracy": float(c.mean()),
            "correct_hex": np.packbits(c).tobytes().hex(), "energy_pJ_per_inference": 10.0,
            **kw}


def test_correct_matrix_roundtrip_and_summaries():
    rng = np.random.default_rng(0)
    a = rng.random((3, 37)) < 0.7
    rows = [_row(a[s], s, recipe="q", votes=1) for s in range(3)]
    m = R.correct_matrix(rows)
    assert np.array_equal(m, a.astype(float))
    one = R.summarize(rows[:1], ["recipe"])[0]
    w = wilson_interval(a[0].sum(), 37)
    assert (one["ci_lo"], one["ci_hi"]) == pytest.approx((w.lo, w.hi))
    three = R.summarize(rows, ["recipe"])[0]
    assert three["seeds"] == 3 and "bootstrap" in three["ci_method"]
    assert three["ci_lo"] < three["accuracy_mean"] < three["ci_hi"]


def test_summaries_sort_numbers_numerically():
    rows = [_row([1, 0], votes=v) for v in (15, 1, 5)]
    assert [s["votes"] for s in R.summarize(rows, ["votes"])] == [1, 5, 15]
    assert sorted(["b", 10, 2, float("inf")], key=R.sort_key) == [2, 10, float("inf"), "b"]


def test_compare_uses_mcnemar_for_one_seed_and_bootstrap_for_several():
    a = np.array([1] * 12 + [1] * 20)
    b = np.array([0] * 12 + [1] * 20)
    p = R.compare([_row(a)], [_row(b)])
    assert p.method == "exact McNemar" and p.resolved and p.a_only == 12
    p3 = R.compare([_row(a, s) for s in range(3)], [_row(b, s) for s in range(3)], n_boot=300)
    assert p3.method == "paired bootstrap" and p3.diff == pytest.approx(12 / 32)
    with pytest.raises(ValueError, match="per-item"):
        R.compare([{"n": 2, "accuracy": 1.0}], [_row(b)])


def test_rows_pair_by_seed_whatever_their_order_in_the_file():
    # parallel sweep workers write rows as they finish: seed 1 may come before seed 0
    rng = np.random.default_rng(3)
    a = rng.random((4, 50)) < 0.7
    b = a.copy()
    b[0, :10] = ~b[0, :10]                # B differs from A on seed 0 only
    rows_a = [_row(a[s], s) for s in range(4)]
    rows_b = [_row(b[s], s) for s in (2, 0, 3, 1)]
    assert np.array_equal(R.correct_matrix(rows_b), b.astype(float))
    same = R.compare(rows_a, rows_b, n_boot=500)
    assert same.diff == pytest.approx(float((a.astype(float) - b).mean()))
    assert same == R.compare(rows_a, sorted(rows_b, key=lambda r: r["seed"]), n_boot=500)
    assert R.summarize(rows_b, [])[0]["ci_lo"] == R.summarize(
        sorted(rows_b, key=lambda r: r["seed"]), [])[0]["ci_lo"]


def test_pareto_front():
    pts = [(1.0, 50.0), (2.0, 40.0), (3.0, 80.0), (3.0, 70.0), (5.0, 80.0), (6.0, 90.0)]
    assert R.pareto_front(pts) == [0, 2, 5]


def test_plots_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    rows = []
    rng = np.random.default_rng(1)
    for recipe in ("qat4", "qat4_noise"):
        for v in (1, 5):
            for age in (3600.0, 86400.0, 31557600.0):
                rows.append(_row(rng.random(30) < 0.8, recipe=recipe, votes=v,
                                 **{"drift.age_s": age}))
    summ = R.summarize(rows, ["recipe", "votes", "drift.age_s"])
    assert R.plot_curves(summ, "drift.age_s", tmp_path / "a.png", age_ticks=True, chance=0.1,
                         float_ref=0.9)
    pts = [{**s, "bits": "4 b"} for s in R.summarize(rows, ["recipe", "votes"])]
    assert R.plot_pareto(pts, tmp_path / "p.png", chance=0.1)
    assert (tmp_path / "a.png").stat().st_size > 5000 and (tmp_path / "p.png").exists()


def test_run_printed_rejects_what_it_cannot_run(tmp_path):
    with pytest.raises(ValueError, match="not an nvmstream command"):
        R.run_printed("python -c 1 --out x.csv", tmp_path)
    with pytest.raises(ValueError, match="--out"):
        R.run_printed("nvmstream profiles list", tmp_path)
    with pytest.raises(RuntimeError, match="command failed"):
        R.run_printed("nvmstream sweep nope.onnx --data nope.npz --out x.csv", tmp_path)


def test_results_quick_end_to_end(tmp_path):
    """The reduced page: every command it prints exists as run (its CSV was written by exactly
    that command line), tables carry intervals, the plots exist."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "res"
    r = subprocess.run([sys.executable, str(REPO / "demos" / "results.py"), "--quick",
                        "--out-dir", str(out)], cwd=REPO, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    page = (tmp_path / "res.md").read_text()
    commands = re.findall(r"^`(nvmstream [^`]+)`", page, flags=re.M)
    assert len(commands) >= 6
    for c in commands:
        argv = shlex.split(c)
        csv = Path(argv[argv.index("--out") + 1])
        rows = R.read_rows(csv)
        assert rows and all(row["correct_hex"] for row in rows), c
    assert re.search(r"\d+\.\d \[\d+\.\d, \d+\.\d\]", page)          # point [lo, hi]
    assert "exact McNemar" in page
    # the goals table: each headline row carries a status decided from an interval
    heads = re.findall(r"^\| digits \| (.+) \| \*\*(met|not met|unresolved|gain resolved|"
                       r"no resolved gain)\*\* \|$", page, flags=re.M)
    assert len(heads) >= 2, page[:3000]
    for png in ("bits_digits.png", "snr_digits.png", "age_digits.png", "ber_digits.png",
                "pareto_digits.png"):
        assert (out / png).stat().st_size > 5000


def test_results_reuses_a_csv_only_for_the_same_command_with_fewer_seeds():
    import importlib.util
    spec = importlib.util.spec_from_file_location("results_page", REPO / "demos" / "results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    base = ("nvmstream sweep demos/models/d.onnx --data demos/data/d.npz --profile int4 "
            "--grid vmm_noise.snr_db=0,10 --seeds {} --votes 1,5 --out r/x.csv --resume")
    assert mod.same_but_more_seeds(base.format("0,1,2"), base.format("0,1,2,3,4"))
    assert mod.same_but_more_seeds(base.format("0"), base.format("0"))
    assert not mod.same_but_more_seeds(base.format("0,1,2"), base.format("0,1"))
    assert not mod.same_but_more_seeds(base.format("5"), base.format("0,1,2"))
    other = base.replace("1,5", "1,15")
    assert not mod.same_but_more_seeds(base.format("0"), other.format("0,1"))
    assert not mod.same_but_more_seeds("", base.format("0"))


def test_results_prints_a_tasks_conversion_choices_in_its_commands(tmp_path):
    """keywords' models are converted with adc.calibration=mse (TaskConfig.convert): the page
    must print it in every command it runs on an ADC profile, as a one-value grid axis that a
    command's own --grid does not already set, and it must be a valid override of the profile."""
    import importlib.util

    import nvmstream as nvm
    spec = importlib.util.spec_from_file_location("results_page2", REPO / "demos" / "results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    conv = mod.convert_choices("keywords")
    assert conv == ["adc.calibration=mse"]
    assert mod.convert_choices("digits") == []
    assert nvm.Device("int4", overrides=conv).profile.adc.calibration == "mse"
    ran = []
    mod.R.run_printed = lambda command, cwd: ran.append(command) or []
    pg = mod.Page(tmp_path / "res", 190, 1)
    pg.sweep("bits_keywords_qat4", "keywords", "qat4", "int4", ["adc.bits=4,8"], seeds=[0])
    pg.sweep("x_keywords_qat4", "keywords", "qat4", "int4", ["adc.calibration=max"], seeds=[0])
    pg.sweep("ideal_keywords_float", "keywords", "float", "ideal", [], seeds=[0])
    pg.sweep("bits_digits_qat4", "digits", "qat4", "int4", ["adc.bits=4,8"], seeds=[0])
    assert "--profile int4 --grid adc.calibration=mse --grid adc.bits=4,8 " in ran[0]
    assert "adc.calibration=mse" not in ran[1] and "--grid adc.calibration=max" in ran[1]
    assert "--grid" not in ran[2] and "--grid" in ran[3] and "calibration" not in ran[3]
    assert [f"`{c}`  " for c in ran] == [ln for ln in pg.md if ln.startswith("`")]


def test_goal_status_and_the_note_for_an_interval_end_hidden_by_rounding():
    import importlib.util
    spec = importlib.util.spec_from_file_location("results_page", REPO / "demos" / "results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.goal_status(-0.009, 0.01, -0.01) == "met"
    assert mod.goal_status(-0.05, -0.0101, -0.01) == "not met"
    # prints as [-5.2, -1.0] yet straddles -1 pt: the note says on which side and by how much
    assert mod.goal_status(-0.052, -0.00997, -0.01) == "unresolved"
    note = mod.near_goal(-0.052, -0.00997, -0.01)
    assert "upper end is -0.997 pt, above -1 pt by 0.003 pt" in note
    assert "lower" not in note
    assert "below -1 pt by 0.020 pt" in mod.near_goal(-0.0102, 0.02, -0.01)
    assert mod.near_goal(-0.033, 0.006, -0.01) == ""
