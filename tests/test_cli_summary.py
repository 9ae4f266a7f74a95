"""``steptrace summary``: the per-run table as text, CSV and JSON; bad runs skipped, not fatal."""

import io
import json
import math
import shutil

import pandas as pd
import pytest

from steptrace import load_trace, open_trace, record, sweep

from .conftest import REPO
from .image_runs import record_images


@pytest.fixture
def sweep_folder(traces):
    sweep(["1", "1e-7"], out=traces, epochs=20, numerics="exact")
    sweep(["1e-7"], out=traces, epochs=20, numerics="float64")
    return traces


def test_the_table_has_one_line_per_run_and_says_what_became_of_it(run_cli, sweep_folder):
    result = run_cli("summary", sweep_folder)
    assert result.exit_code == 0
    header, *lines = result.output.splitlines()
    assert header.split()[:4] == ["run", "numerics", "lr", "batch"]
    assert "diverged at" in header and "converged" in header and "gate closed" in header
    assert header.split()[-6:] == ["gate", "closed", "dead", "diverged", "at", "converged"]
    cells = {line.split()[0]: line.split() for line in lines}
    assert sorted(cells) == ["seed-exact-lr1", "seed-exact-lr1e-7", "seed-float64-lr1e-7"]
    # run numerics lr batch steps final min at-step first-NaN gate dead diverged-at converged
    # α = 1 throws the weights negative at step 3: the ReLU stays closed from then on, dead
    assert cells["seed-exact-lr1"][-4:] == ["56", "1", "3", "no"]
    assert cells["seed-exact-lr1e-7"][-4:] == ["0", "0", "-", "yes"]
    # float64: the gate is closed for samples 0 and 2 every epoch, open for sample 1
    assert cells["seed-float64-lr1e-7"][-4:] == ["40", "0", "-", "no"]
    assert cells["seed-float64-lr1e-7"][5] == "0.5"


def test_csv_has_every_column_and_reads_back_into_pandas(run_cli, sweep_folder):
    result = run_cli("summary", sweep_folder, "--csv")
    assert result.exit_code == 0
    table = pd.read_csv(io.StringIO(result.output), index_col="run")
    assert table.loc["seed-exact-lr1", "diverged_why"] == "loss over 1e+06× the first epoch's"
    assert table.loc["seed-exact-lr1e-7", "converged"]
    assert table.loc["seed-float64-lr1e-7", "first_epoch_loss"] == pytest.approx(1 / 6)
    assert pd.isna(table.loc["seed-exact-lr1e-7", "diverged_at"])


def test_json_is_a_list_of_runs_with_nulls_for_missing_values(run_cli, sweep_folder):
    result = run_cli("summary", sweep_folder, "--json")
    assert result.exit_code == 0
    runs = {r["run"]: r for r in json.loads(result.output)}
    assert runs["seed-exact-lr1"]["diverged_at"] == 3 and runs["seed-exact-lr1"]["diverged"]
    assert runs["seed-exact-lr1e-7"]["diverged_at"] is None
    assert runs["seed-exact-lr1e-7"]["first_nonfinite_step"] is None
    assert runs["seed-float64-lr1e-7"]["gate_closed_steps"] == 40
    assert runs["seed-float64-lr1e-7"]["gate_closed_share"] == pytest.approx(2 / 3)
    assert runs["seed-float64-lr1e-7"]["dead_units"] == 0
    assert runs["seed-float64-lr1e-7"]["dead_neurons"] == ""
    assert runs["seed-exact-lr1"]["dead_units"] == 1
    assert runs["seed-exact-lr1"]["dead_neurons"] == "L3[1]"
    assert runs["seed-float64-lr1e-7"]["lr"] == 1e-7 and runs["seed-float64-lr1e-7"]["steps"] == 60


def test_a_looser_rtol_changes_what_counts_as_converged(run_cli, sweep_folder):
    strict = json.loads(run_cli("summary", sweep_folder, "--json", "--rtol", "1e-9").output)
    assert not any(r["converged"] for r in strict)
    loose = json.loads(run_cli("summary", sweep_folder, "--json", "--rtol", "2").output)
    assert {r["run"] for r in loose if r["converged"]} == {
        "seed-exact-lr1e-7",
        "seed-float64-lr1e-7",
    }


