"""Run summaries: one row per run (final and least loss, the first non-finite step, the gates,
divergence and convergence), from a frame of rows or streamed from a sweep's files on disk.

Each column is defined in :mod:`steptrace.analysis`' docstring.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SteptraceError
from ..trace.keep import RECORD_KEY
from ..trace.loader import _column_names
from ..trace.reader import Trace
from ..trace.scalars import load_scalars
from ..trace.schema import after_columns
from ..trace.summary import SummaryTracker, group_means, group_starts
from .gates import Gate, _Gates, find_gates, trace_gates
from .rows import _held, _need, _runs
from .weights import _PARAM, _params

#: A run converged if its last epoch's loss is at most this fraction of its first epoch's.
CONVERGE_RTOL = 1e-3
#: Settings copied into :func:`run_summary`'s table when the rows carry them.
SUMMARY_SETTINGS = ("numerics", "lr_text", "lr", "batch_size", "epochs", "status")

_OUTPUT = re.compile(r"o(\d+)(_\d+)+")


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
        **(_of_every_step(trace) if RECORD_KEY in trace.meta else {}),
    }


def _of_every_step(trace: Trace) -> dict[str, Any]:
    """A run that holds some steps: its figures of every step from the per-step figures and
    the recorder's summary, not from the steps it holds."""
    figures = load_scalars(trace.path)
    loss = figures["loss"].to_numpy()
    steps = figures["step"].to_numpy()
    bad = ~np.isfinite(loss) | (figures.filter(like="nonfinite").sum(axis=1).to_numpy() > 0)
    finite = np.isfinite(loss)
    best = int(np.argmin(np.where(finite, loss, np.inf))) if finite.any() else None
    recorded = trace.summary or {}
    return {
        "steps": len(figures),
        "final_loss": float(loss[-1]) if len(loss) else None,
        "min_loss": None if best is None else float(loss[best]),
        "min_loss_step": None if best is None else int(steps[best]),
        "first_nonfinite_step": int(steps[bad][0]) if bad.any() else None,
        "diverged": recorded.get("diverged_at") is not None,
        "diverged_at": recorded.get("diverged_at"),
        "diverged_why": recorded.get("diverged_why"),
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
