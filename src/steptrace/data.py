"""Datasets: the article's three patients, and users' CSV or Parquet files.

Every value is kept as an exact rational; each run then rounds it into its own number system.
A CSV cell such as ``0.1`` is therefore exactly one tenth in an exact run.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow.parquet as pq

from .errors import ConfigError, DatasetError
from .numerics import Numerics, magnitude, parse_exact

__all__ = ["Dataset", "load_dataset", "seed_dataset"]


@dataclass(frozen=True)
class Dataset:
    """Rows of (data input, data output), every value an exact rational. A data output has one
    value per target column (one per output neuron of the model)."""

    name: str
    features: tuple[str, ...]
    targets: tuple[str, ...]
    inputs: tuple[tuple[Fraction, ...], ...]
    outputs: tuple[tuple[Fraction, ...], ...]
    #: Where it was loaded from: ``"seed"`` or the file's absolute path (used by --resume).
    source: str = "seed"

    def __len__(self) -> int:
        return len(self.outputs)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def sha256(self) -> str:
        """Content hash over the names and exact values: same data, same hash, any file type."""
        h = hashlib.sha256()
        h.update("\x1f".join((*self.features, *self.targets)).encode())
        for x, y in zip(self.inputs, self.outputs, strict=True):
            h.update(("\x1e" + "\x1f".join(str(v) for v in (*x, *y))).encode())
        return h.hexdigest()

    def in_numerics(
        self, numerics: Numerics
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The inputs and outputs rounded into ``numerics``; refuses values beyond its range."""
        self.check_range(numerics)
        xs = [tuple(numerics.make(v) for v in x) for x in self.inputs]
        ys = [tuple(numerics.make(v) for v in y) for y in self.outputs]
        return xs, ys

    def check_range(self, numerics: Numerics) -> None:
        """Refuse values beyond the finite range of ``numerics`` (exact runs: of float64, which
        their float64 columns record)."""
        for row, (x, y) in enumerate(zip(self.inputs, self.outputs, strict=True)):
            for name, q in zip((*self.features, *self.targets), (*x, *y), strict=True):
                if not numerics.fits(q):
                    size = magnitude(q)
                    hint = " or use --numerics float64" if numerics.name == "float32" else ""
                    system = "float64 (exact runs record it too)" if numerics.is_exact else ""
                    raise DatasetError(
                        f"{self.name}: value {size} in column {name!r}, row {row} is too "
                        f"large for {system or numerics.name}; rescale the column{hint}"
                    )

    def as_arrays(self, numerics: Numerics) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """Inputs (rows × features) and outputs (rows × targets) as arrays of the number
        system (object arrays of ``Fraction`` for exact)."""
        xs, ys = self.in_numerics(numerics)
        dtype = numerics.dtype if numerics.dtype is not None else object
        x = np.empty((len(self), self.n_features), dtype=dtype)
        y = np.empty((len(self), len(self.targets)), dtype=dtype)
        x[:], y[:] = xs, ys
        return x, y


def seed_dataset() -> Dataset:
    """The article's three patients: (broccoli, Tagada strawberries, workout hours) → shape.

    Output 0 is *bad shape*, 1 is *good shape*.
    """
    rows = [((100, 2000, 100), 0), ((200, 0, 0), 1), ((0, 2000, 3000), 1)]
    return Dataset(
        name="seed",
        features=("broccoli", "tagada_strawberries", "workout_hours"),
        targets=("good_shape",),
        inputs=tuple(tuple(Fraction(v) for v in x) for x, _ in rows),
        outputs=tuple((Fraction(y),) for _, y in rows),
    )


