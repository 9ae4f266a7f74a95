"""A run of any network a framework recorded (its metadata's ``graph``: docs/trace-format.md,
"Runs of any network"), checked a chunk of whole steps at a time: where each row belongs, the
run's constants, one learning rate per step, each sample's data, and the chain of every value
a step carries (parameters, the optimizer's state, running statistics): the same on each row
of the step, and before a step what the step before left. The maths (every layer, the loss,
the optimizer's update) are recomputed by :mod:`.network`.

A run whose tensors are exactly the ones steptrace records for its model's stack (the series'
layers in a chain, plain SGD, the squared error) is checked as that stack instead, value by
value (:mod:`.floats`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...errors import SteptraceError, TraceError
from ...model.spec import load_model
from ...numerics import NUMERICS, Numerics
from ...schedule import EpochOrders
from ..schema import Tensor, stack_tensors, tensors_of
from .context import Memory
from .layout import StepPlan
from .network import Network, Values, check_network
from .problem import Array, Found, Problem, Tol, differ, show
from .settings import plan_settings, tolerance
from .updates import check_steps

__all__ = ["GraphChunk", "GraphLayout", "GraphSettings", "graph_settings", "is_graph_run"]


def is_graph_run(meta: dict[str, Any]) -> bool:
    """Whether a run is checked as a network of its own: it has a ``graph`` and its tensors
    are not exactly its model's stack's."""
    if not isinstance(meta.get("graph"), dict):
        return False
    try:
        ds = meta["dataset"]
        model = load_model(meta["model"], len(ds["features"]))
        stack = model.stack(NUMERICS["float64"])
        wanted = stack_tensors(stack, len(ds["targets"]), store_all=True)
        return tensors_of(meta) != wanted
    except (SteptraceError, KeyError, TypeError, ValueError):
        return True


@dataclass(frozen=True)
class GraphLayout:
    """The run's tensors by name, and the pairs a step carries from one step to the next."""

    tensors: tuple[Tensor, ...]

    @cached_property
    def by_name(self) -> dict[str, Tensor]:
        return {t.name: t for t in self.tensors}

    def columns(self, name: str) -> list[str]:
        return self.by_name[name].columns()

    @cached_property
    def carried(self) -> list[str]:
        """Every ``X`` with ``X_before`` and ``X_after``: parameters, state, statistics."""
        names = self.by_name
        bases = [n.removesuffix("_before") for n in names if n.endswith("_before")]
        return [base for base in bases if base + "_after" in names]


@dataclass(frozen=True)
class GraphSettings(StepPlan):
    """What a graph run's rows are checked against."""

    num: Numerics
    rows: int
    b: int
    epochs: int
    spe: int
    run_id: str
    orders: EpochOrders
    layout: GraphLayout
    network: Network
    tol: Tol = None
    #: What ``verify`` could not recompute (the report says so).
    unchecked: tuple[str, ...] = ()
    #: Whether the optimizer's update is recomputed.
    check_update: bool = False

    @property
    def exact(self) -> bool:
        return False


