"""Images and kernels as heatmaps: a grid per channel (or kernel) side by side on one colour
scale centred on 0, each cell's value on hover, written in the cells when the grid is small, and
the cells a max pooling keeps outlined; and the same image or kernels of several runs, side by
side or their difference. Draws :class:`steptrace.views.Heatmaps`; computes nothing but the
chart.

Owns the keys ``heatmaps.tensor`` and ``heatmaps.how`` (what the comparison of runs draws)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import streamlit as st

from steptrace import views
from steptrace.views import Heatmaps, StepView

TENSOR = "heatmaps.tensor"
HOW = "heatmaps.how"
SIDE_BY_SIDE, DIFFERENCE = "side by side", "difference"

#: A cell's side in pixels: room for its value when the values are written in the cells.
WRITTEN_CELL = 38
#: The widest a grid is drawn when its values are not written (a big image's cells shrink).
GRID_PX = 260


def _cell_px(maps: Heatmaps) -> int:
    if maps.written:
        return WRITTEN_CELL
    return max(4, GRID_PX // max(maps.shape[-2:]))


@functools.lru_cache(maxsize=256)
def _layout(h: int, w: int, px: int, written: bool, outlined: bool, mark: bool,
            titles: tuple[str, ...], columns: int) -> str:  # fmt: skip
    """The chart of grids of h × w cells, as Vega-Lite JSON, its data given apart: made by
    Altair once for each layout (Altair takes a tenth of a second a chart, and a step of a
    run of images draws some thirty; each look at the page draws them again)."""
    axis = alt.Axis(title=None, ticks=False, domain=False, labelAngle=0, labelPadding=2,
                    labels=max(h, w) <= 16)  # fmt: skip
    x = alt.X("column:O", axis=axis.copy(deep=True))
    y = alt.Y("row:O", axis=axis)
    tooltip = [alt.Tooltip("cell:N", title="cell"), alt.Tooltip("text:N", title="value")]
    if mark:
        tooltip.append(alt.Tooltip("mark:N", title="pooling"))
    colour = alt.Color(
        "value:Q",
        title=None,
        scale=alt.Scale(scheme="blueorange", domain=[-1, 1], clamp=True),  # set by _spec
        legend=alt.Legend(orient="right", gradientLength=max(h * px, 60), format=".3~g"),
    )
    base = alt.Chart()
    cells = base.mark_rect(stroke="white", strokeWidth=0.5)
    layers = [cells.encode(x, y, colour, tooltip=tooltip)]
    if written:
        ink = alt.condition("datum.dark", alt.value("white"), alt.value("#1f2328"))
        texts = base.mark_text(fontSize=9)
        layers.append(texts.encode(x, y, text="label:N", color=ink, tooltip=tooltip))
    if outlined:
        layers.append(
            base.transform_filter("datum.marked")
            .mark_rect(fill=None, stroke="#111111", strokeWidth=2.5)
            .encode(x, y, tooltip=tooltip)
            .properties(name="pooled")  # the marks' class in the page: pooled_marks
        )
    grid = alt.layer(*layers).properties(width=w * px, height=h * px)
    chart = grid.facet(
        facet=alt.Facet("map:N", sort=list(titles), title=None,
                        header=alt.Header(labelFontSize=12)),
        columns=columns,
        data=alt.Data(name="cells"),  # a facet needs its data named; Streamlit gives it
    ).configure_view(stroke=None)  # fmt: skip
    layout = chart.to_dict()
    del layout["data"]
    return json.dumps(layout)


def spec(maps: Heatmaps) -> dict[str, Any]:
    """The heatmaps of one tensor, as a Vega-Lite spec for :meth:`Heatmaps.frame`'s data:
    rectangles coloured by value on a scale centred on 0, the values written in small grids,
    the marked cells outlined, each cell's name and value (and what its mark means) on hover;
    every grid titled (``channel 0``, ``out 1 ← in 0``), the chart named by the tensor's title."""
    h, w = maps.shape[-2:]
    layout = _layout(h, w, _cell_px(maps), maps.written, any(m.marked for m in maps.maps),
                     bool(maps.mark), tuple(m.title for m in maps.maps), maps.columns)  # fmt: skip
    out: dict[str, Any] = json.loads(layout)
    out["spec"]["layer"][0]["encoding"]["color"]["scale"]["domain"] = [-maps.limit, maps.limit]
    out["description"] = f"{maps.title}: heatmaps"  # the drawing's name in the page
    return out


def draw(maps: Heatmaps) -> None:
    """One tensor's heatmaps under its title, and what its outlined cells are."""
    st.markdown(f"{maps.title} &nbsp; `{maps.shape_text}`")
    st.vega_lite_chart(maps.frame(), spec(maps), width="content")
    if maps.note:
        st.caption(maps.note)


def draw_all(tensors: Sequence[Heatmaps]) -> None:
    """Several tensors' heatmaps, one under the other."""
    for maps in tensors:
        draw(maps)


def compare(found: Mapping[str, StepView | None]) -> None:
    """The same image or kernels of the runs at one step (None: a run without the step), a
    row of grids per run on one colour scale, or each run's minus the first run's."""
    choices = views.image_choices(found)
    if not choices:
        return
    if st.session_state.get(TENSOR) not in choices:  # first time, or other runs
        st.session_state[TENSOR] = views.default_image(found)
    st.session_state.setdefault(HOW, SIDE_BY_SIDE)
    pick, how = st.columns([3, 2], vertical_alignment="bottom")
    tensor: str = pick.selectbox(
        "Image or kernels to compare", list(choices), key=TENSOR,
        format_func=lambda t: f"{t} · {choices[t]}",
    )  # fmt: skip
    shown = how.radio(
        "Show", [SIDE_BY_SIDE, DIFFERENCE], key=HOW, horizontal=True,
        help="Difference: each run's values minus the first run's (exactly when both are exact).",
    )  # fmt: skip
    maps, note = views.compare_maps(found, tensor, differences=shown == DIFFERENCE)
    if note:
        st.caption(note.capitalize() + ".")
    if maps is not None:
        draw(maps)
