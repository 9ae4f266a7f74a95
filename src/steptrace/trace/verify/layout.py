"""What every row is checked against: where a stack's values sit in a row, and the run's
settings in its number system, with the plan of where each row belongs (step, epoch, sample).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ...model.stack import Stack
from ...model.values import formulas
from ...numerics import Number, Numerics
from ...schedule import EpochOrders
from ..schema import EXACT_SUFFIX, Tensor, value_names
from .problem import Array, Tol

__all__ = ["Layout", "RunSettings", "StepPlan"]

#: What a row computes (the rest are its inputs, and the step's parameters).
_COMPUTED = re.compile(r"o\d+|loss|d\d+|grad_[wb]\d+")


@dataclass(frozen=True)
class Layout:
    """Where a stack's values sit in a row, by the part each plays in checking it."""

    tensors: tuple[Tensor, ...]
    x: list[str]
    y: list[str]
    #: The input layer's copy of x (o1): what tells a changed x_k from a changed o1_k.
    copy_of_x: list[str]
    #: The parameters before and after the step, in :meth:`Stack.flat`'s order.
    before: list[str]
    after: list[str]
    #: The tensors a row computes, in file order: o{k}, loss, d{k}, grad_w{k}, grad_b{k}.
    computed: tuple[Tensor, ...]
    #: The last layer's output and the δ at the loss: they imply the row's y.
    top_out: list[str]
    top_delta: list[str]
    formulas: dict[str, str]  # by tensor name

    @classmethod
    def of(cls, stack: Stack, tensors: Sequence[Tensor]) -> Layout:
        """The layout of ``tensors``, which the caller has checked are ``stack``'s."""
        by_name = {t.name: t for t in tensors}

        def params(when: str) -> list[str]:
            names = [f"{p}{k}_{when}" for k in stack.param_layers for p in "wb"]
            return [c for name in names if name in by_name for c in by_name[name].columns()]

        top = stack.loss_number
        return cls(
            tuple(tensors), by_name["x"].columns(), by_name["y"].columns(),
            by_name["o1"].columns(), params("before"), params("after"),
            tuple(t for t in tensors if _COMPUTED.fullmatch(t.name)),
            by_name[f"o{top - 1}"].columns(), by_name[f"d{top}"].columns(), formulas(stack),
        )  # fmt: skip

    @cached_property
    def values(self) -> list[str]:
        """Every recorded number's column (each has an exact text twin in exact runs)."""
        return value_names(self.tensors)

    @cached_property
    def copies(self) -> set[str]:
        """Columns stored once, as another column of the same row (δ1 = δ2, grad_b = δ)."""
        return {c for t in self.tensors if t.same_as and not t.previous_step for c in t.columns()}

    @cached_property
    def data(self) -> list[str]:
        return [*self.x, *self.y]

    @cached_property
    def y_dependent(self) -> set[str]:
        """Columns a changed y may change: the loss and everything the backward pass gives."""
        return {c for t in self.computed if not t.name.startswith("o") for c in t.columns()}

    def meaning(self, column: str) -> str:
        base = column.removesuffix(EXACT_SUFFIX)
        for t in self.computed:
            if base in t.columns():
                return self.formulas.get(t.name, "")
        return ""

    @property
    def loss_delta(self) -> str:
        """δ at the loss, as the messages write it: ``δ4``."""
        return "δ" + self.top_delta[0].split("_")[0].removeprefix("d")


class StepPlan:
    """Where each row of a run belongs, from its plan: ``rows`` dataset rows visited
    ``epochs`` times in ``spe`` steps of ``b`` rows each, in ``orders``."""

    rows: int
    b: int
    epochs: int
    spe: int
    orders: EpochOrders

    @property
    def total_rows(self) -> int:
        return self.rows * self.epochs

    def plan(self, r0: int, r1: int) -> dict[str, Array]:
        """Where rows r0 … r1 - 1 belong: step, epoch, sample, rows m of their step."""
        r = np.arange(r0, r1, dtype=np.int64)
        epoch, pos = r // self.rows, r % self.rows
        last_m = self.rows - (self.spe - 1) * self.b
        return {
            "step": epoch * self.spe + pos // self.b,
            "epoch": epoch,
            "sample": self.orders.samples(epoch, pos),
            "m": np.where(pos // self.b == self.spe - 1, last_m, self.b),
        }

    def step_boundary(self, r: int) -> int:
        """The first row of the step holding row ``r`` (``r`` itself if a step starts there)."""
        return r - (r % self.rows) % self.b


@dataclass(frozen=True)
class RunSettings(StepPlan):
    """The settings every row is checked against, in the run's number system."""

    num: Numerics
    rows: int  # dataset rows
    b: int
    epochs: int
    spe: int
    lr: Number
    init: tuple[Number, ...]  # the parameters step 0 starts from, flat
    run_id: str
    orders: EpochOrders
    stack: Stack
    layout: Layout
    #: Recomputed values compared within (rtol, atol) (None: bit for bit): a run recorded by
    #: another framework.
    tol: Tol = None
    #: Whether w_after follows from the gradient by w − α·Σ grad (SGD); if not (momentum,
    #: Adam …), the recorded update is taken as it is and the next step starts from it.
    check_update: bool = True

    @property
    def exact(self) -> bool:
        return self.num.is_exact
