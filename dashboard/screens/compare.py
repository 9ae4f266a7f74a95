"""Compare runs (typically learning rates, or models) on one step axis, at one cursor: loss
for every run, each weight picked for the runs of one model. The page looks at its folder
again every few seconds (new runs show up, and join the comparison while every run is
chosen) and, while a run compared is recorded, every second: its new steps show up by
themselves. The address (``?run=a&run=b&step=N``) opens runs at a step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import streamlit as st

from steptrace import views
from steptrace.dashboard import data
from steptrace.dashboard.components import (
    address,
    charts,
    heatmaps,
    run_picker,
    run_status,
    step_cursor,
    weight_picker,
)
from steptrace.errors import SteptraceError, TraceError

CURSOR = "compare.cursor"
ZOOM = "compare.zoom"
ZOOM_END = "compare.zoom_end"  # the last step when the zoom was drawn: a zoom to the end follows

st.title("Compare runs")
named = address.runs("compare")
folder, _ = data.scan(data.root())
# What the page is set up for (its title, its timer); the fragment below reruns the whole
# page when that changes.
chosen = run_picker.chosen_many(folder, named) if folder.runs else []
if chosen:
    st.set_page_config(page_title=f"Compare {', '.join(chosen)} · steptrace")


def look(keys: list[str], say: bool = True) -> dict[str, views.Snapshot]:
    """Each run as it is now; a run that cannot be read says so and is left out."""
    snaps = {}
    for key in keys:
        try:
            snaps[key] = data.snapshot(key)
        except (SteptraceError, OSError, KeyError) as exc:
            if say:
                st.error(f"**{key}** cannot be read: {exc}")
    return snaps


recording = any(s.running for s in look(chosen, say=False).values())
poll = data.POLL_RUN if recording else data.POLL_FOLDER
every = step_cursor.interval(CURSOR, poll)


def sweep_section(keys: list[str], snaps: Mapping[str, views.Snapshot]) -> None:
    """Loss against α, when the runs have different learning rates."""
    try:
        sweep = views.lr_sweep({k: data.outcome(k, snaps[k]) for k in keys})
    except SteptraceError as exc:
        st.error(f"{exc} — press Rescan in the sidebar.")
        return
    if sweep is None:
        return
    with st.expander("Loss against learning rate", expanded=True):
        log_sweep = st.toggle("log loss", key="compare.sweep_log", value=True)
        charts.loss_by_lr(sweep, "log" if log_sweep else "linear")
        st.caption(sweep.note + (" Runs being recorded: so far." if recording else ""))
        loss = st.column_config.NumberColumn(format="%.4g")
        st.dataframe(
            sweep.table, hide_index=True, width="stretch",
            column_config={"final loss": loss, "lowest loss": loss},
        )  # fmt: skip


def zoom_range(last: int) -> tuple[int, int]:
    """The zoom slider over ``0 … last``: a zoom that reached the newest step keeps reaching
    it as the runs grow."""
    if last <= 0:
        return 0, 0
    lo, hi = st.session_state.get(ZOOM, (0, last))
    if hi == st.session_state.get(ZOOM_END) and hi < last:
        hi = last  # it showed everything up to the newest step: so it still does
    if not 0 <= lo <= hi <= last:
        lo, hi = 0, last  # the runs chosen changed: show them whole
    st.session_state[ZOOM] = (lo, hi)
    st.session_state[ZOOM_END] = last
    # A range slider: its state (set above) is a (lo, hi) pair.
    return cast(tuple[int, int], st.slider(
        "Zoom into steps", 0, last, key=ZOOM,
        help=f"Curves over more than {views.MAX_POINTS:,} steps are downsampled (min and max "
        "per bucket); zoom in to see every step.",
    ))  # fmt: skip


def charts_and_table(
    now: Mapping[str, views.Snapshot],
    step: int,
    zoom: tuple[int, int],
    divergence: Mapping[str, views.Divergence | None],
    weights: list[str],
    log_loss: bool,
    log_w: bool,
) -> None:
    lo, hi = int(zoom[0]), int(zoom[1])
    keys = list(now)
    runs = {k: s.trace for k, s in now.items()}
    loss = {k: data.curve(k, "loss", lo, hi) for k in now}
    charts.overlay("loss", loss, step, divergence, "log" if log_loss else "linear", (lo, hi), keys)
    note = views.weights_note(runs, weights)
    if note:
        st.caption(note)
    for first in range(0, len(weights), 3):
        for column, col in zip(weights[first : first + 3], st.columns(3), strict=False):
            with col:
                w = {k: data.curve(k, column, lo, hi)
                     for k in views.weight_runs(runs, column)}  # fmt: skip
                scale: charts.Scale = "symlog" if log_w else "linear"
                charts.overlay(column, w, step, divergence, scale, (lo, hi), keys, legend=False)
    st.subheader(f"All runs at step {step}")
    st.table(views.compare_at(runs, step, divergence))
    images_section(now, step)


def images_section(now: Mapping[str, views.Snapshot], step: int) -> None:
    """The runs' images and kernels at the step, as heatmaps (runs of images only)."""
    found: dict[str, views.StepView | None] = {}
    for key, snap in now.items():
        try:
            found[key] = data.step_view(data.root(), key, snap.trace.run_id, step, snap.trace)
        except TraceError:  # no such step in this run
            found[key] = None
    if views.image_choices(found):
        st.subheader(f"Images and kernels at step {step}")
        heatmaps.compare(found)


