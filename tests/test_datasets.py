"""Tests of the shipped datasets (demos/data/*.npz) and their loader demos/datasets.py."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from nvmstream.runtime.frontend import FrontendParams, read_wav, wav_features

DEMOS = Path(__file__).resolve().parent.parent / "demos"


def _import_datasets():
    # demos/ is not an installed package: load the module from its file.
    spec = importlib.util.spec_from_file_location("nvmstream_demo_datasets", DEMOS / "datasets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


datasets = _import_datasets()


@functools.cache
def load(name: str):
    return datasets.load(name)


# name -> (T, F, n_classes, n_train, n_test, train class counts or None)
EXPECTED = {
    "basic_motions": (100, 6, 4, 40, 40, [10, 10, 10, 10]),
    "japanese_vowels": (29, 12, 9, 270, 370, [30] * 9),
    "italy_power_demand": (24, 1, 2, 67, 1029, [34, 33]),
    "digits": (8, 8, 10, 1347, 450, None),
    "keywords": (98, 40, 10, 100, 380, [10] * 10),
}


def test_every_name_is_tested() -> None:
    assert set(EXPECTED) == set(datasets.NAMES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shapes_dtypes_labels(name: str) -> None:
    t, f, n_classes, n_train, n_test, train_counts = EXPECTED[name]
    d = load(name)
    assert d.name == name
    assert d.x_train.shape == (n_train, t, f) and d.x_test.shape == (n_test, t, f)
    assert d.x_train.dtype == d.x_test.dtype == np.float32
    assert d.y_train.dtype == d.y_test.dtype == np.int64
    assert d.y_train.shape == (n_train,) and d.y_test.shape == (n_test,)
    assert len(d.labels) == d.n_classes == n_classes and len(set(d.labels)) == n_classes
    assert all(isinstance(lab, str) and lab for lab in d.labels)
    for y in (d.y_train, d.y_test):
        assert y.min() >= 0 and y.max() < n_classes
        assert np.all(np.bincount(y, minlength=n_classes) > 0)  # every class in both splits
    if train_counts is not None:
        assert np.bincount(d.y_train, minlength=n_classes).tolist() == train_counts
    assert np.isfinite(d.x_train).all() and np.isfinite(d.x_test).all()
    for key in ("source", "license", "description"):
        assert isinstance(d.meta[key], str) and len(d.meta[key]) > 20
    assert d.n_features == f
    assert name in repr(d)


@pytest.mark.parametrize("name", ["basic_motions", "italy_power_demand", "digits"])
def test_no_sequence_in_both_splits(name: str) -> None:
    d = load(name)
    train = {row.tobytes() for row in d.x_train}
    assert not any(row.tobytes() in train for row in d.x_test)


def test_japanese_vowels_lengths_and_padding() -> None:
    d = load("japanese_vowels")
    for x, lengths in ((d.x_train, d.lengths_train), (d.x_test, d.lengths_test)):
        assert lengths is not None and lengths.dtype == np.int64 and lengths.shape == (len(x),)
        assert 7 <= lengths.min() and lengths.max() <= 29
        steps = np.arange(x.shape[1])
        pad = steps[None, :] >= lengths[:, None]
        assert np.all(x[pad] == 0.0)  # zero padding after the end
        last = x[np.arange(len(x)), lengths - 1]
        assert np.all(np.abs(last).sum(axis=1) > 0)  # the last valid step is real data
    both = np.concatenate([d.lengths_train, d.lengths_test])
    assert both.min() == 7 and both.max() == 29
    # Test speakers are imbalanced in the archive (31..88 utterances each); all 370 kept.
    assert np.bincount(d.y_test).sum() == 370
    assert d.labels[0] == "speaker1"


def test_fixed_length_sets_have_no_lengths() -> None:
    for name in ("basic_motions", "italy_power_demand", "digits", "keywords"):
        d = load(name)
        assert d.lengths_train is None and d.lengths_test is None


def test_digits_split_is_a_stratified_partition() -> None:
    d = load("digits")
    tr, te = d.meta["index_train"], d.meta["index_test"]
    assert len(np.intersect1d(tr, te)) == 0
    assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(1797))
    assert d.x_train.min() >= 0.0 and d.x_train.max() <= 1.0
    frac = np.bincount(d.y_test, minlength=10) / np.bincount(d.y_train, minlength=10)
    assert np.all(np.abs(frac - 1 / 3) < 0.03)  # 25 % test in every class


def test_keywords_split_by_voice_and_metadata() -> None:
    d = load("keywords")
    assert d.labels == ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
    vtr, vte = d.meta["voice_train"], d.meta["voice_test"]
    assert vtr.shape == (100,) and vte.shape == (380,)
    assert set(vtr.tolist()).isdisjoint(vte.tolist())  # test voices unseen in training
    assert len(set(vte.tolist())) >= 10
    assert np.bincount(d.y_test, minlength=10).tolist() == [38] * 10
    for key in ("accent", "speed_wpm", "pitch", "snr_db", "noise", "offset"):
        assert d.meta[f"{key}_train"].shape == (100,) and d.meta[f"{key}_test"].shape == (380,)
    snrs = set(np.concatenate([d.meta["snr_db_train"], d.meta["snr_db_test"]]).tolist())
    assert snrs == {np.inf, 20.0, 10.0, 5.0}
    params = FrontendParams.from_dict(d.meta["frontend_params"])
    # the default log-mel front end plus per-feature normalisation
    assert dataclasses.replace(params, feature_mean=None, feature_std=None) == FrontendParams()
    assert len(params.feature_mean) == len(params.feature_std) == params.n_features
    assert d.x_train.shape[1:] == (params.n_frames(16000), params.n_features)
    # normalised by the statistics of the shipped training clips' frames themselves (rounded to
    # 4 decimals, stored as float16): zero mean and unit std per mel
    frames = d.x_train.reshape(-1, params.n_features).astype(np.float64)
    assert np.abs(frames.mean(axis=0)).max() < 0.01 and np.abs(frames.std(axis=0) - 1).max() < 0.01
    # silence (log(1e-6)) maps to a few std below the mean; nothing is far out
    silence = (np.log(1e-6) - np.array(params.feature_mean)) / np.array(params.feature_std)
    assert d.x_test.min() >= silence.min() - 1e-2 and np.abs(d.x_test).max() < 10.0


def test_keyword_wavs_reproduce_the_stored_features() -> None:
    d = load("keywords")
    wav_dir = DEMOS / "data" / "keywords_wav"
    manifest = json.loads((wav_dir / "manifest.json").read_text())
    assert sorted(m["word"] for m in manifest) == sorted(d.labels)
    params = FrontendParams.from_dict(d.meta["frontend_params"])
    for m in manifest:
        pcm, rate = read_wav(wav_dir / m["file"])
        assert rate == 16000 and pcm.shape == (16000,)
        i = m["test_index"]
        assert d.labels[d.y_test[i]] == m["word"] and d.meta["voice_test"][i] == m["voice"]
        feats = wav_features(wav_dir / m["file"], params)
        # The .npz stores float16: the front end's output rounded to float16 is what was stored.
        # Another numpy/BLAS may differ from the generating machine in the last float32 bit,
        # which can flip a float16 rounding: allow one float16 step, demand almost all exact.
        stored = d.x_test[i]
        step = np.spacing(np.abs(stored).astype(np.float16)).astype(np.float32)
        assert np.all(np.abs(feats - stored) <= step)
        assert np.mean(feats.astype(np.float16).astype(np.float32) == stored) > 0.999


# -- errors ----------------------------------------------------------------------------------------
def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="basic_motions"):
        datasets.load("mnist")


def test_missing_file_names_it(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"digits\.npz.*make_data\.py"):
        datasets.load("digits", data_dir=tmp_path)


def test_corrupt_file_names_it(tmp_path) -> None:
    (tmp_path / "digits.npz").write_bytes(b"PK\x03\x04 definitely not a zip archive")
    with pytest.raises(datasets.DatasetError, match=r"digits\.npz"):
        datasets.load("digits", data_dir=tmp_path)
    src = (DEMOS / "data" / "basic_motions.npz").read_bytes()
    (tmp_path / "basic_motions.npz").write_bytes(src[: len(src) // 2])  # truncated
    with pytest.raises(datasets.DatasetError, match=r"basic_motions\.npz"):
        datasets.load("basic_motions", data_dir=tmp_path)


def test_wrong_contents_name_the_file_and_array(tmp_path) -> None:
    good = dict(np.load(DEMOS / "data" / "digits.npz"))
    bad = dict(good)
    del bad["y_test"]
    np.savez(tmp_path / "digits.npz", **bad)
    with pytest.raises(datasets.DatasetError, match=r"digits\.npz.*y_test"):
        datasets.load("digits", data_dir=tmp_path)
    bad = dict(good, y_train=good["y_train"] + 10)
    np.savez(tmp_path / "digits.npz", **bad)
    with pytest.raises(datasets.DatasetError, match=r"digits\.npz.*y_train.*outside"):
        datasets.load("digits", data_dir=tmp_path)


def test_loader_imports_only_numpy() -> None:
    source = (DEMOS / "datasets.py").read_text()
    imports = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imports <= {
        "__future__",
        "json",
        "zipfile",
        "zlib",
        "dataclasses",
        "pathlib",
        "typing",
        "numpy",
    }, imports
