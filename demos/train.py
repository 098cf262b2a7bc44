#!/usr/bin/env python
"""Train, export and evaluate nvmstream's shipped demo models (torch, CPU; the `train` extra).

One model:

    python demos/train.py --task japanese_vowels --recipe qat4 \
        --out demos/models/japanese_vowels_qat4.onnx

Every shipped model (demos/models/*.onnx) and demos/models/manifest.json:

    python demos/train.py --all

Recipes (demos/qat.py holds the quantizers):

* ``float``: a float LSTM/GRU + per-step linear head, trained with cross-entropy on the logits at
  each sequence's last valid step.
* ``qat4``: the float model, then quantization-aware fine-tuning with the weight, DAC and ADC
  quantizers of a device profile (``--profile``, default ``int4``; straight-through gradients);
  the ranges are running statistics of the batches until the last ``--freeze-frac`` of the
  epochs, when they are set exactly as ``nvmstream.convert`` will calibrate them and frozen.
* ``qat4_noise``: as ``qat4`` with Gaussian noise at ``--snr-db`` (default 10 dB) added to every
  matrix-vector product during training (deep noise injection, arXiv 1807.06555; Qin & Vucinic,
  arXiv 1811.10649).

The exported ONNX (TorchScript exporter, opset 17, native LSTM/GRU op) maps ``x[B, T, F]`` (batch
first, dynamic batch and time) to logits ``y[B, T, C]`` at every step; a stream classifies by the
output at its last frame. Exported weights are the quantized ones (codes x row scale) for QAT
recipes, so the emulator's int4 codes are exactly the trained ones. Each export is checked
against nvmstream's float executor (max abs difference <= 1e-5, streamable), then evaluated with
the project's runtime (``nvm.convert`` with the training split as calibration data, then
``nvm.Engine`` on the ``ideal``, ``int4``, ``pcm-1d`` and ``snr0db`` devices).

Determinism: fixed seeds, 2 torch threads, CPU; the same torch version reproduces the weights.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODELS_DIR = HERE / "models"
MANIFEST = MODELS_DIR / "manifest.json"
RECIPES = ("float", "qat4", "qat4_noise")
EXPORT_OPSET = 17
EXPORT_TOL = 1e-5

log = logging.getLogger("nvmstream.train")


def _load_local(name: str, file: str):
    """Import a sibling module by path (demos/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod          # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod


datasets = _load_local("nvm_datasets", "datasets.py")


# ------------------------------------------------------------------------------ task settings
@dataclass(frozen=True)
class TaskConfig:
    kind: str                 # LSTM | GRU
    hidden: int
    epochs: int               # float training epochs
    qat_epochs: int           # quantization-aware fine-tuning epochs (qat recipes)
    batch: int
    lr: float
    qat_lr: float
    frame: str                # what one input frame is
    weight_decay: float = 0.0
    all_steps_weight: float = 0.0  # weight of the (mean) loss on every valid step, besides the last
    freeze_frac: float = 0.3  # last fraction of QAT epochs with frozen, emulator-exact ranges
    input_noise: float = 0.0  # augmentation: N(0, (input_noise * feature std)^2) on train inputs
    normalize: bool = False   # float training on standardised inputs (folded into W at export)
    forget_bias: float = 0.0  # LSTM forget-gate bias at initialisation (1.0: remember longer)


TASKS: dict[str, TaskConfig] = {
    "japanese_vowels": TaskConfig(
        kind="LSTM", hidden=32, epochs=60, qat_epochs=40, batch=16, lr=1e-2, qat_lr=2e-3,
        input_noise=0.1,
        frame="12 LPC cepstrum coefficients of one analysis frame (25.6 ms, 6.4 ms shift) of /ae/"),
    "basic_motions": TaskConfig(
        kind="LSTM", hidden=32, epochs=40, qat_epochs=15, batch=8, lr=1e-2, qat_lr=2e-3,
        input_noise=0.1,
        frame="one 10 Hz smartwatch sample: accelerometer x, y, z and gyroscope x, y, z"),
    "digits": TaskConfig(
        kind="GRU", hidden=32, epochs=20, qat_epochs=10, batch=32, lr=1e-2, qat_lr=2e-3,
        frame="one row of an 8x8 handwritten digit image: 8 pixels scaled to [0, 1]"),
    "keywords": TaskConfig(
        kind="LSTM", hidden=64, epochs=40, qat_epochs=10, batch=32, lr=3e-3, qat_lr=1e-3,
        normalize=True, forget_bias=1.0, all_steps_weight=0.5,
        frame="one 10 ms frame of 40 log-mel energies (see the frontend metadata)"),
}
SHIPPED = [(task, recipe) for task in TASKS for recipe in RECIPES]


@dataclass(frozen=True)
class Recipe:
    name: str
    profile: str | None = None
    snr_db: float = math.inf
    seed: int = 0
    epochs: int | None = None        # overrides TaskConfig.epochs
    qat_epochs: int | None = None    # overrides TaskConfig.qat_epochs
    hidden: int | None = None
    kind: str | None = None

    def task_config(self, task: str) -> TaskConfig:
        tc = TASKS[task]
        upd = {k: v for k, v in (("epochs", self.epochs), ("qat_epochs", self.qat_epochs),
                                 ("hidden", self.hidden), ("kind", self.kind)) if v is not None}
        return replace(tc, **upd)


def make_recipe(name: str, profile: str | None = None, snr_db: float | None = None,
                **kw) -> Recipe:
    if name not in RECIPES:
        raise SystemExit(f"train: unknown recipe {name!r}; valid: {', '.join(RECIPES)}")
    if name == "float":
        return Recipe(name, None, math.inf, **kw)
    snr = math.inf if name == "qat4" else (10.0 if snr_db is None else float(snr_db))
    return Recipe(name, profile or "int4", snr, **kw)


# ------------------------------------------------------------------------------ data
@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray
    last: np.ndarray      # index of each sequence's last valid step


def load_task(task: str):
    ds = datasets.load(task)
    t = ds.x_train.shape[1]

    def split(x, y, lengths):
        last = (lengths - 1) if lengths is not None else np.full(len(y), t - 1)
        return Split(np.ascontiguousarray(x, np.float32), y.astype(np.int64),
                     last.astype(np.int64))
    return ds, split(ds.x_train, ds.y_train, ds.lengths_train), \
        split(ds.x_test, ds.y_test, ds.lengths_test)


# ------------------------------------------------------------------------------ training
def _torch():
    import torch
    torch.set_num_threads(2)
    return torch


def _seed_all(seed: int) -> None:
    torch = _torch()
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)


