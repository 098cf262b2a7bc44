#!/usr/bin/env python3
"""Regenerate every dataset in demos/data/ from packaged sources, without the network.

One command (from the repository root) remakes everything:

    python3 -m venv /tmp/datavenv && /tmp/datavenv/bin/pip install aeon scikit-learn numpy
    apt-get update && apt-get install -y espeak-ng sox          # only for the keyword set
    /tmp/datavenv/bin/python demos/data/make_data.py             # all sets
    /tmp/datavenv/bin/python demos/data/make_data.py keywords    # or only some of them

What it makes (all .npz, loaded by demos/datasets.py with numpy alone):

- basic_motions.npz       UEA BasicMotions: 6-channel accelerometer/gyroscope, 100 steps, 4 classes.
- japanese_vowels.npz     UEA JapaneseVowels: 12 LPC cepstra, 7..29 steps (zero-padded), 9 speakers.
- italy_power_demand.npz  UCR ItalyPowerDemand: 24 hourly loads, 2 classes, 1096 sequences.
- digits.npz              scikit-learn digits: 8x8 images read row by row as 8 steps x 8 features.
- keywords.npz + keywords_wav/   ten spoken command words synthesised with espeak-ng, 16 kHz.

The UEA/UCR sets are read from the archive files shipped inside the aeon wheel and the digits from
the file shipped inside the scikit-learn wheel; the loaders run with socket connections disabled, so
a loader that tried to download would fail here rather than silently fetch. Everything random is
drawn from fixed seeds, so a rerun gives the same arrays (espeak-ng and sox, with dither off, are
deterministic too).

The runtime never imports this script: it needs aeon, scikit-learn, espeak-ng and sox, the runtime
and tests need numpy only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SEED = 20260422

UEA_SOURCE = (
    "UEA & UCR Time Series Classification Archive (Bagnall et al., 'The UEA multivariate time "
    "series classification archive, 2018', arXiv:1811.00075), read from the copy shipped in the "
    "aeon {version} wheel (aeon/datasets/data/{name})"
)
UEA_TERMS = (
    "Archive data made freely available by its curators for research; cite Bagnall et al. 2018 "
    "and the original donors. No other licence is stated by the archive."
)


@contextlib.contextmanager
def no_network() -> Iterator[None]:
    """Make every socket connection fail, to prove the packaged loaders read local files only."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("make_data.py: a dataset loader tried to use the network")

    saved = (socket.socket.connect, socket.socket.connect_ex, socket.create_connection)
    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = refuse  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.create_connection = saved


