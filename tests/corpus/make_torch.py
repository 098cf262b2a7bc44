#!/usr/bin/env python
"""Make the torch part of the converter corpus: small recurrent models exported by both of
torch's ONNX exporters (TorchScript ``dynamo=False`` at opset 17 and the dynamo exporter at its
default opset), written as ``tests/corpus/torch/NAME.{ts,dynamo}.onnx``.

    .venv/bin/pip install -e ".[train]"       # torch==2.13.0 + onnxscript
    .venv/bin/python tests/corpus/make_torch.py [NAME ...]   # only these models (default all)

The models are what people write, not what suits nvmstream: per-step heads, ``proj_size``,
state inputs and outputs, ``LSTMCell``/``GRUCell`` Python loops, ``nn.RNN(relu)``, Conv1d front
ends, LayerNorm, weights in external data, a file re-saved at onnx's newest IR version. An
export that fails is recorded in the manifest with the exporter's reason, never dropped. Each
model is seeded by its name, so files are reproducible for one torch version.

Tests need neither torch nor this script: they read the committed files and
``tests/corpus/manifest.json`` (see ``tests/corpus/README.md``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus_manifest as cm  # noqa: E402

OUT = Path(__file__).resolve().parent / "torch"
F = 8                       # features per step
EXPORT_B, EXPORT_T = 3, 7   # export sample


class PerStep(nn.Module):
    def __init__(self, rnn, head):
        super().__init__()
        self.rnn, self.head = rnn, head

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(y)


class Last(nn.Module):
    """Classifier on the last step, the way tutorials write it: ``y[:, -1]``."""

    def __init__(self, rnn, head):
        super().__init__()
        self.rnn, self.head = rnn, head

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


class LSTMStateIO(nn.Module):
    """A two-layer LSTM streaming model: state in, state out."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(F, 12, num_layers=2, batch_first=True)
        self.head = nn.Linear(12, 3)

    def forward(self, x, h0, c0):
        y, (h, c) = self.rnn(x, (h0, c0))
        return self.head(y), h, c


