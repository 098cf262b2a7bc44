"""Where a streamed step's time goes: each stage of the fused kernel (every layer; per crossbar
segment its DAC and tile products, its periphery, the normals that periphery draws) timed in a
tight numba loop of its own on a real stream's arguments, beside the whole kernel and the
Python-level ``Stream.step``, in one interleaved run (``make bench`` prints it under the
engine table and writes it to the JSON as ``stream_profile``).

The stages run on the stream's own plan, state and inputs (its last frame, its hidden state),
so they read the same matrices and skip the same zero DAC codes as the step does; a stage
timed alone keeps its data in cache, so the parts add up to a little less than the kernel
(the difference is reported as the layer's and the kernel's rest: cells, copies, and caches
the products evict). The stages advance the stream's random states and rewrite its scratch:
profile a stream of its own, never one whose results matter.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .bench import _interleaved, segment_normals
from .kernels import cells as C
from .kernels import fill_normals, run_layer, stream_step_packed
from .kernels.layout import OP_DENSE, OP_GRU, OP_LSTM, OP_RNN, SOURCES, SRC_X
from .kernels.vmm import dac, periphery, products

#: calls of a stage per timed sample (a stage takes ~0.1-6 us)
REPS = 200

_OP_NAMES = {OP_LSTM: "LSTM", OP_GRU: "GRU", OP_RNN: "RNN", OP_DENSE: "Dense"}
_ROLES = {v: k for k, v in SOURCES.items()}


@njit(cache=True, error_model="numpy")
def _kernel_reps(a, xs, out, reps):
    """``reps`` fused steps (:func:`.kernels.stream_step_packed`) over the frames ``xs``."""
    best = 0
    n = xs.shape[0]
    for r in range(reps):
        best += stream_step_packed(a, xs[r % n], out)
    return best


@njit(cache=True, error_model="numpy")
def _layer_reps(a, li, reps):
    """Layer ``li`` of the stream's step, ``reps`` times, on the env its last step left."""
    for _ in range(reps):
        run_layer(a.layers, li, a.segs, a.w32, a.w64, a.pf, a.env, a.lens, a.state, a.rng,
                  a.srow, a.scr)
    return a.env[0, 0, 0]


@njit(cache=True, error_model="numpy")
def _cell_reps(a, li, reps):
    """Recurrent layer ``li``'s cell (gates, activations, state update) for one stream,
    ``reps`` times, on zero products (the activations cost the same at any value)."""
    lay = a.layers[li]
    f64, vec = a.scr[1], a.scr[3]
    zx, zh, zr = f64[0][0], f64[1][0], f64[2][0]
    H = lay.h
    r = a.srow[0]
    hs = a.state[r, lay.state:lay.state + H]
    cs = a.state[r, lay.state + H:lay.state + 2 * H]
    g = 4 if lay.op == OP_LSTM else (3 if lay.op == OP_GRU else 1)      # gate blocks
    for _ in range(reps):
        for j in range(g * H):
            zx[j] = 0.0
            zh[j] = 0.0
        if lay.op == OP_LSTM:
            C.lstm_cell(lay, a.pf, zx, zh, hs, cs, vec[2])
        elif lay.op == OP_GRU:
            C.gru_gates(lay, a.pf, zx, zh)
            C.gru_update(lay, a.pf, zx, zh, zr, hs, vec[2], vec[3])
        else:
            C.rnn_cell(lay, a.pf, zx, zh, hs)
    return hs[0]


@njit(cache=True, error_model="numpy")
def _load_inputs(a, li, si):
    """Segment ``si``'s inputs as layer ``li``'s step would read them into ``V[0]``: the
    layer input from the env, or the hidden state (the GRU's ``r*h`` read as ``h``)."""
    lay = a.layers[li]
    seg = a.segs[si]
    V = a.scr[1][3]
    for i in range(seg.n_in):
        V[0, i] = (float(a.env[0, 0, lay.x + i]) if seg.src == SRC_X
                   else a.state[a.srow[0], lay.state + i])
    return V


@njit(cache=True, error_model="numpy")
def _products_reps(a, li, si, reps):
    """Segment ``si``'s DAC and tile products for one stream, ``reps`` times."""
    f32, f64, pp = a.scr[0], a.scr[1], a.scr[2]
    seg = a.segs[si]
    V = _load_inputs(a, li, si)
    nb = reps - reps + 1          # (not a literal 1: the step's own specialization)
    for _ in range(reps):
        dac(seg, V, nb, f32[0], f64[5])
        products(seg, a.w32, a.w64, f32[0], f64[5], nb, f32[1], f64[6], pp)
    return pp[0, 0]


@njit(cache=True, error_model="numpy")
def _periphery_reps(a, li, si, reps):
    """Segment ``si``'s periphery (read noise, ADC, sum over tiles, scale) for one stream on
    the products of :func:`_products_reps`, ``reps`` times (its normals included)."""
    f32, f64, pp, vec = a.scr[0], a.scr[1], a.scr[2], a.scr[3]
    seg = a.segs[si]
    V = _load_inputs(a, li, si)
    nb = reps - reps + 1
    dac(seg, V, nb, f32[0], f64[5])
    products(seg, a.w32, a.w64, f32[0], f64[5], nb, f32[1], f64[6], pp)
    st = a.rng[a.srow[0], a.layers[li].rng]
    c0 = nb - nb
    out = f64[0]
    for j in range(seg.n_out):
        out[0, j] = 0.0
    for _ in range(reps):
        periphery(seg, a.pf, pp, c0, c0, st, vec[0], vec[1], vec[2], out, c0)
    return out[0, 0]


