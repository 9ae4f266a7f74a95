"""The step cursor: slider, previous/next, jump to a step, play/pause with a speed.

Owns the keys ``<prefix>.step`` (the one true position), ``<prefix>.slider``,
``<prefix>.jump``, ``<prefix>.playing`` and ``<prefix>.speed``. The widgets write into
``<prefix>.step`` through callbacks; before they are drawn they are set from it, so every
control always shows the same step.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

SPEEDS = (1, 2, 5, 10, 20)  # steps per second
DEFAULT_SPEED = 2


def _keys(prefix: str) -> dict[str, str]:
    names = ("step", "slider", "jump", "playing", "speed")
    return {n: f"{prefix}.{n}" for n in names}


def position(prefix: str) -> int:
    return int(st.session_state.get(f"{prefix}.step", 0))


def playing(prefix: str) -> bool:
    return bool(st.session_state.get(f"{prefix}.playing", False))


def interval(prefix: str) -> float | None:
    """Seconds between automatic steps while playing, else None (for ``st.fragment``)."""
    if not playing(prefix):
        return None
    return 1.0 / float(st.session_state.get(f"{prefix}.speed", DEFAULT_SPEED))


def _copy(prefix: str, widget: str) -> Callable[[], None]:
    def callback() -> None:
        k = _keys(prefix)
        st.session_state[k["step"]] = int(st.session_state[k[widget]])
        st.session_state[k["playing"]] = False

    return callback


def _move(prefix: str, delta: int, last: int) -> Callable[[], None]:
    def callback() -> None:
        k = _keys(prefix)
        st.session_state[k["step"]] = min(max(position(prefix) + delta, 0), last)
        st.session_state[k["playing"]] = False

    return callback


def _toggle(prefix: str, last: int) -> Callable[[], None]:
    def callback() -> None:
        k = _keys(prefix)
        start = not playing(prefix)
        if start and position(prefix) >= last:
            st.session_state[k["step"]] = -1  # at the end: play from the start
        st.session_state[k["playing"]] = start

    return callback


def step_cursor(prefix: str, last: int, every: float | None = None) -> int:
    """Draw the cursor over steps ``0 … last`` and return the current step.

    Call it inside a fragment made with ``run_every=every``, ``every = interval(prefix)``:
    while playing, each run of the fragment moves one step on, and stops at the end. When play
    starts or stops, the whole page reruns so that the fragment gets its new timer.
    """
    k = _keys(prefix)
    ss = st.session_state
    if interval(prefix) != every:
        st.rerun()  # play or pause was pressed inside the fragment: give it its new timer
    step = min(max(position(prefix), 0 if not playing(prefix) else -1), last)
    if playing(prefix):
        step = min(step + 1, last)
        if step >= last:
            ss[k["playing"]] = False
    step = max(step, 0)
    ss[k["step"]] = step
    ss[k["slider"]] = step
    ss[k["jump"]] = step

    if last > 0:
        st.slider(
            "Step", 0, last, key=k["slider"], on_change=_copy(prefix, "slider"),
            help="Steps count from 0; the article counts data inputs from 1.",
        )  # fmt: skip
    cols = st.columns([1.3, 1.1, 1.8, 1.1, 2.2], vertical_alignment="bottom")
    cols[0].button("◀ Previous", key=f"{prefix}.prev", on_click=_move(prefix, -1, last),
                   disabled=step <= 0)  # fmt: skip
    cols[1].button("Next ▶", key=f"{prefix}.next", on_click=_move(prefix, 1, last),
                   disabled=step >= last)  # fmt: skip
    cols[2].number_input(
        "Jump to step", 0, max(last, 0), step=1, key=k["jump"], on_change=_copy(prefix, "jump")
    )
    cols[3].button(
        "⏸ Pause" if playing(prefix) else "▶ Play",
        key=f"{prefix}.play",
        on_click=_toggle(prefix, last),
        disabled=last <= 0,
    )
    cols[4].select_slider("Speed (steps/s)", SPEEDS, value=DEFAULT_SPEED, key=k["speed"])
    st.caption(f"{last + 1:,} steps, counted from 0 (0 to {last:,})")
    if interval(prefix) != every:
        st.rerun()  # reached the end: stop the timer
    return step
