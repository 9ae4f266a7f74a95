"""Opening a run: its metadata and status read and checked, its part files listed, no row read.

A trace is a run folder written by :class:`~steptrace.trace.writer.TraceWriter` (its
``_run.json`` and part files) or a single part file of one. Opening refuses, each in one line,
what is not a steptrace trace, a newer major format version, metadata of the wrong kind and
metadata that does not describe the rows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import MetadataError, SteptraceError, TraceError
from ..numerics import NUMERICS, parse_exact
from .reader import Trace
from .schema import (
    check_version,
    column_names,
    is_v1,
    metadata_of,
    tensors_of,
    upgrade_v1,
    v1_column,
)
from .writer import LOCK_NAME, RUN_FILE, read_run_file

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["PART_NAME", "check_kinds", "open_trace"]


#: The name of a run folder's data files (see docs/trace-format.md).
PART_NAME = re.compile(r"part-\d{6}\.parquet")


def open_trace(
    path: str | Path, *, check_columns: bool = True, check_metadata: bool = True
) -> Trace:
    """Open a run folder (or one Parquet part file) without reading its rows.

    Raises :class:`~steptrace.errors.TraceError` if ``path`` is not a steptrace trace and
    :class:`~steptrace.errors.NewerFormatError` if it was written in a newer format. A run
    whose metadata and columns disagree is refused unless ``check_columns`` is false, and
    metadata of the wrong kind (:func:`check_kinds`) unless ``check_metadata`` is false
    (:func:`steptrace.verify` reports either as a problem instead).
    """
    path = Path(path)
    if not path.exists():
        raise TraceError(f"no trace at {str(path)!r}")
    if path.is_file():
        meta = _footer_metadata(path)
        _require(meta, str(path), check_metadata)
        if check_columns:
            _require_columns(meta, [path], str(path))
        return Trace(
            path, meta, "unknown", "a single part file; its run's status is not known", [path]
        )
    run_file = path / RUN_FILE
    # Parts are listed after _run.json is read: a run read as complete has all its parts.
    info_read = run_file.exists()
    if info_read:
        try:
            info = read_run_file(run_file)
        except (OSError, ValueError) as exc:
            raise TraceError(f"{run_file}: unreadable run metadata ({exc})") from None
        if not isinstance(info, dict):
            raise TraceError(f"{run_file}: not steptrace run metadata")
        check_version(info, str(path))
        status, reason = str(info.get("status", "incomplete")), info.get("reason")
        if status != "complete" and _writer_alive(path):
            status, reason = "running", "a recorder is writing this run"
        if check_metadata and not isinstance(info.get("summary") or {}, dict):
            raise TraceError(f"{run_file}: its summary should be an object, not "
                             f"{info['summary']!r}")  # fmt: skip
        meta = {k: v for k, v in info.items() if k not in ("status", "reason", "summary")}
        meta = upgrade_v1(meta)
        told: dict[str, Any] = info["summary"] if isinstance(info.get("summary"), dict) else {}
        ended = status in ("complete", "incomplete") and "final_loss" in told
        summary = dict(info["summary"]) if ended else None
    files = sorted(p for p in path.glob("*.parquet") if PART_NAME.fullmatch(p.name))
    if not info_read:
        if not files:
            raise TraceError(
                f"{str(path)!r} is not a steptrace trace (no {RUN_FILE}, no part files)"
            )
        meta = _footer_metadata(files[0])
        status, reason, summary = "unknown", f"no {RUN_FILE}", None
    _require(meta, str(run_file if info_read else path), check_metadata)
    if check_columns:
        _require_columns(meta, files, str(path))
    return Trace(path, meta, status, reason, files, summary)


def _writer_alive(run_dir: Path) -> bool:
    """Whether a recorder still holds the run's lock (it dies with its process)."""
    lock = run_dir / LOCK_NAME
    if fcntl is None or not lock.exists():
        return False
    try:
        with open(lock) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def _footer_metadata(file: Path) -> dict[str, Any]:
    try:
        schema = pq.read_schema(file)
    except (OSError, pa.ArrowException) as exc:
        raise TraceError(f"{file}: not a readable Parquet file ({exc})") from None
    return metadata_of(schema, str(file))


def _require(meta: dict[str, Any], where: str, check_metadata: bool = True) -> None:
    for key in ("run_id", "numerics", "lr", "batch_size", "epochs", "dataset", "tensors"):
        if key not in meta:
            raise TraceError(f"{where}: run metadata lacks {key!r}; not a steptrace trace")
    if check_metadata:
        check_kinds(meta, where)


#: What each metadata key a reader relies on must hold (a key left out is checked elsewhere).
_KINDS: dict[str, tuple[str, tuple[type, ...]]] = {
    "run_id": ("a text", (str,)),
    "name": ("a text", (str,)),
    "numerics": ("a text", (str,)),
    "lr": ("a number or its text", (str, int, float)),
    "lr_exact": ("a text", (str,)),
    "batch_size": ("a whole number", (int,)),
    "epochs": ("a whole number", (int,)),
    "steps": ("a whole number", (int,)),
    "steps_per_epoch": ("a whole number", (int,)),
    "seed": ("a whole number or null", (int, type(None))),
    "shuffle": ("true or false", (bool,)),
    "dataset": ("an object", (dict,)),
    "model": ("an object", (dict,)),
    "tensors": ("a list", (list,)),
}


def check_kinds(meta: dict[str, Any], where: str) -> None:
    """Refuse metadata a reader would trip on (a hand-edited ``"steps": "nine"``), with a
    :class:`~steptrace.errors.MetadataError` naming ``where`` and the key."""
    for key, (kind, types) in _KINDS.items():
        if key not in meta:
            continue
        value = meta[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise MetadataError(where, key, f"run metadata {key!r} should be {kind}, not {value!r}")
    if "numerics" in meta and meta["numerics"] not in NUMERICS:
        raise MetadataError(where, "numerics", f"run metadata 'numerics' is "
                            f"{meta['numerics']!r}, not one of {', '.join(NUMERICS)}")  # fmt: skip
    for key in ("lr", "lr_exact"):
        if key in meta:
            try:
                parse_exact(meta[key], what=f"run metadata {key!r}")
            except SteptraceError as exc:
                raise MetadataError(where, key, str(exc)) from None


def _require_columns(meta: dict[str, Any], files: list[Path], where: str) -> None:
    """The metadata and the rows must describe the same trace: as many features and targets
    as its data tensors have components, every tensor's columns, exact texts if the run is
    exact (a damaged first part is left to whoever reads it)."""
    if not files or not isinstance(meta["dataset"], dict):
        return
    try:
        names = set(pq.read_schema(files[0]).names)
    except (OSError, pa.ArrowException):
        return
    tensors = tensors_of(meta)
    n = len(meta["dataset"].get("features") or [])
    wanted = column_names([t for t in tensors if t.stored], meta["numerics"] == "exact")
    x_width = next((t.size for t in tensors if t.name == "x"), n)
    if n > x_width:
        wanted.append(f"x_{n}")  # the metadata names a feature the rows do not hold
    if is_v1(meta):
        wanted = [v1_column(c) for c in wanted]
    missing = [c for c in wanted if c not in names]
    if missing or n != x_width:
        lacks = f"has no column {missing[0]}" if missing else f"has {x_width} features"
        raise TraceError(
            f"{where}: its metadata ({n} features, {meta['numerics']}) does not match its rows "
            f"({files[0].name} {lacks}); 'steptrace verify' shows more"
        )
