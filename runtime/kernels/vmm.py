"""Crossbar products and the periphery stages around them, for one segment (one crossbar
matrix split into row tiles).

    DAC  ->  tile products (weights, read-noise variances on squared DAC codes, IR-drop
             conductances on |DAC codes|)
         ->  per tile: read noise -> IR drop -> VMM noise (before the ADC) -> ADC (+ noise,
             instance mismatch)  ->  digital sum over tiles
         ->  x per-output weight scale x DAC step  ->  VMM noise

Products are exact: a plan stores every segment's effective weights as integers on a grid of
``2^-f`` code units and proves (from the DAC's qmax and the weights of every tile column) that
each tile partial sum is an integer below the accumulator's exact range (2^24 for float32,
2^53 for float64), so any summation order -- a BLAS sgemm over many streams and time steps, or
the in-kernel loop of a streamed step -- gives the same bits. The numpy twins of each stage
are the ``apply`` methods of :mod:`nvmstream.devices.periphery`; this module composes them.

Two product routes share :func:`periphery`:

* :func:`products` -- the in-kernel loop (numba; float32 matrices through the
  register-blocked :func:`_rows_dot`), used by the fused streamed step and by small batches;
  it reads the weight rows of each stream's non-zero codes;
* :func:`blas_products` -- numpy ``matmul`` (OpenBLAS/MKL sgemm or dgemm) over every row of a
  ``[rows, n_in]`` input at once: all time steps of a layer's input, or all streams of a
  batched step. Used from the engine's orchestration, never inside numba.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from llvmlite.binding import llvm_version_info
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import layout as LY
from .rng import fill_normals


@njit(cache=True, error_model="numpy", _nrt=False)
def dac(seg, V, nb, U32, U64):
    """DAC codes of ``V[:nb, :n_in]`` (model units) into ``U64`` (and ``U32`` as float32):
    ``clip(rint(v / step), -qmax, qmax)`` with ``1/step`` computed once; no DAC: a copy."""
    n_in = seg.n_in
    if seg.dac_q > 0:
        inv = 1.0 / seg.dac_step
        lim = float(seg.dac_q)
        for k in range(nb):
            if seg.dac_dyn == 1:    # dynamic range: this vector's step, kept in U64[k, n_in]
                st = _vector_step(V[k], n_in, lim)
                U64[k, n_in] = st
                inv = 1.0 / st
            for i in range(n_in):
                c = np.rint(V[k, i] * inv)
                if c > lim:
                    c = lim
                elif c < -lim:
                    c = -lim
                U64[k, i] = c
                U32[k, i] = np.float32(c)
    else:
        for k in range(nb):
            for i in range(n_in):
                U64[k, i] = V[k, i]


@njit(cache=True, error_model="numpy", _nrt=False)
def _vector_step(v, n, lim):
    """A dynamic DAC's step for one vector: ``max_i |v_i| / qmax`` (1 for a zero vector)."""
    m = 0.0
    for i in range(n):
        a = abs(v[i])
        if a > m:
            m = a
    return m / lim if m > 0.0 else 1.0


# --------------------------------------------------------------- float32 products in registers
# The float32 tile products are the hot loop of a streamed step. numba's loop over a row
# accumulator keeps the accumulator in memory (loads and stores per 16 outputs and 4 rows,
# behind a runtime alias check): ~7 MAC/cycle where two 8-lane FMA units allow 16. The loop
# below is LLVM IR with explicit <8 x float> vectors: a block of 64 outputs sits in 8
# registers while the tile's rows stream through, four rows a trip, their products summed as
# a tree before they reach the accumulator (so a narrow block, e.g. a Dense head of 8
# outputs, is not one 4-cycle FMA chain per row); only the rows whose code is non-zero are
# visited (a list built by _nonzero_rows: the numba loop skipped only four zero rows in a
# row). Exactness: every product and partial sum is an integer below 2^24 (module
# docstring), so this order of summation, fused multiply-adds and the skipped zero rows give
# the bits of any other order. Speed: L1-resident tiles run 1.3-1.5x the numba loop; a
# streamed step reads every weight and variance once from L2 (156 KB for LSTM 12->64 +
# Linear 64->8), which bounds it more than the FMA units do, so there the gain is mostly the
# skipped zero rows (~20% of an LSTM's 4-bit codes).
_LANES = 8         # float32 lanes of one AVX register
_VECS = 8          # accumulator registers of a column block (64 outputs)
_ROWS = 4          # rows per trip of the row loop (a remainder loop takes the last 0..3)
_I32, _I64 = ir.IntType(32), ir.IntType(64)
_F8 = ir.VectorType(ir.FloatType(), _LANES)
_D8 = ir.VectorType(ir.DoubleType(), _LANES)
_M8 = ir.VectorType(ir.IntType(1), _LANES)
# typed-pointer LLVM (< 15) mangles the pointee into an intrinsic's name, opaque LLVM does not
_PSUF = ("p0", "p0") if llvm_version_info[0] >= 15 else ("p0v8f32", "p0v8f64")


