from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures" / "onnx"
sys.path.insert(0, str(TESTS))


def fixture_files() -> list[dict]:
    """The committed torch-exported fixtures, as listed by their manifest."""
    return json.loads((FIXTURES / "manifest.json").read_text())["files"]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
