"""silero-vad on emulated NVM crossbars, served over ZeroMQ: voice activity per 32 ms chunk.

silero-vad's own ONNX file (tests/corpus/silero/, MIT licence, from its pip wheel) is a frame
model: each call takes one 512-sample chunk at 16 kHz plus the 64 samples before it and
returns the speech probability and its LSTM state. nvmstream converts it with the sample rate
and the frame size fixed (one call = one recurrent step; the stream carries the state), puts
its STFT basis, four encoder convolutions, LSTM and head on crossbars (im2col) and the rest
(reflect pad, magnitude, ReLUs, sigmoid) in the digital periphery. The demo runs, and prints,
the commands a user would type: `convert --sample-rate 16000 --frame-context 64` gives the
model a raw-PCM front end, so `nvmstream stream --data x.wav` sends the WAV's samples to the
server over ZeroMQ, which cuts them into the model's 576-sample frames; once per profile, the
speech decisions (probability > 0.5) are compared with onnxruntime's:

    python demos/silero_vad.py                                   # demos/data/vad_speech.wav
    python demos/silero_vad.py --wav demos/data/keywords_wav/yes_Alex.wav

The speech WAV is espeak-ng speech with silence around it (demos/data/make_vad_wav.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import CLI, Server, run  # noqa: E402  (the main demo's command runner and server)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SILERO = REPO / "tests" / "corpus" / "silero" / "silero_vad_16k_op15.onnx"
# (label, profile, overrides): silero-vad was not trained for 4-bit converters; the second
# int4 row shows how much of the loss is the 4-bit DAC/ADC rather than the 4-bit weights
PROFILES = [("ideal", "ideal", []), ("int4", "int4", []),
            ("int4+8b", "int4", ["dac.bits=8", "adc.bits=8"]), ("pcm", "pcm", [])]
THRESHOLD = 0.5


def onnxruntime_probs(frames: np.ndarray) -> np.ndarray:
    """The reference: onnxruntime, one chunk per call, its state output fed back."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(SILERO), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    out = []
    for f in frames:
        p, state = sess.run(None, {"input": f[None], "state": state,
                                   "sr": np.array(16000, np.int64)})
        out.append(float(p[0, 0]))
    return np.array(out)


def timeline(speech: np.ndarray, chunk_s: float) -> str:
    """Speech segments as 'a-b s' from per-chunk decisions."""
    segs, start = [], None
    for i, s in enumerate(list(speech) + [False]):
        if s and start is None:
            start = i
        elif not s and start is not None:
            segs.append(f"{start * chunk_s:.2f}-{i * chunk_s:.2f} s")
            start = None
    return ", ".join(segs) or "none"


def main(argv=None) -> int:
    import json

    from nvmstream.runtime.frontend import context_frames, read_wav

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wav", default=str(HERE / "data" / "vad_speech.wav"),
                    help="16 kHz mono 16-bit WAV (default: demos/data/vad_speech.wav)")
    args = ap.parse_args(argv)
    pcm, _ = read_wav(args.wav, 16000)
    frames = context_frames(pcm)                      # [T, 576]: 512 new samples + 64 before
    chunk_s = 512 / 16000
    print(f"{args.wav}: {pcm.size / 16000:.2f} s, {len(frames)} chunks of 32 ms")
    t0 = time.time()
    ref = onnxruntime_probs(frames)
    ref_speech = ref > THRESHOLD
    print(f"onnxruntime: speech {timeline(ref_speech, chunk_s)}")
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        # calibration: chunks of the ten keyword clips (not the WAV being scored)
        cal = np.stack([context_frames(read_wav(w, 16000)[0])[:30]
                        for w in sorted((HERE / "data" / "keywords_wav").glob("*.wav"))])
        np.save(td / "calibration.npy", cal)
        model = td / "silero.nvm"
        # --sample-rate/--frame-context: the model takes raw 16 kHz PCM, 512 new samples and
        # 64 of context per call; the server cuts audio streams into those frames
        r = run(["convert", SILERO, "--constant", "sr=16000", "--frame-size", "576",
                 "--sample-rate", "16000", "--frame-context", "64",
                 "--calibration", td / "calibration.npy", "-o", model], print)
        print("\n".join("     " + ln for ln in r.stdout.splitlines()[-1:]))
        r = run(["inspect", model], lambda m: None)
        print("\n".join("     " + ln for ln in r.stdout.splitlines()[6:29]))
        server = Server(model, print)
        rows = []
        try:
            for label, profile, overrides in PROFILES:
                out, summary = td / f"{label}.npz", td / f"{label}.json"
                sets = [a for o in overrides for a in ("--set", o)]
                run(["stream", "-c", server.addr, "--data", args.wav, "--profile", profile,
                     *sets, "--seed", "0", "-q", "--outputs", out, "--json", summary], print)
                with np.load(out) as z:
                    prob = z["y_0"][:, 0].astype(np.float64)
                res = json.loads(summary.read_text())
                speech = prob > THRESHOLD
                rows.append((label, float(np.max(np.abs(prob - ref))),
                             float(np.mean(speech == ref_speech)),
                             int(np.sum(speech != ref_speech)),
                             res["energy_pJ_per_frame"], timeline(speech, chunk_s)))
        finally:
            server.stop()
    print(f"\n{'profile':<8} {'max |p - p_ort|':>16} {'decisions = ort':>16} "
          f"{'differ':>7} {'energy/chunk':>13}  speech")
    for profile, err, agree, nd, e, tl in rows:
        print(f"{profile:<8} {err:>16.2e} {100 * agree:>15.1f}% {nd:>7d} {e / 1e3:>10.1f} nJ  "
              f"{tl}")
    print("(int4+8b: the int4 profile with 8-bit DAC and ADC, --set dac.bits=8 adc.bits=8)")
    print(f"\n(threshold {THRESHOLD}; energy is the emulated chip's per 32 ms chunk, the sum "
          f"of the server's per-frame figures = the ledger's; {time.time() - t0:.0f} s)")
    return 0 if rows[0][3] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
