"""steptrace: record, replay, analyse and pin every number of a learning process.

>>> import steptrace
>>> run = steptrace.record("seed", lr="1", numerics="exact", out="traces")  # doctest: +SKIP
>>> steptrace.load_trace(run.path)[["step", "o2_1", "loss", "d3_1"]]  # doctest: +SKIP
"""

from . import analysis  # registers the DataFrame accessor df.steptrace
from ._version import __version__
from .data import Dataset, load_dataset, seed_dataset
from .errors import (
    ConfigError,
    DatasetError,
    ExactLimitError,
    Interrupted,
    NewerFormatError,
    SteptraceError,
    TraceError,
    WriteError,
)
from .reader import Trace, find_traces, load_trace, load_traces, open_trace
from .recorder import RunResult, record, sweep
from .resumer import resume
from .trainer import Settings, StepEvent, iter_events

__all__ = [
    "ConfigError",
    "Dataset",
    "DatasetError",
    "ExactLimitError",
    "Interrupted",
    "NewerFormatError",
    "RunResult",
    "Settings",
    "StepEvent",
    "SteptraceError",
    "Trace",
    "TraceError",
    "WriteError",
    "__version__",
    "analysis",
    "find_traces",
    "iter_events",
    "load_dataset",
    "load_trace",
    "load_traces",
    "open_trace",
    "record",
    "resume",
    "seed_dataset",
    "sweep",
]
