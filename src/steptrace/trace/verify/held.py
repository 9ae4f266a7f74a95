"""``verify`` of a run that holds some steps or tensors (docs/trace-format.md, "Choosing what is
recorded", "Flight recorder").

Such a run has gaps, so it cannot be walked from step 0. Each run of consecutive held steps is
checked as a chunk of its own, starting from the parameters its first step records: its rows
where the plan puts them, every value recomputed from the row's inputs, each update
w − α·Σ grad from the step's before to its after, each step starting where the held step before
it ended. The steps held are the ones the selection (and the triggers that fired) say, and
the per-step figures cover every step and agree with the rows at the steps held. A run that
keeps only some tensors, or a network of its own, has its rows placed and its figures checked;
its values are not recomputed (the report says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa

from ...errors import SteptraceError
from ...numerics import Number
from ...schedule import EpochOrders
from ..flight import TRIGGERS_KEY
from ..keep import Selection
from ..scalars import load_scalars
from ..schema import EXACT_SUFFIX, column_names
from ..summary import group_means, group_starts
from .checker import Checker
from .context import Context
from .floats import check_float
from .graph import is_graph_run
from .layout import RunSettings, StepPlan
from .problem import Found, Problem
from .settings import plan_settings, run_settings, with_tolerance
from .steps import check_steps

__all__ = ["HeldChecker"]


class HeldChecker(Checker):
    """:class:`~.checker.Checker` for a run with gaps (see the module doc)."""

    unchecked: tuple[str, ...] = ()

    def check(self) -> None:
        from .metadata import check_copies

        self.footers = check_copies(self.trace, self.meta)
        selection = Selection.from_meta(self.meta)
        plan = plan_settings(self.meta, self.run_file)
        orders = _orders(self.meta, plan.rows)
        steps = _Plan(plan.rows, plan.b, plan.epochs, plan.spe, orders)
        table = self.trace.read_table()
        held = _held(table)
        self.rows_checked, self.steps_checked = table.num_rows, len(held)
        words = selection.describe()
        gaps = (f"the steps it does not hold (it holds {words})",) if selection.gaps else ()
        self.unchecked = gaps
        self.check_placement(steps, table, held)
        self.check_selection(selection, held)
        self.check_figures(table, held)
        whole = selection.tensors is None and selection.layers is None
        if whole and not is_graph_run(self.meta):
            self.run = with_tolerance(run_settings(self.meta, self.run_file), self.meta,
                                      self.asked)  # fmt: skip
            self.check_values(self.run, table, held)
        else:
            what = "a network of its own" if whole else "only some tensors"
            self.unchecked += (f"its values (it holds {what})",)
        self.check_rows_count()

    def check_placement(self, plan: StepPlan, table: pa.Table, held: list[int]) -> None:
        """Each held step's rows are the ones the plan puts at that step, in its order."""
        steps = table.column("step").to_numpy()
        epoch, sample = table.column("epoch").to_numpy(), table.column("sample").to_numpy()
        for step, lo, hi in _groups(steps):
            want = plan.plan(_first_row(plan, step), _first_row(plan, step) + hi - lo)
            for key, got in (("step", steps), ("epoch", epoch), ("sample", sample)):
                bad = np.flatnonzero(got[lo:hi] != want[key])
                if len(bad):
                    i = int(bad[0])
                    raise Found(Problem(
                        f"recorded {int(got[lo + i])}, the plan puts {int(want[key][i])} here",
                        None, (key,), step, int(sample[lo + i]), lo + i,
                        str(int(got[lo + i])), str(int(want[key][i])),
                    ))  # fmt: skip
            if hi - lo != int(want["m"][0]):
                raise Found(Problem(f"holds {hi - lo} of the step's {int(want['m'][0])} rows",
                                    None, ("step",), step, row=lo))  # fmt: skip
        _ = held

    def check_selection(self, selection: Selection, held: list[int]) -> None:
        """The steps held are the ones the selection holds and the triggers' windows."""
        try:
            figures = load_scalars(self.trace.path)
        except SteptraceError as exc:
            raise Found(Problem(str(exc), None, ("_scalars",))) from None
        last = int(figures["step"].max())
        every = np.arange(last + 1)
        expected = set(every[selection.holds(every)].tolist())
        if selection.keep_last is not None:
            for fired in self.meta.get(TRIGGERS_KEY) or ():
                lo, hi = fired["window"]
                expected |= set(range(int(lo), min(int(hi), last) + 1))
        extra = sorted(set(held) - expected)
        missing = sorted(expected - set(held))
        if extra or (missing and self.status == "complete"):
            step = (extra or missing)[0]
            says = "holds" if extra else "lacks"
            raise Found(Problem(
                f"the run {says} step {step}, but it records {selection.describe()}",
                None, ("step",), step,
            ))  # fmt: skip
        self.figures = figures

    def check_figures(self, table: pa.Table, held: list[int]) -> None:
        """The per-step figures cover every step, and give the rows' batch loss where held."""
        figures = self.figures
        steps = figures["step"].to_numpy()
        if not np.array_equal(steps, np.arange(len(steps))):
            gap = int(np.flatnonzero(steps != np.arange(len(steps)))[0])
            raise Found(Problem(f"the per-step figures lack step {gap}", None, ("_scalars",), gap))
        if "loss" not in table.column_names:
            return
        step = table.column("step").to_numpy()
        loss = group_means(table.column("loss").to_numpy(), group_starts(step))
        figure = figures["loss"].to_numpy()[held]
        bad = np.flatnonzero(~((loss == figure) | (np.isnan(loss) & np.isnan(figure))))
        if len(bad):
            s = held[int(bad[0])]
            raise Found(Problem(
                f"the per-step figures say a batch loss of {figure[bad[0]]!r}, the rows give "
                f"{loss[bad[0]]!r}", None, ("loss",), s,
            ))  # fmt: skip

    def check_values(self, run: RunSettings, table: pa.Table, held: list[int]) -> None:
        """Each run of consecutive held steps recomputed from the parameters its first step
        records (and each step from where the one before ended)."""
        names = column_names(run.layout.tensors, run.exact)
        table = table.select([n for n in names if n in table.column_names])
        ctx = Context(run, lambda r: None)
        steps = table.column("step").to_numpy()
        for lo, hi in _consecutive(steps):
            chunk = table.slice(lo, hi - lo)
            first = int(steps[lo])
            w = _before(run, chunk)
            r0 = _first_row(run, first)
            if run.exact:
                check_steps(ctx, r0, chunk.to_pylist(), w)
            else:
                check_float(ctx, r0, chunk, w)

    def check_rows_count(self) -> None:
        summary = (self.info or {}).get("summary") or {}
        rows = summary.get("rows")
        if isinstance(rows, int) and rows != self.rows_checked:
            raise Found(Problem(
                f"says {rows}, the parts hold {self.rows_checked}", "_run.json",
                ("summary.rows",), recorded=str(rows), expected=str(self.rows_checked),
            ))  # fmt: skip


