"""The ``steptrace`` command: a thin layer over the library.

Commands parse their arguments, call the public API and format the result. Errors are turned
into one ``Error: …`` line and an exit code here, in one place, for every command.
"""

from __future__ import annotations

import sys
from typing import Any

import click
import pyarrow as pa

from .._version import __version__
from ..errors import SteptraceError

__all__ = ["cli", "main"]


class SteptraceGroup(click.Group):
    """A click group whose errors — the user's, or steptrace's — are one line, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SteptraceError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except pa.ArrowException as exc:
            # A damaged Parquet file met while reading rows (a truncated part, say).
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            click.echo(
                f"Error: cannot read the trace: {first}; 'steptrace verify' says where", err=True
            )
            ctx.exit(2)

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            code = 130
        except click.ClickException as exc:
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} -h')"
            click.echo(f"Error: {exc.format_message()}{hint}", err=True)
            code = exc.exit_code
        else:
            if not standalone_mode:
                return rv
            code = rv if isinstance(rv, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


@click.group(
    "steptrace", cls=SteptraceGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, "--version", prog_name="steptrace")
def cli() -> None:
    """Record, replay, compare and analyse every number of a learning process.

    \b
    Example:
        steptrace record                 # the article's example, exact arithmetic
        steptrace replay                 # print it step by step, as the article does
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``steptrace`` console script and ``python -m steptrace``."""
    cli.main(args=argv, prog_name="steptrace")


from . import dashboard as _dashboard  # noqa: E402
from . import diff as _diff  # noqa: E402
from . import export as _export  # noqa: E402
from . import record as _record  # noqa: E402
from . import replay as _replay  # noqa: E402
from . import summary as _summary  # noqa: E402
from . import verify as _verify  # noqa: E402
from . import why as _why  # noqa: E402

for _module in (_record, _replay, _diff, _summary, _dashboard, _export, _verify, _why):
    cli.add_command(_module.command)
