"""The engine's random numbers, defined once: xoshiro256** states seeded by splitmix64, and
standard normals by the ziggurat method (256 layers).

Consumption order (what makes seeds reproduce results regardless of batching): every
(stream replica, layer-direction) owns one state; within a time step a layer-direction draws,
for each of its segments in plan order, for each row tile in order, ``n_out`` read-noise
normals (if the segment has read noise), then ``n_out`` VMM-noise normals (if the VMM noise
enters before the ADC), then ``n_out`` ADC-noise normals (if the ADC is noisy), and after the
last tile ``n_out`` VMM-noise normals (if the VMM noise enters after the ADC). Steps are consumed in the
direction's time order. Nothing else draws from these states, so how streams are batched,
how a sequence is chunked into frames, and which product route runs (BLAS or in-kernel) never
changes a draw.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, inline="always", error_model="numpy")
def _rotl(x, k):
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(cache=True, inline="always", error_model="numpy")
def _xo(s0, s1, s2, s3):
    """One xoshiro256** (Blackman & Vigna) step on a state held in locals:
    (result, s0, s1, s2, s3)."""
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


def _zig_tables(n=256, r=3.6541528853610088, v=4.92867323399e-3):
    """Marsaglia & Tsang (2000) ziggurat tables for the standard normal: ``n`` layers of area
    ``v`` each, the base layer's right edge ``r`` (256 layers with numpy's constants: the fast
    test accepts 98.5% of first draws, against 97.2% with 128 layers)."""
    m1 = 2147483648.0
    dn = tn = r
    kn = np.zeros(n, np.int64)
    wn = np.zeros(n)
    fn = np.zeros(n)
    q = v / math.exp(-0.5 * dn * dn)
    kn[0] = int((dn / q) * m1)
    kn[1] = 0
    wn[0] = q / m1
    wn[n - 1] = dn / m1
    fn[0] = 1.0
    fn[n - 1] = math.exp(-0.5 * dn * dn)
    for i in range(n - 2, 0, -1):
        dn = math.sqrt(-2.0 * math.log(v / dn + math.exp(-0.5 * dn * dn)))
        kn[i + 1] = int((dn / tn) * m1)
        tn = dn
        fn[i] = math.exp(-0.5 * dn * dn)
        wn[i] = dn / m1
    return kn, wn, fn


_KN, _WN, _FN = _zig_tables()
ZIG_LAYERS = 256
_ZIG_R = 3.6541528853610088
_ZIG_MASK = np.uint64(ZIG_LAYERS - 1)


@njit(cache=True, error_model="numpy", _nrt=False)
def _zig_slow(st, r):
    """The ziggurat's rare paths for a first draw ``r`` that missed the fast test (~1.5%):
    tail (layer 0) or wedge test, then new draws (fast test first) until one is accepted.
    The state lives in ``st[4]`` here, so the caller's fast loop keeps it in registers."""
    s0, s1, s2, s3 = st[0], st[1], st[2], st[3]
    first = True
    res = 0.0
    while True:
        if not first:
            r, s0, s1, s2, s3 = _xo(s0, s1, s2, s3)
        first = False
        iz = np.int64(r & _ZIG_MASK)
        hz = np.int64(np.int32(np.uint32(r >> np.uint64(32))))
        if abs(hz) < _KN[iz]:
            res = hz * _WN[iz]
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
            res = _ZIG_R + xx if hz > 0 else -_ZIG_R - xx
            break
        r1, s0, s1, s2, s3 = _xo(s0, s1, s2, s3)
        u = float(r1 >> np.uint64(11)) * (1.0 / 9007199254740992.0)
        if _FN[iz] + u * (_FN[iz - 1] - _FN[iz]) < math.exp(-0.5 * x * x):
            res = x
            break
    st[0], st[1], st[2], st[3] = s0, s1, s2, s3
    return res


@njit(cache=True, error_model="numpy", _nrt=False)
def fill_normals(st, out, n):
    """``out[:n]`` = standard normals from xoshiro state ``st[4]`` (ziggurat: the layer index
    from the low 8 bits, a signed 32-bit value from the high bits of one 64-bit draw; the tail
    and wedges by Marsaglia & Tsang). The fast test (accepting ~98.5% of first draws) runs in
    a tight loop with the state in registers; the rare paths are a call (:func:`_zig_slow`)
    that consumes the same draws in the same order as one loop would."""
    s0, s1, s2, s3 = st[0], st[1], st[2], st[3]
    for k in range(n):
        r, s0, s1, s2, s3 = _xo(s0, s1, s2, s3)
        iz = np.int64(r & _ZIG_MASK)
        hz = np.int64(np.int32(np.uint32(r >> np.uint64(32))))
        if abs(hz) < _KN[iz]:
            out[k] = hz * _WN[iz]
        else:
            st[0], st[1], st[2], st[3] = s0, s1, s2, s3
            out[k] = _zig_slow(st, r)
            s0, s1, s2, s3 = st[0], st[1], st[2], st[3]
    st[0], st[1], st[2], st[3] = s0, s1, s2, s3


def normals(state: np.ndarray, n: int) -> np.ndarray:
    """``n`` normals from ``state`` (advanced in place): the numpy-side view of the sampler,
    for the twins in tests."""
    out = np.empty(n)
    fill_normals(state, out, n)
    return out