def _fn(module, name, ret, args):
    return cgutils.get_or_insert_function(module, ir.FunctionType(ret, args), name)


def _splat(b, x, vt):
    """``x`` in every lane of a vector of type ``vt``."""
    v = b.insert_element(ir.Constant(vt, ir.Undefined), x, _I32(0))
    return b.shuffle_vector(v, ir.Constant(vt, ir.Undefined),
                            ir.Constant(ir.VectorType(_I32, _LANES), None))


def _emit_rows(b, W, R, S, m, cb, nv, mask, accs, t0, step):
    """Row loop ``t = t0, t0 + step, ... while t + step <= m`` adding ``S[t] * W[R[t] + cb :]``
    into the ``nv`` vector accumulators ``accs`` (the last vector's loads masked by ``mask``
    unless it is None); returns the accumulators and ``t`` after the loop."""
    fma = _fn(b.module, "llvm.fmuladd.v8f32", _F8, [_F8, _F8, _F8])
    mload = _fn(b.module, "llvm.masked.load.v8f32." + _PSUF[0], _F8,
                [_F8.as_pointer(), _I32, _M8, _F8])
    pre = b.block
    head, body, done = (b.append_basic_block() for _ in range(3))
    b.branch(head)
    b.position_at_end(head)
    t = b.phi(_I64)
    t.add_incoming(t0, pre)
    acc = []
    for a in accs:
        acc.append(b.phi(_F8))
        acc[-1].add_incoming(a, pre)
    b.cbranch(b.icmp_signed("<=", b.add(t, _I64(step)), m), body, done)
    b.position_at_end(body)
    us, rows = [], []
    for q in range(step):
        tq = b.add(t, _I64(q))
        us.append(_splat(b, b.load(b.gep(S, [tq])), _F8))
        rows.append(b.gep(W, [b.add(b.load(b.gep(R, [tq])), cb)]))
    for v in range(nv):
        ws = []
        for row in rows:
            p = b.bitcast(b.gep(row, [_I64(_LANES * v)]), _F8.as_pointer())
            if mask is not None and v == nv - 1:
                ws.append(b.call(mload, [p, _I32(4), mask, ir.Constant(_F8, None)]))
            else:
                ws.append(b.load(p, align=4))
        if step == 1:
            new = b.call(fma, [ws[0], us[0], acc[v]])
        else:               # step even: pairs as mul + fma, then a tree of adds
            part = [b.call(fma, [ws[q + 1], us[q + 1], b.fmul(ws[q], us[q])])
                    for q in range(0, step, 2)]
            while len(part) > 1:
                part = [b.fadd(part[q], part[q + 1]) for q in range(0, len(part), 2)]
            new = b.fadd(acc[v], part[0])
        acc[v].add_incoming(new, body)
    t.add_incoming(b.add(t, _I64(step)), body)
    b.branch(head)
    b.position_at_end(done)
    return acc, t


