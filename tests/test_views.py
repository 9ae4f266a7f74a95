"""The dashboard's logic, in the library: runs of a folder, one step, curves, divergence,
several runs at one step."""

from __future__ import annotations

import json
import math
from fractions import Fraction as F
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import steptrace
from steptrace import open_trace, views
from steptrace.errors import TraceError
from steptrace.trace.reader import Trace
from tests import dashboard_runs as runs
from tests.article import STEPS, W
from tests.image_runs import CNN, record_images


def text(q: object) -> str:
    return str(F(q))  # type: ignore[arg-type]


def vec(values: tuple[object, ...]) -> str:
    return "(" + ", ".join(text(v) for v in values) + ")"


# -- the folder ---------------------------------------------------------------------------------


def test_scan_keys_runs_by_their_path_and_reports_files_that_are_not_runs(traces: Path) -> None:
    good = runs.article(traces)
    runs.corrupt(traces, good)
    runs.foreign(traces)
    runs.newer(traces, good)
    folder = views.scan(traces)
    assert list(folder.runs) == ["article"]
    problems = dict(folder.problems)
    assert set(problems) == {"corrupt", "foreign/data.parquet", "future"}
    assert "not readable Parquet" in problems["corrupt"]
    assert "not a steptrace trace" in problems["foreign/data.parquet"]
    assert "99.0" in problems["future"] and "upgrade" in problems["future"]
    assert folder.error is None and not folder.empty


def test_scan_of_a_single_run_folder_names_it(traces: Path) -> None:
    folder = views.scan(runs.article(traces))
    assert list(folder.runs) == ["article"] and folder.problems == []


def test_scan_of_an_empty_and_of_a_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert views.scan(tmp_path / "empty").empty
    missing = views.scan(tmp_path / "nope")
    assert missing.error is not None and "no folder" in missing.error
    assert not missing.empty and not missing.runs


def test_scan_refuses_part_files_that_lead_outside_the_folder(tmp_path: Path) -> None:
    outside = runs.article(tmp_path / "elsewhere")
    served = tmp_path / "served"
    (served / "sneaky").mkdir(parents=True)
    (served / "sneaky" / "part-000000.parquet").symlink_to(outside / "part-000000.parquet")
    (served / "linked-run").symlink_to(outside, target_is_directory=True)
    folder = views.scan(served)
    assert folder.runs == {}
    assert dict(folder.problems) == {"sneaky": "refused: it lies outside the dashboard's folder"}


def test_run_table_lists_every_run_with_its_settings(traces: Path) -> None:
    runs.article(traces)
    runs.lr_sweep(traces)
    batch = steptrace.record(
        "seed", lr="1", numerics="float32", batch_size=3, epochs=2, out=traces, name="batch"
    )
    assert batch.status == "complete"
    table = views.run_table(views.scan(traces))
    assert table["run"].tolist() == ["article", "batch", "sweep-lr1e-8", "sweep-lr1e-9"]
    row = table.set_index("run").loc["batch"]
    assert (row["lr"], row["numerics"], row["batch size"], row["epochs"]) == ("1", "float32", 3, 2)
    assert row["steps"] == "2" and row["status"] == "complete"
    assert table.set_index("run").loc["sweep-lr1e-9", "steps"] == "9"


def test_run_table_says_how_far_an_incomplete_run_got(traces: Path) -> None:
    path = runs.article(traces)
    meta = json.loads((path / "_run.json").read_text())
    meta.update(status="incomplete", steps=10)
    (path / "_run.json").write_text(json.dumps(meta))
    runs.lr_sweep(traces, ("1e-9",), epochs=400)  # 1,200 steps, complete
    table = views.run_table(views.scan(traces))
    assert table["steps"].tolist() == ["3 of 10", "1,200"]
    assert table["status"].tolist() == ["incomplete", "complete"]
    # One type per column: the browser gets the table as Arrow (a column of numbers and
    # texts made Streamlit log a traceback at every look at the folder).
    steps = pa.Table.from_pandas(table).column("steps").type
    assert pa.types.is_string(steps) or pa.types.is_large_string(steps)


def test_last_step_and_fingerprint_come_from_the_files(traces: Path) -> None:
    trace = open_trace(runs.lr_sweep(traces, ("1e-9",), epochs=5)[0])
    assert views.last_step(trace) == 14
    before = views.fingerprint(trace)
    part = trace.files[0]
    part.touch()
    assert views.fingerprint(trace) != before


# -- one step -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"), (13, "13th"),
     (21, "21st"), (22, "22nd"), (101, "101st"), (111, "111th"), (500001, "500001st")],
)  # fmt: skip
def test_ordinal(n: int, expected: str) -> None:
    assert views.ordinal(n) == expected


@pytest.mark.parametrize("step", [0, 1, 2])
def test_step_view_shows_the_articles_values_exactly(traces: Path, step: int) -> None:
    view = views.step_view(open_trace(runs.article(traces)), step, "article")
    want = STEPS[step]
    s = view.samples[0]
    assert view.label == f"step {step} ({views.ordinal(step + 1)} data input)"
    assert s.vec("x") == vec(want["x"]) and s.vec("o1") == vec(want["o1"])
    assert (s.text["o2_1"], s.text["o3_1"], s.text["loss"]) == tuple(
        text(want[k]) for k in ("o2", "o3", "loss")
    )
    assert (s.text["d4_1"], s.text["d3_1"]) == (text(want["d4"]), text(want["d3"]))
    names = {"d2": "d2", "grad": "grad_w2", "d1": "d1", "w_before": "w2_before",
             "w_after": "w2_after"}  # fmt: skip
    for name, tensor in names.items():
        assert s.vec(tensor) == vec(want[name]), name
    assert view.lr == "1" and view.numerics == "exact" and view.epoch == 0


