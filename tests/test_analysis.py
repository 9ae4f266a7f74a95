"""Analysis: the pandas accessor and its definitions, on a learning-rate sweep of the article;
and loading slices of runs — row groups pruned, runs chosen from metadata before any file opens."""

import json

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

import steptrace.analysis as an
from steptrace import find_traces, load_tensor, load_trace, load_traces, open_trace, record, sweep
from steptrace.analysis.gates import _gate_kind
from steptrace.data import seed_dataset
from steptrace.errors import TraceError
from steptrace.trace.writer import TraceWriter, make_run_dir
from steptrace.train.columns import iter_blocks
from steptrace.train.recorder import run_metadata
from steptrace.train.settings import Settings

from .conftest import REPO
from .image_runs import CNN, record_images

EPOCHS = 20
LRS = ["1", "1e-4", "1e-7"]
# o2 of the first epoch's third sample (0, 2000, 3000) · w in float64: the gate closes.
FLOAT64_O2_THIRD_SAMPLE = -1.1102230246251565e-16


@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory):
    """The article's data: exact and float64 runs at three α, plus one that overflows: from
    w = 0 the gate is open, step 2 sets w to 1e300·(200, 2000, 3000) and step 3's loss is inf."""
    out = tmp_path_factory.mktemp("analysis") / "sweep"
    results = []
    for numerics in ("exact", "float64"):
        results += sweep(LRS, out=out, epochs=EPOCHS, numerics=numerics)
    results.append(
        record(lr="1e300", epochs=2, numerics="float64", init="0,0,0", out=out, name="overflow")
    )
    return out, {r.path.name: r for r in results}


@pytest.fixture(scope="module")
def rows(sweep_folder):
    return load_traces(sweep_folder[0])


def test_the_summary_agrees_with_what_the_recorder_summarised(sweep_folder, rows):
    _, results = sweep_folder
    table = rows.steptrace.summary()
    assert sorted(table.index) == sorted(results)
    for name, result in results.items():
        s, got = result.summary, table.loc[name]
        assert got["steps"] == s.steps
        assert got["final_loss"] == s.final_loss
        assert got["min_loss"] == s.min_loss and got["min_loss_step"] == s.min_loss_step
        expected_at = pd.NA if s.diverged_at is None else s.diverged_at
        assert got["diverged_at"] is expected_at or got["diverged_at"] == expected_at
        assert got["diverged"] == (s.diverged_at is not None)


def test_which_learning_rate_learns_diverges_or_stays_stuck(rows):
    table = an.run_summary(rows)
    exact_big = table.loc["seed-exact-lr1"]
    assert exact_big["diverged_at"] == 3 and "1e+06" in exact_big["diverged_why"]
    assert not exact_big["converged"]
    learns = table.loc["seed-exact-lr1e-7"]
    assert learns["converged"] and not learns["diverged"]
    assert learns["last_epoch_loss"] <= an.CONVERGE_RTOL * learns["first_epoch_loss"]
    assert learns["gate_closed_steps"] == 0 and learns["gate_closed_share"] == 0
    assert learns["dead_units"] == 0 and learns["dead_neurons"] == ""
    # α = 1e-4 overshoots at step 3 into o2 < 0 for every patient: the ReLU is dead
    dead = table.loc["seed-exact-lr1e-4"]
    assert (dead["dead_units"], dead["dead_neurons"]) == (1, "L3[1]")
    assert dead["gate_closed_steps"] == 56 and dead["gate_closed_share"] == 56 / 60
    for lr in LRS:  # float64: samples 0 and 2 have o2 < 0 every epoch, nothing is learned
        stuck = table.loc[f"seed-float64-lr{lr}"]
        assert stuck["gate_closed_steps"] == 2 * EPOCHS
        assert stuck["gate_closed_share"] == pytest.approx(2 / 3)
        assert stuck["dead_units"] == 0  # sample 1 opens the gate every epoch
        assert not stuck["converged"] and not stuck["diverged"]
        assert stuck["first_epoch_loss"] == stuck["last_epoch_loss"] == pytest.approx(1 / 6)
    assert table.loc["seed-exact-lr1", "first_nonfinite_step"] is pd.NA


