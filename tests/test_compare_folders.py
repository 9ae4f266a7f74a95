"""Two folders of runs compared run by run: ``steptrace diff SWEEP_A SWEEP_B``."""

import json
import shutil
from pathlib import Path

import pytest

import steptrace
from steptrace import TraceError
from steptrace.compare.folders import compare_folders
from steptrace.trace.loader import is_folder_of_runs

from .conftest import REPO

MOVING = dict(numerics="float64", epochs=2, name="sweep")


def sweep(out: Path, lrs=("1e-9", "1e-8", "1e-7"), init="0.005,-0.0002,0.0002") -> Path:
    steptrace.sweep(list(lrs), init=init, out=out, **MOVING)
    return out


def test_the_same_sweep_twice_is_identical(run_cli, tmp_path):
    a, b = sweep(tmp_path / "a"), sweep(tmp_path / "b")
    result = run_cli("diff", a, b)
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "Folders are identical: 3 of 3 runs identical.",
        f"A: {a}",
        f"B: {b}",
        "  sweep-lr1e-7  identical",
        "  sweep-lr1e-8  identical",
        "  sweep-lr1e-9  identical",
    ]


def test_runs_are_paired_by_name_and_each_says_where_it_departs(run_cli, tmp_path):
    a = sweep(tmp_path / "a", ("1e-9", "1e-8", "1e-7"))
    b = sweep(tmp_path / "b", ("1e-9", "1e-8", "1e-6"))
    shutil.rmtree(b / "sweep-lr1e-8")
    moved = {**MOVING, "name": "sweep-lr1e-8"}
    steptrace.record("seed", lr="1e-8", init="0.005,-0.0002,0.0003", out=b, **moved)
    result = run_cli("diff", a, b)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[:7] == [
        "Folders differ: 1 of 2 runs identical, 1 in A only, 1 in B only.",
        f"A: {a}",
        f"B: {b}",
        "  sweep-lr1e-8  differs at step 0, sample 0, column w2_before_1_3 (layer 2's weight "
        "W[1,3] before the update): A 0.0002, B 0.0003 (B - A = 9.999999999999996e-05)",
        "  sweep-lr1e-9  identical",
        "  sweep-lr1e-7  in A only",
        "  sweep-lr1e-6  in B only",
    ]
    assert lines[8:10] == ["--- sweep-lr1e-8", "Traces differ."]
    assert (
        "  model.layers[2].weights: A [['1/200', '-1/5000', '1/5000']], "
        "B [['1/200', '-1/5000', '3/10000']]"
    ) in lines
    # the options apply to every pair
    assert run_cli("diff", a, b, "--columns", "x,y").output.splitlines()[0] == (
        "Folders differ: 1 of 2 runs identical, 1 in A only, 1 in B only."
    )
    assert (
        compare_folders(a, b, columns=["x", "y"], ignore=["model.layers[2]"])
        .runs["sweep-lr1e-8"]
        .identical
    )


def test_a_folder_of_goldens_pairs_with_a_folder_of_runs(run_cli, tmp_path):
    runs = sweep(tmp_path / "runs")
    goldens = tmp_path / "goldens"
    goldens.mkdir()
    for run in runs.iterdir():
        shutil.copy(run / "part-000000.parquet", goldens / f"{run.name}.parquet")
    result = compare_folders(goldens, runs)
    assert result.identical and sorted(result.runs) == [
        "sweep-lr1e-7",
        "sweep-lr1e-8",
        "sweep-lr1e-9",
    ]


def test_json_has_every_pair(run_cli, tmp_path):
    a = sweep(tmp_path / "a", ("1e-9", "1e-8"))
    b = sweep(tmp_path / "b", ("1e-9", "1e-7"))
    data = json.loads(run_cli("diff", a, b, "--json").output)
    assert (data["identical"], data["only_a"], data["only_b"]) == (
        False, ["sweep-lr1e-8"], ["sweep-lr1e-7"],
    )  # fmt: skip
    assert data["runs"]["sweep-lr1e-9"]["identical"] is True
    assert data["runs"]["sweep-lr1e-9"]["rows_compared"] == 6


def test_a_broken_run_in_either_folder_is_an_error(run_cli, tmp_path):
    a, b = sweep(tmp_path / "a"), sweep(tmp_path / "b")
    (b / "sweep-lr1e-8" / "part-000000.parquet").write_bytes(b"not parquet")
    result = run_cli("diff", a, b)
    assert result.exit_code == 2
    part = b / "sweep-lr1e-8" / "part-000000.parquet"
    assert result.output.startswith(f"Error: {part}: unreadable part file (")
    assert result.output.count("\n") == 1
    empty_a, empty_b = tmp_path / "ea", tmp_path / "eb"
    empty_a.mkdir(), empty_b.mkdir()
    with pytest.raises(TraceError, match="no runs in"):
        compare_folders(empty_a, empty_b)


def test_what_counts_as_a_folder_of_runs(tmp_path):
    runs = sweep(tmp_path / "runs")
    one = runs / "sweep-lr1e-9"
    assert is_folder_of_runs(runs)
    assert not is_folder_of_runs(one)  # a run's own folder
    assert not is_folder_of_runs(one / "part-000000.parquet")
    (one / "_run.json").unlink()  # parts copied without their metadata are still one run
    assert not is_folder_of_runs(one)


def test_two_sweeps_of_a_two_layer_network_name_the_weight_that_differs(run_cli, tmp_path):
    model = json.loads((REPO / "examples" / "two-layer.json").read_text())
    stacked = dict(numerics="float64", epochs=2, name="net")
    a, b = tmp_path / "a", tmp_path / "b"
    steptrace.sweep(["1/10", "1/100"], model=model, out=a, **stacked)
    model["layers"][3]["weights"] = [["1/2", "-1/4"]]
    steptrace.sweep(["1/10", "1/100"], model=model, out=b, **stacked)
    result = run_cli("diff", a, b, "--rtol", "1e-12")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[3:5] == [
        f"  {run}  differs at step 0, sample 0, column w4_before_1_2 (layer 4's weight W[1,2] "
        "before the update): A -0.3333333333333333, B -0.25 (B - A = 0.08333333333333331)"
        for run in ("net-lr1_10 ", "net-lr1_100")
    ]
    assert "  model.layers[4].weights: A [['1/2', '-1/3']], B [['1/2', '-1/4']]" in lines
    # layer 2's weights move only once layer 4's δ has come back through it
    only_layer_2 = compare_folders(a, b, columns=["w2_before"], ignore=["model"])
    for c in only_layer_2.runs.values():
        assert c.first.column.startswith("w2_before_") and c.first.step >= 1


def test_version_1_goldens_pair_with_fresh_version_2_runs(run_cli, tmp_path):
    goldens, runs = tmp_path / "goldens", tmp_path / "runs"
    goldens.mkdir()
    for numerics in ("exact", "float64", "float32"):
        name = f"article-{numerics}"
        shutil.copy(REPO / "traces" / "golden" / f"{name}.parquet", goldens)
        steptrace.record("seed", lr="1", numerics=numerics, out=runs, name=name)
    assert all(steptrace.open_trace(p).v1 for p in goldens.iterdir())
    result = run_cli("diff", goldens, runs, "--columns", "loss,w_after")
    assert result.exit_code == 0
    assert result.output.splitlines()[0] == "Folders are identical: 3 of 3 runs identical."
    assert compare_folders(goldens, runs).identical
