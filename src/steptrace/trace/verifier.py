"""Checking a trace's integrity: every row must follow from the run's settings and the maths.

:func:`verify` reads a run the way a sceptical reader would and stops at the first thing that
does not hold, in this order:

1. **metadata**: ``_run.json`` and the copy inside every part file agree on the run's settings
   (the model and its initial parameters, the tensors, the dataset …), and the settings agree
   with each other (steps per epoch, steps, a model that reads the features and gives one
   output per target, the tensors that model records …);
2. **columns**: every part has exactly the trace format's columns for those tensors, with their
   types (a version 1 trace, the article's model only, its own version 1 names);
3. **rows**, read a chunk at a time (memory stays bounded whatever the trace's size):

   - *where*: the step, epoch and sample of every row follow from the settings — steps run
     0, 1, 2 … with each step's rows together, ``epoch = step // steps_per_epoch`` and the
     samples in the run's (possibly shuffled) order;
   - *constants*: ``run_id``, ``numerics``, ``batch_size`` and ``lr`` equal the metadata;
   - *parameters*: every ``w{k}_before`` and ``b{k}_before`` of step 0 is the model's initial
     one, of step s the ``_after`` of step s - 1, the same on every row of a step (stored once,
     they are put back by the plan's rows, and at a part's first step from its footer: so this
     checks each part's footer entry against the part before);
   - *data*: ``x`` and ``y`` are the same each time a sample comes back;
   - *maths*: every layer's output, the loss, every δ and every gradient recomputed from the
     row's ``x``, ``y``, parameters before the step and ``lr``, and the step's update from all
     its rows, by the model's own layer code (:mod:`steptrace.model`), in the run's number
     system — exact runs from their ``_exact`` texts, float32 runs from the float64 columns
     cast back to float32 (they hold float32 values exactly) — equal to what is recorded:
     exactly for rationals, bit for bit for floats (NaN equals NaN); in exact runs every
     float64 column is its text correctly rounded;

4. **counts**: a ``complete`` run holds all its rows, and the summary in ``_run.json`` is the
   one its rows give.

A run recorded by another framework (its metadata's ``recorded_with``, e.g. PyTorch through
``steptrace.torch``) computed its values with its own kernels, which add in their own order: its
recomputed values are compared within a tolerance (:data:`FRAMEWORK_TOLERANCE`, or the ``rtol``
and ``atol`` given), stated in the report. When its optimizer is not plain SGD
(``recorded_with.update`` is ``optimizer``: momentum, Adam …) the update is not the gradient's
``w − α·Σ grad``: everything but the update is checked, and each step starts from the
parameters the previous one recorded.

A problem names the first row that does not follow (step, sample, column, what is recorded and
what it should be). When a single value has been changed, the problem points at that value.
Recomputed from its inputs, a row shows a changed result in that column alone, and a changed
input in the columns that depend on it or as a disagreement with its copy: the parameters and
lr are checked against the run, and x and y are tried with the values the rest of the row
implies (x_k is copied by the input layer into ``o1_k``; y_j follows from the last output and
the δ at the loss). Two pairs of columns can be told apart only by their effect on the rest of
the row: ``x_k`` and its copy ``o1_k`` (when nothing above depends on ``x_k``, e.g. its weights
are 0 and the δ coming back is 0), and ``y_j`` and the δ at the loss (a reflected ``y_j`` when
nothing below the loss lets δ through). When nothing tells them apart, both are named.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import ConfigError, MetadataError, SteptraceError, TraceError
from ..model.spec import Model, load_model
from ..model.stack import Stack
from ..numerics import NUMERICS, Numerics, parse_exact
from ..schedule import EpochOrders, steps_per_epoch
from ._verify_rows import (
    Context,
    Found,
    Layout,
    Problem,
    RunSettings,
    check_float,
    check_steps,
    same,
    show,
)
from .opener import check_kinds, open_trace
from .reader import Trace
from .rebuild import Rebuilt
from .schema import (
    FORMAT_VERSION,
    Tensor,
    after_columns,
    arrow_schema,
    column_names,
    metadata_of,
    stack_tensors,
    tensors_of,
    v1_column,
)
from .summary import SummaryTracker
from .writer import RUN_FILE, read_run_file

__all__ = ["Problem", "VerifyReport", "verify"]

#: Rows read and checked at a time: about 30 MB of columns for the article's model.
CHUNK_ROWS = 65_536
#: Settings that define a run: every copy of the metadata must agree on them. (``created``,
#: ``steptrace_version`` and ``format_version`` describe the writing, not the run.)
RUN_KEYS = (
    "run_id", "numerics", "lr", "lr_exact", "epochs", "batch_size", "shuffle", "seed", "model",
    "tensors", "steps_per_epoch", "steps", "dataset",
)  # fmt: skip
#: Keys of the dataset's description that must agree (its ``source`` path may move).
DATASET_KEYS = ("name", "sha256", "rows", "features", "targets")
#: (rtol, atol) for float runs recorded by another framework, by numerics: a few roundings
#: apart, summed in another order (values recomputed from each row's own inputs, so differences
#: do not accumulate).
FRAMEWORK_TOLERANCE = {"float64": (1e-9, 1e-12), "float32": (1e-5, 1e-6)}
#: Summary fields compared with the ones the rows give (complete runs).
SUMMARY_KEYS = (
    "rows", "steps", "final_loss", "min_loss", "min_loss_step", "diverged_at", "diverged_why",
)  # fmt: skip


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found: counts, and the first problem (``None`` if there is none)."""

    path: Path
    status: str
    numerics: str
    rows: int
    steps: int
    run_steps: int
    problem: Problem | None = None
    #: (rtol, atol) recomputed values were compared within; None: exactly (bit for bit).
    tolerance: tuple[float, float] | None = None
    #: What recorded the run, when not steptrace: ``pytorch 2.13.0``.
    recorded_with: str | None = None
    #: Whether the update w − α·Σ grad was checked (not for optimizers with their own).
    update_checked: bool = True

    @property
    def ok(self) -> bool:
        return self.problem is None

    def __str__(self) -> str:
        by = f"recorded with {self.recorded_with}" if self.recorded_with else ""
        if self.problem is not None:
            notes = []
            if self.tolerance is not None:
                notes.append(f"compared within rtol {self.tolerance[0]:g}, "
                             f"atol {self.tolerance[1]:g}")  # fmt: skip
            notes += [by] if by else []
            return f"PROBLEM {self.path}: {self.problem}" + (
                f" ({'; '.join(notes)})" if notes else ""
            )
        within = ""
        if self.tolerance is not None:
            within = f" within rtol {self.tolerance[0]:g}, atol {self.tolerance[1]:g}"
            within += f" ({by})" if by else ""
        if not self.update_checked:
            within += "; the optimizer's own update is taken as recorded, not checked"
        of = "" if self.status == "complete" else f" of {self.run_steps}"
        return (
            f"OK {self.path}: {self.steps}{of} steps, {self.rows} rows, {self.numerics}, "
            f"{self.status}; every row follows from its inputs{within}"
        )


