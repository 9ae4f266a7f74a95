"""The series' notation for any stack: names of the recorded tensors and each layer's formulas.

The article writes its model's maths one way (``o2 = w · o1``, ``δ3 = δ4 if o2 ≥ 0 else 0``,
``∂Loss/∂W2 = δ3 · o1``); the series' later chapters write every layer the same way. This
module holds those rules once, for a stack read from a trace, so that the terminal replay and
the dashboard write the same formulas, each in its own typography (:data:`REPLAY`, plain text
as the terminal prints it; :data:`MATHS`, the article's symbols).

Weights are named ``w`` when one layer has them (the article's model) and ``w2``, ``w4`` …
otherwise; the same for biases, gradients and updated values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import SteptraceError, TraceError
from ..model.kinds import LAYERS
from ..model.spec import load_model
from ..trace.reader import Trace

__all__ = [
    "MATHS",
    "REPLAY",
    "BackRule",
    "LayerInfo",
    "Notation",
    "Style",
    "model_description",
    "stack_notation",
]


@dataclass(frozen=True)
class Style:
    """How formulas are typeset: the terminal's plain text or the article's symbols."""

    ge: str  # x ≥ 0
    minus: str  # a − b
    dot: str  # δ3 · w (the article's product of a vector and the weights)
    times: str  # δ3 · o1, a·x
    scale: str  # α·grad, in the update
    half: str  # ½
    square: str  # (…)²


#: The terminal's typography (what ``steptrace replay`` prints).
REPLAY = Style(ge=">=", minus="-", dot=" . ", times=" * ", scale=" * ", half="1/2", square="^2")
#: The article's typography (the dashboard).
MATHS = Style(ge="≥", minus="−", dot=" · ", times=" · ", scale="·", half="½", square="²")


@dataclass(frozen=True)
class LayerInfo:
    """One layer of the stack as its model file sets it up."""

    number: int
    type: str
    out: int = 0  # neurons of a linear layer, output channels of a convolution
    bias: bool = False
    slope: str = ""
    kernel: int = 0  # a convolution's kernel size
    size: int = 0  # a pooling's cell size

    @property
    def has_params(self) -> bool:
        return LAYERS[self.type].has_params

    @property
    def gated(self) -> bool:
        """Whether δ passes through a gate on the layer's input (ReLU-like layers)."""
        return self.type in ("relu", "leaky_relu")

    @property
    def kind(self) -> str:
        """``linear(2, bias)``, ``leaky_relu(1/100)``, ``relu``, ``conv2d(4, 3×3, bias)``,
        ``maxpool2d(2)``."""
        bias = ", bias" if self.bias else ""
        if self.type == "linear":
            return f"linear({self.out}{bias})"
        if self.type == "conv2d":
            return f"conv2d({self.out}, {self.kernel}×{self.kernel}{bias})"
        if self.type == "maxpool2d":
            return f"maxpool2d({self.size})"
        if self.type == "leaky_relu":
            return f"leaky_relu({self.slope})"
        return self.type


@dataclass(frozen=True)
class BackRule:
    """One line of a layer's backward pass: the tensor it gives and its formula's right side."""

    tensor: str
    rule: str


