"""Conversion errors: every message names the file, the node, its op and why."""

from __future__ import annotations


class NvmConversionError(ValueError):
    """An ONNX model nvmstream cannot convert faithfully.

    Attributes name what went wrong so callers (and the CLI) can report it precisely.
    """

    def __init__(self, reason: str, *, file: str | None = None, node: str | None = None,
                 op: str | None = None) -> None:
        self.reason = reason
        self.file = file
        self.node = node
        self.op = op
        parts = []
        if file:
            parts.append(f"{file}")
        if node is not None or op is not None:
            parts.append(f"node {node!r} (op {op})")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)

    def with_file(self, file: str) -> "NvmConversionError":
        if self.file:
            return self
        return NvmConversionError(self.reason, file=file, node=self.node, op=self.op)


class NvmInputError(ValueError):
    """Run-time input that does not fit the model (shape, dtype, missing input)."""
