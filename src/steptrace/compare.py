"""Comparing two traces value by value, and finding where they first part.

Rows are aligned on ``(step, sample)`` and compared column by column. Floats are equal when
``|b - a| <= atol + rtol * |a|`` (``a`` is the reference, the first trace or the golden); the
default tolerances are zero, so equality is exact. Exact-mode values are compared by their
rational text (``<col>_exact``) when both traces have it, so no rounding hides a difference.
NaN equals NaN only when both traces hold NaN in the same cell.

Run-wide settings (numerics, learning rate, epochs, initial weights, dataset …) are compared
through the runs' metadata; informational fields (run id, name, creation time, steptrace
version) never are.

>>> result = compare_traces("traces/golden/article-exact.parquet",
...                         "traces/golden/article-float64.parquet")  # doctest: +SKIP
>>> result.first.column, result.first.a, result.first.b  # doctest: +SKIP
('o2_1', '0', '-3.469446951953614e-17')
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import SteptraceError, TraceError, WriteError
from .reader import Trace, find_traces, open_trace
from .replay import format_value
from .schema import EXACT_SUFFIX, FIELDS, FORMAT_VERSION, METADATA_KEY
from .writer import RUN_FILE, parquet_options

__all__ = [
    "ColumnDiff",
    "Comparison",
    "Divergence",
    "MetaDiff",
    "Side",
    "SideInfo",
    "Tolerance",
    "compare_traces",
    "load_side",
    "write_trace_file",
]

#: Rows are aligned on these columns.
KEYS = ("step", "sample")
#: Columns holding one run-wide value; compared through the metadata, not cell by cell.
RUN_WIDE = ("run_id", "numerics", "batch_size")
#: Metadata that describes a recording rather than its settings; never compared.
INFORMATIONAL = frozenset(
    {
        "run_id",
        "name",
        "created",
        "steptrace_version",
        "format_version",
        "status",
        "reason",
        "summary",
        "dataset.name",
        "source",
    }
)
#: Rows found on one side only listed in JSON (all of them are counted).
JSON_ROWS = 100
#: Marks metadata made up for a DataFrame (which carries none of its own).
FROM_DATAFRAME = "DataFrame"


class HasPath(Protocol):
    """Anything with a ``path`` to a trace, such as a :class:`~steptrace.recorder.RunResult`."""

    @property
    def path(self) -> Path: ...


TraceLike: TypeAlias = "str | Path | Trace | pd.DataFrame | HasPath | Side"
"""A run folder or Parquet file path, an open :class:`Trace`, a DataFrame of trace rows, or
a :class:`~steptrace.recorder.RunResult`."""


@dataclass(frozen=True)
class Tolerance:
    """Two floats ``a`` (reference) and ``b`` agree when ``|b - a| <= atol + rtol * |a|``."""

    rtol: float = 0.0
    atol: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise TraceError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass
class Side:
    """One of the two traces being compared: where it comes from, its metadata, and its rows
    read on demand (only the columns a comparison needs)."""

    label: str
    meta: dict[str, Any]
    status: str = "unknown"
    trace: Trace | None = None
    dataframe: pd.DataFrame | None = None

    @cached_property
    def columns(self) -> list[str]:
        if self.dataframe is not None:
            return [str(c) for c in self.dataframe.columns]
        assert self.trace is not None
        return list(self.trace.schema().names)

    @cached_property
    def rows(self) -> int:
        if self.dataframe is not None:
            return len(self.dataframe)
        assert self.trace is not None
        return self.trace.num_rows

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The rows, only ``columns`` (all if None)."""
        if self.dataframe is not None:
            return self.dataframe if columns is None else self.dataframe[list(columns)]
        # The table is not kept: let pandas take its buffers instead of copying them.
        table = self.read_table(columns)
        frame: pd.DataFrame = table.to_pandas(split_blocks=True, self_destruct=True)
        return frame

    def read_table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The rows as an Arrow table, only ``columns`` (all if None)."""
        if self.dataframe is not None:
            return pa.Table.from_pandas(self.read(columns), preserve_index=False)
        assert self.trace is not None
        try:
            return self.trace.read_table(columns)
        except SteptraceError:
            raise
        except Exception as exc:  # a damaged file: say which, in one line
            where = self.trace.path
            raise TraceError(f"{where}: unreadable trace ({type(exc).__name__}: {exc})") from None

    @property
    def from_dataframe(self) -> bool:
        return self.meta.get("source") == FROM_DATAFRAME

    @property
    def numerics(self) -> str:
        return str(self.meta.get("numerics", "float64"))

    def info(self) -> SideInfo:
        return SideInfo(
            self.label, self.numerics, str(self.meta.get("lr", "?")), self.rows, self.status
        )


@dataclass(frozen=True)
class SideInfo:
    """What a report says about each trace."""

    label: str
    numerics: str
    lr: str
    rows: int
    status: str

    def describe(self) -> str:
        status = "" if self.status in ("complete", "unknown") else f", {self.status}"
        return f"{self.label} ({self.numerics}, α={self.lr}, {self.rows} rows{status})"


@dataclass(frozen=True)
class Divergence:
    """The first place the traces part: a cell that differs, or a row one trace lacks."""

    step: int
    sample: int
    column: str | None
    a: str | None
    b: str | None
    difference: float | None
    kind: str = "value"  # "value", "only_a" (row missing from B) or "only_b"


@dataclass(frozen=True)
class ColumnDiff:
    """How one column differs: cells that differ among the aligned rows, the first of them,
    and the largest errors over all aligned rows."""

    column: str
    differing: int
    compared: int
    first_step: int
    first_sample: int
    a: str
    b: str
    max_abs: float
    max_rel: float


@dataclass(frozen=True)
class MetaDiff:
    key: str
    a: Any
    b: Any


@dataclass(frozen=True)
class Comparison:
    """Everything :func:`compare_traces` found; :meth:`format` for people, :meth:`to_dict`
    for machines."""

    a: SideInfo
    b: SideInfo
    identical: bool
    rows_compared: int
    columns: list[str]
    tolerance: Tolerance
    first: Divergence | None = None
    column_diffs: list[ColumnDiff] = field(default_factory=list)
    only_a: list[tuple[int, int]] = field(default_factory=list)
    only_b: list[tuple[int, int]] = field(default_factory=list)
    metadata: list[MetaDiff] = field(default_factory=list)
    metadata_compared: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON types; non-finite floats become "inf", "-inf", "nan"."""
        data = _jsonable(asdict(self))
        assert isinstance(data, dict)
        for key in ("only_a", "only_b"):  # a long list of missing rows says no more than this
            rows = data[key]
            data[key] = {"count": len(rows), "first": rows[:JSON_ROWS]}
        return data

    def format(
        self, a_name: str = "A", b_name: str = "B", max_rows: int = 20, title: str = ""
    ) -> str:
        """A compact report, first divergence first. See :func:`format_comparison`."""
        return format_comparison(self, a_name, b_name, max_rows, title)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


