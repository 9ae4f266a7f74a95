"""A recorded value named in words: where one column of a trace sits in the model.

Every report that points at one value (``steptrace diff``, the golden fixture, the side by side
table) names it here, so the words are written once. The series numbers neurons from 1, and so
do the trace's columns: a value of a 1D layer is named by its column, ``w4_after_1_2 (layer 4's
weight W[1,2] after the update)``. An image's values, and an image layer's parameters, are named
as numpy and :func:`~steptrace.load_tensor` index them, from 0, in brackets:
``o2[1, 3, 0] (layer 2's output, channel 1, row 3, column 0)`` is the column ``o2_2_4_1``, and
``w2_after[0, 1, 2, 2]`` the kernel weight of a convolution from input channel 1 to output
channel 0 at row 2, column 2.

What a value is follows from its tensor's shape: x, o{k} and δ{k} of an image have three indices
(channel, row, column), a convolution's kernel four (output channel, input channel, row,
column), a normalization's γ (stored as ``w{k}``) one. A bias ``b{k}`` is a linear layer's, a
convolution's or a normalization's β by the shape of the layer's weights, and a
normalization's γ and β are per channel when its input is an image: :func:`place` reads both
from the run's tensors when it is given them (``shapes``), and otherwise names a bias as a
linear layer's and a γ per neuron.

>>> str(place("o2_2_4_1"))
"o2[1, 3, 0] (layer 2's output, channel 1, row 3, column 0)"
>>> describe_column("w4_after_1_2")
"layer 4's weight W[1,2] after the update"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .schema import EXACT_SUFFIX, split_column

__all__ = ["Place", "Shapes", "describe_column", "layer_kind", "place"]

#: Each tensor's shape (one row's value), by name: a run's ``{t.name: t.shape for t in tensors}``.
Shapes = Mapping[str, tuple[int, ...]]

_PIXEL = "channel {0}, row {1}, column {2}"
_KERNEL = "from input channel {1} to output channel {0}, row {2}, column {3}"

#: The words for each (quantity, kind of value); ``{k}`` is the layer, ``{when}`` before or
#: after, ``{0}`` … the value's index (1-based for 1D kinds, 0-based for image kinds).
_WORDS: dict[tuple[str, str], str] = {
    ("x", "vector"): "data input, feature {0}",
    ("x", "image"): "data input, " + _PIXEL,
    ("y", "vector"): "expectation, target {0}",
    ("o", "vector"): "layer {k}'s output, neuron {0}",
    ("o", "image"): "layer {k}'s output, " + _PIXEL,
    ("d", "vector"): "δ{k} (∂Loss/∂ layer {k}'s input), component {0}",
    ("d", "image"): "δ{k}, ∂Loss/∂ layer {k}'s input, " + _PIXEL,
    ("grad_w", "linear"): "layer {k}'s weight gradient ∂Loss/∂W[{0},{1}]",
    ("w", "linear"): "layer {k}'s weight W[{0},{1}] {when} the update",
    ("grad_b", "linear"): "layer {k}'s bias gradient ∂Loss/∂b[{0}]",
    ("b", "linear"): "layer {k}'s bias b[{0}] {when} the update",
    ("grad_w", "conv2d"): "layer {k}'s kernel gradient, " + _KERNEL,
    ("w", "conv2d"): "layer {k}'s kernel " + _KERNEL + ", {when} the update",
    ("grad_b", "conv2d"): "layer {k}'s bias gradient, output channel {0}",
    ("b", "conv2d"): "layer {k}'s bias of output channel {0}, {when} the update",
    ("grad_w", "normalization"): "layer {k}'s γ gradient ∂Loss/∂γ[{0}]",
    ("w", "normalization"): "layer {k}'s γ[{0}] {when} the update",
    ("grad_b", "normalization"): "layer {k}'s β gradient ∂Loss/∂β[{0}]",
    ("b", "normalization"): "layer {k}'s β[{0}] {when} the update",
    ("grad_w", "channel normalization"): "layer {k}'s γ gradient, channel {0}",
    ("w", "channel normalization"): "layer {k}'s γ of channel {0}, {when} the update",
    ("grad_b", "channel normalization"): "layer {k}'s β gradient, channel {0}",
    ("b", "channel normalization"): "layer {k}'s β of channel {0}, {when} the update",
    ("loss", "scalar"): "the row's loss",
    ("lr", "scalar"): "the learning rate",
}
#: Kinds of values named from 0, as numpy indexes them.
_IMAGE_KINDS = frozenset({"image", "conv2d", "channel normalization"})
#: How many indices each kind's values have.
_RANK = {"scalar": 0, "vector": 1, "image": 3, "linear": 2, "conv2d": 4}

_TENSOR = re.compile(r"(x|y|lr|loss|[od](\d+)|(grad_[wb])(\d+)|([wb])(\d+)_(before|after))")


@dataclass(frozen=True)
class Place:
    """Where one recorded value sits: its column, tensor, quantity (``x``, ``o``, ``d``,
    ``w``, ``b``, ``grad_w`` …), layer, ``before``/``after``, index as the column writes it
    (from 1), and kind: ``vector`` or ``image`` for data and δ, ``linear``, ``conv2d``,
    ``normalization`` or ``channel normalization`` for parameters, ``scalar`` for the loss
    and the learning rate."""

    column: str
    tensor: str
    quantity: str
    layer: int | None
    when: str
    index: tuple[int, ...]
    kind: str

    @property
    def image(self) -> bool:
        """Whether the value belongs to an image or an image layer (named from 0)."""
        return self.kind in _IMAGE_KINDS

    @property
    def numpy_index(self) -> tuple[int, ...]:
        """The index numpy and :func:`~steptrace.load_tensor` use (from 0, rows first)."""
        return tuple(i - 1 for i in self.index)

    @property
    def name(self) -> str:
        """``o2[1, 3, 0]`` for an image's value, the column (``w4_after_1_2``) otherwise."""
        if not self.image:
            return self.column
        return f"{self.tensor}[{', '.join(map(str, self.numpy_index))}]"

    @property
    def words(self) -> str:
        """``layer 2's output, channel 1, row 3, column 0``."""
        shown = self.numpy_index if self.image else self.index
        return _WORDS[self.quantity, self.kind].format(*shown, k=self.layer, when=self.when)

    def __str__(self) -> str:
        return f"{self.name} ({self.words})"


