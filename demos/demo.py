"""`make demo`: nvmstream end to end, with the exact commands it runs.

For each shipped task model (trained with quantization-aware training for 4-bit weights, DAC and
ADC) the demo runs, and prints before running, the same commands a user would type:

    nvmstream convert demos/models/TASK_qat4.onnx -o TMP/TASK.nvm     (calibration: the model's
                                                                       own training split)
    nvmstream serve TMP/TASK.nvm --bind tcp://127.0.0.1:PORT --profile ideal
    nvmstream stream -c tcp://127.0.0.1:PORT -d demos/data/TASK.npz --split test \
        --profile P [--votes K] --seed 0 --quiet --json TMP/...json

so every figure in the table comes from the CLI's own JSON. Accuracy is on each dataset's *full*
test split (n shown, with a 95% Wilson interval); the keyword task also streams the 10 shipped
WAV clips as raw 16 kHz audio through the server's front end (a path check, not an accuracy
claim: n = 10). Energy and device latency are per inference at each sequence's true length.

    python demos/demo.py            # the demo (full test splits, a few minutes)
    python demos/demo.py --quick    # 12 sequences per task (what the test suite runs)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODELS = Path(os.environ.get("NVMSTREAM_DEMO_MODELS", HERE / "models"))
DATA = HERE / "data"

PROFILES = [("ideal", 1), ("int4", 1), ("pcm-1d", 1), ("snr0db", 1), ("snr0db", 5)]
TASKS = [("basic_motions", "sensor, 6-axis IMU"), ("japanese_vowels", "speech features"),
         ("keywords", "40 log-mels per 10 ms")]
CLI = [sys.executable, "-m", "nvmstream.runtime.cli"]


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def show(args: list) -> str:
    """The command as a user types it (the console script, paths relative to the repo)."""
    out = ["nvmstream"]
    for a in map(str, args):
        try:
            a = str(Path(a).relative_to(REPO)) if a.startswith(str(REPO)) else a
        except ValueError:
            pass
        out.append(a)
    return shlex.join(out)


def run(args: list, log) -> subprocess.CompletedProcess:
    log(f"   $ {show(args)}")
    r = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{show(args)} failed (exit {r.returncode}): {r.stderr.strip()}")
    return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`nvmstream serve` in a subprocess on a free loopback port; ready when it says so."""

    def __init__(self, model: Path, log):
        self.addr = f"tcp://127.0.0.1:{free_port()}"
        args = ["serve", model, "--bind", self.addr, "--profile", "ideal", "--idle-timeout",
                "120"]
        log(f"   $ {show(args)} &")
        self.proc = subprocess.Popen(CLI + [str(a) for a in args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()          # "nvmstream: serving ... profile ideal"
        if not line.startswith("nvmstream: serving"):
            err = self.proc.communicate(timeout=10)[1]
            raise RuntimeError(f"server did not start: {line}{err[-2000:]}")
        log(f"     {line.strip()}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


def _bar(total: int):
    """A tqdm bar on a terminal; nothing when the output is redirected (no \\r in logs)."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="demo", unit="run", leave=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="nvmstream demo (prints every command it runs)")
    ap.add_argument("--quick", action="store_true", help="12 sequences per task")
    ap.add_argument("--recipe", default="qat4", help="model recipe (float, qat4, qat4_noise)")
    args = ap.parse_args(argv)
    t0 = time.time()
    limit = ["--limit", "12"] if args.quick else []
    wavs = sorted((DATA / "keywords_wav").glob("*.wav"))
    runs_total = len(TASKS) * len(PROFILES) + len(PROFILES)
    bar = _bar(runs_total)

    def log(msg: str) -> None:
        if bar is not None:
            bar.write(msg)
        else:
            print(msg, flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as td:
        for task, what in TASKS:
            onnx_path = MODELS / f"{task}_{args.recipe}.onnx"
            if not onnx_path.exists():
                print(f"missing {onnx_path}: run `python demos/train.py --all`", file=sys.stderr)
                return 1
            log(f"\n== {task} ({what})")
            nvm_path = Path(td) / f"{task}.nvm"
            r = run(["convert", onnx_path, "-o", nvm_path], log)
            log("     " + r.stdout.strip().replace("\n", "\n     "))
            server = Server(nvm_path, log)
            try:
                inputs = [("test split", ["-d", DATA / f"{task}.npz", "--split", "test",
                                          *limit])]
                if task == "keywords":
                    inputs.append(("raw audio", ["-d", *(wavs[:4] if args.quick else wavs)]))
                for source, data_args in inputs:
                    for profile, votes in PROFILES:
                        out = Path(td) / f"{task}-{source[:3]}-{profile}-{votes}.json"
                        vote = ["--votes", str(votes)] if votes > 1 else []
                        run(["stream", "-c", server.addr, *data_args, "--profile", profile,
                             *vote, "--seed", "0", "--sockets", "2", "--quiet", "--json",
                             out], log)
                        res = json.loads(out.read_text())
                        n, acc = res.get("labelled") or 0, res.get("accuracy")
                        k = round((acc or 0) * n)
                        lat = res["device_latency_ns_per_frame"]
                        steps = res["frames"] / max(1, res["streams"])
                        rows.append({
                            "task": task if source == "test split" else f"{task} (wav)",
                            "profile": profile + (f" x{votes} votes" if votes > 1 else ""),
                            "n": n, "acc": acc, "ci": wilson(k, n),
                            "p50": res["rtt_ms"]["p50"], "p99": res["rtt_ms"]["p99"],
                            "lat_us": None if lat is None else lat * steps / 1e3,
                            "e_nJ": (res["energy_pJ_per_inference"] or 0) / 1e3,
                            "steps": steps, "errors": res["errors"]})
                        lo, hi = rows[-1]["ci"]
                        log(f"     -> accuracy {100 * (acc or 0):5.1f}% of n={n} "
                            f"(95% CI {100 * lo:.1f}-{100 * hi:.1f}%), {res['frames']} frames")
                        if bar is not None:
                            bar.update(1)
            finally:
                rc = server.stop()
                log(f"   server stopped cleanly (exit {rc})" if rc == 0 else
                    f"   server exit status {rc}")
    if bar is not None:
        bar.close()
    line = "=" * 112
    print("\n" + line)
    print(f"{'task':<22}{'profile':<17}{'n':>5}{'accuracy':>10}{'95% CI':>14}{'steps':>7}"
          f"{'host p50':>10}{'host p99':>10}{'device':>9}{'energy':>9}")
    print(f"{'':<22}{'':<17}{'':>5}{'':>10}{'':>14}{'/inf':>7}{'ms/msg':>10}{'ms/msg':>10}"
          f"{'us/inf':>9}{'nJ/inf':>9}")
    for r in rows:
        acc = "" if r["acc"] is None else f"{100 * r['acc']:.1f}%"
        ci = "" if r["acc"] is None else f"{100 * r['ci'][0]:.1f}-{100 * r['ci'][1]:.1f}%"
        print(f"{r['task']:<22}{r['profile']:<17}{r['n']:>5}{acc:>10}{ci:>14}{r['steps']:>7.1f}"
              f"{r['p50'] or 0:>10.3f}{r['p99'] or 0:>10.3f}{r['lat_us'] or 0:>9.2f}"
              f"{r['e_nJ']:>9.2f}" + (f"  ({r['errors']} errors)" if r["errors"] else ""))
    print(line)
    print("""columns:
  n          sequences streamed and labelled (the dataset's whole test split unless --quick;
             "(wav)": the 10 shipped clips as raw audio through the server's front end)
  accuracy   class at each sequence's last valid frame equals its label
  95% CI     Wilson score interval of that accuracy for n sequences
  steps/inf  frames per inference: each sequence's true length, no padding
  host p50/99  round trip of one message measured by the client on loopback, every stream
             of the split in flight at once (so it includes queueing behind the others)
  device     the emulated chip's latency per inference (all steps, layers in sequence)
  energy     the emulated chip's energy per inference at the true length, votes included;
             `ideal` prices its unquantized DAC/ADC at 8 bits (energy.unquantized_converter_bits)
             so it costs more than int4's 4-bit converters; x5 votes costs ~5x
profiles: nvmstream profiles list; every number above came from `nvmstream stream --json`.""")
    print(f"demo took {time.time() - t0:.0f} s")
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
