"""steptrace verify on PyTorch runs of any network: every layer steptrace knows recomputed from
its own recorded input and δ, the δ of a tensor that feeds several readers as the sum of what
they send back, the losses, the optimizers' updates and batch norm's statistics; what it could
not recompute is named; a changed value is found and named (a conv output, a dropout mask, an
Adam moment, a residual sum, a running mean, a momentum buffer, a δ, the step's gradient).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import steptrace

if os.environ.get("STEPTRACE_REQUIRE_TORCH") == "1":
    import torch
else:
    torch = pytest.importorskip("torch")

import steptrace.torch

from .torch_nets import NETS, train


def _record(traces, name: str, epochs: int = 2, make=None):
    net = (make or NETS[name])()
    with steptrace.torch.record(net.model, net.optimizer, out=traces, name=name) as rec:
        train(net, epochs=epochs, rec=rec)
    return rec.path


@pytest.mark.parametrize("name", ["residual", "twice", "zoo", "nesterov", "mlp"])
def test_every_value_of_a_network_steptrace_knows_is_recomputed(traces, name):
    _all_recomputed(_record(traces, name))


def test_every_value_of_the_issues_cnn_is_recomputed(traces, cnn_run):
    _all_recomputed(_record(traces, "cnn", epochs=1))  # 8 × 8 images, 8 channels
    _all_recomputed(cnn_run)  # the narrower one the tests below change


def _all_recomputed(run: Path) -> None:
    report = steptrace.verify(run)
    assert report.ok, str(report)
    assert report.unchecked == () and report.update_checked
    assert str(report).endswith(
        f"every row follows from its inputs within rtol 1e-09, atol 1e-12 (recorded with "
        f"pytorch {torch.__version__})"
    )


def test_a_float32_network_is_recomputed_within_float32s_tolerance(traces):
    def zoo32():
        net = NETS["zoo"]()
        net.model.float()
        net.x = net.x.float()
        net.y = net.y.float()
        net.optimizer = torch.optim.Adam(net.model.parameters(), lr=1e-2, amsgrad=True)
        return net

    run = _record(traces, "zoo32", make=zoo32)
    report = steptrace.verify(run)
    assert report.ok and "within rtol 1e-05, atol 1e-06" in str(report), str(report)


def test_what_cannot_be_recomputed_is_named_and_the_rest_checked(traces):
    run = _record(traces, "custom")
    report = steptrace.verify(run)
    assert report.ok, str(report)
    assert report.unchecked == (
        "layer 4 (body.2: Scale)", "i7 (a function of o6)", "the loss (the loop's own)",
        "each row's gradients of p4_scale, p_gate (the step's only)",
        "δ d4, d_o6, d9 (read by what is not recomputed)",
    )  # fmt: skip
    assert not report.update_checked  # Adagrad
    assert str(report).endswith(
        "; the optimizer's own update is taken as recorded, not checked; not recomputed: "
        "layer 4 (body.2: Scale), i7 (a function of o6), the loss (the loop's own), each row's "
        "gradients of p4_scale, p_gate (the step's only), δ d4, d_o6, d9 (read by what is not "
        "recomputed)"
    )
    # What is known is checked all the same: layer 5 reads the unknown module's output.
    _change(run, "o5", lambda t: _first(t, "o5", 1.5))
    assert steptrace.verify(run).problem.column == "o5_1"


# --- a changed value is found and named ------------------------------------------------------


def _parts(run: Path) -> list[Path]:
    return sorted(run.glob("part-*.parquet"))


def _change(run: Path, tensor: str, edit) -> None:
    """Change values of ``tensor``'s columns: ``edit(table)`` (the run's rows) returns
    {column: (row, new value)}; each is written into the part that holds its row."""
    parts = _parts(run)
    tables = [pq.read_table(part) for part in parts]
    firsts = np.cumsum([0] + [t.num_rows for t in tables])
    for column, (row, value) in edit(pa.concat_tables(tables)).items():
        i = int(np.searchsorted(firsts, row, side="right")) - 1
        table = tables[i]
        values = table.column(column).to_numpy().copy()
        values[row - firsts[i]] = value
        index = table.schema.get_field_index(column)
        tables[i] = table.set_column(index, table.schema.field(index), pa.array(values))
        pq.write_table(tables[i], parts[i])


def _step(run: Path, tensor: str, rows: range, factor: float) -> None:
    """The same value of ``tensor`` changed on every row of a step (``rows``)."""
    for row in rows:
        _change(run, tensor, lambda t, r=row: _first(t, tensor, factor, row=r))


def _first(table, tensor: str, factor: float, row: int = 0, where=None):
    """The first column of ``tensor`` whose value on ``row`` is not 0 (and ``where`` holds),
    times ``factor``."""
    for name in table.column_names:
        if name.startswith(tensor + "_") and name[len(tensor) + 1].isdigit():
            value = table.column(name)[row].as_py()
            if value != 0 and (where is None or where(table, name, row)):
                return {name: (row, value * factor)}
    raise AssertionError(f"no such value of {tensor}")


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    """The issue's CNN, narrower, recorded once (Adam, cross-entropy, batch norm, dropout)."""
    folder = tmp_path_factory.mktemp("cnn")
    return _record(folder, "small-cnn", epochs=1)


