"""The ``nvmstream`` command line. The only place that prints and configures logging."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger("nvmstream.cli")

EXIT_OK, EXIT_USAGE, EXIT_INPUT = 0, 2, 3


class CliError(Exception):
    """A user-facing error: printed as ``nvmstream: error: ...`` with a non-zero exit."""

    def __init__(self, msg: str, code: int = EXIT_INPUT):
        super().__init__(msg)
        self.code = code


def atomic_save(path: str | os.PathLike, writer) -> None:
    """Write a file via a temporary in the same folder and rename: never half-written."""
    path = Path(path)
    if not path.parent.exists():
        raise CliError(f"{path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_array(path: str, what: str) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file ({what})") from None
    except Exception as e:
        raise CliError(f"{path}: not a readable .npy array ({what}): {e}") from None
    if isinstance(a, np.lib.npyio.NpzFile):
        keys = list(a.keys())
        if len(keys) != 1 and "x" not in keys:
            raise CliError(f"{path}: .npz with several arrays {keys}; name one 'x'")
        a = a["x"] if "x" in keys else a[keys[0]]
    return a


def _load_model(path: str):
    from nvmstream.converters import load_ir
    return load_ir(path)


# ------------------------------------------------------------------------------------ commands
def cmd_inspect(args) -> int:
    from nvmstream.converters.inspect import describe, format_text
    model = _load_model(args.model)
    info = describe(model, tile=(args.tile_rows, args.tile_cols))
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(format_text(info))
    return EXIT_OK


def _load_program(args):
    """A CompiledModel from .nvm, or converted from .onnx with --calibration."""
    import nvmstream as nvm
    path = args.model
    if str(path).endswith(".nvm"):
        return nvm.load(path)
    cal = load_array(args.calibration, "calibration") if getattr(args, "calibration", None) \
        else None
    return nvm.convert(path, calibration=cal)


def _device(args):
    import nvmstream as nvm
    return nvm.Device(args.profile, seed=args.seed, age_s=args.age_s, overrides=args.set or None)


def _load_feeds(path: str) -> dict[str, np.ndarray]:
    """Every array of an .npz (the sequence plus states/lengths by model input name), or the
    one array of an .npy."""
    if not str(path).endswith(".npz"):
        return {"x": load_array(path, "input")}
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise CliError(f"{path}: no such file (input)") from None
    except Exception as e:
        raise CliError(f"{path}: not a readable .npz ({e})") from None


def cmd_run(args) -> int:
    feeds = _load_feeds(args.input)

    def sequence(model):
        x, aux = model.split_feeds(feeds)
        if x.ndim not in (2, 3):
            raise CliError(f"{args.input}: input must be [batch, time, features] or "
                           f"[time, features], got shape {x.shape}")
        return x, aux

    if args.profile is None and not str(args.model).endswith(".nvm") and args.votes == 1 \
            and not args.set:
        model = _load_model(args.model)
        x, aux = sequence(model)
        outs = model.run_steps(x, **aux)
        names = [o.name for o in model.outputs]
    else:
        import nvmstream as nvm
        if args.profile is None:
            args.profile = "ideal"
        prog = _load_program(args)
        eng = nvm.Engine(prog, _device(args), votes=args.votes)
        x, aux = sequence(prog.model)
        outs = eng.run_all(x, seed=args.stream_seed, **aux)
        names = [o.name for o in prog.model.outputs]
        if args.report or args.json:
            _report(eng, args)
    squeeze = x.ndim == 2
    if squeeze:
        outs = {k: v[0] for k, v in outs.items()}
    out = Path(args.output)
    if out.suffix == ".npz":
        atomic_save(out, lambda p: np.savez(p, **outs))
    else:
        first = names[0]
        if len(outs) > 1:
            log.warning("model has %d outputs; %s holds %r (use .npz for all)",
                        len(outs), out, first)
        atomic_save(out, lambda p: np.save(p, outs[first]))
    for name, v in outs.items():
        print(f"{name}: shape {list(v.shape)} dtype {v.dtype}")
    return EXIT_OK


def _report(eng, args) -> None:
    rep = getattr(eng, "report", None)
    if rep is None:
        raise CliError("this build has no energy report")
    r = rep()
    if args.report:
        print(r.format_text())
    if args.json:
        atomic_save(args.json, lambda p: Path(p).write_text(json.dumps(r.to_dict(), indent=2)))


def cmd_convert(args) -> int:
    import nvmstream as nvm
    cal = load_array(args.calibration, "calibration") if args.calibration else None
    prog = nvm.convert(args.model, calibration=cal, weight_bits=args.bits)
    out = Path(args.output)
    if not out.parent.exists():
        raise CliError(f"{out}: folder {out.parent} does not exist")
    prog.save(out)
    n = sum(q.size for q in prog.codes.values())
    print(f"wrote {out}: {len(prog.codes)} crossbar matrices, {n} weights at {prog.weight_bits} "
          f"bits, calibration {list(prog.calibration.shape)} ({prog.calibration_source}), "
          f"{out.stat().st_size} bytes")
    return EXIT_OK


def cmd_sweep(args) -> int:
    from . import sweep as S
    grid = S.Grid()
    for a in args.grid or []:
        try:
            grid.add(*S.parse_axis(a))
        except ValueError as e:
            raise CliError(str(e), EXIT_USAGE) from None
    seeds = [int(v) for v in args.seeds.split(",")]
    votes = [int(v) for v in args.votes.split(",")]
    for p in (args.model, args.data):
        if not Path(p).exists():
            raise CliError(f"{p}: no such file")
    # validate every grid point's profile before starting workers
    from nvmstream.devices import load_profile
    for pt in grid.points():
        load_profile(args.profile, dict(pt) or None)
    jobs = S.make_jobs(args.model, args.data, args.profile, grid, seeds, votes, args.limit,
                       args.calibration)
    rows = S.run_sweep(jobs, workers=args.workers, dask_address=args.dask,
                       progress=not args.quiet)
    S.write_csv(rows, args.out)
    keys = [f for fields, _ in grid.axes for f in fields[:1]] + ["votes"]
    for r in S.summarize(rows, keys):
        print("  ".join(f"{k}={r[k]}" for k in keys) +
              f"  accuracy {100 * r['accuracy_mean']:6.2f}% +- {100 * r['accuracy_std']:.2f}"
              f"  ({r['seeds']} seeds)  {r['energy_pJ_per_inference']:.4g} pJ/inference")
    print(f"wrote {args.out} ({len(rows)} rows)")
    if args.plot:
        x = keys[0] if grid.axes else "votes"
        series = [k for k in keys if k != x]
        if S.plot(rows, x, series, args.plot, title=Path(args.model).name,
                  logx=args.logx):
            print(f"wrote {args.plot}")
    return EXIT_OK


def cmd_bench(args) -> int:
    from . import bench_energy, bench_server
    from .bench import format_engine, run_bench
    res = run_bench(args.out, quick=args.quick, energy=args.energy, server=not args.no_server)
    print(format_engine(res["engine"]))
    if "server" in res:
        print(bench_server.format_results(res["server"]))
    if "energy" in res:
        print(bench_energy.format_table(res["energy"]["rows"]))
    print(f"\nwrote {Path(args.out) / 'bench.json'}")
    return EXIT_OK


def cmd_profiles(args) -> int:
    from nvmstream.devices import list_profiles, load_profile
    if args.action == "list" or args.action is None:
        for name in list_profiles():
            p = load_profile(name)
            print(f"{name:<10} {p.description}")
        return EXIT_OK
    if not args.name:
        raise CliError("profiles show needs a profile name or .toml path", EXIT_USAGE)
    p = load_profile(args.name, args.set or None)
    print(p.describe())
    return EXIT_OK


# --------------------------------------------------------------------------------------- parser
def _device_args(s, default_profile: str | None = "ideal") -> None:
    s.add_argument("--profile", "-p", default=default_profile,
                   help="device profile: a shipped name (nvmstream profiles) or a .toml path")
    s.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override a profile field, e.g. --set adc.bits=6 (repeatable)")
    s.add_argument("--seed", type=int, default=0, help="device seed (programming, faults)")
    s.add_argument("--age-s", type=float, default=None, help="device age in seconds (drift)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nvmstream", description=(
        "Streaming inference of LSTM/GRU models on emulated analog NVM accelerators."))
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("inspect", help="show the IR of an ONNX model: layers, MACs, tiles, "
                                       "streamability")
    s.add_argument("model", help="MODEL.onnx")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--tile-rows", type=int, default=256, help="crossbar tile rows (inputs)")
    s.add_argument("--tile-cols", type=int, default=256, help="crossbar tile columns (outputs)")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("run", help="run a model on an input array; outputs per time step")
    s.add_argument("model", help="MODEL.onnx or MODEL.nvm")
    s.add_argument("--input", "-i", required=True,
                   help="X.npy: [batch, time, features] or [time, features]")
    s.add_argument("--output", "-o", required=True,
                   help="Y.npy (first output) or Y.npz (every output), per time step")
    _device_args(s, default_profile=None)
    s.add_argument("--votes", type=int, default=1, help="noisy replicas voting per stream")
    s.add_argument("--stream-seed", type=int, default=0,
                   help="row b of the input uses stream seed STREAM_SEED + b (per-read noise)")
    s.add_argument("--calibration", help="X_cal.npy for converting an .onnx model")
    s.add_argument("--report", action="store_true", help="print the energy/latency report")
    s.add_argument("--json", help="write the energy/latency report as JSON to this file")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("convert", help="quantize + calibrate an ONNX model into MODEL.nvm")
    s.add_argument("model", help="MODEL.onnx")
    s.add_argument("--output", "-o", required=True, help="MODEL.nvm")
    s.add_argument("--calibration", help="X_cal.npy [N, T, features] (real data; default: "
                                         "N(0,1) inputs with a warning)")
    s.add_argument("--bits", type=int, default=4, help="weight code bits stored (2..8)")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("sweep", help="accuracy over a grid of profile overrides x seeds x votes")
    s.add_argument("model", help="MODEL.onnx or MODEL.nvm")
    s.add_argument("--data", required=True, help="DATA.npz with x_test, y_test[, lengths_test]")
    s.add_argument("--profile", "-p", default="int4", help="base device profile")
    s.add_argument("--grid", action="append", metavar="FIELD[+FIELD]=V1,V2,...",
                   help="a grid axis, e.g. adc.bits=2,4,8 or weights.bits+dac.bits=2,4 "
                        "(repeatable; axes multiply)")
    s.add_argument("--seeds", default="0", help="device seeds, comma separated")
    s.add_argument("--votes", default="1", help="vote counts, comma separated")
    s.add_argument("--limit", type=int, help="use the first N test sequences")
    s.add_argument("--calibration", help="calibration .npy/.npz (default: the data's x_train)")
    s.add_argument("--workers", type=int, default=None, help="local processes (default: cores)")
    s.add_argument("--dask", metavar="ADDRESS", help="run on a Dask cluster (scheduler address)")
    s.add_argument("--out", default="sweep.csv", help="CSV output")
    s.add_argument("--plot", help="PNG plot of accuracy against the first axis")
    s.add_argument("--logx", action="store_true", help="log scale for the plot's x axis")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("bench", help="benchmarks: engine vs onnxruntime, server round trips, "
                                     "energy; prints tables and writes JSON")
    s.add_argument("--out", default="bench-results", help="folder for bench.json")
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

    s = sub.add_parser("profiles", help="list device profiles or show one with every field")
    s.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    s.add_argument("name", nargs="?", help="profile name or .toml path (for show)")
    s.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override a field (repeatable)")
    s.set_defaults(func=cmd_profiles)
    return p


def run_parsed(args) -> int:
    """Configure logging and run a parsed command; errors become a message and an exit code."""
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    from nvmstream.converters.errors import NvmConversionError, NvmInputError
    try:
        return args.func(args)
    except CliError as e:
        print(f"nvmstream: error: {e}", file=sys.stderr)
        return e.code
    except (NvmConversionError, NvmInputError, ValueError) as e:
        print(f"nvmstream: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("nvmstream: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return run_parsed(build_parser().parse_args(argv))


if __name__ == "__main__":
    # run the package's module, not this __main__ copy, so that CliError raised by the
    # subcommand modules (which import nvmstream.runtime.cli) is the class caught here
    from nvmstream.runtime.cli import main as _main
    sys.exit(_main())