def test_the_first_non_finite_step_is_where_the_loss_overflows(rows):
    overflow = an.run_summary(rows).loc["overflow"]
    assert overflow["first_nonfinite_step"] == 3
    assert overflow["diverged_at"] == 3 and overflow["diverged_why"] == "loss is not finite"
    assert not overflow["converged"] and np.isinf(overflow["last_epoch_loss"])
    step3 = rows[(rows.run == "overflow") & (rows.step == 3)]
    assert np.isinf(step3["loss"]).all() and np.isfinite(step3["w2_before_1_2"]).all()
    # o2 is NaN at steps 4 and 5: the model's rule (open if o2 >= 0) treats it as closed
    assert overflow["gate_closed_steps"] == 2


def test_streamed_summaries_of_runs_on_disk_equal_the_in_memory_ones(sweep_folder, rows):
    traces, problems = find_traces(sweep_folder[0])
    assert problems == []
    streamed = an.trace_summaries(traces)
    in_memory = an.run_summary(rows)
    pd.testing.assert_frame_equal(streamed[in_memory.columns], in_memory, check_dtype=False)


def test_a_folder_read_by_pandas_alone_is_summarised_by_run_id(sweep_folder, rows):
    raw = pd.read_parquet(sweep_folder[0])
    by_id = raw.steptrace.summary()
    named = an.run_summary(rows)
    ids = rows.groupby("run")["run_id"].first()
    assert sorted(by_id.index) == sorted(ids)
    for run, run_id in ids.items():
        assert by_id.loc[run_id, "diverged_at"] is named.loc[run, "diverged_at"] or (
            by_id.loc[run_id, "diverged_at"] == named.loc[run, "diverged_at"]
        )
        assert by_id.loc[run_id, "gate_closed_steps"] == named.loc[run, "gate_closed_steps"]


def test_rows_of_one_step_and_runs_side_by_side(rows):
    third = rows.steptrace.step(2)
    assert len(third) == rows.run.nunique() and set(third["sample"]) == {2}
    side = rows.steptrace.compare(2)
    exact, f64 = side.loc["seed-exact-lr1e-4"], side.loc["seed-float64-lr1e-4"]
    assert exact["o2_1"] == 0 and exact["d3_1"] == -1  # gate open at exactly 0
    assert exact["w2_after_1_2"] - exact["w2_before_1_2"] == pytest.approx(1e-4 * 2000)
    assert exact["w2_after_1_3"] - exact["w2_before_1_3"] == pytest.approx(1e-4 * 3000)
    assert f64["o2_1"] == FLOAT64_O2_THIRD_SAMPLE and f64["d3_1"] == 0
    assert (
        f64[["w2_after_1_1", "w2_after_1_2", "w2_after_1_3"]].to_numpy()
        == f64[["w2_before_1_1", "w2_before_1_2", "w2_before_1_3"]].to_numpy()
    ).all()
    # the gate's input and the δ it lets through, then the weights before and after
    assert list(side.columns) == [
        "sample", "loss", "o2_1", "d3_1", "w2_before_1_1", "w2_before_1_2", "w2_before_1_3",
        "w2_after_1_1", "w2_after_1_2", "w2_after_1_3",
    ]  # fmt: skip
    assert list(rows.steptrace.compare(2, ["loss"]).columns) == ["loss"]
    by_tensor = rows.steptrace.compare(2, ["o2_1", "d3", "w2_after"])
    assert list(by_tensor.columns) == ["o2_1", "d3_1", "w2_after_1_1", "w2_after_1_2",
                                       "w2_after_1_3"]  # fmt: skip
    assert list(rows.steptrace.compare(2, ["w_before"]).columns) == list(side.columns[4:7])


def test_weights_in_long_form_one_row_per_run_step_and_weight(rows):
    w = rows.steptrace.weights()
    assert list(w.columns) == ["step", "run", "layer", "quantity", "j", "i", "value"]
    assert len(w) == len(rows.drop_duplicates(["run", "step"])) * 3
    assert set(w.layer) == {2} and set(w.quantity) == {"w"} and set(w.j) == {1}
    one = w[(w.run == "seed-exact-lr1") & (w.step == 2)].set_index("i")["value"]
    assert one[2] == pytest.approx(2000 - 3 / 11600) and one[3] == pytest.approx(3000 + 1 / 5800)
    before = rows.steptrace.weights("before")
    start = before[(before.step == 0) & (before.run == "seed-exact-lr1")]["value"].tolist()
    assert start == pytest.approx([1 / 200, -3 / 11600, 1 / 5800])


