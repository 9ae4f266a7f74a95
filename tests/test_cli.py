"""The command line: record and replay, their output, and one-line errors."""

import subprocess
import sys

import pytest

from steptrace import __version__, open_trace, record
from steptrace.views import abbreviate

from .conftest import REPO


def test_record_then_replay_prints_the_articles_three_steps(traces, run_cli):
    result = run_cli("record", "--out", traces)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{traces}/seed-exact-lr1: 3 steps, 3 rows; final loss 0.5; did not diverge",
        f"Replay it: steptrace replay {traces}/seed-exact-lr1",
    ]
    replay = run_cli("replay", traces / "seed-exact-lr1")
    assert replay.exit_code == 0
    out = replay.output
    assert out.count("Step ") == 3
    assert "Step 2 · epoch 0 · sample 2 · exact · α = 1" in out
    assert "| (0, 2000, 3000) | (0, 2000, 3000) | 0           | 0           |" in out
    assert "loss = 1/2 (0 - 1)^2 = 1/2   (correct? no)" in out
    assert "loss = 1/2 (1 - 1)^2 = 0   (correct? yes)" in out
    assert "δ3 = δ4 if o2 >= 0 else 0     = -1   (o2 = 0: gate open)" in out
    assert "δ2 = δ3 . w                   = (-1/200, 3/11600, -1/5800)" in out
    assert "∂Loss/∂W2 = δ3 * o1           = (0, -2000, -3000)" in out
    assert "     = (1/200, -3/11600, 1/5800) - 1 * (0, -2000, -3000)" in out
    assert "     = (1/200, 23199997/11600, 17400001/5800)" in out


def test_the_replay_hint_is_a_command_to_paste_whatever_the_folder(tmp_path, run_cli):
    spaced = tmp_path / "my runs"
    result = run_cli("record", "--out", spaced)
    hint = result.output.splitlines()[1]
    assert hint == f"Replay it: steptrace replay '{spaced}/seed-exact-lr1'"
    pasted = subprocess.run(
        hint.removeprefix("Replay it: ").replace("steptrace", f"{sys.executable} -m steptrace", 1),
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pasted.returncode == 0 and pasted.stdout.count("Step ") == 3


def test_replay_one_step_and_the_latest_run_of_a_folder(traces, run_cli):
    run_cli("record", "--out", traces, "--numerics", "float64")
    run_cli("record", "--out", traces, "--numerics", "float32")
    result = run_cli("replay", traces, "--step", "1")
    assert result.exit_code == 0
    assert result.output.startswith(f"Replaying {traces}/seed-float32-lr1 (the latest run in ")
    assert result.output.count("Step ") == 1
    assert "Step 1 · epoch 0 · sample 1 · float32 · α = 1" in result.output
    assert "δ3 = δ4 if o2 >= 0 else 0     = -0.00040978193" in result.output


def test_replay_a_range_of_steps(traces, run_cli):
    run_cli("record", "--out", traces, "--numerics", "float64", "--epochs", "5")
    run = traces / "seed-float64-lr1"
    out = run_cli("replay", run, "--from", "7", "--to", "9").output
    shown = [line for line in out.splitlines() if line.startswith("Step ")]
    assert shown == [
        "Step 7 · epoch 2 · sample 1 · float64 · α = 1.0",
        "Step 8 · epoch 2 · sample 2 · float64 · α = 1.0",
        "Step 9 · epoch 3 · sample 0 · float64 · α = 1.0",
    ]
    tail = run_cli("replay", run, "--from", "13").output
    assert [line[:7] for line in tail.splitlines() if line.startswith("Step ")] == [
        "Step 13",
        "Step 14",
    ]
    head = run_cli("replay", run, "--to", "1").output
    assert [line[:6] for line in head.splitlines() if line.startswith("Step ")] == [
        "Step 0",
        "Step 1",
    ]


USAGE = " (see 'steptrace replay -h')"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "3", "--to", "2"], "Error: --to 2 comes before --from 3" + USAGE),
        (["--step", "1", "--to", "2"], "Error: give --step, or --from/--to, not both" + USAGE),
        (["--from", "15"], "Error: step 15 is not in {run} (steps 0 to 14)"),
        (["--step", "-1"],
         "Error: Invalid value for '--step': -1 is not in the range x>=0." + USAGE),
    ],
)  # fmt: skip
def test_replay_refuses_steps_it_cannot_show(traces, run_cli, args, message):
    run_cli("record", "--out", traces, "--numerics", "float64", "--epochs", "5")
    run = traces / "seed-float64-lr1"
    result = run_cli("replay", run, *args)
    assert result.exit_code == 2
    assert (result.stdout, result.stderr.strip()) == ("", message.format(run=run))


