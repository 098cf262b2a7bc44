"""Command-line front ends of the server and the client: ``nvmstream serve``, ``nvmstream
stream`` and ``nvmstream keys``.

``runtime/cli.py`` wires them in with :func:`add_serve_parser`, :func:`add_stream_parser` and
:func:`add_keys_parser`; ``python -m nvmstream.runtime.server_cli serve|stream|keys ...`` runs
them on their own (tests use that). Like cli.py this module prints; the library modules log.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("nvmstream.cli")

EXIT_OK, EXIT_USAGE, EXIT_INPUT = 0, 2, 3


def _cli_error(msg: str, code: int = EXIT_INPUT) -> Exception:
    from .cli import CliError          # lazy: cli.py imports this module
    return CliError(msg, code)


# ------------------------------------------------------------------------------------ serve
def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``serve`` to an argparse subparsers object (sets ``func=cmd_serve``)."""
    s = subparsers.add_parser(
        "serve", help="serve a model to many streams over ZeroMQ (docs/protocol.md)",
        description="Serve MODEL (.nvm, or .onnx converted at start) on a ZeroMQ ROUTER. "
                    "SIGINT/SIGTERM: stop accepting work, answer every queued frame, exit.")
    s.add_argument("model", help="MODEL.nvm (or MODEL.onnx)")
    s.add_argument("--profile", "-p", default="ideal",
                   help="default device profile, a shipped name or a .toml path (default ideal)")
    s.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.FIELD=VALUE", help="override a profile field (repeatable)")
    s.add_argument("--bind", default="tcp://127.0.0.1:5555",
                   help="endpoint to bind (default tcp://127.0.0.1:5555; loopback unless told "
                        "otherwise; port * picks a free one)")
    s.add_argument("--device-seed", type=int, default=0, help="seed of programmed devices")
    s.add_argument("--votes", type=int, default=1, help="default votes per stream")
    s.add_argument("--calibration", help="X.npy/.npz calibration inputs (for an .onnx MODEL)")
    s.add_argument("--frontend", metavar="JSON",
                   help="audio front-end parameters (a .json file or inline JSON of "
                        "FrontendParams fields); replaces the model's own")
    s.add_argument("--allow-profile", action="append", default=[], metavar="NAME=PATH",
                   help="a profile file clients may ask for by NAME (repeatable)")
    s.add_argument("--max-streams", type=int, default=4096)
    s.add_argument("--max-queue", type=int, default=65536,
                   help="frames queued over all streams before `busy` replies")
    s.add_argument("--max-queue-ms", type=float, default=250.0, metavar="MS",
                   help="answer `busy` when the queued frames would take longer than this to "
                        "step (estimated from measured step times; default 250)")
    s.add_argument("--max-devices", type=int, default=8,
                   help="device configurations (profile, overrides, votes) held at once; "
                        "an open needing another gets `too_many_devices` (default 8)")
    s.add_argument("--unread-replies", type=int, default=1000, metavar="N",
                   help="reply messages queued for a client that does not read before "
                        "further replies to it are dropped (ZMQ_SNDHWM; default 1000)")
    s.add_argument("--max-batch", type=int, default=512, help="streams per engine step")
    s.add_argument("--batch-window-us", type=int, default=0,
                   help="wait this long for a fuller batch (default 0: adaptive)")
    s.add_argument("--idle-timeout", type=float, default=60.0, metavar="S",
                   help="evict streams idle this long (seconds)")
    s.add_argument("--max-message-bytes", type=int, default=4 * 1024 * 1024)
    s.add_argument("--curve-secret", metavar="FILE",
                   help="server certificate with secret key (switches CURVE on)")
    s.add_argument("--curve-allow", metavar="DIR",
                   help="folder of client public certificates allowed in")
    s.set_defaults(func=cmd_serve)
    return s


