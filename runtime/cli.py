"""The ``nvmstream`` command line. The only place that prints and configures logging.

Every subcommand follows the same rules (docs/architecture.md, "CLI"): data files follow one
contract (runtime/data.py); outputs are checked before the work starts and written atomically
to exactly the path given (runtime/outputs.py); every JSON and CSV carries provenance; every
bad input is one line ``nvmstream: error: ...`` with a non-zero exit (3 bad input, 2 usage).
Heavy modules (onnx, numba) are imported inside the commands that need them, so
``nvmstream --help`` and the client commands start fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .outputs import OutputError, plan_output, provenance, write_json, write_text, write_with

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("nvmstream.cli")

EXIT_OK, EXIT_USAGE, EXIT_INPUT, EXIT_INTERNAL = 0, 2, 3, 1


class CliError(Exception):
    """A user-facing error: printed as ``nvmstream: error: ...`` with a non-zero exit."""

    def __init__(self, msg: str, code: int = EXIT_INPUT):
        super().__init__(msg)
        self.code = code


def _sniff_model(path: str) -> str:
    """"nvm" or "onnx" by content, or a one-line error naming what the file is."""
    from .data import model_kind
    return model_kind(path)


def _load_model(path: str, args=None):
    from nvmstream.converters.onnx_import import load_ir
    kw = _convert_kw(args) if args is not None else {}
    return load_ir(path, kw.get("constants"), kw.get("frame_size"))


def _value_output(path: str) -> str | None:
    """The name of the model's first output when it is one value per step (a regression or
    detection score such as silero-vad's speech probability), None when it is a vector of
    class scores; the rule is the client's (:func:`.client.first_output_is_value`)."""
    from .client import first_output_is_value
    if _sniff_model(path) == "nvm":
        from nvmstream.converters.compile import load
        model = load(path).model
    else:
        model = _load_model(path)
    first = model.outputs[0]
    return first.name if first_output_is_value({"outputs": [[first.name, first.features]]}) \
        else None


def _announce_compile() -> float | None:
    """Say once, on stderr, that numba compiles the kernels when its cache looks cold."""
    root = Path(__file__).resolve().parent
    cache_dir = os.environ.get("NUMBA_CACHE_DIR")
    where = [Path(cache_dir)] if cache_dir else [root]
    if any(any(w.rglob("*.nbi")) for w in where if w.exists()):
        return None
    print("nvmstream: compiling the numba kernels (first run only, about a minute; cached "
          "for later runs) ...", file=sys.stderr, flush=True)
    return time.perf_counter()


