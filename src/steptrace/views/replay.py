"""Replaying a trace as the article writes it, for any stack of layers: 1 the data input,
2 the forward pass (a column per layer), 3 the loss, 4 the backward pass (δ from the loss
down to δ1, each layer's formula beside its value), 5 the update of every weight matrix and
bias, written out.

Formatting only; the numbers come from the trace. In exact runs the exact rational text is
shown (``-3/11600``; a long run's huge integers shortened as the dashboard shortens them,
``12345678901…78901234567 (176 digits)``, unless asked for in full), in float runs the shortest
text that reads back as the same float of the run's precision. The wording follows
:mod:`.notation`'s rules, so the article's model reads as the article writes it
(``δ2 = δ3 . w``) and a deeper stack names each layer's weights (``δ4 = δ5 . w4``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from ..trace.reader import Trace
from .grids import conv_worked, tensor_grids
from .notation import REPLAY, Notation, stack_notation
from .sample import SampleValues, batch_loss, sample_values, step_values
from .text import abbreviate, hang, pad, update_lines, width

__all__ = ["format_step", "iter_steps", "step_values"]

#: The backward pass's formulas are padded to at least this width, so values line up.
FORMULA_WIDTH = 29
#: More changed values than this in one tensor are counted rather than named.
MAX_NAMED = 8
INDENT = "   "


def _table(header: list[str], rows: list[list[str]], indent: str = INDENT) -> list[str]:
    widths = [max(width(h), *(width(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return indent + "| " + " | ".join(pad(c, w) for c, w in zip(cells, widths, strict=True))

    rule = indent + "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return [line(header) + " |", rule, *(line(r) + " |" for r in rows)]


def _image(nt: Notation, tensor: str) -> bool:
    """Whether a tensor is drawn as grids: an image (C × H × W) or kernels (out × in × k × k)."""
    return len(nt.shapes.get(tensor, ())) >= 3


def _shape(nt: Notation, tensor: str) -> str:
    return " × ".join(str(n) for n in nt.shapes[tensor])


def _data_input(nt: Notation, vals: list[SampleValues]) -> list[str]:
    if not _image(nt, "x"):
        return ["1: data input"] + [
            f"{INDENT}x = {v.vec('x')}   y_truth = {v.vec('y')}   (dataset row {v.row})"
            for v in vals
        ]
    out = ["1: data input"]
    for v in vals:
        out.append(f"{INDENT}x ({_shape(nt, 'x')}, dataset row {v.row}), y_truth = {v.vec('y')}")
        out += tensor_grids(v, "x", INDENT * 2)
    return out


def _forward(
    nt: Notation, vals: list[SampleValues], numerics: str, pixel: tuple[int, int, int] | None
) -> list[str]:
    if any(_image(nt, f"o{k}") for k in range(1, len(nt.layers) + 1)):
        return _forward_images(nt, vals, numerics, pixel)
    ks = range(1, len(nt.layers) + 1)
    header = ["x", *(f"o{k} = L{k}({nt.inp(k)})" for k in ks)]
    rows = [[v.vec("x"), *(v.vec(f"o{k}") for k in ks)] for v in vals]
    return ["2: forward pass", *_table(header, rows)]


def _forward_images(
    nt: Notation, vals: list[SampleValues], numerics: str, pixel: tuple[int, int, int] | None
) -> list[str]:
    """The forward pass of a stack of images: each layer's output as its channels' grids (a
    vector as the article writes one), and one convolution worked out for one pixel."""
    out = ["2: forward pass"]
    convs = [k for k in range(1, len(nt.layers) + 1) if nt.layer(k).type == "conv2d"]
    for n, v in enumerate(vals):
        if len(vals) > 1:
            out.append(f"{INDENT}sample {v.row}:")
        for k in range(1, len(nt.layers) + 1):
            tensor = f"o{k}"
            head = f"{INDENT}{nt.forward(k)}   [L{k}: {nt.layer(k).kind}, {_shape(nt, tensor)}]"
            if _image(nt, tensor):
                out += [head, *tensor_grids(v, tensor, INDENT * 2)]
            else:
                out += hang(head + "  = ", v.lines(tensor))
            if nt.layer(k).type == "conv2d" and n == 0:
                chosen = pixel if k == convs[0] else None  # --pixel: the first convolution's
                out += [INDENT * 2 + line for line in conv_worked(v, k, numerics, chosen)]
    return out


def _loss_terms(nt: Notation, v: SampleValues) -> str:
    """``1/2 (0 - 1)^2``, or ``1/2 ((…)^2 + (…)^2)`` over several outputs."""
    s = nt.style
    outs, ys = v.parts(nt.top), v.parts("y")
    terms = [f"({o} {s.minus} {y}){s.square}" for o, y in zip(outs, ys, strict=True)]
    total = terms[0] if len(terms) == 1 else "(" + " + ".join(terms) + ")"
    return f"{s.half} {total}"


def _loss(nt: Notation, vals: list[SampleValues], numerics: str) -> list[str]:
    out = [f"3: loss = {nt.loss_forward()}"]
    for v in vals:
        # The article's "correct?" column: the model's output is the expected one.
        correct = "yes" if v.correct else "no"
        out.append(f"{INDENT}loss = {_loss_terms(nt, v)} = {v.vec('loss')}   (correct? {correct})")
    if len(vals) > 1:
        mean = batch_loss(vals, numerics)
        mean = abbreviate(mean) if vals[0].short else mean
        out.append(f"{INDENT}batch loss (mean over {len(vals)} samples) = {mean}")
    return out


def _backward_rules(nt: Notation, m: int) -> list[tuple[str, str, int]]:
    """Every line of the backward pass, from the loss down: (formula, tensor, layer)."""
    top = nt.loss_number
    out = [(f"δ{top} = {nt.loss_backward(m)}", f"d{top}", top)]
    for k in range(len(nt.layers), 0, -1):
        for r in nt.backward(k):
            kind = r.tensor[len("grad_")] if r.tensor.startswith("grad_") else ""
            lhs = nt.partial(k, kind) if kind else f"δ{k}"
            out.append((f"{lhs} = {r.rule}", r.tensor, k))
    return out


def _gate(nt: Notation, v: SampleValues, k: int) -> str:
    """``   (o2 = 0: gate open)``: whether each neuron's gate lets δ through."""
    i = nt.inp(k)
    states = ["open" if v.nonneg(c) else "closed" for c in v.columns(i)]
    gates = "gate" if len(states) == 1 else "gates"
    return f"   ({i} = {v.vec(i)}: {gates} {', '.join(states)})"


