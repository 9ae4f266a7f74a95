"""The network a PyTorch model computes, learned from the loop's first forward and backward
pass: every call of a leaf module as a layer (in call order), the tensor each one reads, the
operations computed between modules, the parameters each layer owns, and where the gradient of
each tensor is recorded.

A layer reads the tensor another layer gave (``o{j}``; ``o1`` is the data input x), or one the
model's own code computed between modules (``i{k}``, recorded: a residual sum, a functional
``torch.tanh`` …). What computed an ``i{k}`` is read from autograd's graph: one operation steptrace
knows (``add``, ``sub``, ``mul``, ``tanh``, ``relu``, ``sigmoid``, ``gelu``, ``reshape``) of
recorded tensors, or a ``function`` of the recorded tensors it depends on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...errors import ModelError
from .layers import Kind, kind_of

__all__ = ["Graph", "Layer", "Op", "Param", "Seen", "learn"]

Shape = tuple[int, ...]
#: Layers whose parameters' gradients steptrace computes for each row, by their formulas.
ROW_GRADIENTS = frozenset({"linear", "conv2d", "batch_norm", "layer_norm"})
#: Autograd's nodes of the operations steptrace recomputes between modules.
_OPS = {
    "AddBackward0": "add", "SubBackward0": "sub", "MulBackward0": "mul",
    "TanhBackward0": "tanh", "ReluBackward0": "relu", "SigmoidBackward0": "sigmoid",
    "GeluBackward0": "gelu", "ViewBackward0": "reshape", "UnsafeViewBackward0": "reshape",
    "ReshapeAliasBackward0": "reshape",
}  # fmt: skip


@dataclass
class Seen:
    """One call of a leaf module as the hooks saw it."""

    module: nn.Module
    name: str
    input: torch.Tensor | None  # its first tensor argument
    output: torch.Tensor
    in_version: int
    out_version: int
    node: Any  # the output's autograd node when it was made (an in-place change replaces it)
    noise: torch.Tensor | None = None  # dropout: what its input was multiplied by


@dataclass(frozen=True)
class _Known:
    """A recorded tensor: its name, the tensor, its version and autograd node when made."""

    name: str
    tensor: torch.Tensor
    version: int
    node: Any


@dataclass
class Param:
    """A parameter as the trace names it: ``w2``, ``b2`` (a layer's weight and bias, a
    normalisation's γ and β), ``p5_scale`` (another of layer 5's), ``p_gamma`` (of no leaf)."""

    tensor: torch.Tensor
    base: str
    rows: bool  # each row's gradient computed by the layer's formula (else the step's only)

    @property
    def shape(self) -> Shape:
        return tuple(self.tensor.shape)


@dataclass
class Layer:
    """Layer k: one call of a leaf module."""

    k: int
    name: str
    module: nn.Module
    kind: Kind
    feed: str  # the tensor it reads
    in_shape: Shape
    out_shape: Shape
    owner: int  # the layer whose parameters it uses (an earlier call of the same module)
    params: list[Param] = field(default_factory=list)
    mask: bool = False  # dropout: its mask is recorded
    state: bool = False  # batch norm: its running statistics, before and after the forward

    def describe(self) -> str:
        return f"layer {self.k} ({self.name or 'the model'}: {type(self.module).__name__})"


@dataclass(frozen=True)
class Op:
    """``i{k}``, computed by the model's code from recorded tensors."""

    name: str
    op: str
    inputs: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """The network learned from the first step (see the module doc)."""

    layers: list[Layer]
    ops: list[Op]
    loss_input: str
    grads: dict[str, str]  # tensor → the tensor that holds its gradient
    sources: list[str]  # tensors whose gradient is copied each step, each once
    free: list[Param]  # parameters of no layer
    shapes: dict[str, Shape]  # o1 … oK and every i{k}: one row's shape

    @property
    def top(self) -> int:
        """K, the last layer's number (the loss is K + 1)."""
        return self.layers[-1].k if self.layers else 1

    @property
    def params(self) -> list[Param]:
        """Every parameter in the trace's order: by layer, then those of no layer."""
        return [p for layer in self.layers for p in layer.params] + self.free


