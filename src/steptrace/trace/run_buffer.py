"""Rows of a run waiting for the trace writer, gathered into blocks: key columns (step, epoch,
sample) and every value column, in one preallocated array filled row after row (a step writes
only where its rows lie, however wide a row), handed to the writer as whole columns whatever
the number of steps that filled it: one transposed copy, made in the writer's thread, whose
rows the writer turns into Parquet columns without copying them again (:class:`Block`). A run
that writes few of its blocks (a selection's steps, a flight recorder's windows) reads them as
the rows lie instead (:class:`RowsBlock`), and makes columns of the blocks it writes alone.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..numerics import Numerics
from .schema import Tensor

__all__ = ["BUFFER_ROWS", "BUFFER_VALUES", "Block", "RowBuffer", "RowsBlock", "buffer_rows"]

Array = npt.NDArray[Any]
#: Rows held before they go to the trace writer (whole steps; fewer for very wide models).
BUFFER_ROWS = 8_192
#: Values held at most (rows × columns): about 64 MB, however wide a row.
BUFFER_VALUES = 8_388_608


def buffer_rows(columns: int) -> int:
    """Rows a buffer holds for rows of ``columns`` values: :data:`BUFFER_ROWS`, fewer for wide
    rows (:data:`BUFFER_VALUES`)."""
    return max(1, min(BUFFER_ROWS, BUFFER_VALUES // max(columns, 1)))


class Block(dict[str, Any]):
    """A block of rows by column name, whose value columns are the rows of one contiguous
    ``matrix`` (columns × rows): ``row_of`` gives a column's row in it, so that a writer can
    make every column of one buffer at once (a wide row has thousands of columns)."""

    def __init__(self, columns: dict[str, Any], matrix: Array, row_of: dict[str, int]) -> None:
        super().__init__(columns)
        self.matrix = matrix
        self.row_of = row_of
        self._finite: Array | None = None

    def finite(self, columns: Sequence[str]) -> bool:
        """Whether every value of ``columns`` is finite (:func:`_finite_in`; the matrix's
        columns summed once a block, in one pass)."""
        if self._finite is None:
            self._finite = _finite_sums(self.matrix, axis=1)
        return _finite_in(self._finite, self.row_of, columns)

    def span(self, columns: Sequence[str]) -> Array | None:
        """The values of ``columns`` (one tensor's, in order), (columns, rows), as one
        read-only view of the matrix when they are its consecutive rows (a buffer lays each
        tensor's columns side by side); None otherwise."""
        i = _first_of_span(self.row_of, columns)
        if i is None:
            return None
        j = i + len(columns)
        ends = _same(self.get(columns[0]), self.matrix[i])
        if not (ends and _same(self.get(columns[-1]), self.matrix[j - 1])):
            return None  # a column given another array since: the block's, not the matrix's
        view = self.matrix[i:j]
        view.flags.writeable = False
        return view


class RowsBlock(Mapping[str, Any]):
    """A buffer's rows read as a block where they lie (rows × columns), without the transposed
    copy: each tensor's rows one view (:meth:`span`), a column a strided view, and the block
    as columns (:meth:`columns`) only when it is written. The values are read-only: the
    buffer they lie in is filled again once the block is dropped (:meth:`RowBuffer.rows_block`)."""

    def __init__(
        self, keys: dict[str, Array], rows: Array, index: dict[str, int], names: Sequence[str]
    ) -> None:
        self.keys_of = keys  # step, epoch, sample
        self.rows = rows
        self.index = index
        self._finite: Array | None = None
        self.names = names  # by place (the index's keys in order)

    def finite(self, columns: Sequence[str]) -> bool:
        """As :meth:`Block.finite`."""
        if self._finite is None:
            self._finite = _finite_sums(self.rows, axis=0)
        return _finite_in(self._finite, self.index, columns)

    def __getitem__(self, name: str) -> Array:
        if name in self.keys_of:
            return self.keys_of[name]
        column: Array = self.rows[:, self.index[name]]
        return column

    def __contains__(self, name: object) -> bool:
        return name in self.keys_of or name in self.index

    def __iter__(self) -> Iterator[str]:
        yield from self.keys_of
        yield from self.index

    def __len__(self) -> int:
        return len(self.keys_of) + len(self.index)

    def span(self, columns: Sequence[str]) -> Array | None:
        """As :meth:`Block.span`: the values of ``columns``, (columns, rows), one view."""
        i = _first_of_span(self.index, columns)
        if i is None:
            return None
        view: Array = self.rows[:, i : i + len(columns)].T
        return view

    def columns(self, names: Sequence[str] | None = None) -> Block:
        """The block as :meth:`RowBuffer.block` makes it: its own copy, as columns; only the
        columns ``names`` when given (what a selection keeps of a row of a million values)."""
        places = None if names is None else sorted(self.index[n] for n in names)
        if places is None or len(places) == len(self.index):  # all of them: no copy first
            return _as_columns(self.keys_of, self.rows, self.index)
        index = {self.names[i]: j for j, i in enumerate(places)}
        return _as_columns(self.keys_of, self.rows[:, places], index)


def _as_columns(keys: dict[str, Array], values: Array, index: dict[str, int]) -> Block:
    """Rows as a :class:`Block`: one transposed copy (each column contiguous, which the
    writer and the per-step figures read without copying again)."""
    out: dict[str, Any] = dict(keys)
    columns = values.T.copy(order="C")  # a copy even of one row (a view of it is contiguous
    # already): the buffer is filled again
    if list(index.values()) == list(range(len(columns))):  # the rows in order: C speed
        out.update(zip(index, columns, strict=True))
    else:
        out.update((name, columns[i]) for name, i in index.items())
    return Block(out, columns, index)


def _finite_sums(values: Array, axis: int) -> Array:
    """Whether each column's sum (along ``axis``) is finite: a NaN or an infinity makes it NaN
    or infinite, so a finite one vouches for every value of the column (a sum past the largest
    float says not finite, wrongly: its values are then checked one by one)."""
    with np.errstate(all="ignore"):
        finite: Array = np.isfinite(np.add.reduce(values, axis=axis))
    return finite


def _finite_in(flags: Array, index: Mapping[str, int], columns: Sequence[str]) -> bool:
    """Whether the ``flags`` of ``columns`` (by their ``index``) all say finite; a column not
    there raises KeyError."""
    if not columns:
        return True
    i = _first_of_span(index, columns)
    if i is not None:
        return bool(flags[i : i + len(columns)].all())
    return bool(flags[[index[c] for c in columns]].all())


def _first_of_span(index: Mapping[str, int], columns: Sequence[str]) -> int | None:
    """The index of ``columns[0]`` when ``columns`` run from there to ``columns[-1]`` in
    ``index`` (a buffer's names: each tensor's columns in order, side by side); else None."""
    first, last = index.get(columns[0]), index.get(columns[-1])
    if first is None or last != first + len(columns) - 1:
        return None
    return first


def _same(column: Any, row: Array) -> bool:
    """Whether ``column`` is ``row`` of a matrix (a view of the same values)."""
    if not isinstance(column, np.ndarray) or column.shape != row.shape:
        return False
    return bool(column.ctypes.data == row.ctypes.data and column.strides == row.strides)


class RowBuffer:
    """Rows waiting for the trace writer: key columns and every value column, row-major."""

    def __init__(
        self,
        tensors: Sequence[Tensor],
        capacity: int,
        names: Sequence[str] | None = None,
        index: dict[str, int] | None = None,
    ) -> None:
        self.tensors = tensors
        # The columns' names, and each one's place (given by a writer that makes many buffers:
        # wide rows have many, a network's of a million values too).
        self.names = list(names) if names is not None else [c for t in tensors
                                                            for c in t.columns()]  # fmt: skip
        self.offsets: dict[str, int] = {}
        pos = 0
        for t in tensors:
            self.offsets[t.name] = pos
            pos += t.size
        self.capacity = capacity
        # Row after row: a step's values are written where its rows lie, touching no page of
        # rows to come (a wide row has tens of thousands of values).
        self.values = np.empty((capacity, len(self.names)), dtype=np.float64)
        self.keys = np.empty((3, capacity), dtype=np.int64)
        self.rows = 0
        self._row_of: dict[str, int] | None = index

    @property
    def room(self) -> int:
        return self.capacity - self.rows

    @property
    def full(self) -> bool:
        return self.rows >= self.capacity

    def put(
        self, step: Array, epoch: Array, sample: Array, arrays: Mapping[str, Array], num: Numerics
    ) -> None:
        r0, r1 = self.rows, self.rows + len(step)
        self.keys[0, r0:r1], self.keys[1, r0:r1], self.keys[2, r0:r1] = step, epoch, sample
        narrow = num.name == "float32"
        for t in self.tensors:
            a = arrays[t.name]
            c = self.offsets[t.name]
            if narrow:
                a = a.astype(np.float32, copy=False)  # a float32 run holds float32 values
            self.values[r0:r1, c : c + t.size] = a
        self.rows = r1

    def emptied(self) -> RowBuffer:
        """This buffer, holding no rows (once its rows are a block: nothing refers to them)."""
        self.rows = 0
        return self

    def block(self) -> Block:
        """The rows as columns: one transposed copy (each column contiguous, which the writer
        and the per-step figures read without copying again)."""
        return _as_columns(self._keys(), self.values[: self.rows], self._index())

    def rows_block(self, release: Callable[[RowBuffer], None]) -> RowsBlock:
        """The rows as they lie (:class:`RowsBlock`); ``release(self)`` is called once the
        block is dropped (nothing reads the rows then: the buffer may be filled again). A
        buffer less than half full gives a copy of its rows and is released at once: a block
        of a few steps, handed over when due, must not hold a whole buffer's memory while a
        flight recorder keeps it (its window would take many times what it was checked for)."""
        copied = 2 * self.rows < self.capacity
        values = self.values[: self.rows]
        if copied:
            values = values.copy()  # rows as they lie: one plain copy
        values.flags.writeable = False
        block = RowsBlock(self._keys(), values, self._index(), self.names)
        if copied:
            release(self)
        else:
            weakref.finalize(block, release, self)
        return block

    def _keys(self) -> dict[str, Array]:
        keys = self.keys[:, : self.rows].copy()  # the buffer may be filled again (:meth:`emptied`)
        return {"step": keys[0], "epoch": keys[1], "sample": keys[2]}

    def _index(self) -> dict[str, int]:
        if self._row_of is None:  # made once a buffer (a wide row has thousands of names)
            self._row_of = {name: i for i, name in enumerate(self.names)}
        return self._row_of
