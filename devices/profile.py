"""Device profiles: the emulated chip described as data (TOML) and loaded into frozen dataclasses.

A profile has one section per mechanism (``weights``, ``storage``, ``mapping``, ``programming``,
``faults``, ``drift``, ``read``, ``vmm_noise``, ``dac``, ``adc``, ``tile``, ``energy``). Every
field carries its meaning, unit, allowed values and (for physical defaults) a cited source in
its ``metadata``; :meth:`DeviceProfile.describe` prints them all.

The dataclass defaults are the ``ideal`` chip (float weights, no noise, no converters), so an
empty TOML file is the ideal profile and a profile file only states what differs. The
``energy`` section's defaults are published prices (docs/energy.md), shared by every shipped
profile unless its file overrides them.

Loading::

    load_profile("pcm")                              # shipped devices/profiles/pcm.toml
    load_profile("my_chip.toml", ["adc.bits=6"])     # a file plus overrides
    load_profile("pcm", {"drift.age_s": 3600.0})

A profile file may say ``base = "pcm"`` to start from a shipped profile. Every problem (unknown
section or field, wrong type, out-of-range value, unknown enum value, bad ``base``) raises
:class:`ProfileError`, whose message names the file, the field (``adc.bits``) and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = [
    "ProfileError",
    "DeviceProfile",
    "WeightsSection",
    "StorageSection",
    "MappingSection",
    "ProgrammingSection",
    "FaultsSection",
    "DriftSection",
    "ReadSection",
    "VmmNoiseSection",
    "DacSection",
    "AdcSection",
    "TileSection",
    "EnergySection",
    "AreaSection",
    "SECTIONS",
    "load_profile",
    "list_profiles",
    "profile_path",
    "parse_override",
    "PCM_PROG_COEFFS_US",
    "PCM_PROG_GMAX_REF_US",
]


class ProfileError(ValueError):
    """An invalid device profile: the message names the origin (file), the field and the rule."""

    def __init__(self, origin: str, fieldname: str, problem: str) -> None:
        self.origin = origin
        self.field = fieldname
        self.problem = problem
        where = f"{origin}: " if origin else ""
        what = f"{fieldname}: " if fieldname else ""
        super().__init__(f"{where}{what}{problem}")


# --- field helper ---------------------------------------------------------------------------

_AIHWKIT_PCM = (
    "IBM aihwkit PCMLikeNoiseModel (src/aihwkit/inference/noise/pcm.py), fitted on 1M PCM "
    "devices: Nandakumar et al., ICECS 2019; Joshi et al., Nat. Commun. 11, 2473 (2020)"
)

#: PCM programming-noise polynomial sigma(x) = c0 + c1 x + c2 x^2 in uS, x = G/gmax, fitted at
#: gmax = 25 uS (aihwkit PCMLikeNoiseModel default ``prog_coeff``; Nandakumar et al. 2019).
PCM_PROG_COEFFS_US: tuple[float, ...] = (0.26348, 1.9650, -1.1731)
#: The gmax (uS) at which :data:`PCM_PROG_COEFFS_US` were fitted.
PCM_PROG_GMAX_REF_US: float = 25.0


def _f(
    default: Any,
    kind: type,
    doc: str,
    unit: str = "",
    source: str = "",
    choices: tuple | None = None,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    also: tuple = (),
) -> Any:
    """A documented, validated dataclass field.

    ``kind`` is int, float, bool, str or tuple (a list of floats); ``choices`` lists the allowed
    values of a str (enum) field; ``lo``/``hi`` bound a number (``lo_open``: strictly above lo);
    ``also`` lists extra allowed values outside the range (e.g. bits = 0 meaning "off").
    """
    meta = {
        "doc": doc,
        "unit": unit,
        "source": source,
        "kind": kind,
        "choices": choices,
        "lo": lo,
        "hi": hi,
        "lo_open": lo_open,
        "also": also,
    }
    if kind is tuple:
        return field(default=tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


def _allowed_text(meta: Mapping[str, Any]) -> str:
    kind = meta["kind"]
    if meta["choices"] is not None:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    if kind is bool:
        return "true or false"
    if kind is str:
        return "a string"
    if kind is tuple:
        return "a list of numbers"
    lo, hi = meta["lo"], meta["hi"]
    lo_s = "-inf" if lo is None else _num(lo)
    hi_s = "inf" if hi is None else _num(hi)
    left = "(" if (meta["lo_open"] or lo is None) else "["
    right = ")" if hi is None else "]"
    rng = f"{'an integer' if kind is int else 'a number'} in {left}{lo_s}, {hi_s}{right}"
    if meta["also"]:
        rng += " or " + " or ".join(repr(a) for a in meta["also"])
    return rng


def _num(v: float) -> str:
    """Compact number text for messages: 0.5, 1e+06, 2."""
    return str(v) if isinstance(v, int) else f"{v:g}"


def _check_value(value: Any, meta: Mapping[str, Any], origin: str, name: str) -> Any:
    """Validate one value against its field metadata; return it normalised (int -> float etc.)."""
    kind = meta["kind"]
    allowed = _allowed_text(meta)
    if kind is bool:
        if not isinstance(value, bool):
            raise ProfileError(origin, name, f"expected true or false, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ProfileError(origin, name, f"expected a string, got {value!r}; allowed: {allowed}")
        if meta["choices"] is not None and value not in meta["choices"]:
            raise ProfileError(origin, name, f"unknown value {value!r}; allowed: {allowed}")
        return value
    if kind is tuple:
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise ProfileError(origin, name, f"expected a list of numbers, got {value!r}")
        vals = tuple(float(v) for v in value)
        if not all(math.isfinite(v) for v in vals):
            raise ProfileError(origin, name, f"list entries must be finite, got {value!r}")
        return vals
    # numbers
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProfileError(origin, name, f"expected {allowed}, got {value!r}")
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise ProfileError(origin, name, f"expected {allowed}, got {value!r}")
            value = int(value)
    else:
        value = float(value)
        if math.isnan(value):
            raise ProfileError(origin, name, f"expected {allowed}, got nan")
    if value in meta["also"]:
        return value
    lo, hi = meta["lo"], meta["hi"]
    if lo is not None and (value < lo or (meta["lo_open"] and value == lo)):
        raise ProfileError(origin, name, f"value {value!r} out of range; allowed: {allowed}")
    if hi is not None and value > hi:
        raise ProfileError(origin, name, f"value {value!r} out of range; allowed: {allowed}")
    return value


class _Section:
    """Mixin: validation of every field in ``__post_init__`` plus cross-field checks."""

    section_name = ""

    def __post_init__(self) -> None:
        self._validate("")

    def _validate(self, origin: str) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            name = f"{self.section_name}.{f.name}"
            norm = _check_value(getattr(self, f.name), f.metadata, origin, name)
            object.__setattr__(self, f.name, norm)
        self._cross_check(origin)

    def _cross_check(self, origin: str) -> None:
        """Checks that involve more than one field of the section (overridden where needed)."""


# --- sections ------------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightsSection(_Section):
    """How a layer's float weights become the integer codes that are stored and programmed."""

    section_name = "weights"
    bits: int = _f(
        0, int,
        "Weight precision: signed symmetric codes in [-(2^(bits-1)-1), 2^(bits-1)-1] with one "
        "scale per output row (s = max|W_row| / qmax). 0 = no quantization: float weights "
        "normalised per row to [-1, 1] (qmax = 1).",
        unit="bits", lo=2, hi=8, also=(0,),
        source="4-bit NVM weights match float with QAT: Ma et al., ICRC 2019 (arXiv 2002.10636)",
    )
    scale: str = _f(
        "per_channel", str,
        "Granularity of the weight scale; only one scale per output channel (row) is supported.",
        choices=("per_channel",),
    )


