"""Every bad input is answered with one clear line and a non-zero exit, never a traceback; and
faults while recording (read-only or full disk, permission denied, Ctrl-C, SIGKILL) keep what was
flushed, marked incomplete, and it verifies."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import steptrace
from steptrace import open_trace, verify
from steptrace.cli import cli

from .conftest import steptrace_subprocess

MOVING = ["--numerics", "float64", "--init", "0.005,-0.0002,0.0002", "--lr", "1e-9"]
NUMBER_TEXT = "must be a number such as 0.5, 1e-7 or 1/200"
FINITE_TEXT = "must be a finite number"


class Case(NamedTuple):
    name: str
    args: list[str]  # {d}: the datasets' folder, {t}: the traces' folder, {out}: a new folder
    message: str  # the one line printed (Error: … on stderr, PROBLEM … on stdout)
    code: int
    subprocess: bool = False  # also run as a real process


CASES = [
    # --- command-line values
    Case("lr NaN", ["record", "--lr", "nan"],
         f"Error: learning rate {FINITE_TEXT}, got 'nan'", 2, subprocess=True),
    Case("lr inf", ["record", "--lr", "inf"], f"Error: learning rate {FINITE_TEXT}, got 'inf'", 2),
    Case("lr negative", ["record", "--lr", "-1"],
         "Error: learning rate must be greater than 0, got -1", 2),
    Case("lr zero", ["record", "--lr", "0"],
         "Error: learning rate must be greater than 0, got 0", 2),
    Case("lr text", ["record", "--lr", "fast"],
         f"Error: learning rate {NUMBER_TEXT}, got 'fast'", 2),
    Case("lr 1/0", ["record", "--lr", "1/0"], "Error: learning rate '1/0' divides by zero", 2),
    Case("name too long", ["record", "--name", "n" * 300],
         "Error: cannot create run folder in '{out}': File name too long; choose a shorter "
         "--name", 1),
    Case("init beyond any float", ["record", "--init", "1e400,1,1"],
         "Error: initial weight 1 (1e+400) is too large for float64 (exact runs record it too)",
         2),
    Case("lr too long to hold", ["record", "--lr", "1e99999999999"],
         "Error: learning rate '1e99999999999' is too long to read exactly (numerators and "
         "denominators up to 10^4,000)", 2),
    Case("lr beyond float64", ["record", "--lr", "1e400", "--numerics", "float64"],
         "Error: learning rate 1e400 is too large for float64", 2),
    Case("lr rounds to 0", ["record", "--lr", "1e-50", "--numerics", "float32"],
         "Error: learning rate 1e-50 rounds to 0 in float32", 2),
    Case("zero epochs", ["record", "--epochs", "0"],
         "Error: epochs must be a whole number of at least 1, got 0", 2),
    Case("text epochs", ["record", "--epochs", "x"],
         "Error: Invalid value for '--epochs': 'x' is not a valid integer. "
         "(see 'steptrace record -h')", 2),
    Case("batch larger than the dataset", ["record", "--batch-size", "4"],
         "Error: batch size 4 is larger than the dataset (3 rows); use at most 3", 2),
    Case("unknown numerics", ["record", "--numerics", "float16"],
         "Error: Invalid value for '--numerics': 'float16' is not one of 'exact', 'float64', "
         "'float32'. (see 'steptrace record -h')", 2, subprocess=True),
    Case("init: wrong count", ["record", "--init", "1,2"],
         "Error: --init has 2 weights but dataset 'seed' has 3 feature columns; give one "
         "weight per feature", 2),
    Case("init: text", ["record", "--init", "1,x,3"],
         f"Error: initial weight 2 {NUMBER_TEXT}, got 'x'", 2),
    Case("init: NaN", ["record", "--init", "nan,1,2"],
         f"Error: initial weight 1 {FINITE_TEXT}, got 'nan'", 2),
    Case("init: beyond float32", ["record", "--init", "1e39,0,0", "--numerics", "float32"],
         "Error: initial weight 1 (1e+39) is too large for float32", 2),
    Case("columns of the seed dataset", ["record", "--features", "a,b"],
         "Error: --target and --features choose columns of a dataset file; the seed dataset's "
         "columns are fixed: broccoli, tagada_strawberries, workout_hours → good_shape", 2),
    # --- datasets
    Case("dataset: missing file", ["record", "--dataset", "{d}/nope.csv"],
         "Error: dataset '{d}/nope.csv' does not exist (use 'seed' for the article's)", 2),
    Case("dataset: missing target", ["record", "--dataset", "{d}/good.csv", "--target", "z"],
         "Error: good.csv: no target column 'z' (columns: ['a', 'b', 't'])", 2),
    Case("dataset: strings", ["record", "--dataset", "{d}/strings.csv", "--init", "1,1"],
         f"Error: strings.csv: column 'b', row 1 {NUMBER_TEXT}, got 'many' (columns must be "
         "numeric)", 2),
    Case("dataset: NaN", ["record", "--dataset", "{d}/nan.csv", "--init", "1,1"],
         "Error: nan.csv: column 'a', row 0 is NaN; values must be finite", 2),
    Case("dataset: inf", ["record", "--dataset", "{d}/inf.csv", "--init", "1,1"],
         "Error: inf.csv: column 't', row 1 is -inf; values must be finite", 2),
    Case("dataset: NaN in Parquet", ["record", "--dataset", "{d}/nan.parquet", "--init", "1"],
         "Error: nan.parquet: column 'a', row 1 is nan; values must be finite", 2),
    Case("dataset: empty file", ["record", "--dataset", "{d}/empty.csv"],
         "Error: empty.csv: the file is empty", 2),
    Case("dataset: header only", ["record", "--dataset", "{d}/header.csv", "--init", "1,1"],
         "Error: header.csv: the dataset has no rows", 2),
    Case("dataset: duplicate columns", ["record", "--dataset", "{d}/duplicate.csv"],
         "Error: duplicate.csv: duplicate column(s) a; give each column its own name", 2),
    Case("dataset: duplicate columns in Parquet", ["record", "--dataset", "{d}/duplicate.parquet"],
         "Error: duplicate.parquet: duplicate column(s) a; give each column its own name", 2),
    Case("dataset: a row longer than the header", ["record", "--dataset", "{d}/long_row.csv"],
         "Error: long_row.csv: row 0 has more values than the header's 3 columns; give every "
         "row one value per column", 2),
    Case("dataset: 1e400 (beyond float64)", ["record", "--dataset", "{d}/huge.csv",
                                             "--init", "1,1", "--numerics", "float64"],
         "Error: huge: value 1e+400 in column 'b', row 1 is too large for float64; rescale the "
         "column", 2, subprocess=True),
    Case("dataset: 1e400 in an exact run", ["record", "--dataset", "{d}/huge.csv",
                                            "--init", "1,1"],
         "Error: huge: value 1e+400 in column 'b', row 1 is too large for float64 (exact runs "
         "record it too); rescale the column", 2),
    Case("dataset: 1e39 in float32", ["record", "--dataset", "{d}/big.csv", "--init", "1,1",
                                      "--numerics", "float32"],
         "Error: big: value 1e+39 in column 'a', row 0 is too large for float32; rescale the "
         "column or use --numerics float64", 2),
    # --- traces given to replay and verify
    Case("replay: truncated part file", ["replay", "{t}/truncated.parquet"],
         "Error: {t}/truncated.parquet: not a readable Parquet file (Parquet magic bytes not "
         "found in footer. Either the file is corrupted or this is not a parquet file.)", 2,
         subprocess=True),
    Case("verify: truncated part file", ["verify", "{t}/truncated.parquet"],
         "Error: {t}/truncated.parquet: not a readable Parquet file (Parquet magic bytes not "
         "found in footer. Either the file is corrupted or this is not a parquet file.)", 2),
    Case("replay: run with a truncated part", ["replay", "{t}/truncated_run"],
         "Error: {t}/truncated_run/part-000000.parquet: unreadable part file (Parquet magic "
         "bytes not found in footer. Either the file is corrupted or this is not a parquet "
         "file.)", 2, subprocess=True),
    Case("verify: run with a truncated part", ["verify", "{t}/truncated_run"],
         "PROBLEM {t}/truncated_run: part-000000.parquet: not a readable Parquet file (Parquet "
         "magic bytes not found in footer. Either the file is corrupted or this is not a "
         "parquet file.)", 1),
    Case("replay: Parquet that is not a trace", ["replay", "{t}/foreign.parquet"],
         "Error: {t}/foreign.parquet: not a steptrace trace (no 'steptrace' metadata)", 2),
    Case("verify: Parquet that is not a trace", ["verify", "{t}/foreign.parquet"],
         "Error: {t}/foreign.parquet: not a steptrace trace (no 'steptrace' metadata)", 2),
    Case("replay: newer format", ["replay", "{t}/newer"],
         "Error: {t}/newer uses trace format 3.0 (written by steptrace 9.0); this steptrace "
         "reads formats up to 2.x: upgrade with 'pip install -U steptrace'", 2),
    Case("verify: newer format", ["verify", "{t}/newer"],
         "Error: {t}/newer uses trace format 3.0 (written by steptrace 9.0); this steptrace "
         "reads formats up to 2.x: upgrade with 'pip install -U steptrace'", 2, subprocess=True),
    Case("replay: metadata with more features than the rows", ["replay", "{t}/wider"],
         "Error: {t}/wider: its metadata (4 features, float64) does not match its rows "
         "(part-000000.parquet has no column x_4); 'steptrace verify' shows more", 2),
    Case("verify: metadata with more features than the rows", ["verify", "{t}/wider"],
         "PROBLEM {t}/wider: _run.json, column dataset.features: says ['a', 'b', 'c', 'd'], "
         "but part-000000.parquet's copy of the metadata says ['a', 'b', 'c']", 1),
    Case("verify: metadata whose learning rate the rows contradict", ["verify", "{t}/other_lr"],
         "PROBLEM {t}/other_lr: part-000000.parquet, step 0, sample 0, column lr: recorded "
         "1.0, the metadata says 2.0", 1),
    Case("replay: missing path", ["replay", "{t}/missing"],
         "Error: no folder '{t}/missing'", 2),
    Case("verify: missing path", ["verify", "{t}/missing"],
         "Error: no trace at '{t}/missing'", 2),
]  # fmt: skip


def _datasets(d: Path) -> None:
    d.mkdir()
    files = {
        "good.csv": "a,b,t\n1,2,0\n3,4,1\n",
        "strings.csv": "a,b,t\n1,2,0\n3,many,1\n",
        "nan.csv": "a,b,t\nNaN,2,0\n",
        "inf.csv": "a,b,t\n1,2,0\n3,4,-inf\n",
        "empty.csv": "",
        "header.csv": "a,b,t\n",
        "duplicate.csv": "a,a,t\n1,2,0\n",
        "long_row.csv": "a,b,t\n1,2,3,4\n",
        "huge.csv": "a,b,t\n1,2,0\n1,1e400,1\n",
        "big.csv": "a,b,t\n1e39,2,0\n",
    }
    for name, text in files.items():
        (d / name).write_text(text)
    pd.DataFrame({"a": [1.0, np.nan], "t": [0.0, 1.0]}).to_parquet(d / "nan.parquet")
    columns = [pa.array([1]), pa.array([2]), pa.array([0])]
    pq.write_table(pa.table(columns, names=["a", "a", "t"]), d / "duplicate.parquet")


def _edit_run(run: Path, change) -> None:
    info = json.loads((run / "_run.json").read_text())
    change(info)
    (run / "_run.json").write_text(json.dumps(info))


def _traces(t: Path, d: Path) -> None:
    t.mkdir()
    run = steptrace.record(out=t, numerics="float64", name="good").path
    part = (run / "part-000000.parquet").read_bytes()
    (t / "truncated.parquet").write_bytes(part[: len(part) // 2])
    shutil.copytree(run, t / "truncated_run")
    (t / "truncated_run" / "part-000000.parquet").write_bytes(part[: len(part) // 2])
    pd.DataFrame({"a": [1, 2]}).to_parquet(t / "foreign.parquet")
    shutil.copytree(run, t / "newer")
    _edit_run(t / "newer", lambda i: i.update(format_version="3.0", steptrace_version="9.0"))
    three = d / "three.csv"
    three.write_text("a,b,c,t\n1,2,3,0\n")
    wider = steptrace.record(three, out=t, numerics="float64", init="1,1,1", name="wider").path
    _edit_run(wider, lambda i: i["dataset"]["features"].append("d"))
    shutil.copytree(run, t / "other_lr")
    # Both copies of the metadata say α = 2 (so they agree), the rows say 1.
    _edit_run(t / "other_lr", lambda i: i.update(lr="2", lr_exact="2"))
    part_path = t / "other_lr" / "part-000000.parquet"
    table = pq.read_table(part_path)
    meta = json.loads(table.schema.metadata[b"steptrace"])
    meta.update(lr="2", lr_exact="2")
    pq.write_table(table.replace_schema_metadata({"steptrace": json.dumps(meta)}), part_path)
    three.unlink()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_inputs")
    _datasets(root / "d")
    _traces(root / "t", root / "d")
    return root


def _files(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_clear_line_and_leaves_nothing_behind(case, inputs):
    paths = {"d": inputs / "d", "t": inputs / "t", "out": inputs / "out"}
    args = [a.format(**paths) for a in case.args]
    if args[0] == "record":
        args += ["--out", str(paths["out"])]
    expected = case.message.format(**paths)
    before = _files(inputs)
    runs = [CliRunner().invoke(cli, args)]
    if case.subprocess:
        proc = subprocess.run(
            [sys.executable, "-m", "steptrace", *args], capture_output=True, text=True, timeout=120
        )  # fmt: skip
        runs.append(proc)
    for result in runs:
        code = getattr(result, "exit_code", None)
        code = result.returncode if code is None else code
        out, err = result.stdout, result.stderr
        assert "Traceback" not in out + err
        assert code == case.code, out + err
        if expected.startswith("Error: "):
            assert err == expected + "\n"
            assert out == ""
        else:
            assert out == expected + "\n"
    # Nothing written, and so nothing that could claim to be complete.
    assert _files(inputs) == before


# --- faults while recording -------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, options: str, real: bool) -> Iterator[bool]:
    """Mount a small tmpfs at ``path`` if asked and this process may (root, as in CI); yields
    whether it did. Callers simulate the fault at the writer's seam when it did not."""
    path.mkdir()
    mounted = False
    if real and shutil.which("mount") and os.geteuid() == 0:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
        )  # fmt: skip
        mounted = done.returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.parametrize("real", [True, False], ids=["mounted", "simulated"])