def encode_labels(y: np.ndarray, labels: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Class strings -> int64 indices into ``labels`` (sorted unique strings unless given)."""
    y = np.asarray(y).astype(str)
    if labels is None:
        labels = sorted(set(y.tolist()))
        if all(v.isdigit() for v in labels):
            labels.sort(key=int)  # "2" before "10"
    index = {name: i for i, name in enumerate(labels)}
    return np.array([index[v] for v in y], dtype=np.int64), labels


def save(name: str, **arrays: object) -> Path:
    path = HERE / f"{name}.npz"
    packed = {}
    for key, value in arrays.items():
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"{name}.{key}: object arrays cannot be loaded without pickle")
        packed[key] = arr
    np.savez_compressed(path, **packed)
    print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size / 1e6:.2f} MB)")
    for key, arr in packed.items():
        if arr.ndim >= 1 and arr.dtype.kind in "fiu":
            print(f"  {key:16s} {arr.dtype!s:8s} {arr.shape}")
    return path


def class_counts(y: np.ndarray, labels: list[str]) -> str:
    counts = np.bincount(y, minlength=len(labels))
    return ", ".join(f"{lab}={c}" for lab, c in zip(labels, counts))


# ------------------------------------------------------------------------------------------------
# UEA / UCR sets from the aeon wheel
# ------------------------------------------------------------------------------------------------
def _aeon():
    import aeon
    import aeon.datasets as ds

    return aeon.__version__, ds


def make_basic_motions() -> None:
    version, ds = _aeon()
    with no_network():
        xtr, ytr = ds.load_basic_motions(split="train")
        xte, yte = ds.load_basic_motions(split="test")
    # aeon gives [N, channels, T]; the runtime wants [N, T, features].
    xtr = np.ascontiguousarray(np.transpose(xtr, (0, 2, 1)), dtype=np.float32)
    xte = np.ascontiguousarray(np.transpose(xte, (0, 2, 1)), dtype=np.float32)
    ytr, labels = encode_labels(ytr)
    yte, _ = encode_labels(yte, labels)
    save(
        "basic_motions",
        x_train=xtr,
        y_train=ytr,
        x_test=xte,
        y_test=yte,
        labels=np.array(labels),
        feature_names=np.array(["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]),
        source=UEA_SOURCE.format(version=version, name="BasicMotions")
        + "; smartwatch 3-axis accelerometer + 3-axis gyroscope at 10 Hz, 10 s per recording, "
        "4 activities by 4 people, students at UEA",
        license=UEA_TERMS,
        description="float32 [N, 100 steps, 6 channels] raw sensor values; y indexes labels",
    )
    print("  train:", class_counts(ytr, labels), "| test:", class_counts(yte, labels))


def make_japanese_vowels() -> None:
    version, ds = _aeon()
    with no_network():
        xtr, ytr = ds.load_japanese_vowels(split="train")
        xte, yte = ds.load_japanese_vowels(split="test")
    t_max = max(x.shape[1] for x in list(xtr) + list(xte))

    def pad(xs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out = np.zeros((len(xs), t_max, xs[0].shape[0]), dtype=np.float32)
        lengths = np.empty(len(xs), dtype=np.int64)
        for i, x in enumerate(xs):
            lengths[i] = x.shape[1]
            out[i, : x.shape[1]] = x.T  # [channels, T] -> [T, channels]; zeros after the end
        return out, lengths

    xtr_p, ltr = pad(list(xtr))
    xte_p, lte = pad(list(xte))
    ytr, labels = encode_labels(ytr)
    yte, _ = encode_labels(yte, labels)
    save(
        "japanese_vowels",
        x_train=xtr_p,
        y_train=ytr,
        lengths_train=ltr,
        x_test=xte_p,
        y_test=yte,
        lengths_test=lte,
        labels=np.array([f"speaker{lab}" for lab in labels]),
        source=UEA_SOURCE.format(version=version, name="JapaneseVowels")
        + "; originally M. Kudo, J. Toyama, M. Shimbo, 'Multidimensional curve classification "
        "using passing-through regions', Pattern Recognition Letters 20 (1999), UCI Machine "
        "Learning Repository: nine male speakers uttering /ae/, 12 LPC cepstrum coefficients "
        "per 10 ms frame",
        license="UCI Machine Learning Repository dataset, CC BY 4.0; " + UEA_TERMS,
        description=(
            f"float32 [N, {t_max} steps, 12 LPC cepstra], zero-padded after lengths_* valid "
            "steps (7..29); y indexes labels (speaker)"
        ),
    )
    print("  lengths:", int(min(ltr.min(), lte.min())), "..", int(max(ltr.max(), lte.max())))
    print("  train:", class_counts(ytr, labels), "| test:", class_counts(yte, labels))


def make_italy_power_demand() -> None:
    version, ds = _aeon()
    with no_network():
        xtr, ytr = ds.load_italy_power_demand(split="train")
        xte, yte = ds.load_italy_power_demand(split="test")
    xtr = np.ascontiguousarray(np.transpose(xtr, (0, 2, 1)), dtype=np.float32)
    xte = np.ascontiguousarray(np.transpose(xte, (0, 2, 1)), dtype=np.float32)
    ytr, raw = encode_labels(ytr)
    yte, _ = encode_labels(yte, raw)
    save(
        "italy_power_demand",
        x_train=xtr,
        y_train=ytr,
        x_test=xte,
        y_test=yte,
        labels=np.array([f"class{r}" for r in raw]),
        source=UEA_SOURCE.format(version=version, name="ItalyPowerDemand")
        + "; UCR archive (Dau et al. 2019), 24 hourly (z-normalised) electrical power demand "
        "values of Italy in 1997; the two classes separate days from October to March from days "
        "from April to September (the archive does not say which class number is which)",
        license=UEA_TERMS,
        description="float32 [N, 24 steps, 1 feature]; y indexes labels; the archive's split "
        "(67 train / 1029 test) is kept",
    )
    print("  train:", class_counts(ytr, raw), "| test:", class_counts(yte, raw))


# ------------------------------------------------------------------------------------------------
# scikit-learn digits
# ------------------------------------------------------------------------------------------------
def make_digits() -> None:
    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    with no_network():
        d = load_digits()
    x = (d.images.astype(np.float32) / 16.0).astype(np.float32)  # [1797, 8 rows, 8 columns]
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.25, random_state=SEED % 2**32, stratify=y)
    tr, te = np.sort(tr), np.sort(te)
    labels = [str(i) for i in range(10)]
    save(
        "digits",
        x_train=x[tr],
        y_train=y[tr],
        x_test=x[te],
        y_test=y[te],
        index_train=tr.astype(np.int64),
        index_test=te.astype(np.int64),
        labels=np.array(labels),
        source=f"scikit-learn {sklearn.__version__} bundled digits (sklearn/datasets/data/"
        "digits.csv.gz), the test part of the UCI 'Optical Recognition of Handwritten Digits' "
        "set (Alpaydin & Kaynak 1998): 8x8 images of 0..16 counts from 43 writers",
        license="UCI Machine Learning Repository dataset, CC BY 4.0",
        description="float32 [N, 8 steps (image rows), 8 features (columns)], pixel counts / 16 "
        f"in [0, 1]; stratified split 75/25 with random_state={SEED}; index_* are rows of "
        "sklearn.datasets.load_digits()",
    )
    print("  train:", class_counts(y[tr], labels))
    print("  test:", class_counts(y[te], labels))


# ------------------------------------------------------------------------------------------------
# Keyword speech synthesised with espeak-ng
# ------------------------------------------------------------------------------------------------
WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
# espeak-ng's English accents (the formant synthesiser's languages; mbrola voices are not used).
ACCENTS = [
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
]
# Voice variants left out: whispering (no pitch), a joke voice, and a test voice.
EXCLUDED_VARIANTS = {"whisper", "whisperf", "Demonic", "fast"}
CLIPS_PER_VOICE_AND_WORD = 2
TEST_VOICE_FRACTION = 0.2
SNR_CHOICES_DB = [np.inf, 20.0, 10.0, 5.0]  # np.inf = no noise added
CLIP_SAMPLES = 16000  # 1.0 s at 16 kHz


def _load_frontend():
    """runtime/frontend.py by file path: it needs numpy only, not the rest of nvmstream."""
    spec = importlib.util.spec_from_file_location(
        "nvmstream_frontend_for_data", REPO / "runtime" / "frontend.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def espeak_variants() -> list[str]:
    out = subprocess.run(
        ["espeak-ng", "--voices=variant"], check=True, capture_output=True, text=True
    ).stdout
    names = []
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5 and fields[4].startswith("!v/"):
            names.append(fields[4][3:])
    return sorted(set(names) - EXCLUDED_VARIANTS, key=str.lower)


def synthesize(word: str, accent: str, variant: str, speed_wpm: int, pitch: int) -> np.ndarray:
    """espeak-ng (22.05 kHz) -> sox -> int16 mono 16 kHz, dither off so it is repeatable."""
    tts = subprocess.run(
        [
            "espeak-ng",
            "-v",
            f"{accent}+{variant}",
            "-s",
            str(speed_wpm),
            "-p",
            str(pitch),
            "--stdout",
            word,
        ],
        check=True,
        capture_output=True,
    ).stdout
    raw = subprocess.run(
        [
            "sox",
            "-D",
            "-t",
            "wav",
            "-",
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
            "-",
        ],
        input=tts,
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)


def trim_silence(x: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """Cut leading/trailing near-silence (below 2% of the peak), keeping 20 ms margins."""
    a = np.abs(x.astype(np.float64))
    active = np.flatnonzero(a > 0.02 * a.max()) if a.max() > 0 else np.zeros(0, dtype=int)
    if active.size == 0:
        raise RuntimeError("espeak-ng produced silence")
    margin = int(0.02 * sample_rate)
    return x[max(0, active[0] - margin) : active[-1] + margin + 1]


def pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """1/f (pink) noise by shaping white noise in the frequency domain; unit variance."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    noise = np.fft.irfft(spec / np.sqrt(f), n)
    return noise / noise.std()


def render_clip(
    speech: np.ndarray, rng: np.random.Generator, snr_db: float, noise_kind: str, peak: float
) -> tuple[np.ndarray, int]:
    """Place trimmed speech at a random offset in 1 s, scale to ``peak``, add noise at ``snr_db``
    (relative to the speech's own mean power), return int16 and the offset."""
    s = speech.astype(np.float64) / 32768.0
    if s.size > CLIP_SAMPLES:
        s = s[:CLIP_SAMPLES]
    s *= peak / np.abs(s).max()
    offset = int(rng.integers(0, CLIP_SAMPLES - s.size + 1))
    clip = np.zeros(CLIP_SAMPLES)
    clip[offset : offset + s.size] = s
    if np.isfinite(snr_db):
        p_speech = float(np.mean(s**2))
        noise = (
            rng.standard_normal(CLIP_SAMPLES)
            if noise_kind == "white"
            else pink_noise(rng, CLIP_SAMPLES)
        )
        clip += noise * np.sqrt(p_speech / 10.0 ** (snr_db / 10.0))
    return np.clip(np.round(clip * 32768.0), -32768, 32767).astype(np.int16), offset


SHIPPED_TRAIN_PER_WORD = 10   # training clips per word kept in keywords.npz (calibration, tests)


def _keyword_tools() -> None:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"make_data.py keywords: `{tool}` not found; apt-get install -y espeak-ng sox")


