"""nvmstream.devices: the emulated analog NVM crossbar accelerator.

Profiles (TOML data, :mod:`.profile`) describe a chip; :class:`Device` programs integer weight
codes into noisy differential conductances (:mod:`.storage`, :mod:`.conductance`); :mod:`.quant`
and :mod:`.noise` hold the reference DAC/ADC quantizers and per-read noise samplers that the
runtime's kernels are checked against. This package never imports the runtime or converters.
Physics, formulas and sources: devices/README.md.
"""

from __future__ import annotations

from nvmstream.devices.conductance import (
    DRIFT_MODELS,
    PROGRAMMING_MODELS,
    READ_MODELS,
    DifferentialMapping,
    GlobalDriftCompensation,
    StuckAtFaults,
)
from nvmstream.devices.device import Device, ProgrammedMatrix
from nvmstream.devices.noise import (
    column_read_noise_sample,
    column_read_noise_var,
    vmm_noise_sample,
    vmm_noise_sigma,
)
from nvmstream.devices.profile import (
    SECTIONS,
    DeviceProfile,
    ProfileError,
    list_profiles,
    load_profile,
    parse_override,
)
from nvmstream.devices.quant import (
    adc_codes,
    adc_quantize,
    dac_codes,
    dac_quantize,
    dequantize,
    qmax_for_bits,
    quantize_weights,
    symmetric_step,
)
from nvmstream.devices.registry import UnknownMechanismError
from nvmstream.devices.storage import DETECTIONS, ENCODINGS, BitErrorStorage

__all__ = [
    "Device",
    "ProgrammedMatrix",
    "DeviceProfile",
    "ProfileError",
    "SECTIONS",
    "load_profile",
    "list_profiles",
    "parse_override",
    "quantize_weights",
    "dequantize",
    "qmax_for_bits",
    "symmetric_step",
    "dac_codes",
    "dac_quantize",
    "adc_codes",
    "adc_quantize",
    "vmm_noise_sigma",
    "vmm_noise_sample",
    "column_read_noise_var",
    "column_read_noise_sample",
    "BitErrorStorage",
    "ENCODINGS",
    "DETECTIONS",
    "DifferentialMapping",
    "StuckAtFaults",
    "GlobalDriftCompensation",
    "PROGRAMMING_MODELS",
    "DRIFT_MODELS",
    "READ_MODELS",
    "UnknownMechanismError",
]
