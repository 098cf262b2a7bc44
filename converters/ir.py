"""The typed graph IR and its float32 reference executor.

The IR knows nothing of the exporter that made the ONNX file. Every tensor inside it is a
*per-step* array ``[B, T, F]`` (batch, time, features); ONNX's own axis orders (time-major,
direction axes, last-step selections, final states) are kept as *views* on the graph outputs and
applied only when results are handed back in ONNX form.

Layers run over a chunk of time steps with carried state, one step at a time with identical
arithmetic, so a whole sequence and the same sequence fed one step at a time give bit-identical
results for causal (forward-only) models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Mapping, Union

import numpy as np

from .conventions import GATES, Activation, gate_slice
from .errors import NvmInputError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- layers
@dataclass(frozen=True, eq=False)
class StateInit:
    """Initial recurrent state: a constant ``value[D, B, H]`` or a model input named ``input``
    (rows ``[start, stop)`` of its first axis when the input holds several layers' states or
    packs h and c, as the dynamo exporter's ``Slice(h0)`` and silero's ``state`` do)."""

    value: np.ndarray | None = None
    input: str | None = None
    rows: tuple[int, int] | None = None

    def read(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """This state's ``[D, B, H]`` float32 array (from ``feeds`` for an input)."""
        if self.input is None:
            return self.value
        if self.input not in feeds:     # a frame model's state input not given: zeros
            return None
        v = np.asarray(feeds[self.input], np.float32)
        return v if self.rows is None else v[self.rows[0]:self.rows[1]]


@dataclass(frozen=True, eq=False)
class Recurrent:
    """One ONNX LSTM/GRU/RNN node, weights split per direction, gates in ONNX order."""

    name: str
    kind: str                       # "LSTM" | "GRU" | "RNN"
    input_size: int                 # I
    hidden_size: int                # H
    direction: str                  # "forward" | "reverse" | "bidirectional"
    W: np.ndarray                   # [D, G*H, I] float32
    R: np.ndarray                   # [D, G*H, H] float32
    Wb: np.ndarray                  # [D, G*H] float32
    Rb: np.ndarray                  # [D, G*H] float32
    P: np.ndarray | None            # [D, 3*H] peepholes i, o, f (LSTM only)
    activations: tuple[tuple[Activation, ...], ...]   # per direction
    clip: float | None              # cell clip threshold applied to activation inputs
    input_forget: bool              # LSTM: couple input and forget gate (f = 1 - i)
    linear_before_reset: bool       # GRU
    x: str                          # input tensor [B, T, I]
    y: str                          # per-step hidden output [B, T, D*H] (0 past a row's length)
    c: str | None = None            # per-step cell state [B, T, D*H] (LSTM, when Y_c is used)
    sequence_lens: str | None = None          # model input name or None
    sequence_lens_value: np.ndarray | None = None   # constant lengths [B]
    initial_h: StateInit | None = None
    initial_c: StateInit | None = None
    mask: str | None = None         # per-step mask [B, T, 1] (1 run, 0 hold): a StepMask output

    @property
    def num_directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1

    @property
    def gates(self) -> int:
        return GATES[self.kind]

    @property
    def causal(self) -> bool:
        return self.direction == "forward"

    @property
    def out_features(self) -> int:
        return self.num_directions * self.hidden_size

    @property
    def macs_per_step(self) -> int:
        g, h, i = self.gates, self.hidden_size, self.input_size
        return self.num_directions * g * h * (i + h)

    def gate_slice(self, gate: str) -> slice:
        """Rows of ``gate`` in ``W[d]``, ``R[d]``, ``Wb[d]``, ``Rb[d]`` (conventions.GATE_ORDER)."""
        return gate_slice(self.kind, gate, self.hidden_size)

    def crossbar_blocks(self, d: int) -> list[tuple[str, np.ndarray]]:
        """The crossbar mapping of direction ``d``, defined once (used by the compiler, the
        plan, inspect and the ledger): ``(role, W[out, in])`` with role ``x`` (fed by the
        layer input), ``h`` (fed by h_{t-1}) or ``rh`` (GRU with linear_before_reset=0: the
        candidate's recurrent rows, fed by r_t * h_{t-1}, so they sit on their own tiles)."""
        if self.kind == "GRU" and not self.linear_before_reset:
            zr = slice(self.gate_slice("z").start, self.gate_slice("r").stop)
            assert zr.stop - zr.start == 2 * self.hidden_size  # z, r adjacent
            return [("x", self.W[d]), ("h", self.R[d][zr]), ("rh", self.R[d][self.gate_slice("h")])]
        return [("x", self.W[d]), ("h", self.R[d])]

    def matrices(self) -> list[tuple[str, int, int]]:
        """(role, rows_out, cols_in) of every matrix one direction puts on crossbars."""
        return [(role, int(w.shape[0]), int(w.shape[1])) for role, w in self.crossbar_blocks(0)]

    @cached_property
    def _wt(self) -> list[np.ndarray]:
        return [np.ascontiguousarray(self.W[d].T) for d in range(self.num_directions)]

    @cached_property
    def _rt(self) -> list[np.ndarray]:
        return [np.ascontiguousarray(self.R[d].T) for d in range(self.num_directions)]

    @cached_property
    def _bias(self) -> list[np.ndarray]:
        return [(self.Wb[d] + self.Rb[d]).astype(np.float32) for d in range(self.num_directions)]