def _keyword_base() -> tuple[list[str], set[str], list[dict]]:
    """(voice variants, held-out test voices, the base recipes: CLIPS_PER_VOICE_AND_WORD clips
    per voice and word, every voice), all drawn from SEED in one fixed order."""
    variants = espeak_variants()
    rng = np.random.default_rng(SEED)
    test_voices = set(
        rng.choice(variants, size=round(TEST_VOICE_FRACTION * len(variants)), replace=False)
    )
    recipes = []
    for variant in variants:
        for w, word in enumerate(WORDS):
            for _ in range(CLIPS_PER_VOICE_AND_WORD):
                recipes.append(
                    {
                        "word": word,
                        "y": w,
                        "variant": variant,
                        "accent": str(rng.choice(ACCENTS)),
                        "speed_wpm": int(rng.integers(110, 231)),
                        "pitch": int(rng.integers(15, 86)),
                        "snr_db": float(rng.choice(SNR_CHOICES_DB)),
                        "noise": str(rng.choice(["white", "pink"])),
                        "peak": float(rng.uniform(0.2, 0.9)),
                    }
                )
    return variants, test_voices, recipes


def _shipped_train_rows(recipes: list[dict], test_voices: set[str]) -> np.ndarray:
    """Indices (into the base recipes) of the training clips shipped in keywords.npz:
    SHIPPED_TRAIN_PER_WORD per word, drawn with seed [SEED, 2], sorted."""
    rng = np.random.default_rng([SEED, 2])
    rows = []
    for w in range(len(WORDS)):
        cand = [i for i, r in enumerate(recipes) if r["y"] == w and r["variant"] not in test_voices]
        rows += rng.choice(cand, size=SHIPPED_TRAIN_PER_WORD, replace=False).tolist()
    return np.sort(np.array(rows, dtype=np.int64))


