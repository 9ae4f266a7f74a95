"""Where a recorded step's values go: two preallocated buffers on the model's device, one row
per data input (x, y, the loss, every layer's output, the tensors computed between modules,
dropout masks, the gradients of the recorded tensors) and one row per step (the parameters and
the optimizer's state after it, the gradients the optimizer used, running statistics), filled
by the hooks, handed over as numpy arrays a chunk of steps at a time.

Each step's values are copied at once into the buffers (one ``torch.cat`` a buffer), so that no
object per step outlives it: thousands of small tensors held until a chunk is written would
wake Python's garbage collector over PyTorch's objects, again and again. The parameters and
state before a step are the ones after the step before (their version counters say nothing
changed them in between); else they are read again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ...errors import ModelError
from .graph import Graph
from .optim import StateReader
from .passes import Pass, noise_of
from .statistics import Statistics

if TYPE_CHECKING:
    from .figures import Checks, FirstLayer

__all__ = ["CHUNK_STEPS", "CHUNK_VALUES", "HANDOFF_SECONDS", "Chunk", "Layout"]

Array = npt.NDArray[Any]

#: Steps held before they are handed over (a chunk also ends after HANDOFF_SECONDS).
CHUNK_STEPS = 2_048
#: Rows a chunk holds at most, and values (per-step ones repeated on each row of their step).
CHUNK_ROWS = 8_192
CHUNK_VALUES = 4_000_000
#: Rows of the steps not captured whole a chunk holds at most (their x, y and loss).
LIGHT_ROWS = 32_768
HANDOFF_SECONDS = 0.25


@dataclass(frozen=True)
class Chunk:
    """Steps as captured, in numpy arrays of the run's dtype."""

    m: Array  # the rows of each step
    rows: dict[str, Array]  # by field, one row per data input
    steps: dict[str, Array]  # by field, one row per step ("before" and "after" included)
    lrs: list[float]
    scalars_before: Array  # (steps, parameters): the optimizer's step counts
    scalars_after: Array
    x_grads: bool = True  # whether ∂Loss/∂x is autograd's (else: from the first layer)
    #: Which steps were captured whole (None: all); which are known by their figures (their
    #: parts' extremes vouched for: the steps not captured whole, and with a flight recorder
    #: every step the checks vouch for), their x, y and loss (their rows, by field) and their
    #: parts' largest |values| (known steps, checked parts).
    full: Array | None = None
    known: Array | None = None
    #: The steps captured whole without ∂Loss/∂x (zeros in its place): a flight recorder's
    #: known steps, given it by the first layer's formula if a window writes them.
    x_later: Array | None = None
    light: dict[str, Array] | None = None
    maxima: Array | None = None


def _fields(fields: Sequence[tuple[str, int]]) -> dict[str, slice]:
    out, pos = {}, 0
    for name, width in fields:
        out[name] = slice(pos, pos + width)
        pos += width
    return out


