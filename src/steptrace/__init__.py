"""steptrace: record, replay, analyse and pin every number of a learning process.

>>> import steptrace
>>> run = steptrace.record("seed", lr="1", numerics="exact", out="traces")  # doctest: +SKIP
>>> steptrace.load_trace(run.path)[["step", "o2_1", "loss", "d3_1"]]  # doctest: +SKIP

The names below are loaded on first use: importing steptrace (which pytest does for every run,
through the golden-trace plugin) stays cheap until numpy, pandas or pyarrow are needed. The
first use of any of them also registers the ``df.steptrace`` DataFrame accessor.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    ConfigError,
    DatasetError,
    ExactLimitError,
    Interrupted,
    ModelError,
    NewerFormatError,
    SteptraceError,
    TraceError,
    WriteError,
)

if TYPE_CHECKING:
    from . import analysis
    from . import torch as torch
    from .compare.folders import FolderComparison, compare_folders
    from .compare.traces import Comparison, compare_traces
    from .data import Dataset, load_dataset, seed_dataset
    from .model.spec import Model, load_model
    from .trace.loader import find_traces, load_trace, load_traces
    from .trace.opener import open_trace
    from .trace.reader import Trace
    from .trace.run import RunWriter, open_run
    from .trace.scalars import load_scalars
    from .trace.tensors import load_tensor
    from .trace.verify import VerifyReport, verify
    from .train.api import record, sweep
    from .train.recorder import RunResult
    from .train.resumer import resume
    from .train.settings import Settings

_LAZY = {
    "Comparison": "compare.traces",
    "compare_traces": "compare.traces",
    "FolderComparison": "compare.folders",
    "compare_folders": "compare.folders",
    "Dataset": "data",
    "load_dataset": "data",
    "seed_dataset": "data",
    "Trace": "trace.reader",
    "find_traces": "trace.loader",
    "load_trace": "trace.loader",
    "load_traces": "trace.loader",
    "open_trace": "trace.opener",
    "RunWriter": "trace.run",
    "open_run": "trace.run",
    "RunResult": "train.recorder",
    "record": "train.api",
    "sweep": "train.api",
    "resume": "train.resumer",
    "Settings": "train.settings",
    "Model": "model.spec",
    "load_model": "model.spec",
    "load_tensor": "trace.tensors",
    "load_scalars": "trace.scalars",
    "VerifyReport": "trace.verify",
    "verify": "trace.verify",
}


def __getattr__(name: str) -> Any:
    if name == "analysis":
        return importlib.import_module(".analysis", __name__)
    if name == "torch":
        # The submodule steptrace.torch, loaded on first use: it imports PyTorch. Not in
        # __all__, so that `from steptrace import *` does not.
        return importlib.import_module(".torch", __name__)
    if name not in _LAZY:
        raise AttributeError(f"module 'steptrace' has no attribute {name!r}")
    importlib.import_module(".analysis", __name__)  # registers df.steptrace
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Comparison",
    "ConfigError",
    "Dataset",
    "DatasetError",
    "ExactLimitError",
    "FolderComparison",
    "Interrupted",
    "Model",
    "ModelError",
    "NewerFormatError",
    "RunResult",
    "RunWriter",
    "Settings",
    "SteptraceError",
    "Trace",
    "TraceError",
    "VerifyReport",
    "WriteError",
    "__version__",
    "analysis",
    "compare_folders",
    "compare_traces",
    "find_traces",
    "load_dataset",
    "load_model",
    "load_scalars",
    "load_tensor",
    "load_trace",
    "load_traces",
    "open_run",
    "open_trace",
    "record",
    "resume",
    "seed_dataset",
    "sweep",
    "verify",
]