def _synthesize_all(recipes: list[dict], workers: int = 2) -> list[np.ndarray]:
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        speech = list(
            pool.map(
                lambda r: trim_silence(
                    synthesize(r["word"], r["accent"], r["variant"], r["speed_wpm"], r["pitch"])
                ),
                recipes,
            )
        )
    print(f"  synthesised {len(recipes)} clips in {time.time() - t0:.0f} s")
    return speech


def _render_all(recipes: list[dict], speech: list[np.ndarray], seed: list[int]) -> np.ndarray:
    """int16 [N, CLIP_SAMPLES] clips; clip i uses the generator [*seed, i] (sets r["offset"])."""
    clips = np.empty((len(recipes), CLIP_SAMPLES), dtype=np.int16)
    for i, (r, s) in enumerate(zip(recipes, speech)):
        clips[i], r["offset"] = render_clip(
            s, np.random.default_rng([*seed, i]), r["snr_db"], r["noise"], r["peak"]
        )
        r["speech_s"] = round(min(s.size, CLIP_SAMPLES) / 16000.0, 3)
    return clips


def _features(fe, clips: np.ndarray, params) -> np.ndarray:
    t0 = time.time()
    feats = np.stack([fe.offline_features(c, params) for c in clips])
    print(
        f"  features {feats.shape} in {time.time() - t0:.0f} s, range "
        f"[{feats.min():.2f}, {feats.max():.2f}]"
    )
    if np.abs(feats).max() > 60000:
        raise RuntimeError("features do not fit float16")
    return feats.astype(np.float16)


