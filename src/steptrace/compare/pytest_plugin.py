"""pytest plugin: golden-trace regression tests (registered via the ``pytest11`` entry point).

The ``golden_trace`` fixture pins every value of a run to a golden file named after the test::

    def test_training(golden_trace, tmp_path):
        run = steptrace.record("seed", lr="1e-7", numerics="float64", out=tmp_path)
        golden_trace(run)

The golden is one Parquet trace file, ``<test module folder>/<test name>.parquet`` next to
the test file by default. A missing golden is written and the test fails saying where; a
mismatch writes the run next to it as ``<test name>.obtained.parquet`` and fails with the first
divergence, named by layer, quantity and index (``column w4_after_1_2 (layer 4's weight W[1,2]
after the update)``; an image's value as numpy indexes it, ``o2[1, 3, 0] (layer 2's output,
channel 1, row 3, column 0)``), and a per-column table. Any model's runs work alike.
``pytest --steptrace-update`` rewrites goldens that are missing or differ and lets the tests
pass. ``docs/golden.md`` has the whole story.

This module is imported by every pytest run wherever steptrace is installed, so it imports
nothing heavy at the top: pandas and pyarrow load only when a test uses the fixture.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from .traces import Comparison, Side, Tolerance

__all__ = ["GoldenTrace", "golden_trace", "steptrace_golden_dir"]

T = TypeVar("T")

UPDATE_OPTION = "--steptrace-update"
DIR_INI = "steptrace_golden_dir"
GOLDEN_SUFFIX = ".parquet"
OBTAINED_SUFFIX = ".obtained.parquet"
_REWRITTEN = pytest.StashKey[list[Path]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("steptrace", "steptrace golden traces")
    group.addoption(
        UPDATE_OPTION,
        action="store_true",
        default=False,
        help="write golden traces that are missing or differ, and pass those checks",
    )
    parser.addini(
        DIR_INI,
        "folder of golden traces, relative to the ini file "
        "(default: a folder named after each test module, next to it)",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_REWRITTEN] = []


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rewritten = config.stash.get(_REWRITTEN, [])
    if rewritten:
        terminalreporter.section("steptrace golden traces")
        for path in rewritten:
            terminalreporter.write_line(f"rewrote {_shown(path, config)}")


@pytest.fixture
def steptrace_golden_dir(request: pytest.FixtureRequest) -> Path:
    """The folder this test's goldens live in. Set ``steptrace_golden_dir`` in the ini file,
    or override this fixture (in a conftest.py or a test module) to put them elsewhere."""
    configured = str(request.config.getini(DIR_INI) or "")
    if configured:
        base = request.config.inipath.parent if request.config.inipath else request.config.rootpath
        return base / configured
    return request.path.parent / request.path.stem


@pytest.fixture
def golden_trace(request: pytest.FixtureRequest, steptrace_golden_dir: Path) -> GoldenTrace:
    """Check a run against the golden trace named after the test.

    >>> def test_article(golden_trace, tmp_path):  # doctest: +SKIP
    ...     golden_trace(steptrace.record("seed", numerics="float64", out=tmp_path))
    """
    return GoldenTrace(
        steptrace_golden_dir,
        request.node.name,
        bool(request.config.getoption(UPDATE_OPTION)),
        request.config,
    )


def golden_name(test_name: str) -> str:
    """A file name from a test name: ``test_lr[1e-7]`` → ``test_lr_1e-7``."""
    return re.sub(r"[^\w.+-]+", "_", test_name).strip("_") or "golden"


def _shown(path: Path, config: pytest.Config) -> str:
    """``path`` as the user would type it from where pytest was started."""
    try:
        return str(path.relative_to(config.invocation_params.dir))
    except ValueError:
        return str(path)


def _attempt(action: Callable[[], T]) -> tuple[T | None, str | None]:
    """``action()``'s value, or the message of the steptrace error it raised."""
    from ..errors import SteptraceError

    try:
        return action(), None
    except SteptraceError as exc:
        return None, str(exc)


def _or_fail(action: Callable[[], T], prefix: str) -> T:
    """``action()``; a steptrace error fails the test in one line, without a traceback."""
    value, error = _attempt(action)
    if error is not None:
        pytest.fail(prefix + error, pytrace=False)
    return cast(T, value)