@njit(cache=True, error_model="numpy")
def _normals_reps(a, li, n, reps):
    """The ``n`` normals one stream-step of a segment draws, ``reps`` times."""
    st = a.rng[a.srow[0], a.layers[li].rng]
    z = a.scr[1][4][0]
    m = max(1, min(n, z.shape[0]))
    for _ in range(reps):
        for k in range(0, n, m):
            fill_normals(st, z, min(m, n - k))
    return z[0]


def profile_stream_step(stream, frames: np.ndarray, rounds: int = 41) -> dict:
    """CPU microseconds per call of ``stream.step`` and of each stage of its kernel (medians
    of ``rounds`` interleaved samples of :data:`REPS` calls; ``frames[N, F]`` float32 feed the
    step and the kernel). ``stream`` must be a stream of its own (see the module's note)."""
    eng = stream.engine
    plan = eng.plan
    stream.step(frames[0])                     # first frame counted, env and state filled
    a = stream._args
    xs = np.zeros((frames.shape[0], 2 * frames.shape[1]), np.float32)[:, ::2]
    xs[:] = frames                             # rows typed as the step's frame (any stride)
    out = np.empty(stream._nout, np.float32)

    def steps():
        for r in range(REPS):
            stream.step(frames[r % len(frames)])
    cases = {"step": steps, "kernel": lambda: _kernel_reps(a, xs, out, REPS)}
    layers = []
    for li in range(plan.layers.shape[0]):
        lay = plan.layers[li]
        s0, ns = int(lay["seg0"]), int(lay["nseg"])
        cases[f"layer{li}"] = lambda li=li: _layer_reps(a, li, REPS)
        if int(lay["op"]) in (OP_LSTM, OP_GRU, OP_RNN):
            cases[f"cell{li}"] = lambda li=li: _cell_reps(a, li, REPS)
        segs = []
        for si in range(s0, s0 + ns):
            seg = plan.segs[si]
            n = segment_normals(seg)
            cases[f"seg{si}/products"] = lambda li=li, si=si: _products_reps(a, li, si, REPS)
            cases[f"seg{si}/periphery"] = lambda li=li, si=si: _periphery_reps(a, li, si, REPS)
            cases[f"seg{si}/normals"] = lambda li=li, n=n: _normals_reps(a, li, n, REPS)
            segs.append({"seg": si, "role": _ROLES.get(int(seg["src"]), "?"),
                         "n_in": int(seg["n_in"]), "n_out": int(seg["n_out"]),
                         "tiles": int(seg["nblk"]), "normals": n})
        layers.append({"layer": li, "op": _OP_NAMES.get(int(lay["op"]), f"op{int(lay['op'])}"),
                       "segments": segs})
    cpu: dict[str, float] = {}
    _interleaved(cases, rounds, {k: REPS for k in cases}, cpu=cpu)
    for L in layers:
        L["us"] = cpu[f"layer{L['layer']}"]
        for s in L["segments"]:
            for part in ("products", "periphery", "normals"):
                s[f"{part}_us"] = cpu[f"seg{s['seg']}/{part}"]
        if f"cell{L['layer']}" in cpu:
            L["cell_us"] = cpu[f"cell{L['layer']}"]
        L["rest_us"] = L["us"] - L.get("cell_us", 0.0) - sum(s["products_us"] + s["periphery_us"]
                                                    for s in L["segments"])
    return {"reps": REPS, "rounds": rounds, "step_us": cpu["step"], "kernel_us": cpu["kernel"],
            "python_us": cpu["step"] - cpu["kernel"],
            "kernel_rest_us": cpu["kernel"] - sum(L["us"] for L in layers), "layers": layers}


def format_profile(p: dict) -> list[str]:
    """The profile as printed lines (CPU us per step)."""
    lines = [f"where a streamed step's time goes (CPU us per step; each stage alone in a tight "
             f"loop, medians of {p['rounds']} interleaved rounds):",
             f"  Stream.step {p['step_us']:.2f} = Python and the call {p['python_us']:.2f} + "
             f"kernel {p['kernel_us']:.2f}",
             "  kernel = " + " + ".join(f"layer {L['layer']} {L['op']} {L['us']:.2f}"
                                         for L in p["layers"])
             + f" + rest {p['kernel_rest_us']:.2f}"]
    for L in p["layers"]:
        parts = [f"{s['role']} {s['n_in']}->{s['n_out']} ({s['tiles']} tile"
                 f"{'s' if s['tiles'] > 1 else ''}): DAC+products {s['products_us']:.2f}, "
                 f"periphery {s['periphery_us']:.2f} (its {s['normals']} normals "
                 f"{s['normals_us']:.2f})" for s in L["segments"]]
        if "cell_us" in L:
            parts.append(f"cell {L['cell_us']:.2f}")
        lines.append(f"  layer {L['layer']} {L['op']} {L['us']:.2f} = "
                     + " + ".join(parts + [f"rest {L['rest_us']:.2f} (copies, bias, caches)"]))
    return lines
