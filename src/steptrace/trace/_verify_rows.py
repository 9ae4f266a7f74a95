"""Checking a trace's rows: where each row belongs, its inputs, and its maths, value by value.

The private half of :mod:`steptrace.trace.verifier`. Float runs are first checked with numpy a
chunk at a time (:func:`check_float`); the first step with any difference, and every step of an
exact run, is then checked value by value (:class:`StepCheck`), which says which value is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ..model import article as model
from ..numerics import Number, Numerics
from ..schedule import EpochOrders
from .schema import EXACT_SUFFIX, FIELDS, value_names, vector

__all__ = [
    "Context", "Found", "Problem", "RunSettings", "check_float", "check_steps", "same", "show",
]  # fmt: skip

Array = npt.NDArray[Any]

#: Samples' data are remembered (to check they come back unchanged) up to this dataset size.
MEMORY_MAX_ROWS = 1_000_000

_MEANING = {f.name: f.meaning for f in FIELDS}


@dataclass(frozen=True)
class Problem:
    """The first thing in a trace that does not hold.

    ``columns`` names the value(s) found wrong: one column, or a pair of columns that only
    differ from each other when nothing else tells which one is wrong (see the module doc).
    Metadata problems name the key (``lr``, ``dataset.rows``, ``summary.final_loss``) and the
    file holding it.
    """

    message: str
    file: str | None = None
    columns: tuple[str, ...] = ()
    step: int | None = None
    sample: int | None = None
    row: int | None = None
    recorded: str | None = None
    expected: str | None = None

    @property
    def column(self) -> str | None:
        return self.columns[0] if self.columns else None

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.step is not None:
            where.append(f"step {self.step}")
        if self.sample is not None:
            where.append(f"sample {self.sample}")
        if self.columns:
            where.append("column " + " or ".join(self.columns))
        head = ", ".join(where)
        return f"{head}: {self.message}" if head else self.message


class Found(Exception):
    """Carries a problem out of the nested checks."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


