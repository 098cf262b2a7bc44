"""The emulated accelerator: program integer weight codes into noisy differential conductances.

``Device(profile, seed).program(codes, name)`` runs the once-per-programming chain

    storage read (bit errors, nulling) -> differential mapping -> programming noise
    -> stuck-at faults -> drift to the device age -> static read noise
    -> global drift compensation

and returns a :class:`ProgrammedMatrix` with the effective weights a noise-free read sees
(``w_eff``, in code units, the static part of the read noise drawn and included) and the
per-read noise variance (``read_var``, code units^2).

Every programmed matrix, and every stage of its chain, draws from its own Generator derived from
(seed, stage, name) through ``numpy.random.SeedSequence`` with a BLAKE2 hash of the name, so
results depend neither on the order in which matrices are programmed nor on which other
mechanisms are switched on.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from nvmstream.devices.conductance import (
    DRIFT_MODELS,
    PROGRAMMING_MODELS,
    READ_MODELS,
    DifferentialMapping,
    GlobalDriftCompensation,
    StuckAtFaults,
)
from nvmstream.devices.profile import DeviceProfile, load_profile
from nvmstream.devices.storage import BitErrorStorage

__all__ = ["Device", "ProgrammedMatrix", "stream_seed_sequence"]

log = logging.getLogger(__name__)


def _words(text: str) -> list[int]:
    """Four 32-bit words of a stable (BLAKE2b) hash of ``text``; never Python's ``hash()``."""
    d = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
    return [int.from_bytes(d[i:i + 4], "little") for i in range(0, 16, 4)]


def stream_seed_sequence(seed: int, stage: str, name: str) -> np.random.SeedSequence:
    """The SeedSequence of one random stream: entropy = [seed, hash(stage), hash(name)]."""
    return np.random.SeedSequence([int(seed), *_words(stage), *_words(name)])


@dataclass(frozen=True)
class ProgrammedMatrix:
    """One weight matrix as it sits on the emulated chip at the device's age."""

    name: str
    """Name the matrix was programmed under (it also seeds its random streams)."""
    codes_read: np.ndarray
    """Codes as programmed: after the storage read, clipped to the reachable range
    [-qmax, qmax] (int8 [out, in]; float32 for float weights, bits = 0)."""
    g_pos: np.ndarray
    """Conductance of the positive cell of each pair at the device age, static read noise
    included (float32 uS)."""
    g_neg: np.ndarray
    """Conductance of the negative cell of each pair at the device age (float32 uS)."""
    w_eff: np.ndarray
    """Effective weight in code units seen by a read without per-read noise (float32
    [out, in]): (g_pos - g_neg) / (gmax - gmin) * qmax * drift_compensation, the static read
    noise included. Multiply by the layer's per-row weight scale to get model units."""
    read_var: np.ndarray
    """Per-read noise variance of each pair in code units^2 (float32 [out, in]), the part of the
    read noise that is fresh at every read (read.split):
    (sigma_pr(G+)^2 + sigma_pr(G-)^2) * (qmax / (gmax - gmin) / r_j)^2 * drift_compensation^2.
    Zeros when read.model = 'none' or read.split = 'frozen'."""
    exact: bool
    """True when the chain cannot have changed the codes: no bit flipped, no programming
    noise, no stuck cell, no drift; then w_eff == codes exactly."""
    drift_compensation: float = 1.0
    """The noise-free global drift compensation factor mean|W(t0)| / mean|W(age)| (1 without
    drift or with drift.compensation = 'none'); folded into w_eff and read_var only when
    ``compensation_folded`` (drift.compensation = 'analog_fold'). The digital modes
    ('global', 'per_column') measure their own factor through the noisy, quantized path in
    the runtime's plan (devices.periphery.DriftCompensation) from ``w_t0``/``read_var_t0``."""
    stats: dict[str, Any] = field(default_factory=dict)
    """Counts: bits_flipped, codes_nulled, codes_changed, codes_out_of_range, codes_detected,
    codes_clipped,
    cells_stuck_low, cells_stuck_high, cells (= 2 * out * in), drift_applied,
    drift_compensation, static_read_noise."""
    static_var: np.ndarray | None = None
    """Variance of the static read-noise part of each pair in code units^2 (float32 [out, in]):
    (sigma_static(G+)^2 + sigma_static(G-)^2) * (qmax / (gmax - gmin))^2 * c^2. This noise is
    already drawn and folded into w_eff (informational; the runtime must not add it again)."""
    compensation_folded: bool = False
    """True when drift_compensation is folded into w_eff and read_var (mode 'analog_fold')."""
    w_t0: np.ndarray | None = None
    """Effective weights at t0 (after programming noise and faults, before drift and static
    read noise), code units [out, in] float32: the reference of digital drift compensation."""
    read_var_t0: np.ndarray | None = None
    """Per-read noise variance at t0 (code units^2 [out, in] float32), for the t0 reference
    readout of digital drift compensation."""

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.w_eff.shape)  # type: ignore[return-value]

    @property
    def has_read_noise(self) -> bool:
        """True when any pair has non-zero read-noise variance."""
        return bool(np.any(self.read_var > 0))


