"""The runs of a folder: the scan (runs keyed by their path inside it, and the files that are
not runs, with the reason why), the run picker's table, and what the footers say about a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import schedule
from ..errors import SteptraceError, TraceError
from ..trace.loader import find_traces
from ..trace.parts import part_info
from ..trace.reader import Trace
from ..trace.schema import after_columns, v2_column
from .notation import model_description
from .parts import last_on_disk

#: How ``steptrace dashboard`` tells the app which folder it shows (an environment variable of
#: the Streamlit server it starts; read by ``steptrace.dashboard.data``).
FOLDER_ENV = "STEPTRACE_DASHBOARD_FOLDER"


@dataclass(frozen=True)
class Folder:
    """The runs of one folder, keyed by their path inside it, and what could not be opened."""

    root: Path
    runs: dict[str, Trace]
    problems: list[tuple[str, str]]  # (path inside the folder, message)
    error: str | None = None  # the folder itself cannot be read

    @property
    def empty(self) -> bool:
        return not self.runs and not self.problems and self.error is None


def _inside(root: Path, path: Path) -> str | None:
    """``path`` relative to ``root`` if it really lies inside it (symlinks resolved)."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix() or "."
    except ValueError:
        return None


def _check(trace: Trace) -> None:
    """Read the part files' footers now (once per part: :mod:`.parts` keeps what they say), so
    a corrupt or foreign part is reported with the folder's other problems instead of when its
    run is picked."""
    try:
        infos = [part_info(f) for f in trace.files]
    except TraceError as exc:
        raise TraceError(f"a part file is not readable Parquet: {exc}") from None
    for f, info in zip(trace.files, infos, strict=True):
        names = set(info.schema.names)
        if trace.v1:  # version 1 named the article's weights otherwise: compare in v2's names
            names = {v2_column(n) for n in names}
        missing = [c for c in ("step", "loss", *after_columns(trace.tensors)) if c not in names]
        if missing:
            raise TraceError(f"{f.name} lacks column(s) {', '.join(missing)}")


def scan(folder: str | Path) -> Folder:
    """Every run under ``folder``, keyed by its path inside it; never raises.

    Runs are found by :func:`~steptrace.trace.loader.find_traces`; a run or part file that resolves
    outside ``folder`` (a symlink) is refused, so a page given this folder reads nothing else.

    >>> f = scan("traces")  # doctest: +SKIP
    >>> sorted(f.runs), f.problems  # doctest: +SKIP
    (['seed-exact-lr1'], [])
    """
    root = Path(folder)
    try:
        traces, problems = find_traces(root)
    except SteptraceError as exc:
        return Folder(root, {}, [], str(exc))
    runs: dict[str, Trace] = {}
    bad = [(_inside(root, path) or path.name, message) for path, message in problems]
    for trace in traces:
        key = _inside(root, trace.path)
        if key == ".":  # the folder given is itself a run
            key = trace.name
        outside = [f for f in trace.files if _inside(root, f) is None]
        if key is None or outside:
            bad.append((trace.path.name, "refused: it lies outside the dashboard's folder"))
            continue
        try:
            _check(trace)
        except SteptraceError as exc:
            bad.append((key, str(exc)))
            continue
        runs[key] = trace
    return Folder(root, runs, sorted(bad))


def fingerprint(trace: Trace) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of a run's files: a cache key that changes when a
    recorder adds steps."""
    out = []
    for f in [*trace.files, trace.path / "_run.json"] if trace.path.is_dir() else trace.files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append((f.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def last_step(trace: Trace) -> int:
    """The last recorded step, from the Parquet footers' statistics (no data read; each
    part's footer read once, see :mod:`.parts`); -1 if the run has no steps yet."""
    return last_on_disk(trace)


def steps_per_epoch(trace: Trace) -> int:
    """Steps in one epoch: the run's metadata says, or its dataset rows and batch size."""
    rows = int(trace.meta["dataset"]["rows"])
    b = int(trace.meta["batch_size"])
    return int(trace.meta.get("steps_per_epoch") or schedule.steps_per_epoch(rows, b))


def _steps(recorded: int, planned: object) -> str:
    """``1,200`` steps, or ``3 of 10`` for a run that has not recorded all it planned: text
    either way, so that the column has one type (a column of numbers and texts cannot be
    sent to the browser as it is, and Streamlit logs a traceback each time it tries)."""
    if isinstance(planned, int) and planned != recorded:
        return f"{recorded:,} of {planned:,}"
    return f"{recorded:,}"


def run_table(folder: Folder) -> pd.DataFrame:
    """The run picker's table: one row per run with its settings, status and model.

    >>> run_table(scan("traces"))[["run", "lr", "numerics", "status"]]  # doctest: +SKIP
    """
    rows = []
    for key, trace in folder.runs.items():
        s = trace.settings()
        planned = trace.meta.get("steps")
        recorded = last_step(trace) + 1
        rows.append(
            {
                "run": key,
                "lr": s["lr_text"],
                "numerics": s["numerics"],
                "batch size": s["batch_size"],
                "epochs": s["epochs"],
                "steps": _steps(recorded, planned),
                "status": s["status"],
                "dataset": str(trace.meta["dataset"].get("name", "")),
                "model": model_description(trace),
            }
        )
    columns = ["run", "lr", "numerics", "batch size", "epochs", "steps", "status", "dataset",
               "model"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
