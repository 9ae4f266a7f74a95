"""The golden_trace fixture's whole cycle, run by pytester in scratch projects."""

import pytest

import steptrace

# pytester's in-process runs restore sys.modules afterwards: numpy, first imported inside one of
# them, could not be imported again in this process ("cannot load module more than once").
# Importing steptrace.analysis here loads numpy, pandas and pyarrow once, before any inner run.
import steptrace.analysis

from .conftest import REPO
from .image_runs import CNN, write_images

pytest_plugins = ["pytester"]
TWO_LAYER = str(REPO / "examples" / "two-layer.json")

TEST_MODULE = """
import steptrace

def test_training(golden_trace, tmp_path):
    run = steptrace.record("seed", lr="{lr}", numerics="float32", out=tmp_path)
    golden_trace(run)
"""

MISMATCH = """\
The run differs from golden trace test_training/test_training.parquet
golden: test_training/test_training.parquet (float32, α=1, 3 rows)
obtained: test_training/test_training.obtained.parquet (float32, α=2, 3 rows)
First divergence: step 0, sample 0, column lr (the learning rate): golden 1.0, obtained 2.0 \
(obtained - golden = 1.0)
Settings that differ:
  lr: golden '1', obtained '2'
  lr_exact: golden '1', obtained '2'
Values that differ (exact equality): 19 of 29 columns, 3 rows compared
  column         cells  first step  sample  golden          obtained        max abs   max rel
  lr             3/3    0           0       1.0             2.0             1         1
  w2_after_1_1   3/3    0           0       0.004997951     0.004995902     0.246     2.83
  w2_after_1_2   3/3    0           0       -0.00029959888  -0.00034057707  4.1e-05   0.137
  w2_after_1_3   3/3    0           0       0.00017036489   0.00016831598   2.05e-06  0.012
  w2_before_1_1  2/3    1           1       0.004997951     0.004995902     0.246     2.83
  w2_before_1_2  2/3    1           1       -0.00029959888  -0.00034057707  4.1e-05   0.137
  w2_before_1_3  2/3    1           1       0.00017036489   0.00016831598   2.05e-06  0.012
  o2_1           2/3    1           1       0.9995902       0.99918044      0.0881    1
  o3_1           1/3    1           1       0.9995902       0.99918044      0.00041   0.00041
  loss           1/3    1           1       8.3960614e-08   3.3584246e-07   2.52e-07  3
  d4_1           1/3    1           1       -0.00040978193  -0.00081956387  0.00041   1
  d3_1           1/3    1           1       -0.00040978193  -0.00081956387  0.00041   1
  d2_1           1/3    1           1       -2.04807e-06    -4.094461e-06   2.05e-06  0.999
  d2_2           1/3    1           1       1.227702e-07    2.7912466e-07   1.56e-07  1.27
  d2_3           1/3    1           1       -6.981245e-08   -1.3794569e-07  6.81e-08  0.976
  d1_1           1/3    1           1       -2.04807e-06    -4.094461e-06   2.05e-06  0.999
  d1_2           1/3    1           1       1.227702e-07    2.7912466e-07   1.56e-07  1.27
  d1_3           1/3    1           1       -6.981245e-08   -1.3794569e-07  6.81e-08  0.976
  grad_w2_1_1    1/3    1           1       -0.08195639     -0.16391277     0.082     1
Compare them: steptrace diff test_training/test_training.parquet \
test_training/test_training.obtained.parquet
If the change is intended, update the golden: pytest --steptrace-update"""

#: A two-layer network (examples/two-layer.json: input → linear(2, bias) → relu → linear(1)
#: → leaky relu), pinned by a golden; then its learning rate is halved.
NETWORK_MODULE = """
import steptrace

def test_network(golden_trace, tmp_path):
    run = steptrace.record("seed", lr="{lr}", numerics="float64", model={model!r}, out=tmp_path)
    golden_trace(run)
"""