def _keyword_frontend(fe) -> object:
    """The keyword front end: default log-mels plus per-feature normalisation, mean and std of
    each mel over every frame of the shipped training clips (rounded to 4 decimals; std floored
    at 0.05). Normalised features keep the crossbar's partial sums free of the large common
    mode of raw log-mels (about -14 in silence), which a 4-bit ADC range would otherwise spend
    its levels on; the server computes exactly these features from raw audio (the parameters
    travel in the model's metadata)."""
    raw = fe.FrontendParams()
    _, test_voices, base = _keyword_base()
    rows = _shipped_train_rows(base, test_voices)
    speech = _synthesize_all([base[i] for i in rows], workers=4)
    frames = []
    for i, s in zip(rows, speech):
        clip, _ = render_clip(s, np.random.default_rng([SEED, int(i)]), base[i]["snr_db"],
                              base[i]["noise"], base[i]["peak"])
        frames.append(fe.offline_features(clip, raw).astype(np.float64))
    f = np.concatenate(frames)
    mean = np.round(f.mean(axis=0), 4)
    std = np.round(np.maximum(f.std(axis=0), 0.05), 4)
    return dataclasses.replace(raw, feature_mean=tuple(mean.tolist()),
                               feature_std=tuple(std.tolist()))


def make_keywords() -> None:
    """keywords.npz (committed, ~3 MB): every clip of the held-out test voices and a small
    class-balanced part of the training clips (for calibration and tests); keywords_wav/.
    The full training set is keywords_extra.npz (not committed, `make_data.py keywords_extra`)."""
    _keyword_tools()
    fe = _load_frontend()
    params = _keyword_frontend(fe)
    version = subprocess.run(
        ["espeak-ng", "--version"], check=True, capture_output=True, text=True
    ).stdout
    variants, test_voices, all_recipes = _keyword_base()
    is_test_all = np.array([r["variant"] in test_voices for r in all_recipes])
    ship_train = _shipped_train_rows(all_recipes, test_voices)
    keep = np.sort(np.concatenate([np.flatnonzero(is_test_all), ship_train]))
    recipes = [all_recipes[i] for i in keep]
    print(
        f"keywords: {len(recipes)} of {len(all_recipes)} clips from {len(variants)} voice "
        f"variants ({len(test_voices)} held out for test) x {len(ACCENTS)} accents"
    )
    speech = _synthesize_all(recipes, workers=4)
    clips = np.empty((len(recipes), CLIP_SAMPLES), dtype=np.int16)
    for j, (i, r, s) in enumerate(zip(keep, recipes, speech)):
        # clip i of the base recipes always renders with generator [SEED, i]
        clips[j], r["offset"] = render_clip(
            s, np.random.default_rng([SEED, int(i)]), r["snr_db"], r["noise"], r["peak"]
        )
    feats = _features(fe, clips, params)
    is_test = np.array([r["variant"] in test_voices for r in recipes])

    def col(key: str, mask: np.ndarray, dtype: object) -> np.ndarray:
        return np.array([r[key] for r, m in zip(recipes, mask) if m], dtype=dtype)

    arrays = {}
    for split, mask in (("train", ~is_test), ("test", is_test)):
        arrays[f"x_{split}"] = feats[mask]
        arrays[f"y_{split}"] = col("y", mask, np.int64)
        arrays[f"voice_{split}"] = col("variant", mask, str)
        arrays[f"accent_{split}"] = col("accent", mask, str)
        arrays[f"speed_wpm_{split}"] = col("speed_wpm", mask, np.int64)
        arrays[f"pitch_{split}"] = col("pitch", mask, np.int64)
        arrays[f"snr_db_{split}"] = col("snr_db", mask, np.float32)
        arrays[f"noise_{split}"] = col("noise", mask, str)
        arrays[f"offset_{split}"] = col("offset", mask, np.int64)
    save(
        "keywords",
        **arrays,
        labels=np.array(WORDS),
        frontend_params=json.dumps(params.to_dict(), sort_keys=True),
        source=(
            "Synthesised by demos/data/make_data.py with " + version.strip() + " (formant "
            "synthesiser; English accents " + ", ".join(ACCENTS) + "; voice variants "
            "as voice_*), resampled to 16 kHz by SoX, placed at a random offset in 1.0 s, scaled "
            "to a random peak, white or pink noise added at snr_db_* (inf = clean) relative to "
            f"the speech power; seed {SEED}"
        ),
        license="Generated data, distributed under the nvmstream licence (Apache-2.0); "
        "espeak-ng itself is GPL-3.0 but its audio output is not covered by it",
        description=(
            "x_*: log-mel features of runtime/frontend.py with frontend_params (the default "
            "FrontendParams plus per-feature normalisation by the mean and std of the shipped "
            "training clips' frames), STORED AS FLOAT16 to keep the file small (datasets.load gives "
            "float32), [N, 98 frames, 40 mels]; y_* indexes labels; split by voice variant: "
            "no voice_test value occurs in voice_train. x_train is only a class-balanced "
            f"sample ({SHIPPED_TRAIN_PER_WORD} per word) of the training clips, for "
            "calibration and tests; the full training set is keywords_extra.npz, regenerated "
            "by `python demos/data/make_data.py keywords_extra` (not committed)"
        ),
    )
    for split, mask in (("train", ~is_test), ("test", is_test)):
        y = arrays[f"y_{split}"]
        print(
            f"  {split}: {mask.sum()} clips, {len(set(arrays[f'voice_{split}']))} voices;",
            class_counts(y, WORDS),
        )

    # A few WAV clips (one per word, test voices, clean or 20 dB) for the streaming demo.
    wav_dir = HERE / "keywords_wav"
    if wav_dir.exists():
        shutil.rmtree(wav_dir)
    wav_dir.mkdir()
    test_idx = np.flatnonzero(is_test)
    voices = sorted(test_voices, key=str.lower)
    manifest = []
    for w, word in enumerate(WORDS):
        # One clip per word, clean or 20 dB, from a different test voice for each word.
        candidates = [
            j
            for j, i in enumerate(test_idx)
            if recipes[i]["y"] == w and recipes[i]["snr_db"] >= 20.0
        ]
        order = {v: (k - w) % len(voices) for k, v in enumerate(voices)}
        j = min(candidates, key=lambda j: (order[recipes[test_idx[j]]["variant"]], j))
        r = recipes[test_idx[j]]
        name = f"{word}_{r['variant']}.wav"
        fe.write_wav(wav_dir / name, clips[test_idx[j]], 16000)
        manifest.append(
            {
                "file": name,
                "word": word,
                "test_index": int(j),
                "voice": r["variant"],
                "accent": r["accent"],
                "snr_db": None if not np.isfinite(r["snr_db"]) else r["snr_db"],
            }
        )
    (wav_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"  wrote {len(manifest)} WAV clips to {wav_dir.relative_to(REPO)}/ (+ manifest.json)")


