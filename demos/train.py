#!/usr/bin/env python
"""Regenerate nvmstream's shipped demo models and demos/models/manifest.json (torch, CPU).

    python demos/train.py --all                     # every shipped model + manifest.json
    python demos/train.py --all --tasks digits      # one task's models
    python demos/train.py --table                   # the manifest's accuracy table (markdown)

The training itself is the library's (``nvmstream.runtime.training``; one model:
``nvmstream train --task T --recipe R ...``, the exact command is in each manifest entry).
Shipped recipes per task: ``float`` (same epoch budget as its twins), ``qat4`` (int4),
``qat4_noise`` (deep noise injection at the inference SNR of the ``snr0db`` profile, 0 dB) and
``hwa`` (hardware-aware training for ``pcm-1d``: programming noise, drift at 1 day, read/ADC
noise drawn from the profile). The float phase is shared between a task's recipes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS_DIR = HERE / "models"
DATA_DIR = HERE / "data"
#: the shipped (recipe, profile) pairs
SHIPPED_RECIPES = [("float", None), ("qat4", "int4"), ("qat4_noise", "snr0db"),
                   ("hwa", "pcm-1d")]

#: extra training sets (not committed; `python demos/data/make_data.py keywords_extra`)
EXTRA_TRAIN: dict[str, list[str]] = {"keywords": ["demos/data/keywords_extra.npz"]}

log = logging.getLogger("nvmstream.train")


def read_manifest(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"models": {}}


def write_manifest(man: dict, path: Path) -> None:
    man["about"] = (
        "Shipped demo models, made by `python demos/train.py --all` (one model: the `command` "
        "of its entry). Every recipe of a task shares the float phase (`epochs`) and then "
        "trains `fine_tune_epochs` more (float: without quantizers), so all four have the same "
        "budget. Accuracies are on each dataset's full test split, class at the last valid "
        "step. torch_*: the exported float model in torch; torch_qat_test_accuracy: torch "
        "emulation of the profile's weight/DAC/ADC quantizers; nvmstream.*: "
        "nvm.convert(model, calibration_set(x_train, y_train)) then nvm.Engine(prog, "
        "nvm.Device(profile, seed=0, overrides=the task's conversion choices, "
        "TaskConfig.convert_for: keywords qat4 and float adc.calibration=mse), votes) (votes > 1: "
        "majority via "
        "Engine.predict).")
    man["models"] = dict(sorted(man["models"].items()))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(man, indent=1) + "\n")
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def markdown_table(man: dict) -> str:
    """The manifest's accuracies as a markdown table (percent)."""
    from nvmstream.runtime.training.loop import EVAL_DEVICES, eval_key
    cols = [eval_key(p, v) for p, v in EVAL_DEVICES]
    head = ["model", "params", "torch float"] + cols + ["train s"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in sorted(man["models"].items()):
        nv = e.get("nvmstream", {})
        cells = [name, str(e["params"]), f"{100 * e['torch_test_accuracy']:.1f}"]
        cells += [f"{100 * nv[c]:.1f}" if c in nv else "" for c in cols]
        cells.append(f"{e['train_seconds']:.0f}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="regenerate the shipped models")
    ap.add_argument("--tasks", default=None, help="comma-separated subset of tasks")
    ap.add_argument("--recipes", default=None, help="comma-separated subset of recipes")
    ap.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-eval", action="store_true", help="skip the nvmstream evaluation")
    ap.add_argument("--table", action="store_true", help="print the accuracy table and exit")
    ap.add_argument("--reevaluate", action="store_true",
                    help="with --all: do not train; evaluate the shipped models again on the "
                         "emulator (e.g. after a task's conversion choices changed) and update "
                         "their manifest entries")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown_table(read_manifest(args.models_dir / "manifest.json")))
        return 0
    if not args.all:
        ap.error("use --all (one model: nvmstream train --task T --recipe R --out FILE)")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("nvmstream").setLevel(logging.WARNING)
    for name in ("nvmstream.train", "nvmstream.runtime.training"):
        logging.getLogger(name).setLevel(logging.WARNING if args.quiet else logging.INFO)
    from nvmstream.runtime.train_cli import command_line
    from nvmstream.runtime.training import loop
    from nvmstream.runtime.training.tasks import TASKS, load_data, make_recipe, task_config
    tasks = args.tasks.split(",") if args.tasks else list(TASKS)
    recipes = args.recipes.split(",") if args.recipes else [r for r, _ in SHIPPED_RECIPES]
    bad = [t for t in tasks if t not in TASKS] + [r for r in recipes
                                                  if r not in dict(SHIPPED_RECIPES)]
    if bad:
        ap.error(f"unknown tasks or recipes {bad}")
    mdir = args.models_dir
    mdir.mkdir(parents=True, exist_ok=True)
    man = read_manifest(mdir / "manifest.json")
    cache: dict = {}
    for task in tasks:
        extra = EXTRA_TRAIN.get(task, [])
        for e in extra:
            if not (HERE.parent / e).is_file():
                sys.exit(f"{e} missing: python demos/data/make_data.py keywords_extra "
                         "(needs espeak-ng and sox)")
        data = load_data(DATA_DIR / f"{task}.npz", task, [HERE.parent / e for e in extra])
        tc = task_config(task)
        for rname, profile in SHIPPED_RECIPES:
            if rname not in recipes:
                continue
            # the task's conversion choices are part of the profile a quantized recipe
            # trains for (the manifest command prints them as --set)
            conv = tc.convert_for(rname)
            recipe = make_recipe(rname, profile, seed=args.seed,
                                 overrides=conv if rname != "float" else ())
            out = mdir / f"{task}_{rname}.onnx"
            if args.reevaluate:
                entry = man["models"].get(f"{task}_{rname}")
                if entry is None or not out.is_file():
                    sys.exit(f"{out}: no shipped model to evaluate again")
                if entry.get("sha256") != _sha256(out):
                    sys.exit(f"{out}: differs from its manifest entry (sha256)")
                if rname != "float" and entry["hardware"].get("overrides") != list(conv):
                    sys.exit(f"{out}: trained for {entry['hardware'].get('overrides')}, not the "
                             f"task's conversion choices {list(conv)}: train it again")
                entry["nvmstream"] = {k: round(v, 4) for k, v in loop.evaluate(
                    out, data, overrides=conv).items()}
                man["models"][f"{task}_{rname}"] = entry
                write_manifest(man, mdir / "manifest.json")
                continue
            entry = loop.train_model(data, tc, recipe, out, cache, do_eval=not args.no_eval)
            entry["command"] = command_line(task, recipe, tc, f"demos/models/{out.name}",
                                            extra_train=extra)
            entry["extra_train"] = extra
            man["models"][f"{task}_{rname}"] = entry
            write_manifest(man, mdir / "manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