NETWORK_MISMATCH = """\
The run differs from golden trace test_network/test_network.parquet
golden: test_network/test_network.parquet (float64, α=1/10, 3 rows)
obtained: test_network/test_network.obtained.parquet (float64, α=1/20, 3 rows)
First divergence: step 0, sample 0, column lr (the learning rate): golden 0.1, obtained 0.05 \
(obtained - golden = -0.05)
Settings that differ:
  lr: golden '1/10', obtained '1/20'
  lr_exact: golden '1/10', obtained '1/20'
Values that differ (exact equality): 40 of 58 columns, 3 rows compared
  column         cells  first step  sample  golden                   obtained                 \
max abs   max rel
  lr             3/3    0           0       0.1                      0.05                     \
0.05      0.5
  w2_after_2_1   3/3    0           0       -0.0011083333333333333   -0.0010541666666666668   \
5.42e-05  0.0489
  w2_after_2_2   3/3    0           0       -0.0016666666666666666   -0.0005833333333333333   \
0.00108   0.65
  w2_after_2_3   3/3    0           0       -0.00035833333333333333  -0.00030416666666666667  \
5.42e-05  0.151
  b2_after_2     3/3    0           0       0.09999891666666667      0.09999945833333333      \
5.42e-07  5.42e-06
  w4_after_1_2   3/3    0           0       -0.3333301645833333      -0.33333174895833334     \
1.58e-06  4.75e-06
  w2_before_2_1  2/3    1           1       -0.0011083333333333333   -0.0010541666666666668   \
5.42e-05  0.0489
  w2_before_2_2  2/3    1           1       -0.0016666666666666666   -0.0005833333333333333   \
0.00108   0.65
  w2_before_2_3  2/3    1           1       -0.00035833333333333333  -0.00030416666666666667  \
5.42e-05  0.151
  b2_before_2    2/3    1           1       0.09999891666666667      0.09999945833333333      \
5.42e-07  5.42e-06
  w4_before_1_2  2/3    1           1       -0.3333301645833333      -0.33333174895833334     \
1.58e-06  4.75e-06
  o2_2           2/3    1           1       -0.12166775              -0.11083387500000004     \
2.33      0.541
  d4_2           2/3    1           1       0.16666508229166666      0.16666587447916667      \
0.0024    0.00729
  w2_after_1_1   2/3    1           1       5.005                    2.505                    \
2.5       0.5
  b2_after_1     2/3    1           1       0.025                    0.0125                   \
0.0407    0.513
  w4_after_1_1   2/3    1           1       0.55                     0.525                    \
0.0268    0.0486
  w2_before_1_1  1/3    2           2       5.005                    2.505                    \
2.5       0.5
  b2_before_1    1/3    2           2       0.025                    0.0125                   \
0.0125    0.5
  w4_before_1_1  1/3    2           2       0.55                     0.525                    \
0.025     0.0455
  o2_1           1/3    2           2       0.02499999999999989      0.01249999999999989      \
0.0125    0.5
  … and 20 more columns
Compare them: steptrace diff test_network/test_network.parquet \
test_network/test_network.obtained.parquet
If the change is intended, update the golden: pytest --steptrace-update"""


#: The image network of tests/image_runs.py, pinned by a golden; then its learning rate is
#: halved, and the comparison leaves the learning rate out.
IMAGE_MODULE = """
import steptrace

def test_images(golden_trace, tmp_path):
    run = steptrace.record({data!r}, lr="{lr}", model={model!r}, target="t", out=tmp_path)
    golden_trace(run, ignore=["lr"])
"""

IMAGE_MISMATCH = """\
The run differs from golden trace test_images/test_images.parquet
golden: test_images/test_images.parquet (exact, α=1/10, 2 rows)
obtained: test_images/test_images.obtained.parquet (exact, α=1/20, 2 rows)
First divergence: step 0, sample 0, w2_after[1, 0, 0, 1] (layer 2's kernel from input channel \
0 to output channel 1, row 0, column 1, after the update): golden 2461/10240, obtained \
5021/20480 (obtained - golden = 0.004833984375)
Settings that differ:
  lr_exact: golden '1/10', obtained '1/20'
Values that differ (exact equality): 199 of 434 columns, 2 rows compared
  column                cells  first step  sample  golden       obtained     max abs  max rel
  w2_after[1, 0, 0, 1]  2/2    0           0       2461/10240   5021/20480   0.0443   0.242
  w2_after[1, 0, 0, 2]  2/2    0           0       891/40960    891/81920    0.0109   0.5
  w2_after[1, 0, 1, 0]  2/2    0           0       6011/20480   11131/40960  0.0218   0.0741
  w2_after[1, 0, 1, 1]  2/2    0           0       20579/40960  41059/81920  0.00521  0.0102
  w2_after[1, 0, 1, 2]  2/2    0           0       2461/10240   5021/20480   0.0327   0.164
  w2_after[1, 0, 2, 0]  2/2    0           0       1287/40960   1287/81920   0.026    0.831
  w2_after[1, 0, 2, 1]  2/2    0           0       11923/40960  22163/81920  0.0205   0.0706
  w2_after[1, 0, 2, 2]  2/2    0           0       -99/20480    -99/40960    0.00242  0.5
  w2_after[1, 1, 0, 0]  2/2    0           0       99/10240     99/20480     0.0346   0.731
  w2_after[1, 1, 0, 1]  2/2    0           0       891/40960    891/81920    0.0109   2.44
  w2_after[1, 1, 0, 2]  2/2    0           0       297/10240    297/20480    0.0221   0.924
  w2_after[1, 1, 1, 0]  2/2    0           0       297/40960    297/81920    0.00763  0.5
  w2_after[1, 1, 1, 2]  2/2    0           0       891/40960    891/81920    0.0109   0.5
  w2_after[1, 1, 2, 0]  2/2    0           0       891/20480    891/40960    0.0218   28.7
  w2_after[1, 1, 2, 1]  2/2    0           0       99/40960     99/81920     0.00169  0.987
  w2_after[1, 1, 2, 2]  2/2    0           0       -99/10240    -99/20480    0.0361   0.637
  b2_after[1]           2/2    0           0       99/2560      99/5120      0.0271   0.987
  w6_after_1_5          2/2    0           0       3649/20480   6209/40960   0.0296   0.314
  w6_after_1_6          2/2    0           0       1973/10240   3253/20480   0.0338   0.334
  w6_after_1_7          2/2    0           0       -157/1024    -413/2048    0.0483   0.315
  … and 179 more columns
Compare them: steptrace diff test_images/test_images.parquet \
test_images/test_images.obtained.parquet
If the change is intended, update the golden: pytest --steptrace-update"""

