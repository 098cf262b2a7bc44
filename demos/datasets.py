"""Small real datasets shipped with nvmstream, loaded with numpy alone.

``load(name)`` returns a :class:`Dataset` for one of :data:`NAMES`:

================== ============================= ======= ===== ===== ==========================
name               x_train / x_test (float32)    classes train test  notes
================== ============================= ======= ===== ===== ==========================
basic_motions      [N, 100 steps, 6 channels]    4       40    40    UEA, smartwatch IMU
japanese_vowels    [N, 29 steps, 12 LPC cepstra] 9       270   370   UEA, zero-padded; lengths_*
italy_power_demand [N, 24 steps, 1]              2       67    1029  UCR, hourly power demand
digits             [N, 8 steps, 8 features]      10      1347  450   sklearn 8x8 digits / 16
keywords           [N, 98 frames, 40 log-mels]   10      1560  380   espeak-ng words; by voice
================== ============================= ======= ===== ===== ==========================

The files live in ``demos/data/`` and are made by ``demos/data/make_data.py`` (which needs aeon,
scikit-learn, espeak-ng and sox; this module needs none of them). Each file records its ``source``
and ``license``, available in ``Dataset.meta``. The keyword features are stored as float16 to keep
the file small and returned as float32; ``meta["frontend_params"]`` holds the
``FrontendParams.to_dict()`` of the front end that made them (runtime/frontend.py).
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DATA_DIR", "NAMES", "Dataset", "DatasetError", "load"]

DATA_DIR = Path(__file__).resolve().parent / "data"
NAMES = ("basic_motions", "japanese_vowels", "italy_power_demand", "digits", "keywords")
_REGENERATE = (
    "regenerate it with `python demos/data/make_data.py {name}` (see that script's header)"
)
_MAIN_KEYS = ("x_train", "y_train", "x_test", "y_test", "labels")


class DatasetError(ValueError):
    """A dataset file that is corrupt or does not have the expected contents."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """One train/test classification set of sequences, ``x`` shaped [N, T, features]."""

    name: str
    x_train: np.ndarray
    """float32 [N_train, T, F]."""
    y_train: np.ndarray
    """int64 [N_train], indices into ``labels``."""
    x_test: np.ndarray
    """float32 [N_test, T, F]."""
    y_test: np.ndarray
    """int64 [N_test], indices into ``labels``."""
    labels: tuple[str, ...]
    """Class names; ``labels[y]`` is the class of a sequence."""
    lengths_train: np.ndarray | None = None
    """int64 [N_train] valid steps per sequence (the rest is zero padding), or None if all T."""
    lengths_test: np.ndarray | None = None
    """int64 [N_test] valid steps per sequence, or None if all T."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Everything else in the file: ``source``, ``license``, ``description`` strings, per-sequence
    side information (e.g. ``voice_train``) and, for keywords, ``frontend_params`` (a dict)."""

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[2])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train {self.x_train.shape}, test {self.x_test.shape}, "
            f"{self.n_classes} classes)"
        )


def load(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Load dataset ``name`` (one of :data:`NAMES`) from ``data_dir`` (default demos/data/)."""
    if name not in NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(NAMES)}")
    path = (DATA_DIR if data_dir is None else Path(data_dir)) / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dataset file missing; " + _REGENERATE.format(name=name))
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError) as exc:
        raise DatasetError(
            f"{path}: cannot read dataset file ({exc}); " + _REGENERATE.format(name=name)
        ) from exc
    return _build(name, path, arrays)


def _build(name: str, path: Path, arrays: dict[str, np.ndarray]) -> Dataset:
    def fail(msg: str) -> DatasetError:
        return DatasetError(f"{path}: {msg}; " + _REGENERATE.format(name=name))

    missing = [k for k in _MAIN_KEYS if k not in arrays]
    if missing:
        raise fail(f"missing arrays {missing}")
    labels = tuple(str(v) for v in arrays.pop("labels").tolist())
    parts: dict[str, np.ndarray | None] = {}
    for split in ("train", "test"):
        x, y = arrays.pop(f"x_{split}"), arrays.pop(f"y_{split}")
        lengths = arrays.pop(f"lengths_{split}", None)
        if x.ndim != 3 or x.dtype.kind != "f":
            raise fail(f"x_{split} must be a float [N, T, F] array, got {x.dtype} {x.shape}")
        if y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
            raise fail(f"y_{split} must be int [{x.shape[0]}], got {y.dtype} {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= len(labels)):
            raise fail(f"y_{split} has values outside 0..{len(labels) - 1}")
        if lengths is not None:
            if lengths.shape != (x.shape[0],) or lengths.dtype.kind not in "iu":
                raise fail(f"lengths_{split} must be int [{x.shape[0]}]")
            if lengths.size and (lengths.min() < 1 or lengths.max() > x.shape[1]):
                raise fail(f"lengths_{split} has values outside 1..{x.shape[1]}")
            lengths = lengths.astype(np.int64)
        parts[f"x_{split}"] = np.ascontiguousarray(x, dtype=np.float32)
        parts[f"y_{split}"] = y.astype(np.int64)
        parts[f"lengths_{split}"] = lengths
    xtr, xte = parts["x_train"], parts["x_test"]
    assert xtr is not None and xte is not None
    if xtr.shape[1:] != xte.shape[1:]:
        raise fail(f"x_train {xtr.shape} and x_test {xte.shape} differ in [T, F]")
    meta: dict[str, Any] = {}
    for key, value in arrays.items():
        if value.ndim == 0:
            meta[key] = value.item()
        else:
            meta[key] = value
    if "frontend_params" in meta:
        try:
            meta["frontend_params"] = json.loads(meta["frontend_params"])
        except (TypeError, ValueError) as exc:
            raise fail(f"frontend_params is not valid JSON ({exc})") from exc
    return Dataset(
        name=name,
        x_train=parts["x_train"],  # type: ignore[arg-type]
        y_train=parts["y_train"],  # type: ignore[arg-type]
        x_test=parts["x_test"],  # type: ignore[arg-type]
        y_test=parts["y_test"],  # type: ignore[arg-type]
        labels=labels,
        lengths_train=parts["lengths_train"],
        lengths_test=parts["lengths_test"],
        meta=meta,
    )