def _load_prog(args):
    import dataclasses

    import nvmstream as nvm
    from .frontend import FrontendParams

    path = args.model
    if not os.path.exists(path):
        raise _cli_error(f"{path}: no such file (model)")
    if path.endswith(".onnx"):
        cal = None
        if args.calibration:
            from .cli import load_array
            cal = load_array(args.calibration, "calibration")
        prog = nvm.convert(path, calibration=cal)
    else:
        prog = nvm.load(path)
    if args.frontend:
        text = args.frontend
        try:
            if os.path.exists(text):
                text = Path(text).read_text()
            fp = FrontendParams.from_dict(json.loads(text))
        except (OSError, ValueError, TypeError) as e:
            raise _cli_error(f"--frontend: {e}") from None
        prog = dataclasses.replace(prog, frontend=fp.to_dict())
    return prog


def cmd_serve(args) -> int:
    from nvmstream.devices import ProfileError
    from .server import Server, ServerConfig, install_signal_handlers

    prog = _load_prog(args)
    extra = {}
    for item in args.allow_profile:
        name, sep, p = item.partition("=")
        if not sep or not name or not p:
            raise _cli_error(f"--allow-profile {item!r}: expected NAME=PATH", EXIT_USAGE)
        extra[name] = p
    cfg = ServerConfig(bind=args.bind, profile=args.profile, overrides=tuple(args.overrides),
                       device_seed=args.device_seed, votes=args.votes, extra_profiles=extra,
                       max_streams=args.max_streams, max_queued_frames=args.max_queue,
                       max_batch=args.max_batch, batch_window_us=args.batch_window_us,
                       max_queue_ms=args.max_queue_ms, max_engines=args.max_devices,
                       sndhwm=args.unread_replies,
                       idle_timeout_s=args.idle_timeout,
                       max_message_bytes=args.max_message_bytes,
                       curve_secret_file=args.curve_secret, curve_allow_dir=args.curve_allow)
    try:
        srv = Server(prog, cfg)
        endpoint = srv.bind()
    except (ProfileError, ValueError, OSError) as e:
        raise _cli_error(str(e)) from None
    install_signal_handlers(srv)
    curve = " (CURVE)" if args.curve_secret else ""
    print(f"nvmstream: serving {args.model} on {endpoint}{curve} profile "
          f"{srv.default_profile}", flush=True)
    srv.run()
    s = srv.stats()
    print(f"nvmstream: stopped after {s['frames']} frames of {s['opened']} streams", flush=True)
    return EXIT_OK