def test_a_read_only_output_folder(tmp_path, monkeypatch, real):
    with tmpfs(tmp_path / "ro", "ro,size=1m", real) as mounted:
        out = tmp_path / "ro" / "traces"
        if not mounted:  # simulated: the folder cannot be made, as on a read-only disk
            real_mkdir = Path.mkdir

            def read_only(self, *args, **kwargs):
                if self.is_relative_to(tmp_path / "ro"):
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
                return real_mkdir(self, *args, **kwargs)

            monkeypatch.setattr(Path, "mkdir", read_only)
        result = CliRunner().invoke(cli, ["record", "--out", str(out)])
        assert result.exit_code == 1
        assert result.stderr == (
            f"Error: cannot create output folder '{out}': Read-only file system"
            "; choose a folder you can write to with --out\n"
        )
        assert not out.exists()


def test_permission_denied_for_an_unprivileged_user(tmp_path):
    # A real second user: root ignores file permissions, so the recorder runs as 'nobody' in a
    # folder only root may write to.
    shared = Path(tempfile.gettempdir()) / f"steptrace-perm-{os.getpid()}"
    shared.mkdir(mode=0o755)
    try:
        out = shared / "traces"
        out.mkdir(mode=0o755)
        command = [sys.executable, "-m", "steptrace", "record", "--out", str(out)]
        if os.geteuid() == 0 and shutil.which("setpriv"):
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        else:
            out.chmod(0o555)  # an ordinary user is refused by the permissions themselves
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=shared)
        assert done.returncode == 1, done.stderr
        assert done.stderr == (
            f"Error: cannot create run folder in '{out}': Permission denied"
            "; choose a folder you can write to with --out\n"
        )
        assert list(out.iterdir()) == []
    finally:
        shutil.rmtree(shared)


