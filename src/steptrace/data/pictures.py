"""A folder of PNG images and its ``labels.csv``: a sample per image, its targets beside its file.

``labels.csv`` has a column ``file`` (each image's path inside the folder) and one column per
target, read exactly like any CSV dataset. The images are grey or RGB, 8 bits a channel, all of
one size; a pixel of value k becomes exactly k/255, and the pixels become the features
``x_c_i_j`` (1-based, row-major: channel, row, column), the names the trace gives an image input.
Reading PNG files needs Pillow, an optional extra (``pip install 'steptrace[images]'``).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import DatasetError
from .table import Table, exact_cells, unique, value_names
from .tables import read_frame

__all__ = ["LABELS", "read_pictures"]

#: The file naming each image's targets.
LABELS = "labels.csv"
#: The column of LABELS holding each image's file.
FILE = "file"
#: The largest value of an 8-bit channel: k is read as k/255.
FULL = 255
#: Image modes Pillow reads a PNG file as, and how each is refused when it is (a 16-bit grey
#: PNG is I;16, or I in older versions of Pillow).
_REFUSED = {
    "P": "a palette (P) image",
    "RGBA": "an RGBA image (transparency)",
    "LA": "a grey image with transparency (LA)",
    "I;16": "a 16-bit grey image",
    "I": "a 16-bit grey image",
}


def read_pictures(folder: Path) -> Table:
    """The pixel columns ``x_…`` and the target columns of ``folder``'s ``labels.csv``."""
    where = f"{folder.name}/{LABELS}"
    image = _pillow()
    frame = read_frame(folder / LABELS, where)
    header = [str(c) for c in frame.columns]
    if FILE not in header:
        raise DatasetError(
            f"{where}: no column {FILE!r} (columns: {header}); name each image's PNG file in a "
            f"column {FILE!r}"
        )
    targets = tuple(c for c in header if c != FILE)
    if not targets:
        raise DatasetError(f"{where}: needs a target column besides {FILE!r}")
    if len(frame) == 0:
        raise DatasetError(f"{where}: the dataset has no rows")
    pixels = _pixels(image, folder, [str(f) for f in frame[FILE].tolist()], where)
    features = value_names("x", pixels.shape[1:])
    unique([*features, *targets], where)
    flat = pixels.reshape(len(pixels), -1)
    column_of = {name: j for j, name in enumerate(features)}

    def exact(column: str) -> list[Fraction]:
        if column in column_of:
            return [Fraction(k, FULL) for k in flat[:, column_of[column]].tolist()]
        return exact_cells(frame[column].tolist(), column, where)

    return Table(where, (*features, *targets), len(frame), exact, targets, features)


def _pillow() -> Any:
    """Pillow's Image module, or the one line that says how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError(
            "a folder of PNG images needs Pillow: pip install 'steptrace[images]'"
        ) from None
    return Image


def _pixels(image: Any, folder: Path, files: list[str], where: str) -> npt.NDArray[np.uint8]:
    """Every image as (N, C, H, W) channel values 0…255, checked to be of one kind and size."""
    first: tuple[str, npt.NDArray[np.uint8]] | None = None
    out = []
    for row, name in enumerate(files):
        if not name.strip():
            raise DatasetError(f"{where}: column {FILE!r}, row {row} is empty")
        path = folder / name
        if not path.is_file():
            raise DatasetError(
                f"{where}: column {FILE!r}, row {row}: {name!r} is not a file in {folder.name}"
            )
        pixels = _read(image, path, name)
        if first is None:
            first = (name, pixels)
        _same_kind(name, pixels, *first)
        out.append(pixels)
    return np.stack(out)


def _read(image: Any, path: Path, name: str) -> npt.NDArray[np.uint8]:
    """One PNG image as (C, H, W): grey images have one channel, RGB ones three."""
    try:
        with image.open(path, formats=["PNG"]) as picture:
            # A bilevel image is grey with two values: 0 and 255.
            picture = picture.convert("L") if picture.mode == "1" else picture
            mode = picture.mode
            pixels = np.asarray(picture)
    except (OSError, ValueError, image.DecompressionBombError) as exc:
        text = str(exc).strip().splitlines()
        raise DatasetError(
            f"{name}: cannot be read as PNG: {text[0] if text else type(exc).__name__}"
        ) from None
    if mode == "L":
        return pixels[np.newaxis]
    if mode == "RGB":
        return pixels.transpose(2, 0, 1)  # rows × columns × channels → channel first
    kind = _REFUSED.get(mode, f"a {mode} image")
    raise DatasetError(f"{name}: {kind}; give grey or RGB images, 8 bits a channel")


def _same_kind(
    name: str, pixels: npt.NDArray[np.uint8], first: str, like: npt.NDArray[np.uint8]
) -> None:
    kinds = {1: "grey", 3: "RGB"}
    if len(pixels) != len(like):
        raise DatasetError(
            f"{name} is {kinds[len(pixels)]} but {first} is {kinds[len(like)]}; give images of "
            "one kind"
        )
    if pixels.shape != like.shape:
        size, first_size = ("×".join(map(str, p.shape[1:])) for p in (pixels, like))
        raise DatasetError(
            f"{name} is {size} pixels (rows×columns) but {first} is {first_size}; give images "
            "of one size"
        )
