"""A chunk of captured steps as the trace's values, by tensor name: what PyTorch computed
(outputs, δ, the gradients the optimizer used, parameters and state before and after), and
each row's gradients of the layers whose formulas steptrace knows, computed from the row's own
input and δ, a whole chunk at once:

    linear       ∂Loss/∂W = δ ⊗ x;  ∂Loss/∂b = δ                   (summed over any inner axes)
    conv2d       ∂Loss/∂K_{c',c}[a, b] = Σ_{i,j} δ_c'[i, j] · x_c[i·s − p + a, j·s − p + b]
    batch_norm   ∂Loss/∂γ = Σ_pixels δ x';  ∂Loss/∂β = Σ_pixels δ    (x' by the step's rows)
    layer_norm   ∂Loss/∂γ = δ x';  ∂Loss/∂β = δ

PyTorch holds only their sum. Other parameters have the step's gradient only
(``step_grad_…``, which every parameter has: what the optimizer used).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional as F

from ...trace.schema import Tensor
from .buffers import Chunk
from .describe import _state
from .graph import Graph, Layer
from .optim import OptimizerSpec

__all__ = ["chunk_values"]

Array = npt.NDArray[Any]


def chunk_values(
    graph: Graph, optimizer: OptimizerSpec, tensors: Sequence[Tensor], chunk: Chunk
) -> dict[str, Array]:
    """Every tensor of ``tensors`` for the chunk's rows, flat: (rows, values)."""
    m, rows, steps = chunk.m, chunk.rows, chunk.steps
    wanted = {t.name for t in tensors}
    out: dict[str, Array] = {"x": rows["x"], "y": rows["y"], "loss": rows["loss"]}
    out["o1"] = rows["x"]
    for layer in graph.layers:
        out[f"o{layer.k}"] = rows[f"o{layer.k}"]
        if layer.mask:
            out[f"mask{layer.k}"] = (rows[f"noise{layer.k}"] != 0).astype(rows["x"].dtype)
    for op in graph.ops:
        out[op.name] = rows[op.name]
    grad = {t: rows[f"g:{t}"] for t in graph.sources}
    if not chunk.x_grads:  # a stack followed from its linear first layer: δ_in = δ · W
        first = graph.layers[0]
        shape = first.params[0].shape
        w = steps["before"][:, : int(np.prod(shape))]
        weights = np.repeat(w, m, axis=0).reshape(-1, *shape)
        grad["o1"] = np.einsum("no,noi->ni", grad[f"o{first.k}"], weights)
    for t, name in graph.grads.items():
        out[name] = grad[t]
    out[f"d{graph.top + 1}"] = grad[graph.loss_input]
    out["d1"] = grad["o1"]
    for layer in graph.layers:
        out[f"d{layer.k}"] = grad[layer.feed]

    def each_row(a: Array) -> Array:
        return np.repeat(a, m, axis=0)

    params = graph.params
    pos = 0
    for p in params:
        n = int(np.prod(p.shape, dtype=np.int64))
        for when, source in (("before", steps["before"]), ("after", steps["after"])):
            out[f"{p.base}_{when}"] = each_row(source[:, pos : pos + n])
        if steps["grad"].shape[1]:
            out[f"step_grad_{p.base}"] = each_row(steps["grad"][:, pos : pos + n])
        pos += n
    _optimizer_state(out, graph, optimizer, chunk, pos, each_row)
    for layer in graph.layers:
        if layer.state:
            _running(out, layer, steps, each_row)
    for layer in graph.layers:
        owner = graph.layers[layer.owner - 2]
        if any(p.rows and f"grad_{p.base[0]}{layer.k}" in wanted for p in owner.params):
            with np.errstate(all="ignore"):
                w, b = _row_gradients(layer, out[layer.feed], grad[f"o{layer.k}"], m)
            out[f"grad_w{layer.k}"] = w.reshape(len(w), -1)
            if b is not None:
                out[f"grad_b{layer.k}"] = b.reshape(len(b), -1)
    return {name: out[name] for name in wanted if name != "lr"}


