"""The periphery stages and the exactness proof: the kernel's segment equals the composition
of the devices.periphery ``apply``s (tests/naive.py) bit for bit, noise-free and noisy (same
random state -> same normals); the BLAS and in-kernel product routes agree; the plan proves
or widens its accumulator; one crossbar mapping for inspect, plan and ledger."""

from __future__ import annotations

import numpy as np
import pytest

import nvmstream as nvm
from naive import vmm as twin_vmm
from nvmstream.runtime import kernels as K
from nvmstream.runtime.plan import F32_EXACT, F64_EXACT, _tile_bound, exact_grid
from onnx_util import FIXTURES


def _engine(profile, overrides=(), name="lstm1_bf.ts.onnx"):
    cal = np.random.default_rng(0).normal(0, 1, (16, 40, 12)).astype(np.float32)
    prog = nvm.convert(FIXTURES / name, calibration=cal)
    return nvm.Engine(prog, nvm.Device(profile, seed=0, overrides=list(overrides)))


def _kernel(eng, seg, v, state, pre=None):
    """The kernel's segment on one input vector (in-kernel products, or ``pre`` products)."""
    plan = eng.plan
    scr = K.scratch(plan.layers, plan.segs, plan.max_w)
    rng = state.reshape(1, 1, 4)
    out = np.zeros((1, seg.n_out))
    V = np.zeros((K.BB, plan.max_w + 1))
    V[0, :seg.n_in] = v
    row = np.zeros(1, np.int64)
    use = pre is not None
    K.segment_at(plan.segs, seg.index, plan.w32, plan.w64, plan.pf, V, 1, rng, row, 0, out,
              pre if use else np.empty((1, 1), np.float32), row, use, scr)
    return out[0]


def assert_kernel_routes_match_twin(eng, seg, V):
    """For each row of ``V``: the in-kernel products, the BLAS products and the numpy twin
    (tests/naive.py) give the same segment outputs bit for bit, from the same noise state."""
    from naive import vmm as twin_vmm
    rec = eng.plan.segs[seg.index]
    pre = np.zeros((len(V), K.layout.pre_width(rec) + int(rec["pre"])))
    K.blas_products(rec, eng.plan.w32, eng.plan.w64, V, pre)
    for r, v in enumerate(V):
        s1 = np.empty((1, 4), np.uint64)
        K.seed_states(np.array([r], np.uint64), s1)
        s2, s3 = s1.copy(), s1.copy()
        a = _kernel(eng, seg, v, s1[0])
        np.testing.assert_array_equal(a, twin_vmm(seg, v, s2[0]))
        np.testing.assert_array_equal(a, _kernel(eng, seg, v, s3[0], pre=pre[r:r + 1]))


NOISY = ["read.model=pcm_1f", "adc.noise_lsb=0.4", "vmm_noise.snr_db=15", "tile.rows=5"]


@pytest.mark.parametrize("profile,overrides", [("int4", []), ("int4", ["tile.rows=5"]),
                                               ("pcm", NOISY), ("rram", ["dac.bits=8"])])
def test_kernel_segment_equals_composition_of_periphery_applies(profile, overrides):
    eng = _engine(profile, overrides)
    xs = np.random.default_rng(1).normal(0, 1.5, (40, 12))
    for seg in eng.plan.segments:
        for v in xs[:, :seg.n_in] if seg.n_in <= 12 else np.random.default_rng(2).normal(
                0, 0.5, (40, seg.n_in)):
            s1 = np.empty((1, 4), np.uint64)
            K.seed_states(np.array([99], np.uint64), s1)
            s2 = s1.copy()
            got = _kernel(eng, seg, v, s1[0])
            want = twin_vmm(seg, v, s2[0])
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(s1, s2)     # the same normals were consumed


@pytest.mark.parametrize("profile,overrides", [("pcm", NOISY), ("int4", ["dac.bits=12",
                                                                          "tile.rows=65536"])])
