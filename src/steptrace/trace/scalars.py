"""Per-step figures: one small row per step, written with every run, whatever is recorded.

A run may keep only some steps' values (``every``, ``steps``, a flight recorder's window); its
curves must still be whole. So every block of rows is summed up, step by step, *before* any row
is filtered: the step's batch loss and learning rate and, for each layer, the sizes a training
run goes wrong by (docs/trace-format.md, "Per-step figures"):

- for each layer k with parameters θ (its ``w{k}`` and ``b{k}`` together):
  ``w{k}_norm`` = ‖θ‖ before the step, ``grad{k}_norm`` = ‖Σ grad‖ (the step's summed
  gradient, or the one the optimizer used), ``dw{k}_norm`` = ‖θ̂ − θ‖,
  ``dw{k}_ratio`` = ‖θ̂ − θ‖ / ‖θ‖, ``w{k}_max`` = max |θ̂| (the largest parameter after it);
- for each layer k: ``o{k}_max`` = the largest finite |o{k}| of the step's rows, and
  ``nonfinite{k}`` = how many of layer k's values (output, δ, gradients, parameters after) are
  NaN or ±inf.

The figures go into ``_scalars/`` in the run folder, Parquet files written as the parts are
(hidden temporary name, fsync, rename): :func:`load_scalars` reads them, and so do pandas and
DuckDB (``pd.read_parquet("traces/run/_scalars")``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import TraceError
from .run_buffer import Block, RowsBlock
from .schema import FORMAT_VERSION, Tensor
from .summary import group_starts

__all__ = [
    "BAD_WEIGHTS",
    "FIGURES",
    "LATER",
    "SCALARS_DIR",
    "ScalarSpec",
    "ScalarsWriter",
    "columns_of",
    "layer_of",
    "load_scalars",
    "step_figures",
    "steps_figures",
    "tensor_rows",
]

Array = npt.NDArray[Any]
#: The folder of a run's per-step figures (``_``: skipped by readers of the run's rows).
SCALARS_DIR = "_scalars"
#: The figures' files' footer key: the format version and the run they belong to, as JSON.
SCALARS_KEY = "steptrace.scalars"
FILE_FORMAT = "scalars-{:06d}.parquet"
#: Steps a file holds before the next one starts (the last file is rewritten as steps come, its
#: rows held in memory till then: memory stays flat however long the run).
FILE_STEPS = 1_024
#: A block's first-step values of the tensors stored once as the step before's (writer.START).
START = "start"
#: A block of steps whose values were not captured: their figures, made by the adapter
#: (:func:`steps_figures`), by column.
FIGURES = "figures"
#: … whether each row's step left weights holding a NaN or ±inf (NaN, else 0): what the run's
#: summary reads of it, in place of the new weights' columns.
BAD_WEIGHTS = "bad_weights"
#: … and how their values are made if a flight recorder's window writes them: a callable
#: given the block's rows to write (whole steps), giving them as a buffer's rows
#: (:meth:`~steptrace.trace.run.RunWriter.write_figures`).
LATER = "later"

_PARAM = re.compile(r"([wb])(\d+)_after")
_LAYER = re.compile(r"(\d+)(?:_before|_after)?")


def layer_of(name: str) -> int | None:
    """The layer a tensor belongs to, by the number its name ends with (``o3``, ``grad_w2``,
    ``w2_after``, ``exp_avg_w4_before`` …); None for ``x``, ``y``, ``lr``, ``loss``."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m is not None and m.end() == len(name) else None


@functools.lru_cache(maxsize=8_192)
def columns_of(tensor: Tensor) -> tuple[str, ...]:
    """``tensor.columns()``, made once: a wide run's blocks ask for them block after block
    (hundreds of thousands of names)."""
    return tuple(tensor.columns())


