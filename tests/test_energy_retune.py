"""The price of adc.track_drift: one ADC-range retune = every crossbar read
energy.adc_retune_vectors times + one compare per ADC output per vector + one reference-DAC
write per ADC range; reported per retune event (one-off section), zero without track_drift."""

from __future__ import annotations

import numpy as np
import pytest

import nvmstream as nvm
from nvmstream.devices import energy as E
from nvmstream.runtime.ledger import retune_counts, step_costs
from onnx_util import FIXTURES


def _engine(overrides):
    cal = np.random.default_rng(0).normal(0, 1, (8, 20, 12)).astype(np.float32)
    prog = nvm.convert(FIXTURES / "lstm1_bf.ts.onnx", calibration=cal)
    eng = nvm.Engine(prog, nvm.Device("pcm", seed=0, overrides=list(overrides)))
    eng.run(cal[:2])
    return eng


def test_retune_is_priced_only_with_track_drift():
    assert _engine([]).report().one_off.adc_retune_pJ == 0.0
    r = _engine(["adc.track_drift=true"]).report()
    assert r.one_off.adc_retune_pJ > 0
    assert r.one_off.total_pJ == r.one_off.storage_read_pJ + r.one_off.programming_pJ
    assert "ADC range retune" in r.format_text()


@pytest.mark.parametrize("rng_mode", ["per_tile", "per_column"])
def test_retune_energy_is_linear_in_vectors_with_reference_writes_as_intercept(rng_mode):
    eng = _engine(["adc.track_drift=true", f"adc.range={rng_mode}"])
    prof = eng.device.profile
    _, geom = step_costs(eng.model, eng.plan)

    def cost(v):
        rc = retune_counts(eng.plan, v)
        return E.price_adc_retune(rc, {k: geom[k] for k in rc}, prof)

    e64, e128 = cost(64), cost(128)
    slope = (e128 - e64) / 64
    ranges = sum(s.row_tiles * (s.col_tiles if rng_mode == "per_tile" else s.n_out)
                 for s in eng.plan.segments)
    p = E.prices(prof)
    write = E.dac_energy_pJ(prof.dac.bits, prof) + p["interconnect_pJ_per_byte"]
    assert e64 - 64 * slope == pytest.approx(ranges * write, rel=1e-9)
    # per vector: one analog read of every matrix + one compare per ADC output
    one = retune_counts(eng.plan, 1)
    adc_outs = sum(c.adc_conversions for c in one.values())
    assert slope == pytest.approx(
        cost(1) - ranges * write, rel=1e-9)
    assert adc_outs == sum(k for s in eng.plan.segments
                           for _, k in E.matrix_tiles(s.n_in, s.n_out, s.tile_rows,
                                                      s.tile_cols))
