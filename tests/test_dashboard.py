"""The Streamlit dashboard, driven through its widgets with AppTest, and its command.

Each test asserts what the user sees: values in the tables, messages, labels.
"""

from __future__ import annotations

import json
import time
from fractions import Fraction as F
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

import steptrace
from steptrace.cli import dashboard as command
from tests import dashboard_runs as runs

APP = Path(command.app_file())
COMPARE = "screens/compare.py"


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch):
    """An AppTest of the dashboard serving a given folder."""

    def make(folder: Path, **address: str | list[str]) -> AppTest:
        """The app opened on ``folder``, at an address with these query parameters."""
        monkeypatch.setenv(command.FOLDER_ENV, str(folder))
        at = AppTest.from_file(str(APP), default_timeout=60)
        for name, value in address.items():
            at.query_params[name] = value
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return make


def table(at: AppTest, column: str) -> pd.DataFrame:
    """The table on the page with this column."""
    for t in at.table:
        if column in t.value.columns:
            return t.value
    raise AssertionError(
        f"no table with column {column!r}: {[list(t.value.columns) for t in at.table]}"
    )


def step_shown(at: AppTest) -> str:
    return at.subheader[0].value


def no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


# -- replay -------------------------------------------------------------------------------------


def test_replay_shows_the_articles_third_data_input_at_step_2(app, traces: Path) -> None:
    runs.article(traces)
    at = app(traces)
    assert at.selectbox(key="picker.one").value == "article"
    assert step_shown(at) == "step 0 (1st data input)"
    at.number_input(key="replay.cursor.jump").set_value(2).run()
    no_errors(at)
    assert step_shown(at) == "step 2 (3rd data input)"
    assert at.caption[1].value == "epoch 0 · dataset row 2 · exact · α = 1"
    forward = table(at, "o2 = L2(o1)").iloc[0]
    assert (forward["x"], forward["o2 = L2(o1)"], forward["o3 = L3(o2)"]) == (
        "(0, 2000, 3000)",
        "0",
        "0",
    )
    loss = table(at, "loss = Loss(o3, y_truth)").iloc[0]
    assert (loss["y_truth"], loss["loss = Loss(o3, y_truth)"], loss["correct?"]) == (
        "1",
        "1/2",
        "no",
    )
    backward = table(at, "δ4 = o3 − y_truth").iloc[0].tolist()
    assert backward == [
        "-1",
        "-1 (gate open)",
        "(-1/200, 3/11600, -1/5800)",
        "(0, -2000, -3000)",
        "(-1/200, 3/11600, -1/5800)",
    ]
    weights = table(at, "ŵ = w − α·grad").set_index("weight")["ŵ = w − α·grad"].tolist()
    assert weights == ["1/200", "23199997/11600", "17400001/5800"]
    assert at.code[0].value.endswith("= (1/200, 23199997/11600, 17400001/5800)")
    assert r"\frac{23199997}{11600}" in at.latex[0].value
    assert at.success[0].value == "The update moved w_2, w_3."
    changes = [m.value for m in at.markdown if "Changed since step 1" in m.value]
    assert changes and "loss" in changes[0] and "ŵ" in changes[0]
    chain = "".join(m.value for m in at.markdown if "st-chain" in m.value)
    assert 'o2 = w · o1</div><div class="value">0</div>' in chain


def test_replay_cursor_previous_next_slider_and_play(app, traces: Path) -> None:
    runs.article(traces)
    at = app(traces)
    assert at.button(key="replay.cursor.prev").disabled
    at.button(key="replay.cursor.next").click().run()
    at.button(key="replay.cursor.next").click().run()
    no_errors(at)
    assert step_shown(at) == "step 2 (3rd data input)"
    assert at.button(key="replay.cursor.next").disabled
    assert at.slider(key="replay.cursor.slider").value == 2
    at.button(key="replay.cursor.prev").click().run()
    assert step_shown(at) == "step 1 (2nd data input)"
    assert at.number_input(key="replay.cursor.jump").value == 1
    at.slider(key="replay.cursor.slider").set_value(0).run()
    assert step_shown(at) == "step 0 (1st data input)"
    # Play moves one step per run of the page until the end, then stops.
    at.button(key="replay.cursor.play").click().run()
    assert step_shown(at) == "step 1 (2nd data input)"
    assert at.button(key="replay.cursor.play").label == "⏸ Pause"
    at.run()
    assert step_shown(at) == "step 2 (3rd data input)"
    assert at.button(key="replay.cursor.play").label == "▶ Play"  # reached the end
    at.run()
    assert step_shown(at) == "step 2 (3rd data input)"


