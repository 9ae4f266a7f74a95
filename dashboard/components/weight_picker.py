"""The weights to draw when comparing runs: every parameter of the chosen runs, the first
run's at first. Owns the key ``weights.picked``."""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st

from steptrace import views
from steptrace.trace.reader import Trace

PICKED = "weights.picked"


def pick(runs: Mapping[str, Trace]) -> list[str]:
    """Choose parameter columns (``w2_after_1_3``, ``b2_after_1`` …) to draw, a chart each.
    A choice left over from other runs keeps the columns these runs still have."""
    options = views.weight_columns(runs)
    chosen = st.session_state.get(PICKED)
    kept = None if chosen is None else [c for c in chosen if c in options]
    if kept is None or (chosen and not kept):
        kept = views.default_weights(runs)
    st.session_state[PICKED] = kept
    picked: list[str] = st.multiselect(
        "Weights to draw (after each step)",
        options,
        key=PICKED,
        format_func=views.weight_label,
        help="Every weight and bias of the chosen runs. A weight's chart compares the runs "
        "of one model; runs of other models are compared on loss.",
    )
    return picked
