"""Results-page machinery: run printed commands, summarise with confidence intervals, compare
pairs, and draw the figures (used by demos/results.py; numpy, matplotlib optional).

* :func:`run_printed` runs a command line exactly as the page prints it (``nvmstream ...``
  resolved to this interpreter's console script) and returns the rows of the CSV it wrote;
* :func:`summarize` groups sweep rows and gives, per group, the mean accuracy with a Wilson 95%
  interval over the test items (one seed) or a bootstrap interval over items x device seeds
  (several seeds), from the per-item ``correct_hex`` column of ``nvmstream sweep``;
* :func:`compare` is the paired test behind every "A beats B" (exact McNemar for one seed,
  paired bootstrap over items x seeds otherwise);
* :func:`plot_curves` and :func:`plot_pareto` draw the figures: colour = recipe, line style =
  votes, legends in numeric order, chance and float reference lines, readable age ticks, shaded
  95% intervals.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .stats import bootstrap_accuracy, mcnemar_exact, paired_bootstrap, wilson_interval

log = logging.getLogger(__name__)

__all__ = ["run_printed", "read_rows", "correct_matrix", "summarize", "compare", "plot_curves",
           "plot_pareto", "RECIPE_COLOURS", "VOTE_STYLES", "AGE_TICKS_S", "sort_key"]

RECIPE_COLOURS = {"float": "#4d4d4d", "qat4": "#1f77b4", "qat4_noise": "#d62728",
                  "hwa": "#2ca02c"}
VOTE_STYLES = {1: "-", 5: "--", 15: ":", 3: "-."}
AGE_TICKS_S = {1.0: "1 s", 60.0: "1 min", 3600.0: "1 h", 86400.0: "1 d", 2592000.0: "30 d",
               31557600.0: "1 y", 31536000.0: "1 y", 315576000.0: "10 y"}


def nvmstream_executable() -> str:
    """The ``nvmstream`` console script of this interpreter (else the one on PATH)."""
    cand = Path(sys.executable).with_name("nvmstream")
    if cand.exists():
        return str(cand)
    found = shutil.which("nvmstream")
    if not found:
        raise RuntimeError("the nvmstream command is not installed (pip install -e .)")
    return found


def run_printed(command: str, cwd: str | os.PathLike, out_option: str = "--out",
                timeout_s: float = 3600) -> list[dict[str, Any]]:
    """Run ``command`` (a line as printed on the page, starting with ``nvmstream``) in ``cwd``
    and return the rows of the CSV named by its ``out_option``. Raises with the command's
    stderr when it fails."""
    argv = shlex.split(command)
    if not argv or argv[0] != "nvmstream":
        raise ValueError(f"not an nvmstream command: {command!r}")
    if out_option not in argv:
        raise ValueError(f"{command!r}: no {out_option} FILE to read the results from")
    out = Path(cwd) / argv[argv.index(out_option) + 1]
    r = subprocess.run([nvmstream_executable(), *argv[1:]], cwd=cwd, capture_output=True,
                       text=True, timeout=timeout_s)
    if r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {command}\n{r.stderr.strip()}")
    return read_rows(out)


def _parse(v: str) -> Any:
    if v in ("True", "False"):
        return v == "True"
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a sweep CSV with numbers parsed (``correct_hex`` stays a string); ``#`` lines
    (the provenance line the CLI writes first) are skipped."""
    with open(path, newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    return [{k: (v if k == "correct_hex" else _parse(v)) for k, v in r.items()}
            for r in csv.DictReader(lines)]


def correct_matrix(rows: Sequence[dict[str, Any]]) -> np.ndarray | None:
    """``[rows, items]`` 0/1 from the rows' ``correct_hex`` (None if any row lacks it), rows in
    device-seed order whatever order the CSV holds them in (parallel workers write rows as
    they finish): paired comparisons pair seed with seed, and bootstraps do not depend on
    the file's row order."""
    if not rows or any(not r.get("correct_hex") for r in rows):
        return None
    rows = sorted(rows, key=lambda r: sort_key(r.get("seed")))
    n = int(rows[0]["n"])
    return np.stack([np.unpackbits(np.frombuffer(bytes.fromhex(r["correct_hex"]), np.uint8))[:n]
                     for r in rows]).astype(np.float64)


def sort_key(v: Any) -> tuple:
    """Numbers in numeric order before strings (legends: votes 1, 5, 15 -- not 1, 15, 5)."""
    if isinstance(v, bool):
        return (0, float(v), "")
    if isinstance(v, (int, float)):
        return (0, float(v) if math.isfinite(v) else 1e300, "")
    return (1, 0.0, str(v))


def summarize(rows: Sequence[dict[str, Any]], keys: Sequence[str], n_boot: int = 2000
              ) -> list[dict[str, Any]]:
    """Per combination of ``keys``: mean accuracy over seeds, its 95% interval (Wilson over
    items for one seed; bootstrap over items x seeds for several; Wilson on the mean when the
    rows carry no per-item results) and the mean energy. Sorted by ``keys``."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    out = []
    for key, rs in groups.items():
        acc = np.array([float(r["accuracy"]) for r in rs])
        n = int(rs[0]["n"])
        cm = correct_matrix(rs)
        if cm is not None and len(rs) > 1:
            iv = bootstrap_accuracy(cm, n_boot=n_boot)
            method = f"bootstrap over {n} items x {len(rs)} seeds"
        else:
            iv = wilson_interval(float(acc.mean()) * n, n)
            method = f"Wilson over {n} items" + ("" if len(rs) == 1 else
                                                 f" (mean of {len(rs)} seeds)")
        e = [float(r["energy_pJ_per_inference"]) for r in rs if "energy_pJ_per_inference" in r]
        out.append({**dict(zip(keys, key)), "accuracy_mean": float(acc.mean()),
                    "ci_lo": iv.lo, "ci_hi": iv.hi, "ci_method": method, "seeds": len(rs),
                    "n": n, "energy_pJ_per_inference": float(np.mean(e)) if e else math.nan})
    out.sort(key=lambda s: tuple(sort_key(s[k]) for k in keys))
    return out


def compare(rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]],
            n_boot: int = 2000):
    """Paired comparison of two settings on the same test items: exact McNemar when each has
    one seed, else a paired bootstrap over items x seeds (:mod:`.stats`)."""
    a, b = correct_matrix(rows_a), correct_matrix(rows_b)
    if a is None or b is None:
        raise ValueError("paired comparisons need per-item results (correct_hex)")
    if a.shape[0] == 1 and b.shape[0] == 1:
        return mcnemar_exact(a[0], b[0])
    return paired_bootstrap(a, b, n_boot=n_boot)


def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plots")
        return None
    return plt


def plot_curves(summary: Sequence[dict[str, Any]], x: str, path: str | os.PathLike, *,
                colour_key: str = "recipe", style_key: str | None = "votes", style_label=None,
                title: str = "",
                xlabel: str | None = None, logx: bool = False, chance: float | None = None,
                float_ref: float | None = None, age_ticks: bool = False) -> bool:
    """Accuracy (%) against ``x`` with shaded 95% intervals: colour by ``colour_key`` (recipe
    colours fixed across figures), line style by ``style_key``; legend in numeric order;
    horizontal chance and float lines. Returns False without matplotlib."""
    plt = _plt()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    lines: dict[tuple, list[dict]] = {}
    for s in summary:
        lines.setdefault((s.get(colour_key), s.get(style_key) if style_key else None),
                         []).append(s)
    palette = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    colours: dict[Any, str] = {}
    styles_free = iter(["-", "--", ":", "-."] * 4)
    style_vals = sorted({k[1] for k in lines}, key=sort_key)
    styles = {v: (VOTE_STYLES.get(v, "-") if style_key == "votes" else next(styles_free))
              for v in style_vals}
    if style_label is None:
        def style_label(v):
            return (f"{v} vote{'s' if v != 1 else ''}" if style_key == "votes"
                    else f"{style_key} = {v}")
    for (c, st), pts in sorted(lines.items(), key=lambda kv: (sort_key(kv[0][0]),
                                                              sort_key(kv[0][1]))):
        if c not in colours:
            colours[c] = RECIPE_COLOURS.get(str(c)) or next(palette)
        pts = sorted(pts, key=lambda p: sort_key(p[x]))
        xs = np.array([float(p[x]) for p in pts])
        ys = np.array([100 * p["accuracy_mean"] for p in pts])
        lo = np.array([100 * p["ci_lo"] for p in pts])
        hi = np.array([100 * p["ci_hi"] for p in pts])
        label = str(c) if not style_key else f"{c}, {style_label(st)}"
        ax.plot(xs, ys, marker="o", ms=3.5, color=colours[c],
                linestyle=styles[st] if style_key else "-", label=label)
        ax.fill_between(xs, lo, hi, color=colours[c], alpha=0.12, linewidth=0)
    if chance is not None:
        ax.axhline(100 * chance, color="0.5", lw=0.8, ls=(0, (1, 2)),
                   label=f"chance ({100 * chance:.0f}%)")
    if float_ref is not None:
        ax.axhline(100 * float_ref, color="k", lw=0.8, ls=(0, (5, 3)),
                   label=f"float model ({100 * float_ref:.1f}%)")
    if logx or age_ticks:
        ax.set_xscale("log")
    if age_ticks:
        xs_all = sorted({float(s[x]) for s in summary})
        ticks = [t for t in AGE_TICKS_S if xs_all and xs_all[0] <= t <= xs_all[-1]]
        ticks = sorted(set(ticks))
        ax.set_xticks(ticks)
        ax.set_xticklabels([AGE_TICKS_S[t] for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel("accuracy (%), shaded: 95% CI")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def pareto_front(points: Iterable[tuple[float, float]]) -> list[int]:
    """Indices of the points (energy, accuracy) no other point beats on both (lower energy,
    higher accuracy), in increasing energy."""
    pts = list(points)
    order = sorted(range(len(pts)), key=lambda i: (pts[i][0], -pts[i][1]))
    front, best = [], -math.inf
    for i in order:
        if pts[i][1] > best:
            front.append(i)
            best = pts[i][1]
    return front


def plot_pareto(summary: Sequence[dict[str, Any]], path: str | os.PathLike, *,
                label_keys: Sequence[str] = ("bits", "votes"), colour_key: str = "recipe",
                title: str = "", chance: float | None = None,
                float_ref: float | None = None) -> bool:
    """Accuracy against energy per inference (log x), 95% interval bars, the Pareto front
    joined; colour = recipe; each point labelled by ``label_keys``."""
    plt = _plt()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    pts = [(float(s["energy_pJ_per_inference"]), 100 * s["accuracy_mean"]) for s in summary]
    seen = set()
    for s, (e, a) in zip(summary, pts):
        c = s.get(colour_key)
        col = RECIPE_COLOURS.get(str(c), "#9467bd")
        ax.errorbar([e], [a], yerr=[[a - 100 * s["ci_lo"]], [100 * s["ci_hi"] - a]], fmt="o",
                    ms=4, color=col, capsize=2, label=None if c in seen else str(c))
        seen.add(c)
        ax.annotate(", ".join(f"{s.get(k)}" for k in label_keys if k in s), (e, a),
                    fontsize=6, xytext=(3, 3), textcoords="offset points")
    front = pareto_front(pts)
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], color="k", lw=0.8,
            label="Pareto front")
    if chance is not None:
        ax.axhline(100 * chance, color="0.5", lw=0.8, ls=(0, (1, 2)), label="chance")
    if float_ref is not None:
        ax.axhline(100 * float_ref, color="k", lw=0.8, ls=(0, (5, 3)), label="float model")
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference (pJ)")
    ax.set_ylabel("accuracy (%), bars: 95% CI")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: sort_key(labels[i]))
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
