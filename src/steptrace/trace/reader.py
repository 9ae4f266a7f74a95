"""Reading traces: one run, or every run in a folder, into pandas.

A trace is a run folder written by :class:`~steptrace.trace.writer.TraceWriter` (or a single part
file of one). Readers ignore columns they do not know, refuse a newer major format version,
and never load more than the columns and row groups asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..errors import MetadataError, SteptraceError, TraceError
from ..model.spec import load_model
from ..numerics import NUMERICS, get_numerics, parse_exact
from .parts import PartInfo, part_info
from .rebuild import Rebuilt
from .schema import (
    EXACT_SUFFIX,
    Tensor,
    arrow_schema,
    check_version,
    column_names,
    is_v1,
    metadata_of,
    tensors_of,
    upgrade_v1,
    v1_column,
    v2_column,
)
from .writer import LOCK_NAME, RUN_FILE, read_run_file

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "RUN_SETTINGS",
    "Trace",
    "find_traces",
    "is_folder_of_runs",
    "load_trace",
    "load_traces",
    "open_trace",
]

Filters: TypeAlias = pc.Expression | Sequence[tuple[str, str, Any]] | None


@dataclass
class Trace:
    """One recorded run: its metadata and status, and its rows on demand."""

    path: Path
    meta: dict[str, Any]
    status: str
    reason: str | None = None
    files: list[Path] = field(default_factory=list)
    #: What the recorder found when the run ended (``_run.json``'s ``summary``: final and
    #: lowest loss, divergence); None while it runs, or for a trace without ``_run.json``.
    summary: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.path.name if self.path.is_dir() else self.path.stem

    @property
    def run_id(self) -> str:
        return str(self.meta["run_id"])

    @property
    def numerics(self) -> str:
        return str(self.meta["numerics"])

    @property
    def lr_text(self) -> str:
        return str(self.meta["lr"])

    @property
    def n_features(self) -> int:
        return len(self.meta["dataset"]["features"])

    @cached_property
    def tensors(self) -> list[Tensor]:
        """The recorded tensors (``x``, ``o2``, ``w2_after`` …) and their shapes."""
        return tensors_of(self.meta)

    def tensor(self, name: str) -> Tensor:
        """One recorded tensor by name; :class:`TraceError` naming the ones there are."""
        for t in self.tensors:
            if t.name == name:
                return t
        names = ", ".join(t.name for t in self.tensors)
        raise TraceError(f"{self.path}: no tensor {name!r} in this trace (it has: {names})")

    @property
    def v1(self) -> bool:
        """Written in trace format 1 (the article's model only): its weights' columns are
        read under version 2's names (``w_after_3`` as ``w2_after_1_3``)."""
        return is_v1(self.meta)

    @property
    def is_exact(self) -> bool:
        return self.numerics == "exact"

    def settings(self) -> dict[str, Any]:
        """The run's settings, one value each (what :func:`load_traces` adds as columns)."""
        return {
            "run": self.name,
            "numerics": self.numerics,
            "lr_text": self.lr_text,
            "batch_size": int(self.meta["batch_size"]),
            "epochs": int(self.meta["epochs"]),
            "shuffle": bool(self.meta.get("shuffle", False)),
            "seed": self.meta.get("seed"),
            "status": self.status,
        }

    @cached_property
    def _parts(self) -> list[PartInfo]:
        """What each part's footer says (read once per part file, for every Trace of it)."""
        return [part_info(f, unreadable="unreadable part file") for f in self.files]

    @property
    def num_rows(self) -> int:
        """Rows on disk, from the Parquet footers (no data read)."""
        return sum(p.rows for p in self._parts)

    def dataset(self) -> pads.Dataset:
        """The run as a pyarrow dataset (its part files, in order): the columns they store,
        without the values stored once that :meth:`read_table` puts back."""
        if not self.files:
            return pads.dataset(pa.table({}, schema=self.schema()))
        return pads.dataset([str(f) for f in self.files], format="parquet")

    @property
    def _step_spans(self) -> list[list[tuple[int, int]] | None]:
        """Each part's row groups' (first, last) step, from the footers."""
        return [p.spans for p in self._parts]

    def parts(self, lo: int | None = None, hi: int | None = None) -> list[Path]:
        """The part files that may hold steps ``lo <= step < hi``, by their footers'
        statistics (every part, for a part without them)."""
        return [f for f, spans in zip(self.files, self._step_spans, strict=True)
                if _may_hold(spans, lo, hi)]  # fmt: skip

    def step_span(self) -> tuple[int, int] | None:
        """The first and last step on disk (None if no rows): from the row groups' statistics
        when every part has them, else by reading the ``step`` column."""
        spans = self._step_spans
        if any(span is None for span in spans):
            step = self.read_table(["step"]).column("step")
            return (pc.min(step).as_py(), pc.max(step).as_py()) if len(step) else None
        known = [lo_hi for span in spans if span is not None for lo_hi in span]
        return (min(lo for lo, _ in known), max(hi for _, hi in known)) if known else None

    def schema(self) -> pa.Schema:
        """The run's columns as readers see them (from the first part's footer, read once),
        under version 2's names: the ones its files store and the ones rebuilt from them
        (:mod:`~steptrace.trace.rebuild`), in the format's order."""
        if self.v1:
            return pa.schema(
                [f.with_name(v2_column(f.name)) for f in self._schema],
                metadata=self._schema.metadata,
            )
        stored = self._schema
        if not self.rebuilt():
            return stored
        every = arrow_schema(self.tensors, self.is_exact, {})
        fields = [stored.field(n) if n in stored.names else every.field(n) for n in every.names]
        fields += [f for f in stored if f.name not in set(every.names)]
        return pa.schema(fields, metadata=stored.metadata)

    def rebuilt(self, part: Path | None = None) -> Rebuilt:
        """Which columns of ``part`` (the first if None) are rebuilt from its others (none in
        version 1)."""
        if self.v1 or not self.files:
            return Rebuilt({}, {})
        index = 0 if part is None else self._part_index[part]
        known = self._rebuilt_parts.get(index)
        if known is None:
            info = self._parts[index]
            start = info.before or (0, self.initial)  # a part rewritten without its footer entry
            known = Rebuilt.of(self.tensors, self.is_exact, info.schema.names, start)
            self._rebuilt_parts[index] = known
        return known

    @cached_property
    def _rebuilt_parts(self) -> dict[int, Rebuilt]:
        """:meth:`rebuilt` of each part asked about so far (parts never change in place)."""
        return {}

    @cached_property
    def initial(self) -> dict[str, Any]:
        """The parameters before step 0, by column, from the metadata's model (in the run's
        numbers, as the recorder starts from them); {} if the model cannot be read."""
        try:
            num = get_numerics(self.numerics)
            model = load_model(self.meta["model"], self.n_features)
            stack = model.stack(num)
            values = stack.flat(model.params(num))  # W row by row, then b, layer by layer
        except (SteptraceError, KeyError, TypeError, ValueError):
            return {}
        names = [f"{p}{k}_before" for k in stack.param_layers for p in "wb"]
        listed = {t.name for t in self.tensors}
        columns = [c for n in names if n in listed for c in self.tensor(n).columns()]
        out: dict[str, Any] = {}
        for column, v in zip(columns, values, strict=True):
            out[column] = num.to_float(v)
            out[column + EXACT_SUFFIX] = str(v)
        return out

    def fetch(self, steps: Sequence[int], columns: Sequence[str]) -> pa.Table:
        """The run's rows of ``steps``, ``columns`` only, from whichever parts hold them."""
        tables = [
            pads.dataset(str(f), format="parquet", schema=self.part(f).schema).to_table(
                columns=list(columns), filter=pc.field("step").isin(list(steps))
            )
            for f in self.parts(min(steps), max(steps) + 1)
        ]
        if not tables:
            return self._schema.empty_table().select(list(columns))
        return pa.concat_tables(tables)

    def part(self, path: Path) -> PartInfo:
        """What the footer of part ``path`` says."""
        return self._parts[self._part_index[path]]

    @cached_property
    def _part_index(self) -> dict[Path, int]:
        return {f: i for i, f in enumerate(self.files)}

    @cached_property
    def _schema(self) -> pa.Schema:
        if self.files:
            return self._parts[0].schema
        return arrow_schema(self.tensors, self.is_exact, self.meta)

    def _file_columns(self, columns: Sequence[str] | None) -> list[str] | None:
        """The names ``columns`` have in the files (version 1 names its weights otherwise)."""
        if columns is None or not self.v1:
            return None if columns is None else list(columns)
        return [v1_column(c) for c in columns]

    def _renamed(self, table: pa.Table) -> pa.Table:
        if not self.v1:
            return table
        return table.rename_columns([v2_column(c) for c in table.column_names])

    def read_table(
        self,
        columns: Sequence[str] | None = None,
        filters: Filters = None,
        steps: StepRange | None = None,
    ) -> pa.Table:
        """The rows as an Arrow table, in recording order; only ``columns``, only the row
        groups ``filters`` may match, only steps ``lo <= step < hi`` if ``steps`` is
        ``(lo, hi)`` (either may be None). Parts holding none of those steps, by their footers'
        statistics, are not opened: a long run of many parts reads one step as fast as a
        short one."""
        expression = _expression(filters)
        files = self.files if steps is None else self.parts(*steps)
        names = self.schema().names
        wanted = list(names if columns is None else columns)
        # The parameters before a window's first step are the step before's: read it too
        # (one scan, not two), and leave it out once they are put back.
        lo = None if steps is None else steps[0]
        widen = bool(lo) and any(self.rebuilt().previous.get(c) for c in wanted)
        if steps is not None:
            first = lo - 1 if widen and lo is not None else lo
            expression = _and(expression, _step_expression(first, steps[1]))
        if columns is not None:
            unknown = [c for c in columns if c not in names]
            if unknown:
                raise TraceError(f"{self.path}: no column(s) {', '.join(unknown)} in this trace")
        tables = []
        for f in files:
            rebuilt = self.rebuilt(f)
            keep = wanted if not widen or "step" in wanted else [*wanted, "step"]
            read = rebuilt.sources(keep) if rebuilt else (keep if widen else columns)
            try:
                # Given the schema, the dataset does not open the file to discover it: each
                # part's footer is read once, by the scan.
                part = pads.dataset(str(f), format="parquet", schema=self.part(f).schema)
                table = self._renamed(
                    part.to_table(columns=self._file_columns(read), filter=expression)
                )
                if rebuilt:
                    table = rebuilt.apply(table, keep, self.fetch)
                if widen:  # the step before comes first, in recording order
                    steps_read = table.column("step").to_numpy()
                    cut = int(np.searchsorted(steps_read, lo or 0))
                    table = table.slice(cut).select(wanted)
            except (OSError, pa.ArrowException) as exc:
                if "No match for FieldRef" in str(exc):
                    raise TraceError(
                        f"{self.path}: the filter names a column this trace does not have "
                        f"({str(exc).splitlines()[0]}){_stored_hint(rebuilt)}"
                    ) from None
                raise TraceError(f"{f}: unreadable part file ({exc})") from None
            except TraceError as exc:
                raise TraceError(f"{f}: {exc}") from None
            tables.append(table)
        if not tables:
            empty = self.schema()
            if columns is not None:
                empty = pa.schema([empty.field(c) for c in columns], metadata=empty.metadata)
            return empty.empty_table()
        return pa.concat_tables(tables, promote_options="default")

    def read(
        self,
        columns: Sequence[str] | None = None,
        filters: Filters = None,
        steps: StepRange | None = None,
    ) -> pd.DataFrame:
        """The rows as a DataFrame (see :meth:`read_table`)."""
        frame: pd.DataFrame = self.read_table(columns, filters, steps).to_pandas()
        return frame

    def step(self, step: int, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The rows of one step (one per sample of its batch)."""
        return self.read(columns, steps=(step, step + 1))

    def columns_of(self, name: str) -> list[str]:
        """The columns of one tensor, e.g. ``columns_of("w2_after")``."""
        return self.tensor(name).columns()

    def iter_batches(
        self, columns: Sequence[str] | None = None, steps: StepRange | None = None
    ) -> Iterator[pa.RecordBatch]:
        """The rows in recording order, a record batch at a time (flat memory whatever the
        run's length), only ``columns``, only steps ``lo <= step < hi``."""
        expression = None if steps is None else _step_expression(*steps)
        files = self.files if steps is None else self.parts(*steps)
        wanted = list(self.schema().names if columns is None else columns)
        for f in files:
            rebuilt = self.rebuilt(f)
            read = rebuilt.sources(wanted) if rebuilt else columns
            try:
                part = pads.dataset(str(f), format="parquet", schema=self.part(f).schema)
                batches = part.to_batches(columns=self._file_columns(read), filter=expression)
                if rebuilt:
                    batches = rebuilt.batches(batches, wanted, self.fetch)
                for batch in batches:
                    if self.v1:
                        batch = batch.rename_columns([v2_column(c) for c in batch.schema.names])
                    yield batch
            except (OSError, pa.ArrowException) as exc:
                raise TraceError(f"{f}: unreadable part file ({exc})") from None
            except TraceError as exc:
                raise TraceError(f"{f}: {exc}") from None


def _stored_hint(rebuilt: Rebuilt) -> str:
    if not rebuilt:
        return ""
    return "; a column rebuilt from the stored ones (w2_before …) is filtered once read"


StepRange: TypeAlias = tuple[int | None, int | None]
"""Steps ``lo <= step < hi``; None leaves that end open."""


def _step_expression(lo: int | None, hi: int | None) -> pc.Expression | None:
    low = None if lo is None else pc.field("step") >= lo
    high = None if hi is None else pc.field("step") < hi
    return _and(low, high)


def _and(a: pc.Expression | None, b: pc.Expression | None) -> pc.Expression | None:
    return b if a is None else a if b is None else a & b


def _may_hold(spans: list[tuple[int, int]] | None, lo: int | None, hi: int | None) -> bool:
    """Whether a part whose row groups span ``spans`` may hold a step of ``[lo, hi)``."""
    if spans is None:
        return True
    return any((lo is None or last >= lo) and (hi is None or first < hi) for first, last in spans)


def _expression(filters: Filters) -> pc.Expression | None:
    if filters is None or isinstance(filters, pc.Expression):
        return filters
    try:
        return pq.filters_to_expression(list(filters))
    except (TypeError, ValueError) as exc:
        raise TraceError(f"invalid filters {filters!r}: {exc}") from None


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


def _choose(trace: Trace, filters: Filters) -> tuple[bool, Filters]:
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
    disjuncts = _dnf(filters)
    kept: list[list[tuple[str, str, Any]]] = []
    for conjuncts in disjuncts:
        on_run = [c for c in conjuncts if c[0] in RUN_SETTINGS]
        if on_run and not _holds(table, _expression([on_run])):
            continue
        on_rows = [c for c in conjuncts if c[0] not in RUN_SETTINGS]
        if not on_rows:
            return True, None  # this run passes whole
        kept.append(on_rows)
    return bool(kept), (kept or None)


def _dnf(filters: Sequence[Any]) -> list[list[tuple[str, str, Any]]]:
    """pyarrow's filter lists as a list of AND-lists: ``[(…), (…)]`` or ``[[(…)], [(…)]]``."""
    items = list(filters)
    if not items:
        return [[]]
    nested = [isinstance(item, list) for item in items]
    if all(nested):
        groups = items
    elif not any(nested):
        groups = [items]
    else:
        raise TraceError(f"invalid filters {filters!r}: mixes tuples and lists of tuples")
    out = []
    for group in groups:
        conjuncts = []
        for item in group:
            if not (isinstance(item, tuple) and len(item) == 3 and isinstance(item[0], str)):
                raise TraceError(
                    f"invalid filters {filters!r}: each condition is a (column, op, value) tuple"
                )
            conjuncts.append(item)
        out.append(conjuncts)
    return out


#: The name of a run folder's data files (see docs/trace-format.md).
PART_NAME = re.compile(r"part-\d{6}\.parquet")


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

    ``filters`` keeps only the runs whose settings (:data:`RUN_SETTINGS`) may pass them, read
    from each run's metadata; conditions on other columns are ignored here.

    >>> runs, problems = find_traces("traces", [("numerics", "==", "exact")])  # doctest: +SKIP
    """
    folder = Path(folder)
    if not folder.exists():
        raise TraceError(f"no folder {str(folder)!r}")
    if not folder.is_dir() or (folder / RUN_FILE).exists():
        return _chosen([open_trace(folder)], filters), []

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
    return _chosen(traces, filters), problems


def _chosen(traces: list[Trace], filters: Filters) -> list[Trace]:
    return [t for t in traces if _choose(t, filters)[0]]


def load_trace(
    path: str | Path, columns: Sequence[str] | None = None, filters: Filters = None
) -> pd.DataFrame:
    """One run as a DataFrame: one row per (step, sample), value columns float64.

    Only ``columns`` are read, and only the row groups that ``filters`` may match (their step,
    epoch and sample statistics decide), so one step of a huge run loads in a blink.
    ``filters`` are pyarrow's: an expression or ``[(column, op, value), …]``; conditions on
    run settings (:data:`RUN_SETTINGS`: ``run``, ``lr_text`` …) are decided from metadata.

    >>> df = load_trace("traces/golden/article-exact.parquet")  # doctest: +SKIP
    >>> df.loc[df.step == 2, ["o2_1", "loss", "d3_1"]]  # doctest: +SKIP
    >>> load_trace("traces/big", ["step", "loss"], [("step", "==", 123_456)])  # doctest: +SKIP
    """
    trace = open_trace(path)
    keep, row_filter = _choose(trace, filters)
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

    Conditions of ``filters`` on run settings (:data:`RUN_SETTINGS`) choose runs from their
    metadata, so the other runs' files are never opened; the rest go to the chosen runs' files
    (see :func:`load_trace`). ``columns`` may name setting columns (always added) and columns
    only some runs have (``x_3``, ``*_exact``): the others get missing values there.

    >>> load_traces("traces", ["step", "loss"],
    ...             [("lr_text", "in", ["1e-7", "1e-4"]), ("epoch", "<", 2)])  # doctest: +SKIP
    """
    traces, problems = find_traces(folder)
    if problems:
        raise TraceError(problems[0][1])
    frames, found = [], set(RUN_SETTINGS)
    for trace in traces:
        keep, row_filter = _choose(trace, filters)
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
