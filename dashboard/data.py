"""Cached data loading for the pages: the folder scan, each run followed live, and every view.

A run a recorder is writing grows while it is shown: :func:`snapshot` looks at it again (its
new part files only, see :class:`steptrace.views.LiveRun`), and what depends on its length is
keyed by the snapshot's fingerprint. Curves come from the same :class:`~steptrace.views.LiveRun`
whether the run is recorded or has ended: it reads new steps only, and keeps a bounded summary
of the others. A step, once recorded, never changes: its view is keyed by the run's id and the
step alone.

The folder comes from the command line (``steptrace dashboard FOLDER`` sets
:data:`FOLDER_ENV`); nothing in the page can change it, and runs are picked by their key in
the scan, never by a path typed into the page.
"""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from steptrace import views
from steptrace.trace.reader import Trace
from steptrace.views.folder import FOLDER_ENV

#: Seconds between two looks at a run being recorded, and otherwise at the folder (new runs).
POLL_RUN = 1.0
POLL_FOLDER = 5.0


def root() -> str:
    """The folder of runs this dashboard was started on."""
    return os.environ.get(FOLDER_ENV, "traces")


@st.cache_resource(ttl=2.0, show_spinner=False)
def scan(folder: str) -> tuple[views.Folder, pd.DataFrame]:
    """The folder's runs and problems, and the run picker's table (scanned again at most
    every 2 seconds, so that new and growing runs show up; each part's footer is read
    once)."""
    found = views.scan(folder)
    return found, views.run_table(found)


def rescan() -> None:
    scan.clear()


def run(key: str) -> Trace:
    """A run of the folder by its key (KeyError if it is gone)."""
    return scan(root())[0].runs[key]


@st.cache_resource(max_entries=64, show_spinner=False)
def _live(folder: str, key: str, path: str) -> views.LiveRun:
    return views.LiveRun(path)


def live(key: str) -> views.LiveRun:
    """The run followed live (one object for every session that shows it)."""
    return _live(root(), key, str(run(key).path))


def snapshot(key: str) -> views.Snapshot:
    """The run as it is on disk now: its last step, status and a fingerprint of its files.
    Raises :class:`~steptrace.errors.SteptraceError` if a part cannot be read."""
    return live(key).refresh()


@st.cache_data(max_entries=512, show_spinner=False)
def step_view(folder: str, key: str, run_id: str, step: int, _trace: Trace) -> views.StepView:
    """One step of one run (see :func:`steptrace.views.step_view`): a recorded step never
    changes, so it is keyed by the run's id and the step."""
    return views.step_view(_trace, step, key)


def curve(key: str, column: str, lo: int, hi: int) -> views.Curve:
    """``loss`` or a parameter per step in ``[lo, hi]``: the run's new steps read, the others
    kept as the min and max of buckets of steps for every session that shows it (see
    :meth:`steptrace.views.LiveRun.curve`)."""
    return live(key).curve(column, lo, hi)


@st.cache_data(max_entries=256, show_spinner=False)
def _divergence(folder: str, key: str, fp: str, _trace: Trace) -> views.Divergence | None:
    return views.run_divergence(_trace)


def divergence(key: str, snap: views.Snapshot) -> views.Divergence | None:
    """Where the run diverges (so far, while it is recorded: its new steps read)."""
    if snap.running:
        return live(key).divergence()
    return _divergence(root(), key, snap.fingerprint, snap.trace)


@st.cache_data(max_entries=512, show_spinner=False)
def _outcome(folder: str, key: str, fp: str, _trace: Trace) -> dict[str, object]:
    return views.run_outcome(_trace)


def outcome(key: str, snap: views.Snapshot) -> dict[str, object]:
    """How a run ended, or stands while it is recorded (see
    :func:`steptrace.views.run_outcome`)."""
    if snap.running:
        return live(key).outcome()
    return _outcome(root(), key, snap.fingerprint, snap.trace)