class Device:
    """An emulated NVM crossbar chip described by a profile, with a seed and an age.

    ``profile``: a shipped profile name, a path to a .toml file or a DeviceProfile;
    ``overrides``: ``"section.field=value"`` strings or a mapping, applied to the profile;
    ``age_s``: time since programming at inference (s); None uses the profile's drift.age_s.
    """

    def __init__(
        self,
        profile: str | Path | DeviceProfile,
        seed: int = 0,
        age_s: float | None = None,
        overrides: Mapping[str, Any] | Iterable[str] | None = None,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        prof = load_profile(profile, overrides)
        if age_s is not None:
            if not (isinstance(age_s, (int, float)) and math.isfinite(age_s) and age_s >= 0):
                raise ValueError(f"age_s must be a finite number >= 0, got {age_s!r}")
            prof = prof.with_overrides({"drift.age_s": float(age_s)})
        self.profile: DeviceProfile = prof
        self.seed: int = int(seed)
        p = prof
        self.qmax = p.qmax
        self.mapping = DifferentialMapping.from_profile(p)
        self.programming = PROGRAMMING_MODELS.get(p.programming.model).from_profile(p)
        self.faults = StuckAtFaults.from_profile(p)
        self.drift = DRIFT_MODELS.get(p.drift.model).from_profile(p)
        self.read_noise = READ_MODELS.get(p.read.model).from_profile(p)
        self.storage = (
            BitErrorStorage(p.weights.bits, p.storage.ber, p.storage.encoding, p.storage.detection,
                            p.storage.guard_bits, p.storage.parity_group)
            if p.weights.bits else None
        )
        self._selftest()

    @property
    def age_s(self) -> float:
        """Device age at inference (s), = profile.drift.age_s."""
        return self.profile.drift.age_s

    def __repr__(self) -> str:
        return f"Device({self.profile.name!r}, seed={self.seed}, age_s={self.age_s})"

    # -- random streams ------------------------------------------------------------------
    def _rng(self, stage: str, name: str) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(stream_seed_sequence(self.seed, stage, name)))

    def rng_for(self, name: str) -> np.random.Generator:
        """A Generator for per-read noise of ``name`` (runtime use), independent of the
        programming streams. Each call returns a fresh Generator in the same initial state:
        call once per stream and keep it."""
        return self._rng("runtime", str(name))

    def seed_for(self, name: str) -> int:
        """A 32-bit integer seed for numba kernels, derived like :meth:`rng_for`."""
        ss = stream_seed_sequence(self.seed, "runtime-seed", str(name))
        return int(ss.generate_state(1, np.uint32)[0])

    # -- programming ---------------------------------------------------------------------
    def _check_codes(self, codes: np.ndarray, name: str) -> np.ndarray:
        c = np.asarray(codes)
        if c.ndim != 2:
            raise ValueError(f"matrix {name!r}: codes must be 2-D [out, in], got shape {c.shape}")
        if self.profile.weights.bits:
            if not np.issubdtype(c.dtype, np.integer):
                raise ValueError(
                    f"matrix {name!r}: profile {self.profile.name!r} has weights.bits = "
                    f"{self.profile.weights.bits}; expected integer codes, got {c.dtype}"
                )
            q = int(self.qmax)
            if c.size and (c.min() < -q or c.max() > q):
                raise ValueError(f"matrix {name!r}: codes outside [-{q}, {q}]")
            return c.astype(np.int8)
        c = c.astype(np.float32)
        if c.size and (not np.all(np.isfinite(c)) or np.max(np.abs(c)) > 1.0):
            raise ValueError(
                f"matrix {name!r}: profile {self.profile.name!r} has float weights (bits = 0); "
                "expected values in [-1, 1] (W / max|W_row|, see quantize_weights)"
            )
        return c

    def program(self, codes: np.ndarray, name: str,
                scales: np.ndarray | None = None) -> ProgrammedMatrix:
        """Program one matrix of codes (int8 [out, in]; float32 in [-1, 1] for bits = 0).

        ``scales``: the per-row weight scales [out] the codes were quantized with; needed only
        by ``mapping.scope = "per_matrix"`` (rows with smaller scales get lower conductances).
        """
        name = str(name)
        codes = self._check_codes(codes, name)
        gain = self.mapping.row_gain(codes, scales)
        per_row = self.mapping.scope == "per_row"
        p = self.profile
        stats: dict[str, Any] = {
            "bits_flipped": 0, "codes_nulled": 0, "codes_changed": 0, "codes_out_of_range": 0,
            "codes_detected": 0,
            "cells_stuck_low": 0, "cells_stuck_high": 0, "cells": 2 * codes.size,
        }

        # 1. storage read (integer codes only)
        if self.storage is not None:
            res = self.storage.read(codes, self._rng("storage", name))
            codes_read = res.codes
            stats.update(bits_flipped=res.bits_flipped, codes_nulled=res.codes_nulled,
                         codes_changed=res.codes_changed, codes_out_of_range=res.codes_out_of_range,
                         codes_detected=res.codes_detected)
        else:
            codes_read = codes.copy()
        # a cell cannot be programmed beyond gmax: a word that decoded to -2^(b-1) (kept when
        # storage.detection = 'none') is programmed as -qmax, the nearest reachable weight
        if self.storage is not None and stats["codes_out_of_range"]:
            q = int(self.qmax)
            over = (codes_read < -q) | (codes_read > q)
            stats["codes_clipped"] = int(np.count_nonzero(over))
            codes_read = np.clip(codes_read, -q, q).astype(np.int8)
        else:
            stats["codes_clipped"] = 0

        # 2. mapping: stack the pair as one [2, out, in] array of cells
        g_target = np.stack(self.mapping.to_conductance(codes_read, None if per_row else gain))

        # 3. programming noise (drawn from the target conductance)
        g_prog = self.programming.apply(g_target, self._rng("programming", name))

        # 4. stuck-at faults
        if self.faults.active:
            low, high = self.faults.sample(g_target.shape, self._rng("faults", name))
            g_prog = np.where(low, self.mapping.gmin, np.where(high, self.mapping.gmax, g_prog))
            stuck = low | high
            stats.update(cells_stuck_low=int(low.sum()), cells_stuck_high=int(high.sum()))
        else:
            stuck = None

        # 5. drift to the device age
        age = p.drift.age_s
        drift_applied = self.drift.applies_at(age)
        if drift_applied:
            g_age = self.drift.apply(g_prog, g_target, age, self._rng("drift", name), frozen=stuck)
        else:
            g_age = g_prog

        # 6. read noise: static part drawn once (frozen into the conductances), per-read part
        #    as a variance for the runtime; both evaluated at the drifted conductance
        static_applied = False
        if self.read_noise.active:
            var_static, var_read = self.read_noise.split_var(g_age, g_prog, age)
            static_applied = bool(np.any(var_static > 0))
        else:
            var_static = var_read = None
        if static_applied:
            z = self._rng("read_static", name).standard_normal(g_age.shape)
            g_now = np.maximum(g_age + np.sqrt(var_static) * z, 0.0)
        else:
            g_now = g_age

        # 7. global drift compensation: readout of the array (conductance differences) at t0
        #    vs now (static noise included); then weights in code units (divided by the gain)
        w_t0 = self.mapping.to_weight(g_prog[0], g_prog[1])
        changed = drift_applied or static_applied
        w_now = self.mapping.to_weight(g_now[0], g_now[1]) if changed else w_t0
        comp = 1.0
        if p.drift.compensation != "none" and drift_applied:
            comp = GlobalDriftCompensation.factor(w_t0, w_now)
        folded = p.drift.compensation == "analog_fold"
        fold = comp if folded else 1.0
        if not per_row:
            w_now = w_now / gain[:, None]
            w_t0 = w_t0 / gain[:, None]
        stats.update(drift_applied=drift_applied, drift_compensation=comp,
                     static_read_noise=static_applied)

        exact = (
            stats["bits_flipped"] == 0
            and not self.programming.active
            and stats["cells_stuck_low"] + stats["cells_stuck_high"] == 0
            and not changed
        )
        if exact:
            w_eff = codes_read.astype(np.float32)
        else:
            w_eff = (w_now * fold).astype(np.float32)

        # per-read and static variance of each pair, in code units^2
        k2 = (self.mapping.codes_per_uS * fold) ** 2
        k2_0 = self.mapping.codes_per_uS ** 2
        if not per_row:
            k2 = k2 / (gain * gain)[:, None]
            k2_0 = k2_0 / (gain * gain)[:, None]
        if var_read is not None:
            read_var = ((var_read[0] + var_read[1]) * k2).astype(np.float32)
            static_var = ((var_static[0] + var_static[1]) * k2).astype(np.float32)
            # per-read variance of the t0 reference readout (digital compensation, runtime)
            _, v0 = self.read_noise.split_var(g_prog, g_prog, min(age, self.drift.t0))
            read_var_t0 = ((v0[0] + v0[1]) * k2_0).astype(np.float32)
        else:
            read_var = np.zeros(codes.shape, dtype=np.float32)
            static_var = np.zeros(codes.shape, dtype=np.float32)
            read_var_t0 = read_var

        pm = ProgrammedMatrix(
            name=name,
            codes_read=codes_read,
            g_pos=g_now[0].astype(np.float32),
            g_neg=g_now[1].astype(np.float32),
            w_eff=w_eff,
            read_var=read_var,
            exact=bool(exact),
            drift_compensation=float(comp),
            stats=stats,
            static_var=static_var,
            compensation_folded=bool(folded),
            w_t0=codes_read.astype(np.float32) if exact else w_t0.astype(np.float32),
            read_var_t0=read_var_t0,
        )
        log.debug("programmed %s %s on %r: %s", name, codes.shape, self, stats)
        return pm

    def _selftest(self) -> None:
        """Call every configured mechanism once on a tiny array so a broken one fails early."""
        g = np.array([0.0, 0.5, 1.0]) * self.mapping.gmax
        rng = np.random.Generator(np.random.PCG64(0))
        checks = [
            self.programming.apply(g, rng),
            self.drift.apply(g, g, max(self.age_s, self.drift.t0 * 2), rng),
            self.read_noise.sigma(g, g, self.age_s),
            *self.read_noise.split_var(g, g, self.age_s),
        ]
        for arr in checks:
            if np.shape(arr) != g.shape or not np.all(np.isfinite(arr)):
                raise RuntimeError(f"device mechanism self-test failed for {self.profile.name!r}")
