"""The run picker: every run of the folder with its settings, the files that are not runs,
and the widgets that choose runs. Owns the keys ``picker.one`` and ``picker.many``."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from steptrace import views

ONE = "picker.one"
MANY = "picker.many"


def show_runs(folder: views.Folder, table: pd.DataFrame) -> bool:
    """Lay out the runs table and, next to it, a clear message for each file that could not
    be read. Returns whether there is any run to show."""
    where = f"`{folder.root}`"
    if folder.error is not None:
        st.error(f"Cannot read the folder {where}: {folder.error}")
        return False
    if folder.empty:
        st.info(
            f"No runs in {where} yet. Record one with `steptrace record --out {folder.root}`, "
            "then press **Rescan** in the sidebar."
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


def pick_one(folder: views.Folder) -> str:
    """Choose the run to replay (by its name in the folder)."""
    options = list(folder.runs)
    if st.session_state.get(ONE) not in options:
        st.session_state[ONE] = options[0]
    picked: str = st.selectbox(
        "Run to replay", options, key=ONE, format_func=lambda k: _label(folder, k)
    )
    return picked


def pick_many(folder: views.Folder) -> list[str]:
    """Choose the runs to compare: at first those named in the address (``?run=a&run=b``)
    that are runs of the folder, else all of them; there is no cap."""
    options = list(folder.runs)
    chosen = st.session_state.get(MANY)
    if chosen is None:
        named = [k for k in st.query_params.get_all("run") if k in folder.runs]
        chosen = named or None
    st.session_state[MANY] = options if chosen is None else [k for k in chosen if k in options]
    picked: list[str] = st.multiselect(
        "Runs to compare", options, key=MANY, format_func=lambda k: _label(folder, k)
    )
    return picked
