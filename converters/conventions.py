"""Conventions, normalised once and tested in one place.

* Gate order: the IR keeps ONNX's order -- LSTM ``i, o, f, c``; GRU ``z, r, h``; RNN one gate.
  PyTorch orders LSTM gates ``i, f, g, o`` and GRU gates ``r, z, n``; the exporters reorder them
  (the dynamo exporter at run time with Slice/Concat, which the constant folder removes), so the
  converter never sees PyTorch order. ``TORCH_TO_ONNX_*`` permutations are kept for the training
  scripts and tests that compare against PyTorch modules directly.
* Layout: ONNX ``layout=0`` means ``X[T, B, I]``, ``Y[T, D, B, H]``, ``Y_h[D, B, H]``;
  ``layout=1`` means ``X[B, T, I]``, ``Y[B, T, D, H]``, ``Y_h[B, D, H]``. Internally every sequence
  tensor is ``[B, T, F]`` with ``F = D * H`` (forward block first) and every recurrent weight is
  split per direction as ``W[D, G*H, I]``.
* Activation functions: ONNX names (case-insensitive) with alpha/beta *packed*: each function that
  takes an alpha consumes the next ``activation_alpha`` entry (likewise beta), as onnxruntime
  does. A function that needs a parameter with no default and none given is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}

# The gate layout, once: gate blocks of H rows each, in this order, along the G*H axis of
# W, R, Wb, Rb (ONNX order). IR, kernels (runtime/kernels/cells.py), the numpy twin
# (tests/naive.py) and the training library all slice through :func:`gate_slice`.
GATE_ORDER = {"LSTM": ("i", "o", "f", "c"), "GRU": ("z", "r", "h"), "RNN": ("h",)}
# LSTM peepholes P[3H] are ordered i, o, f
PEEPHOLE_ORDER = ("i", "o", "f")


def gate_index(kind: str, gate: str) -> int:
    """Block index of ``gate`` in a ``kind`` layer's gate axis."""
    try:
        return GATE_ORDER[kind].index(gate)
    except (KeyError, ValueError):
        raise ValueError(f"{kind} has no gate {gate!r}; gates: "
                         f"{', '.join(GATE_ORDER.get(kind, ()))}") from None


def gate_slice(kind: str, gate: str, hidden: int) -> slice:
    """Rows of ``gate`` in a ``kind`` layer's ``[G*H, ...]`` weights or ``[G*H]`` bias."""
    k = gate_index(kind, gate)
    return slice(k * hidden, (k + 1) * hidden)
DEFAULT_ACTIVATIONS = {
    "LSTM": ("Sigmoid", "Tanh", "Tanh"),
    "GRU": ("Sigmoid", "Tanh"),
    "RNN": ("Tanh",),
}
DIRECTIONS = ("forward", "reverse", "bidirectional")

# PyTorch gate blocks -> ONNX gate blocks (index lists into torch's blocks).
TORCH_TO_ONNX_LSTM = (0, 3, 1, 2)  # torch i,f,g,o -> onnx i,o,f,c
TORCH_TO_ONNX_GRU = (1, 0, 2)      # torch r,z,n   -> onnx z,r,h

# name -> (takes alpha, takes beta, default alpha, default beta); None = no default.
_ACT_PARAMS: dict[str, tuple[bool, bool, float | None, float | None]] = {
    "relu": (False, False, None, None),
    "tanh": (False, False, None, None),
    "sigmoid": (False, False, None, None),
    "affine": (True, True, None, None),
    "leakyrelu": (True, False, 0.01, None),
    "thresholdedrelu": (True, False, 1.0, None),
    "scaledtanh": (True, True, None, None),
    "hardsigmoid": (True, True, 0.2, 0.5),
    "elu": (True, False, 1.0, None),
    "softsign": (False, False, None, None),
    "softplus": (False, False, None, None),
}
ACTIVATION_NAMES = tuple(sorted(_ACT_PARAMS))


@dataclass(frozen=True)
class Activation:
    """One activation function with its parameters (ONNX RNN-family semantics)."""

    name: str           # lower-case ONNX name, e.g. "sigmoid", "hardsigmoid"
    alpha: float = 0.0
    beta: float = 0.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return apply_activation(self, x)

    def __str__(self) -> str:
        a, b = _ACT_PARAMS[self.name][:2]
        args = [f"{v:g}" for v, used in ((self.alpha, a), (self.beta, b)) if used]
        return f"{self.name}({', '.join(args)})" if args else self.name


