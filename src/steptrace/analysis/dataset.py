"""A sweep for other engines: every run of a folder as one pyarrow dataset (DuckDB, Polars),
its settings from metadata added as columns that prune whole runs.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from ..errors import TraceError
from ..trace.filters import Filters
from ..trace.loader import find_traces
from ..trace.reader import Trace

#: Settings that :func:`sweep_dataset` adds as columns (from metadata, not from the files).
VIRTUAL_SETTINGS = ("run", "lr_text", "epochs", "shuffle", "seed", "status")

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
