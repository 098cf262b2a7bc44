"""`nvmstream inspect` and `nvmstream run` on every fixture, as real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import nvmstream as nvm
from onnx_util import FIXTURES, REPO, fixture_files

FILES = fixture_files()


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nvmstream.runtime.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("meta", FILES, ids=[m["file"] for m in FILES])
def test_inspect_describes_every_fixture(meta):
    from nvmstream.converters.inspect import describe, format_text
    model = nvm.load_ir(FIXTURES / meta["file"])
    info = describe(model)
    text = format_text(info)
    assert info["streamable"] == meta["causal"]
    assert ("streamable: yes" in text) == meta["causal"]
    rec = [l for l in info["layers"] if l["type"] == "Recurrent"]
    assert rec and all(l["tiles"] >= 2 for l in rec)
    # MACs per step: sum over layers of gates*H*(I+H)*D + dense in*out
    want = 0
    for l in model.layers:
        if isinstance(l, nvm.converters.ir.Recurrent):
            want += l.num_directions * l.gates * l.hidden_size * (l.input_size + l.hidden_size)
        elif isinstance(l, nvm.converters.ir.Dense):
            want += l.W.shape[0] * l.W.shape[1]
    assert info["macs_per_step"] == want


def test_inspect_cli_text_and_json():
    r = cli("inspect", FIXTURES / "bilstm_bf.ts.onnx")
    assert r.returncode == 0, r.stderr
    assert "bidirectional" in r.stdout and "streamable: no" in r.stdout
    assert "MACs per time step: " in r.stdout
    r = cli("inspect", FIXTURES / "lstm2_bf.dynamo.onnx", "--json")
    info = json.loads(r.stdout)
    # 2-layer LSTM 12->16->16: 4*16*(12+16) + 4*16*(16+16) MACs + head 16*8 + 8*4
    assert info["macs_per_step"] == 4 * 16 * 28 + 4 * 16 * 32 + 16 * 8 + 8 * 4
    assert info["tiles"] == 2 + 2 + 1 + 1 and info["streamable"]


def _table_blocks(lines: list[str]) -> list[tuple[int, int]]:
    """The column blocks of a text table: the spans between gutters, a gutter being two or
    more positions blank in every line (a cell may hold single blanks)."""
    width = max(map(len, lines))
    blank = [all(i >= len(ln) or ln[i] == " " for ln in lines) for i in range(width)] + [True] * 2
    blocks, start, i = [], 0, 0
    while i < width:
        if blank[i] and blank[i + 1]:
            if i > start:
                blocks.append((start, i))
            while i < width and blank[i]:
                i += 1
            start = i
        else:
            i += 1
    if start < width:
        blocks.append((start, width))
    return blocks


@pytest.mark.parametrize("path", ["tests/corpus/torch/strided_conv_lstm.ts.onnx",
                                  "tests/corpus/keras3/bilstm_seq.opset13.onnx"])
def test_inspect_table_columns_line_up(path):
    """`nvmstream inspect` (a real subprocess): every row's cells sit in the header's columns,
    however long a cell is (a strided Conv's "dil 1, delay 3, stride 2", a FeatureConcat, a
    long layer name): the table has the header's 8 columns separated by blanks in every line,
    each row's cell in a column is one cell (no run of blanks inside), text columns start at
    the column's left edge and numbers end at its right edge; layer names are whole. Nothing
    on stderr (the converter's shape probe at T = 3 fails on the strided Conv's kernel of 4,
    which it handles: onnxruntime used to log it as an error)."""
    r = cli("inspect", REPO / path)
    assert r.returncode == 0 and r.stderr == "", r.stderr    # no onnxruntime log of a probe
    out = r.stdout.splitlines()
    head = next(i for i, ln in enumerate(out) if ln.split()[:2] == ["#", "layer"])
    table = out[head:out.index("", head)]
    info = nvm.converters.inspect.describe(nvm.load_ir(REPO / path))
    assert len(table) == 1 + len(info["layers"])
    blocks = _table_blocks(table)
    labels = ["#", "layer", "type", "shape", "dir", "MACs/step", "tiles", "runs on"]
    assert [table[0][a:b].strip() for a, b in blocks] == labels, table[0]
    right = {0, 5, 6}
    for row, layer in zip(table[1:], info["layers"]):
        cells = [row[a:b] for a, b in blocks]
        for c, v in enumerate(cells):
            if v.strip():
                assert "  " not in v.strip(), (row, labels[c])
                assert (v[-1] != " ") if c in right else (v[0] != " "), (row, labels[c])
        assert cells[1].strip() == layer["name"]
        assert cells[7].strip().startswith(layer["runs_on"])
    if "strided" in path:
        assert "dil 1, delay 3, stride 2" in [row[slice(*blocks[4])].strip() for row in table]


def test_run_cli_per_step_outputs(tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 8, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = cli("run", FIXTURES / "lstm1_tm.dynamo.onnx", "--input", tmp_path / "x.npy",
            "--output", tmp_path / "y.npy")
    assert r.returncode == 0, r.stderr
    y = np.load(tmp_path / "y.npy")
    model = nvm.load_ir(FIXTURES / "lstm1_tm.dynamo.onnx")
    want = np.swapaxes(model.run({"x": np.swapaxes(x, 0, 1)})["y"], 0, 1)
    assert y.shape == (3, 8, 4)
    np.testing.assert_array_equal(y, want)
    # [time, features] input gives [time, outputs]; the last-step classifier gives per-step
    # predictions whose last step equals the ONNX output
    np.save(tmp_path / "x2.npy", x[0])
    r = cli("run", FIXTURES / "lstm_last_bf.ts.onnx", "-i", tmp_path / "x2.npy",
            "-o", tmp_path / "y2.npz")
    assert r.returncode == 0, r.stderr
    y2 = np.load(tmp_path / "y2.npz")["y"]
    assert y2.shape == (8, 4)
    last = nvm.load_ir(FIXTURES / "lstm_last_bf.ts.onnx").run({"x": x[:1]})["y"]
    np.testing.assert_array_equal(y2[-1], last[0])


@pytest.mark.slow
def test_demo_script_runs_end_to_end():
    """`make demo` on a reduced setting: real servers in subprocesses, streams over ZeroMQ,
    every shipped task (sensor, speech features, raw audio) under five profile settings,
    run through the printed CLI commands, with n and a 95% interval on every accuracy."""
    from onnx_util import REPO
    r = subprocess.run([sys.executable, str(REPO / "demos" / "demo.py"), "--quick"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert out.count("server stopped cleanly (exit 0)") == 3
    table = out.split("=" * 112)[1]
    # the demo prints the commands it runs, and they are the CLI's own
    assert "$ nvmstream convert demos/models/keywords_qat4.onnx -o " in out
    assert "$ nvmstream stream -c tcp://127.0.0.1:" in out and "--json" in out
    assert "95% CI" in table and "(wav)" in table
    for task in ("basic_motions", "japanese_vowels", "keywords"):
        for prof in ("ideal", "int4", "pcm-1d", "snr0db", "snr0db x5 votes"):
            assert any(line.startswith(task) and prof in line for line in table.splitlines())
    ideal = [line for line in table.splitlines() if line.startswith("japanese_vowels") and
             " ideal " in line][0]
    assert float(ideal.split("%")[0].split()[-1]) >= 80.0     # a trained model, really served
    assert ideal.split()[2] == "12"                            # n = the --quick limit
    lo, hi = (float(v) for v in ideal.split()[4].rstrip("%").split("-"))
    assert lo < float(ideal.split()[3].rstrip("%")) <= hi
