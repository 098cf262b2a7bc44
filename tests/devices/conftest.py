"""Shared fixtures for the nvmstream.devices tests (all randomness is seeded)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def write_toml(tmp_path):
    """Write a TOML text to tmp_path/NAME.toml and return its path."""

    def _write(text: str, name: str = "chip") -> str:
        p = tmp_path / f"{name}.toml"
        p.write_text(text)
        return str(p)

    return _write