@dataclass(frozen=True, eq=False)
class Dense:
    """``y = x @ W.T + b`` on the feature axis; ``W[out, in]`` as it sits on a crossbar."""

    name: str
    W: np.ndarray                   # [O, F] float32
    b: np.ndarray | None            # [O] float32
    x: str
    y: str

    @property
    def in_features(self) -> int:
        return int(self.W.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.W.shape[0])

    @property
    def macs_per_step(self) -> int:
        return int(self.W.size)

    @cached_property
    def _wt(self) -> np.ndarray:
        return np.ascontiguousarray(self.W.T)


@dataclass(frozen=True, eq=False)
class Elementwise:
    """A pointwise activation (Relu, Sigmoid, Tanh) on every feature."""

    name: str
    fn: Activation
    x: str
    y: str


@dataclass(frozen=True, eq=False)
class Softmax:
    """Softmax (or LogSoftmax when ``log``) over the feature axis."""

    name: str
    log: bool
    x: str
    y: str


@dataclass(frozen=True, eq=False)
class FeatureSlice:
    """``y = x[..., start:stop]`` (e.g. one direction of a bidirectional state)."""

    name: str
    start: int
    stop: int
    x: str
    y: str


@dataclass(frozen=True, eq=False)
class FeatureConcat:
    """``y = concat(xs, axis=features)`` (e.g. the final states of stacked layers)."""

    name: str
    xs: tuple[str, ...]
    y: str


@dataclass(frozen=True, eq=False)
class LayerNorm:
    """ONNX LayerNormalization over the feature axis (digital periphery: no crossbar form):
    ``y = (x - mean) / sqrt(var + epsilon) * scale + bias`` per step, in float32 as onnxruntime
    computes it (``stash_type`` 1)."""

    name: str
    scale: np.ndarray               # [F] float32
    bias: np.ndarray | None         # [F] float32
    epsilon: float
    x: str
    y: str


class _ConvKernel:
    """What both conv layers derive from their kernel ``W[O, C, K]`` (a mixin: the dataclasses
    below hold ``W``)."""

    W: np.ndarray

    @property
    def taps(self) -> int:
        return int(self.W.shape[2])

    @property
    def channels(self) -> int:
        return int(self.W.shape[1])

    @property
    def out_channels(self) -> int:
        return int(self.W.shape[0])

    @cached_property
    def im2col(self) -> np.ndarray:
        """The kernel as it sits on the crossbar, ``[O, K*C]``: column ``j*C + c`` holds
        ``W[:, c, j]`` (tap-major: a window lays out its frames, or a patch its positions,
        oldest/first first)."""
        return np.ascontiguousarray(self.W.transpose(0, 2, 1).reshape(self.W.shape[0], -1))


@dataclass(frozen=True, eq=False)
class Conv1d(_ConvKernel):
    """ONNX Conv over the time axis (a Conv1d front end), stride 1, causal: the output at step
    ``t`` is aligned to the last input frame it uses, ``y[t] = b + sum_j W[:, :, j] x[t - (K-1-j)
    * dilation]``, with ``pad_begin`` zero frames before the sequence (ONNX's begin padding) and
    earlier frames not existing: the first ``delay = (K-1)*dilation - pad_begin`` outputs are
    not defined (the ONNX output is shorter by that much) and layers after it start there.
    Streaming keeps the last ``(K-1)*dilation`` frames. On the chip it is im2col: a window
    of ``K`` frames (digital, a ring of the last frames) times the crossbar matrix
    :attr:`im2col` ``[O, K*C]``. With ``stride`` s > 1 (a keyword spotter decimating time) the
    ONNX output ``k`` is step ``delay + k*s``: only every s-th step from ``delay`` on is
    defined (``Model.strides``), recurrent layers after it step there and hold their state
    in between (emitting the held state), and ONNX-shaped outputs take those steps."""

    name: str
    W: np.ndarray                   # [O, C, K] float32
    b: np.ndarray | None            # [O] float32
    dilation: int
    pad_begin: int
    x: str
    y: str
    stride: int = 1

    @property
    def history(self) -> int:
        return (self.W.shape[2] - 1) * self.dilation

    @property
    def delay(self) -> int:
        return self.history - self.pad_begin

    @property
    def in_features(self) -> int:
        """Width of the crossbar matrix's input: the window of ``K`` frames."""
        return self.taps * self.channels

    @property
    def out_features(self) -> int:
        return int(self.W.shape[0])

    @property
    def macs_per_step(self) -> int:
        return int(self.W.size)

    def windows(self, x: np.ndarray, skip: int = 0) -> np.ndarray:
        """``x[B, T, C]`` (from the start of a stream) -> the windows ``[B, T, K*C]`` the
        crossbar reads, frames before the start and the input's ``skip`` undefined leading
        frames zero."""
        b, t, c = x.shape
        x = np.concatenate([np.zeros_like(x[:, :skip]), x[:, skip:]], 1)
        xh = np.concatenate([np.zeros((b, self.history, c), x.dtype), x], 1)
        return np.concatenate([xh[:, j * self.dilation:j * self.dilation + t]
                               for j in range(self.taps)], axis=2)


