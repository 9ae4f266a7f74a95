"""A graph run's maths recomputed, a chunk of whole steps at a time (see :mod:`.graph`): each
layer steptrace knows from its own recorded input, parameters before the step (and dropout
mask), its output checked; each row's gradients from that input and the recorded δ of the
layer's output; each operation between modules; the loss and δ at the loss; and the δ of
every recorded tensor as the sum of what each of its readers sends back (a tensor feeding a
layer and a residual sum gets both). The layers are the model's own classes
(:mod:`steptrace.model.layers`, :mod:`~steptrace.model.images`, :mod:`~steptrace.model.more`).

What cannot be recomputed (a module of the user's own, a function between modules, a loss of
the loop's own, and the δ of what they read) is named for the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...model.images import Conv2d, Flatten, MaxPool2d, Normalization
from ...model.layers import Identity, Layer, LeakyRelu, Linear, Logistic, Params, Relu
from ...model.more import LOSSES, AvgPool2d, Dropout, Gelu, LayerNorm, Softmax, Tanh
from ..schema import Tensor
from .problem import Array

if TYPE_CHECKING:
    from .graph import GraphChunk

__all__ = ["Network", "Values", "check_network", "step_sums"]

#: Orders of the checks on a row: forward passes by layer (10 k), δ from the loss down
#: (DELTAS − k), each row's gradients, then the step's sums, statistics and update.
DELTAS, GRADS = 10_000, 20_000


@dataclass(frozen=True)
class GraphLayer:
    """Layer k as the run's ``graph`` lists it."""

    k: int
    type: str
    module: str
    cls: str
    settings: dict[str, Any]
    input: str
    owner: int
    params: dict[str, bool]  # the owner's parameters: base name → each row's gradients?
    mask: str | None
    state: bool

    def describe(self) -> str:
        return f"layer {self.k} ({self.module or 'the model'}: {self.cls})"


@dataclass
class Network:
    """A graph run's network, read from its metadata."""

    layers: list[GraphLayer]
    ops: list[dict[str, Any]]
    loss: dict[str, Any]
    gradients: dict[str, str]
    optimizer: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]
    step_grads: bool
    free: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, graph: dict[str, Any], tensors: tuple[Tensor, ...]) -> Network:
        entries = {int(e["k"]): e for e in graph.get("layers", [])}
        layers = []
        for k, e in entries.items():
            owner = int(e.get("shares", k))
            params = {b: bool(v.get("rows")) for b, v in entries[owner].get("params", {}).items()}
            layers.append(GraphLayer(k, str(e["type"]), str(e.get("module", "")),
                                     str(e.get("class", "")), dict(e.get("settings", {})),
                                     str(e["input"]), owner, params, e.get("mask"),
                                     bool(e.get("state"))))  # fmt: skip
        return cls(layers, list(graph.get("ops", [])), dict(graph.get("loss", {})),
                   dict(graph.get("gradients", {})), dict(graph.get("optimizer", {})),
                   {t.name: t.shape for t in tensors}, bool(graph.get("step_grads", True)),
                   list(graph.get("free", [])))  # fmt: skip

    def unchecked(self) -> tuple[str, ...]:
        """What ``verify`` cannot recompute in this network, as the report names it."""
        out = [layer.describe() for layer in self.layers if _layer(layer) is None]
        out += [f"{op['name']} (a function of {', '.join(op['inputs']) or 'no recorded tensor'})"
                for op in self.ops if op["op"] not in _OPS]  # fmt: skip
        if self.loss.get("type") not in LOSSES:
            out.append("the loss (the loop's own)")
        blind = [p for layer in self.layers if layer.owner == layer.k
                 for p, rows in layer.params.items() if not rows] + self.free  # fmt: skip
        if blind:
            out.append("each row's gradients of " + ", ".join(blind) + " (the step's only)")
        unread = [grad for tensor, grad in self.gradients.items() if not self.checkable(tensor)]
        if unread:
            out.append(f"δ {', '.join(sorted(unread, key=_number))} (read by what is not "
                       "recomputed)")  # fmt: skip
        return tuple(out)

    def checkable(self, tensor: str) -> bool:
        """Whether every reader of ``tensor`` is recomputed, so that its δ is checked as the
        sum of what they send back."""
        for layer in self.layers:
            if layer.input == tensor and _layer(layer) is None:
                return False
        for op in self.ops:
            if tensor in op["inputs"] and op["op"] not in _OPS:
                return False
        return not (self.loss.get("input") == tensor and self.loss.get("type") not in LOSSES)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1]))