def _loss(torch, logits, y, last, all_steps_weight: float):
    idx = torch.arange(len(y))
    loss = torch.nn.functional.cross_entropy(logits[idx, last], y)
    if all_steps_weight > 0:
        t = logits.shape[1]
        mask = (torch.arange(t)[None, :] <= last[:, None]).float()
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.repeat_interleave(t), reduction="none")
        loss = loss + all_steps_weight * (ce.reshape(-1, t) * mask).sum() / mask.sum()
    return loss


def _fit(model, tr: Split, epochs: int, batch: int, lr: float, weight_decay: float,
         all_steps_weight: float, seed: int, on_epoch=None, label: str = "",
         input_noise: float = 0.0) -> None:
    """Adam + cosine learning rate, gradient clipping; ``on_epoch(epoch)`` runs before each."""
    torch = _torch()
    qat = _load_local("nvm_qat", "qat.py")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(tr.y) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch),
                                                       eta_min=lr * 0.02)
    x, y, last = torch.as_tensor(tr.x), torch.as_tensor(tr.y), torch.as_tensor(tr.last)
    valid = torch.arange(x.shape[1])[None, :] <= last[:, None]
    fstd = x[valid].std(dim=0) if input_noise > 0 else None
    for ep in range(epochs):
        if on_epoch is not None:
            on_epoch(ep)
        model.train()
        perm = torch.randperm(len(y), generator=gen)
        total, correct, n = 0.0, 0, 0
        for k in range(0, len(y), batch):
            idx = perm[k:k + batch]
            tmax = int(last[idx].max()) + 1            # padding past the longest is never used
            xb = x[idx, :tmax]
            if fstd is not None:   # noise on the real frames only (padding stays zero)
                noise = torch.randn(xb.shape, generator=gen) * (input_noise * fstd)
                xb = xb + noise * valid[idx, :tmax, None]
            logits = model(xb)
            loss = _loss(torch, logits, y[idx], last[idx], all_steps_weight)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            qat.commit_stats(model)
            total += float(loss.detach()) * len(idx)
            correct += int((logits[torch.arange(len(idx)), last[idx]].argmax(1) == y[idx]).sum())
            n += len(idx)
        if ep == epochs - 1 or ep % max(1, epochs // 5) == 0:
            log.info("%s epoch %3d/%d  loss %.4f  train acc %.3f", label, ep + 1, epochs,
                     total / n, correct / n)


def torch_accuracy(model, s: Split, batch: int = 256) -> float:
    """Accuracy of a torch model (eval mode, no noise) at each sequence's last valid step."""
    torch = _torch()
    model.eval()
    correct = 0
    with torch.no_grad():
        for k in range(0, len(s.y), batch):
            logits = model(torch.as_tensor(s.x[k:k + batch]))
            pred = logits[torch.arange(logits.shape[0]), torch.as_tensor(s.last[k:k + batch])]
            correct += int((pred.argmax(1).numpy() == s.y[k:k + batch]).sum())
    return correct / len(s.y)


def train_float(task: str, recipe: Recipe, tr: Split, n_classes: int):
    qat = _load_local("nvm_qat", "qat.py")
    tc = recipe.task_config(task)
    _seed_all(recipe.seed)
    model = qat.SeqClassifier(tc.kind, tr.x.shape[2], tc.hidden, n_classes, qat.QuantConfig())
    if tc.forget_bias and tc.kind == "LSTM":
        import torch
        with torch.no_grad():
            model.rnn.bias_ih[tc.hidden:2 * tc.hidden] += tc.forget_bias
    if tc.normalize:
        valid = np.arange(tr.x.shape[1])[None, :] <= tr.last[:, None]
        frames = tr.x[valid]
        model.set_input_norm(frames.mean(0), np.maximum(frames.std(0), 1e-3))
    _fit(model, tr, tc.epochs, tc.batch, tc.lr, tc.weight_decay, tc.all_steps_weight,
         recipe.seed, label=f"{task}/float", input_noise=tc.input_noise)
    return model


def train_qat(task: str, recipe: Recipe, float_model, tr: Split):
    """Quantization(-and-noise)-aware fine-tuning of a float model for ``recipe.profile``."""
    qat = _load_local("nvm_qat", "qat.py")
    tc = recipe.task_config(task)
    cfg = qat.QuantConfig.from_profile(recipe.profile, recipe.snr_db)
    _seed_all(recipe.seed + 1)
    model = float_model.with_config(cfg)
    x_cal = qat.calibration_subset(tr.x)
    qat.calibrate_like_emulator(model, x_cal, freeze=False)   # initial ranges
    freeze_at = tc.qat_epochs - max(1, round(tc.freeze_frac * tc.qat_epochs))

    def on_epoch(ep: int) -> None:
        if ep >= freeze_at:     # ranges the emulator will use, re-set as the weights move
            qat.calibrate_like_emulator(model, x_cal, freeze=True)

    _fit(model, tr, tc.qat_epochs, tc.batch, tc.qat_lr, tc.weight_decay, tc.all_steps_weight,
         recipe.seed + 1, on_epoch=on_epoch, label=f"{task}/{recipe.name}",
         input_noise=tc.input_noise)
    qat.calibrate_like_emulator(model, x_cal, freeze=True)
    return model, cfg


# ------------------------------------------------------------------------------ export
def export_onnx(export_model, path: Path, n_in: int, metadata: dict[str, str]) -> None:
    """TorchScript export (opset 17, dynamic batch and time), metadata, atomic write."""
    torch = _torch()
    import onnx
    sample = torch.zeros(2, 5, n_in)
    buf = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(export_model, (sample,), buf, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch", 1: "time"},
                                        "y": {0: "batch", 1: "time"}},
                          opset_version=EXPORT_OPSET, dynamo=False)
    m = onnx.load_from_string(buf.getvalue())
    m.doc_string = metadata.get("description", "")
    del m.metadata_props[:]
    for k, v in metadata.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        onnx.save(m, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def verify_export(path: Path, export_model, x: np.ndarray) -> float:
    """nvmstream's float executor equals torch (max abs error <= 1e-5 x max(1, max |y|)) and
    the model streams (bit for bit equal to the whole-sequence run)."""
    import nvmstream as nvm
    torch = _torch()
    ir = nvm.load_ir(path)
    if not ir.streamable:
        raise RuntimeError(f"{path}: not streamable: {ir.why_not_streamable()}")
    with torch.no_grad():
        ref = export_model(torch.as_tensor(x)).numpy()
    got = ir.run_steps(x)["y"]
    err = float(np.max(np.abs(got - ref)))
    tol = EXPORT_TOL * max(1.0, float(np.max(np.abs(ref))))   # float32 rounding scales with |y|
    if got.shape != ref.shape or not err <= tol:
        raise RuntimeError(f"{path}: nvmstream float run differs from torch: shape {got.shape} vs "
                           f"{ref.shape}, max abs error {err:.3g} > {tol:.3g}")
    # streaming (same batch) equals the whole-sequence run bit for bit
    s = ir.stream(batch=x.shape[0])
    ys = np.stack([s.step(x[:, t])["y"] for t in range(x.shape[1])], axis=1)
    if not np.array_equal(ys, got):
        raise RuntimeError(f"{path}: streamed outputs differ from the whole-sequence run")
    return err


# ------------------------------------------------------------------------------ nvmstream eval
EVAL_DEVICES = [("ideal", 1), ("int4", 1), ("pcm-1d", 1), ("pcm-1d", 5), ("snr0db", 1),
                ("snr0db", 5)]


def eval_key(profile: str, votes: int) -> str:
    return profile if votes == 1 else f"{profile}_votes{votes}"


def nvm_accuracy(prog, profile: str, s: Split, votes: int = 1, seed: int = 0) -> float:
    """Accuracy on the emulated device: class at each sequence's last valid step.

    votes == 1: argmax of ``Engine.run``; votes > 1: ``Engine.predict`` (majority over votes).
    """
    import nvmstream as nvm
    eng = nvm.Engine(prog, nvm.Device(profile, seed=seed), votes=votes)
    rows = np.arange(len(s.y))
    if votes == 1:
        pred = eng.run(s.x)[rows, s.last].argmax(1)
    else:
        pred = eng.predict(s.x)[rows, s.last]
    return float(np.mean(pred == s.y))


def evaluate(path: Path, tr: Split, te: Split, devices=EVAL_DEVICES) -> dict[str, float]:
    import nvmstream as nvm
    prog = nvm.convert(path, tr.x)
    return {eval_key(p, v): nvm_accuracy(prog, p, te, v) for p, v in devices}


# ------------------------------------------------------------------------------ one model
def model_name(task: str, recipe: str) -> str:
    return f"{task}_{recipe}"


def build_metadata(task: str, recipe: Recipe, ds, tc: TaskConfig, cfg, acc: dict) -> dict:
    meta = {
        "task": task,
        "recipe": recipe.name,
        "labels": json.dumps(list(ds.labels)),
        "input": json.dumps({
            "name": "x", "layout": "BTF", "features": int(ds.n_features), "dtype": "float32",
            "frame": tc.frame,
            "steps": ("variable: feed exactly the sequence's real frames (no padding)"
                      if ds.lengths_train is not None else int(ds.x_train.shape[1])),
        }),
        "output": json.dumps({
            "name": "y", "layout": "BTC", "kind": "logits",
            "decision": "argmax of y at the last frame of the sequence"}),
        "train_accuracy": f"{acc['train']:.4f}",
        "test_accuracy_float": f"{acc['test']:.4f}",
        "seed": str(recipe.seed),
        "recipe_args": json.dumps({
            "kind": tc.kind, "hidden": tc.hidden, "epochs": tc.epochs,
            "qat_epochs": tc.qat_epochs if recipe.name != "float" else 0, "batch": tc.batch,
            "lr": tc.lr, "qat_lr": tc.qat_lr, "weight_decay": tc.weight_decay,
            "all_steps_weight": tc.all_steps_weight, "freeze_frac": tc.freeze_frac,
            "input_noise": tc.input_noise, "normalize_folded": tc.normalize,
            "forget_bias_init": tc.forget_bias,
            "loss": "cross-entropy at each sequence's last valid step"
                    + (f" + {tc.all_steps_weight} x mean cross-entropy over all valid steps"
                       if tc.all_steps_weight else ""),
            "optimizer": "Adam, cosine learning rate, grad-norm clip 1.0",
            "quant": cfg.to_dict() if cfg is not None else None,
            "calibration": "nvmstream.convert rule on the training split (64 sequences, seed 0)",
        }),
        "source": "demos/train.py (nvmstream)",
        "description": f"nvmstream demo: {tc.kind} {tc.hidden} + per-step linear head on {task}, "
                       f"recipe {recipe.name}",
    }
    if cfg is not None:
        meta["profile"] = cfg.profile
        if math.isfinite(cfg.snr_db):
            meta["train_snr_db"] = str(cfg.snr_db)
    if "frontend_params" in ds.meta:
        from nvmstream.runtime.frontend import FrontendParams
        fp = ds.meta["frontend_params"]
        if fp != FrontendParams().to_dict():
            log.warning("%s: dataset front-end parameters differ from FrontendParams defaults",
                        task)
        meta["frontend"] = json.dumps(fp)
    return meta


def train_one(task: str, recipe: Recipe, out: Path, float_cache: dict | None = None,
              do_eval: bool = True) -> dict:
    """Train, export, verify and evaluate one model; returns its manifest entry."""
    torch = _torch()
    ds, tr, te = load_task(task)
    tc = recipe.task_config(task)
    t0 = time.perf_counter()
    key = (task, recipe.seed, tc.kind, tc.hidden, tc.epochs)
    if float_cache is not None and key in float_cache:
        fmodel, t_float = float_cache[key]
    else:
        tf = time.perf_counter()
        fmodel = train_float(task, recipe, tr, ds.n_classes)
        t_float = time.perf_counter() - tf
        if float_cache is not None:
            float_cache[key] = (fmodel, t_float)
    cfg = None
    qacc = None
    t_qat = 0.0
    if recipe.name == "float":
        model = fmodel
    else:
        tq = time.perf_counter()
        model, cfg = train_qat(task, recipe, fmodel, tr)
        t_qat = time.perf_counter() - tq
        qacc = torch_accuracy(model, te)   # torch emulation of the profile (DAC/ADC, no noise)
    exp = model.export_module()
    if recipe.name == "float":   # the hand-written cell equals torch's nn.LSTM / nn.GRU
        with torch.no_grad():
            xs = torch.as_tensor(te.x[:8])
            diff = float((model.eval()(xs) - exp(xs)).abs().max())
        if not diff <= 1e-4:
            raise RuntimeError(f"training cell and exported {tc.kind} differ by {diff:.3g}")
    acc = {"train": torch_accuracy(exp, tr), "test": torch_accuracy(exp, te)}
    meta = build_metadata(task, recipe, ds, tc, cfg, acc)
    export_onnx(exp, out, ds.n_features, meta)
    err = verify_export(out, exp, te.x[:8])
    entry = {
        "task": task, "recipe": recipe.name, "file": out.name, "kind": tc.kind,
        "hidden": tc.hidden, "params": int(sum(p.numel() for p in exp.parameters())),
        "epochs": tc.epochs, "qat_epochs": tc.qat_epochs if cfg is not None else 0,
        "seed": recipe.seed, "profile": cfg.profile if cfg is not None else None,
        "train_snr_db": (cfg.snr_db if cfg is not None and math.isfinite(cfg.snr_db) else None),
        "torch_train_accuracy": round(acc["train"], 4),
        "torch_test_accuracy": round(acc["test"], 4),
        "torch_qat_test_accuracy": round(qacc, 4) if qacc is not None else None,
        "export_max_abs_error": err,
        "train_seconds": round((t_float if recipe.name == "float" else t_float + t_qat), 1),
        "bytes": out.stat().st_size,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "test_split": {"n": int(len(te.y)), "pick": "lengths_test - 1" if ds.lengths_test
                       is not None else "last step"},
    }
    log.info("%s: torch float test %.4f%s, exported to %s (max |nvm - torch| %.2g)",
             out.name, acc["test"], "" if qacc is None else f", torch {cfg.profile} {qacc:.4f}",
             out, err)
    if do_eval:
        te0 = time.perf_counter()
        entry["nvmstream"] = {k: round(v, 4) for k, v in evaluate(out, tr, te).items()}
        entry["eval_seconds"] = round(time.perf_counter() - te0, 1)
        log.info("%s: nvmstream %s", out.name, entry["nvmstream"])
    return entry


# ------------------------------------------------------------------------------ manifest
def read_manifest(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"models": {}}


def write_manifest(man: dict, path: Path) -> None:
    man["about"] = (
        "Shipped demo models, made by `python demos/train.py --all` (one model: the command in "
        "each entry). Accuracies are on each dataset's full test split, class at the last valid "
        "step. torch_*: the exported float model in torch; torch_qat_test_accuracy: torch "
        "emulation of the profile's weight/DAC/ADC quantizers; nvmstream.*: nvm.convert(model, "
        "x_train) then nvm.Engine(prog, nvm.Device(profile, seed=0), votes) (votes > 1: "
        "majority via Engine.predict).")
    man["models"] = dict(sorted(man["models"].items()))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(man, indent=1) + "\n")
    os.replace(tmp, path)


