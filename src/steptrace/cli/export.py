"""``steptrace export``: a replay as one HTML file that opens in any browser, offline."""

from __future__ import annotations

from pathlib import Path

import click

from ..views.export import DEFAULT_WINDOW, MAX_WINDOW, export_html


@click.command("export")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--html", "out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The HTML file to write.")  # fmt: skip
@click.option("--from", "first", type=click.IntRange(min=0),
              help="First step to hold [default: 0].")  # fmt: skip
@click.option("--to", "last", type=click.IntRange(min=0),
              help=f"Last step to hold, included [default: {DEFAULT_WINDOW:,} steps from "
              f"--from; at most {MAX_WINDOW:,} steps in a file].")  # fmt: skip
def command(runs: tuple[Path, ...], out: Path, first: int | None, last: int | None) -> None:
    """Write a replay of RUNS as one self-contained HTML file: Previous/Next, a slider and
    the arrow keys move through the steps, each shown as the article writes it (layer chain,
    forward table, loss, backward pass, update, what changed) beside the loss curve. Several
    runs give the comparison at one cursor. The file loads nothing from the network: send it,
    open it anywhere.

    \b
    Example:
        steptrace export traces/seed-exact-lr1 --html article.html
        steptrace export traces/seed-float64-lr1e-7 --html window.html --from 1000 --to 1999
        steptrace export traces/sweep-lr1e-9 traces/sweep-lr1e-8 --html compare.html
    """
    if first is not None and last is not None and last < first:
        raise click.UsageError(f"--to {last} comes before --from {first}")
    done = export_html(list(runs), out, first, last)
    click.echo(done.describe())
