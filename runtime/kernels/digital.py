"""Digital-periphery layers beyond copies and activations (:mod:`.program` ``run_digital``):
LayerNormalization, elementwise arithmetic on two tensors, Sqrt/Pow, ReduceMean over the
features and feature padding. Every opcode >= ``OP_LAYERNORM`` runs here
(:func:`run_periphery`); each computes in float64 from the float32 inputs in the order
written below and rounds once to float32 (the numpy twin, tests/naive.py, repeats it).

* ``OP_LAYERNORM``: ``pf[lay.actp]`` = epsilon, then the ``xw`` scales; bias at
  ``pf[lay.bias:]`` (``lay.bias < 0``: none).
  ``mean = (sum_j x_j) / F; var = (sum_j (x_j - mean)^2) / F;
  y_j = (x_j - mean) / sqrt(var + eps) * scale_j (+ bias_j)``
* ``OP_BINARY``: ``y = x (+ | - | *) x2`` (``lay.mode``: BINARY_MODES).
* ``OP_UNARY``: ``y = sqrt(x)`` or ``y = x ** pf[lay.actp]`` (UNARY_MODES).
* ``OP_REDUCEMEAN``: ``y = (sum_j x_j) / F``.
* ``OP_PAD``: ``pf[lay.actp:]`` = (begin, end, value); constant, reflect (the edge value not
  repeated, as ONNX/numpy) or edge (PAD_MODES).
* ``OP_GATHER``: ``y_j = x[idx_j]`` (0 where ``idx_j < 0``) with the ``yw`` indices at
  ``pf[lay.actp:]``: the im2col patches of a frame model's Conv over the positions of one frame
  and the reordering of its per-position outputs to ONNX's channel-major layout (a copy).
* ``OP_MASK``: Keras Masking, ``y = 1.0`` if any ``x_j != pf[lay.actp]`` (the mask value)
  else ``0.0`` (a masked frame); a recurrent layer reads it through ``LAYER.mask``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .layout import (OP_BINARY, OP_GATHER, OP_LAYERNORM, OP_MASK, OP_PAD, OP_REDUCEMEAN,
                     OP_UNARY)


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


@njit(cache=True, error_model="numpy")
def _pad_index(i, n, mode):
    """Source index of padded position ``i`` (relative to the input's start), or -1 for the
    constant."""
    if 0 <= i < n:
        return i
    if mode == 0:
        return -1
    if mode == 2:
        return 0 if i < 0 else n - 1
    if n == 1:
        return 0
    p = 2 * (n - 1)                      # reflect: ... 2 1 | 0 1 2 ... n-1 | n-2 n-3 ...
    i = abs(i) % p
    return i if i < n else p - i


@njit(cache=True, error_model="numpy")
def run_periphery(layers, li, env, pf):
    """Layer ``li`` (opcode >= OP_LAYERNORM) on every row and step of ``env``."""
    lay = layers[li]
    op = lay.op
    if op == OP_LAYERNORM:
        run_layernorm(layers, li, env, pf)
        return
    B, T = env.shape[0], env.shape[1]
    xo, F, yo = lay.x, lay.xw, lay.y
    for b in range(B):
        for t in range(T):
            if op == OP_BINARY:
                x2 = lay.x2
                for j in range(F):
                    u = float(env[b, t, xo + j])
                    v = float(env[b, t, x2 + j])
                    r = u + v if lay.mode == 0 else (u - v if lay.mode == 1 else u * v)
                    env[b, t, yo + j] = np.float32(r)
            elif op == OP_UNARY:
                for j in range(F):
                    u = float(env[b, t, xo + j])
                    r = math.sqrt(u) if lay.mode == 0 else math.pow(u, pf[lay.actp])
                    env[b, t, yo + j] = np.float32(r)
            elif op == OP_REDUCEMEAN:
                s = 0.0
                for j in range(F):
                    s += float(env[b, t, xo + j])
                env[b, t, yo] = np.float32(s / F)
            elif op == OP_MASK:
                keep = 0.0
                for j in range(F):
                    if float(env[b, t, xo + j]) != pf[lay.actp]:
                        keep = 1.0
                        break
                env[b, t, yo] = np.float32(keep)
            elif op == OP_GATHER:
                for j in range(lay.yw):
                    src = int(pf[lay.actp + j])
                    env[b, t, yo + j] = env[b, t, xo + src] if src >= 0 else np.float32(0.0)
            elif op == OP_PAD:
                begin = int(pf[lay.actp])
                for j in range(lay.yw):
                    src = _pad_index(j - begin, F, lay.mode)
                    env[b, t, yo + j] = env[b, t, xo + src] if src >= 0 else \
                        np.float32(pf[lay.actp + 2])
