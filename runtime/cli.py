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


def cmd_run(args) -> int:
    model = _load_model(args.model)
    x = load_array(args.input, "input")
    squeeze = x.ndim == 2
    if x.ndim not in (2, 3):
        raise CliError(f"{args.input}: input must be [batch, time, features] or "
                       f"[time, features], got shape {x.shape}")
    outs = model.run_steps(x)
    if squeeze:
        outs = {k: v[0] for k, v in outs.items()}
    out = Path(args.output)
    if out.suffix == ".npz":
        atomic_save(out, lambda p: np.savez(p, **outs))
    else:
        first = model.outputs[0].name
        if len(outs) > 1:
            log.warning("model has %d outputs; %s holds %r (use .npz for all)",
                        len(outs), out, first)
        atomic_save(out, lambda p: np.save(p, outs[first]))
    for name, v in outs.items():
        print(f"{name}: shape {list(v.shape)} dtype {v.dtype}")
    return EXIT_OK


# --------------------------------------------------------------------------------------- parser
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
    s.add_argument("model", help="MODEL.onnx")
    s.add_argument("--input", "-i", required=True,
                   help="X.npy: [batch, time, features] or [time, features]")
    s.add_argument("--output", "-o", required=True,
                   help="Y.npy (first output) or Y.npz (every output), per time step")
    s.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    from nvmstream.converters.errors import NvmConversionError, NvmInputError
    try:
        return args.func(args)
    except CliError as e:
        print(f"nvmstream: error: {e}", file=sys.stderr)
        return e.code
    except (NvmConversionError, NvmInputError) as e:
        print(f"nvmstream: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("nvmstream: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