# ----------------------------------------------------------------------------------- stream
def add_stream_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``stream`` to an argparse subparsers object (sets ``func=cmd_stream``)."""
    s = subparsers.add_parser(
        "stream", help="stream a dataset (.npz) or recordings (.wav) to a server",
        description="Stream every sequence of a .npz (x[N, T, F], or x_test/y_test/"
                    "lengths_test) or every .wav (int16 mono 16 kHz) as its own stream; "
                    "print predictions, accuracy when labels exist, round-trip percentiles "
                    "and energy per inference.")
    s.add_argument("--connect", "-c", required=True, help="server endpoint, e.g. "
                                                          "tcp://127.0.0.1:5555")
    s.add_argument("--data", "-d", required=True, nargs="+", metavar="FILE",
                   help="FILE.npz or one or more FILE.wav")
    s.add_argument("--split", default="test", help=".npz: use x_SPLIT/y_SPLIT (default test)")
    s.add_argument("--limit", type=int, help="stream only the first N sequences")
    s.add_argument("--profile", "-p", help="device profile for these streams (server default "
                                           "otherwise)")
    s.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.FIELD=VALUE", help="profile override (repeatable)")
    s.add_argument("--votes", type=int, help="votes per stream")
    s.add_argument("--seed", type=int, help="stream i gets stream seed SEED + i")
    s.add_argument("--rate", type=float, default=0.0, metavar="HZ",
                   help="messages per second per stream (default 0: as fast as possible)")
    s.add_argument("--realtime", action="store_true",
                   help=".wav: send audio at its real rate (chunk / sample rate)")
    s.add_argument("--chunk", type=int, default=1600,
                   help=".wav: samples per message (default 1600 = 100 ms)")
    s.add_argument("--frames-per-message", type=int, default=1,
                   help=".npz: feature frames per message (default 1)")
    s.add_argument("--sockets", type=int, default=1, help="client sockets to spread streams on")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a reply")
    s.add_argument("--curve-server-key", metavar="FILE", help="server public certificate")
    s.add_argument("--curve-cert", metavar="FILE", help="client certificate with secret key")
    s.add_argument("--quiet", "-q", action="store_true", help="no per-stream lines")
    s.add_argument("--json", metavar="OUT", help="also write the summary as JSON")
    s.set_defaults(func=cmd_stream)
    return s


def _load_npz(path: str, split: str):
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise _cli_error(f"{path}: no such file") from None
    except Exception as e:
        raise _cli_error(f"{path}: not a readable .npz: {e}") from None
    keys = set(z.files)
    for xk, yk, lk in ((f"x_{split}", f"y_{split}", f"lengths_{split}"), ("x", "y", "lengths")):
        if xk in keys:
            break
    else:
        arrays = [k for k in z.files if z[k].ndim in (2, 3)]
        if len(arrays) != 1:
            raise _cli_error(f"{path}: no x_{split} or x array (has {sorted(keys)})")
        xk, yk, lk = arrays[0], "", ""
    x = np.asarray(z[xk], np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise _cli_error(f"{path}: {xk} must be [N, T, F], got shape {x.shape}")
    y = np.asarray(z[yk]).astype(np.int64) if yk in keys else None
    lengths = np.asarray(z[lk]).astype(np.int64) if lk in keys else None
    names = [str(v) for v in z["labels"]] if "labels" in keys else None
    return x, y, lengths, names


def _wav_labels(paths: list[str]) -> list[str | None]:
    out = []
    for p in paths:
        man = Path(p).parent / "manifest.json"
        word = None
        if man.exists():
            try:
                for e in json.loads(man.read_text()):
                    if e.get("file") == Path(p).name:
                        word = e.get("word")
            except (ValueError, AttributeError, TypeError):
                pass
        out.append(word)
    return out


def cmd_stream(args) -> int:
    from .client import ServerError, stream_sequences
    from .frontend import WavFormatError, read_wav

    files = args.data
    kind = "features"
    labels = None
    label_words = None
    if len(files) == 1 and files[0].endswith(".npz"):
        x, y, lengths, label_names = _load_npz(files[0], args.split)
        n = x.shape[0] if args.limit is None else min(args.limit, x.shape[0])
        k = max(1, args.frames_per_message)
        chunks, names = [], []
        for i in range(n):
            t = x.shape[1] if lengths is None else int(lengths[i])
            seq = x[i, :t]
            chunks.append([seq[j:j + k] if k > 1 else seq[j] for j in range(0, t, k)])
            names.append(f"#{i}")
        labels = None if y is None else y[:n]
        rate = args.rate
    else:
        bad = [f for f in files if not f.endswith(".wav")]
        if bad:
            raise _cli_error(f"--data: expected one .npz or .wav files, got {bad[0]}",
                             EXIT_USAGE)
        kind = "audio"
        chunks, names = [], []
        if args.limit is not None:
            files = files[:args.limit]
        for f in files:
            try:
                pcm, sr = read_wav(f)
            except FileNotFoundError:
                raise _cli_error(f"{f}: no such file") from None
            except WavFormatError as e:
                raise _cli_error(str(e)) from None
            c = max(1, args.chunk)
            chunks.append([pcm[j:j + c] for j in range(0, len(pcm), c)])
            names.append(Path(f).name)
        label_words = _wav_labels(files)
        label_names = None
        rate = args.rate
        if args.realtime:
            rate = sr / max(1, args.chunk)
    client_kw = {}
    if args.curve_server_key or args.curve_cert:
        client_kw = {"curve_server_key": args.curve_server_key, "curve_cert": args.curve_cert}
    try:
        from .client import Client
        with Client(args.connect, timeout_s=args.timeout, **client_kw) as c:
            minfo = c.info()["model"]
        srv_labels = minfo.get("labels") or []
        if kind == "features" and x.shape[2] != minfo["features"]:
            raise _cli_error(f"{files[0]}: {x.shape[2]} features per frame; the server's model "
                             f"takes {minfo['features']}")
        if kind == "audio" and "audio" not in minfo.get("kinds", ()):
            raise _cli_error("the server's model takes no audio (no front-end parameters)")
        if label_words is not None:
            if any(w is not None and w in srv_labels for w in label_words):
                labels = [srv_labels.index(w) if w in srv_labels else -1 for w in label_words]
        res = stream_sequences(args.connect, chunks, kind=kind, labels=labels,
                               profile=args.profile, overrides=args.overrides,
                               votes=args.votes, seed=args.seed, rate_hz=rate,
                               sockets=args.sockets, timeout_s=args.timeout,
                               client_kw=client_kw)
    except ServerError as e:
        raise _cli_error(f"server: {e}") from None
    except TimeoutError as e:
        raise _cli_error(f"{e} (is the server running at {args.connect}?)") from None
    words = res["labels"] or label_names or []

    def name(c):
        if c is None:
            return "-"
        return f"{words[c]} ({c})" if 0 <= c < len(words) else str(c)

    if not args.quiet:
        for r, nm in zip(res["results"], names):
            line = f"{nm}: predicted {name(r.prediction)} after {r.frames} frames"
            if labels is not None:
                y = int(labels[r.index])
                line += f", label {name(y)} {'ok' if r.prediction == y else 'WRONG'}"
            if r.errors:
                line += f", {len(r.errors)} errors (first: {r.errors[0]})"
            print(line)
    rtt, srv = res["rtt_ms"], res["server_us"]
    print(f"streams {res['streams']}, frames {res['frames']}, {res['elapsed_s']:.2f} s, "
          f"{res['frames_per_s'] or 0:.0f} frames/s, errors {res['errors']}")
    first = next((e for r in res["results"] for e in r.errors), None)
    if first:
        print(f"first error: {first}")
    if labels is not None and res.get("accuracy") is not None:
        print(f"accuracy {res['accuracy']:.4f} ({res['labelled']} labelled streams)")
    if rtt["p50"] is not None:
        print(f"round trip ms: p50 {rtt['p50']:.3f}  p90 {rtt['p90']:.3f}  p99 {rtt['p99']:.3f};"
              f" server us: p50 {srv['p50']:.0f}  p99 {srv['p99']:.0f}")
    e = res["energy_pJ_per_inference"]
    if not res["frames"]:
        pass
    elif e is None:
        print("energy: not reported by this server")
    else:
        print(f"energy per inference (sequence) {e / 1e3:.3f} nJ, per frame "
              f"{res['energy_pJ_per_frame']:.1f} pJ")
    lat = res["device_latency_ns_per_frame"]
    if lat is not None:
        print(f"emulated device latency per frame {lat / 1e3:.3f} us")
    if args.json:
        from .cli import atomic_save
        out = {k: v for k, v in res.items() if k != "results"}
        out["streams_detail"] = [{"name": nm, "prediction": r.prediction, "frames": r.frames,
                                  "e_pJ": r.e_pJ, "errors": r.errors}
                                 for r, nm in zip(res["results"], names)]
        atomic_save(args.json, lambda p: Path(p).write_text(json.dumps(out, indent=2)))
    return EXIT_OK if res["errors"] == 0 else EXIT_INPUT


# ------------------------------------------------------------------------------------- keys
def add_keys_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``keys`` (make a CURVE key pair) to an argparse subparsers object."""
    s = subparsers.add_parser("keys", help="make a CURVE certificate pair for serve/stream")
    s.add_argument("folder", help="where to write NAME.key (public) and NAME.key_secret")
    s.add_argument("--name", default="server", help="certificate name (default server)")
    s.set_defaults(func=cmd_keys)
    return s


def cmd_keys(args) -> int:
    import zmq.auth
    os.makedirs(args.folder, exist_ok=True)
    pub, sec = zmq.auth.create_certificates(args.folder, args.name)
    os.chmod(sec, 0o600)
    print(f"public: {pub}\nsecret: {sec}")
    return EXIT_OK


# -------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m nvmstream.runtime.server_cli``); cli.py offers the same
    subcommands."""
    from .cli import run_parsed

    p = argparse.ArgumentParser(prog="nvmstream")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_serve_parser(sub)
    add_stream_parser(sub)
    add_keys_parser(sub)
    return run_parsed(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