def test_float64_replay_shows_the_closed_gate(traces, run_cli):
    run_cli("record", "--out", traces, "--numerics", "float64")
    out = run_cli("replay", traces / "seed-float64-lr1", "--step", "2").output
    assert "(o2 = -1.1102230246251565e-16: gate closed)" in out
    assert "the weights did not change" in out


def test_sweep_records_one_run_per_learning_rate(traces, run_cli):
    result = run_cli("record", "--out", traces, "--lr", "1", "--lr", "1e-3", "--lr", "1/8",
                     "--numerics", "float64", "--epochs", "4")  # fmt: skip
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in traces.iterdir())
    assert names == ["seed-float64-lr1", "seed-float64-lr1_8", "seed-float64-lr1e-3"]
    assert open_trace(traces / "seed-float64-lr1_8").meta["lr_exact"] == "1/8"
    assert result.output.count("12 steps, 12 rows") == 3


def test_a_run_that_diverges_says_so(tmp_path, traces, run_cli):
    # Each step overshoots to the other side, where the other sample's gate is open: the
    # weight grows tenfold per step until it overflows.
    seesaw = tmp_path / "seesaw.csv"
    seesaw.write_text("a,t\n1,1\n-1,1\n")
    result = run_cli("record", "--out", traces, "--dataset", seesaw, "--numerics", "float64",
                     "--lr", "10", "--init", "2", "--epochs", "200")  # fmt: skip
    assert result.exit_code == 0
    assert "DIVERGED at step 5 (loss over 1e+06× the first epoch's)" in result.output
    assert result.stderr == ""  # divergence is data: no warnings


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["record", "--numerics", "float16"],
         "Error: Invalid value for '--numerics': 'float16' is not one of 'exact', 'float64', "
         "'float32'. (see 'steptrace record -h')", 2),
        (["record", "--lr", "fast"],
         "Error: learning rate must be a number such as 0.5, 1e-7 or 1/200, got 'fast'", 2),
        (["record", "--epochs", "0"],
         "Error: epochs must be a whole number of at least 1, got 0", 2),
        (["record", "--batch-size", "0"],
         "Error: batch size must be a whole number of at least 1, got 0", 2),
        (["record", "--dataset", "missing.csv"],
         "Error: dataset 'missing.csv' does not exist (use 'seed' for the article's)", 2),
        (["replay", "nowhere"], "Error: no folder 'nowhere'", 2),
        (["frobnicate"], "Error: No such command 'frobnicate'. (see 'steptrace -h')", 2),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_on_stderr_and_a_nonzero_exit(tmp_path, run_cli, args, message, code):
    result = run_cli(*args, "--out", tmp_path) if args[0] == "record" else run_cli(*args)
    assert result.exit_code == code
    assert result.stderr.strip() == message
    assert result.stdout == ""


def test_an_output_folder_that_cannot_be_written(tmp_path, run_cli):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli("record", "--out", blocker / "sub")
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == f"Error: cannot create output folder '{blocker}/sub': Not a directory"
        "; choose a folder you can write to with --out"
    )


def test_version_help_and_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "steptrace", "--version"],
                         capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == f"steptrace, version {__version__}"
    for command in ("record", "replay"):
        help_text = subprocess.run([sys.executable, "-m", "steptrace", command, "-h"],
                                   capture_output=True, text=True).stdout  # fmt: skip
        assert "Example:" in help_text


# -- what the lines say ---------------------------------------------------------------------------


def test_replay_of_a_long_exact_run_shortens_huge_fractions_unless_asked_in_full(traces, run_cli):
    # α = 1e-7 for 40 epochs: by step 119 the exact fractions have hundreds of digits.
    run = record(out=traces, lr="1e-7", epochs=40).path
    short = run_cli("replay", run, "--step", "119")
    assert short.exit_code == 0

    def widest(out: str) -> int:
        return max(len(line) for line in out.splitlines())

    assert widest(short.output) < 500  # a line of three fractions, each in some 70 characters
    loss = next(line for line in short.output.splitlines() if line.startswith("   loss = "))
    exact = open_trace(run).read(steps=(119, 120))["loss_exact"].iloc[0]
    num, den = exact.split("/")
    assert len(num) > 300 and len(den) > 300
    assert f"= {abbreviate(exact)}   (correct? no)" in loss
    assert f"{num[:12]}…{num[-12:]} ({len(num)} digits)/" in loss
    full = run_cli("replay", run, "--step", "119", "--full")
    assert full.exit_code == 0
    assert f"= {exact}   (correct? no)" in full.output
    assert "digits)" not in full.output and widest(full.output) > 2000
    assert "--full" in run_cli("replay", "-h").output


