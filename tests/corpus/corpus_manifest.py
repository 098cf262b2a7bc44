"""The corpus manifest (``tests/corpus/manifest.json``) and the helpers its scripts and tests
share. Needs only numpy and onnx (no torch, no TensorFlow).

Every entry: ``file`` (relative to tests/corpus), ``source`` (framework, version, exporter),
``model``, ``inputs`` (name and dims: ``"B"`` batch, ``"T"`` time, or ints), ``outputs``,
``causal``; a frame model (one call per step, silero-vad) also ``frame_size`` (values per
call), ``constants`` (inputs fixed at conversion) and ``state`` (its state input and output
names, fed back call to call by the onnxruntime reference); a Keras Masking model
``mask_value`` (its inputs get masked frames: :func:`mask_frames`); from the file: ``opset``, ``ir_version``, ``ops``, ``bytes``; or ``export_error``
when the exporter failed. ``check_corpus.py`` adds ``status`` ("converts" or the converter's
error) and ``max_rel_err`` against onnxruntime.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"


def seed_of(name: str) -> int:
    h = 0
    for ch in name.encode():
        h = (h * 131 + ch) % 2_147_483_647
    return h


def all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from all_nodes(g)


def describe(entry: dict, path: Path) -> dict:
    m = onnx.load(str(path), load_external_data=False)
    ops = []
    for n in all_nodes(m.graph):
        op = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        if op not in ops:
            ops.append(op)
    entry["opset"] = next(i.version for i in m.opset_import if i.domain in ("", "ai.onnx"))
    entry["ir_version"] = int(m.ir_version)
    entry["ops"] = ops
    entry["bytes"] = os.path.getsize(path)
    data = path.with_name(path.name + ".data")
    if data.exists():
        entry["external_data"] = data.name
        entry["bytes"] += os.path.getsize(data)
    return entry


def load() -> list[dict]:
    if not MANIFEST.exists():
        return []
    return json.loads(MANIFEST.read_text())["models"]


def save(entries: list[dict]) -> None:
    entries = sorted(entries, key=lambda e: e["file"])
    MANIFEST.write_text(json.dumps({"generator": "tests/corpus/make_*.py, check_corpus.py",
                                    "models": entries}, indent=1) + "\n")


def update(folder: str, entries: list[dict]) -> None:
    """Replace the manifest's entries under ``folder/`` with ``entries`` (keeping status)."""
    old = {e["file"]: e for e in load()}
    keep = [e for f, e in old.items() if not f.startswith(folder + "/")]
    for e in entries:
        prev = old.get(e["file"], {})
        for k in ("status", "max_rel_err", "streams"):
            if k in prev and k not in e:
                e[k] = prev[k]
    save(keep + entries)


def feeds(entry: dict, batch: int, time: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded N(0,1) inputs for every graph input (states scaled to 0.5)."""
    rng = np.random.default_rng(seed)
    out = {}
    for inp in entry["inputs"]:
        if "value" in inp:          # a fixed scalar such as a sample rate
            out[inp["name"]] = np.array(inp["value"], dtype=inp.get("dtype", "float32"))
            continue
        shape = [batch if d == "B" else time if d == "T" else int(d) for d in inp["dims"]]
        if inp is entry["inputs"][0] and entry.get("frame_size"):
            shape = [batch, time, int(entry["frame_size"])]   # a frame model: T calls
        scale = 1.0 if inp is entry["inputs"][0] else 0.5
        out[inp["name"]] = (scale * rng.standard_normal(shape)).astype(np.float32)
    if "mask_value" in entry:
        mask_frames(out[entry["inputs"][0]["name"]], float(entry["mask_value"]))
    return out


def mask_frames(x: np.ndarray, value: float) -> None:
    """Keras Masking models (``mask_value`` in the entry): frames of ``x[B, T, F]`` set to the
    mask value in the middle of every row, at the end (row 0: the last, row 1: the last two),
    at the start of the last row, and one frame that only partly equals it (not masked)."""
    b, t = x.shape[:2]
    if t >= 3:
        x[:, t // 2] = value
        x[0, 1, : x.shape[2] // 2] = value
    x[0, -1] = value
    if b > 1:
        x[1, max(t - 2, 0):] = value
        x[-1, 0] = value


def fixed_time(entry: dict) -> int | None:
    """The fixed time length of a model whose exporter unrolled the sequence (or None)."""
    return entry.get("fixed_time")
