"""Several runs side by side at one step: one column per run, one row per quantity; the same
image or kernels of each run as heatmaps, or their difference; and which runs each weight's chart
compares."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..errors import TraceError
from ..trace.names import describe_column
from ..trace.reader import Trace
from ..trace.schema import after_columns
from .divergence import Divergence
from .folder import last_step
from .heatmaps import Heatmaps, difference, span, tensor_values
from .notation import model_description
from .sample import SampleValues
from .step import StepView, step_view

#: Rows about the run or the step, before the recorded values.
HEAD_ROWS = ["α", "numerics", "data input", "dataset row", "model"]
#: Shown where a run has no such quantity (another model).
NONE = "—"


def shown_tensors(view: StepView) -> list[str]:
    """The tensors the table shows, in the article's order: x, each layer's output after the
    input layer, the loss, δ from the loss down to the first layer with parameters (the
    learning flux that reaches a weight), then each layer's gradient, w and ŵ (and b)."""
    nt = view.notation
    first = min(nt.param_layers, default=nt.loss_number)
    out = ["x", *(f"o{k}" for k in range(2, len(nt.layers) + 1)), "loss"]
    out += [f"d{k}" for k in range(nt.loss_number, first, -1)]
    for k, kind in nt.param_tensors():
        out += [f"grad_{kind}{k}", f"{kind}{k}_before", f"{kind}{k}_after"]
    return out


def _values(view: StepView) -> dict[str, str]:
    """A run's column at a step it recorded: row label → text."""
    column = {
        "α": view.lr,
        "numerics": view.numerics,
        "data input": view.inputs,
        "dataset row": ", ".join(str(s.row) for s in view.samples),
        "model": view.model,
    }
    for tensor in shown_tensors(view):
        label = view.notation.symbol(tensor)
        if tensor.endswith(("_before", "_after")):  # the same on every row of a step
            column[label] = _shown(view, view.samples[0], tensor)
        else:  # one value per data input of the step
            column[label] = "; ".join(_shown(view, s, tensor) for s in view.samples)
    return column


def _shown(view: StepView, s: SampleValues, tensor: str) -> str:
    """A value as the table shows it; an image or kernels by its shape and span (the heatmaps
    below the table show every value)."""
    if view.is_image(tensor):
        return f"{view.shape_text(tensor)}, {span(s, tensor)}"
    return s.vec(tensor)


def compare_at(
    runs: Mapping[str, Trace],
    step: int,
    divergence: Mapping[str, Divergence | None] | None = None,
) -> pd.DataFrame:
    """A side-by-side table of several runs at one step: one column per run, one row per
    quantity (α, numerics, model, x, each layer's output, loss, δ, each layer's gradient, w
    and ŵ, first divergence). Runs of different models share the rows they have in common; a
    run that has no such step says so in its column.

    >>> compare_at({"lr1": a, "lr0.1": b}, 2).loc["ŵ"]  # doctest: +SKIP
    """
    found: dict[str, StepView | None] = {}
    for key, trace in runs.items():
        try:
            found[key] = step_view(trace, step, key)
        except TraceError:
            found[key] = None
    return compare_views(runs, found, step, divergence)