@dataclass(frozen=True)
class _Plan(StepPlan):
    rows: int
    b: int
    epochs: int
    spe: int
    orders: EpochOrders


def _orders(meta: dict[str, Any], rows: int) -> EpochOrders:
    return EpochOrders(rows, bool(meta.get("shuffle")), meta.get("seed"))


def _first_row(plan: StepPlan, step: int) -> int:
    """The plan's row of ``step``'s first row."""
    epoch, k = divmod(step, plan.spe)
    return epoch * plan.rows + k * plan.b


def _held(table: pa.Table) -> list[int]:
    steps = table.column("step").to_numpy()
    return [int(s) for s in steps[group_starts(steps)]]


def _groups(steps: Any) -> list[tuple[int, int, int]]:
    """(step, first row, end row) of each step's rows."""
    starts = group_starts(steps)
    ends = np.append(starts[1:], len(steps))
    return [(int(steps[a]), int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def _consecutive(steps: Any) -> list[tuple[int, int]]:
    """Row ranges of runs of consecutive steps."""
    groups = _groups(steps)
    out: list[tuple[int, int]] = []
    for i, (step, lo, hi) in enumerate(groups):
        if i and step == groups[i - 1][0] + 1:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _before(run: RunSettings, chunk: pa.Table) -> tuple[Number, ...]:
    """The parameters the chunk's first step records before its update, flat."""
    if run.exact:
        return tuple(Fraction(chunk.column(c + EXACT_SUFFIX)[0].as_py())
                     for c in run.layout.before)  # fmt: skip
    make = np.float32 if run.num.name == "float32" else float
    return tuple(make(chunk.column(c)[0].as_py()) for c in run.layout.before)