#: Hypothesis's pytest plugin, when installed, takes most of a second to load in each inner
#: run; these scratch projects do not use it.
QUIET = ("-p", "no:hypothesispytest")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*QUIET, *args)


def failure_text(result: pytest.RunResult) -> str:
    """The failure report of the one failing test: between its header and the summary."""
    lines = result.outlines
    start = next(i for i, line in enumerate(lines) if line.startswith("_____"))
    end = next(i for i, line in enumerate(lines) if "short test summary info" in line)
    return "\n".join(lines[start + 1 : end])


def test_the_whole_cycle(pytester):
    golden = pytester.path / "test_training" / "test_training.parquet"
    obtained = golden.with_name("test_training.obtained.parquet")

    pytester.makepyfile(test_training=TEST_MODULE.format(lr="1"))
    missing = run(pytester)
    missing.assert_outcomes(failed=1)
    assert failure_text(missing) == (
        "golden trace test_training/test_training.parquet did not exist: it was written from "
        "this run (3 rows). Check it (steptrace replay test_training/test_training.parquet), "
        "commit it, and run the test again."
    )
    assert steptrace.open_trace(golden).lr_text == "1"

    run(pytester).assert_outcomes(passed=1)

    pytester.makepyfile(test_training=TEST_MODULE.format(lr="2"))
    changed = run(pytester)
    changed.assert_outcomes(failed=1)
    assert failure_text(changed) == MISMATCH
    assert steptrace.open_trace(obtained).lr_text == "2"
    assert steptrace.open_trace(golden).lr_text == "1"

    update = run(pytester, "--steptrace-update")
    update.assert_outcomes(passed=1)
    update.stdout.fnmatch_lines(
        ["*steptrace golden traces*", "rewrote test_training/test_training.parquet"]
    )
    assert steptrace.open_trace(golden).lr_text == "2"
    assert not obtained.exists()

    again = run(pytester)
    again.assert_outcomes(passed=1)
    assert "rewrote" not in again.stdout.str()


def test_the_cycle_on_a_two_layer_network_catches_a_changed_learning_rate(pytester):
    golden = pytester.path / "test_network" / "test_network.parquet"
    pytester.makepyfile(test_network=NETWORK_MODULE.format(lr="1/10", model=TWO_LAYER))
    run(pytester).assert_outcomes(failed=1)  # the golden is written
    assert steptrace.open_trace(golden).tensor("w4_after").shape == (1, 2)
    run(pytester).assert_outcomes(passed=1)

    pytester.makepyfile(test_network=NETWORK_MODULE.format(lr="1/20", model=TWO_LAYER))
    changed = run(pytester)
    changed.assert_outcomes(failed=1)
    assert failure_text(changed) == NETWORK_MISMATCH
    assert steptrace.open_trace(golden).lr_text == "1/10"

    run(pytester, "--steptrace-update").assert_outcomes(passed=1)
    assert steptrace.open_trace(golden).lr_text == "1/20"
    run(pytester).assert_outcomes(passed=1)


def test_the_cycle_on_an_image_network_names_the_kernel_weight_that_parts(pytester):
    data = str(write_images(pytester.path / "images.csv"))
    pytester.makepyfile(test_images=IMAGE_MODULE.format(data=data, lr="1/10", model=CNN))
    run(pytester).assert_outcomes(failed=1)  # the golden is written
    run(pytester).assert_outcomes(passed=1)

    pytester.makepyfile(test_images=IMAGE_MODULE.format(data=data, lr="1/20", model=CNN))
    changed = run(pytester)
    changed.assert_outcomes(failed=1)
    assert failure_text(changed) == IMAGE_MISMATCH


