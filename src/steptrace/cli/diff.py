"""``steptrace diff``: compare two traces; exit 0 same, 1 different, 2 error (like ``diff``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..compare import compare_traces


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


@click.command("diff")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--rtol", type=float, default=0.0, show_default=True, help="Relative tolerance.")
@click.option("--atol", type=float, default=0.0, show_default=True, help="Absolute tolerance.")
@click.option(
    "--columns",
    help="Compare only these, comma-separated: columns (o2_1) or fields (w_after).",
)
@click.option(
    "--ignore",
    help="Leave these out, comma-separated: columns, fields or settings (seed, lr).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def command(
    ctx: click.Context,
    a: Path,
    b: Path,
    rtol: float,
    atol: float,
    columns: str | None,
    ignore: str | None,
    as_json: bool,
) -> None:
    """Compare trace B with trace A, aligned on (step, sample), and show where they first
    part. A and B are run folders or Parquet trace files (goldens). Floats agree when
    |B - A| <= atol + rtol * |A|; by default they must be equal, and exact runs are compared
    by their exact rationals. Exit status: 0 identical, 1 different, 2 error.

    \b
    Example:
        steptrace diff traces/golden/article-exact.parquet traces/golden/article-float64.parquet
        steptrace diff golden.parquet traces/my-run --rtol 1e-12 --ignore seed --json
    """
    result = compare_traces(
        a, b, rtol=rtol, atol=atol, columns=_names(columns), ignore=_names(ignore) or ()
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.format())
    ctx.exit(0 if result.identical else 1)
