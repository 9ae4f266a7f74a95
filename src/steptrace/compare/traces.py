"""Comparing two traces value by value, and finding where they first part.

Rows are aligned on ``(step, sample)`` and compared column by column. Floats are equal when
``|b - a| <= atol + rtol * |a|`` (``a`` is the reference, the first trace or the golden); the
default tolerances are zero, so equality is exact. Exact-mode values are compared by their
rational text (``<col>_exact``) when both traces have it, so no rounding hides a difference.
NaN equals NaN only when both traces hold NaN in the same cell.

Run-wide settings (numerics, learning rate, epochs, initial weights, dataset …) are compared
through the runs' metadata; informational fields (run id, name, creation time, who recorded
it, steptrace version) never are.

The sides are read by :mod:`steptrace.compare.sides`, their cells compared by
:mod:`steptrace.compare.cells` and the result reported by :mod:`steptrace.compare.report`.

>>> result = compare_traces("traces/golden/article-exact.parquet",
...                         "traces/golden/article-float64.parquet")  # doctest: +SKIP
>>> result.first.column, result.first.a, result.first.b  # doctest: +SKIP
('o2_1', '0', '-3.469446951953614e-17')
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SteptraceError, TraceError
from ..trace.flight import TRIGGERS_KEY
from ..trace.keep import RECORD_KEY
from ..trace.schema import EXACT_SUFFIX, expand, tensors_of
from .cells import Tolerance, cell_text, cells, difference, nanmax
from .report import comparison_dict, format_comparison
from .sides import KEYS, Side, SideInfo, TraceLike, load_side, write_trace_file

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

#: Columns holding one run-wide value; compared through the metadata, not cell by cell.
RUN_WIDE = ("run_id", "numerics", "batch_size")
#: Rows of each side held in memory at once: longer traces are compared a window of steps at a
#: time, so a diff's memory does not grow with the traces (one row group; larger windows were
#: not faster, see docs/benchmarks.md).
WINDOW_ROWS = 65_536
#: Metadata that describes a recording rather than its settings; never compared.
INFORMATIONAL = frozenset(
    {
        "run_id",
        "name",
        "created",
        "recorded_by",  # which host and process: never the same twice
        # The other framework's own version, like steptrace's: its numbers are compared.
        "recorded_with.version",
        "steptrace_version",
        "format_version",
        "status",
        "reason",
        "summary",
        "dataset.name",
        "source",
        # The file a model came from, and the layout of the columns: both follow from what
        # is compared (the model's layers and parameters, the dataset).
        "model.name",
        "tensors",
    }
)


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
    #: Columns compared with their own tolerance (``tolerances=``), not :attr:`tolerance`.
    column_tolerances: dict[str, Tolerance] = field(default_factory=dict)
    #: The traces' tensors and their shapes, which name an image's values (``o2[1, 3, 0]``);
    #: not part of :meth:`to_dict`.
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: When a run holds only some steps (docs/trace-format.md, "Choosing what is recorded"):
    #: the steps both hold (the ones compared), A's and B's.
    steps_held: tuple[int, int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON types; non-finite floats become "inf", "-inf", "nan"."""
        return comparison_dict(self)

    def format(
        self, a_name: str = "A", b_name: str = "B", max_rows: int = 20, title: str = ""
    ) -> str:
        """A compact report, first divergence first. See :func:`format_comparison`."""
        return format_comparison(self, a_name, b_name, max_rows, title)


# --- selecting columns --------------------------------------------------------------------


def _value_columns(columns: Sequence[str]) -> list[str]:
    return [
        c for c in columns if not c.endswith(EXACT_SUFFIX) and c not in KEYS and c not in RUN_WIDE
    ]


def _expand(names: Iterable[str], available: Sequence[str]) -> dict[str, list[str]]:
    """Each name → the columns it means: itself, a tensor's columns (``w2_after`` →
    ``w2_after_1_1`` …) or a family's (``w_after`` → every layer's); see
    :func:`steptrace.trace.schema.expand`. Names matching nothing map to an empty list."""
    return {name: expand(name, available) for name in names}