def _layer(layer: GraphLayer) -> Layer | None:
    """The model's class computing a layer of the graph; None for one it does not know."""
    s, kind = layer.settings, layer.type
    makers: dict[str, Callable[[], Layer]] = {
        "linear": lambda: Linear(int(s["out"]), bool(s["bias"])),
        "conv2d": lambda: Conv2d(int(s["out"]), _pair(s["kernel"]), bool(s["bias"]),
                                 stride=_pair(s["stride"]), padding=_pair(s["padding"])),
        "maxpool2d": lambda: MaxPool2d(int(s["size"]), stride=int(s["stride"]),
                                       padding=int(s["padding"])),
        "avgpool2d": lambda: AvgPool2d(int(s["size"]), int(s["stride"]), int(s["padding"]),
                                       bool(s["count_include_pad"]), s.get("divisor")),
        "batch_norm": lambda: Normalization(float(s["eps"])),
        "layer_norm": lambda: LayerNorm(int(s["dims"]), float(s["eps"]), bool(s["affine"])),
        "dropout": lambda: Dropout(float(s["p"])),
        "relu": Relu, "logistic": Logistic, "identity": Identity, "tanh": Tanh,
        "leaky_relu": lambda: LeakyRelu(float(s["slope"]), str(s["slope"])),
        "gelu": lambda: Gelu(str(s.get("approximate", "none"))),
        "softmax": lambda: Softmax(int(s["dim"])),
    }  # fmt: skip
    if kind == "flatten" and (s.get("start_dim"), s.get("end_dim")) == (1, -1):
        return Flatten()
    maker = makers.get(kind)
    return maker() if maker is not None else None


#: Operations between modules: their value, and what they send back to each input.
_OPS: dict[str, Callable[[list[Array], Array, Array, dict[str, Any]], tuple[Array, list[Array]]]]
_OPS = {
    "add": lambda a, o, d, s: (a[0] + a[1], [d, d]),
    "sub": lambda a, o, d, s: (a[0] - a[1], [d, -d]),
    "mul": lambda a, o, d, s: (a[0] * a[1], [d * a[1], d * a[0]]),
    "tanh": lambda a, o, d, s: (np.tanh(a[0]), [d * (1 - o * o)]),
    "relu": lambda a, o, d, s: (Relu().forward(a[0], None), [Relu().backward(a[0], o, d, None)[0]]),
    "sigmoid": lambda a, o, d, s: (Logistic().forward(a[0], None), [d * o * (1 - o)]),
    "gelu": lambda a, o, d, s: (Gelu(s.get("approximate", "none")).forward(a[0], None),
                                [Gelu(s.get("approximate", "none")).backward(a[0], o, d, None)[0]]),
    "reshape": lambda a, o, d, s: (a[0].reshape(o.shape), [d.reshape(a[0].shape)]),
}  # fmt: skip


class Values:
    """A chunk's tensors by name, each (rows, *shape), read once."""

    def __init__(self, chunk: GraphChunk, shapes: dict[str, tuple[int, ...]]) -> None:
        self.chunk, self.shapes = chunk, shapes
        self.cache: dict[str, Array] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.shapes

    def __getitem__(self, name: str) -> Array:
        if name not in self.cache:
            flat = self.chunk.tensor(name)
            self.cache[name] = flat.reshape(len(flat), *self.shapes[name])
        return self.cache[name]


def _params(layer: GraphLayer, v: Values, lead: int, rows: slice | None = None) -> Params | None:
    """The parameters layer k uses (its owner's, before the step), a row each: with ``lead``
    axes after the rows for inputs of more axes than the layer reads; one step's (``rows``)
    as they are."""
    bases = list(layer.params)
    w = next((b for b in bases if b.startswith("w")), None)
    if w is None:
        return None
    b = next((b for b in bases if b.startswith("b")), None)

    def one(base: str) -> Array:
        a = v[base + "_before"]
        out: Array = a[rows.start] if rows is not None else a.reshape(
            len(a), *([1] * lead), *a.shape[1:])  # fmt: skip
        return out

    return Params(one(w), one(b) if b is not None else None)


