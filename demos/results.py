"""Regenerate docs/results.md: the seeds' results reproduced (or refuted) with nvmstream.

    python demos/results.py                 # every task, every section (see the page's footer)
    python demos/results.py --tasks digits,keywords     # a page with these tasks only
    python demos/results.py --quick --out-dir /tmp/results    # a reduced run (a test runs it)

Every table comes from an `nvmstream` command printed above it and run exactly as printed
(runtime/report.py `run_printed`: the page's commands are the ones that made its numbers).
Sweeps are printed with ``--resume``: a CSV that already holds every run of that exact command
on that exact model (its provenance line: command and model sha256) is reused, any other CSV at
that path is deleted first, so a re-run after one task's models change recomputes only that
task. Accuracies carry 95% intervals: Wilson over the test items for one device seed, a
bootstrap over items x device seeds for several; every "A beats B" on the page is a paired test
on the same items (exact McNemar for one seed, paired bootstrap over items x seeds otherwise).
Calibration: `nvmstream sweep` calibrates on a seeded, class-balanced subsample of x_train.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from nvmstream.runtime import report as R

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODELS = HERE / "models"
DATA = HERE / "data"
TASKS = ("japanese_vowels", "basic_motions", "digits", "keywords")
# The published pages (what `python demos/results.py` without --tasks regenerates): keywords,
# slower and on a reduced split, has its own page.
PAGES = (["--tasks", "japanese_vowels,basic_motions,digits"],
         ["--tasks", "keywords", "--out-dir", str(REPO / "docs" / "results_keywords")])
#: device seeds per section. The noisy sections get 10 (one worker, load ~8, per device seed and
#: task: SNR with 1 and 5 votes ~50 s on japanese_vowels, ~5-12 s on the others; 15 votes at
#: 0 dB ~40 s on japanese_vowels; storage BER ~12 s; PCM age ~27 s; RRAM ~4 s). Measured on
#: the page as made: its 1112 runs took 8379 s of worker time at load ~9-10 (the CSVs'
#: `seconds`), i.e. ~70 min wall with 2 workers for a regeneration from nothing.
#: `int4` without noise and `ideal` are deterministic: the bits section runs a second seed
#: only to check that it reproduces the first bit for bit (the generator asserts it).
SECTION_SEEDS = {"bits": 2, "snr": 10, "snr15": 10, "ber": 10, "age": 10, "rram": 10}
#: fewer seeds for a task where a section's runs are dear (task -> section -> seeds). Empty:
#: japanese_vowels' PCM and RRAM age sections, once at 5 (a run took ~24 s at load ~10, 1.7 s
#: on a quiet machine), were extended to 10 by `--resume` on a quiet machine.
TASK_SEEDS: dict[str, dict[str, int]] = {}
#: the extra 0 dB point: the seed's claim is that voting restores accuracy
MANY_VOTES = 15
#: per-task reductions: keywords (98 frames x hidden 64 per item, ~4x japanese_vowels per run)
#: on half its test split (190 items, 19 per class: the split cycles through the classes),
#: 2 seeds and fewer grid points
REDUCED = {"keywords": {"seeds": 2, "bits_seeds": 1, "limit": 190, "snrs": [0.0, 10.0],
                        "bers": [1e-2], "storage": 2, "age_recipes": ("qat4",), "rram": False,
                        "many_votes": False, "bits_gap": False, "adc_per_column": True}}
AGES_S = [86400.0, 31557600.0]
BITS = [2, 3, 4, 5, 6, 8]
SNRS = [0.0, 10.0]
BERS = [1e-3, 1e-2]
#: storage redundancy options: label -> fixed grid axes (one sweep each, BER swept)
STORAGE = {
    "two's complement, no detection": ["storage.encoding=twos_complement",
                                       "storage.detection=none"],
    "gray + nulling": ["storage.encoding=gray", "storage.detection=nulling"],
    "4 guard bits + nulling": ["storage.guard_bits=4", "storage.detection=nulling"],
    "parity per 8 codes + nulling": ["storage.parity_group=8", "storage.detection=nulling"],
    "unary": ["storage.encoding=unary"],
}
STORAGE_SLUG = {"two's complement, no detection": "none", "gray + nulling": "gray_null",
                "4 guard bits + nulling": "guard4_null",
                "parity per 8 codes + nulling": "parity8_null", "unary": "unary"}
PUBLISHED = {
    "japanese_vowels": "about 98-99% for the best methods of the UEA multivariate archive "
                       "(Ruiz et al., \"The great multivariate time series classification bake "
                       "off\", Data Min. Knowl. Disc. 2021)",
    "basic_motions": "100% for the best methods of the UEA archive (Ruiz et al. 2021)",
}


#: the seeds' claims the page tests (each "A beats B", checked per task by a paired test)
T_PTQ = "QAT beats post-training quantization at 4/4/4 bits (2002.10636)"
T_NA = "noise-aware training beats plain QAT at 0 dB, same number of votes (1807.06555)"
T_VOTE = "voting restores accuracy at 0 dB: qat4_noise with N votes beats 1 vote (1811.10649)"
T_MORE = f"at 0 dB, {MANY_VOTES} votes beat 5"
T_NAV = "noise-aware training + voting beats plain QAT at 0 dB"
T_COMP = "global drift compensation beats none on PCM at 1 y (aihwkit)"
T_TRACK = "ADC ranges re-set at the age beat fixed ones on PCM at 1 y (global compensation)"
T_HWA = "hardware-aware training (hwa) beats qat4 on pcm-1d"
T_RRAM = "global drift compensation beats none on RRAM at 1 y"


def claims_summary(pg: "Page") -> list[str]:
    """The page's summary: for each seed claim, on which tasks it holds (resolved in the
    claimed direction), is reversed (resolved against it) or is unresolved."""
    out = ["## Which seed claims hold", "",
           "Each claim is \"A beats B\", tested per task (and recipe) by a paired test on the "
           "same items (sections below). Holds: resolved in the claimed direction; reversed: "
           "resolved against it; unresolved: the 95% interval of the difference contains 0 "
           "or p >= 0.05 (for one device seed the interval is Wald's and p the exact McNemar "
           "test's: near the boundary they can disagree, and then the exact test decides).",
           ""]
    for topic, entries in pg.claims.items():
        counts = {v: sum(e[1] == v for e in entries) for v in ("holds", "reversed",
                                                               "unresolved")}
        out.append(f"- **{topic}**: holds in {counts['holds']} of {len(entries)} comparisons"
                   + (f", reversed in {counts['reversed']}" if counts["reversed"] else "")
                   + (f", unresolved in {counts['unresolved']}" if counts["unresolved"]
                      else "") + ".")
        for task, verdict, text in entries:
            out.append(f"  - {task} ({verdict}): {text}")
    return out + [""]


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def ci(s: dict) -> str:
    return f"{pct(s['accuracy_mean'])} [{pct(s['ci_lo'])}, {pct(s['ci_hi'])}]"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def provenance(csv: Path) -> dict:
    try:
        with open(csv) as f:
            first = f.readline()
    except OSError:
        return {}
    tag = "# nvmstream provenance:"
    if not first.startswith(tag):
        return {}
    try:
        return json.loads(first[len(tag):])
    except ValueError:
        return {}


class Page:
    """Markdown being written plus the settings every command shares."""

    def __init__(self, out_dir: Path, limit: int | None, workers: int, quick: bool = False):
        self.quick = quick
        self.md: list[str] = []
        self.headlines: list[str] = []
        self.ran: dict[str, list[dict]] = {}     # command -> rows (a command runs once)
        self.out_dir, self.limit, self.workers = out_dir, limit, workers
        self.rel = out_dir.resolve().relative_to(REPO) if out_dir.resolve().is_relative_to(
            REPO) else out_dir.resolve()
        self.commands_run = 0
        #: seed claim -> [(task, "holds" | "reversed" | "unresolved", sentence)]
        self.claims: dict[str, list[tuple[str, str, str]]] = {}

    def claim(self, topic: str, task: str, p, better: str, worse: str) -> str:
        """:func:`claim`, also recorded under ``topic`` (a seed's claim that ``better`` beats
        ``worse``) for the page's summary of which claims hold."""
        text = claim(p, better, worse)
        resolved = p.resolved and p.p_value < 0.05
        verdict = "unresolved" if not resolved else ("holds" if p.diff > 0 else "reversed")
        self.claims.setdefault(topic, []).append((task, verdict, text))
        return text

    def add(self, *lines: str) -> None:
        self.md.extend(lines)

    def seeds(self, task: str, section: str) -> list[int]:
        if self.quick:
            return [0]
        red = REDUCED.get(task, {})
        n = red.get(f"{section}_seeds", red.get("seeds", SECTION_SEEDS[section]))
        n = TASK_SEEDS.get(task, {}).get(section, n)
        return list(range(min(n, SECTION_SEEDS[section])))

    def limit_for(self, task: str) -> int | None:
        return self.limit or (None if self.quick else REDUCED.get(task, {}).get("limit"))

    def sweep(self, tag: str, task: str, recipe: str, profile: str, grid: list[str],
              votes: list[int] | None = None, seeds: list[int] | None = None,
              section: str | None = None) -> list[dict]:
        """Print an `nvmstream sweep` command on the page, run it exactly as printed (reusing
        a CSV of this command with fewer seeds on this model: --resume adds the missing
        seeds), return its rows (tagged)."""
        seeds = seeds if seeds is not None else self.seeds(task, section or tag.split("_")[0])
        model = MODELS / f"{task}_{recipe}.onnx"
        parts = ["nvmstream sweep", f"demos/models/{model.name}",
                 f"--data demos/data/{task}.npz", f"--profile {profile}"]
        if profile != "ideal":      # the task's conversion choices (no ADC on `ideal`)
            grid = [g for g in convert_choices(task, recipe) if g.split("=")[0] not in
                    {a for axis in grid for a in axis.split("=")[0].split("+")}] + list(grid)
        parts += [f"--grid {g}" for g in grid]
        parts += [f"--seeds {','.join(map(str, seeds))}",
                  f"--votes {','.join(map(str, votes or [1]))}"]
        if self.limit_for(task):
            parts.append(f"--limit {self.limit_for(task)}")
        parts += [f"--workers {self.workers}", f"--out {self.rel}/{tag}.csv", "--resume",
                  "--quiet"]
        command = " ".join(parts)
        self.add(f"`{command}`  ")
        if command not in self.ran:
            csv = REPO / self.rel / f"{tag}.csv" if not self.rel.is_absolute() else \
                self.rel / f"{tag}.csv"
            prov = provenance(csv)
            stale = csv.exists() and (not same_but_more_seeds(prov.get("command", ""), command)
                                      or prov.get("model_sha256") != sha256(model))
            if stale and same_but_more_seeds(command, prov.get("command", "")) \
                    and prov.get("model_sha256") == sha256(model):
                keep_seeds(csv, seeds)      # made with more seeds than asked now: keep these
                stale = False
            if stale:
                csv.unlink()
            if not csv.exists() or prov.get("command") != command:
                self.commands_run += 1      # computed from nothing, or extended by seeds
            try:
                rows = R.run_printed(command, cwd=REPO)
            except RuntimeError as e:
                if "--resume of a different sweep" not in str(e):
                    raise
                csv.unlink()             # e.g. the profile changed: recompute from nothing
                self.commands_run += 1
                rows = R.run_printed(command, cwd=REPO)
            for r in rows:
                r["task"], r["recipe"] = task, recipe
            self.ran[command] = rows
        return [dict(r) for r in self.ran[command]]


