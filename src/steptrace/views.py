"""What the dashboard shows, computed in the library: the pages only lay it out.

Everything here reads a trace through :meth:`~steptrace.reader.Trace.read` with a filter on
``step`` and only the columns it needs, so a run of a million steps opens and moves between
steps without being loaded whole:

- :func:`scan` — the runs of a folder (and the files that are not runs, with the reason why),
  keyed by their path inside the folder; :func:`run_table` — the run picker's table;
- :func:`step_view` — one step as the article writes it (forward table, loss, backward pass,
  update ``w − α·grad = ŵ``), every value as display text, exact fractions in exact runs, and
  what changed since the previous step;
- :func:`curve` — loss or one weight per step, downsampled (min and max per bucket) when long,
  exact steps when zoomed in; :func:`first_divergence` — summary.py's rule, per run;
- :func:`compare_at` — several runs side by side at one step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .errors import SteptraceError, TraceError
from .reader import Trace, find_traces
from .replay import step_values
from .schema import FIELDS
from .summary import SummaryTracker, batch_losses

__all__ = [
    "MAX_POINTS",
    "Curve",
    "Divergence",
    "Folder",
    "SampleValues",
    "StepView",
    "abbreviate",
    "compare_at",
    "curve",
    "curves_note",
    "fingerprint",
    "first_divergence",
    "inputs_label",
    "last_step",
    "minmax_downsample",
    "ordinal",
    "run_table",
    "scan",
    "step_label",
    "step_view",
]

#: Points per curve above which it is downsampled (min and max of each bucket of steps).
MAX_POINTS = 2_000

_FIELD = {f.name: f for f in FIELDS}

#: Display names of the trace's fields, in the article's notation.
LABELS = {
    "x": "x",
    "y": "y_truth",
    "o1": "o1",
    "o2": "o2",
    "o3": "o3",
    "loss": "loss",
    "d4": "δ4",
    "d3": "δ3",
    "d2": "δ2",
    "d1": "δ1",
    "grad": "grad",
    "w_before": "w",
    "w_after": "ŵ",
}


# --------------------------------------------------------------------------------------------
# The folder and its runs


@dataclass(frozen=True)
class Folder:
    """The runs of one folder, keyed by their path inside it, and what could not be opened."""

    root: Path
    runs: dict[str, Trace]
    problems: list[tuple[str, str]]  # (path inside the folder, message)
    error: str | None = None  # the folder itself cannot be read

    @property
    def empty(self) -> bool:
        return not self.runs and not self.problems and self.error is None


def _inside(root: Path, path: Path) -> str | None:
    """``path`` relative to ``root`` if it really lies inside it (symlinks resolved)."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix() or "."
    except ValueError:
        return None


def _check(trace: Trace) -> None:
    """Read the part files' footers now, so a corrupt or foreign part is reported with the
    folder's other problems instead of when its run is picked."""
    try:
        footers = [pq.read_metadata(f) for f in trace.files]
    except (OSError, pa.ArrowException) as exc:
        raise TraceError(f"a part file is not readable Parquet ({exc})") from None
    for f, meta in zip(trace.files, footers, strict=True):
        names = set(meta.schema.names)
        missing = [c for c in ("step", "loss", *trace.vector("w_after")) if c not in names]
        if missing:
            raise TraceError(f"{f.name} lacks column(s) {', '.join(missing)}")


def scan(folder: str | Path) -> Folder:
    """Every run under ``folder``, keyed by its path inside it; never raises.

    Runs are found by :func:`~steptrace.reader.find_traces`; a run or part file that resolves
    outside ``folder`` (a symlink) is refused, so a page given this folder reads nothing else.

    >>> f = scan("traces")  # doctest: +SKIP
    >>> sorted(f.runs), f.problems  # doctest: +SKIP
    (['seed-exact-lr1'], [])
    """
    root = Path(folder)
    try:
        traces, problems = find_traces(root)
    except SteptraceError as exc:
        return Folder(root, {}, [], str(exc))
    runs: dict[str, Trace] = {}
    bad: list[tuple[str, str]] = []
    for path, message in problems:
        bad.append((_inside(root, path) or path.name, message))
    for trace in traces:
        key = _inside(root, trace.path)
        if key == ".":  # the folder given is itself a run
            key = trace.name
        outside = [f for f in trace.files if _inside(root, f) is None]
        if key is None or outside:
            bad.append((trace.path.name, "refused: it lies outside the dashboard's folder"))
            continue
        try:
            _check(trace)
        except SteptraceError as exc:
            bad.append((key, str(exc)))
            continue
        runs[key] = trace
    return Folder(root, runs, sorted(bad))


