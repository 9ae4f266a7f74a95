"""``steptrace dashboard``: serve the Streamlit dashboard on this machine only."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import webbrowser
from pathlib import Path
from types import FrameType

import click

from ..errors import ConfigError, TraceError
from ..views.folder import FOLDER_ENV

HOST = "127.0.0.1"
DEFAULT_PORT = 8501


def app_file() -> Path:
    """The installed dashboard's entry script (works from a checkout and from a wheel)."""
    spec = importlib.util.find_spec("steptrace.dashboard")
    if spec is None or spec.origin is None:  # pragma: no cover - it ships with steptrace
        raise ConfigError("the dashboard is not installed with this steptrace")
    return Path(spec.origin).with_name("app.py")


def free_port(preferred: int = DEFAULT_PORT) -> int:
    """``preferred`` if nothing listens there on localhost, else a port the system picks.

    The port is tried as the server will bind it, with ``SO_REUSEADDR`` (as Tornado does): a
    dashboard just stopped while a browser was connected leaves its connections in TIME-WAIT
    for a minute, and those do not keep the server from listening there again."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise ConfigError("no free port on 127.0.0.1")  # pragma: no cover


def streamlit_command(port: int) -> list[str]:
    """The ``streamlit run`` command line: localhost only, headless (steptrace opens the
    browser itself, so Streamlit never asks questions on the terminal), no telemetry, and a
    viewer's toolbar (no Deploy button or developer options in a local tool).

    Python runs with ``-P``: ``python -m`` would put the working directory first on the
    import path, and a folder there named ``steptrace`` (the clone, seen from the folder
    that holds it) would be imported instead of the installed package."""
    return [
        sys.executable, "-P", "-m", "streamlit", "run", str(app_file()),
        "--server.address", HOST,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--global.developmentMode", "false",
        "--client.toolbarMode", "viewer",
    ]  # fmt: skip


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> bool:
    """Wait until the server accepts connections (False if it exited or took too long)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _check_streamlit() -> None:
    # Looked up, not imported: the server imports it, in its own process.
    if importlib.util.find_spec("streamlit") is None:
        raise ConfigError("the dashboard needs Streamlit: pip install 'steptrace[dashboard]'")


@click.command("dashboard")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False), default=Path("traces"))
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help=f"Port on 127.0.0.1 [default: {DEFAULT_PORT}, or a free one].")  # fmt: skip
@click.option("--no-browser", is_flag=True, help="Do not open a browser window.")
def command(folder: Path, port: int | None, no_browser: bool) -> None:
    """Replay runs step by step and compare learning rates in the browser. FOLDER holds the
    runs (searched recursively); the page reads nothing outside it. Serves on 127.0.0.1 only.

    \b
    Example:
        steptrace dashboard traces --port 8502 --no-browser
    """
    if not folder.is_dir():
        raise TraceError(
            f"no folder {str(folder)!r}; record a run first with 'steptrace record --out {folder}'"
        )
    _check_streamlit()
    if port is not None and free_port(port) != port:
        raise ConfigError(f"port {port} is in use on {HOST}; choose another with --port, or "
                          "leave it out to take a free one")  # fmt: skip
    port = free_port() if port is None else port
    url = f"http://{HOST}:{port}"
    env = {**os.environ, FOLDER_ENV: str(folder.resolve())}
    click.echo(f"steptrace dashboard: {url}  (runs from {folder}; Ctrl-C to stop)")
    process = subprocess.Popen(streamlit_command(port), env=env)
    # Stopped by SIGTERM (a service manager, a test) as by Ctrl-C: the server goes with us.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if not no_browser and wait_ready(port, process):
            webbrowser.open(url)
        code = process.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(process)
    if code:
        raise TraceError(f"the dashboard server stopped with exit code {code}")