def _select(
    a: Side,
    b: Side,
    columns: Sequence[str] | None,
    ignore: Sequence[str],
    common: bool = False,
) -> tuple[list[str], set[str]]:
    """The columns to compare, in A's order (with ``common``, by default the ones both
    hold), and the metadata keys to ignore."""
    in_a, in_b = _value_columns(a.columns), _value_columns(b.columns)
    every = in_a + [c for c in in_b if c not in in_a]
    if common and columns is None:
        every = [c for c in in_a if c in set(in_b)]
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
    meta_keys = {prefix for k in flat for prefix in _prefixes(k)}
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
                f"column(s) {shown} are in {other.label} but not in {side.label}"
                f"{_models_differ(a, b)}; compare the common columns with --columns, or "
                "--ignore these"
            )
    return chosen, ignored_meta


def _models_differ(a: Side, b: Side) -> str:
    """`` (their models differ: A input → …, B input → …)`` when the layers do, else ``""``."""
    chains = [_flatten(side.meta).get("model.layers") for side in (a, b)]
    if None in chains or chains[0] == chains[1]:
        return ""
    return f" (their models differ: {a.label} {chains[0]}, {b.label} {chains[1]})"


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
    progress: Callable[[int, int], None] | None = None,
) -> Comparison:
    """Compare trace ``b`` with the reference ``a``, aligned on (step, sample).

    Traces of any stack of layers, and of trace format 1 (read under format 2's names),
    compare alike. ``columns`` restricts the comparison, ``ignore`` leaves columns or metadata
    keys (``seed``, ``model.layers[4]``) out; both take column names (``w4_after_1_2``),
    tensor names (``w4_after``: its columns) or families (``w_after``: every layer's).
    ``tolerances`` sets ``(rtol, atol)`` per column, tensor or family, over the global ones.
    ``progress(done, total)`` is called after each window of steps compared (long traces are
    compared :data:`WINDOW_ROWS` rows at a time).

    >>> r = compare_traces("golden.parquet", "traces/new-run", rtol=1e-12)  # doctest: +SKIP
    >>> r.identical, r.first  # doctest: +SKIP
    """
    side_a, side_b = load_side(a, _label(a)), load_side(b, _label(b))
    # A run that keeps some steps or tensors is compared where both hold values.
    selected = any(RECORD_KEY in side.meta for side in (side_a, side_b))
    chosen, ignored_meta = _select(side_a, side_b, columns, ignore, common=selected)
    if selected:
        ignored_meta |= {"tensors", RECORD_KEY, TRIGGERS_KEY}
    default = Tolerance(rtol, atol)
    per_column = _tolerances(tolerances or {}, chosen, default)
    found = {col: _Column() for col in chosen}
    rows_compared, only_a, only_b, first = 0, [], [], None
    windows = _windows(side_a, side_b)
    for done, steps in enumerate(windows, 1):
        fa, fb, window_a, window_b = _align(side_a, side_b, chosen, steps)
        for col in chosen:
            found[col].add(*_compare_column(col, fa, fb, side_a, side_b, per_column[col]))
        # Windows come in step order: the first window that differs holds the first divergence.
        diffs = [d for c in found.values() if (d := c.window_diff) is not None]
        first = first or _first(diffs, fa, fb, chosen, window_a, window_b)
        rows_compared += len(fa)
        only_a += window_a
        only_b += window_b
        if progress is not None:
            progress(done, len(windows))
    held = None
    if selected:
        only_a, only_b, held = _held_by_both(side_a, side_b, only_a, only_b)
    meta_compared = not (side_a.from_dataframe or side_b.from_dataframe)
    meta = _meta_diffs(side_a.meta, side_b.meta, ignored_meta) if meta_compared else []
    column_diffs = [d for c in found.values() if (d := c.result(rows_compared)) is not None]
    return Comparison(
        a=side_a.info(),
        b=side_b.info(),
        identical=not (column_diffs or only_a or only_b or meta),
        rows_compared=rows_compared,
        columns=chosen,
        tolerance=default,
        first=first,
        column_diffs=sorted(column_diffs, key=_first_difference(chosen)),
        only_a=only_a,
        only_b=only_b,
        metadata=meta,
        column_tolerances={c: t for c, t in per_column.items() if t != default},
        metadata_compared=meta_compared,
        shapes=_shapes(side_a, side_b),
        steps_held=held,
    )


def _held_by_both(
    a: Side, b: Side, only_a: list[tuple[int, int]], only_b: list[tuple[int, int]]
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], tuple[int, int, int]]:
    """Rows on one side only, but for the steps the other side does not hold; and how many
    steps both, A and B hold."""
    steps_a = set(a.read(["step"])["step"].tolist())
    steps_b = set(b.read(["step"])["step"].tolist())
    only_a = [k for k in only_a if k[0] in steps_b]
    only_b = [k for k in only_b if k[0] in steps_a]
    return only_a, only_b, (len(steps_a & steps_b), len(steps_a), len(steps_b))