def test_epoch_loss_per_step_or_per_sample_with_a_short_last_batch(traces):
    run = record(lr="1e-7", epochs=3, batch_size=2, numerics="exact", out=traces)
    df = load_trace(run.path)
    df["run"] = "b2"
    loss = df["loss"].to_numpy()
    per_step = df.steptrace.epoch_loss()
    per_sample = df.steptrace.epoch_loss(per="sample")
    for epoch in range(3):
        l0, l1, l2 = loss[3 * epoch : 3 * epoch + 3]  # steps of 2 samples then 1 sample
        assert per_step.loss[epoch] == pytest.approx(((l0 + l1) / 2 + l2) / 2)
        assert per_sample.loss[epoch] == pytest.approx((l0 + l1 + l2) / 3)
    assert list(per_step.columns) == ["run", "epoch", "loss"]
    batch = df.steptrace.batch_loss()
    assert batch.loss[0] == pytest.approx((loss[0] + loss[1]) / 2) and len(batch) == 6


def test_nan_and_inf_losses_are_never_skipped():
    df = pd.DataFrame(
        {
            "run": "r",
            "step": [0, 1, 2, 3],
            "epoch": [0, 0, 1, 1],
            "loss": [1.0, np.nan, 2.0, np.inf],
        }
    )
    by_epoch = an.epoch_loss(df)
    assert np.isnan(by_epoch.loss[0]) and np.isinf(by_epoch.loss[1])
    assert an.run_summary(df).loc["r", "first_nonfinite_step"] == 1


def test_missing_columns_are_named_in_the_error(rows):
    with pytest.raises(TraceError, match="lack column\\(s\\) loss"):
        an.run_summary(rows[["run", "step", "epoch"]])
    with pytest.raises(TraceError, match="neither a 'run' nor a 'run_id'"):
        an.step_rows(rows.drop(columns=["run", "run_id"]), 0).pipe(an.batch_loss)
    with pytest.raises(TraceError, match="no parameter columns \\(w\\{k\\}_after_…\\)"):
        an.weights_long(rows[["run", "step", "loss"]])
    with pytest.raises(TraceError, match="which must be 'before' or 'after', got 'w_after'"):
        an.weights_long(rows, "w_after")
    with pytest.raises(TraceError, match="lack column\\(s\\) o9_1"):
        an.compare_at(rows, 2, ["o9_1"])
    with pytest.raises(TraceError, match="per must be"):
        an.epoch_loss(rows, per="batch")


# --- loading slices: pushdown to row groups, runs chosen from metadata ---------------------