def _split_seeds(command: str) -> tuple[list[str], set[int]]:
    argv = shlex.split(command)
    if "--seeds" not in argv:
        return argv, set()
    i = argv.index("--seeds")
    return argv[:i] + argv[i + 2:], {int(v) for v in argv[i + 1].split(",")}


def same_but_more_seeds(old: str, new: str) -> bool:
    """``old`` (the command that wrote a CSV) is ``new`` with a subset of its device seeds:
    the CSV's rows are runs of ``new`` and `sweep --resume` adds only the missing seeds (it
    refuses the file unless model, data, profile hash, calibration and test items match)."""
    (a, sa), (b, sb) = _split_seeds(old), _split_seeds(new)
    return a == b and sa <= sb


def keep_seeds(csv: Path, seeds: list[int]) -> None:
    """Drop the rows of other device seeds from a sweep CSV (its provenance line stays until
    `sweep --resume` rewrites it for the command that now uses the file)."""
    lines = csv.read_text().splitlines(keepends=True)
    head = [ln for ln in lines if ln.startswith("#")]
    body = [ln for ln in lines if not ln.startswith("#")]
    col = body[0].rstrip("\n").split(",").index("seed")
    keep = [ln for ln in body[1:] if ln.endswith("\n") and len(ln.split(",")) > col
            and ln.split(",")[col].isdigit() and int(ln.split(",")[col]) in seeds]
    csv.write_text("".join(head + body[:1] + keep))


