"""A real browser against a real ``steptrace dashboard``: Debian's Chromium driven by
Playwright. Saves screenshots in the test's temporary folder; with
STEPTRACE_SCREENSHOTS=docs/img set, it refreshes the README's screenshots instead.

Needs /usr/bin/chromium (``apt-get install chromium``; never a downloaded browser). Without
it the tests skip, or fail when STEPTRACE_REQUIRE_BROWSER=1 (as CI sets).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import steptrace
from tests import dashboard_runs as runs

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Where screenshots go: a scratch folder, unless asked to refresh the README's."""
    chosen = os.environ.get("STEPTRACE_SCREENSHOTS")
    return REPO / chosen if chosen else tmp_path


ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _need_browser() -> None:
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "Playwright for Python is not installed (pip install -e '.[dev]')"
    if missing is None:
        return
    if os.environ.get("STEPTRACE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"the browser test is required here but {missing}")
    pytest.skip(missing)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[str], log: Path, timeout: float = 60
                  ) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the dashboard exited early: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the dashboard did not answer at {url} within {timeout} s")


_FOLDERS: dict[str, Path] = {}


def server_folder(url: str) -> Path:
    """The folder of runs the dashboard at ``url`` serves."""
    return _FOLDERS[url]


class Dashboard:
    """``steptrace dashboard FOLDER --port P --no-browser`` as a real process (``command``:
    how steptrace is started, ``python -m steptrace`` by default), everything it prints kept in
    ``log``: started by :meth:`start`, stopped with its Streamlit by :meth:`stop`."""

    def __init__(self, folder: Path, log: Path, port: int | None = None,
                 cwd: Path | None = None, command: list[str] | None = None) -> None:  # fmt: skip
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        argv = command or [sys.executable, "-m", "steptrace"]
        with open(log, "w", encoding="utf-8") as out:
            self.process = subprocess.Popen(
                [*argv, "dashboard", str(folder), "--port", str(self.port), "--no-browser"],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=cwd,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # its own process group: the server and Streamlit
            )
        _FOLDERS[self.url] = folder

    def start(self) -> str:
        """Wait until it serves; its address. Its first line names the address."""
        _wait_healthy(self.url, self.process, self.log)
        first = self.log.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith(f"steptrace dashboard: {self.url}"), first
        return self.url

    def stop(self) -> str:
        """Stop it as Ctrl-C would (SIGTERM); everything it printed."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        return self.log.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``steptrace dashboard FOLDER --port P --no-browser`` as a real process: the article's
    run, three learning rates, a two-layer network, a run of mini-batches and a run whose loss
    stays between 0.118 and 0.136. Stopped (and its Streamlit with it) at the end."""
    _need_browser()
    where = tmp_path_factory.mktemp("browser")
    traces = where / "traces"
    traces.mkdir()
    runs.article(traces)
    runs.lr_sweep(traces, ("1e-9", "1e-8", "1e-7"), epochs=30)
    runs.two_layer(traces)
    runs.batches(traces)
    runs.narrow_loss(traces)
    dashboard = Dashboard(traces, where / "dashboard.log")
    try:
        yield dashboard.start()
    finally:
        log = dashboard.stop()
    assert dashboard.process.returncode is not None
    assert "Traceback" not in log, log  # every page these tests opened, drawn without one


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """Debian's Chromium, driven by Playwright (one for the module: Playwright's sync API runs
    one at a time)."""
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def browser(server: str, chromium: object) -> object:
    """Chromium, with the dashboard running."""
    return chromium


_PAGES: list[object] = []


def _page(browser: object, height: int):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": height})  # type: ignore[attr-defined]
    page.set_default_timeout(30_000)
    _PAGES.append(page)
    return page


@pytest.fixture(autouse=True)
def _close_pages() -> Iterator[None]:
    """Each test's pages are closed after it: an open dashboard keeps looking at its folder."""
    yield
    while _PAGES:
        _PAGES.pop().close()  # type: ignore[attr-defined]


def _idle(page) -> None:  # type: ignore[no-untyped-def]
    """Wait out a look at the runs that is under way (the page looks every few seconds), so
    that a picture shows no "Running" sign."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=30_000)


def _fit_to_content(page, width: int = 1400) -> None:  # type: ignore[no-untyped-def]
    """Streamlit scrolls inside its main area, so a full-page picture holds only the window:
    make the window as tall as the page's content."""
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": width, "height": int(height)})


def test_replay_moves_to_the_articles_third_data_input(
    server: str, browser: object, images: Path
) -> None:
    from playwright.sync_api import expect

    page = _page(browser, 2000)
    page.goto(server)
    heading = page.get_by_role("heading", name=re.compile(r"^step \d+ \("))
    expect(heading).to_have_text("step 0 (1st data input)")
    next_button = page.get_by_role("button", name="Next ▶")
    next_button.click()
    expect(heading).to_have_text("step 1 (2nd data input)")
    next_button.click()
    expect(heading).to_have_text("step 2 (3rd data input)")
    expect(page.get_by_text("epoch 0 · dataset row 2 · exact · α = 1")).to_be_visible()
    tables = page.locator("table")
    forward = tables.filter(has_text="o2 = L2(o1)")
    expect(forward.locator("tbody tr").first).to_contain_text("(0, 2000, 3000)")
    loss = tables.filter(has_text="loss = Loss(o3, y_truth)").locator("tbody tr").first
    expect(loss.locator("td").nth(2)).to_have_text("1/2")
    backward = tables.filter(has_text="δ4 = o3 − y_truth").locator("tbody tr").first
    expect(backward.locator("td").nth(0)).to_have_text("-1")
    expect(backward.locator("td").nth(1)).to_have_text("-1 (gate open)")
    expect(page.get_by_text("= (1/200, 23199997/11600, 17400001/5800)")).to_be_visible()
    weights = tables.filter(has_text="ŵ = w − α·grad").locator("tbody tr")
    expect(weights.nth(1)).to_contain_text("23199997/11600")
    expect(weights.nth(2)).to_contain_text("17400001/5800")
    expect(page.get_by_text("The update moved w_2, w_3.")).to_be_visible()
    _fit_to_content(page)
    page.wait_for_timeout(500)  # let KaTeX and the tables settle before the picture
    images.mkdir(parents=True, exist_ok=True)
    _idle(page)
    page.screenshot(path=str(images / "replay.png"), full_page=True)
    assert (images / "replay.png").stat().st_size > 10_000
    # Play from the last step starts again at 0, moves on by itself, and stops at the end.
    # A step is shown for half a second at the default speed, and Playwright's checks poll
    # once a second after their first tries: the page itself writes down each step it shows.
    page.evaluate(_WATCH_STEPS)
    page.get_by_role("button", name="▶ Play").click()
    page.wait_for_function("() => window.stepsShown.includes('step 1 (2nd data input)')")
    expect(page.get_by_role("button", name="▶ Play")).to_be_visible()
    expect(heading).to_have_text("step 2 (3rd data input)")
    page.wait_for_timeout(1500)
    expect(heading).to_have_text("step 2 (3rd data input)")
    shown = page.evaluate("() => window.stepsShown")
    played = shown[shown.index("step 0 (1st data input)") :]
    assert played == [
        "step 0 (1st data input)",
        "step 1 (2nd data input)",
        "step 2 (3rd data input)",
    ], shown