@dataclass(frozen=True)
class StorageSection(_Section):
    """NVM storage the codes are read from at programming time (raw bit errors, no ECC)."""

    section_name = "storage"
    ber: float = _f(
        0.0, float,
        "Raw bit error rate: each stored bit of each b-bit code word flips independently with "
        "this probability when the codes are read for programming. Needs weights.bits >= 2.",
        unit="probability per stored bit", lo=0.0, hi=0.5,
        source="storage errors without ECC: Qin, Sun, Vucinic, arXiv 1709.06173",
    )
    encoding: str = _f(
        "twos_complement", str,
        "Binary representation of a code in storage; it decides what a flipped bit does to the "
        "value and which words decode out of range (see devices/README.md). offset_binary is "
        "identical to twos_complement under bit flips (the MSB inverted). 'unary' stores c as "
        "c + qmax set bits out of 2 qmax (2^b - 2 bits: 14 for int4; b <= 6): every flip moves "
        "the value by one step.",
        choices=("twos_complement", "offset_binary", "sign_magnitude", "gray", "unary"),
        source="representation choice matters: arXiv 1709.06173 (unary: our adaptation of its "
        "alternative representation to b-bit codes, devices/README.md)",
    )
    detection: str = _f(
        "none", str,
        "What happens to a detected code (decoded outside [-qmax, qmax], guard bits that "
        "disagree with the MSB, or a failed parity group): 'none' keeps the decoded value (a "
        "decoded -2^(b-1) is then programmed as -qmax); 'nulling' sets it to 0 (weight "
        "nulling, arXiv 1709.06173).",
        choices=("none", "nulling"),
        source="weight nulling: arXiv 1709.06173",
    )
    guard_bits: int = _f(
        0, int,
        "Copies of each word's MSB stored above it (two's complement: sign extension, e.g. an "
        "int4 kept in an int8 with guard_bits = 4). A read whose MSB and guard bits disagree "
        "is detected: (guard_bits + 1)/(b + guard_bits) of single flips. Costs guard_bits "
        "stored bits per code (DeviceProfile.storage_bits_per_code).",
        unit="bits per code", lo=0, hi=16,
        source="redundancy so that nulling detects most flips: idea of arXiv 1709.06173 "
        "(out-of-range detection) applied to int4",
    )
    parity_group: int = _f(
        0, int,
        "One even-parity bit per group of this many consecutive codes (row-major), over all "
        "their stored bits; a group with an odd number of flips (every single flip) is "
        "detected as a whole. 0 = no parity. Costs 1/parity_group stored bits per code.",
        unit="codes per parity bit", lo=0, hi=65536,
        source="single-error-detecting parity: standard memory practice (no ECC correction)",
    )

    def _cross_check(self, origin: str) -> None:
        if self.encoding == "unary" and self.guard_bits:
            raise ProfileError(origin, "storage.guard_bits",
                               "guard bits protect a binary word's MSB; encoding 'unary' has none")


@dataclass(frozen=True)
class MappingSection(_Section):
    """Differential-pair mapping of codes to conductances."""

    section_name = "mapping"
    gmin_uS: float = _f(
        0.0, float,
        "Conductance of a cell that encodes 0 (the idle cell of a pair): "
        "G+ = gmin + (gmax-gmin) max(q,0)/qmax, G- = gmin + (gmax-gmin) max(-q,0)/qmax. "
        "gmin > 0 models a finite on/off ratio gmax/gmin: gmin cancels in G+ - G- but the "
        "idle cell still carries programming/read noise and drift at gmin.",
        unit="uS", lo=0.0, hi=1e6,
        source="aihwkit SinglePairConductanceConverter default g_min = 0 uS",
    )
    gmax_uS: float = _f(
        25.0, float,
        "Conductance of a cell that encodes |q| = qmax. Also the reference of the relative "
        "conductance x = G/gmax used by the PCM programming, drift and 1/f models.",
        unit="uS", lo=0.0, hi=1e6, lo_open=True,
        source="aihwkit SinglePairConductanceConverter / PCMLikeNoiseModel default g_max = 25 uS",
    )
    scope: str = _f(
        "per_row", str,
        "Which weights are mapped to gmax: 'per_row' = each output row's largest |code| "
        "(G = gmin + (gmax-gmin)|q|/qmax; every row uses the full conductance range); "
        "'per_matrix' = the matrix's largest |weight| (row j's conductances are scaled by "
        "s_j / max_k s_k, so rows with small weights sit at low conductance where relative "
        "noise is high; aihwkit's default). Needs the per-row scales in Device.program.",
        choices=("per_row", "per_matrix"),
        source="per_matrix: aihwkit SinglePairConductanceConverter (scale = max|W| of the "
        "matrix); per_row: per-channel mapping as per-row weight scales (Ma et al. 2019)",
    )

    def _cross_check(self, origin: str) -> None:
        if not self.gmax_uS > self.gmin_uS:
            raise ProfileError(
                origin, "mapping.gmax_uS",
                f"must be greater than mapping.gmin_uS ({self.gmin_uS!r}), got {self.gmax_uS!r}",
            )


@dataclass(frozen=True)
class ProgrammingSection(_Section):
    """Programming noise: G_prog = clip(G_target + N(0, sigma_prog(G_target)), 0, clip)."""

    section_name = "programming"
    model: str = _f(
        "none", str,
        "sigma_prog model: 'none'; 'constant' (sigma_uS); 'fraction' (fraction * gmax_uS); "
        "'pcm_poly' (PCM polynomial [0.26348, 1.9650, -1.1731] uS at a 25 uS reference); 'poly' (user polynomial in poly_coeffs_uS).",
        choices=("none", "constant", "fraction", "pcm_poly", "poly"),
    )
    sigma_uS: float = _f(
        0.0, float, "Standard deviation of programming noise for model 'constant'.",
        unit="uS", lo=0.0, hi=1e6,
    )
    fraction: float = _f(
        0.0, float, "Standard deviation of programming noise as a fraction of mapping.gmax_uS "
        "for model 'fraction'.",
        unit="fraction of gmax_uS", lo=0.0, hi=1.0,
    )
    poly_coeffs_uS: tuple = _f(
        (), tuple,
        "Coefficients c_k (uS) of sigma(x) = (sum_k c_k x^k) * gmax_uS/poly_gmax_ref_uS, "
        "x = G_target/gmax_uS, clipped at >= 0, for model 'poly'. 'pcm_poly' always uses "
        "[0.26348, 1.9650, -1.1731] at a 25 uS reference and ignores this field.",
        unit="uS", source=_AIHWKIT_PCM,
    )
    poly_gmax_ref_uS: float = _f(
        25.0, float,
        "The gmax at which poly_coeffs_uS were fitted; sigma scales by gmax_uS/poly_gmax_ref_uS "
        "so that the relative spread is kept when the conductance range changes (as aihwkit's "
        "prog_coeff_g_max_reference). Model 'poly' only.",
        unit="uS", lo=0.0, hi=1e6, lo_open=True, source=_AIHWKIT_PCM,
    )
    clip_max_factor: float = _f(
        2.0, float,
        "Programmed conductances are clipped to [0, clip_max_factor * gmax_uS]: no negative "
        "conductance (as aihwkit), and a guard against unphysical Gaussian tails (never binds "
        "for the shipped profiles, whose sigma is <= 10% of gmax).",
        unit="multiples of gmax_uS", lo=1.0, hi=100.0, source="modelling choice",
    )

    def _cross_check(self, origin: str) -> None:
        if self.model == "poly" and not self.poly_coeffs_uS:
            raise ProfileError(
                origin, "programming.poly_coeffs_uS",
                "model 'poly' needs a non-empty list of coefficients",
            )


@dataclass(frozen=True)
class FaultsSection(_Section):
    """Stuck-at faults, drawn once per cell at programming time."""

    section_name = "faults"
    p_stuck_low: float = _f(
        0.0, float, "Probability that a cell is stuck at mapping.gmin_uS (independent per cell).",
        unit="probability per cell", lo=0.0, hi=1.0,
    )
    p_stuck_high: float = _f(
        0.0, float, "Probability that a cell is stuck at mapping.gmax_uS (independent per cell).",
        unit="probability per cell", lo=0.0, hi=1.0,
    )

    def _cross_check(self, origin: str) -> None:
        if self.p_stuck_low + self.p_stuck_high > 1.0:
            raise ProfileError(
                origin, "faults.p_stuck_high",
                f"faults.p_stuck_low + faults.p_stuck_high must be <= 1, got "
                f"{self.p_stuck_low!r} + {self.p_stuck_high!r}",
            )


