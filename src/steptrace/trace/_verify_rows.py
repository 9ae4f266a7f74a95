"""Checking a trace's rows: where each row belongs, its inputs, and its maths, value by value.

The private half of :mod:`steptrace.trace.verifier`. Float runs are first checked with numpy a
chunk at a time (:class:`FloatChunk`); the first step with any difference, and every step of an
exact run, is then checked value by value (:class:`StepCheck`), which says which value is wrong.
Both recompute rows with the model's own layer code (:func:`steptrace.model.values.row_values`),
on columns and on numbers, which agree bit for bit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ..model.stack import ParamSet, Stack
from ..model.values import formulas, row_values
from ..numerics import Number, Numerics
from ..schedule import EpochOrders
from .schema import EXACT_SUFFIX, Tensor, value_names

__all__ = [
    "Context", "Found", "Layout", "Problem", "RunSettings", "check_float", "check_steps",
    "same", "show",
]  # fmt: skip

Array = npt.NDArray[Any]

#: Samples' data are remembered (to check they come back unchanged) up to this dataset size.
MEMORY_MAX_ROWS = 1_000_000


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


Tol = tuple[float, float] | None
"""``(rtol, atol)`` for floats recomputed by steptrace from a run another framework recorded
(its kernels add in their own order): ``|recorded - recomputed| <= atol + rtol * |recomputed|``.
None: exact, bit for bit."""


def same(a: Any, b: Any, tol: Tol = None) -> bool:
    """Exact equality: rationals by value, floats bit for bit (the sign of zero counts), NaN
    equal to NaN; within ``tol`` (floats only; ``b`` the recomputed value) when given."""
    if isinstance(a, Fraction) or isinstance(b, Fraction):
        return bool(a == b)
    fa, fb = float(a), float(b)
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) and math.isnan(fb)
    if tol is not None:
        return fa == fb or abs(fa - fb) <= tol[1] + tol[0] * abs(fb)
    return fa == fb and math.copysign(1.0, fa) == math.copysign(1.0, fb)


def _differ(a: Array, b: Any, tol: Tol = None) -> Array:
    """Element-wise ``not same`` for float64 arrays (``b`` broadcast to ``a``)."""
    b = np.broadcast_to(np.asarray(b, dtype=np.float64), a.shape)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if tol is not None:
        with np.errstate(all="ignore"):
            close = (a == b) | (np.abs(a - b) <= tol[1] + tol[0] * np.abs(b))
        differ: Array = np.where(nan_a | nan_b, nan_a != nan_b, ~close)
        return differ
    bits = a.view(np.int64) != np.ascontiguousarray(b).view(np.int64)
    out: Array = np.where(nan_a | nan_b, nan_a != nan_b, bits)
    return out


def show(v: Any) -> str:
    if isinstance(v, Fraction):
        return str(v)
    if isinstance(v, float | np.floating):
        return repr(float(v))
    return repr(v)


def _make_float(num: Numerics) -> Any:
    if num.name == "float32":
        return np.float32
    return float


def _columns(rows: int, columns: Sequence[Array]) -> Array:
    """Columns side by side as a (rows, len(columns)) float64 array (no columns: width 0)."""
    if not columns:
        return np.empty((rows, 0), dtype=np.float64)
    return np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])


# --- the stack's values in a row --------------------------------------------------------------

#: What a row computes (the rest are its inputs, and the step's parameters).
_COMPUTED = re.compile(r"o\d+|loss|d\d+|grad_[wb]\d+")


@dataclass(frozen=True)
class Layout:
    """Where a stack's values sit in a row, by the part each plays in checking it."""

    tensors: tuple[Tensor, ...]
    x: list[str]
    y: list[str]
    #: The input layer's copy of x (o1): what tells a changed x_k from a changed o1_k.
    copy_of_x: list[str]
    #: The parameters before and after the step, in :meth:`Stack.flat`'s order.
    before: list[str]
    after: list[str]
    #: The tensors a row computes, in file order: o{k}, loss, d{k}, grad_w{k}, grad_b{k}.
    computed: tuple[Tensor, ...]
    #: The last layer's output and the δ at the loss: they imply the row's y.
    top_out: list[str]
    top_delta: list[str]
    formulas: dict[str, str]  # by tensor name

    @classmethod
    def of(cls, stack: Stack, tensors: Sequence[Tensor]) -> Layout:
        """The layout of ``tensors``, which the caller has checked are ``stack``'s."""
        by_name = {t.name: t for t in tensors}

        def params(when: str) -> list[str]:
            names = [f"{p}{k}_{when}" for k in stack.param_layers for p in "wb"]
            return [c for name in names if name in by_name for c in by_name[name].columns()]

        top = stack.loss_number
        return cls(
            tuple(tensors), by_name["x"].columns(), by_name["y"].columns(),
            by_name["o1"].columns(), params("before"), params("after"),
            tuple(t for t in tensors if _COMPUTED.fullmatch(t.name)),
            by_name[f"o{top - 1}"].columns(), by_name[f"d{top}"].columns(), formulas(stack),
        )  # fmt: skip

    @cached_property
    def values(self) -> list[str]:
        """Every recorded number's column (each has an exact text twin in exact runs)."""
        return value_names(self.tensors)

    @cached_property
    def copies(self) -> set[str]:
        """Columns stored once, as another column of the same row (δ1 = δ2, grad_b = δ)."""
        return {c for t in self.tensors if t.same_as and not t.previous_step for c in t.columns()}

    @cached_property
    def data(self) -> list[str]:
        return [*self.x, *self.y]

    @cached_property
    def y_dependent(self) -> set[str]:
        """Columns a changed y may change: the loss and everything the backward pass gives."""
        return {c for t in self.computed if not t.name.startswith("o") for c in t.columns()}

    def meaning(self, column: str) -> str:
        base = column.removesuffix(EXACT_SUFFIX)
        for t in self.computed:
            if base in t.columns():
                return self.formulas.get(t.name, "")
        return ""

    @property
    def loss_delta(self) -> str:
        """δ at the loss, as the messages write it: ``δ4``."""
        return "δ" + self.top_delta[0].split("_")[0].removeprefix("d")


