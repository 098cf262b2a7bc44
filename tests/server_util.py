"""Helpers for the server tests: compiled models, a real server subprocess, a raw client."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

import nvmstream as nvm
from nvmstream.runtime import protocol as P

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "onnx"
REPO = Path(__file__).resolve().parent.parent


def compile_fixture(name: str, out: Path, *, frontend: dict | None = None,
                    labels: tuple[str, ...] = ()) -> Path:
    """Convert tests/fixtures/onnx/NAME (seeded N(0,1) calibration) and save it as .nvm."""
    path = FIXTURES / name
    import onnx
    f = next(i for i in onnx.load(str(path)).graph.input).type.tensor_type.shape.dim[-1].dim_value
    cal = np.random.default_rng(0).standard_normal((8, 20, f)).astype(np.float32)
    prog = nvm.convert(path, calibration=cal)
    if frontend is not None or labels:
        prog = dataclasses.replace(prog, frontend=frontend, labels=tuple(labels))
    out = Path(out)
    prog.save(out)
    return out


class ServerProcess:
    """``python -m nvmstream.runtime.server_cli serve MODEL ...`` on a free loopback port.

    Use as a context manager; the process is always stopped (SIGTERM, then SIGKILL)."""

    def __init__(self, model: Path | str, *args: str, start_timeout_s: float = 120.0,
                 log_dir: Path | None = None):
        self.cmd = [sys.executable, "-m", "nvmstream.runtime.server_cli", "serve", str(model),
                    "--bind", "tcp://127.0.0.1:*", *args]
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""
        self.stdout_lines: list[str] = []
        self._err_path = (Path(log_dir) if log_dir else Path(os.environ.get("TMPDIR", "/tmp"))) \
            / f"nvmstream-server-{os.getpid()}-{id(self)}.err"

    def start(self) -> "ServerProcess":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._err = open(self._err_path, "w+")
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self._err,
                                     text=True, env=env, cwd=REPO)
        line = [None]

        def read():
            line[0] = self.proc.stdout.readline()
        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(self.start_timeout_s)
        if not line[0] or "tcp://" not in line[0]:
            self.stop()
            raise RuntimeError(f"server did not start: {line[0]!r}\n{self.stderr()}")
        self.stdout_lines.append(line[0])
        self.endpoint = line[0][line[0].index("tcp://"):].split()[0]
        return self

    def stderr(self) -> str:
        try:
            self._err.flush()
            return Path(self._err_path).read_text()[-4000:]
        except (OSError, AttributeError):
            return ""

    def stop(self, timeout_s: float = 15.0) -> int | None:
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        try:
            rest = p.stdout.read()
            if rest:
                self.stdout_lines.extend(rest.splitlines())
        except (OSError, ValueError):
            pass
        return p.returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        try:
            self._err.close()
            os.unlink(self._err_path)
        except OSError:
            pass


class RawClient:
    """A bare DEALER speaking the wire format by hand (for malformed messages)."""

    def __init__(self, endpoint: str, ctx: zmq.Context | None = None, **sockopts: Any):
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        for k, v in sockopts.items():
            self.sock.setsockopt(getattr(zmq, k), v)
        self.sock.connect(endpoint)
        self._pending: list[tuple[dict, Any]] = []

    def send(self, hdr: dict | bytes, *payload: bytes) -> None:
        raw = hdr if isinstance(hdr, bytes) else P.pack(hdr)
        self.sock.send_multipart([raw, *payload])

    def send_parts(self, parts: list[bytes]) -> None:
        self.sock.send_multipart(parts)

    def recv(self, timeout_s: float = 10.0) -> tuple[dict, Any]:
        """The next reply (a batch reply is split into its items)."""
        if not self._pending:
            if not self.sock.poll(int(timeout_s * 1000)):
                raise TimeoutError("no reply")
            parts = self.sock.recv_multipart()
            hdr = P.unpack_header(parts[0], P.MAX_REPLY_HEADER_BYTES)
            self._pending.extend(P.split_batch(hdr, parts[1] if len(parts) > 1 else None))
        return self._pending.pop(0)

    def recv_n(self, n: int, timeout_s: float = 10.0) -> list[tuple[dict, Any]]:
        deadline = time.monotonic() + timeout_s
        return [self.recv(max(0.01, deadline - time.monotonic())) for _ in range(n)]

    def request(self, hdr: dict, *payload: bytes, timeout_s: float = 10.0) -> tuple[dict, Any]:
        self.send(hdr, *payload)
        return self.recv(timeout_s)

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def frame_msg(sid: int, seq: int, x: np.ndarray) -> tuple[dict, bytes]:
    x = np.ascontiguousarray(x, "<f4")
    if x.ndim == 1:
        x = x[None]
    return ({"v": 1, "op": "frame", "id": sid, "seq": seq, "dtype": "<f4",
             "shape": list(x.shape)}, x.tobytes())


def reference_outputs(model: Path, profile: str, seed: int, frames: np.ndarray, *,
                      votes: int = 1, overrides: list[str] | None = None,
                      device_seed: int = 0) -> tuple[np.ndarray, list[int], list]:
    """The in-process engine's outputs (all outputs concatenated), classes and energies."""
    prog = nvm.load(model)
    eng = nvm.Engine(prog, nvm.Device(profile, seed=device_seed, overrides=overrides),
                     votes=votes)
    s = eng.stream(seed=seed)
    ys, cls, es = [], [], []
    for x in frames:
        outs = eng.step_many_all([s], np.asarray(x, np.float32)[None])
        ys.append(np.concatenate([outs[o.name].reshape(1, -1) for o in prog.model.outputs],
                                 axis=1)[0])
        cls.append(s.last_class)
        es.append(getattr(s, "last_energy_pJ", None))
    return np.stack(ys), cls, es


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for process {pid}")
