"""runtime/data.py: one data contract for every subcommand, one-line errors naming the file;
runtime/outputs.py: output planning rules; the compile notice."""

from __future__ import annotations

import os

import numpy as np
import pytest

from nvmstream.runtime import data as D
from nvmstream.runtime import outputs as O

X = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)


@pytest.mark.parametrize("arrays, split, want_src, has_y, has_len", [
    ({"x_test": X, "y_test": [0, 1], "lengths_test": [1, 3], "x_train": X[:1]}, "test",
     "x_test", True, True),
    ({"x_test": X, "y_test": [0, 1], "x_train": X[:1], "y_train": [1]}, "train", "x_train",
     True, False),
    ({"x": X, "y": [1, 0], "lengths": [3, 2]}, "test", "x", True, True),
    ({"features": X}, "test", "features", False, False),           # a single array
])
def test_npz_layouts(tmp_path, arrays, split, want_src, has_y, has_len):
    p = tmp_path / "d.npz"
    np.savez(p, **{k: np.asarray(v) for k, v in arrays.items()})
    d = D.load_data(p, split)
    assert d.source == f"{p}:{want_src}"
    assert d.x.dtype == np.float32 and d.x.ndim == 3
    assert (d.y is not None) == has_y and (d.lengths is not None) == has_len
    if has_len:
        assert d.lengths.dtype == np.int64


def test_npy_and_2d(tmp_path):
    np.save(tmp_path / "a.npy", X[0])
    d = D.load_data(tmp_path / "a.npy")
    assert d.x.shape == (1, 3, 4) and d.y is None and d.source == str(tmp_path / "a.npy")


@pytest.mark.parametrize("arrays, match", [
    ({"x_test": X, "y_test": [0, 1, 2]}, r"labels y_test must be integers \[2\]"),
    ({"x_test": X, "lengths_test": [0, 3]}, r"lengths_test outside 1..3"),
    ({"x_test": X, "lengths_test": [1, 4]}, r"lengths_test outside 1..3"),
    ({"x_test": np.full((1, 2, 2), np.nan, np.float32)}, "NaN"),
    ({"x_test": np.zeros((2, 3))[:, :, None, None]}, r"expected \[N, T, F\]"),
    ({"a": X, "b": X}, "no x_test or x array .*has a, b"),
    ({"x_test": np.array(["a", "b"])}, "numeric"),
])
def test_bad_files_name_file_and_array(tmp_path, arrays, match):
    p = tmp_path / "bad.npz"
    np.savez(p, **{k: np.asarray(v) for k, v in arrays.items()})
    with pytest.raises(D.DataError, match=match) as e:
        D.load_data(p)
    assert "bad.npz" in str(e.value) and "\n" not in str(e.value)


def test_not_numpy_and_missing(tmp_path):
    (tmp_path / "t.npz").write_text("hello")
    with pytest.raises(D.DataError, match="t.npz: not a .npy or .npz file"):
        D.load_data(tmp_path / "t.npz")
    with pytest.raises(D.DataError, match="no such file"):
        D.load_data(tmp_path / "none.npy")
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(D.DataError, match="has no labels"):
        D.load_data(tmp_path / "x.npy", need_labels=True)


def test_calibration_rule(tmp_path):
    from onnx_util import FIXTURES, REPO
    c = D.resolve_calibration("m.onnx", "random")
    assert c.x is None and "random" in c.source
    with pytest.raises(D.DataError, match="--calibration random"):
        D.resolve_calibration(FIXTURES / "lstm1_bf.ts.onnx", None)
    c = D.resolve_calibration(REPO / "demos/models/basic_motions_qat4.onnx", None)
    assert c.x.shape == (40, 100, 6) and c.used == 40 and "task='basic_motions'" in c.source
    np.savez(tmp_path / "c.npz", x_train=np.zeros((100, 5, 6), np.float32))
    c = D.resolve_calibration("m.onnx", str(tmp_path / "c.npz"))
    assert (c.used, c.available) == (64, 100) and "seeded random subsample" in c.describe()


def test_plan_output_rules(tmp_path):
    inp = tmp_path / "in.onnx"
    inp.write_text("x")
    assert O.plan_output("-") is None
    with pytest.raises(O.OutputError, match="is also an input"):
        O.plan_output(str(tmp_path / "." / "in.onnx"), inputs=[inp])
    os.symlink(inp, tmp_path / "link.onnx")
    with pytest.raises(O.OutputError, match="is also an input"):
        O.plan_output(tmp_path / "link.onnx", inputs=[inp])
    with pytest.raises(O.OutputError, match="use one of .npy"):
        O.plan_output(tmp_path / "y.dat", suffixes=(".npy",))
    with pytest.raises(O.OutputError, match="does not exist"):
        O.plan_output(tmp_path / "no" / "y.npy")
    assert O.plan_output(tmp_path / "no" / "y.npy", make_dirs=True) == tmp_path / "no" / "y.npy"
    assert (tmp_path / "no").is_dir()
    with pytest.raises(O.OutputError, match="is a folder"):
        O.plan_output(tmp_path / "no")


def test_write_with_failure_leaves_old_file(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")
    with pytest.raises(RuntimeError):
        O.write_with(p, boom)
    assert p.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["f.bin"]


def test_compile_notice_only_on_a_cold_cache(tmp_path, monkeypatch, capsys):
    from nvmstream.runtime import cli
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    calls = []
    cli.compile_notice(lambda: calls.append(1), always=False)
    assert calls == [1] and "compiling the numba kernels" in capsys.readouterr().err
    (tmp_path / "kernels.run-1.py311.nbi").write_bytes(b"")
    cli.compile_notice(lambda: calls.append(2), always=False)
    assert calls == [1] and capsys.readouterr().err == ""