def _shapes(a: Side, b: Side) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, A's where both traces list it."""
    out: dict[str, tuple[int, ...]] = {}
    for side in (b, a):
        try:
            out.update((t.name, t.shape) for t in tensors_of(side.meta))
        except SteptraceError:  # metadata without tensors: columns are named by their name
            continue
    return out


def _label(source: TraceLike) -> str | None:
    if isinstance(source, str | Path):
        return str(source)
    path = getattr(source, "path", None)
    return str(path) if path is not None else None


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


def _windows(a: Side, b: Side) -> list[tuple[int, int] | None]:
    """The step ranges ``[lo, hi)`` compared one after the other, so that memory holds about
    :data:`WINDOW_ROWS` rows of each side whatever the traces' length; ``[None]`` (everything
    at once) when both are that short."""
    rows = max(a.rows, b.rows)
    spans = [s for s in (a.steps, b.steps) if s is not None]
    if rows <= WINDOW_ROWS or not spans:
        return [None]
    lo, hi = min(s[0] for s in spans), max(s[1] for s in spans) + 1
    width = max(1, (hi - lo) * WINDOW_ROWS // rows)
    return [(start, min(start + width, hi)) for start in range(lo, hi, width)]


@dataclass
class _Column:
    """One column's differences, window after window (windows in step order)."""

    diff: ColumnDiff | None = None  # counts and the first differing cell, so far
    window_diff: ColumnDiff | None = None  # the last window's
    max_abs: float = math.nan
    max_rel: float = math.nan

    def add(self, diff: ColumnDiff | None, max_abs: float, max_rel: float) -> None:
        self.window_diff = diff
        self.max_abs = nanmax(np.array([self.max_abs, max_abs]))
        self.max_rel = nanmax(np.array([self.max_rel, max_rel]))
        if diff is not None and self.diff is not None:
            diff = replace(self.diff, differing=self.diff.differing + diff.differing)
        self.diff = diff or self.diff

    def result(self, rows_compared: int) -> ColumnDiff | None:
        """The column's :class:`ColumnDiff` over every window (None if no cell differs)."""
        if self.diff is None:
            return None
        return replace(
            self.diff, compared=rows_compared, max_abs=self.max_abs, max_rel=self.max_rel
        )


def _read(side: Side, chosen: list[str], steps: tuple[int, int] | None) -> pd.DataFrame:
    """The side's keys, chosen columns and their exact twins: all a comparison reads."""
    twins = [c + EXACT_SUFFIX for c in chosen if c + EXACT_SUFFIX in side.columns]
    return side.read([*KEYS, *chosen, *twins], steps)


def _align(
    a: Side, b: Side, chosen: list[str], steps: tuple[int, int] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple[int, int]], list[tuple[int, int]]]:
    """Both sides' rows (of steps ``lo <= step < hi``, or all) restricted to their common
    (step, sample) keys, in that order, and the keys found on one side only.

    The order is the keys' whatever the rows' order on disk (a shuffled run visits a step's
    samples in any order), so that a window of steps and the whole trace name the same first
    differing row."""
    fa, fb = _read(a, chosen, steps), _read(b, chosen, steps)
    if len(fa) == len(fb) and all(np.array_equal(fa[k], fb[k]) for k in KEYS):
        # The same rows in the same order: the usual case, and fast.
        order = np.lexsort((fa["sample"].to_numpy(), fa["step"].to_numpy()))
        if (order[1:] < order[:-1]).any():
            fa, fb = fa.iloc[order], fb.iloc[order]
        return fa, fb, [], []
    ia, ib = _keyed(a, fa), _keyed(b, fb)
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


# --- comparing cells ----------------------------------------------------------------------


def _compare_column(
    col: str, fa: pd.DataFrame, fb: pd.DataFrame, a: Side, b: Side, tol: Tolerance
) -> tuple[ColumnDiff | None, float, float]:
    """How ``col`` differs among the aligned rows (None if no cell does), and its largest
    absolute and relative errors (NaN when there are none)."""
    differ, abs_err, rel_err = cells(col, fa, fb, tol)
    count = int(np.count_nonzero(differ))
    if not count:
        return None, nanmax(abs_err), nanmax(rel_err)
    i = int(np.flatnonzero(differ)[0])
    diff = ColumnDiff(
        column=col,
        differing=count,
        compared=len(differ),
        first_step=int(fa["step"].iloc[i]),
        first_sample=int(fa["sample"].iloc[i]),
        a=cell_text(fa, col, i, a),
        b=cell_text(fb, col, i, b),
        max_abs=nanmax(abs_err),
        max_rel=nanmax(rel_err),
    )
    return diff, diff.max_abs, diff.max_rel


