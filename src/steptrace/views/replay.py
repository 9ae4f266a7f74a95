"""Replaying a trace as the article writes it: forward table, loss, backward pass, update.

Formatting only; the numbers come from the trace. In exact runs the exact rational text is
shown (``-3/11600``), in float runs the shortest text that reads back as the same float of the
run's precision.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as pads

from ..numerics import format_value
from ..trace.reader import Trace
from ..trace.schema import EXACT_SUFFIX

__all__ = ["format_step", "iter_steps", "step_values"]


def step_values(row: pd.Series, numerics: str) -> dict[str, str]:
    """Every value column of one trace row as display text."""
    out = {}
    for col, value in row.items():
        name = str(col)
        if name.endswith(EXACT_SUFFIX) or not isinstance(value, float | np.floating):
            continue
        exact = row.get(name + EXACT_SUFFIX)
        out[name] = format_value(float(value), exact if isinstance(exact, str) else None, numerics)
    return out


def _vec(values: dict[str, str], name: str, n: int) -> str:
    return "(" + ", ".join(values[f"{name}_{k}"] for k in range(1, n + 1)) + ")"


def _table(header: list[str], rows: list[list[str]], indent: str = "   ") -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = (
        indent + "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    )
    rule = indent + "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        indent + "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
        for r in rows
    ]
    return [line, rule, *body]


def _sum(vals: list[dict[str, str]], n: int) -> str:
    terms = [_vec(v, "grad", n) for v in vals]
    return terms[0] if len(terms) == 1 else "(" + " + ".join(terms) + ")"


def _batch_loss(rows: pd.DataFrame, numerics: str) -> str:
    """The mean of the rows' losses: exactly, from the rational text, in exact runs."""
    exact = "loss" + EXACT_SUFFIX
    if exact in rows.columns:
        return str(sum(Fraction(v) for v in rows[exact]) / len(rows))
    return format_value(float(rows["loss"].mean()), None, "float64")


def format_step(trace: Trace, rows: pd.DataFrame) -> str:
    """The article's five points for one step (``rows``: the step's rows, one per sample)."""
    n, numerics = trace.n_features, trace.numerics
    vals = [step_values(r, numerics) for _, r in rows.iterrows()]
    first = rows.iloc[0]
    step, epoch = int(first["step"]), int(first["epoch"])
    samples = [int(s) for s in rows["sample"]]
    lr = vals[0]["lr"]
    batch = f"samples {samples}" if len(samples) > 1 else f"sample {samples[0]}"
    out = [f"Step {step} · epoch {epoch} · {batch} · {numerics} · α = {lr}", ""]
    out.append("1: data input")
    for s, v in zip(samples, vals, strict=True):
        out.append(f"   x = {_vec(v, 'x', n)}   y_truth = {v['y_1']}   (dataset row {s})")
    out.append("2: forward pass")
    out += _table(
        ["x", "o1 = L1(x)", "o2 = L2(o1)", "o3 = L3(o2)"],
        [[_vec(v, "x", n), _vec(v, "o1", n), v["o2_1"], v["o3_1"]] for v in vals],
    )
    out.append("3: loss = 1/2 (o3 - y_truth)^2")
    for (_, r), v in zip(rows.iterrows(), vals, strict=True):
        # The article's "correct?" column: the model's output is the expected one.
        correct = "yes" if r["loss"] == 0 else "no"
        out.append(
            f"   loss = 1/2 ({v['o3_1']} - {v['y_1']})^2 = {v['loss']}   (correct? {correct})"
        )
    if len(vals) > 1:
        out.append(f"   batch loss (mean over {len(vals)} samples) = {_batch_loss(rows, numerics)}")
    out.append(
        "4: backward pass"
        + (f" (δ4 divided by the batch size {len(vals)})" if len(vals) > 1 else "")
    )
    d4_formula = "δ4 = o3 - y_truth" if len(vals) == 1 else f"δ4 = (o3 - y_truth) / {len(vals)}"
    for s, (_, r), v in zip(samples, rows.iterrows(), vals, strict=True):
        if len(vals) > 1:
            out.append(f"   sample {s}:")
        gate = "open" if r["o2_1"] >= 0 else "closed"
        out += [
            f"   {d4_formula:<29} = {v['d4_1']}",
            f"   δ3 = δ4 if o2 >= 0 else 0     = {v['d3_1']}   (o2 = {v['o2_1']}: gate {gate})",
            f"   δ2 = δ3 . w                   = {_vec(v, 'd2', n)}",
            f"   ∂Loss/∂W2 = δ3 * o1           = {_vec(v, 'grad', n)}",
            f"   δ1 = δ2                       = {_vec(v, 'd1', n)}",
        ]
    grad = "Σ grad" if len(vals) > 1 else "∂Loss/∂W2"
    out += [
        "5: update the weights",
        f"   ŵ = w - α * {grad}",
        f"     = {_vec(vals[0], 'w_before', n)} - {lr} * " + _sum(vals, n),
        f"     = {_vec(vals[0], 'w_after', n)}",
    ]
    changed = [k for k in range(1, n + 1) if vals[0][f"w_after_{k}"] != vals[0][f"w_before_{k}"]]
    out.append(
        "   the weights did not change"
        if not changed
        else "   changed: " + ", ".join(f"w_{k}" for k in changed)
    )
    return "\n".join(out)


def iter_steps(trace: Trace, start: int = 0, stop: int | None = None) -> Iterator[pd.DataFrame]:
    """The rows of each step in ``[start, stop)``, streamed batch by batch (never the whole
    trace in memory)."""
    expr = pc.field("step") >= start
    if stop is not None:
        expr = expr & (pc.field("step") < stop)
    pending: pd.DataFrame | None = None
    for f in trace.parts(start, stop):
        for batch in pads.dataset(str(f), format="parquet").to_batches(filter=expr):
            frame = batch.to_pandas()
            if pending is not None:
                frame = pd.concat([pending, frame], ignore_index=True)
            if frame.empty:
                continue
            last = frame["step"].iloc[-1]
            for _, group in frame[frame["step"] != last].groupby("step", sort=False):
                yield group
            pending = frame[frame["step"] == last]
    if pending is not None and not pending.empty:
        yield pending
