"""Hypothesis strategies shared by the tests: small stacks of the series' layers."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from hypothesis import strategies as st

ACTIVATIONS = ["relu", "leaky_relu", "heaviside", "identity"]


@st.composite
def stacks(draw: Any, n_in: int, n_out: int, rational: bool = True) -> dict[str, Any]:
    """A model file's dict: input, then 1–3 blocks of (linear [+ activation]), the last linear
    of ``n_out`` neurons; small exact weights; logistic layers only when not ``rational``."""
    activations = ACTIVATIONS + ([] if rational else ["logistic"])
    small = st.integers(-6, 6).map(lambda v: str(Fraction(v, 4)))
    layers: list[dict[str, Any]] = [{"type": "input"}]
    width = n_in
    blocks = draw(st.integers(1, 3))
    for b in range(blocks):
        out = n_out if b == blocks - 1 else draw(st.integers(1, 3))
        bias = draw(st.booleans())
        weights = [[draw(small) for _ in range(width)] for _ in range(out)]
        layer: dict[str, Any] = {"type": "linear", "out": out, "bias": bias, "weights": weights}
        if bias:
            layer["biases"] = [draw(small) for _ in range(out)]
        layers.append(layer)
        width = out
        if draw(st.booleans()):
            kind = draw(st.sampled_from(activations))
            layers.append({"type": kind, **({"slope": "1/8"} if kind == "leaky_relu" else {})})
    return {"name": "drawn", "layers": layers, "loss": "squared_error"}