#: new espeak-ng renditions per training voice and word in keywords_extra.npz ...
EXTRA_SYNTH_PER_VOICE_AND_WORD = 4
#: ... each placed, scaled and noised this many times (different offset, peak, noise)
EXTRA_RENDERS_PER_SYNTH = 2


def make_keywords_extra() -> None:
    """The full keyword training set, kept out of git (demos/data/keywords_extra.npz, ~45 MB):
    the training-voice clips of the base draw that keywords.npz does not ship, plus
    EXTRA_SYNTH_PER_VOICE_AND_WORD new renditions per training voice and word (wider speed and
    pitch ranges), each rendered EXTRA_RENDERS_PER_SYNTH times. Same test voices (same seed);
    no test voice occurs. Together with keywords.npz's x_train every training clip is used once:
    `nvmstream train --task keywords --extra-train demos/data/keywords_extra.npz`."""
    _keyword_tools()
    fe = _load_frontend()
    params = _keyword_frontend(fe)
    variants, test_voices, base = _keyword_base()
    shipped = set(_shipped_train_rows(base, test_voices).tolist())
    rest = [i for i, r in enumerate(base) if r["variant"] not in test_voices and i not in shipped]
    rng = np.random.default_rng([SEED, 1])
    new = []
    for variant in variants:
        if variant in test_voices:
            continue
        for w, word in enumerate(WORDS):
            for _ in range(EXTRA_SYNTH_PER_VOICE_AND_WORD):
                new.append({
                    "word": word, "y": w, "variant": variant,
                    "accent": str(rng.choice(ACCENTS)),
                    "speed_wpm": int(rng.integers(90, 261)),
                    "pitch": int(rng.integers(5, 96)),
                })
    print(f"keywords_extra: {len(rest)} base clips + {len(new)} x {EXTRA_RENDERS_PER_SYNTH} new "
          f"from {len(variants) - len(test_voices)} training voices")
    speech = _synthesize_all([base[i] for i in rest] + new)
    sp_base, sp_new = speech[: len(rest)], speech[len(rest):]
    clips_base = np.empty((len(rest), CLIP_SAMPLES), dtype=np.int16)
    for j, i in enumerate(rest):
        clips_base[j], _ = render_clip(sp_base[j], np.random.default_rng([SEED, i]),
                                       base[i]["snr_db"], base[i]["noise"], base[i]["peak"])
    renders, sp_r = [], []
    for r, s in zip(new, sp_new):
        for _ in range(EXTRA_RENDERS_PER_SYNTH):
            renders.append(dict(r, snr_db=float(rng.choice(SNR_CHOICES_DB)),
                                noise=str(rng.choice(["white", "pink"])),
                                peak=float(rng.uniform(0.1, 0.95))))
            sp_r.append(s)
    clips_new = _render_all(renders, sp_r, [SEED, 1])
    recipes = [base[i] for i in rest] + renders
    feats = _features(fe, np.concatenate([clips_base, clips_new]), params)
    save("keywords_extra",
         x_train=feats, y_train=np.array([r["y"] for r in recipes], np.int64),
         voice_train=np.array([r["variant"] for r in recipes]),
         accent_train=np.array([r["accent"] for r in recipes]),
         speed_wpm_train=np.array([r["speed_wpm"] for r in recipes], np.int64),
         pitch_train=np.array([r["pitch"] for r in recipes], np.int64),
         snr_db_train=np.array([r["snr_db"] for r in recipes], np.float32),
         labels=np.array(WORDS),
         frontend_params=json.dumps(params.to_dict(), sort_keys=True),
         source=f"demos/data/make_data.py keywords_extra (espeak-ng, seeds {SEED} and "
                f"[{SEED}, 1])",
         license="Generated data, Apache-2.0 like nvmstream",
         description="the keyword training clips keywords.npz does not ship (training voices "
                     "only), float16 log-mels [N, 98, 40]; not committed: regenerate")
    print(f"  train: {len(recipes)} clips;", class_counts(np.array([r['y'] for r in recipes]),
                                                          WORDS))


MAKERS = {
    "basic_motions": make_basic_motions,
    "japanese_vowels": make_japanese_vowels,
    "italy_power_demand": make_italy_power_demand,
    "digits": make_digits,
    "keywords": make_keywords,
    "keywords_extra": make_keywords_extra,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"sets to make (default all): {', '.join(MAKERS)}"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(MAKERS))
    if unknown:
        parser.error(f"unknown set(s) {unknown}; valid: {', '.join(MAKERS)}")
    # keywords_extra (not committed) only when named
    for name in args.names or [m for m in MAKERS if m != "keywords_extra"]:
        print(f"== {name}")
        MAKERS[name]()
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"demos/data total: {total / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
