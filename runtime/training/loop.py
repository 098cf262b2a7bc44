"""Training loop, ONNX export and evaluation of one model (needs torch: the ``train`` extra).

:func:`train_model` runs a recipe (:mod:`.tasks`) on a :class:`~.tasks.TrainData`, exports a
standard ONNX file (TorchScript exporter, opset 17, native LSTM/GRU op, dynamic batch and time;
``x[B, T, F]`` -> logits ``y[B, T, C]`` at every step) with metadata (task, recipe, labels, input
and output spec, hardware target, training record), checks that nvmstream's float executor equals
torch and that the model streams, evaluates it on the emulator and returns a manifest entry.

Determinism: fixed seeds, 2 torch threads, CPU; the same torch version reproduces the weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from nvmstream.runtime.stats import calibration_set

from . import qat
from .hardware import HardwareSpec, ProgrammedWeightSampler
from .tasks import Recipe, Split, TaskConfig, TrainData

__all__ = ["train_model", "train_float", "fine_tune", "export_onnx", "verify_export",
           "torch_accuracy", "evaluate", "EVAL_DEVICES", "eval_key"]

log = logging.getLogger(__name__)

EXPORT_OPSET = 17
EXPORT_TOL = 1e-5
EVAL_DEVICES = [("ideal", 1), ("int4", 1), ("pcm-1d", 1), ("pcm-1d", 5), ("snr0db", 1),
                ("snr0db", 5)]


def _seed_all(seed: int) -> None:
    torch.set_num_threads(int(os.environ.get("NVMSTREAM_TORCH_THREADS", "1")))
    torch.manual_seed(seed)


def _loss(logits, y, last, all_steps_weight: float):
    idx = torch.arange(len(y))
    loss = torch.nn.functional.cross_entropy(logits[idx, last], y)
    if all_steps_weight > 0:
        t = logits.shape[1]
        mask = (torch.arange(t)[None, :] <= last[:, None]).float()
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.repeat_interleave(t), reduction="none")
        loss = loss + all_steps_weight * (ce.reshape(-1, t) * mask).sum() / mask.sum()
    return loss


def _fit(model: qat.SeqClassifier, tr: Split, tc: TaskConfig, epochs: int, lr: float, seed: int,
         on_epoch=None, before_batch=None, label: str = "", progress=None,
         batch: int | None = None) -> None:
    """Adam + cosine learning rate, gradient clipping; ``on_epoch(epoch)`` runs before each
    epoch, ``before_batch(step)`` before each batch (device draws). ``progress(desc, batches)``
    (optional, e.g. the CLI's bar) returns an object whose ``update(loss)`` is called after
    each batch and ``close(loss, train_acc)`` at the end of the epoch. ``batch``: batch size
    (default ``tc.batch``)."""
    batch = batch or tc.batch
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=tc.weight_decay)
    steps_per_epoch = math.ceil(len(tr.y) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=max(1, epochs * steps_per_epoch), eta_min=lr * 0.02)
    x, y, last = torch.as_tensor(tr.x), torch.as_tensor(tr.y), torch.as_tensor(tr.last)
    T = x.shape[1]
    valid = torch.arange(T)[None, :] <= last[:, None]
    fstd = x[valid].std(dim=0) if tc.input_noise > 0 else None
    fixed_length = bool(torch.all(last == T - 1))
    step = skipped = 0
    for ep in range(epochs):
        if on_epoch is not None:
            on_epoch(ep)
        model.train()
        perm = torch.randperm(len(y), generator=gen)
        total, correct, n = 0.0, 0, 0
        bar = (progress(f"{label} epoch {ep + 1}/{epochs}", steps_per_epoch)
               if progress is not None else None)
        for k in range(0, len(y), batch):
            idx = perm[k:k + batch]
            tmax = int(last[idx].max()) + 1            # padding past the longest is never used
            xb = x[idx, :tmax]
            if tc.time_shift and fixed_length:         # circular shift per sequence
                sh = torch.randint(-tc.time_shift, tc.time_shift + 1, (len(idx),), generator=gen)
                ti = (torch.arange(tmax)[None, :] - sh[:, None]) % tmax
                xb = torch.gather(xb, 1, ti[:, :, None].expand(-1, -1, xb.shape[2]))
            if fstd is not None:   # noise on the real frames only (padding stays zero)
                noise = torch.randn(xb.shape, generator=gen) * (tc.input_noise * fstd)
                xb = xb + noise * valid[idx, :tmax, None]
            if before_batch is not None:
                before_batch(step)
            logits = model(xb)
            loss = _loss(logits, y[idx], last[idx], tc.all_steps_weight)
            opt.zero_grad()
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if torch.isfinite(loss) and torch.isfinite(norm):
                opt.step()
            else:
                # a drawn chip can be pathological (e.g. hwa on pcm: a drift-compensation
                # factor measured through a coarse ADC of 100x); the engine would compute
                # the same garbage on that chip, but no gradient step can be taken from it
                skipped += 1
                opt.zero_grad()
            sched.step()
            qat.commit_stats(model)
            step += 1
            total += float(loss.detach()) * len(idx) if torch.isfinite(loss) else 0.0
            correct += int((logits[torch.arange(len(idx)), last[idx]].argmax(1) == y[idx]).sum())
            n += len(idx)
            if bar is not None:
                bar.update(total / n)
        if bar is not None:
            bar.close(total / n, correct / n)
        if ep == epochs - 1 or ep % max(1, epochs // 5) == 0:
            log.info("%s epoch %3d/%d  loss %.4f  train acc %.3f%s", label, ep + 1, epochs,
                     total / n, correct / n,
                     f"  ({skipped} batches skipped: non-finite loss or gradient)"
                     if skipped else "")


def torch_accuracy(model, s: Split, batch: int = 256) -> float:
    """Accuracy of a torch model (eval mode: no noise) at each sequence's last valid step."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for k in range(0, len(s.y), batch):
            logits = model(torch.as_tensor(s.x[k:k + batch]))
            pred = logits[torch.arange(logits.shape[0]), torch.as_tensor(s.last[k:k + batch])]
            correct += int((pred.argmax(1).numpy() == s.y[k:k + batch]).sum())
    return correct / len(s.y)


def train_float(data: TrainData, tc: TaskConfig, seed: int, progress=None
                ) -> qat.SeqClassifier:
    """The float model after ``tc.epochs`` (the common start of every recipe)."""
    _seed_all(seed)
    tr = data.train
    model = qat.SeqClassifier(tc.kind, data.n_features, tc.hidden, data.n_classes,
                              HardwareSpec())
    model.dropout = tc.dropout
    if tc.forget_bias and tc.kind == "LSTM":
        with torch.no_grad():
            model.rnn.bias_ih[tc.hidden:2 * tc.hidden] += tc.forget_bias
    if tc.normalize:
        valid = np.arange(tr.x.shape[1])[None, :] <= tr.last[:, None]
        frames = tr.x[valid]
        model.set_input_norm(frames.mean(0), np.maximum(frames.std(0), 1e-3))
    _fit(model, tr, tc, tc.epochs, tc.lr, seed, label=f"{data.name}/float", progress=progress)
    return model


def fine_tune(data: TrainData, tc: TaskConfig, recipe: Recipe, base: qat.SeqClassifier,
              progress=None) -> qat.SeqClassifier:
    """``tc.qat_epochs`` of fine-tuning of a copy of ``base`` for ``recipe.spec`` (no
    quantizers for ``float``: the same budget). Calibration is the emulator's, on
    :func:`calibration_set` of the training split; ranges are frozen for the last
    ``freeze_frac`` of the epochs (every epoch for device-noise recipes: ``hwa``) and re-set at
    each of those epochs."""
    spec = recipe.spec
    _seed_all(recipe.seed + 1)
    model = base.with_spec(spec)
    model.dropout = tc.dropout
    tr = data.train
    on_epoch = before_batch = None
    if spec.quantized:
        x_cal = calibration_set(data.cal.x, data.cal.y)
        qat.calibrate_like_emulator(model, x_cal, freeze=False)   # initial ranges
        freeze_at = tc.qat_epochs - max(1, round(tc.freeze_frac * tc.qat_epochs))
        if spec.device_noise:
            # running ranges would follow the drawn chips' (drifted, noisy) partial sums; the
            # engine calibrates on the ideal codes: use its ranges from the first epoch
            freeze_at = 0

        def on_epoch(ep: int) -> None:
            if ep >= freeze_at:     # ranges the emulator will use, re-set as the weights move
                qat.calibrate_like_emulator(model, x_cal, freeze=True)

    if spec.device_noise:
        sampler = ProgrammedWeightSampler(spec, seed=recipe.seed)

        def before_batch(step: int) -> None:
            qat.resample_device(model, sampler, step)

    _fit(model, tr, tc, tc.qat_epochs, tc.qat_lr, recipe.seed + 1, on_epoch=on_epoch,
         before_batch=before_batch, label=f"{data.name}/{recipe.name}", progress=progress,
         batch=tc.fine_tune_batch or tc.batch)
    qat.clear_device(model)
    if spec.quantized:
        qat.calibrate_like_emulator(model, x_cal, freeze=True)
    return model


# ------------------------------------------------------------------------------ export
def export_onnx(export_model, path: Path, n_in: int, metadata: dict[str, str]) -> None:
    """TorchScript export (opset 17, dynamic batch and time), metadata, atomic write."""
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
    path = Path(path)
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
    s = ir.stream(batch=x.shape[0])
    ys = np.stack([s.step(x[:, t])["y"] for t in range(x.shape[1])], axis=1)
    if not np.array_equal(ys, got):
        raise RuntimeError(f"{path}: streamed outputs differ from the whole-sequence run")
    return err


# ------------------------------------------------------------------------------ evaluation
def eval_key(profile: str, votes: int) -> str:
    return profile if votes == 1 else f"{profile}_votes{votes}"


def evaluate(path: Path, data: TrainData, devices=EVAL_DEVICES, seed: int = 0,
             overrides: tuple[str, ...] = ()) -> dict[str, float]:
    """Accuracy on emulated devices: ``nvm.convert`` with :func:`calibration_set` of the
    training split, then ``Engine(prog, Device(profile, seed, overrides=overrides), votes)``
    (``overrides``: the task's conversion choices, :attr:`TaskConfig.convert`); the class at
    each sequence's last valid step (votes > 1: majority via ``Engine.predict``)."""
    import nvmstream as nvm
    prog = nvm.convert(path, calibration_set(data.cal.x, data.cal.y))
    te = data.test
    rows = np.arange(len(te.y))
    out = {}
    for profile, votes in devices:
        eng = nvm.Engine(prog, nvm.Device(profile, seed=seed, overrides=overrides or None),
                         votes=votes)
        if votes == 1:
            pred = eng.run(te.x)[rows, te.last].argmax(1)
        else:
            pred = eng.predict(te.x)[rows, te.last]
        out[eval_key(profile, votes)] = float(np.mean(pred == te.y))
    return out


def build_metadata(data: TrainData, tc: TaskConfig, recipe: Recipe, acc: dict) -> dict:
    spec = recipe.spec
    meta = {
        "task": data.name,
        "recipe": recipe.name,
        "labels": json.dumps(list(data.labels)),
        "input": json.dumps({
            "name": "x", "layout": "BTF", "features": data.n_features, "dtype": "float32",
            "frame": tc.frame,
            "steps": ("variable: feed exactly the sequence's real frames (no padding)"
                      if data.variable_length else int(data.train.x.shape[1])),
        }),
        "output": json.dumps({
            "name": "y", "layout": "BTC", "kind": "logits",
            "decision": "argmax of y at the last frame of the sequence"}),
        "train_accuracy": f"{acc['train']:.4f}",
        "test_accuracy_float": f"{acc['test']:.4f}",
        "seed": str(recipe.seed),
        "recipe_args": json.dumps({
            "kind": tc.kind, "hidden": tc.hidden, "epochs": tc.epochs,
            "fine_tune_epochs": tc.qat_epochs, "batch": tc.batch, "lr": tc.lr,
            "fine_tune_lr": tc.qat_lr, "fine_tune_batch": tc.fine_tune_batch or tc.batch,
            "weight_decay": tc.weight_decay,
            "all_steps_weight": tc.all_steps_weight, "freeze_frac": tc.freeze_frac,
            "input_noise": tc.input_noise, "time_shift": tc.time_shift,
            "dropout": tc.dropout, "normalize_folded": tc.normalize,
            "forget_bias_init": tc.forget_bias,
            "loss": "cross-entropy at each sequence's last valid step"
                    + (f" + {tc.all_steps_weight} x mean cross-entropy over all valid steps"
                       if tc.all_steps_weight else ""),
            "optimizer": "Adam, cosine learning rate, grad-norm clip 1.0",
            "hardware": spec.to_dict(),
            # the task's conversion choices (only when there are some)
            **({"convert": list(tc.convert_for(recipe.name))} if tc.convert_for(recipe.name)
               else {}),
            "calibration": "nvmstream.runtime.stats.calibration_set of the data file's "
                           "x_train (64 sequences, class-balanced, seed 0; --extra-train "
                           "files are not drawn from)",
        }),
        "source": "nvmstream train (nvmstream.runtime.training)",
        "description": f"nvmstream: {tc.kind} {tc.hidden} + per-step linear head on "
                       f"{data.name}, recipe {recipe.name}",
    }
    if spec.profile is not None:
        meta["profile"] = spec.profile
    if math.isfinite(spec.snr_db):
        meta["train_snr_db"] = str(spec.snr_db)
    if spec.device_noise:
        meta["train_age_s"] = str(spec.device_profile().drift.age_s)
    if data.frontend_params is not None:
        meta["frontend"] = json.dumps(data.frontend_params)
    return meta


def train_model(data: TrainData, tc: TaskConfig, recipe: Recipe, out: Path,
                float_cache: dict | None = None, do_eval: bool = True,
                eval_devices=EVAL_DEVICES, progress=None) -> dict:
    """Train, export, verify and (optionally) evaluate one model; returns its manifest entry.

    ``float_cache`` shares the float model of the first ``tc.epochs`` between recipes;
    ``progress``: per-epoch progress reporting (see :func:`_fit`)."""
    out = Path(out)
    key = (data.name, recipe.seed, tc)
    t0 = time.perf_counter()
    if float_cache is not None and key in float_cache:
        base, t_float = float_cache[key]
    else:
        base = train_float(data, tc, recipe.seed, progress)
        t_float = time.perf_counter() - t0
        if float_cache is not None:
            float_cache[key] = (base, t_float)
    t1 = time.perf_counter()
    model = fine_tune(data, tc, recipe, base, progress)
    t_tune = time.perf_counter() - t1
    spec = recipe.spec
    qacc = torch_accuracy(model, data.test) if spec.quantized else None
    exp = model.export_module()
    if not spec.quantized:    # the hand-written cell equals torch's nn.LSTM / nn.GRU
        with torch.no_grad():
            xs = torch.as_tensor(data.test.x[:8])
            diff = float((model.eval()(xs) - exp(xs)).abs().max())
        if not diff <= 1e-4:
            raise RuntimeError(f"training cell and exported {tc.kind} differ by {diff:.3g}")
    acc = {"train": torch_accuracy(exp, data.train), "test": torch_accuracy(exp, data.test)}
    export_onnx(exp, out, data.n_features, build_metadata(data, tc, recipe, acc))
    err = verify_export(out, exp, data.test.x[:8])
    entry = {
        "task": data.name, "recipe": recipe.name, "file": out.name, "kind": tc.kind,
        "hidden": tc.hidden, "params": int(sum(p.numel() for p in exp.parameters())),
        "epochs": tc.epochs, "fine_tune_epochs": tc.qat_epochs, "seed": recipe.seed,
        "profile": spec.profile, "hardware": spec.to_dict(),
        "torch_train_accuracy": round(acc["train"], 4),
        "torch_test_accuracy": round(acc["test"], 4),
        "torch_qat_test_accuracy": round(qacc, 4) if qacc is not None else None,
        "export_max_abs_error": err,
        "train_seconds": round(t_float + t_tune, 1),
        "bytes": out.stat().st_size,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "test_split": {"n": int(len(data.test.y)),
                       "pick": "lengths_test - 1" if data.variable_length else "last step"},
    }
    log.info("%s: torch test %.4f%s, exported (max |nvm - torch| %.2g)", out.name, acc["test"],
             "" if qacc is None else f", torch {spec.profile} {qacc:.4f}", err)
    if do_eval:
        te0 = time.perf_counter()
        entry["nvmstream"] = {k: round(v, 4) for k, v in
                              evaluate(out, data, eval_devices,
                                       overrides=tc.convert_for(recipe.name)).items()}
        entry["eval_seconds"] = round(time.perf_counter() - te0, 1)
        log.info("%s: nvmstream %s", out.name, entry["nvmstream"])
    return entry