def verify(path: str | Path, rtol: float | None = None, atol: float | None = None) -> VerifyReport:
    """Check a trace (a run folder or one part file) and report the first problem, if any.

    Recomputed values must equal the recorded ones exactly (bit for bit in float runs), or
    within ``rtol``/``atol`` when given (``|recorded - recomputed| <= atol + rtol *
    |recomputed|``); a run recorded by another framework is compared within
    :data:`FRAMEWORK_TOLERANCE` unless they are given. The report states the tolerance.

    Raises :class:`~steptrace.errors.TraceError` only when ``path`` cannot be read as a trace
    at all (missing, not Parquet, newer format); anything wrong inside a trace is a
    :class:`Problem` in the report.

    >>> report = verify("traces/seed-exact-lr1")  # doctest: +SKIP
    >>> report.ok, report.steps, str(report)  # doctest: +SKIP
    (True, 3, 'OK traces/seed-exact-lr1: 3 steps, 3 rows, exact, complete; ...')
    """
    # _run.json is read before open_trace lists the parts: a run that says complete here has
    # all its parts in place, even if it was still being recorded a moment ago.
    info = _run_info(Path(path))
    trace = open_trace(path, check_columns=False, check_metadata=False)
    checker = _Checker(trace, info, _tolerance(rtol, atol))
    try:
        checker.check()
    except Found as found:
        return checker.report(found.problem)
    return checker.report(None)