def compare_views(
    runs: Mapping[str, Trace],
    found: Mapping[str, StepView | None],
    step: int,
    divergence: Mapping[str, Divergence | None] | None = None,
    lasts: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """:func:`compare_at` from the runs' views of the step, already read (None: the run has
    no such step; ``lasts``: each run's last step, if known)."""
    columns: dict[str, dict[str, str]] = {}
    labels: list[str] = []
    for key, trace in runs.items():
        view = found.get(key)
        if view is None:
            last = (lasts or {}).get(key)
            missing = f"no step {step} (last: {last_step(trace) if last is None else last})"
            values = {"α": trace.lr_text, "numerics": trace.numerics, "data input": missing,
                      "dataset row": missing, "model": model_description(trace)}  # fmt: skip
        else:
            values = _values(view)
            labels += [label for label in values if label not in labels]
        div = (divergence or {}).get(key)
        values["first divergence"] = f"{div.step} ({div.why})" if div else "none"
        columns[key] = values
    rows = HEAD_ROWS + [label for label in labels if label not in HEAD_ROWS]
    rows.append("first divergence")
    table = {key: [_cell(values, label) for label in rows] for key, values in columns.items()}
    return pd.DataFrame(table, index=rows)


def _cell(values: Mapping[str, str], label: str) -> str:
    if label in values:
        return values[label]
    # A run without this step says so on every row; one of another model has no such value.
    return values["data input"] if values["data input"].startswith("no step") else NONE


# -- weights across runs ---------------------------------------------------------------------------


def weight_columns(runs: Mapping[str, Trace]) -> list[str]:
    """Every parameter column (weights and biases after each step) of the runs, in order."""
    out: list[str] = []
    for trace in runs.values():
        out += [c for c in after_columns(trace.tensors) if c not in out]
    return out


def weight_label(column: str) -> str:
    """``w2_after_1_3`` → ``w2_after_1_3 · layer 2's weight W[1,3] after the update``."""
    return f"{column} · {describe_column(column)}"


def weight_runs(runs: Mapping[str, Trace], column: str) -> list[str]:
    """The runs a weight's chart compares: those that record it and are runs of the same
    model as the first of them (a weight of another model is another quantity, even under
    the same name; those runs are compared on loss)."""
    having = [key for key, trace in runs.items() if column in after_columns(trace.tensors)]
    if not having:
        return []
    model = model_description(runs[having[0]])
    return [key for key in having if model_description(runs[key]) == model]


#: Weights drawn at first: the first run's, up to this many (a chart each).
DEFAULT_WEIGHTS = 6


def default_weights(runs: Mapping[str, Trace], limit: int = DEFAULT_WEIGHTS) -> list[str]:
    """The weights drawn before any is picked: the first run's parameters, at most ``limit``."""
    first = next(iter(runs.values()), None)
    return [] if first is None else after_columns(first.tensors)[:limit]


def weights_note(runs: Mapping[str, Trace], columns: list[str]) -> str | None:
    """Which chosen runs no weight chart draws (runs of another model), or None."""
    drawn = {key for column in columns for key in weight_runs(runs, column)}
    left = [key for key in runs if key not in drawn]
    if not columns or not left:
        return None
    return (
        f"Weights compare runs of one model; {', '.join(left)} "
        f"{'is' if len(left) == 1 else 'are'} compared on loss only (pick one of "
        f"{'its' if len(left) == 1 else 'their'} weights to draw it)."
    )


# -- images and kernels across runs ------------------------------------------------------------


def image_choices(found: Mapping[str, StepView | None]) -> dict[str, str]:
    """The tensors the runs' heatmaps can be compared on, by name, with their titles: the
    images and kernels of the first run that has the step (none when it has no images)."""
    view = next((v for v in found.values() if v is not None), None)
    return {} if view is None or not view.images else view.image_tensors()


def default_image(found: Mapping[str, StepView | None]) -> str | None:
    """The tensor compared first: the first convolution's output (its feature maps), else the
    first of :func:`image_choices`."""
    choices = image_choices(found)
    view = next((v for v in found.values() if v is not None), None)
    if view is None or not choices:
        return None
    return next((f"o{k}" for k in view.kernel_layers if f"o{k}" in choices), next(iter(choices)))


def _comparable(
    found: Mapping[str, StepView | None], tensor: str
) -> tuple[list[tuple[str, StepView]], list[str]]:
    """The runs that have the tensor in the first such run's shape, and why the others are left
    out."""
    kept: list[tuple[str, StepView]] = []
    left: list[str] = []
    for key, view in found.items():
        if view is None:
            left.append(f"{key} has no such step")
        elif tensor not in view.notation.shapes or not view.is_image(tensor):
            left.append(f"{key} has no {tensor}")
        elif kept and view.notation.shapes[tensor] != kept[0][1].notation.shapes[tensor]:
            left.append(f"{key}'s {tensor} has another shape")
        else:
            kept.append((key, view))
    return kept, left


def compare_maps(
    found: Mapping[str, StepView | None], tensor: str, differences: bool = False
) -> tuple[Heatmaps | None, str]:
    """The same image or kernels (``tensor``: ``o2``, ``d4``, ``w2_after`` …) of several runs at
    one step, as heatmaps on one colour scale, a row of grids per run (an image of each run's
    first data input of the step; a gradient added up over the step's data inputs); or
    (``differences``) each run's minus the first run's, exactly when both runs are exact.
    With a note: the runs left out, and whether the data inputs drawn differ."""
    kept, left = _comparable(found, tensor)
    if not kept:
        return None, "; ".join(left)
    first_key, first = kept[0]
    rows = {key: [s.row for s in _drawn_samples(view, tensor)] for key, view in kept}
    notes = list(left)
    if not tensor.endswith(("_before", "_after")) and len({tuple(r) for r in rows.values()}) > 1:
        notes.append("the runs' data inputs drawn differ: " + ", ".join(
            f"{key} dataset row {', '.join(map(str, r))}" for key, r in rows.items()))  # fmt: skip
    title = first.image_tensors()[tensor]
    if differences:
        if len(kept) < 2:
            return None, "; ".join([*notes, "a difference needs two runs with this tensor"])
        base = _drawn_values(first, tensor)
        grids = {f"{key} − {first_key}": difference(base, _drawn_values(view, tensor), tensor, "")
                 for key, view in kept[1:]}  # fmt: skip
        title = f"{title} — each run minus {first_key}"
    else:
        grids = {key: view.tensor_maps(tensor) for key, view in kept}
    maps = [dataclasses.replace(m, title=f"{who} · {m.title}")
            for who, drawn in grids.items() for m in drawn.maps]  # fmt: skip
    one = next(iter(grids.values()))
    out = Heatmaps(tensor, tensor, title, one.shape, tuple(maps), one.note, one.mark, one.kind,
                   per_row=len(one.maps))  # fmt: skip
    return out, "; ".join(notes)


def _drawn_samples(view: StepView, tensor: str) -> tuple[SampleValues, ...]:
    """The data inputs a run's heatmap of ``tensor`` shows: the step's first (an image; a
    parameter, the same on every row), or all of them (a gradient, added up)."""
    return view.samples if tensor.startswith("grad_") else view.samples[:1]


def _drawn_values(view: StepView, tensor: str) -> np.ndarray:
    """The values a run's heatmap of ``tensor`` shows (see :func:`_drawn_samples`)."""
    return tensor_values(_drawn_samples(view, tensor), tensor, view.numerics)
