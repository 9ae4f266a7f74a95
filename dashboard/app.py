"""steptrace dashboard: replay a run step by step, compare runs with different learning rates.

Started by ``steptrace dashboard [FOLDER]``; run by hand with
``STEPTRACE_DASHBOARD_FOLDER=traces streamlit run dashboard/app.py``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from steptrace import __version__
from steptrace.dashboard import data

HERE = Path(__file__).parent

st.set_page_config(page_title="steptrace", page_icon="📈", layout="wide")
page = st.navigation(
    [
        st.Page(HERE / "screens" / "replay.py", title="Replay a run", default=True),
        st.Page(HERE / "screens" / "compare.py", title="Compare runs", url_path="compare"),
    ]
)  # fmt: skip
with st.sidebar:
    st.caption(f"steptrace {__version__}")
    st.markdown(f"Runs from `{data.root()}`")
    if st.button("Rescan", key="app.rescan", help="Look for new runs and files again"):
        data.rescan()
page.run()
