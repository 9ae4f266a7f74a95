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

import contextlib
import hashlib
import json
import os
import queue
import re
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError, WriteError
from ..model.spec import Model, load_model
from ..numerics import Numerics, get_numerics, parse_exact
from ..schedule import PlannedStep, plan, steps_per_epoch
from .placement import DataInfo, Declared, Learned, Placer
from .schema import METADATA_KEY, Tensor, after_columns, run_metadata_head
from .summary import RunSummary, SummaryTracker
from .writer import TraceWriter, make_run_dir, parquet_options

if TYPE_CHECKING:
    from ..data import Dataset

__all__ = ["RunWriter", "open_run", "stop_reason"]

Array = npt.NDArray[Any]
#: A model as :func:`steptrace.load_model` takes it: a model file's path, its JSON as a dict, or
#: a :class:`~steptrace.Model`.
ModelLike = str | Path | Mapping[str, Any] | Model

#: Rows held before they go to the trace writer (whole steps; fewer for very wide models).
BUFFER_ROWS = 8_192
#: Parameter tensors: one value per step, given per step or per row.
_PARAMS = ("_before", "_after")


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
    ``{"framework": "jax", "version": "0.4.30"}``).

    Use the result as a context manager; :meth:`RunWriter.close` otherwise.

    >>> with open_run("traces", "np", model="examples/mlp-3-2-1.json", lr="0.1",
    ...               dataset=steptrace.seed_dataset(), epochs=1, batch_size=1) as run:
    ...     run.write_step(values)  # doctest: +SKIP
    """
    num = get_numerics(numerics)
    if num.is_exact:
        raise ConfigError(
            "open_run records float runs (float64 or float32); exact runs are recorded by "
            "steptrace.record, which computes every value itself"
        )
    data = _as_dataset(dataset, features, targets, dataset_name) if dataset is not None else None
    n_in = data.n_features if data is not None else _width(features, model)
    chosen = load_model(model, n_in) if not isinstance(model, Model) else model
    if chosen.n_in != n_in:
        raise ConfigError(f"the model reads {chosen.n_in} features but the data has {n_in}")
    if chosen.drawn:
        raise ConfigError(
            "the model file leaves some weights out; give every initial weight (a run stores "
            "the parameters it starts from)"
        )
    stack = chosen.stack(num)
    for k, params in sorted(chosen.init.items()):
        if not all(num.fits(q) for q in params.flat()):
            raise ConfigError(f"layer {k}: an initial parameter is too large for {num.name}")
    if data is not None:
        target_names = list(data.targets)
        feature_names = list(data.features)
    else:
        feature_names = _names(features, n_in, "x")
        target_names = _names(targets, stack.n_out, "y")
    if len(target_names) != stack.n_out:
        raise ConfigError(
            f"the model gives {stack.n_out} output(s) but the data has {len(target_names)} "
            "target(s); give one target per output neuron"
        )
    lr_text, lr_q = _lr(lr, num)
    declared = data is not None and epochs is not None and batch_size is not None
    if declared:
        assert data is not None and epochs is not None and batch_size is not None
        _check_plan(len(data), epochs, batch_size)
        if shuffle and seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
    elif shuffle:
        raise ConfigError(
            "shuffle=True needs the plan: give dataset, epochs and batch_size, and follow "
            "run.plan()'s order"
        )
    run_dir = make_run_dir(Path(out), name or f"{dataset_name or 'run'}-{num.name}-lr{lr_text}")
    # A loop's own values are stored as it gave them: steptrace does not vouch that its δ1
    # is its δ2, or that it left the parameters where the next step found them.
    meta = run_metadata_head(
        run_dir.name, num, lr_text, lr_q, chosen, len(target_names), store_all=True
    )
    if recorded_with is not None:
        meta["recorded_with"] = json.loads(json.dumps(dict(recorded_with)))
    info = DataInfo(
        dataset_name or (data.name if data is not None else "loop"),
        feature_names, target_names, data, num,
    )  # fmt: skip
    writer = RunWriter(run_dir, meta, num, info, flush_seconds)
    if declared:
        assert epochs is not None and batch_size is not None
        writer._declare(epochs, batch_size, shuffle, seed)
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
    ) -> None:
        self.path = run_dir
        self.run_id = str(meta["run_id"])
        self.meta = meta
        self.numerics = numerics
        self.status: str = "running"
        self.reason: str | None = None
        self.summary: RunSummary | None = None
        self._data = data
        self._tensors = [Tensor(t["name"], tuple(t["shape"])) for t in meta["tensors"]]
        self._params = {t.name for t in self._tensors if t.name.endswith(_PARAMS)}
        self._lr = float(numerics.make(parse_exact(meta["lr_exact"])))
        self._flush_seconds = flush_seconds
        self._handoff_seconds = min(0.2, flush_seconds / 2)
        self._writer: TraceWriter | None = None
        self._background: _Background | None = None
        self._placer: Placer = Learned(data)
        self._tracker = SummaryTracker(1)
        self._buffer: _Buffer | None = None
        self._steps = 0
        self._rows = 0
        self._last_handoff = time.monotonic()
        self._closed = False
        self._writing = False
        self._ctrl_c = False
        self._previous_sigint: Any = None
        self._catch_ctrl_c()

    # -- the plan -------------------------------------------------------------------------------

    def _declare(self, epochs: int, batch_size: int, shuffle: bool, seed: int | None) -> None:
        assert self._data.dataset is not None
        rows = len(self._data.dataset)
        self._placer = Declared(self._data, rows, epochs, batch_size, shuffle, seed)
        self._open_writer(self._plan_meta(rows, epochs, batch_size, shuffle, seed))

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
        m, arrays = self._columns_of(values)
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
        rows = int(sizes.sum())
        if not len(sizes) or (sizes < 1).any():
            raise ConfigError("write_rows: every step has at least one row")
        arrays: dict[str, Array] = {}
        for t in self._tensors:
            if t.name == "lr":
                continue
            if t.name not in values:
                raise ConfigError(f"write_rows: tensor {t.name!r} is missing")
            a = np.asarray(values[t.name])
            if a.shape != (rows, t.size):
                raise ConfigError(
                    f"write_rows: {t.name} has shape {a.shape}, expected {(rows, t.size)}"
                )
            arrays[t.name] = a
        ids = None if samples is None else np.asarray(samples, dtype=np.int64)
        if lr is not None and len(lr) != len(sizes):
            raise ConfigError(f"write_rows: {len(sizes)} learning rates expected, one per step")
        self._write(arrays, sizes, ids, lr)

    def _columns_of(self, values: Mapping[str, Any]) -> tuple[int, dict[str, Array]]:
        """The step's tensors as (rows, components) arrays, checked against the model."""
        if self._closed:
            raise ConfigError(f"the run {self.path} is closed; open a new one to write more")
        names = {t.name for t in self._tensors} - {"lr"}
        missing = [t.name for t in self._tensors if t.name in names and t.name not in values]
        extra = sorted(set(values) - names - {"lr"})
        if missing:
            raise ConfigError(
                f"write_step: tensor {missing[0]!r} is missing (this model records "
                f"{', '.join(t.name for t in self._tensors if t.name != 'lr')})"
            )
        if extra:
            raise ConfigError(f"write_step: {extra[0]!r} is not a tensor this model records")
        x = np.asarray(values["x"])
        if x.ndim == 0:
            raise ConfigError("write_step: x must have one row per data input of the step")
        m = int(x.shape[0])
        if m < 1:
            raise ConfigError("write_step: a step has at least one data input (x has no rows)")
        arrays: dict[str, Array] = {}
        for t in self._tensors:
            if t.name == "lr":
                continue
            a = np.asarray(values[t.name], dtype=np.float64)
            if t.name in self._params and a.shape == t.shape:
                a = np.broadcast_to(a, (m, *t.shape))
            elif t.shape == (1,) and a.shape == (m,):
                a = a.reshape(m, 1)
            if a.shape != (m, *t.shape):
                per_step = " (or once for the step)" if t.name in self._params else ""
                raise ConfigError(
                    f"write_step: {t.name} has shape {a.shape}, expected {(m, *t.shape)}: "
                    f"{_shape_text(t)} per data input{per_step}, {m} data input(s) in this step"
                )
            arrays[t.name] = a.reshape(m, t.size)
        return m, arrays

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
        with self._held_ctrl_c():
            self._place_and_buffer(arrays, m, samples, lrs)
        self._raise_held_ctrl_c()

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
            self._open_writer(self._plan_meta(*self._placer.provisional(int(m[0])), False, None))
        buffer = self._buffer_for(rows)
        lr = np.full(rows, self._lr) if lrs is None else np.repeat(np.asarray(lrs, float), m)
        buffer.put(step, epoch, sample, {"lr": lr.reshape(rows, 1), **arrays}, self.numerics)
        self._steps += len(m)
        self._rows += rows
        if buffer.full or time.monotonic() - self._last_handoff >= self._handoff_seconds:
            self._hand_off()

    def _buffer_for(self, rows: int) -> _Buffer:
        if self._buffer is not None and self._buffer.room < rows:
            self._hand_off()
        if self._buffer is None:
            self._buffer = _Buffer(self._tensors, max(rows, BUFFER_ROWS))
        return self._buffer

    def _open_writer(self, plan_meta: dict[str, Any]) -> None:
        self.meta.update(plan_meta)
        self._tracker = SummaryTracker(int(self.meta["steps_per_epoch"]))
        self._writer = TraceWriter(self.path, False, self.meta, self._flush_seconds)
        self._background = _Background(self._writer, self._tracker, after_columns(self._tensors))

    def _hand_off(self) -> None:
        """The buffered rows to the trace writer's thread (which flushes them when due)."""
        self._last_handoff = time.monotonic()
        buffer, self._buffer = self._buffer, None
        if buffer is None or not buffer.rows:
            return
        assert self._background is not None
        with self._held_ctrl_c():
            self._background.put(buffer.block())

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
        error: BaseException | None = None
        try:
            with self._held_ctrl_c():
                try:
                    self._hand_off_all()
                except Exception as exc:  # a write error, from the writer's thread too
                    error, status = exc, "incomplete"
                    reason = reason or str(exc) or f"stopped by {type(exc).__name__}"
                if self._writer is None:  # not one step came: the run holds none
                    self._open_writer(self._plan_meta(*self._placer.provisional(1), False, None))
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
            self._release_ctrl_c()
        if error is not None and asked == "complete":
            raise error
        if self._ctrl_c:  # pressed while the run was closing: it closed first
            self._ctrl_c = False
            raise KeyboardInterrupt

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
        one epoch of the data inputs when they follow no epoch plan); the summary under it.

        One part in memory at a time: each is summarised under the final plan and rewritten
        atomically (a first pass hashes the inputs in the order they came, for one epoch of
        them)."""
        assert self._writer is not None and isinstance(self._placer, Learned)
        final = self._placer.final(complete, self._rows, self._steps)
        meta = {**self.meta, **self._plan_meta(*final.plan)}
        tracker = SummaryTracker(int(meta["steps_per_epoch"]))
        data_hash = hashlib.sha256(_names_bytes(self._data))
        if not final.stream and self._data.dataset is None:
            for row in self._placer.rows_in_order():
                _hash_row(data_hash, row)
        parts = sorted(self.path.glob("part-*.parquet"))
        after = after_columns(self._tensors)
        if final.stream:
            # The data's hash is over the inputs in the order they came: a first pass.
            data_columns = [c for t in self._tensors if t.name in ("x", "y") for c in t.columns()]
            for part in parts:
                table = pq.read_table(part, columns=data_columns)
                values = np.column_stack([table.column(c).to_numpy() for c in data_columns])
                for row in values.tolist():
                    _hash_row(data_hash, row)
        if final.stream or self._data.dataset is None:  # else: the dataset's own, exact hash
            meta["dataset"] = {**meta["dataset"], "sha256": data_hash.hexdigest()}
        offset = 0
        for part in parts:
            table = pq.read_table(part)
            if final.stream:
                table = _as_stream(table, offset)
            offset += table.num_rows
            block = {c: table.column(c).to_numpy() for c in ("step", "loss")}
            tracker.update(block, [table.column(c).to_numpy() for c in after])
            _rewrite(part, table, meta)
        self.meta.clear()
        self.meta.update(meta)
        self._writer.meta = meta
        return tracker.result()

    def _plan_meta(
        self, rows: int, epochs: int, batch_size: int, shuffle: bool, seed: int | None
    ) -> dict[str, Any]:
        spe = steps_per_epoch(rows, batch_size)
        info = self._data
        data = info.dataset
        return {
            "epochs": epochs,
            "batch_size": batch_size,
            "shuffle": shuffle,
            "seed": seed,
            "steps_per_epoch": spe,
            "steps": spe * epochs,
            "dataset": {
                "name": info.name,
                "sha256": data.sha256 if data is not None else "",
                "rows": rows,
                "features": list(info.features),
                "targets": list(info.targets),
                "source": data.source if data is not None else "recorded",
            },
        }

    # -- Ctrl-C ---------------------------------------------------------------------------------

    def _catch_ctrl_c(self) -> None:
        """While the run is open, Ctrl-C interrupts the loop as usual, except while rows are
        being placed or written: then it waits until they are (so no part is lost)."""
        if threading.current_thread() is not threading.main_thread():
            return

        def on_sigint(signum: int, frame: FrameType | None) -> None:
            if self._writing:
                self._ctrl_c = True
            else:
                self._pass_ctrl_c(frame)

        with contextlib.suppress(ValueError):  # not settable here (an embedded interpreter)
            self._previous_sigint = signal.signal(signal.SIGINT, on_sigint)

    def _pass_ctrl_c(self, frame: FrameType | None) -> None:
        """Ctrl-C as it would have been handled without the run: the previous handler."""
        previous = self._previous_sigint
        if callable(previous):
            previous(signal.SIGINT, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    def _raise_held_ctrl_c(self) -> None:
        if self._ctrl_c and not self._writing:
            self._ctrl_c = False
            self._pass_ctrl_c(None)

    def _release_ctrl_c(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    @contextlib.contextmanager
    def _held_ctrl_c(self) -> Iterator[None]:
        writing, self._writing = self._writing, True
        try:
            yield
        finally:
            self._writing = writing

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


def stop_reason(exc: BaseException, steps: int) -> str:
    """Why a loop stopped, for ``_run.json``: ``interrupted by Ctrl-C after step 41``."""
    after = f"after step {steps - 1}" if steps else "before the first step"
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted by Ctrl-C {after}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"stopped by {type(exc).__name__}{': ' + text if text else ''} {after}"


class _Background:
    """The trace writer in a thread of its own: Parquet encoding and compression release the
    GIL, so on a second core the rows are written while the loop goes on. Blocks wait in a
    short queue (memory stays flat: a loop faster than the disk waits for it); an error
    writing is raised in the loop's thread at the next hand-off, or when the run closes."""

    def __init__(self, writer: TraceWriter, tracker: SummaryTracker, after: list[str]) -> None:
        self.writer, self.tracker, self.after = writer, tracker, after
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="steptrace-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (block := self.queue.get()) is not None:
            if self.error is not None:
                continue  # the run is lost from here: drain until the end
            try:
                self.writer.write(block)
                self.tracker.update(block, [block[c] for c in self.after])
            except BaseException as exc:  # raised again in the loop's thread
                self.error = exc

    def put(self, block: dict[str, Any]) -> None:
        self._raise()
        self.queue.put(block)

    def finish(self) -> None:
        """Wait for every block to be written (once; later calls only re-raise)."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


def _as_dataset(
    source: Any,
    features: int | Sequence[str] | None,
    targets: int | Sequence[str] | None,
    name: str | None,
) -> Dataset:
    """A steptrace :class:`Dataset` from a Dataset or ``(inputs, outputs)`` arrays."""
    from ..data import Dataset

    if isinstance(source, Dataset):
        return source
    if not isinstance(source, tuple) or len(source) != 2:
        raise ConfigError(
            "dataset must be a steptrace Dataset or a pair (inputs, outputs) of arrays, got "
            f"{type(source).__name__}"
        )
    x = np.asarray(source[0], dtype=np.float64)
    y = np.asarray(source[1], dtype=np.float64)
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or not len(x):
        raise ConfigError(
            f"dataset: inputs (rows × features) and outputs (rows × targets) with the same rows, "
            f"got shapes {x.shape} and {y.shape}"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ConfigError("dataset: every value must be finite (no NaN or infinity)")
    return Dataset(
        name or "data",
        tuple(_names(features, x.shape[1], "x")),
        tuple(_names(targets, y.shape[1], "y")),
        tuple(tuple(Fraction(float(v)) for v in row) for row in x),
        tuple(tuple(Fraction(float(v)) for v in row) for row in y),
        source="arrays",
    )


def _names(given: int | Sequence[str] | None, n: int, prefix: str) -> list[str]:
    if given is None or isinstance(given, int):
        count = n if given is None else given
        return [f"{prefix}{i}" for i in range(1, count + 1)]
    names = [str(g) for g in given]
    if len(names) != n:
        what = "features" if prefix == "x" else "targets"
        raise ConfigError(f"{len(names)} {what} named, but the data has {n}")
    return names


def _width(features: int | Sequence[str] | None, model: ModelLike) -> int:
    """Features of the data: as given, or the width the model's first weights read."""
    if isinstance(features, int):
        return features
    if features is not None:
        return len(features)
    if isinstance(model, Model):
        return model.n_in
    spec: Any = model
    if not isinstance(model, Mapping):
        try:
            spec = json.loads(Path(model).read_text(encoding="utf-8"), parse_float=str)
        except (OSError, ValueError):
            spec = None
    for layer in (spec or {}).get("layers", []) if isinstance(spec, Mapping) else []:
        if isinstance(layer, Mapping) and isinstance(layer.get("weights"), list):
            first = layer["weights"][0] if layer["weights"] else None
            if isinstance(first, list):
                return len(first)
    raise ConfigError("say how many features the data has (features=3 or their names)")