def _emit_block(b, W, R, S, m, P, cb, nv, mask, after):
    """One block of ``nv`` vectors of outputs at column ``cb``: accumulate every listed row
    (:data:`_ROWS` a trip, then one by one), store the sums as float64 into ``P[cb:]``;
    continue at block ``after``."""
    accs, t = _emit_rows(b, W, R, S, m, cb, nv, mask, [ir.Constant(_F8, None)] * nv,
                         _I64(0), _ROWS)
    accs, t = _emit_rows(b, W, R, S, m, cb, nv, mask, accs, t, 1)
    mstore = _fn(b.module, "llvm.masked.store.v8f64." + _PSUF[1], ir.VoidType(),
                 [_D8, _D8.as_pointer(), _I32, _M8])
    for v in range(nv):
        d = b.fpext(accs[v], _D8)
        p = b.bitcast(b.gep(P, [b.add(cb, _I64(_LANES * v))]), _D8.as_pointer())
        if mask is not None and v == nv - 1:
            b.call(mstore, [d, p, _I32(8), mask])
        else:
            b.store(d, p, align=8)
    b.branch(after)


def _rows_dot_fn(module):
    """``void f(float* W, i64* R, float* S, i64 m, i64 n, double* P)``:
    ``P[j] = sum_{t < m} S[t] * W[R[t] + j]`` for ``j < n``: blocks of 64 columns, then one
    block for the 1..63 columns left (its last vector's loads and stores masked, so nothing
    past ``W[R[t] + n]`` is read nor past ``P[n]`` written). Emitted once per LLVM module."""
    ptr = [ir.FloatType().as_pointer(), _I64.as_pointer(), ir.FloatType().as_pointer()]
    fn = _fn(module, "nvmstream_vmm_rows_dot_f32", ir.VoidType(),
             ptr + [_I64, _I64, ir.DoubleType().as_pointer()])
    if not fn.is_declaration:
        return fn
    fn.linkage = "internal"
    W, R, S, m, n, P = fn.args
    entry = fn.append_basic_block()
    b = ir.IRBuilder(entry)
    head, full, tail, ex = (b.append_basic_block() for _ in range(4))
    b.branch(head)
    b.position_at_end(head)
    cb = b.phi(_I64)
    cb.add_incoming(_I64(0), entry)
    nxt = b.add(cb, _I64(_LANES * _VECS))
    b.cbranch(b.icmp_signed("<=", nxt, n), full, tail)
    b.position_at_end(full)
    _emit_block(b, W, R, S, m, P, cb, _VECS, None, head)
    cb.add_incoming(nxt, b.block)
    b.position_at_end(tail)
    left = b.sub(n, cb)
    sw = b.switch(b.sdiv(b.add(left, _I64(_LANES - 1)), _I64(_LANES)), ex)
    lanes = ir.Constant(ir.VectorType(_I64, _LANES), [_I64(i) for i in range(_LANES)])
    for nv in range(1, _VECS + 1):      # 1..8 vectors, the last one masked
        blk = b.append_basic_block()
        sw.add_case(_I64(nv), blk)
        b.position_at_end(blk)
        last = _splat(b, b.sub(left, _I64(_LANES * (nv - 1))), ir.VectorType(_I64, _LANES))
        _emit_block(b, W, R, S, m, P, cb, nv, b.icmp_signed("<", lanes, last), ex)
    b.position_at_end(ex)
    b.ret_void()
    return fn


@intrinsic
def _rows_dot(typingctx, W, w0, R, S, m, n, P, k, c):
    """``P[k, c + j] = sum_{t < m} S[t] * W[w0 + R[t] + j]`` for ``j < n`` (float32 W and S,
    int64 R, float64 P; the sums exact integers, see above): :func:`_rows_dot_fn` called on
    the arrays' data pointers (no bounds checks: the caller's indices are in range)."""
    sig = types.void(W, w0, R, S, m, n, P, k, c)

    def codegen(context, builder, sig, args):
        Wa, Ra, Sa, Pa = (context.make_array(sig.args[i])(context, builder, args[i])
                          for i in (0, 2, 3, 6))

        def i64(i):
            return context.cast(builder, args[i], sig.args[i], types.int64)
        pk = cgutils.get_item_pointer2(context, builder, Pa.data,
                                       cgutils.unpack_tuple(builder, Pa.shape),
                                       cgutils.unpack_tuple(builder, Pa.strides),
                                       sig.args[6].layout, [i64(7), i64(8)])
        builder.call(_rows_dot_fn(builder.module),
                     [builder.gep(Wa.data, [i64(1)]), Ra.data, Sa.data, i64(4), i64(5), pk])
        return context.get_dummy_value()
    return sig, codegen