def _rchar() -> int:
    """Bytes this process has read through system calls (Linux I/O counter)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar"))


@pytest.fixture(scope="module")
def many_row_groups(tmp_path_factory):
    """A 60 000-row float64 run written in row groups of 2 048 rows (30 of them)."""
    ds = seed_dataset()
    settings = Settings.parse(ds, "1e-9", 20_000, 1, "float64", "0.005,-0.0002,0.0002")
    run_dir = make_run_dir(tmp_path_factory.mktemp("big"), "big")
    meta = run_metadata(ds, settings, "big-run", run_dir.name)
    writer = TraceWriter(run_dir, False, meta, flush_seconds=3600, row_group_rows=2048)
    for block in iter_blocks(ds, settings, max_rows=2048):
        writer.write(block)
    writer.close()
    return run_dir


def test_one_step_of_a_many_row_run_reads_one_row_group(many_row_groups):
    files = sorted(many_row_groups.glob("part-*.parquet"))
    total_groups = sum(pq.read_metadata(f).num_row_groups for f in files)
    assert total_groups >= 29
    step = pc.field("step") == 40_000
    kept = [
        rg.id
        for frag in pads.dataset([str(f) for f in files], format="parquet").get_fragments(step)
        for piece in frag.split_by_row_group(step)
        for rg in piece.row_groups
    ]
    assert len(kept) == 1  # the step/epoch/sample statistics rule out every other group
    size = sum(f.stat().st_size for f in files)
    before = _rchar()
    one = load_trace(many_row_groups, filters=[("step", "==", 40_000)])
    read = _rchar() - before
    assert one["step"].tolist() == [40_000] and one["sample"].tolist() == [40_000 % 3]
    assert read < 0.1 * size, f"read {read} of {size} bytes for one step"
    before = _rchar()
    slim = load_trace(many_row_groups, ["step", "loss"], [("step", "==", 40_000)])
    assert _rchar() - before < read and list(slim.columns) == ["step", "loss"]


def test_run_filters_choose_runs_before_their_files_are_opened(tmp_path):
    out = tmp_path / "sweep"
    sweep(["1", "1e-7"], out=out, epochs=2, numerics="float64")
    sweep(["1e-7"], out=out, epochs=2, numerics="exact")
    for part in (out / "seed-float64-lr1").glob("part-*.parquet"):
        part.write_bytes(b"not parquet")  # any attempt to read it fails
    with pytest.raises(TraceError, match="seed-float64-lr1"):
        load_traces(out)
    chosen = load_traces(out, filters=[("lr_text", "==", "1e-7"), ("step", "<", 2)])
    assert sorted(chosen.run.unique()) == ["seed-exact-lr1e-7", "seed-float64-lr1e-7"]
    assert sorted(chosen.step.unique()) == [0, 1]
    by_float = load_traces(out, ["step", "lr"], [("lr", "<", 1e-3)])
    assert set(by_float.lr) == {1e-7} and len(by_float) == 12
    by_expression = load_traces(out, ["step"], pc.field("numerics") == "exact")
    assert set(by_expression.run) == {"seed-exact-lr1e-7"} and len(by_expression) == 6
    # an expression naming row columns goes to the files whole: settings in it must be columns
    mixed = load_traces(out, ["step"], (pc.field("numerics") == "exact") & (pc.field("step") == 4))
    assert mixed.step.tolist() == [4]
    either = load_traces(
        out,
        ["step"],
        [
            [("run", "==", "seed-exact-lr1e-7")],
            [("numerics", "==", "float64"), ("lr", "<", 1e-3), ("step", ">=", 5)],
        ],
    )
    assert either.groupby("run").step.apply(list).to_dict() == {
        "seed-exact-lr1e-7": [0, 1, 2, 3, 4, 5],
        "seed-float64-lr1e-7": [5],
    }
    traces, problems = find_traces(out, [("numerics", "==", "exact"), ("step", "==", 0)])
    assert [t.name for t in traces] == ["seed-exact-lr1e-7"] and problems == []
    empty = load_trace(out / "seed-exact-lr1e-7", ["step"], [("numerics", "==", "float64")])
    assert empty.empty and list(empty.columns) == ["step"]


def test_the_lr_setting_is_the_float_the_rows_hold_in_every_numerics(tmp_path):
    for numerics in ("exact", "float64", "float32"):
        record(lr="1e-7", numerics=numerics, out=tmp_path)
    rows = load_traces(tmp_path, ["lr"])
    float32_lr = float(np.float32(1e-7))
    assert set(rows[rows.numerics == "float32"].lr) == {float32_lr}
    picked = load_traces(tmp_path, ["lr"], [("lr", "==", float32_lr)])
    assert set(picked.numerics) == {"float32"}


def test_columns_some_runs_lack_are_missing_values_there(tmp_path):
    csv = tmp_path / "two.csv"
    csv.write_text("a,b,y\n1,2,0\n3,4,1\n")
    record(csv, lr="0.1", init="0.5,0.5", numerics="float64", out=tmp_path / "mix")
    record(lr="1e-7", numerics="exact", out=tmp_path / "mix")
    df = load_traces(tmp_path / "mix", ["step", "x_3", "o2_1_exact", "lr_text"])
    two = df[df.run == "two-float64-lr0.1"]
    assert two.x_3.isna().all() and two.o2_1_exact.isna().all() and len(two) == 2
    exact = df[df.run == "seed-exact-lr1e-7"]
    assert exact.x_3.tolist() == [100, 0, 3000] and exact.o2_1_exact.tolist()[0] == "0"
    with pytest.raises(TraceError, match="no run has column\\(s\\) x_9"):
        load_traces(tmp_path / "mix", ["step", "x_9"])


def test_sweep_dataset_unifies_columns_and_adds_settings_for_every_engine(tmp_path):
    csv = tmp_path / "two.csv"
    csv.write_text("a,b,y\n1,2,0\n3,4,1\n")
    out = tmp_path / "mix"
    record(csv, lr="0.1", init="0.5,0.5", numerics="float64", out=out, name="a-two")
    record(lr="1e-7", numerics="exact", out=out, name="b-exact")
    dataset = an.sweep_dataset(out)
    assert {"x_3", "o2_1_exact", "run", "lr_text", "epochs"} <= set(dataset.schema.names)
    counts = duckdb.sql(
        "SELECT run, lr_text, count(*), count(x_3) FROM dataset GROUP BY ALL ORDER BY run"
    ).fetchall()
    assert counts == [("a-two", "0.1", 2, 0), ("b-exact", "1e-7", 3, 3)]
    exact_o2 = (
        pl.scan_pyarrow_dataset(dataset)
        .filter(pl.col("run") == "b-exact")
        .select("o2_1_exact")
        .collect()["o2_1_exact"]
        .to_list()
    )
    assert exact_o2 == ["0", "1", "0"]
    only = pc.field("run") == "b-exact"
    assert len(list(dataset.get_fragments(only))) == 1  # the other run is pruned unopened
    assert an.sweep_dataset(out, [("numerics", "==", "exact")]).to_table().num_rows == 3


# --- any stack of layers -----------------------------------------------------------------------

TWO_LAYER = REPO / "examples" / "two-layer.json"


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """The two-layer example (input → linear(2, bias) → relu → linear(1) → leaky relu) at two
    α in exact and float64, and a network with a Heaviside gate, in one folder."""
    out = tmp_path_factory.mktemp("network") / "runs"
    for numerics in ("exact", "float64"):
        sweep(["1/10", "1/1000"], model=TWO_LAYER, out=out, epochs=5, numerics=numerics)
    step_model = {
        "layers": [
            {"type": "input"},
            {"type": "linear", "out": 2, "biases": ["-1/10", "1/10"],
             "weights": [["1/200", "0", "-1/1000"], ["0", "1/2000", "0"]]},
            {"type": "heaviside"},
            {"type": "linear", "out": 1, "bias": False, "weights": [["1/2", "1/4"]]},
        ]
    }  # fmt: skip
    record(lr="1/10", epochs=2, model=step_model, out=out, name="heaviside")
    return out


def test_the_gates_of_any_stack_are_found_in_its_rows_as_in_its_model(network):
    traces, problems = find_traces(network)
    assert problems == []
    df = load_traces(network)
    for trace in traces:
        rows = df[df.run == trace.name]
        assert an.find_gates(rows) == an.trace_gates(trace), trace.name
    two = an.trace_gates(next(t for t in traces if t.name == "seed-two-layer-exact-lr1_10"))
    assert two == [
        an.Gate(3, "relu", ("o2_1", "o2_2")),
        an.Gate(5, "leaky_relu", ("o4_1",)),
    ]
    assert an.find_gates(df[df.run == "heaviside"]) == [an.Gate(3, "heaviside", ("o2_1", "o2_2"))]
    by_run = df.steptrace.gates()
    assert by_run["seed-two-layer-float64-lr1_1000"] == two
    assert by_run["heaviside"] == [an.Gate(3, "heaviside", ("o2_1", "o2_2"))]


def test_gates_are_told_from_the_rows_alone():
    x = np.array([[-2.0], [0.0], [3.0], [np.nan]])
    kinds = {
        "relu": [[0.0], [0.0], [3.0], [np.nan]],
        "leaky_relu": [[-0.02], [0.0], [3.0], [np.nan]],
        "heaviside": [[0.0], [1.0], [1.0], [np.nan]],
        None: [[-2.0], [0.0], [3.0], [1.0]],  # identity: a negative passes unchanged
    }
    for kind, o in kinds.items():
        assert _gate_kind(x, np.array(o)) == kind
    logistic = 1 / (1 + np.exp(-x))
    assert _gate_kind(x, logistic) is None
    rows = pd.DataFrame({"run": "r", "step": range(4), "o2_1": x[:, 0], "o3_1": [0, 0, 3, 1]})
    assert an.find_gates(rows) == [an.Gate(3, "relu", ("o2_1",))]
    rows["o4_1"] = rows["o3_1"] * 2  # another size would not be a gate; this is not either
    assert an.find_gates(rows) == [an.Gate(3, "relu", ("o2_1",))]


def test_a_two_layer_summary_counts_every_gate_unit_and_names_dead_ones(network):
    df = load_traces(network)
    table = df.steptrace.summary()
    streamed = an.trace_summaries(find_traces(network)[0])
    pd.testing.assert_frame_equal(streamed[table.columns], table, check_dtype=False)
    for run in ("seed-two-layer-exact-lr1_10", "seed-two-layer-float64-lr1_1000"):
        rows = df[df.run == run]
        closed = ~(rows[["o2_1", "o2_2", "o4_1"]].to_numpy() >= 0)
        got = table.loc[run]
        assert got["gate_closed_share"] == closed.sum() / closed.size
        assert got["gate_closed_steps"] == len(set(rows.step[closed.any(axis=1)]))
        last_epoch = (rows.epoch == rows.epoch.max()).to_numpy()
        dead = [f"L3[{j + 1}]" for j in range(2) if closed[last_epoch, j].all()]
        assert got["dead_neurons"] == ", ".join(dead) and got["dead_units"] == len(dead)
    # The Heaviside never dies (δ through it is 0 whatever its input) and has no ReLU unit.
    assert table.loc["heaviside", "dead_units"] == 0
    nonfinite = table["first_nonfinite_step"]
    assert nonfinite.isna().all()


def test_a_two_layer_runs_weights_and_biases_in_long_form(network):
    df = load_traces(network)
    run = df[df.run == "seed-two-layer-exact-lr1_10"]
    w = run.steptrace.weights()
    n_steps = run.step.nunique()
    assert len(w) == n_steps * (6 + 2 + 2)  # W2 (2×3), b2 (2), W4 (1×2)
    first = w[w.step == 0]
    assert list(zip(first.layer, first.quantity, first.j, first.i.astype(object), strict=True)) == [
        (2, "w", 1, 1), (2, "w", 1, 2), (2, "w", 1, 3), (2, "w", 2, 1), (2, "w", 2, 2),
        (2, "w", 2, 3), (2, "b", 1, pd.NA), (2, "b", 2, pd.NA), (4, "w", 1, 1), (4, "w", 1, 2),
    ]  # fmt: skip
    at = w.set_index(["step", "layer", "quantity", "j", "i"])["value"]
    step_rows = run.drop_duplicates("step").set_index("step")
    assert at[(3, 4, "w", 1, 2)] == step_rows.loc[3, "w4_after_1_2"]
    assert at[(3, 2, "b", 2, pd.NA)] == step_rows.loc[3, "b2_after_2"]
    start = run.steptrace.weights("before")
    assert start[start.step == 0].value.tolist() == pytest.approx(
        [1 / 200, -3 / 11600, 1 / 5800, -1 / 1000, 1 / 2000, -1 / 4000, 0, 1 / 10, 1 / 2, -1 / 3]
    )
    # A folder of several models: each run has its own parameters, none invented for others.
    every = df.steptrace.weights()
    assert set(every[every.run == "heaviside"].layer) == {2, 4}
    assert len(every[every.run == "heaviside"]) == 6 * (6 + 2 + 2)


def test_two_layer_runs_side_by_side_show_every_gate_and_parameter(network):
    df = load_traces(network)
    pair = df[df.run.isin(["seed-two-layer-exact-lr1_10", "seed-two-layer-float64-lr1_10"])]
    side = pair.steptrace.compare(0)
    assert list(side.columns[:8]) == ["sample", "loss", "o2_1", "o2_2", "d3_1", "d3_2",
                                      "o4_1", "d5_1"]  # fmt: skip
    assert len(side.columns) == 8 + 2 * 10
    exact, f64 = side.loc["seed-two-layer-exact-lr1_10"], side.loc["seed-two-layer-float64-lr1_10"]
    # neuron 1 of layer 2 has the article's weights: exactly 0 in exact, below 0 in float64
    assert exact["o2_1"] == 0 and f64["o2_1"] == -3.469446951953614e-17
    assert exact["d3_1"] != 0 and f64["d3_1"] == 0  # the gate lets δ through, or not
    picked = pair.steptrace.compare(0, ["w_after", "b2_after"])
    assert list(picked.columns) == [
        "w2_after_1_1", "w2_after_1_2", "w2_after_1_3", "w2_after_2_1", "w2_after_2_2",
        "w2_after_2_3", "w4_after_1_1", "w4_after_1_2", "b2_after_1", "b2_after_2",
    ]  # fmt: skip


def test_sweep_dataset_reads_version_1_goldens_under_version_2_names(tmp_path):
    golden = REPO / "traces" / "golden"
    assert all(t.v1 for t in find_traces(golden)[0])
    dataset = an.sweep_dataset(golden)
    got = duckdb.sql(
        "SELECT w2_after_1_3_exact FROM dataset WHERE run = 'article-exact' ORDER BY step"
    ).fetchall()
    assert got == [("1/5800",), ("1/5800",), ("17400001/5800",)]
    assert "w_after_3" not in dataset.schema.names
    rows = dataset.to_table(filter=pc.field("lr_text") == "1e-7").num_rows
    assert rows == 15
    # with a version 2 run beside them, every column is under one name
    mixed = tmp_path / "mixed"
    for path in golden.glob("article-*.parquet"):
        (mixed / path.name).parent.mkdir(exist_ok=True)
        (mixed / path.name).write_bytes(path.read_bytes())
    record(lr="1", numerics="exact", out=mixed, name="fresh")
    dataset = an.sweep_dataset(mixed)
    both = duckdb.sql(
        "SELECT run, w2_after_1_3_exact FROM dataset WHERE step = 2 AND numerics = 'exact' "
        "ORDER BY run"
    ).fetchall()
    assert both == [("article-exact", "17400001/5800"), ("fresh", "17400001/5800")]


# --- images -------------------------------------------------------------------------------------

#: tests/image_runs.py's network with a normalization after the convolution (per channel) and one
#: after a linear layer of two neurons (per neuron): float only, a batch of two images.
NORMALIZED = {
    "layers": [
        *CNN["layers"][:2],
        {"type": "normalization"},
        {"type": "relu"},
        {"type": "flatten"},
        {"type": "linear", "out": 2, "bias": True},
        {"type": "normalization"},
        {"type": "linear", "out": 1, "bias": False},
    ],
    "loss": "squared_error",
}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The image network (channel 0's ReLU never opens) over three epochs, and the normalized
    one, in one folder."""
    folder = tmp_path_factory.mktemp("images")
    cnn = record_images(folder, "1/10", name="cnn", numerics="float64", epochs=3)
    normalized = record_images(
        folder,
        "1/10",
        name="normalized",
        numerics="float64",
        model=NORMALIZED,
        batch_size=2,
        epochs=2,
        seed=1,
    )
    return folder / "runs", cnn, normalized