# --- metadata ---------------------------------------------------------------------------------


def _pick(meta: dict[str, Any], key: str) -> Any:
    if key == "dataset" and isinstance(meta.get(key), dict):
        return {k: meta[key].get(k) for k in DATASET_KEYS}
    return meta.get(key)


def _difference(key: str, a: Any, b: Any) -> tuple[str, Any, Any]:
    """Where two copies of a setting differ, as deep as they have the same shape:
    ``("dataset.rows", 4, 3)`` or ``("model.layers[1].weights[0][2]", "1/5800", "1/5801")``
    rather than the whole description."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in {**a, **b}:
            if a.get(k) != b.get(k):
                return _difference(f"{key}.{k}", a.get(k), b.get(k))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            if u != v:
                return _difference(f"{key}[{i}]", u, v)
    return key, a, b


Bad = Callable[[str, str], Found]
"""Makes the problem of a metadata key: ``bad("lr", "why")``."""


def _settings(meta: dict[str, Any], where: str) -> RunSettings:
    """The run's settings from agreed metadata; a :class:`Problem` for any inconsistency."""

    def bad(key: str, message: str) -> Found:
        return Found(Problem(message, where, (key,)))

    num = NUMERICS.get(str(meta.get("numerics")))
    if num is None:
        raise bad("numerics", f"unknown number system {meta.get('numerics')!r}")
    for key in ("epochs", "batch_size"):
        if not isinstance(meta.get(key), int) or meta[key] < 1:
            raise bad(key, f"{key} must be a whole number of at least 1, not {meta.get(key)!r}")
    ds = meta.get("dataset")
    if not isinstance(ds, dict) or not isinstance(ds.get("features"), list):
        raise bad("dataset", "the dataset's description (features, rows) is missing")
    rows, b, epochs = ds.get("rows"), meta["batch_size"], meta["epochs"]
    if not isinstance(rows, int) or rows < 1:
        raise bad("dataset.rows", f"the dataset's row count is {rows!r}")
    if b > rows:
        raise bad("batch_size", f"batch size {b} is larger than the dataset ({rows} rows)")
    spe = steps_per_epoch(rows, b)
    if meta.get("steps_per_epoch", spe) != spe:
        raise bad(
            "steps_per_epoch",
            f"says {meta['steps_per_epoch']} steps per epoch, but {rows} rows in batches of {b} "
            f"make {spe}",
        )
    if meta.get("steps", spe * epochs) != spe * epochs:
        raise bad("steps", f"says {meta['steps']} steps, but {epochs} epochs make {spe * epochs}")
    try:
        lr_q = parse_exact(str(meta.get("lr_exact", meta.get("lr"))), "the learning rate")
        lr_text = parse_exact(str(meta.get("lr")), "the learning rate")
    except SteptraceError as exc:
        raise bad("lr_exact", str(exc)) from None
    if lr_text != lr_q:
        raise bad("lr", f"lr {meta['lr']!r} is not lr_exact {meta['lr_exact']!r}")
    model = _model(meta.get("model"), len(ds["features"]), num, bad)
    stack = model.stack(num)
    tensors = _tensors(meta, stack, ds.get("targets"), bad)
    try:
        init = tuple(stack.flat(model.params(num)))
    except OverflowError:
        raise bad("model", f"an initial parameter is beyond {num.name}'s range") from None
    return RunSettings(
        num, rows, b, epochs, spe, num.make(lr_q), init, str(meta.get("run_id")),
        EpochOrders(rows, bool(meta.get("shuffle")), meta.get("seed")), stack,
        Layout.of(stack, tensors),
    )  # fmt: skip