@njit(cache=True, error_model="numpy", _nrt=False)
def _nonzero_rows(U, k, r0, r1, n_out, S, R):
    """The rows ``r0 <= i < r1`` whose code ``U[k, i]`` is not 0: codes into ``S[:m]``, weight
    offsets ``(i - r0) * n_out`` into ``R[:m]``; returns ``m`` (branch-free: every row is
    written, the count moves only past non-zero ones)."""
    m = 0
    for i in range(r0, r1):
        u = U[k, i]
        S[m] = u
        R[m] = (i - r0) * n_out
        m += 1 if u != 0.0 else 0
    return m


@njit(cache=True, error_model="numpy", _nrt=False)
def _tile_products32(seg, w32, U, nb, S, S2, R, P):
    """The float32 tile products of a segment (those of its weights, read-noise variances and
    IR-drop conductances that the plan keeps in float32) for ``nb`` streams into ``P`` (the
    column layout of :func:`products`): per tile and stream the non-zero codes are listed
    once, then each matrix runs :func:`_rows_dot` on them (variances on the squared codes,
    conductances on their magnitudes, in ``S2``)."""
    n_in, n_out, tr, nblk = seg.n_in, seg.n_out, seg.tile_rows, seg.nblk
    cv = nblk * n_out
    cc = cv * (2 if seg.var >= 0 else 1)
    dw = seg.w64 == 0
    dv = seg.var >= 0 and seg.var64 == 0
    dc = seg.cur >= 0 and seg.cur64 == 0
    for blk in range(nblk):
        r0 = blk * tr
        r1 = min(n_in, r0 + tr)
        c = blk * n_out
        o = r0 * n_out
        for k in range(nb):
            m = _nonzero_rows(U, k, r0, r1, n_out, S, R)
            if dw:
                _rows_dot(w32, seg.w + o, R, S, m, n_out, P, k, c)
            if dv:
                for t in range(m):
                    S2[t] = S[t] * S[t]
                _rows_dot(w32, seg.var + o, R, S2, m, n_out, P, k, cv + c)
            if dc:
                for t in range(m):
                    S2[t] = abs(S[t])
                _rows_dot(w32, seg.cur + o, R, S2, m, n_out, P, k, cc + c)


@njit(cache=True, error_model="numpy", fastmath={"contract"}, _nrt=False)
def _tile_products(W, off, n_in, n_out, tr, nblk, U, nb, square, acc, P, col0):
    """``P[k, col0 + blk*n_out + j] = sum_{i in tile blk} W[off + i*n_out + j] * u_ki``
    (``u_ki^2`` if ``square == 1``, ``|u_ki|`` if ``square == 2``), accumulated in W's dtype:
    the float64 route (matrices the plan could not prove exact in float32, inputs without a
    DAC). Four rows at a time: each pass over the outputs adds four weighted rows to the
    accumulator (a quarter of the accumulator loads and stores of a row-by-row axpy). The
    order of the sum, and fused multiply-adds (``contract``), do not matter because every
    product and partial sum is an exact integer (see module docstring). W is indexed flat
    with unsigned offsets: no per-row view (each view costs a reference-count pair, ~0.5 us
    per call for a 64-row matrix) and no wraparound select (a signed index numba cannot prove
    non-negative costs one per element and stops vectorization); no row views either: every
    view is a reference-count pair, an atomic operation each."""
    no = np.uint64(n_out)
    for blk in range(nblk):
        r0 = blk * tr
        r1 = min(n_in, r0 + tr)
        c = np.uint64(col0 + blk * n_out)
        nq = (r1 - r0) // 4
        for k in range(nb):
            for j in range(no):
                acc[k, j] = 0.0
            base = np.uint64(off + r0 * n_out)
            for q in range(nq):
                i = np.uint64(r0 + 4 * q)
                u0, u1 = U[k, i], U[k, i + np.uint64(1)]
                u2, u3 = U[k, i + np.uint64(2)], U[k, i + np.uint64(3)]
                if square == 1:
                    u0, u1, u2, u3 = u0 * u0, u1 * u1, u2 * u2, u3 * u3
                elif square == 2:
                    u0, u1, u2, u3 = abs(u0), abs(u1), abs(u2), abs(u3)
                if u0 != 0.0 or u1 != 0.0 or u2 != 0.0 or u3 != 0.0:
                    b1 = base + no
                    b2 = b1 + no
                    b3 = b2 + no
                    for j in range(no):
                        acc[k, j] += ((W[base + j] * u0 + W[b1 + j] * u1)
                                      + (W[b2 + j] * u2 + W[b3 + j] * u3))
                base += np.uint64(4) * no
            for i in range(r0 + 4 * nq, r1):
                u = U[k, np.uint64(i)]
                if square == 1:
                    u = u * u
                elif square == 2:
                    u = abs(u)
                if u != 0.0:
                    for j in range(no):
                        acc[k, j] += W[base + j] * u
                base += no
            for j in range(no):
                P[k, c + j] = float(acc[k, j])