@pytest.mark.parametrize("real", [True, False], ids=["mounted", "simulated"])
def test_a_full_disk_keeps_the_flushed_steps_marked_and_resumable(tmp_path, monkeypatch, real):
    args = [*MOVING, "--epochs", "100000", "--flush-seconds", "0", "--name", "full"]
    with tmpfs(tmp_path / "small", "size=16m", real) as mounted:
        out = tmp_path / "small" / "traces"
        if not mounted:  # simulated: the second part cannot be written (ENOSPC)
            import steptrace.trace.writer as writer

            real = writer.pq.ParquetWriter

            class FullDisk(real):  # type: ignore[misc, valid-type]
                def __init__(self, where, *a, **k):
                    if "000001" in str(where):
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    super().__init__(where, *a, **k)

            monkeypatch.setattr(writer.pq, "ParquetWriter", FullDisk)
        result = CliRunner().invoke(cli, ["record", "--out", str(out), *args])
        run = out / "full"
        assert result.exit_code == 1, result.output
        message = result.stderr.strip()
        assert message.startswith(f"Error: cannot write trace '{run}': ")
        assert "No space left on device" in message
        kept = int(message.split("; the ")[1].split(" rows")[0])
        assert message.endswith(
            f"; the {kept} rows flushed before are kept and the run is marked incomplete: make "
            f"room, then continue it with 'steptrace record --resume {run}'"
        )
        assert 0 < kept < 300_000
        info = json.loads((run / "_run.json").read_text())
        assert info["status"] == "incomplete" and info["reason"] == message[len("Error: ") :]
        assert len(pd.read_parquet(run)) == kept
        assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no half part left
        report = verify(run)
        assert report.ok and report.rows == kept, str(report)
        # Room made (moved to a bigger disk), the run continues to the end.
        shutil.copytree(run, tmp_path / "moved")
    monkeypatch.undo()
    resumed = CliRunner().invoke(cli, ["record", "--resume", str(tmp_path / "moved")])
    assert resumed.exit_code == 0, resumed.output
    final = verify(tmp_path / "moved")
    assert final.ok and final.status == "complete" and final.rows == 300_000, str(final)


