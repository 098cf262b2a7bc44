"""The bench's accounting (runtime/bench.py): the work a step cannot avoid, and the bounds
printed from it. The timings themselves are never asserted."""

from __future__ import annotations

import numpy as np
import pytest

import nvmstream as nvm
from nvmstream.runtime import bench as B


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = B.lstm_onnx(tmp_path_factory.mktemp("bench") / "lstm.onnx", 12, 64, 8,
                       state_io=False)
    rng = np.random.default_rng(0)
    return nvm.convert(path, calibration=rng.standard_normal((4, 20, 12)).astype(np.float32))


def test_macs_per_step_counts_every_crossbar_product(small):
    signal = 12 * 4 * 64 + 64 * 4 * 64 + 64 * 8          # W, R (4 gates) and the Linear head
    pcm = B.macs_per_step(nvm.Engine(small, nvm.Device("pcm", seed=0)).plan)
    assert pcm == {"signal": signal, "extra": signal}     # read-noise variances: once more
    int4 = B.macs_per_step(nvm.Engine(small, nvm.Device("int4", seed=0)).plan)
    assert int4 == {"signal": signal, "extra": 0}          # no read noise, no IR drop


def _bench_figures(stream_bytes: int, sequence_bytes: int, call_us: float
                   ) -> tuple[dict, dict]:
    """Hand-made bench results (``res``) and CPU medians (``cpu``) for :func:`B._bounds`: a
    2 GMAC/s peak, 4 ns per normal, 1 GB/s reads, the given matrix bytes and call."""
    res = {"peak_gmac_per_s": 2.0, "normal_ns": 4.0, "read_gb_per_s": 1.0,
           "macs_per_step": {"lstm12x64": {"signal": 1000, "extra": 1000},
                             "lstm40x128": {"signal": 4000, "extra": 4000}},
           "matrix_bytes_per_step": {"lstm12x64": {"stream": stream_bytes,
                                                   "sequence": sequence_bytes}},
           "normals_per_step": {"lstm12x64": 100, "lstm40x128": 200}}
    cpu = {"stream/onnxruntime": 20.0, "stream/nvmstream": 10.0, "stream/call": call_us,
           "seq/onnxruntime": 3.0, "seq/nvmstream": 6.0,
           "batch/onnxruntime": 1000.0, "batch/nvmstream": 4000.0}
    return res, cpu


def test_bounds_compose_floor_and_float_rest():
    res, cpu = _bench_figures(500, 100, 0.6)
    b = B._bounds(res, cpu)
    s = b["stream_step"]      # 2000 MAC at 2000 MAC/us + 100 normals at 4 ns + the call
    assert s["products_us"] == pytest.approx(1.0) and s["normals_us"] == pytest.approx(0.4)
    assert s["bound_us"] == pytest.approx(2.0) and "float_rest_us" not in s
    assert s["goal_over_bound"] == pytest.approx(5.0 / 2.0)
    q = b["sequence_step"]    # + onnxruntime's 3 us less its 0.5 us of products
    assert q["float_rest_us"] == pytest.approx(2.5) and q["bound_us"] == pytest.approx(3.9)
    assert q["goal_us"] == pytest.approx(6.0) and q["ours_over_bound"] == pytest.approx(6 / 3.9)
    c = b["batch256_step"]    # 256 rows: 8000 us of products, 204.8 us of normals
    assert c["floor_us"] == pytest.approx(256 * 4 + 256 * 0.8)
    assert c["float_rest_us"] == pytest.approx(1000 - 512)
    assert c["goal_over_bound"] < 1                        # below the bound: out of reach
    lines = B.format_bounds({**res, "floor_us": b,
                             "stream_step_us_cpu": {"nvmstream": 10.0, "onnxruntime": 20.0},
                             "sequence_step_us_cpu": {"nvmstream": 6.0, "onnxruntime": 3.0},
                             "batch256_step_us_cpu": {"nvmstream": 4000.0,
                                                      "onnxruntime": 1000.0,
                                                      "products": 900.0, "normals": 200.0}})
    assert any("T=100 per step" in ln and "= 3.90;" in ln for ln in lines)
    assert any(ln.startswith("  256 streams 4000 = BLAS products 900 + 51200 normals 200 + ")
               and "glue 2900 (11.3 per stream); floor 1100" in ln for ln in lines)


