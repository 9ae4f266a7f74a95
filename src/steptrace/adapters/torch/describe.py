"""What a recorded PyTorch run says about itself: its tensors in file order, its network as a
model file (the series' model file when the network is a stack of the series' layers, its
initial parameters as exact rational texts of the floats PyTorch held) and as ``graph`` (which
tensor feeds which: docs/trace-format.md, "Runs of any network"), ``recorded_with`` (PyTorch,
its version, the optimizer), and the loop's dataset as :func:`steptrace.open_run` takes it.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import torch

from ...errors import ConfigError, SteptraceError
from ...model.spec import load_model
from ...numerics import Numerics
from ...trace.run import GraphSpec
from ...trace.schema import Tensor, stack_tensors
from .graph import Graph, Layer, Shape
from .optim import OptimizerSpec, plain

__all__ = ["exact", "loop_dataset", "recorded_with", "run_spec"]


def exact(v: float) -> str:
    """The exact value of a float as a rational text (``0.5`` → ``1/2``)."""
    return str(Fraction(v))


def _text(v: float, num: Numerics) -> str:
    """A setting as typed (``0.01``) when the run computes with the same value; else exactly."""
    text = repr(float(v))
    return text if num.make(Fraction(text)) == num.make(Fraction(v)) else exact(v)


def run_spec(
    graph: Graph, optimizer: OptimizerSpec, loss: str, y_shape: Shape, classes: bool,
    num: Numerics, name: str,
) -> tuple[GraphSpec, bool]:  # fmt: skip
    """The run's tensors, model and graph; and whether it is *a stack run*: the series' stack
    trained by plain SGD on the squared error, whose tensors are exactly the ones steptrace
    records for that stack (``steptrace verify`` then checks it as one)."""
    series = _series_model(graph, loss, num, name)
    plain = series is not None and optimizer.plain_sgd and not graph.ops and not any(
        layer.state or layer.mask for layer in graph.layers
    )  # fmt: skip
    if plain:
        assert series is not None
        model = load_model(series, int(np.prod(graph.shapes["o1"])))
        tensors = stack_tensors(model.stack(num), int(np.prod(y_shape)), store_all=True)
        if {t.name for t in tensors} <= set(_names(graph, optimizer, y_shape)):
            return GraphSpec(tuple(tensors), series, graph_meta(graph, optimizer, loss, classes,
                                                                plain=True)), True  # fmt: skip
    spec = GraphSpec(
        tuple(tensor_list(graph, optimizer, y_shape)),
        series or _description(graph, loss, name),
        graph_meta(graph, optimizer, loss, classes, plain=False),
    )
    return spec, False


# --- the tensors ----------------------------------------------------------------------------


def tensor_list(graph: Graph, optimizer: OptimizerSpec, y_shape: Shape) -> list[Tensor]:
    """Every tensor of the run in file order: the series' (lr, x, y, o1 … oK, loss, d{K+1} …
    d1, each parameter's gradient and values), then what a graph adds (i{k}, d_o{k}, masks,
    the step's gradients, running statistics, optimizer state)."""
    top, shapes = graph.top, graph.shapes
    first = min((layer.k for layer in graph.layers if layer.params), default=top + 1)
    out = [Tensor("lr", (), data=True), Tensor("x", shapes["o1"], data=True),
           Tensor("y", y_shape, data=True)]  # fmt: skip
    out += [Tensor("o1", shapes["o1"], data=first > 1)]
    out += [Tensor(f"o{layer.k}", layer.out_shape, data=layer.k < first) for layer in graph.layers]
    out.append(Tensor("loss", ()))
    out.append(Tensor(f"d{top + 1}", shapes[graph.loss_input]))
    out += [Tensor(f"d{layer.k}", layer.in_shape) for layer in reversed(graph.layers)]
    out.append(Tensor("d1", shapes["o1"]))
    for p in graph.params:
        grad = [Tensor("grad_" + p.base, p.shape)] if p.rows else []
        out += [*grad, Tensor(p.base + "_before", p.shape), Tensor(p.base + "_after", p.shape)]
    for layer in graph.layers:  # a module called again: its gradients' share from this call
        if layer.owner != layer.k:
            owner = graph.layers[layer.owner - 2]
            out += [Tensor(f"grad_{p.base[0]}{layer.k}", p.shape) for p in owner.params if p.rows]
    out += [Tensor(op.name, shapes[op.name]) for op in graph.ops]
    out += [Tensor(g, shapes[t]) for t, g in graph.grads.items() if g.startswith("d_o")]
    out += [Tensor(f"mask{layer.k}", layer.in_shape) for layer in graph.layers if layer.mask]
    out += [Tensor("step_grad_" + p.base, p.shape) for p in graph.params]
    for layer in graph.layers:
        if layer.state:
            for key, shape in _state(layer):
                out += [Tensor(f"{key}{layer.k}_{when}", shape) for when in ("before", "after")]
    for p in graph.params:
        for key in optimizer.keys:
            shape = () if key == "step" else p.shape
            out += [Tensor(f"{key}_{p.base}_{when}", shape) for when in ("before", "after")]
    return out


def _names(graph: Graph, optimizer: OptimizerSpec, y_shape: Shape) -> list[str]:
    return [t.name for t in tensor_list(graph, optimizer, y_shape)]


def _state(layer: Layer) -> list[tuple[str, Shape]]:
    """A batch norm's running statistics: one value per channel, and its batches."""
    channels = (layer.in_shape[0],)
    return [("running_mean", channels), ("running_var", channels), ("num_batches_tracked", ())]


# --- the network ----------------------------------------------------------------------------