@njit(cache=True, error_model="numpy", _nrt=False)
def products(seg, w32, w64, U32, U64, nb, A32, A64, P):
    """Tile products of one segment for ``nb`` streams (DAC codes already in U32/U64):
    ``P[k, :nblk*n_out]`` partial sums, then (read noise) ``P[k, nblk*n_out:]`` variances,
    then (IR drop) the currents. ``A32``/``A64`` scratch ``[>= 2, >= n_in]``: the float32
    route's row lists, the float64 route's accumulators."""
    n_in, n_out, tr, nblk = seg.n_in, seg.n_out, seg.tile_rows, seg.nblk
    # modes and offsets typed at run time (a literal 0/1/2 would make numba compile a
    # specialization of _tile_products per literal)
    m0 = nb - nb
    m1, m2, cv = m0 + 1, m0 + 2, nblk * n_out
    if seg.w64 == 0 or (seg.var >= 0 and seg.var64 == 0) or (seg.cur >= 0 and seg.cur64 == 0):
        _tile_products32(seg, w32, U32, nb, A32[0], A32[1], A64[0].view(np.int64), P)
    if seg.w64 == 1:
        _tile_products(w64, seg.w, n_in, n_out, tr, nblk, U64, nb, m0, A64, P, m0)
    if seg.var >= 0 and seg.var64 == 1:
        _tile_products(w64, seg.var, n_in, n_out, tr, nblk, U64, nb, m1, A64, P, cv)
    if seg.cur >= 0 and seg.cur64 == 1:    # IR drop: accumulated column currents
        c0 = nblk * n_out * (2 if seg.var >= 0 else 1)
        _tile_products(w64, seg.cur, n_in, n_out, tr, nblk, U64, nb, m2, A64, P, c0)
    if seg.dac_dyn == 1:   # the vectors' DAC steps ride in the last product column
        cd = nblk * n_out * (1 + (1 if seg.var >= 0 else 0) + (1 if seg.cur >= 0 else 0))
        for k in range(nb):
            P[k, cd] = U64[k, n_in]


@njit(cache=True, error_model="numpy")
def products_at(segs, si, w32, w64, U32, U64, nb, A32, A64, P):
    """:func:`products` for ``segs[si]`` (an entry point for tests: records stay in numba)."""
    products(segs[si], w32, w64, U32, U64, nb, A32, A64, P)