def test_an_image_runs_weights_in_long_form_index_kernels_from_0(images):
    folder, cnn, _ = images
    w = load_traces(folder).query("run == 'cnn'").steptrace.weights()
    assert list(w.columns) == ["step", "run", "layer", "quantity", "j", "i", "out_channel",
                               "in_channel", "row", "column", "channel", "value"]  # fmt: skip
    steps = w.step.nunique()
    assert steps == 6 and len(w) == steps * (36 + 2 + 8 + 1)  # kernels, biases, W6, b6
    kernel = w[(w.layer == 2) & (w.quantity == "w")]
    assert kernel[["j", "i", "channel"]].isna().all().all()
    index = kernel[["step", "out_channel", "in_channel", "row", "column"]].to_numpy(np.int64)
    assert index[:2, 1:].tolist() == [[0, 0, 0, 0], [0, 0, 0, 1]]  # as the stack flattens them
    assert kernel.value.tolist() == load_tensor(cnn.path, "w2_after")[tuple(index.T)].tolist()
    bias = w[(w.layer == 2) & (w.quantity == "b")]
    assert bias.out_channel.tolist()[:2] == [0, 1] and bias.in_channel.isna().all()
    assert (
        bias.value.tolist()
        == load_tensor(cnn.path, "b2_after")[
            bias.step.to_numpy(), bias.out_channel.to_numpy(np.int64)
        ].tolist()
    )
    # the linear layer on top keeps the series' numbering, from 1
    linear = w[w.layer == 6]
    assert set(linear.j) == {1} and linear.i.dropna().tolist()[:2] == [1, 2]
    assert linear[["out_channel", "in_channel", "row", "column", "channel"]].isna().all().all()
    # the dead channel's kernel never moves; the open one's does
    moved = kernel.groupby("out_channel").value.agg(lambda v: v.nunique() > 1)
    assert moved.tolist() == [False, True]


