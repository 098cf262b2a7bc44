"""numba kernels of the engine, split by concern:

* :mod:`.layout` -- the program's record types (named fields) and codes;
* :mod:`.rng` -- random states and the normal sampler (one definition, documented order);
* :mod:`.vmm` -- DAC, tile products (in-kernel and BLAS routes), periphery after the products;
* :mod:`.cells` -- activations and LSTM/GRU/RNN cells;
* :mod:`.conv` -- the im2col frame window of a Conv1d over time;
* :mod:`.digital` -- digital-periphery layers (LayerNorm, arithmetic, Sqrt/Pow, ReduceMean, Pad);
* :mod:`.program` -- layer loops, the fused streamed step.
"""

import hashlib as _hashlib
import os as _os
from pathlib import Path as _Path


def _drop_stale_cache() -> None:
    """numba's on-disk cache checks only the timestamp of a function's own file, but a kernel
    carries the compiled code of the kernels it calls from other files (``run_program`` in
    program.py holds ``run_periphery`` from digital.py): after a change to digital.py alone
    it would keep running the old callee, silently. So when any kernel source changed since
    the cache was written (a hash of them all, stamped beside the cache), every kernel's
    cache file is dropped and recompiled. Default cache location (``__pycache__`` here) and
    ``NUMBA_CACHE_DIR`` (numba's folder for this package there: ``kernels_<sha1 of the
    source folder>``) alike."""
    src = _os.path.dirname(_os.path.abspath(__file__))
    here = _Path(src)
    digest = _hashlib.sha1(b"".join(p.read_bytes() for p in sorted(here.glob("*.py"))))
    root = _os.environ.get("NUMBA_CACHE_DIR")
    dirs = [here / "__pycache__"]
    if root:
        dirs.append(_Path(root) / f"{here.name}_{_hashlib.sha1(src.encode()).hexdigest()}")
    for d in dirs:
        stamp = d / "kernels-sources.sha1"
        try:
            if stamp.read_text() == digest.hexdigest():
                continue
        except OSError:
            pass
        try:
            d.mkdir(parents=True, exist_ok=True)
            for f in d.iterdir():
                if f.suffix in (".nbi", ".nbc"):
                    f.unlink(missing_ok=True)
            stamp.write_text(digest.hexdigest())
        except OSError:            # a read-only install: numba falls back to its own rules
            pass


_drop_stale_cache()

from .conv import run_window  # noqa: F401,E402
from .digital import run_periphery  # noqa: F401,E402
from .layout import ACT_CODES, LAYER, SEG, OPS, SOURCES  # noqa: F401,E402
from .program import (ANY_STRIDE_F32, BB, compiled, run_dense, run_digital, run_layer, run_program, run_recurrent,  # noqa: F401,E402
                      scratch, segment, segment_at, stream_step,
                      StepArgs, pack_step, stream_step_packed)
from .rng import fill_normals, normals, seed_states  # noqa: F401,E402
from .vmm import BlasSegment, blas_products, dac_codes, dac_rows  # noqa: F401,E402