def test_replay_of_a_float_run_highlights_what_changed(app, traces: Path) -> None:
    runs.lr_sweep(traces, ("1e-9",))
    at = app(traces)
    at.number_input(key="replay.cursor.jump").set_value(4).run()
    no_errors(at)
    assert step_shown(at) == "step 4 (5th data input)"
    assert "float64 · α = 1e-9" in at.caption[1].value
    weights = table(at, "moved").set_index("weight")
    # Dataset row 1 is x = (200, 0, 0): only w_1 can move.
    assert weights["moved"].tolist() == ["yes", "no", "no"]
    assert float(weights.loc["w_1", "ŵ = w − α·grad"]) != float(weights.loc["w_1", "w"])
    changes = [m.value for m in at.markdown if "Changed since step 3" in m.value]
    assert changes and "x, y_truth, o1, o2, o3, loss" in changes[0] and "ŵ" in changes[0]
    assert at.success[0].value == "The update moved w_1."


def test_bad_files_are_reported_next_to_the_runs_that_load(app, traces: Path) -> None:
    good = runs.article(traces)
    runs.corrupt(traces, good)
    runs.foreign(traces)
    runs.newer(traces, good)
    at = app(traces)
    no_errors(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 3
    assert any(
        e.startswith("**corrupt** was skipped") and "not readable Parquet" in e for e in errors
    )
    assert any(
        e.startswith("**foreign/data.parquet** was skipped") and "not a steptrace trace" in e
        for e in errors
    )
    assert any(
        e.startswith("**future** was skipped") and "99.0" in e and "upgrade" in e for e in errors
    )
    assert at.dataframe[0].value["run"].tolist() == ["article"]
    assert at.selectbox(key="picker.one").options == ["article  ·  α = 1  ·  exact"]
    assert step_shown(at) == "step 0 (1st data input)"


def test_a_run_broken_after_the_scan_is_a_message_not_a_traceback(app, traces: Path) -> None:
    path = runs.article(traces)
    at = app(traces)
    assert step_shown(at) == "step 0 (1st data input)"
    (path / "part-000000.parquet").write_bytes(b"overwritten")
    at.button(key="replay.cursor.next").click().run()
    no_errors(at)
    assert at.error[0].value.startswith("**article** cannot be read:")
    assert "not a readable Parquet file" in at.error[0].value


def test_an_incomplete_run_says_so(app, traces: Path) -> None:
    path = runs.article(traces)
    meta = json.loads((path / "_run.json").read_text())
    meta.update(status="incomplete", reason="interrupted by Ctrl-C after step 2")
    (path / "_run.json").write_text(json.dumps(meta))
    at = app(traces)
    assert at.warning[0].value == "This run is incomplete: interrupted by Ctrl-C after step 2"
    assert at.dataframe[0].value["status"].tolist() == ["incomplete"]
    assert step_shown(at) == "step 0 (1st data input)"


def test_an_empty_folder_says_how_to_record_a_run(app, traces: Path) -> None:
    at = app(traces)
    assert at.info[0].value.startswith(f"No runs in `{traces}` yet. Record one with")
    assert not at.selectbox


def test_a_missing_folder_is_a_message_not_a_traceback(app, tmp_path: Path) -> None:
    at = app(tmp_path / "gone")
    assert at.error[0].value.startswith(f"Cannot read the folder `{tmp_path / 'gone'}`: no folder")


def tables(at: AppTest, column: str) -> list[pd.DataFrame]:
    """Every table on the page with this column, in page order."""
    return [t.value for t in at.table if column in t.value.columns]


def chain_html(at: AppTest) -> str:
    return "".join(m.value for m in at.markdown if "st-chain" in m.value)


def test_replay_of_a_two_layer_run_draws_its_chain_and_weight_matrices(app, traces: Path) -> None:
    runs.two_layer(traces)
    at = app(traces)
    no_errors(at)
    assert step_shown(at) == "step 0 (1st data input)"
    assert at.caption[1].value == "epoch 0 · dataset row 0 · exact · α = 1/10"
    model = "input(3) → linear(2, bias) → relu → linear(1) → leaky_relu(1/100) → squared_error"
    assert any(model in m.value and "Layer chain" in m.value for m in at.markdown)
    # Step 0 worked by hand in tests/test_replay.py: every layer's box, forward and back.
    chain = chain_html(at)
    for layer, kind, formula, value in [
        ("L2", "linear(2, bias)", "o2 = w2 · o1 + b2", "(0, 39/40)"),
        ("L3", "relu", "o3 = o2 if o2 ≥ 0 else 0", "(0, 39/40)"),
        ("L4", "linear(1)", "o4 = w4 · o3", "-13/40"),
        ("L5", "leaky_relu(1/100)", "o5 = o4 if o4 ≥ 0 else 1/100 · o4", "-13/4000"),
        ("Loss", "squared_error", "½ (o5 − y_truth)²", "169/32000000"),
        ("Loss", "squared_error", "δ6 = o5 − y_truth", "-13/4000"),
        ("L3", "relu", "δ3 = δ4 if o2 ≥ 0 else 0", "(-13/800000, 13/1200000)"),
    ]:
        box = (
            f'{layer} <span class="kind">{kind}</span></div><div class="formula">{formula}'
            f'</div><div class="value">{value}</div>'
        )
        assert box in chain, box
    assert '-13/400000</div><div class="note">gate closed</div>' in chain
    forward = table(at, "o5 = L5(o4)").iloc[0]
    assert (forward["o2 = L2(o1)"], forward["o4 = L4(o3)"]) == ("(0, 39/40)", "-13/40")
    # w2, its gradient and ŵ2: row j = neuron j of o2, column i = input o1_i, the bias beside.
    w2, grad2, after2 = tables(at, "o1_3")
    assert w2.index.tolist() == ["o2_1", "o2_2"]
    assert w2.values.tolist() == [["1/200", "-3/11600", "1/5800", "0"],
                                  ["-1/1000", "1/2000", "-1/4000", "1/10"]]  # fmt: skip
    assert grad2.loc["o2_1"].tolist() == ["-13/8000", "-13/400", "-13/8000", "-13/800000"]
    assert after2.loc["o2_2"].tolist() == ["-133/120000", "-1/600", "-43/120000",
                                           "1199987/12000000"]  # fmt: skip
    assert tables(at, "o3_2")[2].loc["o4_1"].tolist() == ["1/2", "-159998479/480000000"]
    weights = table(at, "moved").set_index("weight")
    assert weights.loc["b2_2", "ŵ = w − α·grad"] == "1199987/12000000"
    assert weights.loc["w4_1", "moved"] == "no"
    assert [t.label for t in at.tabs] == ["L1 · input", "L2 · linear(2, bias)", "L3 · relu",
                                          "L4 · linear(1)", "L5 · leaky_relu(1/100)"]  # fmt: skip
    assert table(at, "gate")["gate"].tolist() == ["gates open, open"]
    at.button(key="replay.cursor.next").click().run()
    no_errors(at)
    assert step_shown(at) == "step 1 (2nd data input)"
    changes = [m.value for m in at.markdown if "Changed since step 0" in m.value]
    assert changes and "ŵ2" in changes[0] and "b̂2" in changes[0]
    assert '<div class="box changed"><div class="layer">L4 ' in chain_html(at)


def test_both_chains_point_the_way_their_values_flow(app, traces: Path) -> None:
    runs.two_layer(traces)
    at = app(traces)
    forward, backward = [m.value for m in at.markdown if "st-chain" in m.value]
    # input → L1 → … → Loss, and δ from Loss → L5 → … → L1: left to right both times.
    assert forward.count('<div class="arrow">→</div>') == 6
    assert backward.count('<div class="arrow">→</div>') == 5 and "←" not in backward
    # Each arrow goes with the box it points at: a wrapped row never ends with an arrow.
    assert backward.count('<div class="link"><div class="arrow">→</div><div class="box') == 5


def test_a_mini_batch_step_draws_its_chain_for_the_data_input_picked(app, traces: Path) -> None:
    runs.batches(traces)
    runs.article(traces, "one")  # a data input a step
    at = app(traces, run="batches", step="1")
    no_errors(at)
    assert step_shown(at) == "step 1 (data inputs 4–6)"
    pick = at.selectbox(key="panel.sample")
    assert pick.label == "Data input to draw the chain for (this step has 3)"
    assert pick.options == ["data input 4 (dataset row 0)", "data input 5 (dataset row 1)",
                            "data input 6 (dataset row 2)"]  # fmt: skip
    losses = table(at, "loss = Loss(o3, y_truth)")["loss = Loss(o3, y_truth)"].tolist()
    mean = sum(F(v) for v in losses) / 3
    assert f"batch loss (the mean over 3 data inputs) = {mean}" in [m.value for m in at.markdown]
    note = f'<div class="note">wrong; batch loss (mean of 3) {mean}</div>'
    assert f'<div class="value">{losses[0]}</div>{note}' in chain_html(at)
    assert '<div class="value">(100, 2000, 100)</div>' in chain_html(at)  # dataset row 0's x
    pick.set_value(2).run()
    no_errors(at)
    assert f'<div class="value">{losses[2]}</div>{note}' in chain_html(at)
    assert '<div class="value">(0, 2000, 3000)</div>' in chain_html(at)  # dataset row 2's x
    # The choice stays while the cursor moves; a step of fewer data inputs starts again.
    at.button(key="replay.cursor.prev").click().run()
    assert at.selectbox(key="panel.sample").value == 2
    at.selectbox(key="picker.one").set_value("one").run()
    no_errors(at)
    assert not [s for s in at.selectbox if s.key == "panel.sample"]


# -- compare ------------------------------------------------------------------------------------


def test_compare_two_learning_rates_at_one_step(app, traces: Path) -> None:
    runs.article(traces, "lr1", "1")
    runs.article(traces, "lr0.1", "1/10")
    runs.lr_sweep(traces, ("1e-9",))
    at = app(traces)
    at.switch_page(COMPARE).run()
    no_errors(at)
    assert at.multiselect(key="picker.many").value == ["lr0.1", "lr1", "sweep"]
    at.multiselect(key="picker.many").set_value(["lr1", "lr0.1"]).run()
    at.number_input(key="compare.cursor.jump").set_value(2).run()
    no_errors(at)
    assert at.subheader[-1].value == "All runs at step 2"
    side = at.table[-1].value
    assert list(side.columns) == ["lr1", "lr0.1"]
    assert side.loc["α"].tolist() == ["1", "1/10"]
    assert side.loc["data input"].tolist() == ["3rd data input", "3rd data input"]
    assert side.loc["loss"].tolist() == ["1/2", "1/2"]
    assert side.loc["ŵ"].tolist() == [
        "(1/200, 23199997/11600, 17400001/5800)",
        "(1/200, 2319997/11600, 1740001/5800)",
    ]
    assert "every step shown" in [c.value for c in at.caption]
    assert len(at.get("vega_lite_chart")) == 5  # loss by α, loss and w_1, w_2, w_3
    assert at.dataframe[-1].value["α"].tolist() == ["1/10", "1"]  # exact α, in order


def test_compare_lines_up_a_sweep_by_learning_rate(app, traces: Path) -> None:
    runs.lr_sweep(traces, ("1e-8", "1e-3", "1e-9"), epochs=100)
    runs.diverging(traces)
    at = app(traces)
    at.switch_page(COMPARE).run()
    no_errors(at)
    assert [e.label for e in at.expander][-1] == "Loss against learning rate"
    sweep = at.dataframe[-1].value
    # By α; α = 1e-3 takes one step too far, closes the ReLU gate for good and stops learning.
    assert sweep["run"].tolist() == ["sweep-lr1e-9", "sweep-lr1e-8", "sweep-lr1e-3", "boom"]
    assert sweep["α"].tolist() == ["1e-9", "1e-8", "1e-3", "1e200"]
    assert sweep["final loss"].iloc[2] == 0.5
    assert sweep["diverged at"].tolist() == ["-", "-", "-", "1"]
    final = dict(zip(sweep["run"], sweep["final loss"], strict=True))
    assert final["sweep-lr1e-8"] < final["sweep-lr1e-9"] < final["sweep-lr1e-3"]
    captions = [c.value for c in at.caption]
    best = f"α = 1e-8 (sweep-lr1e-8), {final['sweep-lr1e-8']:.6g}"
    assert f"Lowest final loss: {best}. Diverged: 1 of 4 runs." in captions
    # α = 1e-3's lowest loss is 0 (its gate closed on a sample whose target is 0)
    assert "1 loss of 0 is not shown on the log axis." in captions
    assert len(at.get("vega_lite_chart")) == 4  # the sweep, loss, and boom's w_1, w_2
    at.toggle(key="compare.sweep_log").set_value(False).run()
    no_errors(at)
    # one learning rate among the runs chosen: nothing to line up
    at.multiselect(key="picker.many").set_value(["sweep-lr1e-9"]).run()
    assert "Loss against learning rate" not in [e.label for e in at.expander]


def test_compare_marks_the_first_divergence(app, traces: Path) -> None:
    runs.diverging(traces)
    runs.article(traces)
    at = app(traces)
    at.switch_page(COMPARE).run()
    no_errors(at)
    assert [w.value for w in at.warning] == ["**boom** diverges at step 1: loss is not finite"]
    side = at.table[-1].value
    assert side.loc["first divergence"].tolist() == ["none", "1 (loss is not finite)"]


def test_compare_downsamples_a_long_run_and_zooming_shows_every_step(app, traces: Path) -> None:
    runs.lr_sweep(traces, ("1e-9",), epochs=1000)  # 3000 steps
    at = app(traces)
    at.switch_page(COMPARE).run()
    notes = [c.value for c in at.caption if "downsampled" in c.value]
    assert notes and notes[0].startswith("downsampled: the min and max of every 4 steps")
    at.slider(key="compare.zoom").set_value((100, 299)).run()
    no_errors(at)
    assert not [c.value for c in at.caption if "downsampled" in c.value]
    assert "every step shown" in [c.value for c in at.caption]
    at.toggle(key="compare.log_loss").set_value(True).run()
    at.toggle(key="compare.log_w").set_value(True).run()
    no_errors(at)


def test_compare_runs_of_two_models_on_loss_and_each_ones_weights(app, traces: Path) -> None:
    runs.article(traces, "article", "1/10")
    runs.two_layer(traces)
    at = app(traces)
    at.switch_page(COMPARE).run()
    no_errors(at)
    assert at.multiselect(key="picker.many").value == ["article", "two-layer"]
    picker = at.multiselect(key="weights.picked")
    assert picker.value == ["w2_after_1_1", "w2_after_1_2", "w2_after_1_3"]  # the first run's
    assert len(picker.options) == 10  # every weight and bias of both runs
    assert "b2_after_2 · layer 2's bias b[2] after the update" in picker.options
    note = "two-layer is compared on loss only (pick one of its weights to draw it)."
    assert any(c.value.endswith(note) for c in at.caption)
    assert len(at.get("vega_lite_chart")) == 4  # loss (both runs), the article's 3 weights
    picker.set_value(["w2_after_1_1", "b2_after_2"]).run()
    no_errors(at)
    assert len(at.get("vega_lite_chart")) == 3  # loss, w2_after_1_1, b2_after_2
    assert not any(c.value.endswith(note) for c in at.caption)
    side = at.table[-1].value
    assert side.loc["loss"].tolist() == ["0", "169/32000000"]
    assert side.loc["ŵ4"].tolist() == ["—", "(1/2, -159998479/480000000)"]
    assert side.loc["model", "article"] == "input(3) → linear(1) → relu → squared_error"


def test_compare_with_no_run_chosen_asks_for_one(app, traces: Path) -> None:
    runs.article(traces)
    at = app(traces)
    at.switch_page(COMPARE).run()
    at.multiselect(key="picker.many").set_value([]).run()
    assert at.info[0].value == "Choose one or more runs to compare."


# -- following a run while it is recorded ------------------------------------------------------


def slider_end(at: AppTest, prefix: str = "replay.cursor") -> int:
    return int(at.slider(key=f"{prefix}.slider").max)


def test_replay_follows_a_run_being_recorded(app, traces: Path) -> None:
    growing = runs.Growing(traces, parts=4)  # 150 steps a part
    growing.flush()
    at = app(traces)
    no_errors(at)
    # Opened while it is recorded: at its newest step, following it.
    assert step_shown(at) == "step 149 (150th data input)"
    assert at.toggle(key="replay.cursor.follow").value is True
    assert at.info[0].value.startswith("**growing** · Recording: 150 of 600 steps so far")
    assert at.caption[0].value == "150 steps, counted from 0 (0 to 149)"
    assert dict(at.query_params) == {"run": "growing", "step": "149"}
    growing.flush()
    at.run()  # the fragment's timer, in the browser
    no_errors(at)
    assert step_shown(at) == "step 299 (300th data input)" and slider_end(at) == 299
    assert at.info[0].value.startswith("**growing** · Recording: 300 of 600 steps")
    # Follow off: new steps lengthen the slider, the step shown stays.
    at.toggle(key="replay.cursor.follow").set_value(False).run()
    growing.flush()
    at.run()
    assert step_shown(at) == "step 299 (300th data input)" and slider_end(at) == 449
    assert at.caption[0].value == "450 steps, counted from 0 (0 to 449)"
    # On again: to the newest step at once.
    at.toggle(key="replay.cursor.follow").set_value(True).run()
    assert step_shown(at) == "step 449 (450th data input)"
    growing.finish()
    at.run()
    no_errors(at)
    # Complete: no more following, nothing said about the status, the cursor where it was.
    assert step_shown(at) == "step 449 (450th data input)" and slider_end(at) == 599
    assert not at.info and not at.warning
    assert not [t for t in at.toggle if t.key == "replay.cursor.follow"]


def test_moving_back_stops_following_and_the_newest_step_starts_it_again(app, traces: Path) -> None:
    growing = runs.Growing(traces, parts=4)
    growing.flush()
    growing.flush()
    at = app(traces)
    at.button(key="replay.cursor.prev").click().run()
    assert step_shown(at) == "step 298 (299th data input)"
    assert at.toggle(key="replay.cursor.follow").value is False
    growing.flush()
    at.run()
    assert step_shown(at) == "step 298 (299th data input)" and slider_end(at) == 449
    at.slider(key="replay.cursor.slider").set_value(449).run()
    assert at.toggle(key="replay.cursor.follow").value is True
    growing.flush()
    at.run()
    assert step_shown(at) == "step 599 (600th data input)"
    # Play stops following.
    at.slider(key="replay.cursor.slider").set_value(10).run()
    at.button(key="replay.cursor.play").click().run()
    assert step_shown(at) == "step 11 (12th data input)"
    assert at.toggle(key="replay.cursor.follow").value is False
    growing.finish()


def test_a_recording_that_stops_says_it_is_incomplete(app, traces: Path) -> None:
    growing = runs.Growing(traces, parts=4)
    growing.flush()
    at = app(traces)
    assert at.info[0].value.startswith("**growing** · Recording:")
    growing.finish("incomplete")
    at.run()
    no_errors(at)
    assert [w.value for w in at.warning] == ["This run is incomplete: interrupted by the test"]
    assert not at.info
    assert at.dataframe[0].value["status"].tolist() == ["incomplete"]


def test_a_run_with_no_steps_yet_shows_them_when_they_come(app, traces: Path) -> None:
    growing = runs.Growing(traces, parts=4)
    at = app(traces)
    no_errors(at)
    assert "**growing** has no recorded steps yet." in [i.value for i in at.info]
    growing.flush()
    at.run()
    no_errors(at)
    assert step_shown(at) == "step 149 (150th data input)"
    growing.finish()


def test_a_new_run_shows_up_in_the_folder_by_itself(app, traces: Path) -> None:
    runs.article(traces)
    at = app(traces)
    assert at.selectbox(key="picker.one").options == ["article  ·  α = 1  ·  exact"]
    runs.article(traces, "later", "1/10")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(at.selectbox(key="picker.one").options) < 2:
        at.run()  # the folder is looked at again every couple of seconds
        time.sleep(0.2)
    assert at.dataframe[0].value["run"].tolist() == ["article", "later"]
    assert at.selectbox(key="picker.one").value == "article"  # what is shown stays
    assert step_shown(at) == "step 0 (1st data input)"


def test_compare_follows_runs_being_recorded(app, traces: Path) -> None:
    runs.lr_sweep(traces, ("1e-8",), epochs=100)  # 300 steps, complete
    growing = runs.Growing(traces, parts=4)
    growing.flush()
    at = app(traces)
    at.switch_page(COMPARE).run()
    no_errors(at)
    assert at.multiselect(key="picker.many").value == ["growing", "sweep"]
    assert at.subheader[-1].value == "All runs at step 299"  # the newest step, following
    assert at.slider(key="compare.zoom").value == (0, 299)
    assert any(i.value.startswith("**growing** · Recording: 150 of 600") for i in at.info)
    growing.flush()
    growing.flush()
    at.run()
    no_errors(at)
    assert at.subheader[-1].value == "All runs at step 449"
    assert at.slider(key="compare.zoom").value == (0, 449)  # a zoom to the end follows it
    assert at.table[-1].value.loc["data input", "sweep"] == "no step 449 (last: 299)"
    at.slider(key="compare.zoom").set_value((10, 200)).run()
    at.toggle(key="compare.cursor.follow").set_value(False).run()
    growing.finish()
    at.run()
    no_errors(at)
    assert at.slider(key="compare.zoom").value == (10, 200)  # a zoom inside stays
    assert at.subheader[-1].value == "All runs at step 449"
    assert not at.info
    assert at.dataframe[-1].value["run"].tolist() == ["growing", "sweep"]  # by α, ended


# -- the address ---------------------------------------------------------------------------------


def test_an_address_opens_a_run_at_a_step_and_follows_the_cursor(app, traces: Path) -> None:
    runs.article(traces)
    runs.two_layer(traces)
    at = app(traces, run="two-layer", step="3")
    no_errors(at)
    assert at.selectbox(key="picker.one").value == "two-layer"
    assert step_shown(at) == "step 3 (4th data input)"
    at.button(key="replay.cursor.prev").click().run()
    assert dict(at.query_params) == {"run": "two-layer", "step": "2"}
    at.selectbox(key="picker.one").set_value("article").run()
    assert step_shown(at) == "step 0 (1st data input)"
    assert dict(at.query_params) == {"run": "article", "step": "0"}


@pytest.mark.parametrize("step", ["99", "x", "-1"])
def test_an_address_step_out_of_range_or_not_a_step_is_harmless(
    app, traces: Path, step: str
) -> None:
    runs.article(traces)
    at = app(traces, run="article", step=step)
    no_errors(at)
    assert step_shown(at) == ("step 2 (3rd data input)" if step == "99" else
                              "step 0 (1st data input)")  # fmt: skip


def test_an_address_naming_no_run_of_the_folder_opens_the_first(app, traces: Path) -> None:
    runs.article(traces)
    at = app(traces, run="../../etc", step="1")
    no_errors(at)
    assert at.selectbox(key="picker.one").value == "article"
    assert step_shown(at) == "step 0 (1st data input)"


def test_compare_address_names_runs_and_a_step(app, traces: Path) -> None:
    runs.article(traces, "lr1", "1")
    runs.article(traces, "lr0.1", "1/10")
    runs.article(traces, "lr0.01", "1/100")
    at = app(traces, run=["lr1", "lr0.1"], step="2")
    # The replay page opened on the first run named; the compare page, visited after, starts
    # from its own defaults.
    assert at.selectbox(key="picker.one").value == "lr1"
    assert step_shown(at) == "step 2 (3rd data input)"
    at.switch_page(COMPARE).run()
    no_errors(at)
    assert at.multiselect(key="picker.many").value == ["lr0.01", "lr0.1", "lr1"]
    assert at.subheader[-1].value == "All runs at step 0"


# -- the command ----------------------------------------------------------------------------------


def test_command_serves_on_localhost_only_and_headless() -> None:
    argv = command.streamlit_command(8555)
    # -P: the working directory is not put on the import path (a folder named steptrace there
    # would be imported in place of the package; tests/test_browser.py starts it from one).
    assert argv[1:5] == ["-P", "-m", "streamlit", "run"] and argv[5] == str(APP)
    assert APP.exists() and APP.name == "app.py"
    settings = dict(zip(argv[6::2], argv[7::2], strict=True))
    assert settings["--server.address"] == "127.0.0.1"
    assert settings["--server.port"] == "8555"
    assert settings["--server.headless"] == "true"
    assert settings["--browser.gatherUsageStats"] == "false"
    assert settings["--client.toolbarMode"] == "viewer"  # no Deploy button


def test_command_refuses_a_missing_folder(run_cli, tmp_path: Path) -> None:
    result = run_cli("dashboard", tmp_path / "nope", "--no-browser")
    assert result.exit_code == 2
    assert "Error: no folder" in result.output and "steptrace record --out" in result.output


def test_command_help_has_an_example(run_cli) -> None:
    result = run_cli("dashboard", "-h")
    assert result.exit_code == 0
    assert (
        "Example:" in result.output
        and "--port" in result.output
        and "--no-browser" in result.output
    )


def test_free_port_falls_back_when_the_preferred_one_is_taken() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        port = command.free_port(taken)
    assert port != taken and 0 < port < 65536


def test_a_port_whose_connections_wait_to_close_is_free(tmp_path: Path) -> None:
    """A dashboard stopped while a browser was connected closes its connections first, which
    then wait a minute in TIME-WAIT: the server can listen there again, and so may we."""
    import socket

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server's side closes first: its end waits in TIME-WAIT
        client.recv(1)
        client.close()
    deadline = time.monotonic() + 5
    while not _time_wait(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _time_wait(port), "no connection in TIME-WAIT: the test checks nothing"
    assert command.free_port(port) == port


def _time_wait(port: int) -> int:
    """Connections in TIME-WAIT on ``port`` (from /proc/net/tcp)."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return sum(1 for r in rows if int(r[1].split(":")[1], 16) == port and r[3] == "06")


def test_a_port_in_use_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    import socket

    from click.testing import CliRunner

    from steptrace.cli import cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["dashboard", str(tmp_path), "--port", str(taken)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (
        f"Error: port {taken} is in use on 127.0.0.1; choose another with --port, or leave it "
        "out to take a free one\n"
    )


# -- runs of images ----------------------------------------------------------------------------


def heatmaps(at: AppTest) -> dict[str, tuple[dict[str, object], pd.DataFrame]]:
    """Each heatmap chart of the page under the title written above it: its Vega-Lite spec and
    its data, a row per cell (the first chart under a title, when a title repeats)."""
    out: dict[str, tuple[dict[str, object], pd.DataFrame]] = {}
    title = None

    def walk(node: object) -> None:
        nonlocal title
        for child in getattr(node, "children", {}).values():
            if child.type == "markdown":
                title = child.value
            elif child.type == "vega_lite_chart":
                spec = json.loads(child.proto.spec)
                if "facet" in spec and title is not None and title not in out:
                    proto = child.proto  # the data: the chart's own, or a named dataset
                    raw = proto.datasets[0].data.data if proto.datasets else proto.data.data
                    data = pa.ipc.open_stream(raw).read_all()
                    out[title] = (spec, data.to_pandas())
            walk(child)

    walk(at.main)
    return out


def grid_texts(data: pd.DataFrame, grid: str) -> list[list[str]]:
    """One grid's cell texts, row by row."""
    cells = data[data["map"] == grid].sort_values(["row", "column"])
    return [list(g["text"]) for _, g in cells.groupby("row")]


def fraction_texts(values: object) -> list[list[str]]:
    return [[str(v) for v in row] for row in values]  # type: ignore[attr-defined]


def test_replay_of_an_image_run_draws_feature_maps_kernels_and_pooled_maxima(
    app, traces: Path
) -> None:
    run = runs.cnn(traces)
    at = app(traces, run="cnn", step="0")
    no_errors(at)
    assert step_shown(at) == "step 0 (1st data input)"
    chain = "".join(m.value for m in at.markdown if "st-chain" in m.value)
    # Each box says the shape of what it gives; an image's values by their span.
    assert ('maxpool2d(2)</span></div><div class="formula">o4 = max of each 2 × 2 cell of o3'
            '</div><div class="shape">2 × 2 × 2</div><div class="value">from 0 to 5/4</div>'
            ) in chain  # fmt: skip
    maps = heatmaps(at)
    titles = [t.split(" &nbsp;")[0] for t in maps]
    assert titles[:5] == ["x (data input)", "L1 input: o1 = x",
                          "L2 conv2d(2, 3×3, bias): o2 = w2 ⋆ o1 + b2",
                          "L3 relu: o3 = o2 if o2 ≥ 0 else 0",
                          "L4 maxpool2d(2): o4 = max of each 2 × 2 cell of o3"]  # fmt: skip
    spec, o2 = maps["L2 conv2d(2, 3×3, bias): o2 = w2 ⋆ o1 + b2 &nbsp; `2 × 4 × 4`"]
    values = steptrace.load_tensor(run, "o2", exact=True)[0]
    assert grid_texts(o2, "channel 1") == fraction_texts(values[1])
    assert o2["value"].tolist() == values.astype(float).ravel().tolist()
    assert o2.loc[(o2["map"] == "channel 0") & (o2["row"] == 3) & (o2["column"] == 0),
                  "cell"].tolist() == ["o2[0, 3, 0]"]  # fmt: skip
    layers = spec["spec"]["layer"]  # type: ignore[index]
    tooltip = [t["title"] for t in layers[0]["encoding"]["tooltip"]]
    assert tooltip == ["cell", "value"]  # each cell's value on hover
    assert layers[1]["mark"]["type"] == "text"  # and written in the cells of a small grid
    assert set(o2["label"]) >= {"-13/4", "5/4", "-1.56"}  # short fractions, or 3 digits
    # The cells L4's pooling keeps, outlined on its input: the first maximum of each cell.
    spec, o3 = maps["L3 relu: o3 = o2 if o2 ≥ 0 else 0 &nbsp; `2 × 4 × 4`"]
    kept = o3[o3["marked"]]
    assert sorted(zip(kept["map"], kept["row"], kept["column"], strict=True)) == [
        ("channel 0", 0, 0), ("channel 0", 0, 2), ("channel 0", 2, 0), ("channel 0", 2, 2),
        ("channel 1", 0, 3), ("channel 1", 1, 0), ("channel 1", 2, 0), ("channel 1", 2, 2),
    ]  # fmt: skip
    outline = spec["spec"]["layer"][2]  # type: ignore[index]
    assert outline["name"] == "pooled" and outline["transform"] == [{"filter": "datum.marked"}]
    assert set(kept["mark"]) == {"kept by L4's max pooling"}
    captions = [c.value for c in at.caption]
    assert ("Outlined: the maximum of each 2 × 2 cell, which L4's max pooling keeps (on ties, "
            "the first in reading order).") in captions  # fmt: skip
    # The kernels: before, their gradient, after, and what the update changed.
    kernels = [t for t in maps if "`2 × 2 × 3 × 3`" in t]
    assert [t.split(" &nbsp;")[0] for t in kernels][:4] == [
        "w2: the kernels before the update", "grad2 = ∂Loss/∂W2", "ŵ2 = w2 − α·grad2",
        "ŵ2 − w2: what the update changed"]  # fmt: skip
    _, change = maps[kernels[3]]
    before = steptrace.load_tensor(run, "w2_before", exact=True)[0]
    after = steptrace.load_tensor(run, "w2_after", exact=True)[0]
    assert grid_texts(change, "out 1 ← in 0") == fraction_texts((after - before)[1, 0])
    assert any(c.startswith("The update moved 16 of the 36 kernel weights of w2") for c in captions)
    assert at.success[0].value.startswith("The update moved 16 of the 36 values of w2, b2_2")
    # The tables keep the values that are not images.
    assert list(table(at, "o6 = L6(o5)").columns) == ["o5 = L5(o4)", "o6 = L6(o5)"]
    assert [t.label for t in at.tabs][1] == "L2 · conv2d(2, 3×3, bias)"


def test_a_run_without_images_draws_no_heatmap(app, traces: Path) -> None:
    runs.two_layer(traces)
    at = app(traces)
    no_errors(at)
    assert heatmaps(at) == {}
    assert 'class="shape"' not in "".join(m.value for m in at.markdown)


def test_compare_two_image_runs_side_by_side_and_their_difference(app, traces: Path) -> None:
    a, b = runs.cnn(traces, "a", "1/10"), runs.cnn(traces, "b", "1/2")
    at = app(traces)
    at.switch_page(COMPARE).run()
    no_errors(at)
    at.number_input(key="compare.cursor.jump").set_value(1).run()
    no_errors(at)
    assert "Images and kernels at step 1" in [s.value for s in at.subheader]
    picker = at.selectbox(key="heatmaps.tensor")
    assert picker.value == "o2"  # the first convolution's feature maps
    assert at.table[-1].value.loc["o2"].tolist()[0].startswith("2 × 4 × 4, from ")
    both = {"a": a, "b": b}
    o2 = {name: steptrace.load_tensor(run, "o2", exact=True)[1] for name, run in both.items()}
    ((title, (_, side)),) = [(t, m) for t, m in heatmaps(at).items() if "o2 = w2" in t]
    assert title.startswith("L2 conv2d(2, 3×3, bias): o2 = w2 ⋆ o1 + b2")
    assert list(dict.fromkeys(side["map"])) == ["a · channel 0", "a · channel 1",
                                                 "b · channel 0", "b · channel 1"]  # fmt: skip
    assert grid_texts(side, "b · channel 1") == fraction_texts(o2["b"][1])
    at.radio(key="heatmaps.how").set_value("difference").run()
    no_errors(at)
    ((_, (_, diff)),) = [(t, m) for t, m in heatmaps(at).items() if "each run minus a" in t]
    assert list(dict.fromkeys(diff["map"])) == ["b − a · channel 0", "b − a · channel 1"]
    assert grid_texts(diff, "b − a · channel 0") == fraction_texts((o2["b"] - o2["a"])[0])
    picker.set_value("w2_after").run()
    no_errors(at)
    ((_, (_, kernels)),) = [(t, m) for t, m in heatmaps(at).items() if "ŵ2 = w2" in t]
    w = {name: steptrace.load_tensor(run, "w2_after", exact=True)[1] for name, run in both.items()}
    assert grid_texts(kernels, "b − a · out 0 ← in 1") == fraction_texts((w["b"] - w["a"])[0, 1])
