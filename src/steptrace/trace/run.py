"""Recording a run from any training loop: the framework-neutral writer.

steptrace's own recorder computes every value itself. A loop written with another library
(PyTorch, JAX, plain NumPy) computes them its own way; :func:`open_run` lets it write the same
trace, so that replay, the dashboard, ``diff``, the golden fixture and ``verify`` work on it::

    with steptrace.open_run("traces", "numpy-mlp", model="mlp.json", lr="0.1",
                            dataset=(X, Y), epochs=5, batch_size=1) as run:
        for planned in run.plan():
            x, y = X[list(planned.samples)], Y[list(planned.samples)]
            ...                                  # forward, loss, backward, update
            run.write_step({"x": x, "y": y, "o1": o1, …, "w2_after": w2_new, …})

Each step's values go in by tensor name (``x``, ``y``, ``o{k}``, ``loss``, ``d{k}``,
``grad_w{k}``, ``w{k}_before``, ``w{k}_after``, ``grad_b{k}``, ``b{k}_before``, ``b{k}_after``),
one row per data input of the step; parameters may be given once for the step. Steps are
numbered as they come.

**Where each row belongs.** A trace places every row by its step, epoch and dataset row
(``sample``). Given the dataset, the epochs and the batch size, the run's plan is known from the
start (the rows each step visits: :meth:`RunWriter.plan`) and every step is checked against it.
Otherwise the plan is *learned* from the data the loop feeds: a data input is known by its
values, an epoch ends when the first input of a step comes back, and when the run closes its
metadata (rows, epochs …) is written into every part. A loop that visits a fixed dataset in
order, epoch after epoch, comes out as exactly the trace ``steptrace record`` writes; any other
(shuffled, ending mid-epoch …) as one epoch over the data inputs in the order the loop fed them.

**Crash safety** is the recorder's (:mod:`steptrace.trace.writer`): rows are flushed at least
once a second while steps come, a SIGKILL leaves every flushed step readable and the run
``incomplete``; an exception in the loop marks the run incomplete with the reason and goes on;
Ctrl-C too (it is held off while a part is being written, so no part is lost).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError, WriteError
from ..numerics import Numerics, parse_exact
from ..schedule import PlannedStep, plan
from .keep import RECORD_KEY, Selection, selected_meta
from .placement import DataInfo, Declared, Learned, Placer, RowNumbers
from .run_buffer import RowBuffer, RowsBlock, buffer_rows
from .run_ctrl_c import HeldCtrlC
from .run_settle import settle
from .run_setup import (
    GraphSpec,
    ModelLike,
    Plan,
    Setup,
    check_graph_setup,
    check_setup,
    plan_meta,
)
from .run_thread import WriterThread
from .run_values import StepValues
from .scalars import BAD_WEIGHTS, FIGURES, LATER
from .schema import Tensor, after_columns, tensors_of
from .summary import RunSummary, SummaryTracker
from .writer import USER_TRIGGER, TraceWriter, make_run_dir

if TYPE_CHECKING:
    from ..data import Dataset

__all__ = ["GraphSpec", "RunWriter", "open_graph_run", "open_run", "stop_reason"]

Array = npt.NDArray[Any]


def open_run(
    out: str | Path = "traces",
    name: str | None = None,
    *,
    model: ModelLike,
    lr: str | float | Fraction,
    numerics: str = "float64",
    dataset: Dataset | tuple[Any, Any] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    features: int | Sequence[str] | None = None,
    targets: int | Sequence[str] | None = None,
    dataset_name: str | None = None,
    recorded_with: Mapping[str, Any] | None = None,
    flush_seconds: float = 1.0,
    every: int | None = None,
    steps: str | None = None,
    tensors: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    keep_last: int | None = None,
    after: int | None = None,
    trigger: str | Sequence[str] | None = None,
) -> RunWriter:
    """Open a new run in ``out`` for a loop that computes its own values; see the module doc.

    ``model`` is the network with its initial parameters (a model file, its JSON as a dict, or
    a :class:`~steptrace.Model`), ``lr`` the learning rate (text is read exactly, like
    ``--lr``), ``numerics`` ``float64`` or ``float32``. ``dataset`` (a
    :class:`~steptrace.Dataset` or ``(inputs, outputs)`` arrays), ``epochs`` and
    ``batch_size`` together fix the plan in advance; ``shuffle``/``seed`` then choose
    steptrace's shuffled order (follow it with :meth:`RunWriter.plan`). Without them the plan
    is learned. ``features``/``targets`` name the data's columns (or count them) when there is
    no dataset; ``recorded_with`` says what computed the values (stored in the metadata, e.g.
    ``{"framework": "jax", "version": "0.4.30"}``). ``every``, ``steps``, ``tensors`` and
    ``layers`` choose what is recorded, as :func:`steptrace.record`'s do: the loop still
    writes every step, the run keeps those; ``keep_last``, ``after`` and ``trigger`` make it
    a flight recorder, as :func:`steptrace.record`'s do (:meth:`RunWriter.trigger` fires it).

    Use the result as a context manager; :meth:`RunWriter.close` otherwise.

    >>> with open_run("traces", "np", model="examples/mlp-3-2-1.json", lr="0.1",
    ...               dataset=steptrace.seed_dataset(), epochs=1, batch_size=1) as run:
    ...     run.write_step(values)  # doctest: +SKIP
    """
    setup = check_setup(
        model=model, lr=lr, numerics=numerics, dataset=dataset, epochs=epochs,
        batch_size=batch_size, shuffle=shuffle, seed=seed, features=features, targets=targets,
        dataset_name=dataset_name,
    )  # fmt: skip
    selection = Selection.of(every, steps, tensors, layers, keep_last, after, trigger)
    return _opened(setup, out, name, recorded_with, flush_seconds, selection)


def open_graph_run(
    out: str | Path,
    name: str | None,
    *,
    spec: GraphSpec,
    lr: str | float | Fraction,
    numerics: str = "float64",
    dataset: Dataset | tuple[Any, Any] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    features: int | Sequence[str] | None = None,
    targets: int | Sequence[str] | None = None,
    dataset_name: str | None = None,
    recorded_with: Mapping[str, Any] | None = None,
    flush_seconds: float = 1.0,
    selection: Selection | None = None,
) -> RunWriter:
    """:func:`open_run` for a network that is no stack of the series' layers (an adapter's:
    residual blocks, any module): its tensors, model and ``graph`` as ``spec`` gives them
    (docs/trace-format.md, "Runs of any network"). Rows are written as :func:`open_run`'s."""
    setup = check_graph_setup(
        spec=spec, lr=lr, numerics=numerics, dataset=dataset, epochs=epochs,
        batch_size=batch_size, features=features, targets=targets, dataset_name=dataset_name,
    )  # fmt: skip
    return _opened(setup, out, name, recorded_with, flush_seconds, selection)


