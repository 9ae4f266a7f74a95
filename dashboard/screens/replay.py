"""Replay one run step by step, as the article does. The page looks at its folder again every
few seconds (new runs show up) and, while the run shown is recorded, every second: its new
steps show up by themselves. The address (``?run=…&step=…``) opens a run at a step."""

from __future__ import annotations

import contextlib

import streamlit as st

from steptrace.dashboard import data
from steptrace.dashboard.components import (
    address,
    charts,
    run_picker,
    run_status,
    step_cursor,
    step_panel,
)
from steptrace.errors import SteptraceError

CURSOR = "replay.cursor"
LOG_LOSS = "replay.log_loss"

st.title("Replay a run")
named = address.runs("replay")
folder, _ = data.scan(data.root())
# What the page is set up for (its title, its timer); the fragment below reruns the whole
# page when that changes.
key = run_picker.chosen_one(folder, named) if folder.runs else None
recording = False
if key is not None:
    st.set_page_config(page_title=f"{key} · steptrace replay")
    with contextlib.suppress(SteptraceError, OSError, KeyError):  # said in the fragment
        recording = data.snapshot(key).running
poll = data.POLL_RUN if recording else data.POLL_FOLDER
every = step_cursor.interval(CURSOR, poll)


@st.fragment(run_every=every)
def replay() -> None:
    folder, table = data.scan(data.root())
    if not run_picker.show_runs(folder, table):
        if key is not None:
            st.rerun()
        return
    picked = run_picker.pick_one(folder, named)
    if picked != key:
        st.rerun()  # another run: the page's title and timer follow it
    try:
        now = data.snapshot(picked)
    except (SteptraceError, OSError, KeyError) as exc:
        st.error(f"**{picked}** cannot be read: {exc}")
        return
    if now.running != recording or now.status != folder.runs[picked].status:
        data.rescan()  # the recorder finished (or started): list the runs again, and
        st.rerun()  # redraw the page with its new timer
    if step_cursor.source(CURSOR) != picked:
        # A new run: where the address says (once per session), else its newest step while
        # it is recorded (following it), else its first.
        asked = address.step("replay") if step_cursor.source(CURSOR) is None else None
        if named[:1] != [picked]:
            asked = None
        first = asked if asked is not None else (now.last if now.running else 0)
        follow = now.running and asked is None
        step_cursor.start(CURSOR, picked, min(first, max(now.last, 0)), follow)
    run_status.show(picked, now)
    if now.last < 0:
        st.info(f"**{picked}** has no recorded steps yet.")
        return
    step = step_cursor.step_cursor(CURSOR, now.last, every, poll, live=now.running)
    address.share([picked], step)
    try:
        loss = {picked: data.curve(picked, "loss", 0, now.last)}
        diverges = {picked: data.divergence(picked, now)}
        view = data.step_view(data.root(), picked, now.trace.run_id, step, now.trace)
    except SteptraceError as exc:  # the run changed on disk since it was listed
        st.error(f"{exc} — press Rescan in the sidebar.")
        return
    log = st.session_state.get(LOG_LOSS, False)
    domain = (0, max(now.last, 1))
    charts.overlay("loss", loss, step, diverges, "log" if log else "linear", domain, [picked],
                   legend=False, height=280, quiet=True)  # fmt: skip
    st.toggle("log loss", key=LOG_LOSS)
    step_panel.show(view)


replay()
