"""verify: traces that follow the maths pass; any single changed value is found and located."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import steptrace
from steptrace import Dataset, TraceError, load_tensor, open_trace, verify
from steptrace.trace.rebuild import BEFORE_KEY

from .conftest import REPO

#: _run.json keys every copy of the metadata must agree on, and how to change each: a path into
#: the JSON (-1: the last item; LINEAR: the model's first linear layer).
LINEAR = "first linear layer"
META_KEYS = [
    ("run_id",), ("numerics",), ("lr",), ("lr_exact",), ("epochs",), ("batch_size",),
    ("shuffle",), ("seed",), ("model", "name"), ("model", "loss"), ("model", "layers", -1, "type"),
    ("model", "layers", LINEAR, "weights", 0, -1), ("model", "layers", LINEAR, "out"),
    ("tensors", 0, "name"), ("tensors", -1, "shape", 0), ("steps_per_epoch",), ("steps",),
    ("dataset", "name"), ("dataset", "sha256"), ("dataset", "rows"), ("dataset", "features", -1),
    ("dataset", "targets", -1),
    ("summary", "rows"), ("summary", "steps"), ("summary", "final_loss"), ("summary", "min_loss"),
    ("summary", "min_loss_step"), ("summary", "diverged_at"), ("summary", "diverged_why"),
]  # fmt: skip


def twin_pairs(run: dict) -> list[set[str]]:
    """Pairs of columns that only each other can tell apart when nothing else in the row depends
    on the difference (see steptrace.trace.verify's docstring): x_k and its copy o1_k,
    y_j and δ_j at the loss."""
    dataset = run["dataset"]
    loss = len(run["model"]["layers"]) + 1 if "model" in run else 4
    pairs = [{f"o1_{k}", f"x_{k}"} for k in range(1, dataset.n_features + 1)]
    pairs += [{f"d{loss}_{j}", f"y_{j}"} for j in range(1, len(dataset.targets) + 1)]
    return pairs + [{a + "_exact" for a in pair} for pair in pairs]


def changed(value):
    """A different value of the same kind: +1 for numbers and rationals' texts, a changed
    string, the last item of a list changed."""
    if isinstance(value, bool):
        return not value
    if value is None:
        return 7
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        if not math.isfinite(value):
            return 1.0
        return value + 1 if value + 1 != value else value * 2
    if isinstance(value, list):
        return [*value[:-1], changed(value[-1])]
    try:
        return str(Fraction(value) + 1)
    except (ValueError, ZeroDivisionError):
        return value + "x"


def flip(run: Path, row: int, column: str, part: str = "part-000000.parquet") -> None:
    """Change one cell of a one-part run (or of a part file), keeping the part's metadata; a
    value stored once in the part's footer (the parameters its first step starts from) is
    changed there."""
    part_path = run if run.is_file() else run / part
    table = pq.read_table(part_path)
    if column not in table.column_names:
        meta = dict(table.schema.metadata)
        entry = json.loads(meta[BEFORE_KEY.encode()])
        entry["values"][column] = changed(entry["values"][column])
        meta[BEFORE_KEY.encode()] = json.dumps(entry).encode()
        pq.write_table(table.replace_schema_metadata(meta), part_path)
        return
    values = table.column(column).to_pylist()
    values[row] = changed(values[row])
    i = table.schema.get_field_index(column)
    field = table.schema.field(column)
    pq.write_table(table.set_column(i, field, pa.array(values, type=field.type)), part_path)


def split(run: Path, sizes: list[int]) -> None:
    """Rewrite a one-part run as several parts of ``sizes`` rows (the last takes the rest)."""
    part = run / "part-000000.parquet"
    table = pq.read_table(part)
    part.unlink()
    start = 0
    for i, size in enumerate([*sizes, table.num_rows]):
        size = min(size, table.num_rows - start)
        if size <= 0:
            break
        pq.write_table(table.slice(start, size), run / f"part-{i:06d}.parquet")
        start += size


def resolve(info: dict, path: tuple) -> tuple:
    """``path`` with LINEAR and negative indices replaced by the positions they mean in ``info``."""
    out, holder = [], info
    for key in path:
        if key == LINEAR:
            key = next(i for i, layer in enumerate(holder) if layer["type"] == "linear")
        elif isinstance(key, int) and key < 0:
            key += len(holder)
        out.append(key)
        holder = holder[key]
    return tuple(out)


def json_path(path: tuple) -> str:
    """How verify names a metadata field: ``model.layers[1].weights[0][2]``."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")


