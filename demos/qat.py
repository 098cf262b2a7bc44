"""Moved: the training layers live in ``nvmstream.runtime.training.qat`` (needs torch).

This module re-exports them for old scripts; new code imports the package.
"""

from nvmstream.runtime.training.hardware import HardwareSpec  # noqa: F401
from nvmstream.runtime.training.qat import *  # noqa: F401,F403