_WATCH_STEPS = """() => {
  window.stepsShown = [];
  const look = () => {
    const heading = [...document.querySelectorAll("h1, h2, h3, h4")]
      .map((h) => h.textContent.trim())
      .find((text) => /^step \\d+ \\(/.test(text));
    const shown = window.stepsShown;
    if (heading && shown[shown.length - 1] !== heading) shown.push(heading);
  };
  new MutationObserver(look).observe(document.body,
    {subtree: true, childList: true, characterData: true});
}"""


def test_compare_three_learning_rates_at_one_step(
    server: str, browser: object, images: Path
) -> None:
    from playwright.sync_api import expect

    page = _page(browser, 1900)
    chosen = ("sweep-lr1e-9", "sweep-lr1e-8", "sweep-lr1e-7")
    page.goto(f"{server}/compare?" + "&".join(f"run={r}" for r in chosen))
    expect(page.get_by_role("heading", name="All runs at step 0")).to_be_visible()
    jump = page.get_by_label("Jump to step")
    jump.fill("40")
    jump.press("Enter")
    expect(page.get_by_role("heading", name="All runs at step 40")).to_be_visible()
    side = page.locator("table").filter(has_text="first divergence")
    header = side.locator("thead")
    for run in chosen:
        expect(header).to_contain_text(run)
    expect(side.locator("tbody tr").first).to_contain_text("1e-9")
    expect(side.locator("tbody tr").first).to_contain_text("1e-7")
    expect(side.locator("tbody tr").nth(2)).to_contain_text("41st data input")
    expect(page.locator(".vega-embed")).to_have_count(5)  # loss by α, loss, w_1, w_2, w_3
    expect(page.get_by_text("Lowest final loss: α = 1e-7 (sweep-lr1e-7)")).to_be_visible()
    jump.blur()  # no focus ring in the picture
    _fit_to_content(page)
    page.wait_for_timeout(1000)  # charts draw after their data arrives
    _idle(page)
    page.screenshot(path=str(images / "compare.png"), full_page=True)
    assert (images / "compare.png").stat().st_size > 10_000


def test_replay_a_two_layer_run_layer_by_layer(server: str, browser: object, images: Path) -> None:
    from playwright.sync_api import expect

    page = _page(browser, 2600)
    page.goto(server)
    heading = page.get_by_role("heading", name=re.compile(r"^step \d+ \("))
    expect(heading).to_have_text("step 0 (1st data input)")
    page.get_by_role("combobox", name="Run to replay").click()
    # The browser shows the labels' double spaces as one.
    page.get_by_role("option", name="two-layer · α = 1/10 · exact").click()
    page.get_by_role("combobox", name="Run to replay").blur()  # no focus ring in the picture
    expect(page.get_by_text("epoch 0 · dataset row 0 · exact · α = 1/10")).to_be_visible()
    # Step 0, worked by hand in tests/test_replay.py: x = (100, 2000, 100), y = 0.
    chain = page.locator(".st-chain").first
    for layer in ("input", "L1", "L2", "L3", "L4", "L5", "Loss"):
        expect(chain.locator(".layer", has_text=re.compile(f"^{layer} "))).to_have_count(1)
    l2 = chain.locator(".box").filter(has_text="linear(2, bias)")
    expect(l2.locator(".formula")).to_have_text("o2 = w2 · o1 + b2")
    expect(l2.locator(".value")).to_have_text("(0, 39/40)")
    back = page.locator(".st-chain").nth(1)
    leaky = back.locator(".box").filter(has_text="leaky_relu(1/100)")
    expect(leaky.locator(".value")).to_have_text("-13/400000")
    expect(leaky.locator(".note")).to_have_text("gate closed")
    matrices = page.locator("table").filter(has_text="o1_3")
    expect(matrices).to_have_count(3)  # w2, its gradient, ŵ2
    w2 = matrices.first.locator("tbody tr")
    expect(w2.nth(0)).to_contain_text("-3/11600")
    expect(w2.nth(1).locator("td").last).to_have_text("1/10")  # neuron 2's bias
    after = matrices.nth(2).locator("tbody tr").nth(1).locator("td")
    expect(after.last).to_have_text("1199987/12000000")
    expect(page.get_by_role("tab", name="L5 · leaky_relu(1/100)")).to_be_visible()
    _fit_to_content(page)
    page.wait_for_timeout(800)  # let KaTeX and the tables settle before the picture
    images.mkdir(parents=True, exist_ok=True)
    _idle(page)
    page.screenshot(path=str(images / "replay-two-layer.png"), full_page=True)
    assert (images / "replay-two-layer.png").stat().st_size > 10_000
    # Step 1, x = (200, 0, 0): every value moved on, and o2's second neuron closes its gate.
    page.get_by_role("button", name="Next ▶").click()
    expect(heading).to_have_text("step 1 (2nd data input)")
    expect(chain.locator(".box.changed")).to_have_count(7)
    expect(back.locator(".note", has_text="gates open, closed")).to_be_visible()
    expect(matrices.first.locator("tbody tr").first).to_contain_text("413/80000")  # step 0's ŵ2


# -- the replay page, read as a newcomer reads it --------------------------------------------------

