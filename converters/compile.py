"""IR -> CompiledModel: the int program (weight codes + scales) and its calibration.

``convert(onnx_path, calibration=x_cal)`` quantizes every crossbar matrix of the IR to signed
``weight_bits`` codes with per-output-channel scales (``devices.quant.quantize_weights``) and
keeps a calibration set from which the runtime fixes DAC and ADC ranges for whatever device
profile it is given (ranges depend on the profile's bits and tile size; see docs/calibration in
docs/architecture.md). The file format (``.nvm``) is one zip (numpy ``.npz``): a JSON header
with the IR's structure and metadata, the float weights, the codes packed two 4-bit codes per
byte (for ``weight_bits <= 4``; one per byte otherwise), the scales and the calibration set.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nvmstream.devices.quant import quantize_weights

from . import ir
from .conventions import Activation
from .errors import NvmConversionError, NvmInputError
from .onnx_import import load_ir

log = logging.getLogger(__name__)

FORMAT = "nvmstream-compiled-model"
FORMAT_VERSION = 1
MAX_CAL_SEQUENCES = 64
MAX_CAL_STEPS = 256


# ------------------------------------------------------------------------------- matrices
@dataclass(frozen=True, eq=False)
class MatrixSpec:
    """One crossbar matrix: ``W[out, in]`` (float) and which layer/direction/input it serves.

    ``role`` is ``"x"`` (the layer input), ``"h"`` (the recurrent state) or ``"rh"`` (GRU with
    linear_before_reset=0: R_h acting on r*h).
    """

    key: str            # unique name, e.g. "layer0/d0/x"
    layer: int          # index into Model.layers
    direction: int
    role: str
    W: np.ndarray       # [out, in] float32


def crossbar_matrices(model: ir.Model) -> list[MatrixSpec]:
    """Every matrix the model puts on crossbars, in execution order."""
    mats = []
    for k, l in enumerate(model.layers):
        if isinstance(l, ir.Recurrent):
            for d in range(l.num_directions):
                for role, w in l.crossbar_blocks(d):
                    mats.append(MatrixSpec(f"layer{k}/d{d}/{role}", k, d, role, w))
        elif isinstance(l, ir.Dense) and not _is_identity(l):
            mats.append(MatrixSpec(f"layer{k}/d0/x", k, 0, "x", l.W))
        elif isinstance(l, (ir.Conv1d, ir.FrameConv)):   # im2col: one matrix over a window
            mats.append(MatrixSpec(f"layer{k}/d0/x", k, 0, "x", l.im2col))
    return mats


def _is_identity(l: ir.Dense) -> bool:
    return l.W.shape[0] == l.W.shape[1] and np.array_equal(l.W, np.eye(l.W.shape[0],
                                                                         dtype=l.W.dtype))


# ------------------------------------------------------------------------------ compiled model
@dataclass(frozen=True, eq=False)
class CompiledModel:
    """The int program: IR + quantized codes per crossbar matrix + calibration data.

    Fields: ``model`` (the IR), ``weight_bits`` (signed code bits, 2..8), ``codes`` (matrix
    key -> int8 ``[out, in]``), ``scales`` (key -> float32 ``[out]``: weight = code x scale),
    ``calibration`` (float32 ``[N, T, F]`` inputs that fix DAC/ADC ranges per profile),
    ``calibration_source`` (where they came from), ``frontend`` (audio front-end parameters,
    speech models), ``labels`` (class names), ``meta`` (free-form, e.g. provenance).
    Make one with :func:`convert`, save with :meth:`save`, read with :func:`load`.
    """

    def __repr__(self) -> str:
        n = sum(int(q.size) for q in self.codes.values())
        src = (self.model.source or "model").split("/")[-1]
        cal = tuple(self.calibration.shape)
        return (f"CompiledModel({src}: {len(self.model.layers)} layers, {len(self.codes)} "
                f"crossbar matrices, {n} weights at {self.weight_bits}-bit, calibration "
                f"{cal[0]}x{cal[1]} ({self.calibration_source[:40]}), "
                f"{len(self.labels)} labels{', audio front end' if self.frontend else ''})")

    model: ir.Model
    weight_bits: int
    codes: Mapping[str, np.ndarray]          # key -> int8 [out, in]
    scales: Mapping[str, np.ndarray]         # key -> float32 [out]
    calibration: np.ndarray                  # [N, T, F] float32, batch-first
    calibration_source: str = "user"
    frontend: Mapping[str, Any] | None = None   # audio front-end parameters (speech models)
    labels: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def matrices(self) -> list[MatrixSpec]:
        return crossbar_matrices(self.model)

    @property
    def input_features(self) -> int:
        return self.model.input.features

    def save(self, path: str | os.PathLike) -> None:
        """Write the ``.nvm`` file atomically (temporary file + rename)."""
        save(self, path)


def convert(onnx_path: str | os.PathLike | ir.Model, calibration: np.ndarray | None = None, *,
            weight_bits: int = 4, seed: int = 0, frontend: Mapping[str, Any] | None = None,
            labels: tuple[str, ...] | list[str] | None = None,
            constants: Mapping[str, Any] | None = None,
            frame_size: int | None = None) -> CompiledModel:
    """Convert an ONNX model (or an IR) into a :class:`CompiledModel`.

    ``calibration``: real inputs ``[N, T, F]`` (or ``[T, F]``), batch-first, that fix the DAC and
    ADC ranges. Without one, ``N(0, 1)`` inputs (16 x 64 steps, seeded) are used and a warning
    is logged: ranges then suit standardised features only.
    ``constants``: graph inputs fixed at conversion (``{"sr": 16000}``; see ``load_ir``).
    ``frame_size``: a frame model's values per call when its input leaves them symbolic
    (silero-vad: 576; see ``load_ir``).
    """
    if isinstance(onnx_path, ir.Model):
        if constants or frame_size:
            raise NvmConversionError("constants= and frame_size= apply to an ONNX file, not to "
                                     "an IR model")
        model = onnx_path
    else:
        model = load_ir(onnx_path, constants, frame_size)
    for l in model.layers:
        if not isinstance(l, ir.ENGINE_LAYERS):
            raise NvmConversionError(f"layer {l.name!r} ({type(l).__name__}) runs in the float "
                                     f"IR only; the engine has no kernel for it yet",
                                     file=model.source or None)
    if not 2 <= weight_bits <= 8:
        raise NvmConversionError(f"weight_bits must be in 2..8, got {weight_bits}")
    if calibration is None:
        rng = np.random.default_rng(seed)
        calibration = rng.standard_normal((16, 64, model.input.features)).astype(np.float32)
        source = "synthetic N(0,1)"
        log.warning("no calibration data given: using N(0, 1) inputs; pass real data for "
                    "meaningful DAC/ADC ranges")
    else:
        calibration = np.asarray(calibration, np.float32)
        if calibration.ndim == 2:
            calibration = calibration[None]
        if calibration.ndim != 3 or calibration.shape[2] != model.input.features:
            raise NvmInputError(f"calibration data: expected [N, T, {model.input.features}], "
                                f"got shape {calibration.shape}")
        if not np.all(np.isfinite(calibration)):
            raise NvmInputError("calibration data contains NaN or infinity")
        if calibration.shape[0] > MAX_CAL_SEQUENCES or calibration.shape[1] > MAX_CAL_STEPS:
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(calibration.shape[0], min(MAX_CAL_SEQUENCES,
                                                               calibration.shape[0]),
                                     replace=False))
            calibration = calibration[idx, :MAX_CAL_STEPS]
        source = "user"
    codes, scales = {}, {}
    for m in crossbar_matrices(model):
        q, s = quantize_weights(m.W, weight_bits)
        codes[m.key], scales[m.key] = q, s
    meta_labels = model.metadata.get("labels")
    if labels is None and meta_labels:
        try:
            labels = tuple(json.loads(meta_labels))
        except ValueError:
            labels = tuple(meta_labels.split(","))
    if frontend is None and model.metadata.get("frontend"):
        frontend = json.loads(model.metadata["frontend"])
    return CompiledModel(model=model, weight_bits=weight_bits, codes=codes, scales=scales,
                         calibration=np.ascontiguousarray(calibration),
                         calibration_source=source, frontend=frontend,
                         labels=tuple(labels or ()))


# ------------------------------------------------------------------------------ serialization
def pack_int4(codes: np.ndarray) -> np.ndarray:
    """Signed 4-bit codes (-8..7) -> bytes, two per byte (low nibble first)."""
    flat = (codes.astype(np.int16).reshape(-1) & 0xF).astype(np.uint8)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    lo = (packed & 0xF).astype(np.int8)
    hi = (packed >> 4).astype(np.int8)
    flat = np.empty(packed.size * 2, np.int8)
    flat[0::2], flat[1::2] = lo, hi
    flat = np.where(flat > 7, flat - 16, flat).astype(np.int8)
    n = int(np.prod(shape))
    return flat[:n].reshape(shape)


def _encode(obj: Any, arrays: dict[str, np.ndarray], prefix: str) -> Any:
    if isinstance(obj, np.ndarray):
        key = f"a/{prefix}"
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, Activation):
        return {"__act__": [obj.name, obj.alpha, obj.beta]}
    if dataclasses.is_dataclass(obj):
        return {"__type__": type(obj).__name__,
                **{f.name: _encode(getattr(obj, f.name), arrays, f"{prefix}.{f.name}")
                   for f in dataclasses.fields(obj)}}
    if isinstance(obj, (list, tuple)):
        return {"__tuple__": [_encode(v, arrays, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, Mapping):
        return {"__map__": {k: _encode(v, arrays, f"{prefix}.{k}") for k, v in obj.items()}}
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return obj


_TYPES = {c.__name__: c for c in (ir.Recurrent, ir.Dense, ir.Elementwise, ir.Softmax,
                                  ir.FeatureSlice, ir.FeatureConcat, ir.LayerNorm, ir.Conv1d,
                                  ir.FrameConv, ir.Binary, ir.Unary, ir.ReduceMean, ir.FeaturePad,
                                  ir.StepMask,
                                  ir.StateInit, ir.SeqInput,
                                  ir.AuxInput, ir.Output, ir.Model)}


def _decode(obj: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(obj, dict):
        if "__array__" in obj:
            return arrays[obj["__array__"]]
        if "__act__" in obj:
            n, a, b = obj["__act__"]
            return Activation(n, a, b)
        if "__tuple__" in obj:
            return tuple(_decode(v, arrays) for v in obj["__tuple__"])
        if "__map__" in obj:
            return {k: _decode(v, arrays) for k, v in obj["__map__"].items()}
        if "__type__" in obj:
            cls = _TYPES[obj["__type__"]]
            return cls(**{k: _decode(v, arrays) for k, v in obj.items() if k != "__type__"})
    return obj


def save(prog: CompiledModel, path: str | os.PathLike) -> None:
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    header = {
        "format": FORMAT, "version": FORMAT_VERSION,
        "model": _encode(prog.model, arrays, "model"),
        "weight_bits": prog.weight_bits,
        "calibration_source": prog.calibration_source,
        "frontend": prog.frontend, "labels": list(prog.labels), "meta": dict(prog.meta),
        "codes": {},
    }
    for k, q in prog.codes.items():
        packed = prog.weight_bits <= 4
        arrays[f"codes/{k}"] = pack_int4(q) if packed else q.astype(np.int8)
        arrays[f"scales/{k}"] = prog.scales[k]
        header["codes"][k] = {"shape": list(q.shape), "packed_int4": packed}
    arrays["calibration"] = prog.calibration
    buf = io.BytesIO()
    np.savez_compressed(buf, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8),
                        **{k.replace("/", "|"): v for k, v in arrays.items()})
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load(path: str | os.PathLike) -> CompiledModel:
    """Read a ``.nvm`` file written by :func:`save` (errors name the file and the problem)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise NvmConversionError("no such file", file=path)
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k.replace("|", "/"): z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise NvmConversionError(f"not an nvmstream compiled model ({type(e).__name__}: {e})",
                                 file=path) from None
    try:
        header = json.loads(bytes(raw.pop("__header__")).decode())
    except (KeyError, ValueError) as e:
        raise NvmConversionError(f"not an nvmstream compiled model (no header: {e})",
                                 file=path) from None
    if header.get("format") != FORMAT:
        raise NvmConversionError(f"not an nvmstream compiled model (format "
                                 f"{header.get('format')!r})", file=path)
    if header.get("version") != FORMAT_VERSION:
        raise NvmConversionError(f"compiled-model version {header.get('version')} is not "
                                 f"supported (this nvmstream reads {FORMAT_VERSION})", file=path)
    model = _decode(header["model"], raw)
    codes, scales = {}, {}
    for k, info in header["codes"].items():
        shape = tuple(info["shape"])
        a = raw[f"codes/{k}"]
        codes[k] = unpack_int4(a, shape) if info["packed_int4"] else a.reshape(shape)
        scales[k] = raw[f"scales/{k}"]
    return CompiledModel(model=model, weight_bits=header["weight_bits"], codes=codes,
                         scales=scales, calibration=raw["calibration"],
                         calibration_source=header["calibration_source"],
                         frontend=header.get("frontend"), labels=tuple(header.get("labels", ())),
                         meta=header.get("meta", {}))
