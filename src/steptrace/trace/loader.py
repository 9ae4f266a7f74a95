"""Finding and loading many runs: every run under a folder, and runs read into pandas.

:func:`find_traces` lists the runs it could not open beside the ones it could, so one bad run
never hides the others; :func:`load_trace` and :func:`load_traces` read only the columns and
row groups asked for, and choose runs by their settings before opening any of their files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import SteptraceError, TraceError
from .filters import Filters
from .opener import PART_NAME, open_trace
from .reader import Trace
from .selection import RUN_SETTINGS, choose, chosen
from .writer import RUN_FILE

__all__ = ["find_traces", "is_folder_of_runs", "load_trace", "load_traces"]


def is_folder_of_runs(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding runs, rather than one run's own folder or file."""
    path = Path(path)
    if not path.is_dir() or (path / RUN_FILE).exists():
        return False
    return not any(PART_NAME.fullmatch(p.name) for p in path.glob("*.parquet"))


def _hidden(p: Path) -> bool:
    return p.name.startswith(("_", "."))


def find_traces(
    folder: str | Path, filters: Filters = None
) -> tuple[list[Trace], list[tuple[Path, str]]]:
    """Every run under ``folder`` (searched recursively), and the paths that could not be
    opened with the reason why — so one bad run never hides the others.

    ``filters`` keeps only the runs whose settings
    (:data:`~steptrace.trace.selection.RUN_SETTINGS`) may pass them, read from each run's
    metadata; conditions on other columns are ignored here.

    >>> runs, problems = find_traces("traces", [("numerics", "==", "exact")])  # doctest: +SKIP
    """
    folder = Path(folder)
    if not folder.exists():
        raise TraceError(f"no folder {str(folder)!r}")
    if not folder.is_dir() or (folder / RUN_FILE).exists():
        return chosen([open_trace(folder)], filters), []

    def visible(p: Path) -> bool:
        return not any(part.startswith(("_", ".")) for part in p.relative_to(folder).parts[:-1])

    files = [p for p in folder.rglob("*.parquet") if visible(p) and not _hidden(p)]
    run_dirs = {p.parent for p in folder.rglob(RUN_FILE) if visible(p)}
    run_dirs |= {p.parent for p in files if PART_NAME.fullmatch(p.name)}
    # Any other Parquet file (a golden, an exported trace) is a run of its own.
    loose = [p for p in files if p.parent not in run_dirs]
    traces, problems = [], []
    for path in sorted([*run_dirs, *loose]):
        try:
            traces.append(open_trace(path))
        except SteptraceError as exc:
            problems.append((path, str(exc)))
    return chosen(traces, filters), problems


def load_trace(
    path: str | Path, columns: Sequence[str] | None = None, filters: Filters = None
) -> pd.DataFrame:
    """One run as a DataFrame: one row per (step, sample), value columns float64.

    Only ``columns`` are read, and only the row groups that ``filters`` may match (their step,
    epoch and sample statistics decide), so one step of a huge run loads in a blink.
    ``filters`` are pyarrow's: an expression or ``[(column, op, value), …]``; conditions on
    run settings (:data:`~steptrace.trace.selection.RUN_SETTINGS`: ``run``, ``lr_text`` …) are
    decided from metadata.

    >>> df = load_trace("traces/golden/article-exact.parquet")  # doctest: +SKIP
    >>> df.loc[df.step == 2, ["o2_1", "loss", "d3_1"]]  # doctest: +SKIP
    >>> load_trace("traces/big", ["step", "loss"], [("step", "==", 123_456)])  # doctest: +SKIP
    """
    trace = open_trace(path)
    keep, row_filter = choose(trace, filters)
    if keep:
        return trace.read(columns, row_filter)
    empty: pd.DataFrame = trace.read_table(columns, pc.scalar(False)).to_pandas()
    return empty


def _column_names(trace: Trace) -> list[str]:
    try:
        return list(trace.schema().names)
    except (OSError, pa.ArrowException) as exc:
        raise TraceError(f"{trace.files[0]}: unreadable part file ({exc})") from None


def load_traces(
    folder: str | Path, columns: Sequence[str] | None = None, filters: Filters = None
) -> pd.DataFrame:
    """Every run in ``folder`` as one DataFrame, each run's settings (run, numerics, lr_text,
    batch_size, epochs, shuffle, seed, status) added as columns. Raises on the first run that
    cannot be read; use :func:`find_traces` to skip bad ones.

    Conditions of ``filters`` on run settings (:data:`~steptrace.trace.selection.RUN_SETTINGS`)
    choose runs from their metadata, so the other runs' files are never opened; the rest go to
    the chosen runs' files (see :func:`load_trace`). ``columns`` may name setting columns
    (always added) and columns only some runs have (``x_3``, ``*_exact``): the others get
    missing values there.

    >>> load_traces("traces", ["step", "loss"],
    ...             [("lr_text", "in", ["1e-7", "1e-4"]), ("epoch", "<", 2)])  # doctest: +SKIP
    """
    traces, problems = find_traces(folder)
    if problems:
        raise TraceError(problems[0][1])
    frames, found = [], set(RUN_SETTINGS)
    for trace in traces:
        keep, row_filter = choose(trace, filters)
        if not keep:
            continue
        names = _column_names(trace)
        found.update(names)
        wanted = None if columns is None else [c for c in columns if c in names]
        df = trace.read(wanted, row_filter)
        for key, value in trace.settings().items():
            if key not in df.columns:
                df[key] = value
        frames.append(df)
    missing = [c for c in columns or () if c not in found]
    if missing and frames:
        raise TraceError(f"{folder}: no run has column(s) {', '.join(missing)}")
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)
