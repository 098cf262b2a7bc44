"""`nvmstream sweep`: accuracy (and energy) of a model over a grid of profile overrides x device
seeds x votes on a labelled dataset; in parallel over local processes, or on a Dask cluster.

Dataset: an ``.npz`` with ``x_test [N, T, F]``, ``y_test [N]`` and optionally
``lengths_test [N]`` (the class is read from the first model output at each sequence's last
valid step, as a streaming classifier would report it). Grid axes are ``section.field`` with a
list of values; ``--tie a,b`` sweeps several fields together (e.g. weights/DAC/ADC bits).
Output: one CSV row per (grid point, seed, votes), a PNG plot (matplotlib, if installed) and a
progress bar on stderr.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    model: str                     # path to .onnx or .nvm
    data: str                      # path to .npz
    profile: str
    overrides: tuple[tuple[str, Any], ...]
    seed: int
    votes: int
    limit: int | None = None
    calibration: str | None = None


@dataclass
class Grid:
    """Axes of the sweep: each a tuple of fields swept together and their values."""

    axes: list[tuple[tuple[str, ...], list[Any]]] = field(default_factory=list)

    def add(self, fields: Sequence[str], values: Sequence[Any]) -> None:
        self.axes.append((tuple(fields), list(values)))

    def points(self) -> list[tuple[tuple[str, Any], ...]]:
        if not self.axes:
            return [()]
        out = []
        for combo in itertools.product(*[vals for _, vals in self.axes]):
            pt = []
            for (fields, _), v in zip(self.axes, combo):
                for f in fields:
                    pt.append((f, v))
            out.append(tuple(pt))
        return out


def parse_axis(text: str) -> tuple[tuple[str, ...], list[Any]]:
    """``adc.bits=2,3,4`` or ``weights.bits+dac.bits+adc.bits=2,4,8`` (tied fields)."""
    import tomllib
    if "=" not in text:
        raise ValueError(f"grid axis {text!r}: expected FIELD=V1,V2,... (FIELD may be "
                         f"F1+F2 to tie fields)")
    lhs, rhs = text.split("=", 1)
    fields = tuple(f.strip() for f in lhs.split("+") if f.strip())
    vals = []
    for raw in rhs.split(","):
        raw = raw.strip()
        try:
            vals.append(tomllib.loads(f"v = {raw}")["v"])
        except tomllib.TOMLDecodeError:
            vals.append(raw)
    if not fields or not vals:
        raise ValueError(f"grid axis {text!r}: no fields or no values")
    return fields, vals


_CACHE: dict[str, Any] = {}


def _load(job: Job):
    import nvmstream as nvm
    key = f"{job.model}|{job.calibration}|{job.data}"
    if key not in _CACHE:
        d = np.load(job.data, allow_pickle=False)
        if "x_test" not in d.files or "y_test" not in d.files:
            raise ValueError(f"{job.data}: needs arrays x_test and y_test")
        x = d["x_test"].astype(np.float32)
        y = d["y_test"].astype(np.int64)
        lens = d["lengths_test"].astype(np.int64) if "lengths_test" in d.files else None
        if job.limit:
            x, y = x[:job.limit], y[:job.limit]
            lens = lens[:job.limit] if lens is not None else None
        if job.model.endswith(".nvm"):
            prog = nvm.load(job.model)
        else:
            if job.calibration:
                cal = np.load(job.calibration, allow_pickle=False)
                cal = cal["x_train"] if isinstance(cal, np.lib.npyio.NpzFile) else cal
            else:
                # a seeded random, class-balanced subsample (the shipped data are class-sorted:
                # the first rows would hold a few classes only)
                from nvmstream.runtime.stats import calibration_set
                if "x_train" in d.files:
                    cal = calibration_set(d["x_train"], d["y_train"] if "y_train" in d.files
                                          else None)
                else:
                    cal = calibration_set(x, y)
            prog = nvm.convert(job.model, calibration=np.asarray(cal, np.float32))
        _CACHE[key] = (prog, x, y, lens)
    return _CACHE[key]


def run_job(job: Job) -> dict[str, Any]:
    """Evaluate one grid point (runs in a worker process or a Dask worker)."""
    import nvmstream as nvm
    t0 = time.perf_counter()
    prog, x, y, lens = _load(job)
    dev = nvm.Device(job.profile, seed=job.seed, overrides=dict(job.overrides) or None)
    eng = nvm.Engine(prog, dev, votes=job.votes)
    cls = eng.predict(x, seed=1000 * job.seed, lens=lens)
    idx = (lens - 1) if lens is not None else np.full(len(x), x.shape[1] - 1)
    pred = cls[np.arange(len(x)), idx]
    rep = eng.report().analog
    row = {"profile": job.profile, **{k: v for k, v in job.overrides}, "seed": job.seed,
           "votes": job.votes, "n": int(len(x)), "accuracy": float(np.mean(pred == y)),
           # per-item correctness (bit i = item i, numpy packbits order) for paired tests
           "correct_hex": np.packbits(pred == y).tobytes().hex(),
           "energy_pJ_per_inference": rep.energy_pJ_per_inference,
           "tops_per_w": rep.tops_per_w, "seconds": time.perf_counter() - t0}
    return row


def _progress(done: int, total: int, t0: float, stream=sys.stderr) -> None:
    width = 30
    frac = done / total if total else 1.0
    bar = "#" * int(width * frac) + "-" * (width - int(width * frac))
    el = time.perf_counter() - t0
    eta = el / done * (total - done) if done else float("nan")
    stream.write(f"\rsweep [{bar}] {done}/{total}  {el:6.1f}s elapsed  eta {eta:6.1f}s")
    if done == total:
        stream.write("\n")
    stream.flush()


def run_sweep(jobs: Sequence[Job], *, workers: int | None = None, dask_address: str | None = None,
              progress: bool = True) -> list[dict[str, Any]]:
    """Run ``jobs`` locally (process pool; ``workers=1`` runs in-process) or on Dask."""
    rows: list[dict[str, Any] | None] = [None] * len(jobs)
    t0 = time.perf_counter()
    done = 0
    if dask_address:
        from distributed import Client, as_completed as dask_completed
        with Client(dask_address) as client:
            futs = {client.submit(run_job, j, pure=False): i for i, j in enumerate(jobs)}
            for f in dask_completed(futs):
                rows[futs[f]] = f.result()
                done += 1
                if progress:
                    _progress(done, len(jobs), t0)
    elif workers == 1 or len(jobs) == 1:
        for i, j in enumerate(jobs):
            rows[i] = run_job(j)
            done += 1
            if progress:
                _progress(done, len(jobs), t0)
    else:
        workers = workers or max(1, os.cpu_count() or 1)
        with ProcessPoolExecutor(max_workers=workers) as ex:
            futs = {ex.submit(run_job, j): i for i, j in enumerate(jobs)}
            for f in as_completed(futs):
                rows[futs[f]] = f.result()
                done += 1
                if progress:
                    _progress(done, len(jobs), t0)
    return [r for r in rows if r is not None]


def make_jobs(model: str, data: str, profile: str, grid: Grid, seeds: Iterable[int],
              votes: Iterable[int], limit: int | None = None,
              calibration: str | None = None) -> list[Job]:
    return [Job(str(model), str(data), profile, pt, int(s), int(v), limit, calibration)
            for pt in grid.points() for s in seeds for v in votes]


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    os.replace(tmp, path)


def summarize(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and std of accuracy over seeds for each combination of ``keys``."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    out = []
    for k, rs in groups.items():
        acc = np.array([r["accuracy"] for r in rs])
        out.append({**dict(zip(keys, k)), "accuracy_mean": float(acc.mean()),
                    "accuracy_std": float(acc.std()), "seeds": len(rs),
                    "energy_pJ_per_inference": float(np.mean([r["energy_pJ_per_inference"]
                                                              for r in rs]))})
    return out


def plot(rows: Sequence[dict[str, Any]], x: str, series: Sequence[str], path: str | os.PathLike,
         title: str = "", logx: bool = False) -> bool:
    """Accuracy (mean +- std over seeds) against ``x``, one line per ``series`` combination.
    Returns False (and logs) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plot written to %s", path)
        return False
    summ = summarize(rows, [x, *series])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    lines: dict[tuple, list[dict]] = {}
    for s in summ:
        lines.setdefault(tuple(s[k] for k in series), []).append(s)
    for key, pts in sorted(lines.items(), key=lambda kv: str(kv[0])):
        pts = sorted(pts, key=lambda p: _num(p[x]))
        xs = [_num(p[x]) for p in pts]
        ys = [100 * p["accuracy_mean"] for p in pts]
        es = [100 * p["accuracy_std"] for p in pts]
        label = ", ".join(f"{k}={v}" for k, v in zip(series, key)) or "accuracy"
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
    ax.set_xlabel(x)
    ax.set_ylabel("accuracy (%)")
    if logx:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _num(v: Any) -> float:
    try:
        f = float(v)
        return f if math.isfinite(f) else 1e9
    except (TypeError, ValueError):
        return float("nan")
