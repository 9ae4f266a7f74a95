"""One step of one run as the article writes it: forward table, loss, backward pass, update
``w − α·grad = ŵ``, every value as display text (exact fractions in exact runs), and what
changed since the previous step."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..errors import TraceError
from ..trace.reader import Trace
FIELDS: tuple = ()  # FIXME(stacks): views are being generalised to any stack
from .folder import last_step, steps_per_epoch
from .replay import step_values
from .text import abbreviate, latex_number, ordinal

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


def _first_row(trace: Trace, step: int) -> int:
    """0-based index, over the whole run, of the first data input a step uses."""
    spe = steps_per_epoch(trace)
    rows, b = int(trace.meta["dataset"]["rows"]), int(trace.meta["batch_size"])
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

    def parts(self, name: str, n: int) -> list[str]:
        """A field's components as a table shows them."""
        return [self.show(c) for c in _FIELD[name].names(n)]

    def vec(self, name: str, n: int) -> str:
        """A field as the article writes it: ``(0, 2000, 3000)`` for a per-feature one
        (x, o1, δ2, δ1, grad, w), the value alone otherwise (o2, loss …)."""
        parts = self.parts(name, n)
        return "(" + ", ".join(parts) + ")" if _FIELD[name].per_feature else parts[0]


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
        """Epoch, dataset row(s), numerics and learning rate on one line."""
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

    def full_values(self) -> pd.DataFrame:
        """Every recorded value of the step in full (exact fractions unabbreviated)."""
        return pd.DataFrame({f"row {s.row}": pd.Series(s.text) for s in self.samples}).rename_axis(
            "column"
        )

    # -- the update written out ---------------------------------------------------------------

    def _gradients(self, terms: list[str], left: str, right: str) -> str:
        """The data inputs' gradients added up, bracketed when the step has several."""
        total = " + ".join(terms)
        return f"{left}{total}{right}" if len(terms) > 1 else total

    def update_text(self) -> str:
        """The update written out: ``ŵ = w − α·grad = (…) − 1·(…) = (…)``."""
        first = self.samples[0]
        grads = self._gradients([s.vec("grad", self.n) for s in self.samples], "(", ")")
        return (
            f"ŵ = w − α·grad = {first.vec('w_before', self.n)} − {self.lr}·{grads}"
            f" = {first.vec('w_after', self.n)}"
        )

    def update_latex(self) -> str:
        """The same update as LaTeX on three lines, fractions as ``\\frac``."""
        first = self.samples[0]

        def vec(name: str, s: SampleValues) -> str:
            parts = [latex_number(p) for p in s.parts(name, self.n)]
            return r"\left(" + ", ".join(parts) + r"\right)"

        terms = [vec("grad", s) for s in self.samples]
        grads = self._gradients(terms, r"\left(", r"\right)")
        return (
            r"\begin{aligned}\hat{w} &= w - \alpha \cdot grad \\"
            + f" &= {vec('w_before', first)} - {latex_number(self.lr)} \\cdot {grads} \\\\"
            + f" &= {vec('w_after', first)}"
            + r"\end{aligned}"
        )

    # -- the layer chain ----------------------------------------------------------------------

    def chain(self) -> list[tuple[str, str, str]]:
        """The layer chain L1 → L2 → L3 → Loss for the first data input of the step:
        ``(layer, formula, value coming out)``."""
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


def _samples(rows: pd.DataFrame, numerics: str) -> list[SampleValues]:
    return [
        SampleValues(
            row=int(row["sample"]),
            text=step_values(row, numerics),
            gate_open=bool(row["o2_1"] >= 0),
            correct=bool(row["loss"] == 0),
        )
        for _, row in rows.iterrows()
    ]


def _changed(now: list[SampleValues], before: list[SampleValues]) -> frozenset[str]:
    """The columns whose text differs from the previous step's, data input by data input."""
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
    run = run or trace.name
    rows = trace.read(steps=(max(step - 1, 0), step + 1))
    now = rows[rows["step"] == step]
    if now.empty:
        last = last_step(trace)
        raise TraceError(
            f"step {step} is not in run {run} (recorded steps: 0 to {last})"
            if last >= 0
            else f"run {run} has no recorded steps yet"
        )
    samples = _samples(now, trace.numerics)
    before = rows[rows["step"] == step - 1]
    previous = None if before.empty else step - 1
    changed = frozenset() if before.empty else _changed(samples, _samples(before, trace.numerics))
    return StepView(
        run=run,
        step=step,
        epoch=int(now["epoch"].iloc[0]),
        label=step_label(trace, step, len(now)),
        inputs=inputs_label(trace, step, len(now)),
        numerics=trace.numerics,
        lr=trace.lr_text,  # as the user typed it (1e-9), not as a float prints
        n=trace.n_features,
        samples=tuple(samples),
        previous=previous,
        changed=changed,
    )
