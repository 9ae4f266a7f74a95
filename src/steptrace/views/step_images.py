"""The images of a step, for the dashboard: a run of images' feature maps, δ maps and
kernels as heatmaps (:mod:`.heatmaps`), the maxima each max pooling keeps marked, what the
update changed in the kernels, and how its layer chain and update note are written (each
value's shape; an image by its span; many moved values counted). A part of
:class:`~.step.StepView`, which it is mixed into: a run without images reads as the article
writes it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .heatmaps import (
    Heatmaps,
    difference,
    grid_maps,
    pooled_cells,
    span,
    summed_maps,
    tensor_values,
)
from .notation import Notation
from .sample import SampleValues

__all__ = ["MAX_NAMED", "StepImages"]

#: In a run of images, more values than this moved in one tensor are counted, not named; a
#: vector of more values than this is summed up in the layer chain (its span), not written.
MAX_NAMED = 8


class StepImages:
    """The images and kernels of a :class:`~.step.StepView` (whose fields and backward rules
    these read)."""

    samples: Sequence[SampleValues]
    notation: Notation
    numerics: str

    def _back_rules(self) -> list[tuple[int, str, str]]:
        raise NotImplementedError  # the step's backward lines: StepView's

    @property
    def images(self) -> bool:
        """Whether the run has images (tensors of three or four axes): its images and
        kernels are drawn as heatmaps, its layer chain says each value's shape."""
        return any(len(shape) >= 3 for shape in self.notation.shapes.values())

    def is_image(self, tensor: str) -> bool:
        """Whether a tensor is drawn as heatmaps: an image (C × H × W) or kernels."""
        return len(self.notation.shapes.get(tensor, ())) >= 3

    def shape_text(self, tensor: str) -> str:
        """``2 × 8 × 8``; ``32``; ``1`` for a value of one row."""
        return " × ".join(str(n) for n in self.notation.shapes[tensor] or (1,))

    def _written_params(self) -> list[tuple[int, str]]:
        """The parameter tensors the tables and the update write out: all but kernels."""
        return [(k, kind) for k, kind in self.notation.param_tensors()
                if not self.is_image(f"{kind}{k}_after")]  # fmt: skip

    def _pooling(self, tensor: str) -> tuple[int, int] | None:
        """(layer, size) of the max pooling whose input, or whose δ sent down, ``tensor`` is."""
        nt = self.notation
        for layer in nt.layers:
            k = layer.number
            if layer.type == "maxpool2d" and tensor in (nt.inp(k), f"d{k}"):
                return k, layer.size
        return None

    def maps(self, tensor: str, title: str, sample: int = 0) -> Heatmaps:
        """An image of the ``sample``-th data input of the step (from 0), as heatmaps, a grid
        per channel (a tensor of kernels: a grid per kernel). The input of a max pooling has
        the maxima the pooling keeps marked, and so has the δ the pooling sends down (which
        goes to those cells only)."""
        v, pooling = self.samples[sample], self._pooling(tensor)
        if pooling is None:
            return grid_maps(v, tensor, title)
        k, size = pooling
        cells = pooled_cells(v, self.notation.inp(k), size, self.numerics)
        if tensor.startswith("d"):
            note = f"Outlined: the cells L{k}'s max pooling sends δ{k + 1} to, its maxima."
            mark = f"δ{k + 1} comes back here (L{k} kept this cell)"
        else:
            note = (f"Outlined: the maximum of each {size} × {size} cell, which L{k}'s max "
                    "pooling keeps (on ties, the first in reading order).")  # fmt: skip
            mark = f"kept by L{k}'s max pooling"
        return grid_maps(v, tensor, title, cells, note, mark)

    def _forward_titles(self) -> list[tuple[str, str]]:
        nt = self.notation
        out = [("x", "x (data input)")]
        out += [(f"o{layer.number}", f"L{layer.number} {layer.kind}: {nt.forward(layer.number)}")
                for layer in nt.layers]  # fmt: skip
        return [(t, title) for t, title in out if self.is_image(t)]

    def _backward_titles(self) -> list[tuple[str, str]]:
        return [(t, f"L{k}: {formula}") for k, t, formula in self._back_rules()
                if t.startswith("d") and self.is_image(t)]  # fmt: skip

    def _kernel_titles(self, k: int) -> list[tuple[str, str]]:
        """w, grad, ŵ of a convolution's kernels, with their titles."""
        nt, m = self.notation, len(self.samples)
        w, grad, after = (nt.symbol(f"w{k}"), nt.symbol(f"grad_w{k}"),
                          nt.symbol(f"w{k}_after"))  # fmt: skip
        summed = f" (added up over the step's {m} data inputs)" if m > 1 else ""
        return [
            (f"w{k}_before", f"{w}: the kernels before the update"),
            (f"grad_w{k}", f"{grad} = {nt.partial(k, 'w')}{summed}"),
            (f"w{k}_after", f"{after} = {w} − α·{grad}"),
        ]

    def forward_maps(self, sample: int = 0) -> list[Heatmaps]:
        """The data input and each layer's output that is an image, of the ``sample``-th
        data input: ``x``, ``o2 = w2 ⋆ o1 + b2`` …"""
        return [self.maps(t, title, sample) for t, title in self._forward_titles()]

    def backward_maps(self, sample: int = 0) -> list[Heatmaps]:
        """Each δ that is an image, from the loss down, of the ``sample``-th data input,
        titled by its rule: ``δ4 = δ5 to each cell's maximum, 0 elsewhere`` …"""
        return [self.maps(t, title, sample) for t, title in self._backward_titles()]

    def image_tensors(self) -> dict[str, str]:
        """Every tensor of the step drawn as heatmaps, by name, with its title, in the
        trace's order: the data input, each layer's output and δ that is an image, each
        convolution's kernels before and after the update and their gradient."""
        titles = dict(self._forward_titles() + self._backward_titles())
        for k in self.kernel_layers:
            titles |= dict(self._kernel_titles(k))
        return {t: titles[t] for t in self.notation.shapes if t in titles}

    def tensor_maps(self, tensor: str, sample: int = 0) -> Heatmaps:
        """One of :meth:`image_tensors` as heatmaps: an image of the ``sample``-th data input
        (from 0), kernels, or their gradient added up over the step's data inputs."""
        title = self.image_tensors()[tensor]
        if tensor.startswith("grad_"):
            return summed_maps(self.samples, tensor, title, self.numerics)
        return self.maps(tensor, title, sample)

    @property
    def kernel_layers(self) -> list[int]:
        """The layers whose weights are kernels (convolutions)."""
        return [k for k, kind in self.notation.param_tensors()
                if kind == "w" and self.is_image(f"w{k}_after")]  # fmt: skip

    def kernels(self, k: int) -> list[Heatmaps]:
        """A convolution's kernels before the update (w), their gradient (the step's data
        inputs' added up), after (ŵ), and what the update changed (ŵ − w), as heatmaps: a grid
        per kernel, from each input channel to each output channel."""
        out = [self.tensor_maps(t) for t, _ in self._kernel_titles(k)]
        nt, first = self.notation, self.samples[0]
        w, after = nt.symbol(f"w{k}"), nt.symbol(f"w{k}_after")
        change = difference(self._values(f"w{k}_before"), self._values(f"w{k}_after"),
                            f"w{k}_change", f"{after} − {w}: what the update changed",
                            first.short)  # fmt: skip
        return [*out, change]

    def _values(self, tensor: str, sample: int = 0) -> np.ndarray:
        """A parameter tensor's values (the same on every row of a step), exactly in exact
        runs."""
        return tensor_values(self.samples[sample : sample + 1], tensor, self.numerics)

    def kernel_note(self, k: int) -> str:
        """How many of a convolution's kernel weights the update moved, and by how much at
        most: ``The update moved all 18 kernel weights of w2 (the largest change: 0.0123, out
        1 ← in 0, row 2, column 2).``"""
        first, nt = self.samples[0], self.notation
        after, before = first.columns(f"w{k}_after"), first.columns(f"w{k}_before")
        moved = [(a, b) for a, b in zip(after, before, strict=True)
                 if first.text[a] != first.text[b]]  # fmt: skip
        symbol = nt.symbol(f"w{k}")
        if not moved:
            return f"The update did not move the kernels of {symbol} (their gradient is 0)."
        count = "all" if len(moved) == len(after) else f"{len(moved)} of the"
        change = difference(self._values(f"w{k}_before"), self._values(f"w{k}_after"),
                            f"w{k}", "")  # fmt: skip
        cells = [(abs(v), m.title, i, j, m.texts[i][j]) for m in change.maps
                 for i, row in enumerate(m.values) for j, v in enumerate(row)
                 if not math.isnan(v)]  # fmt: skip
        said = f"The update moved {count} {len(after)} kernel weights of {symbol}"
        if not cells:
            return said + "."
        _, title, i, j, text = max(cells, key=lambda c: c[0])
        return f"{said} (the largest change: {text}, {title}, row {i}, column {j})."

    def _counted(self, moved: list[tuple[str, str]]) -> list[str]:
        """The parameters an update moved (``(after column, name)``), each tensor of which more
        than :data:`MAX_NAMED` values moved counted: ``all 18 values of w2``."""
        names: list[str] = []
        for k, kind in self.notation.param_tensors():
            after = f"{kind}{k}_after"
            mine = [name for column, name in moved if column.startswith(after + "_")]
            total = len(self.samples[0].columns(after))
            if len(mine) > MAX_NAMED:
                counted = "all" if len(mine) == total else f"{len(mine)} of the"
                mine = [f"{counted} {total} values of {self.notation.symbol(f'{kind}{k}')}"]
            names += mine
        return names

    # -- the layer chain's boxes ----------------------------------------------------------

    def _box_shape(self, tensor: str) -> str:
        """A chain box's shape, said in runs of images only (1D runs read as the article)."""
        return self.shape_text(tensor) if self.images else ""

    def _box_value(self, s: SampleValues, tensor: str) -> str:
        """A chain box's value: as the article writes it; in a run of images, an image, or
        a vector of more than :data:`MAX_NAMED` values, by its span (the heatmaps and tables
        below show every value)."""
        if self.images and (self.is_image(tensor) or len(s.columns(tensor)) > MAX_NAMED):
            return span(s, tensor)
        return s.vec(tensor)
