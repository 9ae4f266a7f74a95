"""Runs by learning rate: how each one ended, to choose α from a sweep.

Each run's outcome is :func:`steptrace.analysis.trace_summaries`' row for it (final and
lowest batch loss, divergence, convergence), the same numbers ``steptrace summary`` prints;
:func:`lr_sweep` lines the chosen runs up by α, in groups by every other setting that varies
between them (a grid of α × batch sizes: loss against α, one line per batch size).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..analysis import group_label, trace_summaries
from ..numerics import parse_exact
from ..trace.reader import Trace

#: The sweep table's columns, as the page shows them; a column for each of :data:`GROUPED`
#: that varies between the runs follows α.
COLUMNS = ["run", "α", "numerics", "final loss", "lowest loss", "at step", "diverged at", "status"]
#: The settings other than α that group a sweep's runs, and their columns in the table.
GROUPED = {"model": "model", "numerics": "numerics", "batch_size": "batch", "seed": "seed"}


def run_settings(trace: Trace) -> dict[str, Any]:
    """The settings a sweep lines runs up by, as :func:`run_outcome` gives them."""
    return {
        "lr_text": trace.lr_text,
        "lr": None,
        "numerics": trace.numerics,
        "batch_size": int(trace.meta["batch_size"]),
        "seed": trace.meta.get("seed"),
        "model": str((trace.meta.get("model") or {}).get("name", "article")),
        "status": trace.status,
    }


def run_outcome(trace: Trace) -> dict[str, Any]:
    """How one run ended (see :func:`lr_sweep`): for a run that has ended, what its recorder
    stored when it did (no rows read, so a sweep of long runs lines up at once); else its
    summary row, computed from its rows."""
    if trace.summary is not None:
        stored = trace.summary
        return {
            **run_settings(trace),
            **{k: stored.get(k) for k in ("final_loss", "min_loss", "min_loss_step")},
            "diverged": stored.get("diverged_at") is not None,
            "diverged_at": stored.get("diverged_at"),
        }
    row = trace_summaries([trace]).iloc[0]
    return {str(k): v for k, v in row.items()}


@dataclass(frozen=True)
class SweepView:
    """The chosen runs by learning rate: ``table`` (:data:`COLUMNS` and the settings that
    vary, by group then α), ``points`` for the chart (``run``, ``lr``, ``loss``, ``which``:
    final or lowest, ``group``: what sets the run's group apart, e.g. ``batch 2``, ``""`` when
    only α varies; finite losses only), ``diverged`` (``run``, ``lr``, ``why``), ``groups``
    (the group labels, in order) and a one-line ``note``."""

    table: pd.DataFrame
    points: pd.DataFrame
    diverged: pd.DataFrame
    note: str
    groups: tuple[str, ...] = ("",)


def _lr(outcome: Mapping[str, Any]) -> float:
    lr = outcome.get("lr")
    if lr is None or (isinstance(lr, float) and math.isnan(lr)):
        return float(parse_exact(str(outcome["lr_text"])))
    return float(lr)


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _int_or_dash(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else str(int(value))


def _varying(outcomes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The settings of :data:`GROUPED` whose values differ between the runs (a setting an
    outcome does not give counts as one value)."""
    return [k for k in GROUPED if len({repr(o.get(k)) for o in outcomes.values()}) > 1]


def _group_key(outcome: Mapping[str, Any], varying: list[str]) -> tuple[Any, ...]:
    return tuple((outcome.get(k) is not None, outcome.get(k) or 0) for k in varying)


def lr_sweep(outcomes: Mapping[str, Mapping[str, Any]]) -> SweepView | None:
    """Line up runs by α, grouped by every other setting that varies; None unless they have
    at least two different learning rates.

    >>> view = lr_sweep({key: run_outcome(trace) for key, trace in runs.items()})  # doctest: +SKIP
    >>> view.note  # doctest: +SKIP
    'Lowest final loss: α = 1e-8 (sweep-2), 0.0138. Diverged: 1 of 3 runs.'
    """
    varying = _varying(outcomes)
    rows = sorted(
        ((_lr(o), key, o) for key, o in outcomes.items()),
        key=lambda r: (_group_key(r[2], varying), r[0], r[1]),
    )
    if len({lr for lr, _, _ in rows}) < 2:
        return None
    label = {key: group_label(o, varying) for _, key, o in rows}
    extra = [k for k in varying if k != "numerics"]  # numerics has its column already
    table = pd.DataFrame(
        [
            [
                key,
                str(o["lr_text"]),
                *(_cell(o.get(k)) for k in extra),
                str(o["numerics"]),
                _float(o["final_loss"]),
                _float(o["min_loss"]),
                _int_or_dash(o["min_loss_step"]),
                _int_or_dash(o["diverged_at"]),
                str(o["status"]),
            ]
            for _, key, o in rows
        ],
        columns=[*COLUMNS[:2], *(GROUPED[k] for k in extra), *COLUMNS[2:]],
    )
    points = pd.DataFrame(
        [
            {"run": key, "lr": lr, "loss": _float(o[column]), "which": which, "group": label[key]}
            for lr, key, o in rows
            for column, which in (("final_loss", "final loss"), ("min_loss", "lowest loss"))
            if math.isfinite(_float(o[column]))
        ],
        columns=["run", "lr", "loss", "which", "group"],
    )
    diverged = pd.DataFrame(
        [
            {"run": key, "lr": lr, "why": _why(o, label[key])}
            for lr, key, o in rows
            if bool(o["diverged"])
        ],
        columns=["run", "lr", "why"],
    )
    groups = tuple(dict.fromkeys(label[key] for _, key, _ in rows))
    return SweepView(table, points, diverged, _note(rows, label), groups)


def _why(outcome: Mapping[str, Any], group: str) -> str:
    why = f"diverges at step {int(outcome['diverged_at'])}"
    return f"{why} ({group})" if group else why


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _note(rows: list[tuple[float, str, Mapping[str, Any]]], label: Mapping[str, str]) -> str:
    healthy = [
        (_float(o["final_loss"]), key, o)
        for _, key, o in rows
        if not bool(o["diverged"]) and math.isfinite(_float(o["final_loss"]))
    ]
    parts = []
    if healthy:
        loss, key, o = min(healthy, key=lambda h: h[0])
        where = f"α = {o['lr_text']}" + (f", {label[key]}" if label[key] else "")
        parts.append(f"Lowest final loss: {where} ({key}), {loss:.6g}.")
    else:
        parts.append("No run ends with a finite loss.")
    diverged = sum(bool(o["diverged"]) for _, _, o in rows)
    if diverged:
        parts.append(f"Diverged: {diverged} of {len(rows)} runs.")
    return " ".join(parts)
