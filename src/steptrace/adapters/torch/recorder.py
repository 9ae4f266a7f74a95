"""A PyTorch loop being recorded: the run opened once its first step is understood (the network
learned, the loss known), the captured steps turned into the trace's rows a chunk at a time,
and the run closed whatever ends the loop.

Nothing is written before the first ``rec.step``: a loop that fails before it, or a model
whose first step cannot be recorded, leaves no run behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ...errors import ConfigError, SteptraceError
from ...numerics import get_numerics
from ...trace.flight import check_memory, sigterm_held
from ...trace.keep import Selection
from ...trace.run import GraphSpec, RunWriter, open_graph_run, stop_reason
from ...trace.scalars import ScalarSpec
from ...trace.schema import Tensor
from .buffers import Chunk, Layout
from .capture import Capture
from .describe import recorded_with, run_spec
from .figures import Checks, FirstLayer, first_layer, light_figures, subset
from .graph import Graph
from .loss import check_loss
from .optim import OptimizerSpec, StateReader, describe_optimizer
from .values import chunk_values

__all__ = ["Recorder", "RunArgs"]

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class RunArgs:
    """What :func:`steptrace.torch.record` was given for the run it opens at the first step."""

    out: str | Path
    name: str | None
    numerics: str
    loss: str | None
    dataset: Any
    epochs: int | None
    batch_size: int | None
    features: Any
    targets: Any
    dataset_name: str | None
    flush_seconds: float
    selection: Selection | None = None  # what the run keeps (default: everything)


class Recorder:
    """A PyTorch loop being recorded; made by :func:`steptrace.torch.record`.
    ``rec.step(x, y, per_sample)`` once per step; ``rec.path`` is the run folder once the
    first step opened it (``load_tensor(rec, "d3")`` reads it).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, args: RunArgs) -> None:
        self.model, self.optimizer, self.args = model, optimizer, args
        self.run: RunWriter | None = None
        self.path: Path | None = None
        self.graph: Graph | None = None
        self.spec: GraphSpec | None = None
        self.optim: OptimizerSpec = describe_optimizer(optimizer)
        self.dtype = np.float32 if args.numerics == "float32" else np.float64
        self.capture = Capture(model, optimizer, self._begin, self._written, self._write_chunk)
        self.figures: ScalarSpec | None = None  # the figures of steps not captured whole
        self.first: FirstLayer | None = None  # see .figures.FirstLayer

    def step(self, x: torch.Tensor, y: torch.Tensor, per_sample: torch.Tensor) -> None:
        """Record this step: call it after ``backward()``, before ``optimizer.step()``.
        ``x`` and ``y`` are the step's data (one row per data input: ``y`` its targets, or
        its class numbers), ``per_sample`` each row's loss (its mean is what the step learns
        from: ``per_sample.mean().backward()``)."""
        self.capture.step(x, y, per_sample)

    def trigger(self, reason: str = "rec.trigger()") -> None:
        """Fire the flight recorder (``keep_last``) after the last step recorded: the steps it
        keeps are written, ``reason`` in the run's metadata."""
        if self.run is None:
            raise ConfigError("rec.trigger() fires after a step: record one first")
        self._write_chunk()
        self.run.trigger(reason)

    def _written(self) -> int:
        return self.run.steps if self.run is not None else 0

    # -- the first step -------------------------------------------------------------------------

    def _begin(
        self, graph: Graph, out: torch.Tensor, y: torch.Tensor, per_sample: torch.Tensor
    ) -> Layout:
        """The run opened for the network the first step took; its buffers' layout."""
        args = self.args
        loss, problem = check_loss(args.loss, out, y, per_sample)
        classes = not torch.is_floating_point(y)
        y_shape = tuple(y.shape[1:]) or (1,)
        name = type(self.model).__name__
        spec, plain = run_spec(graph, self.optim, loss, y_shape, classes,
                               get_numerics(args.numerics), name)  # fmt: skip
        self.graph, self.spec = graph, spec
        state = StateReader(self.optimizer, self.optim, [p.tensor for p in graph.params])
        width = int(np.prod(y_shape))
        # A stack of the series' layers starting with a linear one is followed from that layer.
        fast = plain and graph.layers[0].kind.type == "linear" and len(graph.shapes["o1"]) == 1
        layout = Layout(graph, state, width, not plain, self.dtype, self._write_chunk,
                        self._written, fast)  # fmt: skip
        chosen = args.selection
        # Steps the run does not hold are not copied when their figures can be made without
        # (the gradients the optimizer used are recorded). A flight recorder copies every
        # step, and makes the trace's values only of the steps a window writes: its window
        # is what it captures of them (checked before anything is written).
        figured = chosen is not None and not plain and (chosen.gaps or chosen.keep_last is not None)
        if figured and chosen is not None and chosen.keep_last is not None:
            check_memory(chosen.keep_last, layout.step_bytes(len(y)))
        self.run = open_graph_run(
            args.out, args.name or "torch", spec=spec,
            lr=float(self.optimizer.param_groups[0]["lr"]), numerics=args.numerics,
            dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
            features=args.features, targets=args.targets, dataset_name=args.dataset_name,
            recorded_with=recorded_with(self.optimizer, self.optim),
            flush_seconds=args.flush_seconds, selection=args.selection,
        )  # fmt: skip
        self.path = self.run.path
        if problem is not None:
            raise problem
        if figured and chosen is not None:
            flight = chosen.keep_last is not None
            largest = float(torch.finfo(layout.tdtype).max)
            first = self.first = first_layer(graph)
            checks = Checks.of(graph, list(layout.row_fields), largest, first)
            layout.select(None if flight else chosen.held, checks, first)
            self.figures = ScalarSpec.of(spec.tensors)
        return layout

    # -- rows -----------------------------------------------------------------------------------

    def _write_chunk(self) -> None:
        """The captured steps as rows, every tensor of the trace, to the run (a SIGTERM waits
        until the whole chunk is handed over)."""
        with sigterm_held():
            self._hand_over()

    def _hand_over(self) -> None:
        chunk = self.capture.take()
        if chunk is None:
            return
        assert self.run is not None and self.graph is not None and self.spec is not None
        tensors: tuple[Tensor, ...] = self.spec.tensors
        known = chunk.known
        if known is None or not known.any():
            values = chunk_values(self.graph, self.optim, tensors, chunk)
            self.run.write_rows(values, chunk.m.tolist(), lr=chunk.lrs)
            return
        self._write_mixed(chunk, known)

    def _write_mixed(self, chunk: Chunk, known: Array) -> None:
        """A chunk of steps given by their values and steps known by their figures, written
        in step order. A flight recorder's known steps go with a way to make their values,
        which the writer uses for the steps its windows write."""
        assert self.run is not None and self.graph is not None and self.spec is not None
        assert self.figures is not None and chunk.light is not None
        layout = self.capture.layout
        assert layout is not None and layout.checks is not None
        figures, bad = light_figures(self.graph, self.optim, self.figures, layout.checks, chunk)
        values = {}
        if not known.all():
            values = chunk_values(self.graph, self.optim, self.spec.tensors,
                                  subset(chunk, ~known))  # fmt: skip
        m, lrs = chunk.m, np.asarray(chunk.lrs)
        row = light_row = light_step = 0  # where the next segment starts in each
        for figured, segment in _segments(known):
            sizes = m[segment]
            rows = int(sizes.sum())
            if not figured:
                part = {name: v[row : row + rows] for name, v in values.items()}
                self.run.write_rows(part, sizes.tolist(), lr=lrs[segment].tolist())
                row += rows
                continue
            n = len(sizes)
            these = slice(light_step, light_step + n)
            given = {name: v[these] for name, v in figures.items()}
            kept = {name: v[light_row : light_row + rows] for name, v in chunk.light.items()}
            later = partial(self._values_of, chunk, segment) if layout.every_step else None
            self.run.write_figures(given, sizes.tolist(), kept, bad[these],
                                   lrs[segment].tolist(), later)  # fmt: skip
            light_step += n
            light_row += rows

    def _values_of(self, chunk: Chunk, segment: slice, held: Array) -> dict[str, Array]:
        """The values of the steps ``held`` flags of the chunk's ``segment`` (a flight
        recorder's window, made in the writer's thread)."""
        assert self.graph is not None and self.spec is not None
        steps = np.zeros(len(chunk.m), dtype=bool)
        steps[segment] = held
        made = subset(chunk, steps)
        if self.first is not None:
            made = self.first.later(made)
        return chunk_values(self.graph, self.optim, self.spec.tensors, made)

    # -- the end --------------------------------------------------------------------------------

    def close(self, error: BaseException | None = None) -> None:
        """Write the last steps, remove the hooks, close the run (incomplete with the reason
        when ``error`` stopped the loop)."""
        capture = self.capture
        if capture.closed:
            return
        capture.closed = True
        try:
            if self.run is None:
                return  # not one step: nothing was written
            problem: BaseException | None = error
            try:
                self._write_chunk()
            except SteptraceError as exc:
                problem = problem or exc
            if problem is None and capture.pending_m:
                problem = ConfigError(
                    f"rec.step(...) of step {capture.step_number()} was not followed by "
                    "optimizer.step()"
                )
            if problem is None:
                self.run.close("complete")
            else:
                self.run.close("incomplete", stop_reason(problem, self.run.steps))
                if error is None:
                    raise problem
        finally:
            capture.release()

    def remove_hooks(self) -> None:
        self.capture.remove_hooks()

    @property
    def status(self) -> str:
        """``complete`` or ``incomplete`` once closed; ``running``; ``empty`` before the
        first step opened a run."""
        return self.run.status if self.run is not None else "empty"

    @property
    def summary(self) -> Any:
        return self.run.summary if self.run is not None else None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(exc)

    def __repr__(self) -> str:
        steps = self.run.steps if self.run is not None else 0
        return f"Recorder({str(self.path)!r}, {steps} steps, {self.status})"


def _segments(full: Array) -> list[tuple[bool, slice]]:
    """The runs of steps captured whole or not, in order: (whole, the steps' slice)."""
    edges = np.flatnonzero(np.diff(full.astype(np.int8))) + 1
    bounds = [0, *edges.tolist(), len(full)]
    return [(bool(full[a]), slice(a, b)) for a, b in pairwise(bounds)]