def test_a_normalizations_gamma_and_beta_by_channel_or_neuron(images):
    folder, _, normalized = images
    w = load_traces(folder).query("run == 'normalized'").steptrace.weights("before")
    per_channel = w[w.layer == 3]
    assert per_channel.channel.tolist()[:4] == [0, 1, 0, 1]
    assert per_channel.quantity.tolist()[:4] == ["w", "w", "b", "b"]  # γ, then β
    assert per_channel[["j", "out_channel"]].isna().all().all()
    gamma = per_channel[per_channel.quantity == "w"]
    by_step = load_tensor(normalized.path, "w3_before")[::2]  # two rows a step
    at = (gamma.step.to_numpy(), gamma.channel.to_numpy(np.int64))
    assert gamma.value.tolist() == by_step[at].tolist()
    per_neuron = w[w.layer == 7]
    assert per_neuron.j.tolist()[:4] == [1, 2, 1, 2] and per_neuron.channel.isna().all()
    assert per_neuron[per_neuron.step == 0].value.tolist() == [1, 1, 0, 0]  # γ 1, β 0


def test_an_image_relus_units_are_its_channels_and_one_that_never_opens_is_dead(images):
    folder, cnn, normalized = images
    df = load_traces(folder)
    trace = open_trace(cnn.path)
    o2 = tuple(trace.columns_of("o2"))
    assert an.trace_gates(trace) == [an.Gate(3, "relu", o2, channels=2)]
    assert an.find_gates(df[df.run == "cnn"]) == an.trace_gates(trace)
    table = df.steptrace.summary()
    streamed = an.trace_summaries(find_traces(folder)[0])
    pd.testing.assert_frame_equal(streamed[table.columns], table, check_dtype=False)
    got = table.loc["cnn"]
    assert (got["dead_units"], got["dead_neurons"]) == (1, "L3[channel 0]")
    # channel 0 is closed on every row (every pixel < 0), channel 1 on none
    assert got["gate_closed_steps"] == 6 and got["gate_closed_share"] == 1 / 2
    pixels = load_tensor(cnn.path, "o2")
    assert (pixels[:, 0] < 0).all() and not (pixels[:, 1] < 0).all(axis=(1, 2)).any()
    # after a normalization per channel: the ReLU on layer 3's output, two channels again
    gates = an.trace_gates(open_trace(normalized.path))
    assert [(g.layer, g.channels, len(g.inputs)) for g in gates] == [(4, 2, 32)]
    assert an.find_gates(df[df.run == "normalized"]) == gates