@dataclass(frozen=True)
class DriftSection(_Section):
    """Conductance drift G(t) = G_prog (t/t0)^-nu for t > t0 (no drift for t <= t0)."""

    section_name = "drift"
    model: str = _f(
        "none", str,
        "nu model: 'none'; 'constant' (nu ~ N(nu_mean, nu_sd) per cell); 'pcm' "
        "(nu = |N(mu(x), sd(x))|, mu = clip(-0.0155 ln x + 0.0244, 0.049, 0.1), "
        "sd = clip(-0.0125 ln x - 0.0059, 0.008, 0.045), x = max(G_target/gmax, 1e-7)); "
        "'rram_wan2022' (RRAM relaxation: the spread around the target grows from the 1 s to "
        "the 1 day / 2 day fits of Wan et al. 2022, interpolated in ln(age); ignores t0_s, nu_*).",
        choices=("none", "constant", "pcm", "rram_wan2022"),
        source=_AIHWKIT_PCM + "; rram_wan2022: Wan et al., Nature 608, 504 (2022) via aihwkit "
        "ReRamWan2022NoiseModel",
    )
    age_s: float = _f(
        0.0, float,
        "Device age at inference: time since programming finished. Drift applies for age > t0 "
        "(rram_wan2022: relaxation for age > 1 s); the pcm_1f read noise, and its static/per-read "
        "split, are evaluated at t = age_s.",
        unit="s", lo=0.0, hi=1e12,
    )
    t0_s: float = _f(
        20.0, float,
        "Reference time of the drift law: conductances are as programmed up to t0.",
        unit="s", lo=0.0, hi=1e12, lo_open=True, source=_AIHWKIT_PCM + " (t_0 = 20 s)",
    )
    nu_mean: float = _f(
        0.0, float, "Mean drift exponent for model 'constant' (negative = conductance grows).",
        unit="dimensionless", lo=-1.0, hi=1.0,
    )
    nu_sd: float = _f(
        0.0, float, "Standard deviation of the drift exponent across cells, model 'constant'.",
        unit="dimensionless", lo=0.0, hi=1.0,
    )
    compensation: str = _f(
        "none", str,
        "Drift compensation: 'none'; 'global' (aihwkit GlobalDriftCompensation: one digital "
        "gain per matrix after the ADC, c = mean|Y(t0)| / mean|Y(age)|, Y the outputs of the "
        "one-hot reference inputs (full-scale DAC code on one row at a time) read through the "
        "real path: per-read noise and ADC); 'per_column' (aihwkit PerColumnDriftCompensation: "
        "c_j = mean_i|Y_ij(t0)| / mean_i|Y_ij(age)| per output column, after the ADC); "
        "'analog_fold' (nvmstream <= issue 9: a noise-free readout of the conductances, "
        "mean|W(t0)| / mean|W(age)|, folded into w_eff, i.e. an analog gain before the ADC).",
        choices=("none", "global", "per_column", "analog_fold"),
        source="aihwkit src/aihwkit/inference/compensation/drift.py (GlobalDriftCompensation, "
        "PerColumnDriftCompensation: readout of eye(in) through the forward pass, alpha = "
        "ref / current applied to the tile output)",
    )
    reference: str = _f(
        "eye", str,
        "The digital compensation's reference readout (drift.compensation = global | "
        "per_column): 'eye' (aihwkit >= 0.7.0: the one-hot inputs eye(n_in) at the "
        "full-scale DAC code, read through read noise and the ADC at t0 and at the age, "
        "mean |Y|); 'eye_exact' (aihwkit 1.1.0 GlobalDriftCompensationWithExactReference: the "
        "t0 readout computed exactly from the target codes, no programming noise, read "
        "noise or ADC; the age readout as 'eye'); 'ones' (aihwkit < 0.7.0: one all-ones input "
        "at the full-scale DAC code on every row, each tile's partial sum through its ADC, "
        "max |y| over the outputs, per output for per_column).",
        choices=("eye", "eye_exact", "ones"),
        source="aihwkit src/aihwkit/inference/compensation/drift.py: ones((1, in)) and abs max "
        "until PR #412 (v0.7.0, 2022), eye(in) and mean abs since; "
        "GlobalDriftCompensationWithExactReference added in PR #674 (v1.1.0), reference = "
        "eye(in) @ reference_combined_weights.T (simulator/tiles/inference.py)",
    )


@dataclass(frozen=True)
class ReadSection(_Section):
    """Read noise G + N(0, sigma_read(G)^2): a static part frozen into the weights + a per-read part."""

    section_name = "read"
    model: str = _f(
        "none", str,
        "sigma_read model: 'none'; 'constant' (sigma_uS per cell); 'fraction' (fraction * "
        "gmax_uS per cell); 'weight_fraction' (fraction * (gmax_uS - gmin_uS) per weight, i.e. "
        "per differential pair, as aihwkit forward.w_noise); "
        "'pcm_1f' (sigma = G(t) Q_s sqrt(ln((t + t_read)/(2 t_read))), "
        "Q_s = min(0.0088 / max((G_prog/gmax)^0.65, 1e-3), 0.2), t = drift.age_s).",
        choices=("none", "constant", "fraction", "weight_fraction", "pcm_1f"),
        source=_AIHWKIT_PCM + "; weight_fraction: aihwkit IOParameters.w_noise (ADDITIVE_CONSTANT)",
    )
    sigma_uS: float = _f(
        0.0, float, "Per-cell read-noise standard deviation for model 'constant'.",
        unit="uS", lo=0.0, hi=1e6,
    )
    fraction: float = _f(
        0.0, float,
        "Read-noise standard deviation: per cell as a fraction of mapping.gmax_uS (model "
        "'fraction'), or per weight as a fraction of the weight range gmax_uS - gmin_uS (model "
        "'weight_fraction'); independent of G.",
        unit="fraction of gmax_uS (fraction) / of gmax_uS - gmin_uS (weight_fraction)", lo=0.0, hi=1.0,
    )
    t_read_s: float = _f(
        250e-9, float, "Read pulse duration in the 1/f noise integral of model 'pcm_1f'.",
        unit="s", lo=0.0, hi=1.0, lo_open=True, source=_AIHWKIT_PCM + " (t_read = 250 ns)",
    )
    split: str = _f(
        "window", str,
        "Which part of the read-noise variance is static (drawn once when the device is "
        "programmed or aged, folded into w_eff, identical for every read, time step and voting "
        "replica) and which is per read (fresh at every read): 'window' = pcm_1f splits its 1/f "
        "spectrum at 1/window_s (static = ln((t + t_read)/(window_s + t_read)), per read = "
        "ln((min(t, window_s) + t_read)/(2 t_read)), in units of (G Q_s)^2), white models "
        "(constant, fraction) are all per read; 'frozen' = everything static (aihwkit's single "
        "draw per inference-time evaluation); 'per_read' = everything per read (nvmstream <= "
        "turn 2: makes voting over replicas average out noise that a real chip keeps).",
        choices=("window", "frozen", "per_read"),
        source="1/f integral as aihwkit PCMLikeNoiseModel; split: devices/README.md (Read noise)",
    )
    window_s: float = _f(
        1.0, float,
        "Inference window for split 'window': fluctuations slower than 1/window_s are frozen "
        "over one inference (static part), faster ones are per read. The 1 s default is one "
        "streamed utterance / sensor window.",
        unit="s", lo=0.0, hi=1e12, lo_open=True,
        source="modelling choice (DESIGN.md read noise; issue 13: 1 s inference window)",
    )


