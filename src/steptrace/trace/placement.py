"""Where each row of a run written through :func:`steptrace.open_run` belongs: its step,
epoch and dataset row (``sample``).

Given the dataset, the epochs and the batch size, the plan is known from the start and every
step is checked against it (:class:`Declared`). Otherwise it is *learned* from the data the
loop feeds (:class:`Learned`): a data input is known by its values, an epoch ends when the
first input of a step comes back, and the plan found is written into the run when it closes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError
from ..numerics import Numerics
from ..schedule import ChunkPlan, EpochOrders, steps_per_epoch

if TYPE_CHECKING:
    from ..data import Dataset

__all__ = ["DataInfo", "Declared", "Final", "Learned", "Placer", "RowNumbers", "plan_sizes",
           "rounded"]  # fmt: skip

Array = npt.NDArray[Any]
#: Distinct data inputs remembered to tell which dataset row each one is (a learned plan).
MAX_LEARNED_ROWS = 1_000_000


# --- the data: names, rows, identity --------------------------------------------------------


class DataInfo:
    """The data a run draws from: names, and the dataset when it is known (its rows rounded
    into the run's numbers, as the loop sees them)."""

    def __init__(
        self,
        name: str,
        features: Sequence[str],
        targets: Sequence[str],
        dataset: Dataset | None,
        numerics: Numerics,
    ) -> None:
        self.name = name
        self.features = tuple(features)
        self.targets = tuple(targets)
        self.dataset = dataset
        self.table: Array | None = None
        if dataset is not None:
            dataset.check_range(numerics)
            values = [
                q for x, y in zip(dataset.inputs, dataset.outputs, strict=True) for q in (*x, *y)
            ]
            self.table = rounded(values, numerics).reshape(len(dataset), -1)

    def show(self, row: Array) -> str:
        """A data input as messages write it: ``x = [200.0, 0.0, 0.0], y = [1.0]``."""
        values = row.tolist()
        n = len(self.features)
        return f"x = {values[:n]}, y = {values[n:]}"


def rounded(values: Sequence[Fraction], numerics: Numerics) -> Array:
    """Rationals rounded into the run's numbers (:meth:`Numerics.make`), as float64. Into
    float32, those that are float64 values (a denominator a power of 2 up to 2^1074, a numerator
    below 2^53: a dataset given as floats) are rounded at once by numpy, which rounds a float64
    to the nearest float32 (ties to even) just as :func:`~steptrace.numerics.to_float32` does;
    any other one by one."""
    if numerics.name != "float32":
        return np.array([float(numerics.make(q)) for q in values], dtype=np.float64)
    out = np.array([float(q) for q in values], dtype=np.float64)
    out = out.astype(np.float32).astype(np.float64)
    for i, q in enumerate(values):
        d = q.denominator
        if d & (d - 1) or d.bit_length() > 1075 or abs(q.numerator) >= 1 << 53:
            out[i] = float(numerics.make(q))
    return out


# --- placing rows: step, epoch, sample ------------------------------------------------------


class Placer:
    def place(
        self, first_step: int, m: Array, data: Array, samples: Array | None
    ) -> tuple[Array, Array]:
        """Epoch and sample of each row of steps ``first_step …`` of ``m`` rows each."""
        raise NotImplementedError

    def provisional(self, first_m: int) -> tuple[int, int, int]:
        """Rows, epochs and batch size written until the run closes (a learned plan)."""
        raise NotImplementedError


class Declared(Placer):
    """A plan known in advance: each step must visit the rows the plan says."""

    def __init__(
        self, data: DataInfo, rows: int, epochs: int, batch_size: int, shuffle: bool,
        seed: int | None,
    ) -> None:  # fmt: skip
        self.data = data
        self.rows, self.epochs, self.batch_size = rows, epochs, batch_size
        self.shuffle, self.seed = shuffle, seed
        self.orders = EpochOrders(rows, shuffle, seed)
        self.total = steps_per_epoch(rows, batch_size) * epochs

    def place(
        self, first_step: int, m: Array, data: Array, samples: Array | None
    ) -> tuple[Array, Array]:
        last = first_step + len(m)
        if last > self.total:
            raise ConfigError(
                f"step {self.total} is past the run's plan: {self.total} steps ({self.epochs} "
                f"epoch(s) of {self.rows} rows in batches of {self.batch_size}); open the run "
                "with more epochs"
            )
        chunk = ChunkPlan(self.rows, self.batch_size, self.orders, first_step, last)
        if not np.array_equal(chunk.sizes, m):
            s = int(np.flatnonzero(chunk.sizes != m)[0])
            raise ConfigError(
                f"step {first_step + s} has {int(m[s])} data input(s), but the run's plan gives "
                f"it {int(chunk.sizes[s])} (batches of {self.batch_size}, the last of an epoch "
                "holding the rest)"
            )
        if samples is not None and not np.array_equal(samples, chunk.sample):
            r = int(np.flatnonzero(samples != chunk.sample)[0])
            raise ConfigError(
                f"step {int(chunk.step[r])} visits dataset row {int(samples[r])} where the run's "
                f"plan visits row {int(chunk.sample[r])}; follow run.plan()"
            )
        assert self.data.table is not None
        expected = self.data.table[chunk.sample]
        differ = ~((data == expected) | (np.isnan(data) & np.isnan(expected))).all(axis=1)
        if differ.any():
            r = int(np.flatnonzero(differ)[0])
            raise ConfigError(
                f"step {int(chunk.step[r])}: its data input {self.data.show(data[r])} is not "
                f"dataset row {int(chunk.sample[r])} ({self.data.show(expected[r])}), which the "
                "run's plan visits there; follow run.plan() (a loop that shuffles its own way: "
                "open the run without epochs and batch_size, and the plan is learned)"
            )
        return chunk.epoch, chunk.sample

    def provisional(self, first_m: int) -> tuple[int, int, int]:  # pragma: no cover
        raise AssertionError("a declared plan is written when the run opens")


class Final:
    """What a learned plan came to."""

    def __init__(
        self, rows: int, epochs: int, batch_size: int, shuffle: bool, stream: bool
    ) -> None:
        self.plan = (rows, epochs, batch_size, shuffle, None)
        self.stream = stream


class RowNumbers:
    """Each step's first row in the run, counting every step's rows as they come (held or
    not): what a stream's rows are numbered by. Kept as the runs of steps of one size (a loop's
    batches change size rarely): memory grows with the changes, not with the steps."""

    def __init__(self) -> None:
        self.step0: list[int] = []  # each run's first step, its first row, its steps' size
        self.row0: list[int] = []
        self.size: list[int] = []
        self.steps = self.rows = 0

    def add(self, m: Array) -> None:
        """The next steps, of ``m`` rows each."""
        m = np.asarray(m, dtype=np.int64)
        if not len(m):
            return
        before = np.concatenate([[0], np.cumsum(m)[:-1]])
        for i in [0, *(np.flatnonzero(np.diff(m)) + 1).tolist()]:
            if i == 0 and self.size and self.size[-1] == int(m[0]):
                continue  # the last run goes on
            self.step0.append(self.steps + i)
            self.row0.append(self.rows + int(before[i]))
            self.size.append(int(m[i]))
        self.steps += len(m)
        self.rows += int(m.sum())

    def of_rows(self, steps: Array, carry: tuple[int, int] = (-1, 0)) -> Array:
        """The run's row number of each row of ``steps`` (one per row, a step's rows together,
        in order); ``carry`` is the step and the rows of it that came before these (a step cut
        between two row groups)."""
        steps = np.asarray(steps, dtype=np.int64)
        if not len(steps):
            return np.zeros(0, dtype=np.int64)
        i = np.searchsorted(np.asarray(self.step0), steps, side="right") - 1
        row0, size, step0 = (np.asarray(a)[i] for a in (self.row0, self.size, self.step0))
        starts = np.flatnonzero(np.concatenate([[True], steps[1:] != steps[:-1]]))
        first_of_row = np.repeat(starts, np.diff(np.append(starts, len(steps))))
        within = np.arange(len(steps)) - first_of_row
        if steps[0] == carry[0]:
            within[: (starts[1] if len(starts) > 1 else len(steps))] += carry[1]
        numbers: Array = row0 + (steps - step0) * size + within
        return numbers


class Learned(Placer):
    """A plan learned from the data inputs as they come.

    Each data input is a dataset row: the given ``samples``; else the row of the run's dataset
    with its values; else a number of its own, given in order of first appearance. With a
    dataset an epoch is its rows; without, an epoch ends when the first input of a step comes
    back. The rows follow an epoch plan when every epoch visits every row once and in order, in
    steps of the sizes of a plan (b, b, …, the rest); else they are recorded as one epoch of the
    data inputs in the order the loop fed them (a ``stream``).
    """

    def __init__(self, data: DataInfo) -> None:
        self.data = data
        self.known_rows = len(data.dataset) if data.dataset is not None else None
        self.keys: dict[bytes, int] = {}
        self.lookup: dict[bytes, int] | None = None
        if data.table is not None:
            self.lookup = {}
            for i, row in enumerate(np.ascontiguousarray(data.table)):
                self.lookup.setdefault(row.tobytes(), i)
        self.last_seen: list[int] = []  # by row: the last epoch that visited it
        self.epoch = -1
        self.pos = 0  # rows into the current epoch
        self.k = 0  # steps into the current epoch
        self.rows_epoch0: int | None = None
        self.sizes0: list[int] = []
        self.fits = True  # every row so far follows an epoch plan
        self.streamed = 0  # rows placed so far

    def ids(self, data: Array, samples: Array | None) -> list[int] | None:
        """Each row's dataset row; None once there are too many inputs to remember."""
        if samples is not None:
            if (samples < 0).any():
                raise ConfigError("samples are dataset rows: whole numbers from 0")
            return list(samples.tolist())
        data = np.ascontiguousarray(data)
        if self.lookup is not None and self.data.table is not None:
            # The row an in-order loop visits here, when it holds these values (a dataset may
            # hold the same values twice); else the first row that does.
            table = self.data.table
            expected = (self.streamed + np.arange(len(data))) % len(table)
            same = (table[expected] == data).all(axis=1)
            if same.all():
                return list(expected.tolist())
        keys: list[Any] = data.view(np.dtype((np.void, data.shape[1] * 8))).ravel().tolist()
        if self.lookup is not None:
            found = [self.lookup.get(key) for key in keys]
            for r in np.flatnonzero(same).tolist():
                found[r] = int(expected[r])
            if None in found:
                raise ConfigError(
                    f"data input {self.data.show(data[found.index(None)])} is not a row of "
                    f"the dataset {self.data.name!r} the run was opened with"
                )
            return found  # type: ignore[return-value]
        known = self.keys
        out = [known.setdefault(key, len(known)) for key in keys]
        if len(known) > MAX_LEARNED_ROWS:
            known.clear()  # memory stays flat: the run becomes a stream
            return None
        return out

    def place(
        self, first_step: int, m: Array, data: Array, samples: Array | None
    ) -> tuple[Array, Array]:
        rows = len(data)
        ids = self.ids(data, samples) if self.fits else None
        start = self.streamed
        self.streamed += rows
        if ids is None:
            self.fits = False
            return np.zeros(rows, dtype=np.int64), np.arange(start, start + rows)
        top = max(ids) + 1
        if top > len(self.last_seen):
            self.last_seen.extend([-1] * (top - len(self.last_seen)))
        epochs = []
        r = 0
        for size in m.tolist():
            epochs.append(self.step(ids[r : r + size]))
            r += size
        return np.repeat(np.array(epochs, dtype=np.int64), m), np.array(ids, dtype=np.int64)

    def step(self, ids: list[int]) -> int:
        """Follow one step's data inputs; the epoch it belongs to."""
        size = len(ids)
        if self.epoch < 0:
            self.epoch = 0
        elif self.epoch_ends(ids[0]):
            if self.epoch == 0:
                self.rows_epoch0 = self.pos
                self.fits &= plan_sizes(self.sizes0)
            else:
                self.fits &= self.pos == self.rows_epoch0
            self.epoch += 1
            self.pos = self.k = 0
        if self.epoch == 0:
            self.sizes0.append(size)
        elif self.k >= len(self.sizes0) or self.sizes0[self.k] != size:
            self.fits = False
        # In order: the epoch's rows 0, 1, 2 … (a row twice, a shuffle, a row the first epoch
        # did not visit: no epoch plan that verify can follow).
        pos = self.pos
        in_order = ids[0] == pos if size == 1 else ids == list(range(pos, pos + size))
        self.fits &= in_order and (self.known_rows is None or pos + size <= self.known_rows)
        last_seen, epoch = self.last_seen, self.epoch
        for i in ids:
            last_seen[i] = epoch
        self.pos += size
        self.k += 1
        return epoch

    def epoch_ends(self, first: int) -> bool:
        if self.known_rows is not None:
            return self.pos >= self.known_rows
        return self.last_seen[first] == self.epoch

    def provisional(self, first_m: int) -> tuple[int, int, int]:
        return self.known_rows or first_m, 1, first_m

    def final(self, complete: bool, total_rows: int, total_steps: int) -> Final:
        """The plan the run followed: epochs of the dataset in order, or one epoch of its
        data inputs (``stream``)."""
        b = self.sizes0[0] if self.sizes0 else 1
        fits = self.fits and total_steps > 0
        if self.rows_epoch0 is None:
            fits = fits and plan_sizes(self.sizes0)  # the first epoch is still going
        rows = self.rows_epoch0 if self.rows_epoch0 is not None else self.pos
        if self.known_rows is not None:
            rows = self.known_rows
        if complete and self.pos != rows:
            fits = False  # the loop stopped inside an epoch: no plan of whole epochs
        if fits:
            return Final(rows, self.epoch + 1, b, False, stream=False)
        return Final(max(total_rows, 1), 1, b, False, stream=True)

    def rows_in_order(self) -> Iterator[list[float]]:
        """The learned dataset's rows, by number (for its hash)."""
        for key in self.keys:  # in order of first appearance: by number
            yield np.frombuffer(key, dtype=np.float64).tolist()


def plan_sizes(sizes: Sequence[int]) -> bool:
    """Whether an epoch's steps have a plan's sizes: b, b, …, b, then the rest (≤ b)."""
    if not sizes:
        return True
    *full, last = sizes
    return all(s == sizes[0] for s in full) and last <= sizes[0]
