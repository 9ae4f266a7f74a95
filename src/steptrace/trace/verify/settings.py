"""The run's settings, read from its agreed metadata and checked against each other.

The settings must hold together (steps per epoch and steps from the dataset's rows, the batch
size and the epochs; lr and its exact text; a model whose every initial parameter is stored,
that reads the features and gives one output per target; the tensors that model records)
before any row is checked against them. A run another framework recorded is compared within a
tolerance, and its optimizer's own update is taken as recorded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ...errors import SteptraceError, TraceError
from ...model.spec import Model, load_model
from ...model.stack import Stack
from ...numerics import NUMERICS, Numerics, parse_exact
from ...schedule import EpochOrders, steps_per_epoch
from ..schema import Tensor, stack_tensors, tensors_of
from .layout import Layout, RunSettings
from .problem import Found, Problem, Tol

__all__ = [
    "FRAMEWORK_TOLERANCE", "PlanSettings", "plan_settings", "recorder", "run_settings",
    "tolerance", "with_tolerance",
]  # fmt: skip

#: (rtol, atol) for float runs recorded by another framework, by numerics: a few roundings
#: apart, summed in another order (values recomputed from each row's own inputs, so differences
#: do not accumulate).
FRAMEWORK_TOLERANCE = {"float64": (1e-9, 1e-12), "float32": (1e-5, 1e-6)}

Bad = Callable[[str, str], Found]
"""Makes the problem of a metadata key: ``bad("lr", "why")``."""


@dataclass(frozen=True)
class PlanSettings:
    """What every run's metadata says of its plan, checked: the number system, the dataset's
    rows, the batch size, the epochs and steps per epoch, the learning rate."""

    num: Numerics
    rows: int
    b: int
    epochs: int
    spe: int
    lr: Fraction
    dataset: dict[str, Any]


def plan_settings(meta: dict[str, Any], where: str) -> PlanSettings:
    """The run's plan from agreed metadata; a :class:`Problem` for any inconsistency."""

    def bad(key: str, message: str) -> Found:
        return Found(Problem(message, where, (key,)))

    num = NUMERICS.get(str(meta.get("numerics")))
    if num is None:
        raise bad("numerics", f"unknown number system {meta.get('numerics')!r}")
    for key in ("epochs", "batch_size"):
        if not isinstance(meta.get(key), int) or meta[key] < 1:
            raise bad(key, f"{key} must be a whole number of at least 1, not {meta.get(key)!r}")
    ds = meta.get("dataset")
    if not isinstance(ds, dict) or not isinstance(ds.get("features"), list):
        raise bad("dataset", "the dataset's description (features, rows) is missing")
    rows, b, epochs = ds.get("rows"), meta["batch_size"], meta["epochs"]
    if not isinstance(rows, int) or rows < 1:
        raise bad("dataset.rows", f"the dataset's row count is {rows!r}")
    if b > rows:
        raise bad("batch_size", f"batch size {b} is larger than the dataset ({rows} rows)")
    spe = steps_per_epoch(rows, b)
    if meta.get("steps_per_epoch", spe) != spe:
        raise bad(
            "steps_per_epoch",
            f"says {meta['steps_per_epoch']} steps per epoch, but {rows} rows in batches of {b} "
            f"make {spe}",
        )
    # No total at all for a loop that declared none and stopped early (docs/trace-format.md).
    if meta.get("steps", spe * epochs) != spe * epochs:
        raise bad("steps", f"says {meta['steps']} steps, but {epochs} epochs make {spe * epochs}")
    try:
        lr_q = parse_exact(str(meta.get("lr_exact", meta.get("lr"))), "the learning rate")
        lr_text = parse_exact(str(meta.get("lr")), "the learning rate")
    except SteptraceError as exc:
        raise bad("lr_exact", str(exc)) from None
    if lr_text != lr_q:
        raise bad("lr", f"lr {meta['lr']!r} is not lr_exact {meta['lr_exact']!r}")
    return PlanSettings(num, rows, b, epochs, spe, lr_q, ds)