_MATRIX_ROWS = """() => {
  // Each matrix of the update (KaTeX's centred columns): the room between one row's glyphs and
  // the next row's, in pixels (negative: they overlap).
  const glyphs = (cell) => {
    let top = Infinity, bottom = -Infinity;
    const walk = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    while (walk.nextNode()) {
      if (!walk.currentNode.textContent.trim()) continue;
      const range = document.createRange();
      range.selectNodeContents(walk.currentNode);
      for (const r of range.getClientRects()) {
        top = Math.min(top, r.top); bottom = Math.max(bottom, r.bottom);
      }
    }
    return [top, bottom];
  };
  const gaps = [];
  for (const column of document.querySelectorAll(".katex-html .mtable > .col-align-c")) {
    const cells = [...column.querySelectorAll(":scope > .vlist-t > .vlist-r > .vlist > span")]
      .map(glyphs).filter(([top]) => isFinite(top)).sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < cells.length; i++) gaps.push(cells[i][0] - cells[i - 1][1]);
  }
  return gaps;
}"""

_INDICES = """() => {
  // Each index KaTeX sets beside a symbol (ŵ₂, grad₂): how far its glyphs' middle sits below
  // the symbol's (negative: above it, where a power goes).
  const middle = (node) => {
    const range = document.createRange();
    range.selectNodeContents(node);
    const r = range.getBoundingClientRect();
    return (r.top + r.bottom) / 2;
  };
  return [...document.querySelectorAll(".katex-html .msupsub")].map((index) => {
    const base = index.previousElementSibling;
    return [base.textContent + "|" + index.textContent, middle(index) - middle(base)];
  });
}"""


def test_the_update_of_a_two_layer_run_reads_without_overlaps_or_powers(
    server: str, browser: object
) -> None:
    from playwright.sync_api import expect

    page = _page(browser, 2600)
    page.goto(f"{server}/?run=two-layer&step=0")
    expect(page.get_by_role("heading", name="step 0 (1st data input)")).to_be_visible(
        timeout=30_000
    )
    update = page.locator(".katex-display").first
    expect(update).to_be_visible(timeout=30_000)
    page.wait_for_timeout(500)  # KaTeX's fonts
    # w2, its gradient and ŵ2 are 2 × 3 matrices of fractions: no row runs into the next.
    gaps = page.evaluate(_MATRIX_ROWS)
    assert len(gaps) >= 9, gaps  # three matrices of three columns, a gap each
    assert min(gaps) > 0, gaps
    # The layer's number is an index below the line (ŵ₂), not a power (ŵ²).
    indices = page.evaluate(_INDICES)
    names = {name.replace("\u200b", "") for name, _ in indices}  # KaTeX's zero-width spaces
    assert names >= {"w^|2", "w|2", "grad|2", "b^|2", "w^|4", "grad|4"}, indices  # ^: a hat
    assert all(below > 2 for _, below in indices), indices
    expect(update.locator(".katex-mathml msup")).to_have_count(0)  # no powers at all


_AXES = """() => [...document.querySelector('.vega-embed svg').querySelectorAll('g.role-axis')]
  .filter((axis) => axis.getAttribute('aria-label'))
  .map((axis) => [axis.getAttribute('aria-label').split('-')[0],
                  [...axis.querySelectorAll('.role-axis-label text')].map((t) => t.textContent),
                  axis.getBoundingClientRect().height])"""


def test_the_loss_chart_has_room_whole_steps_and_ticks_of_the_loss(
    server: str, browser: object
) -> None:
    from playwright.sync_api import expect

    page = _page(browser, 1400)
    page.goto(f"{server}/?run=narrow&step=2")
    heading = page.get_by_role("heading", name="step 2 (3rd data input)")
    expect(heading).to_be_visible(timeout=30_000)
    chart = page.locator(".vega-embed svg").first
    expect(chart).to_be_visible(timeout=30_000)
    page.wait_for_timeout(500)
    axes = {name: (labels, height) for name, labels, height in page.evaluate(_AXES)}
    steps, _ = axes["X"]
    assert steps == ["0", "1", "2", "3", "4", "5"]  # one tick a step, none between
    losses, height = axes["Y"]
    assert height > 120, height  # the plot was some 35 px tall
    # The losses lie between 0.118 and 0.136: ticks of their own, each a different value.
    values = [float(v) for v in losses]
    assert len(set(values)) == len(values) >= 3, losses
    assert all(0.11 < v < 0.14 for v in values), losses


def _loss_cells(page, rows: int) -> list[str]:  # type: ignore[no-untyped-def]
    """The loss table's values, once its ``rows`` rows are drawn (the page draws the chain
    first: read at once, the table could still be missing)."""
    from playwright.sync_api import expect

    loss = page.locator("table").filter(has_text="loss = Loss(o3, y_truth)")
    expect(loss.locator("tbody tr")).to_have_count(rows, timeout=30_000)
    return [row.locator("td").nth(2).inner_text() for row in loss.locator("tbody tr").all()]


def test_a_mini_batch_step_draws_the_chain_for_the_data_input_picked(
    server: str, browser: object
) -> None:
    from playwright.sync_api import expect

    page = _page(browser, 2000)
    page.goto(f"{server}/?run=batches&step=1")
    heading = page.get_by_role("heading", name="step 1 (data inputs 4–6)")
    expect(heading).to_be_visible(timeout=30_000)
    pick = page.get_by_role("combobox", name="Data input to draw the chain for (this step has 3)")
    expect(pick).to_be_visible(timeout=30_000)
    chain, back = page.locator(".st-chain").nth(0), page.locator(".st-chain").nth(1)
    first, loss_box = chain.locator(".box").first, chain.locator(".box").last
    expect(pick).to_have_value("data input 4 (dataset row 0)")
    expect(first.locator(".value")).to_have_text("(100, 2000, 100)")  # dataset row 0's x
    losses = _loss_cells(page, 3)
    assert len(losses) == 3
    mean = sum(Fraction(v) for v in losses) / 3
    expect(loss_box.locator(".value")).to_have_text(losses[0])
    expect(loss_box.locator(".note")).to_have_text(f"wrong; batch loss (mean of 3) {mean}")
    expect(page.get_by_text(f"batch loss (the mean over 3 data inputs) = {mean}")).to_be_visible()
    # The 6th data input instead: its x, its loss and its δ, the batch loss unchanged.
    pick.click()
    page.get_by_role("option", name="data input 6 (dataset row 2)").click()
    expect(pick).to_have_value("data input 6 (dataset row 2)")
    expect(first.locator(".value")).to_have_text("(0, 2000, 3000)")
    expect(loss_box.locator(".value")).to_have_text(losses[2])
    expect(loss_box.locator(".note")).to_have_text(f"wrong; batch loss (mean of 3) {mean}")
    backward = page.locator("table").filter(has_text="δ4 = (o3 − y_truth) / 3")
    delta = backward.locator("tbody tr").nth(2).locator("td").first.inner_text()
    expect(back.locator(".box").first.locator(".value")).to_have_text(delta)
    assert delta != backward.locator("tbody tr").first.locator("td").first.inner_text()


