"""A PyTorch model read as the series' layers: which leaf module is which layer, the
parameters in steptrace's order, and the checks that they can be recorded (a supported module,
trained by the optimizer, one float dtype).

Layers are numbered as the series does: L1 the input, then the model's leaf modules in order
(``nn.Sequential`` and nested modules flattened), from 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import ModelError

#: The layers steptrace records, by PyTorch module type, and the series' names for them.
LAYERS: dict[type[nn.Module], str] = {
    nn.Linear: "linear",
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.Sigmoid: "logistic",
    nn.Identity: "identity",
}


@dataclass(frozen=True)
class Layer:
    """A leaf module as a layer of the stack: its number (from 2; L1 is the input)."""

    k: int
    name: str
    module: nn.Module
    type: str


def read_layers(model: nn.Module) -> list[Layer]:
    """The model's leaf modules in order, as layers 2, 3, …; an error for anything else."""
    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]
    layers = []
    for k, (qualified, module) in enumerate(leaves, 2):
        label = f"{qualified or type(model).__name__!r} ({type(module).__name__})"
        kind = LAYERS.get(type(module))
        if kind is None:
            supported = ", ".join(t.__name__ for t in LAYERS)
            raise ModelError(
                f"steptrace.torch cannot record module {label}: it records the series' 1D "
                f"layers {supported} (2D layers come later)"
            )
        if getattr(module, "inplace", False):
            raise ModelError(
                f"module {label} works in place, overwriting the output of the layer below "
                "that steptrace records: use it with inplace=False"
            )
        layers.append(Layer(k, qualified, module, kind))
    if not any(layer.type == "linear" for layer in layers):
        raise ModelError("the model has no Linear layer: nothing to learn, nothing to record")
    owned = {id(p) for layer in layers for p in layer.module.parameters(recurse=False)}
    for pname, p in model.named_parameters():
        if id(p) not in owned:
            raise ModelError(
                f"parameter {pname!r} belongs to no Linear layer: steptrace records the "
                "parameters of the series' layers only"
            )
    return layers


def linear_params(layers: Sequence[Layer]) -> list[torch.Tensor]:
    """The parameters in steptrace's order: by layer, weights (row by row), then biases."""
    out: list[torch.Tensor] = []
    for layer in layers:
        if isinstance(layer.module, nn.Linear):
            out.append(layer.module.weight)
            if layer.module.bias is not None:
                out.append(layer.module.bias)
    return out


def check_optimizer(
    model: nn.Module, optimizer: torch.optim.Optimizer, layers: Sequence[Layer]
) -> None:
    """Every parameter of the layers learns: it requires grad and the optimizer holds it."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for layer in layers:
        for pname, p in layer.module.named_parameters(recurse=False):
            where = f"layer {layer.k} ({layer.name or type(model).__name__}.{pname})"
            if not p.requires_grad:
                raise ModelError(f"{where} does not require grad: steptrace records training "
                                 "of every parameter")  # fmt: skip
            if id(p) not in held:
                raise ModelError(f"{where} is not in the optimizer: it would not learn")


def numerics_of(layers: Sequence[Layer]) -> str:
    """The numerics the model computes in (``float64`` or ``float32``), from its parameters."""
    dtypes = {p.dtype for p in linear_params(layers)}
    names = {torch.float64: "float64", torch.float32: "float32"}
    if len(dtypes) != 1 or next(iter(dtypes)) not in names:
        shown = ", ".join(sorted(str(d) for d in dtypes))
        raise ModelError(
            f"the model's parameters are {shown}: steptrace records float64 or float32 models "
            "(model.double() or model.float())"
        )
    return names[next(iter(dtypes))]
