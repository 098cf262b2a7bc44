#!/usr/bin/env python
"""Convert every corpus model, compare the float IR with onnxruntime and record the result in
``tests/corpus/manifest.json`` (``status``, ``max_rel_err``, ``streams``; for the engine:
``engine_rel_err``, the ideal-profile engine vs onnxruntime through ``nvm.InferenceSession``,
and ``digital``, the layers that run in the digital periphery), then print a table.

    .venv/bin/python tests/corpus/check_corpus.py            # update the manifest
    .venv/bin/python tests/corpus/check_corpus.py --check    # only print; exit 1 on a change

``tests/test_corpus.py`` asserts the same facts, so a change in what converts shows up as a
failing test until the manifest is regenerated (and the change reviewed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus_manifest as cm  # noqa: E402

TOL = 1e-5
SHAPES = [(2, 9), (1, 1), (3, 4)]   # (batch, time) compared with onnxruntime


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max(max |want|, 1e-6): error relative to the output's scale."""
    if got.shape != want.shape:
        return float("inf")
    scale = max(float(np.max(np.abs(want))) if want.size else 0.0, 1e-6)
    return float(np.max(np.abs(got - want))) / scale if want.size else 0.0


def load(entry: dict):
    """The entry's model converted as its manifest says (inputs fixed at conversion, a frame
    model's frame size)."""
    from nvmstream.converters.onnx_import import load_ir
    return load_ir(cm.HERE / entry["file"], constants=entry.get("constants"),
                   frame_size=entry.get("frame_size"))


def frame_reference(entry: dict, sess, feeds: dict) -> dict[str, np.ndarray]:
    """onnxruntime on a frame model, one call per frame of ``feeds[input][B, T, F]`` with its
    state output fed back as the next call's state input; every output stacked per call."""
    name = entry["inputs"][0]["name"]
    state_in, state_out = entry["state"]
    x = feeds[name]
    run = {k: v for k, v in feeds.items() if k != name}
    outs: dict[str, list] = {n: [] for n in entry["outputs"]}
    for t in range(x.shape[1]):
        res = dict(zip(entry["outputs"], sess.run(entry["outputs"], {**run, name: x[:, t]})))
        for n in entry["outputs"]:
            outs[n].append(res[n])
        run[state_in] = res[state_out]
    return {n: np.stack(v) for n, v in outs.items()}


def _model_feeds(model, feeds: dict) -> dict:
    """The feeds without the inputs fixed at conversion."""
    return {n: v for n, v in feeds.items() if f"nvmstream.fixed_input.{n}" not in model.metadata}


def compare(entry: dict, model, sess) -> float:
    """Max relative error of the float IR vs onnxruntime over a few batch/length shapes."""
    if entry.get("frame_size"):
        worst = 0.0
        for k, (b, t) in enumerate(SHAPES):
            feeds = cm.feeds(entry, b, t, seed=100 + k)
            want = frame_reference(entry, sess, feeds)
            got = model.run(_model_feeds(model, feeds))
            worst = max(worst, max(rel_err(got[n], want[n]) for n in entry["outputs"]))
        return worst
    fixed = cm.fixed_time(entry)
    worst = 0.0
    shapes = SHAPES if fixed is None else [(2, fixed), (1, fixed)]
    for k, (b, t) in enumerate(shapes):
        if fixed is None and t < entry.get("min_time", 1):
            continue
        feeds = cm.feeds(entry, b, t, seed=100 + k)
        want = dict(zip(entry["outputs"], sess.run(entry["outputs"], feeds)))
        got = model.run(feeds)
        worst = max(worst, max(rel_err(got[n], want[n]) for n in entry["outputs"]))
    return worst


def stream_matches(entry: dict, model) -> bool:
    """Step-by-step streaming equals the whole run (bit for bit) on a seeded input."""
    feeds = _model_feeds(model, cm.feeds(entry, 2, 6, seed=7))
    x = feeds.pop(entry["inputs"][0]["name"])
    if model.input.axes[:2] == ("T", "B"):
        x = np.swapaxes(x, 0, 1)
    whole = model.run_steps(x, **feeds)
    s = model.stream(2, **feeds)
    steps = [s.step(x[:, t]) for t in range(x.shape[1])]
    return all(np.array_equal(np.stack([st[n] for st in steps], 1), whole[n]) for n in whole)


def digital_layers(model) -> list[str]:
    """The layers a model runs in the digital periphery, e.g. ``["Elementwise(relu)"]``."""
    from nvmstream.converters import ir
    out = []
    for l in model.layers:
        if ir.runs_on(l) == "digital":
            d = type(l).__name__ + (f"({l.fn.name})" if isinstance(l, ir.Elementwise) else
                                    f"({l.op})" if isinstance(l, (ir.Unary, ir.Binary)) else
                                    f"({l.mode})" if isinstance(l, ir.FeaturePad) else "")
            if d not in out:
                out.append(d)
    return out


