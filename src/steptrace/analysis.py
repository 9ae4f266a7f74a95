"""Analysing traces with pandas: the common questions about a run or a sweep, one function each.

Every function takes a DataFrame of trace rows — from :func:`~steptrace.load_traces`,
``pandas.read_parquet(folder)``, or DuckDB/Polars ``.to_pandas()`` — and is also reachable as
``df.steptrace.<name>``, the accessor this module registers when imported::

    >>> import steptrace, steptrace.analysis
    >>> df = steptrace.load_traces("traces")  # doctest: +SKIP
    >>> df.steptrace.summary()  # doctest: +SKIP

Runs are told apart by the ``run`` column (the run folder's name, added by ``load_traces``) or,
failing that, by ``run_id`` (on every row of every part file). Any stack of layers works: the
functions find the layers in the column names (``o3_2``, ``w4_after_1_2``, ``b2_before_1`` …).

Definitions, used throughout:

- A step's *batch loss* is the mean of its samples' losses (as in :mod:`steptrace.trace.summary`).
- An epoch's loss is the mean of its steps' batch losses (``per="step"``, the default) or of
  its samples' losses (``per="sample"``); they differ only when the last batch is short.
  NaN and ±inf are never skipped: an epoch with one NaN loss has a NaN loss.
- A run *diverged* by :mod:`steptrace.trace.summary`'s rule: at the first step whose batch loss
  or new parameters (every layer's weights and biases) are not finite, or whose batch loss
  exceeds ``BLOWUP_FACTOR`` times the largest batch loss of the first epoch.
- A run *converged* if it did not diverge and the loss of its last epoch is at most ``rtol``
  (:data:`CONVERGE_RTOL`, a thousandth) times the loss of its first epoch. A run stuck where it
  started (a closed ReLU gate teaches nothing) has not converged; a one-epoch run converged only
  if its loss was 0 throughout.
- A *gate* is a layer that switches at 0 on its input x: ``relu``, ``leaky_relu`` and
  ``heaviside`` (:data:`GATE_TYPES`). Each of its neurons is a unit, *open* when x ≥ 0 and
  *closed* otherwise — NaN included, since the layers' rule "x ≥ 0" fails for it. In the
  article's model the gate is layer 3, the ReLU, and its input is o2.
- ``gate_closed_steps`` counts the steps where some unit of some gate is closed for at least
  one sample of the batch; ``gate_closed_share`` is the share of (row, unit) pairs closed.
- A ReLU unit is *dead* when it is closed on every row of the last epoch recorded: δ stops
  there (δ_in = 0), so nothing below it learns from it, and its own weights get no gradient to
  reopen it. Leaky ReLUs pass a·δ and never die; a Heaviside's δ_in is 0 whatever its input.
  ``dead_units`` counts them, ``dead_neurons`` names them (``L3[2]``: layer 3, neuron 2).
- The first non-finite step is the first whose loss, any layer's output or any new parameter
  is NaN or ±inf.

On disk (:func:`trace_summaries`) the gates are the model's, from the run's metadata. A frame
of rows has no metadata, so there a layer k counts as a gate when its rows show one: o{k} has
the neurons of o{k−1} and, on every row where both are numbers, o{k} = o{k−1} (or 1, for a
Heaviside) where o{k−1} ≥ 0, and where o{k−1} < 0 it is 0 or pulled towards 0 without changing
sign (a leaky ReLU with a slope between 0 and 1). A layer that passes its input unchanged and
never sees a negative one is taken for a ReLU, which changes no count: its units are never
closed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from .errors import SteptraceError, TraceError
from .numerics import parse_exact
from .trace.filters import Filters
from .trace.loader import _column_names, find_traces
from .trace.reader import Trace
from .trace.schema import EXACT_SUFFIX, after_columns, expand, tensors_from_columns
from .trace.summary import SummaryTracker, group_means, group_starts

__all__ = [
    "CONVERGE_RTOL",
    "GATE_TYPES",
    "Gate",
    "SteptraceAccessor",
    "batch_loss",
    "compare_at",
    "epoch_loss",
    "find_gates",
    "group_label",
    "group_runs",
    "run_column",
    "run_summary",
    "step_rows",
    "sweep_dataset",
    "trace_gates",
    "trace_summaries",
    "varying_settings",
    "weights_long",
]

#: A run converged if its last epoch's loss is at most this fraction of its first epoch's.
CONVERGE_RTOL = 1e-3
#: Layers that switch at 0 on their input: the series' gates.
GATE_TYPES = ("relu", "leaky_relu", "heaviside")

#: Settings that :func:`sweep_dataset` adds as columns (from metadata, not from the files).
VIRTUAL_SETTINGS = ("run", "lr_text", "epochs", "shuffle", "seed", "status")
#: Settings copied into :func:`run_summary`'s table when the rows carry them.
SUMMARY_SETTINGS = ("numerics", "lr_text", "lr", "batch_size", "epochs", "status")
#: The settings a sweep's grid varies, in the order runs are grouped by them: α last, since a
#: sweep is read as loss against α, one line per value of the others.
GRID_SETTINGS = ("model", "numerics", "batch_size", "seed", "lr_text")

Array = npt.NDArray[Any]

_OUTPUT = re.compile(r"o(\d+)_\d+")
#: A parameter column: quantity (w, b), layer, before/after, neuron j, input i (weights only).
_PARAM = re.compile(r"([wb])(\d+)_(before|after)_(\d+)(?:_(\d+))?")


def run_column(df: pd.DataFrame) -> str:
    """The column telling runs apart: ``run`` if the rows have it, else ``run_id``."""
    for name in ("run", "run_id"):
        if name in df.columns:
            return name
    raise TraceError("these rows have neither a 'run' nor a 'run_id' column to tell runs apart")


def _need(df: pd.DataFrame, *names: str) -> None:
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise TraceError(f"these rows lack column(s) {', '.join(missing)}; load them too")


def _runs(df: pd.DataFrame) -> Iterator[tuple[Any, pd.DataFrame]]:
    """Each run's rows in recording order (by step; samples of a step as recorded)."""
    key = run_column(df)
    _need(df, "step")
    for run, rows in df.groupby(key, sort=False):
        yield run, rows.sort_values("step", kind="stable")


