"""The one data contract of every subcommand (convert, run, serve, stream, sweep, bench).

A data file is either

- ``X.npy``: one float array ``[N, T, F]`` (or ``[T, F]``: one sequence), no labels; or
- ``DATA.npz`` in the shipped layout (demos/data/*.npz): ``x_SPLIT [N, T, F]``,
  ``y_SPLIT [N]`` class indices, ``lengths_SPLIT [N]`` valid steps per sequence (the rest is
  zero padding), optional ``labels`` (class names); or the same without the split suffix
  (``x``, ``y``, ``lengths``); or an ``.npz`` holding exactly one array.

:func:`load_data` reads one split (``test`` for evaluation, ``train`` for calibration) and checks
shapes, so every subcommand accepts the same files and fails with the same one-line messages.

Calibration (:func:`resolve_calibration`): an explicit ``--calibration FILE`` (its ``train``
split, or ``x``), the word ``random`` (N(0, 1) inputs, explicitly asked for), or, when the ONNX
model's metadata names a shipped dataset (``task``), that dataset's training split. Otherwise
converting an ``.onnx`` is an error: calibrating on noise silently ruins accuracy (the keyword
model drops from 72% to 22-30%). ``nvmstream.convert`` keeps at most 64 sequences, a seeded
random subsample (seed 0), and the CLI says how many it used.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_CAL_SEQUENCES = 64        # nvmstream.converters.compile.MAX_CAL_SEQUENCES (not imported:
                              # that module pulls onnx)
RANDOM = "random"


class DataError(ValueError):
    """A data file that does not follow the contract (the message names file and array)."""


@dataclass(frozen=True, eq=False)
class Data:
    """One split of a data file."""

    x: np.ndarray
    """float32 [N, T, F]."""
    y: np.ndarray | None
    """int64 [N] class indices, or None (no labels)."""
    lengths: np.ndarray | None
    """int64 [N] valid steps per sequence, or None (every sequence has T steps)."""
    labels: tuple[str, ...] | None
    """Class names, if the file has them."""
    source: str
    """``path`` or ``path:array`` that x came from."""

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def head(self, k: int | None) -> "Data":
        """The first ``k`` sequences (all when k is None)."""
        if k is None or k >= self.n:
            return self
        return Data(self.x[:k], None if self.y is None else self.y[:k],
                    None if self.lengths is None else self.lengths[:k], self.labels,
                    self.source)

    def __repr__(self) -> str:
        return (f"Data({self.source!r}, x {list(self.x.shape)}, "
                f"labels {'yes' if self.y is not None else 'no'}, "
                f"lengths {'yes' if self.lengths is not None else 'no'})")


def _sniff(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK"):
        return "zip"
    return "other"


def _sniff_file(path: str, what: str, not_a_folder: str) -> str:
    """:func:`_sniff` of an existing regular file; a missing path (named with ``what`` it was
    for) or a folder (``path: is a folder, not_a_folder``) is a :class:`DataError`."""
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file ({what})")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, {not_a_folder}")
    return _sniff(path)


def load_data(path: str | os.PathLike, split: str = "test", *, what: str = "data",
              need_labels: bool = False) -> Data:
    """Read ``path`` under the data contract (module docstring); errors are :class:`DataError`
    with one line naming the file, the arrays found and what was expected."""
    path = os.fspath(path)
    kind = _sniff_file(path, what, f"not a .npy/.npz file ({what})")
    if kind == "other":
        raise DataError(f"{path}: not a .npy or .npz file ({what}; expected x [N, T, F] or the "
                        f"shipped .npz layout x_{split}, y_{split}, lengths_{split})")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npy/.npz ({what}): {e}") from None
    y = lengths = labels = None
    if isinstance(z, np.ndarray):
        x, src = z, path
    else:
        with z:
            keys = set(z.files)
            xk = next((k for k in (f"x_{split}", "x") if k in keys), None)
            if xk is None:
                arrays = [k for k in z.files if not k.startswith(("y", "lengths", "labels"))]
                if len(arrays) == 1:
                    xk = arrays[0]
                else:
                    raise DataError(f"{path}: no x_{split} or x array ({what}; has "
                                    f"{', '.join(sorted(keys)) or 'nothing'})")
            suffix = xk[1:] if xk.startswith("x_") else ""
            try:
                x = z[xk]
                if f"y{suffix}" in keys:
                    y = z[f"y{suffix}"]
                if f"lengths{suffix}" in keys:
                    lengths = z[f"lengths{suffix}"]
                if "labels" in keys:
                    labels = tuple(str(v) for v in z["labels"].tolist())
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
                raise DataError(f"{path}: cannot read array ({what}): {e}") from None
            src = f"{path}:{xk}"
    if x.dtype.kind not in "fiub":
        raise DataError(f"{src}: expected a numeric array, got dtype {x.dtype} ({what})")
    x = np.asarray(x, np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise DataError(f"{src}: expected [N, T, F] (or [T, F]), got shape {list(x.shape)} "
                        f"({what})")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{src}: empty array of shape {list(x.shape)} ({what})")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{src}: contains NaN or infinity ({what})")
    n = x.shape[0]
    if y is not None:
        y = np.asarray(y)
        if y.shape != (n,) or y.dtype.kind not in "iu":
            raise DataError(f"{path}: labels y{suffix} must be integers [{n}], got {y.dtype} "
                            f"{list(y.shape)}")
        y = y.astype(np.int64)
    if lengths is not None:
        lengths = np.asarray(lengths)
        if lengths.shape != (n,) or lengths.dtype.kind not in "iu":
            raise DataError(f"{path}: lengths{suffix} must be integers [{n}], got "
                            f"{lengths.dtype} {list(lengths.shape)}")
        if n and (lengths.min() < 1 or lengths.max() > x.shape[1]):
            raise DataError(f"{path}: lengths{suffix} outside 1..{x.shape[1]}")
        lengths = lengths.astype(np.int64)
    if need_labels and y is None:
        raise DataError(f"{src}: has no labels; {what} needs an .npz with x_{split}, y_{split} "
                        f"(and lengths_{split}), the layout of demos/data/*.npz")
    return Data(np.ascontiguousarray(x), y, lengths, labels, src)


def model_kind(path: str | os.PathLike) -> str:
    """``"nvm"`` (a compiled model: a zip) or ``"onnx"``, judged by content, not by suffix; a
    missing file, a folder or a NumPy array renamed ``.nvm`` is a :class:`DataError`."""
    path = os.fspath(path)
    kind = _sniff_file(path, "model", "not a model (.onnx or .nvm)")
    if kind == "npy":
        raise DataError(f"{path}: is a NumPy .npy array, not a model (.onnx or .nvm)")
    if kind == "zip":
        return "nvm"
    if path.endswith(".nvm"):
        raise DataError(f"{path}: not an nvmstream compiled model (not a zip file); make one "
                        f"with `nvmstream convert MODEL.onnx -o {Path(path).name}`")
    return "onnx"


# ---------------------------------------------------------------------------------- calibration
def shipped_data_dir() -> Path:
    """demos/data of the source tree (present in a checkout or editable install)."""
    return Path(__file__).resolve().parent.parent / "demos" / "data"


def onnx_task(path: str | os.PathLike) -> str | None:
    """The ``task`` metadata entry of an ONNX model (the shipped dataset it was trained on)."""
    try:
        import onnx
        m = onnx.load(os.fspath(path), load_external_data=False)
    except Exception:         # a broken model is reported by the converter, with its own words
        return None
    meta = {p.key: p.value for p in m.metadata_props}
    return meta.get("task") or None


@dataclass(frozen=True)
class Calibration:
    """What a conversion calibrates on: ``x`` (None = N(0, 1)) and a description."""

    x: np.ndarray | None
    source: str
    used: int
    available: int

    def describe(self) -> str:
        if self.x is None:
            return f"calibration: {self.source}"
        how = ("all" if self.used == self.available
               else f"a seeded random subsample (seed 0) of {self.available}")
        return f"calibration: {self.used} sequences ({how}) from {self.source}"

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "sequences_used": self.used,
                "sequences_available": self.available}


def _cal_from(x: np.ndarray, source: str) -> Calibration:
    return Calibration(x, source, min(MAX_CAL_SEQUENCES, x.shape[0]), x.shape[0])


def resolve_calibration(model_path: str | os.PathLike, spec: str | None, *,
                        fallback: Data | None = None, required: bool = True) -> Calibration:
    """The calibration set of an ``.onnx`` model (module docstring for the rule).

    ``spec``: a data file, ``"random"`` or None. ``fallback``: data to use when nothing else
    names a set (sweep: its own data file's train split). ``required``: with no set found,
    raise (True) or return N(0, 1) (False).
    """
    if spec == RANDOM:
        return Calibration(None, "random N(0, 1) inputs (--calibration random)", 0, 0)
    if spec:
        d = load_data(spec, "train", what="calibration")
        return _cal_from(d.x, d.source)
    if fallback is not None:
        return _cal_from(fallback.x, fallback.source)
    task = onnx_task(model_path)
    if task:
        f = shipped_data_dir() / f"{task}.npz"
        if f.is_file():
            d = load_data(f, "train", what="calibration")
            return _cal_from(d.x, f"{d.source} (named by the model's metadata task={task!r})")
        if required:
            raise DataError(f"{model_path}: its metadata names dataset {task!r} but {f} is not "
                            f"there; pass --calibration DATA.npz (or --calibration random)")
    if required:
        raise DataError(f"{model_path}: needs calibration data to set DAC/ADC ranges: pass "
                        f"--calibration X.npy or DATA.npz (its x_train), or --calibration random "
                        f"for N(0, 1) inputs (only right for standardised features)")
    return Calibration(None, "random N(0, 1) inputs (no calibration data given)", 0, 0)


def frontend_rate_hz(frontend: Any) -> int | None:
    """The sample rate a model's audio front end expects (None: no front end)."""
    if not frontend:
        return None
    if isinstance(frontend, str):
        frontend = json.loads(frontend)
    return int(frontend.get("sample_rate_hz", 16000))
