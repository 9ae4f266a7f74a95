"""Sweeps recorded by several worker processes: the same traces as in one process, and every
way of stopping (an error, Ctrl-C, the parent killed) keeps what was flushed."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

import steptrace
from steptrace import ExactLimitError, verify
from steptrace.compare.folders import compare_folders
from steptrace.data import seed_dataset
from steptrace.train import sweeppool
from steptrace.train.sweeppool import (
    EXACT_ROW_COST,
    FLOAT_MIN_CORES,
    PARALLEL_MIN_WORK,
    workers_for,
)
from steptrace.train.settings import Settings

from .conftest import steptrace_subprocess

INIT = "0.005,-0.0002,0.0002"
LRS = ["1e-9", "1e-8", "1e-7"]


@pytest.mark.parametrize(
    "settings",
    [
        dict(numerics="float64", init=INIT, epochs=40),
        dict(numerics="float32", init=INIT, epochs=40, batch_size=2, shuffle=True, seed=3),
        dict(numerics="exact", epochs=5),
    ],
    ids=["float64", "float32-batches-shuffled", "exact"],
)
def test_a_sweep_in_processes_is_the_sweep_in_one(tmp_path, settings):
    one = steptrace.sweep(LRS, out=tmp_path / "one", workers=1, name="s", **settings)
    calls: list[tuple[int, int]] = []
    two = steptrace.sweep(
        LRS, out=tmp_path / "two", workers=2, name="s", progress=lambda *c: calls.append(c),
        **settings,
    )  # fmt: skip
    assert [r.path.name for r in two] == [r.path.name for r in one]
    assert [r.summary for r in two] == [r.summary for r in one]
    assert all(r.status == "complete" for r in two)
    result = compare_folders(tmp_path / "one", tmp_path / "two", ignore=["created"])
    assert result.identical, result.format()
    rows = [done for done, _ in calls]
    total = 3 * len(LRS) * settings["epochs"]
    assert rows == sorted(rows) and calls[-1] == (total, total)


def test_more_workers_than_runs_leaves_the_spare_ones_idle(tmp_path):
    ds = seed_dataset()
    runs = [(Settings.parse(ds, "1", numerics="float64"), "only")]
    (result,) = sweeppool.sweep_in_processes(ds, runs, tmp_path, workers=3)
    assert (result.path.name, result.status) == ("only", "complete")
    assert _workers_alive() == []


def test_a_dataset_bigger_than_a_pipe_reaches_every_worker(tmp_path):
    csv = tmp_path / "big.csv"
    csv.write_text("a,b,y\n" + "".join(f"{i % 7},{i % 5}.5,{i % 3}\n" for i in range(20_000)))
    settings = dict(numerics="float64", init="0.01,0.01", epochs=1, name="big")
    steptrace.sweep(LRS, csv, out=tmp_path / "one", workers=1, **settings)
    steptrace.sweep(LRS, csv, out=tmp_path / "two", workers=3, **settings)
    result = compare_folders(tmp_path / "one", tmp_path / "two", ignore=["created"])
    assert result.identical and len(result.runs) == 3, result.format()


def test_an_error_in_one_run_is_raised_and_the_others_keep_their_steps(tmp_path):
    # α = 1e-7 outgrows exact arithmetic's limit at step 1065; α = 1 stops learning at step 2.
    settings = dict(numerics="exact", epochs=400, name="s")
    with pytest.raises(ExactLimitError) as serial:
        steptrace.sweep(["1e-7", "1"], out=tmp_path / "one", workers=1, **settings)
    with pytest.raises(ExactLimitError) as parallel:
        steptrace.sweep(["1e-7", "1"], out=tmp_path / "two", workers=2, **settings)
    assert str(parallel.value) == str(serial.value).replace("/one/", "/two/")
    status = {
        p.name: json.loads((p / "_run.json").read_text())["status"]
        for p in (tmp_path / "two").iterdir()
    }
    # the run in hand when the error came finished; the erring one is marked incomplete
    assert status == {"s-lr1e-7": "incomplete", "s-lr1": "complete"}
    assert verify(tmp_path / "two" / "s-lr1e-7").ok


def _sweep_process(out: Path, *extra: str):
    lrs = [a for lr in ("1e-9", "2e-9", "3e-9", "4e-9") for a in ("--lr", lr)]
    return steptrace_subprocess(
        "record", "--out", out, "--name", "s", "--numerics", "float64", "--init", INIT,
        "--epochs", "10000000", "--workers", "2", "--flush-seconds", "0.2", *lrs, *extra,
    )  # fmt: skip


def _wait_for_parts(proc, out: Path, runs: int) -> None:
    deadline = time.monotonic() + 120
    while len(list(out.glob("*/part-*.parquet"))) < runs:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no flush within 120 s"
        time.sleep(0.05)


def _workers_alive() -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"steptrace.train.sweeppool" in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def _statuses(out: Path) -> dict[str, tuple[str, str | None]]:
    found = {}
    for run in sorted(out.iterdir()):
        info = json.loads((run / "_run.json").read_text())
        found[run.name] = (info["status"], info["reason"])
        report = verify(run)
        assert report.ok, str(report)
    return found


def test_ctrl_c_stops_every_worker_after_its_flush_and_exits_130(traces):
    proc = _sweep_process(traces)
    _wait_for_parts(proc, traces, 2)
    proc.send_signal(signal.SIGINT)  # the parent only: workers are in their own session
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.count("\n") == 1
    assert err == (
        f"Error: interrupted by Ctrl-C with 0 of 4 runs complete; the steps recorded so far "
        f"are in {traces} (runs stopped are marked incomplete; continue each with --resume)\n"
    )
    statuses = _statuses(traces)
    assert sorted(statuses) == ["s-lr1e-9", "s-lr2e-9"]  # the next ones never started
    for status, reason in statuses.values():
        assert status == "incomplete" and reason.startswith("interrupted by Ctrl-C after step ")
    assert _workers_alive() == []


def test_workers_stop_when_the_parent_is_killed(traces):
    proc = _sweep_process(traces)
    _wait_for_parts(proc, traces, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while _workers_alive():
        assert time.monotonic() < deadline, "workers still running 60 s after their parent died"
        time.sleep(0.1)
    for status, reason in _statuses(traces).values():
        assert status == "incomplete"
        assert reason.startswith("stopped: the sweep's parent process ended after step ")


@pytest.mark.parametrize("cores", [1, 2, 8])
def test_how_many_workers(monkeypatch, cores):
    monkeypatch.setattr(sweeppool, "available_cores", lambda: cores)
    ds = seed_dataset()

    def runs(numerics: str, rows: int) -> list[Settings]:
        return [Settings.parse(ds, lr, numerics=numerics, epochs=rows // 3) for lr in LRS]

    assert workers_for(runs("float64", 30), 3, None) == 1  # not worth starting processes
    big = runs("float64", PARALLEL_MIN_WORK)
    assert workers_for(big, 3, None) == (min(cores, 3) if cores >= FLOAT_MIN_CORES else 1)
    exact = runs("exact", PARALLEL_MIN_WORK // EXACT_ROW_COST)
    assert workers_for(exact, 3, None) == min(cores, 3)
    assert workers_for(runs("exact", 30), 3, None) == 1
    assert workers_for(big, 3, 8) == 3  # never more workers than runs
    assert workers_for(big, 3, 2) == 2


def test_bad_workers_option_is_a_one_line_error(run_cli, traces):
    result = run_cli("record", "--workers", "0", "--out", traces)
    assert result.exit_code == 2
    assert result.output.startswith("Error: Invalid value for '--workers': 0 is not in the range")
    assert list(traces.iterdir()) == []