class GoldenTrace:
    """The ``golden_trace`` fixture: call it with a run to check it against its golden."""

    def __init__(self, directory: Path, test_name: str, update: bool, config: pytest.Config):
        self.directory = directory
        self.test_name = test_name
        self.update = update
        self.config = config
        self._used: set[Path] = set()

    def path(self, name: str | None = None) -> Path:
        """The golden file of this test, or of ``name``."""
        stem = golden_name(name or self.test_name).removesuffix(GOLDEN_SUFFIX)
        return self.directory / (stem + GOLDEN_SUFFIX)

    def __call__(
        self,
        run: Any,
        name: str | None = None,
        *,
        rtol: float = 0.0,
        atol: float = 0.0,
        tolerances: Mapping[str, Tolerance | tuple[float, float]] | None = None,
        columns: Sequence[str] | None = None,
        ignore: Sequence[str] = (),
    ) -> None:
        """Check ``run`` (a RunResult, a trace path, a :class:`~steptrace.Trace` or a
        DataFrame of trace rows) against the golden ``name`` (default: the test's name).
        Tolerances and selections are those of :func:`steptrace.compare.traces.compare_traces`."""
        from .traces import compare_traces, load_side

        golden = self.path(name)
        if golden in self._used:
            pytest.fail(
                f"golden_trace already checked a run against {_shown(golden, self.config)} in "
                "this test; give each further run its own name: golden_trace(run, name=...)",
                pytrace=False,
            )
        self._used.add(golden)
        obtained = golden.with_name(golden.name.removesuffix(GOLDEN_SUFFIX) + OBTAINED_SUFFIX)
        shown = _shown(golden, self.config)
        side = _or_fail(
            lambda: load_side(run, _shown(obtained, self.config)),
            "golden_trace cannot read the run: ",
        )
        if not golden.exists():
            self._write_missing(side, golden)
            return
        reference, error = _attempt(lambda: load_side(golden, shown))
        if error is not None:
            if self.update:  # e.g. a golden in an older format: the update replaces it
                self._rewrite(side, golden, obtained)
                return
            pytest.fail(f"golden trace {shown}: {error}", pytrace=False)
        assert reference is not None
        result = _or_fail(
            lambda: compare_traces(
                reference,
                side,
                rtol=rtol,
                atol=atol,
                tolerances=tolerances,
                columns=columns,
                ignore=ignore,
            ),
            f"golden trace {shown}: ",
        )
        if result.identical:
            obtained.unlink(missing_ok=True)  # left over from an earlier failure
        elif self.update:
            self._rewrite(side, golden, obtained)
        else:
            self._fail_mismatch(result, side, golden, obtained)

    def _writable(self, side: Side, golden: Path) -> None:
        if side.status in ("incomplete", "running"):
            pytest.fail(
                f"golden trace {_shown(golden, self.config)} not written: the run is "
                f"{side.status}; a golden must come from a complete run",
                pytrace=False,
            )

    def _write_missing(self, side: Side, golden: Path) -> None:
        from .traces import write_trace_file

        self._writable(side, golden)
        write_trace_file(side, golden)
        shown = _shown(golden, self.config)
        if self.update:
            self.config.stash[_REWRITTEN].append(golden)
            return
        pytest.fail(
            f"golden trace {shown} did not exist: it was written from this run "
            f"({side.rows} rows). Check it (steptrace replay {shown}), commit it, "
            "and run the test again.",
            pytrace=False,
        )

    def _rewrite(self, side: Side, golden: Path, obtained: Path) -> None:
        from .traces import write_trace_file

        self._writable(side, golden)
        write_trace_file(side, golden)
        obtained.unlink(missing_ok=True)
        self.config.stash[_REWRITTEN].append(golden)

    def _fail_mismatch(self, result: Comparison, side: Side, golden: Path, obtained: Path) -> None:
        from .traces import write_trace_file

        write_trace_file(side, obtained)
        shown_golden, shown_obtained = _shown(golden, self.config), _shown(obtained, self.config)
        report = result.format(
            "golden", "obtained", title=f"The run differs from golden trace {shown_golden}"
        )
        pytest.fail(
            f"{report}\n"
            f"Compare them: steptrace diff {shown_golden} {shown_obtained}\n"
            f"If the change is intended, update the golden: pytest {UPDATE_OPTION}",
            pytrace=False,
        )
