"""The steps a run does not hold (``every``, ``steps``), known by their per-step figures alone:
what a step checks instead of copying its rows, and the figures made from that.

A step the run's selection leaves out is not copied: its largest |value| of each tensor of one
value a row (x, each layer's output, what the model computed between modules, each δ) is taken
on the device, one reduction for them all, and its x, y and loss are kept (they place it in the
plan). Its figures (docs/trace-format.md, "Per-step figures") then come out as the full run's
would from its rows:

- ``o{k}_max`` is the largest |o{k}|, when every value is finite;
- ``nonfinite{k}`` counts the step's values stored once a step (parameters, optimizer state,
  running statistics after it), on each of its rows; the tensors of one value a row hold none
  when their largest |values| are finite, and each row's gradients (δ ⊗ x summed over at most
  T terms, x' ≤ √T) none when T²·(max|x| + 1)·(max|δ| + 1) and T·(max|x| + 1)² stay far below
  the dtype's largest number.

A step that fails these checks is captured whole, as a held step is (its rows are left out
when written): its figures are then the rows' own. (The checks are read on the host at once:
on a GPU, a step not held waits for the device.)

When the first layer is linear, or a zero-padded convolution, and reads x alone, a step not
held also goes without ∂Loss/∂x (:class:`FirstLayer`): autograd's backward pass then stops at
the layer's weights (for a convolution, a whole transposed convolution less), and the checks
bound ∂Loss/∂x from the layer's δ and weights instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn.grad import conv2d_input

from ...trace.scalars import ScalarSpec, steps_figures
from .buffers import Chunk
from .graph import ROW_GRADIENTS, Graph, Layer
from .optim import OptimizerSpec
from .values import _optimizer_state, _running

__all__ = ["Checks", "FirstLayer", "first_layer", "light_figures", "only", "subset"]

Array = npt.NDArray[Any]
#: How far below the dtype's largest number each row's gradients must provably stay.
_MARGIN = 1e-8
_AFTER = re.compile(r"[wb]\d+_after")


@dataclass(frozen=True)
class FirstLayer:
    """The layer reading x, when ∂Loss/∂x has a formula steptrace knows: a linear layer, or a
    zero-padded convolution, the only reader of x. A step the run does not hold then leaves
    ∂Loss/∂x out of autograd's backward pass (for a convolution, a whole transposed
    convolution to the image), and the bound |∂Loss/∂x| ≤ T · max|δ| · max|W| (T the terms of
    each sum, at most the layer's outputs) vouches for it; a step the checks then cannot vouch
    for is given it by the formula (:meth:`d1`)."""

    layer: Layer
    weight: torch.Tensor
    terms: int
    offset: int  # where the weights lie among the parameters, flat (Chunk.steps["before"])

    def d1(
        self, delta: torch.Tensor, x_shape: Sequence[int], weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """∂Loss/∂x of rows of shape ``x_shape`` from the layer's δ (its output's gradient)
        and its weights (the module's, unless given)."""
        module = self.layer.module
        w = self.weight.detach() if weight is None else weight
        if isinstance(module, nn.Conv2d):
            d1: torch.Tensor = conv2d_input(  # type: ignore[no-untyped-call]
                x_shape, w, delta, module.stride, module.padding, module.dilation, module.groups
            )
            return d1
        return delta.matmul(w)

    def later(self, chunk: Chunk) -> Chunk:
        """The chunk with ∂Loss/∂x of the steps captured without it (``chunk.x_later``), each
        step's from its δ and the weights it started from: what autograd would have given,
        in the model's dtype."""
        later = chunk.x_later
        if later is None or not later.any():
            return chunk
        rows = dict(chunk.rows)
        d1, delta = rows["g:o1"].copy(), rows[f"g:o{self.layer.k}"]
        shape, dtype = tuple(self.weight.shape), self.weight.dtype
        size = int(np.prod(shape))
        ends = np.cumsum(chunk.m)
        for s in np.flatnonzero(later).tolist():
            m = int(chunk.m[s])
            r = slice(int(ends[s]) - m, int(ends[s]))
            w = chunk.steps["before"][s, self.offset : self.offset + size].reshape(shape)
            d = torch.from_numpy(delta[r].reshape(m, *self.layer.out_shape)).to(dtype)
            x = self.d1(d, (m, *self.layer.in_shape), torch.from_numpy(w).to(dtype))
            d1[r] = x.reshape(m, -1).numpy()
        rows["g:o1"] = d1
        return replace(chunk, rows=rows)


def first_layer(graph: Graph) -> FirstLayer | None:
    """The :class:`FirstLayer` of ``graph``, or None when x is read by anything else, or by
    a layer whose ∂/∂x steptrace does not compute."""
    readers = [layer for layer in graph.layers if layer.feed == "o1"]
    if (len(readers) != 1 or readers[0] is not graph.layers[0] or graph.loss_input == "o1"
            or any("o1" in op.inputs for op in graph.ops)):  # fmt: skip
        return None
    layer = readers[0]
    module = layer.module
    plain_conv = (isinstance(module, nn.Conv2d) and module.padding_mode == "zeros"
                  and not isinstance(module.padding, str))  # fmt: skip
    if layer.owner != layer.k or not (isinstance(module, nn.Linear) or plain_conv):
        return None
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    offset = 0
    for p in graph.params:
        if p.tensor is weight:
            break
        offset += p.tensor.numel()
    return FirstLayer(layer, weight, int(np.prod(layer.out_shape)), offset)


@dataclass(frozen=True)
class Checks:
    """Which parts of a step's rows are reduced (their largest |value|), and what each
    reduction says: ``index`` the parts (in the rows' order), ``outputs`` layer k → the column
    of o{k}, ``bounds`` one (column of x, column of δ, T) per layer whose rows' gradients are
    computed, ``first`` (column of the first layer's δ, T) when ∂Loss/∂x is bounded from its
    weights (:class:`FirstLayer`: their reduction is the last column)."""

    index: tuple[int, ...]
    outputs: dict[int, int]
    bounds: tuple[tuple[int, int, int], ...]
    limit: float
    first: tuple[int, int] | None = None

    @classmethod
    def of(
        cls, graph: Graph, names: Sequence[str], largest: float, first: FirstLayer | None = None
    ) -> Checks:
        """The checks of rows whose parts are named ``names`` (``x``, ``y``, ``loss``, ``o2``,
        …, ``noise6``, ``g:o1`` …, as the buffer holds them)."""
        index = tuple(i for i, n in enumerate(names) if n not in ("y", "loss")
                      and not n.startswith("noise"))  # fmt: skip
        column = {("o1" if names[i] == "x" else names[i]): c for c, i in enumerate(index)}
        outputs = {int(n[1:]): c for n, c in column.items() if re.fullmatch(r"o\d+", n)}
        bounds = []
        for layer in graph.layers:
            if layer.kind.type not in ROW_GRADIENTS:
                continue
            terms = int(np.prod(layer.in_shape)) + int(np.prod(layer.out_shape))
            delta = column.get(f"g:o{layer.k}")
            if delta is not None:
                bounds.append((column[layer.feed], delta, terms))
        bound = None if first is None else (column[f"g:o{first.layer.k}"], first.terms)
        return cls(index, outputs, tuple(bounds), largest * _MARGIN, bound)

    @property
    def reductions(self) -> int:
        """The values reduced each step: the parts, and the first layer's weights."""
        return len(self.index) + (self.first is not None)

    def fine(self, ends: Sequence[float], m: int) -> bool:
        """Whether a step of ``m`` rows whose parts' smallest and largest values are ``ends``
        (side by side: min, max, min, max …) provably holds no NaN or ±inf in them or in its
        rows' gradients. (Python's floats: for a few dozen numbers, numpy's calls cost more.)"""
        # A sum of finite numbers only: one NaN or ±inf makes it NaN or ±inf (and a sum past
        # the largest float only sends the step to be captured whole).
        if not math.isfinite(sum(ends)):
            return False

        def top(c: int) -> float:  # max |part c| + 1
            return max(-ends[2 * c], ends[2 * c + 1]) + 1.0

        for x, d, terms in self.bounds:
            t, top_x = float(terms * m), top(x)
            if t * t * top_x * top(d) > self.limit or t * top_x * top_x > self.limit:
                return False
        if self.first is not None:
            d, terms = self.first
            if terms * top(d) * (max(-ends[-2], ends[-1]) + 1.0) > self.limit:
                return False
        return True


def only(chunk: Chunk, steps: Array) -> Chunk:
    """The chunk's steps where ``steps`` is true: their per-step values (the rows left as
    they are: see :func:`subset`)."""
    return replace(
        chunk, m=chunk.m[steps], steps={k: v[steps] for k, v in chunk.steps.items()},
        lrs=[lr for lr, keep in zip(chunk.lrs, steps, strict=True) if keep],
        scalars_before=chunk.scalars_before[steps], scalars_after=chunk.scalars_after[steps],
        x_later=None if chunk.x_later is None else chunk.x_later[steps],
    )  # fmt: skip


def subset(chunk: Chunk, steps: Array) -> Chunk:
    """The chunk's steps where ``steps`` is true, with their rows (of the steps captured
    whole, which ``steps`` may flag alone)."""
    full = chunk.full if chunk.full is not None else np.ones(len(chunk.m), dtype=bool)
    rows = np.repeat(steps[full], chunk.m[full])
    kept = chunk.rows if rows.all() else {name: v[rows] for name, v in chunk.rows.items()}
    return replace(only(chunk, steps), rows=kept)


def per_step_values(graph: Graph, optimizer: OptimizerSpec, chunk: Chunk) -> dict[str, Array]:
    """The tensors stored once a step, (steps, components): parameters before and after, the
    gradients the optimizer used, its state, running statistics (as :mod:`.values` names them)."""
    steps = chunk.steps
    out: dict[str, Array] = {}
    pos = 0
    for p in graph.params:
        n = int(np.prod(p.shape, dtype=np.int64))
        out[f"{p.base}_before"] = steps["before"][:, pos : pos + n]
        out[f"{p.base}_after"] = steps["after"][:, pos : pos + n]
        if steps["grad"].shape[1]:
            out[f"step_grad_{p.base}"] = steps["grad"][:, pos : pos + n]
        pos += n
    _optimizer_state(out, graph, optimizer, chunk, pos, _same)
    for layer in graph.layers:
        if layer.state:
            _running(out, layer, steps, _same)
    return out


def _same(a: Array) -> Array:
    return a


def light_figures(
    graph: Graph, optimizer: OptimizerSpec, spec: ScalarSpec, checks: Checks, chunk: Chunk
) -> tuple[dict[str, Array], Array]:
    """The figures of the chunk's steps known by them (``chunk.known``), by column, and
    whether each one's new weights hold a NaN or ±inf."""
    assert chunk.known is not None and chunk.light is not None and chunk.maxima is not None
    light = chunk if chunk.known.all() else only(chunk, chunk.known)  # (no copy when all are)
    per_step = per_step_values(graph, optimizer, light)
    o_max = {k: chunk.maxima[:, c] for k, c in checks.outputs.items()}
    rows = frozenset(t.name for t in spec.tensors) - set(per_step)
    figures = steps_figures(spec, light.m, chunk.light["loss"], per_step, o_max, rows)
    bad = np.zeros(len(light.m), dtype=bool)
    for name, values in per_step.items():
        if _AFTER.fullmatch(name):
            bad |= ~np.isfinite(values).all(axis=1)
    return figures, bad