def _backward(nt: Notation, vals: list[SampleValues]) -> list[str]:
    m = len(vals)
    top = nt.loss_number
    out = ["4: backward pass" + (f" (δ{top} divided by the batch size {m})" if m > 1 else "")]
    rules = _backward_rules(nt, m)
    columns = max(FORMULA_WIDTH, *(width(f) for f, t, _ in rules if not _image(nt, t)))
    for v in vals:
        if m > 1:
            out.append(f"{INDENT}sample {v.row}:")
        for formula, tensor, k in rules:
            gated = tensor == f"d{k}" and k < top and nt.layer(k).gated
            if _image(nt, tensor):
                gate = _image_gate(nt, v, k) if gated else ""
                out.append(f"{INDENT}{formula}   [{_shape(nt, tensor)}]{gate}")
                out += tensor_grids(v, tensor, INDENT * 2)
                continue
            lines = hang(f"{INDENT}{pad(formula, columns)} = ", v.lines(tensor))
            if gated:
                lines[-1] += _gate(nt, v, k)
            out += lines
    return out


def _image_gate(nt: Notation, v: SampleValues, k: int) -> str:
    """``   (gates open where o2 >= 0: 21 of 48)``: an image's gates, counted."""
    i = nt.inp(k)
    columns = v.columns(i)
    open_ = sum(v.nonneg(c) for c in columns)
    return f"   (gates open where {i} {nt.style.ge} 0: {open_} of {len(columns)})"


def _update(nt: Notation, vals: list[SampleValues], optimizer: str | None) -> list[str]:
    """ŵ = w − α·grad written out; or, for a run whose optimizer updated the parameters by a
    rule of its own (momentum, Adam …), what it did, named: w, then ŵ as it left them."""
    first, lr, m = vals[0], vals[0].vec("lr"), len(vals)
    out = ["5: update the weights"]
    if optimizer:
        out[0] += f" (by {optimizer}'s own rule, recorded as it left them; not ŵ = w - α * grad)"
    changed = []
    for k, kind in nt.param_tensors():
        before, after, grad = f"{kind}{k}_before", f"{kind}{k}_after", f"grad_{kind}{k}"
        term = nt.partial(k, kind) if m == 1 else f"Σ {nt.symbol(grad)}"
        lhs = f"{INDENT}{nt.symbol(after)} "
        more = " " * width(lhs) + "= "
        if _image(nt, after):
            rule = f"{optimizer}({nt.symbol(before)}, {term})" if optimizer else (
                f"{nt.symbol(before)} - α * {term}")  # fmt: skip
            out.append(f"{lhs}= {rule}   (α = {lr}; kernels out × in)")
            out += _kernel_update(nt, vals, before, grad, after)
        elif optimizer:
            out.append(f"{lhs}= {optimizer}({nt.symbol(before)}, {term})")
            out += hang(more, first.lines(after))
        else:
            out.append(f"{lhs}= {nt.symbol(before)} - α * {term}")
            grads = [v.lines(grad) for v in vals]
            out += hang(more, update_lines(first.lines(before), lr, grads, "-", REPLAY.scale))
            out += hang(more, first.lines(after))
        moved = [
            nt.entry(after, idx)
            for idx, (a, b) in _indexed(nt, after, first.columns(after), first.columns(before))
            if first.text[a] != first.text[b]
        ]
        if len(moved) > MAX_NAMED:  # a kernel's many weights: counted, not named
            total = len(first.columns(after))
            moved = [f"{'all' if len(moved) == total else len(moved)} of the {total} "
                     f"values of {nt.symbol(before)}"]  # fmt: skip
        changed += moved
    out.append(
        f"{INDENT}the weights did not change"
        if not changed
        else f"{INDENT}changed: " + ", ".join(changed)
    )
    return out


