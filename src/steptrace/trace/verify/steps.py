"""One step of a run checked value by value, saying which value is wrong.

Every step of an exact run, and the first step of a float run where the numpy check
(:mod:`.floats`) saw a difference, is checked here: each row's place in the plan, its
constants, its inputs (lr, the parameters before the step, the sample's data), every layer's
values recomputed by the model's own code (:func:`steptrace.model.values.row_values`), and the
step's update. A row whose maths do not hold is blamed on the one value that explains it: a
result, or an input (x or y) the rest of the row implies (see :mod:`steptrace.trace.verify`).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from ...model.stack import ParamSet
from ...model.values import row_values
from ...numerics import Number
from ..schema import EXACT_SUFFIX
from .context import Context
from .layout import RunSettings
from .problem import Array, Found, Problem, make_float, same, show

__all__ = ["Row", "StepCheck", "check_steps"]


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
        return raw if self.run.exact else make_float(self.run.num)(raw)

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
        stack = self.run.stack
        xs, ys, at = [x], [y], 0
        m: Any = row.m
        if stack.couples_rows:  # a normalization: the row is computed with its step's rows
            at = next(i for i, r in enumerate(self.rows) if r is row)
            xs = [x if r is row else r.values(self.lay.x) for r in self.rows]
            ys = [y if r is row else r.values(self.lay.y) for r in self.rows]
            m = self.array([[r.m] for r in self.rows])[:, 0]
        inputs = self.array(xs).reshape(len(xs), *stack.in_shape)
        values, grads = row_values(stack, self.params, inputs, self.array(ys), m)
        calc = {
            col: v for t in self.lay.computed
            for col, v in zip(t.columns(), np.reshape(np.asarray(values[t.name])[at], -1),
                              strict=True)
        }  # fmt: skip
        return calc, {k: g.row(at) for k, g in grads.items()}

    def array(self, rows: list[list[Number]]) -> Array:
        """Rows of numbers as an array in the run's numbers (``Fraction`` objects if exact)."""
        dtype = self.run.num.dtype
        return np.array(rows, dtype=dtype if dtype is not None else object)

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
