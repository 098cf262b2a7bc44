"""`nvmstream sweep`: accuracy (and energy) of a model over a grid of profile overrides x device
seeds x votes on a labelled dataset; in parallel over local processes, or on a Dask cluster.

Dataset: an ``.npz`` with ``x_test [N, T, F]``, ``y_test [N]`` and optionally
``lengths_test [N]`` (the class is read from the first model output at each sequence's last
valid step, as a streaming classifier would report it). Grid axes are ``section.field`` with a
list of values; ``f1+f2=v1,v2`` sweeps several fields together (e.g. weights/DAC/ADC bits).
Output: one CSV row per (grid point, seed, votes), appended and flushed as each run finishes
(:class:`CsvRows`; ``--resume`` skips the runs a file already holds), a provenance comment line
at the top (read with ``pandas.read_csv(path, comment="#")``), a plot (matplotlib, if
installed). Progress is the caller's: ``run_sweep(on_row=...)`` is called as each run ends
(the CLI shows runtime/progress.py's bar from it).
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

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
    threshold: float | None = None     # a one-value output read as a binary classifier


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


def _value(raw: str) -> Any:
    """A grid value as TOML reads it (2 -> int, 1e-3 -> float, true -> bool), else the text."""
    import tomllib
    raw = raw.strip()
    if raw in ("True", "False"):        # how a CSV row holds a Python bool
        return raw == "True"
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def parse_axis(text: str) -> tuple[tuple[str, ...], list[Any]]:
    """``adc.bits=2,3,4`` or ``weights.bits+dac.bits+adc.bits=2,4,8`` (tied fields)."""
    if "=" not in text:
        raise ValueError(f"grid axis {text!r}: expected FIELD=V1,V2,... (FIELD may be "
                         f"F1+F2 to tie fields)")
    lhs, rhs = text.split("=", 1)
    fields = tuple(f.strip() for f in lhs.split("+") if f.strip())
    vals = [_value(raw) for raw in rhs.split(",")]
    if not fields or not vals:
        raise ValueError(f"grid axis {text!r}: no fields or no values")
    return fields, vals


_CACHE: dict[str, Any] = {}


def calibration_text(job: Job) -> str:
    """How a job's model is calibrated (for the provenance and the start line)."""
    if job.model.endswith(".nvm"):
        return f"calibration: the one stored in {job.model}"
    if job.calibration == "random":
        return "calibration: random N(0, 1) inputs (--calibration random)"
    if job.calibration:
        return (f"calibration: at most 64 sequences of {job.calibration}, a seeded random "
                f"subsample (seed 0) as nvmstream.convert takes it")
    return (f"calibration: 64 sequences of {job.data} (x_train, else x_test), a seeded "
            f"class-balanced subsample (runtime/stats.calibration_set)")


def _load(job: Job):
    import nvmstream as nvm
    from .data import load_data, resolve_calibration
    key = f"{job.model}|{job.calibration}|{job.data}|{job.limit}"
    if key not in _CACHE:
        d = load_data(job.data, "test", what="sweep data", need_labels=True).head(job.limit)
        with open(job.model, "rb") as f:
            is_nvm = f.read(2) == b"PK"
        if is_nvm:
            prog = nvm.load(job.model)
        else:
            # never the class-sorted x_train[:64]: the whole train split goes to convert, which
            # keeps a seeded random subsample of 64 (the rule the shipped models were trained
            # with, demos/train.py)
            fallback = None
            if not job.calibration:
                try:
                    fallback = load_data(job.data, "train", what="calibration")
                except ValueError:
                    fallback = d
            if job.calibration or fallback is None:
                cal_x = resolve_calibration(job.model, job.calibration).x
            else:       # seeded and class-balanced (runtime/stats.calibration_set)
                from nvmstream.runtime.stats import calibration_set
                cal_x = calibration_set(fallback.x, fallback.y)
            prog = nvm.convert(job.model, calibration=cal_x)
        _CACHE[key] = (prog, d.x, d.y, d.lengths)
    return _CACHE[key]


def run_job(job: Job) -> dict[str, Any]:
    """Evaluate one grid point (runs in a worker process or a Dask worker)."""
    import nvmstream as nvm
    t0 = time.perf_counter()
    prog, x, y, lens = _load(job)
    dev = nvm.Device(job.profile, seed=job.seed, overrides=dict(job.overrides) or None)
    eng = nvm.Engine(prog, dev, votes=job.votes)
    cls = eng.predict(x, seed=1000 * job.seed, lens=lens, threshold=job.threshold)
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