_CHAINS = """() => [...document.querySelectorAll('.st-chain')].map((chain) =>
  [...chain.querySelectorAll(':scope > .link')].map((link) => {
    const box = link.querySelector('.box').getBoundingClientRect();
    const arrow = link.querySelector('.arrow');
    const a = arrow && arrow.getBoundingClientRect();
    return {top: box.top, bottom: box.bottom, left: box.left,
            arrow: arrow && arrow.textContent, middle: a && (a.top + a.bottom) / 2,
            right: a && a.right};
  }))"""


def test_both_layer_chains_run_the_way_their_values_flow_and_wrap_whole(
    server: str, browser: object
) -> None:
    from playwright.sync_api import expect

    page = _page(browser, 2600)
    page.set_viewport_size({"width": 900, "height": 2600})  # narrow: the chains wrap
    page.goto(f"{server}/?run=two-layer&step=0")
    expect(page.locator(".st-chain")).to_have_count(2, timeout=30_000)
    forward, backward = page.evaluate(_CHAINS)
    assert [len(forward), len(backward)] == [7, 6]  # input, L1 … L5, Loss; Loss, L5 … L1
    rows = 0
    for chain in (forward, backward):
        assert chain[0]["arrow"] is None  # the first box: nothing points at it
        for before, link in itertools.pairwise(chain):
            # δ flows from the loss down to L1, left to right, as the values flow forward.
            assert link["arrow"] == "→", link
            # Each arrow sits on the row of the box it points at, just left of it.
            assert link["top"] < link["middle"] < link["bottom"], link
            assert link["right"] <= link["left"] + 1, link
            rows += link["top"] > before["bottom"]  # this box starts a new row
    assert rows >= 2  # the chains did wrap (else this checked nothing)
    expect(page.locator(".st-chain").get_by_text("←")).to_have_count(0)


# -- the server: its log, the package it runs, its port --------------------------------------------


def test_a_session_over_every_kind_of_run_leaves_no_traceback_in_the_log(
    chromium: object, tmp_path: Path
) -> None:
    """Complete, incomplete, running and golden runs side by side, looked at from the replay
    page and the compare page for a while: the pages show them, and the server's log holds
    nothing but its start and its stop (each look at an incomplete run logged an Arrow
    traceback)."""
    from playwright.sync_api import expect

    from steptrace.compare.sides import load_side, write_trace_file

    traces = tmp_path / "traces"
    traces.mkdir()
    complete = runs.article(traces)
    runs.two_layer(traces)
    stopped = runs.article(traces, "stopped")
    meta = json.loads((stopped / "_run.json").read_text(encoding="utf-8"))
    meta.update(status="incomplete", reason="interrupted by Ctrl-C after step 2", steps=9)
    (stopped / "_run.json").write_text(json.dumps(meta), encoding="utf-8")
    write_trace_file(load_side(complete), traces / "golden" / "article.parquet")
    dashboard = Dashboard(traces, tmp_path / "dashboard.log")
    with runs.Growing(traces, parts=4) as growing:  # recorded while the pages look at it
        growing.flush()
        url = dashboard.start()
        try:
            page = _page(chromium, 1600)
            page.goto(url)
            table = page.locator("[data-testid=stDataFrame]")
            # The grid is drawn on a canvas; its cells are there for screen readers.
            expect(table.get_by_text("3 of 9", exact=True)).to_have_count(1, timeout=30_000)
            expect(table.get_by_text("150 of 600", exact=True)).to_have_count(1)
            heading = page.get_by_role("heading", name=re.compile(r"^step \d+ \("))
            picker = page.get_by_role("combobox", name="Run to replay")
            for run, shown, says in [
                ("stopped", "step 0 (1st data input)", "This run is incomplete: interrupted"),
                ("golden/article.parquet", "step 0 (1st data input)", "status is not known"),
                ("growing", "step 149 (150th data input)", "Recording: 150 of 600 steps"),
            ]:
                picker.click()
                page.get_by_role("option", name=f"{run} ·").click()
                expect(heading).to_have_text(shown, timeout=30_000)
                expect(page.get_by_text(says)).to_be_visible()
            growing.flush()  # a new part while the page follows the run
            expect(heading).to_have_text("step 299 (300th data input)", timeout=30_000)
            page = _page(chromium, 1600)  # a new session, opened on the compare page
            page.goto(f"{url}/compare")
            expect(page.get_by_role("heading", name="All runs at step 299")).to_be_visible(
                timeout=30_000
            )
            runs_picker = page.get_by_test_id("stMultiSelect").filter(has_text="Runs to compare")
            chosen = runs_picker.get_by_role("button", name=re.compile(r"^Remove "))
            expect(chosen).to_have_count(5)  # every run, the golden too
            page.wait_for_timeout(6_000)  # the page looks at its runs again every second
            expect(chosen).to_have_count(5)  # and keeps every run chosen (it once lost them)
            expect(page.get_by_role("heading", name="All runs at step 299")).to_be_visible()
        finally:
            log = dashboard.stop()
    assert "Traceback" not in log and "Error" not in log and "Arrow" not in log, log
    assert log.splitlines()[0].startswith(f"steptrace dashboard: {url}")


def test_the_dashboard_runs_the_installed_package_from_a_folder_named_steptrace(
    chromium: object, tmp_path: Path
) -> None:
    """Started from the folder that holds the clone (``cd ..; steptrace dashboard
    steptrace/traces``): the folder named steptrace there is not the package."""
    from playwright.sync_api import expect

    clone = tmp_path / "steptrace"  # a clone's folder: no __init__.py, so it would import as
    (clone / "src").mkdir(parents=True)  # an empty namespace package named steptrace
    runs.article(clone / "traces")
    script = Path(sys.executable).with_name("steptrace")  # the console script, as a user runs
    assert script.exists(), script
    dashboard = Dashboard(Path("steptrace/traces"), tmp_path / "dashboard.log", cwd=tmp_path,
                          command=[str(script)])  # fmt: skip
    url = dashboard.start()
    try:
        page = _page(chromium, 1400)
        page.goto(url)
        heading = page.get_by_role("heading", name="step 0 (1st data input)")
        expect(heading).to_be_visible(timeout=30_000)
        expect(page.get_by_text("ImportError")).to_have_count(0)
        expect(page.get_by_text(f"steptrace {steptrace.__version__}")).to_be_visible()
    finally:
        log = dashboard.stop()
    assert "Traceback" not in log, log


