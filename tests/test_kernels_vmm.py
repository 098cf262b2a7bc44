"""The in-kernel tile products (runtime/kernels/vmm.py ``products``: the register-blocked
float32 route and the float64 route) equal a plain numpy integer matmul, bit for bit, on
awkward shapes: outputs around the 8-lane and 64-column blocks, inputs split into row tiles,
rows with zero codes (skipped by the kernel), several streams, weights, read-noise
variances (squared codes) and IR-drop conductances (|codes|)."""

from __future__ import annotations

import numpy as np
import pytest

from nvmstream.runtime.kernels import layout as LY
from nvmstream.runtime.kernels.vmm import products_at

QMAX = 7                        # a 4-bit DAC


def _case(rng, n_in, n_out, tr, nb, wide, parts):
    """A segment record over random integer matrices (weights, variances, conductances as
    listed in ``parts``; float64 buffers if ``wide``), codes with ~1/3 zeros and one all-zero
    stream; returns (segs, w32, w64, U32, U64, matrices). Magnitudes keep every tile sum
    below 2^24, as the plan proves for the float32 route."""
    nblk = -(-n_in // tr)
    lim = (2 ** 24 - 1) // (min(tr, n_in) * QMAX * QMAX)
    seg = LY.segments(1)
    seg["n_in"], seg["n_out"], seg["tile_rows"], seg["nblk"] = n_in, n_out, tr, nblk
    seg["dac_q"] = QMAX
    bufs, mats, off = [], {}, 5             # a non-zero first offset
    for name in parts:
        M = rng.integers(-lim, lim + 1, (n_in, n_out)).astype(np.int64)
        if name != "w":
            M = np.abs(M)
        mats[name] = M
        seg[name] = off
        seg[name + "64"] = int(wide)
        bufs.append(M.ravel())
        off += M.size
    flat = np.concatenate([np.zeros(5, np.int64)] + bufs)
    w32 = flat.astype(np.float32) if not wide else np.zeros(1, np.float32)
    w64 = flat.astype(np.float64) if wide else np.zeros(1, np.float64)
    w = max(n_in, n_out) + 1        # the scratch width (plan.max_w + 1) of such an engine
    U64 = np.zeros((16, w))
    U64[:nb, :n_in] = rng.integers(-QMAX, QMAX + 1, (nb, n_in))
    U64[:nb, :n_in][rng.random((nb, n_in)) < 0.33] = 0
    if nb > 1:
        U64[1] = 0
    U64[:nb, n_in:] = 99            # garbage past the input: must not be read
    return seg, w32, w64, U64.astype(np.float32), U64, mats


def _expected(mats, U, n_in, n_out, tr, nb):
    """Tile products by numpy int64 matmul, in the products' column layout."""
    nblk = -(-n_in // tr)
    cols = []
    for name, f in (("w", lambda u: u), ("var", lambda u: u * u), ("cur", np.abs)):
        if name not in mats:
            continue
        u = f(U[:nb, :n_in].astype(np.int64))
        for b in range(nblk):
            r = slice(b * tr, min(n_in, (b + 1) * tr))
            cols.append(u[:, r] @ mats[name][r])
    return np.concatenate(cols, axis=1).astype(np.float64)


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("n_out", [1, 7, 8, 63, 64, 65, 200])
def test_products_equal_integer_matmul(n_out, wide):
    rng = np.random.default_rng(n_out)
    for n_in, tr, nb, parts in [(1, 1, 1, ("w",)), (5, 2, 3, ("w", "var")),
                                (12, 12, 1, ("w", "var")), (70, 32, 3, ("w", "var", "cur")),
                                (64, 64, 1, ("w", "cur")), (33, 8, 3, ("w",))]:
        seg, w32, w64, U32, U64, mats = _case(rng, n_in, n_out, tr, nb, wide, parts)
        nblk = -(-n_in // tr)
        width = nblk * n_out * len(parts)
        P = np.full((16, width + 3), -1.0)
        A32 = np.full(U32.shape, np.nan, np.float32)
        A64 = np.full(U64.shape, np.nan)
        products_at(seg, 0, w32, w64, U32, U64, nb, A32, A64, P)
        want = _expected(mats, U64, n_in, n_out, tr, nb)
        np.testing.assert_array_equal(P[:nb, :width], want, err_msg=f"{n_in}x{n_out}/{tr}")
        assert np.all(P[:nb, width:] == -1.0)        # nothing written past the products
        assert np.all(P[nb:] == -1.0)                # nor for streams past nb
