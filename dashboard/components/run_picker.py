"""The run picker: every run of the folder with its settings, the files that are not runs,
and the widgets that choose runs. Owns the keys ``picker.one``, ``picker.many`` and
``picker.all`` (whether every run is chosen, so that new runs join)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import streamlit as st

from steptrace import views

ONE = "picker.one"
MANY = "picker.many"
ALL = "picker.all"


def show_runs(folder: views.Folder, table: pd.DataFrame) -> bool:
    """Lay out the runs table and, next to it, a clear message for each file that could not
    be read. Returns whether there is any run to show."""
    where = f"`{folder.root}`"
    if folder.error is not None:
        st.error(f"Cannot read the folder {where}: {folder.error}")
        return False
    if folder.empty:
        st.info(
            f"No runs in {where} yet. Record one with `steptrace record --out {folder.root}`: "
            "it shows up here within seconds."
        )
        return False
    if folder.runs:
        with st.expander(f"Runs in {where} ({len(folder.runs)})", expanded=True):
            st.dataframe(table, hide_index=True, width="stretch")
    for path, message in folder.problems:
        st.error(f"**{path}** was skipped: {message}")
    if not folder.runs:
        st.warning(f"No readable runs in {where}.")
    return bool(folder.runs)


def _label(folder: views.Folder, key: str) -> str:
    trace = folder.runs[key]
    return f"{key}  ·  α = {trace.lr_text}  ·  {trace.numerics}"


def chosen_one(folder: views.Folder, named: Sequence[str] = ()) -> str:
    """The run :func:`pick_one` shows: the one chosen before, else the first of ``named``
    (the address's ``?run=…``) that is a run of the folder, else the first run."""
    options = list(folder.runs)
    if st.session_state.get(ONE) not in options:
        st.session_state[ONE] = next((k for k in named if k in folder.runs), options[0])
    chosen: str = st.session_state[ONE]
    return chosen


def pick_one(folder: views.Folder, named: Sequence[str] = ()) -> str:
    """Choose the run to replay (by its name in the folder), at first :func:`chosen_one`."""
    chosen_one(folder, named)
    picked: str = st.selectbox(
        "Run to replay", list(folder.runs), key=ONE, format_func=lambda k: _label(folder, k)
    )
    return picked


def chosen_many(folder: views.Folder, named: Sequence[str] = ()) -> list[str]:
    """The runs :func:`pick_many` shows: those chosen before; at first those of ``named`` (the
    address's ``?run=a&run=b``) that are runs of the folder, else all of them, and then
    runs recorded later too (while every run is chosen)."""
    options = list(folder.runs)
    chosen = st.session_state.get(MANY)
    if chosen is None:
        chosen = [k for k in named if k in folder.runs] or None
        st.session_state[ALL] = chosen is None
    if chosen is None or st.session_state.get(ALL):
        chosen = options  # every run, those that appeared since included
    kept = [k for k in chosen if k in options]
    # Set on every run, not only when it changes: a value the page sets reaches the browser
    # with that run alone, and a browser that drew the picker again before it had taken the
    # value in (a page that reruns every second, while a run is recorded) drew it empty and
    # sent that back, as if the user had cleared it.
    st.session_state[MANY] = kept
    return kept


def pick_many(folder: views.Folder, named: Sequence[str] = ()) -> list[str]:
    """Choose the runs to compare, at first :func:`chosen_many`; there is no cap."""
    options = list(folder.runs)
    chosen_many(folder, named)
    picked: list[str] = st.multiselect(
        "Runs to compare", options, key=MANY, format_func=lambda k: _label(folder, k),
        on_change=_chose_many(options),
    )  # fmt: skip
    return picked


def _chose_many(options: list[str]) -> Callable[[], None]:
    def callback() -> None:
        st.session_state[ALL] = set(st.session_state[MANY]) == set(options)

    return callback
