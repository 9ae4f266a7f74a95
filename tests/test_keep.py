"""Choosing what is recorded (trace/keep.py): steps, tensors and layers, the same way in
``steptrace.record``, ``steptrace record``, ``steptrace.open_run`` and ``steptrace.torch.record``.
A sampled run holds the full run's values at its steps, and the full run's per-step figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import steptrace
from steptrace.trace.keep import Selection, parse_steps

from .test_open_run import MLP, NUMPY, loop, seed_arrays

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

ALL = {"numerics": "float64", "model": MLP, "epochs": 4, "batch_size": 2, "lr": "0.1"}


def held_steps(run) -> list[int]:
    trace = steptrace.open_trace(run.path)
    return sorted(set(trace.read_table(["step"]).column("step").to_pylist()))


def assert_same_at_held_steps(sampled, full, tensors=None, exact=False) -> None:
    """Every tensor of ``sampled`` equals ``full``'s on the steps ``sampled`` holds."""
    trace = steptrace.open_trace(sampled.path)
    steps = trace.read_table(["step"]).column("step").to_numpy()
    full_steps = steptrace.open_trace(full.path).read_table(["step"]).column("step").to_numpy()
    names = tensors or [t.name for t in trace.tensors]
    for name in names:
        ours = steptrace.load_tensor(sampled.path, name, exact=exact)
        theirs = steptrace.load_tensor(full.path, name, exact=exact)[np.isin(full_steps, steps)]
        if exact:
            assert (ours == theirs).all(), name
        else:
            np.testing.assert_array_equal(ours, theirs, err_msg=name)


# --- the selection, checked -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 0}, "every 0: record every N-th step with N a whole number ≥ 1"),
        ({"every": -3}, "every -3"),
        ({"every": True}, "every True"),
        ({"steps": "5-x"}, "'5-x' is not a step or a range of steps"),
        ({"steps": "9-3"}, "the range 9-3 ends before it starts"),
        ({"steps": ""}, "is not a step or a range"),
        ({"tensors": []}, "name at least one tensor"),
        ({"layers": [0]}, "give layer numbers from 1"),
    ],
)
def test_a_malformed_selection_is_refused_in_one_line(kwargs, message, traces):
    with pytest.raises(steptrace.ConfigError, match=message) as info:
        steptrace.record("seed", out=traces, **kwargs)
    assert "\n" not in str(info.value)
    assert not traces.exists() or not list(traces.iterdir())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tensors": ["q*"]}, "'q\\*' matches no tensor of this run"),
        ({"tensors": ["loss", "w9*"]}, "'w9\\*' matches no tensor"),
        ({"layers": [9]}, "the model has no layer 9"),
    ],
)
def test_a_selection_of_nothing_writes_nothing(kwargs, message, traces):
    with pytest.raises(steptrace.ConfigError, match=message):
        steptrace.record("seed", out=traces, **kwargs)
    assert not traces.exists() or not list(traces.iterdir())
    with pytest.raises(steptrace.ConfigError, match=message):
        steptrace.open_run(traces, "np", model=MLP, lr="0.1", **kwargs)
    assert not traces.exists() or not list(traces.iterdir())


def test_ranges_and_every_hold_their_steps():
    assert parse_steps("1000-1099, 0-99,7") == ((0, 99), (7, 7), (1000, 1099))
    both = Selection.of(every=10, steps="3-4")
    assert list(np.flatnonzero(both.holds(np.arange(25)))) == [0, 3, 4, 10, 20]
    assert both.describe() == "every 10th step and steps 3-4"
    assert Selection.of(every=100).describe() == "every 100th step"
    assert Selection.of(every=1).holds(np.arange(3)).all() and not Selection.of(every=1).gaps


def test_the_cli_refuses_a_bad_selection_in_one_line_and_writes_nothing(run_cli, tmp_path):
    for args, message in [
        (["--every", "0"], "Error: every 0: record every N-th step"),
        (["--steps", "1-2-3"], "Error: steps '1-2-3'"),
        (["--tensors", "nothing*"], "Error: tensors: 'nothing*' matches no tensor"),
        (["--layers", "two"], "Error: --layers 'two': give layer numbers"),
        (["--every", "2", "--lr", "1", "--lr", "2"], "Error: --every, --steps, --tensors, --"),
    ]:
        result = run_cli("record", "--out", str(tmp_path / "t"), *args)
        assert result.exit_code != 0
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), result.output
        assert not (tmp_path / "t").exists() or not list((tmp_path / "t").iterdir())


