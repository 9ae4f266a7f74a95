"""A dataset file's columns before they are chosen, and the choice: which are the features, which
the targets, checked the same way whatever the file type.

Every reader (CSV and Parquet, ``.npz`` arrays, a folder of PNG images) turns its file into a
:class:`Table`; only the chosen columns are then read exactly, so a column nobody uses may hold
anything.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DatasetError
from ..numerics import parse_exact
from .dataset import Dataset

__all__ = ["Table", "choose_columns", "exact_cells", "names", "unique", "value_names"]


@dataclass(frozen=True)
class Table:
    """Named columns of one dataset file, each read exactly on demand."""

    #: How errors name the file: ``d.csv``, ``digits/labels.csv``.
    file: str
    columns: tuple[str, ...]
    rows: int
    #: A column's values as exact rationals (raises :class:`DatasetError` on a bad cell).
    exact: Callable[[str], list[Fraction]]
    #: The targets when none are named; None: the last column, as in a CSV file.
    targets: tuple[str, ...] | None = None
    #: The columns that may become features when none are named (None: every column); the
    #: targets are left out of them either way.
    features: tuple[str, ...] | None = None


def choose_columns(
    table: Table,
    path: Path,
    target: Sequence[str] | None,
    features: Sequence[str] | None,
) -> Dataset:
    """The dataset of ``table``'s chosen columns, named after the file or folder ``path``,
    every value exact."""
    columns, file = list(table.columns), table.file
    if len(columns) < 2:
        raise DatasetError(f"{file}: needs at least one feature column and a target column")
    default = table.targets if table.targets is not None else columns[-1:]
    targets = list(target) if target is not None else list(default)
    for t in targets:
        if t not in columns:
            raise DatasetError(f"{file}: no target column {t!r} (columns: {_listed(columns)})")
    if len(set(targets)) != len(targets):
        raise DatasetError(f"{file}: a target column is named twice in {targets}")
    if features is None:
        allowed = table.features if table.features is not None else columns
        features = [c for c in allowed if c not in targets]
    missing = [c for c in features if c not in columns]
    if missing:
        raise DatasetError(f"{file}: no feature column(s) {missing} (columns: {_listed(columns)})")
    if not features:
        raise DatasetError(f"{file}: no feature columns besides the target(s) {targets}")
    both = [c for c in targets if c in features]
    if both:
        raise DatasetError(f"{file}: column {both[0]!r} cannot be both feature and target")
    if table.rows == 0:
        raise DatasetError(f"{file}: the dataset has no rows")
    exact = {c: table.exact(c) for c in (*features, *targets)}
    return Dataset(
        name=path.name if path.is_dir() else path.stem,
        features=tuple(features),
        targets=tuple(targets),
        inputs=tuple(zip(*(exact[c] for c in features), strict=True)),
        outputs=tuple(zip(*(exact[c] for c in targets), strict=True)),
        source=str(path.resolve()),
    )


def _listed(columns: list[str]) -> str:
    """The columns, in full unless an image's pixels make them thousands."""
    if len(columns) <= 12:
        return str(columns)
    return f"[{', '.join(map(repr, columns[:4]))}, …, {', '.join(map(repr, columns[-4:]))}]"


def names(target: str | Sequence[str] | None) -> list[str] | None:
    """Target column names from ``"a,b"`` or a list (None: the default)."""
    if target is None:
        return None
    listed = target.split(",") if isinstance(target, str) else list(target)
    listed = [n.strip() for n in listed]
    if not listed or any(not n for n in listed):
        raise DatasetError(f"--target names the output columns, comma-separated: got {target!r}")
    return listed


def value_names(name: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    """``x_1 … x_n``, or ``x_1_1_1 … x_C_H_W`` for images (1-based, row-major): the trace's
    names of a tensor's values (``trace.schema.Tensor.columns``, a layer this one may not
    import), so a dataset's pixels and the run's inputs go by the same names."""
    indices = itertools.product(*(range(1, n + 1) for n in shape))
    return tuple(name + "".join(f"_{i}" for i in index) for index in indices)


def unique(header: Sequence[str], file: str) -> None:
    """Refuse a file whose columns are not all differently named."""
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise DatasetError(
            f"{file}: duplicate column(s) {', '.join(duplicated)}; give each column its own name"
        )


def exact_cells(values: Sequence[Any], column: str, file: str) -> list[Fraction]:
    """A column's cells as exact rationals: texts digit for digit (``0.1`` is one tenth),
    floats as the binary value they hold, integers as they are."""
    out: list[Fraction] = []
    for row, v in enumerate(values):
        if v is None:
            raise DatasetError(f"{file}: column {column!r}, row {row} is missing")
        if isinstance(v, float) and not math.isfinite(v):
            raise DatasetError(
                f"{file}: column {column!r}, row {row} is {v}; values must be finite"
            )
        if isinstance(v, str) and v.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
            raise DatasetError(
                f"{file}: column {column!r}, row {row} is {v}; values must be finite"
            )
        if isinstance(v, str) and not v.strip():
            raise DatasetError(f"{file}: column {column!r}, row {row} is empty")
        try:
            out.append(parse_exact(v, what=f"column {column!r}, row {row}"))
        except ConfigError as exc:
            raise DatasetError(f"{file}: {exc} (columns must be numeric)") from None
    return out
