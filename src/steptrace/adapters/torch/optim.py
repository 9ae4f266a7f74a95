"""A PyTorch optimizer as a run records it: which of its rules steptrace knows (SGD with
momentum, dampening, Nesterov and weight decay; Adam; AdamW; RMSprop), the state it keeps per
parameter, read before and after each step, and its settings for the run's metadata.

A parameter's state is recorded as tensors named ``{key}_{param}_before`` and ``…_after``
(``exp_avg_w2_after``: Adam's first moment of layer 2's weights after the step), the keys
PyTorch's own: ``momentum_buffer``, ``step``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``,
``square_avg``, ``grad_avg``. SGD has no momentum buffer before its first step: its values
are then NaN (the first step takes the gradient as it is).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["OptimizerSpec", "StateReader", "describe_optimizer", "plain"]

#: The optimizers whose update ``steptrace verify`` recomputes, by type.
KNOWN = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adamw",
         torch.optim.RMSprop: "rmsprop"}  # fmt: skip
#: The settings each one's update reads (beside lr, recorded each step).
SETTINGS = {
    "sgd": ("momentum", "dampening", "nesterov", "weight_decay", "maximize"),
    "adam": ("betas", "eps", "weight_decay", "amsgrad", "maximize"),
    "adamw": ("betas", "eps", "weight_decay", "amsgrad", "maximize"),
    "rmsprop": ("alpha", "eps", "weight_decay", "momentum", "centered", "maximize"),
}


@dataclass(frozen=True)
class OptimizerSpec:
    """What a run says about its optimizer: ``type`` (``sgd``, ``adam``, ``adamw``,
    ``rmsprop``, or PyTorch's class name), its settings, the state keys it keeps per
    parameter (``step`` a scalar, the others of the parameter's shape), and whether ``verify``
    can recompute its update (a known rule, one group of settings)."""

    type: str
    settings: dict[str, Any]
    keys: tuple[str, ...]
    checked: bool

    @property
    def tensor_keys(self) -> tuple[str, ...]:
        return tuple(k for k in self.keys if k != "step")

    @property
    def plain_sgd(self) -> bool:
        """ŵ = w − α·Σ grad: SGD without momentum, weight decay or maximize."""
        s = self.settings
        return self.type == "sgd" and self.checked and not (
            s["momentum"] or s["weight_decay"] or s["maximize"]
        )  # fmt: skip


def describe_optimizer(optimizer: torch.optim.Optimizer) -> OptimizerSpec:
    """``optimizer`` as a run records it (see :class:`OptimizerSpec`)."""
    kind = KNOWN.get(type(optimizer))
    groups = optimizer.param_groups
    if kind is None:
        return OptimizerSpec(type(optimizer).__name__, {}, (), False)
    settings = {k: plain(groups[0][k]) for k in SETTINGS[kind]}
    # Several groups are checked when they differ only in their parameters.
    same = all({k: plain(g[k]) for k in SETTINGS[kind]} == settings and g["lr"] == groups[0]["lr"]
               for g in groups)  # fmt: skip
    if kind == "sgd":
        keys: tuple[str, ...] = ("momentum_buffer",) if settings["momentum"] else ()
    elif kind in ("adam", "adamw"):
        keys = ("step", "exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if settings["amsgrad"]
                                                     else ())  # fmt: skip
    else:
        keys = ("step", "square_avg")
        keys += ("momentum_buffer",) if settings["momentum"] else ()
        keys += ("grad_avg",) if settings["centered"] else ()
    return OptimizerSpec(kind, settings, keys, same)


def plain(v: Any) -> Any:
    """A setting as JSON holds it (a tensor's value; a tuple as a list)."""
    if isinstance(v, torch.Tensor):
        return v.item()
    if isinstance(v, tuple | list):
        return [plain(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v


class StateReader:
    """Reads every parameter's optimizer state: its tensors flat, in the trace's order (by
    parameter, then key), and its scalars (``step``) as floats. State not made yet (before the
    first step) reads as PyTorch starts it: zeros, a step of 0, SGD's missing buffer NaN."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, spec: OptimizerSpec, params: Sequence[torch.Tensor]
    ) -> None:
        self.optimizer = optimizer
        self.state = optimizer.state
        self.spec = spec
        self.params = list(params)
        self.fill: list[torch.Tensor] = []
        for p in self.params:
            for key in spec.tensor_keys:
                missing = math.nan if key == "momentum_buffer" and spec.type == "sgd" else 0.0
                self.fill.append(torch.full((p.numel(),), missing, dtype=p.dtype,
                                            device=p.device))  # fmt: skip
        self.size = sum(p.numel() for p in self.params) * len(spec.tensor_keys)
        self.scalar_count = len(self.params) if "step" in spec.keys else 0
        self.zero = torch.zeros((), dtype=torch.float64)
        # The step counts gathered in one row first, one view a parameter (made once).
        self.staged = torch.zeros(self.scalar_count, dtype=torch.float64)
        self.stage = list(self.staged.unbind())
        # Each (parameter, key)'s tensor when last read and its flat view (made once: a view
        # costs more than the check that the tensor is the same).
        self.seen: list[tuple[Any, torch.Tensor]] = [(None, f) for f in self.fill]

    def tensors(self) -> list[torch.Tensor]:
        """Each (parameter, key)'s state, flat (its own storage, or the fill)."""
        out, i, keys, seen = [], 0, self.spec.tensor_keys, self.seen
        for p in self.params:
            st = self.state.get(p)
            for key in keys:
                t = st.get(key) if st else None
                if t is not seen[i][0]:
                    flat = t.detach().view(-1) if isinstance(t, torch.Tensor) else self.fill[i]
                    seen[i] = (t, flat)
                out.append(seen[i][1])
                i += 1
        return out

    def scalars(self, out: torch.Tensor) -> None:
        """Each parameter's ``step`` (0 before the first) into ``out`` (on the host), without
        reading each back: one copy of them all into a row of views when they are on the
        host, else stacked and copied once."""
        if not self.scalar_count:
            return
        steps = []
        for p in self.params:
            st = self.state.get(p)
            step = st.get("step") if st else None
            if not isinstance(step, torch.Tensor):
                step = self.zero if step is None else torch.tensor(float(step))
            steps.append(step)
        if all(t.device.type == "cpu" for t in steps):
            torch._foreach_copy_(self.stage, steps)  # exact: a count or a float32, in a float64
            out.copy_(self.staged)
        else:
            torch.stack([t.to("cpu", out.dtype) for t in steps], out=out)

    def lr(self) -> float:
        """The learning rate the next step uses (a scheduler may have changed it)."""
        lr = self.optimizer.param_groups[0]["lr"]
        return lr if isinstance(lr, float) else float(lr)