def test_blas_route_equals_in_kernel_route(profile, overrides):
    eng = _engine(profile, overrides)
    seg = eng.plan.segments[0]
    rec = eng.plan.segs[seg.index]
    V = np.random.default_rng(3).normal(0, 1, (64, seg.n_in))
    blas = K.BlasSegment(rec, eng.plan.w32, eng.plan.w64)
    width = K.layout.pre_width(rec) + int(rec["pre"])
    if blas.f32:      # the engine's route: DAC in numba, sgemm straight into float32
        pre = np.zeros((64, width), np.float32)
        U, U2 = np.empty((2, 64, seg.n_in), np.float32)
        blas.run_rows(V, np.arange(64), 0, pre, U, U2)
        pre64 = np.zeros((64, width))
        blas.run(V, pre64)                            # the numpy one-off route agrees
        np.testing.assert_array_equal(pre, pre64)
    else:             # float64 accumulators: numpy route (the engine runs these in-kernel)
        pre = np.zeros((64, width))
        K.blas_products(rec, eng.plan.w32, eng.plan.w64, V, pre)
    for r in range(64):
        s1 = np.empty((1, 4), np.uint64)
        K.seed_states(np.array([r], np.uint64), s1)
        s2 = s1.copy()
        a = _kernel(eng, seg, V[r], s1[0])
        b = _kernel(eng, seg, V[r], s2[0], pre=pre[r:r + 1])
        np.testing.assert_array_equal(a, b)


def test_plan_proves_exactness_or_widens_the_accumulator():
    # shipped 4-bit profiles: float32, on a fine grid
    for seg in _engine("pcm").plan.segments:
        assert seg.accumulator == "float32" and seg.frac_bits >= 10
        k = np.rint(seg.w_eff * 2.0 ** seg.frac_bits)
        np.testing.assert_array_equal(k * 2.0 ** -seg.frac_bits, seg.w_eff)
        assert _tile_bound(k, seg.tile_rows, seg.dac.qmax) < F32_EXACT
    # 12-bit DAC on 65,536-row tiles: integer codes would overflow float32's exact range for
    # large tiles; the plan switches to float64 accumulation when its bound says so
    rng = np.random.default_rng(0)
    M = rng.integers(-7, 8, (8, 4096)).astype(np.float64)
    wide, f, K_ = exact_grid(M, 65536, 2047, True, 10, "test")
    assert _tile_bound(K_, 65536, 2047) >= F32_EXACT and wide and f == 0
    wide, f, K_ = exact_grid(M[:, :64], 65536, 2047, True, 10, "test")
    assert not wide                                  # 64 rows x 7 x 2047 < 2^24
    # non-integer weights: the finest grid that fits, float64 when float32 would be too coarse
    M = rng.normal(0, 3, (8, 4096))
    wide, f, K_ = exact_grid(M, 4096, 2047, False, 10, "test")
    assert wide and _tile_bound(K_, 4096, 2047) < F64_EXACT
    np.testing.assert_allclose(K_ * 2.0 ** -f, M, atol=2.0 ** -f)
    with pytest.raises(nvm.NvmConversionError, match="exceed float64"):
        exact_grid(np.full((1, 4), 2.0 ** 60), 4, 7, True, 10, "huge")


def test_one_crossbar_mapping_for_inspect_plan_and_ledger(tmp_path):
    """GRU I=5 H=170 linear_before_reset=0: W [510 x 5] -> 2 tiles, R[z,r] [340 x 170] -> 2,
    R[h] [170 x 170] on its own tiles (fed by r*h) -> 1: five 256x256 tiles everywhere."""
    import onnx
    from nvmstream.converters.inspect import describe
    from test_handbuilt_graphs import build
    onnx.save(build(kind="GRU", I=5, H=170, linear_before_reset=0), tmp_path / "g.onnx")
    prog = nvm.convert(tmp_path / "g.onnx",
                       calibration=np.random.default_rng(0).normal(size=(2, 3, 5)))
    eng = nvm.Engine(prog, nvm.Device("int4"))
    plan_tiles = sum(s.tiles for s in eng.plan.segments)
    ledger_tiles = sum(len(g.tiles) for g in eng.ledger.geometry.values())
    assert describe(prog.model)["tiles"] == plan_tiles == ledger_tiles == 5


