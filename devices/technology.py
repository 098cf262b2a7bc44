"""Technology-node scaling of energy and area prices (docs/energy.md, section "Technology node").

Every price in the profile's ``[energy]`` and ``[area]`` sections was measured or simulated at
some node (Horowitz's digital figures at 45 nm, ISAAC's and PUMA's at 32 nm); the pricing code
converts each to the profile's ``energy.node_nm`` with the factors below before using it.

Digital logic and SRAM follow Stillmaker & Baas, "Scaling equations for the accurate
prediction of CMOS device performance from 180 nm to 7 nm", Integration 58 (2017) 74-81: their
fitted energy equations E(node) = a V^2 + b V + c (relative units; coefficients below, as
tabulated in the paper's energy-scaling table and reproduced by Accelergy's
hwcomponents-library), evaluated at one common supply voltage ``SCALING_VDD_V`` so that the
factor is the capacitance-and-technology part of the change, and their area scaling table.
Between tabulated nodes the factor is interpolated linearly in the table index, as Accelergy
does. Converters (ADC, DAC) follow the digital factor raised to
``energy.converter_node_scaling``: 1 for comparator- and logic-limited low-resolution SAR/flash
converters, whose Walden FOM tracks the digital node in Murmann's ADC survey, down to 0 for a
converter limited by kT/C noise or matching, whose energy does not scale. Cell reads
(V^2 G t) and DRAM accesses (off-chip I/O) are not scaled.

This module uses the standard library only.
"""

from __future__ import annotations

import math

__all__ = ["TECH_NODES_NM", "SCALING_VDD_V", "energy_factor", "area_factor", "check_node"]

#: Nodes of Stillmaker & Baas's tables (nm), largest first.
TECH_NODES_NM: tuple[int, ...] = (130, 90, 65, 45, 32, 20, 16, 14, 10, 7)

#: Energy-equation coefficients (a, b, c) per node: E = a V^2 + b V + c, relative units
#: (Stillmaker & Baas 2017, energy scaling table; same order as TECH_NODES_NM).
_ENERGY_ABC: tuple[tuple[float, float, float], ...] = (
    (7.171, -6.709, 2.904),
    (4.762, -4.781, 2.092),
    (3.755, -4.398, 1.975),
    (1.103, -0.362, 0.2767),
    (0.9559, -0.7823, 0.471),
    (0.373, -0.1582, 0.04104),
    (0.2958, -0.1241, 0.03024),
    (0.2363, -0.09675, 0.02239),
    (0.2068, -0.09311, 0.02375),
    (0.1776, -0.09097, 0.02447),
)

#: Area scaling factors: AREA[i][j] multiplies an area at TECH_NODES_NM[i] to give it at
#: TECH_NODES_NM[j] (Stillmaker & Baas 2017, area scaling table).
_AREA: tuple[tuple[float, ...], ...] = (
    (1, 0.44, 0.23, 0.16, 0.072, 0.033, 0.03, 0.027, 0.016, 0.0092),
    (2.3, 1, 0.53, 0.35, 0.16, 0.075, 0.067, 0.061, 0.036, 0.021),
    (4.3, 1.9, 1, 0.66, 0.31, 0.14, 0.13, 0.12, 0.068, 0.039),
    (6.4, 2.8, 1.5, 1, 0.46, 0.21, 0.19, 0.17, 0.1, 0.059),
    (14, 6.1, 3.3, 2.2, 1, 0.46, 0.41, 0.38, 0.22, 0.13),
    (30, 13, 7.1, 4.7, 2.2, 1, 0.89, 0.82, 0.48, 0.28),
    (34, 15, 7.9, 5.3, 2.4, 1.1, 1, 0.91, 0.54, 0.31),
    (37, 16, 8.7, 5.8, 2.7, 1.2, 1.1, 1, 0.59, 0.34),
    (63, 28, 15, 9.8, 4.5, 2.1, 1.9, 1.7, 1, 0.58),
    (110, 48, 25, 17, 7.8, 3.6, 3.2, 2.9, 1.7, 1),
)

#: The common supply voltage at which the energy equations are compared (V); 0.8 V lies in
#: the fitted range of every node from 45 nm down (Accelergy uses the same default).
SCALING_VDD_V: float = 0.8


def check_node(node_nm: float) -> float:
    """``node_nm`` as a float, or ValueError if outside the tables (7..130 nm)."""
    if isinstance(node_nm, bool) or not isinstance(node_nm, (int, float)) \
            or not math.isfinite(node_nm) \
            or not TECH_NODES_NM[-1] <= node_nm <= TECH_NODES_NM[0]:
        raise ValueError(f"technology node must be a number in [{TECH_NODES_NM[-1]}, "
                         f"{TECH_NODES_NM[0]}] nm, got {node_nm!r}")
    return float(node_nm)


def _index(node_nm: float) -> float:
    """Fractional index of ``node_nm`` in TECH_NODES_NM (linear between neighbours)."""
    n = check_node(node_nm)
    for i in range(len(TECH_NODES_NM) - 1):
        big, small = TECH_NODES_NM[i], TECH_NODES_NM[i + 1]
        if small <= n <= big:
            return i + (big - n) / (big - small)
    return float(len(TECH_NODES_NM) - 1)


def _energy_at(node_nm: float, vdd: float) -> float:
    x = _index(node_nm)
    lo = int(math.floor(x))
    hi = min(lo + 1, len(TECH_NODES_NM) - 1)
    w = x - lo

    def e(i: int) -> float:
        a, b, c = _ENERGY_ABC[i]
        return a * vdd * vdd + b * vdd + c
    return e(lo) * (1 - w) + e(hi) * w


def energy_factor(from_nm: float, to_nm: float, vdd: float = SCALING_VDD_V) -> float:
    """Multiply a digital energy priced at ``from_nm`` by this to price it at ``to_nm``."""
    return _energy_at(to_nm, vdd) / _energy_at(from_nm, vdd)


def area_factor(from_nm: float, to_nm: float) -> float:
    """Multiply a digital/SRAM area at ``from_nm`` by this to get it at ``to_nm``."""
    x, y = _index(from_nm), _index(to_nm)
    x0, y0 = int(math.floor(x)), int(math.floor(y))
    x1, y1 = min(x0 + 1, len(TECH_NODES_NM) - 1), min(y0 + 1, len(TECH_NODES_NM) - 1)
    fx, fy = x - x0, y - y0
    return (_AREA[x0][y0] * (1 - fx) * (1 - fy) + _AREA[x0][y1] * (1 - fx) * fy
            + _AREA[x1][y0] * fx * (1 - fy) + _AREA[x1][y1] * fx * fy)
