"""`nvmstream bench --energy`: energy per inference and TOPS/W on the analog chip vs the digital
baselines (int4/int8/fp16/fp32 MAC arrays, weights from SRAM / DRAM, alone and shared by a
batch of 16; the strongest of them), for the shipped models and for LSTMs of growing size,
under every shipped profile. Prices from each profile's [energy] section
(docs/energy.md)."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent


def _models(workdir: Path) -> list[tuple[str, Path, int, int]]:
    """(name, onnx path, input features, steps per inference)."""
    from .bench import lstm_onnx
    out = []
    manifest = REPO / "demos" / "models" / "manifest.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        entries = data["models"] if isinstance(data, dict) and "models" in data else data
        if isinstance(entries, dict):
            entries = list(entries.values())
        seen = set()
        for m in entries:
            if m.get("recipe") != "qat4" or m["task"] in seen:
                continue
            seen.add(m["task"])
            p = REPO / "demos" / "models" / m["file"]
            data = REPO / "demos" / "data" / f"{m['task']}.npz"
            steps = 50
            if data.exists():     # the task's mean sequence length
                d = np.load(data, allow_pickle=False)
                steps = (int(round(float(d["lengths_test"].mean()))) if "lengths_test" in d.files
                         else int(d["x_test"].shape[1]))
            if p.exists():
                out.append((f"{m['task']} ({m['file']})", p, int(m.get("features", 0)), steps))
    for i, h in ((12, 64), (40, 128), (128, 256)):
        p = lstm_onnx(workdir / f"lstm{i}x{h}.onnx", i, h, 10, state_io=False)
        out.append((f"LSTM {i}->{h} + Linear", p, i, 100))
    return out


def run(quick: bool = False, profiles: tuple[str, ...] | None = None,
        progress: Callable[[str], None] | None = None) -> dict:
    """Energy rows of every model x profile; ``progress(text)`` is called per model."""
    import nvmstream as nvm

    profiles = profiles or (("int4", "pcm") if quick else
                            ("int4", "pcm", "pcm-1y", "rram", "snr0db", "nand-eol"))
    rows = []
    with tempfile.TemporaryDirectory() as td:
        models = _models(Path(td))
        for i, (name, path, feats, steps) in enumerate(models):
            if progress is not None:
                progress(f"energy: model {i + 1}/{len(models)} {name} x {len(profiles)} "
                         f"profiles")
            ir = nvm.load_ir(path)
            feats = ir.input.features
            x = np.random.default_rng(0).normal(size=(2, steps, feats)).astype(np.float32)
            prog = nvm.convert(ir, calibration=x)
            for prof in profiles:
                eng = nvm.Engine(prog, nvm.Device(prof, seed=0))
                eng.run(x)
                r = eng.report()
                a = r.analog
                row = {"model": name, "profile": prof, "steps": steps,
                       "macs_per_step": int(ir.macs_per_step),
                       "analog_pJ_per_inference": a.energy_pJ_per_inference,
                       "analog_TOPS_per_W": a.tops_per_w,
                       "latency_us_per_inference": a.latency_ns_per_inference / 1e3}
                for b in r.baselines:
                    row[f"{b.name}_pJ_per_inference"] = b.energy_pJ_per_inference
                    row[f"{b.name}_TOPS_per_W"] = b.tops_per_w
                    row[f"ratio_{b.name}"] = r.comparison.ratios[b.name]
                row["strongest"] = r.comparison.strongest
                row["ratio_strongest"] = r.comparison.ratios[r.comparison.strongest]
                rows.append(row)
    log.info("\n%s", format_table(rows))
    return {"rows": rows}


def format_table(rows: list[dict]) -> str:
    head = (f"{'model':<34}{'profile':<10}{'pJ/inf':>11}{'TOPS/W':>8}{'us/inf':>9}"
            f"{'int4/sram x':>12}{'int4 b16 x':>11}{'int8/sram x':>12}{'fp32/dram x':>12}"
            f"{'strongest x':>12}")
    lines = ["analog NVM chip vs digital baselines (x = digital energy / analog energy per "
             "inference; > 1: analog wins)", head]
    for r in rows:
        lines.append(f"{r['model'][:33]:<34}{r['profile']:<10}"
                     f"{r['analog_pJ_per_inference']:>11.4g}{r['analog_TOPS_per_W']:>8.3g}"
                     f"{r['latency_us_per_inference']:>9.3g}"
                     f"{r['ratio_int4/sram']:>12.3g}{r['ratio_int4/sram/reuse16']:>11.3g}"
                     f"{r['ratio_int8/sram']:>12.3g}{r['ratio_fp32/dram']:>12.3g}"
                     f"{r['ratio_strongest']:>12.3g}")
    return "\n".join(lines)