def _model(spec: Any, n_in: int, num: Numerics, bad: Bad) -> Model:
    """The run's model from its metadata: every initial parameter stored, every layer one the
    run's number system computes."""
    if not isinstance(spec, dict):
        raise bad("model", "the run's model (its layers and initial parameters) is missing")
    try:
        model = load_model(spec, n_in)
    except SteptraceError as exc:
        raise bad("model", str(exc)) from None
    if model.drawn:
        raise bad("model", "lacks initial weights: a run stores every parameter it starts from")
    if num.is_exact:
        for k, layer in enumerate(model.stack(num).layers, 1):
            if not layer.rational:
                raise bad("model", f"layer {k} ({layer.type}) is not rational: an exact run "
                          "cannot compute it")  # fmt: skip
    return model


def _tensors(meta: dict[str, Any], stack: Stack, targets: Any, bad: Bad) -> list[Tensor]:
    """The tensors the metadata lists: the ones the model records, one target per output."""
    if not isinstance(targets, list) or len(targets) != stack.n_out:
        raise bad(
            "dataset.targets",
            f"the model gives {stack.n_out} output(s), one per target, but the targets are "
            f"{targets!r}",
        )
    try:
        listed = tensors_of(meta)
    except TraceError as exc:
        raise bad("tensors", str(exc)) from None
    wanted = stack_tensors(stack, len(targets))
    for i, (got, want) in enumerate(zip(listed, wanted, strict=False)):
        # Each tensor is stored, or known from the one the model's formulas make it equal to.
        if got not in (want, dataclasses.replace(want, same_as=None, previous_step=False)):
            raise bad(
                f"tensors[{i}]", f"lists {_tensor_text(got)}, but the model records "
                f"{_tensor_text(want)} there",
            )  # fmt: skip
    if len(listed) != len(wanted):
        raise bad("tensors", f"lists {len(listed)} tensors, the model records {len(wanted)}")
    return listed


def _tensor_text(t: Tensor) -> str:
    shape = "×".join(str(n) for n in t.shape) or "scalar"
    return f"{t.name} ({shape}{', data' if t.data else ''})"


# --- the whole trace --------------------------------------------------------------------------


