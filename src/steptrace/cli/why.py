"""``steptrace why``: a run's first non-finite value, and what led there."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..trace.why import first_nonfinite


@click.command("why")
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"step", "layer", "tensor", "index", "value", "led_there"} as JSON.',
)
def command(run: Path, as_json: bool) -> None:
    """Name RUN's first non-finite value in the order a step computes them (its inputs, the
    forward pass, the loss, the backward pass, the update): step, layer, tensor, index (the
    step's row, then numpy's index) and value; then what led there, from the per-step figures
    of the steps before (the sizes that grew fastest, since when). A run without one says so.

    \b
    Example:
        steptrace record --numerics float64 --lr 1e3 --model examples/mlp-3-2-1.json \\
            --epochs 40 --keep-last 20
        steptrace why traces/seed-mlp-3-2-1-float64-lr1e3
    """
    found = first_nonfinite(run)
    if as_json:
        click.echo(json.dumps(found.as_json(), ensure_ascii=False))
    else:
        click.echo(found.text())
