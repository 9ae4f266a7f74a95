"""Analysing traces with pandas: the common questions about a run or a sweep, one function each.

Every function takes a DataFrame of trace rows — from :func:`~steptrace.load_traces`,
``pandas.read_parquet(folder)``, or DuckDB/Polars ``.to_pandas()`` — and is also reachable as
``df.steptrace.<name>``, the accessor this module registers when imported::

    >>> import steptrace, steptrace.analysis
    >>> df = steptrace.load_traces("traces")  # doctest: +SKIP
    >>> df.steptrace.summary()  # doctest: +SKIP

Runs are told apart by the ``run`` column (the run folder's name, added by ``load_traces``) or,
failing that, by ``run_id`` (on every row of every part file).

Definitions, used throughout:

- A step's *batch loss* is the mean of its samples' losses (as in :mod:`steptrace.trace.summary`).
- An epoch's loss is the mean of its steps' batch losses (``per="step"``, the default) or of
  its samples' losses (``per="sample"``); they differ only when the last batch is short.
  NaN and ±inf are never skipped: an epoch with one NaN loss has a NaN loss.
- A run *diverged* by :mod:`steptrace.trace.summary`'s rule: at the first step whose batch loss
  or new weights are not finite, or whose batch loss exceeds ``BLOWUP_FACTOR`` times the largest
  batch loss of the first epoch.
- A run *converged* if it did not diverge and the loss of its last epoch is at most ``rtol``
  (:data:`CONVERGE_RTOL`, a thousandth) times the loss of its first epoch. A run stuck where it
  started (a closed ReLU gate teaches nothing) has not converged; a one-epoch run converged only
  if its loss was 0 throughout.
- The ReLU gate of a sample is *closed* when o2 < 0 (then δ3 = 0 and it teaches nothing), or
  when o2 is NaN — the model's rule is "open if o2 >= 0", which NaN fails too. A step counts
  as gate-closed when the gate is closed for at least one sample of its batch.
- The first non-finite step is the first whose loss, o2 or new weights are NaN or ±inf.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from .errors import TraceError
from .trace.schema import after_columns
from .trace.reader import Filters, Trace, _column_names, find_traces
from .trace.summary import SummaryTracker, group_means, group_starts

__all__ = [
    "CONVERGE_RTOL",
    "SteptraceAccessor",
    "batch_loss",
    "compare_at",
    "epoch_loss",
    "run_column",
    "run_summary",
    "step_rows",
    "sweep_dataset",
    "trace_summaries",
    "weights_long",
]

#: A run converged if its last epoch's loss is at most this fraction of its first epoch's.
CONVERGE_RTOL = 1e-3

#: Settings that :func:`sweep_dataset` adds as columns (from metadata, not from the files).
VIRTUAL_SETTINGS = ("run", "lr_text", "epochs", "shuffle", "seed", "status")
#: Settings copied into :func:`run_summary`'s table when the rows carry them.
SUMMARY_SETTINGS = ("numerics", "lr_text", "lr", "batch_size", "epochs", "status")

Array = npt.NDArray[Any]


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


def _weight_columns(columns: Iterable[Any], which: str = "w_after") -> list[str]:
    prefix = f"{which}_"
    found = [
        str(c) for c in columns if str(c).startswith(prefix) and str(c)[len(prefix) :].isdigit()
    ]
    return sorted(found, key=lambda c: int(c[len(prefix) :]))


def step_rows(df: pd.DataFrame, step: int) -> pd.DataFrame:
    """The rows of one step, of every run in ``df`` (one row per sample of its batch).

    >>> step_rows(df, 2)[["run", "o2_1", "loss", "d3_1"]]  # doctest: +SKIP
    """
    _need(df, "step")
    return df[df["step"] == step]


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


def weights_long(df: pd.DataFrame, which: str = "w_after") -> pd.DataFrame:
    """The weights' trajectory in long form, ready to plot: ``step, run, k, w`` with one row per
    (run, step, weight k), k counted from 1. ``which="w_before"`` gives the weights each step
    started from.

    >>> w = weights_long(df)  # doctest: +SKIP
    >>> w[w.k == 2].pivot(index="step", columns="run", values="w").plot()  # doctest: +SKIP
    """
    cols = _weight_columns(df.columns, which)
    if not cols:
        raise TraceError(f"these rows have no {which}_k columns; load them too")
    key = run_column(df)
    frames = []
    for run, rows in _runs(df):
        first = rows.drop_duplicates("step")  # every row of a step holds the same weights
        values = first[cols].to_numpy(np.float64)
        n_steps, n = values.shape
        frames.append(
            pd.DataFrame(
                {
                    "step": np.repeat(first["step"].to_numpy(np.int64), n),
                    key: run,
                    "k": np.tile(np.arange(1, n + 1), n_steps),
                    "w": values.reshape(-1),
                }
            )
        )
    out = _concat(frames, ["step", key, "k", "w"])
    return out.rename(columns={key: "run"}) if key != "run" else out


def compare_at(df: pd.DataFrame, step: int, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The runs side by side at one step: one row per (run, sample), indexed by run.

    By default the columns that tell what happened: the sample, its loss, o2 (the gate), δ3,
    and the weights before and after the update.

    >>> compare_at(df, 2).T  # doctest: +SKIP
    """
    key = run_column(df)
    if columns is None:
        columns = (
            [c for c in ("sample", "loss", "o2_1", "d3_1") if c in df.columns]
            + _weight_columns(df.columns, "w_before")
            + _weight_columns(df.columns, "w_after")
        )
    _need(df, *columns)
    rows = step_rows(df, step)
    return rows.set_index(key)[list(columns)]


