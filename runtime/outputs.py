"""Output files the CLI writes: exactly the path given, never half-written, never over an input.

Rules (docs/architecture.md, "CLI"):

- :func:`plan_output` is called *before* any work starts: it refuses a suffix the writer cannot
  honour, refuses a path that is one of the command's inputs (``convert m.onnx -o m.onnx``),
  and checks that the folder exists (or creates it when asked), so a long sweep never dies at
  the end because of its output path.
- :func:`write_bytes` / :func:`write_text` / :func:`write_with` write a temporary file in the
  same folder and rename it over the target: a failed or interrupted write leaves the old file
  (or nothing). The temporary is created with mode ``0o666`` filtered by the umask, like any
  ``open(path, "w")``, so outputs are not left ``0600`` as ``mkstemp`` would make them.
- ``-`` means standard output.
- :func:`provenance` is the block every JSON and CSV written by the CLI carries: nvmstream
  version, command line, model sha256, resolved device profile, seeds.

This module only writes what it is given; it prints nothing.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import secrets
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TextIO

STDOUT = "-"


class OutputError(ValueError):
    """An output path the CLI cannot or must not write (message names the path)."""


def is_stdout(path: str | os.PathLike | None) -> bool:
    return path is not None and os.fspath(path) == STDOUT


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def plan_output(path: str | os.PathLike, *, suffixes: Sequence[str] | None = None,
                inputs: Iterable[str | os.PathLike | None] = (), what: str = "output",
                make_dirs: bool = False, allow_stdout: bool = True) -> Path | None:
    """Check an output path before the work starts; returns the Path (None for ``-``).

    ``suffixes``: the suffixes the writer honours (e.g. ``(".npy", ".npz")``); another suffix is
    refused, never silently changed. ``inputs``: files the command reads; writing over one of
    them is refused. ``make_dirs``: create a missing folder instead of refusing.
    """
    text = os.fspath(path)
    if text == STDOUT:
        if not allow_stdout:
            raise OutputError(f"{what}: '-' (standard output) is not possible here; name a file")
        return None
    if not text:
        raise OutputError(f"{what}: empty path")
    p = Path(text)
    for inp in inputs:
        if inp is None or os.fspath(inp) == STDOUT:
            continue
        if _same_file(p, Path(os.fspath(inp))):
            raise OutputError(f"{p}: is also an input of this command; refusing to overwrite it "
                              f"(choose another {what} path)")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise OutputError(f"{p}: cannot write a {p.suffix or 'suffix-less'} file as {what}; "
                          f"use one of {', '.join(suffixes)}"
                          + (" or - for standard output" if allow_stdout else ""))
    if p.is_dir():
        raise OutputError(f"{p}: is a folder; {what} must be a file path")
    parent = p.parent
    if not parent.exists():
        if make_dirs:
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OutputError(f"{p}: cannot create folder {parent}: {e.strerror}") from None
        else:
            raise OutputError(f"{p}: folder {parent} does not exist")
    elif not parent.is_dir():
        raise OutputError(f"{p}: {parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{p}: folder {parent} is not writable")
    return p


def _open_temp(path: Path):
    """A new file next to ``path`` created with mode 0o666 & ~umask (what ``open`` does)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        return tmp, fd
    raise OutputError(f"{path}: cannot create a temporary file next to it")


def write_with(path: str | os.PathLike, writer: Callable[[io.BufferedWriter], None]) -> None:
    """Call ``writer(binary_file)`` on a temporary next to ``path``, then rename it to ``path``.

    ``path`` ``-`` writes to standard output (binary). The writer gets a file object, so
    writers such as ``numpy.save`` cannot change the file name (``np.save("y.txt")`` would
    write ``y.txt.npy``).
    """
    if is_stdout(path):
        out = sys.stdout.buffer
        writer(out)
        out.flush()
        return
    p = Path(os.fspath(path))
    tmp, fd = _open_temp(p)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    write_with(path, lambda f: f.write(data))


def write_text(path: str | os.PathLike, text: str) -> None:
    if is_stdout(path):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:     # pragma: no cover - numpy is a dependency
        pass
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    return str(o)


# ----------------------------------------------------------------------------------- provenance
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def version() -> str:
    from nvmstream import __version__
    return __version__


