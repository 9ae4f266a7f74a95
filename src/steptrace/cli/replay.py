"""``steptrace replay``: print a trace step by step, as the article does."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError, TraceError
from ..trace.keep import RECORD_KEY, not_held
from ..trace.loader import find_traces, is_folder_of_runs
from ..trace.opener import open_trace
from ..trace.reader import Trace
from ..views.notation import REPLAY, Notation, stack_notation
from ..views.replay import format_step, iter_steps


def latest_run(folder: Path) -> Trace:
    """The most recently recorded run in a folder of runs."""
    traces, _ = find_traces(folder)
    if not traces:
        raise TraceError(f"no runs in {str(folder)!r}; record one with 'steptrace record'")
    return max(traces, key=lambda t: (str(t.meta.get("created", "")), t.path.stat().st_mtime_ns))


@click.command("replay")
@click.argument("trace", type=click.Path(path_type=Path), default=Path("traces"))
@click.option("--step", type=click.IntRange(min=0), help="Show only this step (0-based).")
@click.option("--from", "first", type=click.IntRange(min=0), help="Start at this step.")
@click.option("--to", "last", type=click.IntRange(min=0), help="End at this step (included).")
@click.option(
    "--full",
    is_flag=True,
    help="Write exact fractions in full; by default integers of more than 24 digits are "
    "shortened, 12345678901…78901234567 (176 digits).",
)
@click.option(
    "--pixel",
    metavar="C,I,J",
    help="The pixel whose convolution is worked out (0-based channel, row, column of the "
    "convolution's output) [default: channel 0's centre].",
)
def command(trace: Path, step: int | None, first: int | None, last: int | None, full: bool,
            pixel: str | None) -> None:  # fmt: skip
    """Print each step of a run as the article does, layer by layer for any model: forward
    table, loss, backward pass, update of every weight matrix. TRACE is a run folder, or a
    folder of runs (the latest is replayed).

    \b
    Example:
        steptrace replay traces/seed-exact-lr1 --step 2
        steptrace replay traces/seed-float64-lr1e-7 --from 100 --to 110
        steptrace replay traces/seed-exact-lr1e-7 --step 900 --full
        steptrace replay traces/shapes-shapes-float64-lr0.05 --step 0 --pixel 1,3,4
    """
    if step is not None and (first is not None or last is not None):
        raise click.UsageError("give --step, or --from/--to, not both")
    if first is not None and last is not None and last < first:
        raise click.UsageError(f"--to {last} comes before --from {first}")
    is_run = trace.exists() and not is_folder_of_runs(trace)
    run = open_trace(trace) if is_run else latest_run(trace)
    if run.path != trace:
        click.echo(f"Replaying {run.path} (the latest run in {trace})\n")
    total = int(run.meta.get("steps", 0))
    if step is not None:
        first = last = step
    if first is not None and not first < max(total, 1):
        raise TraceError(f"step {first} is not in {run.path} (steps 0 to {total - 1})")
    start, stop = first or 0, None if last is None else last + 1
    notation = stack_notation(run, REPLAY)  # the model's names and formulas, once per run
    chosen = None if pixel is None else _pixel(pixel, notation)
    shown = 0
    for rows in iter_steps(run, start, stop):
        if shown:
            click.echo("\n" + "─" * 72 + "\n")
        click.echo(format_step(run, rows, notation, full, chosen))
        shown += 1
    if step is not None and not shown and RECORD_KEY in run.meta:  # a run that keeps some
        held = run.read_table(["step"]).column("step").to_pylist()
        raise TraceError(not_held(run.meta, step, held))
    if step is not None and not shown:
        raise TraceError(f"step {step} was not recorded in {run.path} (status: {run.status})")
    if run.status != "complete":
        click.echo(f"\nThis run is {run.status}: {run.reason or 'it did not finish'}")


def _pixel(text: str, notation: Notation) -> tuple[int, int, int]:
    """``--pixel C,I,J`` read and checked against the first convolution's output."""
    conv = next((layer.number for layer in notation.layers if layer.type == "conv2d"), None)
    if conv is None:
        raise ConfigError("--pixel picks a convolution's output pixel; this model has none")
    shape = notation.shapes[f"o{conv}"]
    try:
        c, i, j = (int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--pixel {text!r}: give channel,row,column, e.g. 0,1,1") from None
    if not all(0 <= v < n for v, n in zip((c, i, j), shape, strict=True)):
        raise ConfigError(
            f"--pixel {text}: o{conv} is {' × '.join(map(str, shape))} (channels, rows, columns, "
            "counted from 0)"
        )
    return c, i, j