#: One 1 × 2 × 2 image through a 1 × 1 convolution, a ReLU and a linear layer.
TINY = {
    "layers": [
        {"type": "input", "shape": [1, 2, 2]},
        {"type": "conv2d", "out": 1, "kernel": 1, "weights": [[[["{w}"]]]], "biases": ["0"]},
        {"type": "relu"},
        {"type": "flatten"},
        {"type": "linear", "out": 1, "weights": [["1", "1", "1", "1"]], "biases": ["0"]},
    ],
    "loss": "squared_error",
}


def _tiny(folder, pixels: str, w: str, lr: str, epochs: int = 1):
    data = folder / f"tiny-{w}.csv"
    data.write_text(f"a,b,c,d,t\n{pixels},0\n{pixels},0\n")
    model = json.loads(json.dumps(TINY).replace("{w}", w))
    return record(data, lr=lr, model=model, target="t", numerics="float64", epochs=epochs,
                  out=folder / "tiny", name=f"w{w}")  # fmt: skip


def test_an_image_layers_output_is_watched_for_nan_and_inf(tmp_path):
    """A pixel of 1e308 times −2 is −inf in the convolution's output; the ReLU above turns it
    into 0, so the loss and every parameter stay finite: only o2 shows it."""
    run = _tiny(tmp_path, "1e308,0,0,0", "-2", "1/10")
    rows = load_trace(run.path)
    assert np.isneginf(rows.o2_1_1_1[0]) and np.isfinite(rows.loss).all()
    assert run.summary.diverged_at is None
    got = an.run_summary(rows.assign(run="tiny")).loc["tiny"]
    assert got["first_nonfinite_step"] == 0 and not got["diverged"]
    assert an.trace_summaries([open_trace(run.path)]).loc["w-2", "first_nonfinite_step"] == 0


def test_a_kernel_that_overflows_diverges_the_run_at_that_step(tmp_path):
    """Pixels of 1e200 and α = 1e120: the kernel's update overflows to −inf at step 0 while
    the loss is finite until step 2; the summary agrees with the recorder."""
    run = _tiny(tmp_path, "1e200,1e200,1e200,1e200", "1e-200", "1e120", epochs=2)
    rows = load_trace(run.path)
    assert np.isfinite(rows.loss[:2]).all() and np.isneginf(rows.w2_after_1_1_1_1[0])
    assert run.summary.diverged_at == 0
    got = an.run_summary(rows.assign(run="tiny")).loc["tiny"]
    assert (got["diverged_at"], got["diverged_why"]) == (0, "weights are not finite")
    streamed = an.trace_summaries([open_trace(run.path)]).loc["w1e-200"]
    assert streamed["diverged_at"] == 0