def check_network(chunk: GraphChunk, net: Network, v: Values) -> dict[str, Array]:
    """Every recomputed value of the chunk checked (problems go to ``chunk``); each row's
    gradients by parameter (their sums over a step's rows and a module's calls are checked
    with the update)."""
    sent: dict[str, list[Array] | None] = {}  # what each tensor's readers send back

    def send(name: str, value: Array | None) -> None:
        if name not in sent:
            sent[name] = []
        got = sent[name]
        if value is None or got is None:
            sent[name] = None
        else:
            got.append(value)

    row_grads: dict[str, Array] = {}
    for layer in net.layers:
        _check_layer(chunk, net, layer, v, send, row_grads)
    for op in net.ops:
        _check_op(chunk, net, op, v, send)
    _check_loss(chunk, net, v, send)
    for tensor, grad in net.gradients.items():
        readers = sent.get(tensor)
        if readers is None or not readers:
            continue
        expected = readers[0]
        for more in readers[1:]:
            expected = expected + more
        order = DELTAS - _number(grad)
        chunk.first_bad(grad, _flat(v[grad]), _flat(expected), "its readers send back", order,
                        chunk.run.tol)  # fmt: skip
    for layer in net.layers:  # every copy of a gradient is the gradient
        name = net.gradients.get(layer.input)
        if name is not None and name != f"d{layer.k}" and f"d{layer.k}" in v:
            chunk.first_bad(f"d{layer.k}", _flat(v[f"d{layer.k}"]), _flat(v[name]),
                            f"{name} (the same tensor's gradient) holds",
                            DELTAS - layer.k)  # fmt: skip
    return row_grads


def _number(name: str) -> int:
    digits = "".join(ch for ch in name if ch.isdigit())
    return int(digits) if digits else 0


def _flat(a: Array) -> Array:
    out: Array = a.reshape(len(a), -1)
    return out


def _check_layer(
    chunk: GraphChunk, net: Network, layer: GraphLayer, v: Values,
    send: Callable[[str, Array | None], None], row_grads: dict[str, Array],
) -> None:  # fmt: skip
    """Layer k's output from its recorded input; what it sends back to its input; each
    row's gradients of its parameters."""
    model = _layer(layer)
    k, x = layer.k, v[layer.input]
    d_out_name = net.gradients.get(f"o{k}")
    if model is None:
        send(layer.input, None)
        return
    mask = v[layer.mask] if layer.mask and layer.mask in v else None
    if mask is not None:
        _check_mask(chunk, layer, x, v[f"o{k}"], mask)
    lead = x.ndim - 1 - _reads(layer, x)
    o = v[f"o{k}"]
    d_out = v[d_out_name] if d_out_name is not None and d_out_name in v else None
    with np.errstate(all="ignore"):
        if model.couples_rows:
            calc, d_in, grads = _by_step(chunk, model, layer, v, x, o, d_out)
        else:
            p = _params(layer, v, lead)
            d_in, grads = (None, None)
            if isinstance(model, Dropout):  # by the mask it drew
                calc = model.forward(x, p, mask=mask)
                if d_out is not None:
                    d_in, grads = model.backward(x, o, d_out, p, mask=mask)
            else:
                calc = model.forward(x, p)
                if d_out is not None:
                    d_in, grads = model.backward(x, o, d_out, p)
    chunk.first_bad(f"o{k}", _flat(o), _flat(calc), "recomputed", 10 * k, chunk.run.tol)
    send(layer.input, d_in)
    if grads is None:
        return
    for kind, grad in (("w", grads.w), ("b", grads.b)):
        name = f"grad_{kind}{k}"
        if grad is None or name not in v:
            continue
        per_row = grad.reshape(len(x), -1, *v[name].shape[1:]).sum(axis=1) if lead else grad
        chunk.first_bad(name, _flat(v[name]), _flat(per_row), "recomputed", GRADS + k,
                        chunk.run.tol)  # fmt: skip
        base = next(b for b in layer.params if b.startswith(kind))
        row_grads[base] = row_grads[base] + v[name] if base in row_grads else v[name]