def convert_choices(task: str, recipe: str = "qat4") -> list[str]:
    """The per-model conversion choices of ``task``'s ``recipe`` (``TaskConfig.convert_for``:
    profile overrides its models are trained for and converted with), one grid axis each."""
    from nvmstream.runtime.training.tasks import TASKS as PRESETS
    return list(PRESETS[task].convert_for(recipe)) if task in PRESETS else []


def convert_skipped(task: str) -> tuple[str, ...]:
    """Recipes of ``task`` trained and converted without its conversion choices."""
    from nvmstream.runtime.training.tasks import TASKS as PRESETS
    return PRESETS[task].convert_skip if task in PRESETS else ()


def manifest() -> dict:
    return json.loads((MODELS / "manifest.json").read_text())["models"]


def shipped(task: str, recipe: str) -> bool:
    return (MODELS / f"{task}_{recipe}.onnx").exists()


def n_classes(task: str) -> int:
    import numpy as np
    with np.load(DATA / f"{task}.npz", allow_pickle=False) as d:
        return len(d["labels"])


def claim(p, better: str, worse: str) -> str:
    """One sentence for a paired comparison: resolved (the 95% interval excludes 0 and
    p < 0.05) or not."""
    resolved = p.resolved and p.p_value < 0.05
    if resolved and p.diff > 0:
        return f"{better} beats {worse}: {p.fmt()}."
    if resolved:
        return f"{worse} beats {better}: {p.fmt()}."
    return f"no resolved difference between {better} and {worse}: {p.fmt()}."


def goal_status(lo: float, hi: float, target: float) -> str:
    """'met' when the whole interval clears ``target``, 'not met' when it lies below it,
    else 'unresolved' (the interval straddles the target)."""
    if lo >= target:
        return "met"
    if hi < target:
        return "not met"
    return "unresolved"


def near_goal(lo: float, hi: float, target: float, tol: float = 0.0005) -> str:
    """A sentence giving an interval end to 0.001 pt when it lies within ``tol`` of ``target``
    (its rounding to 0.1 pt would hide on which side of the goal it is), else ''."""
    ends = [(name, v) for name, v in (("lower", lo), ("upper", hi)) if abs(v - target) < tol]
    return "".join(f" Its {name} end is {100 * v:+.3f} pt, "
                   f"{'above' if v > target else 'below' if v < target else 'at'} "
                   f"{100 * target:+.0f} pt by {100 * abs(v - target):.3f} pt."
                   for name, v in ends)


def ideal_float(pg: Page, task: str) -> dict | None:
    if not shipped(task, "float"):
        return None
    return R.summarize(pg.sweep(f"ideal_{task}_float", task, "float", "ideal", [], seeds=[0]),
                       ["recipe"])[0]


# ------------------------------------------------------------------------------ sections
def section_bits(pg: Page, task: str, bits: list[int]) -> list[dict]:
    pg.add(f"### {task}: accuracy vs weight/DAC/ADC bits (seed: arXiv 2002.10636)", "",
           "Goal (seed): with quantization-aware training, 4/4/4 bits stay within 1 pt of the "
           "float model. `int4` with no noise is deterministic: one device seed is the whole "
           "story, the interval is over the test items"
           + (f" (device seeds {', '.join(map(str, pg.seeds(task, 'bits')[1:]))} are run "
              "too and reproduce seed 0 item for item: the generator checks it)."
              if len(pg.seeds(task, "bits")) > 1 else "."), "")
    rows, ideal = [], {}
    for recipe in ("float", "qat4"):
        if not shipped(task, recipe):
            continue
        rs = pg.sweep(f"bits_{task}_{recipe}", task, recipe, "int4",
                      ["weights.bits+dac.bits+adc.bits=" + ",".join(map(str, bits))])
        # `int4` has no noise: every further seed must reproduce seed 0 item for item
        for r in rs:
            first = next(r0 for r0 in rs if r0["seed"] == 0
                         and r0["weights.bits"] == r["weights.bits"])
            if r["correct_hex"] != first["correct_hex"]:
                raise RuntimeError(f"bits_{task}_{recipe}: int4 seed {r['seed']} differs "
                                   f"from seed 0 at {r['weights.bits']} bits")
        rows += [r for r in rs if r["seed"] == 0]
        ideal[recipe] = pg.sweep(f"ideal_{task}_{recipe}", task, recipe, "ideal", [],
                                 seeds=[0])
    summ = R.summarize(rows, ["recipe", "weights.bits"])
    recipes = sorted({r["recipe"] for r in rows})
    pg.add("", "| bits | " + " | ".join(f"{r} (%)" for r in recipes) + " |",
           "|---|" + "---|" * len(recipes))
    for b in bits:
        cells = [next((ci(s) for s in summ if s["recipe"] == r and s["weights.bits"] == b),
                      "") for r in recipes]
        pg.add(f"| {b} | " + " | ".join(cells) + " |")
    pg.add("| float (`ideal`) | " + " | ".join(
        ci(R.summarize(ideal[r], ["recipe"])[0]) if r in ideal else "" for r in recipes) + " |",
        "")
    col = {}
    if REDUCED.get(task, {}).get("adc_per_column") and not pg.quick:
        # a design alternative, not the int4 profile: one ADC range per column
        pg.add("Design alternative (not the `int4` profile): the same chip with one ADC range "
               "per column (`adc.range=per_column`) instead of one per tile, 4/4/4 bits, the "
               "same models:", "")
        for r in recipes:
            col[r] = pg.sweep(f"bits_{task}_{r}_per_column", task, r, "int4",
                              ["adc.range=per_column"], seeds=[0])
        pg.add("", "| 4/4/4, ADC range | " + " | ".join(f"{r} (%)" for r in recipes) + " |",
               "|---|" + "---|" * len(recipes))
        pg.add("| per tile (`int4`) | " + " | ".join(
            next((ci(s) for s in summ if s["recipe"] == r and s["weights.bits"] == 4), "")
            for r in recipes) + " |")
        pg.add("| per column | " + " | ".join(
            ci(R.summarize(col[r], ["recipe"])[0]) for r in recipes) + " |", "")
        if "float" in col and "qat4" in col and "float" in ideal:
            pg.add(f"- float with per-column ADC ranges vs the float model (ideal): "
                   + claim(R.compare(col["float"], ideal["float"]), "float per column",
                           "float (ideal)"),
                   "- the energy model prices both the same per inference (docs/energy.md: "
                   "the range granularity changes only the reference-DAC writes of an ADC "
                   "retune); on silicon a per-column range needs a reference per column "
                   "instead of one per shared ADC bank, which the model does not price.", "")
    fl = R.summarize(ideal["float"], ["recipe"])[0] if "float" in ideal else None
    R.plot_curves(summ, "weights.bits", pg.out_dir / f"bits_{task}.png", style_key=None,
                  title=f"{task}: accuracy vs bits (weights = DAC = ADC)",
                  xlabel="bits", chance=1 / n_classes(task),
                  float_ref=fl["accuracy_mean"] if fl else None)
    pg.add(f"![bits {task}]({pg.rel.name}/bits_{task}.png)", "")
    if "float" in ideal and "qat4" in ideal:
        q4 = [r for r in rows if r["recipe"] == "qat4" and r["weights.bits"] == 4]
        f4 = [r for r in rows if r["recipe"] == "float" and r["weights.bits"] == 4]
        p = R.compare(q4, ideal["float"])
        status = goal_status(p.lo, p.hi, -0.01)
        note = near_goal(p.lo, p.hi, -0.01).strip()
        q = R.summarize(q4, ["recipe"])[0]
        pg.add(f"*Finding ({task}):* qat4 at 4/4/4 bits minus the float model (ideal): "
               f"{p.fmt()}. Within 1 pt: **{status}** (met: the interval's lower end is above "
               "-1 pt; not met: its upper end is below -1 pt)."
               + (f" {note}" if note else "") + "  ")
        pg.add(f"Post-training quantization for comparison: "
               f"{pg.claim(T_PTQ, task, R.compare(q4, f4), 'qat4 at 4/4/4', 'the float model at 4/4/4')}", "")
        pg.headlines.append(
            f"| {task} | 4/4/4 QAT within 1 pt of float | qat4 {ci(q)} vs float {ci(fl)}; "
            f"difference {p.fmt()}" + (f"; {note[0].lower()}{note[1:]}" if note else "")
            + f" | **{status}** |")
    return rows


