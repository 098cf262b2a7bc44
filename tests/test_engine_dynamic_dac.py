"""Dynamic DAC range (dac.range = dynamic, aihwkit's ABS_MAX noise management): each vector's
largest |input| maps to the full-scale code, outputs are rescaled by that vector's step; the
kernel (both product routes) equals the numpy twin bit for bit; the energy ledger charges the
max-finder and the rescales."""

from __future__ import annotations

import numpy as np
import pytest

from nvmstream.devices.periphery import DAC
from test_engine_periphery import _engine, _kernel, assert_kernel_routes_match_twin


def test_each_vector_uses_the_full_code_range():
    d = DAC(4, range="dynamic").calibrate(np.ones((3, 5)) * 10)
    v = np.random.default_rng(0).normal(0, 1, (50, 9)) * np.logspace(-3, 2, 50)[:, None]
    u = d.apply(v)
    assert np.all(np.max(np.abs(u), axis=1) == 7)                  # every vector: full scale
    st = np.max(np.abs(v), axis=1) / 7
    np.testing.assert_array_equal(u, np.clip(np.rint(v * (1.0 / st)[:, None]), -7, 7))
    # reconstruction error of each vector is at most half its own step (static: of the range's)
    err = np.abs(u * d.output_scale(v) - v)
    assert np.all(err <= st[:, None] / 2 + 1e-12)
    assert np.all(d.apply(np.zeros((2, 9))) == 0) and np.all(d.vector_steps(np.zeros(9)) == 1)
    with pytest.raises(ValueError, match="dac.range"):
        DAC(4, range="auto")


@pytest.mark.parametrize("ov", [["dac.range=dynamic"],
                                ["dac.range=dynamic", "tile.rows=5", "read.model=pcm_1f",
                                 "tile.wire_ohm=1.0", "adc.noise_lsb=0.2"]])
def test_kernel_equals_twin_and_blas_route(ov):
    eng = _engine("pcm", ov)
    for seg in eng.plan.segments:
        rec = eng.plan.segs[seg.index]
        assert int(rec["dac_dyn"]) == 1
        V = np.random.default_rng(1).normal(0, 1, (12, seg.n_in)) * np.logspace(-2, 1, 12)[:, None]
        V[3] = 0.0
        assert_kernel_routes_match_twin(eng, seg, V)


def test_small_inputs_keep_resolution_only_with_a_dynamic_range():
    st = _engine("int4", ["adc.bits=0"])
    dy = _engine("int4", ["adc.bits=0", "dac.range=dynamic"])
    seg_s, seg_d = st.plan.segments[0], dy.plan.segments[0]
    v = np.random.default_rng(2).normal(0, 1, seg_s.n_in) * 0.02   # far below the static range
    ideal = seg_s.w_eff.astype(np.float64) @ v * seg_s.scales
    z = np.zeros(4, np.uint64)
    e_s = np.abs(_kernel(st, seg_s, v, z.copy()) - ideal).mean()
    e_d = np.abs(_kernel(dy, seg_d, v, z.copy()) - ideal).mean()
    assert e_d < 0.5 * e_s


def test_ledger_charges_the_dynamic_range():
    from nvmstream.runtime.ledger import step_costs
    st = _engine("int4")
    dy = _engine("int4", ["dac.range=dynamic"])
    cs, gs = step_costs(st.model, st.plan)
    cd, gd = step_costs(dy.model, dy.plan)
    want_adds = want_muls = 0
    by_layer = {}
    for seg in dy.plan.segments:
        by_layer.setdefault(seg.layer, []).append(seg)
    for name, segs in by_layer.items():
        adds = sum(s.n_in - 1 for s in segs)
        muls = sum(s.n_in + 1 + s.n_out for s in segs)
        assert cd[name].digital_adds - cs[name].digital_adds == adds
        assert cd[name].digital_muls - cs[name].digital_muls == muls
        depth = max(int(np.ceil(np.log2(s.n_in))) + 3 for s in segs)
        assert gd[name].digital_ops_critical - gs[name].digital_ops_critical == depth
        want_adds += adds
        want_muls += muls
    assert want_adds > 0 and want_muls > 0
