"""Shared fixtures: a scratch traces folder and a way to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import settings

REPO = Path(__file__).resolve().parent.parent

# Property tests explore new examples on a developer's machine; CI (HYPOTHESIS_PROFILE=ci, set
# by .ci/run) replays a fixed set so that a red build always means a changed result.
settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def traces(tmp_path: Path) -> Path:
    """An empty folder to record runs into."""
    folder = tmp_path / "traces"
    folder.mkdir()
    return folder


@pytest.fixture
def run_cli():
    """Invoke ``steptrace ARGS…`` in-process; returns click's Result (exit_code, output)."""

    from steptrace.cli import cli

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return run


def steptrace_subprocess(*args: str, cwd: Path | None = None, **kwargs) -> subprocess.Popen[str]:
    """Start ``python -m steptrace ARGS…`` as a real process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "steptrace", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def wait_for_parts(
    proc: subprocess.Popen, folder: Path, count: int, pattern: str = "part-*.parquet",
    timeout: float = 60,
) -> None:  # fmt: skip
    """Wait until ``count`` flushed parts match ``pattern`` under ``folder`` while ``proc`` still
    runs (its stderr shown if it ended first), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while len(list(folder.glob(pattern))) < count:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, f"no flush within {timeout:g} s"
        time.sleep(0.05)
