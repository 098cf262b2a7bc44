"""``nvmstream train``: train a recurrent classifier for a device profile and export ONNX.

    nvmstream train --task japanese_vowels --recipe hwa --profile pcm-1d --age 1d \\
        --out jv_hwa.onnx

Needs torch (``pip install 'nvmstream[train]'``); imported only when the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path


def add_train_parser(sub) -> None:
    from nvmstream.runtime.training.tasks import RECIPES, TASKS
    s = sub.add_parser("train", help="train an LSTM/GRU classifier for a device profile "
                                     "(float, QAT, noise injection, hardware-aware) and export "
                                     "ONNX; needs the `train` extra (torch)")
    s.add_argument("--task", default=None,
                   help=f"hyperparameter preset and default data ({', '.join(TASKS)}); "
                        "other names use a generic preset and need --data")
    s.add_argument("--data", default=None,
                   help="DATA.npz with x_train, y_train, x_test, y_test [, lengths_*, labels] "
                        "(default: demos/data/TASK.npz of a source checkout)")
    s.add_argument("--extra-train", action="append", default=[], metavar="EXTRA.npz",
                   help="more training sequences (x_train, y_train), appended (repeatable)")
    s.add_argument("--recipe", choices=RECIPES, default="float",
                   help="float | qat4 (quantizers of --profile) | qat4_noise (+ VMM noise at "
                        "--snr-db) | hwa (+ programming noise, drift at --age, read/ADC/VMM "
                        "noise drawn from --profile)")
    s.add_argument("--profile", "-p", default=None,
                   help="device profile trained for (default int4; hwa: pcm-1d)")
    s.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a profile field (repeatable; quantized recipes also get the "
                        "task preset's conversion choices, e.g. keywords: adc.calibration=mse)")
    s.add_argument("--snr-db", type=float, default=None,
                   help="training VMM-noise SNR in dB (qat4_noise default: the profile's, else "
                        "10; hwa default: the profile's)")
    s.add_argument("--age", default=None,
                   help="hwa: device age for drift and read noise, seconds or 1h/1d/1y "
                        "(default: the profile's drift.age_s)")
    s.add_argument("--epochs", type=int, default=None, help="float training epochs")
    s.add_argument("--fine-tune-epochs", "--qat-epochs", dest="fine_tune_epochs", type=int,
                   default=None, help="fine-tuning epochs (float: more float epochs, same "
                                      "budget)")
    s.add_argument("--freeze-frac", type=float, default=None,
                   help="last fraction of the fine-tuning epochs run with the emulator's frozen "
                        "ranges (default: the task preset's)")
    s.add_argument("--hidden", type=int, default=None, help="hidden units")
    s.add_argument("--kind", choices=("LSTM", "GRU"), default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", "-o", required=True, help="MODEL.onnx")
    s.add_argument("--no-eval", action="store_true", help="skip the evaluation on the emulator")
    s.add_argument("--json", help="write the training record (manifest entry) to this file")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress bar or lines")
    s.set_defaults(func=cmd_train)


def command_line(task: str, recipe, tc, out: str, data: str | None = None,
                 extra_train: list[str] | tuple = ()) -> str:
    """The ``nvmstream train`` command that reproduces a model (for manifests)."""
    import math
    spec = recipe.spec
    parts = ["nvmstream train", f"--task {task}"]
    if data:
        parts.append(f"--data {data}")
    for e in extra_train:
        parts.append(f"--extra-train {e}")
    parts.append(f"--recipe {recipe.name}")
    if spec.profile:
        parts.append(f"--profile {spec.profile}")
    for o in spec.overrides:
        parts.append(f"--set {o}")
    if recipe.name != "float" and math.isfinite(spec.snr_db):
        parts.append(f"--snr-db {spec.snr_db:g}")
    if spec.age_s is not None:
        parts.append(f"--age {spec.age_s:g}")
    from nvmstream.runtime.training.tasks import task_config
    if recipe.name != "float" and tc.freeze_frac != task_config(task).freeze_frac:
        parts.append(f"--freeze-frac {tc.freeze_frac:g}")
    parts += [f"--epochs {tc.epochs}", f"--fine-tune-epochs {tc.qat_epochs}",
              f"--hidden {tc.hidden}", f"--kind {tc.kind}", f"--seed {recipe.seed}",
              f"--out {out}"]
    return " ".join(parts)


class EpochProgress:
    """``nvmstream train``'s progress on stderr, one epoch at a time, through
    :class:`~nvmstream.runtime.progress.Progress`: a tqdm bar over the epoch's batches on a
    terminal; one plain line per finished epoch when stderr is redirected (no carriage returns
    in logs). The training loop calls it as ``progress(desc, batches)``."""

    def __init__(self, stream=None, enabled: bool = True):
        self.stream, self.enabled = stream, enabled

    def __call__(self, desc: str, batches: int) -> "_Epoch":
        return _Epoch(self, desc, batches)


class _Epoch:
    def __init__(self, owner: EpochProgress, desc: str, batches: int):
        from .progress import Progress
        self.total, self.done = batches, 0
        # plain lines only at the epoch's end (every = the epoch's batches)
        self.bar = Progress(batches, desc, "step", enabled=owner.enabled, stream=owner.stream,
                            every=max(1, batches))

    def update(self, loss: float) -> None:
        self.done += 1
        if self.done < self.total:          # the last step is reported by close, with accuracy
            self.bar.update(1, loss=f"{loss:.4f}")

    def close(self, loss: float, train_acc: float) -> None:
        self.bar.update(self.total - self.bar.done, loss=f"{loss:.4f}",
                        train_acc=f"{train_acc:.3f}")
        self.bar.close()


def cmd_train(args) -> int:
    # errors are ValueErrors (exit 3): `python -m nvmstream.runtime.cli` runs cli.py as
    # __main__, so a CliError imported from .cli would be another class than the one caught
    from .cli import EXIT_OK
    from .outputs import plan_output, write_text
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ValueError("nvmstream train needs torch: pip install 'nvmstream[train]'") from None
    from .training import loop
    from .training.hardware import parse_age_s
    from .training.tasks import default_data_path, load_data, make_recipe, task_config
    if not args.task and not args.data:
        raise ValueError("train: give --task (a preset with shipped data) or --data DATA.npz")
    data_path = Path(args.data) if args.data else default_data_path(args.task)
    if not data_path.is_file():
        raise ValueError(f"{data_path}: no such data file; pass --data DATA.npz")
    out = Path(args.out)
    if not out.parent.exists():
        raise ValueError(f"{out}: folder {out.parent} does not exist")
    age = parse_age_s(args.age) if args.age is not None else None
    name = args.task or data_path.stem
    tc = task_config(name, epochs=args.epochs, qat_epochs=args.fine_tune_epochs,
                     hidden=args.hidden, kind=args.kind, freeze_frac=args.freeze_frac)
    # a quantized recipe trains for the profile with the task's conversion choices
    # (TaskConfig.convert, e.g. keywords: adc.calibration=mse), then any --set
    sets = tuple(args.set)
    if args.recipe != "float":
        sets = tuple(o for o in tc.convert_for(args.recipe) if o not in sets) + sets
    recipe = make_recipe(args.recipe, args.profile, args.snr_db, age, sets, args.seed)
    data = load_data(data_path, name, args.extra_train)
    entry = loop.train_model(data, tc, recipe, out, do_eval=not args.no_eval,
                             progress=EpochProgress(enabled=not args.quiet))
    entry["command"] = command_line(name, recipe, tc, str(args.out),
                                    str(args.data) if args.data else None, args.extra_train)
    if args.json:
        write_text(plan_output(args.json, allow_stdout=False), json.dumps(entry, indent=1) + "\n")
    acc = entry["torch_test_accuracy"]
    print(f"{out}: {recipe.name} for {recipe.spec.profile or 'float'}; torch test accuracy "
          f"{100 * acc:.1f}%" + ("" if entry["torch_qat_test_accuracy"] is None else
                                  f", with the profile's quantizers "
                                  f"{100 * entry['torch_qat_test_accuracy']:.1f}%"))
    for k, v in entry.get("nvmstream", {}).items():
        print(f"  nvmstream {k}: {100 * v:.1f}%")
    print(f"  {entry['train_seconds']:.0f} s; reproduce: {entry['command']}")
    return EXIT_OK
