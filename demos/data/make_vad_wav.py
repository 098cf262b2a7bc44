#!/usr/bin/env python
"""Make ``demos/data/vad_speech.wav``: synthesised speech with silence around it, for the
silero-vad demo and tests (voice activity: which 32 ms chunks hold speech).

    apt-get install -y espeak-ng sox
    python demos/data/make_vad_wav.py

Layout (16 kHz int16 mono, 8.0 s): 1.0 s of near-silence, a sentence, 1.5 s of near-silence,
another sentence in another voice, then near-silence to the end. "Near-silence" is white noise
at -60 dBFS (seeded), so a detector sees a realistic floor rather than digital zeros. espeak-ng
renders at 22.05 kHz; sox resamples to 16 kHz with dither off, so a rerun gives the same file.
Only this script needs espeak-ng and sox; the tests and the demo read the committed WAV.
"""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "vad_speech.wav"
RATE = 16000
SENTENCES = [("en-us", 160, "Turn on the kitchen lights."),
             ("en-gb-x-rp", 140, "No, stop. Wait for me.")]


def speak(voice: str, wpm: int, text: str) -> np.ndarray:
    tts = subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "--stdout", text],
                         check=True, capture_output=True).stdout
    raw = subprocess.run(["sox", "-D", "-t", "wav", "-", "-r", str(RATE), "-c", "1", "-b", "16",
                          "-e", "signed-integer", "-t", "raw", "-"],
                         input=tts, check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.int16).astype(np.float64) / 32768.0


def main() -> int:
    a, b = (speak(*s) for s in SENTENCES)
    total = 8 * RATE
    x = np.random.default_rng(20261201).standard_normal(total) * 10 ** (-60 / 20)
    s0 = RATE                              # 1.0 s of silence first
    s1 = s0 + a.size + int(1.5 * RATE)
    if s1 + b.size > total:
        print("sentences too long for 8 s", file=sys.stderr)
        return 1
    x[s0:s0 + a.size] += 0.7 * a / np.abs(a).max()
    x[s1:s1 + b.size] += 0.7 * b / np.abs(b).max()
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(OUT), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    print(f"{OUT}: speech at {s0 / RATE:.2f}-{(s0 + a.size) / RATE:.2f} s and "
          f"{s1 / RATE:.2f}-{(s1 + b.size) / RATE:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