def test_adc_range_per_tile_is_shared_by_every_column_of_a_tile():
    """adc.range = per_tile: one step per (row tile, column tile) = max over the tile's
    columns of the per-column rule; per_column reproduces the per-(row tile, column) rule
    exactly (the plan's steps against the formula on the calibration partial sums; an
    all-zero column gets step 1)."""
    ov = ["tile.rows=5", "tile.cols=3"]
    tile = _engine("int4", ov)
    col = _engine("int4", ov + ["adc.range=per_column"])
    for st, sc in zip(tile.plan.segments, col.plan.segments):
        assert st.adc_steps.shape == sc.adc_steps.shape == (st.row_tiles, st.n_out)
        for b in range(st.row_tiles):
            for c0 in range(0, st.n_out, 3):
                blk = st.adc_steps[b, c0:c0 + 3]
                assert np.all(blk == blk[0])                       # shared by the tile
                assert blk[0] == sc.adc_steps[b, c0:c0 + 3].max()  # = max of the columns
        # per_column = the rule max |partial sum| / qmax per (row tile, column), exactly
    seg = col.plan.segments[0]
    cal = np.random.default_rng(0).normal(0, 1, (16, 40, 12)).reshape(-1, 12)
    U = seg.dac.apply(cal)
    Q = seg.codes.astype(np.float64)
    for b in range(seg.row_tiles):
        r = slice(b * 5, min(seg.n_in, (b + 1) * 5))
        amax = np.abs(U[:, r] @ Q[:, r].T).max(0)
        np.testing.assert_array_equal(seg.adc_steps[b],
                                      np.where(amax > 0, amax / seg.adc.qmax, 1.0))
    # and the kernel stays the composition of the stages under per_tile steps
    v = np.random.default_rng(4).normal(0, 1.5, 12)
    s1 = np.empty((1, 4), np.uint64)
    K.seed_states(np.array([7], np.uint64), s1)
    s2 = s1.copy()
    seg = tile.plan.segments[0]
    np.testing.assert_array_equal(_kernel(tile, seg, v, s1[0]), twin_vmm(seg, v, s2[0]))


COMP = ["read.model=none", "tile.rows=256", "adc.noise_lsb=0", "drift.age_s=31536000"]


def _programmed(profile, overrides, key):
    """The engine's programmed matrix ``key`` again (same seed and name -> same draws)."""
    cal = np.random.default_rng(0).normal(0, 1, (16, 40, 12)).astype(np.float32)
    prog = nvm.convert(FIXTURES / "lstm1_bf.ts.onnx", calibration=cal)
    dev = nvm.Device(profile, seed=0, overrides=list(overrides))
    return dev.program(prog.codes[key], key, scales=prog.scales[key])


def _readout(w, steps, umax, qa, ones=False):
    """|Y| of the reference inputs through a noise-free one-tile ADC: the one-hot eye(n_in) *
    umax ([n_in, n_out]), or (``ones``) the single input ones(n_in) * umax ([1, n_out])."""
    w = np.asarray(w, np.float64)
    p = umax * (w.sum(axis=1)[None, :] if ones else w.T)
    return np.abs(np.clip(np.rint(p / steps), -qa, qa) * steps)


@pytest.mark.parametrize("mode,reference", [("global", "eye"), ("per_column", "eye"),
                                            ("global", "eye_exact"),
                                            ("per_column", "eye_exact"),
                                            ("global", "ones"), ("per_column", "ones")])
def test_drift_compensation_after_the_adc_is_on_the_adc_grid_times_the_factor(mode, reference):
    """pcm at 1 year, digital compensation: each output is an ADC code x step (one row tile)
    times the per-output scale, the DAC step and the compensation factor, which equals the
    aihwkit rule of ``drift.reference`` computed here through the fixed programming-time ADC
    (full-scale DAC code): eye = the one-hot readouts, global one ratio of mean |Y|,
    per_column one per column; eye_exact = the t0 readout exact from the target codes (no
    programming noise, no ADC); ones = one all-ones input, max |y| (global) or |y_j|."""
    ov = COMP + [f"drift.compensation={mode}", f"drift.reference={reference}"]
    eng = _engine("pcm", ov)
    v = np.random.default_rng(5).normal(0, 1.0, (30, 12))
    factors = []
    for seg in eng.plan.segments:
        assert seg.row_tiles == 1 and seg.comp.mode == mode
        assert seg.comp.reference == reference
        pm = _programmed("pcm", ov, seg.key)
        assert not pm.compensation_folded and pm.stats["drift_applied"]
        # no analog gain in the weights: the plan's w_eff is the device's on its 2^-f grid
        np.testing.assert_allclose(seg.w_eff, pm.w_eff, rtol=0, atol=2.0 ** -seg.frac_bits)
        st, qa, umax = seg.adc_steps[0], seg.adc.qmax, seg.dac.qmax
        ones = reference == "ones"
        y0 = (np.abs(umax * seg.codes.T.astype(np.float64)) if reference == "eye_exact"
              else _readout(pm.w_t0, st, umax, qa, ones))
        y1 = _readout(pm.w_eff, st, umax, qa, ones)
        stat = np.max if ones else np.mean
        r0, r1 = ((np.full(seg.n_out, stat(y0)), np.full(seg.n_out, stat(y1)))
                  if mode == "global" else (stat(y0, axis=0), stat(y1, axis=0)))
        ok = (r0 > 0) & (r1 > 0)                               # nothing measured: c = 1
        want = np.where(ok, r0 / np.where(ok, r1, 1.0), 1.0)
        np.testing.assert_allclose(seg.comp.factor, want, rtol=1e-12)
        factors.append(seg.comp.factor)
        if mode == "global":
            assert np.all(seg.comp.factor == seg.comp.factor[0])
        else:
            assert np.ptp(seg.comp.factor) > 0
        lsb = seg.scales * seg.comp.factor * seg.dac.scale * st
        for x in (v if seg.n_in == 12 else np.random.default_rng(6).normal(0, .5, (30, seg.n_in))):
            s = np.zeros((1, 4), np.uint64)
            z = _kernel(eng, seg, x, s[0])
            k = z / lsb
            np.testing.assert_allclose(k, np.rint(k), atol=1e-9)   # on the ADC grid
            assert np.all(np.abs(np.rint(k)) <= qa)
    if reference != "ones":          # a full-scale all-ones input saturates a 4-bit ADC
        assert all(np.all(f > 1.05) for f in factors)        # a year of PCM drift


