"""--resume: an interrupted run, continued, equals the run that was never interrupted."""

import functools
import random
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steptrace import load_trace, open_trace, record, resume
from steptrace.errors import ConfigError, DatasetError
from steptrace.train import columns, recorder

from .conftest import steptrace_subprocess

FLOAT_RUN = ["--numerics", "float64", "--init", "0.005,-0.0002,0.0002", "--lr", "1e-9",
             "--shuffle", "--seed", "7", "--batch-size", "2", "--epochs", "600000"]  # fmt: skip


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal bit for bit (NaN and -0.0 included), the run id aside."""
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for col in a.columns:
        if col == "run_id":
            continue
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if x.dtype.kind == "f":
            assert x.tobytes() == y.tobytes(), col
        else:
            assert (x == y).all(), col


TWO_LAYER = Path(__file__).resolve().parent.parent / "examples" / "two-layer.json"
#: The article's model from its --init, and a two-layer network from its model file.
MODELS = {
    "article": FLOAT_RUN,
    "two-layer": [*FLOAT_RUN[:2], *FLOAT_RUN[4:], "--model", str(TWO_LAYER)],
}
#: Value columns diff compares (every column but run_id, numerics and batch_size).
COMPARED = {"article": 29, "two-layer": 58}


@pytest.mark.parametrize(("model", "seed"), [("article", 1), ("article", 2), ("two-layer", 3)])
def test_sigkill_at_a_random_moment_then_resume_equals_an_uninterrupted_run(
    traces, model, seed, run_cli
):
    proc = steptrace_subprocess("record", "--out", traces, "--name", "cut", "--flush-seconds",
                                "0.05", *MODELS[model])  # fmt: skip
    run = traces / "cut"
    while not (run / "_run.json").exists():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)
    # Kill once a random number of parts is flushed: mid-part, at a moment we do not choose.
    parts = random.Random(seed).randint(1, 8)
    while len(list(run.glob("part-*.parquet"))) < parts:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.005)
    time.sleep(random.Random(seed).uniform(0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert open_trace(run).status == "incomplete"
    flushed = len(pd.read_parquet(run))
    assert flushed < 1_800_000  # it really was cut short

    result = resume(run)
    assert result.status == "complete"
    assert result.summary.rows == 1_800_000 and result.summary.steps == 1_200_000

    start = {"init": "0.005,-0.0002,0.0002"} if model == "article" else {"model": TWO_LAYER}
    whole = record(out=traces, name="whole", numerics="float64", lr="1e-9", shuffle=True,
                   seed=7, batch_size=2, epochs=600000, **start)  # fmt: skip
    same_rows(load_trace(run), load_trace(whole.path))
    assert result.summary == whole.summary
    diff = run_cli("diff", run, whole.path)
    assert diff.exit_code == 0, diff.output
    assert diff.output.startswith(f"Traces are identical ({COMPARED[model]} columns × 1800000 rows")


class Crash(Exception):
    pass


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few rows, so that a run can be stopped between two of them."""
    monkeypatch.setattr(recorder, "iter_blocks", functools.partial(columns.iter_blocks, max_rows=4))


TWO_LAYER = Path(__file__).resolve().parent.parent / "examples" / "two-layer.json"


@pytest.mark.parametrize("numerics", ["exact", "float32", "float64"])
@pytest.mark.parametrize("model", ["article", "two-layer"])
def test_a_run_stopped_mid_way_resumes_to_the_same_trace(traces, numerics, model, small_blocks):
    settings = dict(numerics=numerics, lr="1/1000", epochs=40, batch_size=2, shuffle=True,
                    seed=5, init="1/100,-1/5000,1/5000")  # fmt: skip
    crash_at = 30
    if model == "two-layer":
        del settings["init"]
        settings.update(model=TWO_LAYER, lr="1/1000000")
        if numerics == "exact":
            # Exact rationals double their digits at every step of a two-layer network:
            # two epochs (4 steps) stay within the exact limit.
            settings["epochs"], crash_at = 2, 2
    total = 3 * settings["epochs"]

    def crash_after_some_rows(rows: int, total: int) -> None:
        if rows >= crash_at:
            raise Crash

    with pytest.raises(Crash):
        record(out=traces, name="cut", progress=crash_after_some_rows, **settings)
    cut = open_trace(traces / "cut")
    assert cut.status == "incomplete" and crash_at <= cut.num_rows < total
    resume(cut.path)
    whole = record(out=traces, name="whole", **settings)
    a, b = load_trace(cut.path), load_trace(whole.path)
    same_rows(a, b)
    if numerics == "exact":
        assert (a["w2_after_1_1_exact"] == b["w2_after_1_1_exact"]).all()


def test_only_incomplete_runs_resume(traces):
    done = record(out=traces)
    with pytest.raises(ConfigError, match="is already complete; nothing to resume"):
        resume(done.path)


def test_resume_checks_the_dataset_is_the_same(tmp_path, traces):
    data = tmp_path / "d.csv"
    data.write_text("a,b,c,t\n1,2,3,1\n4,5,6,0\n")

    def stop(rows: int, total: int) -> None:
        raise Crash

    with pytest.raises(Crash):
        record(data, out=traces, name="r", epochs=3, numerics="float64", progress=stop)
    data.write_text("a,b,c,t\n1,2,3,1\n4,5,7,0\n")
    with pytest.raises(DatasetError, match="is not the one .* was recorded on"):
        resume(traces / "r")


def test_resume_on_the_command_line_refuses_other_settings(traces, run_cli):
    result = run_cli("record", "--resume", traces / "x", "--lr", "2", "--epochs", "3")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "Error: --resume takes its settings from the run; drop --lr, --epochs"
    )


def test_resume_on_the_command_line(traces, run_cli):
    with pytest.raises(Crash):
        record(out=traces, name="r", epochs=3, numerics="float32",
               progress=lambda rows, total: (_ for _ in ()).throw(Crash()))  # fmt: skip
    result = run_cli("record", "--resume", traces / "r")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{traces}/r: 9 steps, 9 rows; final loss ")
    assert np.array_equal(load_trace(traces / "r")["step"], np.arange(9))
