"""One step of one run as the article writes it, for any stack of layers: the layer chain
(values flowing forward from the data input to the loss, δ flowing back), the forward table,
the loss, the backward pass, a table per layer (:mod:`.table`), the weight matrices (w, grad,
ŵ), the update ``w − α·grad = ŵ`` in text and LaTeX, and what changed since the previous step;
a run's images and kernels as heatmaps (:mod:`.step_images`). Every value is display text
(exact fractions in exact runs); the pages only lay it out."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import pandas as pd

from ..errors import TraceError
from ..trace.keep import RECORD_KEY, not_held
from ..trace.reader import Trace
from .folder import last_step, steps_per_epoch
from .heatmaps import Heatmaps
from .notation import MATHS, Notation, model_description, stack_notation
from .sample import SampleValues, batch_loss, sample_values
from .step_images import StepImages
from .table import Table
from .table import table as _table
from .text import abbreviate, hang, latex_matrix, latex_number, ordinal, update_lines, width

__all__ = [
    "LayerTable",
    "Link",
    "StepView",
    "Table",
    "inputs_label",
    "step_label",
    "step_view",
    "step_views",
]


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


class Link(NamedTuple):
    """One box of the layer chain: the layer, its type, its formula, the value it gives."""

    layer: str  # "L2", "input", "Loss"
    kind: str  # "linear(1)", "relu"
    formula: str  # "o2 = w · o1"
    value: str  # "0", "(0, 39/40)"
    note: str = ""  # "gate open"
    changed: bool = False  # since the previous step
    shape: str = ""  # "2 × 8 × 8": what the box gives, in a run of images (else not said)


@dataclass(frozen=True)
class LayerTable:
    """One layer's values for each data input of the step: what went in and out, the δ it
    received and the one it sent down, its gates or gradients."""

    title: str  # "L2 · linear(2, bias)"
    formulas: str  # "o2 = w2 · o1 + b2 · δ2 = δ3 · w2 …"
    table: Table
    #: An image layer's images and kernels (its input, output, δ, gradient) as heatmaps, for
    #: one data input; the table keeps its other values.
    maps: tuple[Heatmaps, ...] = ()


@dataclass(frozen=True)
class StepView(StepImages):
    """One step of one run, as the article writes it, ready to lay out (a run of images: its
    images and kernels as heatmaps, :class:`~.step_images.StepImages`)."""

    run: str
    step: int
    epoch: int
    label: str  # "step 2 (3rd data input)"
    inputs: str  # "3rd data input"
    numerics: str
    lr: str
    model: str  # "input(3) → linear(1) → relu → squared_error"
    notation: Notation
    samples: tuple[SampleValues, ...]
    previous: int | None  # the step compared against for `changed`
    changed: frozenset[str] = field(default_factory=frozenset)  # column names
    first_input: int = 1  # the first data input of the step, counted from 1 over the run

    # -- what changed -------------------------------------------------------------------------

    def field_changed(self, name: str) -> bool:
        """Whether a tensor (``x``, ``o2``, ``w2_after`` …) or a column changed."""
        columns = self.samples[0].columns(name) if name in self.notation.shapes else [name]
        return any(c in self.changed for c in columns)

    def _flags(self, tensor: str) -> list[bool]:
        """The change flag of a tensor, once per data input (a table column's cells)."""
        return [self.field_changed(tensor)] * len(self.samples)

    def _moved(self) -> list[tuple[str, str]]:
        """``(after column, its name)`` of every parameter this step's update moved."""
        first, nt = self.samples[0], self.notation
        out = []
        for k, kind in nt.param_tensors():
            after = f"{kind}{k}_after"
            for a, b in zip(first.columns(after), first.columns(f"{kind}{k}_before"), strict=True):
                if first.text[a] != first.text[b]:
                    out.append((a, nt.entry(after, _index(a, after))))
        return out

    @property
    def weights_changed(self) -> list[str]:
        """The parameters this step's update moved (``ŵ != w``), as their after columns."""
        return [column for column, _ in self._moved()]

    @property
    def changed_tensors(self) -> list[str]:
        """The tensors with a value that differs from the previous step's, in the trace's
        order (``x``, ``o2`` … ``w2_after``)."""
        return [t for t in self.notation.shapes if t != "lr" and self.field_changed(t)]

    def changes_text(self) -> str:
        """One line saying which tensors differ from the previous step."""
        if self.previous is None:
            return "First step: nothing to compare with."
        names = [self.notation.symbol(t) for t in self.changed_tensors]
        if not names:
            return f"Nothing changed since step {self.previous}."
        return f"Changed since step {self.previous}: " + ", ".join(names)

    def update_note(self) -> str:
        """Whether the update moved the weights, in words. In a run of images, a tensor of
        which more than :data:`MAX_NAMED` values moved is counted (``all 18 values of w2``)."""
        moved = self._moved()
        if not moved:
            return "The weights did not change (the gradient is 0)."
        names = self._counted(moved) if self.images else [name for _, name in moved]
        return "The update moved " + ", ".join(names) + "."

    # -- the data inputs of a mini-batch step -------------------------------------------------

    def sample_label(self, sample: int) -> str:
        """``data input 35 (dataset row 2)``: one data input of the step, counted as the step's
        label counts them."""
        return f"data input {self.first_input + sample} (dataset row {self.samples[sample].row})"

    def batch_loss(self) -> str:
        """The step's loss, the mean of its data inputs' losses (exact in exact runs); the
        loss itself in a step of one data input."""
        text = batch_loss(self.samples, self.numerics)
        return abbreviate(text) if self.samples[0].short else text

    def batch_loss_text(self) -> str:
        """``batch loss (the mean over 4 data inputs) = 13/32``; empty for a step of one
        data input, whose loss is the step's."""
        m = len(self.samples)
        return "" if m == 1 else f"batch loss (the mean over {m} data inputs) = {self.batch_loss()}"

    # -- the article's tables -----------------------------------------------------------------

    def header(self) -> str:
        """Epoch, dataset row(s), numerics and learning rate on one line."""
        rows = [s.row for s in self.samples]
        where = f"dataset row {rows[0]}" if len(rows) == 1 else f"dataset rows {rows}"
        return f"epoch {self.epoch} · {where} · {self.numerics} · α = {self.lr}"

    def _column(self, header: str, tensor: str) -> tuple[str, list[str], list[bool]]:
        return header, [s.vec(tensor) for s in self.samples], self._flags(tensor)

    def forward_table(self) -> Table:
        """x, o1 = L1(x), o2 = L2(o1), …: a column per layer, a row per data input. In a run
        of images, the images are left out (:meth:`forward_maps` draws them)."""
        nt = self.notation
        ks = range(1, len(nt.layers) + 1)
        columns = [("x", "x"), *((f"o{k} = L{k}({nt.inp(k)})", f"o{k}") for k in ks)]
        return _table([self._column(h, t) for h, t in columns if not self.is_image(t)])

    def loss_table(self) -> Table:
        """oK = model(x), y_truth, loss = Loss(oK, y_truth), correct?"""
        top = self.notation.top
        return _table(
            [
                self._column(f"{top} = model(x)", top),
                self._column("y_truth", "y"),
                self._column(f"loss = Loss({top}, y_truth)", "loss"),
                ("correct?", ["yes" if s.correct else "no" for s in self.samples],
                 self._flags("loss")),
            ]
        )  # fmt: skip

    def _gates(self, s: SampleValues, k: int) -> str:
        """``gate open``; ``gates open, closed`` for a layer of several neurons; an image's
        gates counted: ``gates open: 107 of 128``."""
        inp = self.notation.inp(k)
        states = ["open" if s.nonneg(c) else "closed" for c in s.columns(inp)]
        if self.is_image(inp):
            return f"gates open: {states.count('open')} of {len(states)}"
        return ("gate " if len(states) == 1 else "gates ") + ", ".join(states)

    def _back_rules(self) -> list[tuple[int, str, str]]:
        """Every backward line from the loss down: (layer, tensor, formula)."""
        nt = self.notation
        top = nt.loss_number
        out = [(top, f"d{top}", f"δ{top} = {nt.loss_backward(len(self.samples))}")]
        for k in range(len(nt.layers), 0, -1):
            for r in nt.backward(k):
                if r.tensor.startswith("grad_"):
                    lhs = f"{nt.symbol(r.tensor)} = {nt.partial(k, r.tensor[5])}"
                else:
                    lhs = f"δ{k}"
                out.append((k, r.tensor, f"{lhs} = {r.rule}"))
        return out

    def _back_cell(self, s: SampleValues, k: int, tensor: str) -> str:
        nt = self.notation
        gated = tensor == f"d{k}" and k < nt.loss_number and nt.layer(k).gated
        return f"{s.vec(tensor)} ({self._gates(s, k)})" if gated else s.vec(tensor)

    def backward_table(self) -> Table:
        """δ at the loss, then each layer's δ (with its gates) and gradients, down to δ1. In
        a run of images, the δ maps and kernel gradients are left out (:meth:`backward_maps`
        and :meth:`kernels` draw them)."""
        return _table(
            [
                (formula, [self._back_cell(s, k, t) for s in self.samples], self._flags(t))
                for k, t, formula in self._back_rules()
                if not self.is_image(t)
            ]
        )

    def weights_table(self) -> Table:
        """Each weight and bias: w, its gradient (the data inputs' added up), ŵ, and whether
        it moved; a row each. A convolution's kernels are left out (:meth:`kernels` draws
        them)."""
        first, nt = self.samples[0], self.notation
        moved = set(self.weights_changed)
        names: list[str] = []
        cells: dict[str, list[str]] = {"w": [], "grad": [], "after": [], "moved": []}
        flags: dict[str, list[bool]] = {"w": [], "grad": [], "after": []}
        for k, kind in self._written_params():
            after, before, grad = f"{kind}{k}_after", f"{kind}{k}_before", f"grad_{kind}{k}"
            columns = zip(first.columns(after), first.columns(before), first.columns(grad),
                          strict=True)  # fmt: skip
            for a, b, g in columns:
                names.append(nt.entry(after, _index(a, after)))
                cells["w"].append(first.show(b))
                cells["grad"].append(" + ".join(s.show(g) for s in self.samples))
                cells["after"].append(first.show(a))
                cells["moved"].append("yes" if a in moved else "no")
                for key, column in (("w", b), ("grad", g), ("after", a)):
                    flags[key].append(column in self.changed)
        return _table(
            [
                ("weight", names, [False] * len(names)),
                ("w", cells["w"], flags["w"]),
                ("grad", cells["grad"], flags["grad"]),
                ("ŵ = w − α·grad", cells["after"], flags["after"]),
                ("moved", cells["moved"], [False] * len(names)),
            ]
        )

    def layer_tables(self, sample: int = 0) -> list[LayerTable]:
        """A table per layer, L1 first: for each data input, the layer's input and output,
        δ from above and δ sent below, and its gates (ReLU-like) or gradients (linear). In a
        run of images, an image layer's images and kernels are heatmaps of the ``sample``-th
        data input (from 0), its gates counted; the table keeps the rest."""
        nt = self.notation
        rules = self._back_rules()
        out = []
        for layer in nt.layers:
            k = layer.number
            mine = [(t, formula) for n, t, formula in rules if n == k]
            values = [
                (f"{nt.inp(k)} (in)", nt.inp(k)),
                (f"o{k} (out)", f"o{k}"),
                (f"δ{k + 1} (from above)", f"d{k + 1}"),
                *((formula, t) for t, formula in mine),
            ]
            columns = [
                ("dataset row", [str(s.row) for s in self.samples], [False] * len(self.samples)),
                *(self._column(h, t) for h, t in values if not self.is_image(t)),
            ]
            if layer.gated:
                gates = [self._gates(s, k) for s in self.samples]
                columns.append(("gate", gates, self._flags(nt.inp(k))))
            maps = tuple(self.maps(t, h, sample) for h, t in values if self.is_image(t))
            formulas = " · ".join([nt.forward(k), *(f for _, f in mine)])
            out.append(LayerTable(f"L{k} · {layer.kind}", formulas, _table(columns), maps))
        return out

    def matrices(self, k: int) -> list[tuple[str, Table]]:
        """Layer k's weight matrix before the update, its gradient (the data inputs' added
        up) and after: row j = neuron j (o{k}_j), column i = input i, the bias beside; a
        normalization's γ and β a row per neuron or channel.
        ``[("w", table), ("grad", table), ("ŵ", table)]``. A convolution's kernels are
        :meth:`kernels`."""
        nt = self.notation
        out = []
        for when in ("before", "grad", "after"):
            w = f"grad_w{k}" if when == "grad" else f"w{k}_{when}"
            b = f"grad_b{k}" if when == "grad" else f"b{k}_{when}"
            bias = b if nt.layer(k).bias else None
            table = self._scales(k, w, bias) if len(nt.shapes[w]) == 1 else self._matrix(k, w, bias)
            out.append((nt.symbol(w), table))
        return out

    def _scales(self, k: int, w: str, b: str | None) -> Table:
        """A normalization's γ (``w``) and β (``b``): a row per neuron or channel."""
        first = self.samples[0]
        unit = "channel" if self.is_image(self.notation.inp(k)) else "neuron"
        wcols = first.columns(w)
        index = [f"{unit} {j + 1 if unit == 'neuron' else j}" for j in range(len(wcols))]
        columns = [("γ", [self._cell(c) for c in wcols], [c in self.changed for c in wcols])]
        if b is not None:
            bcols = first.columns(b)
            flags = [c in self.changed for c in bcols]
            columns.append(("β", [self._cell(c) for c in bcols], flags))
        return _table(columns, index)

    def _cell(self, column: str) -> str:
        """A parameter's cell: the same on every row of a step, but its gradient is each
        data input's, added up."""
        if column.startswith("grad_"):
            return " + ".join(s.show(column) for s in self.samples)
        return self.samples[0].show(column)

    def _matrix(self, k: int, w: str, b: str | None) -> Table:
        first, nt = self.samples[0], self.notation
        n_out, n_in = nt.shapes[w]
        inp = nt.inp(k)
        index = [f"o{k}_{j}" for j in range(1, n_out + 1)]
        wcols = first.columns(w)
        columns = []
        for i in range(n_in):
            cells = [wcols[j * n_in + i] for j in range(n_out)]
            header = f"{inp}_{i + 1}"
            columns.append((header, [self._cell(c) for c in cells],
                            [c in self.changed for c in cells]))  # fmt: skip
        if b is not None:
            bcols = first.columns(b)
            columns.append(
                ("b", [self._cell(c) for c in bcols], [c in self.changed for c in bcols])
            )
        return _table(columns, index)

    def full_values(self) -> pd.DataFrame:
        """Every recorded value of the step in full (exact fractions unabbreviated)."""
        return pd.DataFrame({f"row {s.row}": pd.Series(s.text) for s in self.samples}).rename_axis(
            "column"
        )

    # -- the update written out ---------------------------------------------------------------

    def _update(self, k: int, kind: str) -> list[str]:
        nt, first = self.notation, self.samples[0]
        before, after, grad = f"{kind}{k}_before", f"{kind}{k}_after", f"grad_{kind}{k}"
        lhs = nt.symbol(after)
        formula = f"{nt.symbol(before)} − α·{nt.symbol(grad)}"
        grads = [s.lines(grad) for s in self.samples]
        ops = update_lines(first.lines(before), self.lr, grads, "−", MATHS.scale)
        result = first.lines(after)
        if len(ops) == 1 and len(result) == 1:
            return [f"{lhs} = {formula} = {ops[0]} = {result[0]}"]
        more = " " * width(lhs) + " = "
        return [f"{lhs} = {formula}", *hang(more, ops), *hang(more, result)]

    def update_text(self) -> str:
        """The update written out, a line per parameter tensor (a line per matrix row when
        it has several): ``ŵ = w − α·grad = (…) − 1·(…) = (…)``."""
        return "\n".join(line for k, kind in self._written_params()
                         for line in self._update(k, kind))  # fmt: skip

    def update_results(self) -> list[str]:
        """Each parameter tensor after the update, on one line: ``ŵ = (1/200, …)``,
        ``b̂2 = (0, 1/10)``."""
        first = self.samples[0]
        return [
            f"{self.notation.symbol(f'{kind}{k}_after')} = {first.vec(f'{kind}{k}_after')}"
            for k, kind in self._written_params()
        ]

    def update_latex(self) -> str:
        """The same update as LaTeX, three lines per parameter tensor, fractions as
        ``\\frac``, matrices as ``pmatrix``."""
        nt, first = self.notation, self.samples[0]
        blocks = []
        for k, kind in self._written_params():
            before, after, grad = f"{kind}{k}_before", f"{kind}{k}_after", f"grad_{kind}{k}"
            terms = [latex_matrix(s.rows(grad)) for s in self.samples]
            grads = terms[0] if len(terms) == 1 else r"\left(" + " + ".join(terms) + r"\right)"
            blocks.append(
                rf"{nt.latex(after)} &= {nt.latex(before)} - \alpha \cdot {nt.latex(grad)} \\"
                + rf" &= {latex_matrix(first.rows(before))} - {latex_number(self.lr)} \cdot {grads}"
                + rf" \\ &= {latex_matrix(first.rows(after))}"
            )
        return r"\begin{aligned}" + r" \\[6pt] ".join(blocks) + r"\end{aligned}"

    # -- the layer chain ----------------------------------------------------------------------

    def chain(self, sample: int = 0) -> list[Link]:
        """The layer chain input → L1 → … → Loss for one data input of the step (the
        ``sample``-th, from 0): the value coming out of each box. In a mini-batch step the
        Loss box says the batch loss too, which the update follows."""
        s, nt = self.samples[sample], self.notation
        out = [Link("input", "data", "x", self._box_value(s, "x"),
                    changed=self.field_changed("x"), shape=self._box_shape("x"))]  # fmt: skip
        for layer in nt.layers:
            k = layer.number
            out.append(Link(f"L{k}", layer.kind, nt.forward(k), self._box_value(s, f"o{k}"),
                            changed=self.field_changed(f"o{k}"),
                            shape=self._box_shape(f"o{k}")))  # fmt: skip
        note = "correct" if s.correct else "wrong"
        if len(self.samples) > 1:
            note += f"; batch loss (mean of {len(self.samples)}) {self.batch_loss()}"
        out.append(Link("Loss", "squared_error", nt.loss_forward(), s.vec("loss"), note,
                        self.field_changed("loss")))  # fmt: skip
        return out

    def backward_chain(self, sample: int = 0) -> list[Link]:
        """δ from the loss back to the input, for one data input of the step (the
        ``sample``-th, from 0), with each layer's gradients beside its δ."""
        s, nt = self.samples[sample], self.notation
        by_layer: dict[int, list[tuple[str, str]]] = {}
        for k, t, formula in self._back_rules():
            by_layer.setdefault(k, []).append((t, formula))
        out = []
        for k in range(nt.loss_number, 0, -1):
            lines = by_layer[k]
            formula = ";  ".join(_short(f) for _, f in lines)
            value = ";  ".join(self._box_value(s, t) for t, _ in lines)
            changed = any(self.field_changed(t) for t, _ in lines)
            shape = self._box_shape(f"d{k}")
            if k == nt.loss_number:
                out.append(Link("Loss", "squared_error", formula, value, changed=changed,
                                shape=shape))  # fmt: skip
                continue
            layer = nt.layer(k)
            note = self._gates(s, k) if layer.gated else ""
            out.append(Link(f"L{k}", layer.kind, formula, value, note, changed, shape))
        return out


def _short(formula: str) -> str:
    """``grad = ∂Loss/∂W2 = δ3 · o1`` → ``grad = δ3 · o1``: the chain's boxes are small."""
    parts = formula.split(" = ")
    return f"{parts[0]} = {parts[-1]}"


def _index(column: str, tensor: str) -> tuple[int, ...]:
    """``w2_after_1_3`` of tensor ``w2_after`` → (1, 3)."""
    return tuple(int(i) for i in column[len(tensor) + 1 :].split("_"))


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
    nt = stack_notation(trace, MATHS)
    rows = trace.read(steps=(max(step - 1, 0), step + 1))
    now = rows[rows["step"] == step]
    if now.empty and RECORD_KEY in trace.meta:  # a run that keeps some steps: which it holds
        raise TraceError(not_held(trace.meta, step, trace.read_table(["step"])["step"].to_pylist()))
    if now.empty:
        last = last_step(trace)
        raise TraceError(
            f"step {step} is not in run {run} (recorded steps: 0 to {last})"
            if last >= 0
            else f"run {run} has no recorded steps yet"
        )
    before = rows[rows["step"] == step - 1]
    previous = sample_values(before, trace.numerics, nt.shapes) if len(before) else None
    samples = sample_values(now, trace.numerics, nt.shapes)
    return _view(trace, nt, run, step, int(now["epoch"].iloc[0]), samples, previous)


#: Steps read at once by :func:`step_views`.
CHUNK_STEPS = 500


def step_views(trace: Trace, first: int, last: int, run: str | None = None) -> Iterator[StepView]:
    """The views of steps ``first … last`` that were recorded, in order: what
    :func:`step_view` gives for each, read a few hundred steps at a time (an HTML replay of a
    thousand steps reads the run a few times, not a thousand).

    >>> [v.label for v in step_views(open_trace("traces/seed-exact-lr1"), 0, 2)]  # doctest: +SKIP
    ['step 0 (1st data input)', 'step 1 (2nd data input)', 'step 2 (3rd data input)']
    """
    run = run or trace.name
    nt = stack_notation(trace, MATHS)
    known: tuple[int, list[SampleValues]] | None = None  # the last step's, for the next one
    for lo in range(first, last + 1, CHUNK_STEPS):
        hi = min(lo + CHUNK_STEPS - 1, last)
        table = trace.read_table(steps=(max(lo - 1, 0) if known is None else lo, hi + 1))
        # Plain dicts: much faster to go through than a DataFrame's rows, one step at a time.
        for step, group in itertools.groupby(table.to_pylist(), key=lambda r: int(r["step"])):
            rows = list(group)
            samples = sample_values(rows, trace.numerics, nt.shapes)
            previous = known[1] if known is not None and known[0] == step - 1 else None
            known = (step, samples)
            if step >= lo:
                yield _view(trace, nt, run, step, int(rows[0]["epoch"]), samples, previous)


def _view(
    trace: Trace,
    nt: Notation,
    run: str,
    step: int,
    epoch: int,
    samples: list[SampleValues],
    before: list[SampleValues] | None,
) -> StepView:
    """A step's view from its rows' values and the previous step's (None for the first
    step, or one not recorded)."""
    previous = None if before is None else step - 1
    changed = frozenset() if before is None else _changed(samples, before)
    return StepView(
        run=run,
        step=step,
        epoch=epoch,
        label=step_label(trace, step, len(samples)),
        inputs=inputs_label(trace, step, len(samples)),
        numerics=trace.numerics,
        lr=trace.lr_text,  # as the user typed it (1e-9), not as a float prints
        model=model_description(trace),
        notation=nt,
        samples=tuple(samples),
        previous=previous,
        changed=changed,
        first_input=_first_row(trace, step) + 1,
    )