def _changed(cnn_run: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "cnn"
    shutil.copytree(cnn_run, copy)
    return copy


def test_a_changed_conv_output_is_named(cnn_run, tmp_path):
    run = _changed(cnn_run, tmp_path)
    _change(run, "o2", lambda t: _first(t, "o2", 1 + 1e-6, row=5))
    report = steptrace.verify(run)
    problem = report.problem
    assert not report.ok and problem.column.startswith("o2_") and problem.row == 5
    assert problem.step == 1 and "recomputed" in problem.message, str(report)


def test_a_changed_dropout_mask_is_named(cnn_run, tmp_path):
    run = _changed(cnn_run, tmp_path)

    def kept_and_not_zero(table, name, row):  # a value the dropout kept, of an input not 0
        o5 = "o5" + name.removeprefix("mask6")
        return table.column(o5)[row].as_py() != 0

    def dropped(table):  # the mask of a value kept, now dropped
        return {
            c: (r, 0.0) for c, (r, _) in _first(table, "mask6", 1, 2, kept_and_not_zero).items()
        }

    _change(run, "mask6", dropped)
    problem = steptrace.verify(run).problem
    assert problem is not None and problem.column.startswith("mask6_") and problem.row == 2
    assert problem.message.startswith("recorded 0.0, o6 (its input not 0) says 1.0")


def test_a_changed_adam_moment_is_named(cnn_run, tmp_path):
    run = _changed(cnn_run, tmp_path)
    _change(run, "exp_avg_w8_after", lambda t: _first(t, "exp_avg_w8_after", 1.01, row=5))
    problem = steptrace.verify(run).problem  # one row of step 1 (rows 4 to 7) disagrees
    assert problem is not None and problem.column.startswith("exp_avg_w8_after_")
    assert problem.row == 5 and "the step's other rows hold" in problem.message
    for rows in (range(4, 5), range(6, 8)):  # the rest of the step: its update disagrees
        _step(run, "exp_avg_w8_after", rows, 1.01)
    problem = steptrace.verify(run).problem
    assert problem is not None and problem.column.startswith("exp_avg_w8_after_")
    assert (problem.step, problem.row) == (1, 4) and "adam's update gives" in problem.message


def test_a_changed_running_mean_is_named(cnn_run, tmp_path):
    run = _changed(cnn_run, tmp_path)
    _step(run, "running_mean3_after", range(4), 2.0)
    problem = steptrace.verify(run).problem
    assert problem is not None and problem.column == "running_mean3_after_1"
    assert "the step's rows give" in problem.message


@pytest.mark.parametrize(
    ("name", "tensor", "row", "column", "why"),
    [
        ("residual", "i8", 1, "i8_", "add(o7, o2) gives"),
        ("residual", "d3", 1, "d3_", "its readers send back"),
        ("nesterov", "momentum_buffer_w2_after", 4, "momentum_buffer_w2_after_",
         "sgd's update gives"),
        ("twice", "step_grad_w3", 0, "step_grad_w3_", "its rows' gradients add up to"),
        ("zoo", "grad_w6", 1, "grad_w6_", "recomputed"),
        ("twice", "loss", 2, "loss", "the squared_error loss is"),  # mse of 2 outputs
    ],
)  # fmt: skip
def test_a_changed_value_is_found_where_it_was_changed(traces, name, tensor, row, column, why):
    run = _record(traces, name, epochs=1)
    if tensor == "loss":
        _change(run, tensor, lambda t: {"loss": (row, t.column("loss")[row].as_py() * 1.01)})
    elif tensor.endswith("_after"):  # a step's value: on each of its rows
        _step(run, tensor, range(row, row + 4), 1.01)
    else:
        _change(run, tensor, lambda t: _first(t, tensor, 1.01, row=row))
    report = steptrace.verify(run)
    problem = report.problem
    assert problem is not None and problem.column.startswith(column), str(report)
    assert problem.row == row and why in problem.message, str(report)


def test_a_learning_rate_that_changes_inside_a_step_is_named(traces):
    run = _record(traces, "twice", epochs=1)
    assert steptrace.verify(run).ok
    _change(run, "lr", lambda t: {"lr": (5, 0.5)})
    problem = steptrace.verify(run).problem
    assert problem is not None and problem.column == "lr" and problem.row == 5
    assert "(one learning rate a step)" in problem.message