@dataclass(frozen=True, eq=False)
class FrameConv(_ConvKernel):
    """ONNX Conv over the positions *within* one frame (a frame model's front end: silero-vad's
    STFT basis and encoder). The frame is ``C`` channels of ``positions`` values, flattened
    channel-major as ONNX lays out ``[C, P]``; the output is ``O`` channels of
    :attr:`out_positions`, ``y[o, p] = b[o] + sum_{c,j} W[o, c, j] x[c, p*stride + j*dilation -
    pad_begin]`` (zero outside the frame). On the chip it is im2col: the patch of every output
    position (digital gather) times the crossbar matrix :attr:`im2col` ``[O, K*C]``, the same
    tiles read once per position."""

    name: str
    W: np.ndarray                   # [O, C, K] float32
    b: np.ndarray | None            # [O] float32
    stride: int
    dilation: int
    pad_begin: int
    pad_end: int
    positions: int                  # P, the input's positions per channel
    x: str
    y: str

    @property
    def out_positions(self) -> int:
        span = self.positions + self.pad_begin + self.pad_end - (self.taps - 1) * self.dilation
        return (span - 1) // self.stride + 1

    @property
    def patch(self) -> int:
        """Width of the crossbar matrix's input: one output position's ``K*C`` values."""
        return self.taps * self.channels

    @property
    def in_features(self) -> int:
        return self.channels * self.positions

    @property
    def out_features(self) -> int:
        return self.out_channels * self.out_positions

    @property
    def macs_per_step(self) -> int:
        return int(self.W.size) * self.out_positions

    @cached_property
    def patch_index(self) -> np.ndarray:
        """``[P_out, K*C]`` int64: the flat input index each patch value reads, -1 for the
        zero padding (the gather the digital periphery does)."""
        idx = np.full((self.out_positions, self.patch), -1, np.int64)
        C = self.channels
        for p in range(self.out_positions):
            for j in range(self.taps):
                q = p * self.stride + j * self.dilation - self.pad_begin
                if 0 <= q < self.positions:
                    idx[p, j * C:(j + 1) * C] = np.arange(C) * self.positions + q
        return idx

    def patches(self, x: np.ndarray) -> np.ndarray:
        """``x[..., C*P]`` -> the patches ``[..., P_out, K*C]`` the crossbar reads."""
        xz = np.concatenate([x, np.zeros(x.shape[:-1] + (1,), x.dtype)], -1)
        return xz[..., self.patch_index]          # index -1 reads the appended zero


@dataclass(frozen=True, eq=False)
class Binary:
    """``y = a (+|-|*) b`` of two run-time tensors of the same width (digital periphery)."""

    name: str
    op: str                         # "add" | "sub" | "mul"
    xs: tuple[str, str]
    y: str


@dataclass(frozen=True, eq=False)
class Unary:
    """``y = sqrt(x)`` or ``y = x ** p`` (ONNX Sqrt, Pow with a constant exponent) per feature
    (digital periphery)."""

    name: str
    op: str                         # "sqrt" | "pow"
    p: float
    x: str
    y: str


@dataclass(frozen=True, eq=False)
class ReduceMean:
    """``y = mean(x)`` over the feature axis (one value per step; digital periphery)."""

    name: str
    x: str
    y: str


@dataclass(frozen=True, eq=False)
class FeaturePad:
    """ONNX Pad on the feature axis: ``begin``/``end`` values added by ``mode`` ("constant"
    with ``value``, "reflect" or "edge"); a copy in the digital periphery."""

    name: str
    mode: str
    begin: int
    end: int
    value: float
    x: str
    y: str


@dataclass(frozen=True, eq=False)
class StepMask:
    """Keras ``Masking(mask_value)``: ``y[b, t] = 1.0`` if any feature of ``x[b, t]`` differs
    from ``value``, else ``0.0`` (a masked frame); ``[B, T, 1]``, digital periphery. A
    recurrent layer whose ``mask`` is ``y`` holds its state at masked frames and emits the held
    state (``h``; ``c`` for the cell output), as Keras's masked RNN loop does."""

    name: str
    value: float
    x: str
    y: str


UNARY_OPS = ("sqrt", "pow")
BINARY_OPS = ("add", "sub", "mul")
PAD_MODES = ("constant", "reflect", "edge")

Layer = Union[Recurrent, Dense, Elementwise, Softmax, FeatureSlice, FeatureConcat, LayerNorm,
              Conv1d, FrameConv, Binary, Unary, ReduceMean, FeaturePad, StepMask]

# Layers the engine (runtime/plan.py) executes; the others run only in the float IR for now.
ENGINE_LAYERS = (Recurrent, Dense, Elementwise, Softmax, FeatureSlice, FeatureConcat, Conv1d,
                 FrameConv, LayerNorm, Binary, Unary, ReduceMean, FeaturePad, StepMask)


def runs_on(layer: Layer) -> str:
    """``"crossbar"`` for layers whose matrices sit on crossbar tiles, else ``"digital"`` (the
    periphery: activations, softmax, normalisation, slicing)."""
    return "crossbar" if isinstance(layer, (Recurrent, Dense, Conv1d, FrameConv)) else "digital"


# ------------------------------------------------------------------------------ inputs / outputs
@dataclass(frozen=True)
class SeqInput:
    """The model's sequence input: ONNX name, axis order (``TBF`` or ``BTF``), features."""

    name: str
    axes: tuple[str, ...]           # ("T","B","F") or ("B","T","F")
    features: int
    # A frame model (silero-vad): the ONNX input is one frame ``[B, F]`` per call with no time
    # axis (each call is one recurrent step, the state carried through state inputs/outputs);
    # in the IR the time axis is the sequence of calls, ``axes`` is ("B", "T", "F").
    frame: bool = False


@dataclass(frozen=True)
class AuxInput:
    """A non-sequence model input: ``sequence_lens`` [B] or an initial state [D, B, H]."""

    name: str
    role: str                       # "sequence_lens" | "initial_h" | "initial_c"
    layer: str                      # recurrent layer name
    shape: tuple[int | str, ...]    # e.g. ("B",) or (D, "B", H)


