"""Digital periphery after the crossbars: activations and the LSTM / GRU / RNN cells, as small
numba functions on one stream's float64 vectors. The whole-sequence and streamed paths call the
same functions; tests/naive.py is their numpy twin (same float64 operations, same order).

Activations: sigmoid and tanh are evaluated from :func:`fexp` (+ and * only; relative error
~3e-14) in loops the compiler vectorizes: 1/(1+e^-x) and 1 - 2/(1+e^2x), arguments clamped to
+-40 (the result is then within 4e-18 of the limit).

Gate layout: :data:`nvmstream.converters.conventions.GATE_ORDER` (LSTM i, o, f, c; GRU z, r, h);
the block indices below are taken from there, never written by hand.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from nvmstream.converters.conventions import gate_index

LSTM_I, LSTM_O, LSTM_F, LSTM_C = (gate_index("LSTM", g) for g in "iofc")
GRU_Z, GRU_R, GRU_H = (gate_index("GRU", g) for g in "zrh")
# the i, o, f gates fill blocks 0..2 (one sigmoid loop over 3H when there are no peepholes)
SIG3 = sorted((LSTM_I, LSTM_O, LSTM_F)) == [0, 1, 2]
# peepholes P[3H]: i, o, f
PEEP_I, PEEP_O, PEEP_F = 0, 1, 2

EXP_CLAMP = 40.0


_C = [1.0 / math.factorial(k) for k in range(13)]
C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12 = _C


@njit(cache=True, inline="always", error_model="numpy")
def fexp(x):
    """exp(x) for |x| <= 40 from + and * only (so loops over it vectorize and a numpy twin can
    reproduce it bit for bit): exp(x) = p(x/128)^(2^7), p the degree-12 Taylor polynomial
    (truncation < 5e-17 on |y| <= 0.3125) evaluated by Estrin's scheme (pairs, then powers
    y^2, y^4, y^8: a dependency chain of 4 multiply-add levels instead of Horner's 12, which
    bounded the vectorized activation loops by latency); relative error ~3e-14 after the
    squarings."""
    x = min(max(x, -EXP_CLAMP), EXP_CLAMP)
    y = x * 0.0078125
    y2 = y * y
    y4 = y2 * y2
    y8 = y4 * y4
    r0 = (C0 + C1 * y) + (C2 + C3 * y) * y2
    r1 = (C4 + C5 * y) + (C6 + C7 * y) * y2
    r2 = (C8 + C9 * y) + (C10 + C11 * y) * y2
    p = (r0 + r1 * y4) + (r2 + C12 * y4) * y8
    for _ in range(7):
        p = p * p
    return p


@njit(cache=True, error_model="numpy", _nrt=False)
def act(code, v, a, b):
    if code == 0:
        return 1.0 / (1.0 + fexp(-v))
    if code == 1:
        return 1.0 - 2.0 / (1.0 + fexp(2.0 * v))
    if code == 2:
        return v if v > 0.0 else 0.0
    if code == 3:
        return a * v + b
    if code == 4:
        return v if v >= 0.0 else a * v
    if code == 5:
        return v if v > a else 0.0
    if code == 6:
        return a * math.tanh(b * v)
    if code == 7:
        r = a * v + b
        return 0.0 if r < 0.0 else (1.0 if r > 1.0 else r)
    if code == 8:
        return v if v >= 0.0 else a * (math.exp(v) - 1.0)
    if code == 9:
        return v / (1.0 + abs(v))
    # softplus
    if v > 30.0:
        return v + math.log1p(math.exp(-v))
    return math.log1p(math.exp(v))


@njit(cache=True, error_model="numpy", _nrt=False)
def act_vec(code, z, out, n, a, b):
    """out[:n] = act(z[:n]); sigmoid and tanh use :func:`fexp` in a vectorizable loop."""
    if code == 0:
        for j in range(n):
            out[j] = 1.0 / (1.0 + fexp(-z[j]))
    elif code == 1:
        for j in range(n):
            out[j] = 1.0 - 2.0 / (1.0 + fexp(2.0 * z[j]))
    else:
        for j in range(n):
            out[j] = act(code, z[j], a, b)


@njit(cache=True, inline="always", error_model="numpy")
def clip_vec(z, n, c):
    if c < np.inf:
        for j in range(n):
            z[j] = min(max(z[j], -c), c)


@njit(cache=True, error_model="numpy", _nrt=False)
def lstm_cell(lay, pf, zx, zh, hs, cs, tmp):
    """One LSTM step: ``zx``/``zh`` [4H] the input and recurrent products (model units,
    overwritten), ``hs``/``cs`` [H] the state (updated in place), ``tmp`` [H] scratch."""
    H = lay.h
    ap = lay.actp
    bias = pf[lay.bias:lay.bias + 4 * H]
    for j in range(4 * H):
        zx[j] = zx[j] + zh[j] + bias[j]
    i0, o0, f0, c0 = LSTM_I * H, LSTM_O * H, LSTM_F * H, LSTM_C * H
    if lay.peep >= 0:
        pi = pf[lay.peep + PEEP_I * H:lay.peep + (PEEP_I + 1) * H]
        pff = pf[lay.peep + PEEP_F * H:lay.peep + (PEEP_F + 1) * H]
        zi = zx[i0:i0 + H]
        zf = zx[f0:f0 + H]
        for j in range(H):
            zi[j] += pi[j] * cs[j]
            zf[j] += pff[j] * cs[j]
    clip_vec(zx[i0:i0 + H], H, lay.clip)
    clip_vec(zx[f0:f0 + H], H, lay.clip)
    clip_vec(zx[c0:c0 + H], H, lay.clip)
    ig = zh[i0:i0 + H]
    fg = zh[f0:f0 + H]
    cg = zh[c0:c0 + H]
    # without peepholes the output gate does not wait for the new cell state: the three
    # sigmoid gates (i, o, f: one block in GATE_ORDER) go through one activation loop
    fused = lay.peep < 0 and lay.input_forget == 0 and SIG3
    if fused:
        clip_vec(zx[o0:o0 + H], H, lay.clip)
        act_vec(lay.act0, zx[:3 * H], zh[:3 * H], 3 * H, pf[ap], pf[ap + 1])
    else:
        act_vec(lay.act0, zx[i0:i0 + H], ig, H, pf[ap], pf[ap + 1])
        if lay.input_forget == 1:
            for j in range(H):
                fg[j] = 1.0 - ig[j]
        else:
            act_vec(lay.act0, zx[f0:f0 + H], fg, H, pf[ap], pf[ap + 1])
    act_vec(lay.act1, zx[c0:c0 + H], cg, H, pf[ap + 2], pf[ap + 3])
    for j in range(H):
        cs[j] = fg[j] * cs[j] + ig[j] * cg[j]
    og = zh[o0:o0 + H]
    if not fused:
        go = zx[o0:o0 + H]
        if lay.peep >= 0:
            po = pf[lay.peep + PEEP_O * H:lay.peep + (PEEP_O + 1) * H]
            for j in range(H):
                go[j] += po[j] * cs[j]
        clip_vec(go, H, lay.clip)
        act_vec(lay.act0, go, og, H, pf[ap], pf[ap + 1])
    act_vec(lay.act2, cs, tmp, H, pf[ap + 4], pf[ap + 5])
    for j in range(H):
        hs[j] = og[j] * tmp[j]


@njit(cache=True, error_model="numpy", _nrt=False)
def gru_gates(lay, pf, zx, zh):
    """GRU update and reset gates into ``zx[z]``, ``zx[r]`` (bias = [Wb | Rb])."""
    H = lay.h
    z0, r0 = GRU_Z * H, GRU_R * H
    G = 3 * H
    wz, wr = pf[lay.bias + z0:lay.bias + z0 + H], pf[lay.bias + r0:lay.bias + r0 + H]
    rz = pf[lay.bias + G + z0:lay.bias + G + z0 + H]
    rr = pf[lay.bias + G + r0:lay.bias + G + r0 + H]
    xz, xr, hz, hr = zx[z0:z0 + H], zx[r0:r0 + H], zh[z0:z0 + H], zh[r0:r0 + H]
    for j in range(H):
        xz[j] = xz[j] + wz[j] + hz[j] + rz[j]
        xr[j] = xr[j] + wr[j] + hr[j] + rr[j]
    clip_vec(zx[z0:z0 + H], H, lay.clip)
    clip_vec(zx[r0:r0 + H], H, lay.clip)
    act_vec(lay.act0, zx[z0:z0 + H], zx[z0:z0 + H], H, pf[lay.actp], pf[lay.actp + 1])
    act_vec(lay.act0, zx[r0:r0 + H], zx[r0:r0 + H], H, pf[lay.actp], pf[lay.actp + 1])


@njit(cache=True, error_model="numpy", _nrt=False)
def gru_update(lay, pf, zx, zh, zr, hs, hg, tmp):
    """GRU candidate and state update after :func:`gru_gates`: ``zr`` [H] the product of
    r*h (linear_before_reset=0); ``hg``, ``tmp`` [H] scratch; ``hs`` updated in place."""
    H = lay.h
    z0, r0, h0 = GRU_Z * H, GRU_R * H, GRU_H * H
    G = 3 * H
    wh, rh = pf[lay.bias + h0:lay.bias + h0 + H], pf[lay.bias + G + h0:lay.bias + G + h0 + H]
    xr, xh, hh = zx[r0:r0 + H], zx[h0:h0 + H], zh[h0:h0 + H]
    if lay.lbr == 1:
        for j in range(H):
            hg[j] = xh[j] + wh[j] + xr[j] * (hh[j] + rh[j])
    else:
        for j in range(H):
            hg[j] = xh[j] + wh[j] + zr[j] + rh[j]
    clip_vec(hg, H, lay.clip)
    act_vec(lay.act1, hg, tmp, H, pf[lay.actp + 2], pf[lay.actp + 3])
    xz = zx[z0:z0 + H]
    for j in range(H):
        hs[j] = (1.0 - xz[j]) * tmp[j] + xz[j] * hs[j]


@njit(cache=True, error_model="numpy", _nrt=False)
def rnn_cell(lay, pf, zx, zh, hs):
    H = lay.h
    bias = pf[lay.bias:lay.bias + H]
    for j in range(H):
        zx[j] = zx[j] + zh[j] + bias[j]
    clip_vec(zx, H, lay.clip)
    act_vec(lay.act0, zx, hs, H, pf[lay.actp], pf[lay.actp + 1])