def _lr(lr: str | float | Fraction, num: Numerics) -> tuple[str, Fraction]:
    if isinstance(lr, float):
        text = re.sub(r"e([-+]?)0*(\d)", lambda m: f"e{m[1].strip('+')}{m[2]}", repr(lr))
        # The text as the user typed it, when it gives the run the same learning rate.
        if num.make(parse_exact(text)) != num.make(Fraction(lr)):
            text = str(Fraction(lr))
    else:
        text = str(lr).strip()
    q = parse_exact(text, what="learning rate")
    if q <= 0:
        raise ConfigError(f"learning rate must be greater than 0, got {text}")
    return text, q


def _check_plan(rows: int, epochs: int, batch_size: int) -> None:
    for what, value in (("epochs", epochs), ("batch size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{what} must be a whole number of at least 1, got {value!r}")
    if batch_size > rows:
        raise ConfigError(f"batch size {batch_size} is larger than the dataset ({rows} rows)")


def _shape_text(t: Tensor) -> str:
    return "×".join(str(n) for n in t.shape) + " values" if t.shape else "one value"


def _names_bytes(info: DataInfo) -> bytes:
    return "\x1f".join((*info.features, *info.targets)).encode()


def _exact_text(v: float) -> str:
    """``str(Fraction(v))``, faster: the exact value of a float as a rational."""
    n, d = float(v).as_integer_ratio()
    return str(n) if d == 1 else f"{n}/{d}"


def _hash_row(h: Any, row: Sequence[float]) -> None:
    """One row into a dataset's hash, as :attr:`steptrace.Dataset.sha256` adds it."""
    h.update(("\x1e" + "\x1f".join(_exact_text(v) for v in row)).encode())


def _as_stream(table: pa.Table, first_row: int) -> pa.Table:
    """Rows renumbered as one epoch of data inputs: epoch 0, sample = the input's number."""
    rows = table.num_rows
    epoch = pa.array(np.zeros(rows, dtype=np.int64))
    sample = pa.array(np.arange(first_row, first_row + rows, dtype=np.int64))
    table = table.set_column(table.schema.get_field_index("epoch"), table.field("epoch"), epoch)
    return table.set_column(table.schema.get_field_index("sample"), table.field("sample"), sample)


def _rewrite(part: Path, table: pa.Table, meta: dict[str, Any]) -> None:
    """Replace a part by ``table`` under ``meta``, atomically (aside, fsync, rename)."""
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True)})
    tmp = part.with_name(f".{part.name}.tmp")
    pq.write_table(table, tmp, row_group_size=65_536, **parquet_options(table.schema))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, part)


