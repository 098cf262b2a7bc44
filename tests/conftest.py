from __future__ import annotations

import sys
from pathlib import Path

# tests/ holds plain helper modules (onnx_util.py) imported by several test files
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config):
    """Under xdist, compile the engine's numba kernels once in the controller before the
    workers start: they then load them from numba's on-disk cache (~2 s) instead of each
    compiling them (~50 s of CPU per process when the cache is cold)."""
    n = getattr(config.option, "numprocesses", None)
    if hasattr(config, "workerinput") or not n:
        return
    import tempfile

    import numpy as np

    import nvmstream as nvm
    from nvmstream.runtime.bench import lstm_onnx
    with tempfile.TemporaryDirectory() as td:
        rng = np.random.default_rng(0)
        path = lstm_onnx(Path(td) / "warm.onnx", 3, 4, 2, state_io=False)
        prog = nvm.convert(path, calibration=rng.normal(size=(2, 3, 3)).astype(np.float32))
        eng = nvm.Engine(prog, nvm.Device("pcm", seed=0))
        eng.run(rng.normal(size=(17, 2, 3)).astype(np.float32))    # BLAS route, both sources
        eng.stream().step(np.zeros(3, np.float32))                  # fused streamed step