@st.fragment(run_every=every)
def compare() -> None:
    folder, table = data.scan(data.root())
    if not run_picker.show_runs(folder, table):
        if chosen:
            st.rerun()
        return
    picked = run_picker.pick_many(folder, named)
    if picked != chosen:
        st.rerun()  # other runs: the page's title and timer follow them
    if not picked:
        st.info("Choose one or more runs to compare.")
        return
    now = look(picked)
    if any(s.running for s in now.values()) != recording or any(
        s.status != folder.runs[k].status for k, s in now.items()
    ):
        data.rescan()  # a recorder finished (or started): list the runs again, and
        st.rerun()  # redraw the page with its new timer
    keys = [k for k in picked if k in now]
    if not keys:
        return
    sweep_section(keys, now)
    if step_cursor.source(CURSOR) != tuple(keys):
        asked = address.step("compare") if step_cursor.source(CURSOR) is None else None
        newest = max(s.last for s in now.values())
        first = asked if asked is not None else (newest if recording else 0)
        step_cursor.start(CURSOR, tuple(keys), min(first, max(newest, 0)),
                          recording and asked is None)  # fmt: skip
    for key, snap in now.items():
        if snap.running or snap.status != "complete":
            run_status.show(key, snap)
    try:
        divergence = {k: data.divergence(k, s) for k, s in now.items()}
    except SteptraceError as exc:
        st.error(f"{exc} — press Rescan in the sidebar.")
        return
    for key, div in divergence.items():
        if div is not None:
            st.warning(f"**{key}** {div}")
    shown = [k for k in keys if now[k].last >= 0]
    if not shown:
        st.info("No recorded steps yet.")
        return
    last = max(now[k].last for k in shown)
    opts = st.columns([4, 1, 1], vertical_alignment="bottom")
    with opts[0]:
        zoom = zoom_range(last)
    log_loss = opts[1].toggle("log loss", key="compare.log_loss")
    log_w = opts[2].toggle("log weights", key="compare.log_w", help="symmetric log: keeps signs")
    weights = weight_picker.pick({k: now[k].trace for k in shown})
    step = step_cursor.step_cursor(CURSOR, last, every, poll, live=recording)
    address.share(None if set(keys) == set(folder.runs) else keys, step)
    try:
        charts_and_table({k: now[k] for k in shown}, step, zoom, divergence, weights,
                         log_loss, log_w)  # fmt: skip
    except SteptraceError as exc:  # a run changed on disk since the folder was scanned
        st.error(f"{exc} — press Rescan in the sidebar.")


compare()