def compile_notice(warm, always: bool = True) -> None:
    """Announce a cold numba cache around ``warm()`` (which builds and runs an engine); with
    ``always=False`` ``warm`` only runs when the cache is cold."""
    t0 = _announce_compile()
    if t0 is None and not always:
        return
    warm()
    if t0 is not None:
        print(f"nvmstream: kernels compiled in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)


def make_engine(prog, device, votes: int = 1):
    """``Engine(prog, device, votes)`` with the one-time numba compile announced."""
    import numpy as np

    from nvmstream.converters.errors import NvmInputError
    from nvmstream.runtime.engine import Engine
    made = []

    def build() -> None:
        eng = Engine(prog, device, votes=votes)
        try:                # one step compiles the kernels now, inside the announcement
            eng.run(np.zeros((1, 1, prog.model.input.features), np.float32))
        except NvmInputError:       # a model that needs other inputs: compiles on first use
            pass
        eng.reset_ledger()
        made.append(eng)

    compile_notice(build)
    return made[0]


# ------------------------------------------------------------------------------------ commands
def cmd_inspect(args) -> int:
    from nvmstream.converters.inspect import describe, format_text
    kind = _sniff_model(args.model)
    prog = None
    if kind == "nvm":
        from nvmstream.converters.compile import load
        prog = load(args.model)
        model = prog.model
    else:
        model = _load_model(args.model, args)
    info = describe(model, tile=(args.tile_rows, args.tile_cols))
    if prog is not None:
        info["compiled"] = _describe_program(prog, args.model)
    if args.profile:
        from .plan import build_plan, vmm_snr_table
        prog, _ = _load_program(args)
        info["vmm_noise_snr"] = vmm_snr_table(build_plan(prog, _device(args)))
    if args.json:
        print(json.dumps({"provenance": provenance(model=args.model), **info}, indent=2,
                         default=str))
    else:
        print(format_text(info))
        if prog is not None and "compiled" in info:
            print(_format_program(info["compiled"]))
        if args.profile:
            print(_format_snr(info["vmm_noise_snr"], args.profile))
    return EXIT_OK


def _format_snr(rows: list[dict], profile: str) -> str:
    """The effective VMM-noise SNR per gate (calibration set) as a table."""
    if not rows:
        return f"VMM noise SNR ({profile}): no crossbar matrices"
    r0 = rows[0]
    lines = [f"VMM noise SNR per gate on the calibration set (profile {profile}: snr_db "
             f"{r0['snr_db_profile']:g}, reference {r0['reference']}, {r0['position']})"]
    for r in rows:
        g = "  ".join(f"{k} {v:+.1f} dB" if math.isfinite(v) else f"{k} off"
                      for k, v in r["snr_db_per_gate"].items())
        lines.append(f"  {r['matrix']:<16} {g}")
    return "\n".join(lines)


def _describe_program(prog, path: str) -> dict:
    """What a ``.nvm`` adds to the IR: bits, weight ranges, calibration, labels, front end."""
    import numpy as np
    from .outputs import sha256_file
    cal = np.asarray(prog.calibration)
    mats = []
    for key, q in prog.codes.items():
        s = np.asarray(prog.scales[key])
        mats.append({"matrix": key, "shape": list(q.shape), "code_min": int(q.min()),
                     "code_max": int(q.max()), "scale_min": float(s.min()),
                     "scale_max": float(s.max()),
                     "weight_abs_max": float(np.max(np.abs(q) * s[:, None]))})
    return {"file": path, "sha256": sha256_file(path), "weight_bits": prog.weight_bits,
            "matrices": mats,
            "calibration": {"source": prog.calibration_source, "shape": list(cal.shape),
                            "min": float(cal.min()), "max": float(cal.max()),
                            "abs_max": float(np.abs(cal).max())},
            "labels": list(prog.labels), "frontend": prog.frontend, "meta": dict(prog.meta)}


def _format_program(c: dict) -> str:
    lines = [f"\ncompiled   {c['file']}  sha256 {c['sha256'][:16]}...",
             f"weights    {c['weight_bits']}-bit signed codes, per-output-channel scales"]
    for m in c["matrices"]:
        lines.append(f"  {m['matrix']:<16} {m['shape'][0]:>4} x {m['shape'][1]:<4} codes "
                     f"{m['code_min']:+d}..{m['code_max']:+d}  scales {m['scale_min']:.3g}.."
                     f"{m['scale_max']:.3g}  |W| <= {m['weight_abs_max']:.3g}")
    cal = c["calibration"]
    lines.append(f"calibration {cal['source']}: {cal['shape'][0]} sequences x {cal['shape'][1]} "
                 f"steps, inputs {cal['min']:.3g}..{cal['max']:.3g} (DAC/ADC ranges are set "
                 f"from these per profile)")
    lines.append(f"labels     {', '.join(c['labels']) if c['labels'] else '(none)'}")
    if c["frontend"]:
        fe = c["frontend"]
        lines.append("front end  " + ", ".join(f"{k}={v}" for k, v in fe.items()))
    else:
        lines.append("front end  (none: feature frames only)")
    return "\n".join(lines)


def _load_program(args, *, fallback=None):
    """A CompiledModel from .nvm, or converted from .onnx (calibration: runtime/data.py rule);
    returns (program, calibration description or None)."""
    import nvmstream as nvm

    from .data import resolve_calibration
    path = args.model
    if _sniff_model(path) == "nvm":
        if getattr(args, "calibration", None):
            log.warning("--calibration ignored: %s is already calibrated", path)
        return nvm.load(path), None
    cal = resolve_calibration(path, getattr(args, "calibration", None), fallback=fallback)
    prog = nvm.convert(path, calibration=cal.x, **_convert_kw(args))
    return dataclasses.replace(prog, calibration_source=cal.source), cal


def _fixing_args(s) -> None:
    """What an ONNX file may need fixed at conversion (convert, inspect)."""
    s.add_argument("--constant", action="append", metavar="NAME=VALUE",
                   help="fix a model input at conversion, e.g. --constant sr=16000 (an If on "
                        "it folds to the branch taken; repeatable)")
    s.add_argument("--frame-size", type=int, metavar="N",
                   help="values per call of a frame model whose input [batch, samples] has no "
                        "time axis (each call is one recurrent step), e.g. 576 for silero-vad")


def _raw_frontend(args, inp) -> dict:
    """The raw-PCM front end ``convert --sample-rate HZ [--frame-context N]`` writes: frames
    of the model's input length (its --frame-size), N samples of them repeating the previous
    frame's end (runtime/frontend.py, kind "raw")."""
    from .frontend import FrontendParams
    ctx = args.frame_context or 0
    n = inp.features
    if args.sample_rate < 1 or not 0 <= ctx < n:
        raise CliError(f"--sample-rate {args.sample_rate} must be >= 1 Hz and --frame-context "
                       f"{ctx} in 0..{n - 1} (input {inp.name!r} takes {n} samples per frame)",
                       EXIT_USAGE)
    return FrontendParams(kind="raw", sample_rate_hz=args.sample_rate, win_length=n,
                          hop_length=n - ctx).to_dict()


def _convert_kw(args) -> dict:
    kw = {"weight_bits": args.bits} if getattr(args, "bits", None) else {}
    if getattr(args, "constant", None):
        kw["constants"] = _parse_constants(args.constant)
    if getattr(args, "frame_size", None) is not None:
        kw["frame_size"] = args.frame_size
    return kw


def _parse_constants(items: list[str]) -> dict:
    """``["sr=16000", "gain=0.5"]`` -> ``{"sr": 16000, "gain": 0.5}`` (a number or a JSON
    list; the model input's element type converts it)."""
    import json
    out = {}
    for item in items:
        name, eq, text = item.partition("=")
        try:
            if not (name and eq):
                raise ValueError
            value = json.loads(text)
            if not isinstance(value, (int, float, list)) or isinstance(value, bool):
                raise ValueError
        except ValueError:
            raise CliError(f"--constant {item!r}: expected NAME=NUMBER or NAME=[list of "
                           f"numbers], e.g. --constant sr=16000", EXIT_USAGE) from None
        out[name] = value
    return out


def _device(args):
    import nvmstream as nvm
    return nvm.Device(args.profile, seed=args.seed, age_s=args.age_s, overrides=args.set or None)


_RUN_SUFFIXES = (".npy", ".npz", ".txt", ".csv")


def _write_run_output(path: str, outs: dict, names: list[str], lengths) -> None:
    """``.npy`` first output, ``.npz`` every output, ``.txt``/``.csv``/``-`` a table of the
    first output: one row per (sequence, step) with the step's values."""
    import numpy as np
    first = names[0]
    suffix = Path(path).suffix.lower() if path != "-" else ".txt"
    if suffix == ".npz":
        write_with(path, lambda f: np.savez(f, **outs))
        return
    if len(outs) > 1:
        log.warning("model has %d outputs; %s holds %r (use .npz for all)", len(outs), path,
                    first)
    a = np.asarray(outs[first])
    if suffix == ".npy":
        write_with(path, lambda f: np.save(f, a))
        return
    sep = "," if suffix == ".csv" else " "
    b = a if a.ndim == 3 else a[None] if a.ndim == 2 else a.reshape(1, 1, -1)
    header = sep.join(["sequence", "step", *[f"{first}_{j}" for j in range(b.shape[2])]])
    lines = [header]
    for i in range(b.shape[0]):
        t_end = b.shape[1] if lengths is None else int(lengths[i])
        for t in range(t_end):
            lines.append(sep.join([str(i), str(t), *[f"{v:.9g}" for v in b[i, t]]]))
    write_text(path, "\n".join(lines) + "\n")


def _npz_constants(args, kind: str, prog=None) -> set[str]:
    """Scalar arrays of an .npz input that feed graph inputs fixed at conversion (silero-vad's
    ``sr``): for an .onnx they become ``--constant`` values (an If on them folds); for an .nvm
    they must equal what ``convert --constant`` fixed (recorded in the file). Returns their
    names (left out of the feeds)."""
    import json

    import numpy as np
    if not str(args.input).endswith(".npz"):
        return set()
    with np.load(args.input, allow_pickle=False) as z:
        scalars = {k: z[k].item() for k in z.files if z[k].ndim == 0}
    if not scalars:
        return set()
    given = _parse_constants(args.constant or [])
    if kind == "onnx":
        import onnx
        g = onnx.load(args.model, load_external_data=False).graph
        inits = {i.name for i in g.initializer}
        inputs = {i.name for i in g.input if i.name not in inits}
        fixed = {k: v for k, v in scalars.items() if k in inputs}
        for k, v in fixed.items():
            if k in given and given[k] != v:
                raise CliError(f"{args.input}: {k}={v}, but --constant {k}={given[k]} was given")
            if k not in given:
                args.constant = [*(args.constant or []), f"{k}={json.dumps(v)}"]
        return set(fixed)
    recorded = dict((prog.meta or {}).get("constants") or {}) if prog is not None else {}
    fixed = {k: v for k, v in scalars.items() if k in recorded}
    for k, v in fixed.items():
        if recorded[k] != v:
            raise CliError(f"{args.input}: {k}={v}, but {args.model} was converted with "
                           f"{k}={recorded[k]} fixed (nvmstream convert --constant); convert "
                           f"again for {k}={v}")
    return set(fixed)


def _aux_feeds(path: str, model, skip: set[str] = frozenset()) -> dict:
    """The model's other inputs (initial states, sequence_lens) found by name in an .npz input
    (the data contract's x/y/lengths arrays are not model inputs and are left out; nor are
    ``skip``, inputs fixed at conversion)."""
    import numpy as np
    names = {a.name for a in model.aux_inputs}
    if not names or not str(path).endswith(".npz"):
        return {}
    with np.load(path, allow_pickle=False) as z:
        aux = {k: z[k] for k in z.files if k in names}
        if aux:         # feeding model inputs: an array that is neither one nor data is a slip
            contract = ("x", "y", "lengths", "labels", model.input.name)
            unknown = sorted(k for k in z.files if k not in names and k not in skip and
                             k.split("_")[0] not in contract and k not in contract)
            if unknown:
                from .data import DataError
                raise DataError(f"{path}: arrays {unknown} are neither model inputs "
                                f"({[model.input.name, *sorted(names)]}) nor data "
                                f"(x, y, lengths)")
    return aux


def _run_input(args, model, skip: set[str] = frozenset()):
    """(x, lengths, aux, squeeze, source): the data contract, plus the model's other inputs by
    name in an .npz (an .npz holding only model inputs, e.g. ``X`` and ``h0``, also works);
    ``skip``: arrays of inputs fixed at conversion (:func:`_npz_constants`)."""
    import numpy as np

    from .data import DataError, Data, load_data
    try:
        data = load_data(args.input, args.split, what="input")
    except DataError as e:
        if not str(args.input).endswith(".npz"):
            raise
        from nvmstream.converters.errors import NvmInputError
        with np.load(args.input, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k not in skip}
        try:
            x, aux = model.split_feeds(arrays)       # arrays named as the model's inputs
        except NvmInputError as e2:
            raise DataError(f"{e}; nor model inputs: {e2}") from None
        x = np.asarray(x, np.float32)
        if x.ndim == 3 and model.input.axes[0] == "T":
            x = np.swapaxes(x, 0, 1)
        if x.ndim == 2 and model.input.frame:      # one call of a frame model: [B, samples]
            x = x[:, None]
        data = Data(x if x.ndim == 3 else x[None], None, None, None, str(args.input))
    aux = _aux_feeds(args.input, model, skip)
    lengths = data.lengths
    if args.lengths:
        try:
            lengths = np.asarray(np.load(args.lengths, allow_pickle=False)).reshape(-1)
        except (OSError, ValueError) as e:
            raise CliError(f"{args.lengths}: not a readable .npy of lengths: {e}") from None
        x = data.x
        if lengths.dtype.kind not in "iu" or lengths.shape != (x.shape[0],) or \
                lengths.min() < 1 or lengths.max() > x.shape[1]:
            raise CliError(f"{args.lengths}: expected {x.shape[0]} integer lengths in "
                           f"1..{x.shape[1]}, got {lengths.dtype} {list(lengths.shape)}")
        lengths = lengths.astype(np.int64)
    if any(a.role == "sequence_lens" and a.name in aux for a in model.aux_inputs):
        lengths = None                      # the model's own sequence_lens input rules
    squeeze = str(args.input).endswith(".npy") and \
        np.load(args.input, mmap_mode="r").ndim == 2
    return data.x, lengths, aux, squeeze, data.source


def cmd_run(args) -> int:
    inputs = [args.model, args.input, args.calibration, args.lengths]
    try:
        plan_output(args.output, suffixes=_RUN_SUFFIXES, inputs=inputs, what="output")
        if args.json:
            plan_output(args.json, suffixes=(".json",), inputs=inputs, what="--json")
    except OutputError as e:
        raise CliError(str(e)) from None
    kind = _sniff_model(args.model)
    prov_extra = {}
    eng = None
    fixed = _npz_constants(args, kind) if kind == "onnx" else set()
    if args.profile is None and kind == "onnx" and args.votes == 1 and not args.set:
        model = _load_model(args.model, args)
    else:
        if args.profile is None:
            args.profile = "ideal"
        prog, cal = _load_program(args)
        if cal is not None:
            print(cal.describe(), file=sys.stderr)
            prov_extra["calibration"] = cal.as_dict()
        model = prog.model
        if kind == "nvm":
            fixed = _npz_constants(args, kind, prog)
    x, lengths, aux, squeeze, source = _run_input(args, model, fixed)
    print(f"input: {x.shape[0]} sequence(s) x {x.shape[1]} steps x {x.shape[2]} features from "
          f"{source}" + ("" if lengths is None else
                         f", true lengths {int(lengths.min())}..{int(lengths.max())}")
          + (f", model inputs {sorted(aux)}" if aux else ""), file=sys.stderr)
    if eng is None and args.profile is None:
        outs = model.run_steps(x, **aux)
    else:
        eng = make_engine(prog, _device(args), votes=args.votes)
        outs = eng.run_all(x, seed=args.stream_seed, lens=lengths, **aux)
    names = [o.name for o in model.outputs]
    if squeeze:
        outs = {k: v[0] for k, v in outs.items()}
    if model.input.frame and str(args.output).lower().endswith(".npz") and not squeeze:
        # the last call's outputs in the ONNX model's own shapes: a packed state output fed
        # back as the state input of a next run carries the stream on (stateN_last -> state)
        from nvmstream.converters import ir
        outs.update({f"{o.name}_last": ir.format_frame_output(o, outs[o.name][:, -1])
                     for o in model.outputs})
    _write_run_output(args.output, outs, names, lengths)
    if args.output != "-":
        for name, v in outs.items():
            print(f"{name}: shape {list(v.shape)} dtype {v.dtype}")
        print(f"wrote {args.output}")
    if eng is not None and (args.report or args.json):
        prov = provenance(model=args.model, profile=eng.device.profile,
                          overrides=args.set or None, data=args.input,
                          seeds={"device": args.seed, "stream": args.stream_seed},
                          votes=args.votes, **prov_extra)
        _report(eng, args, prov)
    elif args.json:
        raise CliError("--json needs the emulated engine: pass --profile (e.g. --profile int4)",
                       EXIT_USAGE)
    return EXIT_OK


def _report(eng, args, prov: dict) -> None:
    from .plan import vmm_snr_table
    r = eng.report()
    snr = vmm_snr_table(eng.plan) if any(s.vmm.on for s in eng.plan.segments) else None
    if args.report:
        out = sys.stderr if args.output == "-" else sys.stdout
        print(r.format_text(), file=out)
        if snr:
            print(_format_snr(snr, str(args.profile)), file=out)
    if args.json:
        extra = {"vmm_noise_snr": snr} if snr else {}
        write_json(args.json, {"provenance": prov, **r.to_dict(), **extra})
        if args.json != "-":
            print(f"wrote {args.json}")


def cmd_convert(args) -> int:
    try:
        plan_output(args.output, suffixes=(".nvm",), inputs=[args.model, args.calibration],
                    what="compiled model", allow_stdout=False)
    except OutputError as e:
        raise CliError(str(e)) from None
    if _sniff_model(args.model) != "onnx":
        raise CliError(f"{args.model}: is already a compiled model; convert takes an .onnx")
    if args.frame_context is not None and args.sample_rate is None:
        raise CliError("--frame-context needs --sample-rate (the input is raw audio)", EXIT_USAGE)
    prog, cal = _load_program(args)
    if args.sample_rate is not None:
        prog = dataclasses.replace(prog, frontend=_raw_frontend(args, prog.model.input))
    meta = {**dict(prog.meta), "provenance": provenance(model=args.model,
                                                       calibration=cal.as_dict())}
    if args.constant:       # what was fixed, so `run` can check an .npz that feeds it too
        meta["constants"] = _parse_constants(args.constant)
    prog = dataclasses.replace(prog, meta=meta)
    out = Path(args.output)
    prog.save(out)
    n = sum(q.size for q in prog.codes.values())
    print(cal.describe())
    print(f"wrote {out}: {len(prog.codes)} crossbar matrices, {n} weights at {prog.weight_bits} "
          f"bits, {out.stat().st_size} bytes")
    fe = prog.frontend or {}
    if fe.get("kind") == "raw":
        print(f"front end: raw {fe['sample_rate_hz']} Hz PCM, {fe['win_length']} samples per "
              f"frame ({fe['hop_length']} new, {fe['win_length'] - fe['hop_length']} of context)")
    return EXIT_OK


def cmd_sweep(args) -> int:
    from . import sweep as S
    grid = S.Grid()
    for a in args.grid or []:
        try:
            grid.add(*S.parse_axis(a))
        except ValueError as e:
            raise CliError(str(e), EXIT_USAGE) from None
    try:
        seeds = [int(v) for v in args.seeds.split(",")]
        votes = [int(v) for v in args.votes.split(",")]
    except ValueError:
        raise CliError(f"--seeds {args.seeds!r} / --votes {args.votes!r}: expected comma "
                       f"separated integers", EXIT_USAGE) from None
    inputs = [args.model, args.data, args.calibration]
    try:
        plan_output(args.out, suffixes=(".csv",), inputs=inputs, what="--out",
                    allow_stdout=False)
        if args.plot:
            plan_output(args.plot, suffixes=(".png", ".pdf", ".svg"), inputs=inputs,
                        what="--plot", allow_stdout=False)
    except OutputError as e:
        raise CliError(str(e)) from None
    value = _value_output(args.model)
    if value is not None and args.threshold is None:
        raise CliError(f"{args.model}: its first output {value!r} is one value per step, not "
                       f"class scores: pass --threshold T to score it as a binary classifier "
                       f"(class 1 above T: 0.5 for a probability, 0 for a logit), or use "
                       f"`nvmstream run {args.model} --profile P` for the outputs")
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise CliError(f"--threshold {args.threshold}: expected a finite number", EXIT_USAGE)
    if value is None and args.threshold is not None:
        raise CliError(f"--threshold: the first output of {args.model} holds class scores "
                       f"(argmax); a threshold applies to a one-value output only", EXIT_USAGE)
    from .data import load_data
    data = load_data(args.data, "test", what="sweep data", need_labels=True)
    labels = set(data.y.tolist()) if args.threshold is not None else set()
    if labels - {0, 1}:
        bad = sorted(labels - {0, 1})[:5]
        raise CliError(f"{args.data}: --threshold scores a binary classifier, but its labels "
                       f"include {bad} (expected 0 and 1)")
    # validate every grid point's profile before starting workers
    from nvmstream.devices import load_profile
    for pt in grid.points():
        load_profile(args.profile, dict(pt) or None)
    if os.path.exists(args.out) and not (args.resume or args.overwrite):
        raise CliError(f"{args.out}: exists; pass --resume to continue that sweep or "
                       f"--overwrite to start again")
    jobs = S.make_jobs(args.model, args.data, args.profile, grid, seeds, votes, args.limit,
                       args.calibration, args.threshold)
    n_eval = data.n if args.limit is None else min(args.limit, data.n)
    prov = provenance(model=args.model, profile=args.profile, data=args.data,
                      seeds={"device": seeds, "stream": "1000 x device seed + sequence index"},
                      grid=[list(f) + [v] for f, v in grid.axes], votes=votes,
                      sequences=n_eval, calibration=S.calibration_text(jobs[0]),
                      **({"threshold": args.threshold} if args.threshold is not None else {}))
    print(f"sweep: {len(jobs)} runs on {n_eval} sequences of {data.source}; "
          f"{S.calibration_text(jobs[0])}", file=sys.stderr)
    writer = S.CsvRows(args.out, S.columns(grid), prov, resume=args.resume)
    todo = [j for j in jobs if not writer.has(j)]
    if len(todo) < len(jobs):
        print(f"sweep: resuming, {len(jobs) - len(todo)} of {len(jobs)} runs already in "
              f"{args.out}", file=sys.stderr)
    if todo:        # compile once here rather than silently in every worker
        compile_notice(lambda: S.run_job(dataclasses.replace(todo[0], limit=1)), always=False)
    from .progress import Progress

    with Progress(len(todo), "sweep", "run", enabled=not args.quiet) as bar:
        def on_row(job, row):
            writer.append(job, row)
            bar.update()
        S.run_sweep(todo, workers=args.workers, dask_address=args.dask, on_row=on_row)
    rows = writer.rows()
    keys = [f for fields, _ in grid.axes for f in fields[:1]] + ["votes"]
    for r in S.summarize(rows, keys):
        print("  ".join(f"{k}={r[k]}" for k in keys) +
              f"  accuracy {100 * r['accuracy_mean']:6.2f}% +- {100 * r['accuracy_std']:.2f}"
              f"  ({r['seeds']} seeds, n={r['n']})  {r['energy_pJ_per_inference']:.4g} "
              f"pJ/inference")
    print(f"wrote {args.out} ({len(rows)} rows)")
    if args.plot:
        x = keys[0] if grid.axes else "votes"
        series = [k for k in keys if k != x]
        if S.plot(rows, x, series, args.plot, title=Path(args.model).name,
                  logx=args.logx):
            print(f"wrote {args.plot}")
    return EXIT_OK


def cmd_bench(args) -> int:
    import platform
    import tempfile

    from . import bench_energy
    from .bench import bench_engine, format_engine
    out = Path(args.out)
    try:
        plan_output(out / "bench.json", make_dirs=True, allow_stdout=False, what="--out")
    except OutputError as e:
        raise CliError(str(e)) from None
    stages = 1 + (not args.no_server) + bool(args.energy)
    k = 0

    def stage(text: str) -> None:
        print(f"bench [{k}/{stages}] {text}", file=sys.stderr, flush=True)

    def save(complete: bool) -> None:
        """bench.json after every stage, so a later stage that fails keeps the earlier figures
        (``stages_done`` says how far it got)."""
        write_json(out / "bench.json", {"provenance": provenance(
            elapsed_s=round(time.perf_counter() - t0, 1)), "stages_done": k,
            "complete": complete, **results})

    results: dict = {"machine": {"python": platform.python_version(),
                                 "cpu_count": os.cpu_count(), "platform": platform.platform()}}
    k += 1
    stage("engine vs onnxruntime (streamed step, whole sequence, 256 streams) ...")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as td:
        results["engine"] = bench_engine(Path(td), quick=args.quick)
    print(format_engine(results["engine"]))
    save(False)
    if not args.no_server:
        from . import bench_server
        k += 1
        stage("ZeroMQ server round trips and throughput ...")
        results["server"] = bench_server.run_bench(out, quick=args.quick)
        print(bench_server.format_results(results["server"]))
        save(False)
    if args.energy:
        k += 1
        stage("analog vs digital energy per model and profile ...")
        results["energy"] = bench_energy.run(quick=args.quick, progress=stage)
        print(bench_energy.format_table(results["energy"]["rows"]))
    save(True)
    print(f"\nwrote {out / 'bench.json'}")
    return EXIT_OK


def _same_as(profiles: dict) -> dict[str, str]:
    """name -> the earlier profile it equals field for field (apart from its name/texts)."""
    seen: dict[str, str] = {}
    out = {}
    for name, p in profiles.items():
        d = p.to_dict()
        for k in ("name", "description", "source", "base"):
            d.pop(k, None)
        key = json.dumps(d, sort_keys=True)
        if key in seen:
            out[name] = seen[key]
        else:
            seen[key] = name
    return out


def cmd_profiles(args) -> int:
    from nvmstream.devices import list_profiles, load_profile
    action = args.action or "list"
    if action not in ("list", "show"):          # `nvmstream profiles NAME` means show NAME
        args.name, action = action, "show"
    if action == "list":
        profiles = {name: load_profile(name) for name in list_profiles()}
        same = _same_as(profiles)
        for name, p in profiles.items():
            note = ""
            if name in same:
                note = f"  (identical to {same[name]}: an alias"
                note += (f" naming its age, one of {same[name]}-1h/-1d/-1y)"
                         if name.startswith(same[name] + "-") else ")")
            print(f"{name:<10} {p.description}{note}")
        print("\nshow one: nvmstream profiles show NAME [--format toml|json] [-o FILE]")
        return EXIT_OK
    if not args.name:
        raise CliError("profiles show needs a profile name or .toml path", EXIT_USAGE)
    p = load_profile(args.name, args.set or None)
    if args.format == "text":
        text = p.describe() + "\n"
    elif args.format == "toml":
        head = (f"# nvmstream {provenance()['nvmstream_version']}: profile {p.name}, every "
                f"field resolved" + (f" with overrides {args.set}" if args.set else "") +
                ".\n# Edit and load with --profile THIS.toml (or base = \"...\" plus changes)."
                "\n")
        text = head + p.to_toml()
    else:
        text = json.dumps(p.to_dict(), indent=2) + "\n"
    if args.output and args.output != "-":
        try:
            plan_output(args.output, suffixes=None, what="profile")
        except OutputError as e:
            raise CliError(str(e)) from None
        write_text(args.output, text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


# --------------------------------------------------------------------------------------- parser
def _device_args(s, default_profile: str | None = "ideal") -> None:
    s.add_argument("--profile", "-p", default=default_profile,
                   help="device profile: a shipped name (nvmstream profiles list) or a .toml "
                        f"path (default: {default_profile or 'none: the float ONNX model'})")
    s.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override a profile field, e.g. --set adc.bits=6 (repeatable)")
    s.add_argument("--seed", type=int, default=0,
                   help="device seed: programming noise, faults, drift draws (default 0)")
    s.add_argument("--age-s", type=float, default=None,
                   help="device age in seconds for drift (default: the profile's drift.age_s)")


_DATA_HELP = (".npy [N, T, F] (or [T, F]), or .npz with x_SPLIT/y_SPLIT/lengths_SPLIT "
              "(the layout of demos/data/*.npz) or x/y/lengths")
_CAL_HELP = ("calibration inputs for an .onnx MODEL: " + _DATA_HELP.replace("SPLIT", "train") +
             "; or 'random' for N(0, 1). Default: the shipped dataset the model's metadata "
             "names (task=...), else an error. At most 64 sequences are used (seeded random "
             "subsample, seed 0)")

_EPILOG = """examples:
  nvmstream profiles list
  nvmstream inspect demos/models/keywords_qat4.onnx
  nvmstream convert demos/models/keywords_qat4.onnx -o kw.nvm
  nvmstream run kw.nvm -i demos/data/keywords.npz -o y.npy --profile pcm-1d --report
  nvmstream sweep kw.nvm --data demos/data/keywords.npz --grid adc.bits=2,4,8 --seeds 0,1
  nvmstream serve kw.nvm --profile int4          # then, in another shell:
  nvmstream stream -c tcp://127.0.0.1:5555 -d demos/data/keywords_wav/*.wav
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions/epilogs as written and shows every option's default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        h = action.help or ""
        d = action.default
        if (action.option_strings and "(default" not in h and "default:" not in h
                and d is not None
                and d is not False and d != [] and d is not argparse.SUPPRESS):
            h += " (default: %(default)s)"
        return h


class _Parser(argparse.ArgumentParser):
    """Subcommand parsers: the same formatter (defaults shown) wherever they are defined."""

    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*a, **kw)

    def add_argument(self, *a, **kw):
        if a and str(a[0]).startswith("-") and kw.get("help") is None \
                and kw.get("default") not in (None, False):
            kw["help"] = "(default: %(default)s)"      # undocumented options show a default
        return super().add_argument(*a, **kw)


def build_parser() -> argparse.ArgumentParser:
    from nvmstream import __version__
    p = argparse.ArgumentParser(prog="nvmstream", formatter_class=_Formatter, epilog=_EPILOG,
                                description=("Streaming inference of LSTM/GRU models on "
                                             "emulated analog NVM accelerators."))
    p.add_argument("--version", action="version", version=f"nvmstream {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more logging (-v info, -vv debug and tracebacks)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser("inspect", help="show a model: layers, MACs, tiles, streamability; for "
                                       "a .nvm also bits, ranges, calibration, labels, front end")
    s.add_argument("model", help="MODEL.onnx or MODEL.nvm")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--tile-rows", type=int, default=256,
                   help="crossbar tile rows (inputs) (default 256)")
    s.add_argument("--tile-cols", type=int, default=256,
                   help="crossbar tile columns (outputs) (default 256)")
    _device_args(s, default_profile=None)
    s.add_argument("--calibration", help=_CAL_HELP + " (with --profile)")
    _fixing_args(s)
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("run", help="run a model on an input file; outputs per time step",
                       epilog="example: nvmstream run kw.nvm -i demos/data/keywords.npz "
                              "-o y.npy -p int4 --json report.json")
    s.add_argument("model", help="MODEL.onnx or MODEL.nvm")
    s.add_argument("--input", "-i", required=True, help="input: " + _DATA_HELP)
    s.add_argument("--split", default="test",
                   help=".npz input: which split x_SPLIT to run (default test)")
    s.add_argument("--lengths", metavar="L.npy",
                   help="true length per sequence (default: the .npz's lengths_SPLIT, else "
                        "every step)")
    s.add_argument("--output", "-o", required=True,
                   help="Y.npy (first output), Y.npz (every output) or Y.txt/Y.csv/- (a "
                        "table of the first output: sequence, step, values), per time step; "
                        "a frame model's Y.npz also holds each output of the last call in its "
                        "ONNX shape, NAME_last (silero-vad: stateN_last, the state input of a "
                        "next run)")
    _device_args(s, default_profile=None)
    s.add_argument("--votes", type=int, default=1,
                   help="noisy replicas voting per stream (default 1)")
    s.add_argument("--stream-seed", type=int, default=0,
                   help="row b of the input uses stream seed STREAM_SEED + b (per-read noise; "
                        "default 0)")
    s.add_argument("--calibration", help=_CAL_HELP)
    s.add_argument("--bits", type=int, default=None,
                   help="weight code bits when converting an .onnx (default 4)")
    s.add_argument("--report", action="store_true", help="print the energy/latency report")
    s.add_argument("--json", metavar="OUT.json",
                   help="write the energy/latency report with provenance as JSON (- for stdout)")
    _fixing_args(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("convert", help="quantize + calibrate an ONNX model into MODEL.nvm",
                       epilog="example: nvmstream convert demos/models/keywords_qat4.onnx "
                              "-o kw.nvm")
    s.add_argument("model", help="MODEL.onnx")
    s.add_argument("--output", "-o", required=True, help="MODEL.nvm (never the input)")
    s.add_argument("--calibration", help=_CAL_HELP)
    s.add_argument("--bits", type=int, default=4, help="weight code bits stored (2..8; default 4)")
    _fixing_args(s)
    s.add_argument("--sample-rate", type=int, metavar="HZ",
                   help="the input is raw int16 audio at HZ, one frame of --frame-size samples "
                        "per call (pcm / 32768): `serve` then takes audio streams and `stream "
                        "--data x.wav` cuts the file into frames, e.g. 16000 for silero-vad")
    s.add_argument("--frame-context", type=int, metavar="N",
                   help="with --sample-rate: the first N samples of each frame repeat the end "
                        "of the previous one (zeros before the signal), e.g. 64 for silero-vad "
                        "(512 new samples per 576-sample frame); default 0")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("sweep", help="accuracy over a grid of profile overrides x seeds x votes",
                       epilog="example: nvmstream sweep kw.nvm --data demos/data/keywords.npz "
                              "--grid adc.bits=2,4,8 --seeds 0,1 --plot adc.png")
    s.add_argument("model", help="MODEL.onnx or MODEL.nvm")
    s.add_argument("--data", required=True,
                   help="labelled DATA.npz: x_test, y_test[, lengths_test] (or x, y, lengths)")
    s.add_argument("--profile", "-p", default="int4", help="base device profile (default int4)")
    s.add_argument("--grid", action="append", metavar="FIELD[+FIELD]=V1,V2,...",
                   help="a grid axis, e.g. adc.bits=2,4,8 or weights.bits+dac.bits=2,4 "
                        "(repeatable; axes multiply)")
    s.add_argument("--seeds", default="0", help="device seeds, comma separated (default 0)")
    s.add_argument("--votes", default="1", help="vote counts, comma separated (default 1)")
    s.add_argument("--limit", type=int, help="use the first N test sequences (default all)")
    s.add_argument("--threshold", type=float, metavar="T",
                   help="score a model whose first output is one value per step as a binary "
                        "classifier: class 1 above T (0.5 for a probability, 0 for a logit); "
                        "labels 0/1")
    s.add_argument("--calibration", help=_CAL_HELP.replace(
        "the shipped dataset the model's metadata names (task=...), else an error",
        "the --data file's x_train (else its test inputs)"))
    s.add_argument("--workers", type=int, default=None,
                   help="local processes (default: one per core)")
    s.add_argument("--dask", metavar="ADDRESS", help="run on a Dask cluster (scheduler address)")
    s.add_argument("--out", default="sweep.csv",
                   help="CSV output, one row per run, written as runs finish (default sweep.csv)")
    s.add_argument("--resume", action="store_true",
                   help="continue the sweep in --out: skip the runs it already holds")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    s.add_argument("--plot", help="PNG/PDF/SVG plot of accuracy against the first axis")
    s.add_argument("--logx", action="store_true", help="log scale for the plot's x axis")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("bench", help="benchmarks: engine vs onnxruntime, server round trips, "
                                     "energy; prints tables and writes JSON")
    s.add_argument("--out", default="bench-results",
                   help="folder for bench.json (created; default bench-results)")
    s.add_argument("--quick", action="store_true", help="fewer repetitions")
    s.add_argument("--energy", action="store_true", help="analog vs digital energy table")
    s.add_argument("--no-server", action="store_true", help="skip the ZeroMQ benchmark")
    s.set_defaults(func=cmd_bench)

    from .server_cli import (add_keys_parser, add_serve_parser, add_stats_parser,
                             add_stream_parser, add_worker_parser)
    add_serve_parser(sub)
    add_worker_parser(sub)
    add_stats_parser(sub)
    add_stream_parser(sub)
    add_keys_parser(sub)
    from .train_cli import add_train_parser
    add_train_parser(sub)
    from .energy_cli import add_energy_parser
    add_energy_parser(sub)

    s = sub.add_parser("profiles", help="list device profiles, or show/export one",
                       epilog="examples: nvmstream profiles list; nvmstream profiles show pcm; "
                              "nvmstream profiles show pcm --set adc.bits=6 --format toml "
                              "-o my.toml; nvmstream run M.nvm -p my.toml ...")
    s.add_argument("action", nargs="?", default="list", metavar="list|show|NAME",
                   help="list (default), show NAME, or just NAME")
    s.add_argument("name", nargs="?", help="profile name or .toml path (for show)")
    s.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override a field (repeatable)")
    s.add_argument("--format", choices=["text", "toml", "json"], default="text",
                   help="text: every field with unit, meaning and source (default); toml/json: "
                        "a complete profile you can edit and load with --profile FILE")
    s.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    s.set_defaults(func=cmd_profiles)
    return p


def run_parsed(args) -> int:
    """Configure logging and run a parsed command; errors become a message and an exit code."""
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    from nvmstream.converters.errors import NvmConversionError, NvmInputError
    from nvmstream.devices.profile import ProfileError

    from .data import DataError
    try:
        return args.func(args)
    except CliError as e:
        _error(str(e))
        return e.code
    except (NvmConversionError, NvmInputError, DataError, OutputError, ProfileError,
            ValueError) as e:
        _error(str(e))
        return EXIT_INPUT
    except FileNotFoundError as e:
        _error(f"{e.filename}: no such file")
        return EXIT_INPUT
    except OSError as e:
        if isinstance(e, BrokenPipeError):
            raise
        _error(f"{e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}")
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("nvmstream: interrupted", file=sys.stderr)
        return 130
    except Exception as e:          # a bug: one line, the traceback with -vv
        if args.verbose >= 2:
            raise
        _error(f"internal error {type(e).__name__}: {e} (run with -vv for the traceback and "
               f"please report it)")
        return EXIT_INTERNAL


def _error(msg: str) -> None:
    text = "; ".join(line.strip() for line in msg.splitlines() if line.strip())
    print(f"nvmstream: error: {text or 'unknown error'}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        code = run_parsed(build_parser().parse_args(argv))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader went away (`nvmstream profiles | head -1`): stop quietly, like `cat`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    # `python -m nvmstream.runtime.cli`: run the imported module's main, so that CliError
    # raised by modules that import it (server_cli) is the class run_parsed catches
    from nvmstream.runtime.cli import main as _main
    sys.exit(_main())
