"""The checks of :func:`~steptrace.trace.verify.verify` over a whole run, in order: metadata,
columns, rows a chunk of whole steps at a time, counts and summary.

Each stage stops at the first thing that does not hold, raising :class:`~.problem.Found`; what
was checked so far (rows, steps, the run's settings) stays on the :class:`Checker` for the
report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..reader import Trace
from ..schema import FORMAT_VERSION, after_columns, arrow_schema
from ..summary import SummaryTracker
from ..writer import RUN_FILE
from .chunks import StepChunks, in_file
from .context import Context, Memory
from .floats import check_float
from .graph import GraphChunk, GraphSettings, graph_settings, is_graph_run
from .layout import RunSettings
from .metadata import check_copies
from .problem import Found, Problem, same, show
from .settings import run_settings, with_tolerance
from .steps import check_steps

__all__ = ["SUMMARY_KEYS", "Checker"]

#: Summary fields compared with the ones the rows give (complete runs).
SUMMARY_KEYS = (
    "rows", "steps", "final_loss", "min_loss", "min_loss_step", "diverged_at", "diverged_why",
)  # fmt: skip


@dataclass
class Checker:
    """Runs the checks of :func:`~steptrace.trace.verify.verify` in order; a :class:`Found`
    carries the first problem."""

    trace: Trace
    info: dict[str, Any] | None
    asked: tuple[float | None, float | None] = (None, None)
    rows_checked: int = 0
    steps_checked: int = 0
    footers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.meta = dict(self.trace.meta)

    @property
    def run_file(self) -> str:
        return RUN_FILE if self.trace.path.is_dir() else self.trace.path.name

    @property
    def status(self) -> str:
        """The run's status when verifying started (``running`` while a recorder writes)."""
        if self.info is None or self.trace.status == "running":
            return self.trace.status
        return str(self.info.get("status", "incomplete"))

    def check(self) -> None:
        """Every check, in order; raises :class:`Found` with the first problem."""
        self.footers = check_copies(self.trace, self.meta)
        self.run: RunSettings | GraphSettings
        if is_graph_run(self.meta):  # a network of its own (docs/trace-format.md)
            self.run = graph_settings(self.meta, self.run_file, self.asked)
        else:
            self.run = with_tolerance(run_settings(self.meta, self.run_file), self.meta,
                                      self.asked)  # fmt: skip
        self.chunks = StepChunks(self.trace, self.run)
        self.tracker = SummaryTracker(self.run.spe)
        self.check_columns()
        self.check_rows()
        self.check_counts()

    def check_columns(self) -> None:
        """Every part has the format's columns for the run's tensors, with their types."""
        tensors = self.run.layout.tensors
        expected = arrow_schema(tensors, self.run.exact, {})
        wanted = in_file(self.trace, expected.names)
        stored = in_file(self.trace, arrow_schema(tensors, self.run.exact, {}, stored=True).names)
        known = set(wanted)  # sets: a wide run has tens of thousands of columns
        for f in self.trace.files:
            schema = pq.read_schema(f)
            names = schema.names
            present = set(names)
            version = str(self.footers[f.name].get("format_version", FORMAT_VERSION))
            missing = [c for c in stored if c not in present]
            extra = [c for c in names if c not in known]
            if missing:
                raise Found(Problem(f"column {missing[0]} is missing", f.name, (missing[0],)))
            if extra and not _newer_minor(version):
                raise Found(
                    Problem(f"column {extra[0]} is not in trace format {version}", f.name,
                            (extra[0],))
                )  # fmt: skip
            types = dict(zip(names, schema.types, strict=True))
            for name, want in zip(wanted, expected, strict=True):
                if name not in present:
                    continue  # stored once, rebuilt from another column
                got = types[name]
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

    def check_rows(self) -> None:
        """Every row, a chunk of whole steps at a time, each step from where the last ended."""
        if isinstance(self.run, GraphSettings):
            self.check_graph_rows(self.run)
            return
        ctx = Context(self.run, self.chunks.file_of)
        w = self.run.init
        for r0, table in self.chunks.chunks():
            self.check_nulls(r0, table)
            if self.run.exact:
                w = check_steps(ctx, r0, table.to_pylist(), w)
            else:
                w = check_float(ctx, r0, table, w)
            self.rows_checked += table.num_rows
            self.note_summary(r0, table)
        self.check_last_step()

    def check_graph_rows(self, run: GraphSettings) -> None:
        """A graph run's rows (:mod:`.graph`), chunk after chunk."""
        memory = Memory(run.rows, run.layout.by_name["x"].size + run.layout.by_name["y"].size)
        last: dict[str, Any] = {}
        for r0, table in self.chunks.chunks():
            self.check_nulls(r0, table)
            last = GraphChunk(run, r0, table, self.chunks.file_of, memory).check(last)
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
                        "is missing (null)", self.chunks.file_of(r0 + i), (name,),
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
                    f"{int(plan['m'][0])} rows", self.chunks.file_of(r - 1), ("step",),
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