@njit(cache=True, error_model="numpy", _nrt=False)
def periphery(seg, pf, P, r, pc, st, G, Q, Z, out, ro):
    """Everything after the tile products, for one stream: its products are row ``r`` of
    ``P`` from column ``pc`` on (see :func:`products`), ``st`` its random state (consumed in
    the order documented in :mod:`.rng`), ``G``/``Q``/``Z`` scratch [n_out]; adds the segment's
    output (model units) into ``out[ro, :n_out]``. Stage by stage over the outputs (each
    loop vectorizes). Rows and columns are indexed in place with unsigned offsets: a row view
    would cost a reference-count pair (two atomic operations) per call."""
    n_out = seg.n_out
    nblk = seg.nblk
    wg = seg.wgrid
    vg = seg.vgrid
    aq = float(seg.adc_q)
    vo = nblk * n_out
    adc = seg.adc
    no = np.uint64(n_out)
    for j in range(no):
        Q[j] = 0.0
    for blk in range(nblk):
        c0 = blk * n_out
        cp = np.uint64(pc + c0)
        # read noise (G holds the noisy partial sums afterwards)
        if seg.var >= 0:
            cv = np.uint64(pc + vo + c0)
            fill_normals(st, G, n_out)
            for j in range(no):
                G[j] = P[r, cp + j] * wg + math.sqrt(P[r, cv + j] * vg) * G[j]
        else:
            for j in range(no):
                G[j] = P[r, cp + j] * wg
        # IR drop: y * max(1 - k_blk * S, 0), S the column pair's accumulated current
        if seg.cur >= 0:
            _ir_drop(G, P[r, pc:], vo * (2 if seg.var >= 0 else 1) + c0, seg.cgrid,
                     pf[seg.irk + blk], n_out)
        # VMM noise before the ADC (code units per tile)
        if seg.vmm_pre == 1:
            _add_normals(G, pf[seg.vmm:seg.vmm + n_out], st, n_out, Z)
        # ADC (+ noise) and the digital sum over tiles
        if adc >= 0:
            if seg.adc_gain >= 0:
                _adc_mismatch(seg, pf, G, pf[adc + c0:adc + c0 + n_out], aq, st, Q, n_out, c0,
                              Z)
            elif seg.adc_noise > 0.0:
                _adc_noisy(G, pf[adc + c0:adc + c0 + n_out], aq, seg.adc_noise, st, Q, n_out, Z)
            else:
                ca = np.uint64(adc + c0)
                for j in range(no):
                    stp = pf[ca + j]
                    c = min(max(np.rint(G[j] / stp), -aq), aq)
                    Q[j] += c * stp
        else:
            for j in range(no):
                Q[j] += G[j]
    sw = np.uint64(seg.sw)
    scale = seg.dac_step if seg.dac_q > 0 else 1.0
    if seg.dac_dyn == 1:
        scale = P[r, pc + vo * (1 + (1 if seg.var >= 0 else 0) + (1 if seg.cur >= 0 else 0))]
    if seg.vmm_sigma > 0.0 and seg.vmm_pre == 0:
        fill_normals(st, G, n_out)
        sg = np.uint64(seg.vmm)
        for j in range(no):
            out[ro, j] += Q[j] * pf[sw + j] * scale + pf[sg + j] * G[j]
    else:
        for j in range(no):
            out[ro, j] += Q[j] * pf[sw + j] * scale


@njit(cache=True, error_model="numpy", _nrt=False)
def _ir_drop(G, P, c, cg, k, n):
    """``G[j] *= max(1 - k * P[c + j] * cg, 0)`` (the twin: ``devices.periphery.IRDrop``)."""
    for j in range(n):
        G[j] = G[j] * max(1.0 - k * (P[c + j] * cg), 0.0)


@njit(cache=True, error_model="numpy", _nrt=False)
def _add_normals(p, sig, st, n, g):
    """``p[:n] += sig * N(0, 1)`` (the normals drawn into the scratch ``g``)."""
    fill_normals(st, g, n)
    for j in range(n):
        p[j] += sig[j] * g[j]


@njit(cache=True, error_model="numpy", _nrt=False)
def _adc_mismatch(seg, pf, p, steps, aq, st, Q, n, c0, g):
    """ADC instances with drawn gain/offset (and INL levels): ``x = (p/step + noise) * gain +
    offset``, code = ``#(levels <= x) - qmax`` (INL) or ``clip(rint(x))``; ``Q += code *
    step`` (the twin: ``devices.periphery.ADC.apply``); ``g`` scratch for the noise."""
    if seg.adc_noise > 0.0:
        fill_normals(st, g, n)
    anz = seg.adc_noise
    gain = pf[seg.adc_gain + c0:seg.adc_gain + c0 + n]
    off = pf[seg.adc_off + c0:seg.adc_off + c0 + n]
    nl = 2 * seg.adc_q
    for j in range(n):
        x = p[j] / steps[j]
        if anz > 0.0:
            x = x + anz * g[j]
        x = x * gain[j] + off[j]
        if seg.adc_thr >= 0:
            t0 = seg.adc_thr + (c0 + j) * nl
            c = 0.0
            for k in range(nl):
                if pf[t0 + k] <= x:
                    c += 1.0
            c -= aq
        else:
            c = min(max(np.rint(x), -aq), aq)
        Q[j] += c * steps[j]