@dataclass(frozen=True)
class VmmNoiseSection(_Section):
    """Additive noise on each pre-activation at a given signal-to-noise power ratio."""

    section_name = "vmm_noise"
    snr_db: float = _f(
        math.inf, float,
        "n ~ N(0, P / 10^(snr_db/10)) on each pre-activation, P the layer's calibrated mean "
        "signal power. inf (the default, or the field absent) = off.",
        unit="dB", lo=-100.0, hi=math.inf,
        source="Qin and Vucinic, arXiv 1811.10649 (voting at 0 dB)",
    )
    reference: str = _f(
        "layer", str,
        "What P is: 'layer' = the mean power over all outputs of a crossbar matrix "
        "(1811.10649's per-layer output power; one sigma per matrix: an LSTM's gates then "
        "see different SNRs); 'gate' = the mean power of each gate's outputs (i/o/f/c of an "
        "LSTM, z/r/h of a GRU; each gate at snr_db); 'unit' = each output's own power. "
        "Bias excluded. `nvmstream inspect MODEL.nvm --profile P` prints the effective SNR "
        "per gate.",
        choices=("layer", "gate", "unit"),
        source="layer: Qin and Vucinic, arXiv 1811.10649; gate/unit: devices/README.md (VMM noise)",
    )
    position: str = _f(
        "after_adc", str,
        "Where the noise enters: 'after_adc' = on the digital output after the ADC (the "
        "paper's pre-activation noise; not clipped or quantized); 'before_adc' = on each tile "
        "column's analog partial sum before its ADC (the same total variance, split equally "
        "over the row tiles), so the ADC clips and quantizes it as it would a circuit noise.",
        choices=("after_adc", "before_adc"),
        source="after_adc: arXiv 1811.10649; before_adc: aihwkit IOParameters.out_noise "
        "(added before the ADC's discretisation and bound)",
    )

    @property
    def enabled(self) -> bool:
        """True when the VMM noise is on (snr_db finite)."""
        return math.isfinite(self.snr_db)


@dataclass(frozen=True)
class DacSection(_Section):
    """Input DACs (one per tile row)."""

    section_name = "dac"
    bits: int = _f(
        0, int,
        "Input precision: signed symmetric codes in [-(2^(bits-1)-1), 2^(bits-1)-1] over a "
        "calibrated range (step = range/qmax). 0 = no DAC quantization (float inputs).",
        unit="bits", lo=2, hi=12, also=(0,),
        source="4-bit DAC/ADC match float: Ma et al., ICRC 2019 (arXiv 2002.10636)",
    )
    range: str = _f(
        "static", str,
        "Input range: 'static' = one range per matrix calibrated on the calibration set "
        "(step = max |input| / qmax); 'dynamic' = each input vector scaled by its own max "
        "(step_v = max_i |v_i| / qmax) and the outputs rescaled digitally by step_v, as "
        "aihwkit's noise management; costs a max-finder (n_in compares), n_in input and n_out "
        "output multiplies and one reciprocal per vector and matrix (docs/energy.md).",
        choices=("static", "dynamic"),
        source="dynamic: aihwkit IOParameters.noise_management = ABS_MAX "
        "(rpu_forward_backward_pass.cpp computeNoiseManagement)",
    )


@dataclass(frozen=True)
class AdcSection(_Section):
    """Column ADCs: each tile column's partial sum is clipped and quantized."""

    section_name = "adc"
    bits: int = _f(
        0, int,
        "Output precision: signed symmetric levels k*step, |k| <= 2^(bits-1)-1 (2^bits - 1 "
        "levels), clipped to the calibrated range. 0 = no ADC quantization.",
        unit="bits", lo=2, hi=16, also=(0,),
        source="4-bit DAC/ADC match float: Ma et al., ICRC 2019 (arXiv 2002.10636)",
    )
    noise_lsb: float = _f(
        0.0, float, "Standard deviation of Gaussian ADC input-referred noise (added before "
        "quantization). Ignored when bits = 0.",
        unit="LSB", lo=0.0, hi=1e3,
    )
    range: str = _f(
        "per_tile", str,
        "ADC range granularity: 'per_tile' = one calibrated range per (row tile, column "
        "tile), shared by every column of the tile (a shared ADC bank with one reference); "
        "'per_column' = one range per (row tile, column) (nvmstream <= issue 9). Either way "
        "step = max |ideal partial sum| / qmax over the calibration set.",
        choices=("per_tile", "per_column"),
        source="aihwkit IOParameters.out_bound: one fixed bound per tile; per_column: "
        "column-wise ranges as a design choice (devices/README.md, DAC and ADC)",
    )
    calibration: str = _f(
        "max", str,
        "How each ADC range is set from the magnitudes of its calibration partial sums: "
        "'max' (the largest: nothing clips on the calibration set); 'percentile' (the "
        "adc.percentile-th percentile: rare large sums clip, the rest get finer steps); 'mse' "
        "(the range among max x k/128, k = 1..128, minimising the mean squared quantization "
        "+ clipping error on the calibration set).",
        choices=("max", "percentile", "mse"),
        source="percentile / MSE-optimal clipping as in post-training quantization (e.g. "
        "Banner et al., ACIQ, NeurIPS 2019; NVIDIA TensorRT entropy/percentile calibrators)",
    )
    percentile: float = _f(
        99.9, float, "Percentile of |partial sum| that sets the range, calibration "
        "'percentile'.", unit="percent", lo=0.0, hi=100.0, lo_open=True,
    )
    offset_lsb: float = _f(
        0.0, float,
        "Standard deviation of each ADC instance's input offset, drawn once at programming "
        "(seeded): x -> gain * x + offset before coding. An instance serves "
        "energy.cols_per_adc columns of one tile. 0 = off.",
        unit="LSB", lo=0.0, hi=100.0,
        source="CrossSim ramp ADC per-column comparator offsets (Spear et al., IEEE JXCDC "
        "2023); values: devices/README.md (ADC mismatch)",
    )
    gain_sd: float = _f(
        0.0, float,
        "Standard deviation of each ADC instance's relative gain error (gain = 1 + gain_sd "
        "N(0,1)), drawn once at programming. 0 = off.",
        unit="fraction", lo=0.0, hi=0.5,
        source="CrossSim ramp ADC finite amplifier gain / capacitor mismatch (Spear et al. 2023)",
    )
    inl_lsb: float = _f(
        0.0, float,
        "Standard deviation of each decision level of an ADC instance around its ideal "
        "position k + 1/2 (LSB), drawn once at programming and sorted (monotone; crossing "
        "levels leave missing codes): INL_k = the level's displacement, DNL_k = the difference "
        "of adjacent displacements. 0 = off. Needs adc.bits <= 10.",
        unit="LSB", lo=0.0, hi=10.0,
        source="CrossSim ramp/SAR ADC capacitor-mismatch INL/DNL (Spear et al., IEEE JXCDC "
        "2023), modelled as independent level displacements",
    )
    track_drift: bool = _f(
        False, bool,
        "Whether the ADC ranges are recalibrated at the device age (a chip feature: the "
        "calibration set is read again through the drifted, noise-free weights and each step "
        "re-set to max |partial sum| / qmax). false = ranges fixed at programming time, so drift "
        "shrinks the signal within a fixed ADC range and compensation is purely digital.",
        source="issue 13 item 7; aihwkit keeps a fixed out_bound (track_drift = false)",
    )

    def _cross_check(self, origin: str) -> None:
        if self.inl_lsb > 0 and self.bits > 10:
            raise ProfileError(origin, "adc.inl_lsb",
                               f"needs adc.bits <= 10 (one decision level per code is stored "
                               f"per ADC instance), got adc.bits = {self.bits}")


@dataclass(frozen=True)
class TileSection(_Section):
    """Crossbar tile size; a layer's matrix is split into tiles of at most rows x cols."""

    section_name = "tile"
    rows: int = _f(
        256, int, "Tile rows = inputs (word lines) per tile, each with its own DAC.",
        unit="cells", lo=1, hi=65536,
        source="256 x 256 cores: NeuRRAM, Wan et al., Nature 608, 504 (2022)",
    )
    cols: int = _f(
        256, int, "Tile columns = outputs (bit lines) per tile, each read by an ADC.",
        unit="cells", lo=1, hi=65536,
        source="256 x 256 cores: NeuRRAM, Wan et al., Nature 608, 504 (2022)",
    )
    wire_ohm: float = _f(
        0.0, float,
        "Bit-line wire resistance between adjacent cells of a column, for the first-order IR "
        "drop: a column pair's output loses the fraction r n S / 3, n the tile rows in use, "
        "S = sum_i (G+ + G-)_i |u_i| / umax its accumulated current per volt (devices/README.md, "
        "IR drop). 0 = off. Needs dac.bits > 0.",
        unit="ohm", lo=0.0, hi=1e4,
        source="aihwkit IOParametersIRDropT.ir_drop_rs = 0.15 ohm; IOParameters.ir_drop_g_ratio "
        "default from 0.35 ohm",
    )