def edit_run_json(run: Path, path: tuple, value=None) -> tuple:
    """Change one field of ``_run.json`` (by default to :func:`changed`); the path it had."""
    info = json.loads((run / "_run.json").read_text())
    path = resolve(info, path)
    holder = info
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = changed(holder[path[-1]]) if value is None else value
    (run / "_run.json").write_text(json.dumps(info))
    return path


def dataset_of(draw, features: int, targets: int, rows: int) -> Dataset:
    ints = st.integers(-4, 9)
    inputs = tuple(tuple(Fraction(draw(ints)) for _ in range(features)) for _ in range(rows))
    outputs = tuple(
        tuple(Fraction(draw(st.integers(0, 3))) for _ in range(targets)) for _ in range(rows)
    )
    return Dataset(
        "random", tuple(f"f{i}" for i in range(features)),
        tuple(f"t{j}" for j in range(targets)), inputs, outputs,
    )  # fmt: skip


@st.composite
def small_runs(draw):
    """Random small settings of the article's model: a dataset of 1-3 features and 1-5 rows,
    any number system."""
    k = draw(st.integers(1, 3))
    rows = draw(st.integers(1, 5))
    init = ",".join(str(Fraction(draw(st.integers(-8, 8)), 8)) for _ in range(k))
    return dict(
        dataset=dataset_of(draw, k, 1, rows),
        init=init,
        numerics=draw(st.sampled_from(["exact", "float64", "float32"])),
        lr=draw(st.sampled_from(["1", "1/8", "1e-3", "0.1"])),
        epochs=draw(st.integers(1, 3)),
        batch_size=draw(st.integers(1, rows)),
        shuffle=draw(st.booleans()),
        seed=draw(st.integers(0, 50)),
    )


#: Activations a random stack may use after a layer (logistic only in float runs).
ACTIVATIONS = ["relu", "leaky_relu", "heaviside", "identity", "logistic"]


@st.composite
def small_stacks(draw, n_in: int, n_out: int, exact: bool) -> dict:
    """A random model file: input, maybe an activation, then 1-3 linear layers (1-3 neurons,
    with or without bias, the last one n_out) each maybe followed by an activation."""
    eighths = st.integers(-8, 8).map(lambda k: str(Fraction(k, 8)))
    kinds = st.sampled_from([None, *(a for a in ACTIVATIONS if not exact or a != "logistic")])

    def activation() -> list[dict]:
        kind = draw(kinds)
        if kind == "leaky_relu":
            return [{"type": kind, "slope": draw(st.sampled_from(["1/100", "1/4"]))}]
        return [] if kind is None else [{"type": kind}]

    layers, width = [{"type": "input"}, *activation()], n_in
    blocks = draw(st.integers(1, 3))
    for i in range(blocks):
        out = n_out if i == blocks - 1 else draw(st.integers(1, 3))
        linear = {"type": "linear", "out": out, "bias": draw(st.booleans())}
        linear["weights"] = [[draw(eighths) for _ in range(width)] for _ in range(out)]
        if linear["bias"]:
            linear["biases"] = [draw(eighths) for _ in range(out)]
        layers += [linear, *activation()]
        width = out
    return {"layers": layers, "loss": "squared_error"}