def test_step_view_of_the_third_data_input(traces: Path) -> None:
    view = views.step_view(open_trace(runs.article(traces)), 2, "article")
    assert view.label == "step 2 (3rd data input)"
    forward = view.forward_table().frame
    assert forward.iloc[0].tolist() == ["(0, 2000, 3000)", "(0, 2000, 3000)", "0", "0"]
    assert view.loss_table().frame.iloc[0].tolist() == ["0", "1", "1/2", "no"]
    assert view.backward_table().frame.iloc[0, 1] == "-1 (gate open)"
    assert view.update_text() == (
        "ŵ = w − α·grad = (1/200, -3/11600, 1/5800) − 1·(0, -2000, -3000)"
        " = (1/200, 23199997/11600, 17400001/5800)"
    )
    assert r"\frac{23199997}{11600}" in view.update_latex()
    weights = view.weights_table().frame.set_index("weight")
    assert weights.loc["w_2"].tolist() == ["-3/11600", "-2000", "23199997/11600", "yes"]
    assert weights.loc["w_1", "moved"] == "no"
    assert view.weights_changed == ["w2_after_1_2", "w2_after_1_3"]
    assert view.update_note() == "The update moved w_2, w_3."
    l2 = view.chain()[2]
    assert (l2.layer, l2.formula, l2.value) == ("L2", "o2 = w · o1", "0")
    l3 = view.backward_chain()[1]
    assert (l3.layer, l3.formula, l3.value) == ("L3", "δ3 = δ4 if o2 ≥ 0 else 0", "-1")


def test_step_view_says_what_changed_since_the_previous_step(traces: Path) -> None:
    trace = open_trace(runs.article(traces))
    first, second, third = (views.step_view(trace, s) for s in range(3))
    assert first.previous is None and first.changes_text() == "First step: nothing to compare with."
    # Steps 0 and 1 both learn nothing: the weights stay, the data input and o2 change.
    assert second.field_changed("x") and second.field_changed("o2")
    assert not second.field_changed("w2_before") and not second.field_changed("w2_after")
    assert not second.field_changed("loss")  # 0 both times
    assert third.field_changed("loss") and third.field_changed("w2_after")
    assert not third.field_changed("w2_before")
    assert third.changes_text().startswith("Changed since step 1: x, o1, o2, o3, loss, δ4, δ3")
    assert "ŵ" in third.changes_text() and "w," not in third.changes_text()


def test_step_view_of_a_batch_lists_every_data_input(traces: Path) -> None:
    run = steptrace.record("seed", lr="1", numerics="exact", batch_size=2, epochs=2, out=traces)
    trace = open_trace(run.path)
    view = views.step_view(trace, 2)  # epoch 1, its first batch: rows 0 and 1
    assert view.label == "step 2 (data inputs 4–5)"
    assert [s.row for s in view.samples] == [0, 1]
    assert len(view.forward_table().frame) == 2
    assert view.update_text().count(" + ") == 1  # w − α·(grad₀ + grad₁)
    last = views.step_view(trace, 1)
    assert last.label == "step 1 (3rd data input)"  # the epoch's last, partial batch


def test_the_chain_of_a_batch_step_is_drawn_for_the_data_input_asked_for(traces: Path) -> None:
    trace = open_trace(runs.batches(traces))
    view = views.step_view(trace, 1)  # data inputs 4–6: dataset rows 0, 1, 2
    assert [view.sample_label(i) for i in range(3)] == [
        "data input 4 (dataset row 0)", "data input 5 (dataset row 1)",
        "data input 6 (dataset row 2)",
    ]  # fmt: skip
    losses = [F(s.text["loss"]) for s in view.samples]
    mean = sum(losses) / 3
    assert view.batch_loss() == str(mean)
    assert view.batch_loss_text() == f"batch loss (the mean over 3 data inputs) = {mean}"
    for i, sample in enumerate(view.samples):
        chain, back = view.chain(i), view.backward_chain(i)
        assert chain[0].value == sample.vec("x") and chain[-1].value == sample.vec("loss")
        assert chain[-1].note.endswith(f"; batch loss (mean of 3) {mean}")
        assert back[0].value == sample.vec("d4")  # δ4 = (o3 − y_truth) / 3 of this input
    assert view.chain(0)[0].value != view.chain(2)[0].value
    one = views.step_view(open_trace(runs.article(traces)), 2)
    assert one.batch_loss() == "1/2" and one.batch_loss_text() == ""
    assert one.chain()[-1].note == "wrong"  # a step of one data input: its loss is the step's


def test_batch_loss_of_a_float32_batch_is_the_mean_of_its_float32_losses(traces: Path) -> None:
    run = steptrace.record("seed", lr="1e-9", numerics="float32", batch_size=3, out=traces,
                           init=runs.MOVING_INIT)  # fmt: skip
    view = views.step_view(open_trace(run.path), 0)
    recorded = open_trace(run.path).read(steps=(0, 1))["loss"]
    assert float(view.batch_loss()) == float(recorded.mean())


def test_step_view_of_a_missing_step_raises(traces: Path) -> None:
    trace = open_trace(runs.article(traces))
    with pytest.raises(
        TraceError, match=r"step 7 is not in run article \(recorded steps: 0 to 2\)"
    ):
        views.step_view(trace, 7, "article")