_HOROWITZ = (
    "Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, "
    "45 nm, 0.9 V"
)
_ISAAC = (
    "Shafiee et al., 'ISAAC', ISCA 2016 (8-bit ADC at 1.28 GS/s, 128 columns per ADC, "
    "100 ns crossbar read)"
)


@dataclass(frozen=True)
class EnergySection(_Section):
    """Energy and latency prices of every counted operation (docs/energy.md)."""

    section_name = "energy"
    # -- column ADCs --------------------------------------------------------------------------
    adc_fom_fJ_per_step: float = _f(
        3.7, float,
        "Walden figure of merit of the column ADC, per conversion step: one b-bit conversion "
        "costs adc_fom_fJ_per_step * 2^b + adc_floor_pJ (b = nominal bits). 3.7 fJ with the "
        "0.73 pJ floor passes through ISAAC's 8-bit ADC (1.67 pJ) and its 4-bit scaling "
        "(0.79 pJ); it lies among the better ~1 GS/s designs of Murmann's ADC survey.",
        unit="fJ per conversion step", lo=0.0, hi=1e6,
        source="fit to ISAAC's ADC (Kull et al. ISSCC 2013, scaled: 1.67 pJ at 8 b, 0.79 pJ at "
               "4 b, Accelergy hwcomponents-library isaac.py); Walden FOM as in B. Murmann, "
               "'ADC Performance Survey'",
    )
    adc_floor_pJ: float = _f(
        0.73, float,
        "Resolution-independent energy of one ADC conversion (comparator clocking, SAR logic, "
        "reference buffers): the floor of E_adc(b) = FOM * 2^b + floor.",
        unit="pJ per conversion", lo=0.0, hi=1e6,
        source="fit to ISAAC's 4- and 8-bit ADC energies (see adc_fom_fJ_per_step)",
    )
    adc_time_ns: float = _f(
        0.78125, float,
        "Time of one ADC conversion; an ADC serving several columns converts them one after "
        "another.",
        unit="ns per conversion", lo=0.0, hi=1e9,
        source=_ISAAC + ": 1/1.28 GS/s",
    )
    cols_per_adc: int = _f(
        128, int,
        "Columns that share one ADC (through a multiplexer): a tile of tile.cols columns has "
        "ceil(tile.cols / cols_per_adc) ADCs working in parallel.",
        unit="columns per ADC", lo=1, hi=65536, source=_ISAAC + ": one ADC per 128 columns",
    )
    unquantized_converter_bits: int = _f(
        8, int,
        "Resolution at which DAC and ADC conversions are priced when dac.bits or adc.bits is "
        "0 (the float reference simulates ideal converters, but a chip still has them). "
        "0 prices such conversions at zero energy.",
        unit="bits", lo=1, hi=16, also=(0,),
        source="8 bits as ISAAC's ADC (modelling choice)",
    )
    # -- input DACs ---------------------------------------------------------------------------
    dac_1bit_fJ: float = _f(
        3.9, float,
        "Energy of one 1-bit DAC conversion; a b-bit conversion costs dac_1bit_fJ * 2^(b-1) "
        "(31.2 fJ at 4 bits).",
        unit="fJ per conversion at 1 bit", lo=0.0, hi=1e9,
        source="ISAAC 1-bit DAC, 4 mW per 1024 DACs, as tabulated per bit (x2 per bit) at "
               "1 GS/s in MNSIM-2.0 Hardware_Model/DAC.py",
    )
    dac_time_ns: float = _f(
        1.0, float, "Time for the row DACs of a tile to produce their inputs (all rows in "
        "parallel).",
        unit="ns", lo=0.0, hi=1e9,
        source="1 cycle at 1 GHz: PUMA simulator dac_lat; MNSIM-2.0 DAC at 1 GS/s",
    )
    # -- the array ----------------------------------------------------------------------------
    read_voltage_V: float = _f(
        0.2, float,
        "Read voltage across a cell during a VMM read; a cell read costs "
        "read_voltage_V^2 * G * read_time_ns (full-scale input on every row: an upper bound).",
        unit="V", lo=0.0, hi=10.0,
        source="modelling choice: small-signal read below PCM threshold switching / RRAM "
               "disturb (MNSIM-2.0 uses 0.5 V for 3.16 ns; see docs/energy.md)",
    )
    read_time_ns: float = _f(
        100.0, float,
        "How long the read voltage is applied to the cells of a tile during one VMM read "
        "(energy only; latency uses tile_settle_ns).",
        unit="ns", lo=0.0, hi=1e9, source=_ISAAC + ": 100 ns crossbar read",
    )
    tile_settle_ns: float = _f(
        100.0, float,
        "Time from valid DAC outputs to settled, sampled column outputs of a tile.",
        unit="ns", lo=0.0, hi=1e9,
        source=_ISAAC + "; PUMA simulator xbar_ip_lat = 100 ns",
    )
    mean_abs_code_fraction: float = _f(
        0.25, float,
        "E|q|/qmax of the programmed codes, used for the mean cell conductance "
        "G = gmin + (gmax - gmin) * fraction / 2 when the runtime does not pass the programmed "
        "array's own mean (LayerGeometry.mean_cell_uS).",
        unit="fraction of qmax", lo=0.0, hi=1.0,
        source="modelling choice: Gaussian-like weights with per-row max at ~3 sigma give "
               "E|w|/max|w| ~ 0.8/3",
    )
    tile_overhead_pJ: float = _f(
        0.0, float,
        "Extra energy per tile activation (control, row drivers, sample-and-hold) beyond "
        "the priced DAC, cell and ADC energies. Not modelled by default.",
        unit="pJ per tile activation", lo=0.0, hi=1e9,
        source="not modelled (ISAAC's sample-and-hold is ~1e-3 pJ per column)",
    )
    # -- digital periphery --------------------------------------------------------------------
    periphery_precision: str = _f(
        "fp32", str,
        "Number format of the digital periphery (partial-sum merge, scaling, bias, gates, cell "
        "update, state SRAM): its adds and multiplies are priced from the Horowitz table for "
        "this format (devices/energy.py DATATYPES) and state bytes at its width. fp32 is what "
        "the emulation computes; a designed chip would use int16 or fp16.",
        unit="number format", choices=("fp32", "fp16", "int16", "int8"),
        source=_HOROWITZ + " (int16 multiply interpolated quadratically in width)",
    )
    activation_pJ: float = _f(
        0.26, float,
        "One sigmoid/tanh/exp evaluation by a dedicated activation unit (32 nm).",
        unit="pJ per evaluation", lo=0.0, hi=1e6,
        source="ISAAC sigmoid unit, 0.26 mW at 1 GHz (PUMA simulator act_pow_dyn, 'taken "
               "from ISAAC'), 32 nm",
    )
    digital_op_time_ns: float = _f(
        1.0, float,
        "Time of one digital operation on a layer's critical path (a 1 GHz vector unit wide "
        "enough for a layer's elementwise work).",
        unit="ns per operation", lo=0.0, hi=1e9, source="PUMA simulator cycle_time = 1 ns",
    )
    interconnect_pJ_per_byte: float = _f(
        0.125, float,
        "Moving one byte between a tile and its buffer/periphery over the shared bus: every "
        "DAC input (1 byte) and every ADC output (1 byte) crosses it once (32 nm). A routed "
        "network-on-chip hop costs up to 4 pJ/byte (PUMA 4-port router, 16.13 mW per 32-bit "
        "flit at 1 GHz).",
        unit="pJ per byte", lo=0.0, hi=1e6,
        source="PUMA simulator (ISAAC's 384-bit eDRAM-to-IMA bus, 6 pJ per 48-byte transfer), "
               "32 nm",
    )
    # -- memories -----------------------------------------------------------------------------
    sram_pJ_per_byte: float = _f(
        1.25, float,
        "Read or write of one byte of the SRAM holding recurrent state and activations "
        "(reads and writes priced alike).",
        unit="pJ per byte", lo=0.0, hi=1e6,
        source=_HOROWITZ + ": 8 KB SRAM, 10 pJ per 64-bit read",
    )
    buffer_kB: float = _f(
        64.0, float,
        "On-chip SRAM/eDRAM buffer holding recurrent state and activations of the streams "
        "being served (both the analog chip and the digital baselines have one): its leakage "
        "and area are charged.",
        unit="kB", lo=0.0, hi=1e9,
        source="ISAAC / PUMA tile buffer: 64 KB eDRAM per tile",
    )
    weight_sram_pJ_per_byte: float = _f(
        1.25, float,
        "Digital baseline: one byte of weights read from on-chip SRAM. The small-bank figure "
        "favours the baseline; 32 KB banks cost 2.5, 1 MB 12.5 pJ/byte.",
        unit="pJ per byte", lo=0.0, hi=1e6,
        source=_HOROWITZ + ": 8 KB SRAM, 10 pJ per 64-bit read (32 KB 20 pJ, 1 MB 100 pJ)",
    )
    dram_pJ_per_byte: float = _f(
        162.5, float,
        "Digital baseline: one byte of weights read from DRAM; the low end of Horowitz's "
        "range, which favours the baseline (high end 325 pJ/byte).",
        unit="pJ per byte", lo=0.0, hi=1e9,
        source=_HOROWITZ + ": DRAM 1.3-2.6 nJ per 64-bit access (1.3 nJ / 8 bytes)",
    )
    # -- leakage (static power over the inference time) ---------------------------------------
    adc_leak_uW: float = _f(
        200.0, float,
        "Static power of one column ADC at 8 bits (32 nm); a b-bit ADC leaks in proportion to "
        "its area, 2^(b-8) (area.adc_area_um2). Every ADC of every allocated tile leaks for "
        "the whole inference (no power gating).",
        unit="uW per ADC", lo=0.0, hi=1e9,
        source="PUMA simulator adc_pow_leak = 0.2 mW (ISAAC's 8-bit ADC), 32 nm",
    )
    dac_leak_uW: float = _f(
        0.39, float, "Static power of one row DAC (32 nm).",
        unit="uW per DAC", lo=0.0, hi=1e9,
        source="PUMA simulator dac_pow_leak = 0.000390625 mW, 32 nm",
    )
    tile_leak_uW: float = _f(
        5.0, float,
        "Static power of one tile's own periphery (shift-and-add, sample-and-hold) beyond its "
        "ADCs and DACs (32 nm).",
        unit="uW per tile", lo=0.0, hi=1e9,
        source="PUMA simulator sna_pow_leak = 0.005 mW (S&H: 1e-6 mW per column), 32 nm",
    )
    periphery_leak_uW: float = _f(
        218.0, float,
        "Static power of the digital vector unit and activation unit serving one layer "
        "(32 nm).",
        unit="uW per layer", lo=0.0, hi=1e9,
        source="PUMA simulator alu_pow_leak 0.27 mW x 32/45 + act_pow_leak 0.026 mW, 32 nm",
    )
    sram_leak_uW_per_kB: float = _f(
        7.2, float,
        "Static power of on-chip buffer memory per kB (32 nm): the state buffer on both "
        "sides and the digital baseline's weight SRAM. Small SRAM macros leak up to ~165 "
        "uW/kB (PUMA's 2 KB data memory).",
        unit="uW per kB", lo=0.0, hi=1e9,
        source="PUMA simulator edram_pow_leak 0.46 mW for 64 KB, 32 nm",
    )
    # -- digital baselines --------------------------------------------------------------------
    baseline_array_dim: int = _f(
        16, int,
        "The digital baselines are weight-stationary systolic MAC arrays of dim x dim "
        "processing elements at 1 / digital_op_time_ns: every input is read from the "
        "buffer once per dim outputs, every partial sum leaves the array once per dim inputs.",
        unit="PEs per side", lo=1, hi=4096,
        source="modelling choice: an edge MAC array the size of Eyeriss (12 x 14 PEs, Chen et "
               "al., ISSCC 2016)",
    )
    # -- technology ---------------------------------------------------------------------------
    node_nm: float = _f(
        32.0, float,
        "Technology node of the chip (and of the digital baselines): every price and area is "
        "converted from the node of its source to this one (devices/technology.py: Stillmaker "
        "& Baas 2017 for logic and SRAM; converters per converter_node_scaling; cell reads and "
        "DRAM not scaled).",
        unit="nm", lo=7.0, hi=130.0,
        source="32 nm: the node of ISAAC and PUMA, whose converter figures the model uses",
    )
    converter_node_scaling: float = _f(
        1.0, float,
        "Exponent on the digital energy/area scaling factor applied to ADCs and DACs: 1 = "
        "converters scale like logic (comparator/SAR-logic limited, as low-resolution fast "
        "ADCs in Murmann's survey), 0 = no scaling (kT/C- or matching-limited).",
        unit="exponent", lo=0.0, hi=1.0,
        source="B. Murmann, 'ADC Performance Survey 1997-2024' (Walden FOM trend with node); "
               "modelling choice",
    )
    adc_retune_vectors: int = _f(
        64, int,
        "Input vectors a chip with adc.track_drift reads through every tile to re-set its ADC "
        "ranges at the device age (one retune event): each is a full analog read (DACs, "
        "cells, ADCs) plus one digital compare per ADC output (max tracking), and every ADC "
        "range then gets one reference-DAC write. Priced per retune event in the one-off "
        "section, never per inference.",
        unit="vectors per retune", lo=1, hi=10 ** 7,
        source="assumption: a calibration set the size nvmstream's convert keeps (64); "
        "periodic on-chip ADC/affine recalibration as on IBM HERMES (Le Gallo et al., Nature "
        "Electronics 6, 680 (2023))",
    )
    # -- one-off (load time) ------------------------------------------------------------------
    storage_read_pJ_per_bit: float = _f(
        20.3125, float,
        "One bit of weight codes read from NVM storage when the device is programmed "
        "(one-off, not per inference). Priced at Horowitz's DRAM access energy for want of "
        "a NAND-specific figure.",
        unit="pJ per bit", lo=0.0, hi=1e9,
        source=_HOROWITZ + ": DRAM 1.3 nJ per 64-bit access (stand-in)",
    )
    program_pJ_per_cell: float = _f(
        50.0, float,
        "Programming one cell to its target conductance, all write-verify pulses included "
        "(one-off). Order of magnitude for PCM: a few pulses of ~10-20 pJ.",
        unit="pJ per cell", lo=0.0, hi=1e9,
        source="order-of-magnitude estimate for iterative PCM programming (tens of pJ per "
               "cell); not taken from a single measurement - override for your device",
    )


