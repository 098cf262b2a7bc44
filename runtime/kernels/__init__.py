"""numba kernels of the engine, split by concern:

* :mod:`.layout` -- the program's record types (named fields) and codes;
* :mod:`.rng` -- random states and the normal sampler (one definition, documented order);
* :mod:`.vmm` -- DAC, tile products (in-kernel and BLAS routes), periphery after the products;
* :mod:`.cells` -- activations and LSTM/GRU/RNN cells;
* :mod:`.conv` -- the im2col frame window of a Conv1d over time;
* :mod:`.digital` -- digital-periphery layers (LayerNorm, arithmetic, Sqrt/Pow, ReduceMean, Pad);
* :mod:`.program` -- layer loops, the fused streamed step.
"""

from .conv import run_window  # noqa: F401
from .digital import run_periphery  # noqa: F401
from .layout import ACT_CODES, LAYER, SEG, OPS, SOURCES  # noqa: F401
from .program import (BB, compiled, run_dense, run_digital, run_program, run_recurrent,  # noqa: F401
                      scratch, segment, segment_at, stream_step,
                      StepArgs, pack_step, stream_step_packed)
from .rng import fill_normals, normals, seed_states  # noqa: F401
from .vmm import BlasSegment, blas_products, dac_codes, dac_rows  # noqa: F401