# --- loading -------------------------------------------------------------------------------


def load_side(source: TraceLike, label: str | None = None) -> Side:
    """Read one side of a comparison: a trace path, :class:`Trace`, RunResult or DataFrame.

    A folder holding several runs is refused: compare one run with one run.

    >>> side = load_side("traces/golden/article-exact.parquet")  # doctest: +SKIP
    >>> side.meta["numerics"], side.rows  # doctest: +SKIP
    ('exact', 3)
    """
    if isinstance(source, Side):
        return source
    if isinstance(source, pd.DataFrame):
        missing = [k for k in KEYS if k not in source.columns]
        if missing:
            raise TraceError(
                f"a DataFrame needs the columns {', '.join(KEYS)} to be compared as a trace "
                f"(it lacks {', '.join(missing)})"
            )
        return Side(label or "DataFrame", dataframe_metadata(source), dataframe=source)
    if isinstance(source, Trace):
        trace = source
    elif isinstance(source, str | Path):
        trace = open_one(Path(source))
    elif isinstance(getattr(source, "path", None), str | Path):
        trace = open_one(Path(source.path))  # a RunResult
    else:
        raise TraceError(f"cannot compare a {type(source).__name__} as a trace")
    return Side(label or str(trace.path), dict(trace.meta), trace.status, trace=trace)


