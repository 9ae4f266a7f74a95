"""Record a PyTorch training loop: every layer's output and δ, every row's gradients, the
parameters before and after each step, in a steptrace trace.

    import steptrace

    with steptrace.torch.record(model, optimizer, out="traces", name="mlp") as rec:
        for x, y in loader:
            optimizer.zero_grad()
            out = model(x)
            per_sample = ((out - y) ** 2).sum(dim=1) / 2
            per_sample.mean().backward()
            rec.step(x, y, per_sample)      # after backward, before optimizer.step()
            optimizer.step()

The model is read as the series numbers layers: L1 the input, then the model's leaf modules in
order (``nn.Sequential`` and nested modules flattened): ``Linear``, ``ReLU``, ``LeakyReLU``,
``Sigmoid`` (the series' logistic) and ``Identity``. What PyTorch computes is what is recorded:

- **o{k}**, each layer's output, from forward hooks;
- **d{k}**, δk = ∂Loss/∂(input of layer k): the gradient of layer k − 1's output that
  PyTorch's backward pass computes (kept by ``retain_grad``). The loss is
  ``per_sample.mean()``, so δ at the loss is (o − y)/m, steptrace's convention. δ2 and δ1,
  which PyTorch does not compute (the data needs no gradient), follow from δ3 by layer 2's
  backward rule, δ1 = δ2 by the input layer's;
- **grad_w{k}**, **grad_b{k}**, each row's gradients, by the layer's formulas from what PyTorch
  computed (∂W = δ_out ⊗ x, ∂b = δ_out per row): PyTorch only holds their sum;
- **w{k}_before/after**, **b{k}_before/after**, the parameters around ``optimizer.step()``
  (optimizer step hooks), as the optimizer really left them.

The model's dtype gives the numerics (float64 or float32). The metadata's ``model`` is the
network with its initial parameters as exact rational texts of the floats PyTorch held, so
``steptrace.record(..., model=trace.meta["model"])`` records the same network steptrace's way;
``recorded_with`` names PyTorch, its version, the optimizer and its settings, and whether the
update is plain SGD (``w − α·Σ grad``: what ``steptrace verify`` checks) or the optimizer's own.

Rows go to the trace writer (:func:`steptrace.open_run`) a chunk of steps at a time, so memory
stays flat and the loop slows little; hooks are removed when the block ends, whatever ends it.

This module holds :func:`record`, which puts the adapter's parts together: ``layers`` (the
model read as the series' layers, checked), ``describe`` (the run's model file, metadata and
dataset), ``capture`` (the hooks copying each step) and ``recorder`` (the steps turned into
rows, written). ``import steptrace.torch`` gives the same public names.
"""

from __future__ import annotations

try:
    import torch
except ImportError as exc:  # pragma: no cover - the optional extra is not installed
    raise ImportError("steptrace.torch needs PyTorch: pip install 'steptrace[torch]'") from exc

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ...model.spec import load_model
from ...numerics import get_numerics
from ...trace.run import open_run
from .describe import loop_dataset, model_json, recorded_with
from .layers import check_optimizer, numerics_of, read_layers
from .recorder import Recorder

__all__ = ["Recorder", "record"]


def record(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    out: str | Path = "traces",
    name: str | None = None,
    *,
    dataset: Any = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    features: int | Sequence[str] | None = None,
    targets: int | Sequence[str] | None = None,
    dataset_name: str | None = None,
    flush_seconds: float = 1.0,
) -> Recorder:
    """Record the training of ``model`` by ``optimizer`` into a new run under ``out``.

    Use it as a context manager around the loop and call ``rec.step(x, y, per_sample)`` after
    ``backward()`` and before ``optimizer.step()``, every step (see the module doc). The run's
    plan (which dataset rows each step visits) is learned from the data; give ``dataset`` (a
    ``DataLoader`` or ``Dataset`` of tensors, ``(inputs, outputs)`` tensors or a
    :class:`steptrace.Dataset`) to name its rows, and with ``epochs`` (and ``batch_size``
    unless the loader has it) the plan is known from the start. ``features``/``targets`` name
    the data's columns.

    Raises :class:`~steptrace.ModelError` naming the module when the model has a layer
    steptrace cannot record, before anything is written.

    >>> with steptrace.torch.record(model, optimizer, out="traces", name="mlp") as rec:
    ...     ...  # doctest: +SKIP
    """
    layers = read_layers(model)
    check_optimizer(model, optimizer, layers)
    numerics = numerics_of(layers)
    stack_json, n_in = model_json(model, layers, get_numerics(numerics))
    network = load_model(stack_json, n_in)
    lr = float(optimizer.param_groups[0]["lr"])
    data, loader_batch, shuffled = loop_dataset(dataset)
    size = batch_size if batch_size is not None else loader_batch
    plan_known = data is not None and epochs is not None and size is not None and not shuffled
    run = open_run(
        out,
        name or "torch",
        model=network,
        lr=lr,
        numerics=numerics,
        dataset=data,
        epochs=epochs if plan_known else None,
        batch_size=size if plan_known else None,
        features=None if data is not None else features if features is not None else n_in,
        targets=None if data is not None else targets,
        dataset_name=dataset_name,
        recorded_with=recorded_with(optimizer),
        flush_seconds=flush_seconds,
    )
    return Recorder(model, optimizer, layers, network.stack(run.numerics), run)
