"""A chunk of a float run checked with numpy, a whole chunk of steps at a time.

The same checks as :mod:`.steps` on columns: placement, constants, data, every layer's values
(recomputed by the same layer code on numpy columns, which agrees bit for bit with the code on
numbers), the update and the parameters' chain. The first step with any difference is then
checked value by value, which says what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...model.layers import Params
from ...model.stack import ParamSet
from ...model.values import row_values
from ...numerics import Number
from .context import Context
from .problem import Array, Found, Problem, differ, make_float
from .steps import check_steps

__all__ = ["FloatChunk", "check_float"]


def _columns(rows: int, columns: Sequence[Array]) -> Array:
    """Columns side by side as a (rows, len(columns)) float64 array (no columns: width 0)."""
    if not columns:
        return np.empty((rows, 0), dtype=np.float64)
    return np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])


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
        self.grads: Array = np.empty((0, 0))  # each row's gradients, flat, once the maths ran

    def col(self, name: str) -> Array:
        out: Array = self.table.column(name).to_numpy()
        return out

    def matrix(self, names: Sequence[str]) -> Array:
        return _columns(self.rows, [self.col(c) for c in names])

    def first_bad_step(self) -> tuple[tuple[int, int] | None, tuple[Number, ...]]:
        """The (start, end) rows of the first step with a difference, and the parameters it
        starts from; or None and the parameters after the chunk."""
        with np.errstate(all="ignore"):
            bad, w_first, w_last = self.differences()
        hits = np.flatnonzero(bad)
        make = make_float(self.run.num)
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
            bad |= differ(data, narrowed).any(axis=1)
        bad |= self.memory_differences(data)
        bad |= self.maths_differences(x, y, w)
        recorded_after = self.matrix(self.lay.after)
        w_after = self.updates(w) if self.run.check_update else recorded_after[self.starts]
        bad |= differ(recorded_after, w_after[self.local], self.run.tol).any(axis=1)
        # The parameters' chain: each step starts where the previous one's update ended.
        start = np.array([self.w], dtype=self.dtype).astype(np.float64).reshape(1, -1)
        w_first = np.vstack([start, w_after[:-1]])
        bad |= differ(w, w_first[self.local], self.run.tol).any(axis=1)
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
        bad |= differ(self.col("lr"), float(run.lr))
        out: Array = bad
        return out

    def maths_differences(self, x: Array, y: Array, w: Array) -> Array:
        """Rows whose computed values are not what the layers give from their recorded data
        and parameters; keeps the rows' gradients for :meth:`updates`."""
        stack = self.run.stack
        m = self.plan["m"].astype(self.dtype)
        x_rows = x.astype(self.dtype).reshape(self.rows, *stack.in_shape)
        if stack.couples_rows:
            values, grads = self.by_step(x_rows, y.astype(self.dtype), w.astype(self.dtype), m)
        else:
            params = stack.unflat(w.astype(self.dtype))
            values, grads = row_values(stack, params, x_rows, y.astype(self.dtype), m)
        bad = np.zeros(self.rows, dtype=bool)
        for t in self.lay.computed:
            calc = np.asarray(values[t.name]).reshape(self.rows, -1)
            for i, col in enumerate(t.columns()):
                bad |= differ(self.col(col), calc[:, i], self.run.tol)
        self.grads = stack.flat(grads)
        return bad

    def by_step(self, x: Array, y: Array, w: Array, m: Array) -> tuple[dict[str, Array], ParamSet]:
        """:func:`row_values` a step at a time, for a stack whose rows depend on the other rows
        of their step (a normalization): each step with its own rows and parameters."""
        stack = self.run.stack
        parts: dict[str, list[Array]] = {}
        grads: dict[int, list[Params]] = {}
        for start, size in zip(self.starts.tolist(), self.sizes.tolist(), strict=True):
            end = start + size
            params = stack.unflat(w[start])
            values, step_grads = row_values(stack, params, x[start:end], y[start:end],
                                            m[start:end])  # fmt: skip
            for name, v in values.items():
                parts.setdefault(name, []).append(np.asarray(v))
            for k, g in step_grads.items():
                grads.setdefault(k, []).append(g)
        joined = {name: np.concatenate(v) for name, v in parts.items()}
        return joined, {k: _joined(g) for k, g in grads.items()}

    def updates(self, w: Array) -> Array:
        """Each step's parameters after its update, from its first row's parameters before
        it and its rows' gradients, by the model's update rule."""
        stack = self.run.stack
        total = self.batch_sums(self.grads if self.grads.size else w[:, :0])
        start = stack.unflat(w[self.starts].astype(self.dtype))
        after = stack.update(start, self.run.lr, stack.unflat(total))
        return np.asarray(stack.flat(after), dtype=np.float64).reshape(len(self.starts), -1)

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
        changed: Array = np.asarray(differ(data, known).any(axis=1))
        memory.seen[sample[rows_new]] = True
        memory.values[sample[rows_new]] = data[rows_new]
        return changed


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


def _joined(grads: list[Params]) -> Params:
    """Steps' gradients, a row each, as one array of rows."""
    b = None if grads[0].b is None else np.concatenate([g.b for g in grads if g.b is not None])
    return Params(np.concatenate([g.w for g in grads]), b)