def open_one(path: Path) -> Trace:
    """Open ``path`` as exactly one run; a folder of several runs is an error."""
    if not path.is_dir() or (path / RUN_FILE).exists():
        return open_trace(path)
    traces, problems = find_traces(path)
    if len({t.run_id for t in traces}) == 1 and not problems:
        # The part files of one run copied without its _run.json.
        return open_trace(path) if all(t.path.parent == path for t in traces) else traces[0]
    if not traces:
        why = f": {problems[0][1]}" if problems else ""
        raise TraceError(f"{str(path)!r} holds no steptrace trace{why}")
    names = ", ".join(t.name for t in traces[:3]) + (" …" if len(traces) > 3 else "")
    raise TraceError(
        f"{str(path)!r} is a folder of {len(traces)} runs ({names}); compare one run with one run"
    )


def write_trace_file(side: Side, path: Path) -> None:
    """Write ``side`` as one self-describing Parquet file (a golden), all at once: written
    aside, then renamed into place, so a golden is never half written.

    >>> write_trace_file(load_side("traces/my-run"), Path("golden.parquet"))  # doctest: +SKIP
    """
    table = side.read_table().replace_schema_metadata(
        {METADATA_KEY: json.dumps(side.meta, sort_keys=True)}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(
            table, tmp, row_group_size=max(table.num_rows, 1), **parquet_options(table.schema)
        )
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


def dataframe_metadata(frame: pd.DataFrame) -> dict[str, Any]:
    """Metadata made up for a DataFrame, from its own columns, so that a golden written from
    it is a readable trace. It is marked as such and never compared."""

    def constant(column: str) -> Any:
        if column in frame.columns and len(frame) and frame[column].nunique(dropna=False) == 1:
            value = frame[column].iloc[0]
            return value.item() if isinstance(value, np.generic) else value
        return None

    exact = any(str(c).endswith(EXACT_SUFFIX) for c in frame.columns)
    lr = constant("lr" + EXACT_SUFFIX)
    if lr is None and constant("lr") is not None:
        lr = format_value(float(constant("lr")))
    n = sum(1 for c in frame.columns if str(c).startswith("x_") and str(c)[2:].isdigit())
    epochs = int(frame["epoch"].max()) + 1 if "epoch" in frame.columns and len(frame) else 0
    return {
        "format_version": FORMAT_VERSION,
        "source": FROM_DATAFRAME,
        "run_id": str(constant("run_id") or "dataframe"),
        "numerics": str(constant("numerics") or ("exact" if exact else "float64")),
        "lr": str(lr if lr is not None else "?"),
        "batch_size": int(constant("batch_size") or 0),
        "epochs": epochs,
        "dataset": {"name": FROM_DATAFRAME, "features": [f"x_{k}" for k in range(1, n + 1)]},
    }


# --- selecting columns --------------------------------------------------------------------


def _value_columns(columns: Sequence[str]) -> list[str]:
    return [
        c for c in columns if not c.endswith(EXACT_SUFFIX) and c not in KEYS and c not in RUN_WIDE
    ]


def _expand(names: Iterable[str], available: Sequence[str]) -> dict[str, list[str]]:
    """Each name → the columns it means: itself, or a field's columns (``w_after`` →
    ``w_after_1`` …). Names matching nothing map to an empty list."""
    fields = {f.name for f in FIELDS}
    out = {}
    for name in names:
        if name in available:
            out[name] = [name]
        elif name in fields:
            prefix = name + "_"
            out[name] = [
                c for c in available if c.startswith(prefix) and c[len(prefix) :].isdigit()
            ]
        else:
            out[name] = []
    return out


def _select(
    a: Side, b: Side, columns: Sequence[str] | None, ignore: Sequence[str]
) -> tuple[list[str], set[str]]:
    """The columns to compare, in A's order, and the metadata keys to ignore."""
    in_a, in_b = _value_columns(a.columns), _value_columns(b.columns)
    every = in_a + [c for c in in_b if c not in in_a]
    everywhere = every + [c for c in (*KEYS, *RUN_WIDE) if c in a.columns or c in b.columns]
    if columns is not None:
        chosen = []
        for name, cols in _expand(columns, everywhere).items():
            if not cols:
                raise TraceError(f"no column {name!r} in either trace")
            chosen += [c for c in cols if c not in chosen and c not in KEYS]
    else:
        chosen = every
    flat = set(_flatten(a.meta)) | set(_flatten(b.meta))
    meta_keys = flat | {k.rsplit(".", 1)[0] for k in flat if "." in k}
    ignored_meta = set()
    for name, cols in _expand(ignore, everywhere).items():
        if name in meta_keys:
            ignored_meta.add(name)
        elif not cols:
            raise TraceError(f"nothing named {name!r} to ignore: no such column or metadata key")
        chosen = [c for c in chosen if c not in cols]
    for side, other in ((a, b), (b, a)):
        missing = [c for c in chosen if c not in side.columns]
        if missing:
            shown = ", ".join(missing[:6]) + (" …" if len(missing) > 6 else "")
            raise TraceError(
                f"column(s) {shown} are in {other.label} but not in {side.label}; "
                "compare the common columns with --columns, or --ignore these"
            )
    return chosen, ignored_meta


# --- comparing ----------------------------------------------------------------------------


def compare_traces(
    a: TraceLike,
    b: TraceLike,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
    tolerances: Mapping[str, Tolerance | tuple[float, float]] | None = None,
    columns: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
) -> Comparison:
    """Compare trace ``b`` with the reference ``a``, aligned on (step, sample).

    ``columns`` restricts the comparison, ``ignore`` leaves columns or metadata keys out; both
    take column names (``o2_1``) or field names (``w_after`` for every ``w_after_k``).
    ``tolerances`` sets ``(rtol, atol)`` per column or field, over the global ones.

    >>> r = compare_traces("golden.parquet", "traces/new-run", rtol=1e-12)  # doctest: +SKIP
    >>> r.identical, r.first  # doctest: +SKIP
    """
    side_a, side_b = load_side(a, _label(a)), load_side(b, _label(b))
    _check_versions(side_a, side_b)
    chosen, ignored_meta = _select(side_a, side_b, columns, ignore)
    default = Tolerance(rtol, atol)
    per_column = _tolerances(tolerances or {}, chosen, default)
    fa, fb, only_a, only_b = _align(_needed(side_a, chosen), _needed(side_b, chosen))
    diffs = [
        d
        for col in chosen
        if (d := _compare_column(col, fa, fb, side_a, side_b, per_column[col])) is not None
    ]
    meta_compared = not (side_a.from_dataframe or side_b.from_dataframe)
    meta = _meta_diffs(side_a.meta, side_b.meta, ignored_meta) if meta_compared else []
    first = _first(diffs, fa, fb, chosen, only_a, only_b)
    return Comparison(
        a=side_a.info(),
        b=side_b.info(),
        identical=not (diffs or only_a or only_b or meta),
        rows_compared=len(fa),
        columns=chosen,
        tolerance=default,
        first=first,
        column_diffs=sorted(diffs, key=lambda d: (d.first_step, d.first_sample)),
        only_a=only_a,
        only_b=only_b,
        metadata=meta,
        metadata_compared=meta_compared,
    )


def _label(source: TraceLike) -> str | None:
    if isinstance(source, str | Path):
        return str(source)
    path = getattr(source, "path", None)
    return str(path) if path is not None else None


def _check_versions(a: Side, b: Side) -> None:
    va, vb = str(a.meta.get("format_version", "")), str(b.meta.get("format_version", ""))
    if va.split(".")[0] != vb.split(".")[0]:
        raise TraceError(
            f"{a.label} is in trace format {va} and {b.label} in {vb}; traces of different "
            "format versions cannot be compared: record both with the same steptrace"
        )


def _tolerances(
    given: Mapping[str, Tolerance | tuple[float, float]], chosen: list[str], default: Tolerance
) -> dict[str, Tolerance]:
    out = dict.fromkeys(chosen, default)
    for name, cols in _expand(given, chosen).items():
        if not cols:
            raise TraceError(f"a tolerance is given for {name!r}, which is not compared")
        tol = given[name]
        tol = tol if isinstance(tol, Tolerance) else Tolerance(*tol)
        out.update(dict.fromkeys(cols, tol))
    return out


def _needed(side: Side, chosen: list[str]) -> tuple[Side, pd.DataFrame]:
    """The side's keys, chosen columns and their exact twins: all a comparison reads."""
    twins = [c + EXACT_SUFFIX for c in chosen if c + EXACT_SUFFIX in side.columns]
    return side, side.read([*KEYS, *chosen, *twins])


def _align(
    a: tuple[Side, pd.DataFrame], b: tuple[Side, pd.DataFrame]
) -> tuple[pd.DataFrame, pd.DataFrame, list[Any], list[Any]]:
    """Both frames restricted to their common (step, sample) rows, in that order, and the
    keys found on one side only."""
    (_, fa), (_, fb) = a, b
    if len(fa) == len(fb) and all(np.array_equal(fa[k], fb[k]) for k in KEYS):
        return fa, fb, [], []  # the same rows in the same order: the usual case, and fast
    ia, ib = _keyed(*a), _keyed(*b)
    common = ia.index.intersection(ib.index, sort=True)
    only_a = [(int(s), int(n)) for s, n in ia.index.difference(ib.index, sort=True)]
    only_b = [(int(s), int(n)) for s, n in ib.index.difference(ia.index, sort=True)]
    return ia.loc[common], ib.loc[common], only_a, only_b


def _keyed(side: Side, frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.set_index(list(KEYS), drop=False).sort_index(kind="stable")
    dup = frame.index.duplicated()
    if dup.any():
        step, sample = frame.index[dup][0]
        raise TraceError(f"{side.label} has several rows for step {step}, sample {sample}")
    return frame


FloatArray: TypeAlias = npt.NDArray[np.float64]


def _compare_column(
    col: str, fa: pd.DataFrame, fb: pd.DataFrame, a: Side, b: Side, tol: Tolerance
) -> ColumnDiff | None:
    exact = col + EXACT_SUFFIX
    if exact in fa.columns and exact in fb.columns:
        differ, abs_err, rel_err = _exact_cells(fa[exact].to_numpy(), fb[exact].to_numpy(), tol)
    elif pd.api.types.is_numeric_dtype(fa[col]) and pd.api.types.is_numeric_dtype(fb[col]):
        va, vb = (f[col].to_numpy(dtype=np.float64, na_value=np.nan) for f in (fa, fb))
        differ, abs_err, rel_err = _float_cells(va, vb, tol)
    else:
        va, vb = fa[col].to_numpy(dtype=object), fb[col].to_numpy(dtype=object)
        pairs = zip(va, vb, strict=True)
        differ = np.array([x != y and not (_isnan(x) and _isnan(y)) for x, y in pairs])
        abs_err = rel_err = np.full(len(va), np.nan)
    count = int(np.count_nonzero(differ))
    if not count:
        return None
    i = int(np.flatnonzero(differ)[0])
    return ColumnDiff(
        column=col,
        differing=count,
        compared=len(differ),
        first_step=int(fa["step"].iloc[i]),
        first_sample=int(fa["sample"].iloc[i]),
        a=_cell_text(fa, col, i, a),
        b=_cell_text(fb, col, i, b),
        max_abs=_nanmax(abs_err),
        max_rel=_nanmax(rel_err),
    )


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _nanmax(values: FloatArray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.max()) if finite.size else math.nan


def _float_cells(
    a: FloatArray, b: FloatArray, tol: Tolerance
) -> tuple[Any, FloatArray, FloatArray]:
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        abs_err = np.where(a == b, 0.0, np.abs(b - a))
        rel_err = np.where(a == b, 0.0, abs_err / np.abs(a))
        both_nan = np.isnan(a) & np.isnan(b)
        same = (a == b) | both_nan | (abs_err <= tol.atol + tol.rtol * np.abs(a))
    abs_err[both_nan] = 0.0
    rel_err[both_nan] = 0.0
    # A NaN against a number is as far apart as two values get.
    one_nan = np.isnan(a) != np.isnan(b)
    abs_err[one_nan] = np.inf
    rel_err[one_nan] = np.inf
    return ~same, abs_err, rel_err


def _exact_cells(
    a: npt.NDArray[Any], b: npt.NDArray[Any], tol: Tolerance
) -> tuple[Any, FloatArray, FloatArray]:
    """Compare exact rational texts; only texts that differ are parsed as fractions."""
    differ = a != b
    abs_err, rel_err = np.zeros(len(a)), np.zeros(len(a))
    atol, rtol = Fraction(tol.atol), Fraction(tol.rtol)
    for i in np.flatnonzero(differ):
        qa, qb = _rational(a[i]), _rational(b[i])
        err = abs(qb - qa)
        differ[i] = err > atol + rtol * abs(qa)
        abs_err[i] = float(err)
        rel_err[i] = float(err / abs(qa)) if qa else (math.inf if err else 0.0)
    return differ, abs_err, rel_err


def _rational(text: Any) -> Fraction:
    try:
        return Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        raise TraceError(f"an exact value column holds {text!r}, which is not a rational") from None


def _cell_text(frame: pd.DataFrame, col: str, i: int, side: Side) -> str:
    value = frame[col].iloc[i]
    exact = frame[col + EXACT_SUFFIX].iloc[i] if col + EXACT_SUFFIX in frame.columns else None
    if isinstance(value, float | np.floating):
        return format_value(float(value), exact if isinstance(exact, str) else None, side.numerics)
    return str(value.item() if isinstance(value, np.generic) else value)


def _difference(fa: pd.DataFrame, fb: pd.DataFrame, col: str, i: int) -> float | None:
    exact = col + EXACT_SUFFIX
    if exact in fa.columns and exact in fb.columns:
        return float(_rational(fb[exact].iloc[i]) - _rational(fa[exact].iloc[i]))
    va, vb = fa[col].iloc[i], fb[col].iloc[i]
    if isinstance(va, int | float | np.number) and isinstance(vb, int | float | np.number):
        return float(vb) - float(va)
    return None


def _first(
    diffs: list[ColumnDiff],
    fa: pd.DataFrame,
    fb: pd.DataFrame,
    chosen: list[str],
    only_a: list[tuple[int, int]],
    only_b: list[tuple[int, int]],
) -> Divergence | None:
    """The earliest (step, sample) where the traces part; at a row, the first column in
    trace order."""
    candidates: list[tuple[tuple[int, int, int], Divergence]] = []
    if diffs:
        order = {c: k for k, c in enumerate(chosen)}
        d = min(diffs, key=lambda d: (d.first_step, d.first_sample, order[d.column]))
        i = int(np.flatnonzero((fa["step"] == d.first_step) & (fa["sample"] == d.first_sample))[0])
        diff = _difference(fa, fb, d.column, i)
        div = Divergence(d.first_step, d.first_sample, d.column, d.a, d.b, diff)
        candidates.append(((d.first_step, d.first_sample, 0), div))
    for rows, kind in ((only_a, "only_a"), (only_b, "only_b")):
        if rows:
            step, sample = rows[0]
            div = Divergence(step, sample, None, None, None, None, kind)
            candidates.append(((step, sample, 1), div))
    return min(candidates, key=lambda c: c[0])[1] if candidates else None


def _flatten(meta: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in meta.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _meta_diffs(a: dict[str, Any], b: dict[str, Any], ignored: set[str]) -> list[MetaDiff]:
    """Settings that differ. Keys present on one side only are skipped: a newer steptrace
    may record more, and that alone does not make two runs different."""
    fa, fb = _flatten(a), _flatten(b)
    skip = INFORMATIONAL | ignored
    return [
        MetaDiff(k, fa[k], fb[k])
        for k in fa
        if k in fb and k not in skip and k.split(".")[0] not in skip and fa[k] != fb[k]
    ]


# --- formatting ---------------------------------------------------------------------------


NOT_COMPARED = "Settings not compared: a DataFrame carries no run metadata."
#: Longest value text shown in the table (exact rationals can run to thousands of digits).
CELL_WIDTH = 24
#: Longest value text shown in the first divergence line.
LINE_WIDTH = 80


def _short(text: str | None, width: int) -> str:
    text = "" if text is None else text
    return text if len(text) <= width else text[: width - 1] + "…"


def _num(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.3g}"


def _steps(rows: list[tuple[int, int]]) -> str:
    first, last = rows[0], rows[-1]
    if len(rows) == 1:
        return f"step {first[0]} sample {first[1]}"
    return f"step {first[0]} sample {first[1]} … step {last[0]} sample {last[1]}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]


def describe_divergence(d: Divergence, a_name: str = "A", b_name: str = "B") -> str:
    """``step 0, sample 0, column o2_1: A 0, B -3.469446951953614e-17 (B - A = …)``"""
    where = f"step {d.step}, sample {d.sample}"
    if d.kind == "only_a":
        return f"{where}: row in {a_name} only"
    if d.kind == "only_b":
        return f"{where}: row in {b_name} only"
    diff = "" if d.difference is None else f" ({b_name} - {a_name} = {d.difference!r})"
    a, b = _short(d.a, LINE_WIDTH), _short(d.b, LINE_WIDTH)
    return f"{where}, column {d.column}: {a_name} {a}, {b_name} {b}{diff}"


def format_comparison(
    r: Comparison, a_name: str = "A", b_name: str = "B", max_rows: int = 20, title: str = ""
) -> str:
    """The report people read: verdict, first divergence, metadata, a per-column table
    (columns in order of their first difference), rows on one side only."""
    tol = r.tolerance
    rule = "exact equality" if tol == Tolerance() else f"rtol {tol.rtol:g}, atol {tol.atol:g}"
    head = [f"{a_name}: {r.a.describe()}", f"{b_name}: {r.b.describe()}"]
    if r.identical:
        size = f"{len(r.columns)} columns × {r.rows_compared} rows"
        note = [] if r.metadata_compared else [NOT_COMPARED]
        return "\n".join([f"Traces are identical ({size}, {rule}).", *head, *note])
    out = [title or "Traces differ.", *head]
    if r.first is not None:
        out.append("First divergence: " + describe_divergence(r.first, a_name, b_name))
    if r.metadata:
        out.append("Settings that differ:")
        out += [f"  {m.key}: {a_name} {m.a!r}, {b_name} {m.b!r}" for m in r.metadata]
    if r.column_diffs:
        out.append(
            f"Values that differ ({rule}): {len(r.column_diffs)} of {len(r.columns)} columns, "
            f"{r.rows_compared} rows compared"
        )
        rows = [
            [
                d.column,
                f"{d.differing}/{d.compared}",
                str(d.first_step),
                str(d.first_sample),
                _short(d.a, CELL_WIDTH),
                _short(d.b, CELL_WIDTH),
                _num(d.max_abs),
                _num(d.max_rel),
            ]
            for d in r.column_diffs[:max_rows]
        ]
        head_row = ["column", "cells", "first step", "sample", a_name, b_name, "max abs", "max rel"]
        out += _table(head_row, rows)
        if len(r.column_diffs) > max_rows:
            out.append(f"  … and {len(r.column_diffs) - max_rows} more columns")
    for keys, name in ((r.only_a, a_name), (r.only_b, b_name)):
        if keys:
            out.append(f"Rows in {name} only: {len(keys)} ({_steps(keys)})")
    if not r.metadata_compared:
        out.append(NOT_COMPARED)
    return "\n".join(out)