@dataclass(frozen=True)
class RunSettings:
    """The settings every row is checked against, in the run's number system."""

    num: Numerics
    rows: int  # dataset rows
    b: int
    epochs: int
    spe: int
    lr: Number
    init: tuple[Number, ...]  # the parameters step 0 starts from, flat
    run_id: str
    orders: EpochOrders
    stack: Stack
    layout: Layout
    #: Recomputed values compared within (rtol, atol) (None: bit for bit): a run recorded by
    #: another framework.
    tol: Tol = None
    #: Whether w_after follows from the gradient by w − α·Σ grad (SGD); if not (momentum,
    #: Adam …), the recorded update is taken as it is and the next step starts from it.
    check_update: bool = True

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
    """Each sample's data (x…, y…) as first seen, to check it is the same when it comes back."""

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

    def number(self, raw: Any) -> Number:
        """A value as an input to the maths, in the run's number system."""
        return raw if self.run.exact else _make_float(self.run.num)(raw)

    def values(self, names: Sequence[str]) -> list[Number]:
        return [self.number(self.raw(name)) for name in names]


class StepCheck:
    """Checks one step's rows value by value and says which value is wrong."""

    def __init__(self, ctx: Context, rows: list[Row], w: tuple[Number, ...]) -> None:
        self.c = ctx
        self.run = ctx.run
        self.lay = ctx.run.layout
        self.rows = rows
        self.w = w
        self.params = self.run.stack.unflat(w)

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
        meaning = self.lay.meaning(column) if why == "recomputed" else ""
        about = f" ({meaning})" if meaning else ""
        return self.problem(
            row, [column], f"recorded {show(recorded)}, {why} {show(expected)}{about}",
            recorded, expected,
        )  # fmt: skip

    def run_checks(self) -> tuple[Number, ...]:
        """The parameters after the step, or raises :class:`Found`."""
        stack = self.run.stack
        total: ParamSet | None = None
        for row in self.rows:
            self.where(row)
            self.constants(row)
            if self.run.exact:
                self.texts(row)
            self.inputs(row)
            grads = self.maths(row)
            # Added in the order the step visits its rows, as the recorder adds them.
            total = grads if total is None else {k: total[k] + g for k, g in grads.items()}
        after = self.w
        if not self.run.check_update:
            first = self.rows[0]
            after = tuple(first.number(first.raw(c)) for c in self.lay.after)
        elif total is not None:
            after = tuple(stack.flat(stack.update(self.params, self.run.lr, total)))
        self.updates(after)
        if self.run.exact:
            for row in self.rows:
                self.shadows(row)
        for row in self.rows:
            self.c.memory.put(row.sample, tuple(row.raw(c) for c in self.lay.data))
        return after

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
        for name in self.lay.values:
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
        """lr equals the metadata's, the parameters before the step the ones it starts from,
        and the data the sample's (the same as the last time it came, a float32 value in
        float32 runs)."""
        if not same(row.raw("lr"), self.run.lr):
            raise self.mismatch(row, row.col("lr"), row.raw("lr"), self.run.lr, "the metadata says")
        for col, value in zip(self.lay.before, self.w, strict=True):
            if not same(row.raw(col), value, self.run.tol):
                kind = "bias" if col.startswith("b") else "weight"
                why = f"the initial {kind} is" if row.step == 0 else "the previous step ended at"
                raise self.mismatch(row, row.col(col), row.raw(col), value, why)
        if self.run.num.name == "float32":
            for col in self.lay.data:
                v = row.raw(col)
                if not same(v, np.float32(v)):
                    raise self.problem(row, [col], f"{v!r} is not a float32 value", v)
        seen = self.c.memory.get(row.sample)
        if seen is not None:
            for col, before in zip(self.lay.data, seen, strict=True):
                if not same(row.raw(col), before):
                    raise self.mismatch(
                        row, row.col(col), row.raw(col), before,
                        f"sample {row.sample} came earlier with",
                    )  # fmt: skip

    def updates(self, after: tuple[Number, ...]) -> None:
        """Every row records the parameters the step's update gives."""
        for row in self.rows:
            for col, value in zip(self.lay.after, after, strict=True):
                if not same(row.raw(col), value, self.run.tol):
                    rule = "b̂ = b" if col.startswith("b") else "ŵ = w"
                    raise self.mismatch(
                        row, row.col(col), row.raw(col), value,
                        f"the step's update {rule} - α * Σ grad gives",
                    )  # fmt: skip

    def recompute(
        self, row: Row, x: list[Number], y: list[Number]
    ) -> tuple[dict[str, Number], ParamSet]:
        """The values a row computes from its data and the step's parameters, by column, and
        its gradients."""
        values, grads = row_values(self.run.stack, self.params, x, y, row.m)
        calc = {
            col: v for t in self.lay.computed
            for col, v in zip(t.columns(), values[t.name], strict=True)
        }  # fmt: skip
        return calc, grads

    def wrong(self, row: Row, calc: dict[str, Number]) -> list[str]:
        """The columns whose recorded value is not the recomputed one (but for the values
        stored once, which show their origin's change again and tell nothing more)."""
        return [c for c, v in calc.items()
                if c not in self.lay.copies and not same(row.raw(c), v, self.run.tol)]  # fmt: skip

    def explains(self, row: Row, x: list[Number], y: list[Number]) -> bool:
        """Whether the row's recorded results all follow from data ``x``, ``y``."""
        return not self.wrong(row, self.recompute(row, x, y)[0])

    def maths(self, row: Row) -> ParamSet:
        """Recompute the row from its data, the parameters and α; return its gradients
        (raises on a mismatch)."""
        x, y = row.values(self.lay.x), row.values(self.lay.y)
        calc, grads = self.recompute(row, x, y)
        bad = self.wrong(row, calc)
        if not bad:
            return grads
        culprit = self.blame_x(row, x, y, bad) or self.blame_y(row, x, y, bad)
        if culprit is not None:
            raise culprit
        first = bad[0]
        raise self.mismatch(row, row.col(first), row.raw(first), calc[first], "recomputed")

    # Recomputed from its inputs, a row shows a changed result in that one column, and a
    # changed input in every column that depends on it. lr and the parameters are checked
    # before the maths, so an input here is x or y; each is tried with the value the rest of
    # the row implies for it, and blamed if that value explains every column.

    def blame_x(self, row: Row, x: list[Number], y: list[Number], bad: list[str]) -> Found | None:
        """x_k and its copy o1_k differ: which one does the rest of the row agree with?"""
        for k, (x_col, copy) in enumerate(zip(self.lay.x, self.lay.copy_of_x, strict=True)):
            if copy not in bad:
                continue
            fixed = list(x)
            fixed[k] = row.number(row.raw(copy))
            if not self.explains(row, fixed, y):
                return None
            if len(bad) == 1:
                return self.twins(row, copy, x_col)
            return self.mismatch(
                row, row.col(x_col), row.raw(x_col), row.raw(copy),
                f"the rest of the row follows from {x_col} =",
            )  # fmt: skip
        return None

    def blame_y(self, row: Row, x: list[Number], y: list[Number], bad: list[str]) -> Found | None:
        """A changed y_j shows in δ_j at the loss and what follows from it (never in the
        forward pass); the loss's δ and the last output imply y_j = o_j - δ_j * m."""
        lay = self.lay
        if not set(bad) <= lay.y_dependent:
            return None
        changed = [j for j, col in enumerate(lay.top_delta) if col in bad]
        if len(changed) != 1:
            return None
        j = changed[0]
        y_col, delta = lay.y[j], lay.top_delta[j]
        implied = row.raw(lay.top_out[j]) - row.raw(delta) * row.m
        if len(bad) > 1:
            return self.problem(
                row, [row.col(y_col)],
                f"recorded {show(row.raw(y_col))}, but the row's loss and {lay.loss_delta} "
                f"follow from {y_col} = {show(implied)}", row.raw(y_col), implied,
            )  # fmt: skip
        fixed = list(y)
        fixed[j] = row.number(implied)
        return self.twins(row, delta, y_col) if self.explains(row, x, fixed) else None

    def twins(self, row: Row, result: str, data: str) -> Found:
        """A result and the input it follows from disagree and nothing else in the row tells
        which is wrong: in exact runs the float64 beside each text may; else both are named."""
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
        for name in self.lay.values:
            expected = self.run.num.to_float(row.raw(name))
            if not same(row.data[name], expected):
                raise self.mismatch(
                    row, name, row.data[name], expected,
                    f"its exact text {row.data[name + EXACT_SUFFIX]} rounds to",
                )  # fmt: skip


