"""Regenerate docs/results.md: the seeds' results reproduced (or refuted) with nvmstream.

    python demos/results.py                 # every task, every section (long: tens of minutes)
    python demos/results.py --quick --out-dir /tmp/results    # a reduced run (a test runs it)

Every table comes from an `nvmstream sweep` command that is printed above it and run exactly as
printed (runtime/report.py `run_printed`: the page's commands are the ones that made its
numbers). Accuracies carry 95% intervals: Wilson over the test items for one device seed, a
bootstrap over items x device seeds for several; every "A beats B" on the page is a paired test
on the same items (exact McNemar for one seed, paired bootstrap over items x seeds otherwise).
Calibration: `nvmstream sweep` calibrates on a seeded, class-balanced subsample of x_train.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from nvmstream.runtime import report as R

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODELS = HERE / "models"
DATA = HERE / "data"
TASKS = ("japanese_vowels", "basic_motions", "digits", "keywords")
AGES_S = [3600.0, 86400.0, 2592000.0, 31557600.0]
BITS = [2, 3, 4, 5, 6, 8]
SNRS = [-5.0, 0.0, 5.0, 10.0, 20.0, 30.0]
BERS = [1e-4, 1e-3, 1e-2, 3e-2]


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def ci(s: dict) -> str:
    return f"{pct(s['accuracy_mean'])} [{pct(s['ci_lo'])}, {pct(s['ci_hi'])}]"


class Page:
    """Markdown being written plus the settings every command shares."""

    def __init__(self, out_dir: Path, seeds: list[int], limit: int | None, workers: int,
                 quick: bool = False):
        self.quick = quick
        self.md: list[str] = []
        self.ran: dict[str, list[dict]] = {}     # command -> rows (a command runs once)
        self.out_dir, self.seeds, self.limit, self.workers = out_dir, seeds, limit, workers
        self.rel = out_dir.resolve().relative_to(REPO) if out_dir.resolve().is_relative_to(
            REPO) else out_dir.resolve()

    def add(self, *lines: str) -> None:
        self.md.extend(lines)

    def sweep(self, tag: str, task: str, recipe: str, profile: str, grid: list[str],
              votes: list[int] | None = None, seeds: list[int] | None = None) -> list[dict]:
        """Print an `nvmstream sweep` command on the page, run it exactly as printed, return
        its rows (tagged with task and recipe)."""
        seeds = seeds if seeds is not None else self.seeds
        parts = ["nvmstream sweep", f"demos/models/{task}_{recipe}.onnx",
                 f"--data demos/data/{task}.npz", f"--profile {profile}"]
        parts += [f"--grid {g}" for g in grid]
        parts += [f"--seeds {','.join(map(str, seeds))}",
                  f"--votes {','.join(map(str, votes or [1]))}"]
        if self.limit:
            parts.append(f"--limit {self.limit}")
        parts += [f"--workers {self.workers}", f"--out {self.rel}/{tag}.csv", "--quiet"]
        command = " ".join(parts)
        self.add(f"`{command}`  ")
        if command not in self.ran:
            rows = R.run_printed(command, cwd=REPO)
            for r in rows:
                r["task"], r["recipe"] = task, recipe
            self.ran[command] = rows
        return [dict(r) for r in self.ran[command]]


def manifest() -> dict:
    return json.loads((MODELS / "manifest.json").read_text())["models"]


def shipped(task: str, recipe: str) -> bool:
    return (MODELS / f"{task}_{recipe}.onnx").exists()


def n_classes(task: str) -> int:
    import numpy as np
    with np.load(DATA / f"{task}.npz", allow_pickle=False) as d:
        return len(d["labels"])


def claim(p: R.PairedResult, better: str, worse: str) -> str:
    """One sentence for a paired comparison: resolved or not."""
    if p.resolved and p.diff > 0:
        return f"{better} beats {worse}: {p.fmt()}."
    if p.resolved:
        return f"{worse} beats {better}: {p.fmt()}."
    return f"no resolved difference between {better} and {worse}: {p.fmt()}."


def section_bits(pg: Page, tasks: list[str], bits: list[int]) -> list[dict]:
    pg.add("## 1. Accuracy vs weight/DAC/ADC bits (seed: arXiv 2002.10636)", "",
           "Goal (seed): with quantization-aware training, 4/4/4 bits stay within 1 pt of the "
           "float model. The interval of the paired difference says whether a gap is resolved.",
           "")
    out = []
    for task in tasks:
        rows, ideal = [], {}
        for recipe in ("float", "qat4"):
            if not shipped(task, recipe):
                continue
            # int4 with no noise is deterministic: one device seed is the whole story
            rows += pg.sweep(f"bits_{task}_{recipe}", task, recipe, "int4",
                             ["weights.bits+dac.bits+adc.bits=" + ",".join(map(str, bits))],
                             seeds=[0])
            if recipe == "float" or not pg.quick:
                ideal[recipe] = pg.sweep(f"ideal_{task}_{recipe}", task, recipe, "ideal", [],
                                         seeds=[0])
        summ = R.summarize(rows, ["recipe", "weights.bits"])
        recipes = sorted({r["recipe"] for r in rows})
        pg.add("", f"**{task}** (bits = weights = DAC = ADC, `int4` profile otherwise)", "",
               "| bits | " + " | ".join(f"{r} (%)" for r in recipes) + " |",
               "|---|" + "---|" * len(recipes))
        for b in bits:
            cells = [next((ci(s) for s in summ if s["recipe"] == r and s["weights.bits"] == b),
                          "") for r in recipes]
            pg.add(f"| {b} | " + " | ".join(cells) + " |")
        fl = R.summarize(ideal["float"], ["recipe"])[0] if "float" in ideal else None
        pg.add("| float (ideal) | " + " | ".join(ci(R.summarize(ideal[r], ["recipe"])[0])
                                                 if r in ideal else "" for r in recipes)
               + " |", "")
        R.plot_curves(summ, "weights.bits", pg.out_dir / f"bits_{task}.png", style_key=None,
                      title=f"{task}: accuracy vs bits (weights = DAC = ADC)",
                      xlabel="bits", chance=1 / n_classes(task),
                      float_ref=fl["accuracy_mean"] if fl else None)
        pg.add(f"![bits {task}]({pg.rel.name}/bits_{task}.png)", "")
        if "float" in ideal and "qat4" in ideal:
            q4 = [r for r in rows if r["recipe"] == "qat4" and r["weights.bits"] == 4]
            p = R.compare(q4, ideal["float"])
            holds = p.lo >= -0.01
            pg.add(f"*Finding ({task}):* qat4 at 4/4/4 bits vs the float model (ideal): "
                   f"{p.fmt()}. Within 1 pt: **{'yes' if holds else 'not shown'}** (the "
                   f"interval's lower end {'is' if holds else 'is not'} above -1 pt).", "")
        out += rows
    return out


def section_snr(pg: Page, tasks: list[str], snrs: list[float], votes: list[int]) -> list[dict]:
    pg.add("## 2. Accuracy vs VMM signal-to-noise ratio, with voting (seeds: arXiv 1811.10649, "
           "1807.06555)", "",
           "Goal (seed): at 0 dB, noise-aware training plus voting recovers >= 90% of the float "
           "model's accuracy.", "")
    out = []
    for task in tasks:
        rows = []
        for recipe in ("qat4", "qat4_noise") if pg.quick else ("qat4", "qat4_noise", "hwa"):
            if shipped(task, recipe):
                rows += pg.sweep(f"snr_{task}_{recipe}", task, recipe, "int4",
                                 ["vmm_noise.snr_db=" + ",".join(f"{s:g}" for s in snrs)], votes)
        fl = R.summarize(pg.sweep(f"ideal_{task}_float", task, "float", "ideal", [],
                                  seeds=[0]), ["recipe"])[0] if shipped(task, "float") else None
        summ = R.summarize(rows, ["recipe", "votes", "vmm_noise.snr_db"])
        R.plot_curves(summ, "vmm_noise.snr_db", pg.out_dir / f"snr_{task}.png",
                      title=f"{task}: accuracy vs VMM SNR", xlabel="VMM SNR (dB)",
                      chance=1 / n_classes(task), float_ref=fl["accuracy_mean"] if fl else None)
        pg.add("", f"**{task}** at 0 dB (all SNRs: the CSVs and the plot)", "",
               "| recipe | votes | accuracy (%) [95% CI] | interval |", "|---|---|---|---|")
        for s in summ:
            if s["vmm_noise.snr_db"] == 0.0:
                pg.add(f"| {s['recipe']} | {s['votes']} | {ci(s)} | {s['ci_method']} |")
        pg.add("", f"![snr {task}]({pg.rel.name}/snr_{task}.png)", "")
        at0 = {(r["recipe"], r["votes"]): [] for r in rows}
        for r in rows:
            if r["vmm_noise.snr_db"] == 0.0:
                at0[(r["recipe"], r["votes"])].append(r)
        vmax = max(votes)
        if ("qat4_noise", vmax) in at0 and ("qat4", 1) in at0 and fl:
            p = R.compare(at0[("qat4_noise", vmax)], at0[("qat4", 1)])
            best = R.summarize(at0[("qat4_noise", vmax)], ["recipe"])[0]
            frac = best["accuracy_mean"] / fl["accuracy_mean"]
            pg.add(f"*Finding ({task}):* {claim(p, f'qat4_noise with {vmax} votes', 'qat4 with 1 vote')} "
                   f"At 0 dB it keeps {100 * frac:.0f}% of the float accuracy "
                   f"(CI {pct(best['ci_lo'] / fl['accuracy_mean'])}-"
                   f"{pct(best['ci_hi'] / fl['accuracy_mean'])}%); goal >= 90%: "
                   f"**{'met' if best['ci_lo'] >= 0.9 * fl['accuracy_mean'] else 'not shown'}**.",
                   "")
        out += rows
    return out


def section_ber(pg: Page, task: str, bers: list[float]) -> list[dict]:
    pg.add("## 3. Accuracy vs storage raw bit error rate (seed: arXiv 1709.06173)", "")
    rows = pg.sweep(f"ber_{task}", task, "qat4", "int4",
                    ["storage.ber=" + ",".join(f"{b:g}" for b in bers),
                     "storage.encoding=twos_complement,gray",
                     "storage.detection=none,nulling"])
    for r in rows:
        r["storage"] = f"{r['storage.encoding']} + {r['storage.detection']}"
    summ = R.summarize(rows, ["storage", "storage.ber"])
    R.plot_curves(summ, "storage.ber", pg.out_dir / "ber.png", colour_key="storage",
                  style_key=None, logx=True, title=f"{task}, qat4: accuracy vs storage BER",
                  xlabel="raw bit error rate", chance=1 / n_classes(task))
    pg.add("", "| BER | " + " | ".join(sorted({s["storage"] for s in summ})) + " |",
           "|---|" + "---|" * len({s["storage"] for s in summ}))
    for b in bers:
        cells = [ci(s) for s in sorted(summ, key=lambda s: s["storage"]) if s["storage.ber"] == b]
        pg.add(f"| {b:g} | " + " | ".join(cells) + " |")
    pg.add("", f"![ber]({pg.rel.name}/ber.png)", "")
    for b in (1e-3, 1e-2):
        grp = lambda st: [r for r in rows if r["storage"] == st and r["storage.ber"] == b]  # noqa
        a, z = grp("gray + nulling"), grp("twos_complement + none")
        if a and z:
            pg.add(f"*At BER {b:g}:* {claim(R.compare(a, z), 'gray + nulling', 'twos_complement')}")
    pg.add("")
    return rows


def section_age(pg: Page, task: str, ages: list[float]) -> list[dict]:
    pg.add("## 4. Accuracy vs PCM age, with and without digital drift compensation", "")
    rows = []
    for recipe in ("qat4", "hwa"):
        if shipped(task, recipe):
            rows += pg.sweep(f"age_{task}_{recipe}", task, recipe, "pcm",
                             ["drift.age_s=" + ",".join(f"{a:g}" for a in ages),
                              "drift.compensation=none,global"])
    summ = R.summarize(rows, ["recipe", "drift.compensation", "drift.age_s"])
    R.plot_curves(summ, "drift.age_s", pg.out_dir / "age.png", style_key="drift.compensation",
                  style_label=lambda v: "uncompensated" if v == "none" else f"compensated ({v})",
                  age_ticks=True, title=f"{task}: accuracy vs PCM age",
                  xlabel="time since programming", chance=1 / n_classes(task))
    pg.add("", "| age | " + " | ".join(
        f"{r}, {'raw' if c == 'none' else 'comp.'}" for r, c in sorted({(s['recipe'], s['drift.compensation'])
                                                             for s in summ})) + " |",
           "|---|" + "---|" * len({(s['recipe'], s['drift.compensation']) for s in summ}))
    for a in ages:
        cells = [ci(s) for s in sorted(summ, key=lambda s: (s["recipe"], s["drift.compensation"]))
                 if s["drift.age_s"] == a]
        pg.add(f"| {R.AGE_TICKS_S.get(a, f'{a:g} s')} | " + " | ".join(cells) + " |")
    pg.add("", f"![age]({pg.rel.name}/age.png)", "")
    for recipe in sorted({r["recipe"] for r in rows}):
        a = [r for r in rows if r["recipe"] == recipe and r["drift.compensation"] != "none"
             and r["drift.age_s"] == ages[-1]]
        z = [r for r in rows if r["recipe"] == recipe and r["drift.compensation"] == "none"
             and r["drift.age_s"] == ages[-1]]
        if a and z:
            pg.add(f"*{recipe} at {R.AGE_TICKS_S.get(ages[-1], ages[-1])}:* "
                   f"{claim(R.compare(a, z), 'compensation', 'no compensation')}")
    pg.add("")
    return rows


def section_pareto(pg: Page, bits_rows: list[dict], snr_rows: list[dict]) -> None:
    pg.add("## 5. Accuracy vs energy per inference", "",
           "Each point: one (recipe, bits or votes) setting from sections 1-2, energy from the "
           "engine's ledger (docs/energy.md); the line joins the Pareto front.", "")
    for task in sorted({r["task"] for r in bits_rows}):
        pts = []
        for s in R.summarize([r for r in bits_rows if r["task"] == task],
                             ["recipe", "weights.bits"]):
            pts.append({**s, "bits": f"{s['weights.bits']} b", "votes": "1 vote"})
        for s in R.summarize([r for r in snr_rows if r["task"] == task
                              and r["vmm_noise.snr_db"] == 10.0], ["recipe", "votes"]):
            pts.append({**s, "bits": "10 dB", "votes": f"{s['votes']} votes"})
        if pts:
            R.plot_pareto(pts, pg.out_dir / f"pareto_{task}.png",
                          title=f"{task}: accuracy vs energy", chance=1 / n_classes(task))
            pg.add(f"![pareto {task}]({pg.rel.name}/pareto_{task}.png)", "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="one task, one seed, 40 test items, few grid points")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--out-dir", type=Path, default=REPO / "docs" / "results",
                    help="CSVs and plots; the page goes next to it as <out-dir>.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    t0 = time.time()
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.quick:
        tasks = [args.tasks.split(",")[0]] if args.tasks != ",".join(TASKS) else ["digits"]
        pg = Page(out_dir, [0], 40, 1, quick=True)
        bits, snrs, votes, bers, ages = [2, 4], [0.0, 10.0], [1, 3], [1e-2], [3600.0, 31557600.0]
    else:
        tasks = [t for t in args.tasks.split(",") if shipped(t, "float")]
        pg = Page(out_dir, list(range(10)), None, args.workers)
        bits, snrs, votes, bers, ages = BITS, SNRS, [1, 5, 15], BERS, AGES_S
    man = manifest()
    pg.add("# Results: the seeds' claims, measured with nvmstream", "",
           f"Regenerate with `python demos/results.py{' --quick' if args.quick else ''}`. Every "
           "command below is run by the generator exactly as printed. Accuracy: the class at "
           "each sequence's last valid step on the full held-out split; [95% CI] is Wilson over "
           "the test items (one device seed) or a bootstrap over items x seeds "
           f"({len(pg.seeds)} seeds).", "",
           "## Shipped models", "", "| model | torch test (%) [95% CI] | n |", "|---|---|---|")
    from nvmstream.runtime.stats import wilson_interval
    for name, m in sorted(man.items()):
        n = m["test_split"]["n"]
        iv = wilson_interval(round(m["torch_test_accuracy"] * n), n)
        pg.add(f"| {name} | {iv.fmt()} | {n} |")
    pg.add("")
    bits_rows = section_bits(pg, tasks, bits)
    snr_rows = section_snr(pg, tasks, snrs, votes)
    section_ber(pg, tasks[0], bers)
    section_age(pg, tasks[0], ages)
    section_pareto(pg, bits_rows, snr_rows)
    pg.add(f"_Generated in {time.time() - t0:.0f} s by `python demos/results.py"
           f"{' --quick' if args.quick else ''}`._", "")
    page = out_dir.with_suffix(".md")
    page.write_text("\n".join(pg.md))
    print(f"wrote {page} and {out_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
