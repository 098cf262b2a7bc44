"""Regenerate docs/results.md: the seeds' results reproduced (or refuted) with nvmstream.

    python demos/results.py            # all tables (about 10-20 minutes on 2 cores)
    python demos/results.py --quick    # fewer seeds and sequences (a smoke run)

Every table is a `nvmstream sweep` (runtime/sweep.py) over the shipped models
(demos/models, made by demos/train.py) on the shipped held-out data (demos/data); the
equivalent CLI command is printed above each table. Plots go to docs/results/*.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from nvmstream.runtime import bench_energy
from nvmstream.runtime import sweep as S

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODELS = HERE / "models"
DATA = HERE / "data"
OUT = REPO / "docs" / "results.md"
PNG = REPO / "docs" / "results"


def manifest() -> dict:
    return json.loads((MODELS / "manifest.json").read_text())["models"]


def model_path(task: str, recipe: str) -> Path:
    return MODELS / f"{task}_{recipe}.onnx"


def sweep(task, recipe, profile, axes, seeds, votes, limit, workers):
    grid = S.Grid()
    for fields, vals in axes:
        grid.add(fields, vals)
    jobs = S.make_jobs(str(model_path(task, recipe)), str(DATA / f"{task}.npz"), profile, grid,
                       seeds, votes, limit)
    rows = S.run_sweep(jobs, workers=workers, progress=True)
    for r in rows:
        r["task"], r["recipe"] = task, recipe
    return rows


def cmd(task, recipe, profile, axes, seeds, votes, limit) -> str:
    g = " ".join(f"--grid {'+'.join(f)}={','.join(map(str, v))}" for f, v in axes)
    lim = f" --limit {limit}" if limit else ""
    return (f"nvmstream sweep demos/models/{task}_{recipe}.onnx --data demos/data/{task}.npz "
            f"--profile {profile} {g} --seeds {','.join(map(str, seeds))} "
            f"--votes {','.join(map(str, votes))}{lim}")


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def table(rows, row_key, col_keys, col_label, fmt_row=str) -> list[str]:
    """Markdown table of mean accuracy (+- std over seeds): rows by row_key, columns by the
    combination of col_keys."""
    summ = S.summarize(rows, [row_key, *col_keys])
    cols = sorted({tuple(s[k] for k in col_keys) for s in summ},
                  key=lambda c: tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))
                                      for v in c))
    rvals = sorted({s[row_key] for s in summ}, key=lambda v: S._num(v))
    head = f"| {row_key} | " + " | ".join(col_label(c) for c in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for rv in rvals:
        cells = []
        for c in cols:
            m = [s for s in summ if s[row_key] == rv and tuple(s[k] for k in col_keys) == c]
            if not m:
                cells.append("")
                continue
            s = m[0]
            cells.append(pct(s["accuracy_mean"]) + (f" ± {pct(s['accuracy_std'])}"
                                                     if s["seeds"] > 1 else ""))
        lines.append(f"| {fmt_row(rv)} | " + " | ".join(cells) + " |")
    return lines


def acc_of(rows, **match) -> float:
    """Mean accuracy over the rows matching every key=value (NaN if none)."""
    sel = [r["accuracy"] for r in rows if all(r.get(k) == v for k, v in match.items())]
    return float(np.mean(sel)) if sel else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", default="japanese_vowels,keywords")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    t0 = time.time()
    seeds = [0] if args.quick else [0, 1, 2]
    limit = 60 if args.quick else None
    tasks = [t for t in args.tasks.split(",") if model_path(t, "float").exists()]
    man = manifest()
    md = ["# Results: the seeds' claims, measured with nvmstream", "",
          "Regenerate with `python demos/results.py` (this page, its plots in docs/results/, "
          "and the CSVs next to them). Models: `demos/models` (made by `python demos/train.py "
          "--all`; recipes: `float`, `qat4` = quantization-aware training for the `int4` "
          "profile's 4-bit weights/DAC/ADC, `qat4_noise` = QAT plus noise injection). Data: "
          "the held-out split of each shipped dataset. Accuracy is the class read from the "
          "model's per-step output at each sequence's last valid step; ± is the standard "
          "deviation over device seeds " + f"({len(seeds)} seeds).", ""]
    md += ["## Shipped models", "", "| model | recipe | hidden | torch test acc. | ideal | int4 |",
           "|---|---|---|---|---|---|"]
    for name, m in man.items():
        nv = m.get("nvmstream", {})
        md.append(f"| {m['task']} | {m['recipe']} | {m.get('hidden')} | "
                  f"{pct(m.get('torch_test_accuracy', float('nan')))} | "
                  f"{pct(nv.get('ideal', float('nan')))} | {pct(nv.get('int4', float('nan')))} |")
    md.append("")

    # 1. bits
    md += ["## 1. Accuracy vs weight/DAC/ADC bits (seed: arXiv 2002.10636)", "",
           "Claim: with quantization-aware training, 4-bit weights with 4-bit DAC and ADC "
           "match the float model.", ""]
    bits = [2, 3, 4, 5, 6, 8]
    axes = [(("weights.bits", "dac.bits", "adc.bits"), bits)]
    all1 = []
    for task in tasks:
        rows = []
        for recipe in ("float", "qat4"):
            md.append(f"`{cmd(task, recipe, 'int4', axes, [0], [1], limit)}`  ")
            rows += sweep(task, recipe, "int4", axes, [0], [1], limit, args.workers)
            ideal = sweep(task, recipe, "ideal", [], [0], [1], limit, args.workers)
            for r in ideal:
                r["weights.bits"] = "float"
            rows += ideal
        md.append("")
        md.append(f"**{task}** (bits = weights = DAC = ADC; `float` = the `ideal` profile)")
        md.append("")
        md += table(rows, "weights.bits", ["recipe"], lambda c: f"{c[0]} model (%)")
        md.append("")
        S.plot([r for r in rows if r["weights.bits"] != "float"], "weights.bits", ["recipe"],
               PNG / f"bits_{task}.png", title=f"{task}: accuracy vs bits (w/DAC/ADC)")
        md.append(f"![bits {task}](results/bits_{task}.png)")
        md.append("")
        fl = acc_of(rows, recipe="float", **{"weights.bits": "float"})
        q4 = acc_of(rows, recipe="qat4", **{"weights.bits": 4})
        f4 = acc_of(rows, recipe="float", **{"weights.bits": 4})
        verdict = "holds" if q4 >= fl - 0.01 else ("nearly holds" if q4 >= fl - 0.03
                                                   else "does not hold")
        md += [f"*Finding ({task}):* QAT model at 4/4/4 bits {pct(q4)}% vs the float model in "
               f"float {pct(fl)}% (the float-trained model at 4/4/4: {pct(f4)}%): the claim "
               f"**{verdict}** here.", ""]
        all1 += rows
    S.write_csv(all1, PNG / "bits.csv")

    # 2. SNR + voting
    md += ["## 2. Accuracy vs VMM signal-to-noise ratio, with voting (seeds: arXiv 1811.10649, "
           "1807.06555)", "",
           "Claim: at 0 dB the plainly trained model collapses; noise-injection training plus "
           "voting over repeated noisy inferences recovers most of the accuracy.", ""]
    snrs = [-5.0, 0.0, 5.0, 10.0, 20.0, 30.0]
    votes = [1, 5] if args.quick else [1, 5, 15]
    axes = [(("vmm_noise.snr_db",), snrs)]
    all2 = []
    for task in tasks:
        rows = []
        for recipe in ("qat4", "qat4_noise"):
            md.append(f"`{cmd(task, recipe, 'int4', axes, seeds, votes, limit)}`  ")
            rows += sweep(task, recipe, "int4", axes, seeds, votes, limit, args.workers)
        md += ["", f"**{task}**", ""]
        md += table(rows, "vmm_noise.snr_db", ["recipe", "votes"],
                    lambda c: f"{c[0]}, {c[1]} vote{'s' if c[1] > 1 else ''}")
        md.append("")
        S.plot(rows, "vmm_noise.snr_db", ["recipe", "votes"], PNG / f"snr_{task}.png",
               title=f"{task}: accuracy vs VMM SNR")
        md += [f"![snr {task}](results/snr_{task}.png)", ""]
        vmax = max(votes)
        p1 = acc_of(rows, recipe="qat4", votes=1, **{"vmm_noise.snr_db": 0.0})
        n1 = acc_of(rows, recipe="qat4_noise", votes=1, **{"vmm_noise.snr_db": 0.0})
        nv = acc_of(rows, recipe="qat4_noise", votes=vmax, **{"vmm_noise.snr_db": 0.0})
        clean = acc_of(rows, recipe="qat4", votes=1, **{"vmm_noise.snr_db": 30.0})
        md += [f"*Finding ({task}):* at 0 dB the plain model reaches {pct(p1)}% (30 dB: "
               f"{pct(clean)}%); noise-injection training gives {pct(n1)}% and with "
               f"{vmax} votes {pct(nv)}%. "
               + ("Noise training plus voting recovers most of the accuracy, as claimed."
                  if nv >= 0.8 * clean else
                  "Noise training plus voting helps but recovers less than the seed's "
                  "15.5% -> 89.6% on MNIST strokes: our models are small (hidden 32-64) and "
                  "were trained with noise for few epochs; see the table for where the "
                  "curves cross."), ""]
        all2 += rows
    S.write_csv(all2, PNG / "snr.csv")

    # 3. storage BER
    md += ["## 3. Accuracy vs storage raw bit error rate (seed: arXiv 1709.06173)", "",
           "Claim: weights kept without ECC suffer bit flips; weight nulling (zeroing codes "
           "that decode out of range) and a better binary representation contain the damage.",
           ""]
    bers = [1e-6, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1]
    axes = [(("storage.ber",), bers),
            (("storage.encoding",), ["twos_complement", "offset_binary", "sign_magnitude",
                                     "gray"]),
            (("storage.detection",), ["none", "nulling"])]
    task = tasks[0]
    md.append(f"`{cmd(task, 'qat4', 'int4', axes, seeds, [1], limit)}`")
    rows3 = sweep(task, "qat4", "int4", axes, seeds, [1], limit, args.workers)
    md += ["", f"**{task}**, qat4 model, `int4` profile", ""]
    md += table(rows3, "storage.ber", ["storage.encoding", "storage.detection"],
                lambda c: f"{c[0]} / {c[1]}", fmt_row=lambda v: f"{v:g}")
    md.append("")
    S.plot(rows3, "storage.ber", ["storage.encoding", "storage.detection"], PNG / "ber.png",
           title=f"{task}: accuracy vs raw BER", logx=True)
    md += ["![ber](results/ber.png)", ""]
    worst = max(bers)
    cells = {(e, d): acc_of(rows3, **{"storage.ber": worst, "storage.encoding": e,
                                      "storage.detection": d})
             for e in ("twos_complement", "offset_binary", "sign_magnitude", "gray")
             for d in ("none", "nulling")}
    best = max(cells, key=cells.get)
    worst_c = min(cells, key=cells.get)
    md += [f"*Finding:* at BER {worst:g} the best storage is {best[0]} with {best[1]} "
           f"({pct(cells[best])}%), the worst {worst_c[0]} with {worst_c[1]} "
           f"({pct(cells[worst_c])}%). With 4-bit codes only one word per encoding decodes "
           f"out of range (sign-magnitude has none), so nulling matters far less than for "
           f"the 32-bit floats of arXiv 1709.06173, where one exponent flip is catastrophic; "
           f"the damage per flip is bounded by the code range itself.", ""]
    S.write_csv(rows3, PNG / "ber.csv")

    # 4. PCM drift
    md += ["## 4. Accuracy vs PCM age, with and without global drift compensation", "",
           "PCM statistics as in aihwkit's PCMLikeNoiseModel (programming noise, drift "
           "nu(G), 1/f read noise).", ""]
    ages = [1.0, 60.0, 3600.0, 86400.0, 2592000.0, 31536000.0]
    axes = [(("drift.age_s",), ages), (("drift.compensation",), [False, True])]
    md.append(f"`{cmd(task, 'qat4', 'pcm', axes, seeds, [1], limit)}`")
    rows4 = sweep(task, "qat4", "pcm", axes, seeds, [1], limit, args.workers)
    md += ["", f"**{task}**, qat4 model, `pcm` profile", ""]
    md += table(rows4, "drift.age_s", ["drift.compensation"],
                lambda c: "compensated" if c[0] else "uncompensated",
                fmt_row=lambda v: {1.0: "1 s", 60.0: "1 min", 3600.0: "1 h", 86400.0: "1 day",
                                   2592000.0: "30 days", 31536000.0: "1 year"}.get(v, str(v)))
    md.append("")
    S.plot(rows4, "drift.age_s", ["drift.compensation"], PNG / "drift.png",
           title=f"{task}: accuracy vs PCM age", logx=True)
    md += ["![drift](results/drift.png)", ""]
    u = acc_of(rows4, **{"drift.age_s": 31536000.0, "drift.compensation": False})
    c = acc_of(rows4, **{"drift.age_s": 31536000.0, "drift.compensation": True})
    md += [f"*Finding:* after one year the uncompensated chip reaches {pct(u)}%, with global "
           f"drift compensation {pct(c)}%: PCM drift is a common scale loss that one digital "
           f"rescale per matrix removes; what remains is programming and 1/f read noise.", ""]
    S.write_csv(rows4, PNG / "drift.csv")

    # 5. energy
    md += ["## 5. Energy per inference and TOPS/W, analog vs digital (seed: >= 2.4x)", "",
           "`nvmstream bench --energy` (prices and assumptions: docs/energy.md). Ratio = "
           "digital energy / analog energy per inference (> 1: the analog chip wins).", ""]
    res = bench_energy.run(quick=args.quick)
    print(bench_energy.format_table(res["rows"]))
    md += ["| model | profile | analog pJ/inference | analog TOPS/W | int8/SRAM | int8/DRAM "
           "| fp32/SRAM | fp32/DRAM |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        md.append(f"| {r['model']} | {r['profile']} | {r['analog_pJ_per_inference']:.4g} | "
                  f"{r['analog_TOPS_per_W']:.3g} | {r['ratio_int8/sram']:.3g}x | "
                  f"{r['ratio_int8/dram']:.3g}x | {r['ratio_fp32/sram']:.3g}x | "
                  f"{r['ratio_fp32/dram']:.3g}x |")
    md.append("")
    r8 = [r["ratio_int8/sram"] for r in res["rows"]]
    md += [f"*Finding:* against an int8 datapath with weights in SRAM the analog chip spends "
           f"{min(r8):.2g}x to {max(r8):.2g}x less energy per inference (the ratio grows with "
           f"layer size, because ADCs and the fp32 digital periphery are paid per output "
           f"while crossbar reads are cheap per MAC); against DRAM-fed or fp32 digital chips "
           f"the ratio is one to three orders of magnitude. The seed's >= 2.4x compute "
           f"efficiency (over int8 from SRAM, the strongest baseline) holds in "
           f"{sum(v >= 2.4 for v in r8)} of {len(r8)} model/profile rows under our "
           f"(digital-favouring) prices. The seed's 40x area efficiency is not modelled "
           f"(nvmstream has no area model).", ""]
    (PNG / "energy.json").write_text(json.dumps(res, indent=2))
    md += [f"_Generated in {time.time() - t0:.0f} s by `python demos/results.py"
           f"{' --quick' if args.quick else ''}`._", ""]
    OUT.write_text("\n".join(md))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