class GRUStateIO(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(F, 10, batch_first=True)
        self.head = nn.Linear(10, 3)

    def forward(self, x, h0):
        y, h = self.rnn(x, h0)
        return self.head(y), h


class LSTMCellLoop(nn.Module):
    """``nn.LSTMCell`` stepped by a Python loop (time-major input)."""

    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(F, 10)
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        h = x.new_zeros(x.shape[1], 10)
        c = x.new_zeros(x.shape[1], 10)
        ys = []
        for t in range(x.shape[0]):
            h, c = self.cell(x[t], (h, c))
            ys.append(self.head(h))
        return torch.stack(ys)


class GRUCellLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(F, 10)
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        h = x.new_zeros(x.shape[1], 10)
        ys = []
        for t in range(x.shape[0]):
            h = self.cell(x[t], h)
            ys.append(self.head(h))
        return torch.stack(ys)


class ConvLSTM(nn.Module):
    """Conv1d front end (a keyword-spotter shape), then an LSTM and a per-step head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(F, 12, kernel_size=3)
        self.rnn = nn.LSTM(12, 16, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x):                    # x [B, T, F]
        z = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        y, _ = self.rnn(z)
        return self.head(y)


class StridedConvLSTM(nn.Module):
    """A keyword spotter that decimates time before its recurrence: Conv1d with stride 2,
    then an LSTM at half the frame rate and a per-step head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(F, 12, kernel_size=4, stride=2)
        self.rnn = nn.LSTM(12, 16, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x):                    # x [B, T, F] -> y [B, (T - 4) // 2 + 1, 4]
        z = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        y, _ = self.rnn(z)
        return self.head(y)


class CausalConvGRU(nn.Module):
    """A causal Conv1d front end (``F.pad(x, (k-1, 0))``, a streaming keyword spotter's) and
    a GRU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(F, 10, kernel_size=3, dilation=2)
        self.rnn = nn.GRU(10, 12, batch_first=True)
        self.head = nn.Linear(12, 3)

    def forward(self, x):                    # x [B, T, F]
        z = nn.functional.pad(x.transpose(1, 2), (4, 0))
        z = torch.relu(self.conv(z)).transpose(1, 2)
        y, _ = self.rnn(z)
        return self.head(y)


class LSTMLayerNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(F, 16, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(self.norm(y))


class CRNNHead(nn.Module):
    """A CRNN-style head: ``view(T*b, h)`` -> Linear -> ``view(T, b, -1)`` (time-major)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(F, 16, bidirectional=True)
        self.emb = nn.Linear(32, 5)

    def forward(self, x):                    # x [T, B, F]
        rec, _ = self.rnn(x)
        t, b, h = rec.size()
        out = self.emb(rec.view(t * b, h))
        return out.view(t, b, -1)


# name -> (factory, inputs [(name, dims)], outputs, causal, exporters, options)
# dims use "B" (batch), "T" (time), ints; "cells" models keep T fixed: a Python loop is unrolled.
SPECS = {
    "lstm_perstep": (lambda: PerStep(nn.LSTM(F, 16, batch_first=True), nn.Linear(16, 4)),
                     [("x", ["B", "T", F])], ["y"], True, {}),
    "gru_last": (lambda: Last(nn.GRU(F, 12, batch_first=True), nn.Linear(12, 3)),
                 [("x", ["B", "T", F])], ["y"], True, {}),
    "rnn_relu": (lambda: PerStep(nn.RNN(F, 12, nonlinearity="relu", batch_first=True),
                                 nn.Linear(12, 3)), [("x", ["B", "T", F])], ["y"], True, {}),
    "lstm_proj": (lambda: PerStep(nn.LSTM(F, 16, proj_size=6, batch_first=True),
                                  nn.Linear(6, 3)), [("x", ["B", "T", F])], ["y"], True, {}),
    "lstm_state_io": (LSTMStateIO, [("x", ["B", "T", F]), ("h0", [2, "B", 12]),
                                    ("c0", [2, "B", 12])], ["y", "hn", "cn"], True, {}),
    "gru_state_io": (GRUStateIO, [("x", ["B", "T", F]), ("h0", [1, "B", 10])], ["y", "hn"],
                     True, {}),
    "lstmcell_loop": (LSTMCellLoop, [("x", [EXPORT_T, "B", F])], ["y"], True, {"fixed_t": True}),
    "grucell_loop": (GRUCellLoop, [("x", [EXPORT_T, "B", F])], ["y"], True, {"fixed_t": True}),
    "conv_lstm": (ConvLSTM, [("x", ["B", "T", F])], ["y"], True, {"min_time": 3}),
    "causal_conv_gru": (CausalConvGRU, [("x", ["B", "T", F])], ["y"], True, {}),
    "strided_conv_lstm": (StridedConvLSTM, [("x", ["B", "T", F])], ["y"], True,
                          {"min_time": 4}),
    "lstm_layernorm": (LSTMLayerNorm, [("x", ["B", "T", F])], ["y"], True, {}),
    "crnn_head": (CRNNHead, [("x", ["T", "B", F])], ["y"], False, {}),
    "lstm_external": (lambda: PerStep(nn.LSTM(F, 32, batch_first=True), nn.Linear(32, 4)),
                      [("x", ["B", "T", F])], ["y"], True, {"external": True}),
}


def sample_inputs(inputs):
    rng = np.random.default_rng(7)
    out = []
    for _, dims in inputs:
        shape = [EXPORT_B if d == "B" else EXPORT_T if d == "T" else d for d in dims]
        out.append(torch.from_numpy(rng.standard_normal(shape).astype(np.float32)))
    return tuple(out)


@contextlib.contextmanager
def _rnn_while_loop_decompositions():
    """Keep the dynamo exporter from freezing the time axis of nn.LSTM/GRU (a torch 2.13 bug;
    see tests/fixtures/make_fixtures.py)."""
    try:
        from torch.export._patches import (register_gru_while_loop_decomposition,
                                           register_lstm_while_loop_decomposition)
    except ImportError:
        yield
        return
    with register_lstm_while_loop_decomposition(), register_gru_while_loop_decomposition():
        yield


def export(name, exporter, path: Path):
    factory, inputs, outputs, _causal, opts = SPECS[name]
    torch.manual_seed(cm.seed_of(name))
    model = factory().float().eval()
    sample = sample_inputs(inputs)
    names = [n for n, _ in inputs]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "ts":
            dyn = {}
            for n, dims in inputs:
                dyn[n] = {i: ("batch" if d == "B" else "time") for i, d in enumerate(dims)
                          if d in ("B", "T")}
            torch.onnx.export(model, sample, str(path), dynamo=False, opset_version=17,
                              input_names=names, output_names=outputs, dynamic_axes=dyn,
                              do_constant_folding=True)
            proto = onnx.load(str(path))
        else:
            bd = torch.export.Dim("batch", min=1, max=1024)
            td = torch.export.Dim("time", min=2, max=100000)
            dyn = {n: {i: (bd if d == "B" else td) for i, d in enumerate(dims)
                       if d in ("B", "T")} for n, dims in inputs}
            with _rnn_while_loop_decompositions():
                prog = torch.onnx.export(model, sample, dynamo=True, input_names=names,
                                         output_names=outputs, dynamic_shapes=dyn,
                                         optimize=True, verbose=False)
            proto = prog.model_proto
            for node in cm.all_nodes(proto.graph):   # drop machine-specific stack traces
                keep = [p for p in node.metadata_props if not p.key.startswith("pkg.torch.onnx.")]
                del node.metadata_props[:]
                node.metadata_props.extend(keep)
    if opts.get("external"):
        for stale in path.parent.glob(path.name + ".data"):
            stale.unlink()
        onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=1024)
        os.chmod(path.with_name(path.name + ".data"), 0o644)
    else:
        onnx.save(proto, str(path), save_as_external_data=False)
    return model


