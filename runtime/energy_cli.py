"""``nvmstream energy MODEL``: the energy/latency/area verdict of a model against digital chips.

Runs MODEL on real data (``--data`` .npz with ``x_test`` and, when sequences are padded,
``lengths_test``; ``x_train`` calibrates an .onnx model) or on random frames (``--steps``),
charging only true sequence steps; prices the counts on the profile (its node, periphery,
leakage, area) against every digital baseline (int4/int8/fp16/fp32 MAC arrays, weights in
SRAM or DRAM, alone and shared by a ``--batch`` of streams), for each ``--votes`` K (K votes
cost K inferences), and with ``--sensitivity`` re-prices the same counts with every uncertain
price at the ends of its cited range (devices/sensitivity.py), printing the range of the
analog/strongest-digital ratio and, with ``--plot``, a tornado plot.

``runtime/cli.py`` registers it with :func:`add_energy_parser`. Like cli.py this module prints;
the library modules log.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np          # imported where used: `nvmstream --help` needs no numpy

EXIT_OK = 0


def _cli_error(msg: str, code: int = 3) -> Exception:
    from .cli import CliError          # lazy: cli.py imports this module
    return CliError(msg, code)


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise _cli_error(f"--{what}: expected comma-separated integers, got {text!r}", 2) \
            from None
    if not vals or any(v < 1 for v in vals):
        raise _cli_error(f"--{what}: values must be >= 1, got {text!r}", 2)
    return vals


def add_energy_parser(subparsers) -> argparse.ArgumentParser:
    s = subparsers.add_parser(
        "energy", help="energy, latency and area per inference vs digital baselines, with "
                       "sensitivity ranges (docs/energy.md)")
    s.add_argument("model", help="MODEL.onnx or MODEL.nvm")
    s.add_argument("--data", help="data file (the data contract: .npy, or .npz with x_test, "
                                  "lengths_test, x_train; see nvmstream run --help)")
    s.add_argument("--limit", type=int, default=64, help="sequences of the data to run "
                                                         "(default 64)")
    s.add_argument("--steps", type=int, default=50,
                   help="without --data: random sequences of this many steps")
    s.add_argument("--profile", "-p", default="int4", help="device profile (default int4)")
    s.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a profile field (repeatable)")
    s.add_argument("--votes", default="1", help="vote counts to price, e.g. 1,15")
    s.add_argument("--batch", default="1,16",
                   help="streams sharing a digital weight fetch (default 1,16)")
    s.add_argument("--sensitivity", action="store_true",
                   help="vary every uncertain price over its cited range")
    s.add_argument("--plot", help="tornado plot PNG (with --sensitivity)")
    s.add_argument("--json", help="write the reports as JSON")
    s.add_argument("--full", action="store_true", help="print the whole report")
    s.set_defaults(func=cmd_energy)
    return s


def _inputs(args, feats: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(x, lengths or None, calibration)."""
    import numpy as np
    if args.data:
        # the data contract of every subcommand (runtime/data.py); calibration: the file's
        # train split, a seeded class-balanced subsample of 64
        from .data import load_data
        d = load_data(args.data, "test", what="energy data").head(args.limit)
        x, lens = d.x, d.lengths
        from .stats import calibration_set      # seeded, class-balanced (data are class-sorted)
        try:
            tr = load_data(args.data, "train", what="calibration")
            cal = calibration_set(tr.x, tr.y)
        except ValueError:
            cal = calibration_set(d.x, d.y)
    else:
        if args.steps < 1:
            raise _cli_error(f"--steps must be >= 1, got {args.steps}", 2)
        x = np.random.default_rng(0).normal(size=(min(args.limit, 8), args.steps, feats))
        x = x.astype(np.float32)
        lens, cal = None, x
    if x.ndim != 3 or x.shape[2] != feats:
        raise _cli_error(f"{args.data}: x_test must be [batch, time, {feats}], got {x.shape}")
    return x, lens, cal


def measure(model: str, profile: str, overrides: list[str], *, data: str | None = None,
            limit: int = 64, steps: int = 50):
    """Run the model once (1 vote) and return (engine, counts, geometry, inferences,
    stream_steps). Library-style helper for the CLI, tests and scripts."""
    import nvmstream as nvm
    from .data import model_kind
    args = argparse.Namespace(data=data, limit=limit, steps=steps)
    if model_kind(model) == "nvm":
        prog = nvm.load(model)
        feats = prog.model.input.features
        x, lens, _ = _inputs(args, feats)
    else:
        if not Path(model).exists():
            raise _cli_error(f"{model}: no such file")
        ir = nvm.load_ir(model)
        x, lens, cal = _inputs(args, ir.input.features)
        prog = nvm.convert(ir, calibration=cal)
    eng = nvm.Engine(prog, nvm.Device(profile, seed=0, overrides=overrides or None))
    eng.run(x, lens=lens)
    led = eng.ledger
    return eng, led.counts(), led.geometry, led.inferences, led.stream_steps


