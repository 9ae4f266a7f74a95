"""Record a PyTorch training loop: every layer's input, output and δ, every row's gradients,
the parameters and the optimizer's state before and after each step, in a steptrace trace.

    import steptrace.torch

    with steptrace.torch.record(model, optimizer, out="traces", name="cnn") as rec:
        for x, y in loader:
            optimizer.zero_grad()
            out = model(x)
            per_sample = F.cross_entropy(out, y, reduction="none")
            per_sample.mean().backward()
            rec.step(x, y, per_sample)      # after backward, before optimizer.step()
            optimizer.step()

Any model is recorded. Its layers are numbered as the series numbers them: L1 the input, then
each call of a leaf module in the order the forward pass makes it (a module called twice is two
layers). What PyTorch computes is what is recorded: each layer's output (forward hooks), its
input where it is not the layer below's output (a residual sum, a functional call between
modules: ``i{k}``), each δ (autograd's gradients, kept by ``retain_grad``; ∂Loss/∂x too, the
model given an input of the same storage that requires a gradient), dropout masks, batch
norm's running statistics, the parameters, the gradients the optimizer used and its state
around ``optimizer.step()`` (its step hooks), and the learning rate of each step. Each row's
gradients of the layers whose formulas steptrace knows (linear, conv2d, batch and layer norm)
come from those formulas, vectorised: PyTorch holds only their sum.

Recording changes nothing the loop computes: the same loop with the same seeds ends bit for bit
where it ends without it. Nothing is written before the first step is understood; an
exception, Ctrl-C or a block that ends before a declared plan leaves the run incomplete, with
the reason and the steps it holds.

This module holds :func:`record`, which puts the adapter's parts together: ``layers`` (what
each module is), ``graph`` (the network learned from the first step), ``optim`` (the
optimizer's rule and state), ``loss`` (which loss), ``describe`` (the run's tensors, model,
graph and dataset), ``capture`` and ``buffers`` (the hooks copying each step), ``values`` (the
steps as the trace's values), ``figures`` (the steps a run does not hold, known by their
per-step figures alone: ``every``, ``steps``) and ``recorder`` (the run opened, written,
closed).
``import steptrace.torch`` gives the same public names.
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

from ...trace.keep import Selection
from .describe import loop_dataset
from .layers import check_optimizer, numerics_of
from .loss import loss_name
from .recorder import Recorder, RunArgs

__all__ = ["Recorder", "record"]


def record(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    out: str | Path = "traces",
    name: str | None = None,
    *,
    loss: str | nn.Module | None = None,
    dataset: Any = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    features: int | Sequence[str] | None = None,
    targets: int | Sequence[str] | None = None,
    dataset_name: str | None = None,
    flush_seconds: float = 1.0,
    every: int | None = None,
    steps: str | None = None,
    tensors: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    keep_last: int | None = None,
    after: int | None = None,
    trigger: str | Sequence[str] | None = None,
) -> Recorder:
    """Record the training of ``model`` by ``optimizer`` into a new run under ``out``.

    Use it as a context manager around the loop and call ``rec.step(x, y, per_sample)`` after
    ``backward()`` and before ``optimizer.step()``, every step (see the module doc). ``loss``
    names the loss (``"cross_entropy"``, ``"mse"``, ``"bce_with_logits"``,
    ``"squared_error"``, or the ``nn`` loss module): ``steptrace verify`` then recomputes it;
    by default it is recognised from the first step's per-sample losses. The run's plan
    (which dataset rows each step visits) is learned from the data; give ``dataset`` (a
    ``DataLoader`` or ``Dataset`` of tensors, ``(inputs, outputs)`` tensors or a
    :class:`steptrace.Dataset`) to name its rows, and with ``epochs`` (and ``batch_size``
    unless the loader has it) the plan is known from the start. ``features``/``targets`` name
    the data's columns. ``every``, ``steps``, ``tensors`` and ``layers`` choose what is
    recorded, as :func:`steptrace.record`'s do (a name or layer the network lacks is refused at
    the first step, before anything is written; the steps ``every`` and ``steps`` leave out are
    not copied, their per-step figures made from a few reductions each); ``keep_last``,
    ``after`` and ``trigger`` make it a flight recorder (``rec.trigger("why")`` fires it).

    Raises :class:`~steptrace.ModelError` before anything is written when the model's
    parameters are not one float dtype, or one that learns is not in the optimizer.

    >>> with steptrace.torch.record(model, optimizer, out="traces", name="cnn") as rec:
    ...     ...  # doctest: +SKIP
    """
    selection = Selection.of(every, steps, tensors, layers, keep_last, after, trigger)
    check_optimizer(model, optimizer)
    numerics = numerics_of(model)
    data, loader_batch, shuffled = loop_dataset(dataset)
    size = batch_size if batch_size is not None else loader_batch
    plan_known = data is not None and epochs is not None and size is not None and not shuffled
    args = RunArgs(
        out, name, numerics, loss_name(loss), data, epochs if plan_known else None,
        size if plan_known else None,
        None if data is not None else features, None if data is not None else targets,
        dataset_name, flush_seconds, selection,
    )  # fmt: skip
    return Recorder(model, optimizer, args)