def _time_wait(port: int) -> int:
    """Connections of this machine in TIME-WAIT on ``port`` (from /proc/net/tcp)."""
    lines = Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]
    return sum(
        1
        for line in lines
        if int(line.split()[1].split(":")[1], 16) == port and line.split()[3] == "06"
    )


def test_a_dashboard_stopped_with_a_tab_open_starts_again_on_its_port(
    chromium: object, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    traces = tmp_path / "traces"
    traces.mkdir()
    runs.article(traces)
    first = Dashboard(traces, tmp_path / "first.log")
    url = first.start()
    page = _page(chromium, 1400)
    heading = page.get_by_role("heading", name="step 0 (1st data input)")
    try:
        page.goto(url)
        expect(heading).to_be_visible(timeout=30_000)
    finally:
        first.stop()  # the tab still open: the server closes its connection first
    assert _time_wait(first.port) > 0  # what kept the port "in use" for a minute
    again = Dashboard(traces, tmp_path / "again.log", port=first.port)
    try:
        assert again.start() == url  # not "Error: port … is in use"
        page.reload()
        expect(heading).to_be_visible(timeout=30_000)
    finally:
        log = again.stop()
    assert "in use" not in log and "Traceback" not in log, log


# -- runs of images --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_server(chromium: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A dashboard over runs of images: the README's crosses and squares (float64, α = 0.05 and
    0.2, two epochs), and tests/image_runs.py's exact network."""
    where = tmp_path_factory.mktemp("images")
    traces = where / "traces"
    traces.mkdir()
    runs.shapes(traces, "shapes", "0.05")
    runs.shapes(traces, "shapes-lr0.2", "0.2")
    runs.cnn(traces)
    dashboard = Dashboard(traces, where / "dashboard.log")
    try:
        yield dashboard.start()
    finally:
        log = dashboard.stop()
    assert "Traceback" not in log, log


def _chart(page, title: str):  # type: ignore[no-untyped-def]
    """The heatmaps drawn under a title (the chart's accessible name starts with it)."""
    return page.locator(f'.vega-embed[aria-label^="{title}"]').first


def _hover(page, target) -> None:  # type: ignore[no-untyped-def]
    """Move the mouse to the middle of ``target``, as a reader's pointer comes to rest there."""
    target.scroll_into_view_if_needed()
    box = target.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def test_replay_of_an_image_run_draws_feature_maps_with_values_on_hover(
    image_server: str, chromium: object, images: Path
) -> None:
    from playwright.sync_api import expect

    run = server_folder(image_server) / "shapes"
    page = _page(chromium, 1400)
    page.goto(f"{image_server}/?run=shapes&step=0")
    heading = page.get_by_role("heading", name="step 0 (1st data input)")
    expect(heading).to_be_visible(timeout=30_000)
    # The chain says each layer's shape.
    chain = page.locator(".st-chain").first
    pooling = chain.locator(".box").filter(has_text="maxpool2d(2)").locator(".shape")
    expect(pooling).to_have_text("2 × 4 × 4", timeout=30_000)  # the page draws it after
    expect(chain.locator(".box").filter(has_text="flatten").locator(".shape")).to_have_text("32")
    # L2's feature maps: two channels of 8 × 8 cells, each cell coloured, its value written.
    conv = _chart(page, "L2 conv2d(2, 3×3, bias): o2 = w2 ⋆ o1 + b2")
    cells = conv.locator("g.child_layer_0_marks path")
    expect(cells).to_have_count(128, timeout=30_000)
    expect(conv.locator("g.child_layer_1_marks text")).to_have_count(128)
    fills = {cells.nth(i).get_attribute("fill") for i in range(0, 128, 9)}
    assert len(fills) > 5, fills  # a colour scale, not one colour
    # Hovering a cell shows its name and whole value, which the cell writes short.
    o2 = steptrace.load_tensor(run, "o2")[0]
    c, i, j = next(idx for idx, v in np.ndenumerate(o2) if len(repr(float(v))) > 8)
    cell = conv.locator(f'g.child_layer_0_marks path[aria-label*="cell: o2[{c}, {i}, {j}]"]')
    expect(cell).to_have_count(1)
    _hover(page, cell)
    tip = page.locator("#vg-tooltip-element.visible")
    expect(tip).to_contain_text(f"o2[{c}, {i}, {j}]")
    expect(tip).to_contain_text(repr(float(o2[c, i, j])))
    # The cells L4's max pooling keeps are outlined on its input, two channels of 4 × 4 cells.
    relu = _chart(page, "L3 relu: o3 = o2 if o2 ≥ 0 else 0")
    kept = relu.locator("g.pooled_marks path")
    expect(kept).to_have_count(32)
    o3 = steptrace.load_tensor(run, "o3")[0]
    label = kept.first.get_attribute("aria-label") or ""
    at = re.search(r"cell: o3\[(\d+), (\d+), (\d+)\]", label)
    assert at, label
    ch, row, col = (int(n) for n in at.groups())
    window = o3[ch, row - row % 2 : row - row % 2 + 2, col - col % 2 : col - col % 2 + 2]
    first_max = np.unravel_index(int(np.argmax(window)), (2, 2))
    assert (row % 2, col % 2) == tuple(int(n) for n in first_max), (label, window)
    _hover(page, relu.locator(f'g.child_layer_0_marks path[aria-label*="cell: o3[{ch}, {row}, '
                              f'{col}]"]'))  # fmt: skip
    expect(tip).to_contain_text("kept by L4's max pooling")
    expect(page.get_by_text("Outlined: the maximum of each 2 × 2 cell").first).to_be_visible()
    kernels = _chart(page, "ŵ2 − w2: what the update changed")
    expect(kernels.locator("g.child_layer_0_marks path")).to_have_count(18)
    expect(page.get_by_text(re.compile(r"^The update moved \d+ of the 18 kernel weights of w2"))
           ).to_be_visible()  # fmt: skip
    # The README's picture: L2's feature maps and L3's with the pooled maxima outlined.
    page.mouse.move(0, 0)
    expect(page.locator("#vg-tooltip-element.visible")).to_have_count(0)
    _fit_to_content(page)
    page.wait_for_timeout(800)
    _idle(page)
    title = page.get_by_text("L2 conv2d(2, 3×3, bias): o2 = w2 ⋆ o1 + b2", exact=False).first
    note = page.get_by_text("Outlined: the maximum of each 2 × 2 cell").first
    top, bottom = title.bounding_box(), note.bounding_box()
    left = page.locator("[data-testid=stMainBlockContainer]").bounding_box()
    clip = {"x": left["x"] + 40, "y": top["y"] - 12, "width": 820,
            "height": bottom["y"] + bottom["height"] + 12 - (top["y"] - 12)}  # fmt: skip
    images.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(images / "images.png"), clip=clip)
    assert (images / "images.png").stat().st_size > 10_000