def tensor_rows(block: Mapping[str, Any], tensor: Tensor, by_name: Mapping[str, Tensor]) -> Array:
    """Every row's values of ``tensor`` in ``block``, shape (components, rows): its own
    columns, or those of the tensor it is the ``same_as`` on the same row. (A tensor known
    from the step before is :func:`per_step_before`'s.)"""
    current = _holder(block, tensor, by_name)
    if isinstance(block, Block | RowsBlock):  # a buffer's: the tensor's rows, as they lie
        span = block.span(columns_of(current))
        if span is not None:
            return span
    columns = [block[c] for c in columns_of(current)]
    side = _side_by_side(columns)
    return side if side is not None else np.vstack([np.asarray(c, np.float64) for c in columns])


def _holder(block: Mapping[str, Any], tensor: Tensor, by_name: Mapping[str, Tensor]) -> Tensor:
    """The tensor whose columns in ``block`` hold ``tensor``'s values (itself, or the one it is
    the ``same_as`` on the same row); KeyError for one known from the step before."""
    current = tensor
    while columns_of(current)[0] not in block and current.same_as is not None:
        if current.previous_step:
            raise KeyError(tensor.name)
        current = by_name[current.same_as]
    return current


def _side_by_side(columns: Sequence[Any]) -> Array | None:
    """The columns as one read-only (components, rows) view, when they lie side by side in
    one float64 array (a row-major buffer's columns, as the trace writer's blocks hold them:
    thousands of columns a tensor, copied one by one otherwise); else None."""
    first = columns[0]
    if not isinstance(first, np.ndarray) or first.dtype != np.float64 or first.ndim != 1:
        return None
    base, start = first.base, first.ctypes.data
    apart = 8 if len(columns) == 1 else columns[1].ctypes.data - start
    for i, c in enumerate(columns):
        if (not isinstance(c, np.ndarray) or c.base is not base or c.strides != first.strides
                or c.shape != first.shape or c.ctypes.data != start + i * apart):  # fmt: skip
            return None
    view: Array = np.lib.stride_tricks.as_strided(
        first, (len(columns), len(first)), (apart, first.strides[0]), writeable=False
    )
    return view


def per_step_before(
    block: Mapping[str, Any], tensor: Tensor, by_name: Mapping[str, Tensor], starts: Array
) -> Array:
    """A parameter's values before each step of ``block`` (components, steps): stored, or
    the step before's after (the block's first step: the ``start`` it comes with)."""
    if columns_of(tensor)[0] in block:
        return tensor_rows(block, tensor, by_name)[:, starts]
    assert tensor.same_as is not None
    after = tensor_rows(block, by_name[tensor.same_as], by_name)
    first = block.get(START) or {}
    start = np.array([first.get(c, np.nan) for c in columns_of(tensor)], dtype=np.float64)
    # The step before a step's first row: the last row of the step before.
    previous = after[:, starts[1:] - 1]
    return np.hstack([start[:, None], previous])


@dataclass(frozen=True)
class ScalarSpec:
    """Which tensors each figure comes from, for a run's tensors (the ones its blocks carry)."""

    tensors: tuple[Tensor, ...]
    #: Layer → its parameters' names without ``_after`` (``w2``, ``b2``).
    params: Mapping[int, tuple[str, ...]]
    #: Layer → its output's name.
    outputs: Mapping[int, str]
    #: Layer → the tensors whose non-finite values it counts.
    counted: Mapping[int, tuple[str, ...]]

    @classmethod
    def of(cls, tensors: Sequence[Tensor]) -> ScalarSpec:
        params: dict[int, list[str]] = {}
        counted: dict[int, list[str]] = {}
        outputs: dict[int, str] = {}
        for t in tensors:
            m = _PARAM.fullmatch(t.name)
            if m is not None:
                params.setdefault(int(m.group(2)), []).append(m.group(1) + m.group(2))
            k = layer_of(t.name)
            if k is None or t.name.endswith("_before"):
                continue
            counted.setdefault(k, []).append(t.name)
            if t.name == f"o{k}":
                outputs[k] = t.name
        return cls(
            tuple(tensors),
            {k: tuple(v) for k, v in sorted(params.items())},
            dict(sorted(outputs.items())),
            {k: tuple(v) for k, v in sorted(counted.items())},
        )

    def names(self) -> list[str]:
        """The figures' columns, in file order."""
        out = ["step", "loss", "lr"]
        for k in self.params:
            out += [f"w{k}_norm", f"grad{k}_norm", f"dw{k}_norm", f"dw{k}_ratio", f"w{k}_max"]
        for k in sorted({*self.outputs, *self.counted}):
            if k in self.outputs:
                out.append(f"o{k}_max")
            out.append(f"nonfinite{k}")
        return out

    def schema(self) -> pa.Schema:
        fields = [
            pa.field(n, pa.int64() if n == "step" or n.startswith("nonfinite") else pa.float64())
            for n in self.names()
        ]
        return pa.schema(fields)


