"""Ladder rung 1: the ONNX backend node cases for LSTM/GRU/RNN, generated from onnx's own test
generators (the wheel ships the generators, not the data).

Only the lstm, gru and rnn generator modules are imported (each generates its cases when its
class is defined): collecting all 1,884 node cases cost ~27 s per xdist worker to keep 18."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

import nvmstream as nvm
from onnx_util import freeze_weights, reference

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import onnx.backend.test.case.node as _node

    for _op in ("lstm", "gru", "rnn"):
        importlib.import_module(f"onnx.backend.test.case.node.{_op}")
    CASES = [c for c in _node._NodeTestCases
             if any(k in c.name for k in ("lstm", "gru", "rnn"))]

RTOL, ATOL = 1e-3, 1e-7  # the ONNX backend suite's own tolerance


def test_all_eighteen_cases_collected():
    assert len(CASES) == 18, [c.name for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_backend_case(case, tmp_path):
    (inputs, expected), = case.data_sets
    names = [i.name for i in case.model.graph.input]
    feeds = dict(zip(names, inputs))
    model, run_feeds = freeze_weights(case.model, feeds)
    path = tmp_path / f"{case.name}.onnx"
    path.write_bytes(model.SerializeToString())
    ir_model = nvm.load_ir(path)
    got = ir_model.run(run_feeds)
    out_names = [o.name for o in case.model.graph.output]
    for name, want in zip(out_names, expected):
        np.testing.assert_allclose(got[name], want, rtol=RTOL, atol=ATOL, err_msg=name)
    ref = reference(model, run_feeds)
    for name in out_names:
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=1e-5, err_msg=name)