def cmd_energy(args) -> int:
    from nvmstream.devices import energy as E
    from nvmstream.devices import sensitivity as S
    from .ledger import price_counts
    votes = _ints(args.votes, "votes")
    batch = _ints(args.batch, "batch")
    if args.plot and not args.sensitivity:
        raise _cli_error("--plot needs --sensitivity", 2)
    from .outputs import OutputError, plan_output
    try:            # before the work: a bad output path never wastes a run
        if args.json:
            plan_output(args.json, suffixes=(".json",), inputs=[args.model, args.data],
                        what="--json")
        if args.plot:
            plan_output(args.plot, suffixes=(".png",), inputs=[args.model, args.data],
                        what="--plot", allow_stdout=False)
    except OutputError as e:
        raise _cli_error(str(e)) from None
    eng, counts, geom, n, ss = measure(args.model, args.profile, args.set, data=args.data,
                                       limit=args.limit, steps=args.steps)
    prof = eng.device.profile
    out: dict[str, Any] = {"model": str(args.model), "profile": prof.name,
                           "overrides": list(args.set), "inferences": n,
                           "steps_per_inference": ss / n, "batch": list(batch), "votes": {}}
    sens = {}
    for k in votes:
        ck = E.with_votes(counts, k)
        rep = price_counts(ck, geom, prof, eng.plan, prof.weights.bits, inferences=n,
                           stream_steps=ss, batch=batch, votes=k)
        entry: dict[str, Any] = {"report": rep.to_dict()}
        if args.full or k == votes[0]:
            print(rep.format_text())
            print()
        s = rep.strongest
        line = (f"votes {k:>3}: analog {rep.analog.energy_pJ_per_inference:.4g} pJ/inference, "
                f"strongest digital {s.name} {s.energy_pJ_per_inference:.4g} pJ -> "
                f"{rep.comparison.ratios[s.name]:.3g}x")
        if args.sensitivity:
            r = S.sensitivity(ck, geom, prof, inferences=n, steps_per_inference=ss / n,
                              reuse=batch, votes=k)
            sens[k] = r
            entry["sensitivity"] = r.to_dict()
            line += (f" (one price at a time {r.tornado_min:.3g}x .. {r.tornado_max:.3g}x; all "
                     f"together {r.ratio_min:.3g}x .. {r.ratio_max:.3g}x)")
        print(line)
        out["votes"][str(k)] = entry
    if sens:
        for k, r in sens.items():
            print(f"\nsensitivity, votes {k} (ratio E_strongest_digital / E_analog; > 1: analog "
                  f"wins); nominal {r.nominal:.3g}x vs {r.strongest}")
            print(f"  {'price':<24}{'at A':>9}{'at B':>9}  range of the price: A to B")
            for kr in sorted(r.knobs, key=lambda x: -abs(x.ratio_high - x.ratio_low)):
                print(f"  {kr.name:<24}{kr.ratio_low:>8.3g}x{kr.ratio_high:>8.3g}x  {kr.source}")
            print(f"  one price at a time: {r.tornado_min:.3g}x .. {r.tornado_max:.3g}x; every "
                  f"price against analog: {r.ratio_min:.3g}x; every price for analog: "
                  f"{r.ratio_max:.3g}x")
        if args.plot:
            tornado(sens, args.plot, title=f"{Path(args.model).name} on {prof.name}")
            print(f"wrote {args.plot}")
    if args.json:
        from .outputs import provenance, write_json
        write_json(args.json, {"provenance": provenance(
            model=args.model, profile=prof, overrides=list(args.set) or None, data=args.data,
            seeds={"device": 0}), **out})
        if args.json != "-":
            print(f"wrote {args.json}")
    return EXIT_OK


def tornado(sens: dict, path: str, title: str = "") -> None:
    """One tornado panel per vote count: each knob's low..high ratio around the nominal."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise _cli_error("--plot needs matplotlib (pip install matplotlib)") from None
    from .outputs import plan_output, write_with
    fig, axes = plt.subplots(1, len(sens), figsize=(6.5 * len(sens), 5), squeeze=False)
    for ax, (k, r) in zip(axes[0], sens.items()):
        knobs = sorted(r.knobs, key=lambda x: abs(x.ratio_high - x.ratio_low))
        for i, kr in enumerate(knobs):
            lo, hi = sorted((kr.ratio_low, kr.ratio_high))
            ax.barh(i, hi - lo, left=lo, color="tab:blue" if kr.ratio_high >= kr.ratio_low
                    else "tab:orange")
        ax.axvline(r.nominal, color="k", lw=1)
        ax.axvline(1.0, color="tab:red", lw=1, ls="--")
        ax.set_yticks(range(len(knobs)))
        ax.set_yticklabels([kr.name for kr in knobs], fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(f"E_digital / E_analog vs strongest baseline ({k} vote(s))")
        ax.set_title(f"{title}: nominal {r.nominal:.3g}x, range {r.ratio_min:.3g}-"
                     f"{r.ratio_max:.3g}x", fontsize=9)
    fig.tight_layout()
    write_with(plan_output(path, allow_stdout=False), lambda f: fig.savefig(f, dpi=110, format="png"))
    plt.close(fig)
