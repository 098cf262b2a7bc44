"""Slow, obvious numpy twins of the engine's kernels (stumpy-style), for differential tests.

``int_twin`` runs a CompiledModel's integer path -- DAC codes, integer tile partial sums
(int64), ADC codes, digital accumulation, scaling, bias, gates -- with plain numpy and Python's
math module, in the same float64 operation order the kernel documents, so a noise-free profile
must match the engine bit for bit. ``vmm`` composes the ``apply`` methods of the periphery
stages (nvmstream.devices.periphery) in the documented order; given a random state it draws the
same normals as the kernel (runtime/kernels/rng.py), so it matches noisy segments bit for bit
as well.
"""

from __future__ import annotations

import math

import numpy as np

from nvmstream.converters import ir


def fexp(x: np.ndarray) -> np.ndarray:
    """The kernels' exp: clamp to +-40, degree-12 Taylor polynomial of x/128 by Estrin's
    scheme, squared 7 times (the same float64 operations in the same order)."""
    import math
    c = [1.0 / math.factorial(k) for k in range(13)]
    x = np.minimum(np.maximum(np.asarray(x, np.float64), -40.0), 40.0)
    y = x * 0.0078125
    y2 = y * y
    y4 = y2 * y2
    y8 = y4 * y4
    r0 = (c[0] + c[1] * y) + (c[2] + c[3] * y) * y2
    r1 = (c[4] + c[5] * y) + (c[6] + c[7] * y) * y2
    r2 = (c[8] + c[9] * y) + (c[10] + c[11] * y) * y2
    p = (r0 + r1 * y4) + (r2 + c[12] * y4) * y8
    for _ in range(7):
        p = p * p
    return p


def _sig(v):
    return 1.0 / (1.0 + fexp(-v))


def _tanh(v):
    return 1.0 - 2.0 / (1.0 + fexp(2.0 * v))


ACT = {"sigmoid": lambda v, a, b: _sig(v), "tanh": lambda v, a, b: _tanh(v),
       "relu": lambda v, a, b: np.where(v > 0, v, 0.0)}


def _act(fn, v: np.ndarray, clip=None) -> np.ndarray:
    v = np.asarray(v, np.float64)
    if clip is not None:
        v = np.minimum(np.maximum(v, -clip), clip)
    return np.asarray(ACT[fn.name](v, fn.alpha, fn.beta), np.float64)


def vmm(seg, v: np.ndarray, state: np.ndarray | None = None) -> np.ndarray:
    """One crossbar matrix (a plan's SegmentInfo) on float64 input ``v`` -> float64
    contribution (model units): DAC -> tile products -> read noise -> IR drop -> VMM noise (before
    the ADC) -> ADC -> sum over tiles ->
    scales x digital drift compensation -> VMM noise. ``state``: the xoshiro state noisy stages draw from."""
    from nvmstream.runtime.kernels import normals
    u = seg.dac.apply(v)
    q = np.zeros(seg.n_out)
    for blk in range(seg.row_tiles):
        rows = slice(blk * seg.tile_rows, min(seg.n_in, (blk + 1) * seg.tile_rows))
        p = seg.w_eff[:, rows].astype(np.float64) @ u[rows]        # exact on the plan's grid
        if seg.read.on:
            p = seg.read.apply(p, seg.read.column_variance(u, rows), normals(state, seg.n_out))
        if seg.ir is not None and seg.ir.on:
            p = seg.ir.apply(p, seg.ir.current(u, rows), blk)
        if seg.vmm.before_adc:
            p = seg.vmm.apply_analog(p, seg.vmm_code_sigmas, normals(state, seg.n_out))
        g = normals(state, seg.n_out) if seg.adc.bits and seg.adc.noise_lsb > 0 else None
        q = q + seg.adc.apply(p, blk, g)
    z = q * seg.comp.apply(seg.scales) * seg.dac.output_scale(v)   # digital gain after the ADC
    after = seg.vmm.on and not seg.vmm.before_adc
    return seg.vmm.apply(z, normals(state, seg.n_out) if after else None)