def _frozen_axes(entry: dict, path: Path) -> None:
    """Where the exporter froze the time axis (unrolling the recurrence over the example
    length), record the fixed length in the manifest so tests feed that length."""
    m = onnx.load(str(path), load_external_data=False)
    for inp, vi in zip(entry["inputs"], m.graph.input):
        dims = vi.type.tensor_type.shape.dim
        for i, d in enumerate(inp["dims"]):
            if d == "T" and i < len(dims) and dims[i].HasField("dim_value"):
                inp["dims"][i] = int(dims[i].dim_value)
                entry["fixed_time"] = int(dims[i].dim_value)
                entry["time_frozen_by_exporter"] = True


def check_against_torch(model, entry, path: Path) -> float:
    """Max |onnxruntime - torch| on a seeded input of another batch and length than the
    export sample (catches exports that froze an axis)."""
    import onnxruntime as ort

    fixed = cm.fixed_time(entry)
    feeds = cm.feeds(entry, 2, fixed or 9, seed=1)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)
    with torch.no_grad():
        want = model(*[torch.from_numpy(v) for v in feeds.values()])
    want = want if isinstance(want, (tuple, list)) else (want,)
    return max(float(np.max(np.abs(g - w.numpy()))) for g, w in zip(got, want))


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    OUT.mkdir(parents=True, exist_ok=True)
    names = list(sys.argv[1:] if argv is None else argv) or list(SPECS)
    unknown = sorted(set(names) - set(SPECS))
    if unknown:
        print(f"make_torch.py: unknown model(s) {unknown}; known: {sorted(SPECS)}",
              file=sys.stderr)
        return 2
    # the entries of the models not remade stay as they are
    entries = [e for e in cm.load() if e["file"].startswith("torch/") and
               e["model"] not in names]
    for name, (_f, inputs, outputs, causal, opts) in SPECS.items():
        if name not in names:
            continue
        for exporter in ("ts", "dynamo"):
            fname = f"{name}.{exporter}.onnx"
            path = OUT / fname
            entry = {"file": f"torch/{fname}", "source": f"torch {torch.__version__} "
                     f"{'torchscript' if exporter == 'ts' else 'dynamo'} exporter",
                     "model": name, "inputs": [{"name": n, "dims": d} for n, d in inputs],
                     "outputs": outputs, "causal": causal}
            if opts.get("fixed_t"):
                entry["fixed_time"] = EXPORT_T
            if "min_time" in opts:        # a valid Conv over time needs K steps
                entry["min_time"] = opts["min_time"]
            try:
                model = export(name, exporter, path)
                cm.describe(entry, path)
                _frozen_axes(entry, path)
                try:
                    entry["ort_vs_torch_max_abs"] = check_against_torch(model, entry, path)
                except Exception as e:  # an invalid export: kept, the converter must reject it
                    entry["ort_error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            except Exception as e:  # recorded, never dropped
                for p in (path, path.with_name(path.name + ".data")):
                    if p.exists():
                        p.unlink()
                entry["export_error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            print(f"{fname:32s} {entry.get('export_error') or entry['ops']}")
            entries.append(entry)
    # a file at onnx's newest IR version (what onnx.helper.make_model writes by default)
    src = OUT / "lstm_perstep.ts.onnx"
    if src.exists() and "lstm_perstep" in names:
        m = onnx.load(str(src))
        m.ir_version = onnx.IR_VERSION
        path = OUT / f"lstm_perstep.ir{onnx.IR_VERSION}.onnx"
        onnx.save(m, str(path))
        entry = {"file": f"torch/{path.name}", "source": f"lstm_perstep.ts.onnx re-saved with "
                 f"ir_version {onnx.IR_VERSION} (onnx {onnx.__version__})", "model": "lstm_perstep",
                 "inputs": [{"name": "x", "dims": ["B", "T", F]}], "outputs": ["y"], "causal": True}
        cm.describe(entry, path)
        entries.append(entry)
    cm.update("torch", entries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
