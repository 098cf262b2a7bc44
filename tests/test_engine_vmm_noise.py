"""VMM noise (arXiv 1811.10649) with its power reference (layer / gate / unit) and its
position (after / before the ADC): each checked against its own formula with a seed and a
stated tolerance; the kernel equals the numpy twin bit for bit for every setting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from naive import vmm as twin_vmm
from nvmstream.runtime import kernels as K
from test_engine_periphery import _engine, _kernel


def _state(seed):
    s = np.empty((1, 4), np.uint64)
    K.seed_states(np.array([seed], np.uint64), s)
    return s


@pytest.mark.parametrize("ov", [["vmm_noise.reference=gate"], ["vmm_noise.reference=unit"],
                                ["vmm_noise.position=before_adc", "tile.rows=5"],
                                ["vmm_noise.position=before_adc", "vmm_noise.reference=gate",
                                 "adc.noise_lsb=0.3", "read.model=pcm_1f"]])
def test_kernel_equals_twin_for_every_reference_and_position(ov):
    eng = _engine("pcm", ["vmm_noise.snr_db=10"] + ov)
    for seg in eng.plan.segments:
        for v in np.random.default_rng(1).normal(0, 1, (10, seg.n_in)):
            s1 = _state(7)
            s2 = s1.copy()
            np.testing.assert_array_equal(_kernel(eng, seg, v, s1[0]),
                                          twin_vmm(seg, v, s2[0]))
            np.testing.assert_array_equal(s1, s2)


def test_layer_reference_is_one_sigma_per_matrix_and_gate_reference_equalises_gates():
    lay = _engine("int4", ["vmm_noise.snr_db=0"])
    gate = _engine("int4", ["vmm_noise.snr_db=0", "vmm_noise.reference=gate"])
    unit = _engine("int4", ["vmm_noise.snr_db=3", "vmm_noise.reference=unit"])
    for a, b, c in zip(lay.plan.segments, gate.plan.segments, unit.plan.segments):
        assert a.gates == ("i", "o", "f", "c") or a.gates == ("out",)
        assert np.all(a.vmm.sigmas == a.vmm.sigma)          # one sigma per matrix
        # the layer reference: the SNR averaged over gates (power-weighted) is snr_db exactly
        p = 10 ** (a.vmm_snr_db / 10)
        assert 10 * math.log10(p.mean()) == pytest.approx(0.0, abs=1e-9)
        # gate reference: every gate at snr_db; unit: every output at snr_db
        np.testing.assert_allclose(b.vmm_snr_db, 0.0, atol=1e-9)
        np.testing.assert_allclose(c.vmm_snr_db, 3.0, atol=1e-9)
        assert np.ptp(b.vmm.sigmas) > 0 or len(b.gates) == 1


@pytest.mark.parametrize("position", ["after_adc", "before_adc"])
def test_output_noise_variance_equals_sigma_squared(position):
    # no ADC: the output is the exact product plus the noise, whose variance must be
    # sigma_j^2 wherever it enters (before the ADC: split over 3 row tiles, code units x scale)
    eng = _engine("int4", ["vmm_noise.snr_db=5", "vmm_noise.reference=unit", "adc.bits=0",
                           "tile.rows=5", f"vmm_noise.position={position}"])
    seg = eng.plan.segments[0]
    assert seg.row_tiles == 3
    v = np.random.default_rng(4).normal(0, 1, seg.n_in)
    clean = seg.w_eff.astype(np.float64) @ seg.dac.apply(v) * seg.scales * seg.dac.scale
    n = 4000
    st = _state(11)
    ys = np.array([_kernel(eng, seg, v, st[0]) for _ in range(n)])
    var = ys.var(axis=0, ddof=1)
    want = seg.vmm.sigmas ** 2
    # sample variance of n normals: relative sd sqrt(2/(n-1)) = 2.2%; 5 sd over all outputs
    np.testing.assert_allclose(var / want, 1.0, atol=5 * math.sqrt(2 / (n - 1)))
    np.testing.assert_allclose(ys.mean(axis=0), clean, atol=5 * np.sqrt(want / n).max())


def test_before_adc_noise_is_clipped_and_quantized_by_the_adc():
    eng = _engine("int4", ["vmm_noise.snr_db=0", "vmm_noise.position=before_adc"])
    seg = eng.plan.segments[0]
    v = np.random.default_rng(5).normal(0, 1, seg.n_in)
    st = _state(3)
    q = seg.adc.qmax
    for _ in range(50):
        y = _kernel(eng, seg, v, st[0])
        codes = y / (seg.scales * seg.dac.scale * seg.adc.steps[0])
        np.testing.assert_allclose(codes, np.rint(codes), atol=1e-9)   # on the ADC grid
        assert np.all(np.abs(np.rint(codes)) <= q)


def test_inspect_prints_the_effective_snr_per_gate():
    from test_cli import cli
    from onnx_util import FIXTURES
    r = cli("inspect", FIXTURES / "lstm1_bf.ts.onnx", "--profile", "int4", "--calibration",
            "random", "--set", "vmm_noise.snr_db=0", "--set", "vmm_noise.reference=gate",
            "--json")
    assert r.returncode == 0, r.stderr
    import json
    rows = json.loads(r.stdout)["vmm_noise_snr"]
    lstm = [x for x in rows if x["matrix"].endswith("/h")][0]
    assert list(lstm["snr_db_per_gate"]) == ["i", "o", "f", "c"]
    assert all(abs(v) < 1e-6 for v in lstm["snr_db_per_gate"].values())   # gate reference
    r = cli("inspect", FIXTURES / "lstm1_bf.ts.onnx", "--profile", "int4", "--calibration",
            "random")
    assert r.returncode == 0, r.stderr
    assert "VMM noise SNR per gate" in r.stdout and "i off" in r.stdout


def test_run_report_shows_the_snr_per_gate_when_vmm_noise_is_on(tmp_path):
    from test_cli import cli
    from onnx_util import FIXTURES
    x = np.random.default_rng(0).normal(size=(2, 6, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = cli("run", FIXTURES / "lstm1_bf.ts.onnx", "-i", tmp_path / "x.npy", "-o",
            tmp_path / "y.npy", "-p", "snr0db", "--calibration", "random", "--report",
            "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr
    assert "VMM noise SNR per gate" in r.stdout
    import json
    rows = json.loads((tmp_path / "r.json").read_text())["vmm_noise_snr"]
    assert rows and all(len(x["snr_db_per_gate"]) >= 1 for x in rows)
