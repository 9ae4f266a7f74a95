"""A sweep's grid: every combination of the settings given several values, checked up front.

``--lr``, ``--batch-size``, ``--numerics``, ``--seed`` and ``--model`` may each be given several
times; the sweep records their cartesian product, one run per point, α varying fastest. A run
is named after the settings that vary (``seed-float64-lr1e-3-b2``), so that the names of a
sweep's runs tell them apart and sort them into groups.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..data import Dataset
from ..errors import ConfigError
from ..numerics import parse_exact
from .recorder import Lr, default_name
from .settings import ModelSource, Settings

__all__ = ["Grid", "grid_points"]


@dataclass(frozen=True)
class Grid:
    """The values of each setting a sweep goes over (one value: the setting does not vary)."""

    lrs: tuple[Lr, ...]
    batch_sizes: tuple[int, ...] = (1,)
    numerics: tuple[str, ...] = ("exact",)
    seeds: tuple[int | None, ...] = (None,)
    models: tuple[ModelSource | None, ...] = (None,)

    @classmethod
    def of(
        cls,
        lrs: Lr | Sequence[Lr],
        batch_size: int | Sequence[int] = 1,
        numerics: str | Sequence[str] = "exact",
        seed: int | Sequence[int] | None = None,
        model: ModelSource | Sequence[ModelSource] | None = None,
    ) -> Grid:
        """Each setting as one value or a list of them (a string is one value)."""
        grid = cls(
            _values(lrs), _values(batch_size), _values(numerics), _values(seed), _values(model)
        )
        checks: list[tuple[str, list[Any], Callable[[Any], Any] | None]] = [
            ("learning rate", [str(v).strip() for v in grid.lrs], _exact_or_text),
            ("batch size", list(grid.batch_sizes), None),
            ("numerics", list(grid.numerics), None),
            ("seed", list(grid.seeds), None),
            ("model", [str(m) for m in grid.models], None),
        ]
        for what, given, same_as in checks:
            values = given if same_as is None else [same_as(v) for v in given]
            i = next((i for i, v in enumerate(values) if v in values[:i]), None)
            if i is not None:
                first = given[values.index(values[i])]
                same = f" (the same value as {first})" if first != given[i] else ""
                raise ConfigError(f"{what} {given[i]} is given twice{same}; give each value once")
        return grid

    @property
    def varying(self) -> list[str]:
        """The settings given more than one value, in the order run names list them."""
        counts = {"model": self.models, "numerics": self.numerics, "lr": self.lrs,
                  "batch_size": self.batch_sizes, "seed": self.seeds}  # fmt: skip
        return [key for key, values in counts.items() if len(values) > 1]

    def __len__(self) -> int:
        return (len(self.lrs) * len(self.batch_sizes) * len(self.numerics) * len(self.seeds)
                * len(self.models))  # fmt: skip


def _exact_or_text(text: str) -> Any:
    """A learning rate's exact value, to tell ``1`` and ``1.0`` are one (its text if it is not
    a number: that error is the settings' to give)."""
    try:
        return parse_exact(text)
    except ConfigError:
        return text


def _values(value: Any) -> tuple[Any, ...]:
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,)


def grid_points(
    dataset: Dataset,
    grid: Grid,
    name: str | None = None,
    *,
    epochs: int = 1,
    init: str | Sequence[str | float | Fraction] | None = None,
    shuffle: bool = False,
) -> list[tuple[Settings, str]]:
    """Every point of ``grid`` as validated settings and a run name, α varying fastest.

    Every setting of every point is checked before anything is recorded. Without a seed, one
    is drawn for the whole sweep: every run that shuffles or draws weights gets the same one,
    so the runs differ only by the settings that vary.

    >>> from steptrace.data import seed_dataset
    >>> points = grid_points(seed_dataset(), Grid.of(["1", "1/2"], batch_size=[1, 2]))
    >>> [n for _, n in points]
    ['seed-exact-lr1-b1', 'seed-exact-lr1/2-b1', 'seed-exact-lr1-b2', 'seed-exact-lr1/2-b2']
    """
    points: list[tuple[Settings, str]] = []
    common_seed: int | None = None
    combos = itertools.product(grid.models, grid.numerics, grid.batch_sizes, grid.seeds, grid.lrs)
    for model, numerics, batch_size, seed, lr in combos:
        settings = Settings.parse(
            dataset, lr, epochs, batch_size, numerics, init, shuffle, seed, model
        )
        if seed is None and settings.seed is not None:
            # This run needs a seed (it shuffles or draws weights): the sweep's one.
            if common_seed is None:
                common_seed = settings.seed
            else:
                settings = Settings.parse(
                    dataset, lr, epochs, batch_size, numerics, init, shuffle, common_seed, model
                )
        points.append((settings, _name(dataset, settings, grid, name)))
    return points


def _name(dataset: Dataset, settings: Settings, grid: Grid, name: str | None) -> str:
    """``name`` (or the default name) followed by each setting that varies and is not in it
    already."""
    varying = grid.varying
    if name is None:
        # The default name has the dataset, the model (other than the article's), the number
        # system and α: only batch size and seed need adding.
        parts = [default_name(dataset, settings)]
        varying = [k for k in varying if k in ("batch_size", "seed")]
    else:
        parts = [name]
    labels = {
        "model": lambda: settings.model.name,
        "numerics": lambda: settings.numerics.name,
        "lr": lambda: f"lr{settings.lr_text}",
        "batch_size": lambda: f"b{settings.batch_size}",
        "seed": lambda: f"seed{settings.seed}",
    }
    return "-".join([*parts, *(labels[k]() for k in varying)])