@dataclass(frozen=True)
class Output:
    """A model output: which IR tensor, its ONNX view, and how the final value is picked.

    ``axes`` are ONNX's axis labels in order: ``B`` batch, ``T`` time, ``D`` direction, ``H``
    hidden (the feature axis split by direction), ``F`` features, ``1`` a unit axis. ``pick``
    is None for per-step outputs, else one rule per feature block: ``"T-1"`` (the last time
    index), ``"end"`` (each row's last valid step: a forward final state) or ``"start"``
    (step 0: a reverse final state).
    """

    name: str
    tensor: str
    axes: tuple[str, ...]
    sizes: tuple[int | None, ...]   # per axis; None for B and T
    pick: tuple[str, ...] | None
    features: int
    delay: int = 0                  # leading steps with no ONNX counterpart (a Conv1d's warm-up)
    stride: int = 1                 # after it, every stride-th step is an ONNX step (strided Conv)

    @property
    def per_step(self) -> bool:
        return self.pick is None


# ---------------------------------------------------------------------------------------- model
@dataclass(frozen=True, eq=False)
class Model:
    """A converted model: input spec, layers in execution order, outputs. Float32 executor."""

    input: SeqInput
    aux_inputs: tuple[AuxInput, ...]
    layers: tuple[Layer, ...]
    outputs: tuple[Output, ...]
    opset: int
    source: str = ""
    producer: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ description
    @property
    def causal(self) -> bool:
        """True when every output at step t depends only on inputs up to t (streamable)."""
        rec_ok = all(l.causal and l.sequence_lens is None and l.sequence_lens_value is None
                     for l in self.layers if isinstance(l, Recurrent))
        picks_ok = all(o.pick is None or set(o.pick) <= {"T-1", "end"} for o in self.outputs)
        return rec_ok and picks_ok

    @property
    def streamable(self) -> bool:
        return self.causal

    def why_not_streamable(self) -> str | None:
        for l in self.layers:
            if isinstance(l, Recurrent) and not l.causal:
                return f"layer {l.name!r} is {l.direction} (needs the whole sequence)"
            if isinstance(l, Recurrent) and (l.sequence_lens or l.sequence_lens_value is not None):
                return f"layer {l.name!r} takes sequence_lens (whole-sequence semantics)"
        for o in self.outputs:
            if o.pick and not set(o.pick) <= {"T-1", "end"}:
                return f"output {o.name!r} is a reverse-direction final state"
        return None

    @cached_property
    def delays(self) -> dict[str, int]:
        """Per IR tensor: how many leading steps are undefined (after causal Conv1d layers)."""
        return frame_rates(self.layers, self.input.name)[0]

    @cached_property
    def strides(self) -> dict[str, int]:
        """Per IR tensor: after a strided Conv1d only steps ``delay + k * stride`` are defined."""
        return frame_rates(self.layers, self.input.name)[1]

    @property
    def recurrent_layers(self) -> list[Recurrent]:
        return [l for l in self.layers if isinstance(l, Recurrent)]

    @property
    def macs_per_step(self) -> int:
        return sum(getattr(l, "macs_per_step", 0) for l in self.layers)

    # ------------------------------------------------------------------ execution
    def run(self, feeds: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """Run whole sequences; inputs and outputs in the ONNX model's own shapes and names.

        A frame model (``input.frame``) takes one frame ``[B, F]`` per call: a 2-D input is one
        call (outputs in ONNX shapes); a 3-D ``[B, T, F]`` is ``T`` calls in order with the
        state carried, every output stacked per call on a new first axis ``[T, ...]``."""
        if self.input.frame:
            return self._run_frames(feeds)
        feeds = self._feeds(feeds)
        x = _as_float32(feeds[self.input.name], self.input.name)
        if x.ndim != 3:
            raise NvmInputError(f"input {self.input.name!r}: expected a 3-D tensor with axes "
                                f"{''.join(self.input.axes)}, got shape {x.shape}")
        x_btf = x if self.input.axes == ("B", "T", "F") else np.swapaxes(x, 0, 1)
        env, lens = self._execute(np.ascontiguousarray(x_btf), feeds, whole=True)
        return {o.name: _format_output(o, onnx_steps(o, env[o.tensor]), lens)
                for o in self.outputs}

    def _run_frames(self, feeds) -> dict[str, np.ndarray]:
        if isinstance(feeds, np.ndarray):
            feeds = {self.input.name: feeds}
        feeds = dict(feeds)
        if self.input.name not in feeds:
            raise NvmInputError(f"missing model input {self.input.name!r}")
        x = _as_float32(feeds[self.input.name], self.input.name)
        if x.ndim not in (2, 3):
            raise NvmInputError(f"input {self.input.name!r}: expected one frame [batch, "
                                f"{self.input.features}] or calls [batch, calls, "
                                f"{self.input.features}], got shape {x.shape}")
        one = x.ndim == 2
        x = x[:, None] if one else x
        self._check_aux(feeds, x.shape[0])
        env, _ = self._execute(np.ascontiguousarray(x), feeds, whole=True)
        out = {}
        for o in self.outputs:
            steps = [format_frame_output(o, env[o.tensor][:, t]) for t in range(x.shape[1])]
            out[o.name] = steps[0] if one else np.stack(steps)
        return out

    def run_steps(self, x: np.ndarray, **aux: np.ndarray) -> dict[str, np.ndarray]:
        """Run ``x[B, T, F]`` (or ``[T, F]``) and return every output per step ``[B, T, F_out]``.

        For causal models this is what streaming returns step by step. Non-causal models return
        their ONNX outputs, batch first.
        """
        x = _as_float32(x, self.input.name)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise NvmInputError(f"input {self.input.name!r}: expected [batch, time, features] or "
                                f"[time, features], got shape {x.shape}")
        feeds = dict(aux)
        feeds[self.input.name] = x
        self._check_aux(feeds, x.shape[0])
        env, lens = self._execute(np.ascontiguousarray(x), feeds, whole=True)
        out = {}
        for o in self.outputs:
            if self.causal:
                out[o.name] = env[o.tensor]
            else:
                r = _format_output(o, onnx_steps(o, env[o.tensor]), lens)
                if "T" in o.axes and o.axes.index("T") == 0 and o.axes.index("B") == 1:
                    r = np.swapaxes(r, 0, 1)
                out[o.name] = r
        return out

    def stream(self, batch: int = 1, **aux: np.ndarray) -> "FloatStream":
        """Start ``batch`` streams; feed one frame ``[batch, F]`` at a time with ``step``."""
        reason = self.why_not_streamable()
        if reason:
            raise NvmInputError(f"model cannot stream: {reason}")
        feeds = dict(aux)
        self._check_aux(feeds, batch)
        return FloatStream(self, batch, self._initial_state(feeds, batch))

    def split_feeds(self, arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray,
                                                                     dict[str, np.ndarray]]:
        """Split named arrays (an ``.npz``) into the sequence input and the other model inputs
        (initial states, sequence lengths). The sequence is the array named like the model's
        sequence input, or ``x``, or the only array; every other array must be a model input."""
        arrays = dict(arrays)
        for key in (self.input.name, "x"):
            if key in arrays:
                x = arrays.pop(key)
                break
        else:
            if len(arrays) != 1:
                raise NvmInputError(f"no array named {self.input.name!r} (the sequence input) "
                                    f"among {sorted(arrays)}")
            x = arrays.pop(next(iter(arrays)))
        known = {a.name for a in self.aux_inputs}
        unknown = sorted(set(arrays) - known)
        if unknown:
            raise NvmInputError(f"arrays {unknown} are not model inputs; the model takes "
                                f"{[self.input.name] + sorted(known)}")
        return x, arrays

    # ------------------------------------------------------------------ internals
    def _feeds(self, feeds) -> dict[str, np.ndarray]:
        if isinstance(feeds, np.ndarray):
            feeds = {self.input.name: feeds}
        feeds = dict(feeds)
        if self.input.name not in feeds:
            raise NvmInputError(f"missing model input {self.input.name!r}")
        x = feeds[self.input.name]
        b = x.shape[self.input.axes.index("B")] if getattr(x, "ndim", 0) == 3 else None
        self._check_aux(feeds, b)
        return feeds

    def _check_aux(self, feeds: Mapping[str, np.ndarray], batch: int | None) -> None:
        known = {self.input.name} | {a.name for a in self.aux_inputs}
        for k in feeds:
            if k not in known:
                raise NvmInputError(f"unknown input {k!r}; the model takes {sorted(known)}")
        for a in self.aux_inputs:
            if a.name not in feeds:
                if a.role == "sequence_lens" or (self.input.frame and a.role in (
                        "initial_h", "initial_c")):
                    continue             # a frame model's state not given starts at zeros
                raise NvmInputError(f"missing model input {a.name!r} ({a.role} of {a.layer!r})")
            v = np.asarray(feeds[a.name])
            if len(v.shape) != len(a.shape):
                raise NvmInputError(f"input {a.name!r}: expected shape {a.shape}, got {v.shape}")
            for got, want in zip(v.shape, a.shape):
                if want == "B":
                    if batch is not None and got != batch:
                        raise NvmInputError(f"input {a.name!r}: batch {got} != {batch}")
                elif got != want:
                    raise NvmInputError(f"input {a.name!r}: expected shape {a.shape}, got {v.shape}")

    def _initial_state(self, feeds, batch: int) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        state = {}
        for l in self.recurrent_layers:
            state[l.name] = (_init(l.initial_h, feeds, l, batch, "initial_h"),
                             _init(l.initial_c, feeds, l, batch, "initial_c")
                             if l.kind == "LSTM" else None)
        return state

    def _execute(self, x_btf: np.ndarray, feeds, whole: bool, state=None, t0: int = 0):
        if x_btf.shape[2] != self.input.features:
            raise NvmInputError(f"input {self.input.name!r}: {x_btf.shape[2]} features, model "
                                f"expects {self.input.features}")
        b, t = x_btf.shape[:2]
        if t == 0:
            raise NvmInputError(f"input {self.input.name!r}: sequence has no time steps")
        env: dict[str, np.ndarray] = {self.input.name: x_btf}
        lens_by_layer: dict[str, np.ndarray | None] = {}
        if state is None:
            state = self._initial_state(feeds, b)
        for layer in self.layers:
            if isinstance(layer, Recurrent):
                lens = None
                if whole:
                    lens = _seq_lens(layer, feeds, b, t)
                h0, c0 = state[layer.name]
                mask = env[layer.mask] if layer.mask else None
                every = self.strides.get(layer.x, 1)
                if every > 1:            # after a strided Conv: step only at defined frames
                    g = t0 + np.arange(t) - self.delays.get(layer.x, 0)
                    on = ((g >= 0) & (g % every == 0)).astype(np.float32)[None, :, None]
                    mask = np.broadcast_to(on, (b, t, 1)) if mask is None else mask * on
                skip = max(0, self.delays.get(layer.x, 0) - t0)   # undefined leading steps
                if skip >= t:
                    y = np.zeros((b, t, layer.out_features), np.float32)
                    c = y.copy() if layer.c else None
                    hT, cT = h0, c0
                elif skip:
                    y, c, hT, cT = run_recurrent(layer, env[layer.x][:, skip:], h0, c0, lens,
                                                 None if mask is None else mask[:, skip:])
                    pad = np.zeros((b, skip, y.shape[2]), np.float32)
                    y = np.concatenate([pad, y], 1)
                    c = np.concatenate([pad, c], 1) if c is not None else None
                else:
                    y, c, hT, cT = run_recurrent(layer, env[layer.x], h0, c0, lens, mask)
                state[layer.name] = (hT, cT)
                env[layer.y] = y
                if layer.c:
                    env[layer.c] = c
                lens_by_layer[layer.y] = lens
                if layer.c:
                    lens_by_layer[layer.c] = lens
            elif isinstance(layer, Conv1d):
                hist = state.get(layer.name)
                if hist is None:
                    hist = np.zeros((b, layer.history, env[layer.x].shape[2]), np.float32)
                xin = env[layer.x]
                din = self.delays.get(layer.x, 0) - t0    # undefined frames read as ONNX's
                if din > 0:                                # zero padding
                    xin = xin.copy()
                    xin[:, :din] = 0
                env[layer.y], state[layer.name] = run_conv1d(layer, xin, hist)
            else:
                env[layer.y] = run_pointwise(layer, env)
        # A pick like "end" uses the lengths of the recurrent layer whose state it picks; the
        # converter guarantees a model has at most one distinct sequence_lens source.
        lens_all = next((v for v in lens_by_layer.values() if v is not None), None)
        return env, lens_all


class FloatStream:
    """Stateful float32 streaming of a causal model: ``step(x[B, F]) -> {output: [B, F_out]}``."""

    def __init__(self, model: Model, batch: int, state) -> None:
        self.model = model
        self.batch = batch
        self.state = state
        self.steps = 0

    def step(self, x_t: np.ndarray) -> dict[str, np.ndarray]:
        x_t = _as_float32(x_t, self.model.input.name)
        if x_t.ndim == 1:
            x_t = x_t[None]
        if x_t.shape != (self.batch, self.model.input.features):
            raise NvmInputError(f"frame {self.steps}: expected shape "
                                f"({self.batch}, {self.model.input.features}), got {x_t.shape}")
        env, _ = self.model._execute(np.ascontiguousarray(x_t[:, None, :]), {}, whole=False,
                                     state=self.state, t0=self.steps)
        self.steps += 1
        return {o.name: env[o.tensor][:, 0] for o in self.model.outputs}


# ---------------------------------------------------------------------------------- numerics
def _as_float32(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32:
        if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
            raise NvmInputError(f"input {name!r}: dtype {x.dtype} is not numeric")
        x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise NvmInputError(f"input {name!r}: contains NaN or infinity")
    return x


def _init(init: StateInit | None, feeds, layer: Recurrent, batch: int, role: str) -> np.ndarray:
    d, h = layer.num_directions, layer.hidden_size
    if init is None:
        return np.zeros((d, batch, h), np.float32)
    v = init.read(feeds)
    if v is None:
        return np.zeros((d, batch, h), np.float32)
    if v.shape != (d, batch, h):
        raise NvmInputError(f"{role} of layer {layer.name!r}: shape {v.shape} does not match "
                            f"(directions {d}, batch {batch}, hidden {h})")
    return np.array(v, np.float32)


def _seq_lens(layer: Recurrent, feeds, b: int, t: int) -> np.ndarray | None:
    if layer.sequence_lens is not None and layer.sequence_lens in feeds:
        lens = np.asarray(feeds[layer.sequence_lens])
    elif layer.sequence_lens_value is not None:
        lens = layer.sequence_lens_value
    else:
        return None
    lens = lens.astype(np.int64).reshape(-1)
    if lens.shape != (b,):
        raise NvmInputError(f"sequence_lens of layer {layer.name!r}: shape {lens.shape}, "
                            f"batch is {b}")
    if np.any(lens < 1) or np.any(lens > t):
        raise NvmInputError(f"sequence_lens of layer {layer.name!r}: values must be in 1..{t}, "
                            f"got {lens.tolist()}")
    return lens


def run_recurrent(layer: Recurrent, x: np.ndarray, h0: np.ndarray, c0: np.ndarray | None,
                  lens: np.ndarray | None, mask: np.ndarray | None = None):
    """Run an LSTM/GRU/RNN over ``x[B, T, I]`` from state ``h0[D, B, H]`` (``c0`` for LSTM).

    Returns ``(y[B, T, D*H], c[B, T, D*H] | None, hT[D, B, H], cT | None)``; ``y`` and ``c`` are
    zero past each row's length. Reverse directions walk each row from its own last valid step.
    ``mask[B, T, 1]`` (forward layers, no lengths): where it is 0 the state is held and the step
    emits the held state.
    """
    if mask is not None:
        assert lens is None and layer.direction == "forward"
        keep = mask[:, :, 0] != 0
    b, t, _ = x.shape
    hsz, nd = layer.hidden_size, layer.num_directions
    y = np.zeros((b, t, nd * hsz), np.float32)
    cs = np.zeros((b, t, nd * hsz), np.float32) if layer.kind == "LSTM" else None
    h_out = np.empty_like(h0)
    c_out = np.empty_like(c0) if c0 is not None else None
    rows = np.arange(b)
    for d in range(nd):
        reverse = layer.direction == "reverse" or d == 1
        h = h0[d].copy()
        c = c0[d].copy() if c0 is not None else None
        sl = slice(d * hsz, (d + 1) * hsz)
        for k in range(t):
            if lens is None:
                idx = t - 1 - k if reverse else k
                hn, cn = _cell(layer, d, x[:, idx], h, c)
                if mask is None:
                    h, c = hn, cn
                else:                             # masked frames hold the state
                    h = np.where(keep[:, idx, None], hn, h)
                    c = np.where(keep[:, idx, None], cn, c) if c is not None else None
                y[:, idx, sl] = h
                if cs is not None:
                    cs[:, idx, sl] = c
            else:
                idx = (lens - 1 - k) if reverse else np.full(b, k)
                active = (idx >= 0) & (idx < lens)
                if not active.any():
                    continue
                sidx = np.clip(idx, 0, t - 1)
                hn, cn = _cell(layer, d, x[rows, sidx], h, c)
                h = np.where(active[:, None], hn, h)
                if c is not None:
                    c = np.where(active[:, None], cn, c)
                y[rows[active], sidx[active], sl] = h[active]
                if cs is not None:
                    cs[rows[active], sidx[active], sl] = c[active]
        h_out[d] = h
        if c_out is not None:
            c_out[d] = c
    return y, cs, h_out, c_out


def _cell(layer: Recurrent, d: int, x_t: np.ndarray, h: np.ndarray, c: np.ndarray | None):
    hsz = layer.hidden_size
    acts = layer.activations[d]
    clip = layer.clip

    def act(fn: Activation, v: np.ndarray) -> np.ndarray:
        if clip is not None:
            v = np.clip(v, np.float32(-clip), np.float32(clip))
        return fn(v)

    xw = x_t @ layer._wt[d]
    bias = layer._bias[d]
    if layer.kind == "LSTM":
        g = xw + h @ layer._rt[d] + bias
        gi, go, gf, gc = (g[:, layer.gate_slice(k)] for k in "iofc")
        if layer.P is not None:
            p = layer.P[d]
            gi = gi + p[:hsz] * c                     # peepholes ordered i, o, f
            gf = gf + p[2 * hsz:] * c
        i = act(acts[0], gi)
        f = (np.float32(1) - i) if layer.input_forget else act(acts[0], gf)
        cand = act(acts[1], gc)
        c_new = f * c + i * cand
        if layer.P is not None:
            go = go + layer.P[d][hsz:2 * hsz] * c_new
        o = act(acts[0], go)
        h_new = o * acts[2](c_new)
        return h_new.astype(np.float32, copy=False), c_new.astype(np.float32, copy=False)
    if layer.kind == "GRU":
        wb, rb = layer.Wb[d], layer.Rb[d]
        zs, rs, hs = (layer.gate_slice(k) for k in "zrh")
        xw_b = xw + wb
        rt = layer._rt[d]
        hz = h @ rt[:, :2 * hsz]                     # the "h" crossbar block: z, r
        z = act(acts[0], xw_b[:, zs] + hz[:, zs] + rb[zs])
        r = act(acts[0], xw_b[:, rs] + hz[:, rs] + rb[rs])
        if layer.linear_before_reset:
            hh = act(acts[1], xw_b[:, hs] + r * (h @ rt[:, hs] + rb[hs]))
        else:
            hh = act(acts[1], xw_b[:, hs] + (r * h) @ rt[:, hs] + rb[hs])
        h_new = (np.float32(1) - z) * hh + z * h
        return h_new.astype(np.float32, copy=False), None
    # RNN
    h_new = act(acts[0], xw + h @ layer._rt[d] + layer._bias[d])
    return h_new.astype(np.float32, copy=False), None


def frame_rates(layers, seq: str) -> tuple[dict[str, int], dict[str, int]]:
    """Per IR tensor: (leading undefined steps, stride): after causal Conv1d layers only steps
    ``delay + k * stride`` (k >= 0) have ONNX counterparts."""
    d, s = {seq: 0}, {seq: 1}
    for l in layers:
        ins = l.xs if isinstance(l, (FeatureConcat, Binary)) else (l.x,)
        din = max(d.get(n, 0) for n in ins)
        sin = max(s.get(n, 1) for n in ins)
        d[l.y] = din + (l.delay * sin if isinstance(l, Conv1d) else 0)
        s[l.y] = sin * (l.stride if isinstance(l, Conv1d) else 1)
        if isinstance(l, Recurrent) and l.c:
            d[l.c], s[l.c] = din, sin
    return d, s


def run_conv1d(layer: Conv1d, x: np.ndarray, hist: np.ndarray):
    """Causal Conv1d over ``x[B, T, C]`` after ``hist[B, L, C]`` (the previous frames); returns
    ``(y[B, T, O], new hist)``, one step at a time (identical whole or streamed)."""
    k, d = layer.W.shape[2], layer.dilation
    xh = np.concatenate([hist, x], 1)
    out = np.empty(x.shape[:2] + (layer.W.shape[0],), np.float32)
    taps = [np.ascontiguousarray(layer.W[:, :, j].T) for j in range(k)]
    for t in range(x.shape[1]):
        v = xh[:, t] @ taps[0]
        for j in range(1, k):
            v = v + xh[:, t + j * d] @ taps[j]
        if layer.b is not None:
            v = v + layer.b
        out[:, t] = v
    return out, np.ascontiguousarray(xh[:, xh.shape[1] - layer.history:])


def run_pointwise(layer: Layer, env: Mapping[str, np.ndarray]) -> np.ndarray:
    """Run a non-recurrent layer on per-step tensors ``[B, T, F]`` (step by step)."""
    if isinstance(layer, Dense):
        x = env[layer.x]
        out = np.empty(x.shape[:2] + (layer.out_features,), np.float32)
        for t in range(x.shape[1]):
            v = x[:, t] @ layer._wt
            if layer.b is not None:
                v = v + layer.b
            out[:, t] = v
        return out
    if isinstance(layer, FrameConv):
        x = env[layer.x]
        pt = layer.patches(x)                                  # [B, T, P_out, K*C]
        v = pt @ np.ascontiguousarray(layer.im2col.T)          # [B, T, P_out, O]
        if layer.b is not None:
            v = v + layer.b
        return np.ascontiguousarray(np.swapaxes(v, -1, -2).reshape(x.shape[:2] + (-1,)),
                                    np.float32)
    if isinstance(layer, Elementwise):
        return layer.fn(env[layer.x])
    if isinstance(layer, Softmax):
        x = env[layer.x]
        m = x.max(axis=-1, keepdims=True)
        e = np.exp(x - m)
        s = e.sum(axis=-1, keepdims=True)
        if layer.log:
            return (x - m - np.log(s)).astype(np.float32)
        return (e / s).astype(np.float32)
    if isinstance(layer, FeatureSlice):
        return np.ascontiguousarray(env[layer.x][..., layer.start:layer.stop])
    if isinstance(layer, FeatureConcat):
        return np.concatenate([env[n] for n in layer.xs], axis=-1)
    if isinstance(layer, Binary):
        a, b = (env[n] for n in layer.xs)
        return {"add": np.add, "sub": np.subtract, "mul": np.multiply}[layer.op](a, b)
    if isinstance(layer, Unary):
        x = env[layer.x]
        if layer.op == "sqrt":
            return np.sqrt(x)
        return np.power(x, np.float32(layer.p)).astype(np.float32)
    if isinstance(layer, ReduceMean):
        return env[layer.x].mean(axis=-1, keepdims=True, dtype=np.float32)
    if isinstance(layer, StepMask):
        return np.any(env[layer.x] != np.float32(layer.value), axis=-1,
                      keepdims=True).astype(np.float32)
    if isinstance(layer, FeaturePad):
        x = env[layer.x]
        width = [(0, 0), (0, 0), (layer.begin, layer.end)]
        if layer.mode == "constant":
            return np.pad(x, width, constant_values=np.float32(layer.value))
        return np.pad(x, width, mode=layer.mode)
    if isinstance(layer, LayerNorm):
        x = env[layer.x]
        mean = x.mean(axis=-1, keepdims=True, dtype=np.float32)
        d = x - mean
        var = (d * d).mean(axis=-1, keepdims=True, dtype=np.float32)
        y = d / np.sqrt(var + np.float32(layer.epsilon)) * layer.scale
        if layer.bias is not None:
            y = y + layer.bias
        return y.astype(np.float32, copy=False)
    raise TypeError(f"not a pointwise layer: {layer!r}")


def format_frame_output(o: Output, a: np.ndarray) -> np.ndarray:
    """One call's ``a[B, F]`` of a frame model -> the ONNX output described by ``o``."""
    blocks = o.sizes[o.axes.index("D")] if "D" in o.axes else 1
    return _format_output(replace(o, pick=("T-1",) * blocks), a[:, None], None)


def onnx_steps(o: Output, a: np.ndarray) -> np.ndarray:
    """The steps of the per-step tensor ``a[B, T, F]`` that ONNX's output ``o`` is made of:
    from its first defined step on, at a strided Conv's rate (so a last-step pick after a
    strided Conv takes the last Conv output); other final-value picks read ``a`` whole."""
    if o.pick is None or (o.stride > 1 and set(o.pick) == {"T-1"}):
        return a[:, o.delay::o.stride]
    return a


def _format_output(o: Output, a: np.ndarray, lens: np.ndarray | None) -> np.ndarray:
    """Per-step ``a[B, T, F]`` -> the ONNX output described by ``o``."""
    b, t, f = a.shape
    if o.pick is not None:
        nblk = len(o.pick)
        blk = f // nblk
        parts = []
        for k, rule in enumerate(o.pick):
            seg = a[:, :, k * blk:(k + 1) * blk]
            if rule == "T-1":
                parts.append(seg[:, t - 1])
            elif rule == "start":
                parts.append(seg[:, 0])
            else:  # "end"
                idx = (lens - 1) if lens is not None else np.full(b, t - 1)
                parts.append(seg[np.arange(b), idx])
        a = np.concatenate(parts, axis=-1)          # [B, F]
        cur = ["B"]
    else:
        cur = ["B", "T"]
    # split the feature axis into the view's feature axes (D, H or F) and unit axes
    sizes = dict(zip(o.axes, o.sizes))
    feat_axes = [ax for ax in ("D", "H", "F") if ax in o.axes]   # internal order: D-major
    feat_sizes = [sizes[ax] for ax in feat_axes]
    a = a.reshape(a.shape[:len(cur)] + tuple(feat_sizes))
    cur = cur + feat_axes
    # a merged axis ("T*B": time and batch flattened, as a per-step head's Reshape leaves them)
    # is transposed as its parts, then flattened
    order = [cur.index(f) for ax in o.axes if ax != "1" for f in ax.split("*")]
    a = np.transpose(a, order)
    shape = []
    it = iter(a.shape)
    for ax in o.axes:
        n = 1
        for _ in ([] if ax == "1" else ax.split("*")):
            n *= next(it)
        shape.append(n)
    return np.ascontiguousarray(a.reshape(shape))
