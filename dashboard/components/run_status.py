"""A run's status above its steps: being recorded (and how far it got), or ended without
finishing. Draws a :class:`steptrace.views.Snapshot`."""

from __future__ import annotations

import streamlit as st

from steptrace import views


def recording_note(snap: views.Snapshot) -> str:
    """``Recording: 1,234 of 6,000,000 steps so far; new steps show up as they are flushed.``"""
    planned = snap.trace.meta.get("steps")
    of = f" of {int(planned):,}" if isinstance(planned, int) and planned > snap.steps else ""
    return (
        f"Recording: {snap.steps:,}{of} steps so far; new steps show up by themselves as the "
        "recorder flushes them."
    )


def show(key: str, snap: views.Snapshot) -> None:
    """Say that a run is being recorded, or that it did not finish (and why)."""
    if snap.running:
        st.info(f"**{key}** · {recording_note(snap)}")
    elif snap.status != "complete":
        st.warning(f"This run is {snap.status}: {snap.trace.reason or 'it did not finish'}")
