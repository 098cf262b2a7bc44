"""Layer loops: one numba function per layer kind runs a range of time steps for a batch of
streams, reading and writing per-step tensors in ``env[B, T, E]``.

Row ``b`` of the batch keeps its recurrent state in ``state[srow[b]]`` and its random states
in ``rng[srow[b]]`` (a pool the caller owns). A segment's tile products either come from a
precomputed array (the BLAS route: ``pre[row, seg.pre:]``, rows ``b*T + t`` for inputs,
``b`` for a batched step's recurrent state) or are computed here (:func:`.vmm.products`);
the periphery after them always runs here, per stream and step, so both routes draw the same
normals in the same order and give the same bits.

:func:`run_program` runs every layer in-kernel (no precomputed products; one layer:
:func:`run_layer`) and
:func:`stream_step` wraps it for the fused single-stream step.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.experimental import structref

from . import cells as C
from .conv import run_window
from .digital import run_periphery
from .layout import (OP_ACT, OP_COPY, OP_DENSE, OP_GRU, OP_LOGSOFTMAX, OP_LSTM, OP_RNN,
                     OP_LAYERNORM, OP_WINDOW, SRC_H, SRC_RH, SRC_X)
from .vmm import dac, periphery, products

BB = 16   # streams processed together in-kernel: each weight row is read once per block


def scratch(layers, segs, max_w: int):
    """Scratch buffers for the layer loops (allocated once per engine / stream)."""
    mp = 1
    for s in segs:
        mp = max(mp, int(s["nblk"]) * int(s["n_out"]) * 3)
    w = max_w + 1
    f32 = np.empty((2, BB, w), np.float32)
    f64 = np.empty((7, BB, w), np.float64)
    pp = np.empty((BB, mp), np.float64)
    vec = np.empty((4, w), np.float64)
    idx = np.empty((3, BB), np.int64)
    one = np.empty((1, 1), np.float32)      # the "no precomputed products" placeholder
    return (f32, f64, pp, vec, idx, one)


@njit(cache=True, error_model="numpy", _nrt=False)
def segment(seg, w32, w64, pf, V, nb, rng, ridx, slot, out, pre, prow, use_pre, scr):
    """Add segment ``seg``'s output for ``nb`` streams into ``out[:nb]``: products from
    ``pre[prow[k]]`` if ``use_pre`` (float32 in the engine; a float64 ``pre`` compiles its own
    specialization) else from the inputs ``V[:nb]``."""
    f32, f64, pp, vec, idx, one = scr
    G = vec[0]
    Q = vec[1]
    Z = vec[2]        # (the cells' scratch too: used by them only after every segment)
    if use_pre:            # BLAS products (float32: the engine routes only float32 segments)
        for k in range(nb):
            periphery(seg, pf, pre, prow[k], seg.pre, rng[ridx[k], slot], G, Q, Z, out, k)
    else:
        dac(seg, V, nb, f32[0], f64[5])
        products(seg, w32, w64, f32[0], f64[5], nb, f32[1], f64[6], pp)
        c0 = nb - nb       # (not a literal 0: see run_program)
        for k in range(nb):
            periphery(seg, pf, pp, k, c0, rng[ridx[k], slot], G, Q, Z, out, k)


@njit(cache=True, error_model="numpy")
def segment_at(segs, si, w32, w64, pf, V, nb, rng, ridx, slot, out, pre, prow, use_pre, scr):
    """:func:`segment` for ``segs[si]`` (an entry point for tests: records stay in numba)."""
    segment(segs[si], w32, w64, pf, V, nb, rng, ridx, slot, out, pre, prow, use_pre, scr)


@njit(cache=True, error_model="numpy", _nrt=False)
def run_dense(layers, li, segs, w32, w64, pf, env, rng, srow, pre, use_pre, scr):
    """Layer ``li`` (a Dense layer) on every row and step of ``env``."""
    lay = layers[li]
    f32, f64, pp, vec, idx, one = scr
    B, T = env.shape[0], env.shape[1]
    ZX, V = f64[0], f64[3]
    ridx, prow = idx[0], idx[1]
    xo, xw, yo, yw = lay.x, lay.xw, lay.y, lay.yw
    for t in range(T):
        for b0 in range(0, B, BB):
            nb = min(BB, B - b0)
            for k in range(nb):
                ridx[k] = srow[b0 + k]
                prow[k] = (b0 + k) * T + t
                for j in range(yw):
                    ZX[k, j] = 0.0
                for i in range(xw):
                    V[k, i] = float(env[b0 + k, t, xo + i])
            if lay.nseg == 0:  # a bias-only layer (ONNX Add without MatMul)
                for k in range(nb):
                    for j in range(yw):
                        ZX[k, j] = V[k, j]
            for s in range(lay.nseg):
                segment(segs[lay.seg0 + s], w32, w64, pf, V, nb, rng, ridx, lay.rng, ZX, pre,
                         prow, use_pre, scr)
            for k in range(nb):
                for j in range(yw):
                    bj = pf[lay.bias + j] if lay.bias >= 0 else 0.0
                    env[b0 + k, t, yo + j] = np.float32(ZX[k, j] + bj)


@njit(cache=True, error_model="numpy", _nrt=False)
def run_recurrent(layers, li, segs, w32, w64, pf, env, lens, state, rng, srow, k0, k1, preX,
                  xpre, preH, hpre, scr):
    """Steps ``k0 <= k < k1`` of layer ``li``, one direction of a recurrent layer (step k is
    time ``L-1-k`` for a reverse direction of a sequence of length L)."""
    lay = layers[li]
    f32, f64, pp, vec, idx, one = scr
    B, T = env.shape[0], env.shape[1]
    ZX, ZH, ZR, V = f64[0], f64[1], f64[2], f64[3]
    ridx, prow, bidx = idx[0], idx[1], idx[2]
    H = lay.h
    so = lay.state
    yo = lay.y
    cout = lay.cout
    G4 = 4 if lay.op == OP_LSTM else (3 if lay.op == OP_GRU else 1)
    tmp, tmp2 = vec[2], vec[3]
    for kstep in range(k0, k1):
        for b0 in range(0, B, BB):
            nb = b0 - b0          # (not a literal 0: see run_program)
            for b in range(b0, min(B, b0 + BB)):
                L = lens[b]
                if kstep >= L or (lay.skip > 0 and
                                  state[srow[b], lay.ctr] - T + kstep < lay.skip):
                    for j in range(H):
                        env[b, kstep, yo + j] = np.float32(0.0)
                        if cout >= 0:
                            env[b, kstep, cout + j] = np.float32(0.0)
                    continue
                if (lay.mask >= 0 and env[b, kstep, lay.mask] == 0.0) or (
                        lay.every > 1 and
                        (state[srow[b], lay.ctr] - T + kstep - lay.skip) % lay.every != 0):
                    # a masked frame (Keras Masking; forward layers only) or a frame between
                    # two strided Conv outputs: state held, the held state is this step's
                    # output; no crossbar read, no noise draw
                    for j in range(H):
                        env[b, kstep, yo + j] = np.float32(state[srow[b], so + j])
                        if cout >= 0:
                            env[b, kstep, cout + j] = np.float32(state[srow[b], so + H + j])
                    continue
                bidx[nb] = b
                ridx[nb] = srow[b]
                nb += 1
            if nb == 0:
                continue
            for k in range(nb):
                for j in range(G4 * H):
                    ZX[k, j] = 0.0
                    ZH[k, j] = 0.0
                for j in range(H):
                    ZR[k, j] = 0.0
            for s in range(lay.nseg):
                seg = segs[lay.seg0 + s]
                if seg.src == SRC_X:
                    for k in range(nb):
                        b = bidx[k]
                        t = (lens[b] - 1 - kstep) if lay.rev == 1 else kstep
                        prow[k] = b * T + t
                        if not xpre:
                            for i in range(seg.n_in):
                                V[k, i] = float(env[b, t, lay.x + i])
                    segment(seg, w32, w64, pf, V, nb, rng, ridx, lay.rng, ZX, preX, prow,
                             xpre, scr)
                elif seg.src == SRC_H:
                    for k in range(nb):
                        prow[k] = bidx[k]
                        if not hpre:
                            for i in range(H):
                                V[k, i] = state[ridx[k], so + i]
                    segment(seg, w32, w64, pf, V, nb, rng, ridx, lay.rng, ZH, preH, prow,
                             hpre, scr)
            if lay.op == OP_GRU:
                for k in range(nb):
                    C.gru_gates(lay, pf, ZX[k], ZH[k])
                if lay.lbr == 0:
                    r0 = C.GRU_R * H
                    for k in range(nb):
                        for i in range(H):
                            V[k, i] = ZX[k, r0 + i] * state[ridx[k], so + i]
                    for s in range(lay.nseg):
                        seg = segs[lay.seg0 + s]
                        if seg.src == SRC_RH:      # (nb < 0: False, typed at run time)
                            segment(seg, w32, w64, pf, V, nb, rng, ridx, lay.rng, ZR, preH,
                                     prow, nb < 0, scr)
            for k in range(nb):
                b = bidx[k]
                t = (lens[b] - 1 - kstep) if lay.rev == 1 else kstep
                hs = state[ridx[k], so:so + H]
                if lay.op == OP_LSTM:
                    cs = state[ridx[k], so + H:so + 2 * H]
                    C.lstm_cell(lay, pf, ZX[k], ZH[k], hs, cs, tmp)
                    if cout >= 0:
                        for j in range(H):
                            env[b, t, cout + j] = np.float32(cs[j])
                elif lay.op == OP_GRU:
                    C.gru_update(lay, pf, ZX[k], ZH[k], ZR[k], hs, tmp, tmp2)
                else:
                    C.rnn_cell(lay, pf, ZX[k], ZH[k], hs)
                for j in range(H):
                    env[b, t, yo + j] = np.float32(hs[j])


@njit(cache=True, error_model="numpy", _nrt=False)
def run_digital(layers, li, env, pf, scr):
    """Layers without crossbars: copies, elementwise activations, (log-)softmax."""
    lay = layers[li]
    f32, f64, pp, vec, idx, one = scr
    B, T = env.shape[0], env.shape[1]
    xo, xw, yo = lay.x, lay.xw, lay.y
    if lay.op == OP_COPY:
        for b in range(B):
            for t in range(T):
                for j in range(xw):
                    env[b, t, yo + j] = env[b, t, xo + j]
    elif lay.op == OP_ACT:
        a = pf[lay.actp]
        bb = pf[lay.actp + 1]
        v, o = vec[0], vec[1]
        for b in range(B):
            for t in range(T):
                for j in range(xw):
                    v[j] = float(env[b, t, xo + j])
                C.act_vec(lay.act0, v, o, xw, a, bb)
                for j in range(xw):
                    env[b, t, yo + j] = np.float32(o[j])
    else:
        log = lay.op == OP_LOGSOFTMAX
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
                    env[b, t, yo + j] = np.float32(d - ls if log else math.exp(d) / s)


@njit(cache=True, error_model="numpy", _nrt=False)
def run_layer(layers, li, segs, w32, w64, pf, env, lens, state, rng, srow, scr):
    """Layer ``li`` on every row and step of ``env``, products in-kernel."""
    dummy = scr[5]
    T = env.shape[1]
    # flags and bounds computed at run time: a literal False or 0 here would make numba
    # compile a second specialization of the (large) layer loops, typed on the literal
    no = T < 0
    k0 = T - T
    lay = layers[li]
    if lay.op == OP_DENSE:
        run_dense(layers, li, segs, w32, w64, pf, env, rng, srow, dummy, no, scr)
    elif lay.op == OP_LSTM or lay.op == OP_GRU or lay.op == OP_RNN:
        run_recurrent(layers, li, segs, w32, w64, pf, env, lens, state, rng, srow, k0, T,
                      dummy, no, dummy, no, scr)
    elif lay.op == OP_WINDOW:
        run_window(layers, li, env, state, srow)
    elif lay.op >= OP_LAYERNORM:          # digital periphery (kernels/digital.py)
        run_periphery(layers, li, env, pf)
    else:
        run_digital(layers, li, env, pf, scr)


@njit(cache=True, error_model="numpy", _nrt=False)
def run_program(layers, segs, w32, w64, pf, env, lens, state, rng, srow, scr):
    """Every layer, products in-kernel (the fused path)."""
    for li in range(layers.shape[0]):
        run_layer(layers, li, segs, w32, w64, pf, env, lens, state, rng, srow, scr)


@njit(cache=True, error_model="numpy", _nrt=False)
def stream_step(layers, segs, w32, w64, pf, env, lens, state, rng, srow, scr, x, nx, o0, o1,
                out):
    """One streamed frame for K replicas of a stream: copy ``x`` into ``env[K, 1, :]``, run,
    write the mean of the first output into ``out`` and return its argmax; nothing runs and
    the result is -2 if ``x`` does not hold ``nx`` values, -1 if it is not finite (``x`` may
    be strided: the caller checks only its dtype and dimensions). One call per frame: no
    Python-side numpy work."""
    f = x.shape[0]
    if f != nx:
        return -2
    for i in range(f):
        if not np.isfinite(x[i]):
            return -1
    K = env.shape[0]
    for k in range(K):
        for i in range(f):
            env[k, 0, i] = x[i]
    run_program(layers, segs, w32, w64, pf, env, lens, state, rng, srow, scr)
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


# ----------------------------------------------------------------- the packed streamed step
@structref.register
class StepArgsType(types.StructRef):
    """numba type of :class:`StepArgs` (field types fixed when built; no literals)."""

    def preprocess_fields(self, fields):
        return tuple((n, types.unliteral(t)) for n, t in fields)


STEP_FIELDS = ("layers", "segs", "w32", "w64", "pf", "env", "lens", "state", "rng", "srow",
               "scr", "nx", "o0", "o1")


class StepArgs(structref.StructRefProxy):
    """Everything :func:`stream_step` needs but the frame, packed once per stream (plan
    buffers, the stream's env, pool rows and scratch, the frame width, the first output's
    columns): handing it to numba unboxes one object (~0.1 us) instead of 14 arrays, records
    and scalars (~3 us).
    It holds references, not copies: rebuild it when the engine's pool is reallocated. Build
    it with :func:`pack_step` (cached compile; the proxy's own constructor is not)."""


structref.define_proxy(StepArgs, StepArgsType, list(STEP_FIELDS))


@njit(cache=True)
def pack_step(layers, segs, w32, w64, pf, env, lens, state, rng, srow, scr, nx, o0, o1):
    """A :class:`StepArgs` from its fields (in :data:`STEP_FIELDS` order)."""
    return StepArgs(layers, segs, w32, w64, pf, env, lens, state, rng, srow, scr, nx, o0, o1)


@njit(cache=True, error_model="numpy")
def stream_step_packed(a, x, out):
    """:func:`stream_step` with its arguments packed in ``a`` (a :class:`StepArgs`)."""
    return stream_step(a.layers, a.segs, a.w32, a.w64, a.pf, a.env, a.lens, a.state, a.rng,
                       a.srow, a.scr, x, a.nx, a.o0, a.o1, out)


#: a float32 vector numba types as layout "A" (any stride): the sample that types the streamed
#: step's frame (a 1-element or unit-stride view would be flagged contiguous, typed "C")
ANY_STRIDE_F32 = np.zeros(4, np.float32)[::2]


def compiled(dispatcher, args: tuple):
    """The compiled entry point of an ``@njit`` function for exactly the types of ``args``
    (compiled or loaded from the cache if needed). Calling it skips the dispatcher's type
    resolution; the caller must keep passing arguments of the same types (contiguous arrays
    of the same dtypes and dimensions)."""
    if not hasattr(dispatcher, "overloads"):     # NUMBA_DISABLE_JIT=1: a plain function
        return dispatcher
    sig = tuple(dispatcher.typeof_pyval(a) for a in args)
    cres = dispatcher.overloads.get(sig)
    if cres is None:
        dispatcher.compile(sig)
        cres = dispatcher.overloads[sig]
    return cres.entry_point