def fingerprint(trace: Trace) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of a run's files: a cache key that changes when a
    recorder adds steps."""
    out = []
    for f in [*trace.files, trace.path / "_run.json"] if trace.path.is_dir() else trace.files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append((f.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def last_step(trace: Trace) -> int:
    """The last recorded step, from the Parquet footers' statistics (no data read); -1 if the
    run has no steps yet."""
    best = -1
    for f in trace.files:
        try:
            meta = pq.read_metadata(f)
        except (OSError, pa.ArrowException) as exc:
            raise TraceError(f"{f}: not a readable Parquet file ({exc})") from None
        col = meta.schema.names.index("step")
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(col).statistics
            if meta.row_group(g).num_rows == 0:
                continue
            if stats is None or not stats.has_min_max:
                # No statistics: read this part's step column (rare; not what the writer does).
                steps = pq.read_table(f, columns=["step"])["step"]
                best = max(best, int(pc.max(steps).as_py()))
                break
            best = max(best, int(stats.max))
    return best


def run_table(folder: Folder) -> pd.DataFrame:
    """The run picker's table: one row per run with its settings and status.

    >>> run_table(scan("traces"))[["run", "lr", "numerics", "status"]]  # doctest: +SKIP
    """
    rows = []
    for key, trace in folder.runs.items():
        s = trace.settings()
        planned = trace.meta.get("steps")
        recorded = last_step(trace) + 1
        rows.append(
            {
                "run": key,
                "lr": s["lr_text"],
                "numerics": s["numerics"],
                "batch size": s["batch_size"],
                "epochs": s["epochs"],
                "steps": recorded if planned in (None, recorded) else f"{recorded} of {planned}",
                "status": s["status"],
                "dataset": str(trace.meta["dataset"].get("name", "")),
            }
        )
    columns = ["run", "lr", "numerics", "batch size", "epochs", "steps", "status", "dataset"]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------
# One step


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th`` … ``11th``, ``21st``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _first_row(trace: Trace, step: int) -> int:
    """0-based index, over the whole run, of the first data input a step uses."""
    rows = int(trace.meta["dataset"]["rows"])
    b = int(trace.meta["batch_size"])
    spe = int(trace.meta.get("steps_per_epoch") or -(-rows // b))
    return (step // spe) * rows + (step % spe) * b


def inputs_label(trace: Trace, step: int, rows: int = 1) -> str:
    """Which data inputs a step uses, counted from 1 over the whole run as the article does:
    ``3rd data input``, ``data inputs 3–4``."""
    first = _first_row(trace, step) + 1
    if rows == 1:
        return f"{ordinal(first)} data input"
    return f"data inputs {first}–{first + rows - 1}"


def step_label(trace: Trace, step: int, rows: int = 1) -> str:
    """Steps count from 0, the article counts data inputs from 1: both, in one label.

    >>> step_label(trace, 2)  # doctest: +SKIP
    'step 2 (3rd data input)'
    """
    return f"step {step} ({inputs_label(trace, step, rows)})"


@dataclass(frozen=True)
class SampleValues:
    """One data input of a step: every recorded value as display text."""

    row: int  # the dataset row
    text: dict[str, str]  # column name → display text
    gate_open: bool  # o2 >= 0: the ReLU lets δ4 through
    correct: bool  # loss == 0

    def show(self, column: str) -> str:
        """One value as a table shows it (huge exact integers abbreviated)."""
        return abbreviate(self.text[column])

    def vec(self, name: str, n: int) -> str:
        """A field as the article writes it: ``(0, 2000, 3000)`` for a per-feature one
        (x, o1, δ2, δ1, grad, w), the value alone otherwise (o2, loss …)."""
        f = _FIELD[name]
        parts = [self.show(c) for c in f.names(n)]
        return "(" + ", ".join(parts) + ")" if f.per_feature else parts[0]


@dataclass(frozen=True)
class StepView:
    """One step of one run, as the article writes it, ready to lay out."""

    run: str
    step: int
    epoch: int
    label: str  # "step 2 (3rd data input)"
    inputs: str  # "3rd data input"
    numerics: str
    lr: str
    n: int  # features
    samples: tuple[SampleValues, ...]
    previous: int | None  # the step compared against for `changed`
    changed: frozenset[str] = field(default_factory=frozenset)  # column names

    # -- what changed -------------------------------------------------------------------------

    def field_changed(self, name: str) -> bool:
        """Whether any component of a field (``x``, ``o2``, ``w_after`` …) changed."""
        return any(c == name or c.startswith(f"{name}_") for c in self.changed)

    @property
    def weights_changed(self) -> list[int]:
        """The weights this step's update moved (1-based), ``ŵ_k != w_k``."""
        s = self.samples[0].text
        return [k for k in range(1, self.n + 1) if s[f"w_after_{k}"] != s[f"w_before_{k}"]]

    def changes_text(self) -> str:
        """One line saying what differs from the previous step."""
        if self.previous is None:
            return "First step: nothing to compare with."
        names = [LABELS[f] for f in LABELS if self.field_changed(f)]
        if not names:
            return f"Nothing changed since step {self.previous}."
        return f"Changed since step {self.previous}: " + ", ".join(names)

    def update_note(self) -> str:
        """Whether the update moved the weights, in words."""
        moved = self.weights_changed
        if not moved:
            return "The weights did not change (the gradient is 0)."
        return "The update moved " + ", ".join(f"w_{k}" for k in moved) + "."

    # -- the article's tables -----------------------------------------------------------------

    def header(self) -> str:
        rows = [s.row for s in self.samples]
        where = f"dataset row {rows[0]}" if len(rows) == 1 else f"dataset rows {rows}"
        return f"epoch {self.epoch} · {where} · {self.numerics} · α = {self.lr}"

    def forward_table(self) -> pd.DataFrame:
        """x, o1 = L1(x), o2 = L2(o1), o3 = L3(o2): one row per data input."""
        return pd.DataFrame(
            [
                [s.vec("x", self.n), s.vec("o1", self.n), s.show("o2_1"), s.show("o3_1")]
                for s in self.samples
            ],
            columns=["x", "o1 = L1(x)", "o2 = L2(o1)", "o3 = L3(o2)"],
        )

    def loss_table(self) -> pd.DataFrame:
        """o3 = model(x), y_truth, loss = Loss(o3, y_truth), correct?"""
        return pd.DataFrame(
            [
                [s.show("o3_1"), s.show("y_1"), s.show("loss"), "yes" if s.correct else "no"]
                for s in self.samples
            ],
            columns=["o3 = model(x)", "y_truth", "loss = Loss(o3, y_truth)", "correct?"],
        )

    def backward_table(self) -> pd.DataFrame:
        """δ4, δ3 (with the ReLU gate), δ2, the gradient δ3 · o1 and δ1, per data input."""
        return pd.DataFrame(
            [
                [
                    s.show("d4_1"),
                    f"{s.show('d3_1')} (gate {'open' if s.gate_open else 'closed'})",
                    s.vec("d2", self.n),
                    s.vec("grad", self.n),
                    s.vec("d1", self.n),
                ]
                for s in self.samples
            ],
            columns=[
                "δ4 = o3 − y_truth",
                "δ3 = δ4 if o2 ≥ 0 else 0",
                "δ2 = δ3 · w",
                "grad = ∂Loss/∂W2 = δ3 · o1",
                "δ1 = δ2",
            ],
        )

    def weights_table(self) -> pd.DataFrame:
        """Each weight: w, its gradient (summed over the batch), ŵ, and whether it moved."""
        first = self.samples[0]
        moved = self.weights_changed
        rows = [
            [
                f"w_{k}",
                first.show(f"w_before_{k}"),
                " + ".join(s.show(f"grad_{k}") for s in self.samples),
                first.show(f"w_after_{k}"),
                "yes" if k in moved else "no",
            ]
            for k in range(1, self.n + 1)
        ]
        return pd.DataFrame(rows, columns=["weight", "w", "grad", "ŵ = w − α·grad", "moved"])

    def update_text(self) -> str:
        """The update written out: ``ŵ = w − α·grad = (…) − 1·(…) = (…)``."""
        first = self.samples[0]
        grads = " + ".join(s.vec("grad", self.n) for s in self.samples)
        if len(self.samples) > 1:
            grads = f"({grads})"
        return (
            f"ŵ = w − α·grad = {first.vec('w_before', self.n)} − {self.lr}·{grads}"
            f" = {first.vec('w_after', self.n)}"
        )

    def full_values(self) -> pd.DataFrame:
        """Every recorded value of the step in full (exact fractions unabbreviated)."""
        return pd.DataFrame({f"row {s.row}": pd.Series(s.text) for s in self.samples}).rename_axis(
            "column"
        )

    def update_latex(self) -> str:
        """The same update as LaTeX on three lines, fractions as ``\\frac``."""
        first = self.samples[0]

        def vec(name: str, s: SampleValues) -> str:
            parts = [_latex_number(s.show(f"{name}_{k}")) for k in range(1, self.n + 1)]
            return r"\left(" + ", ".join(parts) + r"\right)"

        grads = " + ".join(vec("grad", s) for s in self.samples)
        if len(self.samples) > 1:
            grads = rf"\left({grads}\right)"
        return (
            r"\begin{aligned}\hat{w} &= w - \alpha \cdot grad \\"
            + f" &= {vec('w_before', first)} - {_latex_number(self.lr)} \\cdot {grads} \\\\"
            + f" &= {vec('w_after', first)}"
            + r"\end{aligned}"
        )

    def chain(self) -> list[tuple[str, str, str]]:
        """The layer chain L1 → L2 → L3 → Loss for the first data input of the step:
        ``(layer, formula, value coming out)``, then the backward values flowing back."""
        s = self.samples[0]
        n = self.n
        return [
            ("input", "x", s.vec("x", n)),
            ("L1", "o1 = x", s.vec("o1", n)),
            ("L2", "o2 = w · o1", s.show("o2_1")),
            ("L3", "o3 = o2 if o2 ≥ 0 else 0", s.show("o3_1")),
            ("Loss", "½ (o3 − y_truth)²", s.show("loss")),
        ]

    def backward_chain(self) -> list[tuple[str, str, str]]:
        """The backward values, from the loss back to the input: ``(layer, formula, value)``."""
        s = self.samples[0]
        n = self.n
        return [
            ("Loss", "δ4 = o3 − y_truth", s.show("d4_1")),
            ("L3", "δ3 = δ4 if o2 ≥ 0 else 0", s.show("d3_1")),
            ("L2", "δ2 = δ3 · w;  grad = δ3 · o1", f"{s.vec('d2', n)};  {s.vec('grad', n)}"),
            ("L1", "δ1 = δ2", s.vec("d1", n)),
        ]