def engine_compare(entry: dict, model, sess) -> float:
    """Max relative error of the engine (ideal profile, converted with the corpus inputs as
    calibration) vs onnxruntime, in ONNX shapes, over the same shapes as :func:`compare`."""
    import nvmstream as nvm
    fixed = cm.fixed_time(entry)
    shapes = SHAPES if fixed is None else [(2, fixed), (1, fixed)]
    cal = cm.feeds(entry, 4, fixed or 12, seed=1)[entry["inputs"][0]["name"]]
    if model.input.axes[:2] == ("T", "B"):
        cal = np.swapaxes(cal, 0, 1)
    eng = nvm.InferenceSession(nvm.convert(model, calibration=cal), "ideal")
    worst = 0.0
    if entry.get("frame_size"):
        for k, (b, t) in enumerate(shapes):
            feeds = cm.feeds(entry, b, t, seed=100 + k)
            want = frame_reference(entry, sess, feeds)
            got = dict(zip(entry["outputs"], eng.run(entry["outputs"],
                                                     _model_feeds(model, feeds))))
            worst = max(worst, max(rel_err(got[n], want[n]) for n in entry["outputs"]))
        return worst
    for k, (b, t) in enumerate(shapes):
        if fixed is None and t < entry.get("min_time", 1):
            continue
        feeds = cm.feeds(entry, b, t, seed=100 + k)
        want = dict(zip(entry["outputs"], sess.run(entry["outputs"], feeds)))
        run = {n: v for n, v in feeds.items() if f"nvmstream.fixed_input.{n}" not in model.metadata}
        got = dict(zip(entry["outputs"], eng.run(entry["outputs"], run)))
        worst = max(worst, max(rel_err(got[n], want[n]) for n in entry["outputs"]))
    return worst


def check(entry: dict) -> dict:
    import onnxruntime as ort

    from nvmstream.converters.errors import NvmConversionError

    path = cm.HERE / entry["file"]
    if "export_error" in entry:
        return {"status": "not exported"}
    try:
        model = load(entry)
    except NvmConversionError as e:
        msg = str(e)
        return {"status": "rejected: " + msg[msg.find(path.name) + len(path.name):].lstrip(": ")}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    res = {"status": "converts", "max_rel_err": compare(entry, model, sess)}
    res["streams"] = bool(model.streamable and stream_matches(entry, model)) \
        if model.streamable else False
    res["engine_rel_err"] = engine_compare(entry, model, sess)
    res["digital"] = digital_layers(model)
    return res


def markdown(entries: list[dict]) -> str:
    rows = ["| file | opset | max rel err vs onnxruntime: float IR / engine (ideal) | "
            "streams = whole run | digital periphery | status |",
            "|---|---|---|---|---|---|"]
    for e in entries:
        st = e.get("status", "")
        if "export_error" in e:
            st = "not exported: " + e["export_error"][:90]
        err = f"{e['max_rel_err']:.1e}" if "max_rel_err" in e else "-"
        if "engine_rel_err" in e:
            err += f" / {e['engine_rel_err']:.1e}"
        stream = "yes" if e.get("streams") else ("no (non-causal)" if st == "converts" else "-")
        dig = ", ".join(e.get("digital", [])) or ("-" if st != "converts" else "none")
        rows.append(f"| `{e['file']}` | {e.get('opset', '-')} | {err} | {stream} | {dig} | "
                    f"{st[:160]} |")
    ok = [e for e in entries if e.get("status") == "converts"]
    worst = max((e["max_rel_err"] for e in ok), default=0.0)
    worst_eng = max((e.get("engine_rel_err", 0.0) for e in ok), default=0.0)
    files = [e for e in entries if "export_error" not in e]
    rows += ["", f"{len(ok)} of {len(files)} files convert; the largest relative error vs "
                 f"onnxruntime is {worst:.1e} (float IR) / {worst_eng:.1e} (engine, ideal "
                 f"profile), within {TOL:g} of the output scale.", "",
             "The digital-periphery column names nvmstream's IR layers; the ONNX ops they come "
             "from:", ""]
    rows += [f"- `{k}`: {v}" for k, v in DIGITAL_OPS.items()]
    return "\n".join(rows)


# the ONNX ops behind each digital-periphery IR layer (everything else: LSTM/GRU/RNN nodes,
# Loops and unrolled cells, MatMul/Gemm and Conv sit on crossbars; the gates' activations and
# the state update of every recurrent layer are digital too, inside the layer)
DIGITAL_OPS = {
    "Elementwise(fn)": "Relu, Sigmoid, Tanh (and the other ONNX activations) outside a cell",
    "Softmax": "Softmax, LogSoftmax",
    "FeatureSlice, FeatureConcat": "Slice/Gather/Split of the feature axis, Concat (data "
                                   "movement: a bidirectional layer's halves, packed states)",
    "LayerNorm": "LayerNormalization",
    "Binary(op)": "Add, Sub, Mul of two run-time tensors",
    "Unary(op)": "Sqrt, Pow with a constant exponent",
    "ReduceMean": "ReduceMean over the features",
    "FeaturePad(mode)": "Pad of the feature axis (constant, reflect, edge)",
    "StepMask": "Keras Masking: Equal, Not, Cast, ReduceSum, Greater (the per-frame mask)",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="do not write the manifest")
    ap.add_argument("--markdown", action="store_true",
                    help="only print the manifest as a Markdown table (for README.md)")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(cm.load()))
        return 0
    entries = cm.load()
    changed = False
    for e in entries:
        res = check(e)
        for k in ("status", "max_rel_err", "streams", "engine_rel_err", "digital"):
            if e.get(k) != res.get(k) and not (k.endswith("rel_err") and k in e and k in res
                                               and abs(e[k] - res[k]) < 1e-9):
                changed = True
            e.pop(k, None)
        e.update(res)
        err = f"{res['max_rel_err']:.1e}" if "max_rel_err" in res else "-"
        if "engine_rel_err" in res:
            err += f"/{res['engine_rel_err']:.1e}"
        print(f"{e['file']:40s} {err:>16s} {'stream' if res.get('streams') else '':6s} "
              f"{res['status'][:110]}")
    n_ok = sum(e["status"] == "converts" for e in entries)
    print(f"{n_ok} of {len(entries)} convert")
    if not args.check:
        cm.save(entries)
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