def _kernel_update(
    nt: Notation, vals: list[SampleValues], before: str, grad: str, after: str
) -> list[str]:
    """A convolution's kernels before the step, each sample's gradient, and after: grids."""
    first = vals[0]
    out = [f"{INDENT * 2}{nt.symbol(before)}:", *tensor_grids(first, before, INDENT * 2)]
    for v in vals:
        whose = f" (sample {v.row})" if len(vals) > 1 else ""
        out += [f"{INDENT * 2}{nt.symbol(grad)}{whose}:", *tensor_grids(v, grad, INDENT * 2)]
    out += [f"{INDENT * 2}{nt.symbol(after)}:", *tensor_grids(first, after, INDENT * 2)]
    return out


def _indexed(
    nt: Notation, tensor: str, after: list[str], before: list[str]
) -> list[tuple[tuple[int, ...], tuple[str, str]]]:
    """Each component's 1-based index beside its after and before columns."""
    index = [tuple(int(i) for i in c[len(tensor) + 1 :].split("_")) for c in after]
    return list(zip(index, zip(after, before, strict=True), strict=True))


def format_step(
    trace: Trace,
    rows: pd.DataFrame,
    notation: Notation | None = None,
    full: bool = False,
    pixel: tuple[int, int, int] | None = None,
) -> str:
    """The article's five points for one step (``rows``: the step's rows, one per sample).
    ``notation`` (:func:`~.notation.stack_notation` with :data:`~.notation.REPLAY`) may be
    given once for many steps of a run. Exact integers of more than 24 digits are shortened
    (:func:`~.text.abbreviate`) unless ``full``. ``pixel`` (channel, row, column) picks the
    convolution output worked out (default: the first channel's centre)."""
    nt = notation or stack_notation(trace, REPLAY)
    vals = sample_values(rows, trace.numerics, nt.shapes, short=not full)
    first = rows.iloc[0]
    step, epoch = int(first["step"]), int(first["epoch"])
    samples = [v.row for v in vals]
    batch = f"samples {samples}" if len(samples) > 1 else f"sample {samples[0]}"
    out = [f"Step {step} · epoch {epoch} · {batch} · {trace.numerics} · α = {vals[0].vec('lr')}"]
    out.append("")
    out += _data_input(nt, vals)
    out += _forward(nt, vals, trace.numerics, pixel)
    out += _loss(nt, vals, trace.numerics)
    out += _backward(nt, vals)
    out += _update(nt, vals, _own_update(trace))
    return "\n".join(out)


def _own_update(trace: Trace) -> str | None:
    """The optimizer's name when it updated the parameters by a rule of its own (a run another
    framework recorded: ``recorded_with.update`` is ``optimizer``), else None."""
    by = trace.meta.get("recorded_with") or {}
    if by.get("update") != "optimizer":
        return None
    return str((by.get("optimizer") or {}).get("type") or "the optimizer")


def iter_steps(trace: Trace, start: int = 0, stop: int | None = None) -> Iterator[pd.DataFrame]:
    """The rows of each step in ``[start, stop)``, streamed batch by batch (never the whole
    trace in memory), under version 2's column names whatever the trace's version."""
    pending: pd.DataFrame | None = None
    for batch in trace.iter_batches(steps=(start, stop)):
        frame = batch.to_pandas()
        if pending is not None:
            frame = pd.concat([pending, frame], ignore_index=True)
        if frame.empty:
            continue
        last = frame["step"].iloc[-1]
        # The last step's rows may go on in the next batch: hold them back until it comes.
        for _, group in frame[frame["step"] != last].groupby("step", sort=False):
            yield group
        pending = frame[frame["step"] == last]
    if pending is not None and not pending.empty:
        yield pending