def apply_activation(act: Activation, x: np.ndarray) -> np.ndarray:
    """Evaluate ``act`` on float32 ``x`` (returns float32)."""
    n, a, b = act.name, np.float32(act.alpha), np.float32(act.beta)
    one = np.float32(1.0)
    if n == "sigmoid":
        return (one / (one + np.exp(-x))).astype(np.float32, copy=False)
    if n == "tanh":
        return np.tanh(x)
    if n == "relu":
        return np.maximum(x, np.float32(0))
    if n == "affine":
        return a * x + b
    if n == "leakyrelu":
        return np.where(x >= 0, x, a * x).astype(np.float32, copy=False)
    if n == "thresholdedrelu":
        return np.where(x > a, x, np.float32(0)).astype(np.float32, copy=False)
    if n == "scaledtanh":
        return a * np.tanh(b * x)
    if n == "hardsigmoid":
        return np.clip(a * x + b, np.float32(0), one)
    if n == "elu":
        return np.where(x >= 0, x, a * (np.exp(x) - one)).astype(np.float32, copy=False)
    if n == "softsign":
        return x / (one + np.abs(x))
    if n == "softplus":
        return np.log1p(np.exp(x)).astype(np.float32, copy=False)
    raise ValueError(f"unknown activation {n!r}; valid: {', '.join(ACTIVATION_NAMES)}")


def parse_activations(kind: str, num_directions: int, names: list[str] | None,
                      alphas: list[float] | None, betas: list[float] | None
                      ) -> tuple[tuple[Activation, ...], ...]:
    """Normalise ONNX ``activations``/``activation_alpha``/``activation_beta`` attributes.

    Returns one tuple of activations per direction. Raises ``ValueError`` naming the problem.
    """
    per_dir = len(DEFAULT_ACTIVATIONS[kind])
    if not names:
        names = list(DEFAULT_ACTIVATIONS[kind]) * num_directions
    names = list(names)
    if len(names) == per_dir and num_directions == 2:
        names = names * 2  # onnxruntime accepts one set for both directions
    if len(names) != per_dir * num_directions:
        raise ValueError(f"activations has {len(names)} entries; {kind} with {num_directions} "
                         f"direction(s) needs {per_dir * num_directions}")
    alphas = list(alphas or [])
    betas = list(betas or [])
    ai = bi = 0
    acts: list[Activation] = []
    for raw in names:
        key = raw.lower()
        if key not in _ACT_PARAMS:
            raise ValueError(f"unsupported activation {raw!r}; valid: {', '.join(ACTIVATION_NAMES)}")
        takes_a, takes_b, da, db = _ACT_PARAMS[key]
        alpha = beta = 0.0
        if takes_a:
            if ai < len(alphas):
                alpha = float(alphas[ai]); ai += 1
            elif da is not None:
                alpha = da
            else:
                raise ValueError(f"activation {raw!r} needs an activation_alpha value")
        if takes_b:
            if bi < len(betas):
                beta = float(betas[bi]); bi += 1
            elif db is not None:
                beta = db
            else:
                raise ValueError(f"activation {raw!r} needs an activation_beta value")
        acts.append(Activation(key, alpha, beta))
    if ai < len(alphas) or bi < len(betas):
        raise ValueError(f"activation_alpha/beta has unused values ({len(alphas) - ai} alpha, "
                         f"{len(betas) - bi} beta) for activations {names}")
    return tuple(tuple(acts[d * per_dir:(d + 1) * per_dir]) for d in range(num_directions))


def torch_to_onnx_gates(w: np.ndarray, kind: str, hidden: int) -> np.ndarray:
    """Reorder the gate blocks (axis 0) of a PyTorch weight/bias into ONNX order."""
    order = {"LSTM": TORCH_TO_ONNX_LSTM, "GRU": TORCH_TO_ONNX_GRU, "RNN": (0,)}[kind]
    blocks = [w[i * hidden:(i + 1) * hidden] for i in range(len(order))]
    return np.concatenate([blocks[i] for i in order], axis=0)


def layout_axes(layout: int) -> tuple[str, ...]:
    """Axis labels of X for an ONNX RNN-family ``layout`` attribute."""
    if layout == 0:
        return ("T", "B", "F")
    if layout == 1:
        return ("B", "T", "F")
    raise ValueError(f"layout must be 0 or 1, got {layout}")