# --- a chunk of a float run, with numpy ---------------------------------------------------------


class FloatChunk:
    """A chunk of a float run, checked with numpy a whole chunk at a time."""

    def __init__(self, ctx: Context, r0: int, table: pa.Table, w: tuple[Number, ...]):
        self.c = ctx
        self.run = ctx.run
        self.lay = ctx.run.layout
        self.r0 = r0
        self.table = table
        self.rows = table.num_rows
        self.w = w
        self.dtype = self.run.num.dtype
        self.plan = self.run.plan(r0, r0 + table.num_rows)
        self.local = self.plan["step"] - self.plan["step"][0]
        self.starts = np.flatnonzero(np.diff(self.local, prepend=-1))
        self.sizes = np.diff(np.append(self.starts, len(self.local)))
        self.grads: list[Array] = []  # each row's gradients, flat, once the maths ran

    def col(self, name: str) -> Array:
        out: Array = self.table.column(name).to_numpy()
        return out

    def matrix(self, names: Sequence[str]) -> Array:
        return _columns(self.rows, [self.col(c) for c in names])

    def in_run(self, matrix: Array) -> list[Array]:
        """A matrix's columns in the run's number system."""
        return [
            np.ascontiguousarray(matrix[:, i], dtype=self.dtype) for i in range(matrix.shape[1])
        ]

    def first_bad_step(self) -> tuple[tuple[int, int] | None, tuple[Number, ...]]:
        """The (start, end) rows of the first step with a difference, and the parameters it
        starts from; or None and the parameters after the chunk."""
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
        """Rows with any difference, each step's expected starting parameters, and the
        parameters after the chunk."""
        bad = self.placement_differences()
        x, y, w = self.matrix(self.lay.x), self.matrix(self.lay.y), self.matrix(self.lay.before)
        data = np.column_stack([x, y])
        if self.run.num.name == "float32":
            narrowed = data.astype(np.float32).astype(np.float64)
            bad |= _differ(data, narrowed).any(axis=1)
        bad |= self.memory_differences(data)
        bad |= self.maths_differences(x, y, w)
        recorded_after = self.matrix(self.lay.after)
        w_after = self.updates(w) if self.run.check_update else recorded_after[self.starts]
        bad |= _differ(recorded_after, w_after[self.local], self.run.tol).any(axis=1)
        # The parameters' chain: each step starts where the previous one's update ended.
        start = np.array([self.w], dtype=self.dtype).astype(np.float64).reshape(1, -1)
        w_first = np.vstack([start, w_after[:-1]])
        bad |= _differ(w, w_first[self.local], self.run.tol).any(axis=1)
        return bad, w_first, w_after[-1]

    def placement_differences(self) -> Array:
        """Rows out of place, or whose constants or lr are not the run's."""
        run, plan = self.run, self.plan
        bad = np.arange(self.r0, self.r0 + self.rows) >= run.total_rows
        for name in ("step", "epoch", "sample"):
            bad |= self.col(name) != plan[name]
        bad |= self.col("batch_size") != run.b
        for name, value in (("run_id", run.run_id), ("numerics", run.num.name)):
            bad |= ~pc.equal(self.table.column(name), value).to_numpy(zero_copy_only=False)
        bad |= _differ(self.col("lr"), float(run.lr))
        out: Array = bad
        return out

    def maths_differences(self, x: Array, y: Array, w: Array) -> Array:
        """Rows whose computed values are not what the layers give from their recorded data
        and parameters; keeps the rows' gradients for :meth:`updates`."""
        stack = self.run.stack
        params = stack.unflat(self.in_run(w))
        m = self.plan["m"].astype(self.dtype)
        values, grads = row_values(stack, params, self.in_run(x), self.in_run(y), m)
        bad = np.zeros(self.rows, dtype=bool)
        for t in self.lay.computed:
            for col, calc in zip(t.columns(), values[t.name], strict=True):
                bad |= _differ(self.col(col), calc, self.run.tol)
        self.grads = stack.flat(grads)
        return bad

    def updates(self, w: Array) -> Array:
        """Each step's parameters after its update, from its first row's parameters before
        it and its rows' gradients, by the model's update rule."""
        stack = self.run.stack
        total = self.batch_sums(np.column_stack(self.grads) if self.grads else w[:, :0])
        start = stack.unflat(self.in_run(w[self.starts]))
        after = stack.update(start, self.run.lr, stack.unflat(self.in_run(total)))
        return _columns(len(self.starts), stack.flat(after))

    def batch_sums(self, grad: Array) -> Array:
        """Each step's gradient: its rows' gradients added in batch order, as the recorder
        adds them (so the sums are bit-identical)."""
        grad = grad.astype(self.dtype)
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

    def memory_differences(self, data: Array) -> Array:
        """Rows whose data differ from the sample's first appearance (remembered here)."""
        memory = self.c.memory
        if not memory.enabled:
            return np.zeros(self.rows, dtype=bool)
        sample = self.plan["sample"]
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
        self.memory = Memory(self.run.rows, len(self.run.layout.data))


def check_steps(
    ctx: Context, r0: int, rows: list[dict[str, Any]], w: tuple[Number, ...]
) -> tuple[Number, ...]:
    """Check consecutive whole steps value by value, from the parameters ``w``; the
    parameters after them, or raises :class:`Found`."""
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
    difference value by value (which says what is wrong); the parameters after the chunk."""
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