def provenance(*, model: str | os.PathLike | None = None, profile: Any = None,
               overrides: Sequence[str] | Mapping[str, Any] | None = None,
               seeds: Mapping[str, Any] | None = None, data: str | os.PathLike | None = None,
               argv: Sequence[str] | None = None, **extra: Any) -> dict[str, Any]:
    """What produced a result: a JSON-serialisable dict.

    ``profile``: a :class:`~nvmstream.devices.DeviceProfile` (stored resolved, every field) or
    a name/path (resolved here with ``overrides``). ``seeds``: named seeds (device, stream...).
    """
    out: dict[str, Any] = {
        "nvmstream_version": version(),
        "command": shlex.join(["nvmstream", *(sys.argv[1:] if argv is None else argv)]),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if model is not None:
        out["model"] = os.fspath(model)
        out["model_sha256"] = sha256_file(model) if os.path.isfile(model) else None
    if data is not None:
        out["data"] = os.fspath(data)
        out["data_sha256"] = sha256_file(data) if os.path.isfile(data) else None
    if profile is not None:
        if isinstance(profile, (str, os.PathLike)):
            from nvmstream.devices import load_profile
            ov = dict(overrides) if isinstance(overrides, Mapping) else list(overrides or [])
            profile = load_profile(os.fspath(profile), ov or None)
        out["profile"] = profile.name
        if overrides:
            out["overrides"] = (dict(overrides) if isinstance(overrides, Mapping)
                                else list(overrides))
        out["profile_resolved"] = profile.to_dict()
    if seeds:
        out["seeds"] = dict(seeds)
    out.update(extra)
    return out


#: what :func:`profile_sha256` hashes. 2: only the fields that differ from the
#: ``DeviceProfile()`` defaults. Bump it when an existing field's default changes (the
#: hash of a profile that relies on that default must change with it).
PROFILE_HASH_SCHEMA = 2
#: fields added after schema 1 (which hashed every field) was written into result CSVs, each
#: with a default that reproduces the behaviour before it existed; :func:`legacy_profile_sha256`
#: drops them (only when at their defaults) to recognise a schema-1 hash of the same profile
LEGACY_ADDED_FIELDS = ("vmm_noise.reference", "vmm_noise.position", "dac.range",
                       "adc.offset_lsb", "adc.gain_sd", "adc.inl_lsb", "tile.wire_ohm",
                       "energy.adc_retune_vectors", "drift.reference")


def _profile_defaults() -> dict[str, Any]:
    from nvmstream.devices.profile import DeviceProfile
    return DeviceProfile().to_dict()


def profile_sha256(resolved: Mapping[str, Any]) -> str:
    """sha256 of a resolved profile (``DeviceProfile.to_dict()``) reduced to the fields whose
    value differs from the ``DeviceProfile()`` default, plus the schema marker.

    Adding a profile field whose default keeps the old behaviour (the project's rule for new
    fields) leaves the hash of every existing profile unchanged, so ``sweep --resume`` still
    recognises results made before the field existed; any non-default value changes it."""
    dflt = _profile_defaults()
    diff: dict[str, Any] = {}
    for key, val in resolved.items():
        if isinstance(val, Mapping):
            d = {k: v for k, v in val.items()
                 if k not in dflt.get(key, {}) or dflt[key][k] != v}
            if d:
                diff[key] = d
        elif key not in dflt or dflt[key] != val:
            diff[key] = val
    text = json.dumps({"profile_hash_schema": PROFILE_HASH_SCHEMA, "fields": diff},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def legacy_profile_sha256(resolved: Mapping[str, Any]) -> str | None:
    """The schema-1 hash (every field) of ``resolved`` as written before the fields of
    :data:`LEGACY_ADDED_FIELDS` existed; None when one of them is not at its default (then no
    result made before it existed can match)."""
    dflt = _profile_defaults()
    old = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in resolved.items()}
    for name in LEGACY_ADDED_FIELDS:
        sec, fld = name.split(".")
        if old.get(sec, {}).get(fld, dflt[sec][fld]) != dflt[sec][fld]:
            return None
        old.get(sec, {}).pop(fld, None)
    return hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()


def csv_preamble(prov: Mapping[str, Any]) -> str:
    """Provenance as ``#`` comment lines for the top of a CSV file (one JSON line, so tools
    that read ``comment="#"`` skip it and it can be parsed back with :func:`read_csv_provenance`).
    The resolved profile is reduced to :func:`profile_sha256` to keep the line short."""
    p = dict(prov)
    if "profile_resolved" in p:
        p["profile_sha256"] = profile_sha256(p.pop("profile_resolved"))
        p["profile_hash_schema"] = PROFILE_HASH_SCHEMA
    return "# nvmstream provenance: " + json.dumps(p, default=_json_default) + "\n"


def read_csv_provenance(path: str | os.PathLike) -> dict[str, Any] | None:
    with open(path) as f:
        for line in f:
            if line.startswith("# nvmstream provenance: "):
                return json.loads(line[len("# nvmstream provenance: "):])
            if not line.startswith("#"):
                return None
    return None


def csv_rows(f: TextIO) -> Iterable[str]:
    """Lines of a CSV file without its ``#`` comment lines (for ``csv.DictReader``)."""
    return (line for line in f if not line.startswith("#"))