def _series_model(graph: Graph, loss: str, num: Numerics, name: str) -> dict[str, Any] | None:
    """The network as the series' model file, with its current parameters exactly: when every
    layer is one of the series', each reads the one below, the loss is the squared error and
    the data input is a vector or an image; else None."""
    in_shape = graph.shapes["o1"]
    if loss != "squared_error" or len(in_shape) not in (1, 3) or graph.free:
        return None
    first: dict[str, Any] = {"type": "input"}
    if len(in_shape) == 3:
        first["shape"] = list(in_shape)
    layers = [first]
    for layer in graph.layers:
        kind = layer.kind
        if kind.series is None or layer.feed != f"o{layer.k - 1}" or layer.owner != layer.k:
            return None
        spec = dict(kind.series)
        for key in ("slope", "eps"):
            if key in spec:
                spec[key] = _text(spec[key], num)
        values = {p.base[0]: p.tensor.detach().cpu().double().numpy() for p in layer.params}
        texts = np.vectorize(exact, otypes=[object])
        if kind.type == "batch_norm":
            spec.update(gamma=texts(values["w"]).tolist(), beta=texts(values["b"]).tolist())
        elif "w" in values:
            spec["weights"] = texts(values["w"]).tolist()
            if "b" in values:
                spec["biases"] = texts(values["b"]).tolist()
        layers.append(spec)
    if graph.loss_input != f"o{graph.top}":
        return None
    model = {"name": name, "layers": layers, "loss": "squared_error"}
    try:
        load_model(model, int(np.prod(in_shape)))
    except SteptraceError:
        return None  # e.g. a pooling the grid's size does not divide
    return model


def _description(graph: Graph, loss: str, name: str) -> dict[str, Any]:
    """A network that is no stack of the series' layers, named layer by layer as ``graph``
    holds it (no model file reads it: ``graph`` is what describes it)."""
    layers: list[dict[str, Any]] = [{"type": "input"}]
    for layer in graph.layers:
        entry = {"type": layer.kind.type, **layer.kind.settings}
        layers.append(entry)
    return {"name": name, "layers": layers, "loss": loss}


def graph_meta(
    graph: Graph, optimizer: OptimizerSpec, loss: str, classes: bool, plain: bool
) -> dict[str, Any]:
    """The run's ``graph`` metadata (docs/trace-format.md, "Runs of any network")."""
    layers = []
    for layer in graph.layers:
        entry: dict[str, Any] = {
            "k": layer.k, "module": layer.name, "class": type(layer.module).__name__,
            "type": layer.kind.type, "settings": layer.kind.settings, "input": layer.feed,
        }  # fmt: skip
        owner = graph.layers[layer.owner - 2]
        if layer.owner != layer.k:
            entry["shares"] = layer.owner
        params = {p.base: {"rows": p.rows} for p in owner.params}
        if params:
            entry["params"] = params
        if layer.mask:
            entry["mask"] = f"mask{layer.k}"
        if layer.state:
            entry["state"] = [key for key, _ in _state(layer)]
        layers.append(entry)
    return {
        "layers": layers,
        "ops": [
            {"name": op.name, "op": op.op, "inputs": list(op.inputs), **op.settings}
            for op in graph.ops
        ],
        "loss": {
            "type": loss,
            "input": graph.loss_input,
            "targets": "classes" if classes else "values",
        },
        "gradients": dict(graph.grads),
        "free": [p.base for p in graph.free],
        "optimizer": {
            "type": optimizer.type,
            "settings": optimizer.settings,
            "state": list(optimizer.keys),
            "checked": optimizer.checked,
        },
        "step_grads": not plain,
    }


# --- the framework --------------------------------------------------------------------------


def recorded_with(optimizer: torch.optim.Optimizer, spec: OptimizerSpec) -> dict[str, Any]:
    """The run's ``recorded_with`` metadata: PyTorch, the optimizer and its settings, and
    which update the parameters followed (``sgd``: ŵ = w − α·Σ grad; ``optimizer``: its own)."""
    groups = optimizer.param_groups
    settings = {k: plain(v) for k, v in groups[0].items() if k != "params"}
    out: dict[str, Any] = {
        "framework": "pytorch",
        "version": str(torch.__version__),
        "optimizer": {"type": type(optimizer).__name__, **settings},
        "update": "sgd" if spec.plain_sgd else "optimizer",
    }
    if len(groups) > 1:
        out["optimizer"]["param_groups"] = len(groups)
    return out


# --- the data -------------------------------------------------------------------------------


def loop_dataset(source: Any) -> tuple[Any, int | None, bool]:
    """The data the loop draws from, as ``open_run`` takes it (inputs flattened to one row
    each); the loader's batch size and whether it shuffles (or drops its last batch: neither
    follows a plan steptrace knows)."""
    if source is None:
        return None, None, False
    from ...data import Dataset

    if isinstance(source, Dataset):
        return source, None, False
    batch, shuffled = None, False
    if isinstance(source, torch.utils.data.DataLoader):
        batch = source.batch_size
        shuffled = not isinstance(source.sampler, torch.utils.data.SequentialSampler) or bool(
            source.drop_last
        )
        source = source.dataset
    if isinstance(source, torch.utils.data.TensorDataset):
        source = tuple(source.tensors)
    if not isinstance(source, tuple | list) or len(source) != 2:
        raise ConfigError(
            "dataset: give a DataLoader or TensorDataset of (inputs, outputs), a pair of "
            f"tensors, or a steptrace Dataset; got {type(source).__name__}"
        )
    x, y = (np.asarray(t.detach().cpu().double() if torch.is_tensor(t) else t) for t in source)
    return (x.reshape(len(x), -1), y.reshape(len(y), -1)), batch, shuffled