def test_an_unreadable_run_is_reported_and_the_others_summarised(run_cli, sweep_folder):
    bad = sweep_folder / "broken"
    bad.mkdir()
    (bad / "_run.json").write_text("{not json")
    result = run_cli("summary", sweep_folder)
    assert result.exit_code == 0
    assert f"Skipped {bad}: " in result.stderr and "unreadable run metadata" in result.stderr
    assert len(result.stdout.splitlines()) == 4


def test_a_run_with_an_unreadable_part_is_skipped_too(run_cli, sweep_folder, tmp_path):
    good = next(p for p in sweep_folder.iterdir() if p.is_dir())
    bad = sweep_folder / "truncated"
    shutil.copytree(good, bad)
    part = bad / "part-000000.parquet"
    part.write_bytes(part.read_bytes()[:100])
    result = run_cli("summary", sweep_folder)
    assert result.exit_code == 0, result.output
    assert f"Skipped {bad}: " in result.stderr and "unreadable part file" in result.stderr
    assert len(result.stdout.splitlines()) == 4
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copytree(bad, alone / "truncated")
    result = run_cli("summary", alone)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        f"Error: no readable runs in {str(alone)!r}: each was skipped (above)"
    )


def test_json_is_strict_even_for_infinite_losses(run_cli, traces, tmp_path):
    csv = tmp_path / "boom.csv"
    csv.write_text("a,b,y\n1,1,10\n1,2,12\n", encoding="utf-8")
    record(csv, lr="1e200", numerics="float64", init="0.1,0.1", epochs=1, out=traces)
    result = run_cli("summary", traces, "--json")
    assert result.exit_code == 0

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    (run,) = json.loads(result.output, parse_constant=refuse)
    assert run["final_loss"] == "Infinity" and run["diverged_at"] == 1


def test_an_incomplete_run_is_marked_in_the_table(run_cli, sweep_folder):
    info_path = sweep_folder / "seed-exact-lr1" / "_run.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "status": "incomplete"}))
    result = run_cli("summary", sweep_folder)
    assert "seed-exact-lr1 (incomplete)" in result.output


def test_errors_are_one_line_with_an_exit_code(run_cli, tmp_path):
    missing = run_cli("summary", tmp_path / "nowhere")
    assert missing.exit_code == 2
    assert missing.stderr.strip() == f"Error: no folder '{tmp_path / 'nowhere'}'"
    empty = run_cli("summary", tmp_path)
    assert empty.exit_code == 2 and "no runs in" in empty.stderr
    both = run_cli("summary", tmp_path, "--csv", "--json")
    assert both.exit_code == 2 and "choose one of --csv and --json" in both.stderr


def test_help_has_an_example(run_cli):
    result = run_cli("summary", "-h")
    assert result.exit_code == 0 and "Example:" in result.output and "--json" in result.output


def test_a_two_layer_network_is_summarised_from_its_models_gates(run_cli, traces):
    model = REPO / "examples" / "two-layer.json"
    for numerics in ("exact", "float64"):
        record(lr="1/10", epochs=5, numerics=numerics, model=model, out=traces, name=numerics)
    result = run_cli("summary", traces, "--json")
    assert result.exit_code == 0
    runs = {r["run"]: r for r in json.loads(result.output)}
    exact, f64 = runs["exact"], runs["float64"]
    # Gates: layer 3 (relu, two units on o2) and layer 5 (leaky relu on o4): 45 pairs each.
    rows = load_trace(traces / "exact", ["o2_1", "o2_2", "o4_1"])
    closed = (rows < 0).to_numpy()
    assert exact["gate_closed_share"] == pytest.approx(closed.sum() / closed.size)
    assert exact["gate_closed_steps"] == closed.any(axis=1).sum() == 15
    # Both ReLU units of layer 2 are closed on every row of the last epoch: no learning
    # reaches layer 2 any more. The leaky ReLU of layer 5 cannot die.
    assert (closed[-3:, :2]).all()
    assert exact["dead_units"] == f64["dead_units"] == 2
    assert exact["dead_neurons"] == "L3[1], L3[2]"
    assert not exact["diverged"] and f64["diverged_at"] == 3
    text = run_cli("summary", traces).output.splitlines()
    assert text[1].split()[-4:] == ["15", "2", "-", "no"]