def train_split_accuracy(task: str, recipe: str, profile: str) -> tuple[int, int]:
    """(correct, n) of ``recipe`` on the task's *training* split, converted and run as a sweep
    job runs it (calibration: the same class-balanced subsample of x_train), device seed 0."""
    import tempfile

    import numpy as np

    from nvmstream.runtime.sweep import Job, run_job
    with np.load(DATA / f"{task}.npz", allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    for k in ("x", "y", "lengths"):
        if f"{k}_train" in arrays:
            arrays[f"{k}_test"] = arrays[f"{k}_train"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{task}_train.npz"
        np.savez(path, **arrays)
        conv = tuple((k, v) for k, v in (o.split("=", 1) for o in convert_choices(task,
                                                                                   recipe)))
        row = run_job(Job(str(MODELS / f"{task}_{recipe}.onnx"), str(path), profile, conv, 0,
                          1))
    return round(row["accuracy"] * row["n"]), row["n"]


def section_bits_gap(pg: Page, task: str) -> None:
    """Which of the three 4-bit quantizers costs qat4 its accuracy, and whether the recipe
    fits its training split on the chip (a bound on what more fine-tuning could buy)."""
    from nvmstream.runtime.stats import wilson_interval
    if not shipped(task, "qat4"):
        return
    pg.add(f"*{task}: where the 4/4/4 gap comes from.* qat4 with each quantizer at 4 or 8 "
           "bits (the others as given), `int4`, device seed 0 (deterministic):", "")
    rows = pg.sweep(f"bitsplit_{task}_qat4", task, "qat4", "int4",
                    ["weights.bits=4,8", "dac.bits=4,8", "adc.bits=4,8"], seeds=[0])
    pg.add("", "| weights | DAC | ADC | qat4 (%) [95% Wilson] |", "|---|---|---|---|")
    key = lambda r: (r["weights.bits"], r["dac.bits"], r["adc.bits"])  # noqa: E731
    by = {key(r): r for r in rows}
    for k in sorted(by, reverse=True):
        pg.add(f"| {k[0]} | {k[1]} | {k[2]} | {ci(R.summarize([by[k]], ['recipe'])[0])} |")
    pg.add("")
    if (8, 8, 8) in by:
        for k, what in (((4, 8, 8), "4-bit weights alone"), ((8, 4, 8), "4-bit DAC alone"),
                        ((8, 8, 4), "4-bit ADC alone"), ((4, 4, 4), "all three at 4 bits")):
            if k in by:
                pg.add(f"- {what} vs 8/8/8: "
                       + claim(R.compare([by[k]], [by[(8, 8, 8)]]), what, "8/8/8"))
    n_test = by[(4, 4, 4)]["n"] if (4, 4, 4) in by else 0
    if n_test:
        pg.add(f"- one of the {n_test} test items is {100 / n_test:.2g} pt, so a 1-pt goal "
               + ("cannot be resolved on this test split at all." if n_test < 200 else
                  "needs a difference interval narrower than the gap itself."))
        wrong = n_test - round(by[(4, 4, 4)]["accuracy"] * n_test)
        p_best = min(1.0, 2 * 0.5 ** wrong)      # exact McNemar: `wrong` wins, no loss
        if p_best >= 0.05:
            pg.add(f"- qat4 misses {wrong} of the {n_test}: a retrained qat4 could win at most "
                   f"those {wrong} items, and {wrong} wins with no loss give p = {p_best:.3g} "
                   "(exact McNemar), so no retrained qat4 can be shown better than this one "
                   "on this test split.")
    if not pg.quick:
        c, n = train_split_accuracy(task, "qat4", "int4")
        man = manifest().get(f"{task}_qat4", {})
        fl_train = manifest().get(f"{task}_float", {}).get("torch_train_accuracy", float("nan"))
        pg.add(f"- on its own training split (n = {n}; the generator converts and runs it as "
               f"a sweep job does), qat4 at 4/4/4 on `int4` scores "
               f"{wilson_interval(c, n).fmt()}: "
               + ("it does not fit its training data on the chip, where the float model "
                  f"fits {pct(fl_train)}% in torch: part of the gap is underfitting in the "
                  f"fine-tuning ({man.get('fine_tune_epochs')} epochs after "
                  f"{man.get('epochs')} float epochs)."
                  if c / n < 0.98 else
                  "it fits the training data on the chip; the test gap is generalisation "
                  "under 4-bit quantization, which more fine-tuning epochs would not "
                  "obviously close."))
    pg.add("")


def section_snr(pg: Page, task: str, snrs: list[float], votes: list[int]) -> list[dict]:
    pg.add(f"### {task}: accuracy vs VMM signal-to-noise ratio, with voting (seeds: arXiv "
           "1811.10649, 1807.06555)", "",
           "Goal (seed): at 0 dB, noise-aware training plus voting recovers >= 90% of the float "
           "model's accuracy. `int4` plus VMM noise N(0, P/10^(SNR/10)) on every matrix "
           "output; votes = majority of replicas, each with its own noise.", "")
    rows = []
    for recipe in ("qat4", "qat4_noise"):
        if shipped(task, recipe):
            rows += pg.sweep(f"snr_{task}_{recipe}", task, recipe, "int4",
                             ["vmm_noise.snr_db=" + ",".join(f"{s:g}" for s in snrs)], votes)
    if (0.0 in snrs and shipped(task, "qat4_noise")
            and REDUCED.get(task, {}).get("many_votes", True)):
        rows += pg.sweep(f"snr0_{task}_qat4_noise_v{MANY_VOTES}", task, "qat4_noise", "int4",
                         ["vmm_noise.snr_db=0"], [MANY_VOTES], section="snr15")
    fl = ideal_float(pg, task)
    summ = R.summarize(rows, ["recipe", "votes", "vmm_noise.snr_db"])
    R.plot_curves(summ, "vmm_noise.snr_db", pg.out_dir / f"snr_{task}.png",
                  title=f"{task}: accuracy vs VMM SNR", xlabel="VMM SNR (dB)",
                  chance=1 / n_classes(task), float_ref=fl["accuracy_mean"] if fl else None)
    cols = sorted({(s["recipe"], s["votes"]) for s in summ}, key=lambda k: (k[0], k[1]))
    pg.add("", "| SNR (dB) | " + " | ".join(f"{r}, {v} vote{'s' * (v > 1)}" for r, v in cols)
           + " |", "|---|" + "---|" * len(cols))
    for snr in snrs:
        cells = [next((ci(s) for s in summ if (s["recipe"], s["votes"]) == c
                       and s["vmm_noise.snr_db"] == snr), "") for c in cols]
        pg.add(f"| {snr:g} | " + " | ".join(cells) + " |")
    if summ:
        pg.add("", f"Intervals: {summ[0]['ci_method']}.")
    pg.add("", f"![snr {task}]({pg.rel.name}/snr_{task}.png)", "")
    at0: dict[tuple, list] = {}
    for r in rows:
        if r["vmm_noise.snr_db"] == 0.0:
            at0.setdefault((r["recipe"], r["votes"]), []).append(r)
    if ("qat4", 1) not in at0 or not fl:
        return rows
    noisy = sorted(v for (rec, v) in at0 if rec == "qat4_noise")

    def vs(va, ra, vb, rb, topic) -> str:
        lab = lambda rec, v: f"{rec} with {v} vote{'s' * (v > 1)}"  # noqa: E731
        return pg.claim(topic, task, R.compare(at0[(ra, va)], at0[(rb, vb)]), lab(ra, va),
                        lab(rb, vb))
    pg.add(f"*Findings ({task}, 0 dB; paired tests):*")
    if 1 in noisy:
        pg.add("- noise-aware training alone: " + vs(1, "qat4_noise", 1, "qat4", T_NA))
    for v in noisy:
        if v > 1 and ("qat4", v) in at0:
            pg.add(f"- noise-aware training alone, {v} votes each: "
                   + vs(v, "qat4_noise", v, "qat4", T_NA))
    for v in noisy:
        if v > 1:
            pg.add(f"- noise-aware training + {v} votes: " + vs(v, "qat4_noise", 1, "qat4", T_NAV))
            pg.add(f"- voting alone ({v} votes): " + vs(v, "qat4_noise", 1, "qat4_noise", T_VOTE))
    if len([v for v in noisy if v > 1]) > 1:
        v1, v2 = [v for v in noisy if v > 1][-2:]
        pg.add(f"- {v2} votes rather than {v1}: " + vs(v2, "qat4_noise", v1, "qat4_noise", T_MORE))
    for v in noisy:
        if v == 1:
            continue
        best = R.summarize(at0[("qat4_noise", v)], ["recipe"])[0]
        frac = best["accuracy_mean"] / fl["accuracy_mean"]
        status = goal_status(best["ci_lo"], best["ci_hi"], 0.9 * fl["accuracy_mean"])
        pg.add(f"- qat4_noise with {v} votes keeps {100 * frac:.0f}% of the float accuracy "
               f"(interval {100 * best['ci_lo'] / fl['accuracy_mean']:.0f}-"
               f"{100 * best['ci_hi'] / fl['accuracy_mean']:.0f}%, the float accuracy taken as "
               f"exact; {best['seeds']} device seeds); goal >= 90%: **{status}**.")
        pg.headlines.append(
            f"| {task} | 0 dB: noise-aware training + {v} votes >= 90% of float | "
            f"{ci(best)} = {100 * frac:.0f}% of float {pct(fl['accuracy_mean'])} | "
            f"**{status}** |")
    pg.add("")
    return rows


def storage_bits(cfg: list[str]) -> float:
    from nvmstream.devices import load_profile
    return load_profile("int4", cfg).storage_bits_per_code


def section_ber(pg: Page, task: str, bers: list[float]) -> list[dict]:
    pg.add(f"### {task}: accuracy vs storage raw bit error rate (seed: arXiv 1709.06173)", "",
           "Goal (seed): say what storage redundancy buys at BER 1e-3 and 1e-2. qat4 on `int4`, "
           "each stored bit of each code flips with probability BER when the codes are read "
           "for programming; nulling sets a detected code to 0. Stored bits per code include "
           "the redundancy (what the energy model charges).", "")
    k = 2 if pg.quick else REDUCED.get(task, {}).get("storage", 4)
    options = {lab: STORAGE[lab] for lab in list(STORAGE)[:k]}
    rows = []
    for label, cfg in options.items():
        rs = pg.sweep(f"ber_{task}_{STORAGE_SLUG[label]}", task, "qat4", "int4",
                      ["storage.ber=" + ",".join(f"{b:g}" for b in bers)]
                      + [f"{c.split('=')[0]}={c.split('=')[1]}" for c in cfg])
        for r in rs:
            r["storage"] = label
        rows += rs
    summ = R.summarize(rows, ["storage", "storage.ber"])
    labels = list(options)
    R.plot_curves(summ, "storage.ber", pg.out_dir / f"ber_{task}.png", colour_key="storage",
                  style_key=None, logx=True, title=f"{task}, qat4: accuracy vs storage BER",
                  xlabel="raw bit error rate", chance=1 / n_classes(task))
    pg.add("", "| BER | " + " | ".join(f"{lab} ({storage_bits(options[lab]):g} b/code)"
                                        for lab in labels) + " |",
           "|---|" + "---|" * len(labels))
    for b in bers:
        cells = [next((ci(s) for s in summ if s["storage"] == lab and s["storage.ber"] == b),
                      "") for lab in labels]
        pg.add(f"| {b:g} | " + " | ".join(cells) + " |")
    pg.add("", f"![ber {task}]({pg.rel.name}/ber_{task}.png)", "")
    base = labels[0]
    for b in (1e-3, 1e-2):
        grp = lambda lab: [r for r in rows if r["storage"] == lab and r["storage.ber"] == b]  # noqa
        if not grp(base):
            continue
        pg.add(f"*At BER {b:g} ({task}):*")
        best, best_d = None, -math.inf
        for lab in labels[1:]:
            if grp(lab):
                p = R.compare(grp(lab), grp(base))
                pg.add(f"- {claim(p, lab, 'no redundancy')}")
                if p.diff > best_d:
                    best, best_d = (lab, p), p.diff
        pg.add("")
        if best:
            lab, p = best
            pg.headlines.append(
                f"| {task} | storage BER {b:g}: what redundancy buys | best: {lab} "
                f"({storage_bits(options[lab]):g} b/code), {p.fmt()} vs no redundancy | "
                f"**{'gain resolved' if p.resolved and p.p_value < 0.05 and p.diff > 0 else 'no resolved gain'}** |")
    return rows


def section_age(pg: Page, task: str, ages: list[float]) -> list[dict]:
    pg.add(f"### {task}: accuracy vs PCM and RRAM age, drift compensation, ADC range tracking",
           "",
           "`pcm`: aihwkit's PCM statistics (programming noise, 1/f read noise, drift nu), "
           "4-bit. `drift.compensation=global`: one digital gain after the ADC measured on a "
           "reference read at programming and at the age (aihwkit GlobalDriftCompensation); "
           "`adc.track_drift=true`: the ADC ranges are re-calibrated on the drifted weights "
           "(a chip that retunes its ADC; false, the profile default, keeps the ranges set at "
           "programming). hwa was trained for `pcm-1d` (1 day, global compensation, fixed "
           "ranges).", "")
    rows = []
    recipes = ("qat4",) if pg.quick else REDUCED.get(task, {}).get("age_recipes",
                                                                   ("qat4", "hwa"))
    for recipe in recipes:
        if shipped(task, recipe):
            rows += pg.sweep(f"age_{task}_{recipe}", task, recipe, "pcm",
                             ["drift.age_s=" + ",".join(f"{a:g}" for a in ages),
                              "drift.compensation=none,global",
                              "adc.track_drift=false,true"])
    for r in rows:
        r["setting"] = (f"{r['recipe']}, {'no comp.' if r['drift.compensation'] == 'none' else 'global comp.'}"
                        f", {'ADC tracks' if r['adc.track_drift'] in (True, 'true') else 'ADC fixed'}")
    summ = R.summarize(rows, ["setting", "drift.age_s"])
    settings = sorted({s["setting"] for s in summ})
    pg.add("", "| PCM age | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings))
    for a in ages:
        cells = [next((ci(s) for s in summ if s["setting"] == st and s["drift.age_s"] == a), "")
                 for st in settings]
        pg.add(f"| {R.AGE_TICKS_S.get(a, f'{a:g} s')} | " + " | ".join(cells) + " |")
    for r in rows:
        r["curve"] = r["setting"].split(", ", 1)[1]
    R.plot_curves(R.summarize(rows, ["recipe", "curve", "drift.age_s"]), "drift.age_s",
                  pg.out_dir / f"age_{task}.png", style_key="curve", age_ticks=True,
                  title=f"{task}: accuracy vs PCM age", xlabel="time since programming",
                  chance=1 / n_classes(task))
    pg.add("", f"![age {task}]({pg.rel.name}/age_{task}.png)", "")
    last = ages[-1]
    tick = R.AGE_TICKS_S.get(last, f"{last:g} s")

    def grp(recipe, comp, track, age=last):
        return [r for r in rows if r["recipe"] == recipe and r["drift.compensation"] == comp
                and (r["adc.track_drift"] in (True, "true")) == track
                and r["drift.age_s"] == age]
    for recipe in recipes:
        if not grp(recipe, "global", False):
            continue
        pg.add(f"*{task}, {recipe}, PCM at {tick}:*",
               "- " + pg.claim(T_COMP, task, R.compare(grp(recipe, "global", False),
                                                       grp(recipe, "none", False)),
                               f"global compensation ({recipe})", f"none ({recipe})")
               + " (fixed ADC ranges)",
               "- " + pg.claim(T_TRACK, task, R.compare(grp(recipe, "global", True),
                                                        grp(recipe, "global", False)),
                               f"ADC tracking drift ({recipe})",
                               f"fixed ADC ranges ({recipe})")
               + " (global compensation)")
    if not pg.quick and grp("hwa", "global", False, 86400.0):
        p = R.compare(grp("hwa", "global", False, 86400.0), grp("qat4", "global", False, 86400.0))
        pg.add(f"- PCM at 1 d, the defaults of `pcm-1d`: {pg.claim(T_HWA, task, p, 'hwa', 'qat4')}")
    pg.add("")
    if shipped(task, "qat4") and not pg.quick and REDUCED.get(task, {}).get("rram", True):
        rr = pg.sweep(f"rram_{task}_qat4", task, "qat4", "rram",
                      ["drift.age_s=" + ",".join(f"{a:g}" for a in ages),
                       "drift.compensation=none,global"])
        sr = R.summarize(rr, ["drift.compensation", "drift.age_s"])
        pg.add("", "| RRAM age (qat4) | no compensation | global compensation |", "|---|---|---|")
        for a in ages:
            cells = [next((ci(s) for s in sr if s["drift.compensation"] == c
                           and s["drift.age_s"] == a), "") for c in ("none", "global")]
            pg.add(f"| {R.AGE_TICKS_S.get(a, f'{a:g} s')} | " + " | ".join(cells) + " |")
        g = lambda c: [r for r in rr if r["drift.compensation"] == c and r["drift.age_s"] == last]  # noqa
        pg.add("", f"*{task}, RRAM at {tick}:* "
               + pg.claim(T_RRAM, task, R.compare(g("global"), g("none")),
                          "global compensation", "none"), "")
        rows += rr
    return rows


def section_energy(pg: Page, task: str, bits_rows: list[dict], snr_rows: list[dict],
                   age_rows: list[dict]) -> None:
    pg.add(f"### {task}: accuracy vs energy per inference", "",
           "Each point: one setting of the sections above, energy from the engine's ledger "
           "(docs/energy.md; votes multiply the analog work); the line joins the Pareto front "
           "(no other point is both cheaper and more accurate).", "")
    pts = []
    for s in R.summarize([r for r in bits_rows if r["recipe"] == "qat4"], ["recipe",
                                                                          "weights.bits"]):
        pts.append({**s, "bits": f"{s['weights.bits']} b", "votes": "int4"})
    for s in R.summarize([r for r in snr_rows if r["vmm_noise.snr_db"] == 10.0],
                         ["recipe", "votes"]):
        pts.append({**s, "bits": "10 dB", "votes": f"{s['votes']} v"})
    for s in R.summarize([r for r in age_rows if r.get("drift.age_s") == 86400.0
                          and r.get("drift.compensation") == "global"
                          and r.get("profile") == "pcm"
                          and r.get("adc.track_drift") in (False, "false")],
                         ["recipe"]):
        pts.append({**s, "bits": "pcm 1 d", "votes": "1 v"})
    if not pts:
        return
    R.plot_pareto(pts, pg.out_dir / f"pareto_{task}.png", title=f"{task}: accuracy vs energy",
                  chance=1 / n_classes(task))
    pg.add("| setting | recipe | accuracy (%) [95% CI] | energy (nJ / inference) |",
           "|---|---|---|---|")
    front = set(R.pareto_front([(p["energy_pJ_per_inference"], p["accuracy_mean"])
                                for p in pts]))
    for i, p in sorted(enumerate(pts), key=lambda ip: ip[1]["energy_pJ_per_inference"]):
        pg.add(f"| {p['bits']}, {p['votes']}{' (front)' if i in front else ''} | {p['recipe']} "
               f"| {ci(p)} | {p['energy_pJ_per_inference'] / 1000:.1f} |")
    pg.add("", f"![pareto {task}]({pg.rel.name}/pareto_{task}.png)", "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_stream(pg: Page, serve_cmd: str, stream_cmd: str) -> dict:
    """Start ``serve_cmd`` (as printed), run ``stream_cmd`` (as printed) against it, stop the
    server with SIGINT; return the stream's JSON summary."""
    exe = R.nvmstream_executable()
    srv = subprocess.Popen([exe, *shlex.split(serve_cmd)[1:]], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        argv = shlex.split(stream_cmd)
        out = REPO / argv[argv.index("--json") + 1]
        deadline = time.time() + 600
        while True:      # the server converts the model first: retry until it answers
            r = subprocess.run([exe, *argv[1:]], cwd=REPO, capture_output=True, text=True,
                               timeout=900)
            if r.returncode == 0 or time.time() > deadline or srv.poll() is not None:
                break
            time.sleep(5)
        if r.returncode != 0:
            raise RuntimeError(f"command failed ({r.returncode}): {stream_cmd}\n"
                               f"{r.stderr.strip()}")
        pg.commands_run += 2
        return json.loads(out.read_text())
    finally:
        srv.send_signal(2)
        try:
            srv.wait(timeout=60)
        except subprocess.TimeoutExpired:
            srv.kill()


def section_audio(pg: Page) -> None:
    from nvmstream.runtime.stats import wilson_interval
    pg.add("### keywords from raw audio: the front end in the server", "",
           "The same keywords model served from its ONNX file on the `int4` profile (the "
           "server computes the log-mel front end from the model's `frontend` metadata); the "
           "WAVs of demos/data/keywords_wav (test voices, one per word) are streamed as audio "
           "in 100 ms chunks, and the precomputed log-mel test split is streamed frame by frame "
           "to the same server. Printed commands are run as printed (the server on a free "
           "loopback port, stopped with SIGINT afterwards). The server calibrates on a seeded "
           "random subsample of x_train (not the class-balanced one of `nvmstream sweep`), so "
           "its log-mel accuracy may differ slightly from the sweep's int4 figure.", "")
    port = free_port()
    sets = "".join(f" --set {o}" for o in convert_choices("keywords"))
    serve = (f"nvmstream serve demos/models/keywords_qat4.onnx --profile int4{sets} "
             f"--calibration demos/data/keywords.npz --bind tcp://127.0.0.1:{port}")
    wavs = sorted(p.name for p in (DATA / "keywords_wav").glob("*.wav"))
    s_wav = (f"nvmstream stream -c tcp://127.0.0.1:{port} -d "
             + " ".join(f"demos/data/keywords_wav/{w}" for w in wavs)
             + f" --quiet --json {pg.rel}/audio_wav.json")
    s_npz = (f"nvmstream stream -c tcp://127.0.0.1:{port} -d demos/data/keywords.npz "
             f"--quiet --json {pg.rel}/audio_logmel.json")
    pg.add(f"`{serve}`  ", f"`{s_wav}`  ")
    res_w = run_stream(pg, serve, s_wav)
    pg.add("", f"`{serve}`  ", f"`{s_npz}`  ")
    res_n = run_stream(pg, serve, s_npz)
    pg.add("", "| input | streams | accuracy (%) [95% Wilson] | energy (nJ / inference) |",
           "|---|---|---|---|")
    for name, res in (("raw audio (WAV, front end in the server)", res_w),
                      ("log-mel test split (.npz)", res_n)):
        n = int(res["labelled"])
        iv = wilson_interval(round(res["accuracy"] * n), n)
        pg.add(f"| {name} | {n} | {iv.fmt()} | {res['energy_pJ_per_inference'] / 1000:.1f} |")
    pg.add("", "With 10 WAVs the interval is wide: the raw-audio row shows that the path works "
           "end to end, not an accuracy.", "")


def section_models(pg: Page, tasks: list[str]) -> None:
    from nvmstream.runtime.stats import wilson_interval
    man = manifest()
    pg.add("## Shipped models", "",
           "torch float: the exported model (quantized weights for the QAT recipes) in torch; "
           "torch QAT: the training's own emulation of the recipe's profile quantizers "
           "(noise-free); emulator int4: `nvm.convert` + `Engine` on `int4` (with the task's "
           "conversion choices, if any), device seed 0 (manifest.json). Training and the emulator share one definition of every "
           "quantizer and range (runtime/training), so the last two agree up to rare "
           "float32-vs-float64 rounding flips.", "",
           "| model | torch float (%) [95% Wilson] | torch QAT (%) | emulator int4 (%) | n |",
           "|---|---|---|---|---|")
    for name, m in sorted(man.items()):
        if m["task"] not in tasks:
            continue
        n = m["test_split"]["n"]
        iv = wilson_interval(round(m["torch_test_accuracy"] * n), n)
        q = m.get("torch_qat_test_accuracy")
        e = m.get("nvmstream", {}).get("int4")
        pg.add(f"| {name} | {iv.fmt()} | {'' if q is None else pct(q)} | "
               f"{'' if e is None else pct(e)} | {n} |")
    pg.add("")
    for task in tasks:
        if task in PUBLISHED and f"{task}_float" in man:
            pg.add(f"Published on {task}: {PUBLISHED[task]}; ours (float, "
                   f"{man[f'{task}_float']['kind']} {man[f'{task}_float']['hidden']}): "
                   f"{pct(man[f'{task}_float']['torch_test_accuracy'])}%.", "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="one task (digits), one seed, 40 test items, few grid points")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", default=None,
                    help="comma-separated tasks on one page (default: the published pages, "
                         "docs/results.md for the sequence tasks and docs/results_keywords.md "
                         "for keywords, each made by the command it prints); a task whose CSVs "
                         "were made by the same commands on the same models reuses them")
    ap.add_argument("--out-dir", type=Path, default=REPO / "docs" / "results",
                    help="CSVs and plots; the page goes next to it as <out-dir>.md")
    args = ap.parse_args(argv)
    if args.tasks is None and not args.quick and args.out_dir == REPO / "docs" / "results":
        # the published layout: one page per entry of PAGES, each by the command it prints
        common = ["--workers", str(args.workers)]
        return max(main(common + extra) for extra in PAGES)
    logging.basicConfig(level=logging.WARNING)
    t0 = time.time()
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.quick:
        tasks = [args.tasks.split(",")[0]] if args.tasks else ["digits"]
        pg = Page(out_dir, 40, 1, quick=True)
        bits, snrs, votes, bers, ages = [2, 4], [0.0, 10.0], [1, 3], [1e-2], [3600.0, 31557600.0]
    else:
        want = args.tasks.split(",") if args.tasks else list(TASKS)
        bad = [t for t in want if t not in TASKS]
        if bad:
            ap.error(f"unknown tasks {bad}; valid: {', '.join(TASKS)}")
        tasks = [t for t in want if shipped(t, "float")]
        pg = Page(out_dir, None, args.workers)
        bits, snrs, votes, bers, ages = BITS, SNRS, [1, 5], BERS, AGES_S
    cmd = ("python demos/results.py" + (" --quick" if args.quick else "")
           + (f" --tasks {args.tasks}" if args.tasks and not args.quick else "")
           + (f" --out-dir {pg.rel}" if out_dir.resolve() != (REPO / "docs" / "results").resolve()
              and not args.quick else ""))
    pg.add("# Results: the seeds' claims, measured with nvmstream", "",
           f"Regenerate with `{cmd}`. Every command below is run by the generator exactly as "
           "printed. Accuracy: the class at each sequence's last valid step on the full "
           "held-out split; [95% CI] is Wilson over the test items (one device seed) or a "
           "bootstrap over items x device seeds. Device seeds per section: "
           + "; ".join(f"{t}: " + ", ".join(f"{sec} {len(pg.seeds(t, sec))}"
                                           for sec in SECTION_SEEDS) for t in tasks)
           + " (bits: `int4` has no noise, so further seeds only check that seed 0 is "
           "reproduced item for item; snr15: the 0 dB point with "
           f"{MANY_VOTES} votes). "
           + ("keywords runs on its first 190 test items, 19 per class. "
              if "keywords" in tasks and not args.quick else "")
           + "".join(f"The {t} models are converted with `{' '.join(convert_choices(t))}` "
                     "on every profile (a per-model conversion choice, printed in each "
                     "command as a one-value `--grid` axis; the profiles themselves are "
                     "unchanged; its quantized recipes are trained for it"
                     + (f"; except {' and '.join(convert_skipped(t))}, trained and "
                        "converted with the profile as it is" if convert_skipped(t) else "")
                     + "). "
                     for t in tasks if convert_choices(t) and not args.quick)
           + "\"A beats B\" is said only when a paired test on the same items "
           "resolves it (exact McNemar for one seed, paired bootstrap over items x seeds "
           "otherwise); the difference is A - B in points with its 95% interval.", "")
    head_at = len(pg.md)
    section_models(pg, tasks)
    for task in tasks:
        pg.add(f"## {task}", "")
        red = {} if args.quick else REDUCED.get(task, {})
        b = section_bits(pg, task, bits)
        if red.get("bits_gap", True):
            section_bits_gap(pg, task)
        s = section_snr(pg, task, red.get("snrs", snrs), votes)
        section_ber(pg, task, red.get("bers", bers))
        a = section_age(pg, task, ages)
        section_energy(pg, task, b, s, a)
    if not args.quick and "keywords" in tasks and (DATA / "keywords_wav").is_dir():
        section_audio(pg)
    secs = time.time() - t0
    heads = ["## Headline targets (the seeds' claims, stated as goals)", "",
             "Status: **met** when the whole 95% interval clears the goal, **not met** when it "
             "lies entirely below, **unresolved** otherwise.", "",
             "| task | goal | measured | status |", "|---|---|---|---|", *pg.headlines, ""]
    pg.md[head_at:head_at] = heads + claims_summary(pg)
    run_s = sum(float(r.get("seconds", 0.0)) for rows in pg.ran.values() for r in rows)
    pg.add(f"_Generated by `{cmd}` in {secs:.0f} s wall on a shared 2-core machine "
           f"({pg.commands_run} commands computed or extended, the rest reused from CSVs of "
           f"the same command and model). The page's {sum(map(len, pg.ran.values()))} sweep "
           f"runs took {run_s:.0f} s of worker time in all (the CSVs' `seconds` column, "
           f"summed over the runs as they were made, at whatever load the machine had then; "
           f"`--workers {pg.workers}` runs them in parallel)._", "")
    page = out_dir.with_suffix(".md")
    page.write_text("\n".join(pg.md))
    print(f"wrote {page} and {out_dir}/ in {secs:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