@dataclass(frozen=True)
class Notation:
    """Names and formulas for one stack, in one typography."""

    layers: tuple[LayerInfo, ...]
    shapes: Mapping[str, tuple[int, ...]]  # tensor name → shape of one row's value
    style: Style

    # -- names --------------------------------------------------------------------------------

    @property
    def loss_number(self) -> int:
        """The loss's layer number (4 in the article)."""
        return len(self.layers) + 1

    @property
    def param_layers(self) -> list[int]:
        return [layer.number for layer in self.layers if layer.has_params]

    @property
    def top(self) -> str:
        """The model's output, ``o3`` in the article."""
        return f"o{len(self.layers)}"

    def layer(self, k: int) -> LayerInfo:
        return self.layers[k - 1]

    def _suffix(self, k: int) -> str:
        # One layer with parameters: its weights are simply w, as the article writes them.
        return "" if len(self.param_layers) == 1 else str(k)

    def inp(self, k: int) -> str:
        """The input of layer k: ``x`` for L1, else the output below it."""
        return "x" if k == 1 else f"o{k - 1}"

    def param_tensors(self) -> list[tuple[int, str]]:
        """``(layer, "w" or "b")`` for every parameter tensor, in the trace's order."""
        out = []
        for k in self.param_layers:
            out.append((k, "w"))
            if self.layer(k).bias:
                out.append((k, "b"))
        return out

    def symbol(self, tensor: str) -> str:
        """A tensor's name in the series' notation: ``w2_after`` → ``ŵ`` (or ``ŵ2``),
        ``d4`` → ``δ4``, ``y`` → ``y_truth``."""
        fixed = {"x": "x", "y": "y_truth", "loss": "loss", "lr": "α"}
        if tensor in fixed:
            return fixed[tensor]
        m = re.fullmatch(r"(grad_)?([wb])(\d+)(_before|_after)?", tensor)
        if m:
            grad, kind, k, when = m.groups()
            suffix = self._suffix(int(k))
            if grad:
                return ("grad" if kind == "w" else "grad_b") + suffix
            hat = {"w": "ŵ", "b": "b̂"}[kind] if when == "_after" else kind
            return hat + suffix
        if tensor.startswith("d"):
            return "δ" + tensor[1:]
        return tensor

    def latex(self, tensor: str) -> str:
        r"""A parameter tensor's symbol as LaTeX, named as :meth:`symbol` names it: ``\hat{w}``,
        ``w_{2}``, ``\mathrm{grad}_{b2}``. The layer's number is a subscript: as a
        superscript (``w^{2}``) it reads as a square."""
        m = re.fullmatch(r"(grad_)?([wb])(\d+)(_before|_after)?", tensor)
        if m is None:
            return tensor
        grad, kind, k, when = m.groups()
        suffix = self._suffix(int(k))
        if grad:
            below = ("" if kind == "w" else "b") + suffix
            return r"\mathrm{grad}" + (f"_{{{below}}}" if below else "")
        symbol = rf"\hat{{{kind}}}" if when == "_after" else kind
        return symbol + (f"_{{{suffix}}}" if suffix else "")

    def entry(self, tensor: str, index: tuple[int, ...]) -> str:
        """One component's name: ``w_2`` (a weight of the article's one neuron), ``w2_1_3``
        (neuron 1, input 3 of layer 2), ``b2_1``. A one-row matrix is named as a vector."""
        shape = self.shapes[tensor]
        if len(shape) == 2 and shape[0] == 1:
            index = index[1:]
        base = self.symbol(tensor.replace("_after", "_before"))
        return base + "".join(f"_{i}" for i in index)

    def partial(self, k: int, kind: str) -> str:
        """``∂Loss/∂W2`` or ``∂Loss/∂b2``."""
        return f"∂Loss/∂{'W' if kind == 'w' else 'b'}{k}"

    # -- formulas -----------------------------------------------------------------------------

    def _names(self, k: int) -> dict[str, str]:
        """What layer k's formula templates (:mod:`steptrace.model.layers`) are filled with."""
        s, layer = self.style, self.layer(k)
        return {
            "x": self.inp(k), "o": f"o{k}", "d": f"δ{k + 1}", "slope": layer.slope,
            "size": str(layer.size),
            "w": self.symbol(f"w{k}"), "b": self.symbol(f"b{k}"),
            "ge": s.ge, "minus": s.minus, "dot": s.dot, "times": s.times,
        }  # fmt: skip

    def forward(self, k: int) -> str:
        """Layer k's forward formula: ``o2 = w · o1``, ``o3 = o2 if o2 ≥ 0 else 0`` …"""
        layer, names = self.layer(k), self._names(k)
        kind = LAYERS[layer.type]
        rule = kind.forward_rule.format(**names)
        if layer.bias:
            rule += kind.bias_rule.format(**names)
        return f"o{k} = {rule}"

    def backward(self, k: int) -> list[BackRule]:
        """Layer k's backward lines, from the δ it receives (δ{k+1}): δk, then the gradients
        of its parameters, as the article orders them."""
        layer, names = self.layer(k), self._names(k)
        kind = LAYERS[layer.type]
        out = [BackRule(f"d{k}", kind.backward_rule.format(**names))]
        if kind.has_params:
            out.append(BackRule(f"grad_w{k}", kind.grad_w_rule.format(**names)))
            if layer.bias:
                out.append(BackRule(f"grad_b{k}", kind.grad_b_rule.format(**names)))
        return out

    def loss_forward(self) -> str:
        """``½ (o3 − y_truth)²``; a sum over the outputs when there are several."""
        s = self.style
        total = " Σ" if self.shapes[self.top][0] > 1 else ""
        return f"{s.half}{total} ({self.top} {s.minus} y_truth){s.square}"

    def loss_backward(self, rows: int) -> str:
        """δ at the loss: ``o3 − y_truth``, divided by the rows of a batch step."""
        diff = f"{self.top} {self.style.minus} y_truth"
        return diff if rows == 1 else f"({diff}) / {rows}"


def _layers(model: Mapping[str, Any], n_in: int) -> tuple[LayerInfo, ...]:
    try:
        parsed = load_model(model, n_in)
    except SteptraceError as exc:
        raise TraceError(f"the run's model cannot be read: {exc}") from None
    return tuple(
        LayerInfo(
            k,
            spec["type"],
            int(spec.get("out", 0)),
            bool(spec.get("bias", LAYERS[spec["type"]].bias)),
            str(spec.get("slope", "")),
            int(spec.get("kernel", 0)),
            int(spec.get("size", 0)),
        )
        for k, spec in enumerate(parsed.layers, 1)
    )


def stack_notation(trace: Trace, style: Style) -> Notation:
    """The notation of a recorded run's stack (its metadata's model and tensors)."""
    model = trace.meta.get("model")
    if not isinstance(model, Mapping):
        raise TraceError(f"{trace.path}: the run metadata has no model")
    shapes = {t.name: t.shape for t in trace.tensors}
    return Notation(_layers(model, trace.tensor("x").size), shapes, style)


def model_description(trace: Trace) -> str:
    """``input(3) → linear(2, bias) → relu → linear(1) → leaky_relu(1/100) → squared_error``"""
    model = trace.meta.get("model")
    if not isinstance(model, Mapping):
        return "?"
    try:
        return load_model(model, trace.tensor("x").size).describe()
    except SteptraceError:
        return "?"
