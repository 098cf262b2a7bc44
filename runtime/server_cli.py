"""Command-line front ends of the server and the client: ``nvmstream serve``, ``nvmstream
worker``, ``nvmstream stats``, ``nvmstream stream`` and ``nvmstream keys``.

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


log = logging.getLogger("nvmstream.cli")

EXIT_OK, EXIT_USAGE, EXIT_INPUT = 0, 2, 3


def _cli_error(msg: str, code: int = EXIT_INPUT) -> Exception:
    from .cli import CliError          # lazy: cli.py imports this module
    return CliError(msg, code)


# ------------------------------------------------------------------------------------ serve
# options a worker needs to serve like `serve` does (passed on to spawned workers)
_ENGINE_OPTS = [
    # (flags, kwargs, attribute, repeatable)
    (("--profile", "-p"), dict(default="ideal", help="default device profile, a shipped name or "
                                                      "a .toml path (default ideal)"),
     "profile", False),
    (("--set",), dict(dest="overrides", action="append", default=[],
                      metavar="SECTION.FIELD=VALUE", help="override a profile field "
                                                          "(repeatable)"), "overrides", True),
    (("--device-seed",), dict(type=int, default=0, help="seed of programmed devices"),
     "device_seed", False),
    (("--votes",), dict(type=int, default=1, help="default votes per stream"), "votes", False),
    (("--calibration",), dict(help="calibration inputs for an .onnx MODEL: X.npy or DATA.npz "
                                   "(its x_train), or 'random' for N(0, 1); default: the "
                                   "dataset the model's metadata names, else an error "
                                   "(nvmstream convert --help)"),
     "calibration", False),
    (("--frontend",), dict(metavar="JSON", help="audio front-end parameters (a .json file or "
                                                "inline JSON of FrontendParams fields); "
                                                "replaces the model's own"), "frontend", False),
    (("--allow-profile",), dict(action="append", default=[], metavar="NAME=PATH",
                                help="a profile file clients may ask for by NAME "
                                     "(repeatable)"), "allow_profile", True),
    (("--max-streams",), dict(type=int, default=4096), "max_streams", False),
    (("--max-queue",), dict(type=int, default=65536,
                            help="frames queued over all streams before `busy` replies"),
     "max_queue", False),
    (("--max-queue-ms",), dict(type=float, default=250.0, metavar="MS",
                               help="answer `busy` when the queued frames would take longer "
                                    "than this to step (estimated from measured step times; "
                                    "default 250)"), "max_queue_ms", False),
    (("--max-devices",), dict(type=int, default=8,
                              help="device configurations (profile, overrides, votes) held at "
                                   "once; an open needing another gets `too_many_devices` "
                                   "(default 8)"), "max_devices", False),
    (("--max-batch",), dict(type=int, default=512, help="streams per engine step"),
     "max_batch", False),
    (("--batch-window-us",), dict(type=int, default=0, help="wait this long for a fuller batch "
                                                            "(default 0: adaptive)"),
     "batch_window_us", False),
    (("--idle-timeout",), dict(type=float, default=60.0, metavar="S",
                               help="evict streams idle this long (seconds)"),
     "idle_timeout", False),
    (("--blas-threads",), dict(type=int, default=1, metavar="N",
                               help="BLAS threads of the engine process (default 1: a server "
                                    "process is one loop; scale out with --workers; 0 leaves "
                                    "the library's own choice)"), "blas_threads", False),
]


def _add_engine_options(s) -> None:
    s.add_argument("model", help="MODEL.nvm (or MODEL.onnx)")
    for flags, kw, _, _ in _ENGINE_OPTS:
        s.add_argument(*flags, **kw)


def _engine_argv(args) -> list[str]:
    """The engine options of parsed ``serve`` arguments, as ``worker`` arguments."""
    out = [os.path.abspath(args.model)]
    for flags, _, attr, rep in _ENGINE_OPTS:
        v = getattr(args, attr)
        if v is None:
            continue
        for item in (v if rep else [v]):
            out += [flags[0], str(item)]
    return out


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``serve`` to an argparse subparsers object (sets ``func=cmd_serve``)."""
    s = subparsers.add_parser(
        "serve", help="serve a model to many streams over ZeroMQ (docs/protocol.md)",
        description="Serve MODEL (.nvm, or .onnx converted at start) on a ZeroMQ ROUTER. "
                    "SIGINT/SIGTERM: stop accepting work, answer every queued frame, exit. "
                    "--workers N: a broker in front of N engine worker processes.")
    _add_engine_options(s)
    s.add_argument("--bind", default="tcp://127.0.0.1:5555",
                   help="endpoint to bind (default tcp://127.0.0.1:5555; loopback unless told "
                        "otherwise; port * picks a free one)")
    s.add_argument("--workers", type=int, default=0,
                   help="run N engine worker processes behind a broker (default 0: one "
                        "process serves); streams are pinned to a worker")
    s.add_argument("--broker", action="store_true",
                   help="run the broker even with --workers 0 (workers then come from "
                        "`nvmstream worker --connect`)")
    s.add_argument("--worker-bind", action="append", default=[], metavar="EP",
                   help="broker: endpoint workers connect to (repeatable; `nvmstream worker "
                        "--connect EP` from other hosts; default a free loopback port)")
    s.add_argument("--unread-replies", type=int, default=1000, metavar="N",
                   help="reply messages queued for a client that does not read before "
                        "further replies to it are dropped (ZMQ_SNDHWM; default 1000)")
    s.add_argument("--max-message-bytes", type=int, default=4 * 1024 * 1024)
    s.add_argument("--metrics-port", type=int, default=0, metavar="PORT",
                   help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics (needs "
                        "prometheus_client; default off)")
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

    from .data import model_kind, resolve_calibration

    path = args.model
    if model_kind(path) == "onnx":       # by content: an .npy renamed .nvm is refused
        cal = resolve_calibration(path, args.calibration)
        prog = nvm.convert(path, calibration=cal.x)
        prog = dataclasses.replace(prog, calibration_source=cal.source)
        print(f"nvmstream: {cal.describe()}", file=sys.stderr, flush=True)
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


def _server_config(args, bind: str):
    from .server import ServerConfig

    extra = {}
    for item in args.allow_profile:
        name, sep, p = item.partition("=")
        if not sep or not name or not p:
            raise _cli_error(f"--allow-profile {item!r}: expected NAME=PATH", EXIT_USAGE)
        extra[name] = p
    return ServerConfig(bind=bind, profile=args.profile, overrides=tuple(args.overrides),
                        device_seed=args.device_seed, votes=args.votes, extra_profiles=extra,
                        max_streams=args.max_streams, max_queued_frames=args.max_queue,
                        max_batch=args.max_batch, batch_window_us=args.batch_window_us,
                        max_queue_ms=args.max_queue_ms, max_engines=args.max_devices,
                        sndhwm=getattr(args, "unread_replies", 1000),
                        idle_timeout_s=args.idle_timeout,
                        max_message_bytes=getattr(args, "max_message_bytes", 4 * 1024 * 1024),
                        curve_secret_file=getattr(args, "curve_secret", None),
                        curve_allow_dir=getattr(args, "curve_allow", None))


def cmd_serve(args) -> int:
    from nvmstream.devices import ProfileError
    from .server import Server, freeze_heap, install_signal_handlers

    if args.workers < 0:
        raise _cli_error("--workers must be >= 0", EXIT_USAGE)
    if args.workers or args.broker:
        return _serve_broker(args)
    from .cli import compile_notice
    prog = _load_prog(args)
    cfg = _server_config(args, args.bind)
    srv = None
    try:
        def build():
            nonlocal srv
            srv = Server(prog, cfg)
        compile_notice(build)           # a cold numba cache is announced, not silent
        endpoint = srv.bind()
    except (ProfileError, ValueError, OSError) as e:
        raise _cli_error(str(e)) from None
    _start_metrics(args, srv)
    install_signal_handlers(srv)
    curve = " (CURVE)" if args.curve_secret else ""
    print(f"nvmstream: serving {args.model} on {endpoint}{curve} profile "
          f"{srv.default_profile}", flush=True)
    with _blas_threads(args):
        freeze_heap()                 # (no full GC pass over the model, ever)
        srv.run()
    s = srv.stats()
    print(f"nvmstream: stopped after {s['frames']} frames of {s['opened']} streams", flush=True)
    return EXIT_OK


def _blas_threads(args):
    """Limit BLAS threads while serving (``--blas-threads``; 0: leave as is). Several BLAS
    threads per server process fight over the cores with the other processes of the machine
    (workers, broker, clients): on 2 loaded cores a 256-stream step took 56-125 ms with
    OpenBLAS's default threads and 5 ms with one."""
    import contextlib
    n = getattr(args, "blas_threads", 0)
    if not n or n < 0:
        return contextlib.nullcontext()
    from .bench import blas_threads
    return blas_threads(n)


def _start_metrics(args, srv) -> None:
    if not args.metrics_port:
        return
    from .serving.metrics import start_metrics_server
    srv.publish_stats = True
    srv.stats_snapshot = srv.stats()
    try:
        start_metrics_server(args.metrics_port, lambda: srv.stats_snapshot)
    except (ImportError, OSError) as e:
        raise _cli_error(f"--metrics-port: {e}") from None


def _serve_broker(args) -> int:
    from .server import freeze_heap, install_signal_handlers
    from .serving.broker import Broker

    from .data import model_kind, resolve_calibration
    if model_kind(args.model) == "onnx":     # fail here, not in every worker
        resolve_calibration(args.model, args.calibration)
    cfg = _server_config(args, args.bind)
    try:
        cfg.check()
        broker = Broker(cfg, worker_bind=args.worker_bind or ["tcp://127.0.0.1:*"])
        endpoint = broker.bind()
    except (ValueError, OSError) as e:
        raise _cli_error(str(e)) from None
    argv = [sys.executable, "-m", "nvmstream.runtime.server_cli", "worker", *_engine_argv(args)]
    if args.verbose if hasattr(args, "verbose") else 0:
        argv.insert(3, "-v")
    _start_metrics(args, broker)
    install_signal_handlers(broker)
    try:
        broker.spawn_workers(args.workers, argv)
        n = broker.wait_workers(args.workers, 600.0)
    except OSError as e:
        broker.close()
        raise _cli_error(str(e)) from None
    curve = " (CURVE)" if args.curve_secret else ""
    print(f"nvmstream: serving {args.model} on {endpoint}{curve} with {n} workers "
          f"(workers connect to {' '.join(broker.worker_endpoints)})", flush=True)
    freeze_heap()                 # (no full GC pass over the model, ever)
    broker.run()
    s = broker.counters
    print(f"nvmstream: broker stopped after {s['messages']} messages", flush=True)
    return EXIT_OK


# ----------------------------------------------------------------------------------- worker
def add_worker_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``worker`` to an argparse subparsers object (sets ``func=cmd_worker``)."""
    s = subparsers.add_parser(
        "worker", help="an engine worker for `serve --workers` (possibly on another host)",
        description="Serve MODEL behind a broker: connect to the endpoint `nvmstream serve "
                    "--workers N` prints for workers. Streams the broker pins here are "
                    "stepped here.")
    _add_engine_options(s)
    s.add_argument("--connect", "-c", required=True, help="the broker's worker endpoint")
    s.add_argument("--exit-with-broker", action="store_true",
                   help="exit when the broker is silent for 5 s (spawned workers)")
    s.set_defaults(func=cmd_worker)
    return s


def cmd_worker(args) -> int:
    from nvmstream.devices import ProfileError
    from .server import freeze_heap, install_signal_handlers
    from .serving.worker import Worker

    prog = _load_prog(args)
    cfg = _server_config(args, "tcp://127.0.0.1:0")
    try:
        w = Worker(prog, cfg, connect=args.connect, exit_with_broker=args.exit_with_broker)
        w.bind()
    except (ProfileError, ValueError, OSError) as e:
        raise _cli_error(str(e)) from None
    install_signal_handlers(w)
    log.info("worker of %s connected to %s", args.model, args.connect)
    with _blas_threads(args):
        freeze_heap()                 # (no full GC pass over the model, ever)
        w.run()
    return EXIT_OK


# ----------------------------------------------------------------------------------- stream
def add_stream_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``stream`` to an argparse subparsers object (sets ``func=cmd_stream``)."""
    s = subparsers.add_parser(
        "stream", help="stream a dataset (.npz) or recordings (.wav) to a server",
        description="Stream every sequence of a .npz (x[N, T, F], or x_test/y_test/"
                    "lengths_test) or every .wav (resampled to the model's rate) as its own stream; "
                    "print predictions, accuracy when labels exist, round-trip percentiles "
                    "and energy per inference.")
    s.add_argument("--connect", "-c", required=True, help="server endpoint, e.g. "
                                                          "tcp://127.0.0.1:5555")
    s.add_argument("--data", "-d", required=True, nargs="+", metavar="FILE",
                   help="FILE.npz/.npy (the data contract: x_SPLIT, y_SPLIT, lengths_SPLIT) "
                        "or one or more FILE.wav (any rate and channels: mixed to mono and "
                        "resampled to the model's front-end rate)")
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
    s.add_argument("--outputs", metavar="Y.npz",
                   help="also write every frame's outputs: one array per stream, y_0, y_1, ... "
                        "[frames, outputs' widths side by side], named as the streams in "
                        "`names` and the outputs in `outputs`")
    s.set_defaults(func=cmd_stream)
    return s


def _load_npz(path: str, split: str):
    """x, y, lengths, label names of a data file under the data contract (runtime/data.py)."""
    from .data import load_data
    d = load_data(path, split, what="stream data")
    return d.x, d.y, d.lengths, (list(d.labels) if d.labels else None)


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
    import numpy as np

    from .client import ServerError, first_output_is_value, stream_sequences
    from .frontend import WavFormatError, load_audio, read_wav

    files = args.data
    kind = "features"
    labels = None
    label_words = None
    if args.json or args.outputs:
        from .outputs import OutputError, plan_output
        try:
            if args.json:
                plan_output(args.json, suffixes=(".json",), inputs=files, what="--json")
            if args.outputs:
                plan_output(args.outputs, suffixes=(".npz",), inputs=files, what="--outputs",
                            allow_stdout=False)
        except OutputError as e:
            raise _cli_error(str(e)) from None
    if "://" not in args.connect:
        raise _cli_error(f"--connect {args.connect!r}: an endpoint needs a transport, e.g. "
                         f"tcp://{args.connect}", EXIT_USAGE)
    if len(files) == 1 and files[0].endswith((".npz", ".npy")):
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
            raise _cli_error(f"--data: expected one .npz/.npy or .wav files, got {bad[0]}",
                             EXIT_USAGE)
        kind = "audio"
        chunks, names = [], []
        if args.limit is not None:
            files = files[:args.limit]
        for f in files:
            if not os.path.exists(f):
                raise _cli_error(f"{f}: no such file")
            names.append(Path(f).name)
        label_words = _wav_labels(files)
        label_names = None
        rate = args.rate
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
        if kind == "audio":
            fe = minfo.get("frontend") or {}
            sr = int(fe.get("sample_rate_hz", 16000))
            raw = fe.get("kind") == "raw"
            c = max(1, args.chunk)
            for f in files:
                try:
                    if raw:     # the model sees the samples themselves: never altered
                        pcm, _ = read_wav(f, sr)
                        ainfo = {"resampled": False, "downmixed": False}
                        # the last frame zero-padded to full length (silero-vad's wrapper)
                        pcm = np.concatenate([pcm, np.zeros(-len(pcm) % int(fe["hop_length"]),
                                                            np.int16)])
                    else:
                        pcm, ainfo = load_audio(f, sr)
                except WavFormatError as e:
                    raise _cli_error(f"{e} (the model takes raw PCM)" if raw else str(e)) \
                        from None
                if ainfo["resampled"] or ainfo["downmixed"]:
                    print(f"{Path(f).name}: {ainfo['channels']} channel(s) {ainfo['bits']}-bit "
                          f"at {ainfo['sample_rate_hz']} Hz -> mono at {sr} Hz (the model's "
                          f"front-end rate)", file=sys.stderr)
                chunks.append([pcm[j:j + c] for j in range(0, len(pcm), c)])
            if args.realtime:
                rate = sr / c
        if label_words is not None:
            if any(w is not None and w in srv_labels for w in label_words):
                labels = [srv_labels.index(w) if w in srv_labels else -1 for w in label_words]
        value = minfo["outputs"][0][0] if first_output_is_value(minfo) else None
        if value is not None and labels is not None:
            print(f"{files[0]}: labels not compared: the model's first output {value!r} is one "
                  f"value per frame, not class scores", file=sys.stderr)
            labels = None
        res = stream_sequences(args.connect, chunks, kind=kind, labels=labels,
                               profile=args.profile, overrides=args.overrides,
                               votes=args.votes, seed=args.seed, rate_hz=rate,
                               sockets=args.sockets, timeout_s=args.timeout,
                               client_kw=client_kw, keep_outputs=bool(args.outputs))
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
            v = r.value_summary()
            if value is None:
                line = f"{nm}: predicted {name(r.prediction)} after {r.frames} frames"
            elif v is None:
                line = f"{nm}: {value} - after {r.frames} frames"
            else:           # one value per frame (e.g. a VAD's speech probability)
                line = (f"{nm}: {value} last {v['last']:.4g}, mean {v['mean']:.4g}, min "
                        f"{v['min']:.4g}, max {v['max']:.4g} over {r.frames} frames")
            if labels is not None:
                y = int(labels[r.index])
                line += f", label {name(y)} {'ok' if r.prediction == y else 'WRONG'}"
            if r.errors:
                line += f", {len(r.errors)} errors (first: {r.errors[0]})"
            print(line)
    rtt, srv = res["rtt_ms"], res["server_us"]
    print(f"streams {res['streams']}, frames {res['frames']}, {res['elapsed_s']:.2f} s, "
          f"{res['frames_per_s'] or 0:.0f} frames/s, errors {res['errors']}"
          + (f", resent after busy {res['busy_resent']}" if res.get("busy_resent") else ""))
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
        from .outputs import provenance, write_json
        out = {"provenance": provenance(
            data=files[0] if len(files) == 1 else None, files=files, endpoint=args.connect,
            model_server=minfo, profile_requested=args.profile, overrides=args.overrides,
            seeds={"stream": args.seed}, votes=args.votes)}
        out.update({k: v for k, v in res.items() if k != "results"})
        out["streams_detail"] = [{"name": nm, "prediction": r.prediction, "frames": r.frames,
                                  "e_pJ": r.e_pJ, "errors": r.errors,
                                  **({"output": r.value_summary()} if value else {})}
                                 for r, nm in zip(res["results"], names)]
        write_json(args.json, out)
    if args.outputs:
        from .outputs import write_with
        arrays = {f"y_{r.index}": (r.outputs() if r.frames else
                                   np.zeros((0, sum(w for _, w in minfo["outputs"])), np.float32))
                  for r in res["results"]}
        arrays["names"] = np.array(names)
        arrays["outputs"] = np.array([f"{n}:{w}" for n, w in minfo["outputs"]])
        write_with(args.outputs, lambda fh: np.savez(fh, **arrays))
        print(f"wrote {args.outputs}")
    if res["errors"]:
        print(f"nvmstream: error: {res['errors']} message(s) got error replies (first: "
              f"{first})", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_OK


# ------------------------------------------------------------------------------------ stats
def add_stats_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``stats`` (a live view of a server's statistics) to an argparse subparsers object."""
    s = subparsers.add_parser("stats", help="live view of a server: streams, queue, batches, "
                                            "latency, errors, energy, workers")
    s.add_argument("--connect", "-c", required=True, help="server endpoint")
    s.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="seconds between updates (default 1)")
    s.add_argument("--count", type=int, default=0,
                   help="stop after N updates (default 0: until Ctrl-C)")
    s.add_argument("--json", action="store_true", help="print each update as one JSON line")
    s.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a reply")
    s.set_defaults(func=cmd_stats)
    return s


def format_stats(st: dict, prev: dict | None, dt_s: float) -> str:
    """A few lines of text for one ``stats`` reply (rates from the previous one)."""
    def rate(k):
        if prev is None or dt_s <= 0:
            return 0.0
        return max(0.0, (st.get(k, 0) - prev.get(k, 0)) / dt_s)
    lat = st.get("srv_us") or {}
    f = lambda v: "-" if v is None else f"{v:.0f}"        # noqa: E731
    lines = [f"up {st.get('uptime_s', 0):.0f} s  streams {st.get('streams')}  clients "
             f"{st.get('clients', '-')}  queued {st.get('queued')} "
             f"(~{st.get('queued_ms') or 0:.0f} ms)  frames/s {rate('frames'):.0f}  "
             f"messages/s {rate('messages'):.0f}  batch mean "
             f"{st.get('batch_mean') or 0:.1f} max {st.get('batch_max', '-')}",
             f"server us p50 {f(lat.get('p50'))} p90 {f(lat.get('p90'))} "
             f"p99 {f(lat.get('p99'))}  busy frames {st.get('busy_frames')}  dropped replies "
             f"{st.get('dropped_replies')}  evicted {st.get('evicted')}"]
    errs = st.get("errors") or {}
    if errs:
        lines.append("errors: " + ", ".join(f"{k} {v}" for k, v in sorted(errs.items())))
    for e in st.get("engines") or []:
        ov = ",".join(e.get("overrides") or [])
        en = e.get("e_pJ")
        lines.append(f"  device {e.get('profile')}{' [' + ov + ']' if ov else ''} votes "
                     f"{e.get('votes')}: {e.get('streams')} streams"
                     f"{'' if e.get('ready', True) else ' (programming)'}"
                     f"{'' if en is None else f', energy {en / 1e6:.3f} uJ'}")
    for s in st.get("top_streams") or []:
        lines.append(f"  stream {s['id']} of {s['client']}: {s['frames']} frames, "
                     f"{(s.get('e_pJ') or 0) / 1e3:.1f} nJ")
    for w in st.get("workers") or []:
        wl = w.get("srv_us") or {}
        lines.append(f"  worker {w['id']} pid {w.get('pid')} on {w.get('host')}: "
                     f"{w.get('streams')} streams, queued {w.get('queued')}, frames "
                     f"{w.get('frames')}, p50 {f(wl.get('p50'))} us")
    b = st.get("broker")
    if b:
        lines.append(f"  broker: workers lost {b.get('workers_lost')}, restarted "
                     f"{b.get('workers_restarted')}, streams lost {b.get('streams_lost')}, "
                     f"no_worker {b.get('no_worker')}")
    return "\n".join(lines)


def cmd_stats(args) -> int:
    import time

    from .client import Client

    prev, t_prev, n = None, 0.0, 0
    try:
        with Client(args.connect, timeout_s=args.timeout) as c:
            while True:
                st = c.stats()
                t = time.monotonic()
                if args.json:
                    print(json.dumps(st), flush=True)
                else:
                    print(format_stats(st, prev, t - t_prev), flush=True)
                    print("", flush=True)
                prev, t_prev, n = st, t, n + 1
                if args.count and n >= args.count:
                    return EXIT_OK
                time.sleep(max(0.05, args.interval))
    except TimeoutError as e:
        raise _cli_error(f"{e} (is the server running at {args.connect}?)") from None
    except KeyboardInterrupt:
        return EXIT_OK


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
    add_worker_parser(sub)
    add_stats_parser(sub)
    add_stream_parser(sub)
    add_keys_parser(sub)
    return run_parsed(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