# --- steptrace's own recorder -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"every": 3}, {"steps": "1-2,6"}, {"every": 5, "steps": "2"}],
)
def test_a_sampled_stack_run_holds_the_full_runs_values_at_its_steps(traces, kwargs):
    full = steptrace.record("seed", out=traces, name="full", **ALL)
    sampled = steptrace.record("seed", out=traces, name="sampled", **ALL, **kwargs)
    expected = np.flatnonzero(Selection.of(**kwargs).holds(np.arange(8)))
    assert held_steps(sampled) == list(expected)
    assert_same_at_held_steps(sampled, full)
    # The parameters before each held step are stored, not left to the step before.
    meta = steptrace.open_trace(sampled.path).meta
    assert all("same_as" not in t or not t.get("previous_step") for t in meta["tensors"])
    assert meta["record"] == Selection.of(**kwargs).as_json()
    # The per-step figures are the full run's, every step of them; so is the summary.
    pd.testing.assert_frame_equal(steptrace.load_scalars(sampled), steptrace.load_scalars(full))
    assert sampled.summary == full.summary


def test_the_articles_exact_run_sampled_keeps_exact_values(traces):
    full = steptrace.record("seed", lr="1", epochs=3, out=traces, name="full")
    sampled = steptrace.record("seed", lr="1", epochs=3, out=traces, name="s", every=4,
                               tensors=["loss", "w*", "o*"])  # fmt: skip
    assert held_steps(sampled) == [0, 4, 8]
    names = [t.name for t in steptrace.open_trace(sampled.path).tensors]
    assert names == ["o1", "o2", "o3", "loss", "w2_before", "w2_after"]
    assert_same_at_held_steps(sampled, full, exact=True)


def test_tensors_and_layers_keep_their_values_whole(traces):
    full = steptrace.record("seed", out=traces, name="full", **ALL)
    layer = steptrace.record("seed", out=traces, name="l", layers=[4], **ALL)
    names = [t.name for t in steptrace.open_trace(layer.path).tensors]
    assert names == ["lr", "x", "y", "o4", "loss", "d4", "grad_w4", "w4_before", "w4_after",
                     "grad_b4", "b4_before", "b4_after"]  # fmt: skip
    assert_same_at_held_steps(layer, full)
    # grad_b4 is δ5, not kept: stored in full. w4_before leans on w4_after, kept: once.
    tensors = {t.name: t for t in steptrace.open_trace(layer.path).tensors}
    assert tensors["grad_b4"].stored and tensors["w4_before"].same_as == "w4_after"
    glob = steptrace.record("seed", out=traces, name="g", tensors=["grad_*"], **ALL)
    assert [t.name for t in steptrace.open_trace(glob.path).tensors] == [
        "grad_w2", "grad_b2", "grad_w4", "grad_b4"]  # fmt: skip
    assert_same_at_held_steps(glob, full)


