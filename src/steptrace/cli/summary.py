"""``steptrace summary``: one line per run of a folder, whatever its model — how it ended,
where its gates closed, whether it diverged or converged."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
import pandas as pd

from ..analysis import CONVERGE_RTOL, group_runs, trace_summaries, varying_settings
from ..errors import TraceError
from ..numerics import format_value
from ..trace.loader import find_traces
from ..trace.why import first_nonfinite
from ..trace.writer import strict_json

#: Columns of the plain-text table (``--csv`` and ``--json`` have them all), and the model and
#: seed when they vary between the runs.
SHOWN = (
    "numerics",
    "lr_text",
    "batch_size",
    "steps",
    "final_loss",
    "min_loss",
    "min_loss_step",
    "first_nonfinite_step",
    "gate_closed_steps",
    "dead_units",
    "diverged_at",
    "converged",
)
HEADERS = {
    "lr_text": "lr",
    "batch_size": "batch",
    "min_loss_step": "at step",
    "first_nonfinite_step": "first NaN/inf",
    "gate_closed_steps": "gate closed",
    "dead_units": "dead",
    "diverged_at": "diverged at",
}


def _plain(value: Any) -> Any:
    """A table cell as a JSON value: NaN and pandas' NA become null, numpy scalars Python's."""
    if value is None or value is pd.NA:
        return None
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _json(value: Any) -> Any:
    """A cell for ``--json``, strict JSON: missing values null, infinities as the texts
    ``_run.json`` writes them in."""
    return strict_json(_plain(value))


def _text(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format_value(value) if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def whole_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its seeds as whole numbers, None where a run has none: a gap in the
    column made pandas turn the others into floats (3640109954 shown as 3.64011e+09, written
    3640109954.0, and grouped as "seed 3640109954.0")."""
    if "seed" not in table.columns:
        return table
    seeds = [None if pd.isna(seed) else int(seed) for seed in table["seed"]]
    return table.assign(seed=pd.Series(seeds, index=table.index, dtype=object))


def _name(run: Any, row: pd.Series) -> str:
    status = row.get("status", "complete")
    return str(run) if status == "complete" else f"{run} ({status})"


def shown(table: pd.DataFrame) -> list[str]:
    """The text table's columns: :data:`SHOWN`, with the model first and the seed after the
    batch size when they vary between the runs."""
    varying = varying_settings(table)
    columns = list(SHOWN)
    if "seed" in varying:
        columns.insert(columns.index("batch_size") + 1, "seed")
    if "model" in varying:
        columns.insert(0, "model")
    return columns


def format_table(table: pd.DataFrame) -> str:
    """The summary as an aligned text table, one line per run."""
    columns = shown(table)
    header = ["run", *(HEADERS.get(c, c.replace("_", " ")) for c in columns)]
    rows = [[_name(run, r), *(_text(r[c]) for c in columns)] for run, r in table.iterrows()]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


@click.command("summary")
@click.argument("folder", type=click.Path(path_type=Path), default=Path("traces"))
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV, every column.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, every column.")
@click.option(
    "--rtol",
    type=float,
    default=CONVERGE_RTOL,
    show_default=True,
    help="Converged: last epoch's loss at most RTOL × the first epoch's.",
)
def command(folder: Path, as_csv: bool, as_json: bool, rtol: float) -> None:
    """Print one line per run in FOLDER, for any stack of layers: final and minimum loss, the
    first step with NaN/inf, the steps where a gate (a relu, leaky_relu or heaviside layer)
    was closed for some sample, the ReLU units dead in the last epoch, where it diverged,
    whether it converged (see docs/analysis.md for the exact rules). Runs are grouped by
    every setting that varies between them (model, numerics, batch size, seed) and ordered
    by α within a group. --csv and --json add the share of closed gates, the dead units'
    names and each run's group. Unreadable runs are reported and skipped.

    \b
    Example:
        steptrace record --numerics float64 --lr 1 --lr 1e-7 --batch-size 1 --batch-size 3 \\
            --epochs 20 --out sweep
        steptrace summary sweep --csv > sweep.csv
    """
    if as_csv and as_json:
        raise click.UsageError("choose one of --csv and --json")
    traces, problems = find_traces(folder)
    summaries = trace_summaries(traces, rtol, skipped=problems)
    for path, message in problems:
        click.echo(f"Skipped {path}: {message}", err=True)
    if not traces:
        raise TraceError(f"no runs in {str(folder)!r}; record some with 'steptrace record'")
    if summaries.empty:
        raise TraceError(f"no readable runs in {str(folder)!r}: each was skipped (above)")
    table = group_runs(whole_seeds(summaries))
    if as_csv:
        click.echo(table.to_csv(), nl=False)
    elif as_json:
        records = [
            {"run": str(run), **{str(k): _json(v) for k, v in row.items()}}
            for run, row in table.iterrows()
        ]
        click.echo(json.dumps(records, indent=2, ensure_ascii=False, allow_nan=False))
    else:
        click.echo(format_table(table))
        # Each run that went non-finite: its first such value (steptrace why RUN says more).
        frame = summaries if "run" in summaries.columns else summaries.reset_index()
        for trace in traces:
            found = frame[frame["run"] == trace.name]["first_nonfinite_step"]
            if len(found) and not pd.isna(found.iloc[0]):
                click.echo(f"{trace.name}: {first_nonfinite(trace).headline()}")
