"""Capturing a PyTorch step as the loop runs it: hooks on the model, its leaf modules and the
optimizer, which fill the buffers of :mod:`.buffers` step after step.

The user's loop calls ``rec.step(x, y, per_sample)`` after ``backward()`` and before
``optimizer.step()``; everything else is hooked. The model's input is given to it as a tensor
of the same storage that requires a gradient (so autograd computes ∂Loss/∂x too: nothing the
loop computes changes); each leaf module's output keeps its gradient (``retain_grad``); modules
that work in place are run out of place while recording (the same numbers, bit for bit). The
first step's forward pass is learned as the run's network (:mod:`.graph`); later ones must take
the same path. A pass without gradients (``torch.no_grad``: a validation pass) is not recorded.

No step waits for the device: values are copied on it, and the buffers go to the host once a
chunk (no ``.item()`` and no comparison read back per step); a step the run does not hold
reads back its few extremes instead (:mod:`.figures`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError, ModelError
from .buffers import Chunk, Layout
from .graph import Graph, Seen, learn
from .layers import leaves
from .passes import Pass, bn_state, noise_of

__all__ = ["Capture"]

#: Modules whose state (running statistics) changes in the forward pass.
_STATEFUL = (nn.BatchNorm1d, nn.BatchNorm2d)

Begin = Callable[[Graph, torch.Tensor, torch.Tensor, torch.Tensor], Layout]
"""Called at the first ``rec.step`` with the learned network, the model's output, y and the
per-sample loss: opens the run, gives the buffers' layout."""


