"""One exception family for everything a user can get wrong.

Every message says what went wrong and, where it helps, what to do instead. The command line
prints ``Error: <message>`` on one line for any :class:`SteptraceError` and never a traceback.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ConfigError",
    "DatasetError",
    "ExactLimitError",
    "Interrupted",
    "ModelError",
    "NewerFormatError",
    "SteptraceError",
    "Terminated",
    "TraceError",
    "WriteError",
]


class SteptraceError(Exception):
    """Base class of every error steptrace raises on purpose."""

    exit_code = 2


class ConfigError(SteptraceError, ValueError):
    """A setting is invalid: learning rate, epochs, batch size, numerics, initial weights."""


class ModelError(ConfigError):
    """A model file cannot be used: malformed JSON, unknown layer or loss, weights that do not
    chain, non-numeric or non-finite numbers, outputs that do not match the targets."""


class DatasetError(SteptraceError, ValueError):
    """A dataset cannot be used: missing or non-numeric columns, NaN, empty, wrong width."""


class TraceError(SteptraceError):
    """A path is not a readable steptrace trace, or two traces cannot be compared."""


class MetadataError(TraceError):
    """A run's metadata holds a value of the wrong kind for ``key`` (a hand-edited
    ``"steps": "nine"``); ``reason`` says what without naming the file."""

    def __init__(self, where: str, key: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.key, self.reason = key, reason


class NewerFormatError(TraceError):
    """A trace was written by a newer steptrace whose format this version cannot read."""


class WriteError(SteptraceError, OSError):
    """A trace could not be written (read-only folder, disk full ...); flushed steps are kept."""

    exit_code = 1


class ExactLimitError(SteptraceError):
    """Exact arithmetic outgrew the size steptrace allows; the steps so far are kept, in
    ``run_dir`` when it is known (the recorder sets it)."""

    exit_code = 1
    run_dir: Path | None = None


class Interrupted(SteptraceError):
    """The user pressed Ctrl-C; the steps recorded so far were flushed and kept."""

    exit_code = 130


class Terminated(SteptraceError):
    """The process was asked to stop (SIGTERM) while a flight recorder held steps: the run
    closed and wrote them first."""

    exit_code = 143
