"""``steptrace verify``: check that traces are whole and that every row follows the maths."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import TraceError
from ..trace.loader import find_traces, is_folder_of_runs
from ..trace.verify import verify


def _runs(path: Path) -> list[Path]:
    """The run(s) at ``path``: itself if it is a run or a part file, else every run under it."""
    if not path.exists():
        raise TraceError(f"no trace at {str(path)!r}")
    if not is_folder_of_runs(path):
        return [path]
    traces, problems = find_traces(path)
    if not traces and not problems:
        raise TraceError(f"no runs in {str(path)!r}; record one with 'steptrace record'")
    return sorted([t.path for t in traces] + [p for p, _ in problems])


@click.command("verify")
@click.argument("traces", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--rtol",
    type=click.FloatRange(min=0),
    help="Relative tolerance for recomputed values [default: 0, exact; runs recorded by "
    "another framework: their stated tolerance].",
)
@click.option("--atol", type=click.FloatRange(min=0), help="Absolute tolerance [default: 0].")
def command(traces: tuple[Path, ...], rtol: float | None, atol: float | None) -> None:
    """Check that each TRACE (a run folder, a trace file, or a folder of them) is whole and that
    every row follows from its inputs: steps contiguous from 0, metadata consistent with the
    rows, and each row's forward pass through every layer, loss, backward pass and update
    recomputed exactly, in the run's number system.

    Prints OK with counts, or the first problem. Exit code 0: all OK; 1: a problem found;
    2: a path could not be read as a trace.

    \b
    Example:
        steptrace verify traces/seed-exact-lr1
        steptrace verify traces                  # every run in the folder
        steptrace verify traces/golden           # every trace file in it
        steptrace verify traces/torch-mlp --rtol 1e-12
    """
    runs = [run for path in traces for run in _runs(path)]
    code = 0
    for run in runs:
        try:
            report = verify(run, rtol=rtol, atol=atol)
        except TraceError as exc:
            if len(runs) == 1:
                raise
            click.echo(f"Error: {exc}", err=True)
            code = 2
            continue
        click.echo(str(report))
        if not report.ok:
            code = max(code, 1)
    click.get_current_context().exit(code)