def step_figures(block: Mapping[str, Any], spec: ScalarSpec) -> dict[str, Array]:
    """Each step's figures in ``block`` (rows of whole steps, grouped by step), by column."""
    steps = np.asarray(block["step"], dtype=np.int64)
    starts = group_starts(steps)
    by_name = {t.name: t for t in spec.tensors}
    counts = np.diff(np.append(starts, len(steps)))
    with np.errstate(all="ignore"):
        loss = np.add.reduceat(np.asarray(block["loss"], np.float64), starts) / counts
        out: dict[str, Array] = {"step": steps[starts], "loss": loss}
        out["lr"] = np.asarray(block["lr"], np.float64)[starts] if "lr" in block else loss * np.nan
        for k, bases in spec.params.items():
            out.update(_param_figures(block, k, bases, by_name, starts))
        for k in sorted({*spec.outputs, *spec.counted}):
            if k in spec.outputs:
                o = by_name[spec.outputs[k]]
                finite = _finite(block, o, by_name)
                out[f"o{k}_max"] = _largest_finite(tensor_rows(block, o, by_name), starts, finite)
            bad = np.zeros(len(starts), np.int64)
            for name in spec.counted.get(k, ()):
                with contextlib.suppress(KeyError):
                    t = by_name[name]
                    bad += _nonfinite(tensor_rows(block, t, by_name), starts,
                                      _finite(block, t, by_name))  # fmt: skip
            out[f"nonfinite{k}"] = bad
    return out


def _finite(block: Mapping[str, Any], tensor: Tensor, by_name: Mapping[str, Tensor]) -> bool:
    """Whether every value of ``tensor`` in ``block`` is finite, as far as the block knows at
    once (a buffer's: from its columns' sums, made in one pass); False: check them."""
    if not isinstance(block, Block | RowsBlock):
        return False
    with contextlib.suppress(KeyError):  # a column not of its matrix: check the values
        return block.finite(columns_of(_holder(block, tensor, by_name)))
    return False


def _all_finite(values: Array) -> bool:
    """Whether every value is finite, known from their sum (one pass, no copy): a NaN or an
    infinity makes it NaN or infinite. A sum past the largest float says no, wrongly: the
    callers then count value by value."""
    return bool(np.isfinite(np.add.reduce(values, axis=None)))


def _largest_finite(o: Array, starts: Array, finite: bool) -> Array:
    """The largest finite |o| of each step, (components, rows) grouped by ``starts`` (NaN
    for a step with none): max(max o, −min o) of each row, then of each step's rows, when
    every value is finite (``finite``, or found so), no |o| copied."""
    if finite or _all_finite(o):
        each_row = np.maximum(o.max(axis=0, initial=-np.inf), -o.min(axis=0, initial=np.inf))
        top = np.maximum.reduceat(each_row, starts) + 0.0  # +0.0: |−0| is 0, as abs makes it
    else:
        a = np.abs(o)
        a[~np.isfinite(a)] = np.nan
        top = np.fmax.reduceat(a, starts, axis=1).max(axis=0, initial=-np.inf)
    out: Array = np.where(np.isneginf(top), np.nan, top)
    return out


