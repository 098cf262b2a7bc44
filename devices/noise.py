"""Per-read noise references: column read noise and VMM noise at a signal-to-noise ratio.

These are the slow, obvious numpy definitions the runtime's kernels are checked against.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "vmm_noise_sigma",
    "vmm_noise_sample",
    "column_read_noise_var",
    "column_read_noise_sample",
]


def vmm_noise_sigma(power: np.ndarray | float, snr_db: float) -> np.ndarray:
    """Standard deviation sqrt(P / 10^(snr_db/10)) of the additive pre-activation noise.

    ``power`` is the layer's calibrated mean signal power P (mean of the squared
    pre-activation); ``snr_db = inf`` gives 0 (noise off). Qin & Vucinic, arXiv 1811.10649.
    """
    p = np.asarray(power, dtype=np.float64)
    if np.any(p < 0):
        raise ValueError("signal power must be >= 0")
    if math.isinf(snr_db) and snr_db > 0:
        return np.zeros_like(p)
    if math.isnan(snr_db):
        raise ValueError("snr_db is nan")
    return np.sqrt(p / 10.0 ** (snr_db / 10.0))


def vmm_noise_sample(pre: np.ndarray, power: np.ndarray | float, snr_db: float,
                     rng: np.random.Generator) -> np.ndarray:
    """``pre + N(0, P / 10^(snr_db/10))`` elementwise (``power`` broadcast over ``pre``)."""
    pre = np.asarray(pre, dtype=np.float64)
    sigma = np.broadcast_to(vmm_noise_sigma(power, snr_db), pre.shape)
    return pre + sigma * rng.standard_normal(pre.shape)


def column_read_noise_var(u: np.ndarray, read_var: np.ndarray) -> np.ndarray:
    """Variance of the read noise on each output: var_j = sum_i u_i^2 read_var[j, i].

    ``u`` is the input vector ``[in]`` (or a batch ``[batch, in]``) in DAC code units and
    ``read_var[out, in]`` the per-pair read-noise variance in weight-code units^2 (from
    :class:`~nvmstream.devices.device.ProgrammedMatrix`). The sum of independent per-cell
    Gaussians on a column is Gaussian with this variance, so sampling it per output is exact in
    distribution. Returns ``[out]`` (or ``[batch, out]``), float64.
    """
    u = np.asarray(u, dtype=np.float64)
    rv = np.asarray(read_var, dtype=np.float64)
    return (u * u) @ rv.T


def column_read_noise_sample(u: np.ndarray, read_var: np.ndarray,
                             rng: np.random.Generator) -> np.ndarray:
    """One draw of the per-output read noise N(0, column_read_noise_var(u, read_var))."""
    var = column_read_noise_var(u, read_var)
    return np.sqrt(var) * rng.standard_normal(var.shape)
