"""Capturing a PyTorch step as the loop runs it: hooks on the layers and the optimizer copy each
step's data, loss, layer outputs, gradients at those outputs and parameters into preallocated
buffers, and hand them over as numpy arrays a chunk of steps at a time.

The user's loop calls ``rec.step(x, y, per_sample)`` after ``backward()`` and before
``optimizer.step()``; everything else is hooked: each layer's output (forward hooks, its
gradient kept by ``retain_grad``), the parameters before and after ``optimizer.step()``
(optimizer step hooks). A step done out of this order is refused with what to do instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ...errors import ConfigError, ModelError
from ...model.stack import Stack
from .layers import Layer, linear_params

Array = npt.NDArray[Any]

#: Steps held before they are handed over (a chunk also ends after HANDOFF_SECONDS).
CHUNK_STEPS = 2_048
CHUNK_ROWS = 8_192
HANDOFF_SECONDS = 0.25


@dataclass
class _Forward:
    """What the hooks saw of the last forward pass and its backward pass."""

    next_k: int = 0  # the layer expected next (0: a new pass starts)
    x: torch.Tensor | None = None
    outs: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """Steps as captured, in numpy arrays of the run's dtype."""

    m: Array  # the rows of each step
    values: dict[str, Array]  # one row per data input: x, y, loss, o2 … oK, d3 … d(K+1)
    before: Array  # one row per step: the parameters before it, in steptrace's order
    after: Array  # … and after it
    lrs: list[float]  # each step's learning rate