class _RunStats:
    """A run's summary, built from chunks of whole steps in recording order."""

    def __init__(self, steps_per_epoch: int) -> None:
        self.tracker = SummaryTracker(max(steps_per_epoch, 1))
        self.gate_closed_steps = 0
        self.first_nonfinite_step: int | None = None
        self.epoch_sums: dict[int, list[float]] = {}

    def update(self, rows: pd.DataFrame) -> None:
        step = rows["step"].to_numpy(np.int64)
        loss = rows["loss"].to_numpy(np.float64)
        w_cols = _weight_columns(rows.columns)
        w = [rows[c].to_numpy(np.float64) for c in w_cols]
        self.tracker.update({"step": step, "loss": loss}, w)
        starts = group_starts(step)
        if "o2_1" in rows.columns:
            o2 = rows["o2_1"].to_numpy(np.float64)
            self.gate_closed_steps += len(np.unique(step[~(o2 >= 0)]))
        if self.first_nonfinite_step is None:
            watched = rows[["loss", *w_cols, *(["o2_1"] if "o2_1" in rows.columns else [])]]
            bad = ~np.isfinite(watched.to_numpy(np.float64)).all(axis=1)
            if bad.any():
                self.first_nonfinite_step = int(step[bad][0])
        means = group_means(loss, starts)
        for epoch, mean in zip(rows["epoch"].to_numpy(np.int64)[starts], means, strict=True):
            sums = self.epoch_sums.setdefault(int(epoch), [0.0, 0])
            sums[0] += float(mean)
            sums[1] += 1

    def result(self, rtol: float) -> dict[str, Any]:
        s = self.tracker.result()
        first = last = None
        if self.epoch_sums:
            epochs = sorted(self.epoch_sums)
            first = self.epoch_sums[epochs[0]][0] / self.epoch_sums[epochs[0]][1]
            last = self.epoch_sums[epochs[-1]][0] / self.epoch_sums[epochs[-1]][1]
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
            "gate_closed_steps": self.gate_closed_steps,
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
    return table.set_index("run")


def _spe(rows: pd.DataFrame) -> int:
    """Steps of the first epoch present (the run's steps per epoch, given whole runs)."""
    epoch = rows["epoch"].to_numpy(np.int64)
    return int(rows.loc[epoch == epoch[0], "step"].nunique()) if len(rows) else 1


def run_summary(df: pd.DataFrame, rtol: float = CONVERGE_RTOL) -> pd.DataFrame:
    """One row per run, indexed by run: its settings (those the rows carry), steps,
    final_loss, min_loss and min_loss_step, first_nonfinite_step, gate_closed_steps, diverged
    with diverged_at/diverged_why, first and last epoch's loss, and converged — each defined in
    this module's docstring. Give whole runs (from step 0) with at least ``step, epoch, loss``;
    ``o2_1`` and ``w_after_k`` add the gate count and the weights' part of the divergence rule.

    >>> run_summary(load_traces("traces"))[["diverged_at", "converged"]]  # doctest: +SKIP
    """
    _need(df, "step", "epoch", "loss")
    records = []
    for run, rows in _runs(df):
        stats = _RunStats(_spe(rows))
        stats.update(rows)
        settings = {c: rows[c].iloc[0] for c in SUMMARY_SETTINGS if c in rows.columns}
        records.append({"run": run, **settings, **stats.result(rtol)})
    return _summary_frame(records)


