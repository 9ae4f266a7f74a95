"""Sweeps as grids of settings, recorded in one process or by a pool of worker processes: the
same traces whoever records them, every setting checked first, and every way of stopping (an
error, Ctrl-C, the sweeping process killed) keeps what was flushed.

The Dask cluster's side is tests/test_dask.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

import steptrace
from steptrace import ConfigError, ExactLimitError, WriteError, verify
from steptrace.compare.folders import compare_folders
from steptrace.data import seed_dataset
from steptrace.train import sweeps
from steptrace.train.settings import Settings
from steptrace.train.sweepjob import Job, record_job
from steptrace.train.sweeps import EXACT_ROW_COST, FLOAT_MIN_CORES, PARALLEL_MIN_WORK, workers_for

from .conftest import steptrace_subprocess, wait_for_parts

INIT = "0.005,-0.0002,0.0002"
LRS = ["1e-9", "1e-8", "1e-7"]


def meta(run: Path) -> dict:
    return json.loads((run / "_run.json").read_text())


# --- grids ----------------------------------------------------------------------------------


def test_a_grid_is_every_combination_named_after_the_settings_that_vary(traces):
    runs = steptrace.sweep(
        ["1e-3", "0.125"], batch_size=[1, 2], numerics=["float64", "float32"], epochs=2,
        init="1,-1,1", out=traces,
    )  # fmt: skip
    names = [r.path.name for r in runs]
    # α varies fastest
    assert names == [
        f"seed-{num}-lr{lr}-b{b}"
        for num in ("float64", "float32") for b in (1, 2) for lr in ("1e-3", "0.125")
    ]  # fmt: skip
    assert sorted(p.name for p in traces.iterdir()) == sorted(names)
    for run, name in zip(runs, names, strict=True):
        m = meta(run.path)
        assert f"seed-{m['numerics']}-lr{m['lr']}-b{m['batch_size']}" == name
        assert run.status == "complete" and run.summary.steps == 2 * -(-3 // m["batch_size"])


def test_a_named_grid_adds_each_varying_setting_to_the_name(traces):
    model = {"name": "tiny", "layers": [{"type": "input"}, {"type": "linear", "out": 1}]}
    runs = steptrace.sweep(
        "0.1", seed=[1, 2], model=["article", model], numerics="float64", shuffle=True,
        out=traces, name="s",
    )  # fmt: skip
    assert [r.path.name for r in runs] == [
        "s-article-seed1", "s-article-seed2", "s-tiny-seed1", "s-tiny-seed2",
    ]  # fmt: skip
    assert [meta(r.path)["seed"] for r in runs] == [1, 2, 1, 2]
    unnamed = steptrace.sweep("0.1", seed=[3, 4], model=["article", model],
                              numerics="float64", out=traces / "u")  # fmt: skip
    assert [r.path.name for r in unnamed] == [
        "seed-float64-lr0.1-seed3", "seed-float64-lr0.1-seed4",
        "seed-tiny-float64-lr0.1-seed3", "seed-tiny-float64-lr0.1-seed4",
    ]  # fmt: skip


def test_every_point_is_checked_before_the_first_run_starts(traces):
    # Batch size 4 is too large for the three patients: found before batch size 1 is recorded.
    with pytest.raises(ConfigError, match="batch size 4 is larger than the dataset"):
        steptrace.sweep(["1", "1/2"], batch_size=[1, 4], out=traces)
    with pytest.raises(ConfigError, match="learning rate 1e300 is too large for float32"):
        steptrace.sweep(["1", "1e300"], numerics=["float64", "float32"], out=traces)
    with pytest.raises(ConfigError, match="learning rate 1/2 is given twice"):
        steptrace.sweep(["1/2", "1", " 1/2"], out=traces)
    with pytest.raises(
        ConfigError,
        match=r"learning rate 1\.0 is given twice \(the same value "
        r"as 1\); give each value once",
    ):
        steptrace.sweep(["1", "1/2", "1.0"], out=traces)
    with pytest.raises(ConfigError, match="model article is given twice; give each value once"):
        steptrace.sweep(["1"], model=["article", "article"], out=traces)
    assert list(traces.iterdir()) == []


def test_runs_that_need_a_seed_share_one_drawn_for_the_sweep(traces):
    drawn = {"layers": [{"type": "input"}, {"type": "linear", "out": 2}, {"type": "relu"},
                        {"type": "linear", "out": 1}]}  # fmt: skip
    runs = steptrace.sweep(["1/10", "1/20"], model=["article", drawn], out=traces)
    seeds = [meta(r.path)["seed"] for r in runs]
    assert seeds[:2] == [None, None]  # the article's model neither shuffles nor draws
    assert seeds[2] == seeds[3] is not None
    assert meta(runs[2].path)["model"] == meta(runs[3].path)["model"]


def test_record_takes_every_grid_setting_repeated(run_cli, traces):
    result = run_cli(
        "record", "--out", traces, "--numerics", "float64", "--init", "1,-1,1",
        "--lr", "1e-3", "--lr", "1e-2", "--batch-size", "1", "--batch-size", "3",
        "--seed", "7", "--shuffle",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        str(traces / f"seed-float64-lr{lr}-b{b}") for b in (1, 3) for lr in ("1e-3", "1e-2")
    ]
    assert all(meta(traces / line.split(":")[0].split("/")[-1])["seed"] == 7 for line in lines)


def test_resume_takes_no_grid_setting_and_no_scheduler(run_cli, traces):
    run = steptrace.record(out=traces).path
    result = run_cli("record", "--resume", run, "--batch-size", "2", "--scheduler", "tcp://x:1")
    assert result.exit_code == 2
    assert result.output == (
        "Error: --resume takes its settings from the run; drop --batch-size, --scheduler\n"
    )


# --- the same runs, whoever records them ----------------------------------------------------


FLOAT64 = dict(numerics="float64", init=INIT, epochs=40, batch_size=[1, 2])
FLOAT32 = dict(numerics="float32", init=INIT, epochs=40, batch_size=2, shuffle=True, seed=[3, 4])
MIXED = dict(numerics=["exact", "float64"], epochs=5)


@pytest.mark.parametrize(
    "engine, settings",
    [
        ("workers", FLOAT64),
        ("workers", FLOAT32),
        ("workers", MIXED),
        ("process-pool", FLOAT32),
        ("threads", MIXED),
    ],
    ids=["float64-batches", "float32-shuffled-seeds", "exact-and-float64", "pool", "threads"],
)
def test_a_sweep_on_any_executor_is_the_sweep_in_one_process(tmp_path, engine, settings):
    one = steptrace.sweep(LRS, out=tmp_path / "one", workers=1, name="s", **settings)
    calls: list[tuple[int, int]] = []
    pool = {"process-pool": ProcessPoolExecutor, "threads": ThreadPoolExecutor}.get(engine)
    executor = pool(2) if pool else None
    two = steptrace.sweep(
        LRS, out=tmp_path / "two", name="s", progress=lambda *c: calls.append(c),
        workers=2 if executor is None else None, executor=executor, **settings,
    )  # fmt: skip
    if executor is not None:
        executor.shutdown()
    assert [r.path.name for r in two] == [r.path.name for r in one]
    assert [r.path.parent for r in two] == [tmp_path / "two"] * len(one)
    assert [r.summary for r in two] == [r.summary for r in one]
    assert all(r.status == "complete" for r in two)
    result = compare_folders(tmp_path / "one", tmp_path / "two", ignore=["created"])
    assert result.identical and len(result.runs) == len(one), result.format()
    rows = [done for done, _ in calls]
    total = sum(r.summary.rows for r in one)
    assert rows == sorted(rows) and calls[-1] == (total, total)
    assert [p.name for p in (tmp_path / "two").iterdir() if p.name.startswith(".")] == []
    pids = {meta(r.path)["recorded_by"]["pid"] for r in two}
    assert (pids == {os.getpid()}) == (engine == "threads")
    assert {meta(r.path)["recorded_by"]["host"] for r in two} == {socket.gethostname()}


def test_recorded_by_names_the_process_that_recorded_the_run(traces):
    run = steptrace.record(out=traces).path
    assert meta(run)["recorded_by"] == {"host": socket.gethostname(), "pid": os.getpid()}
    footer = steptrace.open_trace(run).meta  # the part files' footers say the same
    assert footer["recorded_by"] == meta(run)["recorded_by"]


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
    status = {p.name: meta(p)["status"] for p in (tmp_path / "two").iterdir()}
    # the run in hand when the error came finished; the erring one is marked incomplete
    assert status == {"s-lr1e-7": "incomplete", "s-lr1": "complete"}
    assert verify(tmp_path / "two" / "s-lr1e-7").ok


def test_a_worker_that_does_not_see_the_output_folder_fails_its_run_saying_so(tmp_path):
    # A worker on another machine, where the sweep's folder is not mounted, finds the path
    # without the sweep's hidden folder: it records nothing there.
    ds = seed_dataset()
    job = Job(0, ds, Settings.parse(ds), "r", str(tmp_path / "out"), ".sweep-x", 1.0, 1)
    with pytest.raises(WriteError) as error:
        record_job(job)
    assert str(error.value) == (
        f"worker {socket.gethostname()} (pid {os.getpid()}) does not see the output folder "
        f"{tmp_path / 'out'} the sweep writes to: give --out a folder every worker sees at the "
        "same path (a shared file system)"
    )
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_cannot_be_made_fails_before_any_worker_starts(run_cli, tmp_path):
    (tmp_path / "file").write_text("")
    result = run_cli("record", "--lr", "1", "--lr", "2", "--workers", "2",
                     "--out", tmp_path / "file" / "out")  # fmt: skip
    assert result.exit_code == 1
    assert result.output == (
        f"Error: cannot create output folder '{tmp_path / 'file' / 'out'}': Not a directory; "
        "choose a folder you can write to with --out\n"
    )


# --- stopping -------------------------------------------------------------------------------


def _sweep_process(out: Path, *extra: str, **popen):
    lrs = [a for lr in ("1e-9", "2e-9", "3e-9", "4e-9") for a in ("--lr", lr)]
    return steptrace_subprocess(
        "record", "--out", out, "--name", "s", "--numerics", "float64", "--init", INIT,
        "--epochs", "10000000", "--workers", "2", "--flush-seconds", "0.2", *lrs, *extra,
        **popen,
    )  # fmt: skip


def _statuses(out: Path) -> dict[str, tuple[str, str | None, int]]:
    found = {}
    for run in sorted(p for p in out.iterdir() if not p.name.startswith(".")):
        info = meta(run)
        found[run.name] = (info["status"], info["reason"], info["recorded_by"]["pid"])
        report = verify(run)
        assert report.ok, str(report)
    return found


def _gone(pid: int, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            return True
        if state == "Z":  # exited, not yet reaped by its (dead) parent's reaper
            return True
        time.sleep(0.1)
    return False


def test_ctrl_c_stops_every_worker_after_its_flush_and_exits_130(traces):
    # A terminal's Ctrl-C goes to the whole process group: the sweeping process and its workers.
    proc = _sweep_process(traces, start_new_session=True)
    wait_for_parts(proc, traces, 2, "*/part-*.parquet", timeout=120)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err == (
        f"Error: interrupted by Ctrl-C with 0 of 4 runs complete; the steps recorded so far "
        f"are in {traces}; continue each with 'steptrace record --resume RUN': "
        f"{traces}/s-lr1e-9, {traces}/s-lr2e-9; never started: s-lr3e-9, s-lr4e-9 (record them "
        "again)\n"
    )
    statuses = _statuses(traces)
    assert sorted(statuses) == ["s-lr1e-9", "s-lr2e-9"]  # the next ones never started
    for status, reason, _ in statuses.values():
        assert status == "incomplete" and reason.startswith("interrupted by Ctrl-C after step ")
    workers = {pid for _, _, pid in statuses.values()}
    assert proc.pid not in workers and len(workers) == 2
    assert all(_gone(pid) for pid in workers)
    assert list(traces.glob(".sweep-*")) == []


def test_workers_stop_when_the_sweeping_process_is_killed(traces):
    proc = _sweep_process(traces)
    wait_for_parts(proc, traces, 2, "*/part-*.parquet", timeout=120)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    statuses = _statuses(traces)
    assert all(_gone(pid) for _, _, pid in statuses.values()), "workers outlived the sweep"
    for status, reason, _ in _statuses(traces).values():
        assert status == "incomplete"
        assert reason.startswith("stopped: the sweep's parent process ended after step ")


def test_a_local_worker_killed_leaves_its_runs_to_resume_and_names_them(traces):
    # The standard library's pool gives up every task when one of its workers dies: the runs in
    # hand stop where their last flush left them, the others never start.
    proc = _sweep_process(traces)
    wait_for_parts(proc, traces, 2, "*/part-*.parquet", timeout=120)
    os.kill(meta(traces / "s-lr1e-9")["recorded_by"]["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert (proc.returncode, out) == (1, "")
    assert err == (
        "Error: a worker was lost mid-sweep: 0 of 4 runs complete; continue each with "
        f"'steptrace record --resume RUN': {traces / 's-lr1e-9'}, {traces / 's-lr2e-9'}; "
        "never started: s-lr3e-9, s-lr4e-9 (record them again)\n"
    )
    statuses = _statuses(traces)
    assert sorted(statuses) == ["s-lr1e-9", "s-lr2e-9"]
    assert all(status == "incomplete" for status, _, _ in statuses.values())
    assert all(_gone(pid) for _, _, pid in statuses.values())


# --- how many workers -----------------------------------------------------------------------


@pytest.mark.parametrize("cores", [1, 2, 8])
def test_how_many_workers(monkeypatch, cores):
    monkeypatch.setattr(sweeps, "available_cores", lambda: cores)
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


def test_workers_and_a_scheduler_are_two_answers_to_one_question(run_cli, traces):
    result = run_cli("record", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1",
                     "--out", traces)  # fmt: skip
    assert result.exit_code == 2
    assert result.output == (
        "Error: give one of scheduler and workers: each says who records the runs\n"
    )
    assert list(traces.iterdir()) == []


# --- comparing a grid: grouped and labelled by every setting that varies -------------------


def test_the_comparison_lines_runs_up_by_alpha_one_group_per_batch_size(traces):
    from steptrace import views

    runs = steptrace.sweep(["1e-9", "1e-8", "1e3"], batch_size=[1, 3], numerics="float64",
                           init=INIT, epochs=4, out=traces)  # fmt: skip
    outcomes = {r.path.name: views.run_outcome(steptrace.open_trace(r.path)) for r in runs}
    view = views.lr_sweep(outcomes)
    assert view.groups == ("batch 1", "batch 3")
    assert list(view.table.columns) == [
        "run", "α", "batch", "numerics", "final loss", "lowest loss", "at step", "diverged at",
        "status",
    ]  # fmt: skip
    assert view.table[["α", "batch"]].values.tolist() == [
        ["1e-9", "1"], ["1e-8", "1"], ["1e3", "1"], ["1e-9", "3"], ["1e-8", "3"], ["1e3", "3"],
    ]  # fmt: skip
    finals = view.points[view.points["which"] == "final loss"]
    assert finals.groupby("group")["lr"].apply(list).to_dict() == {
        "batch 1": [1e-9, 1e-8, 1e3], "batch 3": [1e-9, 1e-8, 1e3],
    }  # fmt: skip
    # α = 1e3 closes the ReLU for good with batches of 1; with batches of 3 it diverges
    assert view.diverged["why"].tolist() == ["diverges at step 1 (batch 3)"]
    best = min(outcomes, key=lambda k: outcomes[k]["final_loss"])
    assert best == "seed-float64-lr1e-8-b3"
    assert view.note == (
        f"Lowest final loss: α = 1e-8, batch 3 ({best}), {outcomes[best]['final_loss']:.6g}. "
        "Diverged: 1 of 6 runs."
    )


def test_a_worker_overlaps_computing_and_writing_only_with_a_core_to_spare(monkeypatch, tmp_path):
    for cores in (1, 2, 4, 8):
        monkeypatch.setattr(sweeps, "available_cores", lambda cores=cores: cores)
        for n in (1, 2, 4):
            with ProcessPoolExecutor(n) as pool:
                assert sweeps.spare_cores(pool) == (2 * n <= cores), (cores, n)
    with ThreadPoolExecutor(1) as threads:
        assert not sweeps.spare_cores(threads)  # its threads share one GIL already
        # Either way, the run is the run recorded alone.
        ds = seed_dataset()
        points = [(Settings.parse(ds, "1e-9", epochs=40_000, numerics="float64", init=INIT),
                   "r")]  # fmt: skip
        for pipelined in (True, False):
            out = tmp_path / str(pipelined)
            (run,) = sweeps.record_on(threads, ds, points, out, pipelined=pipelined)
            assert run.status == "complete" and run.summary.rows == 120_000
            alone = steptrace.record(ds, "1e-9", epochs=40_000, numerics="float64", init=INIT,
                                     out=tmp_path / f"alone-{pipelined}", name="r")  # fmt: skip
            result = compare_folders(alone.path.parent, out, ignore=["created"])
            assert result.identical, result.format()