def test_step_view_reads_two_steps_only(traces: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trace = open_trace(runs.lr_sweep(traces, ("1e-9",), epochs=50)[0])
    seen: list[object] = []
    original = Trace.read_table

    def spy(self: Trace, columns=None, filters=None, steps=None):  # type: ignore[no-untyped-def]
        table = original(self, columns, filters, steps)
        seen.append((steps, table.num_rows))
        return table

    monkeypatch.setattr(Trace, "read_table", spy)
    views.step_view(trace, 100)
    assert seen == [((99, 101), 2)]


def test_a_step_is_read_from_the_parts_that_hold_it(tmp_path: Path) -> None:
    # A run flushed often has many parts; only the one holding the step is opened. How many
    # parts a recorder writes depends on the machine's speed, so the run's rows are cut into
    # six parts here, as a recorder flushing every 3000 rows would write them.
    (result,) = steptrace.sweep(["1"], numerics="exact", epochs=6000, out=tmp_path, name="parts")
    run = result.path
    rows = pa.concat_tables([pq.read_table(f) for f in open_trace(run).files])
    for f in open_trace(run).files:
        f.unlink()
    for i in range(6):
        pq.write_table(rows.slice(i * 3000, 3000), run / f"part-{i:06d}.parquet")
    trace = open_trace(run)
    assert len(trace.files) >= 4
    big = steptrace.load_trace(run)
    for part, (first, last) in zip(trace.files, _part_spans(trace), strict=True):
        assert trace.parts(first, last + 1)[0] == part
    assert trace.parts(None, None) == trace.files
    assert trace.parts(10**9, None) == []
    for step in (0, 8999, 17999):
        rows = trace.read(steps=(step, step + 1))
        assert rows.equals(big[big["step"] == step].reset_index(drop=True))


def _part_spans(trace: Trace) -> list[tuple[int, int]]:
    spans = []
    for f in trace.files:
        steps = pq.read_table(f, columns=["step"])["step"].to_numpy()
        spans.append((int(steps.min()), int(steps.max())))
    return spans


def test_abbreviate_shortens_only_huge_integers() -> None:
    assert views.abbreviate("-3/11600") == "-3/11600"
    long = "1" * 40 + "/" + "7" * 30
    assert views.abbreviate(long, digits=10) == "11111…11111 (40 digits)/77777…77777 (30 digits)"
    assert views.abbreviate("-" + "9" * 30, digits=10) == "-99999…99999 (30 digits)"


# -- curves ---------------------------------------------------------------------------------------


def test_minmax_downsample_keeps_every_extreme_and_says_so() -> None:
    rng = np.random.default_rng(0)
    steps = np.arange(100_000)
    values = rng.normal(size=100_000)
    values[12_345], values[67_890] = 50.0, -50.0
    values[500] = np.nan
    s, v, bucket = views.minmax_downsample(steps, values, 1000)
    assert bucket == 256 and len(s) <= 1000  # 391 buckets: 128 steps a bucket would be 782
    assert np.all(np.diff(s) > 0)
    assert 12_345 in s and 67_890 in s and 500 not in s
    assert np.array_equal(v, values[s])
    # Every bucket's min and max survive.
    for b in (0, 61, 390):
        chunk = values[b * 256 : (b + 1) * 256]
        assert np.nanmax(chunk) in v and np.nanmin(chunk) in v


def test_minmax_downsample_leaves_short_curves_alone() -> None:
    steps, values = np.arange(5), np.array([1.0, np.inf, 2.0, 3.0, 0.0])
    s, v, bucket = views.minmax_downsample(steps, values, 10)
    assert bucket == 1 and s is steps and v is values


def test_curve_of_a_long_run_is_downsampled_and_zooming_in_shows_every_step(
    traces: Path,
) -> None:
    trace = open_trace(runs.lr_sweep(traces, ("1e-8",), epochs=1000)[0])  # 3000 steps
    full = trace.read(["step", "loss", "w2_after_1_2"])
    whole = views.curve(trace, "loss")
    assert whole.downsampled and len(whole.frame) <= views.MAX_POINTS
    assert whole.note().startswith("downsampled: the min and max of every 4 steps")
    assert whole.frame["value"].max() == full["loss"].max()
    assert whole.frame["value"].min() == full["loss"].min()
    zoom = views.curve(trace, "w2_after_1_2", 1000, 1199)
    assert not zoom.downsampled and zoom.note() == "every step shown (steps 1000 to 1199)"
    assert zoom.frame["step"].tolist() == list(range(1000, 1200))
    expected = full.set_index("step").loc[1000:1199, "w2_after_1_2"].tolist()
    assert zoom.frame["value"].tolist() == expected
    assert views.curves_note({"a": whole, "b": zoom}).startswith(
        "downsampled: the min and max of every 4 steps for 1 of 2 runs (a)"
    )
    assert views.curves_note({"b": zoom}) == "every step shown"


def test_curve_of_a_batch_run_is_the_mean_loss_per_step(traces: Path) -> None:
    run = steptrace.record("seed", lr="1", numerics="exact", batch_size=3, out=traces)
    c = views.curve(open_trace(run.path), "loss")
    assert c.frame["step"].tolist() == [0]
    assert c.frame["value"].tolist() == [pytest.approx(1 / 6)]  # (0 + 0 + 1/2) / 3


def test_curve_refuses_columns_that_are_not_curves(traces: Path) -> None:
    with pytest.raises(TraceError, match="no curve for 'x_1'"):
        views.curve(open_trace(runs.article(traces)), "x_1")


# -- divergence and comparison ---------------------------------------------------------------------


def test_first_divergence_follows_the_summary_rule(traces: Path) -> None:
    boom = runs.diverging(traces)
    div = views.first_divergence(open_trace(boom))
    summary = json.loads((boom / "_run.json").read_text())["summary"]
    assert div is not None
    assert (
        (div.step, div.why)
        == (summary["diverged_at"], summary["diverged_why"])
        == (
            1,
            "loss is not finite",
        )
    )
    assert str(div) == "diverges at step 1: loss is not finite"
    assert views.first_divergence(open_trace(runs.article(traces))) is None
    curve = views.curve(open_trace(boom), "loss")
    assert curve.frame["value"].isna().sum() >= 1  # inf/NaN drawn as gaps, not as numbers


def test_compare_at_puts_two_learning_rates_side_by_side(traces: Path) -> None:
    runs.article(traces, "lr1", "1")
    runs.article(traces, "lr0.1", "1/10")
    boom = runs.diverging(traces)
    folder = views.scan(traces)
    div = {k: views.first_divergence(t) for k, t in folder.runs.items()}
    table = views.compare_at({k: folder.runs[k] for k in ("lr1", "lr0.1", "boom")}, 2, div)
    assert list(table.columns) == ["lr1", "lr0.1", "boom"]
    assert table.loc["α"].tolist() == ["1", "1/10", "1e200"]
    assert table.loc["data input", "lr1"] == "3rd data input"
    assert table.loc["loss", "lr1"] == table.loc["loss", "lr0.1"] == "1/2"
    lr01 = tuple(w - F(1, 10) * g for w, g in zip(W, (0, -2000, -3000), strict=True))
    assert table.loc["ŵ", "lr1"] == "(1/200, 23199997/11600, 17400001/5800)"
    assert table.loc["ŵ", "lr0.1"] == vec(lr01) == "(1/200, 2319997/11600, 1740001/5800)"
    assert table.loc["first divergence", "boom"] == "1 (loss is not finite)"
    assert table.loc["first divergence", "lr1"] == "none"
    assert boom.name == "boom"
    later = views.compare_at({"lr1": folder.runs["lr1"], "boom": folder.runs["boom"]}, 4)
    assert later.loc["loss", "lr1"] == "no step 4 (last: 2)"
    assert later.loc["α", "lr1"] == "1"


def test_last_step_reads_the_step_column_of_parts_without_statistics(traces: Path) -> None:
    first = runs.article(traces / "src")
    whole = pq.read_table(first / "part-000000.parquet")
    run = traces / "run"
    run.mkdir()
    # Two parts of one run, written without statistics: steps 0-1, then step 2.
    pq.write_table(whole.slice(0, 2), run / "part-000000.parquet", write_statistics=False)
    pq.write_table(whole.slice(2, 1), run / "part-000001.parquet", write_statistics=False)
    trace = open_trace(run)
    assert views.last_step(trace) == 2


# -- runs by learning rate -----------------------------------------------------------------------


def outcome(lr_text: str, final: float, diverged_at: int | None = None) -> dict:
    return {
        "lr_text": lr_text, "lr": None, "numerics": "exact", "status": "complete",
        "final_loss": final, "min_loss": final / 2, "min_loss_step": 4,
        "diverged": diverged_at is not None, "diverged_at": diverged_at,
    }  # fmt: skip


def test_lr_sweep_orders_runs_by_alpha_and_names_the_best():
    view = views.lr_sweep(
        {"a": outcome("1/10", 0.5), "b": outcome("1e-2", 0.25), "c": outcome("3", math.inf, 2)}
    )
    assert view.table["run"].tolist() == ["b", "a", "c"]  # 1e-2 < 1/10 < 3
    assert view.table["diverged at"].tolist() == ["-", "-", "2"]
    assert view.note == "Lowest final loss: α = 1e-2 (b), 0.25. Diverged: 1 of 3 runs."
    assert view.points["run"].tolist() == ["b", "b", "a", "a"]  # c's losses are not finite
    assert view.diverged.to_dict("records") == [
        {"run": "c", "lr": 3.0, "why": "diverges at step 2"}
    ]


def test_lr_sweep_needs_two_learning_rates():
    assert views.lr_sweep({"a": outcome("1", 0.5), "b": outcome("1", 0.25)}) is None
    assert views.lr_sweep({}) is None
    stuck = views.lr_sweep({"a": outcome("1", math.nan, 0), "b": outcome("2", math.inf, 0)})
    assert stuck.note == "No run ends with a finite loss. Diverged: 2 of 2 runs."


def test_run_outcome_is_the_summary_row(traces: Path):
    run = steptrace.record("seed", numerics="exact", out=traces).path
    got = views.run_outcome(open_trace(run))
    assert (got["lr_text"], got["final_loss"], got["min_loss"], got["diverged"]) == (
        "1", 0.5, 0.0, False,
    )  # fmt: skip


def test_an_ended_runs_outcome_is_read_from_its_metadata_and_matches_its_rows(traces: Path):
    moving = runs.lr_sweep(traces, ("1e-8",), epochs=20)[0]
    boom = runs.diverging(traces)
    for path in (moving, boom):
        trace = open_trace(path)
        assert trace.summary is not None  # the run has ended: no rows are read
        stored = views.run_outcome(trace)
        trace.summary = None  # as while it runs: computed from the rows
        computed = views.run_outcome(trace)
        keys = ("lr_text", "numerics", "status", "final_loss", "min_loss", "min_loss_step",
                "diverged", "diverged_at")  # fmt: skip
        assert [_plain(stored[k]) for k in keys] == [_plain(computed[k]) for k in keys]
    assert views.run_outcome(open_trace(boom))["diverged_at"] == 1


def _plain(value):
    """NaN, None and pandas' NA alike, numpy scalars as Python's: values as a reader sees them."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


# -- a two-layer stack ----------------------------------------------------------------------------


def test_step_view_draws_the_layer_chain_of_any_stack(traces: Path) -> None:
    view = views.step_view(open_trace(runs.two_layer(traces)), 0, "two-layer")
    assert view.model == (
        "input(3) → linear(2, bias) → relu → linear(1) → leaky_relu(1/100) → squared_error"
    )
    # Step 0 by hand (tests/test_replay.py works it out): x = (100, 2000, 100), y = 0.
    forward = [(link.layer, link.kind, link.formula, link.value) for link in view.chain()]
    assert forward == [
        ("input", "data", "x", "(100, 2000, 100)"),
        ("L1", "input", "o1 = x", "(100, 2000, 100)"),
        ("L2", "linear(2, bias)", "o2 = w2 · o1 + b2", "(0, 39/40)"),
        ("L3", "relu", "o3 = o2 if o2 ≥ 0 else 0", "(0, 39/40)"),
        ("L4", "linear(1)", "o4 = w4 · o3", "-13/40"),
        ("L5", "leaky_relu(1/100)", "o5 = o4 if o4 ≥ 0 else 1/100 · o4", "-13/4000"),
        ("Loss", "squared_error", "½ (o5 − y_truth)²", "169/32000000"),
    ]
    back = [(link.layer, link.formula, link.value, link.note) for link in view.backward_chain()]
    assert back == [
        ("Loss", "δ6 = o5 − y_truth", "-13/4000", ""),
        ("L5", "δ5 = δ6 if o4 ≥ 0 else 1/100 · δ6", "-13/400000", "gate closed"),
        ("L4", "δ4 = δ5 · w4;  grad4 = δ5 · o3",
         "(-13/800000, 13/1200000);  (0, -507/16000000)", ""),
        ("L3", "δ3 = δ4 if o2 ≥ 0 else 0", "(-13/800000, 13/1200000)", "gates open, open"),
        ("L2", "δ2 = δ3 · w2;  grad2 = δ3 · o1;  grad_b2 = δ3",
         "(-221/2400000000, 1339/139200000000, -767/139200000000);  "
         "((-13/8000, -13/400, -13/8000), (13/12000, 13/600, 13/12000));  "
         "(-13/800000, 13/1200000)", ""),
        ("L1", "δ1 = δ2", "(-221/2400000000, 1339/139200000000, -767/139200000000)", ""),
    ]  # fmt: skip


def test_step_view_tables_of_a_two_layer_step(traces: Path) -> None:
    view = views.step_view(open_trace(runs.two_layer(traces)), 0)
    forward = view.forward_table().frame
    assert list(forward.columns) == ["x", "o1 = L1(x)", "o2 = L2(o1)", "o3 = L3(o2)",
                                     "o4 = L4(o3)", "o5 = L5(o4)"]  # fmt: skip
    assert forward.iloc[0, 2:].tolist() == ["(0, 39/40)", "(0, 39/40)", "-13/40", "-13/4000"]
    assert view.loss_table().frame.iloc[0].tolist() == ["-13/4000", "0", "169/32000000", "no"]
    backward = view.backward_table().frame.iloc[0]
    assert backward["δ5 = δ6 if o4 ≥ 0 else 1/100 · δ6"] == "-13/400000 (gate closed)"
    assert backward["grad2 = ∂Loss/∂W2 = δ3 · o1"] == (
        "((-13/8000, -13/400, -13/8000), (13/12000, 13/600, 13/12000))"
    )
    assert backward["grad_b2 = ∂Loss/∂b2 = δ3"] == "(-13/800000, 13/1200000)"
    weights = view.weights_table().frame.set_index("weight")
    assert weights.index.tolist() == ["w2_1_1", "w2_1_2", "w2_1_3", "w2_2_1", "w2_2_2",
                                      "w2_2_3", "b2_1", "b2_2", "w4_1", "w4_2"]  # fmt: skip
    assert weights.loc["b2_2"].tolist() == ["1/10", "13/1200000", "1199987/12000000", "yes"]
    assert weights.loc["w4_1", "moved"] == "no"  # its input o3_1 = 0
    assert view.update_note().endswith("b2_1, b2_2, w4_2.")
    layers = {t.title: t for t in view.layer_tables()}
    assert list(layers) == ["L1 · input", "L2 · linear(2, bias)", "L3 · relu", "L4 · linear(1)",
                            "L5 · leaky_relu(1/100)"]  # fmt: skip
    relu = layers["L3 · relu"].table.frame.iloc[0]
    assert relu["o2 (in)"] == relu["o3 (out)"] == "(0, 39/40)"
    assert relu["δ4 (from above)"] == "(-13/800000, 13/1200000)"
    assert relu["gate"] == "gates open, open"
    assert layers["L4 · linear(1)"].formulas.startswith("o4 = w4 · o3 · δ4 = δ5 · w4")


def test_step_view_writes_out_the_weight_matrices(traces: Path) -> None:
    view = views.step_view(open_trace(runs.two_layer(traces)), 0)
    (w_name, w), (g_name, g), (after_name, after) = view.matrices(2)
    assert (w_name, g_name, after_name) == ("w2", "grad2", "ŵ2")
    assert w.frame.index.tolist() == ["o2_1", "o2_2"]  # row j: neuron j of layer 2
    assert w.frame.columns.tolist() == ["o1_1", "o1_2", "o1_3", "b"]  # column i: input i
    assert w.frame.values.tolist() == [["1/200", "-3/11600", "1/5800", "0"],
                                       ["-1/1000", "1/2000", "-1/4000", "1/10"]]  # fmt: skip
    assert g.frame.loc["o2_2"].tolist() == ["13/12000", "13/600", "13/12000", "13/1200000"]
    assert after.frame.loc["o2_1"].tolist() == ["413/80000", "347/116000", "777/2320000",
                                                "13/8000000"]  # fmt: skip
    assert view.update_text().splitlines() == [
        "ŵ2 = w2 − α·grad2",
        "   = ((1/200,   -3/11600, 1/5800),",
        "      (-1/1000, 1/2000,   -1/4000))",
        "      − 1/10·((-13/8000, -13/400, -13/8000),",
        "              (13/12000, 13/600,  13/12000))",
        "   = ((413/80000,   347/116000, 777/2320000),",
        "      (-133/120000, -1/600,     -43/120000))",
        "b̂2 = b2 − α·grad_b2 = (0, 1/10) − 1/10·(-13/800000, 13/1200000)"
        " = (13/8000000, 1199987/12000000)",
        "ŵ4 = w4 − α·grad4 = (1/2, -1/3) − 1/10·(0, -507/16000000) = (1/2, -159998479/480000000)",
    ]
    latex = view.update_latex()
    # The layer's number is an index, as in the tables' names (ŵ2): as a power it read ŵ².
    assert r"\hat{w}_{2} &= w_{2} - \alpha \cdot \mathrm{grad}_{2}" in latex
    assert r"\hat{b}_{2} &= b_{2} - \alpha \cdot \mathrm{grad}_{b2}" in latex
    assert r"\hat{w}_{4} &= w_{4}" in latex and "^" not in latex
    # A matrix's rows of fractions set apart (they ran into each other).
    assert r"{\def\arraystretch{1.6}\begin{pmatrix}\frac{413}{80000} & \frac{347}{116000}" in latex
    assert r"\frac{1199987}{12000000}" in latex


def test_step_view_of_a_two_layer_run_highlights_what_changed(traces: Path) -> None:
    trace = open_trace(runs.two_layer(traces))
    second = views.step_view(trace, 1)
    assert second.field_changed("w2_before") and second.field_changed("b2_before")
    assert second.changed_tensors[:4] == ["x", "y", "o1", "o2"]
    assert "w4_before" in second.changed_tensors and "lr" not in second.changed_tensors
    assert second.changes_text().startswith("Changed since step 0: x, y_truth, o1, o2, o3, o4")
    assert "ŵ2" in second.changes_text() and "b̂2" in second.changes_text()
    w = second.matrices(2)[0][1]
    # Every weight of layer 2 moved at step 0, so each cell of w2 differs from step 0's.
    assert w.changed.values.all()
    w4 = second.matrices(4)[0][1]
    assert w4.changed.loc["o4_1"].tolist() == [False, True]  # w4_1 did not move at step 0
    assert second.chain()[0].changed and second.backward_chain()[0].changed


def test_compare_at_lines_up_runs_of_different_models(traces: Path) -> None:
    runs.article(traces, "article", "1/10")
    runs.two_layer(traces)
    folder = views.scan(traces)
    table = views.compare_at(folder.runs, 0)
    assert list(table.columns) == ["article", "two-layer"]
    assert table.loc["model"].tolist() == [
        "input(3) → linear(1) → relu → squared_error",
        "input(3) → linear(2, bias) → relu → linear(1) → leaky_relu(1/100) → squared_error",
    ]
    assert table.loc["loss"].tolist() == ["0", "169/32000000"]
    assert table.loc["ŵ"].tolist() == ["(1/200, -3/11600, 1/5800)", "—"]
    assert table.loc["ŵ4"].tolist() == ["—", "(1/2, -159998479/480000000)"]
    assert table.loc["δ6", "two-layer"] == "-13/4000" and table.loc["δ6", "article"] == "—"
    assert views.run_table(folder)["model"].str.startswith("input(3) → linear(").all()


def test_weights_to_draw_are_every_parameter_of_the_runs_and_each_model_apart(
    traces: Path,
) -> None:
    runs.article(traces, "article", "1/10")
    runs.two_layer(traces)
    runs.two_layer(traces, "two-layer-lr1", "1")
    folder = views.scan(traces)
    columns = views.weight_columns(folder.runs)
    assert columns[:3] == ["w2_after_1_1", "w2_after_1_2", "w2_after_1_3"]  # the article's
    assert columns[3:] == ["w2_after_2_1", "w2_after_2_2", "w2_after_2_3", "b2_after_1",
                           "b2_after_2", "w4_after_1_1", "w4_after_1_2"]  # fmt: skip
    # w2_after_1_1 names a weight in both models: only runs of one model share a chart.
    assert views.weight_runs(folder.runs, "w2_after_1_1") == ["article"]
    assert views.weight_runs(folder.runs, "b2_after_2") == ["two-layer", "two-layer-lr1"]
    assert views.weight_label("b2_after_2") == "b2_after_2 · layer 2's bias b[2] after the update"
    bias = views.curve(folder.runs["two-layer"], "b2_after_2")
    assert bias.frame["value"].iloc[0] == pytest.approx(1199987 / 12000000)
    assert views.first_divergence(folder.runs["two-layer"]) is None


# -- runs of images: heatmaps ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trace]:
    """tests/image_runs.py's network on its two images, exact: α = 1/10 and 1/2 a step each,
    and both images in one step; and float64."""
    folder = tmp_path_factory.mktemp("cnn")
    made = {
        "lr0.1": record_images(folder, "1/10", name="lr0.1"),
        "lr0.5": record_images(folder, "1/2", name="lr0.5"),
        "batch": record_images(folder, "1/10", name="batch", batch_size=2, epochs=2),
        "float": record_images(folder, "1/10", name="float", numerics="float64", epochs=2),
    }
    return {key: open_trace(run.path) for key, run in made.items()}


def grids(maps: views.Heatmaps) -> list[list[list[str]]]:
    """Each grid's texts, row by row."""
    return [[list(row) for row in m.texts] for m in maps.maps]


def exact_texts(array: np.ndarray) -> list[object]:
    """An array of Fractions as texts, grid after grid of its last two axes."""
    grids = array.reshape(-1, *array.shape[-2:])
    return np.vectorize(str, otypes=[object])(grids).tolist()  # type: ignore[no-any-return]


def test_an_image_runs_heatmaps_hold_what_load_tensor_gives(cnn: dict[str, Trace]) -> None:
    trace = cnn["lr0.1"]
    for step in (0, 1):
        view = views.step_view(trace, step)
        forward = {m.tensor: m for m in view.forward_maps()}
        backward = {m.tensor: m for m in view.backward_maps()}
        assert list(forward) == ["x", "o1", "o2", "o3", "o4"]
        assert list(backward) == ["d5", "d4", "d3", "d2", "d1"]
        for tensor, maps in {**forward, **backward}.items():
            values = steptrace.load_tensor(trace, tensor, exact=True)[step]
            assert grids(maps) == exact_texts(values), (step, tensor)
            floats = [[list(row) for row in m.values] for m in maps.maps]
            assert floats == values.astype(float).tolist()
            assert maps.shape == values.shape and maps.written  # 4 × 4: values in the cells
        assert [m.title for m in forward["o2"].maps] == ["channel 0", "channel 1"]
        assert forward["o2"].title == "L2 conv2d(2, 3×3, bias): o2 = w2 ⋆ o1 + b2"
        assert forward["o2"].cell((1,), 3, 0) == "o2[1, 3, 0]"
        w, grad, after, change = view.kernels(2)
        for maps, tensor in ((w, "w2_before"), (grad, "grad_w2"), (after, "w2_after")):
            values = steptrace.load_tensor(trace, tensor, exact=True)[step]
            assert grids(maps) == exact_texts(values), (step, tensor)
            assert [m.title for m in maps.maps] == ["out 0 ← in 0", "out 0 ← in 1",
                                                    "out 1 ← in 0", "out 1 ← in 1"]  # fmt: skip
            assert maps.columns == 2  # a row of grids per output channel
        before = steptrace.load_tensor(trace, "w2_before", exact=True)[step]
        moved = steptrace.load_tensor(trace, "w2_after", exact=True)[step]
        assert grids(change) == exact_texts(moved - before)
        assert change.title == "ŵ2 − w2: what the update changed"


def test_a_float_image_runs_heatmaps_are_its_floats(cnn: dict[str, Trace]) -> None:
    trace = cnn["float"]
    view = views.step_view(trace, 3)
    o2 = view.forward_maps()[2]
    values = steptrace.load_tensor(trace, "o2")[3]
    assert [[list(row) for row in m.values] for m in o2.maps] == values.tolist()
    assert [[[float(t) for t in row] for row in m.texts] for m in o2.maps] == values.tolist()
    assert o2.frame()["label"].str.len().max() <= 8  # written in the cells, shortened
    change = view.kernels(2)[3]
    after, before = (steptrace.load_tensor(trace, t)[3] for t in ("w2_after", "w2_before"))
    assert [[list(row) for row in m.values] for m in change.maps] == (
        (after - before).reshape(4, 3, 3).tolist()
    )


def test_the_pooled_maxima_are_each_cells_first_maximum_in_reading_order(
    cnn: dict[str, Trace],
) -> None:
    view = views.step_view(cnn["lr0.1"], 0)
    o3 = next(m for m in view.forward_maps() if m.tensor == "o3")
    # Channel 0 never opens its ReLU: four cells of 0, each kept at its top left. Channel 1,
    # by hand from load_tensor("o3")[0][1]: its cells' maxima 11/16 (a tie of (1, 0) and
    # (1, 1)), 7/8, 5/4 (a tie of (2, 0) and (3, 1)) and 11/16 (a tie of (2, 2) and (3, 2)).
    assert [sorted(m.marked) for m in o3.maps] == [
        [(0, 0), (0, 2), (2, 0), (2, 2)],
        [(0, 3), (1, 0), (2, 0), (2, 2)],
    ]
    assert "first in reading order" in o3.note and o3.mark == "kept by L4's max pooling"
    # What the pooling kept is o4, and the δ it sends down, δ4, is 0 off the marked cells.
    o4 = steptrace.load_tensor(cnn["lr0.1"], "o4", exact=True)[0]
    o3_values = steptrace.load_tensor(cnn["lr0.1"], "o3", exact=True)[0]
    for c, m in enumerate(o3.maps):
        assert sorted(o3_values[c][i][j] for i, j in m.marked) == sorted(o4[c].ravel())
    d4 = next(m for m in view.backward_maps() if m.tensor == "d4")
    assert [m.marked for m in d4.maps] == [m.marked for m in o3.maps]
    for m in d4.maps:
        off = [m.texts[i][j] for i in range(4) for j in range(4) if (i, j) not in m.marked]
        assert set(off) == {"0"}
    assert {m.tensor for m in view.forward_maps() + view.backward_maps()
            if any(g.marked for g in m.maps)} == {"o3", "d4"}  # fmt: skip
    frame = o3.frame()
    assert frame["marked"].sum() == 8
    assert set(frame.loc[frame["marked"], "mark"]) == {"kept by L4's max pooling"}


@pytest.mark.parametrize("numerics", ["exact", "float64"])
def test_pooled_cells_of_ties_and_of_a_nan(numerics: str) -> None:
    from steptrace.views.heatmaps import pooled_cells

    cells = ["1", "1", "0", "1", "-1", "2", "2", "2"] if numerics == "exact" else [
        "1.0", "1.0", "0.0", "1.0", "-1.0", "nan", "2.0", "nan"]  # fmt: skip
    # One channel of 2 × 4, row by row: two 2 × 2 cells.
    grid = [cells[0:2] + cells[4:6], cells[2:4] + cells[6:8]]
    text = {f"o3_1_{i + 1}_{j + 1}": grid[i][j] for i in range(2) for j in range(4)}
    v = views.SampleValues(0, text, {"o3": (1, 2, 4)})
    # The first cell's maximum 1 comes three times: the first, (0, 0), is kept. The second
    # cell: 2 twice (exact), the first kept; in floats its NaN is the maximum, as in numpy.
    assert pooled_cells(v, "o3", 2, numerics) == {(0,): frozenset({(0, 0), (0, 3)})}


def test_the_update_of_kernels_is_counted_and_its_largest_change_named(
    cnn: dict[str, Trace],
) -> None:
    view = views.step_view(cnn["lr0.1"], 0)
    before = steptrace.load_tensor(cnn["lr0.1"], "w2_before", exact=True)[0]
    after = steptrace.load_tensor(cnn["lr0.1"], "w2_after", exact=True)[0]
    change = after - before
    moved = int((change != 0).sum())
    assert moved == 16  # channel 0's gate never opens: its kernels keep still
    largest = max(change.ravel(), key=abs)
    where = np.argwhere(change == largest)[0]
    assert view.kernel_note(2) == (
        f"The update moved 16 of the 36 kernel weights of w2 (the largest change: {largest}, "
        f"out {where[0]} ← in {where[1]}, row {where[2]}, column {where[3]})."
    )
    assert view.update_note().startswith("The update moved 16 of the 36 values of w2, b2_2, ")
    assert view.kernel_layers == [2]
    # A step of both images: the gradient drawn is their sum, exactly, as the update used.
    batch = views.step_view(cnn["batch"], 1)
    grad = batch.kernels(2)[1]
    rows = steptrace.load_tensor(cnn["batch"], "grad_w2", exact=True)[2:4]
    assert grids(grad) == exact_texts(rows[0] + rows[1])
    assert grad.title == "grad2 = ∂Loss/∂W2 (added up over the step's 2 data inputs)"


def test_a_run_of_images_has_shapes_in_its_chain_and_no_images_in_its_tables(
    cnn: dict[str, Trace], traces: Path
) -> None:
    view = views.step_view(cnn["lr0.1"], 0)
    assert view.images
    forward = [(link.layer, link.shape, link.value) for link in view.chain()]
    assert forward == [
        ("input", "2 × 4 × 4", "from 0 to 1"),
        ("L1", "2 × 4 × 4", "from 0 to 1"),
        ("L2", "2 × 4 × 4", "from -13/4 to 5/4"),
        ("L3", "2 × 4 × 4", "from 0 to 5/4"),
        ("L4", "2 × 2 × 2", "from 0 to 5/4"),
        ("L5", "8", "(0, 0, 0, 0, 11/16, 7/8, 5/4, 11/16)"),
        ("L6", "1", "29/128"),
        ("Loss", "", "9801/32768"),
    ]
    back = {link.layer: link for link in view.backward_chain()}
    assert back["L4"].shape == "2 × 4 × 4" and back["L4"].value == "from -99/256 to 99/512"
    assert back["L3"].note == "gates open: 16 of 32"
    assert view.forward_table().headers == ("o5 = L5(o4)", "o6 = L6(o5)")
    assert "grad_b2 = ∂Loss/∂b2 = Σ_ij δ3" in view.backward_table().headers
    assert not any(h.startswith(("δ4", "δ3", "grad2")) for h in view.backward_table().headers)
    assert view.weights_table().frame["weight"].tolist()[:3] == ["b2_1", "b2_2", "w6_1"]
    assert view.update_text().startswith("b̂2 = b2 − α·grad_b2 = ")
    assert "w2" not in view.update_latex()
    layers = {t.title: t for t in view.layer_tables()}
    conv = layers["L2 · conv2d(2, 3×3, bias)"]
    assert [m.title for m in conv.maps] == ["o1 (in)", "o2 (out)", "δ3 (from above)",
                                            "δ2 = Σ_out full(δ3 ⋆ flipped w2)",
                                            "grad2 = ∂Loss/∂W2 = δ3 ⋆ o1"]  # fmt: skip
    assert conv.table.headers == ("dataset row", "grad_b2 = ∂Loss/∂b2 = Σ_ij δ3")
    assert layers["L3 · relu"].table.frame["gate"].tolist() == ["gates open: 16 of 32"]
    pooling = layers["L4 · maxpool2d(2)"].maps[0]
    assert pooling.tensor == "o3" and any(m.marked for m in pooling.maps)
    assert layers["L6 · linear(1, bias)"].maps == ()
    # A run without images reads as the article: no shapes, every value written out.
    article = views.step_view(open_trace(runs.article(traces)), 2)
    assert not article.images
    assert [link.shape for link in article.chain() + article.backward_chain()] == [""] * 9
    assert article.chain()[0].value == "(0, 2000, 3000)"


def test_compare_maps_puts_two_runs_images_side_by_side_or_their_difference(
    cnn: dict[str, Trace],
) -> None:
    found = {key: views.step_view(cnn[key], 1, key) for key in ("lr0.1", "lr0.5")}
    assert views.default_image(found) == "o2"  # the first convolution's feature maps
    choices = views.image_choices(found)
    assert list(choices)[:3] == ["x", "o1", "o2"] and "w2_after" in choices
    maps, note = views.compare_maps(found, "o2")
    assert maps is not None and note == ""
    assert [m.title for m in maps.maps] == ["lr0.1 · channel 0", "lr0.1 · channel 1",
                                            "lr0.5 · channel 0", "lr0.5 · channel 1"]  # fmt: skip
    assert maps.columns == 2  # a row of grids per run
    o2 = {key: steptrace.load_tensor(cnn[key], "o2", exact=True)[1] for key in found}
    assert grids(maps) == exact_texts(o2["lr0.1"]) + exact_texts(o2["lr0.5"])
    diff, _ = views.compare_maps(found, "o2", differences=True)
    assert diff is not None and diff.title.endswith("— each run minus lr0.1")
    assert [m.title for m in diff.maps] == ["lr0.5 − lr0.1 · channel 0",
                                            "lr0.5 − lr0.1 · channel 1"]  # fmt: skip
    assert grids(diff) == exact_texts(o2["lr0.5"] - o2["lr0.1"])
    kernels, _ = views.compare_maps(found, "w2_after", differences=True)
    after = {key: steptrace.load_tensor(cnn[key], "w2_after", exact=True)[1] for key in found}
    assert kernels is not None
    assert grids(kernels) == exact_texts(after["lr0.5"] - after["lr0.1"])
    # A run without the step, and runs on other data inputs, are said.
    found["float"] = views.step_view(cnn["float"], 2, "float")
    found["gone"] = None
    _, note = views.compare_maps(found, "o2")
    assert note == ("gone has no such step; the runs' data inputs drawn differ: lr0.1 "
                    "dataset row 1, lr0.5 dataset row 1, float dataset row 0")  # fmt: skip
    assert views.compare_maps(found, "w2_after")[1] == "gone has no such step"  # no data input
    batch = {key: views.step_view(cnn[key], 0, key) for key in ("lr0.1", "batch")}
    assert views.compare_maps(batch, "o2")[1] == ""  # each draws dataset row 0
    assert views.compare_maps(batch, "grad_w2")[1] == (
        "the runs' data inputs drawn differ: lr0.1 dataset row 0, batch dataset row 0, 1"
    )
    table = views.compare_at({k: cnn[k] for k in ("lr0.1", "lr0.5")}, 0)
    assert table.loc["o2"].tolist() == ["2 × 4 × 4, from -13/4 to 5/4"] * 2
    assert table.loc["w2"].tolist()[0].startswith("2 × 2 × 3 × 3, from ")


def test_cell_labels_and_spans() -> None:
    from steptrace.views.heatmaps import cell_label, span

    assert [cell_label(t) for t in ("0", "-1/4", "0.0", "1.0", "0.29030000000000006",
                                    "-3/11600", "0.00024345419879387778", "nan")] == [
        "0", "-1/4", "0", "1", "0.29", "-0.00026", "0.00024", "nan"]  # fmt: skip
    v = views.SampleValues(0, {"x_1": "0.5", "x_2": "-inf", "x_3": "0.25"}, {"x": (3,)})
    assert span(v, "x") == "from 0.25 to 0.5 (1 not finite)"
    same = views.SampleValues(0, {"x_1": "1/3", "x_2": "1/3"}, {"x": (2,)})
    assert span(same, "x") == "all 1/3"
    # An exact run's huge values: shown shortened, written by their size, or beyond any float.
    big, beyond = "3" + "0" * 30 + "/7", "-" + "9" * 400
    texts = {"o2_1_1_1": big, "o2_1_1_2": beyond, "o2_1_2_1": "1/2", "o2_1_2_2": "0"}
    maps = views.heatmaps.grid_maps(views.SampleValues(0, texts, {"o2": (1, 2, 2)}), "o2", "o2")
    frame = maps.frame()
    shortened = [
        "300000000000…000000000000 (31 digits)/7",
        "-999999999999…999999999999 (400 digits)",
    ]
    assert frame["text"].tolist()[:2] == shortened
    assert frame["label"].tolist() == ["4.3e+29", "-huge", "1/2", "0"]
    assert math.isnan(frame["value"].iloc[1]) and maps.limit == pytest.approx(3e30 / 7)
    spanned = span(views.SampleValues(0, texts, {"o2": (1, 2, 2)}), "o2")
    assert spanned == f"from {shortened[1]} to {shortened[0]}"


def test_a_normalizations_scales_are_a_row_per_unit(tmp_path: Path) -> None:
    model = {**CNN, "layers": [*CNN["layers"][:2], {"type": "normalization"},
                               *CNN["layers"][2:]]}  # fmt: skip
    trace = open_trace(record_images(tmp_path, "1/10", name="norm", numerics="float64",
                                     model=model).path)  # fmt: skip
    view = views.step_view(trace, 0)
    (w_name, gamma), _, (after_name, after) = view.matrices(3)
    assert (w_name, after_name) == ("w3", "ŵ3")
    assert gamma.frame.index.tolist() == ["channel 0", "channel 1"]
    assert gamma.frame.values.tolist() == [["1.0", "0.0"], ["1.0", "0.0"]]  # γ = 1, β = 0
    moved = steptrace.load_tensor(trace, "w3_after")[0]
    assert [float(t) for t in after.frame["γ"]] == moved.tolist()
