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
@njit(cache=True, error_model="numpy")
def _segment(meta, s0, wf, pf, v, st, out, u, p, q):
    """One matrix-vector product on the crossbar tiles of a segment, added into ``out``.

    v: input vector (float64, model units); st: this stream's random state; out: float64
    accumulator (pre-activations, model units); u, p, q: scratch (float32, float32, float64).
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
    if dq > 0:
        inv = 1.0 / dstep
        lim = float(dq)
        for i in range(n_in):
            c = np.rint(v[i] * inv)
            if c > lim:
                c = lim
            elif c < -lim:
                c = -lim
            u[i] = np.float32(c)
        scale_in = dstep
    else:
        for i in range(n_in):
            u[i] = np.float32(v[i])
        scale_in = 1.0
    nblk = (n_in + tr - 1) // tr
    qs = q[:n_out]          # the segment's digital sum
    ps = p[:n_out]          # one tile's analog partial sums
    vs = p[n_out:2 * n_out]  # one tile's read-noise variances (p has room: see plan max_w)
    for j in range(n_out):
        qs[j] = 0.0
    for blk in range(nblk):
        r0 = blk * tr
        r1 = min(n_in, r0 + tr)
        for j in range(n_out):
            ps[j] = np.float32(0.0)
        for i in range(r0, r1):
            ui = u[i]
            if ui != 0.0:
                row = wf[w_off + i * n_out:w_off + (i + 1) * n_out]
                for j in range(n_out):
                    ps[j] += row[j] * ui
        if var_off >= 0:
            for j in range(n_out):
                vs[j] = np.float32(0.0)
            for i in range(r0, r1):
                ui = u[i]
                if ui != 0.0:
                    u2 = ui * ui
                    vrow = wf[var_off + i * n_out:var_off + (i + 1) * n_out]
                    for j in range(n_out):
                        vs[j] += vrow[j] * u2
            for j in range(n_out):
                if vs[j] > 0.0:
                    ps[j] = np.float32(float(ps[j]) + math.sqrt(float(vs[j])) * _gauss(st))
        if adc_off >= 0:
            steps = pf[adc_off + blk * n_out:adc_off + (blk + 1) * n_out]
            for j in range(n_out):
                step = steps[j]
                x = float(ps[j]) / step
                if anz > 0.0:
                    x += anz * _gauss(st)
                c = np.rint(x)
                if c > aq:
                    c = aq
                elif c < -aq:
                    c = -aq
                qs[j] += c * step
        else:
            for j in range(n_out):
                qs[j] += float(ps[j])
    for j in range(n_out):
        val = q[j] * pf[sw_off + j] * scale_in
        if vmm_sigma > 0.0:
            val += vmm_sigma * _gauss(st)
        out[o0 + j] += val


# ------------------------------------------------------------------------------ interpreter
def scratch(meta):
    """Scratch buffers for :func:`run_program` (float32 [3 w], float64 [5 w])."""
    w = int(meta[2])
    return np.empty(3 * w, np.float32), np.empty(5 * w, np.float64)


@njit(cache=True, error_model="numpy")
def run_program(meta, wf, pf, env, lens, state, rng, s32, s64):
    """Run every layer of the program on ``env[B, T, E]`` (see module docstring).

    ``s32``/``s64``: scratch from :func:`scratch` (allocated once by the caller)."""
    n_layers = meta[0]
    seg_base = meta[1]
    max_w = meta[2]
    B = env.shape[0]
    T = env.shape[1]
    u = s32[:max_w]
    p = s32[max_w:3 * max_w]
    q = s64[:max_w]
    zx = s64[max_w:2 * max_w]
    zh = s64[2 * max_w:3 * max_w]
    zr = s64[3 * max_w:4 * max_w]
    v = s64[4 * max_w:5 * max_w]
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
                        env[b, t, yo + j] = np.float32(_act(code, float(env[b, t, xo + j]), a, bb))
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
            for b in range(B):
                st = rng[b, slot]
                for t in range(T):
                    for j in range(yw):
                        zx[j] = 0.0
                    for i in range(xw):
                        v[i] = float(env[b, t, xo + i])
                    if nseg == 0:  # a bias-only layer (ONNX Add without MatMul)
                        for j in range(yw):
                            zx[j] = v[j]
                    for k in range(nseg):
                        _segment(meta, seg_base + (seg0 + k) * SREC, wf, pf, v, st, zx, u, p, q)
                    for j in range(yw):
                        bj = pf[bias_off + j] if bias_off >= 0 else 0.0
                        env[b, t, yo + j] = np.float32(zx[j] + bj)
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
        G = 4 if op == OP_LSTM else (3 if op == OP_GRU else 1)
        for b in range(B):
            st = rng[b, slot]
            L = lens[b]
            for k in range(T):
                if k >= L:
                    for j in range(H):
                        env[b, k, yo + j] = np.float32(0.0)
                        if cout >= 0:
                            env[b, k, cout + j] = np.float32(0.0)
                    continue
                t = (L - 1 - k) if rev == 1 else k
                for j in range(G * H):
                    zx[j] = 0.0
                    zh[j] = 0.0
                for j in range(H):
                    zr[j] = 0.0
                for kk in range(nseg):
                    s0 = seg_base + (seg0 + kk) * SREC
                    src = meta[s0 + S_SRC]
                    dst = meta[s0 + S_DST]
                    n_in = meta[s0 + S_IN]
                    if src == SRC_X:
                        for i in range(n_in):
                            v[i] = float(env[b, t, xo + i])
                    elif src == SRC_H:
                        for i in range(n_in):
                            v[i] = state[b, so + i]
                    else:
                        continue  # r*h: needs r first (GRU, below)
                    if dst == DST_ZX:
                        _segment(meta, s0, wf, pf, v, st, zx, u, p, q)
                    else:
                        _segment(meta, s0, wf, pf, v, st, zh, u, p, q)
                if op == OP_LSTM:
                    # zx <- pre-activations of the 4 gates; zh, zr, q: gate values / scratch
                    for j in range(4 * H):
                        zx[j] = zx[j] + zh[j] + pf[bias_off + j]
                    cp = state[b, so + H:so + 2 * H]
                    if peep >= 0:
                        for j in range(H):
                            zx[j] += pf[peep + j] * cp[j]
                            zx[2 * H + j] += pf[peep + 2 * H + j] * cp[j]
                    _clip_vec(zx[0:H], H, clip)            # i
                    _clip_vec(zx[2 * H:4 * H], 2 * H, clip)  # f, c (o after its peephole)
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
                    hs = state[b, so:so + H]
                    for j in range(H):
                        hs[j] = og[j] * zr[j]
                        env[b, t, yo + j] = np.float32(hs[j])
                    if cout >= 0:
                        for j in range(H):
                            env[b, t, cout + j] = np.float32(cp[j])
                elif op == OP_GRU:
                    # z, r gates; biases: Wb at bias_off[0:3H], Rb at bias_off[3H:6H]
                    for j in range(H):
                        gz = zx[j] + pf[bias_off + j] + zh[j] + pf[bias_off + 3 * H + j]
                        gr = zx[H + j] + pf[bias_off + H + j] + zh[H + j] + pf[bias_off + 4 * H + j]
                        zx[j] = _act(a0, _clip(gz, clip), pf[ap], pf[ap + 1])       # z
                        zx[H + j] = _act(a0, _clip(gr, clip), pf[ap], pf[ap + 1])   # r
                    if lbr == 0:
                        for i in range(H):
                            v[i] = zx[H + i] * state[b, so + i]
                        for kk in range(nseg):
                            s0 = seg_base + (seg0 + kk) * SREC
                            if meta[s0 + S_SRC] == SRC_RH:
                                _segment(meta, s0, wf, pf, v, st, zr, u, p, q)
                    for j in range(H):
                        hprev = state[b, so + j]
                        if lbr == 1:
                            gh = (zx[2 * H + j] + pf[bias_off + 2 * H + j]
                                  + zx[H + j] * (zh[2 * H + j] + pf[bias_off + 5 * H + j]))
                        else:
                            gh = zx[2 * H + j] + pf[bias_off + 2 * H + j] + zr[j] + \
                                pf[bias_off + 5 * H + j]
                        hh = _act(a1, _clip(gh, clip), pf[ap + 2], pf[ap + 3])
                        zh[j] = (1.0 - zx[j]) * hh + zx[j] * hprev
                    for j in range(H):
                        state[b, so + j] = zh[j]
                        env[b, t, yo + j] = np.float32(zh[j])
                else:  # RNN
                    for j in range(H):
                        g = zx[j] + zh[j] + pf[bias_off + j]
                        zr[j] = _act(a0, _clip(g, clip), pf[ap], pf[ap + 1])
                    for j in range(H):
                        state[b, so + j] = zr[j]
                        env[b, t, yo + j] = np.float32(zr[j])


@njit(cache=True, error_model="numpy")
def stream_step(meta, wf, pf, env, lens, state, rng, s32, s64, x, o0, o1, out):
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
    run_program(meta, wf, pf, env, lens, state, rng, s32, s64)
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