def test_compare_two_image_runs_feature_maps_side_by_side_and_their_difference(
    image_server: str, chromium: object
) -> None:
    from playwright.sync_api import expect

    folder = server_folder(image_server)
    page = _page(chromium, 1800)
    page.goto(f"{image_server}/compare?run=shapes&run=shapes-lr0.2&step=5")
    expect(page.get_by_role("heading", name="Images and kernels at step 5")).to_be_visible(
        timeout=30_000
    )
    title = "L2 conv2d(2, 3×3, bias): o2 = w2 ⋆ o1 + b2"
    side = _chart(page, title)
    cells = side.locator("g.child_layer_0_marks path")
    expect(cells).to_have_count(256, timeout=30_000)  # 2 runs × 2 channels × 8 × 8
    for name in ("shapes · channel 0", "shapes-lr0.2 · channel 1"):
        expect(side.get_by_text(name, exact=True)).to_have_count(1)
    page.get_by_text("difference", exact=True).click()
    diff = _chart(page, f"{title} — each run minus shapes")
    expect(diff.locator("g.child_layer_0_marks path")).to_have_count(128, timeout=30_000)
    a, b = (steptrace.load_tensor(folder / run, "o2")[5] for run in ("shapes", "shapes-lr0.2"))
    c, i, j = np.unravel_index(int(np.argmax(np.abs(b - a))), a.shape)
    _hover(page, diff.locator(f'g.child_layer_0_marks path[aria-label*="cell: o2[{c}, {i}, {j}]"]'))
    tip = page.locator("#vg-tooltip-element.visible")
    expect(tip).to_contain_text(repr(float(b[c, i, j] - a[c, i, j])))


# -- a recording in progress -------------------------------------------------------------------

STEPS = re.compile(r"^([\d,]+) steps, counted from 0")
HEADING = re.compile(r"^step (\d+) \(")