def test_an_update_leaves_identical_goldens_untouched(pytester):
    pytester.makepyfile(test_training=TEST_MODULE.format(lr="1"))
    run(pytester)
    golden = pytester.path / "test_training" / "test_training.parquet"
    before = golden.read_bytes()
    result = run(pytester, "--steptrace-update")
    result.assert_outcomes(passed=1)
    assert "rewrote" not in result.stdout.str()
    assert golden.read_bytes() == before


def test_a_passing_check_removes_a_stale_obtained_file(pytester):
    pytester.makepyfile(test_training=TEST_MODULE.format(lr="1"))
    run(pytester)
    stale = pytester.path / "test_training" / "test_training.obtained.parquet"
    stale.write_bytes(b"left over")
    run(pytester).assert_outcomes(passed=1)
    assert not stale.exists()


def test_golden_folder_from_the_ini_file(pytester):
    pytester.makeini("[pytest]\nsteptrace_golden_dir = goldens/traces\n")
    pytester.makepyfile(test_training=TEST_MODULE.format(lr="1"))
    run(pytester).assert_outcomes(failed=1)
    assert (pytester.path / "goldens" / "traces" / "test_training.parquet").is_file()
    run(pytester).assert_outcomes(passed=1)


def test_golden_folder_from_a_fixture_names_dataframes_and_tolerances(pytester):
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def steptrace_golden_dir(tmp_path_factory, pytestconfig):
            return pytestconfig.rootpath / "pinned"
        """
    )
    pytester.makepyfile(
        test_frames="""
        import pytest
        import steptrace

        @pytest.mark.parametrize("lr", ["1e-7", "1/3"])
        def test_lr(lr, golden_trace, tmp_path):
            run = steptrace.record("seed", lr=lr, numerics="float64", out=tmp_path,
                                   init="0.005,-0.0002,0.0002")
            df = steptrace.load_trace(run.path)
            golden_trace(df[df.step < 2], name=f"first-steps-{lr}")
            df["loss"] *= 1 + 1e-12
            golden_trace(df, rtol=1e-9)
        """
    )
    run(pytester).assert_outcomes(failed=2)  # the first golden of each test written
    run(pytester).assert_outcomes(failed=2)  # the second
    names = sorted(p.name for p in (pytester.path / "pinned").iterdir())
    assert names == [
        "first-steps-1_3.parquet",
        "first-steps-1e-7.parquet",
        "test_lr_1_3.parquet",
        "test_lr_1e-7.parquet",
    ]
    assert steptrace.open_trace(pytester.path / "pinned" / "test_lr_1e-7.parquet").num_rows == 3
    run(pytester).assert_outcomes(passed=2)


def test_two_runs_under_one_name_is_an_error(pytester):
    pytester.makepyfile(
        test_twice="""
        import steptrace

        def test_twice(golden_trace, tmp_path):
            run = steptrace.record("seed", numerics="float64", out=tmp_path)
            golden_trace(run, name="article")
            golden_trace(run, name="article")
        """
    )
    run(pytester)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    assert failure_text(result) == (
        "golden_trace already checked a run against test_twice/article.parquet in this test; "
        "give each further run its own name: golden_trace(run, name=...)"
    )


def test_an_unreadable_run_fails_in_one_line(pytester):
    pytester.makepyfile(
        test_bad="""
        def test_bad(golden_trace, tmp_path):
            golden_trace(tmp_path / "nothing-here")
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    text = failure_text(result)
    assert text.startswith("golden_trace cannot read the run: no trace at ")
    assert "\n" not in text


def test_an_incomplete_run_is_not_made_a_golden(pytester):
    pytester.makepyfile(
        test_incomplete="""
        import json
        import steptrace

        def test_incomplete(golden_trace, tmp_path):
            run = steptrace.record("seed", numerics="float64", out=tmp_path)
            info = json.loads((run.path / "_run.json").read_text())
            info["status"] = "incomplete"
            (run.path / "_run.json").write_text(json.dumps(info))
            golden_trace(run.path)
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    assert failure_text(result) == (
        "golden trace test_incomplete/test_incomplete.parquet not written: the run is "
        "incomplete; a golden must come from a complete run"
    )
    assert not (pytester.path / "test_incomplete").exists()


def test_works_in_a_fresh_process_through_the_entry_point(pytester):
    # No conftest, no "-p steptrace": the plugin comes from the package's pytest11 entry point.
    pytester.makepyfile(test_training=TEST_MODULE.format(lr="1"))
    first = pytester.runpytest_subprocess(*QUIET)
    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines(["golden trace test_training/test_training.parquet did not exist*"])
    pytester.runpytest_subprocess(*QUIET).assert_outcomes(passed=1)
    help_text = run(pytester, "--help").stdout.str()
    assert "--steptrace-update" in help_text and "steptrace_golden_dir" in help_text