def place(column: str, shapes: Shapes | None = None) -> Place | None:
    """Where ``column`` (its ``_exact`` twin alike) sits in the model, ``None`` for a column
    that holds no recorded value (``step``, a DataFrame's own) or one this steptrace does not
    know. ``shapes`` (a run's tensors) tell a convolution's bias and a normalization's β from a
    linear layer's bias, and a normalization per channel from one per neuron.

    >>> place("w2_after_1_2_3_3").name
    'w2_after[0, 1, 2, 2]'
    """
    base = column.removesuffix(EXACT_SUFFIX)
    split = split_column(base)
    m = None if split is None else _TENSOR.fullmatch(split[0])
    if split is None or m is None:
        return None
    tensor, index = split
    name, k_value, grad, k_grad, param, k_param, when = m.groups()
    quantity = grad or param or name.rstrip("0123456789")
    k = k_value or k_grad or k_param
    layer = None if k is None else int(k)
    if layer is not None and (param or grad):
        kind = layer_kind(layer, shapes or {}, len(index) if quantity.endswith("w") else None)
    else:
        kind = {0: "scalar", 1: "vector", 3: "image"}.get(len(index), "")
    rank = 1 if quantity.endswith("b") else _RANK.get(kind, 1)  # a bias: one per neuron
    if (quantity, kind) not in _WORDS or len(index) != rank:
        return None
    return Place(base, tensor, quantity, layer, when or "", index, kind)


def layer_kind(k: int, shapes: Shapes, weight_rank: int | None = None) -> str:
    """What layer ``k``'s parameters are, by their shapes: ``conv2d`` (a kernel of four
    indices), ``normalization`` (one γ per neuron), ``channel normalization`` (one per channel
    of an image) or ``linear``. ``weight_rank`` stands in for the weights' shape when
    ``shapes`` lack them."""
    rank = next(
        (len(shapes[t]) for t in (f"w{k}_after", f"w{k}_before", f"grad_w{k}") if t in shapes),
        weight_rank,
    )
    if rank == 4:
        return "conv2d"
    if rank != 1:
        return "linear"
    below = shapes.get(f"o{k - 1}", shapes.get(f"d{k}", ()))
    return "channel normalization" if len(below) == 3 else "normalization"


def describe_column(column: str, shapes: Shapes | None = None) -> str:
    """Where a column sits in the model, in words (see :func:`place`); the column itself when
    it holds no recorded value: ``w2_after_1_3`` → ``layer 2's weight W[1,3] after the
    update``; ``d4_1`` → ``δ4 (∂Loss/∂ layer 4's input), component 1``."""
    found = place(column, shapes)
    return column.removesuffix(EXACT_SUFFIX) if found is None else found.words