@dataclass(frozen=True)
class AreaSection(_Section):
    """Silicon area of the analog chip's parts (docs/energy.md, section "Area"), at the node
    of each source; the model converts them to energy.node_nm."""

    section_name = "area"
    cell_area_F2: float = _f(
        4.0, float,
        "Area of one NVM cell in units of F^2 (F = energy.node_nm); a signed weight is a "
        "differential pair of cells. 4 F^2 is the ideal cross-point; 1T1R PCM/RRAM cells take "
        "~25-40 F^2.",
        unit="F^2", lo=1.0, hi=1e4,
        source="4 F^2 cross-point (ISAAC, PUMA crossbars); 1T1R range from the RRAM/PCM "
               "literature",
    )
    adc_area_um2: float = _f(
        1200.0, float,
        "Area of one 8-bit column ADC at 32 nm; a b-bit ADC takes adc_area_um2 * 2^(b-8) "
        "(capacitive-DAC SAR scaling, as Accelergy's resolution rule).",
        unit="um^2 per ADC", lo=0.0, hi=1e9,
        source="ISAAC / PUMA simulator adc_area = 0.0012 mm^2 (8 bits, 1.28 GS/s), 32 nm",
    )
    dac_area_um2: float = _f(
        0.167, float,
        "Area of one 1-bit row DAC at 32 nm; a b-bit DAC takes dac_area_um2 * 2^(b-1).",
        unit="um^2 per 1-bit DAC", lo=0.0, hi=1e9,
        source="ISAAC / PUMA simulator dac_area = 1.67e-7 mm^2, 32 nm",
    )
    tile_periphery_area_um2: float = _f(
        70.0, float,
        "Per-tile periphery besides converters: shift-and-add and sample-and-holds (32 nm).",
        unit="um^2 per tile", lo=0.0, hi=1e9,
        source="PUMA simulator sna_area 0.00006 mm^2 + 256 S&H x 0.039 um^2, 32 nm",
    )
    core_periphery_area_um2: float = _f(
        4332.0, float,
        "Digital vector unit and activation unit serving one layer (32 nm).",
        unit="um^2 per layer", lo=0.0, hi=1e9,
        source="PUMA simulator alu_area 0.00567 mm^2 x 32/45 + act_area 0.0003 mm^2, 32 nm",
    )
    sram_area_um2_per_kB: float = _f(
        1914.0, float,
        "On-chip SRAM area per kB (32 nm): the state buffer on both sides and the digital "
        "baseline's weight SRAM.",
        unit="um^2 per kB", lo=0.0, hi=1e9,
        source="PUMA simulator data memory 2 KB = 0.00392 mm^2, 32 nm",
    )


