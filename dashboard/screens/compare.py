"""Compare runs (typically learning rates) on one step axis, at one cursor."""

from __future__ import annotations

import streamlit as st

from steptrace import views
from steptrace.dashboard import data
from steptrace.dashboard.components import charts, run_picker, step_cursor
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
    zoom = opts[0].slider(
        "Zoom into steps", 0, last, key=ZOOM,
        help=f"Curves over more than {views.MAX_POINTS:,} steps are downsampled (min and max "
        "per bucket); zoom in to see every step.",
    )  # fmt: skip
else:
    zoom = (0, 0)
log_loss = opts[1].toggle("log loss", key="compare.log_loss")
log_w = opts[2].toggle("log weights", key="compare.log_w", help="symmetric log: keeps signs")


EVERY = step_cursor.interval(CURSOR)


def charts_and_table(step: int) -> None:
    lo, hi = int(zoom[0]), int(zoom[1])
    loss = {k: data.curve(root, k, "loss", lo, hi, data.fingerprint(k)) for k in keys}
    charts.overlay("loss", loss, step, divergence, "log" if log_loss else "linear", (lo, hi), keys)
    n = folder.runs[keys[0]].n_features
    same_width = [k for k in keys if folder.runs[k].n_features == n]
    if len(same_width) < len(keys):
        st.caption(f"Weights: only the runs with {n} weights, like {keys[0]}.")
    for first in range(1, n + 1, 3):
        cols = st.columns(3)
        for j, col in zip(range(first, min(first + 3, n + 1)), cols, strict=False):
            with col:
                w = {
                    k: data.curve(root, k, f"w_after_{j}", lo, hi, data.fingerprint(k))
                    for k in same_width
                }
                scale = "symlog" if log_w else "linear"
                charts.overlay(f"w_{j} (after the step)", w, step, divergence, scale,
                               (lo, hi), keys, legend=False)  # fmt: skip
    st.subheader(f"All runs at step {step}")
    st.table(views.compare_at({k: folder.runs[k] for k in keys}, step, divergence))


@st.fragment(run_every=EVERY)
def at_cursor() -> None:
    step = step_cursor.step_cursor(CURSOR, last, EVERY)
    try:
        charts_and_table(step)
    except SteptraceError as exc:  # a run changed on disk since the folder was scanned
        st.error(f"{exc} — press Rescan in the sidebar.")


at_cursor()
