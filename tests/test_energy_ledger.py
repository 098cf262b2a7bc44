"""Issue 4: the engine's operation ledger against hand-derived counts, linearity, the worked
example of docs/energy.md recomputed from a real engine run, and the surfaces."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nvmstream as nvm
from nvmstream.devices import energy as E
from onnx_util import FIXTURES, REPO, late_join_frame_energy_sums


def rec_model(path, kind="LSTM", I=3, H=5, direction="forward", head=None, lbr=1, seed=0):
    rng = np.random.default_rng(seed)
    g = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    d = 2 if direction == "bidirectional" else 1
    inits = [numpy_helper.from_array(rng.normal(0, .5, (d, g * H, I)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(0, .5, (d, g * H, H)).astype(np.float32), "R")]
    attrs = {"linear_before_reset": lbr} if kind == "GRU" else {}
    nodes = [helper.make_node(kind, ["X", "W", "R"], ["Y"], name="rec", hidden_size=H,
                              direction=direction, **attrs)]
    out = "Y"
    oshape = ["T", d, "N", H]
    if head:
        inits += [numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shp"),
                  numpy_helper.from_array(rng.normal(0, .5, (d * H, head)).astype(np.float32),
                                          "Wd")]
        nodes += [helper.make_node("Transpose", ["Y"], ["Yt"], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", ["Yt", "shp"], ["Yf"]),
                  helper.make_node("MatMul", ["Yf", "Wd"], ["Z"], name="head")]
        out, oshape = "Z", ["T", "N", head]
    gr = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                      ["T", "N", I])],
                           [helper.make_tensor_value_info(out, TensorProto.FLOAT, oshape)],
                           initializer=inits)
    m = helper.make_model(gr, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def engine(path, profile="int4", overrides=("tile.rows=4", "tile.cols=4"), votes=1, I=3):
    cal = np.random.default_rng(1).normal(size=(4, 10, I)).astype(np.float32)
    return nvm.Engine(nvm.convert(path, calibration=cal),
                      nvm.Device(profile, overrides=list(overrides)), votes=votes)


def doc_example() -> dict:
    text = (REPO / "docs" / "energy.md").read_text()
    block = text.split("<!-- worked-example-inputs -->", 1)[1]
    return json.loads(re.search(r"```json\n(.*?)```", block, re.S).group(1))


def test_worked_example_of_docs_energy_md_from_a_real_engine_run(tmp_path):
    ex = doc_example()
    eng = engine(rec_model(tmp_path / "l.onnx"), ex["profile"], ex["overrides"])
    eng.stream().step(np.array([0.3, -0.2, 0.5], np.float32))
    counts = eng.ledger.counts()
    (name, got), = counts.items()
    assert got.to_dict() == ex["counts"]["lstm"]
    geo = eng.ledger.geometry[name]
    want_geo = ex["geometry"]["lstm"]
    assert sorted(geo.tiles) == sorted(tuple(t) for t in want_geo["tiles"])
    assert (geo.dac_bits, geo.adc_bits, geo.sequential_vmms, geo.digital_ops_critical) == (
        want_geo["dac_bits"], want_geo["adc_bits"], want_geo["sequential_vmms"],
        want_geo["digital_ops_critical"])
    # and the engine's report prices it as the doc does (the doc's geometry has no measured
    # mean conductance; price the engine's counts on the doc's geometry for the same figure)
    doc = E.price({"lstm": E.OpCounts.from_dict(ex["counts"]["lstm"])},
                  {"lstm": E.LayerGeometry(**{**want_geo, "tiles": tuple(map(tuple,
                                                                            want_geo["tiles"]))})},
                  eng.device.profile, inferences=1, steps_per_inference=1)
    rep = eng.report().analog
    for comp in ("adc", "dac", "digital", "activation", "state_sram"):
        assert rep.by_component[comp] == pytest.approx(doc.by_component[comp], rel=1e-12)
    assert rep.latency_ns_per_step == pytest.approx(doc.latency_ns_per_step, rel=1e-12)


def _one_step_counts(eng, n_streams=1):
    streams = [eng.stream() for _ in range(n_streams)]
    eng.step_many(streams, np.zeros((n_streams, eng.model.input.features), np.float32) + 0.1)
    return eng.ledger.counts()


def test_gru_counts_by_hand(tmp_path):
    # GRU 3 -> 5 (lbr=1) on 4x4 tiles. W [15 x 3]: 1 row block x 4 column blocks (cols 4,4,4,3)
    # R [15 x 5]: 2 row blocks (4, 1 rows) x 4 column blocks.
    eng = engine(rec_model(tmp_path / "g.onnx", "GRU"))
    c, = _one_step_counts(eng).values()
    assert c.tile_activations == 4 + 8
    assert c.dac_conversions == 3 * 4 + (4 + 1) * 4
    assert c.adc_conversions == 15 + 2 * 15
    assert c.cell_reads == 2 * (15 * 3 + 15 * 5)
    assert c.macs == 15 * 8
    assert c.activation_evals == 3 * 5
    assert c.digital_muls == 45 + 3 * 5
    assert c.digital_adds == 15 * (3 - 1) + 15 + 6 * 5
    geo, = eng.ledger.geometry.values()
    assert geo.sequential_vmms == 1
    eng0 = engine(rec_model(tmp_path / "g0.onnx", "GRU", lbr=0))
    c0, = _one_step_counts(eng0).values()
    assert list(eng0.ledger.geometry.values())[0].sequential_vmms == 2
    # lbr=0 splits R into R_zr [10 x 5] and R_h [5 x 5]: 2 x 3 + 2 x 2 tiles
    assert c0.tile_activations == 4 + 6 + 4 and c0.macs == 15 * 8


def test_bidirectional_two_layer_and_head_counts(tmp_path):
    eng = engine(rec_model(tmp_path / "b.onnx", "LSTM", direction="bidirectional", head=3))
    eng.run(np.zeros((1, 1, 3), np.float32))       # one sequence of one step
    counts = eng.ledger.counts()
    rec, head = counts["rec"], counts["head"]
    uni = engine(rec_model(tmp_path / "u.onnx", "LSTM"))
    one, = _one_step_counts(uni).values()
    for f in ("tile_activations", "dac_conversions", "adc_conversions", "cell_reads", "macs",
              "activation_evals", "digital_muls", "digital_adds"):
        assert getattr(rec, f) == 2 * getattr(one, f), f
    # head: Dense 10 -> 3 on 4x4 tiles: 3 row blocks (4, 4, 2) x 1 column block
    assert head.tile_activations == 3 and head.dac_conversions == 10
    assert head.adc_conversions == 3 * 3 and head.macs == 30
    assert head.digital_adds == 3 * (3 - 1)      # no bias


@pytest.mark.parametrize("votes", [1, 3])
def test_counts_scale_linearly_with_steps_streams_and_votes(votes, tmp_path):
    path = rec_model(tmp_path / "l.onnx", head=2)
    unit = engine(path)
    u = _one_step_counts(unit)
    eng = engine(path, votes=votes, overrides=("tile.rows=4", "tile.cols=4", "vmm_noise.snr_db=10"))
    x = np.random.default_rng(0).normal(size=(6, 9, 3)).astype(np.float32)
    eng.run(x)                                     # 6 sequences of 9 steps
    streams = [eng.stream() for _ in range(4)]     # + 4 streams x 5 steps, batched
    for t in range(5):
        eng.step_many(streams, x[:4, t])
    s = eng.stream()                               # + 1 stream x 2 steps, single
    s.step(x[0, 0])
    s.step(x[0, 1])
    n = (6 * 9 + 4 * 5 + 2) * votes
    for name, c in eng.ledger.counts().items():
        assert c.steps == n
        assert c.vote_replicas == n * (votes - 1) // votes
        for f in ("dac_conversions", "adc_conversions", "cell_reads", "macs", "digital_adds"):
            assert getattr(c, f) == getattr(u[name], f) * n, (name, f)
    rep = eng.report()
    assert rep.inferences == 6 + 4 + 1
    assert rep.stream_steps == 6 * 9 + 4 * 5 + 2
    # the useful work per inference excludes the replicas
    macs = sum(c.macs for c in u.values())
    assert rep.analog.macs_per_inference == pytest.approx(macs * (6 * 9 + 22) / 11)


def test_sequence_lengths_are_respected(tmp_path):
    path = rec_model(tmp_path / "l.onnx")
    import nvmstream.converters.onnx_import  # noqa: F401
    eng = engine(path)
    x = np.zeros((3, 8, 3), np.float32)
    eng.run_all(x, lens=np.array([8, 3, 1]))
    c, = eng.ledger.counts().values()
    assert c.steps == 8 + 3 + 1


def test_changing_a_price_changes_energy_by_exactly_its_share(tmp_path):
    path = rec_model(tmp_path / "l.onnx", head=2)
    x = np.random.default_rng(0).normal(size=(2, 7, 3)).astype(np.float32)
    base = engine(path, "pcm")
    base.run(x)
    r0 = base.report().analog
    for f in ("adc_floor_pJ", "interconnect_pJ_per_byte", "sram_pJ_per_byte", "adc_leak_uW"):
        v = getattr(base.device.profile.energy, f)
        e2 = engine(path, "pcm", ("tile.rows=4", "tile.cols=4", f"energy.{f}={2 * v}"))
        e2.run(x)
        r1 = e2.report().analog
        assert r1.energy_pJ_per_inference == pytest.approx(
            r0.energy_pJ_per_inference + r0.by_field[f], rel=1e-9), f


def test_every_streamed_output_carries_energy_and_latency(tmp_path):
    eng = engine(rec_model(tmp_path / "l.onnx", head=2), "pcm", votes=3)
    s = eng.stream()
    s.step(np.ones(3, np.float32))
    assert s.last_energy_pJ > 0 and s.last_latency_ns > 0
    s.step(np.ones(3, np.float32))
    assert s.energy_pJ == pytest.approx(2 * s.last_energy_pJ)
    single = engine(rec_model(tmp_path / "l.onnx", head=2), "pcm", votes=1)
    # three replicas cost three times one (energy) and run one after another (latency)
    assert eng.step_energy_pJ == pytest.approx(3 * single.step_energy_pJ)
    assert eng.step_latency_ns == pytest.approx(3 * single.step_latency_ns)


@pytest.mark.parametrize("profile", nvm.list_profiles())
def test_every_shipped_profile_prices_an_inference(profile):
    cal = np.random.default_rng(1).normal(size=(4, 10, 12)).astype(np.float32)
    eng = nvm.Engine(nvm.convert(FIXTURES / "gru_bf.ts.onnx", calibration=cal),
                     nvm.Device(profile))
    eng.run(cal[:2])
    r = eng.report()
    assert r.analog.energy_pJ_per_inference > 0 and r.analog.tops_per_w > 0
    names = {f"{d}/{s}" for d in ("int4", "int8", "fp16", "fp32") for s in ("sram", "dram")}
    assert set(r.comparison.ratios) == names | {f"{n}/reuse16" for n in names}
    d = r.to_dict()
    json.dumps(d, default=float)
    assert "by_component" in d["analog"] and "by_layer" in d["analog"]
    assert d["analog"]["by_component"]["leakage"] > 0 and d["area"]["analog"]["area_mm2"] > 0
    assert d["verdict"]["strongest_baseline"] == r.comparison.strongest
    assert set(d["analog"]["bottleneck_by_layer"].values()) <= {"dac", "settle", "adc",
                                                                "digital", ""}


def test_run_report_and_json_cli(tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 6, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([sys.executable, "-m", "nvmstream.runtime.cli", "run",
                        str(FIXTURES / "lstm1_bf.ts.onnx"), "-i", str(tmp_path / "x.npy"),
                        "-o", str(tmp_path / "y.npy"), "--profile", "pcm", "--report",
                        "--calibration", str(tmp_path / "x.npy"),
                        "--json", str(tmp_path / "r.json")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "pJ/inference" in r.stdout and "int8/sram" in r.stdout and "TOPS/W" in r.stdout
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["inferences"] == 2 and d["analog"]["energy_pJ_per_inference"] > 0
    prov = d["provenance"]
    assert prov["profile"] == "pcm" and prov["calibration"]["sequences_used"] == 2


# --- one definition of "per inference" (issue 14, item 1) --------------------------------------

def test_api_sweep_and_stream_charge_the_same_true_length_energy_per_inference():
    """Same model, data and profile: the Python API (run with lens, predict with lens), the
    sweep worker and streaming frame by frame give the same pJ per inference; padded steps
    are never charged."""
    from nvmstream.runtime import sweep as S
    model = REPO / "demos" / "models" / "japanese_vowels_qat4.onnx"
    data = REPO / "demos" / "data" / "japanese_vowels.npz"
    d = np.load(data)
    n = 6
    x, lens = d["x_test"][:n].astype(np.float32), d["lengths_test"][:n].astype(np.int64)
    assert lens.min() < x.shape[1]            # the data really is padded
    prog = nvm.convert(str(model), calibration=d["x_train"][:64].astype(np.float32))

    def fresh():
        return nvm.Engine(prog, nvm.Device("int4", seed=0))

    api = fresh()
    api.run(x, lens=lens)
    e_api = api.report().analog.energy_pJ_per_inference
    pred = fresh()
    pred.predict(x, lens=lens)
    e_pred = pred.report().analog.energy_pJ_per_inference
    st = fresh()
    for i in range(n):
        s = st.stream()
        for t in range(int(lens[i])):
            s.step(x[i, t])
        s.close()
    e_stream = st.report().analog.energy_pJ_per_inference
    row = S.run_job(S.Job(str(model), str(data), "int4", (), 0, 1, limit=n))
    e_sweep = row["energy_pJ_per_inference"]
    assert e_api == pytest.approx(e_stream, rel=1e-12)
    assert e_pred == pytest.approx(e_stream, rel=1e-12)
    assert e_sweep == pytest.approx(e_stream, rel=1e-12)
    # and padding is not charged: the padded run costs more by exactly the padded share
    pad = fresh()
    pad.run(x)
    e_pad = pad.report().analog.energy_pJ_per_inference
    assert e_pad == pytest.approx(e_stream * x.shape[1] * n / lens.sum(), rel=1e-9)
    # a stream's own running total equals the report's per-inference figure
    one = fresh()
    s = one.stream()
    for t in range(int(lens[0])):
        s.step(x[0, t])
    assert s.energy_pJ == pytest.approx(one.report().analog.energy_pJ_per_inference, rel=1e-12)


def test_predict_rejects_bad_lengths(tmp_path):
    eng = engine(rec_model(tmp_path / "l.onnx"))
    x = np.zeros((2, 4, 3), np.float32)
    with pytest.raises(nvm.NvmInputError, match="sequence lengths"):
        eng.predict(x, lens=[1, 5])


# --- votes, the energy command -----------------------------------------------------------------

def test_k_votes_cost_k_inferences_in_the_engine_and_in_with_votes(tmp_path):
    """An engine run with K votes charges exactly what re-pricing its 1-vote counts for K votes
    charges (every counter, latency and leakage x K), while the baselines stay put."""
    path = rec_model(tmp_path / "l.onnx", head=2)
    x = np.random.default_rng(0).normal(size=(3, 6, 3)).astype(np.float32)
    one = engine(path, "snr0db")
    one.run(x, lens=np.array([6, 4, 2]))
    three = engine(path, "snr0db", votes=3)
    three.run(x, lens=np.array([6, 4, 2]))
    r1, r3 = one.report(), three.report()
    assert {k: c.to_dict() for k, c in three.ledger.counts().items()} == {
        k: c.to_dict() for k, c in E.with_votes(one.ledger.counts(), 3).items()}
    assert r3.analog.energy_pJ_per_inference == pytest.approx(
        3 * r1.analog.energy_pJ_per_inference, rel=1e-12)
    assert r3.analog.latency_ns_per_inference == pytest.approx(
        3 * r1.analog.latency_ns_per_inference, rel=1e-12)
    s1, s3 = r1.strongest, r3.strongest
    assert s3.energy_pJ_per_inference == pytest.approx(s1.energy_pJ_per_inference, rel=1e-12)
    assert r3.comparison.ratios[s3.name] == pytest.approx(r1.comparison.ratios[s1.name] / 3,
                                                          rel=1e-12)
    assert r3.to_dict()["verdict"]["votes"] == 3


def test_energy_command_prints_verdicts_sensitivity_plot_and_json(tmp_path):
    out = tmp_path / "e.json"
    png = tmp_path / "t.png"
    r = subprocess.run([sys.executable, "-m", "nvmstream.runtime.cli", "energy",
                        str(FIXTURES / "lstm1_bf.ts.onnx"), "--steps", "12", "--limit", "2",
                        "--votes", "1,3", "--sensitivity", "--plot", str(png), "--json",
                        str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "votes   1:" in r.stdout and "votes   3:" in r.stdout
    assert "strongest digital" in r.stdout and "one price at a time" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    d = json.loads(out.read_text())
    e1 = d["votes"]["1"]["report"]["analog"]["energy_pJ_per_inference"]
    e3 = d["votes"]["3"]["report"]["analog"]["energy_pJ_per_inference"]
    assert e3 == pytest.approx(3 * e1, rel=1e-9)
    s = d["votes"]["1"]["sensitivity"]
    assert s["ratio_min"] <= s["nominal"] <= s["ratio_max"]
    assert d["votes"]["1"]["report"]["area"]["analog"]["area_mm2"] > 0
    assert d["provenance"]["profile_resolved"]["name"] == "int4"


@pytest.mark.parametrize("argv,code,msg", [
    (["--votes", "0"], 2, "--votes"),
    (["--data", "/nonexistent.npz"], 3, "no such file"),
    (["--plot", "x.png"], 2, "--plot needs --sensitivity"),
])
def test_energy_command_bad_input(argv, code, msg):
    r = subprocess.run([sys.executable, "-m", "nvmstream.runtime.cli", "energy",
                        str(FIXTURES / "lstm1_bf.ts.onnx"), *argv], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert msg in r.stderr and r.stderr.count("\n") == 1


def test_server_close_summary_is_the_reports_energy_per_inference(tmp_path):
    """A stream served over ZeroMQ closes with the energy Engine.report() gives per inference
    for the same frames (the same price function, true frames only)."""
    from nvmstream.runtime.client import Client
    from server_util import ServerProcess, compile_fixture
    model = compile_fixture("lstm1_bf.ts.onnx", tmp_path / "m.nvm")
    f = nvm.load(model).model.input.features
    x = np.random.default_rng(0).standard_normal((7, f)).astype(np.float32)
    with ServerProcess(model, "--profile", "int4") as srv, Client(srv.endpoint,
                                                                  timeout_s=30) as c:
        s = c.open(seed=1)
        for t in range(len(x)):
            s.step(x[t])
        summary = s.close()
    eng = nvm.Engine(nvm.load(model), nvm.Device("int4", seed=0))
    st = eng.stream(seed=1)
    for t in range(len(x)):
        st.step(x[t])
    want = eng.report().analog
    assert summary["frames"] == len(x)
    assert summary["e_pJ"] == pytest.approx(want.energy_pJ_per_inference, rel=1e-9)
    assert summary["lat_ns"] == pytest.approx(want.latency_ns_per_inference, rel=1e-9)


def test_storage_redundancy_is_charged_in_the_one_off_programming_cost(tmp_path):
    """Guard and parity bits are read from weight storage at programming: the one-off storage
    count is n_weights x profile.storage_bits_per_code (4 + 4 guard + 1/2 parity = 8.5 bits)."""
    path = rec_model(tmp_path / "l.onnx", head=2)
    x = np.random.default_rng(0).normal(size=(2, 7, 3)).astype(np.float32)
    plain = engine(path, "int4")
    plain.run(x)
    red = engine(path, "int4", ("tile.rows=4", "tile.cols=4", "storage.guard_bits=4",
                                "storage.parity_group=2"))
    red.run(x)
    from nvmstream.runtime.ledger import one_off_counts
    n = sum(s.n_in * s.n_out for s in plain.plan.segments)
    assert one_off_counts(plain.plan, 4, plain.device.profile).storage_bits_read == 4 * n
    assert one_off_counts(red.plan, 4, red.device.profile).storage_bits_read == round(8.5 * n)
    assert red.report().one_off.total_pJ > plain.report().one_off.total_pJ


def test_report_keeps_runs_and_streams_apart(tmp_path, caplog):
    """Issue 12: report() no longer blends whole runs and streams silently. Each source
    prices its own counts (equal to an engine that ran only that kind), and the combined
    report names the mix."""
    path = rec_model(tmp_path / "m.onnx", head=2)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 7, 3)).astype(np.float32)
    frames = rng.normal(size=(3, 3)).astype(np.float32)

    def run_only(e):
        e.run(x)

    def stream_only(e):
        s = e.stream()
        for f in frames:
            s.step(f)

    mixed = engine(path)
    run_only(mixed)
    stream_only(mixed)
    alone_runs, alone_streams = engine(path), engine(path)
    run_only(alone_runs)
    stream_only(alone_streams)
    r_runs, r_streams = mixed.report("runs"), mixed.report("streams")
    assert r_runs.inferences == 4 and r_runs.stream_steps == 28
    assert r_streams.inferences == 1 and r_streams.stream_steps == 3
    assert r_runs.analog.energy_pJ_per_inference == pytest.approx(
        alone_runs.report().analog.energy_pJ_per_inference, rel=1e-12)
    assert r_streams.analog.energy_pJ_per_inference == pytest.approx(
        alone_streams.report().analog.energy_pJ_per_inference, rel=1e-12)
    assert r_runs.analog.energy_pJ_per_inference != pytest.approx(
        r_streams.analog.energy_pJ_per_inference, rel=1e-3)    # 7 steps vs 3 steps
    with caplog.at_level("WARNING"):
        both = mixed.report()
    assert "priced together" in caplog.text
    assert both.inferences == 5 and dict(both.sources) == {"runs": (4, 28), "streams": (1, 3)}
    assert "MIXED: 4 sequence run(s) of 7 steps on average + 1 stream(s) of 3 steps" in \
        both.format_text()
    assert both.to_dict()["sources"]["streams"] == {"inferences": 1, "stream_steps": 3}
    assert "MIXED" not in alone_runs.report().format_text()
    with pytest.raises(ValueError, match="no streams"):
        alone_runs.report("streams")
    with pytest.raises(ValueError, match="source must be"):
        mixed.report("stream")
    mixed.reset_ledger()
    with pytest.raises(ValueError, match="nothing has run"):
        mixed.report()


CORPUS_TORCH = REPO / "tests" / "corpus" / "torch"


@pytest.mark.parametrize("name", ["conv_lstm.ts.onnx", "lstm_perstep.ts.onnx"])
@pytest.mark.parametrize("votes", [1, 3])
def test_per_frame_energy_adds_up_to_the_ledger(name, votes):
    """A stream's per-frame energy and latency follow what ran on each frame: during a valid
    Conv1d's warm-up (conv_lstm: 2 undefined frames) the LSTM does not run, so those frames
    cost less; summed over the stream (single steps and batched steps alike) they equal the
    ledger's per-inference figures for the same stream."""
    rng = np.random.default_rng(3)
    prog = nvm.convert(CORPUS_TORCH / name,
                       calibration=rng.standard_normal((6, 20, 8)).astype(np.float32))
    eng = nvm.Engine(prog, nvm.Device("pcm", seed=1), votes=votes)
    warm = max(prog.model.delays.values())
    assert warm == (2 if name.startswith("conv") else 0)
    x = rng.standard_normal((2, 7, 8)).astype(np.float32)
    s = eng.stream()
    e, lat = [], []
    for t in range(7):
        s.step(x[0, t])
        e.append(s.last_energy_pJ)
        lat.append(s.last_latency_ns)
    rep = eng.report("streams").analog
    assert sum(e) == pytest.approx(rep.energy_pJ_per_inference, rel=1e-9)
    assert s.energy_pJ == pytest.approx(rep.energy_pJ_per_inference, rel=1e-9)
    assert sum(lat) == pytest.approx(rep.latency_ns_per_inference, rel=1e-9)
    # the warm-up frames cost less than the rest (the LSTM is not charged), later ones alike
    assert all(v < e[-1] for v in e[:warm]) and e[warm:] == [e[-1]] * (7 - warm)
    assert all(v < lat[-1] for v in lat[:warm])
    assert e[-1] == pytest.approx(eng.step_energy_pJ)
    # batched steps (the server's path, 16 rows and more: streams x votes) of streams that
    # join at different frames: each stream's sum is its share of the ledger
    streams, sums = late_join_frame_energy_sums(eng, x, 16, early=8, join_at=3)
    rep = eng.report("streams").analog
    assert sums.sum() == pytest.approx(rep.energy_pJ_per_inference * 16, rel=1e-9)
    assert [st.energy_pJ for st in streams] == pytest.approx(list(sums), rel=1e-12)