def _optimizer_state(
    out: dict[str, Array], graph: Graph, optimizer: OptimizerSpec, chunk: Chunk, pos: int,
    each_row: Any,
) -> None:  # fmt: skip
    """Each parameter's optimizer state before and after each step."""
    steps = chunk.steps
    for i, p in enumerate(graph.params):
        n = int(np.prod(p.shape, dtype=np.int64))
        for key in optimizer.tensor_keys:
            for when, source in (("before", steps["before"]), ("after", steps["after"])):
                out[f"{key}_{p.base}_{when}"] = each_row(source[:, pos : pos + n])
            pos += n
        if "step" in optimizer.keys:
            out[f"step_{p.base}_before"] = each_row(chunk.scalars_before[:, i : i + 1])
            out[f"step_{p.base}_after"] = each_row(chunk.scalars_after[:, i : i + 1])


def _running(out: dict[str, Array], layer: Layer, steps: dict[str, Array], each_row: Any) -> None:
    """A batch norm's running mean, variance and batches before and after its forward pass."""
    for when in ("before", "after"):
        values, pos = steps[f"bn{layer.k}_{when}"], 0
        for key, shape in _state(layer):
            n = int(np.prod(shape, dtype=np.int64))
            out[f"{key}{layer.k}_{when}"] = each_row(values[:, pos : pos + n])
            pos += n


def _row_gradients(layer: Layer, x_flat: Array, d_flat: Array, m: Array) -> tuple[Array, Any]:
    """Each row's gradients of layer k's weights and biases (see the module doc)."""
    rows = len(x_flat)
    x = x_flat.reshape(rows, *layer.in_shape)
    d = d_flat.reshape(rows, *layer.out_shape)
    kind, s = layer.kind.type, layer.kind.settings
    if kind == "linear":
        if x.ndim == 2:
            return d[:, :, None] * x[:, None, :], d  # δ_j x_i; δ_j
        x3, d3 = x.reshape(rows, -1, x.shape[-1]), d.reshape(rows, -1, d.shape[-1])
        return np.einsum("nlo,nli->noi", d3, x3), d3.sum(axis=1)
    if kind == "conv2d":
        windows = F.unfold(torch.from_numpy(np.ascontiguousarray(x)), s["kernel"],
                           padding=s["padding"], stride=s["stride"])  # fmt: skip
        deltas = torch.from_numpy(np.ascontiguousarray(d.reshape(rows, d.shape[1], -1)))
        w = torch.bmm(deltas, windows.transpose(1, 2)).numpy()  # Σ_ij δ_c'[i, j] · x window
        return w.reshape(rows, d.shape[1], x.shape[1], *s["kernel"]), d.reshape(
            rows, d.shape[1], -1).sum(axis=2)  # fmt: skip
    if kind == "batch_norm":
        x_hat = _batch_normalised(x, m, float(s["eps"]))
        if x.ndim == 2:
            return d * x_hat, d
        return (d * x_hat).reshape(rows, x.shape[1], -1).sum(axis=2), d.reshape(
            rows, d.shape[1], -1).sum(axis=2)  # fmt: skip
    # layer_norm: over the row's last axes
    dims = int(s["dims"])
    flat = x.reshape(*x.shape[: x.ndim - dims], -1)
    mu = flat.mean(axis=-1, keepdims=True)
    var = ((flat - mu) ** 2).mean(axis=-1, keepdims=True)
    x_hat = ((flat - mu) / np.sqrt(var + float(s["eps"]))).reshape(x.shape)
    lead = (rows, -1, *x.shape[x.ndim - dims :])
    return (d * x_hat).reshape(lead).sum(axis=1), d.reshape(lead).sum(axis=1)


def _batch_normalised(x: Array, m: Array, eps: float) -> Array:
    """x' = (x − μ)/σ, μ and σ each channel's over its step's rows (and pixels)."""
    out = np.empty_like(x)
    starts = np.concatenate([[0], np.cumsum(m)[:-1]])
    for size in np.unique(m):
        first = starts[m == size]
        index = first[:, None] + np.arange(size)[None, :]  # (steps, rows of each)
        group = x[index]  # steps, rows, C, …
        axes = (1, *range(3, group.ndim))
        mu = group.mean(axis=axes, keepdims=True)
        var = ((group - mu) ** 2).mean(axis=axes, keepdims=True)
        out[index] = (group - mu) / np.sqrt(var + eps)
    return out