def abbreviate(text: str, digits: int = 24) -> str:
    """Shorten the long integers of an exact fraction for a table cell; the full text stays
    in the step view (``SampleValues.text``).

    >>> abbreviate("123456789012345678901234567890/7", digits=10)
    '12345…67890 (30 digits)/7'
    """
    out = []
    for part in text.split("/"):
        sign, body = ("-", part[1:]) if part.startswith("-") else ("", part)
        if body.isdigit() and len(body) > digits:
            half = digits // 2
            body = f"{body[:half]}…{body[-half:]} ({len(body)} digits)"
        out.append(sign + body)
    return "/".join(out)


def _latex_number(text: str) -> str:
    """``-3/11600`` → ``-\\frac{3}{11600}``; ``1e-07`` → ``1 \\times 10^{-7}``."""
    sign, body = ("-", text[1:]) if text.startswith("-") else ("", text)
    if "/" in body:
        num, den = body.split("/", 1)
        return rf"{sign}\frac{{{num}}}{{{den}}}"
    if "e" in body and body not in ("inf", "nan"):
        mant, exp = body.split("e", 1)
        return rf"{sign}{mant} \times 10^{{{int(exp)}}}"
    return {"inf": r"\infty", "nan": r"\text{NaN}"}.get(body, body).join([sign, ""])


