"""What the hooks see of a forward pass being recorded (:class:`Pass`), and what they read
off the modules it calls: a dropout's mask from autograd's node, a batch norm's running
statistics."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .graph import Seen

__all__ = ["BN_STATE", "Pass", "bn_state", "noise_of"]


@dataclass
class Pass:
    """What the hooks saw of the forward pass being recorded."""

    x: torch.Tensor  # the input the loop gave
    alias: torch.Tensor  # the same values, as the model read them
    calls: list[Seen] = field(default_factory=list)  # the first pass only
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # by the trace's name
    values: dict[str, torch.Tensor] = field(default_factory=dict)  # outputs copied when made
    noise: dict[int, torch.Tensor] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # the first pass's bn{k}_…
    out: torch.Tensor | None = None
    count: int = 0
    layers: int = -1  # the network's layers (once learned)

    @property
    def done(self) -> bool:
        """Whether every layer of the network was called (the pass is over)."""
        return self.count == self.layers


def noise_of(output: torch.Tensor) -> torch.Tensor | None:
    """What a dropout's input was multiplied by (its mask, scaled), from autograd's node."""
    node = output.grad_fn
    name = type(node).__name__ if node is not None else ""
    if name == "MulBackward0":
        saved = getattr(node, "_saved_other", None)
        return saved if isinstance(saved, torch.Tensor) and saved.shape == output.shape else None
    if name == "NativeDropoutBackward0":
        return node._saved_result1  # type: ignore[union-attr, no-any-return]
    return None


#: A batch norm's running statistics, in the order a step's row holds them.
BN_STATE = ("running_mean", "running_var", "num_batches_tracked")


def bn_state(module: nn.Module, dtype: torch.dtype) -> list[torch.Tensor]:
    """A batch norm's running mean, running variance and batches, flat, in ``dtype``."""
    buffers = [getattr(module, name) for name in BN_STATE]
    return [b.detach().reshape(-1) if b.dtype == dtype else b.detach().reshape(-1).to(dtype)
            for b in buffers if isinstance(b, torch.Tensor)]  # fmt: skip