def _opened(
    setup: Setup,
    out: str | Path,
    name: str | None,
    recorded_with: Mapping[str, Any] | None,
    flush_seconds: float,
    selection: Selection | None = None,
) -> RunWriter:
    """The run folder made and the writer opened for a checked setup (a ``selection`` of
    nothing refused first)."""
    computed = tensors_of(setup.metadata("", recorded_with))
    rows = setup.plan.batch_size if setup.plan is not None else None
    chosen = selected_meta(selection or Selection(), computed, rows)
    run_dir = make_run_dir(Path(out), name or setup.name)
    meta = {**setup.metadata(run_dir.name, recorded_with), **chosen}
    writer = RunWriter(run_dir, meta, setup.numerics, setup.data_info(), flush_seconds, computed)
    if setup.plan is not None:
        writer._declare(setup.plan)
    return writer


class RunWriter:
    """One run being written from a training loop. Made by :func:`open_run`."""

    def __init__(
        self,
        run_dir: Path,
        meta: dict[str, Any],
        numerics: Numerics,
        data: DataInfo,
        flush_seconds: float,
        computed: list[Tensor] | None = None,
    ) -> None:
        self.path = run_dir
        self.run_id = str(meta["run_id"])
        self.meta = meta
        self.numerics = numerics
        self.status: str = "running"
        self.reason: str | None = None
        self.summary: RunSummary | None = None
        self._data = data
        # The tensors the loop gives (the run may keep fewer: its metadata's).
        listed = computed or tensors_of(meta)
        self._tensors = [Tensor(t.name, t.shape) for t in listed]
        self._values = StepValues(self._tensors)
        self._lr = float(numerics.make(parse_exact(meta["lr_exact"])))
        self._flush_seconds = flush_seconds
        self._handoff_seconds = min(0.2, flush_seconds / 2)
        self._writer: TraceWriter | None = None
        self._background: WriterThread | None = None
        self._placer: Placer = Learned(data)
        self._tracker = SummaryTracker(1)
        self._buffer: RowBuffer | None = None
        self._columns: list[str] | None = None
        self._column_index: dict[str, int] = {}
        self._steps = 0
        self._rows = 0
        self._numbers = RowNumbers()  # each step's first row, for a stream's numbers
        self._last_handoff = time.monotonic()
        self._closed = False
        self._ctrl_c = HeldCtrlC()

    # -- the plan -------------------------------------------------------------------------------

    def _declare(self, given: Plan) -> None:
        assert self._data.dataset is not None
        rows = len(self._data.dataset)
        self._placer = Declared(
            self._data, rows, given.epochs, given.batch_size, given.shuffle, given.seed
        )
        self._open_writer(
            plan_meta(self._data, rows, given.epochs, given.batch_size, given.shuffle, given.seed)
        )

    def plan(self) -> Iterator[PlannedStep]:
        """The steps of a run whose plan is known (dataset, epochs and batch size given): each
        step's number, epoch and the dataset rows it visits, in order."""
        if not isinstance(self._placer, Declared):
            raise ConfigError(
                "this run learns its plan from the data it is given; open it with dataset, "
                "epochs and batch_size to know the plan in advance"
            )
        p = self._placer
        return plan(p.rows, p.epochs, p.batch_size, p.shuffle, p.seed)

    @property
    def steps(self) -> int:
        """Steps written so far."""
        return self._steps

    # -- writing --------------------------------------------------------------------------------

    def write_step(
        self,
        values: Mapping[str, Any],
        samples: Sequence[int] | None = None,
        lr: float | None = None,
    ) -> None:
        """Write one step: every tensor of the run by name, one row per data input of the step
        (parameters once for the step, or once per row). ``samples`` says which dataset rows
        the step visits, when the loop knows; ``lr`` the learning rate it used (default: the
        run's).

        Raises :class:`~steptrace.ConfigError` naming the tensor when a value is missing, extra
        or of the wrong shape, and when the step does not follow the run's plan.
        """
        if self._closed:
            raise ConfigError(f"the run {self.path} is closed; open a new one to write more")
        m, arrays = self._values.of_step(values)
        ids = None if samples is None else np.asarray(samples, dtype=np.int64)
        if ids is not None and ids.shape != (m,):
            raise ConfigError(f"samples: {m} dataset rows expected (one per row), got {ids.shape}")
        self._write(arrays, np.array([m], dtype=np.int64), ids, None if lr is None else [lr])

    def write_rows(
        self,
        values: Mapping[str, Any],
        m: Sequence[int],
        samples: Sequence[int] | None = None,
        lr: Sequence[float] | None = None,
    ) -> None:
        """Write many steps at once: ``m`` gives the rows of each step, every tensor in
        ``values`` holds all their rows, flat (rows × components, parameters repeated on each
        row of their step), and ``lr`` is each step's learning rate. What adapters use: one
        call per chunk of steps costs far less than one per step."""
        sizes = np.asarray(m, dtype=np.int64).reshape(-1)
        if not len(sizes) or (sizes < 1).any():
            raise ConfigError("write_rows: every step has at least one row")
        arrays = self._values.of_rows(values, int(sizes.sum()))
        ids = None if samples is None else np.asarray(samples, dtype=np.int64)
        if lr is not None and len(lr) != len(sizes):
            raise ConfigError(f"write_rows: {len(sizes)} learning rates expected, one per step")
        self._write(arrays, sizes, ids, lr)

    def _write(
        self,
        arrays: Mapping[str, Array],
        m: Array,
        samples: Array | None,
        lrs: Sequence[float] | None,
    ) -> None:
        """Rows of whole steps: ``arrays`` by tensor name, (rows, components) each; ``m`` the
        rows of each step. The torch adapter writes many steps at once through here. Ctrl-C
        waits until the rows are in place."""
        with self._ctrl_c.held():
            self._place_and_buffer(arrays, m, samples, lrs)
        self._ctrl_c.raise_held()

    def write_figures(
        self,
        figures: Mapping[str, Array],
        m: Sequence[int],
        rows: Mapping[str, Array],
        weights_bad: Array,
        lr: Sequence[float],
        values: Callable[[Array], Mapping[str, Any]] | None = None,
    ) -> None:
        """Steps given by their per-step figures (an adapter that did not capture their
        values, or makes them only if they are written): ``figures`` by the figures' columns
        (``step`` aside), one per step; ``rows`` the steps' ``x``, ``y`` and ``loss`` (which
        place them in the plan and go into the run's summary) and ``weights_bad`` whether each
        step's new weights hold a NaN or ±inf (the summary's divergence).

        Without ``values``, the run's selection must hold none of the steps. With it, any may
        be written (a flight recorder's window): ``values(steps)``, given a flag per step,
        gives those steps' values as :meth:`write_rows` takes them, and is called from the
        writer's thread, only for the steps written."""
        sizes = np.asarray(m, dtype=np.int64).reshape(-1)
        selection = Selection.from_meta(self.meta)
        if values is None and (selection.keep_last is not None or selection.holds(
            self._steps + np.arange(len(sizes))
        ).any()):  # fmt: skip
            raise ConfigError("write_figures: a step the run may hold needs its values "
                              "(write_rows)")  # fmt: skip
        with self._ctrl_c.held():
            data = np.hstack([rows["x"], rows["y"]]).astype(np.float64)
            step = self._steps + np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
            epoch, sample = self._placer.place(self._steps, sizes, data, None)
            if self._writer is None:
                self._open_writer(self._provisional_meta(int(sizes[0])))
            self._hand_off()  # the rows of the steps before go first
            bad = np.repeat(np.where(weights_bad, np.nan, 0.0), sizes)
            narrow = np.float32 if self.numerics.name == "float32" else np.float64
            given = {"step": self._steps + np.arange(len(sizes)), **figures,
                     "lr": np.asarray(lr, dtype=narrow).astype(np.float64)}  # fmt: skip
            block = {"step": step, "epoch": epoch, "sample": sample,
                     "loss": np.asarray(rows["loss"], np.float64).reshape(-1), FIGURES: given,
                     BAD_WEIGHTS: bad}  # fmt: skip
            if values is not None:
                self._column_names()  # made here once, not in the writer's thread
                keys = {"step": step, "epoch": epoch, "sample": sample}
                lrs = np.repeat(np.asarray(lr, dtype=np.float64), sizes)
                block[LATER] = partial(self._made_later, values, keys, lrs, sizes)
            assert self._background is not None
            self._background.put(block)
            self._steps += len(sizes)
            self._rows += int(sizes.sum())
            self._numbers.add(sizes)
        self._ctrl_c.raise_held()

    def _made_later(
        self,
        values: Callable[[Array], Mapping[str, Any]],
        keys: dict[str, Array],
        lr: Array,
        m: Array,
        rows: Array,
    ) -> RowsBlock:
        """The rows flagged by ``rows`` (whole steps) of steps given by their figures, their
        values made now, as a buffer's rows (the writer's thread: a flight recorder's window)."""
        steps = rows[np.cumsum(m) - m]
        n = int(rows.sum())
        arrays = self._values.of_rows(values(steps), n)
        buffer = RowBuffer(self._tensors, n, *self._column_names())
        picked = {k: v[rows] for k, v in keys.items()}
        buffer.put(picked["step"], picked["epoch"], picked["sample"],
                   {"lr": lr[rows].reshape(n, 1), **arrays}, self.numerics)  # fmt: skip
        return buffer.rows_block(_unused)

    def trigger(self, reason: str = "rec.trigger()") -> None:
        """Fire the flight recorder (a run opened with ``keep_last``) after the last step
        written: the steps it keeps are written, with ``reason`` in the run's metadata."""
        if "keep_last" not in (self.meta.get(RECORD_KEY) or {}):
            raise ConfigError("trigger() needs a flight recorder: open the run with keep_last")
        if self._background is None or not self._steps:
            raise ConfigError("trigger() fires after a step: write one first")
        self._hand_off()
        with self._ctrl_c.held():
            self._background.put({USER_TRIGGER: str(reason), "step": self._steps - 1})

    def _place_and_buffer(
        self,
        arrays: Mapping[str, Array],
        m: Array,
        samples: Array | None,
        lrs: Sequence[float] | None,
    ) -> None:
        rows = int(m.sum())
        data = np.hstack([arrays["x"], arrays["y"]]).astype(np.float64)
        if self.numerics.name == "float32":
            data = data.astype(np.float32).astype(np.float64)
        step = self._steps + np.repeat(np.arange(len(m), dtype=np.int64), m)
        epoch, sample = self._placer.place(self._steps, m, data, samples)
        if self._writer is None:
            self._open_writer(self._provisional_meta(int(m[0])))
        buffer = self._buffer_for(rows)
        lr = np.full(rows, self._lr) if lrs is None else np.repeat(np.asarray(lrs, float), m)
        buffer.put(step, epoch, sample, {"lr": lr.reshape(rows, 1), **arrays}, self.numerics)
        self._steps += len(m)
        self._rows += rows
        self._numbers.add(m)
        if buffer.full or time.monotonic() - self._last_handoff >= self._handoff_seconds:
            self._hand_off()

    def _buffer_for(self, rows: int) -> RowBuffer:
        if self._buffer is not None and self._buffer.room < rows:
            self._hand_off()
        if self._buffer is None:
            spare = self._background.spare if self._background is not None else []
            if spare and spare[-1].room >= rows:
                self._buffer = spare.pop()  # its pages are the kernel's already
                return self._buffer
            names, index = self._column_names()
            capacity = max(rows, buffer_rows(len(names)))
            self._buffer = RowBuffer(self._tensors, capacity, names, index)
        return self._buffer

    def _column_names(self) -> tuple[list[str], dict[str, int]]:
        """The columns of the run's rows and each one's place (made once: a network's row may
        have a million)."""
        if self._columns is None:
            self._column_index = {c: i for i, c in enumerate(c for t in self._tensors
                                                             for c in t.columns())}  # fmt: skip
            self._columns = list(self._column_index)
        return self._columns, self._column_index

    def _provisional_meta(self, first_m: int) -> dict[str, Any]:
        """The plan written until a learned plan is known, when the run closes: no total of
        steps, which nobody declared."""
        return plan_meta(self._data, *self._placer.provisional(first_m), False, None,
                         total_known=False)  # fmt: skip

    def _open_writer(self, plan: dict[str, Any]) -> None:
        self.meta.update(plan)
        self._tracker = SummaryTracker(int(self.meta["steps_per_epoch"]))
        self._writer = TraceWriter(
            self.path, False, self.meta, self._flush_seconds, computed=self._tensors
        )
        self._background = WriterThread(self._writer, self._tracker, after_columns(self._tensors))

    def _hand_off(self) -> None:
        """The buffered rows to the trace writer's thread (which flushes them when due)."""
        self._last_handoff = time.monotonic()
        buffer, self._buffer = self._buffer, None
        if buffer is None or not buffer.rows:
            return
        assert self._background is not None
        with self._ctrl_c.held():
            self._background.put(buffer)  # made into columns in the writer's thread

    # -- closing --------------------------------------------------------------------------------

    def close(self, status: str = "complete", reason: str | None = None) -> None:
        """Flush every step and mark the run ``complete`` (or ``incomplete`` with ``reason``).
        A learned plan is written into every part's metadata first.

        If writing fails, the run is marked incomplete with the reason, and the error raised
        (unless the run was closing as incomplete already: then the error that stopped the
        loop is the one that matters)."""
        if self._closed:
            return
        self._closed = True
        asked = status
        planned = self._planned_steps()
        if status == "complete" and planned is not None and self._steps < planned:
            # The loop ended before its plan did: say so, and how far it came.
            status = "incomplete"
            reason = (f"the recording ended after step {self._steps - 1} of the plan's "
                      f"{planned}" if self._steps else "the recording ended before its first "
                      f"step (the plan has {planned})")  # fmt: skip
        error: BaseException | None = None
        try:
            with self._ctrl_c.held():
                try:
                    self._hand_off_all()
                except Exception as exc:  # a write error, from the writer's thread too
                    error, status = exc, "incomplete"
                    reason = reason or str(exc) or f"stopped by {type(exc).__name__}"
                if self._writer is not None:  # a flight recorder's steps, before any settling
                    try:
                        self._writer.end(status, reason)
                        self._writer.flush()
                    except Exception as exc:
                        error, status = error or exc, "incomplete"
                        reason = reason or str(exc)
                if self._writer is None:  # not one step came: the run holds none
                    self._open_writer(self._provisional_meta(1))
                    if status == "complete":
                        status, reason = "incomplete", "no steps were recorded"
                assert self._writer is not None
                summary = self._tracker.result()
                if isinstance(self._placer, Learned) and self._steps:
                    try:
                        summary = self._settle(status == "complete")
                    except Exception as exc:  # the disk, or anything else: keep the steps
                        error = error or WriteError(
                            f"cannot write the learned plan into {self.path}: {exc}; its "
                            "steps are kept, under the plan known when it started"
                        )
                        status, reason = "incomplete", reason or str(error)
                self._writer.close(status, reason, summary.as_dict())
            self.status, self.reason, self.summary = status, reason, summary
        finally:
            self._ctrl_c.release()
        if error is not None and asked == "complete":
            raise error
        if self._ctrl_c.pressed:  # pressed while the run was closing: it closed first
            self._ctrl_c.pressed = False
            raise KeyboardInterrupt

    def _planned_steps(self) -> int | None:
        """The steps of a plan declared in advance (None when the plan is learned)."""
        return self._placer.total if isinstance(self._placer, Declared) else None

    def _hand_off_all(self) -> None:
        """Every row written and flushed; the writer's thread done."""
        try:
            self._hand_off()
        finally:
            if self._background is not None:
                self._background.finish()
        if self._writer is not None:
            self._writer.flush()

    def _settle(self, complete: bool) -> RunSummary:
        """Write the learned plan into the metadata and every part (renumbering the rows as
        one epoch of the data inputs when they follow no epoch plan); the summary under it."""
        assert self._writer is not None and isinstance(self._placer, Learned)
        final = self._placer.final(complete, self._rows, self._steps)
        # A loop that stopped early declared no total: its steps are the ones it holds.
        meta = {**self.meta, **plan_meta(self._data, *final.plan, total_known=complete)}
        meta, summary = settle(self.path, meta, final, self._placer, self._data, tensors_of(meta),
                               self._numbers)  # fmt: skip
        self.meta.clear()
        self.meta.update(meta)
        self._writer.meta = meta
        # A run that keeps some steps: its summary is of every step, as they came.
        return summary if RECORD_KEY not in meta else self._tracker.result()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close("complete")
        else:
            self.close("incomplete", stop_reason(exc, self._steps))

    def __repr__(self) -> str:
        return f"RunWriter({str(self.path)!r}, {self._steps} steps, {self.status})"


def _unused(buffer: RowBuffer) -> None:
    """A buffer made for one block, let go with it."""


def stop_reason(exc: BaseException, steps: int) -> str:
    """Why a loop stopped, for ``_run.json``: ``interrupted by Ctrl-C after step 41``."""
    after = f"after step {steps - 1}" if steps else "before the first step"
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted by Ctrl-C {after}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"stopped by {type(exc).__name__}{': ' + text if text else ''} {after}"
