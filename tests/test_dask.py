"""Sweeps on a real Dask cluster: a scheduler and two worker processes on 127.0.0.1.

Dask is in the dev extra: these tests fail, not skip, without it."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

import steptrace
from steptrace import ConfigError
from steptrace.compare.folders import compare_folders
from steptrace.compare.traces import compare_traces
from steptrace.train.cluster import connect

from .conftest import steptrace_subprocess
from .reference import assert_bit_identical

INIT = "0.005,-0.0002,0.0002"


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=":0",
    ) as local, Client(local) as client:  # fmt: skip
        yield local, client


def meta(run: Path) -> dict:
    return json.loads((run / "_run.json").read_text())


def columns(run: Path) -> dict:
    table = steptrace.open_trace(run).read_table()
    return {n: table[n].to_numpy() for n in table.column_names if n != "run_id"}


def test_a_grid_recorded_on_the_cluster_is_each_run_recorded_alone(cluster, tmp_path):
    _, client = cluster
    settings = dict(numerics="float64", init=INIT, epochs=500, shuffle=True, seed=4)
    swept = steptrace.sweep(
        ["1e-9", "1e-3"], batch_size=[1, 2], out=tmp_path / "swept",
        executor=client.get_executor(), **settings,
    )  # fmt: skip
    assert [r.path.name for r in swept] == [
        f"seed-float64-lr{lr}-b{b}" for b in (1, 2) for lr in ("1e-9", "1e-3")
    ]
    workers = set(client.run(os.getpid).values())
    for run in swept:
        m = meta(run.path)
        alone = steptrace.record(
            "seed", m["lr"], batch_size=m["batch_size"], out=tmp_path / "alone", **settings
        )
        assert_bit_identical(columns(run.path), columns(alone.path))
        result = compare_traces(alone.path, run.path)  # settings compared, recorded_by not
        assert result.identical, result.format()
        # recorded by a worker process of the cluster, not by this one
        assert m["recorded_by"]["pid"] in workers and m["recorded_by"]["pid"] != os.getpid()
        assert m["recorded_by"]["host"] == socket.gethostname()
    assert [p.name for p in (tmp_path / "swept").iterdir() if p.name.startswith(".")] == []


def test_record_sends_the_runs_to_a_scheduler(cluster, run_cli, traces):
    local, client = cluster
    result = run_cli(
        "record", "--scheduler", local.scheduler_address, "--out", traces, "--lr", "1",
        "--lr", "1/2", "--numerics", "exact", "--epochs", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.output.splitlines()] == [
        str(traces / "seed-exact-lr1"), str(traces / "seed-exact-lr1_2"),
    ]  # fmt: skip
    steptrace.sweep(["1", "1/2"], numerics="exact", epochs=3, out=traces.parent / "here")
    same = compare_folders(traces.parent / "here", traces)
    assert same.identical and len(same.runs) == 2, same.format()
    workers = set(client.run(os.getpid).values())
    assert {meta(p)["recorded_by"]["pid"] for p in traces.iterdir()} <= workers


def _wait_for_parts(proc, out: Path, runs: int) -> None:
    deadline = time.monotonic() + 60
    while len({p.parent for p in out.glob("*/part-*.parquet")}) < runs:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no flush within 60 s"
        time.sleep(0.05)


def test_a_worker_killed_mid_run_leaves_its_run_to_resume_and_the_others_complete(
    cluster, run_cli, traces
):
    local, client = cluster
    settings = ["--numerics", "float64", "--init", INIT, "--epochs", "400000"]
    proc = steptrace_subprocess(
        "record", "--scheduler", local.scheduler_address, "--out", traces, "--name", "k",
        "--lr", "1e-9", "--lr", "2e-9", "--flush-seconds", "0.2", *settings,
    )  # fmt: skip
    _wait_for_parts(proc, traces, 2)
    victim = traces / "k-lr2e-9"
    os.kill(meta(victim)["recorded_by"]["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert out.startswith(f"{traces / 'k-lr1e-9'}: 1200000 steps, 1200000 rows; final loss ")
    assert out.count("\n") == 1 and "did not diverge" in out
    assert err == (
        "Error: a worker was lost mid-sweep: 1 of 2 runs complete; continue it with "
        f"'steptrace record --resume RUN': {victim}\n"
    )
    assert meta(victim)["status"] == "incomplete"
    assert meta(traces / "k-lr1e-9")["status"] == "complete"
    assert sorted(p.name for p in traces.iterdir()) == ["k-lr1e-9", "k-lr2e-9"]

    resumed = run_cli("record", "--resume", victim)
    assert resumed.exit_code == 0, resumed.output
    assert meta(victim)["status"] == "complete"
    alone = run_cli("record", "--out", traces.parent / "alone", "--lr", "2e-9", *settings)
    assert alone.exit_code == 0, alone.output
    same = compare_traces(traces.parent / "alone" / "seed-float64-lr2e-9", victim)
    assert same.identical, same.format()
    client.wait_for_workers(2, timeout=30)  # the nanny restarts the worker killed


def test_an_unreachable_scheduler_is_one_line_at_once_and_nothing_is_written(run_cli, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    result = run_cli("record", "--scheduler", f"tcp://127.0.0.1:{port}", "--out", tmp_path / "o")
    assert time.monotonic() - start < 5
    assert result.exit_code == 2
    assert result.output == (
        f"Error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port} ([Errno 111] "
        "Connection refused); start one with 'dask scheduler' or check the address\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_scheduler_without_workers_is_one_line(tmp_path):
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty:
        start = time.monotonic()
        with pytest.raises(ConfigError) as error:
            connect(empty.scheduler_address, timeout=1)
        assert time.monotonic() - start < 5
    assert str(error.value) == (
        f"the Dask scheduler at {empty.scheduler_address} has no workers; start some with "
        f"'dask worker {empty.scheduler_address} --nthreads 1'"
    )


def test_without_dask_the_scheduler_option_says_what_to_install(run_cli, monkeypatch, traces):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed: ImportError
    result = run_cli("record", "--scheduler", "tcp://127.0.0.1:8786", "--out", traces)
    assert result.exit_code == 2
    assert result.output == (
        "Error: --scheduler sends the runs to a Dask cluster and needs Dask: "
        "pip install 'steptrace[dask]'\n"
    )
    assert list(traces.iterdir()) == []


def test_runs_on_a_cluster_overlap_their_writing_only_where_hosts_have_cores_to_spare(cluster):
    from steptrace.train.sweeps import available_cores, spare_cores

    _, client = cluster  # 2 single-threaded workers on this host
    assert spare_cores(client.get_executor()) == (available_cores() >= 4)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as one, Client(one) as alone:  # fmt: skip
        assert spare_cores(alone.get_executor()) == (available_cores() >= 2)
