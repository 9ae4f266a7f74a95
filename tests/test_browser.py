"""A real browser against a real ``steptrace dashboard``: Debian's Chromium driven by
Playwright. Saves screenshots in the test's temporary folder; with
STEPTRACE_SCREENSHOTS=docs/img set, it refreshes the README's screenshots instead.

Needs /usr/bin/chromium (``apt-get install chromium``; never a downloaded browser). Without
it the tests skip, or fail when STEPTRACE_REQUIRE_BROWSER=1 (as CI sets).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def _wait_healthy(url: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the dashboard exited early: {process.communicate()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the dashboard did not answer at {url} within {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``steptrace dashboard FOLDER --port P --no-browser`` as a real process: the article's
    run, three learning rates and a two-layer network. Stopped (and its Streamlit with it) at
    the end."""
    _need_browser()
    traces = tmp_path_factory.mktemp("browser") / "traces"
    traces.mkdir()
    runs.article(traces)
    runs.lr_sweep(traces, ("1e-9", "1e-8", "1e-7"), epochs=30)
    runs.two_layer(traces)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "steptrace", "dashboard", str(traces),
         "--port", str(port), "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the server and Streamlit, only
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith(f"steptrace dashboard: {url}"), first
        _wait_healthy(url, process)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode is not None


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _page(browser: object, height: int):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": height})  # type: ignore[attr-defined]
    page.set_default_timeout(30_000)
    return page


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
    page.screenshot(path=str(images / "replay.png"), full_page=True)
    assert (images / "replay.png").stat().st_size > 10_000
    # Play from the last step starts again at 0, moves on by itself, and stops at the end.
    page.get_by_role("button", name="▶ Play").click()
    expect(heading).to_have_text("step 1 (2nd data input)")
    expect(heading).to_have_text("step 2 (3rd data input)")
    expect(page.get_by_role("button", name="▶ Play")).to_be_visible()
    page.wait_for_timeout(1500)
    expect(heading).to_have_text("step 2 (3rd data input)")


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
    page.screenshot(path=str(images / "replay-two-layer.png"), full_page=True)
    assert (images / "replay-two-layer.png").stat().st_size > 10_000
    # Step 1, x = (200, 0, 0): every value moved on, and o2's second neuron closes its gate.
    page.get_by_role("button", name="Next ▶").click()
    expect(heading).to_have_text("step 1 (2nd data input)")
    expect(chain.locator(".box.changed")).to_have_count(7)
    expect(back.locator(".note", has_text="gates open, closed")).to_be_visible()
    expect(matrices.first.locator("tbody tr").first).to_contain_text("413/80000")  # step 0's ŵ2