def test_matrix_bytes_per_step_counts_what_a_lone_step_reads(small):
    """A streamed step reads every segment's matrices; a whole sequence's step only the
    recurrent ones (its input-side products run once over all steps)."""
    w, r, head = 12 * 4 * 64, 64 * 4 * 64, 64 * 8
    plan = nvm.Engine(small, nvm.Device("pcm", seed=0)).plan
    assert not any(int(s["w64"]) or int(s["var64"]) for s in plan.segs)   # all float32
    assert B.matrix_bytes_per_step(plan) == (w + r + head) * 4 * 2          # + variances
    assert B.matrix_bytes_per_step(plan, recurrent_only=True) == r * 4 * 2
    int4 = nvm.Engine(small, nvm.Device("int4", seed=0)).plan
    assert B.matrix_bytes_per_step(int4) == (w + r + head) * 4              # no read noise


def test_lone_stream_bounds_take_the_slower_of_reads_and_macs_and_add_the_call():
    res, cpu = _bench_figures(3000, 500, 0.5)
    b = B._bounds(res, cpu)
    s = b["stream_step"]      # 3000 bytes at 1000 bytes/us (3 us) beat 2000 MAC (1 us)
    assert s["products_read_us"] == pytest.approx(3.0) and s["products_us"] == pytest.approx(3.0)
    assert s["call_us"] == 0.5 and s["bound_us"] == pytest.approx(3.0 + 0.4 + 0.5)
    q = b["sequence_step"]    # 500 bytes: 0.5 us, below the MACs' 1 us
    assert q["products_us"] == pytest.approx(1.0) and "call_us" not in q
    c = b["batch256_step"]    # many streams share each read: MACs only
    assert c["products_read_us"] == 0.0 and c["products_us"] == pytest.approx(256.0 * 4)


def test_stream_profile_names_every_stage_and_leaves_other_streams_alone(small):
    """``make bench``'s profile of a streamed step: one entry per layer and per crossbar
    segment of the plan, with the normals each draws; its parts compose the step; profiling
    one stream leaves another stream of the same engine bit-identical to one that never shared
    an engine with a profiled stream."""
    from nvmstream.runtime import bench_profile as BP
    rng = np.random.default_rng(3)
    frames = rng.standard_normal((7, 12)).astype(np.float32)
    eng = nvm.Engine(small, nvm.Device("pcm", seed=0))
    prof_s, other = eng.stream(seed=5), eng.stream(seed=9)
    p = BP.profile_stream_step(prof_s, frames, rounds=1)
    assert [L["op"] for L in p["layers"]] == ["LSTM", "Dense"]
    segs = [s for L in p["layers"] for s in L["segments"]]
    assert [(s["role"], s["n_in"], s["n_out"]) for s in segs] == [
        ("x", 12, 256), ("h", 64, 256), ("x", 64, 8)]
    assert [s["normals"] for s in segs] == [256, 256, 8]      # read noise: one per output
    assert sum(s["normals"] for s in segs) == B.normals_per_step(eng.plan)
    assert "cell_us" in p["layers"][0] and "cell_us" not in p["layers"][1]
    assert p["step_us"] == pytest.approx(p["python_us"] + p["kernel_us"])
    assert p["kernel_us"] == pytest.approx(p["kernel_rest_us"]
                                           + sum(L["us"] for L in p["layers"]))
    lines = BP.format_profile(p)
    assert any(ln.startswith("  layer 0 LSTM") and "h 64->256 (1 tile)" in ln
               and "its 256 normals" in ln for ln in lines)
    alone = nvm.Engine(small, nvm.Device("pcm", seed=0)).stream(seed=9)
    for x in frames:
        assert np.array_equal(other.step(x), alone.step(x))


def test_stream_profile_of_a_gru_with_a_reset_gated_matrix(tmp_path):
    """A GRU with linear_before_reset=0 (I=5, H=170): its three matrices (x, h, and r*h on
    their own tiles) each get their stages, and the cell its own time."""
    import onnx
    from nvmstream.runtime import bench_profile as BP
    from test_handbuilt_graphs import build
    onnx.save(build(kind="GRU", I=5, H=170, linear_before_reset=0), tmp_path / "g.onnx")
    rng = np.random.default_rng(0)
    prog = nvm.convert(tmp_path / "g.onnx", calibration=rng.normal(size=(2, 3, 5)))
    eng = nvm.Engine(prog, nvm.Device("pcm", seed=0))
    p = BP.profile_stream_step(eng.stream(), rng.normal(size=(3, 5)).astype(np.float32),
                               rounds=1)
    (gru,) = [L for L in p["layers"] if L["op"] == "GRU"]
    assert [s["role"] for s in gru["segments"]] == ["x", "h", "rh"] and "cell_us" in gru
    segs = [s for L in p["layers"] for s in L["segments"]]
    assert sum(s["normals"] for s in segs) == B.normals_per_step(eng.plan)