class Layout:
    """The buffers of a run whose network is ``graph``, and the copies that fill them."""

    def __init__(
        self,
        graph: Graph,
        state: StateReader,
        y_width: int,
        step_grads: bool,
        dtype: Any,
        handoff: Callable[[], None],
        written: Callable[[], int],
        fast: bool = False,
    ) -> None:
        self.graph, self.state, self.dtype, self.handoff = graph, state, dtype, handoff
        self.written = written
        #: A stack whose passes are followed from its first layer (see Capture._fast), and
        #: whether this chunk's ∂Loss/∂x is autograd's.
        self.fast, self.x_grads = fast, True
        first = next(p.tensor for p in graph.params) if graph.params else None
        self.device = first.device if first is not None else torch.device("cpu")
        self.tdtype = first.dtype if first is not None else torch.float64
        self.params = [p.tensor for p in graph.params]
        self.flat = [p.detach().view(-1) for p in self.params]
        size = {name: int(np.prod(shape, dtype=np.int64)) for name, shape in graph.shapes.items()}
        self.masks = [layer for layer in graph.layers if layer.mask]
        self.bn = [layer for layer in graph.layers if layer.state]
        row = [("x", size["o1"]), ("y", y_width), ("loss", 1)]
        row += [(f"o{layer.k}", size[f"o{layer.k}"]) for layer in graph.layers]
        row += [(op.name, size[op.name]) for op in graph.ops]
        row += [(f"noise{layer.k}", size[layer.feed]) for layer in self.masks]
        row += [(f"g:{t}", size[t]) for t in graph.sources]
        self.row_fields = _fields(row)
        # What each step copies, by name, in the buffer's order (made once: a step is short).
        self.outputs = [f"o{layer.k}" for layer in graph.layers]
        self.op_names = [op.name for op in graph.ops]
        self.mask_ks = [layer.k for layer in self.masks]
        self.row_width = sum(w for _, w in row)
        n_params = sum(t.numel() for t in self.flat)
        step = [("after", n_params + state.size), ("grad", n_params if step_grads else 0)]
        for layer in self.bn:
            channels = 2 * layer.in_shape[0] + 1
            step += [(f"bn{layer.k}_before", channels), (f"bn{layer.k}_after", channels)]
        self.step_fields = _fields(step)
        self.step_width = sum(w for _, w in step)
        self.step_grads = step_grads
        # ``before`` repeated on each row too when the chunk is written
        per_row = self.row_width + self.step_width + n_params + state.size
        self.chunk_rows = max(1, min(CHUNK_ROWS, CHUNK_VALUES // max(per_row, 1)))
        # Zeros (and the extremes' buffer): fields a step leaves unwritten are converted and
        # dropped, and memory left as it was may hold signalling NaNs, which numpy warns about.
        self.steps = torch.zeros(CHUNK_STEPS + 1, self.step_width, dtype=self.tdtype,
                                 device=self.device)  # fmt: skip
        # Views made once: slicing a tensor anew each step costs more than the copy.
        after, grad = self.step_fields["after"], self.step_fields["grad"]
        self.after_views = [row[after] for row in self.steps]
        self.statistics = Statistics(self.steps, self.step_fields)
        self.grad_views = [row[grad] for row in self.steps]
        # The gradients are gathered in one row first, one view a parameter in its shape (one
        # copy for them all: cheaper than flattening each for a cat).
        self.grad_stage = torch.empty(0, dtype=self.tdtype, device=self.device)
        self.grad_parts: list[torch.Tensor] = []
        self.zero_grads: list[torch.Tensor] = []
        if step_grads:
            self.grad_stage = torch.empty(n_params, dtype=self.tdtype, device=self.device)
            parts = torch.split(self.grad_stage, [t.numel() for t in self.flat])
            self.grad_parts = [v.view(p.shape) for v, p in zip(parts, self.params, strict=True)]
            self.zero_grads = [torch.zeros_like(p) for p in self.params]
        self._rows_buffer(self.chunk_rows)
        self.rows = 0  # rows of the chunk in the buffer
        self.m: list[int] = []  # rows of each step of the chunk
        self.lrs: list[float] = []
        # The optimizer's step counts before and after each step, on the host.
        self.scalars = torch.zeros(CHUNK_STEPS, 2, state.scalar_count, dtype=torch.float64)
        self.befores: dict[int, torch.Tensor] = {}  # steps that did not start where one ended
        self.started = False
        self.after_versions: list[Any] = []
        self.last_handoff = time.monotonic()
        self.zeros: dict[tuple[int, ...], torch.Tensor] = {}
        self.early: set[int] = set()  # layers whose output the model changes in place later
        self.follows: list[tuple[nn.Module, int, str, bool, bool, bool]] = []  # see start()
        self.plain_parts: list[bool] | None = None
        # Steps the run does not hold are not copied (see .figures): ``held`` says which it
        # holds (set by the recorder; None: every step is captured whole).
        self.held: Callable[[int], bool] | None = None
        self.checks: Checks | None = None
        #: A flight recorder's run: every step captured whole and also known by its figures
        #: where the checks vouch for it; each chunk's buffers are its own (a window may be
        #: written from them later).
        self.every_step = False
        self.full: list[bool] = []
        self.known: list[bool] = []
        self.x_later: list[bool] = []
        self.whole = True  # whether the step being captured is captured whole
        self.vouched = False  # … and known by its figures
        self.later = False  # … and left without ∂Loss/∂x (see Chunk.x_later)
        self.light_fields = _fields([("x", size["o1"]), ("y", y_width), ("loss", 1)])
        light_width = size["o1"] + y_width + 1
        self.light_capacity = max(1, min(LIGHT_ROWS, CHUNK_VALUES // light_width))
        self.light = torch.empty(0, light_width, dtype=self.tdtype, device=self.device)
        self.light_rows = 0
        self.maxima = self.ends = torch.empty(0)
        self.end_views: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.first: FirstLayer | None = None
        self.first_weight: torch.Tensor | None = None
        self.x_parts = (0, 0)  # where ∂Loss/∂x and the first layer's δ lie in the parts
        # A step not held: the parts the checks read besides x (by name; the tensors whose
        # gradients they read), each chunk's row of their extremes, and the light buffer's
        # views of x, y and loss, made once.
        self.checked: list[str] = []
        self.checked_grads: list[str] = []
        self.maxima_rows: list[torch.Tensor] = []
        self.light_pairs: list[tuple[torch.Tensor, torch.Tensor]] = []  # the parts' pairs
        self.light_views: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}
        self.hold: bool | None = None  # may_hold() of the step being captured, once known

    def select(
        self,
        held: Callable[[int], bool] | None,
        checks: Checks,
        first: FirstLayer | None = None,
    ) -> None:
        """Capture whole only the steps ``held`` says the run holds (and those ``checks``
        cannot vouch for); with ``first``, the steps not held go without ∂Loss/∂x. With
        ``held`` None (a flight recorder), capture every step whole and know each one the
        checks vouch for by its figures too."""
        self.held, self.checks, self.first = held, checks, first
        self.every_step = held is None
        if self.every_step:  # a chunk's rows alone: the per-step values are not repeated
            self._rows_buffer(max(1, min(CHUNK_ROWS, CHUNK_VALUES // max(self.row_width, 1))))
        self.light = torch.empty(self.light_capacity, self.light.shape[1], dtype=self.tdtype,
                                 device=self.device)  # fmt: skip
        # Each checked part's smallest and largest value, side by side: the step's, and the
        # chunk's steps'.
        self.ends = torch.empty(2 * checks.reductions, dtype=self.tdtype, device=self.device)
        self.end_views = [(self.ends[2 * i], self.ends[2 * i + 1])
                          for i in range(checks.reductions)]  # fmt: skip
        self.maxima = torch.zeros(CHUNK_STEPS, 2 * checks.reductions, dtype=self.tdtype,
                                  device=self.device)  # fmt: skip
        self.maxima_rows = list(self.maxima.unbind())
        names = list(self.row_fields)
        if first is not None:
            self.x_parts = (names.index("g:o1"), names.index(f"g:o{first.layer.k}"))
            self.first_weight = first.weight.detach()  # the same storage, as it changes
        checked = [names[i] for i in checks.index]
        self.checked = [n for n in checked[1:] if not n.startswith("g:")]
        self.checked_grads = [n[2:] for n in checked[1:] if n.startswith("g:")]
        # The parts of a row in its order: x, then the others checked, their gradients last.
        assert checked == ["x", *self.checked, *(f"g:{t}" for t in self.checked_grads)]
        self.light_pairs = list(self.end_views)
        self.ends.zero_()
        if first is not None and "o1" in self.checked_grads:
            # A step not held has no ∂Loss/∂x (its bound stands for it): its pair stays 0.
            del self.light_pairs[1 + len(self.checked) + self.checked_grads.index("o1")]
            self.checked_grads.remove("o1")
        self.hold = None

    def step_bytes(self, m: int) -> int:
        """What a flight recorder holds of a step of ``m`` rows: its rows and its values
        stored once a step, on the host."""
        return (m * self.row_width + self.step_width) * int(np.dtype(self.dtype).itemsize)

    def wants_x_grad(self) -> bool:
        """Whether the pass beginning needs autograd's ∂Loss/∂x: every step but those the
        run does not hold, when the first layer's formula can stand for it (see
        :class:`.figures.FirstLayer`)."""
        return self.first is None or (self.may_hold() and not self.every_step)

    def may_hold(self) -> bool:
        """Whether the step being captured may be held (its values all wanted)."""
        hold = self.hold
        if hold is None:  # once a step: its number changes only in after_step
            hold = self.hold = (self.held is None or bool(self.early)
                                or self.held(self.written_steps))  # fmt: skip
        return hold

    # -- the rows' buffer ---------------------------------------------------------------------

    def _rows_buffer(self, rows: int) -> None:
        """The buffer of the chunk's rows, ``rows`` rows (a bigger one for a bigger batch)."""
        self.capacity = rows
        self.data = torch.empty(rows, self.row_width, dtype=self.tdtype, device=self.device)
        # Views made once: slicing a tensor anew each step costs more than the copy.
        self.views: dict[tuple[int, int], torch.Tensor] = {}

    def _rows_view(self, start: int, m: int) -> torch.Tensor:
        view = self.views.get((start, m))
        if view is None:
            if len(self.views) > 4 * CHUNK_ROWS:
                self.views.clear()
            view = self.views[start, m] = self.data[start : start + m]
        return view

    def make_room(self, m: int) -> None:
        """Room for a step of ``m`` rows: the chunk handed over first when it is full."""
        if self.rows + m > self.capacity or (
            self.checks is not None and self.light_rows + m > self.light_capacity
        ):  # fmt: skip
            self.handoff()
            if m > self.capacity:  # a batch larger than the buffer
                self._rows_buffer(m)

    # -- the forward pass ---------------------------------------------------------------------

    def start(self, seen: Pass) -> None:
        """The first pass's tensors by name (its outputs as copied when they were made; the
        layers whose output the model changes in place later are copied so every step)."""
        for layer, call in zip(self.graph.layers, seen.calls, strict=True):
            if layer.feed.startswith("i") and call.input is not None:
                seen.tensors[layer.feed] = call.input
            if call.noise is not None:
                seen.noise[layer.k] = call.noise
            seen.tensors[f"o{layer.k}"] = call.output
            if call.output._version != call.out_version:
                self.early.add(layer.k)
        seen.tensors["o1"] = seen.alias
        # What each later pass's call of layer k checks and keeps (see follow), made once:
        # its module, k, what it reads, whether that is computed by the model's code, whether
        # the model changes its output in place later, whether it has a mask.
        self.follows = [
            (layer.module, layer.k, layer.feed, layer.feed.startswith("i"), layer.k in self.early,
             layer.mask) for layer in self.graph.layers
        ]  # fmt: skip
        seen.count = len(seen.calls)
        seen.layers = len(self.graph.layers)
        self.make_room(seen.x.shape[0])
        for name, values in seen.state.items():
            self.steps[len(self.m) + 1, self.step_fields[name]] = values
        self.hold = None  # the layers changed in place are known now

    def follow(
        self, seen: Pass, module: nn.Module, inp: torch.Tensor | None, out: torch.Tensor
    ) -> None:
        """A later pass's call of a leaf module: the same path as the first step's."""
        count, tensors = seen.count, seen.tensors
        if count >= len(self.follows) or self.follows[count][0] is not module:
            raise ModelError(
                f"the forward pass of step {self.written_steps} calls its modules in another "
                "order than the first step's (a branch, a module skipped?): steptrace records "
                "one network, the first step's"
            )
        _, k, feed, reads_input, early, mask = self.follows[count]
        name = self.outputs[count]  # o{k}
        if reads_input:
            if inp is not None:
                tensors[feed] = inp
                if inp.grad_fn is not None:
                    inp.retain_grad()
        elif inp is not tensors.get(feed):
            raise ModelError(
                f"in step {self.written_steps}, {self.graph.layers[count].describe()} does not "
                f"read {feed} as it did in the first step: steptrace records one network"
            )
        tensors[name] = out
        if early:
            seen.values[name] = out.detach().clone()
        if mask:
            noise = noise_of(out)
            if noise is not None:
                seen.noise[k] = noise
        seen.count = count + 1

    def state_copy(self, seen: Pass, module: nn.Module, when: str) -> None:
        """A batch norm's running statistics before or after its forward pass (of a later
        pass: the first's are kept by the capture until the run opens): see :mod:`.statistics`."""
        self.statistics.copy(seen.count + 2, module, when, len(self.m) + 1, self.may_hold())

    # -- the step -----------------------------------------------------------------------------

    @property
    def written_steps(self) -> int:
        """The number of the step being captured (from 0 for the run's first)."""
        return self.written() + len(self.m)

    def copy_rows(self, seen: Pass, y: torch.Tensor, per_sample: torch.Tensor) -> None:
        """One row per data input into the buffer: x, y, loss, every recorded tensor (a step
        the run does not hold: its x, y and loss, and its parts' extremes, see :meth:`_light`)."""
        graph, m = self.graph, seen.x.shape[0]
        if seen.count != len(graph.layers):
            raise ModelError(
                f"the forward pass of this step called {seen.count} of the first step's "
                f"{len(graph.layers)} modules: steptrace records one network, the first step's"
            )
        if seen.out is not None and graph.loss_input.startswith("i"):
            seen.tensors[graph.loss_input] = seen.out
        tensors, values = seen.tensors, seen.values
        with torch.no_grad():  # a copy, no part of the graph
            if self.checks is not None and (self.every_step or not self.may_hold()):
                # only the parts the checks read, gathered at once
                light = [seen.x, y, per_sample, *map(tensors.__getitem__, self.checked)]
                light += [self._grad(tensors[t], m) for t in self.checked_grads]
                self.vouched = self._light(light, m)
                if self.vouched and not self.every_step:
                    self.whole = False
                    return
            if self.statistics.later:  # captured whole after all
                self.statistics.before(len(self.m) + 1)
            parts = [seen.x, y, per_sample]
            parts += [values[n] if n in values else tensors[n] for n in self.outputs]
            parts += [tensors[n] for n in self.op_names]
            parts += [seen.noise[k] for k in self.mask_ks]
            parts += [self._grad(tensors[t], m) for t in graph.sources]
            dtype, plain = self.tdtype, self.plain_parts
            if plain is None:  # which parts are (rows, values) of the run's dtype: once
                plain = self.plain_parts = [p.dim() == 2 and p.dtype == dtype for p in parts]
            self.whole = True
            first = self.first if self.x_grads and not seen.alias.requires_grad else None
            if first is not None and not self.vouched:  # captured for its values: given it
                d1, delta = self.x_parts
                parts[d1] = first.d1(parts[delta], seen.alias.shape)
            self.later = first is not None and self.vouched
            flat = [p if ok else _rows(p, m, dtype) for p, ok in zip(parts, plain, strict=True)]
            torch.cat(flat, dim=1, out=self._rows_view(self.rows, m))

    def _light(self, parts: list[torch.Tensor], m: int) -> bool:
        """A step the run does not hold, ``parts`` its x, y, loss and then the other parts the
        checks read: those parts' smallest and largest values (on the device) and its x, y
        and loss kept; False when the checks cannot vouch for its figures (it is then
        captured whole). The parts are reduced in their own shapes: flattening them first
        would copy the ones laid out otherwise (a convolution's gradients)."""
        s, checks = len(self.m), self.checks
        if checks is None or m + self.light_rows > self.light_capacity:
            return False
        # Each part's smallest and largest value (a NaN is both; the cheapest reduction
        # PyTorch has of a tensor, on CPU: ‖·‖∞ costs several times more), into views made
        # once, then into the chunk's row of them. (x is the first part checked, y and the
        # loss are not; the first layer's weights, when they are checked, have the last pair.)
        aminmax, dtype, pairs = torch.aminmax, self.tdtype, self.light_pairs
        aminmax(parts[0] if parts[0].dtype == dtype else parts[0].to(dtype), out=pairs[0])
        for part, pair in zip(parts[3:], pairs[1:], strict=False):
            aminmax(part if part.dtype == dtype else part.to(dtype), out=pair)
        if self.first_weight is not None:
            aminmax(self.first_weight, out=self.end_views[-1])
        self.maxima_rows[s].copy_(self.ends)
        ends = self.ends if self.ends.device.type == "cpu" else self.ends.cpu()
        if not checks.fine(ends.tolist(), m):
            return False
        if self.every_step:  # captured whole too: its rows hold its x, y and loss
            return True
        view = self.light_views.get((self.light_rows, m))
        if view is None:
            if len(self.light_views) > 4 * CHUNK_ROWS:
                self.light_views.clear()
            rows = self.light[self.light_rows : self.light_rows + m]
            view = self.light_views[self.light_rows, m] = tuple(
                rows[:, where] for where in self.light_fields.values()
            )
        for into, part in zip(view, parts, strict=False):  # copy_ converts y, as .to() does
            into.copy_(part.reshape(into.shape))
        self.light_rows += m
        return True

    def _grad(self, t: torch.Tensor, m: int) -> torch.Tensor:
        g = t.grad
        if g is not None:
            return g
        shape = (m, *t.shape[1:])  # a tensor the loss does not depend on: 0, in its shape
        zeros = self.zeros.get(shape)
        if zeros is None:
            zeros = self.zeros[shape] = torch.zeros(shape, dtype=self.tdtype, device=self.device)
        return zeros

    def _after_tensors(self) -> list[torch.Tensor]:
        return self.flat + self.state.tensors() if self.state.size else self.flat

    @staticmethod
    def _versions(tensors: list[torch.Tensor]) -> list[tuple[int, int]]:
        """Which tensors and their versions (a view shares its parameter's counter)."""
        return list(zip(map(id, tensors), map(_VERSION, tensors), strict=True))

    def before_step(self) -> None:
        """The parameters and state the step starts from, and the gradients it uses."""
        s = len(self.m)
        tensors = self._after_tensors()
        if not self.started:
            torch.cat(tensors, out=self.after_views[0])
            self.started = True
        elif self._versions(tensors) != self.after_versions:
            self.befores[s] = torch.cat(tensors)  # changed between the steps
        if self.step_grads and self.params:
            grads = [p.grad if p.grad is not None else zero
                     for p, zero in zip(self.params, self.zero_grads, strict=True)]  # fmt: skip
            with torch.no_grad():
                torch._foreach_copy_(self.grad_parts, grads)
                self.grad_views[s + 1].copy_(self.grad_stage)
        self.lrs.append(self.state.lr())
        if self.state.scalar_count:
            self.state.scalars(self.scalars[s, 0])

    def after_step(self, m: int) -> int:
        """The step's parameters and state after it; the step's number in the chunk."""
        s = len(self.m)
        tensors = self._after_tensors()
        torch.cat(tensors, out=self.after_views[s + 1])
        self.after_versions = self._versions(tensors)
        if self.state.scalar_count:
            self.state.scalars(self.scalars[s, 1])
        self.m.append(m)
        self.hold = None  # the next step's
        self.statistics.step_done()
        self.full.append(self.whole)
        self.known.append(self.vouched)
        self.x_later.append(self.later)
        if self.whole:
            self.rows += m
        self.whole, self.vouched, self.later = True, False, False
        return s

    def due(self) -> bool:
        return (len(self.m) >= CHUNK_STEPS
                or time.monotonic() - self.last_handoff >= HANDOFF_SECONDS)  # fmt: skip

    # -- handing over -------------------------------------------------------------------------

    def take(self) -> Chunk | None:
        """The chunk's steps (None when there are none); the buffers start the next chunk."""
        self.last_handoff = time.monotonic()
        steps = len(self.m)
        if not steps:
            return None
        rows = _host(self.data[: self.rows], self.dtype)
        per_step = _host(self.steps[: steps + 1], self.dtype)
        if self.every_step:  # the chunk's own: its rows' buffer is left to it, below
            per_step = per_step.copy()
        after = self.step_fields["after"]
        before = per_step[:-1, after].copy()
        for s, tensor in self.befores.items():
            before[s] = _host(tensor, self.dtype)
        step_values = {name: per_step[1:, where] for name, where in self.step_fields.items()}
        step_values["before"] = before
        full = np.array(self.full, dtype=bool)
        known = np.array(self.known, dtype=bool)
        light = maxima = None
        if known.any():
            if self.every_step:  # the known steps' x, y and loss, among every step's rows
                held = np.repeat(known, self.m)
                light = {name: rows[held, self.row_fields[name]] for name in self.light_fields}
            else:
                host = _host(self.light[: self.light_rows], self.dtype).copy()
                light = {name: host[:, where] for name, where in self.light_fields.items()}
            maxima = _largest(_host(self.maxima[:steps], np.float64)[known])
        chunk = Chunk(
            np.array(self.m, dtype=np.int64),
            {name: rows[:, where] for name, where in self.row_fields.items()},
            step_values, self.lrs, self.scalars[:steps, 0].numpy().copy(),
            self.scalars[:steps, 1].numpy().copy(), self.x_grads, full, known,
            np.array(self.x_later, dtype=bool), light, maxima,
        )  # fmt: skip
        if self.every_step and self.device.type == "cpu":
            self._rows_buffer(self.capacity)  # the chunk keeps the rows it was handed
        # The next chunk starts from the parameters this one ended with.
        self.steps[0] = self.steps[steps]
        self.m, self.lrs, self.befores, self.rows = [], [], {}, 0
        self.full, self.known, self.x_later, self.light_rows = [], [], [], 0
        return chunk


def _largest(ends: Array) -> Array:
    """max |values| of each part, from its (smallest, largest) side by side on the last axis."""
    top: Array = np.maximum(-ends[..., 0::2], ends[..., 1::2])
    return top


def _rows(t: torch.Tensor, m: int, dtype: torch.dtype) -> torch.Tensor:
    """``t`` as (rows, values) of ``dtype``."""
    flat = t.reshape(m, -1)
    return flat if flat.dtype == dtype else flat.to(dtype)


_VERSION = attrgetter("_version")


def _host(t: torch.Tensor, dtype: Any) -> Array:
    """A buffer on the host as numpy: one copy a chunk (pinned and asynchronous from a GPU,
    then waited for once)."""
    if t.device.type != "cpu":
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t.detach(), non_blocking=True)
        torch.cuda.current_stream(t.device).synchronize()
        t = host
    out: Array = t.detach().numpy().astype(dtype, copy=False)
    return out
