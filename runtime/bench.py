"""`nvmstream bench` / `make bench`: engine speed side by side with onnxruntime float (and
torch.nn.LSTM float when torch is importable; and, when the server module is present, ZeroMQ
round trips). Prints tables and writes JSON; never asserts.

Yardsticks (issue 9), profile pcm, one thread everywhere (onnxruntime intra-op 1, torch 1,
BLAS 1 for the duration of the bench):

* LSTM 12->64 + Linear, batch 1: streamed step latency (T=1 calls carrying state; goal <=
  0.25x onnxruntime) and whole sequence T=100 per step (goal <= 2x);
* LSTM 40->128, 256 streams stepped together (goal: throughput >= 1x onnxruntime batch 256);
* a sweep point: japanese_vowels test split (370 sequences), its QAT model, pcm, 15 votes,
  sequences per second (onnxruntime: the float model on the same sequences, 15 times).

The streamed step is also profiled stage by stage (:mod:`.bench_profile`).

Measurements are interleaved: every round takes one sample of every (measure, runtime) in
turn, so machine load drifts hit all of them alike; the table shows medians over rounds.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
from numba import njit

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


@contextmanager
def blas_threads(n: int):
    """Limit the OpenBLAS that numpy loaded to ``n`` threads while the block runs (ctypes on
    numpy's bundled library; a no-op with a log line when it cannot be found)."""
    import ctypes
    import glob
    libs = []
    base = Path(np.__file__).parent
    for pat in (base.parent / "numpy.libs" / "*openblas*", base / ".dylibs" / "*openblas*"):
        libs.extend(glob.glob(str(pat)))
    setter = getter = None
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pre in ("scipy_openblas", "openblas"):
            for suf in ("64_", "_64_", ""):
                if hasattr(lib, f"{pre}_set_num_threads{suf}"):
                    setter = getattr(lib, f"{pre}_set_num_threads{suf}")
                    getter = getattr(lib, f"{pre}_get_num_threads{suf}", None)
                    break
            if setter:
                break
        if setter:
            break
    if setter is None:
        log.info("BLAS thread count not adjustable here; set OPENBLAS_NUM_THREADS=%d", n)
        yield None
        return
    before = getter() if getter else None
    setter(ctypes.c_int(n))
    try:
        yield n
    finally:
        if before:
            setter(ctypes.c_int(before))


RUNTIMES = ("nvmstream", "onnxruntime", "torch")


SETTLE_CALLS = 1


def _interleaved(cases: dict[str, Callable[[], object]], rounds: int, inner: dict[str, int],
                 warmup: int = 2, cpu: dict | None = None,
                 settle: int = SETTLE_CALLS) -> dict[str, float]:
    """Median wall-clock microseconds per inner unit of every case, sampled round-robin;
    ``cpu`` (if given) receives the medians of this process's CPU time (robust to other
    load on the machine, when every runtime runs one thread). Each timed sample follows
    ``settle`` untimed calls of the same case, so every runtime is timed with its own code
    and data in cache: without them a sample paid for the caches the previous cases
    evicted (the 256-stream step and the sweep touch many MB), e.g. an nvmstream T=1 run
    took ~520 us instead of ~157 us CPU after a 32 MB sweep of memory, ~3.6 us per step of
    a T=100 run."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    ts: dict[str, list[float]] = {k: [] for k in cases}
    cs: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for k, fn in cases.items():
            for _ in range(settle):
                fn()
            c0 = time.process_time()
            t0 = time.perf_counter()
            fn()
            ts[k].append((time.perf_counter() - t0) / inner.get(k, 1))
            cs[k].append((time.process_time() - c0) / inner.get(k, 1))
    if cpu is not None:
        cpu.update({k: 1e6 * float(np.median(v)) for k, v in cs.items()})
    return {k: 1e6 * float(np.median(v)) for k, v in ts.items()}


def segment_normals(seg) -> int:
    """Standard normals one stream-step of segment ``seg`` draws (the order in
    runtime/kernels/rng.py): per row tile ``n_out`` for read noise and ``n_out`` for ADC
    noise, then ``n_out`` for VMM noise."""
    t = int(seg["nblk"]) * int(seg["n_out"])
    return (t * (int(seg["var"]) >= 0) + t * (float(seg["adc_noise"]) > 0)
            + int(seg["n_out"]) * (float(seg["vmm_sigma"]) > 0))


def normals_per_step(plan) -> int:
    """Standard normals one stream-step draws (:func:`segment_normals` of every segment)."""
    return sum(segment_normals(s) for s in plan.segs)


def _matrix_widths(seg) -> list[int]:
    """Bytes per element of each matrix segment ``seg`` stores: its weights, then its
    read-noise variances and IR-drop conductances where the profile has them."""
    return [8 if int(seg[wide]) else 4
            for off, wide in (("w", "w64"), ("var", "var64"), ("cur", "cur64"))
            if off == "w" or int(seg[off]) >= 0]


def macs_per_step(plan) -> dict[str, int]:
    """Crossbar multiply-accumulates of one stream-step: ``signal`` (n_in x n_out per segment,
    what a float runtime also does) and ``extra`` (once more for the read-noise variances on
    squared DAC codes, once more for IR-drop currents, where the profile has them)."""
    sig = extra = 0
    for s in plan.segs:
        m = int(s["n_in"]) * int(s["n_out"])
        sig += m
        extra += m * (len(_matrix_widths(s)) - 1)
    return {"signal": sig, "extra": extra}


def matrix_bytes_per_step(plan, recurrent_only: bool = False) -> int:
    """Bytes of crossbar matrices (:func:`_matrix_widths`: as the plan stores them) one
    stream-step reads when it runs alone: every segment for a streamed step; with
    ``recurrent_only`` the segments of the recurrent state (a whole sequence's input-side
    products are one product over all its steps, so their weights are read once per
    sequence, not per step)."""
    from .kernels.layout import SRC_H, SRC_RH
    return sum(int(s["n_in"]) * int(s["n_out"]) * sum(_matrix_widths(s)) for s in plan.segs
               if not recurrent_only or int(s["src"]) in (SRC_H, SRC_RH))


@njit(cache=True, fastmath=True)
def _read_all(a, reps):
    """Sum ``a`` ``reps`` times (reassociation allowed, so the loop runs at the read bandwidth
    of wherever ``a`` lives)."""
    s = np.float32(0.0)
    for _ in range(reps):
        for i in range(a.shape[0]):
            s += a[i]
    return s


READ_REPS = 64


def _read_case(nbytes: int) -> Callable[[], object]:
    """Read a buffer of ``nbytes`` (a step's matrices: larger than L1 here, L2-resident)
    :data:`READ_REPS` times: the read bandwidth no batch-1 product route exceeds."""
    a = np.ones(max(1, nbytes // 4), np.float32)
    _read_all(a, 1)
    return lambda: _read_all(a, READ_REPS)


@njit(cache=True)
def _noop(a, x, out):
    return 0


def _call_case(stream, frames: np.ndarray) -> Callable[[], object]:
    """100 calls from Python of a compiled no-op taking the streamed step's three arguments
    (the stream's packed arguments, a frame typed as the step's, a new output vector): what a
    Python-level step on numba pays besides its work (the call, unboxing, the allocation)."""
    from .kernels import ANY_STRIDE_F32, compiled
    fn = compiled(_noop, (stream._args, ANY_STRIDE_F32, np.empty(1, np.float32)))
    a, n = stream._args, stream._nout

    def calls():
        for i in range(100):
            fn(a, frames[i], np.empty(n, np.float32))
    return calls


PEAK_SHAPE = (256, 512, 512)     # the sgemm that measures this CPU's peak (rows, k, n)


def _peak_case() -> Callable[[], object]:
    """One float32 sgemm of :data:`PEAK_SHAPE` (one thread, as everything in the bench): the
    multiply-accumulate rate no product route on this CPU exceeds."""
    m, k, n = PEAK_SHAPE
    rng = np.random.default_rng(2)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = np.empty((m, n), np.float32)
    return lambda: np.matmul(a, b, out=c)


def _floor_cases(eng, n_rows: int, normals_per_row: int) -> dict[str, Callable[[], object]]:
    """The work a batched step of ``n_rows`` streams cannot avoid with per-read noise: its
    BLAS tile products (DAC + sgemm for every segment, read-noise variances included) and its
    normal draws, each timed on its own."""
    from .kernels import BlasSegment, fill_normals, seed_states
    plan = eng.plan
    blas = [BlasSegment(s, plan.w32, plan.w64) for s in plan.segs if int(s["dac_q"]) > 0]
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n_rows, plan.max_w + 1))
    rows = np.arange(n_rows, dtype=np.int64)
    from .kernels.layout import pre_width
    blas = [b for b in blas if b.f32]
    outs = [np.empty((n_rows, int(s["pre"]) + pre_width(s)), np.float32)
            for s in plan.segs if int(s["dac_q"]) > 0 and BlasSegment(s, plan.w32, plan.w64).f32]
    U = [np.empty((2, n_rows, b.n_in), np.float32) for b in blas]
    st = np.empty((1, 4), np.uint64)
    seed_states(np.array([7], np.uint64), st)
    z = np.empty(max(1, n_rows * normals_per_row))

    def products():
        for b, o, u in zip(blas, outs, U):
            b.run_rows(X, rows, 0, o, u[0], u[1])
    return {"products": products, "normals": lambda: fill_normals(st[0], z, z.size)}


def _torch():
    try:
        import torch
    except Exception:   # torch is optional: only the `train` extra installs it
        return None
    torch.set_num_threads(1)
    return torch


def _jv_paths() -> tuple[Path, Path] | None:
    root = Path(__file__).resolve().parent.parent
    m, d = root / "demos/models/japanese_vowels_qat4.onnx", root / "demos/data/japanese_vowels.npz"
    f = root / "demos/models/japanese_vowels_float.onnx"
    return (m, f, d) if m.exists() and d.exists() and f.exists() else None


def bench_engine(workdir: Path, profile: str = "pcm", quick: bool = False) -> dict:
    import nvmstream as nvm

    rounds = 15 if quick else 41
    res: dict = {"profile": profile, "rounds": rounds, "settle_calls": SETTLE_CALLS,
                 "load_avg_start": os.getloadavg()}
    rng = np.random.default_rng(0)
    torch = _torch()
    res["torch"] = torch.__version__ if torch else None
    # ---- LSTM 12 -> 64 + Linear, batch 1
    small = lstm_onnx(workdir / "lstm12x64.onnx", 12, 64, 8, state_io=False)
    small_s = lstm_onnx(workdir / "lstm12x64_state.onnx", 12, 64, 8, state_io=True)
    prog = nvm.convert(small, calibration=rng.standard_normal((16, 50, 12)).astype(np.float32))
    eng = nvm.Engine(prog, nvm.Device(profile, seed=0))
    sess, sess_s = _ort(small), _ort(small_s)
    frames = rng.standard_normal((100, 12)).astype(np.float32)
    st = eng.stream()
    state = [np.zeros((1, 1, 64), np.float32), np.zeros((1, 1, 64), np.float32)]

    def our_step():
        for i in range(100):
            st.step(frames[i])

    def ort_step():
        for i in range(100):
            _, state[0], state[1] = sess_s.run(None, {"x": frames[i][None, None],
                                                      "h0": state[0], "c0": state[1]})
    xs = frames[None]
    xs_tm = np.ascontiguousarray(np.swapaxes(xs, 0, 1))
    cases = {"stream/nvmstream": our_step, "stream/onnxruntime": ort_step,
             "seq/nvmstream": lambda: eng.run(xs),
             "seq/onnxruntime": lambda: sess.run(None, {"x": xs_tm})}
    inner = {"stream/nvmstream": 100, "stream/onnxruntime": 100, "seq/nvmstream": 100,
             "seq/onnxruntime": 100}
    # what bounds the figures: the same model with the 1/f read noise frozen into the
    # weights (no per-read draws), and the normals one step draws
    frozen = ["read.split=frozen"]
    eng_f = nvm.Engine(prog, nvm.Device(profile, seed=0, overrides=frozen))
    st_f = eng_f.stream()
    n_small = normals_per_step(eng.plan)
    res["normals_per_step"] = {"lstm12x64": n_small}
    if eng.plan.per_read_noise and not eng_f.plan.per_read_noise:
        def frozen_step():
            for i in range(100):
                st_f.step(frames[i])
        cases.update({"stream/frozen": frozen_step, "seq/frozen": lambda: eng_f.run(xs)})
        inner.update({"stream/frozen": 100, "seq/frozen": 100})
    one_normals = _floor_cases(eng, 1, n_small)["normals"]
    res["macs_per_step"] = {"lstm12x64": macs_per_step(eng.plan)}
    cases["peak/sgemm"] = _peak_case()
    # batch 1 reads every matrix of a step once (more than L1 holds): the read bandwidth of
    # a buffer that size bounds its products too; and the Python call of a compiled step
    nb = {"stream": matrix_bytes_per_step(eng.plan),
          "sequence": matrix_bytes_per_step(eng.plan, recurrent_only=True)}
    res["matrix_bytes_per_step"] = {"lstm12x64": nb}
    cases["peak/read"] = _read_case(nb["stream"])
    cases["stream/call"] = _call_case(st, frames)
    inner["stream/call"] = 100

    def normals_100():                 # one step's normals, 100 times (as the steps above)
        for _ in range(100):
            one_normals()
    cases["stream/normals"] = normals_100
    inner["stream/normals"] = 100
    if torch is not None:
        lstm = torch.nn.LSTM(12, 64)
        head = torch.nn.Linear(64, 8)
        tx = torch.from_numpy(frames)[:, None, :]
        tstate = [None]

        def torch_step():
            with torch.no_grad():
                for i in range(100):
                    y, tstate[0] = lstm(tx[i:i + 1], tstate[0])
                    head(y)

        def torch_seq():
            with torch.no_grad():
                head(lstm(tx)[0])
        cases.update({"stream/torch": torch_step, "seq/torch": torch_seq})
        inner.update({"stream/torch": 100, "seq/torch": 100})
    # ---- 256 streams of LSTM 40 -> 128 stepped together
    big = lstm_onnx(workdir / "lstm40x128_state.onnx", 40, 128, 8, state_io=True)
    big_plain = lstm_onnx(workdir / "lstm40x128.onnx", 40, 128, 8, state_io=False)
    prog_b = nvm.convert(big_plain,
                         calibration=rng.standard_normal((16, 50, 40)).astype(np.float32))
    eng_b = nvm.Engine(prog_b, nvm.Device(profile, seed=0))
    sess_b = _ort(big)
    streams = [eng_b.stream() for _ in range(256)]
    fb = rng.standard_normal((256, 40)).astype(np.float32)
    hb = [np.zeros((1, 256, 128), np.float32), np.zeros((1, 256, 128), np.float32)]

    def ort_batch():
        _, hb[0], hb[1] = sess_b.run(None, {"x": fb[None], "h0": hb[0], "c0": hb[1]})
    cases.update({"batch/nvmstream": lambda: eng_b.step_many(streams, fb),
                  "batch/onnxruntime": ort_batch})
    eng_bf = nvm.Engine(prog_b, nvm.Device(profile, seed=0, overrides=frozen))
    if eng_b.plan.per_read_noise and not eng_bf.plan.per_read_noise:
        streams_f = [eng_bf.stream() for _ in range(256)]
        cases["batch/frozen"] = lambda: eng_bf.step_many(streams_f, fb)
    n_big = normals_per_step(eng_b.plan)
    res["normals_per_step"]["lstm40x128"] = n_big
    res["macs_per_step"]["lstm40x128"] = macs_per_step(eng_b.plan)
    for k, fn in _floor_cases(eng_b, 256, n_big).items():
        cases[f"batch/{k}"] = fn
    if torch is not None:
        lstm_b, head_b = torch.nn.LSTM(40, 128), torch.nn.Linear(128, 8)
        tb = torch.from_numpy(fb)[None]
        tbs = [None]

        def torch_batch():
            with torch.no_grad():
                y, tbs[0] = lstm_b(tb, tbs[0])
                head_b(y)
        cases["batch/torch"] = torch_batch
    cpu: dict[str, float] = {}
    with blas_threads(1):
        med = _interleaved(cases, rounds, inner, cpu=cpu)
        res["sweep"] = _bench_sweep(profile, quick)
        # where the streamed step's time goes: its stages on a stream of their own
        from .bench_profile import profile_stream_step
        eng_p = nvm.Engine(prog, nvm.Device(profile, seed=0))
        res["stream_profile"] = profile_stream_step(eng_p.stream(), frames, rounds)
    for key, name in (("stream", "stream_step_us"), ("seq", "sequence_step_us"),
                      ("batch", "batch256_step_us")):
        res[name] = {k.split("/")[1]: v for k, v in med.items() if k.startswith(key + "/")}
        res[name + "_cpu"] = {k.split("/")[1]: v for k, v in cpu.items()
                              if k.startswith(key + "/")}
    res["normal_ns"] = 1e3 * cpu["batch/normals"] / max(1, 256 * n_big)
    res["peak_gmac_per_s"] = (PEAK_SHAPE[0] * PEAK_SHAPE[1] * PEAK_SHAPE[2]
                              / (1e3 * cpu["peak/sgemm"]))
    res["read_gb_per_s"] = (READ_REPS * res["matrix_bytes_per_step"]["lstm12x64"]["stream"]
                            / (1e3 * cpu["peak/read"]))
    res["floor_us"] = _bounds(res, cpu)
    res["batch256_stream_steps_per_s"] = {k: 256e6 / v for k, v in res["batch256_step_us"].items()
                                          if k in RUNTIMES}
    res["cpu_us"] = cpu
    res["cpu_ratios"] = {
        "stream_step": cpu["stream/nvmstream"] / cpu["stream/onnxruntime"],
        "sequence_step": cpu["seq/nvmstream"] / cpu["seq/onnxruntime"],
        "batch256_throughput": cpu["batch/onnxruntime"] / cpu["batch/nvmstream"]}
    r1 = res["stream_step_us"]["nvmstream"] / res["stream_step_us"]["onnxruntime"]
    r2 = res["sequence_step_us"]["nvmstream"] / res["sequence_step_us"]["onnxruntime"]
    r3 = (res["batch256_stream_steps_per_s"]["nvmstream"]
          / res["batch256_stream_steps_per_s"]["onnxruntime"])
    res["ratios"] = {"stream_step": r1, "sequence_step": r2, "batch256_throughput": r3}
    res["targets"] = {"stream_step": "<= 0.25", "sequence_step": "<= 2.0",
                      "batch256_throughput": ">= 1.0"}
    res["met"] = {"stream_step": r1 <= 0.25, "sequence_step": r2 <= 2.0,
                  "batch256_throughput": r3 >= 1.0}
    res["load_avg_end"] = os.getloadavg()
    if res["sweep"]:
        sw = res["sweep"]["sequences_per_s"]
        res["ratios"]["sweep_throughput"] = sw["nvmstream"] / sw["onnxruntime"]
    return res


def _bench_sweep(profile: str, quick: bool) -> dict | None:
    """One sweep point: japanese_vowels test split, QAT model, ``profile``, 15 votes."""
    import nvmstream as nvm
    paths = _jv_paths()
    if paths is None:
        return None
    model, float_model, data = paths
    d = np.load(data)
    x = d["x_test"].astype(np.float32)
    prog = nvm.convert(model, calibration=d["x_train"][:64].astype(np.float32))
    eng = nvm.Engine(prog, nvm.Device(profile, seed=0), votes=15)
    sess = _ort(float_model)
    name = sess.get_inputs()[0].name
    shape = sess.get_inputs()[0].shape
    xo = x if (len(shape) == 3 and shape[0] != "T" and not str(shape[0]).lower().startswith("t")
               ) else np.ascontiguousarray(np.swapaxes(x, 0, 1))

    def ort15():
        for _ in range(15):
            sess.run(None, {name: xo})
    rounds = 2 if quick else 3
    cpu: dict[str, float] = {}
    med = _interleaved({"nvmstream": lambda: eng.predict(x), "onnxruntime": ort15}, rounds, {},
                       warmup=1, cpu=cpu, settle=0)     # seconds per sample: caches do not matter
    n = x.shape[0]
    return {"model": model.name, "sequences": n, "steps": int(x.shape[1]), "votes": 15,
            "seconds": {k: v * 1e-6 for k, v in med.items()},
            "sequences_per_s": {k: n / (v * 1e-6) for k, v in med.items()},
            "cpu_sequences_per_s": {k: n / (v * 1e-6) for k, v in cpu.items()}}


def _floor_us(res: dict, model: str, rows: int, read: str | None = None) -> dict[str, float]:
    """The least CPU time ``rows`` stream-steps of ``model`` can take with exact per-read noise
    on this CPU: every multiply-accumulate (signal, variances) at the sgemm peak -- or, for a
    lone stream (``read``: ``"stream"`` or ``"sequence"``), reading the step's matrices once
    at the read bandwidth of a buffer that size, if slower -- plus every normal at the
    sampler's bulk in-kernel rate; ``signal_us`` is what a float runtime's products alone need
    at that peak. Periphery, activations and call overheads count as 0."""
    m, n = res["macs_per_step"][model], res["normals_per_step"][model]
    gm = res["peak_gmac_per_s"] * 1e3                 # MAC per us
    macs = rows * (m["signal"] + m["extra"]) / gm
    bytes_us = 0.0
    if read is not None:
        bytes_us = res["matrix_bytes_per_step"][model][read] / (res["read_gb_per_s"] * 1e3)
    prod = max(macs, bytes_us)
    norm = rows * n * res["normal_ns"] * 1e-3
    return {"products_us": prod, "products_mac_us": macs, "products_read_us": bytes_us,
            "normals_us": norm, "floor_us": prod + norm, "signal_us": rows * m["signal"] / gm}


def _bounds(res: dict, cpu: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per figure (process CPU us): :func:`_floor_us`, and ``bound_us``, the floor plus -- for
    the whole sequence and the 256 streams -- what onnxruntime itself spends besides its
    products (``float_rest_us``: its activations, state updates and step overhead, which
    nvmstream does too); for the streamed step (an onnxruntime call there is mostly call
    overhead) the floor plus ``call_us``, a compiled no-op called from Python with the step's
    arguments. With the goal and nvmstream as multiples."""
    out = {}
    for key, model, rows, tag, goal_x, read in (
            ("stream_step", "lstm12x64", 1, "stream", 0.25, "stream"),
            ("sequence_step", "lstm12x64", 1, "seq", 2.0, "sequence"),
            ("batch256_step", "lstm40x128", 256, "batch", 1.0, None)):
        f = _floor_us(res, model, rows, read)
        ort = cpu[f"{tag}/onnxruntime"]
        f["bound_us"] = f["floor_us"]
        if tag != "stream":
            f["float_rest_us"] = max(0.0, ort - f["signal_us"])
            f["bound_us"] += f["float_rest_us"]
        else:
            f["call_us"] = cpu["stream/call"]
            f["bound_us"] += f["call_us"]
        f["goal_us"] = goal_x * ort
        f["goal_over_bound"] = f["goal_us"] / f["bound_us"]
        f["ours_over_bound"] = cpu[f"{tag}/nvmstream"] / f["bound_us"]
        out[key] = f
    return out


def format_engine(res: dict) -> str:
    have_torch = "torch" in res["stream_step_us"]
    lines = [f"engine vs onnxruntime float{' and torch' if have_torch else ''} "
             f"(profile {res['profile']}, one thread each; medians of {res['rounds']} "
             f"interleaved rounds; load average {res['load_avg_start'][0]:.1f} at start, "
             f"{res['load_avg_end'][0]:.1f} at end on {os.cpu_count()} cores)",
             f"{'measure':<44}{'nvmstream':>11}{'onnxruntime':>12}"
             + (f"{'torch':>9}" if have_torch else "") + f"{'ratio':>8}{'goal':>9}"]
    rows = [("LSTM 12->64+Linear, streamed step (us)", "stream_step_us", "stream_step"),
            ("LSTM 12->64+Linear, T=100 per step (us)", "sequence_step_us", "sequence_step"),
            ("LSTM 40->128, 256 streams, one step (us)", "batch256_step_us", None)]
    for label, key, rk in rows:
        a, b = res[key]["nvmstream"], res[key]["onnxruntime"]
        ratio = res["ratios"][rk] if rk else a / b
        tgt = res["targets"].get(rk, "") if rk else ""
        tt = f"{res[key]['torch']:>9.2f}" if have_torch else ""
        lines.append(f"{label:<44}{a:>11.2f}{b:>12.2f}{tt}{ratio:>8.2f}{tgt:>9}")
    a = res["batch256_stream_steps_per_s"]
    tt = f"{a['torch']:>9.0f}" if have_torch else ""
    lines.append(f"{'  -> stream-steps per second':<44}{a['nvmstream']:>11.0f}"
                 f"{a['onnxruntime']:>12.0f}{tt}{res['ratios']['batch256_throughput']:>8.2f}"
                 f"{res['targets']['batch256_throughput']:>9}")
    sw = res.get("sweep")
    if sw:
        q = sw["sequences_per_s"]
        lines.append(f"{'sweep point: JV test, 15 votes (seq/s)':<44}{q['nvmstream']:>11.1f}"
                     f"{q['onnxruntime']:>12.1f}" + (" " * 9 if have_torch else "")
                     + f"{res['ratios']['sweep_throughput']:>8.2f}")
    c = res["cpu_ratios"]
    swr = ""
    if sw:
        q = sw["cpu_sequences_per_s"]
        swr = f", sweep throughput {q['nvmstream'] / q['onnxruntime']:.2f}"
    lines.append(f"ratios on process CPU time (robust to machine load): streamed step "
                 f"{c['stream_step']:.2f}, T=100 per step {c['sequence_step']:.2f}, "
                 f"256-stream throughput {c['batch256_throughput']:.2f}{swr}")
    from .bench_profile import format_profile
    lines += format_bounds(res) + format_profile(res["stream_profile"])
    return "\n".join(lines)


def _us(x: float) -> str:
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def format_bounds(res: dict) -> list[str]:
    """What bounds each figure (process CPU us): the same model with the read noise frozen into
    the weights (no per-read draws), the normals a step draws, for the batched step the BLAS
    products alone, and the lower bounds of :func:`_bounds` with the goal and nvmstream as
    multiples of them (a goal below 1x its bound is out of reach with exact per-read noise)."""
    s, q, b = res["stream_step_us_cpu"], res["sequence_step_us_cpu"], res["batch256_step_us_cpu"]
    n = res["normals_per_step"]
    out = [f"what bounds them (CPU us; {res['normal_ns']:.2f} ns per normal):"]
    if "frozen" in s:
        out.append(f"  streamed step {s['nvmstream']:.1f} = {s['frozen']:.1f} without per-read "
                   f"draws + {s['nvmstream'] - s['frozen']:.1f} per-read noise "
                   f"({n['lstm12x64']} normals: {s['normals']:.1f}); goal "
                   f"{0.25 * s['onnxruntime']:.1f}")
        out.append(f"  T=100 per step {q['nvmstream']:.1f} = {q['frozen']:.1f} without per-read "
                   f"draws + {q['nvmstream'] - q['frozen']:.1f} per-read noise "
                   f"({n['lstm12x64']} normals: {s['normals']:.1f}); goal "
                   f"{2 * q['onnxruntime']:.1f}")
    rd = (f"; a lone stream's matrices read once at {res['read_gb_per_s']:.0f} GB/s, the "
          f"read bandwidth of a buffer of the streamed step's "
          f"{res['matrix_bytes_per_step']['lstm12x64']['stream'] / 1024:.0f} KiB, if slower")
    out.append(f"  lower bounds with exact per-read noise (every MAC at the sgemm peak, "
               f"{res['peak_gmac_per_s']:.1f} GMAC/s{rd}; every normal at "
               f"{res['normal_ns']:.2f} ns):")
    for label, key in (("streamed step", "stream_step"), ("T=100 per step", "sequence_step"),
                       ("256 streams", "batch256_step")):
        f = res["floor_us"][key]
        how = ""
        if f.get("products_read_us", 0.0) > 0.0:
            how = (f" (read {_us(f['products_read_us'])}, "
                   f"MACs {_us(f['products_mac_us'])})")
        txt = (f"    {label}: products {_us(f['products_us'])}{how} + normals "
               f"{_us(f['normals_us'])}")
        if "float_rest_us" in f:
            txt += (f" + onnxruntime's own work besides its products {_us(f['float_rest_us'])}"
                    f" = {_us(f['bound_us'])}")
        else:
            txt += (f" + the Python call of a compiled no-op with the step's arguments "
                    f"{_us(f['call_us'])} = {_us(f['bound_us'])} (periphery, activations free)")
        out.append(txt + f"; goal {_us(f['goal_us'])} = {f['goal_over_bound']:.2f}x it, "
                   f"nvmstream {f['ours_over_bound']:.2f}x it")
    floor = b["products"] + b["normals"]
    line = (f"  256 streams {b['nvmstream']:.0f} = BLAS products {b['products']:.0f} + "
            f"{256 * n['lstm40x128']} normals {b['normals']:.0f} + periphery, cells, DAC and "
            f"glue {b['nvmstream'] - floor:.0f} ({(b['nvmstream'] - floor) / 256:.1f} per "
            f"stream); floor {floor:.0f} (best throughput ratio {b['onnxruntime'] / floor:.2f})")
    if "frozen" in b:
        line += f"; without per-read draws {b['frozen']:.0f}"
    out.append(line)
    return out