@njit(cache=True, error_model="numpy", _nrt=False)
def _adc_noisy(p, steps, aq, anz, st, Q, n, g):
    """ADC with input-referred noise: ``Q += clip(rint(p/step + anz*N(0,1))) * step``; the
    normals are drawn into the scratch ``g``."""
    fill_normals(st, g, n)
    for j in range(n):
        c = min(max(np.rint(p[j] / steps[j] + anz * g[j]), -aq), aq)
        Q[j] += c * steps[j]


# ------------------------------------------------------------------------------ BLAS route
@njit(cache=True, error_model="numpy")
def dac_rows(X, rows, x0, inv, q, U, U2, square):
    """DAC codes of ``X[rows[r], x0 : x0 + n_in]`` (float32 or float64 inputs; ``rows`` an
    int64 row index, e.g. the pool rows of a batch's recurrent states, or 0..R-1 for the time
    steps of a layer input) into ``U[r]`` (float32, exact small integers) and, if ``square``,
    their squares into ``U2[r]``: the same float64 operations as :func:`dac`."""
    n_in = U.shape[1]
    for r in range(rows.shape[0]):
        xr = X[rows[r], x0:x0 + n_in]
        ur = U[r]
        for i in range(n_in):
            c = np.rint(float(xr[i]) * inv)
            if c > q:
                c = q
            elif c < -q:
                c = -q
            ur[i] = np.float32(c)
        if square:
            u2 = U2[r]
            for i in range(n_in):
                u2[i] = ur[i] * ur[i]


