#!/usr/bin/env python
"""Make the Keras part of the converter corpus with tf2onnx, at opsets 13 and 18, as
``tests/corpus/keras3/NAME.opsetN.onnx`` (Keras 3) or ``tests/corpus/keras2/...`` (tf-keras,
Keras 2: run with ``TF_USE_LEGACY_KERAS=1``).

    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu tf2onnx tf-keras \\
        onnxruntime                                # the `corpus-keras` extra
    /tmp/tfenv/bin/python tests/corpus/make_keras.py
    TF_USE_LEGACY_KERAS=1 /tmp/tfenv/bin/python tests/corpus/make_keras.py

TensorFlow pins its own numpy/protobuf, so it lives in its own venv, never in nvmstream's.
Models: LSTM/GRU/SimpleRNN with ``return_sequences`` True (+ a Dense applied to the 3-D
sequence: Keras's Tensordot, Reshape[-1, H] -> MatMul -> Reshape) and False (+ Dense on the last
step), Bidirectional, Masking. The graph is exported through ``tf.function`` with input
signature ``[None, None, F]`` (dynamic batch and time). An export that fails is recorded, never
dropped; every file is checked against Keras on onnxruntime at another batch and length.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus_manifest as cm  # noqa: E402

LEGACY = os.environ.get("TF_USE_LEGACY_KERAS") == "1"
if LEGACY:
    import tf_keras as keras
else:
    import keras
KERAS_MAJOR = int(keras.__version__.split(".")[0]) if hasattr(keras, "__version__") else 2
FOLDER = "keras2" if LEGACY else "keras3"
OUT = Path(__file__).resolve().parent / FOLDER
F = 6
L = keras.layers


def _seq(rnn, head=4):
    return [rnn, L.Dense(head)]


# name -> layers after the Input (all take [B, T, F])
SPECS = {
    "lstm_seq": lambda: [L.LSTM(10, return_sequences=True), L.Dense(4)],
    "lstm_last": lambda: [L.LSTM(10), L.Dense(3, activation="softmax")],
    "gru_seq": lambda: [L.GRU(10, return_sequences=True), L.Dense(4)],
    "gru_last": lambda: [L.GRU(10), L.Dense(3)],
    "simplernn_seq": lambda: [L.SimpleRNN(10, return_sequences=True), L.Dense(4)],
    "simplernn_last": lambda: [L.SimpleRNN(10), L.Dense(3)],
    "bilstm_seq": lambda: [L.Bidirectional(L.LSTM(8, return_sequences=True)), L.Dense(4)],
    "masked_lstm": lambda: [L.Masking(0.0), L.LSTM(10, return_sequences=True), L.Dense(4)],
    "lstm2_seq": lambda: [L.LSTM(10, return_sequences=True), L.LSTM(8, return_sequences=True),
                          L.Dense(4, activation="relu")],
}
CAUSAL = {k: not k.startswith("bi") for k in SPECS}


def build(name: str):
    keras.utils.set_random_seed(cm.seed_of(name) % (2 ** 31))
    inp = keras.Input(shape=(None, F), name="x")
    z = inp
    for layer in SPECS[name]():
        z = layer(z)
    model = keras.Model(inp, z)
    # Keras initialises biases to zero (and the LSTM forget bias to 1): give every weight a
    # random value so a converter that drops a bias cannot pass.
    rng = np.random.default_rng(cm.seed_of(name))
    model.set_weights([w + 0.2 * rng.standard_normal(w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    return model


def export(model, path: Path, opset: int) -> None:
    import tf2onnx

    spec = (tf.TensorSpec((None, None, F), tf.float32, name="x"),)

    @tf.function(input_signature=spec)
    def fn(x):
        return {"y": model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
    onnx.save(proto, str(path))


def check_against_keras(model, entry, path: Path) -> float:
    import onnxruntime as ort

    feeds = cm.feeds(entry, 2, 9, seed=1)
    if entry["model"].startswith("masked"):
        feeds["x"][1, 6:] = 0.0          # a padded row
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)[0]
    want = np.asarray(model(feeds["x"], training=False))
    return float(np.max(np.abs(got - want)))


def main() -> int:
    import tf2onnx

    OUT.mkdir(parents=True, exist_ok=True)
    entries = []
    for name in SPECS:
        model = build(name)
        for opset in (13, 18):
            fname = f"{name}.opset{opset}.onnx"
            path = OUT / fname
            entry = {"file": f"{FOLDER}/{fname}",
                     "source": f"Keras {keras.__version__} (TensorFlow {tf.__version__}) via "
                               f"tf2onnx {tf2onnx.__version__}",
                     "model": name, "inputs": [{"name": "x", "dims": ["B", "T", F]}],
                     "outputs": ["y"], "causal": CAUSAL[name]}
            if name.startswith("masked"):
                entry["mask_value"] = 0.0
            try:
                export(model, path, opset)
                cm.describe(entry, path)
                try:
                    entry["ort_vs_keras_max_abs"] = check_against_keras(model, entry, path)
                except Exception as e:  # an invalid export: kept, the converter must reject it
                    entry["ort_error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            except Exception as e:  # recorded, never dropped
                if path.exists():
                    path.unlink()
                entry["export_error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            print(f"{FOLDER}/{fname:28s} {entry.get('export_error') or entry['ops']}")
            entries.append(entry)
    cm.update(FOLDER, entries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
