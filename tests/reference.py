"""The learning phase written the plain way, for the tests: one step after the other, one data
input after the other, on numbers, every value kept. The recorder computes the same run in two
passes (the weights' path on numbers, then every value on columns); the tests hold the two to
the same bits."""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction
from typing import Any

import numpy as np

from steptrace.data import Dataset
from steptrace.model.stack import ParamSet
from steptrace.model.values import tensor_values
from steptrace.schedule import plan
from steptrace.trace.schema import stack_tensors
from steptrace.train.settings import Settings

KEYS = ("step", "epoch", "sample")


def dataset(rows: list[tuple[Any, ...]], name: str = "d", targets: int = 1) -> Dataset:
    """Rows of (x1, …, xk, y1, …), values read exactly."""
    k = len(rows[0]) - targets
    features = tuple(f"f{j}" for j in range(1, k + 1))
    return Dataset(
        name, features, tuple(f"t{j}" for j in range(1, targets + 1)),
        tuple(tuple(Fraction(v) for v in r[:k]) for r in rows),
        tuple(tuple(Fraction(v) for v in r[k:]) for r in rows),
    )  # fmt: skip


def reference(
    ds: Dataset, settings: Settings, start_step: int = 0, params: ParamSet | None = None
) -> dict[str, Any]:
    """Every column of the run (float64 values; exact runs also ``<col>_exact`` texts)."""
    num = settings.numerics
    stack = settings.model.stack(num)
    tensors = stack_tensors(stack, len(ds.targets))
    xs, ys = ds.in_numerics(num)
    lr = num.make(settings.lr)
    params = settings.model.params(num) if params is None else params
    cols: dict[str, list[Any]] = defaultdict(list)
    with np.errstate(all="ignore"):  # float32 numbers warn on overflow; divergence is data
        for st in plan(
            len(ds), settings.epochs, settings.batch_size, settings.shuffle, settings.seed
        ):
            m = len(st.samples)
            if stack.couples_rows:  # a normalization: the step's rows go through together
                x = np.concatenate([one_row(xs[i], num, stack.in_shape) for i in st.samples])
                y = np.concatenate([one_row(ys[i], num) for i in st.samples])
                ms = num.array([num.make(Fraction(m))] * m)
                grads = stack.backward(params, x, stack.forward(params, x), y, ms).grads
                after = stack.update(params, lr, stack.summed(grads))
                if st.step >= start_step:
                    values = tensor_values(stack, params, after, x, y, ms, lr)
                    for r, i in enumerate(st.samples):
                        for key, v in zip(KEYS, (st.step, st.epoch, i), strict=True):
                            cols[key].append(v)
                        for t in tensors:
                            value = np.asarray(values[t.name])
                            shared = t.name == "lr" or t.name.endswith(("_before", "_after"))
                            flat = (value if shared else value[r]).reshape(-1)
                            for name, v in zip(t.columns(), flat, strict=True):
                                cols[name].append(num.to_float(v))
                params = after
                continue
            total: ParamSet | None = None
            for i in st.samples:
                x, y = one_row(xs[i], num, stack.in_shape), one_row(ys[i], num)
                grads = stack.backward(params, x, stack.forward(params, x), y, m).grads
                row = {k: g.row(0) for k, g in grads.items()}
                total = row if total is None else {k: total[k] + g for k, g in row.items()}
            after = params if total is None else stack.update(params, lr, total)
            if st.step >= start_step:
                for i in st.samples:
                    x, y = one_row(xs[i], num, stack.in_shape), one_row(ys[i], num)
                    values = tensor_values(stack, params, after, x, y, m, lr)
                    for key, v in zip(KEYS, (st.step, st.epoch, i), strict=True):
                        cols[key].append(v)
                    for t in tensors:
                        flat = np.asarray(values[t.name]).reshape(-1)
                        for name, v in zip(t.columns(), flat, strict=True):
                            cols[name].append(num.to_float(v))
                            if num.is_exact:
                                cols[name + "_exact"].append(str(v))
            params = after
    return {
        k: v if k.endswith("_exact") else np.array(v, dtype=np.int64 if k in KEYS else np.float64)
        for k, v in cols.items()
    }


def one_row(values: Any, num: Any, shape: tuple[int, ...] | None = None) -> Any:
    """A sample's numbers as an array of one row (in ``shape``), in the run's numbers."""
    row = num.array(list(values))
    return row.reshape(1, *(shape or row.shape))


def bits(values: Any) -> Any:
    values = np.asarray(values)
    return values.view(np.uint64) if values.dtype == np.float64 else values


def assert_bit_identical(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Every column of ``want`` in ``got``, float64s compared as bit patterns (-0.0 is not 0.0,
    NaN payloads count)."""
    missing = set(want) - set(got)
    assert not missing, f"missing columns {sorted(missing)[:5]}"
    for name, column in want.items():
        if name.endswith("_exact"):
            assert list(got[name]) == list(column), f"column {name} differs"
        else:
            assert np.array_equal(bits(got[name]), bits(column)), f"column {name} differs"
