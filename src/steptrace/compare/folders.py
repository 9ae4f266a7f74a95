"""Two folders of runs (a sweep and its goldens, two sweeps) compared run by run.

Runs are paired by their path inside their folder (``sweep-lr1e-7``, ``nested/run``): each
pair is compared by :func:`steptrace.compare.traces.compare_traces` with the same options, and runs
found on one side only are listed. A file that is not a readable run, on either side, is an
error: a sweep with a broken run cannot be said to match.

>>> r = compare_folders("traces/golden-sweep", "traces/new-sweep")  # doctest: +SKIP
>>> r.identical, [key for key, c in r.runs.items() if not c.identical]  # doctest: +SKIP
(False, ['sweep-lr1e-6'])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TraceError
from ..trace.loader import find_traces
from ..trace.reader import Trace
from .report import comparison_dict, describe_divergence
from .traces import Comparison, compare_traces

__all__ = ["FolderComparison", "compare_folders"]


@dataclass(frozen=True)
class FolderComparison:
    """Runs paired by their path in the folders, each pair's :class:`Comparison`, and the
    runs on one side only."""

    a: str
    b: str
    runs: dict[str, Comparison]
    only_a: list[str]
    only_b: list[str]

    @property
    def identical(self) -> bool:
        return not self.only_a and not self.only_b and all(c.identical for c in self.runs.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "identical": self.identical,
            "runs": {key: comparison_dict(c) for key, c in self.runs.items()},
            "only_a": self.only_a,
            "only_b": self.only_b,
        }

    def format(self) -> str:
        """A line per run, then the report of each run that differs."""
        differ = [key for key, c in self.runs.items() if not c.identical]
        counts = f"{len(self.runs) - len(differ)} of {len(self.runs)} runs identical"
        extra = [
            f"{len(keys)} in {side} only"
            for keys, side in ((self.only_a, "A"), (self.only_b, "B"))
            if keys
        ]
        verdict = "Folders are identical" if self.identical else "Folders differ"
        out = [f"{verdict}: {', '.join([counts, *extra])}.", f"A: {self.a}", f"B: {self.b}"]
        width = max((len(k) for k in [*self.runs, *self.only_a, *self.only_b]), default=0)
        for key, c in self.runs.items():
            if c.identical:
                what = "identical"
            elif c.first is not None:
                what = "differs at " + describe_divergence(c.first, shapes=c.shapes)
            else:
                what = "differs in its settings: " + ", ".join(m.key for m in c.metadata)
            out.append(f"  {key:<{width}}  {what}")
        out += [f"  {key:<{width}}  in A only" for key in self.only_a]
        out += [f"  {key:<{width}}  in B only" for key in self.only_b]
        for key in differ:
            out += ["", f"--- {key}", self.runs[key].format()]
        return "\n".join(out)


def _runs(folder: Path) -> dict[str, Trace]:
    traces, problems = find_traces(folder)
    if problems:
        path, why = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise TraceError(f"{path}: {why}{more}")
    runs: dict[str, Trace] = {}
    for trace in traces:
        where = trace.path.relative_to(folder)
        runs[str(where if trace.path.is_dir() else where.with_suffix(""))] = trace
    return runs


def compare_folders(a: str | Path, b: str | Path, **options: Any) -> FolderComparison:
    """Compare every run of folder ``b`` with the run of the same name in folder ``a``, with
    :func:`~steptrace.compare.traces.compare_traces`' ``options`` (tolerances, columns, ignore)."""
    runs_a, runs_b = _runs(Path(a)), _runs(Path(b))
    if not runs_a and not runs_b:
        raise TraceError(f"no runs in {str(a)!r} or {str(b)!r}")
    paired = {
        key: compare_traces(runs_a[key], runs_b[key], **options)
        for key in sorted(runs_a)
        if key in runs_b
    }
    return FolderComparison(
        a=str(a),
        b=str(b),
        runs=paired,
        only_a=sorted(k for k in runs_a if k not in runs_b),
        only_b=sorted(k for k in runs_b if k not in runs_a),
    )