def test_adc_track_drift_resets_the_ranges_on_the_drifted_weights():
    """adc.track_drift = true: steps at the age = the ADC rule on the drifted, noise-free
    weights w_eff (smaller than the programming-time ranges after a year of drift);
    false: the programming-time ranges from the ideal codes."""
    ov = COMP + ["drift.compensation=global", "tile.cols=4"]
    fixed, track = _engine("pcm", ov), _engine("pcm", ov + ["adc.track_drift=true"])
    cal = np.random.default_rng(0).normal(0, 1, (16, 40, 12)).reshape(-1, 12)
    sf, stk = fixed.plan.segments[0], track.plan.segments[0]
    pm = _programmed("pcm", ov, sf.key)
    U = sf.dac.apply(cal)
    np.testing.assert_array_equal(stk.adc_steps, sf.adc.calibrate(U, pm.w_eff, 256, 4).steps)
    np.testing.assert_array_equal(sf.adc_steps, sf.adc.calibrate(U, sf.codes, 256, 4).steps)
    assert np.mean(stk.adc_steps / sf.adc_steps) < 0.95


def test_adc_calibration_strategies_against_their_formulas():
    """adc.calibration: max = the largest |partial sum|; percentile = numpy's percentile;
    mse = the argmin over ranges max*k/128 of the mean squared quantization + clipping error
    (recomputed here); on heavy-tailed sums mse and percentile clip (ranges below max) and mse
    has a smaller error than max. Through the plan: per tile, steps = full_scale / qmax."""
    from nvmstream.devices.periphery import ADC
    a = np.abs(np.random.default_rng(8).standard_t(2, 5000))    # heavy tails (seeded)
    mx = ADC(4).full_scale(a)
    assert mx == a.max()
    assert ADC(4, calibration="percentile", percentile=99.0).full_scale(a) == np.percentile(a, 99)

    def err(r):
        st = r / 7
        return np.mean((a - np.minimum(np.rint(a / st), 7) * st) ** 2)
    errs = [err(a.max() * k / 128) for k in range(1, 129)]
    r = ADC(4, calibration="mse").full_scale(a)
    assert r == a.max() * (int(np.argmin(errs)) + 1) / 128
    assert r < mx and err(r) == min(errs) < err(mx)
    # the plan: int4 with mse ranges, one tile of 5 rows x all columns
    eng = _engine("int4", ["adc.calibration=mse", "tile.rows=5"])
    cal = np.random.default_rng(0).normal(0, 1, (16, 40, 12)).reshape(-1, 12)
    seg = eng.plan.segments[0]
    U = seg.dac.apply(cal)
    Q = seg.codes.astype(np.float64)
    part = np.abs(U[:, :5] @ Q[:, :5].T)
    assert np.all(seg.adc_steps[0] == seg.adc.full_scale(part) / 7)
    assert seg.adc_steps[0, 0] < part.max() / 7
