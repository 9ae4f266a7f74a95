"""Replay one run step by step, as the article does."""

from __future__ import annotations

import streamlit as st

from steptrace.dashboard import data
from steptrace.dashboard.components import run_picker, step_cursor, step_panel
from steptrace.errors import SteptraceError

CURSOR = "replay.cursor"

st.title("Replay a run")
folder, table = data.scan(data.root())
if run_picker.show_runs(folder, table):
    key = run_picker.pick_one(folder)
    trace = folder.runs[key]
    try:
        last = data.last_step(data.root(), key, data.fingerprint(key))
    except (SteptraceError, OSError) as exc:
        st.error(f"**{key}** cannot be read: {exc}")
        st.stop()
    if trace.status != "complete":
        st.warning(f"This run is {trace.status}: {trace.reason or 'it did not finish'}")
    if last < 0:
        st.info(f"**{key}** has no recorded steps yet.")
        st.stop()

    every = step_cursor.interval(CURSOR)

    @st.fragment(run_every=every)
    def replay() -> None:
        step = step_cursor.step_cursor(CURSOR, last, every)
        try:
            view = data.step_view(data.root(), key, step, data.fingerprint(key))
        except SteptraceError as exc:  # the run changed on disk since the folder was scanned
            st.error(f"{exc} — press Rescan in the sidebar.")
            return
        step_panel.show(view)

    replay()