def _wait_for_a_part(proc: subprocess.Popen[str], run: Path) -> None:
    deadline = time.monotonic() + 120
    while not list(run.glob("part-*.parquet")):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "no flush within 120 s"
        time.sleep(0.02)


def test_ctrl_c_finishes_the_flush_keeps_the_steps_and_exits_130(traces):
    proc = steptrace_subprocess(
        "record", "--out", traces, "--name", "stopped", *MOVING, "--epochs", "10000000",
        "--flush-seconds", "0.2",
    )  # fmt: skip
    run = traces / "stopped"
    _wait_for_a_part(proc, run)
    proc.send_signal(signal.SIGINT)  # what the terminal sends on Ctrl-C
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert out == "" and "Traceback" not in err
    last = int(err.split("after step ")[1].split(";")[0])
    assert err == (
        f"Error: interrupted by Ctrl-C after step {last}; the steps recorded so far are in "
        f"{run} (marked incomplete; continue with --resume)\n"
    )
    info = json.loads((run / "_run.json").read_text())
    assert (info["status"], info["reason"]) == (
        "incomplete", f"interrupted by Ctrl-C after step {last}",
    )  # fmt: skip
    report = verify(run)
    assert report.ok and report.steps == last + 1 and report.status == "incomplete", str(report)


