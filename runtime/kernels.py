"""numba kernels of the engine: one interpreter for a flat int/float program.

A compiled program is three flat arrays built by :mod:`nvmstream.runtime.plan`:

* ``meta`` (int64): layer records (``LREC`` ints each) then segment records (``SREC`` each);
* ``wf`` (float32): weight matrices stored ``[in, out]`` (a row per crossbar row) and the
  per-cell read-noise variances, in weight-code units;
* ``pf`` (float64): per-output scales, DAC/ADC steps, biases, peepholes, activation
  parameters, noise sigmas.

``run_program`` executes every layer over a chunk of time steps for a batch of streams, reading
and writing per-step tensors in ``env[B, T, E]``; the same code runs a whole sequence (T > 1)
and one streamed frame (T = 1). Each (stream, layer-direction) owns a xoshiro256** random state,
so a stream's noise does not depend on which other streams share its batch or on how its frames
were chunked.

Activations: sigmoid and tanh are evaluated from :func:`_fexp` (+ and * only; relative error
~3e-14) in loops the compiler vectorizes: 1/(1+e^-x) and 1 - 2/(1+e^2x), arguments clamped to
+-40 (the result is then within 4e-18 of the limit). Kernels use numba's numpy error model (no
Python zero-division checks, which would stop vectorization).

Arithmetic: crossbar partial sums accumulate in float32 -- exact for integer codes while
|sum| < 2^24, which holds for tiles of <= 256 rows with weight codes <= 127 and DAC codes <= 511
(the plan checks and uses float64 scratch otherwise isn't needed for shipped profiles) -- then
read noise, ADC, digital accumulation, scaling, bias, gates and state update in float64.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# opcodes
OP_LSTM, OP_GRU, OP_RNN, OP_DENSE, OP_ACT, OP_SOFTMAX, OP_LOGSOFTMAX, OP_COPY = range(1, 9)

# layer record
LREC = 24
(L_OP, L_X, L_XW, L_Y, L_YW, L_H, L_REV, L_STATE, L_RNG, L_ACT0, L_ACT1, L_ACT2, L_ACTP,
 L_CLIP, L_IF, L_LBR, L_NSEG, L_SEG0, L_BIAS, L_PEEP, L_COUT) = range(21)

# segment record
SREC = 16
(S_IN, S_OUT, S_W, S_VAR, S_DAC, S_DQ, S_SW, S_ADC, S_AQ, S_TR, S_ANZ, S_SRC, S_DST, S_VMM,
 S_DSTOFF) = range(15)
SRC_X, SRC_H, SRC_RH = 0, 1, 2
DST_ZX, DST_ZH, DST_ZR = 0, 1, 2

# activation codes (ONNX names, lower case)
ACT_CODES = {"sigmoid": 0, "tanh": 1, "relu": 2, "affine": 3, "leakyrelu": 4,
             "thresholdedrelu": 5, "scaledtanh": 6, "hardsigmoid": 7, "elu": 8, "softsign": 9,
             "softplus": 10}


# ------------------------------------------------------------------------------- randomness
@njit(cache=True, inline="always", error_model="numpy")
def _rotl(x, k):
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(cache=True, error_model="numpy")
def _next_u64(s):
    """xoshiro256** (Blackman & Vigna) on state ``s[4]`` (uint64)."""
    result = _rotl(s[1] * np.uint64(5), 7) * np.uint64(9)
    t = s[1] << np.uint64(17)
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = _rotl(s[3], 45)
    return result


@njit(cache=True, error_model="numpy")
def _uniform(s):
    """Uniform double in [0, 1) with 53 random bits."""
    return float(_next_u64(s) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


def _zig_tables():
    """Marsaglia & Tsang (2000) ziggurat tables for the standard normal, 128 layers."""
    m1 = 2147483648.0
    dn = tn = 3.442619855899
    vn = 9.91256303526217e-3
    kn = np.zeros(128, np.int64)
    wn = np.zeros(128)
    fn = np.zeros(128)
    q = vn / math.exp(-0.5 * dn * dn)
    kn[0] = int((dn / q) * m1)
    kn[1] = 0
    wn[0] = q / m1
    wn[127] = dn / m1
    fn[0] = 1.0
    fn[127] = math.exp(-0.5 * dn * dn)
    for i in range(126, 0, -1):
        dn = math.sqrt(-2.0 * math.log(vn / dn + math.exp(-0.5 * dn * dn)))
        kn[i + 1] = int((dn / tn) * m1)
        tn = dn
        fn[i] = math.exp(-0.5 * dn * dn)
        wn[i] = dn / m1
    return kn, wn, fn


_KN, _WN, _FN = _zig_tables()
_ZIG_R = 3.442619855899


@njit(cache=True, error_model="numpy")
def _gauss(s):
    """Standard normal by the ziggurat method (Marsaglia & Tsang 2000): the layer index comes
    from the low 7 bits and the signed 32-bit value from the high bits of one 64-bit draw."""
    while True:
        r = _next_u64(s)
        iz = np.int64(r & np.uint64(127))
        hz = np.int64(np.int32(np.uint32(r >> np.uint64(32))))
        if abs(hz) < _KN[iz]:
            return hz * _WN[iz]
        x = hz * _WN[iz]
        if iz == 0:
            while True:
                xx = -math.log(1.0 - _uniform(s)) / _ZIG_R
                yy = -math.log(1.0 - _uniform(s))
                if yy + yy >= xx * xx:
                    break
            return _ZIG_R + xx if hz > 0 else -_ZIG_R - xx
        if _FN[iz] + _uniform(s) * (_FN[iz - 1] - _FN[iz]) < math.exp(-0.5 * x * x):
            return x


@njit(cache=True, error_model="numpy")
def seed_states(seeds, out):
    """splitmix64-expand 64-bit ``seeds[n]`` into xoshiro states ``out[n, 4]``."""
    for n in range(seeds.shape[0]):
        z = np.uint64(seeds[n])
        for k in range(4):
            z += np.uint64(0x9E3779B97F4A7C15)
            x = z
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            out[n, k] = x ^ (x >> np.uint64(31))


@njit(cache=True, error_model="numpy")
def gauss_fill(state, out):
    """Fill ``out`` with standard normals from ``state`` (for the statistical tests)."""
    for i in range(out.shape[0]):
        out[i] = _gauss(state)



@njit(cache=True, inline="always", error_model="numpy")
def _xo(s0, s1, s2, s3):
    """One xoshiro256** step on a state held in locals: (result, s0, s1, s2, s3)."""
    result = _rotl(s1 * np.uint64(5), 7) * np.uint64(9)
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    return result, s0, s1, s2, s3


@njit(cache=True, error_model="numpy")
def fill_normals(st, out, n):
    """``out[:n]`` = standard normals (ziggurat) from state ``st``; the state lives in
    registers for the loop and is written back at the end (the fast path of the engine)."""
    s0, s1, s2, s3 = st[0], st[1], st[2], st[3]
    for k in range(n):
        while True:
            r, s0, s1, s2, s3 = _xo(s0, s1, s2, s3)
            iz = np.int64(r & np.uint64(127))
            hz = np.int64(np.int32(np.uint32(r >> np.uint64(32))))
            if abs(hz) < _KN[iz]:
                out[k] = hz * _WN[iz]
                break
            x = hz * _WN[iz]
            if iz == 0:
                while True:
                    r1, s0, s1, s2, s3 = _xo(s0, s1, s2, s3)
                    r2, s0, s1, s2, s3 = _xo(s0, s1, s2, s3)
                    u1 = 1.0 - float(r1 >> np.uint64(11)) * (1.0 / 9007199254740992.0)
                    u2 = 1.0 - float(r2 >> np.uint64(11)) * (1.0 / 9007199254740992.0)
                    xx = -math.log(u1) / _ZIG_R
                    yy = -math.log(u2)
                    if yy + yy >= xx * xx:
                        break
                out[k] = _ZIG_R + xx if hz > 0 else -_ZIG_R - xx
                break
            r1, s0, s1, s2, s3 = _xo(s0, s1, s2, s3)
            u = float(r1 >> np.uint64(11)) * (1.0 / 9007199254740992.0)
            if _FN[iz] + u * (_FN[iz - 1] - _FN[iz]) < math.exp(-0.5 * x * x):
                out[k] = x
                break
    st[0], st[1], st[2], st[3] = s0, s1, s2, s3


# ------------------------------------------------------------------------------ activations
@njit(cache=True, error_model="numpy")
def _act(code, v, a, b):
    if code == 0:
        return 1.0 / (1.0 + _fexp(-v))
    if code == 1:
        return 1.0 - 2.0 / (1.0 + _fexp(2.0 * v))
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



# exp(x) for |x| <= 40 from + and * only (so loops over it vectorize and a numpy twin can
# reproduce it bit for bit): exp(x) = p(x/128)^(2^7), p the degree-12 Taylor polynomial
# (truncation < 5e-17 on |y| <= 0.3125); relative error ~3e-14 after the squarings.
_EXP_C = tuple(1.0 / math.factorial(k) for k in range(13))
EXP_CLAMP = 40.0


@njit(cache=True, inline="always", error_model="numpy")
def _fexp(x):
    x = min(max(x, -EXP_CLAMP), EXP_CLAMP)
    y = x * 0.0078125
    p = 1.0 / 479001600.0
    p = p * y + 1.0 / 39916800.0
    p = p * y + 1.0 / 3628800.0
    p = p * y + 1.0 / 362880.0
    p = p * y + 1.0 / 40320.0
    p = p * y + 1.0 / 5040.0
    p = p * y + 1.0 / 720.0
    p = p * y + 1.0 / 120.0
    p = p * y + 1.0 / 24.0
    p = p * y + 1.0 / 6.0
    p = p * y + 0.5
    p = p * y + 1.0
    p = p * y + 1.0
    for _ in range(7):
        p = p * p
    return p


@njit(cache=True, error_model="numpy")
def _act_vec(code, z, out, n, a, b):
    """out[:n] = act(z[:n]); sigmoid and tanh use :func:`_fexp` in a vectorizable loop."""
    if code == 0:
        for j in range(n):
            out[j] = 1.0 / (1.0 + _fexp(-z[j]))
    elif code == 1:
        for j in range(n):
            out[j] = 1.0 - 2.0 / (1.0 + _fexp(2.0 * z[j]))
    else:
        for j in range(n):
            out[j] = _act(code, z[j], a, b)


@njit(cache=True, inline="always", error_model="numpy")
def _clip_vec(z, n, c):
    if c < np.inf:
        for j in range(n):
            z[j] = min(max(z[j], -c), c)


@njit(cache=True, inline="always", error_model="numpy")
def _clip(v, c):
    if v > c:
        return c
    if v < -c:
        return -c
    return v


# ------------------------------------------------------------------------------ crossbar VMM
BB = 16   # streams processed together: each weight row is read once per block of streams


@njit(cache=True, error_model="numpy")
def _segment_batch(meta, s0, wf, pf, V, nb, rng, ridx, slot, out, U, P, VS, Q, G):
    """The segment's matrix-vector products for ``nb`` streams, added into ``out[:nb]``.

    V[nb, n_in]: inputs (float64, model units); ridx[nb]: pool rows (their random states are
    ``rng[ridx[k], slot]``); U, P, VS, Q: scratch [BB, w] (float32, float32, float32, float64);
    G: scratch [w] (float64) for normals.
    """
    n_in = meta[s0 + S_IN]
    n_out = meta[s0 + S_OUT]
    w_off = meta[s0 + S_W]
    var_off = meta[s0 + S_VAR]
    dq = meta[s0 + S_DQ]
    dstep = pf[meta[s0 + S_DAC]]
    sw_off = meta[s0 + S_SW]
    adc_off = meta[s0 + S_ADC]
    aq = float(meta[s0 + S_AQ])
    tr = meta[s0 + S_TR]
    anz = pf[meta[s0 + S_ANZ]]
    vmm_sigma = pf[meta[s0 + S_VMM]]
    o0 = meta[s0 + S_DSTOFF]
    # DAC
    scale_in = 1.0
    if dq > 0:
        inv = 1.0 / dstep
        lim = float(dq)
        scale_in = dstep
        for k in range(nb):
            for i in range(n_in):
                c = np.rint(V[k, i] * inv)
                if c > lim:
                    c = lim
                elif c < -lim:
                    c = -lim
                U[k, i] = np.float32(c)
    else:
        for k in range(nb):
            for i in range(n_in):
                U[k, i] = np.float32(V[k, i])
    nblk = (n_in + tr - 1) // tr
    for k in range(nb):
        for j in range(n_out):
            Q[k, j] = 0.0
    g = G[:n_out]
    for blk in range(nblk):
        r0 = blk * tr
        r1 = min(n_in, r0 + tr)
        for k in range(nb):
            pk = P[k, :n_out]
            for j in range(n_out):
                pk[j] = np.float32(0.0)
        for i in range(r0, r1):
            row = wf[w_off + i * n_out:w_off + (i + 1) * n_out]
            for k in range(nb):
                ui = U[k, i]
                if ui != 0.0:
                    pk = P[k, :n_out]
                    for j in range(n_out):
                        pk[j] += row[j] * ui
        if var_off >= 0:
            for k in range(nb):
                vk = VS[k, :n_out]
                for j in range(n_out):
                    vk[j] = np.float32(0.0)
            for i in range(r0, r1):
                vrow = wf[var_off + i * n_out:var_off + (i + 1) * n_out]
                for k in range(nb):
                    ui = U[k, i]
                    if ui != 0.0:
                        u2 = ui * ui
                        vk = VS[k, :n_out]
                        for j in range(n_out):
                            vk[j] += vrow[j] * u2
            for k in range(nb):
                fill_normals(rng[ridx[k], slot], g, n_out)
                pk = P[k, :n_out]
                vk = VS[k, :n_out]
                for j in range(n_out):
                    pk[j] = np.float32(float(pk[j]) + math.sqrt(float(vk[j])) * g[j])
        if adc_off >= 0:
            steps = pf[adc_off + blk * n_out:adc_off + (blk + 1) * n_out]
            for k in range(nb):
                pk = P[k, :n_out]
                qk = Q[k, :n_out]
                if anz > 0.0:
                    fill_normals(rng[ridx[k], slot], g, n_out)
                    for j in range(n_out):
                        x = float(pk[j]) / steps[j] + anz * g[j]
                        c = min(max(np.rint(x), -aq), aq)
                        qk[j] += c * steps[j]
                else:
                    for j in range(n_out):
                        x = float(pk[j]) / steps[j]
                        c = min(max(np.rint(x), -aq), aq)
                        qk[j] += c * steps[j]
        else:
            for k in range(nb):
                pk = P[k, :n_out]
                qk = Q[k, :n_out]
                for j in range(n_out):
                    qk[j] += float(pk[j])
    sw = pf[sw_off:sw_off + n_out]
    for k in range(nb):
        qk = Q[k, :n_out]
        ok = out[k, o0:o0 + n_out]
        if vmm_sigma > 0.0:
            fill_normals(rng[ridx[k], slot], g, n_out)
            for j in range(n_out):
                ok[j] += qk[j] * sw[j] * scale_in + vmm_sigma * g[j]
        else:
            for j in range(n_out):
                ok[j] += qk[j] * sw[j] * scale_in


# ------------------------------------------------------------------------------ interpreter
def scratch(meta):
    """Scratch buffers for :func:`run_program`: float32 [3, BB, w], float64 [5, BB, w]."""
    w = int(meta[2])
    return np.empty((3, BB, w), np.float32), np.empty((5, BB, w + 1), np.float64)


@njit(cache=True, error_model="numpy")
def run_program(meta, wf, pf, env, lens, state, rng, srow, s32, s64):
    """Run every layer of the program on ``env[B, T, E]`` (see module docstring).

    Batch row b keeps its recurrent state in ``state[srow[b]]`` and its random states in
    ``rng[srow[b]]`` (a pool the caller owns, so streams need no gather/scatter);
    ``s32``/``s64``: scratch from :func:`scratch` (allocated once by the caller)."""
    n_layers = meta[0]
    seg_base = meta[1]
    max_w = meta[2]
    B = env.shape[0]
    T = env.shape[1]
    U = s32[0]
    P = s32[1]
    VS = s32[2]
    Q = s64[0]
    ZX = s64[1]
    ZH = s64[2]
    ZR = s64[3]
    V = s64[4]
    G = np.empty(max_w, np.float64)
    bidx = np.empty(BB, np.int64)
    tidx = np.empty(BB, np.int64)
    ridx = np.empty(BB, np.int64)
    for li in range(n_layers):
        r = 8 + li * LREC
        op = meta[r + L_OP]
        xo = meta[r + L_X]
        xw = meta[r + L_XW]
        yo = meta[r + L_Y]
        yw = meta[r + L_YW]
        if op == OP_COPY:
            for b in range(B):
                for t in range(T):
                    for j in range(xw):
                        env[b, t, yo + j] = env[b, t, xo + j]
            continue
        if op == OP_ACT:
            code = meta[r + L_ACT0]
            a = pf[meta[r + L_ACTP]]
            bb = pf[meta[r + L_ACTP] + 1]
            for b in range(B):
                for t in range(T):
                    for j in range(xw):
                        V[0, j] = float(env[b, t, xo + j])
                    _act_vec(code, V[0], ZX[0], xw, a, bb)
                    for j in range(xw):
                        env[b, t, yo + j] = np.float32(ZX[0, j])
            continue
        if op == OP_SOFTMAX or op == OP_LOGSOFTMAX:
            for b in range(B):
                for t in range(T):
                    m = -np.inf
                    for j in range(xw):
                        m = max(m, float(env[b, t, xo + j]))
                    s = 0.0
                    for j in range(xw):
                        s += math.exp(float(env[b, t, xo + j]) - m)
                    ls = math.log(s)
                    for j in range(xw):
                        d = float(env[b, t, xo + j]) - m
                        env[b, t, yo + j] = np.float32(d - ls if op == OP_LOGSOFTMAX
                                                       else math.exp(d) / s)
            continue
        nseg = meta[r + L_NSEG]
        seg0 = meta[r + L_SEG0]
        bias_off = meta[r + L_BIAS]
        slot = meta[r + L_RNG]
        if op == OP_DENSE:
            for t in range(T):
                for b0 in range(0, B, BB):
                    nb = min(BB, B - b0)
                    for k in range(nb):
                        bidx[k] = b0 + k
                        ridx[k] = srow[b0 + k]
                        for j in range(yw):
                            ZX[k, j] = 0.0
                        for i in range(xw):
                            V[k, i] = float(env[b0 + k, t, xo + i])
                    if nseg == 0:  # a bias-only layer (ONNX Add without MatMul)
                        for k in range(nb):
                            for j in range(yw):
                                ZX[k, j] = V[k, j]
                    for kk in range(nseg):
                        _segment_batch(meta, seg_base + (seg0 + kk) * SREC, wf, pf, V, nb, rng,
                                       ridx, slot, ZX, U, P, VS, Q, G)
                    for k in range(nb):
                        for j in range(yw):
                            bj = pf[bias_off + j] if bias_off >= 0 else 0.0
                            env[b0 + k, t, yo + j] = np.float32(ZX[k, j] + bj)
            continue
        # ---- recurrent layer (one direction)
        H = meta[r + L_H]
        rev = meta[r + L_REV]
        so = meta[r + L_STATE]
        a0, a1, a2 = meta[r + L_ACT0], meta[r + L_ACT1], meta[r + L_ACT2]
        ap = meta[r + L_ACTP]
        clip = pf[meta[r + L_CLIP]]
        inp_forget = meta[r + L_IF]
        lbr = meta[r + L_LBR]
        peep = meta[r + L_PEEP]
        cout = meta[r + L_COUT]
        G4 = 4 if op == OP_LSTM else (3 if op == OP_GRU else 1)
        for kstep in range(T):
            for b0 in range(0, B, BB):
                nb = 0
                for b in range(b0, min(B, b0 + BB)):
                    L = lens[b]
                    if kstep >= L:
                        for j in range(H):
                            env[b, kstep, yo + j] = np.float32(0.0)
                            if cout >= 0:
                                env[b, kstep, cout + j] = np.float32(0.0)
                        continue
                    bidx[nb] = b
                    ridx[nb] = srow[b]
                    tidx[nb] = (L - 1 - kstep) if rev == 1 else kstep
                    nb += 1
                if nb == 0:
                    continue
                for k in range(nb):
                    for j in range(G4 * H):
                        ZX[k, j] = 0.0
                        ZH[k, j] = 0.0
                    for j in range(H):
                        ZR[k, j] = 0.0
                for kk in range(nseg):
                    s0 = seg_base + (seg0 + kk) * SREC
                    src = meta[s0 + S_SRC]
                    n_in = meta[s0 + S_IN]
                    if src == SRC_X:
                        for k in range(nb):
                            for i in range(n_in):
                                V[k, i] = float(env[bidx[k], tidx[k], xo + i])
                        _segment_batch(meta, s0, wf, pf, V, nb, rng, ridx, slot, ZX, U, P, VS,
                                       Q, G)
                    elif src == SRC_H:
                        for k in range(nb):
                            for i in range(n_in):
                                V[k, i] = state[ridx[k], so + i]
                        _segment_batch(meta, s0, wf, pf, V, nb, rng, ridx, slot, ZH, U, P, VS,
                                       Q, G)
                if op == OP_LSTM:
                    for k in range(nb):
                        b = bidx[k]
                        t = tidx[k]
                        zx = ZX[k]
                        zh = ZH[k]
                        zr = ZR[k]
                        for j in range(4 * H):
                            zx[j] = zx[j] + zh[j] + pf[bias_off + j]
                        cp = state[ridx[k], so + H:so + 2 * H]
                        if peep >= 0:
                            for j in range(H):
                                zx[j] += pf[peep + j] * cp[j]
                                zx[2 * H + j] += pf[peep + 2 * H + j] * cp[j]
                        _clip_vec(zx[0:H], H, clip)
                        _clip_vec(zx[2 * H:4 * H], 2 * H, clip)
                        ig = zh[0:H]
                        fg = zh[H:2 * H]
                        cg = zh[2 * H:3 * H]
                        _act_vec(a0, zx[0:H], ig, H, pf[ap], pf[ap + 1])
                        if inp_forget == 1:
                            for j in range(H):
                                fg[j] = 1.0 - ig[j]
                        else:
                            _act_vec(a0, zx[2 * H:3 * H], fg, H, pf[ap], pf[ap + 1])
                        _act_vec(a1, zx[3 * H:4 * H], cg, H, pf[ap + 2], pf[ap + 3])
                        for j in range(H):
                            cp[j] = fg[j] * cp[j] + ig[j] * cg[j]
                        go = zx[H:2 * H]
                        if peep >= 0:
                            for j in range(H):
                                go[j] += pf[peep + H + j] * cp[j]
                        _clip_vec(go, H, clip)
                        og = zh[3 * H:4 * H]
                        _act_vec(a0, go, og, H, pf[ap], pf[ap + 1])
                        _act_vec(a2, cp, zr, H, pf[ap + 4], pf[ap + 5])
                        hs = state[ridx[k], so:so + H]
                        for j in range(H):
                            hs[j] = og[j] * zr[j]
                            env[b, t, yo + j] = np.float32(hs[j])
                        if cout >= 0:
                            for j in range(H):
                                env[b, t, cout + j] = np.float32(cp[j])
                elif op == OP_GRU:
                    for k in range(nb):
                        zx = ZX[k]
                        zh = ZH[k]
                        for j in range(H):
                            zx[j] = zx[j] + pf[bias_off + j] + zh[j] + pf[bias_off + 3 * H + j]
                            zx[H + j] = (zx[H + j] + pf[bias_off + H + j] + zh[H + j]
                                         + pf[bias_off + 4 * H + j])
                        _clip_vec(zx[0:2 * H], 2 * H, clip)
                        _act_vec(a0, zx[0:2 * H], zx[0:2 * H], 2 * H, pf[ap], pf[ap + 1])
                    if lbr == 0:
                        for k in range(nb):
                            for i in range(H):
                                V[k, i] = ZX[k, H + i] * state[ridx[k], so + i]
                        for kk in range(nseg):
                            s0 = seg_base + (seg0 + kk) * SREC
                            if meta[s0 + S_SRC] == SRC_RH:
                                _segment_batch(meta, s0, wf, pf, V, nb, rng, ridx, slot, ZR, U,
                                               P, VS, Q, G)
                    for k in range(nb):
                        b = bidx[k]
                        t = tidx[k]
                        zx = ZX[k]
                        zh = ZH[k]
                        zr = ZR[k]
                        hg = V[k]
                        for j in range(H):
                            if lbr == 1:
                                hg[j] = (zx[2 * H + j] + pf[bias_off + 2 * H + j]
                                         + zx[H + j] * (zh[2 * H + j] + pf[bias_off + 5 * H + j]))
                            else:
                                hg[j] = (zx[2 * H + j] + pf[bias_off + 2 * H + j] + zr[j]
                                         + pf[bias_off + 5 * H + j])
                        _clip_vec(hg, H, clip)
                        _act_vec(a1, hg, zr, H, pf[ap + 2], pf[ap + 3])
                        hs = state[ridx[k], so:so + H]
                        for j in range(H):
                            hs[j] = (1.0 - zx[j]) * zr[j] + zx[j] * hs[j]
                            env[b, t, yo + j] = np.float32(hs[j])
                else:  # RNN
                    for k in range(nb):
                        b = bidx[k]
                        t = tidx[k]
                        zx = ZX[k]
                        zh = ZH[k]
                        for j in range(H):
                            zx[j] = zx[j] + zh[j] + pf[bias_off + j]
                        _clip_vec(zx, H, clip)
                        hs = state[ridx[k], so:so + H]
                        _act_vec(a0, zx, hs, H, pf[ap], pf[ap + 1])
                        for j in range(H):
                            env[b, t, yo + j] = np.float32(hs[j])


@njit(cache=True, error_model="numpy")
def stream_step(meta, wf, pf, env, lens, state, rng, srow, s32, s64, x, o0, o1, out):
    """One streamed frame for K replicas of a stream: copy ``x`` into ``env[K, 1, :]``, run,
    write the mean of the first output into ``out`` and return its argmax (-1 if ``x`` is not
    finite; nothing runs then). Saves the Python-side numpy calls of a step."""
    f = x.shape[0]
    for i in range(f):
        if not np.isfinite(x[i]):
            return -1
    K = env.shape[0]
    for k in range(K):
        for i in range(f):
            env[k, 0, i] = x[i]
    run_program(meta, wf, pf, env, lens, state, rng, srow, s32, s64)
    n = o1 - o0
    best = 0
    for j in range(n):
        acc = 0.0
        for k in range(K):
            acc += env[k, 0, o0 + j]
        out[j] = np.float32(acc / K) if K > 1 else env[0, 0, o0 + j]
        if out[j] > out[best]:
            best = j
    return best