def test_image_runs_are_summarised_a_relu_channel_that_never_opens_is_dead(run_cli, tmp_path):
    """tests/image_runs.py's network: channel 0's ReLU never opens, channel 1's always does.
    At α = 1e300 on the same images the kernel reaches 2e298 at step 0, and step 1 overflows."""
    record_images(tmp_path, "1/10", name="cnn", numerics="float64", epochs=3)
    blowup = record_images(tmp_path, "1e300", name="overflow", numerics="float64", epochs=2)
    folder = tmp_path / "runs"
    result = run_cli("summary", folder, "--json")
    assert result.exit_code == 0
    runs = {r["run"]: r for r in json.loads(result.output)}
    cnn, overflow = runs["cnn"], runs["overflow"]
    losses = load_trace(folder / "cnn", ["loss"]).loss
    assert cnn["final_loss"] == losses.iloc[-1] and cnn["steps"] == 6
    # a unit per channel: one of the two closed on every row
    assert (cnn["dead_units"], cnn["dead_neurons"]) == (1, "L3[channel 0]")
    assert cnn["gate_closed_steps"] == 6 and cnn["gate_closed_share"] == 0.5
    assert not cnn["diverged"] and cnn["first_nonfinite_step"] is None
    kernel = load_trace(folder / "overflow", ["w2_after_2_1_2_2"]).w2_after_2_1_2_2
    assert kernel.iloc[0] > 1e298 and math.isnan(kernel.iloc[1])
    assert (overflow["diverged_at"], overflow["diverged_why"]) == (1, "loss is not finite")
    assert overflow["diverged_at"] == blowup.summary.diverged_at
    assert overflow["first_nonfinite_step"] == 1
    text = {
        line.split()[0]: line.split() for line in run_cli("summary", folder).output.splitlines()
    }
    assert text["cnn"][-4:] == ["6", "1", "-", "no"]
    assert text["overflow"][-2:] == ["1", "no"]


def test_a_grid_is_grouped_by_every_setting_that_varies_and_ordered_by_alpha(run_cli, traces):
    sweep(["1e-3", "1e-9", "1e-6"], batch_size=[3, 1], seed=[2, 1], shuffle=True,
          numerics="float64", init="0.005,-0.0002,0.0002", epochs=2, out=traces)  # fmt: skip
    result = run_cli("summary", traces)
    assert result.exit_code == 0
    header, *lines = result.output.splitlines()
    assert header.split()[:5] == ["run", "numerics", "lr", "batch", "seed"]
    cells = [line.split()[1:5] for line in lines]
    assert cells == [
        ["float64", lr, batch, seed]
        for batch in ("1", "3") for seed in ("1", "2") for lr in ("1e-9", "1e-6", "1e-3")
    ]  # fmt: skip
    table = pd.read_csv(io.StringIO(run_cli("summary", traces, "--csv").output))
    assert table["group"].tolist()[::3] == [
        "batch 1, seed 1", "batch 1, seed 2", "batch 3, seed 1", "batch 3, seed 2",
    ]  # fmt: skip
    assert table.loc[0, "run"] == "seed-float64-lr1e-9-b1-seed1" and table.loc[0, "model"] == (
        "article"
    )


def test_seeds_are_whole_numbers_even_when_some_runs_have_none(run_cli, traces):
    record(out=traces, name="no-seed")  # nothing drawn: no seed recorded
    drawn = record(out=traces, name="drawn", shuffle=True)
    seed = open_trace(drawn.path).meta["seed"]
    assert seed > 1_000_000  # drawn: a large number, which a float would print rounded
    text = run_cli("summary", traces).output.splitlines()
    header = text[0].split()
    rows = {line.split()[0]: line.split() for line in text[1:]}
    assert rows["drawn"][header.index("seed")] == str(seed)
    assert rows["no-seed"][header.index("seed")] == "-"
    runs = {r["run"]: r for r in json.loads(run_cli("summary", traces, "--json").output)}
    assert runs["drawn"]["seed"] == seed and isinstance(runs["drawn"]["seed"], int)
    assert runs["no-seed"]["seed"] is None
    csv = run_cli("summary", traces, "--csv").output
    assert f",{seed}," in csv and f"{seed}.0" not in csv