@st.composite
def stack_runs(draw):
    """Random small settings of a random stack: 1-3 features, 1-2 targets, 1-4 rows."""
    k, targets, rows = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 4))
    numerics = draw(st.sampled_from(["exact", "float64", "float32"]))
    # A stack's exact rationals grow about (linear layers)-fold in size per step: at most 4
    # steps keep them far from the exact limit.
    epochs = st.integers(1, 4 // rows) if numerics == "exact" else st.integers(1, 2)
    return dict(
        dataset=dataset_of(draw, k, targets, rows),
        model=draw(small_stacks(k, targets, numerics == "exact")),
        numerics=numerics,
        lr=draw(st.sampled_from(["1/8", "1e-3", "0.1"])),
        epochs=draw(epochs),
        batch_size=draw(st.integers(1, rows)),
        shuffle=draw(st.booleans()),
        seed=draw(st.integers(0, 50)),
    )


any_runs = st.one_of(small_runs(), stack_runs())


def record_into(folder: Path, settings_: dict) -> Path:
    settings_ = dict(settings_)
    return steptrace.record(settings_.pop("dataset"), out=folder, name="run", **settings_).path


PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(run=any_runs, chunk=st.integers(1, 8), parts=st.lists(st.integers(1, 6), max_size=2))
def test_recorded_traces_verify_in_any_chunking_and_any_parts(run, chunk, parts):
    with tempfile.TemporaryDirectory() as tmp:
        path = record_into(Path(tmp), run)
        split(path, parts)
        with mock.patch("steptrace.trace.verify.chunks.CHUNK_ROWS", chunk):
            report = verify(path)
    assert report.ok, str(report)
    rows = len(run["dataset"]) * run["epochs"]
    assert report.rows == rows and report.status == "complete"
    assert (
        report.steps
        == report.run_steps
        == -(-len(run["dataset"]) // run["batch_size"]) * (run["epochs"])
    )


@PROPERTY
@given(run=any_runs, data=st.data())
def test_a_single_changed_value_is_found_and_located(run, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = record_into(Path(tmp), run)
        table = pq.read_table(path / "part-000000.parquet")
        row = data.draw(st.integers(0, table.num_rows - 1), label="row")
        column = data.draw(st.sampled_from(table.column_names), label="column")
        step, sample = table.column("step")[row].as_py(), table.column("sample")[row].as_py()
        flip(path, row, column)
        problem = verify(path).problem
    assert problem is not None, f"changing {column} of row {row} went unnoticed"
    assert (problem.row, problem.step, problem.sample) == (row, step, sample), str(problem)
    assert problem.file == "part-000000.parquet"
    if problem.columns != (column,):
        assert column in problem.columns and set(problem.columns) in twin_pairs(run), str(problem)


@PROPERTY
@given(run=any_runs, key=st.sampled_from(META_KEYS))
def test_a_changed_metadata_field_is_found_and_named(run, key):
    with tempfile.TemporaryDirectory() as tmp:
        path = record_into(Path(tmp), run)
        name = json_path(edit_run_json(path, key))
        problem = verify(path).problem
    assert problem is not None, f"changing {name} went unnoticed"
    assert (problem.file, problem.columns) == ("_run.json", (name,)), str(problem)


def test_x_and_its_copy_o1_are_told_apart_by_the_rest_of_the_row(traces):
    # Row 2 of the article: w_3 = 1/5800 ≠ 0, so x_3 changes o2 and the row says which is wrong.
    path = steptrace.record(out=traces, numerics="float64").path
    flip(path, 2, "x_3")
    problem = verify(path).problem
    assert problem.columns == ("x_3",)
    assert str(problem) == (
        "part-000000.parquet, step 2, sample 2, column x_3: recorded 3001.0, the rest of the row "
        "follows from x_3 = 3000.0"
    )


def test_when_nothing_else_depends_on_x_both_copies_are_named(tmp_path, traces):
    # w_2 = 0 and δ3 = 0 (loss 0): a changed x_2 changes nothing else in its row.
    data = tmp_path / "d.csv"
    data.write_text("a,b,t\n1,5,1\n")
    path = steptrace.record(data, out=traces, numerics="float64", init="1,0").path
    flip(path, 0, "x_2")
    problem = verify(path).problem
    assert problem.columns == ("o1_2", "x_2")
    assert "o1_2 = 5.0 and x_2 = 6.0 disagree, and nothing else in the row tells" in str(problem)


def test_every_row_follows_the_maths_of_the_article_in_every_number_system(traces):
    for numerics in ("exact", "float64", "float32"):
        report = verify(steptrace.record(out=traces, numerics=numerics).path)
        assert str(report) == (
            f"OK {traces}/seed-{numerics}-lr1: 3 steps, 3 rows, {numerics}, complete; every "
            "row follows from its inputs"
        )


def test_the_exact_text_is_checked_against_the_maths_and_the_float_against_its_text(traces):
    path = steptrace.record(out=traces).path
    work = traces / "text"
    shutil.copytree(path, work)
    flip(work, 2, "o2_1_exact")
    assert str(verify(work).problem) == (
        "part-000000.parquet, step 2, sample 2, column o2_1_exact: recorded 1, recomputed 0 "
        "(o2 = L2(o1) = w . o1)"
    )
    flip(path, 2, "o2_1")
    assert str(verify(path).problem) == (
        "part-000000.parquet, step 2, sample 2, column o2_1: recorded 1.0, its exact text 0 "
        "rounds to 0.0"
    )


def test_an_exact_text_must_be_a_rational_in_lowest_terms(traces):
    path = steptrace.record(out=traces).path
    part = path / "part-000000.parquet"
    table = pq.read_table(part)
    values = table.column("lr_exact").to_pylist()
    values[1] = "2/2"
    i = table.schema.get_field_index("lr_exact")
    pq.write_table(table.set_column(i, "lr_exact", pa.array(values)), part)
    problem = verify(path).problem
    assert (problem.step, problem.columns) == (1, ("lr_exact",))
    assert problem.message == "'2/2' is not written as '1'"


def test_a_diverged_run_is_data_and_verifies(tmp_path, traces):
    seesaw = tmp_path / "seesaw.csv"
    seesaw.write_text("a,t\n1,1\n-1,1\n")
    result = steptrace.record(
        seesaw, out=traces, numerics="float64", lr="10", init="2", epochs=400
    )  # fmt: skip
    assert result.summary.diverged_at is not None
    df = steptrace.load_trace(result.path)
    assert df["w2_after_1_1"].isna().any()  # inf - inf: NaN, recorded as such
    assert verify(result.path).ok
    last = len(df) - 1
    flip(result.path, last, "w2_after_1_1")  # NaN → 1.0
    problem = verify(result.path).problem
    assert (problem.row, problem.columns) == (last, ("w2_after_1_1",))
    assert "recorded 1.0, the step's update ŵ = w - α * Σ grad gives nan" in problem.message


def test_missing_rows_are_found_where_they_go_missing(traces):
    path = steptrace.record(out=traces, numerics="float64", epochs=4).path
    split(path, [3, 3, 3])
    (path / "part-000001.parquet").unlink()
    problem = verify(path).problem
    assert (problem.file, problem.row, problem.columns) == ("part-000002.parquet", 3, ("step",))
    assert problem.message == (
        "recorded 6, expected 3 (steps run 0, 1, 2 … each step's rows together)"
    )


def test_a_prefix_of_whole_steps_is_a_valid_incomplete_trace_but_not_a_complete_one(traces):
    path = steptrace.record(out=traces, numerics="float32", epochs=4, batch_size=2).path
    split(path, [6])
    (path / "part-000001.parquet").unlink()
    edit_run_json(path, ("status",), "incomplete")
    edit_run_json(path, ("summary",), {})
    report = verify(path)
    assert str(report) == (
        f"OK {path}: 4 of 8 steps, 6 rows, float32, incomplete; every row follows from its inputs"
    )
    edit_run_json(path, ("status",), "complete")
    assert str(verify(path).problem) == (
        "_run.json, column status: the run says complete, but holds 6 of its 12 rows"
    )


def test_a_trace_cut_inside_a_step_is_a_problem(traces):
    path = steptrace.record(out=traces, numerics="float64", epochs=2, batch_size=2).path
    split(path, [4])  # steps of 2, 1, 2, 1 rows: the 4th row is the first of step 2
    (path / "part-000001.parquet").unlink()
    edit_run_json(path, ("status",), "incomplete")
    problem = verify(path).problem
    assert str(problem) == (
        "part-000000.parquet, step 2, column step: the trace ends inside this step: 1 of its 2 rows"
    )


def test_a_footer_that_disagrees_with_the_others_is_named(traces):
    path = steptrace.record(out=traces, numerics="float64", epochs=3).path
    split(path, [3, 3])
    part = path / "part-000001.parquet"
    table = pq.read_table(part)
    meta = json.loads(table.schema.metadata[b"steptrace"])
    meta["lr"] = "2"
    pq.write_table(table.replace_schema_metadata({"steptrace": json.dumps(meta)}), part)
    assert str(verify(path).problem) == (
        "part-000001.parquet, column lr: says '2', but _run.json's copy of the metadata says '1'"
    )


def test_columns_must_be_the_trace_formats(traces):
    path = steptrace.record(out=traces, numerics="float64").path
    part = path / "part-000000.parquet"
    table = pq.read_table(part)
    pq.write_table(table.drop_columns(["d2_2"]), part)
    assert str(verify(path).problem) == "part-000000.parquet, column d2_2: column d2_2 is missing"


#: A two-layer network small enough to run by hand: input → linear(2, bias) → relu →
#: linear(1, bias), the loss is layer 5.
TWO_LAYER = {
    "layers": [
        {"type": "input"},
        {"type": "linear", "out": 2, "bias": True, "weights": [["1/2", "-1/4"], ["1", "1"]],
         "biases": ["0", "-1"]},
        {"type": "relu"},
        {"type": "linear", "out": 1, "bias": True, "weights": [["1", "1/2"]], "biases": ["1/4"]},
    ],
    "loss": "squared_error",
}  # fmt: skip

#: Row 0 of TWO_LAYER on x = (1, 2), y = 1, worked out by hand as the article works its rows.
BY_HAND = {
    "o2": ["0", "2"],  # (1/2 - 2/4 + 0, 1 + 2 - 1)
    "o3": ["0", "2"],  # ReLU: both gates open (ReLU'(0) = 1)
    "o4": ["5/4"],  # 0 + 2/2 + 1/4
    "loss": ["1/32"],  # (5/4 - 1)² / 2
    "d5": ["1/4"],  # 5/4 - 1
    "d4": ["1/4", "1/8"],  # δ5 · (1, 1/2)
    "d3": ["1/4", "1/8"],
    "d2": ["1/4", "1/16"],  # (1/4 · 1/2 + 1/8 · 1, 1/4 · -1/4 + 1/8 · 1)
    "grad_w4": ["0", "1/2"],  # δ5 · o3
    "grad_w2": ["1/4", "1/2", "1/8", "1/4"],  # δ3 ⊗ x
    "b2_after": ["-1/8", "-17/16"],  # b - 1/2 · δ3
}

#: One changed value of the hand-made run, and what verify says about it.
TWO_LAYER_CHANGES = [
    (0, "o3_2_exact", "recorded 3, recomputed 2 (o3 = L3(o2) = o2 if o2 >= 0 else 0)"),
    (0, "o4_1_exact", "recorded 9/4, recomputed 5/4 (o4 = L4(o3) = w . o3 + b)"),
    (0, "loss_exact", "recorded 33/32, recomputed 1/32 (this sample's loss 1/2 (o4 - y)^2)"),
    (0, "d5_1_exact", "recorded 5/4, recomputed 1/4 (δ5 = (o4 - y) / m, m the rows of this step)"),
    (0, "d4_2_exact", "recorded 9/8, recomputed 1/8 (δ4 = δ5 . w)"),
    (0, "d3_1_exact", "recorded 5/4, recomputed 1/4 (δ3 = δ4 if o2 >= 0 else 0)"),
    (0, "grad_w2_2_1_exact", "recorded 9/8, recomputed 1/8 (this sample's gradient δ3 * o1)"),
    (0, "x_2_exact", "recorded 3, the rest of the row follows from x_2 = 2"),
    (0, "y_1_exact", "recorded 2, but the row's loss and δ5 follow from y_1 = 1"),
    (0, "w2_before_1_2_exact", "recorded 3/4, the initial weight is -1/4"),
    (0, "b4_before_1_exact", "recorded 5/4, the initial bias is 1/4"),
    (0, "w4_after_1_2_exact", "recorded 5/4, the step's update ŵ = w - α * Σ grad gives 1/4"),
    (0, "b2_after_2_exact",
     "recorded -1/16, the step's update b̂ = b - α * Σ grad gives -17/16"),
    (1, "x_1_exact", "recorded 3, the rest of the row follows from x_1 = 2"),
    (0, "o2_1", "recorded 1.0, its exact text 0 rounds to 0.0"),
]  # fmt: skip


def test_a_hand_made_two_layer_exact_run_verifies_and_every_change_is_named(tmp_path, traces):
    data = tmp_path / "two.csv"
    data.write_text("a,b,t\n1,2,1\n2,0,0\n")
    path = steptrace.record(data, lr="1/2", model=TWO_LAYER, out=traces, name="two").path
    recorded = {
        name: [str(q) for q in np.ravel(load_tensor(path, name, exact=True)[0])] for name in BY_HAND
    }
    assert recorded == BY_HAND
    assert str(verify(path)) == (
        f"OK {path}: 2 steps, 2 rows, exact, complete; every row follows from its inputs"
    )
    for row, column, message in TWO_LAYER_CHANGES:
        work = traces / column
        shutil.copytree(path, work)
        flip(work, row, column)
        problem = verify(work).problem
        assert (problem.row, problem.step, problem.columns) == (row, row, (column,)), column
        assert problem.message == message
    # The parameters before step 1 are stored once, as step 0's after, and again in the
    # footer of a part that starts at step 1: each copy is checked against the other.
    work = traces / "parts"
    shutil.copytree(path, work)
    split(work, [1])
    assert verify(work).ok
    step0, first = (pq.read_table(work / f"part-00000{i}.parquet") for i in (0, 1))
    meta = dict(first.schema.metadata)
    names = json.loads(meta[BEFORE_KEY.encode()])["values"]  # the part it was cut from: step 0
    after = {c: step0.column(c.replace("_before", "_after"))[-1].as_py() for c in names}
    meta[BEFORE_KEY.encode()] = json.dumps({"step": 1, "values": after}).encode()
    pq.write_table(first.replace_schema_metadata(meta), work / "part-000001.parquet")
    assert verify(work).ok
    flip(work, 0, "b2_before_1_exact", part="part-000001.parquet")
    problem = verify(work).problem
    assert (problem.row, problem.step, problem.columns) == (1, 1, ("b2_before_1_exact",))
    assert problem.message == "recorded 7/8, the previous step ended at -1/8"


@pytest.mark.parametrize("numerics", ["float64", "exact"])
def test_a_target_and_the_delta_at_the_loss_only_each_other_tells_apart(tmp_path, traces, numerics):
    # Neuron 1's ReLU is closed (o2_1 = -1): δ4_1 = (0 - y_1) / 2 goes no further, and
    # y_1 = -1 gives the loss y_1 = 1 gives. Changed to 1/2, δ4_1 says y_1 = -1.
    data = tmp_path / "closed.csv"
    data.write_text("a,t1,t2\n1,1,1\n2,0,0\n")
    model = {"layers": [{"type": "input"},
                        {"type": "linear", "out": 2, "bias": False, "weights": [["-1"], ["1"]]},
                        {"type": "relu"}]}  # fmt: skip
    run = steptrace.record(
        data, model=model, target="t1,t2", numerics=numerics, batch_size=2, out=traces
    )  # fmt: skip
    flip(run.path, 0, "d4_1" if numerics == "float64" else "d4_1_exact")
    problem = verify(run.path).problem
    if numerics == "float64":
        assert str(problem) == (
            "part-000000.parquet, step 0, sample 0, column d4_1 or y_1: d4_1 = 0.5 and "
            "y_1 = 1.0 disagree, and nothing else in the row tells which one is wrong"
        )
    else:  # the float64 beside each exact text tells
        assert str(problem) == (
            "part-000000.parquet, step 0, sample 0, column d4_1_exact: recorded 1/2, its "
            "float64 column holds -0.5"
        )


GOLDENS = sorted((REPO / "traces" / "golden").glob("*.parquet"))


@pytest.mark.parametrize("golden", GOLDENS, ids=[g.stem for g in GOLDENS])
def test_every_version_1_golden_verifies(golden):
    assert open_trace(golden).v1
    report = verify(golden)
    assert report.ok, str(report)
    assert report.rows == report.steps == report.run_steps > 0


def test_the_verify_command_checks_every_trace_file_of_a_folder(run_cli):
    # A folder of loose trace files, not of run folders: each file is a run of its own.
    result = run_cli("verify", REPO / "traces" / "golden")
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.output.splitlines()] == [
        f"OK {golden}" for golden in GOLDENS
    ]


def test_a_version_1_trace_names_a_changed_value_as_its_file_does(tmp_path):
    part = tmp_path / "article.parquet"
    shutil.copy(REPO / "traces" / "golden" / "lr-sweep-lr1e-7.parquet", part)
    flip(part, 4, "w_before_2")
    problem = verify(part).problem
    assert (problem.row, problem.columns) == (4, ("w_before_2",))
    assert problem.message == (
        "recorded 0.999858730304, the previous step ended at -0.000141269696"
    )
    shutil.copy(REPO / "traces" / "golden" / "article-exact.parquet", part)
    flip(part, 2, "grad_3_exact")
    assert str(verify(part).problem) == (
        "article.parquet, step 2, sample 2, column grad_3_exact: recorded -2999, recomputed -3000 "
        "(this sample's gradient δ3 * o1)"
    )


def test_a_model_the_runs_numbers_cannot_compute_is_a_problem(traces):
    run = steptrace.record(
        numerics="float64", model=str(REPO / "examples" / "logistic.json"), seed=1, out=traces
    ).path
    edit_run_json(run, ("numerics",), "exact")
    part = run / "part-000000.parquet"
    table = pq.read_table(part)
    meta = json.loads(table.schema.metadata[b"steptrace"])
    meta["numerics"] = "exact"
    pq.write_table(table.replace_schema_metadata({"steptrace": json.dumps(meta)}), part)
    assert str(verify(run).problem) == (
        "_run.json, column model: layer 3 (logistic) is not rational: an exact run cannot "
        "compute it"
    )


def test_what_is_not_a_trace_is_an_error_not_a_problem(tmp_path):
    with pytest.raises(TraceError, match="no trace at"):
        verify(tmp_path / "missing")


def test_the_verify_command_exit_codes(traces, run_cli):
    good = steptrace.record(out=traces, numerics="float64").path
    bad = steptrace.record(out=traces, numerics="float64", name="bad").path
    flip(bad, 1, "loss")
    ok = run_cli("verify", good)
    assert (ok.exit_code, ok.output) == (
        0, f"OK {good}: 3 steps, 3 rows, float64, complete; every row follows from its inputs\n",
    )  # fmt: skip
    found = run_cli("verify", traces)
    assert found.exit_code == 1
    assert found.output.splitlines() == [
        f"PROBLEM {bad}: part-000000.parquet, step 1, sample 1, column loss: recorded 1.0, "
        "recomputed 0.0 (this sample's loss 1/2 (o3 - y)^2)",
        f"OK {good}: 3 steps, 3 rows, float64, complete; every row follows from its inputs",
    ]
    missing = run_cli("verify", traces / "nope")
    assert (missing.exit_code, missing.output) == (2, f"Error: no trace at '{traces}/nope'\n")


# --- the images chapters' layers ---------------------------------------------------------------

IMAGE_ROWS = [(*(int(v) for v in np.random.default_rng(r).integers(-2, 3, 18)), r % 2)
              for r in range(4)]  # fmt: skip
CONV_POOL = {"layers": [{"type": "input", "shape": [2, 3, 3]},
                        {"type": "conv2d", "out": 2, "kernel": 3, "bias": True},
                        {"type": "relu"}, {"type": "maxpool2d", "size": 1}, {"type": "flatten"},
                        {"type": "linear", "out": 1, "bias": True}]}  # fmt: skip
NORMALIZED = {"layers": [{"type": "input", "shape": [2, 3, 3]},
                         {"type": "conv2d", "out": 2, "kernel": 1, "bias": False},
                         {"type": "normalization"}, {"type": "flatten"},
                         {"type": "linear", "out": 1, "bias": True}]}  # fmt: skip


def image_run(folder: Path, model: dict, numerics: str, batch_size: int) -> Path:
    from .reference import dataset

    # Exact rationals of a convolution grow fast: one epoch stays within the exact limit.
    epochs = 1 if numerics == "exact" else 2
    run = steptrace.record(dataset(IMAGE_ROWS), lr="1/20", numerics=numerics, model=model,
                           out=folder, batch_size=batch_size, epochs=epochs, seed=2)  # fmt: skip
    return run.path


@pytest.mark.parametrize(("model", "numerics", "batch_size"), [
    (CONV_POOL, "exact", 1), (CONV_POOL, "float64", 2), (CONV_POOL, "float32", 1),
    (NORMALIZED, "float64", 2), (NORMALIZED, "float32", 3),
], ids=["conv-exact", "conv-float64", "conv-float32", "norm-float64", "norm-float32"])  # fmt: skip
def test_image_runs_verify_and_every_changed_value_is_found(tmp_path, model, numerics, batch_size):
    path = image_run(tmp_path, model, numerics, batch_size)
    report = verify(path)
    assert report.ok, str(report)
    table = pq.read_table(path / "part-000000.parquet")
    columns = [c for c in table.column_names if c[0] in "odgwb" and not c.endswith("_exact")]
    # A conv output, a δ map, a kernel's gradient and its weights after the update, a bias.
    picks = {c for c in columns if c.startswith(("o2_", "d3_", "grad_w2_", "w2_after_"))}
    for column in sorted(picks)[:: max(1, len(picks) // 12)]:
        for row in (0, table.num_rows - 1):
            broken = tmp_path / f"broken-{column}-{row}"
            shutil.copytree(path, broken)
            flip(broken, row, column)
            problem = verify(broken).problem
            assert problem is not None, f"changing {column} of row {row} went unnoticed"
            assert problem.row == row and column in problem.columns, str(problem)
