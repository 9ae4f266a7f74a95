"""The project's goldens: fresh recordings must match traces/golden/ value for value.

Re-record them after an intended change with ``pytest tests/test_golden.py --steptrace-update``.
"""

from fractions import Fraction
from pathlib import Path

import pytest

import steptrace
from steptrace.compare.traces import compare_traces

from .article import STEPS
from .conftest import REPO

GOLDEN = REPO / "traces" / "golden"
NUMERICS = ["exact", "float64", "float32"]
#: Several α on the same data and start, over five epochs: too small, about right, too large.
SWEEP_LRS = ["1e-9", "1e-8", "1e-7", "1e-6"]
SWEEP = dict(numerics="float64", init="0.005,-0.0002,0.0002", epochs=5)


@pytest.fixture
def steptrace_golden_dir() -> Path:
    return GOLDEN


@pytest.mark.parametrize("numerics", NUMERICS)
def test_article_example_matches_its_golden(numerics, golden_trace, tmp_path):
    run = steptrace.record("seed", lr="1", numerics=numerics, out=tmp_path)
    golden_trace(run, name=f"article-{numerics}")


@pytest.mark.parametrize("lr", SWEEP_LRS)
def test_learning_rate_comparison_matches_its_golden(lr, golden_trace, tmp_path):
    run = steptrace.record("seed", lr=lr, out=tmp_path, **SWEEP)
    golden_trace(run, name=f"lr-sweep-lr{lr}")


def test_exact_golden_holds_the_articles_numbers():
    df = steptrace.load_trace(GOLDEN / "article-exact.parquet")
    assert df["step"].tolist() == [0, 1, 2]
    for row, expected in zip(df.itertuples(), STEPS, strict=True):
        assert Fraction(row.loss_exact) == expected["loss"]
        assert Fraction(row.o2_1_exact) == expected["o2"]
        got = tuple(Fraction(getattr(row, f"w2_after_1_{k}_exact")) for k in (1, 2, 3))
        assert got == expected["w_after"]


def test_goldens_are_a_readable_folder_of_runs():
    traces, problems = steptrace.find_traces(GOLDEN)
    assert problems == []
    names = sorted(t.name for t in traces)
    expected = [f"article-{n}" for n in NUMERICS] + [f"lr-sweep-lr{lr}" for lr in SWEEP_LRS]
    assert names == sorted(expected)
    for path in GOLDEN.glob("*.parquet"):
        assert path.stat().st_size < 16_000, f"{path} should stay a few kB"


def test_learning_rate_goldens_tell_too_small_right_and_too_large():
    df = steptrace.load_traces(GOLDEN, ["step", "sample", "o2_1", "loss"])
    sweep = df[df["run"].str.startswith("lr-sweep-")]
    final = sweep[sweep["step"] == 14].set_index("lr_text")["loss"]
    last_epoch = sweep[sweep["step"] >= 12].groupby("lr_text")["loss"].sum()
    assert last_epoch.idxmin() == "1e-7"
    assert last_epoch["1e-9"] > last_epoch["1e-8"] > last_epoch["1e-7"]
    # α = 1e-6 pushes sample 2's o2 below zero for good: the ReLU gate stays closed.
    dead = sweep[(sweep["lr_text"] == "1e-6") & (sweep["sample"] == 2)]
    assert (dead["o2_1"] < 0).all()
    assert final["1e-6"] == 0.5


def test_exact_and_float64_goldens_part_at_step_0_in_o2():
    result = compare_traces(GOLDEN / "article-exact.parquet", GOLDEN / "article-float64.parquet")
    assert not result.identical
    first = result.first
    assert (first.step, first.sample, first.column) == (0, 0, "o2_1")
    assert (first.a, first.b) == ("0", "-3.469446951953614e-17")
