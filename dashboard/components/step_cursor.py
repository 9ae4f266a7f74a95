"""The step cursor: slider, previous/next, jump to a step, play/pause with a speed, and, while
a run is recorded, *follow*: the cursor stays on the newest step as steps arrive.

Owns the keys ``<prefix>.step`` (the one true position), ``<prefix>.slider``,
``<prefix>.jump``, ``<prefix>.playing``, ``<prefix>.speed``, ``<prefix>.follow``,
``<prefix>.source`` (what the cursor moves over: a run, or several; see :func:`start`) and
``<prefix>.shown`` (the last two steps the widgets were set to). The widgets write into
``<prefix>.step`` through callbacks; before they are drawn they are set from it, so every
control always shows the same step.

Follow is on by default while a run is recorded and the cursor is at its end. Moving the cursor
back turns it off (the step being read does not jump away); moving it to the newest step, or
the toggle, turns it on again.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import streamlit as st

SPEEDS = (1, 2, 5, 10, 20)  # steps per second
DEFAULT_SPEED = 2


def _keys(prefix: str) -> dict[str, str]:
    names = ("step", "slider", "jump", "playing", "speed", "follow", "source", "shown")
    return {n: f"{prefix}.{n}" for n in names}


def position(prefix: str) -> int:
    return int(st.session_state.get(f"{prefix}.step", 0))


def playing(prefix: str) -> bool:
    return bool(st.session_state.get(f"{prefix}.playing", False))


def following(prefix: str) -> bool:
    return bool(st.session_state.get(f"{prefix}.follow", False))


def source(prefix: str) -> Hashable | None:
    """What the cursor was last started over (see :func:`start`), None at first."""
    value: Hashable | None = st.session_state.get(f"{prefix}.source")
    return value


def start(prefix: str, over: Hashable, step: int, follow: bool) -> None:
    """Start the cursor over ``over`` (a run's key, or a tuple of them) at ``step``, following
    the newest step or not, and stop playing."""
    k = _keys(prefix)
    ss = st.session_state
    ss[k["source"]] = over
    ss[k["step"]] = max(step, 0)
    ss[k["follow"]] = follow
    ss[k["playing"]] = False


def interval(prefix: str, poll: float | None = None) -> float | None:
    """Seconds between automatic runs of the cursor's fragment (for ``st.fragment``): a step
    while playing, else ``poll`` (the page's look at its runs, or None)."""
    if playing(prefix):
        return 1.0 / float(st.session_state.get(f"{prefix}.speed", DEFAULT_SPEED))
    return poll


def _moved(prefix: str, step: int, last: int, live: bool) -> None:
    """The user put the cursor on ``step``: play stops; follow is on if that is the newest."""
    k = _keys(prefix)
    st.session_state[k["step"]] = step
    st.session_state[k["playing"]] = False
    st.session_state[k["follow"]] = live and step >= last


def _copy(prefix: str, widget: str, last: int, live: bool) -> Callable[[], None]:
    def callback() -> None:
        k = _keys(prefix)
        value = int(st.session_state[k[widget]])
        # A step the page itself put there, sent back by the browser with a rerun it asked
        # for (a timer while following or playing, or a click) before it had taken the
        # page's newer step in: not a move of the user's.
        if value in st.session_state.get(k["shown"], ()):
            return
        _moved(prefix, value, last, live)

    return callback


def _move(prefix: str, delta: int, last: int, live: bool) -> Callable[[], None]:
    def callback() -> None:
        _moved(prefix, min(max(position(prefix) + delta, 0), last), last, live)

    return callback


def _toggle(prefix: str, last: int) -> Callable[[], None]:
    def callback() -> None:
        k = _keys(prefix)
        start = not playing(prefix)
        if start and position(prefix) >= last:
            st.session_state[k["step"]] = -1  # at the end: play from the start
        st.session_state[k["playing"]] = start
        if start:
            st.session_state[k["follow"]] = False

    return callback


def _follow(prefix: str, last: int) -> Callable[[], None]:
    def callback() -> None:
        k = _keys(prefix)
        if st.session_state[k["follow"]]:
            st.session_state[k["step"]] = last
            st.session_state[k["playing"]] = False

    return callback


def step_cursor(prefix: str, last: int, every: float | None = None,
                poll: float | None = None, live: bool = False) -> int:  # fmt: skip
    """Draw the cursor over steps ``0 … last`` and return the current step.

    Call it inside a fragment made with ``run_every=every``, ``every = interval(prefix, poll)``
    (``poll``: seconds between the page's looks at its runs, or None); ``live``: a run is
    being recorded, so the cursor may follow its newest step. While playing, each run of the
    fragment moves one step on, and stops at the end; while following, each run puts the
    cursor on the newest step. When play starts or stops, the whole page reruns so that the
    fragment gets its new timer.
    """
    k = _keys(prefix)
    ss = st.session_state
    if interval(prefix, poll) != every:
        st.rerun()  # play or pause was pressed inside the fragment: give it its new timer
    step = min(max(position(prefix), 0 if not playing(prefix) else -1), last)
    if playing(prefix):
        step = min(step + 1, last)
        if step >= last:
            ss[k["playing"]] = False
    elif live and following(prefix):
        step = last
    step = max(step, 0)
    ss[k["step"]] = step
    # The slider and the step box are set on every run: their range grows with a recorded
    # run, and a widget whose range changed starts from its default unless it is set.
    ss[k["slider"]] = step
    ss[k["jump"]] = step
    shown = list(ss.get(k["shown"], ()))
    if not shown or shown[-1] != step:
        ss[k["shown"]] = (*shown[-1:], step)  # the last two steps put there
    # The toggle only when it must change: set on every run of a fragment that reruns by
    # itself, it would undo a click that arrives while the fragment runs.
    if following(prefix) and not live:
        ss[k["follow"]] = False

    if last > 0:
        st.slider(
            "Step", 0, last, key=k["slider"], on_change=_copy(prefix, "slider", last, live),
            help="Steps count from 0; the article counts data inputs from 1.",
        )  # fmt: skip
    widths = [1.3, 1.1, 1.8, 1.1, 2.2] + ([1.9] if live else [])
    cols = st.columns(widths, vertical_alignment="bottom")
    cols[0].button("◀ Previous", key=f"{prefix}.prev", on_click=_move(prefix, -1, last, live),
                   disabled=step <= 0)  # fmt: skip
    cols[1].button("Next ▶", key=f"{prefix}.next", on_click=_move(prefix, 1, last, live),
                   disabled=step >= last)  # fmt: skip
    cols[2].number_input(
        "Jump to step", 0, max(last, 0), step=1, key=k["jump"],
        on_change=_copy(prefix, "jump", last, live),
    )  # fmt: skip
    cols[3].button(
        "⏸ Pause" if playing(prefix) else "▶ Play",
        key=f"{prefix}.play",
        on_click=_toggle(prefix, last),
        disabled=last <= 0,
    )
    cols[4].select_slider("Speed (steps/s)", SPEEDS, value=DEFAULT_SPEED, key=k["speed"])
    if live:
        cols[5].toggle(
            "Follow newest step", key=k["follow"], on_change=_follow(prefix, last),
            help="While the run is recorded, keep the cursor on the newest step as steps "
            "arrive. Moving the cursor back turns it off.",
        )  # fmt: skip
    st.caption(f"{last + 1:,} steps, counted from 0 (0 to {last:,})")
    if interval(prefix, poll) != every:
        st.rerun()  # reached the end: stop the timer
    return step