def _reads(layer: GraphLayer, x: Array) -> int:
    """How many axes of a row's input the layer reads (the others are carried along)."""
    if layer.type == "linear":
        return 1
    if layer.type == "layer_norm":
        return int(layer.settings["dims"])
    return x.ndim - 1


def _by_step(
    chunk: GraphChunk, model: Layer, layer: GraphLayer, v: Values, x: Array, o: Array,
    d_out: Array | None,
) -> tuple[Array, Array | None, Params | None]:  # fmt: skip
    """A normalisation, a step's rows together, with the step's parameters."""
    calc = np.empty_like(o)
    d_in = np.empty_like(x) if d_out is not None else None
    gw: list[Array] = []
    gb: list[Array] = []
    for start, size in zip(chunk.starts.tolist(), chunk.sizes.tolist(), strict=True):
        rows = slice(start, start + size)
        p = _params(layer, v, 0, rows)
        calc[rows] = model.forward(x[rows], p)
        if d_out is not None and d_in is not None:
            back, g = model.backward(x[rows], o[rows], d_out[rows], p)
            d_in[rows] = back
            if g is not None and g.b is not None:
                gw.append(g.w)
                gb.append(g.b)
    grads = Params(np.concatenate(gw), np.concatenate(gb)) if gw else None
    return calc, d_in, grads


def _check_mask(chunk: GraphChunk, layer: GraphLayer, x: Array, o: Array, mask: Array) -> None:
    """A dropout's mask is what its output says: kept (1) where the output is not 0, dropped
    (0) where it is, wherever the input is not 0."""
    told = x != 0
    implied = (o != 0).astype(np.float64)
    expected = np.where(told, implied, mask)
    assert layer.mask is not None
    chunk.first_bad(layer.mask, _flat(mask), _flat(expected),
                    f"o{layer.k} (its input not 0) says", 10 * layer.k - 1)  # fmt: skip


def _check_op(
    chunk: GraphChunk, net: Network, op: dict[str, Any], v: Values,
    send: Callable[[str, Array | None], None],
) -> None:  # fmt: skip
    """An operation between modules from its recorded inputs; what it sends back."""
    name, inputs = str(op["name"]), [str(i) for i in op["inputs"]]
    rule = _OPS.get(op["op"])
    alike = len({net.shapes.get(i) for i in [*inputs, name]}) == 1  # no broadcasting
    if rule is None or not (alike or (op["op"] == "reshape" and len(inputs) == 1)):
        for i in inputs:
            send(i, None)
        return
    o = v[name]
    grad = net.gradients.get(name)
    d = v[grad] if grad is not None and grad in v else np.zeros_like(o)
    with np.errstate(all="ignore"):
        calc, back = rule([v[i] for i in inputs], o, d, op)
    chunk.first_bad(name, _flat(o), _flat(calc), f"{op['op']}({', '.join(inputs)}) gives",
                    10 * _number(name) - 2, chunk.run.tol)  # fmt: skip
    for i, b in zip(inputs, back, strict=True):
        send(i, b if grad is not None else None)


def _check_loss(
    chunk: GraphChunk, net: Network, v: Values, send: Callable[[str, Array | None], None]
) -> None:
    """Each row's loss and δ at the loss, by the loss's formulas."""
    kind, source = net.loss.get("type"), str(net.loss.get("input"))
    rule = LOSSES.get(str(kind))
    top = max((layer.k for layer in net.layers), default=1) + 1
    if rule is None or source not in v:
        send(source, None)
        return
    o, y = _flat(v[source]), _flat(v["y"])
    m = chunk.plan["m"].astype(np.float64)
    with np.errstate(all="ignore"):
        loss = rule().value(o, y)
        delta = rule().delta(o, y, m)
    chunk.first_bad("loss", v["loss"].reshape(-1, 1), np.reshape(loss, (-1, 1)),
                    f"the {kind} loss is", 10 * top, chunk.run.tol)  # fmt: skip
    send(source, delta.reshape(v[source].shape))


def step_sums(grads: Array, starts: Array) -> Array:
    """Each step's sum of its rows' gradients, in the order it visited them."""
    out: Array = np.add.reduceat(grads.reshape(len(grads), -1), starts, axis=0)
    return out