def _held(rows: pd.DataFrame, columns: Iterable[Any]) -> list[str]:
    """The value columns among ``columns`` this run has: ``load_traces`` fills the columns of
    other runs' layers with NaN on every row of a run without them."""
    names = [str(c) for c in columns if not str(c).endswith(EXACT_SUFFIX)]
    return [c for c in names if c in rows.columns and rows[c].notna().any()]


def step_rows(df: pd.DataFrame, step: int) -> pd.DataFrame:
    """The rows of one step, of every run in ``df`` (one row per sample of its batch).

    >>> step_rows(df, 2)[["run", "o2_1", "loss", "d3_1"]]  # doctest: +SKIP
    """
    _need(df, "step")
    return df[df["step"] == step]


# --- losses ---------------------------------------------------------------------------------


def batch_loss(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, step): ``run, step, epoch, loss`` with the step's batch loss.

    >>> batch_loss(df).pivot(index="step", columns="run", values="loss")  # doctest: +SKIP
    """
    _need(df, "step", "epoch", "loss")
    return _mean_loss(df, run_column(df), "step", "epoch")


def epoch_loss(df: pd.DataFrame, per: str = "step") -> pd.DataFrame:
    """One row per (run, epoch): ``run, epoch, loss``, the mean of the epoch's batch losses
    (``per="step"``) or of its samples' losses (``per="sample"``).

    >>> epoch_loss(df).pivot(index="epoch", columns="run", values="loss")  # doctest: +SKIP
    """
    if per not in ("step", "sample"):
        raise TraceError(f"per must be 'step' or 'sample', got {per!r}")
    _need(df, "step", "epoch", "loss")
    source = batch_loss(df) if per == "step" else df
    return _mean_loss(source, run_column(df), "epoch")


def _mean_loss(rows_of: pd.DataFrame, key: str, by: str, *carried: str) -> pd.DataFrame:
    """Per run, the mean loss of each group of consecutive rows with the same ``by``, and the
    ``carried`` columns of each group's first row: ``key, by, *carried, loss``."""
    frames = []
    for run, rows in _runs(rows_of):
        groups = rows[by].to_numpy(np.int64)
        starts = group_starts(groups)
        columns: dict[str, Any] = {key: run, by: groups[starts]}
        columns.update({c: rows[c].to_numpy(np.int64)[starts] for c in carried})
        columns["loss"] = group_means(rows["loss"].to_numpy(np.float64), starts)
        frames.append(pd.DataFrame(columns))
    return _concat(frames, [key, by, *carried, "loss"])


