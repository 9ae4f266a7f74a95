"""The page's address: ``?run=…&step=…`` opens a run at a step, and follows the page as the
user moves, so that the address bar can be shared at any moment.

The address is read by the page a session opens on, once; pages visited after it start from
their own defaults (owns the key ``address.page``)."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

PAGE = "address.page"


def opened_on(page: str) -> bool:
    """Whether the session opened on ``page`` (the first page to ask)."""
    return bool(st.session_state.setdefault(PAGE, page) == page)


def runs(page: str) -> list[str]:
    """The runs the address names (``?run=a&run=b``), on the page the session opened on."""
    return list(st.query_params.get_all("run")) if opened_on(page) else []


def step(page: str) -> int | None:
    """The step the address asks for (``?step=N``, a whole number ≥ 0), on the page the
    session opened on."""
    text = st.query_params.get("step")
    if not opened_on(page) or text is None or not text.strip().isdigit():
        return None
    return int(text)


def share(runs: Sequence[str] | None, step: int) -> None:
    """Write the runs shown (None: leave them out of the address) and the step into the
    address, if they changed (the browser's history is not added to)."""
    want: dict[str, str | list[str]] = {"step": str(step)}
    if runs is not None:
        want["run"] = list(runs) if len(runs) != 1 else runs[0]
    have = {key: st.query_params.get_all(key) for key in ("run", "step")}
    wanted = {key: [v] if isinstance(v, str) else list(v) for key, v in want.items()}
    wanted.setdefault("run", [])
    if have != wanted:
        st.query_params.from_dict(want)