def _numbers(page) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(the step shown, the steps recorded so far) as the page says them, read at once."""
    both = page.evaluate(
        """() => [
            [...document.querySelectorAll('h3')].map(h => h.innerText)
                .find(t => /^step \\d+ \\(/.test(t)) || '',
            [...document.querySelectorAll('[data-testid=stCaptionContainer]')]
                .map(c => c.innerText).find(t => / steps, counted from 0/.test(t)) || '']"""
    )
    shown, steps = HEADING.match(both[0]), STEPS.match(both[1])
    return (int(shown.group(1)) if shown else -1,
            int(steps.group(1).replace(",", "")) if steps else -1)  # fmt: skip


def _wait(page, condition, what: str, timeout: float = 20.0) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Poll the page's numbers until ``condition(shown, steps)`` holds (no sleeping on luck)."""
    deadline = time.monotonic() + timeout
    numbers = _numbers(page)
    while not condition(*numbers):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still (step shown, steps) = {numbers}")
        page.wait_for_timeout(100)
        numbers = _numbers(page)
    return numbers


def _settled(page, looks: int = 2) -> int:  # type: ignore[no-untyped-def]
    """The step shown once it has stayed the same while the step count grew ``looks`` times."""
    shown, steps = _numbers(page)
    same = 0
    while same < looks:
        now = _wait(page, lambda s, n, before=steps: n > before, "more steps")
        shown, steps, same = now[0], now[1], same + 1 if now[0] == shown else 0
    return shown


def test_replay_follows_a_recording_in_progress(
    server: str, browser: object, images: Path, tmp_path: Path
) -> None:
    """A real ``steptrace record`` of a long float32 run into the dashboard's folder: the run
    shows up, its step count grows with no action, follow keeps the cursor on the newest step,
    and off, the cursor stays; Ctrl-C to the recorder shows the run incomplete."""
    from playwright.sync_api import expect

    folder = Path(server_folder(server))
    page = _page(browser, 1800)
    page.goto(server)
    expect(page.get_by_role("heading", name=re.compile(r"^step \d+ \("))).to_be_visible()
    expect(page).to_have_title("article · steptrace replay")
    expect(page.get_by_role("button", name="Deploy")).to_have_count(0)
    # 3 billion steps planned: the run never ends by itself while the test looks at it. In
    # float32, at about half float64's pace, it grows to some tens of millions of steps.
    recorder = subprocess.Popen(
        [sys.executable, "-m", "steptrace", "record", "--numerics", "float32",
         "--epochs", "1000000000", "--init", runs.MOVING_INIT, "--lr", "1e-9",
         "--out", str(folder), "--name", "live"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # The new run joins the picker by itself; picked, it opens at its newest step.
        table = page.locator("[data-testid=stDataFrame]")
        expect(table.get_by_text("live", exact=True)).to_have_count(1, timeout=20_000)
        picker = page.get_by_role("combobox", name="Run to replay")
        picker.click()
        page.get_by_role("option", name=re.compile(r"^live · α = 1e-9 · float32")).click()
        expect(page).to_have_title("live · steptrace replay")
        recording = re.compile(r"Recording: [\d,]+ of 3,000,000,000 steps")
        expect(page.get_by_text(recording)).to_be_visible()
        follow = page.get_by_role("switch", name="Follow newest step")
        expect(follow).to_be_checked()
        # Following: the step shown is the newest, and both grow with no action.
        shown, steps = _wait(page, lambda s, n: n > 0 and s == n - 1, "following the newest")
        _wait(page, lambda s, n: n > steps and s == n - 1, "a newer step, followed")
        shown, steps = _wait(page, lambda s, n: n > steps and s == n - 1, "and another")
        # The address follows too: it names the step shown (read together: both move on).
        for _ in range(50):
            step_shown = _numbers(page)[0]
            if f"step={step_shown}&" in page.url + "&":
                break
            page.wait_for_timeout(100)
        else:
            raise AssertionError(f"the address {page.url} never named the step shown")
        assert "run=live" in page.url and step_shown >= shown
        # The picture: the top of the page, the loss on a log axis, while it follows.
        page.get_by_text("log loss", exact=True).click()
        expect(page.get_by_role("switch", name="log loss")).to_be_checked()
        for _ in range(20):  # a picture of one look at the run, not of two half drawn
            before = _wait(page, lambda s, n: n > steps and s == n - 1, "following, log axis")
            page.screenshot(path=str(images / "live.png"))
            if _numbers(page) == before:
                break
        assert (images / "live.png").stat().st_size > 10_000
        # Follow off: the slider grows, the step shown stays (once a look at the run that was
        # under way at the click has drawn its step).
        page.get_by_text("Follow newest step", exact=True).click()  # its label takes the click
        expect(follow).not_to_be_checked()
        shown = _settled(page)
        steps = _numbers(page)[1]
        later = _wait(page, lambda s, n: n > steps, "more steps")
        later = _wait(page, lambda s, n: n > later[1], "more steps again")
        assert later[0] == shown, later
        assert later[1] > shown + 1
        # Ctrl-C: the recorder marks the run incomplete, and the page says so by itself.
        recorder.send_signal(signal.SIGINT)
        assert recorder.wait(30) == 130, recorder.stderr.read() if recorder.stderr else ""
        expect(page.get_by_text("This run is incomplete")).to_be_visible(timeout=20_000)
        # The toggle goes once the page has drawn the ended run whole: until then Streamlit
        # keeps the elements of the look before (faded). That look reads the run's last steps
        # and its whole status, which takes seconds on a loaded machine.
        expect(follow).to_have_count(0, timeout=60_000)
        assert _numbers(page)[0] == shown
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
        shutil.rmtree(folder / "live", ignore_errors=True)  # hundreds of MB: not kept


# -- an exported replay, opened from the disk with the network cut off --------------------------


class Offline:
    """A page that may load one file and nothing else: every other request is refused and
    noted, and so is every script error."""

    def __init__(self, chromium: object, file: Path, height: int = 1400) -> None:
        self.url = file.as_uri()
        self.refused: list[str] = []
        self.errors: list[str] = []
        self.page = _page(chromium, height)
        self.page.route("**/*", self._route)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _route(self, route) -> None:  # type: ignore[no-untyped-def]
        if route.request.url.split("#")[0] == self.url:
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort()

    def check(self) -> None:
        assert self.refused == [], f"the page asked the network for {self.refused}"
        assert self.errors == [], self.errors


def test_an_exported_replay_steps_through_the_article_offline(
    chromium: object, images: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    from steptrace.views.export import export_html

    traces = tmp_path / "traces"
    traces.mkdir()
    out = tmp_path / "article.html"
    export_html([runs.article(traces)], out)
    offline = Offline(chromium, out)
    page = offline.page
    page.goto(offline.url)
    expect(page).to_have_title("article · steptrace replay")
    heading = page.locator("h2.step-label")
    expect(heading).to_have_text("step 0 (1st data input)")
    expect(page.get_by_text("This file holds steps 0 to 2 of the run's 3 recorded steps")
           ).to_be_visible()  # fmt: skip
    page.get_by_role("button", name="Next ▶").click()
    expect(heading).to_have_text("step 1 (2nd data input)")
    page.keyboard.press("ArrowRight")
    expect(heading).to_have_text("step 2 (3rd data input)")
    expect(page.get_by_role("button", name="Next ▶")).to_be_disabled()
    expect(page.get_by_text("ŵ = (1/200, 23199997/11600, 17400001/5800)", exact=True)
           ).to_be_visible()  # fmt: skip
    expect(page.locator("pre.update")).to_contain_text("= (1/200, 23199997/11600, 17400001/5800)")
    expect(page.get_by_text("epoch 0 · dataset row 2 · exact · α = 1")).to_be_visible()
    tables = page.locator("table")
    forward = tables.filter(has_text="o2 = L2(o1)").locator("tbody tr").first
    expect(forward).to_contain_text("(0, 2000, 3000)")
    loss = tables.filter(has_text="loss = Loss(o3, y_truth)").locator("tbody tr").first
    expect(loss.locator("td").nth(2)).to_have_text("1/2")
    backward = tables.filter(has_text="δ4 = o3 − y_truth").locator("tbody tr").first
    expect(backward.locator("td").nth(1)).to_have_text("-1 (gate open)")
    weights = tables.filter(has_text="ŵ = w − α·grad").locator("tbody tr")
    expect(weights.nth(1).locator("td").nth(3)).to_have_text("23199997/11600")
    expect(weights.nth(1).locator("td.changed")).to_have_count(2)  # its gradient and ŵ
    expect(page.get_by_text("The update moved w_2, w_3.")).to_be_visible()
    chain = page.locator(".chain").first
    expect(chain.locator(".box.changed")).to_have_count(5)
    expect(chain.locator(".box").nth(4).locator(".value")).to_have_text("1/2")
    # δ flows from the loss to L1, left to right: its arrows point that way, as the forward's.
    expect(page.locator(".chain").nth(1).locator(".arrow")).to_have_text(["→", "→", "→"])
    expect(page.locator("svg.chart polyline")).to_have_count(1)
    assert page.url.endswith("#step=2")
    page.locator("#slider").blur()
    page.screenshot(path=str(images / "export.png"), full_page=True)
    assert (images / "export.png").stat().st_size > 10_000
    # Back with the left arrow, to the ends with Home and End, anywhere with the slider and
    # the step box; an address with #step=N opens there.
    page.keyboard.press("ArrowLeft")
    expect(heading).to_have_text("step 1 (2nd data input)")
    page.keyboard.press("Home")
    expect(heading).to_have_text("step 0 (1st data input)")
    expect(page.get_by_role("button", name="◀ Previous")).to_be_disabled()
    page.keyboard.press("End")
    expect(heading).to_have_text("step 2 (3rd data input)")
    page.locator("#slider").fill("1")
    expect(heading).to_have_text("step 1 (2nd data input)")
    page.locator("#jump").fill("0")
    page.locator("#jump").press("Enter")
    expect(heading).to_have_text("step 0 (1st data input)")
    page.goto(offline.url + "#step=2")
    page.reload()
    expect(heading).to_have_text("step 2 (3rd data input)")
    offline.check()


def test_exported_comparisons_and_long_windows_open_offline(
    chromium: object, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    from steptrace.views.export import export_html

    traces = tmp_path / "traces"
    traces.mkdir()
    sweep = runs.lr_sweep(traces, ("1e-9", "1e-8"), epochs=400)  # 1,200 steps each
    long = tmp_path / "window.html"
    export_html([sweep[0]], long, 100)  # steps 100 to 1,099: packed (gzip, base64)
    offline = Offline(chromium, long)
    page = offline.page
    page.goto(offline.url)
    heading = page.locator("h2.step-label")
    expect(heading).to_have_text("step 100 (101st data input)")
    page.locator("#jump").fill("600")
    page.locator("#jump").press("Enter")
    expect(heading).to_have_text("step 600 (601st data input)")
    page.locator("#jump").blur()  # keys typed into the box are the box's
    page.keyboard.press("PageDown")
    expect(heading).to_have_text("step 610 (611th data input)")
    offline.check()

    both = tmp_path / "compare.html"
    export_html(sweep, both, 0, 49)
    offline = Offline(chromium, both)
    page = offline.page
    page.goto(offline.url)
    expect(page).to_have_title("Compare sweep-lr1e-9, sweep-lr1e-8 · steptrace")
    expect(page.get_by_role("heading", name="All runs at step 0")).to_be_visible()
    page.keyboard.press("ArrowRight")
    side = page.get_by_role("heading", name="All runs at step 1")
    expect(side).to_be_visible()
    table = page.locator("#panel table")
    expect(table.locator("thead")).to_contain_text("sweep-lr1e-9")
    expect(table.locator("tbody tr").first).to_contain_text("1e-8")
    expect(page.locator("svg.chart")).to_have_count(4)  # loss, and w_1, w_2, w_3
    expect(page.locator("svg.chart").first.locator("polyline")).to_have_count(2)
    offline.check()


def test_an_exported_image_run_draws_its_heatmaps_offline(chromium: object, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from steptrace.views.export import export_html

    traces = tmp_path / "traces"
    traces.mkdir()
    run = runs.cnn(traces)
    out = tmp_path / "cnn.html"
    export_html([run], out)
    offline = Offline(chromium, out)
    page = offline.page
    page.goto(offline.url)
    expect(page.locator("h2.step-label")).to_have_text("step 0 (1st data input)")
    chain = page.locator(".chain").first
    expect(chain.locator(".box").filter(has_text="maxpool2d(2)").locator(".shape")).to_have_text(
        "2 × 2 × 2"
    )
    conv = page.locator("figure.heatmaps").filter(has_text="L2 conv2d(2, 3×3, bias)")
    expect(conv.locator("svg.heatmap")).to_have_count(2)  # a grid per channel
    expect(conv.locator("rect.cell")).to_have_count(32)
    o2 = steptrace.load_tensor(run, "o2", exact=True)[0]
    # The 16th cell: channel 0, row 3, column 3, -25/16: written to 3 digits, whole on hover.
    assert str(o2[0, 3, 3]) == "-25/16"
    cell = conv.locator("rect.cell").nth(15)
    expect(conv.locator("svg.heatmap").first.locator("text").nth(15)).to_have_text("-1.56")
    cell.hover()
    expect(page.locator(".heat-tip")).to_have_text(f"o2[0, 3, 3] = {o2[0, 3, 3]}")
    fills = {conv.locator("rect.cell").nth(k).get_attribute("fill") for k in range(32)}
    assert len(fills) > 5, fills
    # L4's pooling keeps 4 cells of each channel of o3: outlined, named on hover.
    relu = page.locator("figure.heatmaps").filter(has_text="L3 relu: o3")
    expect(relu.locator("rect.pooled")).to_have_count(8)
    relu.locator("svg.heatmap").nth(1).locator("rect.cell").nth(4).hover()  # (1, 0): a tie, kept
    expect(page.locator(".heat-tip")).to_contain_text("o3[1, 1, 0] = 11/16")
    expect(page.locator(".heat-tip")).to_contain_text("kept by L4's max pooling")
    kernels = page.locator("figure.heatmaps").filter(has_text="ŵ2 − w2: what the update changed")
    expect(kernels.locator("svg.heatmap")).to_have_count(4)  # out 0 ← in 0 … out 1 ← in 1
    page.keyboard.press("ArrowRight")
    expect(page.locator("h2.step-label")).to_have_text("step 1 (2nd data input)")
    o2 = steptrace.load_tensor(run, "o2", exact=True)[1]
    conv.locator("rect.cell").nth(17).hover()
    expect(page.locator(".heat-tip")).to_have_text(f"o2[1, 0, 1] = {o2[1, 0, 1]}")
    offline.check()

    other = runs.cnn(traces, "lr0.5", "1/2")
    both = tmp_path / "both.html"
    export_html([run, other], both)
    offline = Offline(chromium, both)
    page = offline.page
    page.goto(offline.url)
    expect(page.get_by_role("heading", name="Images and kernels")).to_be_visible()
    side = page.locator("figure.heatmaps")
    expect(side).to_have_count(1)
    expect(side.locator("svg.heatmap")).to_have_count(4)  # o2 of both runs, two channels each
    page.keyboard.press("ArrowRight")  # step 1: the runs' kernels have moved apart
    expect(page.get_by_role("heading", name="All runs at step 1")).to_be_visible()
    page.get_by_label("difference").check()
    expect(side.locator("figcaption")).to_contain_text("— each run minus cnn")
    a = steptrace.load_tensor(run, "o2", exact=True)[1]
    b = steptrace.load_tensor(other, "o2", exact=True)[1]
    assert b[1, 1, 1] != a[1, 1, 1]  # channel 1's (channel 0's kernels never move)
    side.locator("rect.cell").nth(16 + 5).hover()
    expect(page.locator(".heat-tip")).to_have_text(f"o2[1, 1, 1] = {b[1, 1, 1] - a[1, 1, 1]}")
    page.get_by_label("Image or kernels to compare").select_option(label="w2_after")
    expect(side.locator("svg.heatmap")).to_have_count(4)  # the kernels' differences
    offline.check()
