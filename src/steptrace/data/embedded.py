"""The datasets steptrace carries itself: the article's three patients (``seed``) and a small
set of images it draws (``shapes``), so that each chapter can be recorded with no file at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction

from .dataset import Dataset
from .table import value_names

__all__ = ["EMBEDDED", "SHAPES_SIZE", "seed_dataset", "shapes_dataset"]

#: The shapes' images are SHAPES_SIZE × SHAPES_SIZE pixels, one grey channel.
SHAPES_SIZE = 8
#: Where the shapes are centred (row, column), 0-based: one in each quarter of the image.
_CENTRES = ((2, 2), (2, 5), (5, 2), (5, 5))
#: Half a shape's width: 1 draws it 3 pixels across, 2 draws it 5.
_ARMS = (1, 2)


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


def shapes_dataset() -> Dataset:
    """Sixteen 8 × 8 grey images, drawn the same way every time: crosses (target 1) and
    squares (target 0), each 3 or 5 pixels across, centred in each quarter of the image.

    A cross is a plus sign, a square its outline; drawn pixels are 1, the rest 0. The images
    come as cross, square, cross, square …, a cross and a square of the same size at the same
    place one after the other, so any batch of two holds one of each. The pixels are the
    features ``x_1_1_1 … x_1_8_8`` (channel, row, column): a model file reads them as an image
    with ``{"type": "input", "shape": [1, 8, 8]}``.

    >>> ds = shapes_dataset()
    >>> len(ds), ds.n_features, ds.targets, ds.outputs[:2]
    (16, 64, ('cross',), ((Fraction(1, 1),), (Fraction(0, 1),)))
    """
    drawn = [(cross, shape(*centre, arm)) for arm in _ARMS for centre in _CENTRES
             for cross, shape in ((1, _cross), (0, _square))]  # fmt: skip
    return Dataset(
        name="shapes",
        features=value_names("x", (1, SHAPES_SIZE, SHAPES_SIZE)),
        targets=("cross",),
        inputs=tuple(_image(pixels) for _, pixels in drawn),
        outputs=tuple((Fraction(cross),) for cross, _ in drawn),
        source="shapes",
    )


def _cross(row: int, column: int, arm: int) -> set[tuple[int, int]]:
    """A plus sign: the pixels of the centre's row and column, ``arm`` either side of it."""
    return {(i, j) for i, j in _around(row, column, arm) if i == row or j == column}


def _square(row: int, column: int, arm: int) -> set[tuple[int, int]]:
    """A square's outline: the pixels exactly ``arm`` rows or columns away from the centre."""
    around = _around(row, column, arm)
    return {(i, j) for i, j in around if max(abs(i - row), abs(j - column)) == arm}


def _around(row: int, column: int, arm: int) -> Iterator[tuple[int, int]]:
    """The pixels at most ``arm`` rows and columns away from the centre."""
    for i in range(row - arm, row + arm + 1):
        for j in range(column - arm, column + arm + 1):
            yield i, j


def _image(pixels: set[tuple[int, int]]) -> tuple[Fraction, ...]:
    """The image's pixels row by row, 1 where drawn and 0 elsewhere."""
    return tuple(Fraction(int((i, j) in pixels)) for i in range(SHAPES_SIZE)
                 for j in range(SHAPES_SIZE))  # fmt: skip


#: The embedded datasets by the name ``--dataset`` gives them.
EMBEDDED: dict[str, Callable[[], Dataset]] = {"seed": seed_dataset, "shapes": shapes_dataset}
