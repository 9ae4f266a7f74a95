"""One step laid out as the article writes it: the layer chain, the forward table, the loss,
the backward pass and the update. Cells that changed since the previous step are
highlighted. Draws a :class:`steptrace.views.StepView`; computes nothing."""

from __future__ import annotations

import html

import pandas as pd
import streamlit as st

from steptrace.views import StepView

CHANGED = "background-color: rgba(255, 196, 0, 0.30)"

_CSS = """
<style>
.st-chain {display:flex; flex-wrap:wrap; align-items:stretch; gap:.3rem; margin:.2rem 0 .6rem}
.st-chain .box {border:1px solid rgba(128,128,128,.45); border-radius:.5rem;
  padding:.3rem .55rem}
.st-chain .box.changed {background:rgba(255,196,0,.22); border-color:rgba(230,160,0,.9)}
.st-chain .layer {font-weight:700} .st-chain .formula {font-size:.8rem; opacity:.75}
.st-chain .value {font-family:monospace; font-size:.9rem; word-break:break-all}
.st-chain .arrow {align-self:center; font-size:1.3rem; opacity:.6}
</style>
"""

# Which recorded field each box of the chains shows (for the change highlight).
_FORWARD_FIELDS = ("x", "o1", "o2", "o3", "loss")
_BACKWARD_FIELDS = ("d4", "d3", "d2", "d1")


def _chain(boxes: list[tuple[str, str, str]], fields: tuple[str, ...], view: StepView,
           arrow: str) -> str:  # fmt: skip
    parts = []
    for (layer, formula, value), name in zip(boxes, fields, strict=True):
        cls = "box changed" if view.field_changed(name) else "box"
        parts.append(
            f'<div class="{cls}"><div class="layer">{html.escape(layer)}</div>'
            f'<div class="formula">{html.escape(formula)}</div>'
            f'<div class="value">{html.escape(value)}</div></div>'
        )
    return f'<div class="st-chain">{f"<div class=arrow>{arrow}</div>".join(parts)}</div>'


def _highlight(table: pd.DataFrame, changed: list[bool]) -> pd.io.formats.style.Styler:
    """Highlight whole columns whose field changed since the previous step."""
    styles = pd.DataFrame("", index=table.index, columns=table.columns)
    for col, flag in zip(table.columns, changed, strict=True):
        if flag:
            styles[col] = CHANGED
    return table.style.apply(lambda _: styles, axis=None)


def show(view: StepView) -> None:
    """Lay out one step."""
    st.subheader(view.label)
    st.caption(view.header())
    if view.changed:
        st.markdown(f":orange-background[{view.changes_text()}]")
    else:
        st.caption(view.changes_text())

    st.markdown("**Layer chain** — forward: the values flowing from the data input to the loss")
    st.markdown(_CSS + _chain(view.chain(), _FORWARD_FIELDS, view, "→"), unsafe_allow_html=True)
    st.markdown("backward: δ flowing back from the loss to the input")
    st.markdown(_chain(view.backward_chain(), _BACKWARD_FIELDS, view, "←"), unsafe_allow_html=True)

    left, right = st.columns(2)
    with left:
        st.markdown("**1–2: data input and forward pass**")
        f = view.field_changed
        st.table(
            _highlight(view.forward_table(), [f("x"), f("o1"), f("o2"), f("o3")]),
            hide_index=True,
        )
    with right:
        st.markdown("**3: loss**")
        st.table(
            _highlight(view.loss_table(), [f("o3"), f("y"), f("loss"), f("loss")]),
            hide_index=True,
        )
    st.markdown("**4: backward pass**")
    st.table(
        _highlight(view.backward_table(), [f("d4"), f("d3"), f("d2"), f("grad"), f("d1")]),
        hide_index=True,
    )
    st.markdown("**5: update the weights** — ŵ = w − α·grad")
    st.latex(view.update_latex())
    st.code(view.update_text(), language=None, wrap_lines=True)
    st.table(
        _highlight(view.weights_table(), [False, f("w_before"), f("grad"), f("w_after"), False]),
        hide_index=True,
    )
    if view.weights_changed:
        st.success(view.update_note())
    else:
        st.caption(view.update_note())
    with st.expander("Every recorded value of this step, in full"):
        st.dataframe(view.full_values(), width="stretch")
