"""The program layout, described once by name.

A plan (:mod:`nvmstream.runtime.plan`) is a few flat buffers plus two numpy *record arrays*
whose fields are named here; the plan writes them, the kernels read them by field name
(numba compiles ``lay.op`` / ``seg.n_in`` to a fixed offset) and the tests decode them the same
way. Nothing else depends on a field's position.

* ``LAYER`` -- one record per executed layer (one per direction of a recurrent layer).
* ``SEG`` -- one record per crossbar matrix (a *segment*): where its grid-integer weights and
  read-noise variances live, which accumulator proves its products exact, its DAC, ADC and
  VMM-noise calibration, and which input feeds it.

Buffers: ``w32`` (float32) and ``w64`` (float64) hold segment weights/variances, each stored
``[n_in, n_out]`` (one row per crossbar row) as integers on the segment's grid; ``pf``
(float64) holds per-output scales, ADC steps, biases, peepholes and activation parameters.
"""

from __future__ import annotations

import numpy as np

# layer opcodes
OP_LSTM, OP_GRU, OP_RNN, OP_DENSE, OP_ACT, OP_SOFTMAX, OP_LOGSOFTMAX, OP_COPY = range(1, 9)
OP_WINDOW = 9     # im2col frame window of a Conv1d over time (runtime/kernels/conv.py)
# digital-periphery ops of runtime/kernels/digital.py (every opcode >= OP_LAYERNORM)
OP_LAYERNORM, OP_BINARY, OP_UNARY, OP_REDUCEMEAN, OP_PAD, OP_GATHER, OP_MASK = range(10, 17)
BINARY_MODES = {"add": 0, "sub": 1, "mul": 2}
UNARY_MODES = {"sqrt": 0, "pow": 1}
PAD_MODES = {"constant": 0, "reflect": 1, "edge": 2}
OPS = {"LSTM": OP_LSTM, "GRU": OP_GRU, "RNN": OP_RNN}

# which vector feeds a segment: the layer input x_t, the previous hidden state h_{t-1}, or
# (GRU with linear_before_reset=0) r_t * h_{t-1}
SRC_X, SRC_H, SRC_RH = 0, 1, 2
SOURCES = {"x": SRC_X, "h": SRC_H, "rh": SRC_RH}

# activation codes (ONNX names, lower case)
ACT_CODES = {"sigmoid": 0, "tanh": 1, "relu": 2, "affine": 3, "leakyrelu": 4,
             "thresholdedrelu": 5, "scaledtanh": 6, "hardsigmoid": 7, "elu": 8, "softsign": 9,
             "softplus": 10}

_i, _f = np.int64, np.float64

LAYER = np.dtype([
    ("op", _i),        # OP_* code
    ("x", _i),         # env column of the layer input
    ("xw", _i),        # input width
    ("y", _i),         # env column of the output (this direction's block)
    ("yw", _i),        # output width
    ("h", _i),         # hidden size (recurrent)
    ("rev", _i),       # 1: this direction runs backwards in time
    ("state", _i),     # state column: h at [state, state+H), c at [state+H, state+2H)
    ("rng", _i),       # random-state slot of this layer-direction
    ("act0", _i), ("act1", _i), ("act2", _i),   # ACT_CODES of f, g, h (ONNX names)
    ("actp", _i),      # pf offset of (alpha, beta) x 3
    ("clip", _f),      # cell clip (inf: none)
    ("input_forget", _i),
    ("lbr", _i),       # GRU linear_before_reset
    ("nseg", _i),      # segments of this layer-direction ...
    ("seg0", _i),      # ... starting at this index of the SEG array
    ("bias", _i),      # pf offset of the bias (-1: none); GRU: [Wb | Rb]; LSTM/RNN: Wb + Rb
    ("peep", _i),      # pf offset of the LSTM peepholes (-1: none)
    ("cout", _i),      # env column of the LSTM cell output (-1: none)
    # Conv1d over time (OP_WINDOW: y = the frames x[t-(taps-1)*dil], ..., x[t], the last
    # (taps-1)*dil frames kept in state columns [state, state + (taps-1)*dil*xw))
    ("taps", _i),      # kernel size K
    ("dil", _i),       # dilation
    # the stream's frame counter: frames fed so far, this call's included (the first
    # OP_WINDOW adds the call's steps before it runs: tick = 1); step t of a call is frame
    # counter - T + t. Leading frames with no ONNX counterpart (after a valid Conv) are
    # skipped by recurrent layers (step runs iff frame >= skip) and read as zeros by a
    # later window (ONNX pads the shorter tensor with zeros)
    ("ctr", _i),       # state column of the frame counter (-1: none)
    ("tick", _i),
    ("skip", _i),
    # after a strided Conv1d a recurrent layer steps only at frames skip + k*every; at the
    # frames between it holds its state and emits the held state (as at a masked frame)
    ("every", _i),
    # digital-periphery ops (runtime/kernels/digital.py)
    ("x2", _i),        # env column of the second input (OP_BINARY)
    ("mode", _i),      # BINARY_MODES / UNARY_MODES / PAD_MODES code
    # a recurrent layer's per-step mask (Keras Masking, OP_MASK's output): at a step whose
    # mask is 0 the state is held and the held h (and c) is the output; -1: no mask
    ("mask", _i),
])