class BlasSegment:
    """The BLAS route of one segment, prepared once (views and scalars, so a call costs only
    its numpy work): :meth:`run_rows` writes the tile products of rows of a ``[R, width]``
    array (an env of layer inputs, or the recurrent state pool) into ``out[:, pre : pre +
    pre_width]`` (float32). Only for segments with a DAC whose weights and variances sit in
    float32 (the plan's proof: every tile partial sum is an integer below 2^24), a static DAC
    range and no IR-drop currents (:attr:`f32`), so these equal
    :func:`products` bit for bit whatever order the BLAS sums in.

    Per call: one numba pass for the DAC codes (and their squares, with read noise) into
    preallocated float32 buffers, then one ``sgemm`` per row tile writing straight into the
    products array (``np.matmul(..., out=view)``: no temporaries, no dtype conversion)."""

    def __init__(self, seg, w32: np.ndarray, w64: np.ndarray) -> None:
        n_in, n_out = int(seg["n_in"]), int(seg["n_out"])
        tr, nblk = int(seg["tile_rows"]), int(seg["nblk"])
        self.n_in = n_in
        self.q = float(seg["dac_q"])
        self.inv = 1.0 / float(seg["dac_step"])
        self.dyn = int(seg["dac_dyn"]) == 1
        wbuf = w64 if seg["w64"] else w32
        w0 = int(seg["w"])
        W = wbuf[w0:w0 + n_in * n_out].reshape(n_in, n_out)
        c0 = int(seg["pre"])
        self.dcol = c0 + LY.dyn_col(seg)
        self.dtype = wbuf.dtype
        self.blocks = [(slice(b * tr, min(n_in, (b + 1) * tr)),
                        slice(c0 + b * n_out, c0 + (b + 1) * n_out)) for b in range(nblk)]
        self.W = [W[r] for r, _ in self.blocks]
        self.var = None
        self.vdtype = self.dtype
        if seg["var"] >= 0:
            vbuf = w64 if seg["var64"] else w32
            v0 = int(seg["var"])
            Var = vbuf[v0:v0 + n_in * n_out].reshape(n_in, n_out)
            self.vdtype = vbuf.dtype
            self.var = [Var[r] for r, _ in self.blocks]
            self.vcols = [slice(c.start + nblk * n_out, c.stop + nblk * n_out)
                          for _, c in self.blocks]
        self.cur = None
        if seg["cur"] >= 0:          # IR drop: accumulated currents on |codes|
            cbuf = w64 if seg["cur64"] else w32
            k0 = int(seg["cur"])
            Cur = cbuf[k0:k0 + n_in * n_out].reshape(n_in, n_out)
            self.cdtype = cbuf.dtype
            self.cur = [Cur[r] for r, _ in self.blocks]
            sh = nblk * n_out * (2 if seg["var"] >= 0 else 1)
            self.ccols = [slice(c.start + sh, c.stop + sh) for _, c in self.blocks]

        # the engine's float32 route (run_rows): exact float32 products, a static DAC range
        # (a dynamic DAC's per-vector step is not an integer) and no IR-drop currents
        self.f32 = (self.dtype == np.float32 and self.vdtype == np.float32
                    and not self.dyn and self.cur is None)

    def run_rows(self, X: np.ndarray, rows: np.ndarray, x0: int, out: np.ndarray,
                 U: np.ndarray, U2: np.ndarray) -> None:
        """Products of ``X[rows, x0 : x0 + n_in]`` into ``out`` (float32 ``[len(rows), :]``);
        ``U``/``U2`` float32 ``[len(rows), n_in]`` scratch (``U2`` unused without read
        noise). Needs :attr:`f32`."""
        sq = self.var is not None
        dac_rows(X, rows, x0, self.inv, self.q, U, U2, sq)
        for (r, cols), W in zip(self.blocks, self.W):
            np.matmul(U[:, r], W, out=out[:, cols])
        if sq:
            for (r, _), cols, Var in zip(self.blocks, self.vcols, self.var):
                np.matmul(U2[:, r], Var, out=out[:, cols])

    def codes(self, V: np.ndarray) -> np.ndarray:
        """numpy DAC, the same float64 operations as :func:`dac`."""
        if self.dyn:
            U = np.rint(V * (1.0 / self.steps(V))[:, None])
        else:
            U = np.rint(V * self.inv)
        np.clip(U, -self.q, self.q, out=U)
        return U

    def steps(self, V: np.ndarray) -> np.ndarray:
        """Dynamic DAC: each row's step, as :func:`_vector_step`."""
        m = np.max(np.abs(V), axis=1)
        return np.where(m > 0, m / self.q, 1.0)

    def run(self, V: np.ndarray, out: np.ndarray) -> None:
        """Products of every row of ``V[rows, n_in]`` (model units, float64) into ``out`` in
        the accumulator's dtype (any float ``out``; for tests and one-off use)."""
        U = self.codes(V)
        if self.dyn:
            out[:, self.dcol] = self.steps(V)
        Uw = U.astype(self.dtype)
        for (rows, cols), W in zip(self.blocks, self.W):
            out[:, cols] = Uw[:, rows] @ W
        if self.var is not None:
            U2 = U.astype(self.vdtype)
            U2 *= U2
            for (rows, _), cols, Var in zip(self.blocks, self.vcols, self.var):
                out[:, cols] = U2[:, rows] @ Var
        if self.cur is not None:
            Ua = np.abs(U).astype(self.cdtype)
            for (rows, _), cols, Cur in zip(self.blocks, self.ccols, self.cur):
                out[:, cols] = Ua[:, rows] @ Cur


def dac_codes(seg, V: np.ndarray) -> np.ndarray:
    """numpy DAC, the same float64 operations as :func:`dac` (``V[rows, n_in]`` float64)."""
    q = float(seg["dac_q"])
    if int(seg["dac_dyn"]) == 1:
        m = np.max(np.abs(V), axis=1)
        return np.clip(np.rint(V * (1.0 / np.where(m > 0, m / q, 1.0))[:, None]), -q, q)
    return np.clip(np.rint(V * (1.0 / float(seg["dac_step"]))), -q, q)


def blas_products(seg, w32: np.ndarray, w64: np.ndarray, V: np.ndarray,
                  out: np.ndarray) -> None:
    """:class:`BlasSegment` in one call (for tests and one-off use)."""
    BlasSegment(seg, w32, w64).run(V, out)
