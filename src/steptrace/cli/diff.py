"""``steptrace diff``: compare two traces; exit 0 same, 1 different, 2 error (like ``diff``)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from ..compare.folders import FolderComparison, compare_folders
from ..compare.traces import Comparison, Tolerance, compare_traces
from ..errors import ConfigError, TraceError
from ..trace.loader import is_folder_of_runs


def _names(text: str | None) -> list[str] | None:
    """Comma-separated names; a comma inside brackets belongs to an image's value
    (``loss,o2[1, 3, 0]`` is two names)."""
    if text is None:
        return None
    names = [name.strip() for name in re.split(r",(?![^\[]*\])", text)]
    return [name for name in names if name]


def _tolerance(
    ctx: click.Context, param: click.Parameter, given: tuple[str, ...]
) -> dict[str, Tolerance]:
    """``--tol NAME=RTOL[,ATOL]`` (repeatable) as ``{NAME: Tolerance(rtol, atol)}``."""
    out = {}
    for text in given:
        name, _, numbers = text.partition("=")
        try:
            rtol, atol = (float(v) for v in (numbers + ",0").split(",")[:2])
            if not name.strip() or numbers.count(",") > 1:
                raise ValueError
            out[name.strip()] = Tolerance(rtol, atol)
        except (ValueError, TraceError):
            raise click.BadParameter(
                f"{text!r} is not NAME=RTOL or NAME=RTOL,ATOL with finite tolerances >= 0 "
                "(e.g. --tol w_after=1e-12 or --tol loss=0,1e-15)"
            ) from None
    return out


class _Bar:
    """A progress bar on stderr for comparisons of several windows, on a terminal only."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            hidden = total < 2 or not sys.stderr.isatty()
            self.bar = click.progressbar(length=total, label="comparing", file=sys.stderr,
                                         hidden=hidden)  # fmt: skip
        self.bar.update(1)
        if done == total:
            self.bar.render_finish()


@click.command("diff")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--rtol", type=float, default=0.0, show_default=True, help="Relative tolerance.")
@click.option("--atol", type=float, default=0.0, show_default=True, help="Absolute tolerance.")
@click.option(
    "--tol",
    "tolerances",
    multiple=True,
    metavar="NAME=RTOL[,ATOL]",
    callback=_tolerance,
    help="Tolerances for a column (o2_1), a tensor (w2_after) or a family (w_after: every "
    "layer's), over --rtol/--atol; repeatable.",
)
@click.option(
    "--columns",
    help="Compare only these, comma-separated: columns (w4_after_1_2), tensors (w4_after) or "
    "families (w_after: every layer's).",
)
@click.option(
    "--ignore",
    help="Leave these out, comma-separated: columns, tensors, families or settings (seed, lr, "
    "model.layers[2]).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def command(
    ctx: click.Context,
    a: Path,
    b: Path,
    rtol: float,
    atol: float,
    tolerances: dict[str, Tolerance],
    columns: str | None,
    ignore: str | None,
    as_json: bool,
) -> None:
    """Compare trace B with trace A, aligned on (step, sample), and show where they first
    part, named by layer, quantity and index (w4_after_1_2: layer 4's weight W[1,2] after the
    update). A and B are run folders or Parquet trace files (goldens); or two folders of runs
    (two sweeps), compared run by run, runs paired by name. Floats agree when
    |B - A| <= atol + rtol * |A|; by default they must be equal, and exact runs are compared
    by their exact rationals. Exit status: 0 identical, 1 different, 2 error.

    \b
    Example:
        steptrace diff traces/golden/article-exact.parquet traces/golden/article-float64.parquet
        steptrace diff golden.parquet traces/my-run --rtol 1e-12 --ignore seed --json
        steptrace diff golden.parquet traces/my-run --tol loss=1e-9 --tol w_after=0,1e-15
        steptrace diff traces/two-layer-a traces/two-layer-b --columns loss,w4_after
        steptrace diff traces/golden-sweep traces/sweep
    """
    if columns is not None and not _names(columns):
        raise ConfigError(f"--columns {columns!r} names no column: give some, or leave it out")
    options: dict[str, Any] = dict(
        rtol=rtol, atol=atol, tolerances=tolerances, columns=_names(columns),
        ignore=_names(ignore) or (),
    )  # fmt: skip
    result: Comparison | FolderComparison
    if is_folder_of_runs(a) and is_folder_of_runs(b):
        result = compare_folders(a, b, **options)
    else:
        result = compare_traces(a, b, progress=_Bar(), **options)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.format())
    ctx.exit(0 if result.identical else 1)