#: Section name -> section class, in profile order.
SECTIONS: dict[str, type[_Section]] = {
    "weights": WeightsSection,
    "storage": StorageSection,
    "mapping": MappingSection,
    "programming": ProgrammingSection,
    "faults": FaultsSection,
    "drift": DriftSection,
    "read": ReadSection,
    "vmm_noise": VmmNoiseSection,
    "dac": DacSection,
    "adc": AdcSection,
    "tile": TileSection,
    "energy": EnergySection,
    "area": AreaSection,
}

_TOP_FIELDS = {
    "name": "Profile name (the shipped name or the file stem unless set).",
    "description": "One-line description of the chip the profile models.",
    "source": "Where the profile's numbers come from (papers, code), cited.",
    "base": "Shipped profile this one was derived from ('' = none); informational once loaded.",
}


@dataclass(frozen=True)
class DeviceProfile:
    """A whole chip: top-level identity plus one frozen section per mechanism."""

    name: str = field(default="custom", metadata={"doc": _TOP_FIELDS["name"]})
    description: str = field(default="", metadata={"doc": _TOP_FIELDS["description"]})
    source: str = field(default="", metadata={"doc": _TOP_FIELDS["source"]})
    base: str = field(default="", metadata={"doc": _TOP_FIELDS["base"]})
    weights: WeightsSection = field(default_factory=WeightsSection)
    storage: StorageSection = field(default_factory=StorageSection)
    mapping: MappingSection = field(default_factory=MappingSection)
    programming: ProgrammingSection = field(default_factory=ProgrammingSection)
    faults: FaultsSection = field(default_factory=FaultsSection)
    drift: DriftSection = field(default_factory=DriftSection)
    read: ReadSection = field(default_factory=ReadSection)
    vmm_noise: VmmNoiseSection = field(default_factory=VmmNoiseSection)
    dac: DacSection = field(default_factory=DacSection)
    adc: AdcSection = field(default_factory=AdcSection)
    tile: TileSection = field(default_factory=TileSection)
    energy: EnergySection = field(default_factory=EnergySection)
    area: AreaSection = field(default_factory=AreaSection)

    def __post_init__(self) -> None:
        for key in _TOP_FIELDS:
            if not isinstance(getattr(self, key), str):
                raise ProfileError("", key, f"expected a string, got {getattr(self, key)!r}")
        for sec, cls in SECTIONS.items():
            if not isinstance(getattr(self, sec), cls):
                raise ProfileError("", sec, f"expected a {cls.__name__}")
        self._cross_check("")

    def _cross_check(self, origin: str) -> None:
        if self.storage.ber > 0 and self.weights.bits == 0:
            raise ProfileError(
                origin, "storage.ber",
                "bit errors need integer codes: set weights.bits to 2..8 or storage.ber to 0",
            )
        if self.storage.encoding == "unary" and self.weights.bits > 6:
            raise ProfileError(
                origin, "storage.encoding",
                f"'unary' needs weights.bits <= 6 (2^b - 2 stored bits), got {self.weights.bits}",
            )
        if self.tile.wire_ohm > 0 and self.dac.bits == 0:
            raise ProfileError(
                origin, "tile.wire_ohm",
                "IR drop needs input DACs (currents are taken per full-scale input code): "
                "set dac.bits to 2..12 or tile.wire_ohm to 0",
            )

    @property
    def storage_bits_per_code(self) -> float:
        """Stored bits per weight code, redundancy included: word bits (weights.bits, or
        2^b - 2 for unary) + storage.guard_bits + 1/storage.parity_group; 32 for float weights.
        What the energy/area model should charge per code read from storage."""
        b, s = self.weights.bits, self.storage
        if not b:
            return 32.0
        word = 2 * (2 ** (b - 1) - 1) if s.encoding == "unary" else b
        return float(word + s.guard_bits) + (1.0 / s.parity_group if s.parity_group else 0.0)

    # -- derived ---------------------------------------------------------------------------
    @property
    def qmax(self) -> float:
        """Largest weight code: 2^(bits-1)-1, or 1.0 for float weights (bits = 0)."""
        b = self.weights.bits
        return float(2 ** (b - 1) - 1) if b else 1.0

    # -- conversion ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists for tuples); ``DeviceProfile.from_dict`` inverts it."""
        out: dict[str, Any] = {k: getattr(self, k) for k in _TOP_FIELDS}
        for sec in SECTIONS:
            s = getattr(self, sec)
            out[sec] = {
                f.name: (list(v) if isinstance(v := getattr(s, f.name), tuple) else v)
                for f in dataclasses.fields(s)
            }
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str = "<dict>") -> "DeviceProfile":
        """Build and validate a profile from a nested dict (sections may be partial)."""
        return _build(dict(data), origin)

    def replace(self, **changes: Any) -> "DeviceProfile":
        """A copy with top-level fields or whole sections replaced (validated)."""
        return dataclasses.replace(self, **changes)

    def with_overrides(self, overrides: Mapping[str, Any] | Iterable[str] | None) -> "DeviceProfile":
        """A copy with ``"section.field=value"`` overrides (or a mapping) applied and validated."""
        if not overrides:
            return self
        data = self.to_dict()
        where = f"profile {self.name!r}"
        _apply_overrides(data, overrides, where)
        return _build(data, f"{where} with overrides")

    def to_toml(self) -> str:
        """The resolved profile as a self-contained TOML document (no ``base``)."""
        lines = [f"{k} = {_toml_value(getattr(self, k))}" for k in _TOP_FIELDS if k != "base"]
        for sec in SECTIONS:
            lines.append(f"\n[{sec}]")
            s = getattr(self, sec)
            for f in dataclasses.fields(s):
                lines.append(f"{f.name} = {_toml_value(getattr(s, f.name))}")
        return "\n".join(lines) + "\n"

    def describe(self) -> str:
        """Human-readable listing of every field: value, unit, meaning, allowed values, source."""
        out = [f"profile {self.name}"]
        if self.description:
            out.append(f"  {self.description}")
        if self.base:
            out.append(f"  base: {self.base}")
        if self.source:
            out.append(f"  source: {self.source}")
        for sec in SECTIONS:
            s = getattr(self, sec)
            out.append(f"\n[{sec}]  {(type(s).__doc__ or '').strip().splitlines()[0]}")
            for f in dataclasses.fields(s):
                m = f.metadata
                unit = f" {m['unit']}" if m["unit"] else ""
                out.append(f"  {sec}.{f.name} = {_toml_value(getattr(s, f.name))}{unit}")
                out.append(f"      {m['doc']}")
                out.append(f"      allowed: {_allowed_text(m)}; default: "
                           f"{_toml_value(f.default)}")
                if m["source"]:
                    out.append(f"      source: {m['source']}")
        return "\n".join(out)


