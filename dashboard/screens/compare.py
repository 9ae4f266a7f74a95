"""Compare runs (typically learning rates, or models) on one step axis, at one cursor: loss
for every run, each weight picked for the runs of one model."""

from __future__ import annotations

from typing import cast

import streamlit as st

from steptrace import views
from steptrace.dashboard import data
from steptrace.dashboard.components import charts, run_picker, step_cursor, weight_picker
from steptrace.errors import SteptraceError

CURSOR = "compare.cursor"
ZOOM = "compare.zoom"

st.title("Compare runs")
folder, table = data.scan(data.root())
if not run_picker.show_runs(folder, table):
    st.stop()
keys = run_picker.pick_many(folder)
if not keys:
    st.info("Choose one or more runs to compare.")
    st.stop()

root = data.root()
lasts, divergence = {}, {}
for key in keys:
    try:
        fp = data.fingerprint(key)
        lasts[key] = data.last_step(root, key, fp)
        divergence[key] = data.divergence(root, key, fp)
    except (SteptraceError, OSError) as exc:
        st.error(f"**{key}** cannot be read: {exc}")
keys = [k for k in keys if k in lasts and lasts[k] >= 0]
if not keys:
    st.stop()
last = max(lasts[k] for k in keys)

for key in keys:
    if divergence[key] is not None:
        st.warning(f"**{key}** {divergence[key]}")

sweep = views.lr_sweep({k: data.outcome(root, k, data.fingerprint(k)) for k in keys})
if sweep is not None:
    with st.expander("Loss against learning rate", expanded=True):
        log_sweep = st.toggle("log loss", key="compare.sweep_log", value=True)
        charts.loss_by_lr(sweep, "log" if log_sweep else "linear")
        st.caption(sweep.note)
        loss = st.column_config.NumberColumn(format="%.4g")
        st.dataframe(
            sweep.table, hide_index=True, width="stretch",
            column_config={"final loss": loss, "lowest loss": loss},
        )  # fmt: skip

opts = st.columns([4, 1, 1], vertical_alignment="bottom")
if last > 0:
    lo, hi = st.session_state.get(ZOOM, (0, last))
    if not 0 <= lo <= hi <= last:
        lo, hi = 0, last  # the runs chosen changed: show them whole
    st.session_state[ZOOM] = (lo, hi)
    # A range slider: its state (set above) is a (lo, hi) pair.
    zoom = cast(tuple[int, int], opts[0].slider(
        "Zoom into steps", 0, last, key=ZOOM,
        help=f"Curves over more than {views.MAX_POINTS:,} steps are downsampled (min and max "
        "per bucket); zoom in to see every step.",
    ))  # fmt: skip
else:
    zoom = (0, 0)
log_loss = opts[1].toggle("log loss", key="compare.log_loss")
log_w = opts[2].toggle("log weights", key="compare.log_w", help="symmetric log: keeps signs")
chosen = {k: folder.runs[k] for k in keys}
weights = weight_picker.pick(chosen)


EVERY = step_cursor.interval(CURSOR)


def charts_and_table(step: int) -> None:
    lo, hi = int(zoom[0]), int(zoom[1])
    loss = {k: data.curve(root, k, "loss", lo, hi, data.fingerprint(k)) for k in keys}
    charts.overlay("loss", loss, step, divergence, "log" if log_loss else "linear", (lo, hi), keys)
    note = views.weights_note(chosen, weights)
    if note:
        st.caption(note)
    for first in range(0, len(weights), 3):
        for column, col in zip(weights[first : first + 3], st.columns(3), strict=False):
            with col:
                w = {
                    k: data.curve(root, k, column, lo, hi, data.fingerprint(k))
                    for k in views.weight_runs(chosen, column)
                }
                scale: charts.Scale = "symlog" if log_w else "linear"
                charts.overlay(column, w, step, divergence, scale, (lo, hi), keys, legend=False)
    st.subheader(f"All runs at step {step}")
    st.table(views.compare_at(chosen, step, divergence))


@st.fragment(run_every=EVERY)
def at_cursor() -> None:
    step = step_cursor.step_cursor(CURSOR, last, EVERY)
    try:
        charts_and_table(step)
    except SteptraceError as exc:  # a run changed on disk since the folder was scanned
        st.error(f"{exc} — press Rescan in the sidebar.")


at_cursor()
