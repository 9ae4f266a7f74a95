"""Training: epochs, batches, shuffling; one event per (step, sample).

The learning phase of the article, repeated: pick data inputs (a batch of them), run the
forward pass, the loss, the backward pass, update the weights. :func:`iter_events` yields one
:class:`StepEvent` per (step, sample) in any number system; :func:`iter_blocks` yields the same
rows as columns, ready for the trace writer, taking a vectorised path for float runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from ..data import Dataset
from ..errors import ConfigError, DatasetError, SteptraceError
from ..model import article as model
from ..numerics import Number, Numerics, get_numerics, parse_exact
from ..trace.schema import vector
from .fast import EpochOrders, float_blocks

__all__ = ["ARTICLE_INIT", "Block", "Settings", "StepEvent", "iter_blocks", "iter_events", "plan"]

#: The article's initial weights w² = (1/200, −3000/11 600 000, 1/5800). The article's first
#: formula prints the middle weight without its minus sign; its tables (o2 = 0 for the first
#: and third patients) need it.
ARTICLE_INIT: tuple[str, ...] = ("1/200", "-3000/11600000", "1/5800")

Block = dict[str, Any]
"""A chunk of trace rows: column name → numpy array (or list of exact texts)."""


@dataclass(frozen=True)
class Settings:
    """A run's settings, validated; numbers kept as the exact rationals the user typed."""

    lr: Fraction
    lr_text: str
    epochs: int
    batch_size: int
    numerics: Numerics
    init: tuple[Fraction, ...]
    shuffle: bool = False
    seed: int | None = None

    @classmethod
    def parse(
        cls,
        dataset: Dataset,
        lr: str | float | Fraction = "1",
        epochs: int = 1,
        batch_size: int = 1,
        numerics: str = "exact",
        init: str | Sequence[str | float | Fraction] | None = None,
        shuffle: bool = False,
        seed: int | None = None,
    ) -> Settings:
        """Check every setting against the dataset; raise :class:`ConfigError` on the first
        bad one."""
        system = get_numerics(numerics)
        lr_text = str(lr).strip()
        lr_q = parse_exact(lr, what="learning rate")
        if lr_q <= 0:
            raise ConfigError(f"learning rate must be greater than 0, got {lr_text}")
        if not system.fits(lr_q):
            raise ConfigError(f"learning rate {lr_text} is too large for {system.name}")
        if system.to_float(system.make(lr_q)) == 0:
            raise ConfigError(f"learning rate {lr_text} rounds to 0 in {system.name}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"epochs must be a whole number of at least 1, got {epochs!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(
                f"batch size must be a whole number of at least 1, got {batch_size!r}"
            )
        if batch_size > len(dataset):
            raise ConfigError(
                f"batch size {batch_size} is larger than the dataset ({len(dataset)} rows); "
                f"use at most {len(dataset)}"
            )
        dataset.check_range(system)  # before any run folder is made
        init_q = _parse_init(init, dataset)
        for k, q in enumerate(init_q, 1):
            if not system.fits(q):
                raise ConfigError(
                    f"initial weight {k} ({float(q):.3g}) is too large for {system.name}"
                )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ConfigError(f"seed must be a whole number of at least 0, got {seed!r}")
        if shuffle and seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        return cls(lr_q, lr_text, epochs, batch_size, system, init_q, shuffle, seed)


def _parse_init(
    init: str | Sequence[str | float | Fraction] | None, dataset: Dataset
) -> tuple[Fraction, ...]:
    if init is None:
        if dataset.n_features != len(ARTICLE_INIT):
            raise DatasetError(
                f"dataset {dataset.name!r} has {dataset.n_features} feature columns but the "
                f"default weights have {len(ARTICLE_INIT)}; give --init with "
                f"{dataset.n_features} comma-separated weights"
            )
        init = ARTICLE_INIT
    parts = init.split(",") if isinstance(init, str) else list(init)
    weights = tuple(parse_exact(p, what=f"initial weight {k}") for k, p in enumerate(parts, 1))
    if len(weights) != dataset.n_features:
        raise ConfigError(
            f"--init has {len(weights)} weights but dataset {dataset.name!r} has "
            f"{dataset.n_features} feature columns; give one weight per feature"
        )
    return weights


@dataclass(frozen=True)
class StepEvent:
    """Everything that happens to one data input during one step, in the article's names."""

    step: int
    epoch: int
    sample: int
    lr: Number
    x: tuple[Number, ...]
    y: Number
    o1: tuple[Number, ...]
    o2: Number
    o3: Number
    loss: Number
    d4: Number
    d3: Number
    d2: tuple[Number, ...]
    d1: tuple[Number, ...]
    grad: tuple[Number, ...]
    w_before: tuple[Number, ...]
    w_after: tuple[Number, ...]

    def values(self) -> dict[str, Number]:
        """The event as trace columns (``x_1``, ``o2_1``, ``w_after_3`` …)."""
        out: dict[str, Number] = {"lr": self.lr, "loss": self.loss}
        for name in ("x", "o1", "d2", "d1", "grad", "w_before", "w_after"):
            out.update(zip(vector(name, len(self.x)), getattr(self, name), strict=True))
        for name in ("y", "o2", "o3", "d4", "d3"):
            out[f"{name}_1"] = getattr(self, name)
        return out

    def numbers(self) -> tuple[Number, ...]:
        """Every value the event records (o1 is x and δ1 is δ2: not repeated), unnamed."""
        return (
            self.lr, self.loss, self.y, self.o2, self.o3, self.d4, self.d3,
            *self.x, *self.d2, *self.grad, *self.w_before, *self.w_after,
        )  # fmt: skip


@dataclass(frozen=True)
class PlannedStep:
    step: int
    epoch: int
    samples: tuple[int, ...]


def plan(
    n_samples: int, epochs: int, batch_size: int, shuffle: bool = False, seed: int | None = None
) -> Iterator[PlannedStep]:
    """Which samples each step uses, epoch after epoch (see
    :class:`~steptrace.train.fast.EpochOrders` for how shuffled orders are drawn)."""
    orders = EpochOrders(n_samples, shuffle, seed)
    step = 0
    for epoch in range(epochs):
        order = orders.order(epoch).tolist()
        for start in range(0, n_samples, batch_size):
            yield PlannedStep(step, epoch, tuple(order[start : start + batch_size]))
            step += 1


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    return -(-n_samples // batch_size)


def iter_events(
    dataset: Dataset,
    settings: Settings,
    start_step: int = 0,
    w: Sequence[Number] | None = None,
) -> Iterator[StepEvent]:
    """The learning phase, one :class:`StepEvent` per (step, sample), in the run's numerics.

    ``start_step`` and ``w`` continue a run from a given step with given weights.

    >>> from steptrace.data import seed_dataset
    >>> ds = seed_dataset()
    >>> last = list(iter_events(ds, Settings.parse(ds)))[-1]
    >>> last.loss, last.d3, last.grad
    (Fraction(1, 2), Fraction(-1, 1), (Fraction(0, 1), Fraction(-2000, 1), Fraction(-3000, 1)))
    """
    num = settings.numerics
    xs, ys = dataset.in_numerics(num)
    lr = num.make(settings.lr)
    weights = tuple(num.make(q) for q in settings.init) if w is None else tuple(w)
    for planned in plan(
        len(dataset), settings.epochs, settings.batch_size, settings.shuffle, settings.seed
    ):
        if planned.step < start_step:
            continue
        m = len(planned.samples)
        events = []
        for i in planned.samples:
            fw = model.forward(weights, xs[i])
            bw = model.backward(fw, weights, ys[i], m)
            events.append((i, fw, bw))
        w_after = model.update(weights, lr, model.sum_gradients([bw.grad for _, _, bw in events]))
        step_events = [
            StepEvent(planned.step, planned.epoch, i, lr, xs[i], ys[i], fw.o1, fw.o2, fw.o3,
                      model.loss(fw.o3, ys[i]), bw.d4, bw.d3, bw.d2, bw.d1, bw.grad,
                      weights, w_after)
            for i, fw, bw in events
        ]  # fmt: skip
        # A step is recorded whole or not at all: check every value before yielding any.
        num.check_size([v for e in step_events for v in e.numbers()], planned.step)
        yield from step_events
        weights = w_after


@dataclass
class _Columns:
    """Collects events into columns for the writer."""

    numerics: Numerics
    values: dict[str, list[Any]] = field(default_factory=dict)
    keys: dict[str, list[int]] = field(default_factory=dict)

    def add(self, e: StepEvent) -> None:
        for name, v in (("step", e.step), ("epoch", e.epoch), ("sample", e.sample)):
            self.keys.setdefault(name, []).append(v)
        for name, v in e.values().items():
            self.values.setdefault(name, []).append(v)

    def __len__(self) -> int:
        return len(self.keys.get("step", []))

    def take(self) -> Block:
        num = self.numerics
        block: Block = {k: np.array(v, dtype=np.int64) for k, v in self.keys.items()}
        for name, vs in self.values.items():
            block[name] = np.array([num.to_float(v) for v in vs], dtype=np.float64)
            if num.is_exact:
                block[name + "_exact"] = [num.exact_text(v) for v in vs]
        self.values, self.keys = {}, {}
        return block


def iter_blocks(
    dataset: Dataset,
    settings: Settings,
    start_step: int = 0,
    w: Sequence[Number] | None = None,
    max_rows: int = 65_536,
    max_seconds: float = 0.25,
) -> Iterator[Block]:
    """The run's rows as column blocks, each ending on a step boundary.

    A block closes after ``max_rows`` rows or ``max_seconds``, whichever comes first, so that
    the writer can flush often even when steps are slow (exact arithmetic).
    """
    if not settings.numerics.is_exact:
        yield from float_blocks(dataset, settings, start_step, w, max_rows)
        return
    cols = _Columns(settings.numerics)
    started = time.monotonic()
    last_step = None
    try:
        for event in iter_events(dataset, settings, start_step, w):
            if (
                event.step != last_step
                and len(cols)
                and (len(cols) >= max_rows or time.monotonic() - started >= max_seconds)
            ):
                yield cols.take()
                started = time.monotonic()
            cols.add(event)
            last_step = event.step
    except SteptraceError:
        # Exact arithmetic outgrew its limit before a step: the whole steps collected so far
        # still reach the writer, then the error.
        if len(cols):
            yield cols.take()
        raise
    if len(cols):
        yield cols.take()
