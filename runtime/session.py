"""An onnxruntime-style session over the emulated engine.

    import nvmstream as nvm
    sess = nvm.InferenceSession("model.onnx", "pcm-1d", calibration=x_train)
    [inp] = sess.get_inputs()                 # NodeArg(name='x', shape=['batch', 'time', 12], ...)
    y, = sess.run(None, {inp.name: x})        # outputs in the ONNX model's own shapes
    sess.report()                             # energy/latency of that run only

Code written for ``onnxruntime.InferenceSession`` runs unchanged on an emulated analog chip:
``run(output_names, input_feed)`` takes and returns arrays in the ONNX model's own layout
(time-major or batch-first, final states ``[D, B, H]``, ``sequence_lens`` and initial states as
inputs). With the ``ideal`` profile the results equal onnxruntime's to float32 rounding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

_AXIS_NAMES = {"B": "batch", "T": "time"}


@dataclass(frozen=True)
class NodeArg:
    """An input or output description, as onnxruntime's ``NodeArg``: ``name``, ``shape`` (ints
    and symbolic names such as ``'batch'``, ``'time'``) and ``type`` (``'tensor(float)'``)."""

    name: str
    shape: list
    type: str = "tensor(float)"


class InferenceSession:
    """A compiled model programmed onto an emulated device, behind onnxruntime's interface.

    Parameters
    ----------
    model:
        A :class:`~nvmstream.CompiledModel`, a ``.nvm`` path, or an ``.onnx`` path (converted
        with ``calibration``).
    profile:
        Device profile name or ``.toml`` path, or a :class:`~nvmstream.Device` (default
        ``"ideal"``: the float reference, equal to onnxruntime).
    seed:
        Device seed (programming noise, faults, drift draws). Default 0.
    votes:
        Noisy replicas per sequence whose outputs are averaged (default 1).
    overrides:
        Profile overrides, e.g. ``{"adc.bits": 6}`` or ``["adc.bits=6"]``.
    age_s:
        Device age in seconds for drift (default: the profile's ``drift.age_s``).
    calibration:
        ``[N, T, F]`` inputs for converting an ``.onnx`` model (see ``nvm.convert``).
    stream_seed:
        Row ``b`` of every ``run`` uses stream seed ``stream_seed + b`` (per-read noise).
    """

    def __init__(self, model: Any, profile: Any = "ideal", *, seed: int = 0, votes: int = 1,
                 overrides: Mapping[str, Any] | Sequence[str] | None = None,
                 age_s: float | None = None, calibration: np.ndarray | None = None,
                 stream_seed: int = 0, providers: Any = None) -> None:
        import nvmstream as nvm
        if isinstance(model, (str, os.PathLike)):
            p = os.fspath(model)
            with open(p, "rb") as f:
                is_nvm = f.read(2) == b"PK"
            model = nvm.load(p) if is_nvm else nvm.convert(p, calibration=calibration)
        if isinstance(profile, nvm.Device):
            device = profile
        else:
            device = nvm.Device(profile, seed=seed, age_s=age_s, overrides=overrides or None)
        self.engine = nvm.Engine(model, device, votes=votes)
        self.prog = model
        self.stream_seed = int(stream_seed)
        self._ir = model.model
        self._last = None

    def __repr__(self) -> str:
        e = self.engine
        return (f"InferenceSession({self._ir.input.name}: {len(self.get_inputs())} input(s), "
                f"{len(self.get_outputs())} output(s), profile {e.device.profile.name!r}, "
                f"seed {e.device.seed}, votes {e.votes})")

    # -------------------------------------------------------------------- onnxruntime interface
    def get_inputs(self) -> list[NodeArg]:
        """The sequence input (ONNX axis order) then ``sequence_lens``/initial-state inputs."""
        i = self._ir.input
        axes = ("B", "F") if i.frame else i.axes      # a frame model: one frame per call
        out = [NodeArg(i.name, [_AXIS_NAMES.get(a, i.features) for a in axes])]
        seen = set()
        for a in self._ir.aux_inputs:
            if a.name in seen:           # a packed state feeds h and c
                continue
            seen.add(a.name)
            shape = [_AXIS_NAMES.get(s, s) if isinstance(s, str) else int(s) for s in a.shape]
            out.append(NodeArg(a.name, shape, "tensor(int32)" if a.role == "sequence_lens"
                               else "tensor(float)"))
        return out

    def get_outputs(self) -> list[NodeArg]:
        """Every model output with its ONNX shape (``'batch'``/``'time'`` symbolic)."""
        out = []
        for o in self._ir.outputs:
            shape = [_AXIS_NAMES.get(a, 1 if a == "1" else s) for a, s in zip(o.axes, o.sizes)]
            out.append(NodeArg(o.name, shape))
        return out

    def get_modelmeta(self) -> dict[str, str]:
        """The ONNX model's metadata (``metadata_props``)."""
        return dict(self._ir.metadata)

    def get_providers(self) -> list[str]:
        """``["NvmstreamEmulatorProvider"]``: the one execution provider (onnxruntime API)."""
        return ["NvmstreamEmulatorProvider"]

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray],
            run_options: Any = None) -> list[np.ndarray]:
        """Run whole sequences; returns the outputs named (all when None), in ONNX shapes.

        Energy and latency of this call alone: :meth:`report`."""
        from nvmstream.converters import ir
        from nvmstream.converters.errors import NvmInputError
        m = self._ir
        names = [o.name for o in m.outputs]
        want = names if output_names is None else list(output_names)
        unknown = [n for n in want if n not in names]
        if unknown:
            raise NvmInputError(f"unknown output(s) {unknown}; the model's outputs: {names}")
        feeds = dict(input_feed)
        if m.input.name not in feeds:
            raise NvmInputError(f"input {m.input.name!r} missing from the feed (got "
                                f"{sorted(feeds)})")
        x = np.asarray(feeds.pop(m.input.name), np.float32)
        if m.input.frame:
            return self._run_frames(want, x, feeds)
        if x.ndim != 3:
            raise NvmInputError(f"input {m.input.name!r}: expected a 3-D tensor with axes "
                                f"{''.join(m.input.axes)}, got shape {x.shape}")
        time_major = m.input.axes[0] == "T"
        x_btf = np.swapaxes(x, 0, 1) if time_major else x
        known = {a.name for a in m.aux_inputs}
        extra = [k for k in feeds if k not in known]
        if extra:
            raise NvmInputError(f"unknown input(s) {extra}; the model's inputs: "
                                f"{[i.name for i in self.get_inputs()]}")
        lens = None
        for a in m.aux_inputs:
            if a.role == "sequence_lens" and a.name in feeds:
                lens = np.asarray(feeds[a.name], np.int64).reshape(-1)
        self.engine.reset_ledger()
        outs = self.engine.run_all(x_btf, seed=self.stream_seed, **feeds)
        self._last = self.engine.report()
        result = []
        by_name = {o.name: o for o in m.outputs}
        for n in want:
            o, a = by_name[n], outs[n]
            if m.causal:       # per-step outputs drop a valid Conv's undefined steps
                a = ir._format_output(o, np.ascontiguousarray(ir.onnx_steps(o, a)), lens)
            elif "T" in o.axes and o.axes.index("T") == 0 and o.axes.index("B") == 1:
                a = np.swapaxes(a, 0, 1)          # run_all gives batch first; ONNX is not
            result.append(np.ascontiguousarray(a))
        return result

    def _run_frames(self, want: list[str], x: np.ndarray, feeds: dict) -> list[np.ndarray]:
        """A frame model: ``x[B, F]`` is one call (ONNX shapes), ``x[B, T, F]`` ``T`` calls with
        the state carried (every output stacked per call on a new first axis)."""
        from nvmstream.converters import ir
        from nvmstream.converters.errors import NvmInputError
        m = self._ir
        if x.ndim not in (2, 3):
            raise NvmInputError(f"input {m.input.name!r}: expected one frame [batch, "
                                f"{m.input.features}] or calls [batch, calls, "
                                f"{m.input.features}], got shape {x.shape}")
        one = x.ndim == 2
        self.engine.reset_ledger()
        outs = self.engine.run_all(x[:, None] if one else x, seed=self.stream_seed, **feeds)
        self._last = self.engine.report()
        by_name = {o.name: o for o in m.outputs}
        result = []
        for n in want:
            a = outs[n]
            steps = [ir.format_frame_output(by_name[n], np.ascontiguousarray(a[:, t]))
                     for t in range(a.shape[1])]
            result.append(steps[0] if one else np.stack(steps))
        return result

    def report(self):
        """Energy/latency report of the last :meth:`run` only (an ``InferenceReport``)."""
        if self._last is None:
            raise RuntimeError("no run yet: call run() first")
        return self._last
