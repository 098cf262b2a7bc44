"""The Engine: a CompiledModel programmed onto a Device, run by the numba kernels.

    prog = nvm.convert("model.onnx", calibration=x_cal)
    eng = nvm.Engine(prog, nvm.Device("pcm", seed=0, age_s=3600), votes=1)
    y = eng.run(x)                      # [B, T, F] per step (first output)
    s = eng.stream(); y_t = s.step(x_t)
    ys = eng.step_many([s1, s2], frames)

Randomness: the device seed fixes programming (noise, faults, drift draws); every stream also
has a *stream seed* from which each (replica, layer-direction) gets its own xoshiro256** state,
so per-read noise is reproducible and independent of batching. ``run(x, seed=s)`` gives row b
the stream seed ``s + b``.

Voting (``votes=K``): every stream runs as K replicas on the same programmed weights with
independent per-read noise; ``run``/``step`` return the mean of the K outputs and
``predict``/``Stream.last_class`` the majority class (ties -> the class with the higher mean).

Execution routes (all give the same bits; see runtime/kernels/vmm.py for why):

* ``Stream.step`` -- one fused numba call per frame, products in-kernel, its arguments packed
  once per stream (:class:`.kernels.StepArgs`); ``step_many`` of fewer than
  :data:`FUSED_MAX_ROWS` rows (streams x votes) runs the same call for each stream in turn;
* ``run``/``predict``/larger ``step_many`` -- layer by layer: the tile products of every layer input
  are computed for all rows (streams x time steps) at once by BLAS (numpy matmul) when the
  segment has a DAC; recurrent products go through BLAS per step when the batch has at least
  :data:`BLAS_MIN_ROWS` rows, else in-kernel; the periphery (noise, ADC) and the cells run in
  numba per stream and step. Large batches run in chunks of rows so the precomputed products
  stay within :data:`PRE_BYTES`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nvmstream.converters import ir
from nvmstream.converters.compile import CompiledModel, convert, load
from nvmstream.converters.errors import NvmInputError
from nvmstream.devices import Device

from . import kernels as K
from .kernels import layout as LY
from .ledger import InferenceReport, Ledger, make_report, step_costs
from .plan import Plan, build_plan

log = logging.getLogger(__name__)
_NDARRAY = np.ndarray
_F32 = np.dtype(np.float32)
_empty = np.empty

BLAS_MIN_ROWS = 16          # recurrent products through BLAS per step from this many rows
FUSED_MAX_ROWS = 16         # step_many below this many rows (streams x votes): fused steps
PRE_BYTES = 4 << 20         # bound on the precomputed products of one chunk of rows (cache-sized)
WS_ENTRIES = 64             # work buffers kept per engine (batched path)


def _runs_at(pos, skip: int, every: int):
    """Whether a layer after a valid or strided Conv1d runs at frame ``pos`` (an int or an
    array): ``pos >= skip`` and ``(pos - skip) % every == 0``."""
    return (pos >= skip) & ((pos - skip) % every == 0)


def _frames_run(lens: np.ndarray, skip: int, every: int) -> np.ndarray:
    """Frames ``n < lens`` with ``n >= skip`` and ``(n - skip) % every == 0`` (a layer after a
    valid or strided Conv1d runs only there), per row."""
    lens = np.asarray(lens, np.int64)
    return np.where(lens > skip, (lens - skip - 1) // every + 1, 0)


def _stream_seeds(device_seed: int, stream_seed: int, replicas: int, slots: int) -> np.ndarray:
    """64-bit seeds for [replicas, slots] random states of one stream (stable hash)."""
    out = np.empty((replicas, slots), np.uint64)
    for r in range(replicas):
        h = hashlib.blake2b(f"nvmstream/{device_seed}/{stream_seed}/{r}".encode(),
                            digest_size=8).digest()
        base = int.from_bytes(h, "little")
        for s in range(slots):
            out[r, s] = np.uint64((base + 0x9E3779B97F4A7C15 * (s + 1)) % 2 ** 64)
    return out


class Engine:
    """Executes a :class:`CompiledModel` on a :class:`Device` (see module docstring).

    Parameters
    ----------
    prog:
        A :class:`CompiledModel`, a ``.nvm`` path, or an ``.onnx`` path (converted with
        ``calibration``).
    device:
        A :class:`Device`, a profile name/``.toml`` path (device seed 0), or None for
        ``"ideal"`` (the float reference).
    votes:
        K noisy replicas per stream; outputs are their mean, ``predict`` their majority
        (default 1).
    calibration:
        ``[N, T, F]`` inputs, only used when ``prog`` is an ``.onnx`` path.

    Whole sequences: :meth:`run`, :meth:`run_all`, :meth:`predict` (``lens`` = true lengths);
    frame by frame: :meth:`stream`, :meth:`step_many`. Energy and latency of everything run
    since the last :meth:`reset_ledger`: :meth:`report` (``report("runs")`` and
    ``report("streams")`` keep whole-sequence runs and streams apart; ``nvm.InferenceSession``
    reports each call on its own).
    """

    def __repr__(self) -> str:
        m = self.model
        return (f"Engine({m.source and m.source.split('/')[-1] or 'model'}: "
                f"{len(m.layers)} layers, {m.input.features} features in, "
                f"profile {self.device.profile.name!r}, device seed {self.device.seed}, "
                f"votes {self.votes})")

    def __init__(self, prog: CompiledModel | str | Path, device: Device | str | None = None,
                 *, votes: int = 1, calibration: np.ndarray | None = None) -> None:
        if isinstance(prog, (str, Path)):
            p = str(prog)
            prog = load(p) if p.endswith(".nvm") else convert(p, calibration)
        if device is None:
            device = Device("ideal")
        elif not isinstance(device, Device):
            device = Device(device)
        if not isinstance(votes, (int, np.integer)) or votes < 1:
            raise ValueError(f"votes must be an integer >= 1, got {votes!r}")
        self.prog = prog
        self.model: ir.Model = prog.model
        self.device = device
        self.votes = int(votes)
        self.plan: Plan = build_plan(prog, device)
        if self.votes > 1 and not self.plan.per_read_noise:
            log.warning("votes=%d on profile %r, which has no per-read noise: the replicas are "
                        "identical", self.votes, device.profile.name)
        self._next_stream = 0
        self._out_names = [o.name for o in self.model.outputs]
        self._scratch = K.scratch(self.plan.layers, self.plan.segs, self.plan.max_w)
        self._route = self._routes()
        self._none = np.empty((1, 1), np.float32)
        self._step_fn = None                 # Stream.step's compiled entry point
        self._frame_shape = (self.model.input.features,)
        self._work: dict = {}
        self._pool_state = np.zeros((0, self.plan.state_width))
        self._pool_rng = np.zeros((0, self.plan.rng_slots, 4), np.uint64)
        self._free: list[int] = []
        self._pool_gen = 0           # bumped when the pool is reallocated (Stream._pack)
        self._pending_steps = 0      # single-stream steps not yet folded into the ledger
        self._pending_new = 0
        unit, geom = step_costs(self.model, self.plan)
        # counts since the last reset, by how they ran: whole sequences vs frame-by-frame
        # streams (the whole is their sum, :attr:`ledger`)
        self._ledgers = {"runs": Ledger(unit, geom), "streams": Ledger(unit, geom)}
        self._rec_names = {l.name for l in self.model.recurrent_layers}
        # recurrent layers after a valid Conv1d skip the first `skip` frames of a stream
        # (undefined Conv outputs); after a strided Conv1d they, the Conv and every layer
        # after it run only at frames skip + k*every: charged only there (see _skipped)
        m = self.model
        self._rec_skip = {l.name: (m.delays.get(l.x, 0), m.strides.get(l.x, 1))
                          for l in m.recurrent_layers
                          if m.delays.get(l.x, 0) > 0 or m.strides.get(l.x, 1) > 1}
        self._rec_skip.update({l.name: (m.delays.get(l.y, 0), m.strides.get(l.y, 1))
                               for l in m.layers if not isinstance(l, ir.Recurrent)
                               and m.strides.get(l.y, 1) > 1})
        # the longest warm-up; after it, frames repeat with this period (strides' lcm)
        self._max_skip = max((sk for sk, _ in self._rec_skip.values()), default=0)
        self._period = int(np.lcm.reduce([ev for _, ev in self._rec_skip.values()] or [1]))
        # frames below this may be skipped by some layer (with a stride: every frame)
        self._gated = self._max_skip if self._period == 1 else 2 ** 62
        self._pending_skipped: dict[str, int] = {}   # single-stream warm-up steps not charged
        # Keras Masking: recurrent layers that hold their state at a masked frame (read no
        # crossbar, draw no noise) are not charged there. They are grouped by the mask they
        # read (its env column); a frame's *mask code* has bit g set when mask g is 0 on it
        groups: dict[str, list[str]] = {}
        for l in m.recurrent_layers:
            if l.mask:
                groups.setdefault(l.mask, []).append(l.name)
        #: env columns of the masks (None: no masked layer), and each mask's layers
        self._mask_cols = (np.array([self.plan.offsets[t] for t in groups], np.int64)
                           if groups else None)
        self._mask_col_list = [] if self._mask_cols is None else self._mask_cols.tolist()
        self._mask_layers = list(groups.values())
        self._mask_bits = 1 << np.arange(len(groups), dtype=np.int64)
        # what one stream-step (all K replicas) costs, by the frame's position in its stream:
        # frames in a valid Conv's warm-up skip the recurrent layers after it, and after a
        # strided Conv only every stride-th frame runs it and the layers after it
        # (docs/energy.md): positions 0 .. warm-up + period - 1, later ones repeat the period
        # and with masks: [position, mask code] (code 0: no mask is 0, what runs without one)
        self._frame_e_pJm, self._frame_lat_nsm = self._frame_prices(unit, geom)
        self._frame_e_pJ, self._frame_lat_ns = self._frame_e_pJm[:, 0], self._frame_lat_nsm[:, 0]
        # what a masked frame saves against an unmasked one at the same position
        self._mask_saved_pJ = self._frame_e_pJm[:, :1] - self._frame_e_pJm
        #: energy / latency of a stream-step once every layer runs (past any warm-up)
        self.step_energy_pJ: float = float(self._frame_e_pJ[self._max_skip])
        self.step_latency_ns: float = float(self._frame_lat_ns[self._max_skip])
        self._frame_e_cum = np.concatenate([[0.0], np.cumsum(self._frame_e_pJ)])
        t0 = self.model.outputs[0].tensor
        self._first_off = (self.plan.offsets[t0], self.plan.offsets[t0] + self.plan.widths[t0])
        #: the first output's name when it is one value per step (a regression or detection
        #: score, e.g. a speech probability): it has no classes, so ``Stream.last_class`` is
        #: None and ``predict`` needs a threshold
        self.value_output: str | None = (self.model.outputs[0].name
                                         if self.plan.widths[t0] == 1 else None)
        # the other outputs' env columns (the fused step_many reads them from each stream)
        self._more_outs = [(o.name, self.plan.offsets[o.tensor], self.plan.widths[o.tensor])
                           for o in self.model.outputs[1:]]

    def _frame_prices(self, unit, geom) -> tuple[np.ndarray, np.ndarray]:
        """Energy (pJ) and latency (ns) of one stream-step, all K replicas, at frame positions
        0 .. longest warm-up + one period (later frames repeat the period), for every mask
        code (``[positions, 2**masks]``; code 0: no mask is 0). Each is the ledger's pricing
        of exactly what runs on that frame (a recurrent layer in its warm-up, between strides
        or at a masked frame: no counts, no time), so a stream's per-frame figures add up to
        the ledger's for that stream: the pricing is linear in the counts, leakage included
        (leak power x the time of the layers that ran)."""
        from nvmstream.devices import energy as E
        k = self.votes
        held = [set(n for g, names in enumerate(self._mask_layers) if code >> g & 1
                    for n in names) for code in range(1 << len(self._mask_layers))]
        e = np.empty((self._max_skip + self._period, len(held)))
        lat = np.empty_like(e)
        for pos in range(e.shape[0]):
            for code, masked in enumerate(held):
                one = {}
                for n, c in unit.items():
                    sk, ev = self._rec_skip.get(n, (0, 1))
                    runs = k if _runs_at(pos, sk, ev) and n not in masked else 0
                    one[n] = c.scaled(runs)
                    one[n].steps, one[n].vote_replicas = runs, max(runs - 1, 0)
                rep = E.price(one, geom, self.device.profile, inferences=1,
                              steps_per_inference=1)
                e[pos, code] = rep.energy_pJ_per_inference
                lat[pos, code] = rep.latency_ns_per_inference
        return e, lat

    def _frame_index(self, pos):
        """Row of the per-frame price tables for frame ``pos`` (an int, or an int array):
        positions past the longest warm-up repeat the strides' period."""
        m, p = self._max_skip, self._period
        if isinstance(pos, np.ndarray):
            return np.where(pos < m, pos, m + (pos - m) % p)
        return pos if pos < m else m + (pos - m) % p

    def _mask_code(self, masked) -> int:
        code = int(masked)
        if code and not 0 < code < self._frame_e_pJm.shape[1]:
            raise ValueError(f"masked={masked!r}: this model has {len(self._mask_layers)} "
                             f"mask(s) (Keras Masking)" if self._mask_layers else
                             f"masked={masked!r}: this model has no mask (Keras Masking)")
        return code

    def frame_energy_pJ(self, pos: int, masked: bool | int = False) -> float:
        """Emulated device energy of a stream's frame ``pos`` (0-based; all replicas).

        ``masked``: the frame was masked (Keras Masking: the recurrent layers reading the mask
        held their state and are not charged); with several distinct masks, an int with bit
        g set when mask g was 0 (the order of ``model.recurrent_layers``' masks)."""
        return float(self._frame_e_pJm[self._frame_index(pos),
                                       self._mask_code(masked) if masked else 0])

    def frame_latency_ns(self, pos: int, masked: bool | int = False) -> float:
        """Emulated device latency of a stream's frame ``pos`` (0-based; all replicas;
        ``masked`` as in :meth:`frame_energy_pJ`)."""
        return float(self._frame_lat_nsm[self._frame_index(pos),
                                         self._mask_code(masked) if masked else 0])

    def stream_energy_pJ(self, frames: int, masked: Sequence | np.ndarray | None = None
                         ) -> float:
        """Emulated device energy of a stream's first ``frames`` frames; ``masked``: per frame
        (``frames`` values), whether it was masked (or its mask code, as in
        :meth:`frame_energy_pJ`); default none."""
        m, p = self._max_skip, self._period
        if frames <= m + p:
            e = float(self._frame_e_cum[frames])
        else:
            full, part = divmod(frames - m, p)
            per = self._frame_e_cum[m + p] - self._frame_e_cum[m]
            e = float(self._frame_e_cum[m] + full * per
                      + self._frame_e_cum[m + part] - self._frame_e_cum[m])
        if masked is not None:
            codes = np.asarray(masked).astype(np.int64).reshape(-1)
            if codes.shape != (frames,):
                raise ValueError(f"masked: expected {frames} values, got {codes.shape[0]}")
            at = np.flatnonzero(codes)
            for c in np.unique(codes[at]):
                self._mask_code(c)
            e -= float(self._mask_saved_pJ[self._frame_index(at), codes[at]].sum())
        return e

    # ------------------------------------------------------------------- masked frames
    def _masked_runs(self, env: np.ndarray, klens: np.ndarray) -> dict[str, int]:
        """Masked frames a recurrent layer did not run (and is not charged for) in whole runs:
        over each row's true length ``klens`` (rows of ``env`` include replicas), the frames
        where its mask is 0 and it would otherwise run (past a warm-up, on a stride)."""
        t = env.shape[1]
        pos = np.arange(t)
        valid = pos[None, :] < np.asarray(klens, np.int64)[:, None]
        out = {}
        for col, names in zip(self._mask_cols.tolist(), self._mask_layers):
            held = valid & (env[:, :, col] == 0.0)
            for n in names:
                sk, ev = self._rec_skip.get(n, (0, 1))
                out[n] = int((held & _runs_at(pos, sk, ev)[None, :]).sum())
        return out

    def _mask_frame(self, s: "Stream") -> None:
        """A single stream's step at frame ``s.steps`` (before it is counted) just ran: its
        mask code from the stream's env, the masked layers' steps not charged (folded in
        lazily, as warm-up steps are) and the energy the frame saved, on the stream."""
        env, code = s._env, 0
        for g, col in enumerate(self._mask_col_list):      # (scalar reads: ~0.1 us each)
            if env[0, 0, col] == 0.0:
                code |= 1 << g
        s._mcode = code
        if code:
            pos = s.steps
            for g, names in enumerate(self._mask_layers):
                if code >> g & 1:
                    for n in names:
                        if _runs_at(pos, *self._rec_skip.get(n, (0, 1))):
                            self._pending_skipped[n] = self._pending_skipped.get(n, 0) + 1
            s._saved_pJ += float(self._mask_saved_pJ[self._frame_index(pos), code])

    def _mask_batch(self, streams: Sequence["Stream"], env: np.ndarray,
                    skipped: dict[str, int] | None) -> dict[str, int] | None:
        """:meth:`_mask_frame` for a batched step of ``streams`` (``env`` rows: streams x
        votes, one frame; positions not yet counted): adds the masked layers' replica steps
        to ``skipped``."""
        k = self.votes
        held = env[::k, 0][:, self._mask_cols] == 0.0                # [streams, masks]
        codes = held.astype(np.int64) @ self._mask_bits
        if not codes.any():
            for s in streams:
                s._mcode = 0
            return skipped
        pos = np.array([s.steps for s in streams], np.int64)
        skipped = dict(skipped or {})
        for g, names in enumerate(self._mask_layers):
            for n in names:
                sk, ev = self._rec_skip.get(n, (0, 1))
                skipped[n] = skipped.get(n, 0) + k * int((held[:, g] & _runs_at(pos, sk, ev))
                                                          .sum())
        saved = self._mask_saved_pJ[self._frame_index(pos), codes]
        for s, c, v in zip(streams, codes.tolist(), saved.tolist()):
            s._mcode = c
            s._saved_pJ += v
        return skipped

    # ----------------------------------------------------------------------------- internals
    def _init_state(self, n: int, aux: Mapping[str, np.ndarray] | None = None,
                    rows: np.ndarray | None = None) -> np.ndarray:
        state = np.zeros((n, self.plan.state_width), np.float64)
        feeds = dict(aux or {})
        for layer, d, off in self.plan.state_slots:
            h = layer.hidden_size
            for init, base in ((layer.initial_h, off), (layer.initial_c, off + h)):
                if init is None:
                    continue
                v = init.read(feeds)
                if v is None:                                 # not given: zeros
                    continue
                v = np.asarray(v)[d]                          # [B0, H]
                idx = rows if rows is not None else np.arange(n)
                if v.shape[0] == 1:
                    state[:, base:base + h] = v[0]
                elif np.max(idx) < v.shape[0]:
                    state[:, base:base + h] = v[idx]
                else:
                    raise NvmInputError(f"initial state of layer {layer.name!r} holds "
                                        f"{v.shape[0]} rows; {n} streams given")
        return state

    def _rng(self, stream_seeds: Sequence[int]) -> np.ndarray:
        k, slots = self.votes, self.plan.rng_slots
        seeds = np.concatenate([_stream_seeds(self.device.seed, int(s), k, slots).reshape(-1)
                                for s in stream_seeds])
        st = np.empty((seeds.size, 4), np.uint64)
        K.seed_states(seeds, st)
        return st.reshape(len(stream_seeds) * k, slots, 4)

    def _exec(self, x_btf: np.ndarray, lens: np.ndarray, state: np.ndarray,
              rng: np.ndarray, srow: np.ndarray | None = None) -> np.ndarray:
        """x [N, T, F] (N = streams x votes rows) -> env [N, T, E]; row b's state and random
        states live in ``state[srow[b]]``/``rng[srow[b]]``."""
        n, t, f = x_btf.shape
        env = np.zeros((n, t, self.plan.env_width), np.float32)
        env[:, :, :f] = x_btf
        if srow is None:
            srow = np.arange(n, dtype=np.int64)
        per_row = t * (max(self.plan.pre_x, default=0) + self.plan.max_w + 1) * 4
        chunk = max(1, min(n, PRE_BYTES // per_row))
        for r0 in range(0, n, chunk):
            r1 = min(n, r0 + chunk)
            self._exec_rows(env[r0:r1], lens[r0:r1], state, rng, srow[r0:r1])
        return env

    def _routes(self) -> list[tuple]:
        """Per layer, what ``_exec_rows`` needs, decoded from the plan once: (index, opcode,
        input columns, BLAS segments fed by x, BLAS segments fed by h (or None: in-kernel),
        state columns, precomputed-product widths)."""
        plan = self.plan
        out = []
        for li in range(plan.layers.shape[0]):
            lay = plan.layers[li]
            op = int(lay["op"])
            s0, ns = int(lay["seg0"]), int(lay["nseg"])
            mine = [plan.segs[i] for i in range(s0, s0 + ns)]
            # BLAS only where every product is an exact float32 integer (static DAC codes,
            # float32 weights and variances, no IR-drop currents: BlasSegment.f32); other
            # layers run their products in-kernel
            bs = [K.BlasSegment(s, plan.w32, plan.w64) if int(s["dac_q"]) > 0 else None
                  for s in mine]
            blas = bool(mine) and all(b is not None and b.f32 for b in bs)
            xs = [b for s, b in zip(mine, bs) if blas and int(s["src"]) == LY.SRC_X]
            hs = [b for s, b in zip(mine, bs) if blas and int(s["src"]) == LY.SRC_H]
            out.append((li, op, slice(int(lay["x"]), int(lay["x"]) + int(lay["xw"])), xs,
                        hs if blas and plan.pre_h[li] else None,
                        slice(int(lay["state"]), int(lay["state"]) + int(lay["h"])),
                        plan.pre_x[li], plan.pre_h[li]))
        return out

    def _ws(self, key: str, shape: tuple, dtype=np.float32) -> np.ndarray:
        """A reusable work buffer (contents undefined): the batched path allocates nothing per
        call once its shapes have been seen. At most :data:`WS_ENTRIES` buffers are kept."""
        k = (key, shape, dtype)
        a = self._work.get(k)
        if a is None:
            if len(self._work) >= WS_ENTRIES:
                self._work.clear()
            a = self._work[k] = np.empty(shape, dtype)
        return a

    def _arange(self, n: int) -> np.ndarray:
        a = self._work.get(("arange", n))
        if a is None:
            a = self._work[("arange", n)] = np.arange(n, dtype=np.int64)
        return a

    def _blas(self, segs, X: np.ndarray, rows: np.ndarray, x0: int, out: np.ndarray) -> None:
        """Tile products of ``X[rows, x0:]`` for every BLAS segment in ``segs`` into ``out``."""
        r = rows.shape[0]
        for b in segs:
            U = self._ws("U", (r, b.n_in))
            U2 = self._ws("U2", (r, b.n_in)) if b.var is not None else U
            b.run_rows(X, rows, x0, out, U, U2)

    def _exec_rows(self, env: np.ndarray, lens: np.ndarray, state: np.ndarray,
                   rng: np.ndarray, srow: np.ndarray) -> None:
        plan = self.plan
        layers, segs, w32, w64, pf = plan.layers, plan.segs, plan.w32, plan.w64, plan.pf
        scr = self._scratch
        n, t, e = env.shape
        none = self._none
        flat = env.reshape(n * t, e)
        for li, op, xcols, xsegs, hsegs, hcols, wx, wh in self._route:
            if op == LY.OP_WINDOW:
                K.run_window(layers, li, env, state, srow)
                continue
            if op >= LY.OP_LAYERNORM:            # digital periphery (kernels/digital.py)
                K.run_periphery(layers, li, env, pf)
                continue
            if op not in (LY.OP_DENSE, LY.OP_LSTM, LY.OP_GRU, LY.OP_RNN):
                K.run_digital(layers, li, env, pf, scr)
                continue
            pre_x, xpre = none, False
            if xsegs:
                pre_x = self._ws("pre_x", (n * t, wx))
                self._blas(xsegs, flat, self._arange(n * t), xcols.start, pre_x)
                xpre = True
            if op == LY.OP_DENSE:
                K.run_dense(layers, li, segs, w32, w64, pf, env, rng, srow, pre_x, xpre, scr)
                continue
            if hsegs is not None and n >= BLAS_MIN_ROWS:
                pre_h = self._ws("pre_h", (n, wh))
                last = int(lens.max(initial=0))
                for k in range(last):
                    self._blas(hsegs, state, srow, hcols.start, pre_h)
                    K.run_recurrent(layers, li, segs, w32, w64, pf, env, lens, state, rng,
                                    srow, k, k + 1, pre_x, xpre, pre_h, True, scr)
                if last < t:                          # rows past their length: zeros
                    K.run_recurrent(layers, li, segs, w32, w64, pf, env, lens, state, rng,
                                    srow, last, t, pre_x, xpre, none, False, scr)
            else:
                K.run_recurrent(layers, li, segs, w32, w64, pf, env, lens, state, rng, srow,
                                0, t, pre_x, xpre, none, False, scr)

    # ----------------------------------------------------------------------- stream pool
    def _alloc_rows(self) -> int:
        """K consecutive rows of the stream pool (state + random states) for a new stream."""
        k = self.votes
        if not self._free:
            cap = self._pool_state.shape[0]
            new = max(16, cap) // k * k or k
            self._pool_state = np.concatenate(
                [self._pool_state, np.zeros((new, self.plan.state_width))])
            self._pool_rng = np.concatenate(
                [self._pool_rng, np.zeros((new, self.plan.rng_slots, 4), np.uint64)])
            self._free.extend(range(cap, cap + new, k))
            self._pool_gen += 1
        return self._free.pop()

    def _release_rows(self, row0: int) -> None:
        self._free.append(row0)

    def _tensor(self, env: np.ndarray, name: str) -> np.ndarray:
        o, w = self.plan.offsets[name], self.plan.widths[name]
        return env[:, :, o:o + w]

    def _check_x(self, x) -> tuple[np.ndarray, bool]:
        x = np.asarray(x)
        if x.dtype != np.float32:
            if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
                raise NvmInputError(f"input: dtype {x.dtype} is not numeric")
            x = x.astype(np.float32)
        squeeze = x.ndim == 2
        if squeeze:
            x = x[None]
        f = self.model.input.features
        if x.ndim != 3 or x.shape[2] != f:
            raise NvmInputError(f"input: expected [batch, time, {f}] or [time, {f}], got shape "
                                f"{x.shape if not squeeze else x.shape[1:]}")
        if x.shape[1] == 0:
            raise NvmInputError("input: sequence has no time steps")
        if not np.all(np.isfinite(x)):
            raise NvmInputError("input: contains NaN or infinity")
        return np.ascontiguousarray(x), squeeze

    # --------------------------------------------------------------------------- whole runs
    def run_all(self, x: np.ndarray, *, seed: int = 0, lens: np.ndarray | None = None,
                **aux: np.ndarray) -> dict[str, np.ndarray]:
        """Run ``x[B, T, F]`` (or ``[T, F]``); every output per step ``[B, T, F_out]`` (causal
        models) or in ONNX form, batch first (non-causal), averaged over votes."""
        x, squeeze = self._check_x(x)
        b, t, _ = x.shape
        k = self.votes
        self.model._check_aux({self.model.input.name: x, **aux}, b)
        seq_lens = None
        if lens is None:
            for a in self.model.aux_inputs:
                if a.role == "sequence_lens" and a.name in aux:
                    lens = aux[a.name]
            for l in self.model.recurrent_layers:
                if l.sequence_lens_value is not None:
                    lens = l.sequence_lens_value
        if lens is not None:
            seq_lens = np.asarray(lens, np.int64).reshape(-1)
            if seq_lens.shape != (b,) or np.any(seq_lens < 1) or np.any(seq_lens > t):
                raise NvmInputError(f"sequence lengths must be {b} values in 1..{t}, got "
                                    f"{seq_lens.tolist()}")
        klens = np.repeat(seq_lens if seq_lens is not None else np.full(b, t, np.int64), k)
        xr = np.repeat(x, k, axis=0) if k > 1 else x
        rows = np.repeat(np.arange(b), k)
        state = self._init_state(b * k, aux, rows)
        rng = self._rng([seed + i for i in range(b)])
        env = self._exec(xr, klens, state, rng)
        # one definition of "per inference": only a sequence's true steps are charged (the
        # kernel may compute a head on padded steps; no chip would)
        self._account(rec_steps=int(klens.sum()), all_steps=int(klens.sum()), inferences=b,
                      stream_steps=int(klens.sum()) // k, skipped=self._skipped(klens, env))
        out = {}
        for o in self.model.outputs:
            a = self._tensor(env, o.tensor)
            if k > 1:
                a = a.reshape(b, k, t, -1).mean(axis=1, dtype=np.float64).astype(np.float32)
            if not self.model.causal:
                a = ir._format_output(o, np.ascontiguousarray(ir.onnx_steps(o, a)), seq_lens)
                if "T" in o.axes and o.axes.index("T") == 0 and o.axes.index("B") == 1:
                    a = np.swapaxes(a, 0, 1)
            out[o.name] = a[0] if squeeze else a
        self._last_env = env
        return out

    def run(self, x: np.ndarray, **kw) -> np.ndarray:
        """The first model output per step (see :meth:`run_all`)."""
        return self.run_all(x, **kw)[self._out_names[0]]

    def predict(self, x: np.ndarray, *, seed: int = 0, lens: np.ndarray | None = None,
                threshold: float | None = None) -> np.ndarray:
        """Majority class per step over the votes: int64 ``[B, T]`` (first output).

        ``seed``: row b uses stream seed ``seed + b`` (default 0).
        ``lens``: true sequence lengths ``[B]`` (1..T); steps past a sequence's length are
        neither run nor charged (their outputs are zero, as ONNX's ``sequence_lens``; read a
        sequence's class at step ``lens - 1``).
        ``threshold``: for a first output of one value per step (:attr:`value_output`) only,
        and required there: the step's class is 1 where the value is above it (0.5 for a
        probability, 0.0 for a logit), each vote's class counted (ties: the mean value)."""
        if (threshold is None) != (self.value_output is None):
            first = self.model.outputs[0]
            raise NvmInputError(
                f"threshold: the first output {first.name!r} is one value per step, not class "
                f"scores: pass a threshold to read it as a binary classifier (0.5 for a "
                f"probability, 0.0 for a logit), or use run" if threshold is None else
                f"threshold: the first output {first.name!r} has {first.features} class scores "
                f"per step; a threshold applies to one-value outputs only")
        if threshold is not None and not np.isfinite(threshold):
            raise NvmInputError(f"threshold: must be a finite number, got {threshold}")
        x, squeeze = self._check_x(x)
        b, t, _ = x.shape
        k = self.votes
        klens = np.full(b * k, t, np.int64)
        if lens is not None:
            seq = np.asarray(lens, np.int64).reshape(-1)
            if seq.shape != (b,) or np.any(seq < 1) or np.any(seq > t):
                raise NvmInputError(f"sequence lengths must be {b} values in 1..{t}, got "
                                    f"{seq.tolist()}")
            klens = np.repeat(seq, k)
        xr = np.repeat(x, k, axis=0) if k > 1 else x
        state = self._init_state(b * k, None, np.repeat(np.arange(b), k))
        env = self._exec(xr, klens, state, self._rng([seed + i for i in range(b)]))
        n = int(klens.sum())
        self._account(rec_steps=n, all_steps=n, inferences=b, stream_steps=n // k,
                      skipped=self._skipped(klens, env))
        a = self._tensor(env, self.model.outputs[0].tensor).reshape(b, k, t, -1)
        if threshold is not None:       # scores [0, y - threshold]: class 1 above it
            a = np.concatenate([np.zeros_like(a), a - np.float32(threshold)], axis=3)
        cls = majority(a)
        return cls[0] if squeeze else cls

    # ------------------------------------------------------------------------------- energy
    def _skipped(self, klens: np.ndarray, env: np.ndarray) -> dict[str, int]:
        """Steps per layer not run, not charged, among whole sequences of ``klens`` steps (one
        per row, replicas included) that ran into ``env``: a valid Conv1d's warm-up, the
        frames between strides, and a recurrent layer's masked frames."""
        out = {n: int((klens - _frames_run(klens, sk, ev)).sum())
               for n, (sk, ev) in self._rec_skip.items()}
        if self._mask_cols is not None:
            for n, v in self._masked_runs(env, klens).items():
                out[n] = out.get(n, 0) + v
        return out

    def _account(self, rec_steps: int, all_steps: int, inferences: int,
                 stream_steps: int, source: str = "runs",
                 skipped: Mapping[str, int] | None = None) -> None:
        k = self.votes
        steps = {n: (rec_steps if n in self._rec_names else all_steps) - (skipped or {}).get(n, 0)
                 for n in self._ledgers["runs"].unit}
        reps = {n: v * (k - 1) // k for n, v in steps.items()}
        self._ledgers[source].add(steps, reps, inferences, stream_steps)

    @property
    def ledger(self) -> Ledger:
        """The operation ledger: stream-steps per layer since the last reset, runs and streams
        summed (a snapshot)."""
        self._flush_stream_steps()
        return Ledger.merged(list(self._ledgers.values()))

    def _skip_pending(self, pos: int) -> None:
        """A single stream's step at frame ``pos`` (< the longest warm-up): the recurrent
        layers still in their warm-up are not charged for it (folded in lazily)."""
        for name, (sk, ev) in self._rec_skip.items():
            if not _runs_at(pos, sk, ev):
                self._pending_skipped[name] = self._pending_skipped.get(name, 0) + 1

    def _flush_stream_steps(self) -> None:
        """Fold the single-stream steps counted cheaply by ``Stream.step`` into the ledger."""
        n, new = self._pending_steps, self._pending_new
        if n or new:
            self._pending_steps = self._pending_new = 0
            k = self.votes
            skipped = {name: v * k for name, v in self._pending_skipped.items()}
            self._pending_skipped = {}
            self._account(rec_steps=n * k, all_steps=n * k, inferences=new, stream_steps=n,
                          source="streams", skipped=skipped)

    def report(self, source: str | None = None) -> InferenceReport:
        """Energy, latency and area since the last ``reset_ledger()``: per inference (a
        sequence at its true length, or a stream) and per step, by component (leakage
        included) and layer (with its latency bottleneck), against the int4/int8/fp16/fp32
        digital baselines (weights from SRAM/DRAM, alone and batch-shared) on the same counts,
        with the strongest as the verdict; this engine's votes are charged.

        ``source``: ``"runs"`` (whole sequences: run/run_all/predict), ``"streams"``
        (frame-by-frame: stream/step_many) or None for everything. When both kinds ran, the
        None report still covers both, its ``sources`` say how many of each, its text says
        that per-inference figures average over the two, and a warning is logged: ask for
        one source to see them apart."""
        self._flush_stream_steps()
        if source is None:
            led = Ledger.merged(list(self._ledgers.values()))
        elif source in self._ledgers:
            led = self._ledgers[source]
            if led.inferences == 0:
                raise ValueError(f"no {source} on this engine since the last reset_ledger()")
        else:
            raise ValueError(f"source must be 'runs', 'streams' or None, got {source!r}")
        sources = {k: (l.inferences, l.stream_steps) for k, l in self._ledgers.items()
                   if l.inferences}
        if source is None and len(sources) > 1:
            log.warning("report(): %d sequence run(s) and %d stream(s) are priced together; "
                        "per-inference figures average over both (report('runs') or "
                        "report('streams') shows them apart)", sources["runs"][0],
                        sources["streams"][0])
        r = make_report(led, self.device.profile, self.plan,
                        self.device.profile.weights.bits, votes=self.votes)
        return dataclasses.replace(r, sources=sources if source is None else
                                   {source: sources[source]})

    def reset_ledger(self) -> None:
        """Forget the counts so far: the next :meth:`report` covers only what runs after."""
        self._pending_steps = self._pending_new = 0
        self._pending_skipped = {}
        for led in self._ledgers.values():
            led.reset()

    # ------------------------------------------------------------------------------ streams
    def stream(self, seed: int | None = None, **aux: np.ndarray) -> "Stream":
        """A new stateful stream (one frame at a time). Needs a causal model.

        ``seed``: its stream seed (default: 0, 1, 2, ... in order of creation); ``aux``:
        initial states by ONNX input name. ``Stream.step(x_t [F])`` returns the first output
        for that frame; ``Stream.close()`` frees its slot."""
        reason = self.model.why_not_streamable()
        if reason:
            raise NvmInputError(f"model cannot stream: {reason}")
        if seed is None:
            seed = self._next_stream
            self._next_stream += 1
        return Stream(self, int(seed), aux)

    def _step_fused(self, streams: Sequence["Stream"], frames: np.ndarray
                    ) -> dict[str, np.ndarray]:
        """:meth:`step_many_all` for few streams: each stream's fused step in turn (what
        ``Stream.step`` runs), the frames checked first so that a bad one leaves every stream
        untouched, the counters folded into the ledger lazily as ``Stream.step`` does."""
        x = np.asarray(frames)
        if x.dtype != np.float32:
            x, _ = self._check_x(x[:, None, :])
            x = x[:, 0]
        n, k = len(streams), self.votes
        if n > 1 and not np.isfinite(x).all():
            raise NvmInputError("input: contains NaN or infinity")
        o0, o1 = self._first_off
        first = np.empty((n, o1 - o0), np.float32)
        for i, s in enumerate(streams):
            best = s._advance(x[i], first[i])
            if best < 0:                      # (n == 1: nothing ran)
                raise NvmInputError("input: contains NaN or infinity")
            s._count_rare(best, s.steps, x[i])   # Stream.step's counting, every case
        out = {self._out_names[0]: first}
        for name, off, w in self._more_outs:
            a = np.empty((n, w), np.float32)
            for i, s in enumerate(streams):
                v = s._env[:, 0, off:off + w]
                a[i] = v[0] if k == 1 else v.mean(axis=0, dtype=np.float64)
            out[name] = a
        return out

    def step_many(self, streams: Sequence["Stream"], frames: np.ndarray) -> np.ndarray:
        """One step of many streams at once: ``frames[N, F]`` -> first output ``[N, F_out]``.

        Equal to calling each stream's ``step`` in turn (each stream has its own state and
        random states)."""
        outs = self.step_many_all(streams, frames)
        return outs[self._out_names[0]]

    def step_many_all(self, streams: Sequence["Stream"], frames: np.ndarray
                      ) -> dict[str, np.ndarray]:
        """One step of many streams: ``frames[N, F]`` -> every output, name -> ``[N, F_out]``
        (averaged over votes). Equal to each stream's ``step_all`` in turn."""
        n = len(streams)
        frames = np.asarray(frames)
        f = self.model.input.features
        if frames.ndim == 1 and n == 1:
            frames = frames[None]
        if frames.shape != (n, f):
            raise NvmInputError(f"frames: expected shape ({n}, {f}), got {frames.shape}")
        for s in streams:
            if s.engine is not self or s.closed:
                raise NvmInputError(f"stream {s.seed} belongs to another engine"
                                    if s.engine is not self else f"stream {s.seed} is closed")
        k = self.votes
        if n * k < FUSED_MAX_ROWS:
            return self._step_fused(streams, frames)
        x, _ = self._check_x(frames[:, None, :])
        row0 = np.array([s._row0 for s in streams], np.int64)
        srow = (row0[:, None] + np.arange(k)).reshape(-1) if k > 1 else row0
        xr = np.repeat(x, k, axis=0) if k > 1 else x
        env = self._exec(xr, np.ones(n * k, np.int64), self._pool_state, self._pool_rng, srow)
        new = 0
        skipped = None
        if self._gated:                        # streams in a valid Conv's warm-up, strides
            pos = np.array([s.steps for s in streams], np.int64)
            if pos.min() < self._gated:
                skipped = {name: k * int((~_runs_at(pos, sk, ev)).sum())
                           for name, (sk, ev) in self._rec_skip.items()}
        if self._mask_cols is not None:        # masked frames: their held layers not charged
            skipped = self._mask_batch(streams, env, skipped)
        for s in streams:
            new += s.steps == 0
            s.steps += 1
        self._account(rec_steps=n * k, all_steps=n * k, inferences=new, stream_steps=n,
                      source="streams", skipped=skipped)
        out = {}
        for o in self.model.outputs:
            a = self._tensor(env, o.tensor)[:, 0]
            if k > 1:
                reps = a.reshape(n, k, -1)
                if o.name == self._out_names[0]:
                    cls = majority(reps[:, :, None, :])[:, 0]
                    for i, s in enumerate(streams):
                        s._cls = int(cls[i])
                a = reps.mean(axis=1, dtype=np.float64).astype(np.float32)
            elif o.name == self._out_names[0]:
                for s, c in zip(streams, np.argmax(a, axis=1).tolist()):
                    s._cls = c
            out[o.name] = a
        return out


def majority(reps: np.ndarray) -> np.ndarray:
    """``reps[B, K, T, C]`` -> majority class ``[B, T]`` over K (ties: higher mean output)."""
    b, k, t, c = reps.shape
    winners = np.argmax(reps, axis=3)                         # [B, K, T]
    counts = np.zeros((b, t, c), np.int64)
    for r in range(k):
        np.add.at(counts, (np.arange(b)[:, None], np.arange(t)[None, :], winners[:, r]), 1)
    mean = reps.mean(axis=1)                                  # [B, T, C]
    best = counts.max(axis=2, keepdims=True)
    score = np.where(counts == best, mean, -np.inf)
    return np.argmax(score, axis=2)


class Stream:
    """One stream's state on an engine: ``step(x_t[F]) -> y_t[F_out]``."""

    def __repr__(self) -> str:
        return (f"Stream(seed {getattr(self, 'seed', '?')}, profile "
                f"{self.engine.device.profile.name!r})")

    def __init__(self, engine: Engine, seed: int, aux: Mapping[str, np.ndarray]):
        self.engine = engine
        self.seed = seed
        k = engine.votes
        self._row0 = engine._alloc_rows()
        self._rows = np.arange(self._row0, self._row0 + k, dtype=np.int64)
        engine._pool_state[self._rows] = engine._init_state(k, aux, np.zeros(k, np.int64))
        engine._pool_rng[self._rows] = engine._rng([seed])
        self.steps = 0
        self.closed = False
        self._cls: int | None = None      # the last frame's class (see last_class)
        self._mcode = 0            # the last frame's mask code (Engine.frame_energy_pJ)
        self._saved_pJ = 0.0       # what its masked frames saved (Engine._mask_frame)
        self._env = np.zeros((k, 1, engine.plan.env_width), np.float32)
        self._ones = np.ones(k, np.int64)
        self._scratch = K.scratch(engine.plan.layers, engine.plan.segs, engine.plan.max_w)
        self._k = k
        o0, o1 = engine._first_off
        self._nout = o1 - o0
        # below this frame Stream.step counts a new inference or a warm-up / strided frame;
        # with votes or a mask input it always takes the slow count
        self._watch = max(1, engine._gated)
        self._rare = k > 1 or engine._mask_cols is not None
        self._pack()

    def _pack(self) -> None:
        """Pack the fused step's arguments (again after the engine's pool grew)."""
        eng, plan = self.engine, self.engine.plan
        o0, o1 = eng._first_off
        if self.closed:
            raise NvmInputError(f"frame {self.steps}: stream {self.seed} is closed")
        self._args = K.pack_step(plan.layers, plan.segs, plan.w32, plan.w64, plan.pf, self._env,
                                 self._ones, eng._pool_state, eng._pool_rng, self._rows,
                                 self._scratch, eng._frame_shape[0], o0, o1)
        self._gen = eng._pool_gen
        if eng._step_fn is None:
            # the compiled overload for exactly these argument types, called directly: numba's
            # dispatcher would re-derive the argument types on every frame. The types never
            # change: the packed arguments are built the same way for every stream, the frame
            # is a float32 vector of any stride (the kernel checks its length) and ``out`` a
            # contiguous float32 vector (the callers')
            eng._step_fn = K.compiled(K.stream_step_packed,
                                      (self._args, K.ANY_STRIDE_F32, np.zeros(1, np.float32)))

    # emulated device energy / latency of what ran on each frame (Engine.frame_energy_pJ,
    # masked frames included): summed over a stream, the ledger's figure for it
    @property
    def last_energy_pJ(self) -> float:
        """Emulated device energy of the last step (0 before the first)."""
        return self.engine.frame_energy_pJ(self.steps - 1, self._mcode) if self.steps else 0.0

    @property
    def last_latency_ns(self) -> float:
        """Emulated device latency of the last step (0 before the first)."""
        return self.engine.frame_latency_ns(self.steps - 1, self._mcode) if self.steps else 0.0

    @property
    def last_masked(self) -> bool:
        """Whether the last step was a masked frame (Keras Masking: the recurrent layers
        reading the mask held their state)."""
        return self._mcode != 0

    @property
    def energy_pJ(self) -> float:
        """Emulated device energy over this stream's steps."""
        return self.engine.stream_energy_pJ(self.steps) - self._saved_pJ

    def _advance(self, x_t: np.ndarray, out: np.ndarray) -> int:
        """Run one frame (float32 ``[F]``, any stride, checked shape) on the fused route: the
        first output's mean into ``out``, its argmax returned; -1 if the frame is not finite
        (nothing ran). Every output stays in ``self._env``. No ledger, no counters."""
        eng = self.engine
        if self._gen != eng._pool_gen:
            self._pack()
        return eng._step_fn(self._args, x_t, out)

    def step(self, x_t: np.ndarray) -> np.ndarray:
        """Feed one frame ``[F]``; returns the first output for this step ``[F_out]``."""
        # the hot path, spelled out because each Python operation here is a measurable share
        # of a ~10 us step: a float32 vector (any stride) goes straight to the kernel, which
        # checks its length and finiteness; anything else takes :meth:`_frame` (converts or
        # raises). A reallocated pool or a closed stream (``_gen`` -1) goes through
        # :meth:`_pack` (repacks or raises). Counting is one branch in steady state; the
        # first frames, warm-ups, masks and votes take :meth:`_count_rare`
        if x_t.__class__ is not _NDARRAY or x_t.dtype is not _F32 or x_t.ndim != 1:
            x_t = self._frame(x_t)
        eng = self.engine
        if self._gen != eng._pool_gen:
            self._pack()
        out = _empty(self._nout, _F32)
        best = eng._step_fn(self._args, x_t, out)
        s = self.steps
        if best < 0 or s < self._watch or self._rare:
            self._count_rare(best, s, x_t)
        else:
            eng._pending_steps += 1
            self.steps = s + 1
            self._cls = best
        return out

    def _count_rare(self, best: int, s: int, x_t: np.ndarray) -> None:
        """Count the frame ``s`` that just ran, in every case (a first frame, a warm-up or
        stride, a mask, votes), or raise its one-line error (nothing ran): :meth:`step` off its
        steady state, and ``Engine._step_fused`` for each stream."""
        eng = self.engine
        if best == -2:                          # the kernel's length check: _frame's error
            self._frame(x_t)
        if best < 0:
            raise NvmInputError(f"frame {s}: contains NaN or infinity")
        eng._pending_steps += 1
        if s == 0:                              # a new inference
            eng._pending_new += 1
        if s < eng._gated:                      # a valid Conv's warm-up, a stride: not charged
            eng._skip_pending(s)
        if eng._mask_cols is not None:          # a masked frame: its held layers not charged
            eng._mask_frame(self)               # (reads self.steps: before it is advanced)
        self.steps = s + 1
        if self._k > 1:
            o0, o1 = eng._first_off
            self._cls = int(majority(self._env[None, :, :, o0:o1])[0, 0])
        else:
            self._cls = best

    def _frame(self, x_t) -> np.ndarray:
        """:meth:`step`'s frame as a float32 vector, or the one-line error."""
        x_t = np.asarray(x_t, dtype=np.float32)
        if x_t.shape != self.engine._frame_shape:
            raise NvmInputError(f"frame {self.steps}: expected shape {self.engine._frame_shape}, "
                                f"got {x_t.shape}")
        return x_t

    @property
    def last_class(self) -> int | None:
        """The last frame's class (the first output's argmax; with votes the majority, ties
        to the higher mean); None before the first frame, and for a model whose first output
        is one value per step (:attr:`Engine.value_output`: no classes)."""
        return None if self.engine.value_output is not None else self._cls

    def step_all(self, x_t: np.ndarray) -> dict[str, np.ndarray]:
        """Feed one frame ``[F]``; returns every output for this step, name -> ``[F_out]``."""
        return {k: v[0] for k, v in self.engine.step_many_all([self], np.asarray(x_t)[None]).items()}

    @property
    def state(self) -> np.ndarray:
        """This stream's recurrent state rows (a copy), [votes, state width]."""
        return self.engine._pool_state[self._rows].copy()

    def close(self) -> None:
        """End the stream and give its rows back to the engine's pool."""
        if not self.closed:
            self.closed = True
            self._gen = -1                      # Stream.step: to _pack, which raises
            self.engine._release_rows(self._row0)

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
