"""What each leaf module of a PyTorch model is: a layer steptrace knows (its type and settings,
and the series' model-file entry where it is one of the series' layers) or a module of the
user's own, recorded all the same; and the checks that a model can be recorded (one float
dtype, every parameter that learns held by the optimizer).

Layers are numbered as the series does: L1 the input, then the calls of leaf modules in the
order the forward pass makes them, from 2 (a module called twice is two layers).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...errors import ModelError

__all__ = ["Kind", "check_optimizer", "kind_of", "leaves", "numerics_of"]

#: Modules that are the series' activations, by the series' name.
_SERIES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.Sigmoid: "logistic",
    nn.Identity: "identity",
}


@dataclass(frozen=True)
class Kind:
    """A leaf module as steptrace reads it: ``type`` (``"module"`` for one it does not know),
    its ``settings`` (as the trace's ``graph`` lists them), and ``series``: the model file's
    entry when it is one of the series' layers (parameters apart), else None."""

    type: str
    settings: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Any] | None = None

    @property
    def known(self) -> bool:
        return self.type != "module"


def leaves(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The model's leaf modules (without children) and their qualified names."""
    for name, module in model.named_modules():
        if not any(True for _ in module.children()):
            yield name, module


def kind_of(module: nn.Module) -> Kind:
    """What ``module`` is (see :class:`Kind`); ``module`` for anything steptrace does not
    recompute: a module of the user's own, or known settings it does not cover (groups,
    dilation, ceil mode …)."""
    unknown = Kind("module", {"class": type(module).__name__})
    settings: dict[str, Any]
    series: dict[str, Any] | None
    if type(module) in _SERIES:
        kind = _SERIES[type(module)]
        return Kind(kind, {}, {"type": kind})
    if isinstance(module, nn.LeakyReLU):
        slope = float(module.negative_slope)
        return Kind("leaky_relu", {"slope": slope}, {"type": "leaky_relu", "slope": slope})
    if isinstance(module, nn.Linear):
        settings = {"out": module.out_features, "in": module.in_features,
                    "bias": module.bias is not None}  # fmt: skip
        series = {"type": "linear", "out": module.out_features, "bias": module.bias is not None}
        return Kind("linear", settings, series)
    if isinstance(module, nn.Conv2d):
        return _conv(module) or unknown
    if isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
        return _pool(module) or unknown
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        if not (module.affine and module.track_running_stats):
            return unknown
        settings = {"eps": float(module.eps), "momentum": module.momentum}
        return Kind("batch_norm", settings, {"type": "normalization", "eps": float(module.eps)})
    if isinstance(module, nn.LayerNorm):
        affine = bool(module.elementwise_affine) and module.bias is not None
        if bool(module.elementwise_affine) != affine:
            return unknown  # γ without β
        return Kind("layer_norm", {"dims": len(module.normalized_shape),
                                   "eps": float(module.eps), "affine": affine})  # fmt: skip
    if type(module) is nn.Dropout:
        return Kind("dropout", {"p": float(module.p)})
    if isinstance(module, nn.Flatten):
        flat = (module.start_dim, module.end_dim) == (1, -1)
        series = {"type": "flatten"} if flat else None
        return Kind("flatten", {"start_dim": module.start_dim, "end_dim": module.end_dim},
                    series)  # fmt: skip
    if isinstance(module, nn.Tanh):
        return Kind("tanh")
    if isinstance(module, nn.GELU):
        return Kind("gelu", {"approximate": module.approximate})
    if isinstance(module, nn.Softmax) and module.dim is not None:
        return Kind("softmax", {"dim": int(module.dim)})
    return unknown


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(n) for n in v]


def _conv(m: nn.Conv2d) -> Kind | None:
    if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros":
        return None
    kernel = _pair(m.kernel_size)
    if isinstance(m.padding, str):  # "valid", or "same" for odd kernels: a padding per side
        if m.padding == "same" and any(k % 2 == 0 for k in kernel):
            return None
        padding = [0, 0] if m.padding == "valid" else [(k - 1) // 2 for k in kernel]
    else:
        padding = _pair(m.padding)
    stride, bias = _pair(m.stride), m.bias is not None
    settings = {"out": m.out_channels, "kernel": kernel, "stride": stride, "padding": padding,
                "bias": bias}  # fmt: skip
    k = kernel[0]
    series = None
    if kernel == [k, k] and k % 2 and stride == [1, 1] and padding == [(k - 1) // 2] * 2:
        series = {"type": "conv2d", "out": m.out_channels, "kernel": k, "bias": bias}
    return Kind("conv2d", settings, series)


def _pool(m: nn.MaxPool2d | nn.AvgPool2d) -> Kind | None:
    sizes = [_pair(m.kernel_size), _pair(m.stride), _pair(m.padding)]
    if any(a != b for a, b in sizes) or m.ceil_mode:
        return None  # rectangular windows, or ceil mode: not recomputed
    size, stride, padding = (v[0] for v in sizes)
    if isinstance(m, nn.AvgPool2d):
        return Kind("avgpool2d", {"size": size, "stride": stride, "padding": padding,
                                  "count_include_pad": bool(m.count_include_pad),
                                  "divisor": m.divisor_override})  # fmt: skip
    if _pair(m.dilation) != [1, 1] or m.return_indices:
        return None
    series = {"type": "maxpool2d", "size": size} if stride == size and not padding else None
    return Kind("maxpool2d", {"size": size, "stride": stride, "padding": padding}, series)


def check_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every parameter that learns is held by the optimizer (else it would not learn)."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in held:
            raise ModelError(f"parameter {name!r} is not in the optimizer: it would not learn "
                             "(give the optimizer model.parameters())")  # fmt: skip


def numerics_of(model: nn.Module) -> str:
    """The numerics the model computes in (``float64`` or ``float32``), from its parameters."""
    dtypes = {p.dtype for p in model.parameters()}
    names = {torch.float64: "float64", torch.float32: "float32"}
    if len(dtypes) != 1 or next(iter(dtypes)) not in names:
        shown = ", ".join(sorted(str(d) for d in dtypes)) or "none"
        raise ModelError(
            f"the model's parameters are {shown}: steptrace records models of float64 or "
            "float32 parameters (model.double() or model.float())"
        )
    return names[next(iter(dtypes))]