def _samples(rows: pd.DataFrame, numerics: str) -> list[SampleValues]:
    out = []
    for _, row in rows.iterrows():
        text = step_values(row, numerics)
        out.append(
            SampleValues(
                row=int(row["sample"]),
                text=text,
                gate_open=bool(row["o2_1"] >= 0),
                correct=bool(row["loss"] == 0),
            )
        )
    return out


def _changed(now: list[SampleValues], before: list[SampleValues]) -> frozenset[str]:
    changed = set()
    for i, s in enumerate(now):
        old = before[i].text if i < len(before) else {}
        changed |= {c for c, v in s.text.items() if old.get(c) != v}
    return frozenset(changed)


def step_view(trace: Trace, step: int, run: str | None = None) -> StepView:
    """One step of a run, read alone (and the step before it, to say what changed).

    Raises :class:`TraceError` if the step was not recorded.

    >>> v = step_view(open_trace("traces/seed-exact-lr1"), 2)  # doctest: +SKIP
    >>> v.label, v.samples[0].text["loss"], v.update_text()  # doctest: +SKIP
    ('step 2 (3rd data input)', '1/2', 'ŵ = w − α·grad = (1/200, -3/11600, 1/5800) − 1·…')
    """
    lo = max(step - 1, 0)
    rows = trace.read(None, (pc.field("step") >= lo) & (pc.field("step") <= step))
    now = rows[rows["step"] == step]
    if now.empty:
        last = last_step(trace)
        raise TraceError(
            f"step {step} is not in run {run or trace.name} (recorded steps: 0 to {last})"
            if last >= 0
            else f"run {run or trace.name} has no recorded steps yet"
        )
    samples = _samples(now, trace.numerics)
    before = rows[rows["step"] == step - 1]
    previous = step - 1 if not before.empty else None
    changed = _changed(samples, _samples(before, trace.numerics)) if previous is not None else None
    return StepView(
        run=run or trace.name,
        step=step,
        epoch=int(now["epoch"].iloc[0]),
        label=step_label(trace, step, len(now)),
        inputs=inputs_label(trace, step, len(now)),
        numerics=trace.numerics,
        lr=trace.lr_text,  # as the user typed it (1e-9), not as a float prints
        n=trace.n_features,
        samples=tuple(samples),
        previous=previous,
        changed=changed or frozenset(),
    )