@dataclass
class _Checker:
    """Runs the checks of :func:`verify` in order; a :class:`Found` carries the first problem."""

    trace: Trace
    info: dict[str, Any] | None
    asked: tuple[float | None, float | None] = (None, None)
    rows_checked: int = 0
    steps_checked: int = 0
    file_starts: list[tuple[int, str]] = field(default_factory=list)
    #: Columns stored once as the step before's (w2_before_1_1 → w2_after_1_1), the parts'
    #: footer entries by the row each part starts at, the last row read of each origin.
    previous: dict[str, str] = field(default_factory=dict)
    footer_starts: dict[int, tuple[int, Any]] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)
    footers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.meta = dict(self.trace.meta)

    def file_of(self, r: int) -> str | None:
        """The part file holding row ``r`` (of those read so far)."""
        name = None
        for start, file in self.file_starts:
            if start <= r:
                name = file
        return name

    @property
    def run_file(self) -> str:
        return RUN_FILE if self.trace.path.is_dir() else self.trace.path.name

    @property
    def status(self) -> str:
        """The run's status when verifying started (``running`` while a recorder writes)."""
        if self.info is None or self.trace.status == "running":
            return self.trace.status
        return str(self.info.get("status", "incomplete"))

    def report(self, problem: Problem | None) -> VerifyReport:
        if problem is not None and self.trace.v1:
            # Named as the files name them: version 1 wrote the weights as w_before_k ….
            problem = dataclasses.replace(problem, columns=tuple(self.in_file(problem.columns)))
        run = getattr(self, "run", None)
        return VerifyReport(
            self.trace.path, self.status, str(self.meta.get("numerics")),
            self.rows_checked, self.steps_checked, _whole(self.meta.get("steps")), problem,
            run.tol if run is not None else None, _recorder(self.meta),
            run.check_update if run is not None else True,
        )  # fmt: skip

    def check(self) -> None:
        self.check_metadata()
        self.run = _with_tolerance(_settings(self.meta, self.run_file), self.meta, self.asked)
        self.ctx = Context(self.run, self.file_of)
        self.tracker = SummaryTracker(self.run.spe)
        self.check_columns()
        self.check_rows()
        self.check_counts()

    def check_metadata(self) -> None:
        """Every copy of the metadata (``_run.json``, each part's footer) agrees on the run."""
        copies: list[tuple[str, dict[str, Any]]] = []
        if self.trace.path.is_dir() and (self.trace.path / RUN_FILE).exists():
            copies.append((RUN_FILE, self.meta))
        self.footers: dict[str, dict[str, Any]] = {}
        for f in self.trace.files:
            try:
                footer = metadata_of(pq.read_schema(f), f.name)
            except (OSError, pa.ArrowException) as exc:
                raise Found(Problem(f"not a readable Parquet file ({exc})", f.name)) from None
            except SteptraceError as exc:
                raise Found(Problem(str(exc), f.name)) from None
            self.footers[f.name] = footer
            copies.append((f.name, footer))
        for file, meta in copies:
            try:
                check_kinds(meta, file)
            except MetadataError as exc:
                raise Found(Problem(exc.reason, file, (exc.key,))) from None
        for key in RUN_KEYS:
            values = [_pick(meta, key) for _, meta in copies]
            if all(v == values[0] for v in values):
                continue
            majority = max(values, key=values.count)
            if values.count(majority) * 2 <= len(values):
                majority = values[-1]  # a tie: the data files' copy is believed
            file, meta = next((f, m) for f, m in copies if _pick(m, key) != majority)
            witness = next(f for f, m in copies if _pick(m, key) == majority)
            name, says, truth = _difference(key, _pick(meta, key), majority)
            raise Found(
                Problem(
                    f"says {show(says)}, but {witness}'s copy of the metadata says {show(truth)}",
                    file, (name,), recorded=show(says), expected=show(truth),
                )
            )  # fmt: skip

    def in_file(self, names: Iterable[str]) -> list[str]:
        """Columns under the names the part files give them."""
        return [v1_column(c) for c in names] if self.trace.v1 else list(names)

    def check_columns(self) -> None:
        tensors = self.run.layout.tensors
        expected = arrow_schema(tensors, self.run.exact, {})
        wanted = self.in_file(expected.names)
        stored = self.in_file(arrow_schema(tensors, self.run.exact, {}, stored=True).names)
        for f in self.trace.files:
            schema = pq.read_schema(f)
            version = str(self.footers[f.name].get("format_version", FORMAT_VERSION))
            missing = [c for c in stored if c not in schema.names]
            extra = [c for c in schema.names if c not in set(wanted)]
            if missing:
                raise Found(Problem(f"column {missing[0]} is missing", f.name, (missing[0],)))
            if extra and not _newer_minor(version):
                raise Found(
                    Problem(f"column {extra[0]} is not in trace format {version}", f.name,
                            (extra[0],))
                )  # fmt: skip
            for name, want in zip(wanted, expected, strict=True):
                if name not in schema.names:
                    continue  # stored once, rebuilt from another column
                got = schema.field(name).type
                if got != want.type:
                    raise Found(
                        Problem(f"has type {got}, the trace format says {want.type}", f.name,
                                (name,))
                    )  # fmt: skip

    def check_counts(self) -> None:
        """A complete run holds all its rows; the summary is the one its rows give."""
        info = self.info
        if info is None:
            return
        total = self.run.total_rows
        if info.get("status") == "complete" and self.rows_checked != total:
            raise Found(
                Problem(
                    f"the run says complete, but holds {self.rows_checked} of its {total} rows",
                    RUN_FILE, ("status",),
                )
            )  # fmt: skip
        summary = info.get("summary") or {}
        if not isinstance(summary, dict):
            raise Found(Problem("the summary is not a JSON object", RUN_FILE, ("summary",)))
        assert self.tracker is not None
        mine = self.tracker.result().as_dict()
        mine["rows"] = self.rows_checked
        keys = SUMMARY_KEYS if info.get("status") == "complete" else ("rows",)
        for key in keys:
            if key not in summary or key not in mine:
                continue
            if not _same_json(summary[key], mine[key]):
                raise Found(
                    Problem(
                        f"says {show(summary[key])}, the rows give {show(mine[key])}", RUN_FILE,
                        (f"summary.{key}",), recorded=show(summary[key]),
                        expected=show(mine[key]),
                    )
                )  # fmt: skip

    # rows

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The trace's rows in order, in record batches of the format's columns; the values
        stored once (docs/trace-format.md) come back, but for the parameters before each
        step, which :meth:`chunks` puts back by the plan."""
        names = column_names(self.run.layout.tensors, self.run.exact)
        read = 0
        for f in self.trace.files:
            self.file_starts.append((read, f.name))
            rebuilt = self.trace.rebuilt(f)
            self.previous.update(rebuilt.previous)
            footer = self.trace.part(f).before
            # An entry for another step than the part's first (a part cut out of a bigger one
            # keeps its footer) says nothing about this part, as readers find too.
            planned = int(self.run.plan(read, read + 1)["step"][0])
            if footer is not None and rebuilt.first is not None and footer[0] == planned:
                self.footer_starts[read] = rebuilt.first
            same_row = Rebuilt(rebuilt.copies, {})
            here = [c for c in names if c not in rebuilt.previous]
            stored = same_row.sources(here)
            try:
                for batch in pq.ParquetFile(f).iter_batches(
                    batch_size=CHUNK_ROWS, columns=self.in_file(stored)
                ):
                    read += batch.num_rows
                    table = pa.Table.from_batches([batch.rename_columns(stored)])
                    for out in same_row.apply(table, here).to_batches():
                        yield out.replace_schema_metadata(None)
            except (OSError, pa.ArrowException) as exc:
                raise Found(Problem(f"unreadable rows ({exc})", f.name)) from None

    def chunks(self) -> Iterator[tuple[int, pa.Table]]:
        """Tables of whole steps (by the plan), about :data:`CHUNK_ROWS` rows each."""
        pending: list[pa.RecordBatch] = []
        r0 = size = 0
        for batch in self.batches():
            pending.append(batch)
            size += batch.num_rows
            if size < CHUNK_ROWS:
                continue
            table = pa.Table.from_batches(pending)
            cut = self.run.step_boundary(r0 + size) - r0
            if cut > 0:
                yield r0, self.with_previous(r0, table.slice(0, cut))
                r0, size = r0 + cut, size - cut
                pending = table.slice(cut).to_batches()
        if size:
            yield r0, self.with_previous(r0, pa.Table.from_batches(pending))

    def with_previous(self, r0: int, table: pa.Table) -> pa.Table:
        """``table`` (rows ``r0`` … of whole steps) with the parameters before each row's
        step: the ones after the last row of the step before, by the plan (whatever the rows'
        ``step`` says); at a part's first step, the ones its footer gives (checked so against
        the part before); at step 0 without a footer entry, the model's initial ones."""
        if not self.previous:
            return table
        rows = np.arange(r0, r0 + table.num_rows)
        source = rows - (rows % self.run.rows) % self.run.b - 1  # the step before's last row
        inside = source >= r0
        # Rows of a step that starts the chunk, or a part (whose footer says): looked up.
        starts = np.flatnonzero(~inside | np.isin(source + 1, list(self.footer_starts)))
        for column, origin in self.previous.items():
            values = table.column(origin).to_numpy(zero_copy_only=False)
            before = np.empty(len(rows), dtype=values.dtype)
            before[inside] = values[source[inside] - r0]
            for i in starts:
                before[i] = self.start_value(int(source[i]) + 1, column, origin)
            self.last[origin] = values[-1]
            field = table.schema.field(origin).with_name(column)
            table = table.append_column(field, pa.array(before, field.type))
        names = column_names(self.run.layout.tensors, self.run.exact)
        return table.select(names)

    def start_value(self, r: int, column: str, origin: str) -> Any:
        """``column`` on the step starting at row ``r``, which the rows read so far do not
        give: the footer of the part starting there, or the last row read before."""
        first = self.footer_starts.get(r)
        if first is not None:
            return first[1][origin]
        if origin in self.last:
            return self.last[origin]
        return self.trace.initial.get(column, math.nan if not column.endswith("_exact") else "")

    def check_rows(self) -> None:
        w = self.run.init
        for r0, table in self.chunks():
            self.check_nulls(r0, table)
            if self.run.exact:
                w = check_steps(self.ctx, r0, table.to_pylist(), w)
            else:
                w = check_float(self.ctx, r0, table, w)
            self.rows_checked += table.num_rows
            self.note_summary(r0, table)
        self.check_last_step()

    def check_nulls(self, r0: int, table: pa.Table) -> None:
        for name in table.column_names:
            column = table.column(name)
            if column.null_count:
                i = int(pc.index(pc.is_null(column), True).as_py())
                plan = self.run.plan(r0 + i, r0 + i + 1)
                raise Found(
                    Problem(
                        "is missing (null)", self.file_of(r0 + i), (name,),
                        int(plan["step"][0]), int(plan["sample"][0]), r0 + i,
                    )
                )  # fmt: skip

    def check_last_step(self) -> None:
        r = self.rows_checked
        if r and self.run.step_boundary(r) != r:
            start = self.run.step_boundary(r)
            plan = self.run.plan(start, start + 1)
            raise Found(
                Problem(
                    f"the trace ends inside this step: {r - start} of its "
                    f"{int(plan['m'][0])} rows", self.file_of(r - 1), ("step",),
                    int(plan["step"][0]), row=r - 1,
                )
            )  # fmt: skip

    def note_summary(self, r0: int, table: pa.Table) -> None:
        assert self.tracker is not None
        step = table.column("step").to_numpy()
        loss = table.column("loss").to_numpy()
        after = after_columns(self.run.layout.tensors)
        w_after = [table.column(c).to_numpy() for c in after]
        self.tracker.update({"step": step, "loss": loss}, w_after)
        self.steps_checked = self.tracker.steps