def _nonfinite(values: Array, starts: Array, finite: bool) -> Array:
    """How many NaN or ±inf each step holds of ``values`` (components, rows): none when they
    are all finite (``finite``, or found so)."""
    if finite or _all_finite(values):
        return np.zeros(len(starts), np.int64)
    counts: Array = np.add.reduceat(~np.isfinite(values), starts, axis=1).sum(axis=0)
    return counts


def steps_figures(
    spec: ScalarSpec,
    m: Array,
    loss: Array,
    per_step: Mapping[str, Array],
    o_max: Mapping[int, Array],
    row_tensors: frozenset[str],
) -> dict[str, Array]:
    """The figures of steps whose rows were not kept, as :func:`step_figures` makes them from
    their rows: ``m`` the rows of each step, ``loss`` each row's, ``per_step`` the values of
    every tensor stored once a step (steps, components), ``o_max`` each layer's largest |o{k}|
    of each step (checked finite), ``row_tensors`` the tensors of one value a row, checked to
    hold no NaN or ±inf. (``step`` and ``lr`` are the writer's.)"""
    starts = np.concatenate([[0], np.cumsum(m)[:-1]]).astype(np.int64)
    with np.errstate(all="ignore"):
        loss = np.asarray(loss, np.float64).reshape(-1)
        out: dict[str, Array] = {"loss": np.add.reduceat(loss, starts) / m}
        for k, bases in spec.params.items():
            theta, new, g = (np.vstack([per_step[f.format(b)].T for b in bases]).astype(np.float64)
                             for f in ("{}_before", "{}_after", "step_grad_{}"))  # fmt: skip
            out.update(_theta_figures(k, theta, new, g))
        for k in sorted({*spec.outputs, *spec.counted}):
            if k in spec.outputs:
                out[f"o{k}_max"] = np.asarray(o_max[k], np.float64)
            bad = np.zeros(len(m), np.int64)
            for name in spec.counted.get(k, ()):
                if name in per_step:  # the same values on each row of the step
                    bad += (~np.isfinite(per_step[name])).sum(axis=1) * m
                elif name not in row_tensors:
                    raise KeyError(name)
            out[f"nonfinite{k}"] = bad
    return out


def _param_figures(
    block: Mapping[str, Any],
    k: int,
    bases: Sequence[str],
    by_name: Mapping[str, Tensor],
    starts: Array,
) -> dict[str, Array]:
    """Layer ``k``'s parameter figures, its ``w{k}`` and ``b{k}`` as one vector θ."""
    before, after, grad = [], [], []
    for base in bases:
        after.append(tensor_rows(block, by_name[base + "_after"], by_name)[:, starts])
        b = by_name.get(base + "_before")
        before.append(per_step_before(block, b, by_name, starts) if b else after[-1] * np.nan)
        grad.append(_step_gradient(block, base, by_name, starts))
    return _theta_figures(k, np.vstack(before), np.vstack(after), np.vstack(grad))


def _theta_figures(k: int, theta: Array, new: Array, g: Array) -> dict[str, Array]:
    """Layer ``k``'s parameter figures from θ, θ̂ and the gradient, (components, steps)."""
    norm, step = _norm(theta), _norm(new - theta)
    return {
        f"w{k}_norm": norm,
        f"grad{k}_norm": _norm(g),
        f"dw{k}_norm": step,
        f"dw{k}_ratio": step / norm,
        f"w{k}_max": np.abs(new).max(axis=0),
    }


