"""Comparing image runs: a divergence in an image or an image layer's parameters is named as
numpy indexes it (``o2[1, 0, 0] (layer 2's output, channel 1, row 0, column 0)``), the report's
table alike; JSON keeps the columns' names."""

import json
from fractions import Fraction

import pytest

from steptrace import load_tensor, load_trace
from steptrace.compare.folders import compare_folders
from steptrace.compare.traces import compare_traces

from .image_runs import record_images

#: steptrace diff of the image network at α = 1/10 (A) and 1/20 (B), the learning rate left
#: out: channel 1's kernel parts first (channel 0's ReLU is closed, its kernel never moves).
KERNEL_DIVERGENCE = (
    "First divergence: step 0, sample 0, w2_after[1, 0, 0, 1] (layer 2's kernel from input "
    "channel 0 to output channel 1, row 0, column 1, after the update): A 2461/10240, "
    "B 5021/20480 (B - A = 0.004833984375)"
)
#: The same runs' outputs: they part at step 1, where the kernel moved.
OUTPUT_DIVERGENCE = (
    "First divergence: step 1, sample 1, o2[1, 0, 0] (layer 2's output, channel 1, row 0, "
    "column 0): A 90137/163840, B 172057/327680 (B - A = -0.0250762939453125)"
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The image network at α = 1/10 and 1/20, each in a folder of its own, as ``cnn``."""
    return [
        record_images(tmp_path_factory.mktemp(f"lr{i}"), lr, name="cnn").path
        for i, lr in enumerate(["1/10", "1/20"])
    ]


def _line(output: str, start: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(start))


def test_diff_names_a_kernel_weight_by_its_indices_from_0(run_cli, runs):
    result = run_cli("diff", *runs, "--ignore", "lr")
    assert result.exit_code == 1
    assert _line(result.output, "First divergence") == KERNEL_DIVERGENCE
    # the name's index is load_tensor's: row 0 (step 0), then [1, 0, 0, 1]
    a, b = (load_tensor(run, "w2_after", exact=True)[0][1, 0, 0, 1] for run in runs)
    assert (a, b) == (Fraction(2461, 10240), Fraction(5021, 20480))
    table = result.output.split("max rel\n", 1)[1].splitlines()
    assert table[0].split()[:5] == ["w2_after[1,", "0,", "0,", "1]", "2/2"]
    assert not any("w2_after[0," in line for line in table)  # the dead channel's kernel


def test_diff_names_an_output_pixel_by_channel_row_and_column(run_cli, runs):
    result = run_cli("diff", *runs, "--columns", "o")
    assert _line(result.output, "First divergence") == OUTPUT_DIVERGENCE
    a, b = (load_tensor(run, "o2", exact=True)[1][1, 0, 0] for run in runs)
    assert (a, b) == (Fraction(90137, 163840), Fraction(172057, 327680))


def test_a_bias_and_one_value_chosen_by_its_numpy_name(runs):
    r = compare_traces(*runs, columns=["b2_after", "o2[1, 3, 0]"])
    assert r.columns == ["b2_after_1", "b2_after_2", "o2_2_4_1"]
    assert _line(r.format(), "First divergence") == (
        "First divergence: step 0, sample 0, b2_after[1] (layer 2's bias of output channel 1, "
        "after the update): A 99/2560, B 99/5120 (B - A = -0.0193359375)"
    )
    assert [d.column for d in r.column_diffs] == ["b2_after_2", "o2_2_4_1"]


def test_json_keeps_the_column_names(run_cli, runs):
    data = json.loads(run_cli("diff", *runs, "--ignore", "lr", "--json").output)
    assert data["first"]["column"] == "w2_after_2_1_1_2"
    assert "shapes" not in data


def test_what_a_step_starts_from_comes_first_for_an_image_input_too(runs):
    """At one row, a changed pixel and a changed kernel weight before the step: both are what
    the step starts from, so the one first in the trace, the pixel, is named."""
    a = load_trace(runs[0])
    b = a.copy()
    row = b.index[b.step == 1]
    for column in ("x_2_4_1", "w2_before_2_1_1_2"):
        b.loc[row, column] += 1
        b.loc[row, column + "_exact"] = "7"
    r = compare_traces(a, b, columns=["x", "w2_before", "o2"])
    assert _line(r.format(), "First divergence").startswith(
        "First divergence: step 1, sample 1, x[1, 3, 0] (data input, channel 1, row 3, column 0):"
    )


def test_folders_of_image_runs_name_each_runs_first_divergence_alike(runs):
    a, b = (run.parent for run in runs)
    line = _line(compare_folders(a, b, columns=["b2_after"]).format(), "  cnn")
    assert line == (
        "  cnn  differs at step 0, sample 0, b2_after[1] (layer 2's bias of output channel 1, "
        "after the update): A 99/2560, B 99/5120 (B - A = -0.0193359375)"
    )


def test_diff_columns_takes_an_images_numpy_name_with_its_commas(run_cli, runs):
    result = run_cli("diff", *runs, "--columns", "b2_after,o2[1, 3, 0]")
    assert result.exit_code == 1, result.output
    assert "b2_after[1] (layer 2's bias of output channel 1" in _line(result.output, "First")
    table = result.output.split("max rel\n", 1)[1].splitlines()
    assert [line.strip().split("]")[0] + "]" for line in table if line.strip()][:2] == [
        "b2_after[1]", "o2[1, 3, 0]"]  # fmt: skip
