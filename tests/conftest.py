from __future__ import annotations

import sys
from pathlib import Path

# tests/ holds plain helper modules (onnx_util.py) imported by several test files
sys.path.insert(0, str(Path(__file__).resolve().parent))