MOVING_FROM = ["--init", "0.005,-0.0002,0.0002", "--lr", "1e-9"]
KILLS = [
    (0, ["--numerics", "float64", *MOVING_FROM]),
    (1, ["--numerics", "float32", "--batch-size", "2", *MOVING_FROM]),
    # exact: data the initial weight fits exactly, so the rationals never grow
    (2, ["--numerics", "exact", "--dataset", "{fit}", "--init", "1", "--batch-size", "2"]),
    (3, ["--numerics", "float64", "--shuffle", "--seed", "4", *MOVING_FROM]),
]


@pytest.mark.parametrize(("seed", "settings"), KILLS, ids=[f"seed{s}" for s, _ in KILLS])
def test_sigkill_at_a_random_moment_keeps_every_flushed_step(tmp_path, traces, seed, settings):
    fit = tmp_path / "fit.csv"
    fit.write_text("a,t\n1,1\n2,2\n3,3\n")
    proc = steptrace_subprocess(
        "record", "--out", traces, "--name", "killed", "--epochs", "10000000",
        "--flush-seconds", "0.05", *[a.format(fit=fit) for a in settings],
    )  # fmt: skip
    run = traces / "killed"
    _wait_for_a_part(proc, run)
    time.sleep(random.Random(seed).uniform(0, 0.4))
    assert proc.poll() is None  # killed while recording
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    df = pd.read_parquet(run, columns=["step", "sample"])  # plain pandas on the run folder
    assert len(df) > 0
    for part in run.glob("part-*.parquet"):  # every file that looks like data is whole
        pq.read_table(part)
    assert open_trace(run).status == "incomplete"
    assert json.loads((run / "_run.json").read_text())["status"] == "incomplete"
    report = verify(run)
    assert report.ok and report.rows == len(df), str(report)


def test_divergence_is_data_recorded_faithfully_without_warnings(tmp_path, traces):
    # Each step overshoots to the other side, where the other sample's gate is open: the
    # weight grows tenfold per step until it overflows to inf, then NaN.
    seesaw = tmp_path / "seesaw.csv"
    seesaw.write_text("a,t\n1,1\n-1,1\n")
    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "steptrace", "record",
         "--out", str(traces), "--dataset", str(seesaw), "--numerics", "float64", "--lr", "10",
         "--init", "2", "--epochs", "400", "--name", "seesaw"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.splitlines()[0] == (
        f"{traces}/seesaw: 800 steps, 800 rows; final loss 0.5; DIVERGED at step 5 (loss over "
        "1e+06× the first epoch's)"
    )
    df = steptrace.load_trace(traces / "seesaw")
    assert np.isinf(df["w2_after_1_1"]).any() and df["w2_after_1_1"].isna().any()
    report = verify(traces / "seesaw")  # every inf and NaN is what the maths gives
    assert report.ok and report.rows == 800, str(report)