def _summary_columns(trace: Trace) -> list[str]:
    names = set(_column_names(trace))
    wanted = ["step", "epoch", "loss", "lr", "o2_1", *after_columns(trace.tensors)]
    return [c for c in wanted if c in names]


def _step_chunks(trace: Trace, columns: list[str]) -> Iterator[pd.DataFrame]:
    """A run's rows as frames of whole steps, streamed batch by batch."""
    pending: pd.DataFrame | None = None
    for f in trace.files:
        try:
            batches = pads.dataset(str(f), format="parquet").to_batches(columns=columns)
            for batch in batches:
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
        except (OSError, pa.ArrowException) as exc:
            raise TraceError(f"{f}: unreadable part file ({exc})") from None
    if pending is not None and len(pending):
        yield pending


def trace_summaries(traces: Iterable[Trace], rtol: float = CONVERGE_RTOL) -> pd.DataFrame:
    """:func:`run_summary` of runs on disk, read a few columns and a batch at a time, so a
    sweep of any size is summarised in little memory.

    >>> runs, problems = steptrace.find_traces("traces")  # doctest: +SKIP
    >>> trace_summaries(runs)  # doctest: +SKIP
    """
    records = []
    for trace in traces:
        stats = _RunStats(int(trace.meta.get("steps_per_epoch", 1)))
        lr = None
        for rows in _step_chunks(trace, _summary_columns(trace)):
            if lr is None and "lr" in rows.columns:
                lr = float(rows["lr"].iloc[0])
            stats.update(rows)
        settings = trace.settings()
        records.append(
            {
                "run": trace.name,
                "numerics": trace.numerics,
                "lr_text": trace.lr_text,
                "lr": lr,
                "batch_size": settings["batch_size"],
                "epochs": settings["epochs"],
                "status": trace.status,
                **stats.result(rtol),
            }
        )
    return _summary_frame(records)


def sweep_dataset(folder: str | Path, filters: Filters = None) -> pads.Dataset:
    """Every run under ``folder`` as one pyarrow dataset: the runs' schemas unified by name
    (columns a run lacks — ``x_3``, ``*_exact`` — are null there) and its settings that are not
    in the files (``run``, ``lr_text``, ``epochs``, ``shuffle``, ``seed``, ``status``) added as
    columns from metadata. Filters on those prune whole runs without opening their files;
    ``filters`` on settings drop runs before the dataset is built.

    DuckDB queries it by name, Polars through ``pl.scan_pyarrow_dataset``, both pushing
    filters and columns down to the files.

    >>> sweep = sweep_dataset("traces")  # doctest: +SKIP
    >>> duckdb.sql("SELECT run, max(step) FROM sweep GROUP BY run")  # doctest: +SKIP
    """
    traces, problems = find_traces(folder, filters)
    if problems:
        raise TraceError(problems[0][1])
    files, parts, schemas = [], [], []
    for trace in traces:
        settings = trace.settings()
        known = [pc.field(k) == settings[k] for k in VIRTUAL_SETTINGS if settings[k] is not None]
        expression = known[0]
        for condition in known[1:]:
            expression = expression & condition
        for f in trace.files:
            files.append(str(f))
            parts.append(expression)
        if trace.files:
            schemas.append(trace.schema().remove_metadata())
    extra = pa.schema(
        [
            ("run", pa.string()),
            ("lr_text", pa.string()),
            ("epochs", pa.int64()),
            ("shuffle", pa.bool_()),
            ("seed", pa.int64()),
            ("status", pa.string()),
        ]
    )
    try:
        schema = pa.unify_schemas([*schemas, extra])
    except pa.ArrowException as exc:
        raise TraceError(f"{folder}: the runs' columns cannot be unified ({exc})") from None
    return pads.FileSystemDataset.from_paths(
        files,
        schema=schema,
        format=pads.ParquetFileFormat(),
        filesystem=pafs.LocalFileSystem(),
        partitions=parts,
    )


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

    def weights(self, which: str = "w_after") -> pd.DataFrame:
        """See :func:`weights_long`."""
        return weights_long(self._df, which)

    def compare(self, step: int, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """See :func:`compare_at`."""
        return compare_at(self._df, step, columns)