class Capture:
    """The hooks on a model and its optimizer, and the buffers they fill. ``handoff`` is
    called when a chunk is due (it calls :meth:`take`); ``written`` says how many steps were
    written before."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        begin: Begin,
        written: Callable[[], int],
        handoff: Callable[[], None],
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.begin, self.written, self.handoff = begin, written, handoff
        self.names = {id(m): n for n, m in leaves(model)}
        self.stateful = {id(m) for _, m in leaves(model) if isinstance(m, _STATEFUL)}
        self.inplace = [m for _, m in leaves(model) if getattr(m, "inplace", False) is True]
        for module in self.inplace:  # out of place while recording: the same numbers
            module.inplace = False  # type: ignore[assignment]
        self.layout: Layout | None = None
        self.graph: Graph | None = None
        self.seen: Pass | None = None
        self.pending_m = 0
        self.closed = False
        self.no_grad_pass = False  # the last forward pass ran without gradients
        self.handles: list[Any] = [model.register_forward_pre_hook(self._pre_model),
                                   model.register_forward_hook(self._post_model)]  # fmt: skip
        self.root = list(self.handles)  # the model's own hooks
        self.first: nn.Module | None = None  # see _fast
        for _, module in leaves(model):
            if isinstance(module, _STATEFUL):
                self.handles.append(module.register_forward_pre_hook(self._pre_stateful))
            self.handles.append(module.register_forward_hook(self._post_leaf))
        self.handles.append(optimizer.register_step_pre_hook(self._before_step))
        self.handles.append(optimizer.register_step_post_hook(self._after_step))

    # -- the forward pass -----------------------------------------------------------------------

    def _pre_model(self, module: nn.Module, args: tuple[Any, ...]) -> Any:
        if not self._recorded_pass() or not args:
            self.seen = None
            return None
        x = args[0]
        if not isinstance(x, torch.Tensor):
            raise ModelError("the model's first argument is not a tensor: steptrace records "
                             "models of one input tensor")  # fmt: skip
        self._begin_pass(x)
        assert self.seen is not None
        return (self.seen.alias, *args[1:])

    def _recorded_pass(self) -> bool:
        """Whether the pass beginning is recorded: with gradients, the recording open."""
        self.no_grad_pass = not torch.is_grad_enabled()
        return not (self.closed or self.no_grad_pass)

    def _begin_pass(self, x: torch.Tensor, alias: torch.Tensor | None = None) -> None:
        """A pass of input ``x`` begins; ``alias`` is L1's output: x as given (see
        :meth:`_fast`), else x requiring a grad (but when the step needs no ∂Loss/∂x)."""
        layout = self.layout
        if layout is not None and not self.pending_m:
            layout.make_room(x.shape[0])
        if alias is None:
            if not x.is_floating_point():
                alias = x
            elif layout is None or layout.wants_x_grad():
                alias = x.detach().requires_grad_()
            else:
                alias = x.detach()
        self.seen = Pass(x, alias, layers=len(self.graph.layers) if self.graph else -1)
        self.seen.tensors["o1"] = alias

    def _pre_stateful(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._state(module, "before")

    def _state(self, module: nn.Module, when: str) -> None:
        seen = self.seen
        if seen is None:
            return
        if self.layout is None:  # the first pass: kept until the run opens
            mean = module.running_mean
            dtype = mean.dtype if isinstance(mean, torch.Tensor) else torch.float64
            seen.state[f"bn{len(seen.calls) + 2}_{when}"] = torch.cat(bn_state(module, dtype))
        else:
            self.layout.state_copy(seen, module, when)

    def _post_leaf(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if module is self.first:  # a pass begins (one that did not reach the end is dropped)
            self._start_at_first_layer(args)
        seen = self.seen
        if seen is None or not isinstance(output, torch.Tensor):
            return
        inp = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if output.grad_fn is not None:  # (it then requires a gradient)
            output.retain_grad()
        if id(module) in self.stateful:
            self._state(module, "after")
        if self.layout is not None:
            self.layout.follow(seen, module, inp, output)
            if self.first is not None and seen.done:
                seen.out = output  # the last layer's: the loss's input
            return
        # The first pass: every call kept (and its output's values as made) until rec.step.
        if inp is not None and inp.requires_grad and inp.grad_fn is not None:
            inp.retain_grad()
        version = -1 if inp is None else inp._version
        seen.calls.append(Seen(module, self.names.get(id(module), ""), inp, output, version,
                               output._version, output.grad_fn, noise_of(output)))  # fmt: skip
        seen.values[f"o{len(seen.calls) + 1}"] = output.detach().clone()

    def _fast(self) -> None:
        """A stack of the series' layers whose first is linear: each pass starts at that layer
        and ends at the last one, with no hook on the model (each costs microseconds a step,
        which a small network feels), and ∂Loss/∂x comes from the first layer's formula, δ·W
        (:mod:`.values`), not from autograd."""
        for handle in self.root:
            handle.remove()
            self.handles.remove(handle)
        assert self.graph is not None and self.layout is not None
        self.first = self.graph.layers[0].module
        self.layout.x_grads = False

    def _start_at_first_layer(self, args: tuple[Any, ...]) -> None:
        """A pass begins (see :meth:`_fast`): the first layer's input is the model's."""
        if self._recorded_pass():
            self._begin_pass(args[0], args[0])
        else:
            self.seen = None

    def _post_model(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        seen = self.seen
        if seen is None:
            return
        if isinstance(output, torch.Tensor):
            if output.requires_grad and output.grad_fn is not None:
                output.retain_grad()
            seen.out = output
        else:
            raise ModelError(f"the model returns a {type(output).__name__}: steptrace records "
                             "models whose forward returns one tensor")  # fmt: skip

    # -- the step -------------------------------------------------------------------------------

    def step(self, x: torch.Tensor, y: torch.Tensor, per_sample: torch.Tensor) -> None:
        """Copy this step's rows into the buffer (see ``Recorder.step``)."""
        seen = self.seen
        if self.pending_m or self.closed or seen is None or seen.out is None:
            self._misuse(seen)
        assert seen is not None and seen.out is not None
        if not seen.out.requires_grad:
            self._misuse(seen)
        if seen.out.grad is None:
            raise ConfigError(
                "rec.step(...) before backward(): call it after per_sample.mean().backward()"
            )
        if x is not seen.x and (x.shape != seen.x.shape or (
                x.device.type == "cpu" and not torch.equal(x, seen.x))):  # fmt: skip
            raise ConfigError("rec.step(x, ...): x is not the input of the last forward pass")
        m = x.shape[0]
        if per_sample.numel() != m:
            raise ConfigError(
                f"rec.step: per_sample holds {per_sample.numel()} losses, expected {m} (one "
                "per data input, e.g. F.cross_entropy(out, y, reduction='none'))"
            )
        if y.shape[0] != m:
            raise ConfigError(f"rec.step: y has {y.shape[0]} rows, x has {m}")
        if self.layout is None:
            if not seen.calls:
                raise ModelError("the model called no module: steptrace records models made "
                                 "of modules")  # fmt: skip
            self.graph = learn(self.model, seen.alias, seen.calls, seen.out)
            self.layout = self.begin(self.graph, seen.out, y, per_sample)
            self.layout.start(seen)
            self.layout.copy_rows(seen, y, per_sample)
            if self.layout.fast:
                self._fast()
        else:
            self.layout.copy_rows(seen, y, per_sample)
        self.pending_m = m
        self.seen = None  # this forward pass is taken

    def _misuse(self, seen: Pass | None) -> None:
        if self.closed:
            raise ConfigError("rec.step(...) after the recording ended")
        if self.pending_m:
            raise ConfigError(
                f"rec.step(...) twice without optimizer.step() in between (step "
                f"{self.step_number()})"
            )
        if not self.no_grad_pass and seen is not None and seen.layers > 0 and not seen.done:
            raise ConfigError(
                f"rec.step(...) after a pass that did not reach the model's last layer "
                f"({seen.count} of {seen.layers} layers: its first layer called alone after the "
                "model?): call it right after the backward() of the step's own forward pass "
                "through the model"
            )
        if self.no_grad_pass or seen is not None:
            raise ConfigError(
                "rec.step(...) after a forward pass without gradients (torch.no_grad, a "
                "validation pass?): call it right after the backward() of the step's own "
                "forward pass"
            )
        raise ConfigError("rec.step(...) before a forward pass through the model")

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self.pending_m:
            raise ConfigError(
                f"optimizer.step() without rec.step(x, y, per_sample) before it (step "
                f"{self.step_number()}): call rec.step after backward(), before "
                "optimizer.step(), every step"
            )
        assert self.layout is not None
        self.layout.before_step()

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        assert self.layout is not None
        s = self.layout.after_step(self.pending_m)
        self.pending_m = 0
        if (s == 0 and self.written() == 0) or self.layout.due():
            self.handoff()  # the first step is checked at once
            # The next chunk's time counts from now: a slow write must not make every chunk
            # a single step.
            self.layout.last_handoff = time.monotonic()

    def step_number(self) -> int:
        """The number of the step being captured (from 0 for the run's first)."""
        return self.written() + (len(self.layout.m) if self.layout is not None else 0)

    def take(self) -> Chunk | None:
        """The captured steps not handed over yet (see :meth:`.buffers.Layout.take`)."""
        return self.layout.take() if self.layout is not None else None

    def release(self) -> None:
        """Remove the hooks, put back the modules that work in place, let go of the last
        forward pass's tensors (and graph)."""
        self.remove_hooks()
        for module in self.inplace:
            module.inplace = True  # type: ignore[assignment]
        self.inplace = []
        self.seen = None

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
