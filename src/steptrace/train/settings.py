"""A run's settings, checked against its dataset before anything is written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Dataset
from ..errors import ConfigError, ModelError
from ..model.kinds import LAYERS
from ..model.spec import Model, article_model, load_model
from ..numerics import Numerics, get_numerics, magnitude, parse_exact

__all__ = ["ModelSource", "Settings"]

ModelSource = str | Path | Mapping[str, Any] | Model
"""``"article"``, a model file's path, a dict of a model file's shape, or a :class:`Model`."""


@dataclass(frozen=True)
class Settings:
    """A run's settings, validated; numbers kept as the exact rationals the user typed."""

    lr: Fraction
    lr_text: str
    epochs: int
    batch_size: int
    numerics: Numerics
    model: Model
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
        model: ModelSource | None = None,
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
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ConfigError(f"seed must be a whole number of at least 0, got {seed!r}")
        drawn_seed = int(np.random.SeedSequence().generate_state(1)[0]) if seed is None else seed
        chosen = _model(dataset, model, init, drawn_seed)
        _check_model(chosen, dataset, system)
        if seed is None and (shuffle or chosen.drawn):
            seed = drawn_seed  # recorded, so the run can be recorded again
        return cls(lr_q, lr_text, epochs, batch_size, system, chosen, shuffle, seed)


def _model(
    dataset: Dataset,
    model: ModelSource | None,
    init: str | Sequence[str | float | Fraction] | None,
    seed: int,
) -> Model:
    n = dataset.n_features
    if model is None or (isinstance(model, str) and model == "article"):
        return article_model(init, n_in=n, dataset=f"dataset {dataset.name!r}")
    if init is not None:
        raise ConfigError(
            "--init sets the article model's weights; a model file gives its own "
            '("weights" of each linear layer)'
        )
    return load_model(model, n, seed)


def _check_model(model: Model, dataset: Dataset, system: Numerics) -> None:
    if system.is_exact and not model.rational:
        k, kind = next(
            (k, s["type"]) for k, s in enumerate(model.layers, 1) if not LAYERS[s["type"]].rational
        )
        needs = {"logistic": "e^x", "normalization": "a square root"}.get(kind, "irrationals")
        raise ModelError(
            f"layer {k} ({kind}) is not rational (it needs {needs}): exact arithmetic cannot "
            "run it; use --numerics float64 or float32"
        )
    stack = model.stack(system)
    n_out, targets = stack.n_out, dataset.targets
    if n_out != len(targets):
        raise ModelError(
            f"the model's last layer has {n_out} output{'s' if n_out != 1 else ''} but the "
            f"dataset has {len(targets)} target column{'s' if len(targets) != 1 else ''} "
            f"({', '.join(targets)}); give one target per output neuron with --target a,b"
        )
    for k in sorted(model.init):
        for n, (field, q) in enumerate(model.named_values(k), 1):
            if system.fits(q):
                continue
            # The article's weights come from --init: name them as the user typed them.
            what = (f"initial weight {n}" if model.name == "article"
                    else f"layer {k} ({model.layers[k - 1]['type']}): {field}")  # fmt: skip
            where = "float64 (exact runs record it too)" if system.is_exact else system.name
            raise ModelError(f"{what} ({magnitude(q)}) is too large for {where}")
