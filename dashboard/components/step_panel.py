"""One step laid out as the article writes it, for any stack: the layer chain (values flowing
forward, δ flowing back), the forward table, the loss, the backward pass, the update, each
layer's weight matrices and a table per layer. Cells that changed since the previous step are
highlighted. In a run of images, the chain says each value's shape, and feature maps, δ maps
and kernels are heatmaps (:mod:`.heatmaps`). Draws a :class:`steptrace.views.StepView`;
computes nothing.

Owns the key ``panel.sample``: which data input of a mini-batch step the layer chain is drawn
for (kept from step to step)."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import streamlit as st

from steptrace.dashboard.components import heatmaps
from steptrace.views import Link, StepView, Table

CHANGED = "background-color: rgba(255, 196, 0, 0.30)"
SAMPLE = "panel.sample"

_CSS = """
<style>
.st-chain {display:flex; flex-wrap:wrap; align-items:stretch; gap:.3rem; margin:.2rem 0 .6rem}
.st-chain .box {border:1px solid rgba(128,128,128,.45); border-radius:.5rem;
  padding:.3rem .55rem; max-width:22rem}
.st-chain .box.changed {background:rgba(255,196,0,.22); border-color:rgba(230,160,0,.9)}
.st-chain .layer {font-weight:700} .st-chain .kind {font-weight:400; opacity:.7}
.st-chain .formula {font-size:.8rem; opacity:.75}
.st-chain .value {font-family:monospace; font-size:.9rem; word-break:break-word}
.st-chain .note {font-size:.75rem; font-style:italic; opacity:.8}
.st-chain .shape {font-size:.75rem; font-family:monospace; opacity:.75}
.st-chain .link {display:flex; align-items:stretch; gap:.3rem}
.st-chain .arrow {align-self:center; font-size:1.3rem; opacity:.6}
</style>
"""


def _box(link: Link) -> str:
    cls = "box changed" if link.changed else "box"
    note = f'<div class="note">{html.escape(link.note)}</div>' if link.note else ""
    shape = f'<div class="shape">{html.escape(link.shape)}</div>' if link.shape else ""
    return (
        f'<div class="{cls}"><div class="layer">{html.escape(link.layer)} '
        f'<span class="kind">{html.escape(link.kind)}</span></div>'
        f'<div class="formula">{html.escape(link.formula)}</div>{shape}'
        f'<div class="value">{html.escape(link.value)}</div>{note}</div>'
    )


def _chain(links: list[Link]) -> str:
    """The boxes left to right, in the direction the values (or the δ) flow. Each arrow is
    kept with the box it points at, so that a chain wrapped over several rows never leaves
    an arrow at the end of a row, pointing at nothing."""
    arrow = '<div class="arrow">→</div>'
    joined = "".join(
        f'<div class="link">{arrow if i else ""}{_box(link)}</div>' for i, link in enumerate(links)
    )
    return f'<div class="st-chain">{joined}</div>'


def _styled(table: Table) -> pd.io.formats.style.Styler:
    """The table with the cells that changed since the previous step highlighted."""
    styles = pd.DataFrame(
        np.where(table.changed.to_numpy(dtype=bool), CHANGED, ""),
        index=table.frame.index,
        columns=table.frame.columns,
    )
    styled: pd.io.formats.style.Styler = table.frame.style.apply(lambda _: styles, axis=None)
    return styled


def _table(table: Table, index: bool = False, fit: bool = False) -> None:
    """A table, as wide as the page or (``fit``) as its cells."""
    st.table(_styled(table), hide_index=not index, width="content" if fit else "stretch")


def _changes(view: StepView) -> None:
    if view.changed:
        st.markdown(f":orange-background[{view.changes_text()}]")
    else:
        st.caption(view.changes_text())


def _sample(view: StepView) -> int:
    """The data input of the step to draw the chain for: one to pick in a mini-batch step."""
    count = len(view.samples)
    if count == 1:
        return 0
    if st.session_state.get(SAMPLE, 0) >= count:  # a shorter batch (an epoch's last)
        st.session_state[SAMPLE] = 0
    picked: int = st.selectbox(
        f"Data input to draw the chain for (this step has {count})", range(count), key=SAMPLE,
        format_func=view.sample_label,
        help="The chain shows one data input's values; the update follows the batch loss.",
    )  # fmt: skip
    return picked


def _layer_chain(view: StepView) -> int:
    """The chains forward and backward; the data input of the step they are drawn for."""
    st.markdown(
        f"**Layer chain** `{view.model}` — forward: the values flowing from the data input "
        "to the loss"
    )
    sample = _sample(view)
    st.markdown(_CSS + _chain(view.chain(sample)), unsafe_allow_html=True)
    st.markdown("backward: δ flowing back from the loss to the input")
    st.markdown(_chain(view.backward_chain(sample)), unsafe_allow_html=True)
    return sample


def _kernels(view: StepView) -> None:
    """Each convolution's kernels: w, the gradient, ŵ and what the update changed."""
    for k in view.kernel_layers:
        st.markdown(f"**Kernels of L{k}** — a grid from each input channel to each output channel")
        heatmaps.draw_all(view.kernels(k))
        st.caption(view.kernel_note(k))


def _update(view: StepView) -> None:
    st.markdown("**5: update the weights** — ŵ = w − α·grad")
    _kernels(view)
    if view.update_text():  # the parameters that are not kernels
        st.latex(view.update_latex())
        st.code(view.update_text(), language=None, wrap_lines=True)
        _table(view.weights_table(), fit=True)
    if view.weights_changed:
        st.success(view.update_note())
    else:
        st.caption(view.update_note())


def _matrices(view: StepView) -> None:
    """Each layer's weights (row j: neuron j; column i: input i; its bias beside), their
    gradient and the updated weights, one under the other (exact fractions are wide). A
    convolution's kernels are drawn with the update."""
    for k in view.notation.param_layers:
        if k in view.kernel_layers:
            continue
        st.markdown(f"**Weight matrices of L{k}** — rows: neurons of o{k}, columns: its inputs")
        for name, table in view.matrices(k):
            st.markdown(name)
            _table(table, index=True, fit=True)


def _layers(view: StepView, sample: int) -> None:
    tables = view.layer_tables(sample)
    for tab, layer in zip(st.tabs([t.title for t in tables]), tables, strict=True):
        with tab:
            st.caption(layer.formulas)
            if len(layer.table.headers) > 1 or not layer.maps:  # more than its dataset rows
                _table(layer.table)
            heatmaps.draw_all(layer.maps)


def show(view: StepView) -> None:
    """Lay out one step."""
    st.subheader(view.label)
    st.caption(view.header())
    _changes(view)
    sample = _layer_chain(view)

    # A table each, the page's width: a deep stack's forward pass has a column per layer.
    st.markdown("**1–2: data input and forward pass**")
    if view.images:
        heatmaps.draw_all(view.forward_maps(sample))
    _table(view.forward_table())
    st.markdown("**3: loss**")
    _table(view.loss_table(), fit=True)
    if len(view.samples) > 1:
        st.markdown(view.batch_loss_text())
    st.markdown("**4: backward pass**")
    if view.images:
        heatmaps.draw_all(view.backward_maps(sample))
    _table(view.backward_table())
    _update(view)
    _matrices(view)
    st.markdown("**Layer by layer**")
    _layers(view, sample)
    with st.expander("Every recorded value of this step, in full"):
        st.dataframe(view.full_values(), width="stretch")
