"""Curves of several runs on one step axis, the cursor as a vertical rule, divergence
marked. Draws :class:`steptrace.views.Curve` objects; computes nothing but the chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import altair as alt
import pandas as pd
import streamlit as st

from steptrace.views import Curve, Divergence, SweepView, curves_note

#: The axis scales the charts offer (symlog keeps the sign of weights).
Scale = Literal["linear", "log", "symlog"]
#: Steps are whole numbers: no tick between two of them, none written 1.0, thousands grouped.
STEP_AXIS = alt.Axis(tickMinStep=1, format=",d")


def overlay(
    title: str,
    curves: Mapping[str, Curve],
    cursor: int,
    divergence: Mapping[str, Divergence | None],
    scale: Scale,
    domain: tuple[int, int],
    runs: Sequence[str] | None = None,
    legend: bool = True,
    height: int = 260,
    quiet: bool = False,
) -> None:
    """One chart: a line per run, a rule at the cursor, a red mark where a run diverges.

    ``scale`` is ``linear``, ``log`` (values ≤ 0 left out, and counted) or ``symlog`` (for
    weights, which may be negative); its axis spans the values drawn, not from 0 (a loss
    between 0.12 and 0.14 gets ticks of its own). Steps are whole numbers on the step axis.
    ``height``: the whole chart's, in pixels, title and axes included. Under it, a note on
    downsampling (``quiet``: only when a curve is downsampled or values were left out)."""
    frames = [c.frame.assign(run=run) for run, c in curves.items() if not c.frame.empty]
    data = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame({"step": [], "value": [], "run": []})
    )
    hidden = 0
    if scale == "log":
        # Zero and negative values have no place on a log axis: say how many were left out.
        positive = data["value"] > 0
        hidden = int((~positive & data["value"].notna()).sum())
        data = data[positive]
    x = alt.X("step:Q", title="step", scale=alt.Scale(domain=list(domain), nice=False),
              axis=STEP_AXIS)  # fmt: skip
    y = alt.Y("value:Q", title=title, scale=alt.Scale(type=scale, zero=False))
    lines = (
        alt.Chart(data)
        .mark_line(point=len(data) <= 60, clip=True)
        .encode(
            x=x,
            y=y,
            color=alt.Color(
                "run:N",
                title="run",
                scale=alt.Scale(domain=list(runs or curves)),  # a run's colour in every chart
                legend=alt.Legend(orient="bottom", columns=4) if legend else None,
            ),
            tooltip=["run", "step", "value"],
        )
    )
    rule = (
        alt.Chart(pd.DataFrame({"step": [cursor]}))
        .mark_rule(color="#555555", strokeDash=[4, 3])
        .encode(x=alt.X("step:Q", scale=alt.Scale(domain=list(domain), nice=False)))
    )
    marks = pd.DataFrame(
        [
            {"step": d.step, "run": run, "why": d.why}
            for run, d in divergence.items()
            if d is not None and run in curves
        ]
    )
    layers: list[alt.Chart] = [lines, rule]
    if not marks.empty:
        layers.append(
            alt.Chart(marks)
            .mark_rule(color="red", strokeWidth=2, clip=True)
            .encode(
                x=alt.X("step:Q", scale=alt.Scale(domain=list(domain))),
                tooltip=["run", "step", "why"],
            )
        )
    # The height goes to Streamlit: it fits the whole chart in it (a height given to the
    # chart itself is the plot's, and Streamlit then squeezed the plot into what was left).
    chart = alt.layer(*layers).properties(title=title)
    st.altair_chart(chart, width="stretch", height=height)
    note = curves_note(curves)
    if hidden:
        note += f" · {hidden} value(s) ≤ 0 not drawn on the log axis"
    if not quiet or hidden or any(c.downsampled for c in curves.values()):
        st.caption(note)


def loss_by_lr(view: SweepView, scale: Scale) -> None:
    """Final and lowest loss against α (log axis), a point per run; a red rule at the α of
    each run that diverged. ``scale`` of the loss axis: ``linear`` or ``log``."""
    points = view.points
    hidden = 0
    if scale == "log":
        positive = points["loss"] > 0
        hidden = int((~positive).sum())
        points = points[positive]
    x = alt.X("lr:Q", title="learning rate α", scale=alt.Scale(type="log"))
    lines = (
        alt.Chart(points)
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("loss:Q", title="loss", scale=alt.Scale(type=scale)),
            color=alt.Color("which:N", title=None, legend=alt.Legend(orient="bottom")),
            tooltip=["run", "lr", "which", "loss"],
        )
    )
    layers: list[alt.Chart] = [lines]
    if not view.diverged.empty:
        layers.append(
            alt.Chart(view.diverged)
            .mark_rule(color="red", strokeWidth=2)
            .encode(x=x, tooltip=["run", "lr", "why"])
        )
    st.altair_chart(alt.layer(*layers).properties(height=260), width="stretch")
    if hidden:
        some = "1 loss of 0 is" if hidden == 1 else f"{hidden} losses of 0 are"
        st.caption(f"{some} not shown on the log axis.")
