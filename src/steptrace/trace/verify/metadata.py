"""The run's metadata agrees with itself: ``_run.json`` and the copy in every part file's footer
name the same run (model and initial parameters, tensors, dataset, lr …), each value of the
kind the format says. Where copies disagree, the odd one out is named, down to the key that
differs (``model.layers[1].weights[0][2]``).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ...errors import MetadataError, SteptraceError
from ..opener import check_kinds
from ..reader import Trace
from ..schema import metadata_of
from ..writer import RUN_FILE
from .problem import Found, Problem, show

__all__ = ["DATASET_KEYS", "RUN_KEYS", "check_copies"]

#: Settings that define a run: every copy of the metadata must agree on them. (``created``,
#: ``steptrace_version`` and ``format_version`` describe the writing, not the run.)
RUN_KEYS = (
    "run_id", "numerics", "lr", "lr_exact", "epochs", "batch_size", "shuffle", "seed", "model",
    "tensors", "steps_per_epoch", "steps", "dataset",
)  # fmt: skip
#: Keys of the dataset's description that must agree (its ``source`` path may move).
DATASET_KEYS = ("name", "sha256", "rows", "features", "targets")


def check_copies(trace: Trace, meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every copy of the metadata (``meta``, as ``_run.json`` gives it, and each part's
    footer) agrees on the run; returns the parts' copies by file name."""
    copies: list[tuple[str, dict[str, Any]]] = []
    if trace.path.is_dir() and (trace.path / RUN_FILE).exists():
        copies.append((RUN_FILE, meta))
    footers: dict[str, dict[str, Any]] = {}
    for f in trace.files:
        try:
            footer = metadata_of(pq.read_schema(f), f.name)
        except (OSError, pa.ArrowException) as exc:
            raise Found(Problem(f"not a readable Parquet file ({exc})", f.name)) from None
        except SteptraceError as exc:
            raise Found(Problem(str(exc), f.name)) from None
        footers[f.name] = footer
        copies.append((f.name, footer))
    for file, copy in copies:
        try:
            check_kinds(copy, file)
        except MetadataError as exc:
            raise Found(Problem(exc.reason, file, (exc.key,))) from None
    for key in RUN_KEYS:
        _agree(copies, key)
    return footers


def _agree(copies: list[tuple[str, dict[str, Any]]], key: str) -> None:
    """All copies say the same ``key``; else the one that differs from the majority is named
    (a tie: the data files' copy is believed)."""
    values = [_pick(copy, key) for _, copy in copies]
    if all(v == values[0] for v in values):
        return
    majority = max(values, key=values.count)
    if values.count(majority) * 2 <= len(values):
        majority = values[-1]  # a tie: the data files' copy is believed
    file, copy = next((f, c) for f, c in copies if _pick(c, key) != majority)
    witness = next(f for f, c in copies if _pick(c, key) == majority)
    name, says, truth = _difference(key, _pick(copy, key), majority)
    raise Found(
        Problem(
            f"says {show(says)}, but {witness}'s copy of the metadata says {show(truth)}",
            file, (name,), recorded=show(says), expected=show(truth),
        )
    )  # fmt: skip


def _pick(meta: dict[str, Any], key: str) -> Any:
    """A copy's ``key``, as far as the copies must agree on it."""
    if key == "dataset" and isinstance(meta.get(key), dict):
        return {k: meta[key].get(k) for k in DATASET_KEYS}
    return meta.get(key)


def _difference(key: str, a: Any, b: Any) -> tuple[str, Any, Any]:
    """Where two copies of a setting differ, as deep as they have the same shape:
    ``("dataset.rows", 4, 3)`` or ``("model.layers[1].weights[0][2]", "1/5800", "1/5801")``
    rather than the whole description."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in {**a, **b}:
            if a.get(k) != b.get(k):
                return _difference(f"{key}.{k}", a.get(k), b.get(k))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            if u != v:
                return _difference(f"{key}[{i}]", u, v)
    return key, a, b
