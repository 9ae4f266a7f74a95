"""CSV and Parquet dataset files: a column per feature or target, a row per sample.

A CSV file's cells are read as text, so ``0.1`` is exactly one tenth; a Parquet file's floats
are the binary values they hold. An image is a CSV row too: its pixels are the feature columns,
row-major (channel, row, column), and the model file's input layer gives their shape.
"""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from ..errors import DatasetError
from .table import Table, exact_cells, unique

__all__ = ["TABLE_SUFFIXES", "read_frame", "read_table"]

#: The file types read here.
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def read_table(path: Path, file: str | None = None) -> Table:
    """The columns of the CSV or Parquet file ``path``; errors name it ``file`` (its name)."""
    file = file or path.name
    frame = read_frame(path, file)

    def exact(column: str) -> list[Fraction]:
        return exact_cells(frame[column].tolist(), column, file)

    return Table(file, tuple(str(c) for c in frame.columns), len(frame), exact)


def read_frame(path: Path, file: str) -> pd.DataFrame:
    """The file's rows, its columns checked to have one name each (CSV cells as text)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return _read_csv(path, file)
        if suffix in (".parquet", ".pq"):
            unique(list(pq.read_schema(path).names), file)  # pyarrow refuses duplicates itself
            return pd.read_parquet(path)
    except DatasetError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{file}: cannot be read as {suffix[1:]}: {first}") from None
    raise DatasetError(f"{file}: unknown dataset type {suffix!r}; use .csv or .parquet")


def _read_csv(path: Path, file: str) -> pd.DataFrame:
    with path.open(newline="", encoding="utf-8") as f:
        header = [c.strip() for c in next(csv.reader(f), [])]
    if not header:
        raise DatasetError(f"{file}: the file is empty")
    unique(header, file)
    # Read cells as text so that "0.1" becomes exactly 1/10, not a binary float.
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    if not isinstance(frame.index, pd.RangeIndex):  # surplus values became an index
        raise DatasetError(
            f"{file}: row 0 has more values than the header's {len(header)} columns; give "
            "every row one value per column"
        )
    return frame