# --- values: equality, display ----------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Exact equality: rationals by value, floats bit for bit (the sign of zero counts), NaN
    equal to NaN."""
    if isinstance(a, Fraction) or isinstance(b, Fraction):
        return bool(a == b)
    fa, fb = float(a), float(b)
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) and math.isnan(fb)
    return fa == fb and math.copysign(1.0, fa) == math.copysign(1.0, fb)


def _differ(a: Array, b: Array | float) -> Array:
    """Element-wise ``not _same`` for float64 arrays."""
    b = np.broadcast_to(np.asarray(b, dtype=np.float64), a.shape)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    bits = a.view(np.int64) != np.ascontiguousarray(b).view(np.int64)
    out: Array = np.where(nan_a | nan_b, nan_a != nan_b, bits)
    return out


def show(v: Any) -> str:
    if isinstance(v, Fraction):
        return str(v)
    if isinstance(v, float | np.floating):
        return repr(float(v))
    return repr(v)


def _meaning(column: str) -> str:
    base = column.removesuffix(EXACT_SUFFIX)
    name = base.rsplit("_", 1)[0] if base[-1:].isdigit() else base
    return _MEANING.get(name, "")


@dataclass(frozen=True)
class RunSettings:
    """The settings every row is checked against, in the run's number system."""

    num: Numerics
    n: int  # features
    rows: int  # dataset rows
    b: int
    epochs: int
    spe: int
    lr: Number
    init: tuple[Number, ...]
    run_id: str
    orders: EpochOrders

    @property
    def total_rows(self) -> int:
        return self.rows * self.epochs

    @property
    def exact(self) -> bool:
        return self.num.is_exact

    def plan(self, r0: int, r1: int) -> dict[str, Array]:
        """Where rows r0 … r1 - 1 belong: step, epoch, sample, rows m of their step."""
        r = np.arange(r0, r1, dtype=np.int64)
        epoch, pos = r // self.rows, r % self.rows
        last_m = self.rows - (self.spe - 1) * self.b
        return {
            "step": epoch * self.spe + pos // self.b,
            "epoch": epoch,
            "sample": self.orders.samples(epoch, pos),
            "m": np.where(pos // self.b == self.spe - 1, last_m, self.b),
        }

    def step_boundary(self, r: int) -> int:
        """The first row of the step holding row ``r`` (``r`` itself if a step starts there)."""
        return r - (r % self.rows) % self.b


# --- one step, value by value -----------------------------------------------------------------


class Memory:
    """Each sample's data (x…, y) as first seen, to check it is the same when it comes back."""

    def __init__(self, rows: int, width: int) -> None:
        self.enabled = rows <= MEMORY_MAX_ROWS
        size = rows if self.enabled else 0
        self.seen = np.zeros(size, dtype=bool)
        self.values = np.zeros((size, width), dtype=np.float64)
        self.exact: dict[int, tuple[Fraction, ...]] = {}

    def get(self, sample: int) -> tuple[Any, ...] | None:
        if not self.enabled or not 0 <= sample < len(self.seen) or not self.seen[sample]:
            return None
        if sample in self.exact:
            return self.exact[sample]
        return tuple(float(v) for v in self.values[sample])

    def put(self, sample: int, values: tuple[Any, ...]) -> None:
        if not self.enabled or not 0 <= sample < len(self.seen) or self.seen[sample]:
            return
        self.seen[sample] = True
        if isinstance(values[0], Fraction):
            self.exact[sample] = values
        else:
            self.values[sample] = [float(v) for v in values]


class Row:
    """One recorded row, read in the run's number system, and where the plan puts it."""

    def __init__(
        self, data: dict[str, Any], run: RunSettings, r: int, plan: dict[str, Array], i: int
    ):
        self.data = data
        self.run = run
        self.r = r
        self.step = int(plan["step"][i])
        self.epoch = int(plan["epoch"][i])
        self.sample = int(plan["sample"][i])
        self.m = int(plan["m"][i])

    def col(self, name: str) -> str:
        """The column a value is checked in: its exact text in exact runs."""
        return name + EXACT_SUFFIX if self.run.exact else name

    def raw(self, name: str) -> Any:
        """The recorded value as compared: a Fraction (exact) or the float64 as stored."""
        if self.run.exact:
            return Fraction(self.data[name + EXACT_SUFFIX])
        return float(self.data[name])

    def value(self, name: str) -> Number:
        """The recorded value as an input to the maths, in the run's number system."""
        raw = self.raw(name)
        return raw if self.run.exact else _make_float(self.run.num)(raw)

    def vector(self, name: str) -> list[str]:
        return vector(name, self.run.n)


def _make_float(num: Numerics) -> Any:
    if num.name == "float32":
        return np.float32
    return float


class StepCheck:
    """Checks one step's rows value by value and says which value is wrong."""

    def __init__(self, ctx: Context, rows: list[Row], w: tuple[Number, ...]) -> None:
        self.c = ctx
        self.run = ctx.run
        self.rows = rows
        self.w = w

    def problem(
        self, row: Row, columns: Sequence[str], message: str, recorded: Any = None,
        expected: Any = None,
    ) -> Found:  # fmt: skip
        return Found(
            Problem(
                message, self.c.file_of(row.r), tuple(columns), row.step, row.sample, row.r,
                None if recorded is None else show(recorded),
                None if expected is None else show(expected),
            )
        )  # fmt: skip

    def mismatch(self, row: Row, column: str, recorded: Any, expected: Any, why: str) -> Found:
        meaning = _meaning(column)
        about = f" ({meaning})" if meaning and why == "recomputed" else ""
        return self.problem(
            row, [column], f"recorded {show(recorded)}, {why} {show(expected)}{about}",
            recorded, expected,
        )  # fmt: skip

    def run_checks(self) -> tuple[Number, ...]:
        """The weights after the step, or raises :class:`Found`."""
        grads = []
        for row in self.rows:
            self.where(row)
            self.constants(row)
            if self.run.exact:
                self.texts(row)
            self.inputs(row)
            grads.append(self.maths(row))
        w_after = model.update(self.w, self.run.lr, model.sum_gradients(grads))
        for row in self.rows:
            for k, col in enumerate(row.vector("w_after")):
                if not same(row.raw(col), w_after[k]):
                    raise self.mismatch(
                        row, row.col(col), row.raw(col), w_after[k],
                        "the step's update ŵ = w - α * Σ grad gives",
                    )  # fmt: skip
        if self.run.exact:
            for row in self.rows:
                self.shadows(row)
        for row in self.rows:
            self.c.memory.put(row.sample, tuple(row.raw(c) for c in (*row.vector("x"), "y_1")))
        return w_after

    def where(self, row: Row) -> None:
        if row.r >= self.run.total_rows:
            raise self.problem(
                row, ["step"], f"row {row.r} is past the run's end ({self.run.total_rows} rows: "
                f"{self.run.epochs} epochs of {self.run.rows})",
            )  # fmt: skip
        expected = {"step": row.step, "epoch": row.epoch, "sample": row.sample}
        why = {
            "step": "steps run 0, 1, 2 … each step's rows together",
            "epoch": f"epoch = step // {self.run.spe} steps per epoch",
            "sample": "the run's order of samples",
        }
        for name, value in expected.items():
            if row.data[name] != value:
                raise self.problem(
                    row, [name], f"recorded {row.data[name]!r}, expected {value} ({why[name]})",
                    row.data[name], value,
                )  # fmt: skip

    def constants(self, row: Row) -> None:
        for name, value in (
            ("run_id", self.run.run_id), ("numerics", self.run.num.name),
            ("batch_size", self.run.b),
        ):  # fmt: skip
            if row.data[name] != value:
                raise self.problem(
                    row, [name], f"recorded {row.data[name]!r}, the metadata says {value!r}",
                    row.data[name], value,
                )  # fmt: skip

    def texts(self, row: Row) -> None:
        """Every exact text is a rational in lowest terms."""
        for name in self.c.value_columns:
            text = row.data[name + EXACT_SUFFIX]
            try:
                q = Fraction(text)
            except (ValueError, TypeError, ZeroDivisionError):
                raise self.problem(
                    row, [name + EXACT_SUFFIX], f"{text!r} is not a rational number", text
                ) from None
            if str(q) != text:
                raise self.problem(
                    row, [name + EXACT_SUFFIX], f"{text!r} is not written as {str(q)!r}",
                    text, str(q),
                )  # fmt: skip

    def inputs(self, row: Row) -> None:
        """lr equals the metadata's, w_before the weights the step starts from, and the data
        the sample's (the same as the last time it came, a float32 value in float32 runs)."""
        if not same(row.raw("lr"), self.run.lr):
            raise self.mismatch(row, row.col("lr"), row.raw("lr"), self.run.lr, "the metadata says")
        for k, col in enumerate(row.vector("w_before")):
            if not same(row.raw(col), self.w[k]):
                why = "the initial weight is" if row.step == 0 else "the previous step ended at"
                raise self.mismatch(row, row.col(col), row.raw(col), self.w[k], why)
        data = (*row.vector("x"), "y_1")
        if self.run.num.name == "float32":
            for col in data:
                v = row.raw(col)
                if not same(v, np.float32(v)):
                    raise self.problem(row, [col], f"{v!r} is not a float32 value", v)
        seen = self.c.memory.get(row.sample)
        if seen is not None:
            for col, before in zip(data, seen, strict=True):
                if not same(row.raw(col), before):
                    raise self.mismatch(
                        row, row.col(col), row.raw(col), before,
                        f"sample {row.sample} came earlier with",
                    )  # fmt: skip

    def recompute(self, row: Row, x: Sequence[Number], y: Number) -> dict[str, Number]:
        fw = model.forward(self.w, x)
        bw = model.backward(fw, self.w, y, row.m)
        out: dict[str, Number] = {"o2_1": fw.o2, "o3_1": fw.o3, "loss": model.loss(fw.o3, y)}
        out.update({"d4_1": bw.d4, "d3_1": bw.d3})
        for name, values in (("o1", fw.o1), ("d2", bw.d2), ("d1", bw.d1), ("grad", bw.grad)):
            out.update(zip(row.vector(name), values, strict=True))
        return out

    def wrong(self, row: Row, calc: dict[str, Number]) -> list[str]:
        order = self.c.derived_columns
        return [c for c in order if not same(row.raw(c), calc[c])]

    def maths(self, row: Row) -> tuple[Number, ...]:
        """Recompute the row from x, y, w, α; return its gradient (raises on a mismatch)."""
        x = [row.value(c) for c in row.vector("x")]
        y = row.value("y_1")
        calc = self.recompute(row, x, y)
        bad = self.wrong(row, calc)
        if not bad:
            return tuple(calc[c] for c in row.vector("grad"))
        culprit = self.blame(row, x, y, calc, bad)
        if culprit is not None:
            raise culprit
        first = bad[0]
        raise self.mismatch(row, row.col(first), row.raw(first), calc[first], "recomputed")

    def blame(
        self, row: Row, x: list[Number], y: Number, calc: dict[str, Number], bad: list[str]
    ) -> Found | None:
        """Which value a mismatch comes from: one wrong result shows in one column; a wrong
        input (x or y) in several, or as x and its copy o1 disagreeing."""
        o1 = row.vector("o1")
        for k, col in enumerate(o1):
            if col not in bad:
                continue
            # x_k and o1_k differ: which one does the rest of the row agree with?
            fixed = list(x)
            fixed[k] = row.value(col)
            rest = self.wrong(row, self.recompute(row, fixed, y))
            x_col = row.vector("x")[k]
            if len(bad) > 1 and not rest:
                return self.mismatch(
                    row, row.col(x_col), row.raw(x_col), row.raw(col),
                    f"the rest of the row follows from {x_col} =",
                )  # fmt: skip
            if len(bad) == 1 and not rest:
                return self.twins(row, col, x_col)
            return None
        if len(bad) > 1 and set(bad) <= self.c.y_dependent:
            implied = row.raw("o3_1") - row.raw("d4_1") * row.m
            return self.problem(
                row, [row.col("y_1")],
                f"recorded {show(row.raw('y_1'))}, but the row's loss and δ4 follow from "
                f"y_1 = {show(implied)}", row.raw("y_1"), implied,
            )  # fmt: skip
        if bad == ["d4_1"] and row.raw("o2_1") < 0 and same(row.raw("d4_1"), -calc["d4_1"]):
            return self.twins(row, "d4_1", "y_1")
        return None

    def twins(self, row: Row, result: str, data: str) -> Found:
        """A result and the input it copies disagree and nothing else in the row tells which
        is wrong: in exact runs the float64 beside each text may; else both are named."""
        if self.run.exact:
            for col in (data, result):
                if not same(row.data[col], self.run.num.to_float(row.raw(col))):
                    return self.mismatch(
                        row, col + EXACT_SUFFIX, row.raw(col), row.data[col],
                        "its float64 column holds",
                    )  # fmt: skip
        return self.problem(
            row, [row.col(result), row.col(data)],
            f"{result} = {show(row.raw(result))} and {data} = {show(row.raw(data))} disagree, "
            "and nothing else in the row tells which one is wrong", row.raw(result),
        )  # fmt: skip

    def shadows(self, row: Row) -> None:
        """In exact runs each float64 column is its exact text, correctly rounded."""
        for name in self.c.value_columns:
            expected = self.run.num.to_float(row.raw(name))
            if not same(row.data[name], expected):
                raise self.mismatch(
                    row, name, row.data[name], expected,
                    f"its exact text {row.data[name + EXACT_SUFFIX]} rounds to",
                )  # fmt: skip


class FloatChunk:
    """A chunk of a float run, checked with numpy a whole chunk at a time."""

    def __init__(self, ctx: Context, r0: int, table: pa.Table, w: tuple[Number, ...]):
        self.c = ctx
        self.run = ctx.run
        self.r0 = r0
        self.table = table
        self.w = w
        self.dtype = self.run.num.dtype
        self.plan = self.run.plan(r0, r0 + table.num_rows)
        local = self.plan["step"] - self.plan["step"][0]
        self.local = local
        self.starts = np.flatnonzero(np.diff(local, prepend=-1))
        self.sizes = np.diff(np.append(self.starts, len(local)))

    def col(self, name: str) -> Array:
        out: Array = self.table.column(name).to_numpy()
        return out

    def matrix(self, name: str) -> Array:
        return np.column_stack([self.col(c) for c in vector(name, self.run.n)])

    def first_bad_step(self) -> tuple[tuple[int, int] | None, tuple[Number, ...]]:
        """The (start, end) rows of the first step with a difference, and the weights it
        starts from; or None and the weights after the chunk."""
        with np.errstate(all="ignore"):
            bad, w_first, w_last = self.differences()
        hits = np.flatnonzero(bad)
        make = _make_float(self.run.num)
        if not len(hits):
            return None, tuple(make(v) for v in w_last)
        s = int(self.local[hits[0]])
        start, size = int(self.starts[s]), int(self.sizes[s])
        return (start, start + size), tuple(make(v) for v in w_first[s])

    def differences(self) -> tuple[Array, Array, Array]:
        """Rows with any difference, each step's expected starting weights, and the weights
        after the chunk."""
        run, plan, dt = self.run, self.plan, self.dtype
        rows = self.table.num_rows
        bad = np.zeros(rows, dtype=bool)
        bad |= np.arange(self.r0, self.r0 + rows) >= run.total_rows
        for name in ("step", "epoch", "sample"):
            bad |= self.col(name) != plan[name]
        bad |= self.col("batch_size") != run.b
        for name, value in (("run_id", run.run_id), ("numerics", run.num.name)):
            bad |= ~pc.equal(self.table.column(name), value).to_numpy(zero_copy_only=False)
        bad |= _differ(self.col("lr"), float(run.lr))
        x, y, W = self.matrix("x"), self.col("y_1"), self.matrix("w_before")
        if run.num.name == "float32":
            for values in (x, y):
                narrowed = values.astype(np.float32).astype(np.float64)
                bad |= _differ(values, narrowed).reshape(rows, -1).any(axis=1)
        bad |= self.memory_differences(x, y)
        # Each row's maths from its recorded inputs, and each step's update.
        Wd, xd, yd = W.astype(dt), x.astype(dt), y.astype(dt)
        o1, o2, o3 = model.forward_columns(Wd, xd)
        loss = model.loss_columns(o3, yd)
        m = plan["m"].astype(dt)
        d4, d3, d2, d1, grad = model.backward_columns(o1, o2, o3, Wd, yd, m)
        for name, calc in (("o2", o2), ("o3", o3), ("d4", d4), ("d3", d3)):
            bad |= _differ(self.col(f"{name}_1"), calc.astype(np.float64))
        bad |= _differ(self.col("loss"), loss.astype(np.float64))
        for name, calc in (("o1", o1), ("d2", d2), ("d1", d1), ("grad", grad)):
            bad |= _differ(self.matrix(name), calc.astype(np.float64)).any(axis=1)
        w_after = Wd[self.starts] - np.asarray(run.lr, dtype=dt) * self.batch_sums(grad)
        bad |= _differ(self.matrix("w_after"), w_after[self.local].astype(np.float64)).any(axis=1)
        # The weights' chain: each step starts where the previous one's update ended.
        w_first = np.vstack([np.array([self.w], dtype=dt), w_after[:-1]]).astype(np.float64)
        bad |= _differ(W, w_first[self.local]).any(axis=1)
        return bad, w_first, w_after[-1].astype(np.float64)

    def batch_sums(self, grad: Array) -> Array:
        """Each step's gradient: its rows' gradients added in batch order, as
        :func:`model.sum_gradients` does (so the sums are bit-identical)."""
        if int(self.sizes.max()) <= len(self.starts):
            total = grad[self.starts].copy()
            for j in range(1, int(self.sizes.max())):
                has = self.sizes > j
                total[has] = total[has] + grad[self.starts[has] + j]
            return total
        # Few, large steps: accumulate each one (np.add.accumulate adds in order).
        out = np.empty((len(self.starts), grad.shape[1]), dtype=grad.dtype)
        for i, (start, size) in enumerate(zip(self.starts, self.sizes, strict=True)):
            out[i] = np.add.accumulate(grad[start : start + size], axis=0)[-1]
        return out

    def memory_differences(self, x: Array, y: Array) -> Array:
        """Rows whose data differ from the sample's first appearance (remembered here)."""
        memory = self.c.memory
        rows = len(y)
        if not memory.enabled:
            return np.zeros(rows, dtype=bool)
        sample = self.plan["sample"]
        data = np.column_stack([x, y])
        new = ~memory.seen[sample]
        rows_new = np.flatnonzero(new)[np.unique(sample[new], return_index=True)[1]]
        known = memory.values[sample]
        # Rows of a sample first seen in this chunk compare with that sample's first row.
        where_new = np.flatnonzero(new)
        _, firsts, which = np.unique(sample[new], return_index=True, return_inverse=True)
        known[where_new] = data[where_new[firsts]][which]
        differ: Array = np.asarray(_differ(data, known).any(axis=1))
        memory.seen[sample[rows_new]] = True
        memory.values[sample[rows_new]] = data[rows_new]
        return differ


@dataclass
class Context:
    """What the row checks need from the whole trace."""

    run: RunSettings
    file_of: Callable[[int], str | None]
    memory: Memory = field(init=False)

    def __post_init__(self) -> None:
        n = self.run.n
        self.memory = Memory(self.run.rows, n + 1)
        self.value_columns = value_names(n)
        self.derived_columns = [
            c for name in ("o1", "o2", "o3", "loss", "d4", "d3", "d2", "d1", "grad")
            for c in vector(name, n)
        ]  # fmt: skip
        self.y_dependent = {"loss", "d4_1", "d3_1"} | {
            c for name in ("d2", "d1", "grad") for c in vector(name, n)
        }


def check_steps(
    ctx: Context, r0: int, rows: list[dict[str, Any]], w: tuple[Number, ...]
) -> tuple[Number, ...]:
    """Check consecutive whole steps value by value, from the weights ``w``; the weights
    after them, or raises :class:`Found`."""
    plan = ctx.run.plan(r0, r0 + len(rows))
    start = 0
    with np.errstate(all="ignore"):
        while start < len(rows):
            end = start + int(plan["m"][start])
            step = [Row(rows[i], ctx.run, r0 + i, plan, i) for i in range(start, end)]
            w = StepCheck(ctx, step, w).run_checks()
            start = end
    return w


def check_float(
    ctx: Context, r0: int, table: pa.Table, w: tuple[Number, ...]
) -> tuple[Number, ...]:
    """Check whole steps of a float run: with numpy first, then the first step with any
    difference value by value (which says what is wrong); the weights after the chunk."""
    first, w_before = FloatChunk(ctx, r0, table, w).first_bad_step()
    if first is None:
        return w_before
    start, end = first
    check_steps(ctx, r0 + start, table.slice(start, end - start).to_pylist(), w_before)
    # numpy saw a difference that the value-by-value check does not: the column maths and the
    # scalar maths disagree. Still a problem: say where.
    raise Found(
        Problem(
            "the vectorised check and the value-by-value check of this step disagree",
            ctx.file_of(r0 + start), ("step",), row=r0 + start,
        )
    )  # fmt: skip