def run_sweep(jobs: Sequence[Job], *, workers: int | None = None, dask_address: str | None = None,
              on_row: Callable[[Job, dict[str, Any]], None] | None = None
              ) -> list[dict[str, Any]]:
    """Run ``jobs`` locally (process pool; ``workers=1`` runs in-process) or on Dask.

    ``on_row(job, row)`` is called as each run finishes (the CLI appends it to the CSV, so an
    interrupted sweep keeps what was done, and advances its progress bar). Returns the rows in
    job order."""
    rows: list[dict[str, Any] | None] = [None] * len(jobs)

    def finish(i: int, row: dict[str, Any]) -> None:
        rows[i] = row
        if on_row is not None:
            on_row(jobs[i], row)

    if not jobs:
        pass
    elif dask_address:
        from distributed import Client, as_completed as dask_completed
        with Client(dask_address) as client:
            futs = {client.submit(run_job, j, pure=False): i for i, j in enumerate(jobs)}
            for f in dask_completed(futs):
                finish(futs[f], f.result())
    elif workers == 1 or len(jobs) == 1:
        for i, j in enumerate(jobs):
            finish(i, run_job(j))
    else:
        workers = workers or max(1, os.cpu_count() or 1)
        ex = ProcessPoolExecutor(max_workers=workers)
        try:
            futs = {ex.submit(run_job, j): i for i, j in enumerate(jobs)}
            for f in as_completed(futs):
                finish(futs[f], f.result())
        except BaseException:
            # interrupted or failed: what finished is already written; do not wait for
            # the runs still going
            ex.shutdown(wait=False, cancel_futures=True)
            raise
        ex.shutdown(wait=True)
    return [r for r in rows if r is not None]


def make_jobs(model: str, data: str, profile: str, grid: Grid, seeds: Iterable[int],
              votes: Iterable[int], limit: int | None = None,
              calibration: str | None = None, threshold: float | None = None) -> list[Job]:
    return [Job(str(model), str(data), profile, pt, int(s), int(v), limit, calibration,
                threshold)
            for pt in grid.points() for s in seeds for v in votes]


RESULT_COLUMNS = ["n", "accuracy", "energy_pJ_per_inference", "tops_per_w", "seconds",
                  "correct_hex"]   # per-item correctness (hex of packbits) for paired tests


def columns(grid: Grid) -> list[str]:
    """CSV columns of a sweep over ``grid``."""
    fields = [f for fs, _ in grid.axes for f in fs]
    return ["profile", *dict.fromkeys(fields), "seed", "votes", *RESULT_COLUMNS]


def job_key(job: Job) -> tuple[str, ...]:
    """What identifies a run in the CSV (values as CSV text)."""
    return (job.profile, *[str(v) for _, v in job.overrides], str(job.seed), str(job.votes))


def _profile_hashes(prov: dict[str, Any], old: dict[str, Any]) -> tuple[str | None, bool]:
    """(the profile hash ``old`` must hold, whether it is a schema-1 hash): a file written
    before ``profile_hash_schema`` existed hashed every field; it matches when that hash equals
    the current profile's with the fields added since (at their defaults) left out."""
    from .outputs import PROFILE_HASH_SCHEMA, legacy_profile_sha256, profile_sha256
    resolved = prov.get("profile_resolved")
    if resolved is None:
        return prov.get("profile_sha256"), False
    if "profile_hash_schema" not in old:
        legacy = legacy_profile_sha256(resolved)
        if legacy is not None and legacy == old.get("profile_sha256"):
            return legacy, True
    elif old["profile_hash_schema"] != PROFILE_HASH_SCHEMA:
        return f"(profile hash schema {PROFILE_HASH_SCHEMA})", False
    return profile_sha256(resolved), False