# --- first divergence, settings -----------------------------------------------------------

#: What a step starts from: its learning rate, its data, and the parameters before it.
_STEP_INPUT = re.compile(r"lr|[xy](_\d+)+|[wb]\d+_before(_\d+)+")


def _first_difference(chosen: list[str]) -> Callable[[ColumnDiff], tuple[int, int, int, int]]:
    """Sort key of column diffs: by their first differing (step, sample), then, at one row,
    in the order the step computes them — what it starts from (:data:`_STEP_INPUT`) before
    what it computes, each in trace order. A changed initial weight so shows as that weight
    (``w4_before_1_2``), not as the first output it changed."""
    order = {c: k for k, c in enumerate(chosen)}

    def key(d: ColumnDiff) -> tuple[int, int, int, int]:
        computed = _STEP_INPUT.fullmatch(d.column) is None
        return (d.first_step, d.first_sample, computed, order[d.column])

    return key


def _first(
    diffs: list[ColumnDiff],
    fa: pd.DataFrame,
    fb: pd.DataFrame,
    chosen: list[str],
    only_a: list[tuple[int, int]],
    only_b: list[tuple[int, int]],
) -> Divergence | None:
    """The earliest (step, sample) where the traces part; at a row, the first column the
    step starts from or computes (see :func:`_first_difference`)."""
    candidates: list[tuple[tuple[int, int, int], Divergence]] = []
    if diffs:
        d = min(diffs, key=_first_difference(chosen))
        i = int(np.flatnonzero((fa["step"] == d.first_step) & (fa["sample"] == d.first_sample))[0])
        diff = difference(fa, fb, d.column, i)
        div = Divergence(d.first_step, d.first_sample, d.column, d.a, d.b, diff)
        candidates.append(((d.first_step, d.first_sample, 0), div))
    for rows, kind in ((only_a, "only_a"), (only_b, "only_b")):
        if rows:
            step, sample = rows[0]
            div = Divergence(step, sample, None, None, None, None, kind)
            candidates.append(((step, sample, 1), div))
    return min(candidates, key=lambda c: c[0])[1] if candidates else None


def _flatten(meta: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Metadata as ``{dotted key: value}``. A model's layers become their chain
    (``model.layers``: ``input → linear(bias=True, out=2) → relu …``) and each layer's
    initial parameters (``model.layers[2].weights``, layers numbered from 1 as the series
    numbers them), so a report names the layer whose start differs."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        elif key == "layers" and _is_layers(value):
            out[name] = " → ".join(_layer_text(layer) for layer in value)
            for k, layer in enumerate(value, 1):
                params = {p: layer[p] for p in _LAYER_PARAMS if p in layer}
                out.update(_flatten(params, f"{name}[{k}]."))
        else:
            out[name] = value
    return out


#: A layer's initial parameters in a model file; its other fields make up its type.
_LAYER_PARAMS = ("weights", "biases")


def _is_layers(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, Mapping) and "type" in v for v in value)


def _layer_text(layer: Mapping[str, Any]) -> str:
    """``linear(bias=True, out=2)``: a layer's type and settings, its parameters apart."""
    settings = [f"{k}={v}" for k, v in sorted(layer.items()) if k not in ("type", *_LAYER_PARAMS)]
    return str(layer["type"]) + (f"({', '.join(settings)})" if settings else "")


def _prefixes(key: str) -> list[str]:
    """``model.layers[2].weights`` → ``model``, ``model.layers``, ``model.layers[2]`` and
    itself: the names that select it."""
    return [key[: m.start()] for m in re.finditer(r"[.\[]", key)] + [key]


def _meta_diffs(a: dict[str, Any], b: dict[str, Any], ignored: set[str]) -> list[MetaDiff]:
    """Settings that differ. Keys present on one side only are skipped: a newer steptrace
    may record more, and that alone does not make two runs different."""
    fa, fb = _flatten(a), _flatten(b)
    skip = INFORMATIONAL | ignored
    return [
        MetaDiff(k, fa[k], fb[k])
        for k in fa
        if k in fb and fa[k] != fb[k] and not skip.intersection(_prefixes(k))
    ]
