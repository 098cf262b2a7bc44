"""Conv1d over time on crossbars: the im2col frame window.

A Conv1d ``W[O, C, K]`` (dilation ``d``) is two program layers (runtime/plan.py): an
``OP_WINDOW`` layer, here, that lays the frames one output step reads side by side,

    win[t] = [x[t - (K-1) d], x[t - (K-2) d], ..., x[t]]        (K*C values, tap-major)

and an ``OP_DENSE`` layer whose crossbar matrix is the kernel unrolled to ``[O, K*C]``
(``W.transpose(0, 2, 1).reshape(O, K*C)``: column ``j*C + c`` holds ``W[:, c, j]``), with
its own tiles, DAC and ADC like every other matrix. Frames before the first one of a call
come from the stream's ring of the last ``(K-1) d`` frames (``state[row, lay.state:]``,
oldest first; zeros at the start of a stream: ONNX's zero padding at the start of time), so a
whole sequence, chunks of it and single frames give the same windows.

The first window (``lay.tick``) adds the call's steps to the stream's frame counter; after a
valid (not fully padded) Conv, recurrent layers read it to skip the steps whose Conv outputs
have no ONNX counterpart and later windows read those frames as zeros, as ONNX pads the
shorter tensor (``lay.skip``, see :func:`.program.run_recurrent`).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def run_window(layers, li, env, state, srow):
    """Layer ``li`` (``OP_WINDOW``) on every row and step of ``env[B, T, E]``; updates each
    row's ring ``state[srow[b], lay.state : lay.state + (taps-1)*dil*xw]``."""
    lay = layers[li]
    B, T = env.shape[0], env.shape[1]
    C, K, d = lay.xw, lay.taps, lay.dil
    L = (K - 1) * d                      # frames kept between calls
    xo, yo, so = lay.x, lay.y, lay.state
    for b in range(B):
        r = srow[b]
        base = 0.0                       # frame number of step 0 of this call
        if lay.ctr >= 0:
            if lay.tick:
                state[r, lay.ctr] += T
            base = state[r, lay.ctr] - T
        for t in range(T):
            for j in range(K):
                src = t - (K - 1 - j) * d
                o = yo + j * C
                if lay.skip > 0 and base + src < lay.skip:   # before the first defined frame
                    for c in range(C):
                        env[b, t, o + c] = np.float32(0.0)
                elif src >= 0:
                    for c in range(C):
                        env[b, t, o + c] = env[b, src, xo + c]
                else:
                    ro = so + (L + src) * C
                    for c in range(C):
                        env[b, t, o + c] = np.float32(state[r, ro + c])
        # the ring keeps the last L frames of [ring, x[0:T]]
        if T >= L:
            for i in range(L):
                for c in range(C):
                    state[r, so + i * C + c] = env[b, T - L + i, xo + c]
        else:
            for i in range(L - T):
                for c in range(C):
                    state[r, so + i * C + c] = state[r, so + (i + T) * C + c]
            for i in range(T):
                for c in range(C):
                    state[r, so + (L - T + i) * C + c] = env[b, i, xo + c]