class CsvRows:
    """The sweep's CSV, written as runs finish: provenance comment line, header, one flushed row
    per run. ``resume=True`` keeps an existing file (same model, data and profile) and reports
    which runs it holds; otherwise the file is started afresh."""

    def __init__(self, path: str | os.PathLike, cols: Sequence[str], prov: dict[str, Any],
                 *, resume: bool = False) -> None:
        from .outputs import csv_preamble, csv_rows, read_csv_provenance
        self.path, self.cols = Path(path), list(cols)
        self._rows: list[dict[str, Any]] = []
        self._done: set[tuple[str, ...]] = set()
        self._nfields = len(cols) - len(RESULT_COLUMNS)
        if resume and self.path.exists() and self.path.stat().st_size:
            old = read_csv_provenance(self.path) or {}
            prov = dict(prov)
            for k in ("model_sha256", "data_sha256", "profile_sha256", "sequences",
                      "calibration", "threshold"):
                if k == "calibration" and k not in old:
                    continue            # files written before it was recorded
                want = prov.get(k)
                if k == "profile_sha256":
                    want, legacy = _profile_hashes(prov, old)
                    if legacy:          # a schema-1 file of this very profile: say so
                        prov["profile_hash_migrated_from"] = old.get(k)
                        log.info("%s: profile hash of schema 1 recognised (the fields added "
                                 "since are at their defaults)", self.path)
                        want = old.get(k)
                if old.get(k) != want:
                    raise ValueError(f"{self.path}: --resume of a different sweep ({k} "
                                     f"{old.get(k)!r} in the file, {want!r} now); use another "
                                     f"--out or --overwrite")
            with open(self.path, newline="") as f:
                reader = csv.DictReader(csv_rows(f))
                if reader.fieldnames != self.cols:
                    raise ValueError(f"{self.path}: --resume with other grid axes (columns "
                                     f"{reader.fieldnames} in the file, {self.cols} now)")
                for r in reader:
                    if None in r.values() or any(v == "" for v in r.values()):
                        continue            # a row cut by the interruption
                    self._rows.append(r)
                    self._done.add(tuple(r[c] for c in self.cols[:self._nfields]))
            # rewrite without any partial last line, then append; a file whose every run is
            # reused keeps its bytes (its creation time included), and the first run appended
            # stamps ``extended_utc``
            for k in ("created_utc", "extended_utc"):
                if k in old:
                    prov[k] = old[k]
            self._resumed_prov = prov
            self._raw_rows = [dict(r) for r in self._rows]   # as read: rewritten byte for byte
            self._write_resumed(prov, only_if_changed=True)
            for r in self._rows:
                for c in RESULT_COLUMNS:
                    if c != "correct_hex":          # stays the hex text
                        r[c] = _num(r[c]) if c != "n" else int(r[c])
                r["seed"], r["votes"] = int(r["seed"]), int(r["votes"])
                for c in self.cols[1:self._nfields - 2]:
                    r[c] = _value(r[c])
        else:
            from .outputs import write_text
            buf = io.StringIO()
            csv.DictWriter(buf, fieldnames=self.cols, lineterminator="\n").writeheader()
            write_text(self.path, csv_preamble(prov) + buf.getvalue())

    _resumed_prov: dict[str, Any] | None = None     # set while the first appended run is due

    def _write_resumed(self, prov: dict[str, Any], only_if_changed: bool = False) -> None:
        from .outputs import csv_preamble, write_text
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.cols, lineterminator="\n",
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(self._raw_rows)
        text = csv_preamble(prov) + buf.getvalue()
        if only_if_changed:
            with open(self.path, newline="") as f:
                if f.read() == text:
                    return
        write_text(self.path, text)

    def has(self, job: Job) -> bool:
        return job_key(job) in self._done

    def append(self, job: Job, row: dict[str, Any]) -> None:
        if self._resumed_prov is not None:
            import datetime as _dt
            prov, self._resumed_prov = self._resumed_prov, None
            prov["extended_utc"] = _dt.datetime.now(_dt.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
            self._write_resumed(prov)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.cols, lineterminator="\n",
                           extrasaction="ignore").writerow(row)
            f.flush()
            os.fsync(f.fileno())
        self._rows.append(row)
        self._done.add(job_key(job))

    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike,
              prov: dict[str, Any] | None = None) -> None:
    """All rows at once (atomically), with a provenance comment line when given."""
    from .outputs import csv_preamble, write_text
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    write_text(path, (csv_preamble(prov) if prov else "") + buf.getvalue())


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
                    "n": int(rs[0]["n"]),
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
