"""Concurrent writers never clobber each other; readers during a recording see whole steps."""

from __future__ import annotations

import random
import signal
import time

import numpy as np
import pandas as pd

from steptrace import open_trace, verify

from .conftest import steptrace_subprocess

MOVING = ("--numerics", "float64", "--init", "0.005,-0.0002,0.0002", "--lr", "1e-9")


def test_recorders_started_together_into_one_folder_each_get_their_own_complete_run(traces):
    # Six at once: three asking for the same name, three for the default name (also shared).
    named = [("--name", "same", "--epochs", str(20_000 + i)) for i in range(3)]
    default = [("--epochs", str(30_000 + i), "--batch-size", "2") for i in range(3)]
    procs = [steptrace_subprocess("record", "--out", traces, *MOVING, *a) for a in named + default]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, outputs
    assert all(err == "" for _, err in outputs), outputs
    folders = sorted(p.name for p in traces.iterdir())
    assert folders == [
        "same", "same-2", "same-3",
        "seed-float64-lr1e-9", "seed-float64-lr1e-9-2", "seed-float64-lr1e-9-3",
    ]  # fmt: skip
    said = sorted(out.splitlines()[0].split(":")[0] for out, _ in outputs)
    assert said == sorted(str(traces / f) for f in folders)  # each was told where its run went
    runs = [open_trace(traces / f) for f in folders]
    assert len({r.run_id for r in runs}) == 6
    # Every run holds exactly its own settings' rows, and every row follows the maths.
    epochs = sorted(int(r.meta["epochs"]) for r in runs)
    assert epochs == [20_000, 20_001, 20_002, 30_000, 30_001, 30_002]
    for run in runs:
        report = verify(run.path)
        assert report.ok and report.status == "complete", str(report)
        assert report.rows == 3 * int(run.meta["epochs"])
        assert set(pd.read_parquet(run.path, columns=["run_id"])["run_id"]) == {run.run_id}


def whole_steps(df: pd.DataFrame, batch_size: int, rows: int = 3) -> bool:
    """Whether ``df``'s rows are steps 0, 1, … each with all its samples (2 then 1 for the
    article's three rows in batches of two)."""
    sizes = np.bincount(df["step"].to_numpy())
    full, rest = divmod(rows, batch_size)
    per_epoch = [batch_size] * full + ([rest] if rest else [])
    expected = np.resize(per_epoch, len(sizes))
    return bool((sizes == expected).all())


def test_a_reader_polling_a_live_recording_sees_only_whole_flushed_steps(traces):
    # The recorder runs in short bursts and is frozen (SIGSTOP) wherever it happens to be —
    # writing a row group, closing a part, renaming it — while the folder is read.
    proc = steptrace_subprocess(
        "record", "--out", traces, "--name", "live", "--epochs", "10000000", "--batch-size", "2",
        *MOVING,
    )  # fmt: skip
    run = traces / "live"
    bursts = random.Random(6)
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not list(run.glob("part-*.parquet")):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no flush within 120 s"
            time.sleep(0.05)
        for _ in range(4):
            proc.send_signal(signal.SIGSTOP)
            steps = pd.read_parquet(run, columns=["step"])  # plain pandas
            assert whole_steps(steps, 2), f"a read of {len(steps)} rows ends inside a step"
            report = verify(run)
            assert report.ok and report.status == "running", str(report)
            assert report.rows == len(steps)  # the writer is frozen: both saw the same steps
            seen.append(len(steps))
            proc.send_signal(signal.SIGCONT)
            time.sleep(bursts.uniform(0.1, 0.3))
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()
    assert seen == sorted(seen) and len(set(seen)) > 1, seen  # it grew, nothing vanished
    final = verify(run)
    assert final.ok and final.status == "incomplete" and final.rows >= seen[-1], str(final)
