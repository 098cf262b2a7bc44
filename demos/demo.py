"""`make demo`: nvmstream on a shipped model and shipped real data.

For now (until trained models and the streaming server land) this converts an exported model,
prints its inspection, runs it in float32 on the JapaneseVowels test set (12 LPC cepstra per
frame) both whole-sequence and frame by frame, and checks the two agree exactly.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

import nvmstream as nvm
from nvmstream.converters.inspect import describe, format_text

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def load_dataset(name: str):
    spec = importlib.util.spec_from_file_location("nvm_datasets", HERE / "datasets.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod.load(name)


def main() -> int:
    model_path = REPO / "tests" / "fixtures" / "onnx" / "lstm2_bf.dynamo.onnx"
    print(f"== nvmstream inspect {model_path.relative_to(REPO)}")
    model = nvm.load_ir(model_path)
    print(format_text(describe(model)))

    ds = load_dataset("japanese_vowels")
    x = ds.x_test[:64]
    print(f"\n== float32 run on JapaneseVowels test data: x {list(x.shape)} "
          f"(batch, time, 12 LPC cepstra)")
    t0 = time.perf_counter()
    y = model.run_steps(x)["y"]
    t1 = time.perf_counter()
    s = model.stream(batch=x.shape[0])
    ys = np.stack([s.step(x[:, t])["y"] for t in range(x.shape[1])], axis=1)
    t2 = time.perf_counter()
    steps = x.shape[0] * x.shape[1]
    print(f"whole sequences: {1e6 * (t1 - t0) / steps:8.2f} us per stream-step")
    print(f"frame by frame:  {1e6 * (t2 - t1) / steps:8.2f} us per stream-step")
    same = np.array_equal(y, ys)
    print(f"streamed == whole-sequence outputs (bit for bit): {same}")
    print(f"output y {list(y.shape)}; first sequence, last step: "
          f"{np.array2string(y[0, -1], precision=4)}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
