"""Digital-periphery layers with no crossbar form beyond copies and activations
(:mod:`.program` ``run_digital``): LayerNormalization.

``OP_LAYERNORM`` reads ``pf[lay.actp]`` = epsilon followed by the ``xw`` scales, and the
bias at ``pf[lay.bias:]`` (``lay.bias < 0``: none). Per row and step, in float64 and this
order (the numpy twin, tests/naive.py, repeats it):

    mean = (sum_j x_j) / F;  var = (sum_j (x_j - mean)^2) / F
    y_j  = (x_j - mean) / sqrt(var + eps) * scale_j (+ bias_j)        -> float32
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def run_layernorm(layers, li, env, pf):
    lay = layers[li]
    B, T = env.shape[0], env.shape[1]
    xo, F, yo = lay.x, lay.xw, lay.y
    eps = pf[lay.actp]
    for b in range(B):
        for t in range(T):
            s = 0.0
            for j in range(F):
                s += float(env[b, t, xo + j])
            mean = s / F
            v = 0.0
            for j in range(F):
                d = float(env[b, t, xo + j]) - mean
                v += d * d
            den = math.sqrt(v / F + eps)
            for j in range(F):
                y = (float(env[b, t, xo + j]) - mean) / den * pf[lay.actp + 1 + j]
                if lay.bias >= 0:
                    y += pf[lay.bias + j]
                env[b, t, yo + j] = np.float32(y)