def command_for(task: str, recipe: Recipe, out: Path) -> str:
    parts = ["python demos/train.py", f"--task {task}", f"--recipe {recipe.name}"]
    if recipe.profile:
        parts.append(f"--profile {recipe.profile}")
    if math.isfinite(recipe.snr_db):
        parts.append(f"--snr-db {recipe.snr_db:g}")
    tc = recipe.task_config(task)
    parts.append(f"--epochs {tc.epochs}")
    if recipe.name != "float":
        parts.append(f"--qat-epochs {tc.qat_epochs}")
    for flag, val in (("--hidden", recipe.hidden), ("--kind", recipe.kind)):
        if val is not None:
            parts.append(f"{flag} {val}")
    parts.append(f"--seed {recipe.seed}")
    try:
        rel = out.resolve().relative_to(HERE.parent)
    except ValueError:
        rel = out
    parts.append(f"--out {rel}")
    return " ".join(parts)


def markdown_table(man: dict) -> str:
    """The manifest's accuracies as a markdown table (percent)."""
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


# ------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS))
    ap.add_argument("--recipe", choices=RECIPES, default="float")
    ap.add_argument("--profile", default=None,
                    help="device profile whose weight/DAC/ADC bits the QAT quantizers use "
                         "(default int4)")
    ap.add_argument("--snr-db", type=float, default=None,
                    help="training noise SNR in dB for qat4_noise (default 10)")
    ap.add_argument("--epochs", type=int, default=None, help="float training epochs")
    ap.add_argument("--qat-epochs", type=int, default=None, help="QAT fine-tuning epochs")
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--kind", choices=("LSTM", "GRU"), default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--all", action="store_true",
                    help="regenerate every shipped model and demos/models/manifest.json")
    ap.add_argument("--tasks", default=None,
                    help="with --all: comma-separated subset of tasks")
    ap.add_argument("--models-dir", type=Path, default=MODELS_DIR,
                    help="with --all: where the models and manifest.json go (default "
                         "demos/models)")
    ap.add_argument("--no-eval", action="store_true", help="skip the nvmstream evaluation")
    ap.add_argument("--table", action="store_true",
                    help="print the manifest's accuracy table (markdown) and exit")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown_table(read_manifest(args.models_dir / "manifest.json")))
        return 0
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("nvmstream").setLevel(logging.WARNING)
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)

    if args.all:
        tasks = args.tasks.split(",") if args.tasks else list(TASKS)
        bad = [t for t in tasks if t not in TASKS]
        if bad:
            ap.error(f"unknown tasks {bad}")
        jobs = [(t, r) for t, r in SHIPPED if t in tasks]
        cache: dict = {}
        mdir = args.models_dir
        mdir.mkdir(parents=True, exist_ok=True)
        man = read_manifest(mdir / "manifest.json")
        for task, rname in jobs:
            recipe = make_recipe(rname, seed=args.seed)
            out = mdir / f"{model_name(task, rname)}.onnx"
            entry = train_one(task, recipe, out, cache, do_eval=not args.no_eval)
            entry["command"] = command_for(task, recipe, MODELS_DIR / out.name)
            man["models"][model_name(task, rname)] = entry
            write_manifest(man, mdir / "manifest.json")
        return 0

    if not args.task:
        ap.error("--task is required (or --all)")
    recipe = make_recipe(args.recipe, args.profile, args.snr_db, seed=args.seed,
                         epochs=args.epochs, qat_epochs=args.qat_epochs, hidden=args.hidden,
                         kind=args.kind)
    out = args.out or MODELS_DIR / f"{model_name(args.task, args.recipe)}.onnx"
    entry = train_one(args.task, recipe, out, do_eval=not args.no_eval)
    entry["command"] = command_for(args.task, recipe, out)
    if out.resolve().parent == MODELS_DIR.resolve() and out.stem == model_name(args.task,
                                                                               args.recipe):
        man = read_manifest(MANIFEST)
        man["models"][out.stem] = entry
        write_manifest(man, MANIFEST)
    print(json.dumps(entry, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
