"""`nvmstream bench` / `make bench`: engine speed side by side with onnxruntime (and, when the
server module is present, ZeroMQ round trips). Prints tables and writes JSON; never asserts.

Yardsticks (issue 3): LSTM 12->64 + Linear, batch 1, profile pcm: streamed step latency vs
onnxruntime T=1 calls carrying state (target <= 0.25x); whole sequence T=100 per step vs
onnxruntime (target <= 2x); 256 streams of LSTM 40->128 stepped together vs onnxruntime batch
256 (target throughput >= onnxruntime's).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


def lstm_onnx(path: Path, n_in: int, hidden: int, n_out: int, *, state_io: bool,
              seed: int = 0) -> Path:
    """LSTM(n_in -> hidden) + Linear(hidden -> n_out) per step, time-major, as ONNX.

    With ``state_io`` the model takes and returns (h, c): a T=1 call then carries state,
    which is how onnxruntime streams a recurrent model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    s = 1 / np.sqrt(hidden)
    inits = [numpy_helper.from_array(rng.uniform(-s, s, (1, 4 * hidden, n_in)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.uniform(-s, s, (1, 4 * hidden, hidden)).astype(np.float32), "R"),
             numpy_helper.from_array(rng.uniform(-s, s, (1, 8 * hidden)).astype(np.float32), "B"),
             numpy_helper.from_array(rng.uniform(-s, s, (hidden, n_out)).astype(np.float32), "Wd"),
             numpy_helper.from_array(rng.uniform(-s, s, (n_out,)).astype(np.float32), "bd"),
             numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", n_in])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", "B", n_out])]
    lstm_in = ["x", "W", "R", "B", ""]
    if state_io:
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "B", hidden])
                   for n in ("h0", "c0")]
        outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "B", hidden])
                    for n in ("hT", "cT")]
        lstm_in += ["h0", "c0"]
    nodes = [helper.make_node("LSTM", lstm_in, ["Y", "hT", "cT"] if state_io else ["Y"],
                              hidden_size=hidden),
             helper.make_node("Squeeze", ["Y", "ax1"], ["Ys"]),
             helper.make_node("MatMul", ["Ys", "Wd"], ["z"]),
             helper.make_node("Add", ["z", "bd"], ["y"])]
    g = helper.make_graph(nodes, "bench", inputs, outputs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def _ort(path: Path, threads: int = 1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _median_us(fn: Callable[[], object], reps: int, inner: int = 1, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) / inner)
    return 1e6 * float(np.median(ts))


def bench_engine(workdir: Path, profile: str = "pcm", quick: bool = False) -> dict:
    import nvmstream as nvm

    reps = 20 if quick else 60
    res: dict = {"profile": profile}
    # ---- LSTM 12 -> 64 + Linear, batch 1
    small = lstm_onnx(workdir / "lstm12x64.onnx", 12, 64, 8, state_io=False)
    small_s = lstm_onnx(workdir / "lstm12x64_state.onnx", 12, 64, 8, state_io=True)
    rng = np.random.default_rng(0)
    cal = rng.standard_normal((16, 50, 12)).astype(np.float32)
    prog = nvm.convert(small, calibration=cal)
    eng = nvm.Engine(prog, nvm.Device(profile, seed=0))
    sess, sess_s = _ort(small), _ort(small_s)
    frames = rng.standard_normal((200, 12)).astype(np.float32)

    st = eng.stream()
    k = [0]

    def our_step():
        for i in range(100):
            st.step(frames[i])
    h = np.zeros((1, 1, 64), np.float32)
    c = np.zeros((1, 1, 64), np.float32)
    state = [h, c]

    def ort_step():
        for i in range(100):
            _, state[0], state[1] = sess_s.run(None, {"x": frames[i][None, None],
                                                      "h0": state[0], "c0": state[1]})
    res["stream_step_us"] = {"nvmstream": _median_us(our_step, reps, 100),
                             "onnxruntime": _median_us(ort_step, reps, 100)}
    # ---- whole sequence T=100
    xs = rng.standard_normal((1, 100, 12)).astype(np.float32)
    xs_tm = np.ascontiguousarray(np.swapaxes(xs, 0, 1))
    res["sequence_step_us"] = {
        "nvmstream": _median_us(lambda: eng.run(xs), reps, 100),
        "onnxruntime": _median_us(lambda: sess.run(None, {"x": xs_tm}), reps, 100)}
    # ---- 256 streams of LSTM 40 -> 128 stepped together
    big = lstm_onnx(workdir / "lstm40x128_state.onnx", 40, 128, 8, state_io=True)
    big_plain = lstm_onnx(workdir / "lstm40x128.onnx", 40, 128, 8, state_io=False)
    prog_b = nvm.convert(big_plain, calibration=rng.standard_normal((16, 50, 40)).astype(np.float32))
    eng_b = nvm.Engine(prog_b, nvm.Device(profile, seed=0))
    sess_b = _ort(big)
    streams = [eng_b.stream() for _ in range(256)]
    fb = rng.standard_normal((256, 40)).astype(np.float32)
    hb = [np.zeros((1, 256, 128), np.float32), np.zeros((1, 256, 128), np.float32)]

    def ort_batch():
        _, hb[0], hb[1] = sess_b.run(None, {"x": fb[None], "h0": hb[0], "c0": hb[1]})
    our = _median_us(lambda: eng_b.step_many(streams, fb), max(5, reps // 4))
    theirs = _median_us(ort_batch, max(5, reps // 4))
    res["batch256_step_us"] = {"nvmstream": our, "onnxruntime": theirs}
    res["batch256_stream_steps_per_s"] = {"nvmstream": 256e6 / our, "onnxruntime": 256e6 / theirs}
    # ratios and targets
    r1 = res["stream_step_us"]["nvmstream"] / res["stream_step_us"]["onnxruntime"]
    r2 = res["sequence_step_us"]["nvmstream"] / res["sequence_step_us"]["onnxruntime"]
    r3 = (res["batch256_stream_steps_per_s"]["nvmstream"]
          / res["batch256_stream_steps_per_s"]["onnxruntime"])
    res["ratios"] = {"stream_step": r1, "sequence_step": r2, "batch256_throughput": r3}
    res["targets"] = {"stream_step": "<= 0.25", "sequence_step": "<= 2.0",
                      "batch256_throughput": ">= 1.0"}
    res["met"] = {"stream_step": r1 <= 0.25, "sequence_step": r2 <= 2.0,
                  "batch256_throughput": r3 >= 1.0}
    return res


def format_engine(res: dict) -> str:
    lines = [f"engine vs onnxruntime (profile {res['profile']}, one thread each; medians)",
             f"{'measure':<44}{'nvmstream':>12}{'onnxruntime':>13}{'ratio':>8}{'target':>9}"]
    rows = [("LSTM 12->64+Linear, streamed step (us)", "stream_step_us", "stream_step"),
            ("LSTM 12->64+Linear, T=100 per step (us)", "sequence_step_us", "sequence_step"),
            ("LSTM 40->128, 256 streams, one step (us)", "batch256_step_us", None)]
    for label, key, rk in rows:
        a, b = res[key]["nvmstream"], res[key]["onnxruntime"]
        ratio = res["ratios"][rk] if rk else a / b
        tgt = res["targets"].get(rk, "") if rk else ""
        lines.append(f"{label:<44}{a:>12.2f}{b:>13.2f}{ratio:>8.2f}{tgt:>9}")
    a = res["batch256_stream_steps_per_s"]
    lines.append(f"{'  -> stream-steps per second':<44}{a['nvmstream']:>12.0f}"
                 f"{a['onnxruntime']:>13.0f}{res['ratios']['batch256_throughput']:>8.2f}"
                 f"{res['targets']['batch256_throughput']:>9}")
    return "\n".join(lines)


def run_bench(out_dir: str | os.PathLike, *, quick: bool = False, energy: bool = False,
              server: bool = True) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": {"python": platform.python_version(),
                                 "cpu_count": os.cpu_count(), "platform": platform.platform()}}
    with tempfile.TemporaryDirectory() as td:
        results["engine"] = bench_engine(Path(td), quick=quick)
    if server:
        try:
            from . import bench_server
        except ImportError:
            bench_server = None
        if bench_server is not None:
            results["server"] = bench_server.run_bench(out, quick=quick)
    if energy:
        from . import bench_energy
        results["energy"] = bench_energy.run(quick=quick)
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=float))
    return results
