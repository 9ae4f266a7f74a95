"""Cached data loading for the pages: the folder scan and every view, keyed so that a run a
recorder is still writing is re-read when its files change.

The folder comes from the command line (``steptrace dashboard FOLDER`` sets
:data:`FOLDER_ENV`); nothing in the page can change it, and runs are picked by their key in
the scan, never by a path typed into the page.
"""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from steptrace import views
from steptrace.cli.dashboard import FOLDER_ENV
from steptrace.trace.reader import Trace


def root() -> str:
    """The folder of runs this dashboard was started on."""
    return os.environ.get(FOLDER_ENV, "traces")


@st.cache_resource(ttl=5, show_spinner=False)
def scan(folder: str) -> tuple[views.Folder, pd.DataFrame]:
    """The folder's runs and problems, and the run picker's table (re-scanned every 5 s so
    new and growing runs show up)."""
    found = views.scan(folder)
    return found, views.run_table(found)


def rescan() -> None:
    scan.clear()


def run(key: str) -> Trace:
    """A run of the folder by its key (KeyError if it is gone)."""
    return scan(root())[0].runs[key]


def fingerprint(key: str) -> object:
    """Changes when the run's files change (a recorder added steps): part of every cache key."""
    return views.fingerprint(run(key))


@st.cache_data(max_entries=512, show_spinner=False)
def step_view(folder: str, key: str, step: int, fp: object) -> views.StepView:
    """One step of one run (see :func:`steptrace.views.step_view`)."""
    return views.step_view(scan(folder)[0].runs[key], step, key)


@st.cache_data(max_entries=256, show_spinner=False)
def curve(folder: str, key: str, column: str, lo: int, hi: int, fp: object) -> views.Curve:
    return views.curve(scan(folder)[0].runs[key], column, lo, hi)


@st.cache_data(max_entries=256, show_spinner=False)
def divergence(folder: str, key: str, fp: object) -> views.Divergence | None:
    return views.first_divergence(scan(folder)[0].runs[key])


@st.cache_data(max_entries=64, show_spinner=False)
def last_step(folder: str, key: str, fp: object) -> int:
    return views.last_step(scan(folder)[0].runs[key])


@st.cache_data(max_entries=512, show_spinner=False)
def outcome(folder: str, key: str, fp: object) -> dict[str, object]:
    """How a run ended (see :func:`steptrace.views.run_outcome`)."""
    return views.run_outcome(scan(folder)[0].runs[key])