def test_the_cli_records_a_selection(run_cli, tmp_path):
    out = tmp_path / "t"
    result = run_cli("record", "--numerics", "float64", "--lr", "1e-7", "--epochs", "10",
                     "--every", "10", "--tensors", "loss,w*", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    run = out / "seed-float64-lr1e-7"
    info = json.loads((run / "_run.json").read_text())
    assert info["record"] == {"every": 10, "tensors": ["loss", "w*"]}
    assert sorted(set(steptrace.load_trace(run)["step"])) == [0, 10, 20]
    assert len(steptrace.load_scalars(run)) == 30


def test_a_run_of_a_selection_is_not_resumed(traces):
    run = steptrace.record("seed", out=traces, every=2, **ALL)
    info = json.loads((run.path / "_run.json").read_text())
    info["status"] = "incomplete"
    (run.path / "_run.json").write_text(json.dumps(info))
    with pytest.raises(steptrace.ConfigError, match="records a selection"):
        steptrace.resume(run.path)


# --- open_run -----------------------------------------------------------------------------------


@pytest.mark.parametrize("declared", [True, False])
def test_an_open_run_keeps_its_selection(traces, declared):
    X, Y = seed_arrays()
    plan = {"dataset": steptrace.seed_dataset(), "epochs": 4, "batch_size": 1} if declared else {}
    opened = {"model": MLP, "lr": "1e-7", "recorded_with": NUMPY, **plan}
    with steptrace.open_run(traces, "full", **opened) as full:
        loop(full, [[0, 1, 2]] * 4, X, Y)
    with steptrace.open_run(traces, "s", steps="2-5", layers=[2], **opened) as sampled:
        loop(sampled, [[0, 1, 2]] * 4, X, Y)
    assert held_steps(sampled) == [2, 3, 4, 5]
    assert_same_at_held_steps(sampled, full)
    assert sampled.summary == full.summary
    assert "o4" not in [t.name for t in steptrace.open_trace(sampled.path).tensors]
    pd.testing.assert_frame_equal(steptrace.load_scalars(sampled.path),
                                  steptrace.load_scalars(full.path))  # fmt: skip


@pytest.mark.parametrize("keep", [{"steps": "1-3"}, {"keep_last": 2}, {}])
def test_a_step_the_run_may_hold_is_refused_by_its_figures_alone(traces, keep):
    X, Y = seed_arrays()
    with steptrace.open_run(traces, "f", model=MLP, lr="1e-7", recorded_with=NUMPY, **keep) as run:
        loop(run, [[0]], X, Y)  # step 0
        rows = {"x": X[[1]], "y": Y[[1]], "loss": np.zeros((1, 1))}
        with pytest.raises(steptrace.ConfigError, match="needs its values"):
            run.write_figures({}, [1], rows, np.zeros(1, bool), [1e-7])  # step 1
    assert run.steps == 1


# --- PyTorch ------------------------------------------------------------------------------------


def torch_loop(out, name, steps=6, **keep):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    X = torch.randn(12, 3, dtype=torch.float64)
    Y = torch.randn(12, 1, dtype=torch.float64)
    with steptrace.torch.record(model, opt, out=out, name=name, **keep) as rec:
        for s in range(steps):
            x, y = X[2 * s : 2 * s + 2], Y[2 * s : 2 * s + 2]
            opt.zero_grad()
            per_sample = ((model(x) - y) ** 2).sum(dim=1) / 2
            per_sample.mean().backward()
            rec.step(x, y, per_sample)
            opt.step()
    return rec


def test_a_pytorch_loop_keeps_its_selection(traces):
    full = torch_loop(traces, "full")
    sampled = torch_loop(traces, "s", every=2, tensors=["loss", "o*", "w*", "grad_w*"])
    assert held_steps(sampled) == [0, 2, 4]
    assert_same_at_held_steps(sampled, full)
    pd.testing.assert_frame_equal(steptrace.load_scalars(sampled.path),
                                  steptrace.load_scalars(full.path))  # fmt: skip
    with pytest.raises(steptrace.ConfigError, match="every 0"):
        torch_loop(traces, "bad", every=0)
    with pytest.raises(steptrace.ConfigError, match="matches no tensor"):
        torch_loop(traces, "none", tensors=["nothing"])
    assert not (traces / "none").exists() and not (traces / "bad").exists()


@pytest.mark.parametrize("kept", [[0, 1, 2, 3, 4], [2, 3]], ids=["whole", "some"])
def test_a_buffers_kept_rows_are_a_block_of_its_matrix_equal_to_the_columns_kept_one_by_one(kept):
    """keep_rows of a buffer's block takes the kept rows of its matrix at once and gives a
    block of them (the writer makes their Parquet columns at once): the same values as
    column by column, a tensor left out left out."""
    from steptrace.numerics import get_numerics
    from steptrace.trace.keep import keep_rows
    from steptrace.trace.run_buffer import Block, RowBuffer
    from steptrace.trace.schema import Tensor

    tensors = [Tensor("x", (2,), data=True), Tensor("o1", (3,)), Tensor("loss", ())]
    steps = np.array([0, 0, 1, 1, 2])
    values = np.arange(30, dtype=np.float64).reshape(5, 6)
    buffer = RowBuffer(tensors, 5)
    arrays = {"x": values[:, :2], "o1": values[:, 2:5], "loss": values[:, 5:]}
    buffer.put(steps, steps * 0, np.arange(5), arrays, get_numerics("float64"))
    block = buffer.block()
    holds = np.isin(np.arange(5), kept)
    stored = [tensors[0], tensors[2]]  # o1 left out
    got = keep_rows(block, holds, stored, tensors, False)
    assert isinstance(got, Block)
    plain = keep_rows(dict(block), holds, stored, tensors, False)
    assert not isinstance(plain, Block) and set(got) == set(plain) == {
        "step", "epoch", "sample", "x_1", "x_2", "loss"}  # fmt: skip
    for name in plain:
        np.testing.assert_array_equal(got[name], plain[name], err_msg=name)
        if name not in ("step", "epoch", "sample"):
            np.testing.assert_array_equal(got.matrix[got.row_of[name]], plain[name])
    np.testing.assert_array_equal(got["loss"], values[kept, 5])