def _norm(a: Array) -> Array:
    """‖column‖ of each column, scaled by its largest |value| first: a sum of squares past
    1e308 overflows, a diverging run's norms should not before their values do."""
    a = np.asfortranarray(a)  # each step's values summed in one order, however many steps
    top = np.abs(a).max(axis=0)
    scale = np.where((top > 0) & np.isfinite(top), top, 1.0)
    norms: Array = scale * np.sqrt(((a / scale) ** 2).sum(axis=0))
    return norms


def _step_gradient(
    block: Mapping[str, Any], base: str, by_name: Mapping[str, Tensor], starts: Array
) -> Array:
    """The gradient a step updated ``base`` by: the one the optimizer used when recorded
    (``step_grad_w2``), else the sum of the step's rows' gradients (NaN when neither is)."""
    used = by_name.get("step_grad_" + base)
    if used is not None:
        return tensor_rows(block, used, by_name)[:, starts]
    rows = by_name.get("grad_" + base)
    if rows is None:
        size = by_name[base + "_after"].size
        return np.full((size, len(starts)), np.nan)
    values = np.ascontiguousarray(tensor_rows(block, rows, by_name))  # summed in one order
    summed: Array = np.add.reduceat(values, starts, axis=1)
    return summed


class ScalarsWriter:
    """A run's per-step figures, written into ``_scalars/`` crash-safely: the rows since the
    last sealed file are rewritten (aside, fsynced, renamed) at each :meth:`flush`; a file
    that reaches :data:`FILE_STEPS` steps is sealed and the next one begun."""

    def __init__(self, run_dir: Path, tensors: Sequence[Tensor], run_id: str) -> None:
        self.folder = run_dir / SCALARS_DIR
        self.spec = ScalarSpec.of(tensors)
        meta = {"format_version": FORMAT_VERSION, "run_id": run_id}
        self.schema = self.spec.schema().with_metadata({SCALARS_KEY: json.dumps(meta)})
        self.files = len(list(self.folder.glob("scalars-*.parquet")))  # a resumed run's
        self._rows: list[pa.Table] = []
        self._steps = 0
        self._dirty = False

    def add(self, block: Mapping[str, Any]) -> dict[str, Array]:
        """The figures of a block's steps, kept for the next flush and returned."""
        if not len(block["step"]):
            return {}
        given = block.get(FIGURES)
        figures = step_figures(block, self.spec) if given is None else given
        table = pa.Table.from_pydict({n: figures[n] for n in self.schema.names}, self.schema)
        self._rows.append(table)
        self._steps += table.num_rows
        self._dirty = True
        return figures

    def flush(self) -> None:
        """Write the figures not yet on disk (the last file, whole)."""
        if not self._dirty:
            return
        self.folder.mkdir(exist_ok=True)
        name = FILE_FORMAT.format(self.files)
        tmp = self.folder / f".{name}.tmp"
        table = pa.concat_tables(self._rows).combine_chunks()
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / name)
        self._dirty = False
        self._rows = [table]
        if self._steps >= FILE_STEPS:  # sealed: the next figures start a new file
            self.files += 1
            self._rows, self._steps = [], 0


def load_scalars(run: str | Path | Any) -> Any:
    """A run's per-step figures as a pandas DataFrame, one row per step, in step order.

    ``run`` is a run folder (or anything with a ``path``, such as a recording's result).

    >>> steptrace.load_scalars("traces/seed-exact-lr1")[["step", "loss"]]  # doctest: +SKIP
       step      loss
    0     0  1.234567
    """
    path = Path(run if isinstance(run, str | Path) else run.path)
    files = sorted((path / SCALARS_DIR).glob("scalars-*.parquet"))
    if not files:
        raise TraceError(
            f"{path} has no per-step figures ({SCALARS_DIR}/): it was recorded by a steptrace "
            "before trace format 2.2"
        )
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    frame = table.to_pandas().drop_duplicates("step", keep="last")  # a resumed run's redone steps
    return frame.sort_values("step", kind="stable").reset_index(drop=True)