# --- the buffer of rows ---------------------------------------------------------------------


class _Buffer:
    """Rows waiting for the trace writer: key columns and every value column, column-major."""

    def __init__(self, tensors: Sequence[Tensor], capacity: int) -> None:
        self.tensors = tensors
        self.names = [c for t in tensors for c in t.columns()]
        self.offsets: dict[str, int] = {}
        pos = 0
        for t in tensors:
            self.offsets[t.name] = pos
            pos += t.size
        self.capacity = capacity
        self.values = np.empty((len(self.names), capacity), dtype=np.float64)
        self.keys = np.empty((3, capacity), dtype=np.int64)
        self.rows = 0

    @property
    def room(self) -> int:
        return self.capacity - self.rows

    @property
    def full(self) -> bool:
        return self.rows >= self.capacity

    def put(
        self, step: Array, epoch: Array, sample: Array, arrays: Mapping[str, Array], num: Numerics
    ) -> None:
        r0, r1 = self.rows, self.rows + len(step)
        self.keys[0, r0:r1], self.keys[1, r0:r1], self.keys[2, r0:r1] = step, epoch, sample
        narrow = num.name == "float32"
        for t in self.tensors:
            a = arrays[t.name]
            c = self.offsets[t.name]
            if narrow:
                a = a.astype(np.float32)  # a float32 run holds float32 values
            self.values[c : c + t.size, r0:r1] = a.T
        self.rows = r1

    def block(self) -> dict[str, Any]:
        n = self.rows
        out: dict[str, Any] = {
            "step": self.keys[0, :n], "epoch": self.keys[1, :n], "sample": self.keys[2, :n],
        }  # fmt: skip
        for i, name in enumerate(self.names):
            out[name] = self.values[i, :n]
        return out