# --- parameters -----------------------------------------------------------------------------

#: :func:`weights_long`'s columns.
WEIGHT_COLUMNS = ["step", "run", "layer", "quantity", "j", "i", "value"]


@dataclass(frozen=True)
class _Param:
    """One parameter column: ``w4_after_1_2`` is quantity w of layer 4, j = 1, i = 2."""

    column: str
    quantity: str
    layer: int
    j: int
    i: int | None

    @property
    def order(self) -> tuple[int, int, int, int]:
        """As the stack flattens them: by layer, W row by row, then b."""
        return (self.layer, self.quantity == "b", self.j, self.i or 0)


def _params(columns: Iterable[Any], which: str) -> list[_Param]:
    found = []
    for c in map(str, columns):
        m = _PARAM.fullmatch(c)
        if m and m.group(3) == which:
            i = int(m.group(5)) if m.group(5) else None
            found.append(_Param(c, m.group(1), int(m.group(2)), int(m.group(4)), i))
    return sorted(found, key=lambda p: p.order)


def weights_long(df: pd.DataFrame, which: str = "after") -> pd.DataFrame:
    """Every layer's parameters along the run, in long form, ready to plot: one row per (run,
    step, parameter) with ``step, run, layer, quantity, j, i, value``. ``quantity`` is ``w``
    (weight W[j, i]: neuron j, input i) or ``b`` (bias b[j], ``i`` missing); ``which="before"``
    gives the values each step started from, ``"after"`` (the default) those it ended with.

    >>> w = weights_long(df)  # doctest: +SKIP
    >>> w2 = w[(w.layer == 2) & (w.i == 2)]  # doctest: +SKIP
    >>> w2.pivot(index="step", columns="run", values="value").plot()  # doctest: +SKIP
    """
    if which not in ("before", "after"):
        raise TraceError(f"which must be 'before' or 'after', got {which!r}")
    if not _params(df.columns, which):
        raise TraceError(f"these rows have no parameter columns (w{{k}}_{which}_…); load them too")
    frames = [_run_weights(run, rows, which) for run, rows in _runs(df)]
    out = _concat(frames, WEIGHT_COLUMNS)
    out["i"] = out["i"].astype("Int64")
    return out


def _run_weights(run: Any, rows: pd.DataFrame, which: str) -> pd.DataFrame:
    params = [p for p in _params(rows.columns, which) if p.column in _held(rows, [p.column])]
    first = rows.drop_duplicates("step")  # every row of a step holds the same parameters
    values = first[[p.column for p in params]].to_numpy(np.float64)
    n_steps, n = values.shape

    def each(field: str) -> Array:
        return np.tile(np.array([getattr(p, field) for p in params], dtype=object), n_steps)

    return pd.DataFrame(
        {
            "step": np.repeat(first["step"].to_numpy(np.int64), n),
            "run": run,
            "layer": each("layer").astype(np.int64),
            "quantity": each("quantity").astype(str),
            "j": each("j").astype(np.int64),
            "i": pd.array(each("i"), dtype="Int64"),
            "value": values.reshape(-1),
        }
    )