def run_settings(meta: dict[str, Any], where: str) -> RunSettings:
    """The run's settings from agreed metadata; a :class:`Problem` for any inconsistency."""

    def bad(key: str, message: str) -> Found:
        return Found(Problem(message, where, (key,)))

    plan = plan_settings(meta, where)
    num, rows, b, epochs, spe, lr_q, ds = (plan.num, plan.rows, plan.b, plan.epochs, plan.spe,
                                           plan.lr, plan.dataset)  # fmt: skip
    model = _model(meta.get("model"), len(ds["features"]), num, bad)
    stack = model.stack(num)
    tensors = _tensors(meta, stack, ds.get("targets"), bad)
    try:
        init = tuple(stack.flat(model.params(num)))
    except OverflowError:
        raise bad("model", f"an initial parameter is beyond {num.name}'s range") from None
    return RunSettings(
        num, rows, b, epochs, spe, num.make(lr_q), init, str(meta.get("run_id")),
        EpochOrders(rows, bool(meta.get("shuffle")), meta.get("seed")), stack,
        Layout.of(stack, tensors),
    )  # fmt: skip


def _model(spec: Any, n_in: int, num: Numerics, bad: Bad) -> Model:
    """The run's model from its metadata: every initial parameter stored, every layer one the
    run's number system computes."""
    if not isinstance(spec, dict):
        raise bad("model", "the run's model (its layers and initial parameters) is missing")
    try:
        model = load_model(spec, n_in)
    except SteptraceError as exc:
        raise bad("model", str(exc)) from None
    if model.drawn:
        raise bad("model", "lacks initial weights: a run stores every parameter it starts from")
    if num.is_exact:
        for k, layer in enumerate(model.stack(num).layers, 1):
            if not layer.rational:
                raise bad("model", f"layer {k} ({layer.type}) is not rational: an exact run "
                          "cannot compute it")  # fmt: skip
    return model


def _tensors(meta: dict[str, Any], stack: Stack, targets: Any, bad: Bad) -> list[Tensor]:
    """The tensors the metadata lists: the ones the model records, one target per output."""
    if not isinstance(targets, list) or len(targets) != stack.n_out:
        raise bad(
            "dataset.targets",
            f"the model gives {stack.n_out} output(s), one per target, but the targets are "
            f"{targets!r}",
        )
    try:
        listed = tensors_of(meta)
    except TraceError as exc:
        raise bad("tensors", str(exc)) from None
    wanted = stack_tensors(stack, len(targets))
    for i, (got, want) in enumerate(zip(listed, wanted, strict=False)):
        # Each tensor is stored, or known from the one the model's formulas make it equal to.
        if got not in (want, dataclasses.replace(want, same_as=None, previous_step=False)):
            raise bad(
                f"tensors[{i}]", f"lists {_tensor_text(got)}, but the model records "
                f"{_tensor_text(want)} there",
            )  # fmt: skip
    if len(listed) != len(wanted):
        raise bad("tensors", f"lists {len(listed)} tensors, the model records {len(wanted)}")
    return listed


def _tensor_text(t: Tensor) -> str:
    shape = "×".join(str(n) for n in t.shape) or "scalar"
    return f"{t.name} ({shape}{', data' if t.data else ''})"


def recorder(meta: dict[str, Any]) -> str | None:
    """``pytorch 2.13.0`` for a run another framework recorded (``recorded_with``)."""
    by = meta.get("recorded_with")
    if not isinstance(by, dict) or not by.get("framework"):
        return None
    return f"{by['framework']} {by.get('version', '')}".strip()


def with_tolerance(
    run: RunSettings, meta: dict[str, Any], asked: tuple[float | None, float | None]
) -> RunSettings:
    """The run's settings with the tolerance its recomputed values are compared within, and
    whether its update is SGD's."""
    by = meta.get("recorded_with")
    update = by.get("update", "sgd") if isinstance(by, dict) else "sgd"
    return dataclasses.replace(run, tol=tolerance(run.num, meta, asked),
                               check_update=update != "optimizer")  # fmt: skip


def tolerance(num: Numerics, meta: dict[str, Any], asked: tuple[float | None, float | None]) -> Tol:
    """What recomputed values are compared within: ``asked``, else a framework's run's
    :data:`FRAMEWORK_TOLERANCE`; None: exactly (rationals are equal or not)."""
    tol: Tol = None
    rtol, atol = asked
    if num.is_exact:
        tol = None
    elif rtol is not None or atol is not None:
        tol = (rtol or 0.0, atol or 0.0)
    elif recorder(meta) is not None:
        tol = FRAMEWORK_TOLERANCE[num.name]
    return None if tol == (0.0, 0.0) else tol