def graph_settings(
    meta: dict[str, Any], where: str, asked: tuple[float | None, float | None]
) -> GraphSettings:
    """A graph run's settings from agreed metadata; a :class:`Problem` for any inconsistency."""
    plan = plan_settings(meta, where)
    if plan.num.is_exact:
        raise Found(Problem("a run of a network of its own is float64 or float32", where,
                            ("numerics",)))  # fmt: skip
    try:
        tensors = tuple(tensors_of(meta))
    except TraceError as exc:
        raise Found(Problem(str(exc), where, ("tensors",))) from None
    layout = GraphLayout(tensors)
    for name in ("x", "y", "loss", "lr"):
        if name not in layout.by_name:
            raise Found(Problem(f"lists no tensor {name}", where, ("tensors",)))
    try:
        network = Network.of(dict(meta["graph"]), tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise Found(Problem(f"the graph cannot be read ({exc!r})", where, ("graph",))) from None
    return GraphSettings(
        plan.num, plan.rows, plan.b, plan.epochs, plan.spe, str(meta.get("run_id")),
        EpochOrders(plan.rows, bool(meta.get("shuffle")), meta.get("seed")), layout, network,
        tolerance(plan.num, meta, asked), network.unchecked(),
        bool(network.optimizer.get("checked")),
    )  # fmt: skip


class GraphChunk:
    """Rows ``r0`` … of whole steps of a graph run, checked with numpy."""

    def __init__(
        self, run: GraphSettings, r0: int, table: pa.Table, file_of: Any, memory: Memory
    ) -> None:
        self.run, self.r0, self.table = run, r0, table
        self.rows = table.num_rows
        self.file_of, self.memory = file_of, memory
        self.plan = run.plan(r0, r0 + self.rows)
        local = self.plan["step"] - self.plan["step"][0]
        self.starts = np.flatnonzero(np.diff(local, prepend=-1))
        self.start_of = self.starts[np.cumsum(np.diff(local, prepend=-1) != 0) - 1]
        self.sizes = np.diff(np.append(self.starts, self.rows))
        self.found: list[tuple[int, int, int, Problem]] = []  # (step, order, row, problem)

    def col(self, name: str) -> Array:
        out: Array = self.table.column(name).to_numpy()
        return out

    def tensor(self, name: str) -> Array:
        """A tensor's values, (rows, values)."""
        columns = self.run.layout.columns(name)
        return np.column_stack([self.col(c) for c in columns]).astype(np.float64)

    def problem(
        self, r: int, column: str, message: str, recorded: Any = None, expected: Any = None,
        order: int = 0,
    ) -> None:  # fmt: skip
        """A problem at row ``r`` of the chunk: the first step's wins, and in it the first
        check's (the layers' in order, then δ from the loss down, then the update), then the
        first row's."""
        self.found.append((int(self.plan["step"][r]), order, r, Problem(
            message, self.file_of(self.r0 + r), (column,), int(self.plan["step"][r]),
            int(self.plan["sample"][r]), self.r0 + r,
            None if recorded is None else show(recorded),
            None if expected is None else show(expected),
        )))  # fmt: skip

    def first_bad(self, name: str, recorded: Array, expected: Array, why: str,
                  order: int, tol: Tol = None) -> None:  # fmt: skip
        """The first value of tensor ``name`` that differs from ``expected``, as a problem."""
        bad = differ(recorded, expected, tol)
        if not bad.any():
            return
        r, i = (int(v) for v in np.argwhere(bad)[0])
        column = self.run.layout.columns(name)[i]
        self.problem(r, column, f"recorded {show(recorded[r, i])}, {why} "
                     f"{show(expected[r, i])}", recorded[r, i], expected[r, i], order)  # fmt: skip

    def check(self, last: dict[str, Array]) -> dict[str, Array]:
        """Every check of the chunk; raises the first problem (by row, then by check).
        ``last`` holds what the step before the chunk left (by carried value); the same of the
        chunk's last step is returned."""
        self.placement()
        self.data()
        self.lr()
        after = self.chain(last)
        network = self.run.network
        values = Values(self, network.shapes)
        row_grads = check_network(self, network, values)
        check_steps(self, network, values, row_grads)
        if self.found:
            raise Found(min(self.found, key=lambda f: f[:3])[3])
        return after

    def placement(self) -> None:
        """Each row's step, epoch and sample as the plan says; the run's constants."""
        for order, name in enumerate(("step", "epoch", "sample")):
            bad = np.flatnonzero(self.col(name) != self.plan[name])
            if len(bad):
                r = int(bad[0])
                got, want = int(self.col(name)[r]), int(self.plan[name][r])
                self.problem(r, name, f"recorded {got}, expected {want} (the run's plan)", got,
                             want, -10 + order)  # fmt: skip
        for name, value in (("run_id", self.run.run_id), ("numerics", self.run.num.name),
                            ("batch_size", self.run.b)):  # fmt: skip
            bad = ~pc.equal(self.table.column(name), value).to_numpy(zero_copy_only=False)
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                self.problem(r, name, f"the metadata says {value!r}", order=-5)

    def data(self) -> None:
        """Each sample's data are the same each time it comes back."""
        memory = self.memory
        if not memory.enabled:
            return
        data = np.column_stack([self.tensor("x"), self.tensor("y")])
        sample = self.plan["sample"]
        for r in range(self.rows):
            seen = memory.get(int(sample[r]))
            if seen is not None:
                bad = differ(data[r], np.array(seen))
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    columns = self.run.layout.columns("x") + self.run.layout.columns("y")
                    self.problem(
                        r,
                        columns[i],
                        f"recorded {show(data[r, i])}, sample "
                        f"{int(sample[r])} came earlier with {show(seen[i])}",
                        order=-4,
                    )
                    return
            memory.put(int(sample[r]), tuple(float(v) for v in data[r]))

    def lr(self) -> None:
        """One learning rate per step, the same on each of its rows."""
        lr = self.col("lr")
        bad = differ(lr, lr[self.start_of])
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            self.problem(
                r,
                "lr",
                f"recorded {show(lr[r])}, the step's first row has "
                f"{show(lr[self.start_of[r]])} (one learning rate a step)",
                order=-3,
            )

    def same_in_step(self, name: str, values: Array) -> None:
        """A value a step carries is the same on each of its rows: the row that differs from
        the others is named (from the first row, when no value is the most common)."""
        bad = differ(values, values[self.start_of])
        if not bad.any():
            return
        r, i = (int(v) for v in np.argwhere(bad)[0])
        start = int(self.start_of[r])
        column = values[start : start + int(self.sizes[np.searchsorted(self.starts, start)]), i]
        kinds, counts = np.unique(column, return_counts=True)
        common = kinds[np.argmax(counts)] if counts.max() > 1 and (counts == counts.max()).sum(
            ) == 1 else column[0]  # fmt: skip
        r = start + int(np.flatnonzero(differ(column, common))[0])
        self.problem(r, self.run.layout.columns(name)[i], f"recorded {show(values[r, i])}, the "
                     f"step's other rows hold {show(common)} (one value a step)",
                     values[r, i], common, -2)  # fmt: skip

    def chain(self, last: dict[str, Array]) -> dict[str, Array]:
        """Every carried value: the same on each row of a step, and before a step what the
        step before left."""
        out: dict[str, Array] = {}
        for name in self.run.layout.carried:
            before, after = self.tensor(name + "_before"), self.tensor(name + "_after")
            for when, values in (("before", before), ("after", after)):
                self.same_in_step(f"{name}_{when}", values)
            previous = np.vstack([last[name], after[self.starts[1:] - 1]]) if name in last else (
                after[self.starts[1:] - 1])  # fmt: skip
            starts = self.starts if name in last else self.starts[1:]
            if len(starts):
                expected = np.array(before)
                expected[starts] = previous
                rows = np.zeros(self.rows, dtype=bool)
                rows[starts] = True
                masked = np.where(rows[:, None], expected, before)
                self.first_bad(f"{name}_before", before, masked, "the previous step ended at",
                               -1, self.run.tol)  # fmt: skip
            out[name] = after[-1:]
        return out