# --- loading --------------------------------------------------------------------------------

_PROFILE_PACKAGE = "nvmstream.devices"


def _profiles_dir() -> Path:
    try:
        return Path(str(resources.files(_PROFILE_PACKAGE).joinpath("profiles")))
    except ModuleNotFoundError:  # pragma: no cover - imported outside the package
        return Path(__file__).resolve().parent / "profiles"


def list_profiles() -> list[str]:
    """Names of the shipped profiles (devices/profiles/*.toml), sorted."""
    return sorted(p.stem for p in _profiles_dir().glob("*.toml"))


def profile_path(name: str) -> Path:
    """Path of a shipped profile; an unknown name raises ProfileError listing the valid ones."""
    p = _profiles_dir() / f"{name}.toml"
    if not p.is_file():
        raise ProfileError(
            "", "profile", f"unknown profile {name!r}; shipped profiles: {', '.join(list_profiles())}"
        )
    return p


def _is_path_like(name_or_path: str | Path) -> bool:
    if isinstance(name_or_path, Path):
        return True
    return name_or_path.endswith(".toml") or "/" in name_or_path or "\\" in name_or_path


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ProfileError(str(path), "", "no such profile file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(str(path), "", f"not valid TOML: {exc}") from None


def _merge(into: dict[str, Any], data: Mapping[str, Any], origin: str) -> None:
    """Overlay a raw TOML document on a nested dict, rejecting unknown sections and fields."""
    for key, value in data.items():
        if key == "base":
            continue
        if key in _TOP_FIELDS:
            into[key] = value
            continue
        if key not in SECTIONS:
            allowed = ", ".join(list(_TOP_FIELDS) + list(SECTIONS))
            raise ProfileError(origin, key, f"unknown section or key; allowed: {allowed}")
        if not isinstance(value, Mapping):
            raise ProfileError(origin, key, "expected a [section] table")
        fields_ = {f.name for f in dataclasses.fields(SECTIONS[key])}
        sec = into.setdefault(key, {})
        for fname, fval in value.items():
            if fname not in fields_:
                raise ProfileError(
                    origin, f"{key}.{fname}",
                    f"unknown field; fields of [{key}]: {', '.join(sorted(fields_))}",
                )
            sec[fname] = fval


def _resolve_file(path: Path, stack: tuple[str, ...] = ()) -> dict[str, Any]:
    """Raw nested dict of a profile file with its ``base`` chain applied (base first)."""
    origin = str(path)
    key = str(path.resolve())
    if key in stack:
        raise ProfileError(origin, "base", "circular base chain: " + " -> ".join(stack + (key,)))
    data = _read_toml(path)
    merged: dict[str, Any] = {}
    base = data.get("base")
    if base is not None:
        if not isinstance(base, str) or not base:
            raise ProfileError(origin, "base", f"expected a profile name, got {base!r}")
        if _is_path_like(base):
            base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
            if not base_path.is_file():
                raise ProfileError(origin, "base", f"base file {str(base_path)!r} not found")
        else:
            try:
                base_path = profile_path(base)
            except ProfileError:
                raise ProfileError(
                    origin, "base",
                    f"unknown base profile {base!r}; shipped profiles: {', '.join(list_profiles())}",
                ) from None
        merged = _resolve_file(base_path, stack + (key,))
        merged["base"] = base
    _merge(merged, data, origin)
    merged.setdefault("name", path.stem)
    if "name" not in data:
        merged["name"] = path.stem
    return merged


def _build(data: dict[str, Any], origin: str) -> DeviceProfile:
    """Validate a nested dict into a DeviceProfile; every error names ``origin`` and the field."""
    data = dict(data)
    _merge({}, data, origin)  # rejects unknown sections / fields
    kwargs: dict[str, Any] = {}
    for key in _TOP_FIELDS:
        if key in data:
            v = data[key]
            if not isinstance(v, str):
                raise ProfileError(origin, key, f"expected a string, got {v!r}")
            kwargs[key] = v
    for sec, cls in SECTIONS.items():
        values = dict(data.get(sec, {}))
        checked = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                checked[f.name] = _check_value(values[f.name], f.metadata, origin, f"{sec}.{f.name}")
        try:
            obj = cls(**checked)
        except ProfileError as exc:
            raise ProfileError(origin, exc.field, exc.problem) from None
        kwargs[sec] = obj
    try:
        return DeviceProfile(**kwargs)
    except ProfileError as exc:
        raise ProfileError(origin, exc.field, exc.problem) from None


_OVERRIDE_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\s*=(.*)$", re.S)
_BARE_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``"section.field=value"`` into ``("section.field", value)``.

    The value is read as a TOML scalar (``6``, ``3e-4``, ``true``, ``inf``, ``"gray"``,
    ``[0.1, 0.2]``); a bare word such as ``gray`` is taken as a string.
    """
    origin = f"override {text!r}"
    if not isinstance(text, str):
        raise ProfileError("override", "", f"expected 'section.field=value', got {text!r}")
    m = _OVERRIDE_RE.match(text)
    if not m:
        raise ProfileError(origin, "", "bad override syntax; expected 'section.field=value'")
    sec, fname, raw = m.group(1), m.group(2), m.group(3).strip()
    key = f"{sec}.{fname}" if fname else sec
    if raw == "":
        raise ProfileError(origin, key, "bad override syntax: missing value after '='")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if _BARE_WORD.match(raw):
            value = raw
        else:
            raise ProfileError(origin, key, f"cannot parse value {raw!r} as a TOML scalar") from None
    return key, value


def _apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any] | Iterable[str],
                     where: str = "") -> None:
    """Apply overrides to a nested dict; ``where`` (the profile's file or name) prefixes errors."""
    pre = f"{where}, " if where else ""
    if isinstance(overrides, str):
        overrides = [overrides]
    if isinstance(overrides, Mapping):
        items = [(str(k), v, f"{pre}override {k!r}") for k, v in overrides.items()]
    else:
        items = []
        for text in overrides:
            try:
                k, v = parse_override(text)
            except ProfileError as exc:
                raise ProfileError(pre + exc.origin, exc.field, exc.problem) from None
            items.append((k, v, f"{pre}override {text!r}"))
    for key, value, origin in items:
        parts = key.split(".")
        if len(parts) == 1 and parts[0] in _TOP_FIELDS and parts[0] != "base":
            data[parts[0]] = value
            continue
        if len(parts) != 2:
            raise ProfileError(origin, key, "expected 'section.field' (e.g. 'adc.bits')")
        sec, fname = parts
        if sec not in SECTIONS:
            raise ProfileError(origin, key, f"unknown section {sec!r}; sections: {', '.join(SECTIONS)}")
        names = {f.name for f in dataclasses.fields(SECTIONS[sec])}
        if fname not in names:
            raise ProfileError(
                origin, key, f"unknown field; fields of [{sec}]: {', '.join(sorted(names))}"
            )
        meta = next(f.metadata for f in dataclasses.fields(SECTIONS[sec]) if f.name == fname)
        data.setdefault(sec, {})[fname] = _check_value(value, meta, origin, key)


def load_profile(
    name_or_path: str | Path | DeviceProfile,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
) -> DeviceProfile:
    """Load a shipped profile by name or a ``.toml`` file by path, then apply ``overrides``.

    ``overrides`` is a mapping ``{"adc.bits": 6}`` or a list of ``"section.field=value"``
    strings. A DeviceProfile passes through (with overrides applied).
    """
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path.with_overrides(overrides)
    if not isinstance(name_or_path, (str, Path)):
        raise ProfileError("", "profile", f"expected a profile name or path, got {name_or_path!r}")
    path = Path(name_or_path) if _is_path_like(name_or_path) else profile_path(str(name_or_path))
    origin = str(path)
    data = _resolve_file(path)
    prof = _build(data, origin)
    if overrides:
        data = prof.to_dict()
        _apply_overrides(data, overrides, origin)
        prof = _build(data, f"{origin} with overrides")
    return prof


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'