def load_dataset(
    source: str | Path,
    target: str | Sequence[str] | None = None,
    features: Sequence[str] | None = None,
) -> Dataset:
    """Load ``"seed"`` (the article's data), or a CSV or Parquet file of numeric columns.

    ``target`` names the output column(s), one per output neuron (default: the last column;
    several as a list or comma-separated text ``"a,b"``); ``features`` the input columns
    (default: every other column), in the order the weights follow.

    >>> load_dataset("seed").features
    ('broccoli', 'tagada_strawberries', 'workout_hours')
    """
    targets = _names(target)
    if str(source) == "seed":
        seed = seed_dataset()
        other_target = targets is not None and tuple(targets) != seed.targets
        if other_target or (features is not None and tuple(features) != seed.features):
            raise DatasetError(
                "--target and --features choose columns of a dataset file; the seed dataset's "
                f"columns are fixed: {', '.join(seed.features)} → {', '.join(seed.targets)}"
            )
        return seed
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"dataset {str(path)!r} does not exist (use 'seed' for the article's)")
    if path.is_dir():
        raise DatasetError(f"dataset {str(path)!r} is a folder; give a .csv or .parquet file")
    _, frame = _read_table(path)
    columns = [str(c) for c in frame.columns]
    if len(columns) < 2:
        raise DatasetError(f"{path.name}: needs at least one feature column and a target column")
    targets = [columns[-1]] if targets is None else targets
    for t in targets:
        if t not in columns:
            raise DatasetError(f"{path.name}: no target column {t!r} (columns: {columns})")
    if len(set(targets)) != len(targets):
        raise DatasetError(f"{path.name}: a target column is named twice in {targets}")
    features = [c for c in columns if c not in targets] if features is None else list(features)
    missing = [c for c in features if c not in columns]
    if missing:
        raise DatasetError(f"{path.name}: no feature column(s) {missing} (columns: {columns})")
    if not features:
        raise DatasetError(f"{path.name}: no feature columns besides the target(s) {targets}")
    both = [c for c in targets if c in features]
    if both:
        raise DatasetError(f"{path.name}: column {both[0]!r} cannot be both feature and target")
    if len(frame) == 0:
        raise DatasetError(f"{path.name}: the dataset has no rows")
    exact = {c: _exact_column(frame[c], c, path.name) for c in (*features, *targets)}
    return Dataset(
        name=path.stem,
        features=tuple(features),
        targets=tuple(targets),
        inputs=tuple(zip(*(exact[c] for c in features), strict=True)),
        outputs=tuple(zip(*(exact[c] for c in targets), strict=True)),
        source=str(path.resolve()),
    )


def _names(target: str | Sequence[str] | None) -> list[str] | None:
    """Target column names from ``"a,b"`` or a list (None: the default)."""
    if target is None:
        return None
    names = target.split(",") if isinstance(target, str) else list(target)
    names = [n.strip() for n in names]
    if not names or any(not n for n in names):
        raise DatasetError(f"--target names the output columns, comma-separated: got {target!r}")
    return names


def _read_table(path: Path) -> tuple[list[str], pd.DataFrame]:
    """The file's column names as written (duplicates included) and its rows."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                header = [c.strip() for c in next(csv.reader(f), [])]
            if not header:
                raise DatasetError(f"{path.name}: the file is empty")
            _unique(header, path)
            # Read cells as text so that "0.1" becomes exactly 1/10, not a binary float.
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
            if not isinstance(frame.index, pd.RangeIndex):  # surplus values became an index
                raise DatasetError(
                    f"{path.name}: row 0 has more values than the header's {len(header)} "
                    "columns; give every row one value per column"
                )
            return header, frame
        if suffix in (".parquet", ".pq"):
            header = list(pq.read_schema(path).names)
            _unique(header, path)  # before pyarrow, which cannot read duplicate columns
            return header, pd.read_parquet(path)
    except DatasetError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{path.name}: cannot be read as {suffix[1:]}: {first}") from None
    raise DatasetError(f"{path.name}: unknown dataset type {suffix!r}; use .csv or .parquet")


def _unique(header: list[str], path: Path) -> None:
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise DatasetError(
            f"{path.name}: duplicate column(s) {', '.join(duplicated)}; give each column its "
            "own name"
        )


def _exact_column(values: pd.Series, column: str, file: str) -> list[Fraction]:
    out: list[Fraction] = []
    for row, v in enumerate(values.tolist()):
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