def test_the_record_line_names_a_drawn_seed(traces, run_cli):
    drawn = run_cli("record", "--out", traces, "--shuffle", "--name", "drawn")
    seed = open_trace(traces / "drawn").meta["seed"]
    assert isinstance(seed, int)
    line = drawn.output.splitlines()[0]
    assert line.startswith(f"{traces}/drawn: 3 steps, 3 rows; final loss ")
    assert line.endswith(f"; did not diverge; seed {seed} drawn (--seed {seed} records it again)")
    given = run_cli("record", "--out", traces, "--shuffle", "--seed", str(seed), "--name", "given")
    assert given.output.splitlines()[0].endswith("did not diverge")

    def order(name: str) -> list[int]:
        return open_trace(traces / name).read()["sample"].tolist()

    assert order("given") == order("drawn")  # the same shuffle again


def test_the_exact_limit_stop_names_the_run_and_the_command_that_replays_it(tmp_path, run_cli):
    # A denominator of 10^600 in the data: exact arithmetic outgrows its limit at once.
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("a,b,c,t\n1e-600,1,1,1\n2,1e-600,3,0\n")
    out = tmp_path / "my runs"
    result = run_cli("record", "--dataset", tiny, "--lr", "1e-7", "--epochs", "50",
                     "--init", "1,1,1", "--out", out, "--name", "tiny")  # fmt: skip
    assert result.exit_code == 1 and result.stdout == ""
    message = result.stderr.strip()
    assert message.startswith("Error: exact arithmetic stopped at step 2: ")
    hint = f"steptrace replay '{out}/tiny'"
    assert message.endswith(f". The run is in {out}/tiny, marked incomplete; replay its steps "
                            f"with: {hint}")  # fmt: skip
    assert open_trace(out / "tiny").status == "incomplete"
    pasted = subprocess.run(hint.replace("steptrace", f"{sys.executable} -m steptrace", 1),
                            shell=True, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert pasted.returncode == 0 and pasted.stdout.count("Step ") == 2


def test_a_model_that_does_not_fit_a_dataset_says_how_its_columns_were_taken(tmp_path, run_cli):
    # Two targets, no --target: the last column became the target and the other one a
    # feature, so the model file's rows of 3 weights meet 4 features.
    data = tmp_path / "two-targets.csv"
    data.write_text("a,b,c,y1,y2\n1,2,3,0,1\n2,1,0,1,0\n")
    model = tmp_path / "m.json"
    model.write_text('{"layers": [{"type": "input"}, {"type": "linear", "out": 2, '
                     '"weights": [["1", "2", "3"], ["4", "5", "6"]]}], '
                     '"loss": "squared_error"}')  # fmt: skip
    taken = ("(two-targets.csv was read as 4 feature columns, a, b, c, y1, and the target y2: "
             "its last column, as no --target was given; name the target column(s) with "
             "--target)")  # fmt: skip
    result = run_cli("record", "--dataset", data, "--model", model, "--out", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "Error: m.json: layer 2 (linear): weights: row 1 needs 4 values (one per input of the "
        f"layer below), got 3 values {taken}"
    )
    article = run_cli("record", "--dataset", data, "--out", tmp_path)
    assert article.stderr.strip().endswith(f"give --init with 4 comma-separated weights {taken}")
    named = run_cli("record", "--dataset", data, "--model", model, "--target", "y1,y2",
                    "--out", tmp_path)  # fmt: skip
    assert named.exit_code == 0, named.output


def test_a_wide_dataset_is_named_short_and_an_npz_never_said_to_take_its_last_column(
    tmp_path, run_cli
):
    import numpy as np

    pixels = tmp_path / "pixels.csv"
    header = [f"p{i}" for i in range(1, 17)]
    pixels.write_text(",".join(header) + "\n" + ",".join(["1"] * 16) + "\n")
    model = tmp_path / "m.json"
    model.write_text('{"layers": [{"type": "input", "shape": [1, 4, 4]}, {"type": "flatten"}]}')
    result = run_cli("record", "--dataset", pixels, "--model", model, "--out", tmp_path)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "15 feature columns, p1, p2, p3, …, p14, p15, and the target p16" in result.stderr
    arrays = tmp_path / "images.npz"
    np.savez(arrays, x=np.ones((2, 1, 4, 4)), y=np.zeros(2))
    model.write_text('{"layers": [{"type": "input", "shape": [1, 3, 3]}]}')
    result = run_cli("record", "--dataset", arrays, "--model", model, "--out", tmp_path)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "last column" not in result.stderr
