"""Following a run while it is recorded: each look reads only the new part files' footers and
the new steps' rows, and what it shows equals what the finished run's files say."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from steptrace import open_trace, views
from steptrace.errors import TraceError
from steptrace.trace.reader import Trace
from steptrace.views import parts
from tests import dashboard_runs as runs


@pytest.fixture
def footers_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the part files whose footer is read, in order."""
    seen: list[str] = []
    real = pq.read_metadata

    def spy(where, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(Path(where).name)
        return real(where, *args, **kwargs)

    monkeypatch.setattr(parts.pq, "read_metadata", spy)
    return seen


def test_a_run_being_recorded_grows_and_ends(traces: Path) -> None:
    growing = runs.Growing(traces, parts=3)
    live = views.LiveRun(growing.path)
    snap = live.refresh()
    assert (snap.last, snap.steps, snap.status, snap.running) == (-1, 0, "running", True)
    prints = {snap.fingerprint}
    for expected in growing.last_steps[:2]:
        assert growing.flush() == expected
        snap = live.refresh()
        assert (snap.last, snap.running) == (expected, True)
        assert snap.fingerprint not in prints
        prints.add(snap.fingerprint)
    assert live.refresh().fingerprint == snap.fingerprint  # nothing new: the same
    growing.finish()
    snap = live.refresh()
    assert (snap.last, snap.status, snap.running) == (599, "complete", False)
    assert snap.trace.summary is not None


def test_a_recorder_that_stops_leaves_an_incomplete_run(traces: Path) -> None:
    growing = runs.Growing(traces)
    growing.flush()
    live = views.LiveRun(growing.path)
    assert live.refresh().running
    growing.finish("incomplete")
    snap = live.refresh()
    assert (snap.status, snap.trace.reason, snap.last) == (
        "incomplete", "interrupted by the test", 149
    )  # fmt: skip


def test_each_look_reads_the_footers_of_new_parts_only(traces: Path, footers_read) -> None:
    growing = runs.Growing(traces, parts=4)
    live = views.LiveRun(growing.path)
    for i in range(4):
        growing.flush()
        footers_read.clear()
        snap = live.refresh()
        live.refresh()
        assert footers_read == [f"part-{i:06d}.parquet"]
        # Reading a step, the last step and the run table use what was read.
        views.step_view(snap.trace, snap.last)
        assert views.last_step(snap.trace) == snap.last
        views.run_table(views.scan(traces))
        assert footers_read == [f"part-{i:06d}.parquet"]


def test_curves_and_summary_read_the_new_steps_only(
    traces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    growing = runs.Growing(traces, parts=4)  # 150 steps a part
    live = views.LiveRun(growing.path)
    asked: list[tuple[int | None, int | None]] = []
    real = Trace.read_table

    def spy(self: Trace, columns=None, filters=None, steps=None):  # type: ignore[no-untyped-def]
        asked.append(steps)
        return real(self, columns, filters, steps)

    monkeypatch.setattr(Trace, "read_table", spy)
    growing.flush()
    assert live.curve("loss").steps == 150
    assert asked == [(0, 150)]
    growing.flush()
    assert live.curve("loss").steps == 300 and live.divergence() is None
    assert asked == [(0, 150), (150, 300)]  # one read of the new steps for both
    live.curve("w2_after_1_2")  # a curve asked for later: its steps so far, once
    assert asked[2:] == [(0, 300)]
    growing.flush()
    live.curve("w2_after_1_2")
    assert asked[3:] == [(300, 450)]


def test_what_a_live_run_shows_equals_the_finished_runs_files(traces: Path) -> None:
    growing = runs.Growing(traces, parts=4)
    live = views.LiveRun(growing.path)
    for _ in range(3):
        growing.flush()
        live.curve("loss")
        live.curve("w2_after_1_1", 100, None)
    growing.finish()
    trace = open_trace(growing.path)
    snap = live.refresh()
    for column, lo, hi in [("loss", None, None), ("w2_after_1_1", 100, 599), ("loss", 7, 407)]:
        mine, theirs = live.curve(column, lo, hi), views.curve(trace, column, lo, hi)
        assert mine.frame.equals(theirs.frame)
        assert (mine.steps, mine.bucket, mine.lo, mine.hi) == (
            theirs.steps, theirs.bucket, theirs.lo, theirs.hi
        )  # fmt: skip
    outcome = live.outcome()
    stored = views.run_outcome(trace)
    assert outcome == {**stored, "status": snap.status}
    assert live.summary().steps == 600


def test_a_long_live_curve_is_downsampled_as_the_files_curve_is(traces: Path) -> None:
    growing = runs.Growing(traces, epochs=1000, parts=2)  # 3000 steps
    live = views.LiveRun(growing.path)
    growing.flush()
    growing.flush()
    mine, theirs = live.curve("loss"), views.curve(open_trace(growing.path), "loss")
    assert mine.downsampled and mine.bucket == theirs.bucket == 4
    assert mine.frame.equals(theirs.frame)


def test_a_curve_grown_over_many_looks_equals_the_files_and_keeps_what_it_showed(
    traces: Path,
) -> None:
    """The kept steps grow in place (their room doubles past 1024, 2048 steps): each look
    shows what the files hold so far, and a curve shown before stays as it was."""
    growing = runs.Growing(traces, epochs=1000, parts=30)  # 3000 steps, 100 a part
    live = views.LiveRun(growing.path)
    shown = []
    for k in range(30):
        growing.flush()
        if k % 3 == 0:
            shown.append((live.curve("loss", 50, None, max_points=10**6), k))
    trace = open_trace(growing.path)
    for lo, hi in [(None, None), (0, 0), (1023, 1025), (2047, 2999), (2999, None)]:
        mine, theirs = live.curve("loss", lo, hi), views.curve(trace, "loss", lo, hi)
        assert mine.frame.equals(theirs.frame), (lo, hi)
    everything = views.curve(trace, "loss", 50, None, max_points=10**6).frame
    for curve, k in shown:
        assert curve.frame.equals(everything.iloc[: (k + 1) * 100 - 50].reset_index(drop=True))


def test_a_live_run_that_diverges_says_where_while_it_is_recorded(traces: Path) -> None:
    boom = runs.diverging(traces)
    live = views.LiveRun(boom)
    assert live.divergence() == views.first_divergence(open_trace(boom))
    assert live.divergence() is not None and live.divergence().step == 1  # type: ignore[union-attr]


def test_an_ended_runs_divergence_is_read_from_its_metadata(
    traces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boom = open_trace(runs.diverging(traces))
    fine = open_trace(runs.article(traces))
    expected = views.first_divergence(boom)
    assert expected is not None
    monkeypatch.setattr(Trace, "iter_batches", lambda *a, **k: pytest.fail("rows read"))
    assert views.run_divergence(boom) == expected
    assert views.run_divergence(fine) is None


def test_a_part_rewritten_or_broken_is_read_again(traces: Path) -> None:
    growing = runs.Growing(traces, parts=2)
    growing.flush()
    live = views.LiveRun(growing.path)
    assert live.refresh().last == 299
    part = growing.path / "part-000000.parquet"
    part.write_bytes(b"overwritten")
    with pytest.raises(TraceError, match="part-000000.parquet: not a readable Parquet file"):
        live.refresh()


def test_curve_columns_are_checked_as_the_files_curves_are(traces: Path) -> None:
    growing = runs.Growing(traces)
    growing.flush()
    with pytest.raises(TraceError, match="no curve for 'x_1'"):
        views.LiveRun(growing.path).curve("x_1")


def test_a_long_followed_run_keeps_bounded_buckets_and_draws_every_window_as_its_files_do(
    traces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However long the run, a followed curve keeps at most ``kept_buckets`` buckets (their
    width doubles as steps come); every window still equals the files' curve, read from the
    buckets plus at most a bucket's worth of steps at each end."""
    growing = runs.Growing(traces, epochs=1000, parts=30)  # 3000 steps, 100 a part
    live = views.LiveRun(growing.path, kept_buckets=16)
    for _ in range(30):
        growing.flush()
        mine = live.curve("loss", max_points=20)
        theirs = views.curve(open_trace(growing.path), "loss", max_points=20)
        assert mine.frame.equals(theirs.frame) and mine.bucket == theirs.bucket
        assert len(live._kept["loss"].buckets) <= 16
    growing.finish()
    kept = live._kept["loss"].buckets
    assert kept.width == 256 and len(kept) == 12  # 3000 steps: 12 buckets of 256
    assert kept.steps() == 3000
    trace = open_trace(growing.path)
    asked: list[tuple[int | None, int | None]] = []
    real = Trace.read_table

    def spy(self: Trace, columns=None, filters=None, steps=None):  # type: ignore[no-untyped-def]
        asked.append(steps)
        return real(self, columns, filters, steps)

    windows = [(None, None, 20), (0, 2999, 8), (1, 2998, 20), (300, 2900, 10), (255, 2561, 6),
               (1000, 1100, 20), (1000, 1100, 2000), (2999, None, 4), (None, 700, 4)]  # fmt: skip
    for lo, hi, points in windows:
        monkeypatch.setattr(Trace, "read_table", spy)
        asked.clear()
        mine = live.curve("loss", lo, hi, max_points=points)
        monkeypatch.undo()
        theirs = views.curve(trace, "loss", lo, hi, max_points=points)
        assert mine.frame.equals(theirs.frame), (lo, hi, points)
        assert (mine.steps, mine.bucket, mine.lo, mine.hi) == (
            theirs.steps, theirs.bucket, theirs.lo, theirs.hi
        ), (lo, hi, points)  # fmt: skip
        if mine.bucket >= 256:  # drawn from the buckets: only the ends' steps are read
            assert all(b - a <= 256 for a, b in asked if a is not None and b is not None), asked
    assert live.curve("loss", 5000, 6000).steps == 0
