"""Which loss a PyTorch loop learns from: the one it names (``loss="cross_entropy"``, or an
``nn`` loss module), or the one its first step's per-sample losses are.

The loop gives each row's loss (``per_sample``) and backpropagates their mean; δ at the loss
is what autograd computed. For the losses steptrace knows (:data:`steptrace.model.more.LOSSES`:
``squared_error``, ``mse``, ``cross_entropy``, ``bce_with_logits``) the first step is checked:
its per-sample losses are the loss's, and δ is the gradient of their mean, else the loop is
told what differs. Any other per-sample loss is recorded as the loop computed it (``custom``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import ConfigError
from ...model.more import LOSSES

__all__ = ["CHECK_RTOL", "check_loss", "loss_name"]

#: How closely the loop's loss and δ at the loss must follow the loss's formulas.
CHECK_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4}
#: The ``nn`` loss modules steptrace knows, by its names for them.
_MODULES = {nn.MSELoss: "mse", nn.CrossEntropyLoss: "cross_entropy",
            nn.BCEWithLogitsLoss: "bce_with_logits"}  # fmt: skip
_RULES = {
    "squared_error": ("½ Σ (o − y)²", "(o − y)/m", "((out - y) ** 2).sum(dim=1) / 2"),
    "mse": ("Σ (o − y)² / n", "2 (o − y)/(n m)", "((out - y) ** 2).mean(dim=1)"),
    "cross_entropy": ("−log softmax(o)_y", "(softmax(o) − y)/m",
                      "F.cross_entropy(out, y, reduction='none')"),
    "bce_with_logits": ("mean of the logistic losses", "(σ(o) − y)/(n m)",
                        "F.binary_cross_entropy_with_logits(out, y, reduction='none')"
                        ".mean(dim=1)"),
}  # fmt: skip


def loss_name(loss: Any) -> str | None:
    """The loss the loop names: a name, or an ``nn`` loss module with its default options;
    None to recognise it at the first step."""
    if loss is None:
        return None
    if isinstance(loss, str):
        if loss not in LOSSES and loss != "custom":
            raise ConfigError(f"loss={loss!r}: choose one of {', '.join(LOSSES)} (or custom)")
        return loss
    name = _MODULES.get(type(loss))
    if name is None:
        return "custom"
    plain = getattr(loss, "weight", None) is None and not getattr(loss, "label_smoothing", 0)
    plain = plain and getattr(loss, "pos_weight", None) is None
    return name if plain else "custom"


def check_loss(
    given: str | None, out: torch.Tensor, y: torch.Tensor, per_sample: torch.Tensor
) -> tuple[str, ConfigError | None]:
    """The loss of the first step (``given``, or the first known loss its per-sample losses
    are), and the problem when its δ is not their mean's gradient."""
    rtol = CHECK_RTOL.get(out.dtype, 1e-4)
    o = out.detach().cpu().double().numpy().reshape(len(out), -1)
    target = y.detach().cpu().double().numpy().reshape(len(y), -1)
    values = per_sample.detach().cpu().double().numpy().reshape(-1)
    grad = out.grad.detach().cpu().double().numpy().reshape(o.shape)  # type: ignore[union-attr]
    m = len(o)
    candidates = [given] if given is not None else list(LOSSES)
    for name in candidates:
        if name == "custom" or name not in LOSSES:
            return "custom", None
        rule = LOSSES[name]()
        if not _fits(name, o, target):
            continue
        with np.errstate(all="ignore"):
            want, delta = rule.value(o, target), rule.delta(o, target, m)
        if not _close(values, want, rtol):
            if given is not None:
                return name, ConfigError(
                    f"per_sample is not each row's {name} loss {_RULES[name][0]}: "
                    f"per_sample = {_RULES[name][2]}"
                )
            continue
        if not _close(grad, delta, rtol):
            return name, ConfigError(_delta_problem(name, grad, delta))
        return name, None
    return "custom", None


def _fits(name: str, o: Any, y: Any) -> bool:
    """Whether the loss takes outputs ``o`` and targets ``y`` of these shapes."""
    if name == "cross_entropy":
        classes = (
            y.shape[1] == 1 and np.all(y == np.round(y)) and np.all((y >= 0) & (y < o.shape[1]))
        )
        return bool(classes) or y.shape == o.shape
    return bool(y.shape == o.shape)


def _close(a: Any, b: Any, rtol: float) -> bool:
    ok = np.isfinite(a) & np.isfinite(b)
    scale = float(np.abs(b[ok]).max()) if ok.any() else 0.0
    return bool(np.allclose(a[ok], b[ok], rtol=rtol, atol=rtol * scale))


def _delta_problem(name: str, grad: Any, delta: Any) -> str:
    nonzero = np.isfinite(grad) & np.isfinite(delta) & (delta != 0)
    ratio = float(np.median(grad[nonzero] / delta[nonzero])) if nonzero.any() else 0.0
    rule = _RULES[name]
    return (
        f"the gradient at the model's output is {ratio:.4g} × {rule[1]}: steptrace records the "
        "mean of the rows' losses, per_sample.mean().backward() (not .sum(); per_sample = "
        f"{rule[2]}, {name}: {rule[0]})"
    )
