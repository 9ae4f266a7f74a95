"""One data input of a step: every recorded value as display text, and its tensors put back
together as the article writes them (a value, a vector, a matrix)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from ..numerics import format_value
from ..trace.schema import EXACT_SUFFIX
from .text import abbreviate, matrix_lines, one_line

__all__ = ["SampleValues", "batch_loss", "sample_values", "step_values"]


def step_values(row: pd.Series | Mapping[Any, Any], numerics: str) -> dict[str, str]:
    """Every value column of one trace row (a Series, or a dict of its columns) as display
    text: the exact rational in exact runs, else the shortest text that reads back as the
    same float of the run's precision."""
    out = {}
    for col, value in row.items():
        name = str(col)
        if name.endswith(EXACT_SUFFIX) or not isinstance(value, float | np.floating):
            continue
        exact = row.get(name + EXACT_SUFFIX)
        out[name] = format_value(float(value), exact if isinstance(exact, str) else None, numerics)
    return out


def _number(text: str) -> Fraction | float:
    """A display text back as a number, exactly when it is a rational (``-1/10**400`` stays
    negative, where its float would be -0.0)."""
    try:
        return Fraction(text)
    except ValueError:  # nan, inf
        return float(text)


@functools.lru_cache(maxsize=4096)
def _columns(tensor: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    """A tensor's column names, made once (an image's thousands are asked for again and
    again)."""
    if not shape:
        return (tensor,)
    ranges = [range(1, n + 1) for n in shape]
    return tuple(tensor + "".join(f"_{i}" for i in idx) for idx in itertools.product(*ranges))


@dataclass(frozen=True)
class SampleValues:
    """One data input of a step: every recorded value as display text."""

    row: int  # the dataset row
    text: dict[str, str]  # column name → display text
    shapes: Mapping[str, tuple[int, ...]]  # tensor name → shape of one row's value
    #: Whether tables abbreviate huge exact integers (the full text stays in ``text``).
    short: bool = True

    def show(self, column: str) -> str:
        """One value as a table shows it (huge exact integers abbreviated)."""
        text = self.text[column]
        return abbreviate(text) if self.short else text

    def has(self, tensor: str) -> bool:
        return tensor in self.shapes

    def columns(self, tensor: str) -> list[str]:
        """A tensor's columns in order: ``w2_before_1_1 … w2_before_2_3``; ``loss``."""
        return list(_columns(tensor, tuple(self.shapes[tensor])))

    def parts(self, tensor: str) -> list[str]:
        """A tensor's components as a table shows them, flat."""
        return [self.show(c) for c in self.columns(tensor)]

    def rows(self, tensor: str) -> list[list[str]]:
        """A tensor's components by row: a matrix's rows, else one row."""
        parts = self.parts(tensor)
        shape = self.shapes[tensor]
        if len(shape) < 2:
            return [parts]
        n = shape[1]
        return [parts[j * n : (j + 1) * n] for j in range(shape[0])]

    def _single(self, tensor: str) -> bool:
        # A value of one neuron is written alone, as the article writes o2 = 0 and δ4 = -1;
        # weights always as rows, since a row is one neuron's weights.
        return len(self.shapes[tensor]) < 2 and len(self.parts(tensor)) == 1

    def vec(self, tensor: str) -> str:
        """A tensor on one line as the article writes it: ``(0, 2000, 3000)``, ``0`` for one
        neuron's value, ``((1, 2), (3, 4))`` for a matrix of several rows."""
        if self._single(tensor):
            return self.parts(tensor)[0]
        return one_line(self.rows(tensor))

    def lines(self, tensor: str) -> list[str]:
        """The same over a line per row of a matrix, its columns aligned."""
        if self._single(tensor):
            return self.parts(tensor)
        return matrix_lines(self.rows(tensor))

    def value(self, column: str) -> Fraction | float:
        """One value as a number, exact in exact runs."""
        return _number(self.text[column])

    def nonneg(self, column: str) -> bool:
        """``value ≥ 0``: whether a ReLU-like gate is open on this value (NaN: closed, as the
        layer's ``where`` decides)."""
        return bool(self.value(column) >= 0)

    @property
    def correct(self) -> bool:
        """The article's "correct?": the model's output is the expected one (loss 0)."""
        return bool(self.value("loss") == 0)


def sample_values(
    rows: pd.DataFrame | Sequence[Mapping[str, Any]],
    numerics: str,
    shapes: Mapping[str, tuple[int, ...]],
    short: bool = True,
) -> list[SampleValues]:
    """The rows of a step (a DataFrame, or a dict per row), one :class:`SampleValues` each."""
    records = (row for _, row in rows.iterrows()) if isinstance(rows, pd.DataFrame) else rows
    return [
        SampleValues(int(row["sample"]), step_values(row, numerics), shapes, short)
        for row in records
    ]


def batch_loss(samples: Sequence[SampleValues], numerics: str) -> str:
    """A step's loss: the mean of its data inputs' losses, exactly in exact runs (from the
    rationals' text), else in float64 from the recorded floats, as the loss curves take it.

    >>> one = SampleValues(0, {"loss": "1/2"}, {"loss": ()})
    >>> batch_loss([one, SampleValues(1, {"loss": "0"}, {"loss": ()})], "exact")
    '1/4'
    """
    texts = [s.text["loss"] for s in samples]
    if numerics == "exact":
        return str(sum(Fraction(t) for t in texts) / len(texts))
    # A float32 run's text reads back as its float32; taken as float64 it would not.
    kind = np.float32 if numerics == "float32" else np.float64
    return format_value(float(np.mean([float(kind(t)) for t in texts])), None, "float64")
