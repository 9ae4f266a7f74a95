"""Choosing runs by their settings: a filter's conditions on them decided from metadata alone.

A run's settings (:data:`RUN_SETTINGS`: its name, numerics, learning rate, batch size …) are
known without opening any of its data files, so a filter on them rules whole runs in or out
before a file is read; what the filter says of the rows is left for the rows.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from ..errors import SteptraceError
from ..numerics import get_numerics, parse_exact
from .filters import Filters, dnf, filter_expression
from .reader import Trace
from .schema import arrow_schema

__all__ = ["RUN_SETTINGS", "choose", "chosen"]


#: Run settings known from a run's metadata alone, with the type a filter compares them as.
#: A filter on one of them chooses whole runs before any of their data files is opened.
RUN_SETTINGS: dict[str, pa.DataType] = {
    "run": pa.string(),
    "run_id": pa.string(),
    "numerics": pa.string(),
    "lr": pa.float64(),
    "lr_text": pa.string(),
    "batch_size": pa.int64(),
    "epochs": pa.int64(),
    "shuffle": pa.bool_(),
    "seed": pa.int64(),
    "status": pa.string(),
}


def choose(trace: Trace, filters: Filters) -> tuple[bool, Filters]:
    """Whether any row of ``trace`` may pass ``filters``, and the filter left for its rows.

    Conditions on :data:`RUN_SETTINGS` are decided here from the run's metadata. In a list of
    tuples each one is decided on its own; a :class:`pyarrow.compute.Expression` naming row
    columns too goes to the rows whole (so the settings it names must be file columns:
    run_id, numerics, lr, batch_size), once pyarrow has found that the run's settings do not
    rule it out.
    """
    if filters is None:
        return True, None
    table = _settings_table(trace)
    if isinstance(filters, pc.Expression):
        try:
            return _holds(table, filters), None
        except (pa.ArrowException, TypeError, ValueError):
            # It names row columns: rule the run out if its settings contradict it, and let
            # the files decide the rest.
            return _may_match(trace, filters), filters
    disjuncts = dnf(filters)
    kept: list[list[tuple[str, str, Any]]] = []
    for conjuncts in disjuncts:
        on_run = [c for c in conjuncts if c[0] in RUN_SETTINGS]
        if on_run and not _holds(table, filter_expression([on_run])):
            continue
        on_rows = [c for c in conjuncts if c[0] not in RUN_SETTINGS]
        if not on_rows:
            return True, None  # this run passes whole
        kept.append(on_rows)
    return bool(kept), (kept or None)


def chosen(traces: list[Trace], filters: Filters) -> list[Trace]:
    """The runs of ``traces`` that ``filters`` may keep (see :func:`choose`)."""
    return [t for t in traces if choose(t, filters)[0]]


def _recorded_lr(trace: Trace) -> float | None:
    """The float64 the run's ``lr`` column holds: its exact learning rate rounded into its
    numerics, exactly as the trainer does, so run and row filters on ``lr`` agree."""
    try:
        system = get_numerics(trace.numerics)
        return system.to_float(system.make(parse_exact(trace.meta.get("lr_exact", trace.lr_text))))
    except SteptraceError:
        return None


def _settings_values(trace: Trace) -> dict[str, Any]:
    values = {**trace.settings(), "run_id": trace.run_id, "lr": _recorded_lr(trace)}
    return {name: values.get(name) for name in RUN_SETTINGS}


def _settings_table(trace: Trace) -> pa.Table:
    values = _settings_values(trace)
    return pa.table({name: pa.array([values[name]], kind) for name, kind in RUN_SETTINGS.items()})


def _may_match(trace: Trace, expression: pc.Expression) -> bool:
    """Whether an expression naming row columns may hold in ``trace``, decided by pyarrow from
    the run's settings alone: they are the partition expression of a dataset of its files,
    built from the canonical schema, so no file is opened."""
    values = {k: v for k, v in _settings_values(trace).items() if v is not None}
    conditions = [pc.field(k) == v for k, v in values.items()]
    partition = conditions[0]
    for condition in conditions[1:]:
        partition = partition & condition
    # From the metadata, not the files: deciding must not open them (a run may be damaged).
    schema = arrow_schema(trace.tensors, trace.is_exact, {}).remove_metadata()
    for name, kind in RUN_SETTINGS.items():
        if name not in schema.names:
            schema = schema.append(pa.field(name, kind))
    files = [str(f) for f in trace.files] or ["_none.parquet"]
    dataset = pads.FileSystemDataset.from_paths(
        files,
        schema=schema,
        format=pads.ParquetFileFormat(),
        filesystem=pafs.LocalFileSystem(),
        partitions=[partition] * len(files),
    )
    try:
        return any(True for _ in dataset.get_fragments(filter=expression))
    except (pa.ArrowException, TypeError, ValueError):
        return True  # an unknown column: the files will say so


def _holds(table: pa.Table, expression: pc.Expression) -> bool:
    return bool(table.filter(expression).num_rows)
