"""``python -m steptrace``: the command line, as the ``steptrace`` console script runs it."""

from .cli import main

main()
