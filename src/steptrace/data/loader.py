"""``load_dataset``: a dataset by name or path, whatever it is stored as.

An embedded dataset by its name (``seed``, ``shapes``), a CSV or Parquet file, an ``.npz`` file
of arrays ``x`` and ``y``, or a folder of PNG images with its ``labels.csv``: each is read into
named columns, and the same choice of features and targets, with the same checks, makes the
dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import DatasetError
from .arrays import read_arrays
from .dataset import Dataset
from .embedded import EMBEDDED
from .pictures import LABELS, read_pictures
from .table import Table, choose_columns, names
from .tables import TABLE_SUFFIXES, read_table

__all__ = ["load_dataset"]

#: What --dataset may name, for the error that refuses anything else.
KINDS = "a .csv, .parquet or .npz file, or a folder of PNG images with labels.csv"


def load_dataset(
    source: str | Path,
    target: str | Sequence[str] | None = None,
    features: Sequence[str] | None = None,
) -> Dataset:
    """Load an embedded dataset (``"seed"``, the article's; ``"shapes"``, 8 × 8 images), a CSV,
    Parquet or ``.npz`` file, or a folder of PNG images with a ``labels.csv``.

    ``target`` names the output column(s), one per output neuron (default: the last column of a
    CSV or Parquet file, every ``y_…`` of an ``.npz``, every column of ``labels.csv`` but
    ``file``; several as a list or comma-separated text ``"a,b"``); ``features`` the input
    columns (default: every other column, or the pixels ``x_…``), in the order the weights
    follow. An image's pixels are named ``x_c_i_j`` (channel, row, column, from 1), row-major.

    >>> load_dataset("seed").features
    ('broccoli', 'tagada_strawberries', 'workout_hours')
    """
    targets = names(target)
    if str(source) in EMBEDDED:
        return _embedded(str(source), targets, features)
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"dataset {str(path)!r} does not exist (use 'seed' for the article's)")
    return choose_columns(_read(path), path, targets, features)


def _embedded(name: str, targets: Sequence[str] | None, features: Sequence[str] | None) -> Dataset:
    """An embedded dataset, whose columns are fixed."""
    ds = EMBEDDED[name]()
    other_target = targets is not None and tuple(targets) != ds.targets
    if other_target or (features is not None and tuple(features) != ds.features):
        columns = f"{_shortened(ds.features)} → {', '.join(ds.targets)}"
        raise DatasetError(
            "--target and --features choose columns of a dataset file; the "
            f"{name} dataset's columns are fixed: {columns}"
        )
    return ds


def _shortened(columns: Sequence[str]) -> str:
    return ", ".join(columns) if len(columns) <= 6 else f"{columns[0]} … {columns[-1]}"


def _read(path: Path) -> Table:
    """The file's or folder's columns, by its type."""
    if path.is_dir():
        if not (path / LABELS).is_file():
            raise DatasetError(f"dataset {str(path)!r} is a folder without {LABELS}; give {KINDS}")
        return read_pictures(path)
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return read_table(path)
    if suffix == ".npz":
        return read_arrays(path)
    raise DatasetError(f"{path.name}: unknown dataset type {suffix!r}; give {KINDS}")