SEG = np.dtype([
    ("n_in", _i), ("n_out", _i),
    ("src", _i),       # SRC_* code
    ("w", _i),         # offset of the weights [n_in, n_out] in w32 (w64 if w64 == 1)
    ("w64", _i),       # 1: weights and their products in float64 (see plan: exactness proof)
    ("wgrid", _f),     # weights are stored as integers k; the weight is k * wgrid (2^-f)
    ("var", _i),       # offset of the read-noise variances (-1: no read noise)
    ("var64", _i),
    ("vgrid", _f),     # variance grid (2^-g code units^2)
    ("dac_q", _i),     # DAC qmax (0: no DAC, float inputs)
    ("dac_step", _f),  # DAC step (model units per code)
    ("dac_dyn", _i),   # 1: dynamic range: each vector's own step, kept as the last product column
    ("sw", _i),        # pf offset of the per-output weight scales
    ("adc", _i),       # pf offset of the ADC steps [row_tiles, n_out] (-1: no ADC)
    ("adc_q", _i),     # ADC qmax
    ("adc_noise", _f), # ADC noise (LSB rms)
    ("adc_gain", _i),  # pf offset of per-column ADC-instance gains [row_tiles, n_out] (-1: ideal)
    ("adc_off", _i),   # pf offset of the instances' offsets (LSB) [row_tiles, n_out]
    ("adc_thr", _i),   # pf offset of decision levels [row_tiles, n_out, 2 adc_q] (-1: no INL)
    ("tile_rows", _i),
    ("nblk", _i),      # row tiles
    ("vmm_sigma", _f), # VMM noise sigma (model units; > 0: on); per output at pf[vmm]
    ("vmm", _i),       # pf offset of the per-output VMM-noise sigmas (-1: none): model units
                       # after the ADC, code units per tile before it (vmm_pre = 1)
    ("vmm_pre", _i),   # 1: VMM noise on each tile's partial sums before the ADC
    ("pre", _i),       # column of this segment's products in a precomputed-products array
    ("cur", _i),       # offset of the IR-drop conductances (G+ + G-)/umax [n_in, n_out] (-1: off)
    ("cur64", _i),
    ("cgrid", _f),     # their grid (uS per code)
    ("irk", _i),       # pf offset of the IR-drop factors r n_blk / 3 * 1e-6 [row_tiles]
])


def layers(n: int) -> np.ndarray:
    """An empty LAYER record array (every offset -1, every flag 0)."""
    a = np.zeros(n, LAYER)
    for name in ("x", "y", "state", "rng", "actp", "bias", "peep", "cout", "ctr", "x2", "mask"):
        a[name] = -1
    a["clip"] = np.inf
    a["every"] = 1
    return a


def segments(n: int) -> np.ndarray:
    a = np.zeros(n, SEG)
    a["var"] = -1
    a["adc"] = -1
    a["pre"] = -1
    a["vmm"] = -1
    a["adc_gain"] = a["adc_off"] = a["adc_thr"] = -1
    a["cur"] = a["irk"] = -1
    a["cgrid"] = 1.0
    a["wgrid"] = a["vgrid"] = 1.0
    a["dac_step"] = 1.0
    return a


def pre_width(seg) -> int:
    """Columns a segment's precomputed products take: partial sums, then (with read noise)
    variances, then (with IR drop) column currents, each ``[row_tiles, n_out]``, then (dynamic
    DAC) one column with the vector's DAC step."""
    w = int(seg["nblk"]) * int(seg["n_out"])
    return (w * (1 + int(int(seg["var"]) >= 0) + int(int(seg["cur"]) >= 0))
            + int(int(seg["dac_dyn"]) == 1))


def dyn_col(seg) -> int:
    """Column (within a segment's products) holding a dynamic DAC's per-vector step."""
    return pre_width(seg) - 1

def cur_col(seg) -> int:
    """Column (within a segment's products) where its IR-drop currents start."""
    w = int(seg["nblk"]) * int(seg["n_out"])
    return w * (1 + int(int(seg["var"]) >= 0))