def learn(model: nn.Module, x: torch.Tensor, calls: Sequence[Seen], out: torch.Tensor) -> Graph:
    """The network of the first pass: ``x`` the input the model read, ``calls`` its leaf
    modules' calls in order, ``out`` what it returned (the loss's input)."""
    if not calls:
        raise ModelError("the model called no module: steptrace records models made of modules")
    m = x.shape[0]
    names: dict[int, _Known] = {id(x): _Known("o1", x, x._version, _leaf_node(x))}
    every = list(names.values())
    shapes: dict[str, Shape] = {"o1": tuple(x.shape[1:])}
    layers: list[Layer] = []
    owners: dict[int, int] = {}
    fed: list[tuple[str, torch.Tensor]] = []  # i{k} and the tensor computed outside modules
    for k, seen in enumerate(calls, 2):
        kind = kind_of(seen.module)
        if kind.type == "batch_norm" and not seen.module.training:
            kind = Kind("module", {"class": type(seen.module).__name__})  # running statistics
        where = f"layer {k} ({seen.name}: {type(seen.module).__name__})"
        feed = _name_of(names, seen.input, seen.in_version)
        if seen.input is None:
            raise ModelError(f"{where} takes no tensor: steptrace records modules of a tensor")
        if feed is None:  # computed by the model's own code: recorded as i{k}
            feed = f"i{k}"
            fed.append((feed, seen.input))
            shapes[feed] = _row_shape(seen.input, m, where, "input")
            names[id(seen.input)] = _Known(feed, seen.input, seen.in_version,
                                           seen.input.grad_fn)  # fmt: skip
            every.append(names[id(seen.input)])
        owner = owners.setdefault(id(seen.module), k)
        layer = Layer(k, seen.name, seen.module, kind, feed, shapes[feed],
                      _row_shape(seen.output, m, where, "output"), owner)  # fmt: skip
        if owner == k:
            layer.params = _params(seen.module, k, kind)
        layer.mask = kind.type == "dropout" and seen.noise is not None
        layer.state = kind.type == "batch_norm"
        layers.append(layer)
        names[id(seen.output)] = _Known(f"o{k}", seen.output, seen.out_version, seen.node)
        every.append(names[id(seen.output)])
        shapes[f"o{k}"] = layer.out_shape
    top = len(calls) + 1
    loss_input = _name_of(names, out, out._version)
    if loss_input is None:
        loss_input = f"i{top + 1}"
        fed.append((loss_input, out))
        shapes[loss_input] = _row_shape(out, m, "the model's output", "value")
    # Each recorded tensor's node as it was made (a tensor changed in place has a new one).
    by_node = {id(known.node): known.name for known in every if known.node is not None}
    ops = [_op(name, t, by_node) for name, t in fed]
    grads, sources = _gradients(layers, loss_input, top)
    owned = {id(p.tensor) for layer in layers for p in layer.params}
    free = [Param(p, "p_" + _safe(n), False) for n, p in model.named_parameters()
            if id(p) not in owned]  # fmt: skip
    return Graph(layers, ops, loss_input, grads, sources, free, shapes)


def _name_of(names: dict[int, _Known], t: torch.Tensor | None, version: int) -> str | None:
    """The recorded tensor ``t`` is, unless it was changed in place since."""
    if t is None:
        return None
    known = names.get(id(t))
    if known is None or known.tensor is not t or known.version != version:
        return None
    return known.name


def _row_shape(t: torch.Tensor, m: int, where: str, what: str) -> Shape:
    if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.shape[0] != m:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ModelError(
            f"{where}: its {what} {got} does not have the step's {m} rows along its first "
            "axis; steptrace records one row per data input"
        )
    return tuple(t.shape[1:])


def _safe(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower() or "param"


def _params(module: nn.Module, k: int, kind: Kind) -> list[Param]:
    """Layer k's own parameters: weight → w{k}, bias → b{k}, any other → p{k}_{name}."""
    out = []
    for name, p in module.named_parameters(recurse=False):
        base = {"weight": f"w{k}", "bias": f"b{k}"}.get(name, f"p{k}_{_safe(name)}")
        out.append(Param(p, base, kind.type in ROW_GRADIENTS and name in ("weight", "bias")))
    return out


def _gradients(layers: list[Layer], loss_input: str, top: int) -> tuple[dict[str, str], list[str]]:
    """Where each tensor's gradient is recorded, and the tensors whose gradients are copied
    each step: a layer's input's in d{k}, the loss's input's in d{K+1}, x's in d1 too, an
    output nothing records otherwise in d_o{k}."""
    grads: dict[str, str] = {}
    for layer in layers:
        grads.setdefault(layer.feed, f"d{layer.k}")
    grads.setdefault(loss_input, f"d{top + 1}")
    grads.setdefault("o1", "d1")
    for layer in layers:
        grads.setdefault(f"o{layer.k}", f"d_o{layer.k}")
    sources = ["o1"] + [layer.feed for layer in layers] + [loss_input]
    sources += [f"o{layer.k}" for layer in layers]
    return grads, list(dict.fromkeys(sources))


def _op(name: str, t: torch.Tensor, by_node: dict[int, str]) -> Op:
    """What computed ``t`` from recorded tensors, read from its autograd node."""
    node = t.grad_fn
    if node is None:
        return Op(name, "function", ())
    inputs = [by_node.get(id(n)) if n is not None else None for n, _ in node.next_functions]
    kind = _OPS.get(type(node).__name__)
    if kind is not None and inputs and all(i is not None for i in inputs):
        alpha = getattr(node, "_saved_alpha", 1)
        if alpha == 1 and (kind != "reshape" or len(inputs) == 1):
            settings = {"approximate": getattr(node, "_saved_approximate", "none")} if (
                kind == "gelu") else {}  # fmt: skip
            return Op(name, kind, tuple(str(i) for i in inputs), settings)
    return Op(name, "function", tuple(_depends_on(node, by_node)))


def _leaf_node(x: torch.Tensor) -> Any:
    """The autograd node accumulating the gradient of ``x``, a leaf (None if it needs none)."""
    if not x.requires_grad:
        return None
    return x.view_as(x).grad_fn.next_functions[0][0]  # type: ignore[union-attr]


def _depends_on(node: Any, by_node: dict[int, str], limit: int = 10_000) -> list[str]:
    """The recorded tensors an unknown computation reads (autograd's graph walked back until
    them, at most ``limit`` nodes)."""
    found: dict[str, None] = {}
    todo, seen = [node], {id(node)}
    while todo and len(seen) < limit:
        for nxt, _ in todo.pop().next_functions:
            if nxt is None or id(nxt) in seen:
                continue
            seen.add(id(nxt))
            if id(nxt) in by_node:
                found[by_node[id(nxt)]] = None
            else:
                todo.append(nxt)
    return sorted(found, key=lambda n: int(re.sub(r"\D", "", n)))