def _tolerance(rtol: float | None, atol: float | None) -> tuple[float | None, float | None]:
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (isinstance(value, int | float) and 0 <= value < math.inf):
            raise ConfigError(f"{name} must be a number ≥ 0, got {value!r}")
    return rtol, atol


def _recorder(meta: dict[str, Any]) -> str | None:
    """``pytorch 2.13.0`` for a run another framework recorded (``recorded_with``)."""
    by = meta.get("recorded_with")
    if not isinstance(by, dict) or not by.get("framework"):
        return None
    return f"{by['framework']} {by.get('version', '')}".strip()


def _with_tolerance(
    run: RunSettings, meta: dict[str, Any], asked: tuple[float | None, float | None]
) -> RunSettings:
    """The run's settings with the tolerance its recomputed values are compared within, and
    whether its update is SGD's."""
    by = meta.get("recorded_with")
    update = by.get("update", "sgd") if isinstance(by, dict) else "sgd"
    tol: tuple[float, float] | None = None
    rtol, atol = asked
    if run.exact:
        tol = None  # rationals are equal or not
    elif rtol is not None or atol is not None:
        tol = (rtol or 0.0, atol or 0.0)
    elif _recorder(meta) is not None:
        tol = FRAMEWORK_TOLERANCE[run.num.name]
    if tol == (0.0, 0.0):
        tol = None
    return dataclasses.replace(run, tol=tol, check_update=update != "optimizer")


def _whole(value: Any) -> int:
    """A count from metadata that may be damaged (verify reports that): 0 if not a count."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _run_info(path: Path) -> dict[str, Any] | None:
    """``_run.json`` as written (status and summary included), if ``path`` is a run with one."""
    run_file = path / RUN_FILE
    if not path.is_dir() or not run_file.exists():
        return None
    try:
        info = read_run_file(run_file)
    except (OSError, ValueError) as exc:
        raise TraceError(f"{run_file}: unreadable run metadata ({exc})") from None
    return info if isinstance(info, dict) else None


def _newer_minor(version: str) -> bool:
    """Whether ``version`` is a later minor version of this steptrace's format (whose new
    columns a reader ignores); a version 1 trace has exactly version 1's columns."""
    try:
        major, minor = (int(p) for p in [*version.split("."), "0"][:2])
    except ValueError:
        return False
    ours_major, ours_minor = (int(p) for p in FORMAT_VERSION.split(".")[:2])
    return major == ours_major and minor > ours_minor


def _same_json(a: Any, b: Any) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return same(float(a), float(b))
    return bool(a == b)