# --------------------------------------------------------------------------------------------
# Curves over many steps


def minmax_downsample(
    steps: npt.NDArray[np.int64], values: npt.NDArray[np.float64], max_points: int = MAX_POINTS
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], int]:
    """Keep the smallest and the largest value of each bucket of consecutive points, at their
    own steps, so spikes survive; returns ``(steps, values, bucket size)``.

    Non-finite values are left out of the min/max (divergence is marked separately). With
    ``len(steps) <= max_points`` nothing is dropped and the bucket size is 1.

    >>> s, v, b = minmax_downsample(np.arange(10), np.array([0, 9, 1, 1, 1, 1, 1, -5, 1, 1.0]), 4)
    >>> s.tolist(), v.tolist(), b
    ([0, 1, 7, 8], [0.0, 9.0, -5.0, 1.0], 5)
    """
    n = len(steps)
    if n <= max_points:
        return steps, values, 1
    bucket = math.ceil(n / max(max_points // 2, 1))
    pad = (-n) % bucket
    finite = np.isfinite(values)
    lo = np.pad(np.where(finite, values, np.inf), (0, pad), constant_values=np.inf)
    hi = np.pad(np.where(finite, values, -np.inf), (0, pad), constant_values=-np.inf)
    lo, hi = lo.reshape(-1, bucket), hi.reshape(-1, bucket)
    base = np.arange(lo.shape[0]) * bucket
    i_min, i_max = base + lo.argmin(axis=1), base + hi.argmax(axis=1)
    keep = np.isfinite(lo.min(axis=1))  # buckets with at least one finite value
    idx = np.unique(np.concatenate([i_min[keep], i_max[keep]]))
    return steps[idx], values[idx], bucket


@dataclass(frozen=True)
class Curve:
    """One quantity per step of one run, possibly downsampled; ``frame`` has columns
    ``step`` and ``value`` (non-finite values as NaN)."""

    frame: pd.DataFrame
    steps: int  # steps in the range asked for
    bucket: int  # steps per bucket; 1 = every step
    lo: int
    hi: int

    @property
    def downsampled(self) -> bool:
        return self.bucket > 1

    def note(self) -> str:
        """Says whether the curve shows every step or a downsampled view."""
        if not self.downsampled:
            return f"every step shown (steps {self.lo} to {self.hi})"
        return (
            f"downsampled: the min and max of every {self.bucket:,} steps "
            f"({len(self.frame):,} points for {self.steps:,} steps); "
            f"zoom into {MAX_POINTS:,} steps or fewer to see every step"
        )


def curves_note(curves: Mapping[str, Curve]) -> str:
    """One line for a chart of several runs: every step shown, or which runs are downsampled
    and how."""
    down = {run: c for run, c in curves.items() if c.downsampled}
    if not down:
        return "every step shown"
    buckets = " or ".join(f"{b:,}" for b in sorted({c.bucket for c in down.values()}))
    return (
        f"downsampled: the min and max of every {buckets} steps for {len(down)} of "
        f"{len(curves)} runs ({', '.join(down)}); zoom into {MAX_POINTS:,} steps or fewer to see "
        "every step"
    )


def _per_step(
    trace: Trace, column: str, expression: pc.Expression | None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    table = trace.read_table(["step", column], expression)
    steps = table["step"].to_numpy()
    values = table[column].to_numpy().astype(np.float64)
    if len(steps) == 0:
        return steps, values
    if column == "loss":
        return batch_losses(steps, values)  # each step's batch loss: the mean of its rows
    starts = np.flatnonzero(np.diff(steps, prepend=steps[0] - 1))
    return steps[starts], values[starts]  # every row of a step holds the same weights


def curve(
    trace: Trace,
    column: str,
    lo: int | None = None,
    hi: int | None = None,
    max_points: int = MAX_POINTS,
) -> Curve:
    """``loss`` (the batch loss) or a weight column (``w_after_2``) per step in ``[lo, hi]``,
    reading just those two columns and the row groups of that range.

    >>> c = curve(trace, "loss")  # doctest: +SKIP
    >>> c.downsampled, c.note()  # doctest: +SKIP
    (True, 'downsampled: the min and max of every 1,000 steps (…)')
    """
    if column not in ("loss", *trace.vector("w_after"), *trace.vector("w_before")):
        raise TraceError(f"no curve for {column!r}: use loss or one of {trace.vector('w_after')}")
    expression = None
    if lo is not None:
        expression = pc.field("step") >= lo
    if hi is not None:
        upper = pc.field("step") <= hi
        expression = upper if expression is None else expression & upper
    steps, values = _per_step(trace, column, expression)
    s, v, bucket = minmax_downsample(steps, values, max_points)
    v = np.where(np.isfinite(v), v, np.nan)
    frame = pd.DataFrame({"step": s, "value": v})
    first = int(steps[0]) if len(steps) else (lo or 0)
    last = int(steps[-1]) if len(steps) else (hi if hi is not None else -1)
    return Curve(frame, len(steps), bucket, first, last)


# --------------------------------------------------------------------------------------------
# Divergence


@dataclass(frozen=True)
class Divergence:
    step: int
    why: str

    def __str__(self) -> str:
        return f"diverges at step {self.step}: {self.why}"


def _step_blocks(trace: Trace, columns: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The run's ``columns`` as numpy blocks that never split a step (batch by batch)."""
    pending: dict[str, Any] | None = None
    for f in trace.files:
        for batch in pads.dataset(str(f), format="parquet").to_batches(columns=list(columns)):
            block = {c: batch.column(c).to_numpy(zero_copy_only=False) for c in columns}
            if pending is not None:
                block = {c: np.concatenate([pending[c], block[c]]) for c in columns}
            if not len(block["step"]):
                continue
            whole = block["step"] != block["step"][-1]
            pending = {c: v[~whole] for c, v in block.items()}
            if whole.any():
                yield {c: v[whole] for c, v in block.items()}
    if pending is not None and len(pending["step"]):
        yield pending


def first_divergence(trace: Trace) -> Divergence | None:
    """The first step where the run diverges by :mod:`steptrace.summary`'s rule (batch loss or
    new weights not finite, or loss over ``BLOWUP_FACTOR`` × the first epoch's largest), or
    ``None``. Streams three-plus columns; the whole run is never in memory.

    >>> first_divergence(open_trace("traces/seed-float64-lr1e3"))  # doctest: +SKIP
    Divergence(step=14, why='loss is not finite')
    """
    rows = int(trace.meta["dataset"]["rows"])
    b = int(trace.meta["batch_size"])
    tracker = SummaryTracker(int(trace.meta.get("steps_per_epoch") or -(-rows // b)))
    w_cols = trace.vector("w_after")
    try:
        for block in _step_blocks(trace, ["step", "loss", *w_cols]):
            tracker.update(block, np.column_stack([block[c] for c in w_cols]))
            if tracker.diverged_at is not None:
                break
    except (OSError, pa.ArrowException) as exc:
        raise TraceError(f"{trace.path}: unreadable part file ({exc})") from None
    if tracker.diverged_at is None:
        return None
    return Divergence(tracker.diverged_at, tracker.diverged_why or "diverged")


# --------------------------------------------------------------------------------------------
# Several runs at one step


COMPARE_ROWS = [
    ("α", None),
    ("numerics", None),
    ("data input", None),
    ("dataset row", None),
    ("x", "x"),
    ("o2", "o2"),
    ("o3", "o3"),
    ("loss", "loss"),
    ("δ4", "d4"),
    ("δ3", "d3"),
    ("grad", "grad"),
    ("w", "w_before"),
    ("ŵ", "w_after"),
    ("first divergence", None),
]


def compare_at(
    runs: Mapping[str, Trace],
    step: int,
    divergence: Mapping[str, Divergence | None] | None = None,
) -> pd.DataFrame:
    """A side-by-side table of several runs at one step: one column per run, one row per
    quantity (α, x, o2, o3, loss, δ4, δ3, grad, w, ŵ, first divergence). A run that has no such
    step says so in its column.

    >>> compare_at({"lr1": a, "lr0.1": b}, 2).loc["ŵ"]  # doctest: +SKIP
    """
    table: dict[str, list[str]] = {}
    for key, trace in runs.items():
        div = (divergence or {}).get(key, None) if divergence is not None else None
        div_text = str(div.step) + f" ({div.why})" if div else "none"
        try:
            view = step_view(trace, step, key)
        except TraceError:
            last = last_step(trace)
            missing = f"no step {step} (last: {last})"
            table[key] = [
                trace.lr_text,
                trace.numerics,
                *[missing] * (len(COMPARE_ROWS) - 3),
                div_text,
            ]
            continue
        column = [view.lr, view.numerics, view.inputs]
        column.append(", ".join(str(s.row) for s in view.samples))
        for _, name in COMPARE_ROWS[4:-1]:
            assert name is not None
            if name in ("w_before", "w_after"):  # the same on every row of a step
                column.append(view.samples[0].vec(name, view.n))
            else:  # one value per data input of the step
                column.append("; ".join(s.vec(name, view.n) for s in view.samples))
        column.append(div_text)
        table[key] = column
    return pd.DataFrame(table, index=[label for label, _ in COMPARE_ROWS])