# --- gates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    """A gate layer (:data:`GATE_TYPES`) and the columns of its input, one per unit: layer 3
    of the article is ``Gate(3, "relu", ("o2_1",))``."""

    layer: int
    type: str
    inputs: tuple[str, ...]

    @property
    def can_die(self) -> bool:
        """Whether a unit closed for good stops all learning through it (a ReLU's)."""
        return self.type == "relu"

    def unit_names(self) -> list[str]:
        return [f"L{self.layer}[{j}]" for j in range(1, len(self.inputs) + 1)]


def trace_gates(trace: Trace) -> list[Gate]:
    """The gates of a run's model, from its metadata (version 1 traces: the article's ReLU)."""
    layers = (trace.meta.get("model") or {}).get("layers") or []
    return [
        Gate(k, spec["type"], tuple(trace.columns_of(f"o{k - 1}")))
        for k, spec in enumerate(layers, 1)
        if isinstance(spec, dict) and spec.get("type") in GATE_TYPES and k > 1
    ]


def find_gates(rows: pd.DataFrame) -> list[Gate]:
    """The gates the rows of one run show, by the rule in this module's docstring.

    >>> find_gates(load_trace("traces/golden/article-exact.parquet"))  # doctest: +SKIP
    [Gate(layer=3, type='relu', inputs=('o2_1',))]
    """
    outputs = {
        int(t.name[1:]): t.columns()
        for t in tensors_from_columns(_held(rows, rows.columns))
        if re.fullmatch(r"o\d+", t.name)
    }
    gates = []
    for k, columns in sorted(outputs.items()):
        inputs = outputs.get(k - 1)
        if inputs is None or len(inputs) != len(columns):
            continue
        x, o = (rows[c].to_numpy(np.float64) for c in (inputs, columns))
        kind = _gate_kind(x, o)
        if kind is not None:
            gates.append(Gate(k, kind, tuple(inputs)))
    return gates


def _gate_kind(x: Array, o: Array) -> str | None:
    """Which gate maps inputs ``x`` to outputs ``o`` (rows where both are numbers), if any."""
    seen = ~(np.isnan(x) | np.isnan(o))
    if not seen.any():
        return None
    up, down = seen & (x >= 0), seen & (x < 0)
    passes, ones = bool((o[up] == x[up]).all()), bool((o[up] == 1).all())
    zero = bool((o[down] == 0).all())
    shrunk = bool(((o[down] <= 0) & (o[down] > x[down])).all())  # x < a·x ≤ 0 for 0 < a < 1
    if passes and zero:
        return "relu"
    if passes and shrunk:
        return "leaky_relu"
    return "heaviside" if ones and zero else None


def _frame_gates(df: pd.DataFrame) -> list[Gate]:
    """A gate of each layer that is one in some run of ``df`` (for the columns they show)."""
    found: dict[int, Gate] = {}
    for _, rows in _runs(df):
        for gate in find_gates(rows):
            found.setdefault(gate.layer, gate)
    return [found[k] for k in sorted(found)]


# --- runs side by side ----------------------------------------------------------------------


def compare_at(df: pd.DataFrame, step: int, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The runs side by side at one step: one row per (run, sample), indexed by run.

    ``columns`` are column names, tensors (``w2_after``) or families (``w_after``: every
    layer's). By default the columns that tell what happened: the sample, its loss, each
    gate's input and the δ it lets through (o2 and δ3 in the article), and every parameter
    before and after the update.

    >>> compare_at(df, 2).T  # doctest: +SKIP
    >>> compare_at(df, 2, ["o2_1", "d3", "w2_after"])  # doctest: +SKIP
    """
    key = run_column(df)
    available = [str(c) for c in df.columns]
    if columns is None:
        chosen = [c for c in ("sample", "loss") if c in df.columns]
        for gate in _frame_gates(df):
            chosen += [*gate.inputs, *expand(f"d{gate.layer}", available)]
        chosen += [p.column for which in ("before", "after") for p in _params(available, which)]
    else:
        chosen = [c for name in columns for c in (expand(name, available) or [name])]
    _need(df, *chosen)
    return step_rows(df, step).set_index(key)[chosen]


# --- summaries ------------------------------------------------------------------------------


class _Gates:
    """How often each gate was closed, and which ReLU units stayed closed in the last epoch,
    from chunks of whole steps in recording order."""

    def __init__(self, gates: Sequence[Gate]) -> None:
        self.gates = list(gates)
        self.columns = [c for g in self.gates for c in g.inputs]
        self.names = [n for g in self.gates for n in g.unit_names()]
        self.mortal = np.array([g.can_die for g in self.gates for _ in g.inputs], dtype=bool)
        self.closed_steps = 0
        self.closed_pairs = 0
        self.pairs = 0
        self.epoch: int | None = None
        self.opened = np.zeros(len(self.columns), dtype=bool)  # open on some row of the epoch

    def update(self, rows: pd.DataFrame, step: Array, epoch: Array) -> None:
        if not self.columns:
            return
        closed = ~(rows[self.columns].to_numpy(np.float64) >= 0)  # NaN fails x ≥ 0: closed
        self.closed_steps += len(np.unique(step[closed.any(axis=1)]))
        self.closed_pairs += int(closed.sum())
        self.pairs += closed.size
        starts = group_starts(epoch)
        for lo, hi in zip(starts, [*starts[1:], len(epoch)], strict=True):
            if epoch[lo] != self.epoch:
                self.epoch, self.opened = int(epoch[lo]), np.zeros_like(self.opened)
            self.opened |= (~closed[lo:hi]).any(axis=0)

    def result(self) -> dict[str, Any]:
        dead = [n for n, d in zip(self.names, self.mortal & ~self.opened, strict=True) if d]
        return {
            "gate_closed_steps": self.closed_steps,
            "gate_closed_share": self.closed_pairs / self.pairs if self.pairs else None,
            "dead_units": len(dead) if self.epoch is not None else 0,
            "dead_neurons": ", ".join(dead) if self.epoch is not None else "",
        }


class _RunStats:
    """A run's summary, built from chunks of whole steps in recording order."""

    def __init__(self, steps_per_epoch: int, gates: Sequence[Gate], watched: Sequence[str]) -> None:
        self.tracker = SummaryTracker(max(steps_per_epoch, 1))
        self.gates = _Gates(gates)
        self.watched = list(watched)  # outputs and new parameters: where NaN and inf show
        self.after = [c for c in watched if _PARAM.fullmatch(c)]
        self.first_nonfinite_step: int | None = None
        self.epoch_sums: dict[int, list[float]] = {}

    def update(self, rows: pd.DataFrame) -> None:
        step = rows["step"].to_numpy(np.int64)
        epoch = rows["epoch"].to_numpy(np.int64)
        loss = rows["loss"].to_numpy(np.float64)
        after = [rows[c].to_numpy(np.float64) for c in self.after]
        self.tracker.update({"step": step, "loss": loss}, after)
        self.gates.update(rows, step, epoch)
        if self.first_nonfinite_step is None:
            watched = rows[["loss", *self.watched]].to_numpy(np.float64)
            bad = ~np.isfinite(watched).all(axis=1)
            if bad.any():
                self.first_nonfinite_step = int(step[bad][0])
        starts = group_starts(step)
        for e, mean in zip(epoch[starts], group_means(loss, starts), strict=True):
            sums = self.epoch_sums.setdefault(int(e), [0.0, 0])
            sums[0] += float(mean)
            sums[1] += 1

    def _epoch_mean(self, epoch: int) -> float:
        total, count = self.epoch_sums[epoch]
        return total / count

    def result(self, rtol: float) -> dict[str, Any]:
        s = self.tracker.result()
        epochs = sorted(self.epoch_sums)
        first = self._epoch_mean(epochs[0]) if epochs else None
        last = self._epoch_mean(epochs[-1]) if epochs else None
        diverged = s.diverged_at is not None
        converged = (
            not diverged and first is not None and last is not None and bool(last <= rtol * first)
        )
        return {
            "steps": s.steps,
            "final_loss": s.final_loss,
            "min_loss": s.min_loss,
            "min_loss_step": s.min_loss_step,
            "first_nonfinite_step": self.first_nonfinite_step,
            **self.gates.result(),
            "diverged": diverged,
            "diverged_at": s.diverged_at,
            "diverged_why": s.diverged_why,
            "first_epoch_loss": first,
            "last_epoch_loss": last,
            "converged": converged,
        }


def _summary_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return table
    for name in ("min_loss_step", "first_nonfinite_step", "diverged_at"):
        table[name] = table[name].astype("Int64")
    table["gate_closed_share"] = table["gate_closed_share"].astype(np.float64)
    return table.set_index("run")


def _spe(rows: pd.DataFrame) -> int:
    """Steps of the first epoch present (the run's steps per epoch, given whole runs)."""
    epoch = rows["epoch"].to_numpy(np.int64)
    return int(rows.loc[epoch == epoch[0], "step"].nunique()) if len(rows) else 1


def _watched(columns: Iterable[str]) -> list[str]:
    """Every layer's output and every parameter after the step."""
    names = list(columns)
    return [c for c in names if _OUTPUT.fullmatch(c)] + [p.column for p in _params(names, "after")]


def run_summary(df: pd.DataFrame, rtol: float = CONVERGE_RTOL) -> pd.DataFrame:
    """One row per run, indexed by run: its settings (those the rows carry), steps,
    final_loss, min_loss and min_loss_step, first_nonfinite_step, gate_closed_steps,
    gate_closed_share, dead_units and dead_neurons, diverged with diverged_at/diverged_why,
    first and last epoch's loss, and converged — each defined in this module's docstring.
    Give whole runs (from step 0) with at least ``step, epoch, loss``; the layers' outputs
    (``o{k}_…``) add the gates and the parameters after the step (``w{k}_after_…``,
    ``b{k}_after_…``) the parameters' part of the divergence rule.

    >>> run_summary(load_traces("traces"))[["diverged_at", "converged"]]  # doctest: +SKIP
    """
    _need(df, "step", "epoch", "loss")
    records = []
    for run, rows in _runs(df):
        stats = _RunStats(_spe(rows), find_gates(rows), _watched(_held(rows, rows.columns)))
        stats.update(rows)
        settings = {c: rows[c].iloc[0] for c in SUMMARY_SETTINGS if c in rows.columns}
        records.append({"run": run, **settings, **stats.result(rtol)})
    return _summary_frame(records)


def _summary_columns(trace: Trace) -> list[str]:
    names = set(_column_names(trace))
    outputs = [c for t in trace.tensors if re.fullmatch(r"o\d+", t.name) for c in t.columns()]
    wanted = ["step", "epoch", "loss", "lr", *outputs, *after_columns(trace.tensors)]
    return [c for c in wanted if c in names]


def _step_chunks(trace: Trace, columns: list[str]) -> Iterator[pd.DataFrame]:
    """A run's rows as frames of whole steps, streamed batch by batch through the trace's
    reader (which reads version 1 traces under version 2's names)."""
    pending: pd.DataFrame | None = None
    for batch in trace.iter_batches(columns):
        frame = batch.to_pandas()
        if pending is not None:
            frame = pd.concat([pending, frame], ignore_index=True)
        if frame.empty:
            continue
        step = frame["step"].to_numpy(np.int64)
        cut = int(np.flatnonzero(step == step[-1])[0])
        if cut:
            yield frame.iloc[:cut]
        pending = frame.iloc[cut:]
    if pending is not None and len(pending):
        yield pending


def _trace_record(trace: Trace, rtol: float) -> dict[str, Any]:
    columns = _summary_columns(trace)
    stats = _RunStats(int(trace.meta.get("steps_per_epoch", 1)), trace_gates(trace),
                      _watched(columns))  # fmt: skip
    lr = None
    for rows in _step_chunks(trace, columns):
        if lr is None and "lr" in rows.columns:
            lr = float(rows["lr"].iloc[0])
        stats.update(rows)
    settings = trace.settings()
    return {
        "run": trace.name,
        "numerics": trace.numerics,
        "lr_text": trace.lr_text,
        "lr": lr,
        "batch_size": settings["batch_size"],
        "epochs": settings["epochs"],
        "seed": settings["seed"],
        "model": str((trace.meta.get("model") or {}).get("name", "article")),
        "status": trace.status,
        **stats.result(rtol),
    }


def trace_summaries(
    traces: Iterable[Trace], rtol: float = CONVERGE_RTOL,
    skipped: list[tuple[Path, str]] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """:func:`run_summary` of runs on disk, read a few columns and a batch at a time, so a
    sweep of any size is summarised in little memory. The gates are the models' (from each
    run's metadata). With a ``skipped`` list, a run whose files cannot be read is left out
    and noted there (its path and why); without, it raises.

    >>> runs, problems = steptrace.find_traces("traces")  # doctest: +SKIP
    >>> trace_summaries(runs)  # doctest: +SKIP
    """
    records = []
    for trace in traces:
        try:
            records.append(_trace_record(trace, rtol))
        except SteptraceError as exc:
            if skipped is None:
                raise
            skipped.append((trace.path, str(exc)))
    return _summary_frame(records)


# --- grouping a sweep's runs ---------------------------------------------------------------


def varying_settings(table: pd.DataFrame) -> list[str]:
    """The settings of :data:`GRID_SETTINGS` that take more than one value among ``table``'s
    runs (one row per run, like :func:`trace_summaries`'), in that order.

    >>> varying_settings(trace_summaries(runs))  # doctest: +SKIP
    ['batch_size', 'lr_text']
    """
    return [c for c in GRID_SETTINGS if c in table.columns and table[c].nunique(dropna=False) > 1]


def group_label(run: Any, settings: Sequence[str]) -> str:
    """What sets a run's group apart: its value of each of ``settings`` other than α
    (``batch 2, float32``); ``""`` when there are none. ``run`` maps setting names to values
    (a row of :func:`trace_summaries`, a dict)."""
    names = {"batch_size": "batch {}", "seed": "seed {}", "model": "model {}", "numerics": "{}"}
    return ", ".join(names[k].format(_plain_value(run.get(k))) for k in settings if k in names)


def _plain_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return value.item() if hasattr(value, "item") else value


def group_runs(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (one row per run) with its runs grouped by every setting that varies and in
    order of α within each group, and a ``group`` column labelling each run's group
    (:func:`group_label`; ``""`` when only α varies).

    >>> group_runs(trace_summaries(runs))[["group", "lr_text", "final_loss"]]  # doctest: +SKIP
    """
    if table.empty:
        return table.assign(group=pd.Series(dtype=str))
    varying = [k for k in varying_settings(table) if k != "lr_text"]

    def key(i: int) -> tuple[Any, ...]:
        row = table.iloc[i]
        # Missing values (a run without a seed) first; numbers as numbers, α by its value.
        values = [(_plain_value(row[k]) != "-", _plain_value(row[k])) for k in varying]
        lr = float(parse_exact(str(row["lr_text"]))) if "lr_text" in table.columns else 0.0
        return (*values, lr, str(table.index[i]))

    order = sorted(range(len(table)), key=key)
    grouped = table.iloc[order].copy()
    grouped["group"] = [group_label(row, varying) for _, row in grouped.iterrows()]
    return grouped


# --- a sweep for other engines --------------------------------------------------------------

_SETTING_TYPES = pa.schema(
    [
        ("run", pa.string()),
        ("lr_text", pa.string()),
        ("epochs", pa.int64()),
        ("shuffle", pa.bool_()),
        ("seed", pa.int64()),
        ("status", pa.string()),
    ]
)


def _settings_expression(trace: Trace) -> pc.Expression:
    settings = trace.settings()
    known = [pc.field(k) == settings[k] for k in VIRTUAL_SETTINGS if settings[k] is not None]
    expression = known[0]
    for condition in known[1:]:
        expression = expression & condition
    return expression


def _in_memory(trace: Trace, schema: pa.Schema) -> pa.Table:
    """A version 1 run read through its reader (its weights under version 2's names), its
    settings added as columns, in ``schema``'s columns."""
    table = trace.read_table()
    settings = trace.settings()
    for name in VIRTUAL_SETTINGS:
        table = table.append_column(
            name, pa.array([settings[name]] * table.num_rows, _SETTING_TYPES.field(name).type)
        )
    missing = [f for f in schema if f.name not in table.column_names]
    for f in missing:
        table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    return table.select(schema.names).cast(schema)


def sweep_dataset(folder: str | Path, filters: Filters = None) -> pads.Dataset:
    """Every run under ``folder`` as one pyarrow dataset of the columns its files store (the
    values stored once — δ1, ``grad_b{k}``, the parameters before a step — are not in it:
    :func:`load_traces` puts them back): the runs' schemas unified by name
    (columns a run lacks — ``x_3``, ``*_exact``, another model's layers — are null there) and
    its settings that are not in the files (``run``, ``lr_text``, ``epochs``, ``shuffle``,
    ``seed``, ``status``) added as columns from metadata. Filters on those prune whole runs
    without opening their files; ``filters`` on settings drop runs before the dataset is
    built. Version 1 runs (written before layer stacks) name their weights otherwise in their
    files: they are read into memory, under version 2's names.

    DuckDB queries it by name, Polars through ``pl.scan_pyarrow_dataset``, both pushing
    filters and columns down to the files.

    >>> sweep = sweep_dataset("traces")  # doctest: +SKIP
    >>> duckdb.sql("SELECT run, max(step) FROM sweep GROUP BY run")  # doctest: +SKIP
    """
    traces, problems = find_traces(folder, filters)
    if problems:
        raise TraceError(problems[0][1])
    # What the files store: the values stored once (docs/trace-format.md) are left out, of
    # version 1 runs too, so that no run shows them as nulls.
    once = {c for t in traces if t.files for c in t.rebuilt().columns}
    schemas = [
        pa.schema([f for f in trace.schema().remove_metadata() if f.name not in once])
        for trace in traces
        if trace.files
    ]
    try:
        unified = pa.unify_schemas([*schemas, _SETTING_TYPES])
    except pa.ArrowException as exc:
        raise TraceError(f"{folder}: the runs' columns cannot be unified ({exc})") from None
    # A run without a column holds nulls there.
    schema = pa.schema([f.with_nullable(True) for f in unified])
    files, parts = [], []
    for trace in (t for t in traces if not t.v1):
        files += [str(f) for f in trace.files]
        parts += [_settings_expression(trace)] * len(trace.files)
    on_disk = pads.FileSystemDataset.from_paths(
        files,
        schema=schema,
        format=pads.ParquetFileFormat(),
        filesystem=pafs.LocalFileSystem(),
        partitions=parts,
    )
    old = [_in_memory(t, schema) for t in traces if t.v1 and t.files]
    if not old:
        return on_disk
    return pads.dataset([on_disk, pads.InMemoryDataset(pa.concat_tables(old), schema=schema)])


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


@pd.api.extensions.register_dataframe_accessor("steptrace")
class SteptraceAccessor:
    """``df.steptrace``: this module's functions as methods of a frame of trace rows.

    >>> df.steptrace.summary()  # doctest: +SKIP
    >>> df.steptrace.compare(2)  # doctest: +SKIP
    """

    def __init__(self, df: pd.DataFrame) -> None:
        self._df = df

    def step(self, step: int) -> pd.DataFrame:
        """See :func:`step_rows`."""
        return step_rows(self._df, step)

    def summary(self, rtol: float = CONVERGE_RTOL) -> pd.DataFrame:
        """See :func:`run_summary`."""
        return run_summary(self._df, rtol)

    def batch_loss(self) -> pd.DataFrame:
        """See :func:`batch_loss`."""
        return batch_loss(self._df)

    def epoch_loss(self, per: str = "step") -> pd.DataFrame:
        """See :func:`epoch_loss`."""
        return epoch_loss(self._df, per)

    def weights(self, which: str = "after") -> pd.DataFrame:
        """See :func:`weights_long`."""
        return weights_long(self._df, which)

    def gates(self) -> dict[Any, list[Gate]]:
        """Each run's gates, by run; see :func:`find_gates`."""
        return {run: find_gates(rows) for run, rows in _runs(self._df)}

    def compare(self, step: int, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """See :func:`compare_at`."""
        return compare_at(self._df, step, columns)
