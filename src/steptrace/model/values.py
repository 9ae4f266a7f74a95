"""Every value of a data input's step, under the names a trace gives them.

    x, y            the data input and its expectation
    o{k}            layer k's output                     loss   Loss(oK, y)
    d{k}            δk = ∂Loss/∂(input of layer k), k = K + 1 (the loss) down to 1
    grad_w{k}       ∂Loss/∂W of layer k, row by row       grad_b{k}   ∂Loss/∂b
    w{k}_before …   the parameters before and after the step

Each tensor is an array of its rows' values, the rows along the first axis, as in
:mod:`.layers`: the recorder fills a chunk's columns with this code, and ``steptrace verify``
recomputes rows with it, so both run the very same operations. :func:`formulas` writes each
computed tensor's formula out, for messages about it.
"""

from __future__ import annotations

from typing import Any

from .layers import Array
from .stack import ParamSet, Stack

__all__ = ["formulas", "param_values", "row_values", "tensor_values"]

Values = dict[str, Any]


def row_values(
    stack: Stack, params: ParamSet, x: Array, y: Array, m: Any
) -> tuple[Values, ParamSet]:
    """What rows compute from their data and their step's parameters: x, y, every o{k},
    loss, every d{k}, each row's gradients (as tensors, and as parameters for the update)."""
    outs = stack.forward(params, x)
    bw = stack.backward(params, x, outs, y, m)
    values: Values = {"x": x, "y": y}
    for k, o in enumerate(outs, 1):
        values[f"o{k}"] = o
    values["loss"] = stack.loss.value(outs[-1], y)
    for k, d in bw.d.items():
        values[f"d{k}"] = d
    for k, grad in bw.grads.items():
        values[f"grad_w{k}"] = grad.w
        if grad.b is not None:
            values[f"grad_b{k}"] = grad.b
    return values, bw.grads


def param_values(stack: Stack, params: ParamSet, when: str) -> Values:
    """The parameters as tensors ``w{k}_<when>`` and ``b{k}_<when>`` (when: before, after)."""
    values: Values = {}
    for k in stack.param_layers:
        p = params[k]
        values[f"w{k}_{when}"] = p.w
        if p.b is not None:
            values[f"b{k}_{when}"] = p.b
    return values


def tensor_values(
    stack: Stack, params: ParamSet, after: ParamSet, x: Array, y: Array, m: Any, lr: Any
) -> Values:
    """Every tensor of the trace for rows with inputs ``x``, expectations ``y``, parameters
    ``params`` before their step and ``after`` it: arrays of the rows' values (parameters
    without a rows axis are the same for every row)."""
    values, _ = row_values(stack, params, x, y, m)
    values["lr"] = lr
    values.update(param_values(stack, params, "before"))
    values.update(param_values(stack, after, "after"))
    return values


#: The terminal's typography (``steptrace replay`` writes formulas so too).
PLAIN = {"ge": ">=", "minus": "-", "dot": " . ", "times": " * "}


def formulas(stack: Stack) -> dict[str, str]:
    """Each computed tensor's formula in the article's plain-text notation, by tensor name:
    ``{"o2": "o2 = L2(o1) = w . o1", "d3": "δ3 = δ4 if o2 >= 0 else 0", …}``."""
    top = stack.loss_number
    out: dict[str, str] = {}
    for k, layer in enumerate(stack.layers, 1):
        names = {**layer.settings(), **PLAIN, "x": "x" if k == 1 else f"o{k - 1}", "o": f"o{k}",
                 "d": f"δ{k + 1}", "w": "w", "b": "b"}  # fmt: skip
        forward = layer.forward_rule.format(**names)
        if layer.has_params:
            forward += layer.bias_rule.format(**names) if layer.bias else ""
            out[f"grad_w{k}"] = "this sample's gradient " + layer.grad_w_rule.format(**names)
            out[f"grad_b{k}"] = "this sample's gradient " + layer.grad_b_rule.format(**names)
        out[f"o{k}"] = f"o{k} = L{k}({names['x']}) = {forward}"
        out[f"d{k}"] = f"δ{k} = " + layer.backward_rule.format(**names)
    total = "Σ " if stack.n_out > 1 else ""
    out["loss"] = f"this sample's loss 1/2 {total}(o{top - 1} - y)^2"
    out[f"d{top}"] = f"δ{top} = (o{top - 1} - y) / m, m the rows of this step"
    return out