class Capture:
    """The hooks on a model and its optimizer, and what they copied of the steps not yet
    handed over. ``handoff`` is called when a chunk is due (it calls :meth:`take`);
    ``written`` says how many steps were handed over and written before.

    Each step's values are copied at once into two preallocated buffers (the data and what
    the layers computed; the parameters after the step), so that no object per step outlives
    it: thousands of small tensors held until a chunk is written would wake Python's garbage
    collector over PyTorch's hundreds of thousands of objects, again and again.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        layers: Sequence[Layer],
        stack: Stack,
        dtype: Any,
        written: Callable[[], int],
        handoff: Callable[[], None],
    ) -> None:
        self.optimizer = optimizer
        self.layers = list(layers)
        self.dtype = dtype
        self.written = written
        self.handoff = handoff
        self.top = layers[-1].k  # the last layer's number, K
        self.numbers = list(range(2, self.top + 1))  # the leaf modules' layer numbers
        self.n_out = int(stack.n_out)
        self.params = linear_params(layers)
        # Flat views of the parameters: they follow the optimizer's in-place updates.
        self.flat = [p.detach().view(-1) for p in self.params]
        # A row's values, in the buffer's order: x, y, loss, o2 … oK, then ∂Loss/∂o2 … ∂oK.
        sizes = stack.sizes
        self.fields = [("x", stack.n_in), ("y", self.n_out), ("loss", 1)]
        self.fields += [(f"o{k}", sizes[k - 1]) for k in self.numbers]
        self.fields += [(f"d{k + 1}", sizes[k - 1]) for k in self.numbers]
        self.width = sum(w for _, w in self.fields)
        self._buffers(CHUNK_ROWS)
        # The parameters after each step of the chunk; row 0: before its first step.
        first = self.params[0]
        self.after = torch.empty(CHUNK_STEPS + 1, sum(p.numel() for p in self.params),
                                 dtype=first.dtype, device=first.device)  # fmt: skip
        self.after_views = list(self.after)
        self.rows = 0  # rows of the chunk in the buffers
        self.m: list[int] = []  # rows of each step of the chunk
        self.lrs: list[float] = []
        self.befores: dict[int, torch.Tensor] = {}  # steps that did not start where one ended
        self.pending_m = 0  # rows of a step between rec.step and optimizer.step
        self.started = False
        self.after_versions: list[int] = []
        self.seen = _Forward()
        self.last_handoff = time.monotonic()
        self.handles: list[Any] = []
        self.closed = False
        self._hook()

    # -- hooks ----------------------------------------------------------------------------------

    def _hook(self) -> None:
        for layer in self.layers:
            self.handles.append(layer.module.register_forward_hook(self._forward_hook(layer)))
        self.handles.append(self.optimizer.register_step_pre_hook(self._before_step))
        self.handles.append(self.optimizer.register_step_post_hook(self._after_step))

    def _forward_hook(self, layer: Layer) -> Any:
        k, first = layer.k, layer.k == 2

        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            seen = self.seen
            if first:
                seen.x, seen.outs = args[0], {}
            elif seen.next_k != k or args[0] is not seen.outs.get(k - 1):
                raise ModelError(
                    f"layer {k} ({layer.name}) did not take the output of layer {k - 1}: "
                    "steptrace records models whose forward chains their layers in order, "
                    "each once (like nn.Sequential)"
                )
            seen.outs[k] = output
            seen.next_k = k + 1
            if output.requires_grad:
                # ∂Loss/∂o_k lands in output.grad during backward (a hook kept in C++: far
                # cheaper than a Python tensor hook per layer and step).
                output.retain_grad()

        return hook

    def step(self, x: torch.Tensor, y: torch.Tensor, per_sample: torch.Tensor) -> None:
        """Copy this step's rows into the buffer (see ``Recorder.step``)."""
        # Run every step: few torch operations (each costs a microsecond or two); the chunk
        # is turned into rows and checked in bulk when handed over.
        seen = self.seen
        if self.pending_m or self.closed or seen.next_k != self.top + 1:
            self._misuse()
        outs = [seen.outs[k] for k in self.numbers]
        grads = cast(list[torch.Tensor], [o.grad for o in outs])
        if any(g is None for g in grads):
            if not outs[-1].requires_grad:
                raise ConfigError(
                    "rec.step(...) after a forward pass without gradients (torch.no_grad, a "
                    "validation pass?): call it right after the backward() of the step's own "
                    "forward pass"
                )
            raise ConfigError(
                "rec.step(...) before backward(): call it after per_sample.mean().backward()"
            )
        if x is not seen.x and (seen.x is None or not torch.equal(x, seen.x)):
            raise ConfigError("rec.step(x, ...): x is not the input of the last forward pass")
        m = x.shape[0]
        if y.shape != (m, self.n_out):
            if y.numel() != m * self.n_out:
                raise ConfigError(
                    f"rec.step: y has shape {tuple(y.shape)}, expected ({m}, {self.n_out})"
                )
            y = y.reshape(m, self.n_out)
        if per_sample.shape != (m,):
            if per_sample.numel() != m:
                raise ConfigError(
                    f"rec.step: per_sample holds {per_sample.numel()} losses, expected {m} (one "
                    "per data input: ((out - y) ** 2).sum(dim=1) / 2)"
                )
            per_sample = per_sample.reshape(m)
        if self.rows + m > self.capacity:
            self.handoff()
            if m > self.capacity:  # a batch larger than the buffer
                self._buffers(m)
        # One row per data input: x, y, loss, o2 … oK, ∂Loss/∂o2 … ∂Loss/∂oK. Detached: the
        # copy is no part of the graph.
        if x.requires_grad or y.requires_grad:
            x, y = x.detach(), y.detach()
        torch.cat([x, y, per_sample.detach().unsqueeze(1), *[o.detach() for o in outs], *grads],
                  dim=1, out=self._rows_view(self.rows, m))  # fmt: skip
        self.pending_m = m
        seen.next_k = 0  # this forward pass is taken

    def _buffers(self, rows: int) -> None:
        """The buffer of the chunk's values, ``rows`` rows (a bigger one for a bigger batch)."""
        self.capacity = rows
        self.data = torch.empty(rows, self.width, dtype=self.params[0].dtype,
                                device=self.params[0].device)  # fmt: skip
        # Views made once: slicing a tensor anew each step costs more than the copy.
        self.views: dict[tuple[int, int], torch.Tensor] = {}

    def _rows_view(self, start: int, m: int) -> torch.Tensor:
        view = self.views.get((start, m))
        if view is None:
            if len(self.views) > 4 * CHUNK_ROWS:
                self.views.clear()
            view = self.views[start, m] = self.data[start : start + m]
        return view

    def _misuse(self) -> None:
        if self.closed:
            raise ConfigError("rec.step(...) after the recording ended")
        if self.pending_m:
            raise ConfigError(
                f"rec.step(...) twice without optimizer.step() in between (step "
                f"{self.step_number()})"
            )
        raise ConfigError("rec.step(...) before a forward pass through the model")

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self.pending_m:
            raise ConfigError(
                f"optimizer.step() without rec.step(x, y, per_sample) before it (step "
                f"{self.step_number()}): call rec.step after backward(), before "
                "optimizer.step(), every step"
            )
        # Nothing changed the parameters in place since the last step ended (their version
        # counters say): they are what it left, in self.after. Else (the first step, a clamp,
        # a manual change) read them.
        if not self.started:
            torch.cat(self.flat, out=self.after_views[0])
            self.started = True
        elif self._versions() != self.after_versions:
            self.befores[len(self.m)] = torch.cat(self.flat)

    def _versions(self) -> list[int]:
        return [p._version for p in self.params]

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        s = len(self.m)
        torch.cat(self.flat, out=self.after_views[s + 1])
        self.after_versions = self._versions()
        self.m.append(self.pending_m)
        self.lrs.append(float(self.optimizer.param_groups[0]["lr"]))
        self.rows += self.pending_m
        self.pending_m = 0
        if (
            (s == 0 and self.written() == 0)  # the first step: check it at once
            or s + 1 >= CHUNK_STEPS
            or time.monotonic() - self.last_handoff >= HANDOFF_SECONDS
        ):  # fmt: skip
            self.handoff()

    def step_number(self) -> int:
        """The number of the step being captured (from 0 for the run's first)."""
        return self.written() + len(self.m)

    # -- handing over ---------------------------------------------------------------------------

    def take(self) -> Chunk | None:
        """The chunk's steps (None when there are none); the buffers start the next chunk."""
        self.last_handoff = time.monotonic()
        steps = len(self.m)
        if not steps:
            return None
        raw = self.data[: self.rows].detach().cpu().numpy().astype(self.dtype)
        params = self.after[: steps + 1].detach().cpu().numpy().astype(self.dtype)
        before = params[:-1].copy()
        for s, tensor in self.befores.items():
            before[s] = tensor.detach().cpu().numpy()
        chunk = Chunk(np.array(self.m, dtype=np.int64), self._fields(raw), before, params[1:],
                      self.lrs)  # fmt: skip
        # The next chunk starts from the parameters this one ended with.
        self.after[0] = self.after[steps]
        self.m, self.lrs, self.befores, self.rows = [], [], {}, 0
        return chunk

    def _fields(self, raw: Array) -> dict[str, Array]:
        """The buffer's values by field (columns of its rows)."""
        out, offset = {}, 0
        for name, w in self.fields:
            out[name] = raw[:, offset : offset + w]
            offset += w
        return out

    def release(self) -> None:
        """Remove the hooks and let go of the last forward pass's tensors (and graph)."""
        self.remove_hooks()
        self.seen = _Forward()

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
