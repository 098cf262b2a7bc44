#!/usr/bin/env python
"""Copy silero-vad's 16 kHz ONNX model (MIT licence) from its PyPI wheel into the corpus.

    pip download --no-deps silero-vad==6.2.3 -d /tmp/silero
    python tests/corpus/make_silero.py /tmp/silero/silero_vad-6.2.3-py3-none-any.whl

Writes ``tests/corpus/silero/silero_vad_16k_op15.onnx`` and the wheel's ``LICENSE`` beside it
and records the file in the manifest. The model takes a chunk of 512 samples at 16 kHz plus
the 64 samples before it (``input [B, 576]``), a packed LSTM state (``state [2, B, 128]``: h
and c) and the sample rate (``sr``, int64 scalar), and returns the speech probability and the
next state. nvmstream converts it as a frame model (``frame_size=576``, ``sr`` fixed at 16000):
one call is one recurrent step.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus_manifest as cm  # noqa: E402

OUT = Path(__file__).resolve().parent / "silero"
FILES = {"silero_vad/data/silero_vad_16k_op15.onnx": "silero_vad_16k_op15.onnx"}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    wheel = Path(argv[0])
    OUT.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for src, dst in FILES.items():
            (OUT / dst).write_bytes(z.read(src))
        lic = next(n for n in z.namelist() if n.endswith("licenses/LICENSE"))
        (OUT / "LICENSE").write_bytes(z.read(lic))
    version = wheel.name.split("-")[1]
    entries = []
    for dst in FILES.values():
        e = {"file": f"silero/{dst}", "source": f"silero-vad {version} wheel (MIT licence)",
             "model": dst[:-5],
             "inputs": [{"name": "input", "dims": ["B", 576]},
                        {"name": "state", "dims": [2, "B", 128]},
                        {"name": "sr", "dims": [], "dtype": "int64", "value": 16000}],
             "outputs": ["output", "stateN"], "causal": True,
             # one call = one 512-sample chunk plus the 64 samples of context before it
             # (silero-vad's own wrapper prepends them), fixed at conversion with the rate
             "frame_size": 576, "constants": {"sr": 16000}, "state": ["state", "stateN"]}
        entries.append(cm.describe(e, OUT / dst))
    cm.update("silero", entries)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