def int_twin(model: ir.Model, segments: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``x[B, T, F]`` (causal models) through the integer twin; per-step outputs."""
    b_, t_, _ = x.shape
    env: dict[str, np.ndarray] = {model.input.name: x.astype(np.float32)}
    delays = model.delays
    for k, l in enumerate(model.layers):
        if isinstance(l, ir.Recurrent):
            assert l.direction == "forward"
            h_ = l.hidden_size
            y = np.zeros((b_, t_, h_), np.float32)
            cs = np.zeros((b_, t_, h_), np.float32)       # LSTM cell state per step
            for b in range(b_):
                h = np.zeros(h_)
                c = np.zeros(h_)
                every = model.strides.get(l.x, 1)
                for t in range(delays.get(l.x, 0), t_):   # a valid Conv's undefined steps
                    if (l.mask and env[l.mask][b, t, 0] == 0) or \
                            (t - delays.get(l.x, 0)) % every:  # masked, or between two
                        # strided Conv outputs: state held, the held state is the output
                        y[b, t] = h.astype(np.float32)
                        cs[b, t] = np.asarray(c, np.float32)
                        continue
                    xv = env[l.x][b, t].astype(np.float64)
                    zx = vmm(segments[f"layer{k}/d0/x"], xv)
                    if l.kind == "LSTM":
                        zh = vmm(segments[f"layer{k}/d0/h"], h)
                        bias = l.Wb[0].astype(np.float64) + l.Rb[0].astype(np.float64)
                        z = zx + zh + bias
                        a = l.activations[0]
                        gi, go, gf, gc = (z[l.gate_slice(n)] for n in "iofc")
                        i = _act(a[0], gi, l.clip)
                        o = _act(a[0], go, l.clip)
                        f = _act(a[0], gf, l.clip)
                        g = _act(a[1], gc, l.clip)
                        c = f * c + i * g
                        h = o * _act(a[2], c)
                    elif l.kind == "GRU":
                        wb, rb = l.Wb[0].astype(np.float64), l.Rb[0].astype(np.float64)
                        a = l.activations[0]
                        zs, rs, hs = (l.gate_slice(n) for n in "zrh")
                        zh = vmm(segments[f"layer{k}/d0/h"], h)
                        zz = _act(a[0], zx[zs] + wb[zs] + zh[zs] + rb[zs], l.clip)
                        r = _act(a[0], zx[rs] + wb[rs] + zh[rs] + rb[rs], l.clip)
                        if l.linear_before_reset:
                            hh = _act(a[1], zx[hs] + wb[hs] + r * (zh[hs] + rb[hs]), l.clip)
                        else:
                            zr = vmm(segments[f"layer{k}/d0/rh"], r * h)
                            hh = _act(a[1], zx[hs] + wb[hs] + zr + rb[hs], l.clip)
                        h = (1.0 - zz) * hh + zz * h
                    else:
                        zh = vmm(segments[f"layer{k}/d0/h"], h)
                        bias = l.Wb[0].astype(np.float64) + l.Rb[0].astype(np.float64)
                        h = _act(l.activations[0][0], zx + zh + bias, l.clip)
                    y[b, t] = h.astype(np.float32)
                    cs[b, t] = np.asarray(c, np.float32)
            env[l.y] = y
            if l.c:
                env[l.c] = cs
        elif isinstance(l, ir.Dense):
            seg = segments.get(f"layer{k}/d0/x")
            xin = env[l.x].astype(np.float64)
            out = np.zeros(xin.shape[:2] + (l.out_features,), np.float32)
            for b in range(b_):
                for t in range(t_):
                    z = vmm(seg, xin[b, t]) if seg is not None else xin[b, t]
                    if l.b is not None:
                        z = z + l.b.astype(np.float64)
                    out[b, t] = z.astype(np.float32)
            env[l.y] = out
        elif isinstance(l, ir.Conv1d):
            # im2col by hand: the K frames t-(K-1)d .. t (zeros before the input's first
            # defined frame), tap-major,
            # through the kernel unrolled to [O, K*C]
            seg = segments[f"layer{k}/d0/x"]
            xin = env[l.x].astype(np.float64)
            out = np.zeros(xin.shape[:2] + (l.out_features,), np.float32)
            for b in range(b_):
                for t in range(t_):
                    win = []
                    for j in range(l.taps):
                        src = t - (l.taps - 1 - j) * l.dilation
                        defined = src >= delays.get(l.x, 0)    # ONNX zero padding
                        win.append(xin[b, src] if defined else np.zeros(l.channels))
                    z = vmm(seg, np.concatenate(win))
                    if l.b is not None:
                        z = z + l.b.astype(np.float64)
                    out[b, t] = z.astype(np.float32)
            env[l.y] = out
        elif isinstance(l, ir.FrameConv):
            # im2col within the frame by hand: output position p reads x[c, p*stride +
            # j*dilation - pad_begin] (zero outside the frame), tap-major, through [O, K*C]
            seg = segments[f"layer{k}/d0/x"]
            xin = env[l.x].astype(np.float64)
            P, O, C = l.out_positions, l.out_channels, l.channels
            out = np.zeros(xin.shape[:2] + (O * P,), np.float32)
            for b in range(b_):
                for t in range(t_):
                    frame = xin[b, t].reshape(C, l.positions)
                    for p in range(P):
                        patch = []
                        for j in range(l.taps):
                            q = p * l.stride + j * l.dilation - l.pad_begin
                            patch.append(frame[:, q] if 0 <= q < l.positions else np.zeros(C))
                        z = vmm(seg, np.concatenate(patch))
                        if l.b is not None:
                            z = z + l.b.astype(np.float64)
                        out[b, t, np.arange(O) * P + p] = z.astype(np.float32)
            env[l.y] = out
        elif isinstance(l, ir.LayerNorm):
            v = env[l.x].astype(np.float64)
            out = np.empty(v.shape, np.float32)
            f = v.shape[2]
            for idx in np.ndindex(v.shape[:2]):
                row = v[idx]
                s = 0.0
                for e in row:
                    s += e
                mean = s / f
                q = 0.0
                for e in row:
                    q += (e - mean) * (e - mean)
                den = math.sqrt(q / f + l.epsilon)
                y = [(e - mean) / den * float(g) for e, g in zip(row, l.scale)]
                if l.bias is not None:
                    y = [a + float(bb) for a, bb in zip(y, l.bias)]
                out[idx] = y
            env[l.y] = out
        elif isinstance(l, ir.FeatureSlice):
            env[l.y] = env[l.x][..., l.start:l.stop].copy()
        elif isinstance(l, ir.FeatureConcat):
            env[l.y] = np.concatenate([env[n] for n in l.xs], axis=-1)
        elif isinstance(l, ir.Binary):
            a, c_ = (env[n].astype(np.float64) for n in l.xs)
            env[l.y] = {"add": a + c_, "sub": a - c_, "mul": a * c_}[l.op].astype(np.float32)
        elif isinstance(l, ir.Unary):
            v = env[l.x].astype(np.float64)
            f = math.sqrt if l.op == "sqrt" else (lambda e: math.pow(e, l.p))
            env[l.y] = np.vectorize(f, otypes=[np.float64])(v).astype(np.float32)
        elif isinstance(l, ir.ReduceMean):
            v = env[l.x].astype(np.float64)
            out = np.empty(v.shape[:2] + (1,), np.float32)
            for idx in np.ndindex(v.shape[:2]):
                s = 0.0
                for e in v[idx]:
                    s += e
                out[idx] = s / v.shape[2]
            env[l.y] = out
        elif isinstance(l, ir.StepMask):
            v = env[l.x]
            out = np.zeros(v.shape[:2] + (1,), np.float32)
            for idx in np.ndindex(v.shape[:2]):
                out[idx] = 1.0 if any(float(e) != l.value for e in v[idx]) else 0.0
            env[l.y] = out
        elif isinstance(l, ir.FeaturePad):
            v = env[l.x]
            width = [(0, 0), (0, 0), (l.begin, l.end)]
            env[l.y] = (np.pad(v, width, constant_values=np.float32(l.value))
                        if l.mode == "constant" else np.pad(v, width, mode=l.mode))
        elif isinstance(l, ir.Elementwise):
            v = env[l.x].astype(np.float64)
            env[l.y] = _act(l.fn, v).astype(np.float32)
        elif isinstance(l, ir.Softmax):
            v = env[l.x].astype(np.float64)
            out = np.empty(v.shape, np.float32)
            for idx in np.ndindex(v.shape[:2]):
                row = v[idx]
                m = max(row)
                s = 0.0
                for e in row:
                    s += math.exp(e - m)
                ls = math.log(s)
                out[idx] = [(e - m - ls) if l.log else math.exp(e - m) / s for e in row]
            env[l.y] = out
        else:
            raise NotImplementedError(type(l).__name__)
    return {o.name: env[o.tensor] for o in model.outputs}
