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
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError, ModelError, SteptraceError
from ..model.spec import load_model
from ..model.stack import Stack
from ..numerics import Numerics, get_numerics
from ..trace.run import RunWriter, open_run, stop_reason

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - the optional extra is not installed
    raise ImportError("steptrace.torch needs PyTorch: pip install 'steptrace[torch]'") from exc

__all__ = ["Recorder", "record"]

Array = npt.NDArray[Any]

#: The layers steptrace records, by PyTorch module type, and the series' names for them.
LAYERS: dict[type[nn.Module], str] = {
    nn.Linear: "linear",
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.Sigmoid: "logistic",
    nn.Identity: "identity",
}
#: Steps held before they are turned into rows (a chunk also ends after HANDOFF_SECONDS).
CHUNK_STEPS = 2_048
CHUNK_ROWS = 8_192
HANDOFF_SECONDS = 0.25
#: How closely the loop's loss and δ at the loss must follow steptrace's squared error.
CONVENTION_RTOL = {"float64": 1e-9, "float32": 1e-4}


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
    layers = _layers(model)
    _check_optimizer(model, optimizer, layers)
    numerics = _numerics(layers)
    stack_json, n_in = _model_json(model, layers, get_numerics(numerics))
    network = load_model(stack_json, n_in)
    lr = float(optimizer.param_groups[0]["lr"])
    data, loader_batch, shuffled = _dataset(dataset, features, targets, dataset_name)
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
        recorded_with=_recorded_with(optimizer),
        flush_seconds=flush_seconds,
    )
    return Recorder(model, optimizer, layers, network.stack(run.numerics), run)


# --- reading the model ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    """A leaf module as a layer of the stack: its number (from 2; L1 is the input)."""

    k: int
    name: str
    module: nn.Module
    type: str


def _layers(model: nn.Module) -> list[_Layer]:
    """The model's leaf modules in order, as layers 2, 3, …; an error for anything else."""
    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]
    layers = []
    for k, (qualified, module) in enumerate(leaves, 2):
        label = f"{qualified or type(model).__name__!r} ({type(module).__name__})"
        kind = LAYERS.get(type(module))
        if kind is None:
            supported = ", ".join(t.__name__ for t in LAYERS)
            raise ModelError(
                f"steptrace.torch cannot record module {label}: it records the series' 1D "
                f"layers {supported} (2D layers come later)"
            )
        if getattr(module, "inplace", False):
            raise ModelError(
                f"module {label} works in place, overwriting the output of the layer below "
                "that steptrace records: use it with inplace=False"
            )
        layers.append(_Layer(k, qualified, module, kind))
    if not any(layer.type == "linear" for layer in layers):
        raise ModelError("the model has no Linear layer: nothing to learn, nothing to record")
    owned = {id(p) for layer in layers for p in layer.module.parameters(recurse=False)}
    for pname, p in model.named_parameters():
        if id(p) not in owned:
            raise ModelError(
                f"parameter {pname!r} belongs to no Linear layer: steptrace records the "
                "parameters of the series' layers only"
            )
    return layers


def _linear_params(layers: Sequence[_Layer]) -> list[torch.Tensor]:
    """The parameters in steptrace's order: by layer, weights (row by row), then biases."""
    out: list[torch.Tensor] = []
    for layer in layers:
        if isinstance(layer.module, nn.Linear):
            out.append(layer.module.weight)
            if layer.module.bias is not None:
                out.append(layer.module.bias)
    return out


def _check_optimizer(
    model: nn.Module, optimizer: torch.optim.Optimizer, layers: Sequence[_Layer]
) -> None:
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for layer in layers:
        for pname, p in layer.module.named_parameters(recurse=False):
            where = f"layer {layer.k} ({layer.name or type(model).__name__}.{pname})"
            if not p.requires_grad:
                raise ModelError(f"{where} does not require grad: steptrace records training "
                                 "of every parameter")  # fmt: skip
            if id(p) not in held:
                raise ModelError(f"{where} is not in the optimizer: it would not learn")


def _numerics(layers: Sequence[_Layer]) -> str:
    dtypes = {p.dtype for p in _linear_params(layers)}
    names = {torch.float64: "float64", torch.float32: "float32"}
    if len(dtypes) != 1 or next(iter(dtypes)) not in names:
        shown = ", ".join(sorted(str(d) for d in dtypes))
        raise ModelError(
            f"the model's parameters are {shown}: steptrace records float64 or float32 models "
            "(model.double() or model.float())"
        )
    return names[next(iter(dtypes))]


def _exact(v: float) -> str:
    """The exact value of a float as a rational text (``0.5`` → ``1/2``)."""
    return str(Fraction(v))


def _model_json(
    model: nn.Module, layers: Sequence[_Layer], num: Numerics
) -> tuple[dict[str, Any], int]:
    """The network as a model file writes it, with its current parameters exactly, and the
    width of its input."""
    first = next(layer.module for layer in layers if isinstance(layer.module, nn.Linear))
    assert isinstance(first, nn.Linear)
    n_in = int(first.in_features)
    specs: list[dict[str, Any]] = [{"type": "input"}]
    width = n_in
    for layer in layers:
        m = layer.module
        if isinstance(m, nn.Linear):
            if m.in_features != width:
                raise ModelError(
                    f"layer {layer.k} ({layer.name}) reads {m.in_features} inputs but the layer "
                    f"below gives {width}"
                )
            w = m.weight.detach().cpu().double().tolist()
            spec: dict[str, Any] = {"type": "linear", "out": int(m.out_features),
                                    "bias": m.bias is not None,
                                    "weights": [[_exact(v) for v in row] for row in w]}  # fmt: skip
            if m.bias is not None:
                spec["biases"] = [_exact(v) for v in m.bias.detach().cpu().double().tolist()]
            specs.append(spec)
            width = int(m.out_features)
        elif isinstance(m, nn.LeakyReLU):
            slope = float(m.negative_slope)
            # As typed (0.01) when the run computes with the same slope; else exactly.
            text = repr(slope)
            if num.make(Fraction(text)) != num.make(Fraction(slope)):
                text = _exact(slope)
            specs.append({"type": "leaky_relu", "slope": text})
        else:
            specs.append({"type": layer.type})
    return {"name": type(model).__name__, "layers": specs, "loss": "squared_error"}, n_in


def _recorded_with(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    groups = optimizer.param_groups
    settings = {k: _json(v) for k, v in groups[0].items() if k != "params"}
    plain = type(optimizer) is torch.optim.SGD and all(
        not g.get("momentum") and not g.get("weight_decay") and not g.get("maximize")
        and g["lr"] == groups[0]["lr"]
        for g in groups
    )  # fmt: skip
    out: dict[str, Any] = {
        "framework": "pytorch",
        "version": str(torch.__version__),
        "optimizer": {"type": type(optimizer).__name__, **settings},
        # sgd: w_after = w_before − lr · Σ grad, which verify checks; optimizer: the
        # optimizer's own update (momentum, Adam …), recorded as it left the parameters.
        "update": "sgd" if plain else "optimizer",
    }
    if len(groups) > 1:
        out["optimizer"]["param_groups"] = len(groups)
    return out


def _json(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else repr(v)
    if isinstance(v, tuple | list):
        return [_json(x) for x in v]
    return repr(v)


# --- the data -------------------------------------------------------------------------------


def _dataset(
    source: Any,
    features: int | Sequence[str] | None,
    targets: int | Sequence[str] | None,
    name: str | None,
) -> tuple[Any, int | None, bool]:
    """The data the loop draws from, as ``open_run`` takes it; the loader's batch size and
    whether it shuffles (or drops its last batch: neither follows a plan steptrace knows)."""
    if source is None:
        return None, None, False
    from ..data import Dataset

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
    return (x, y), batch, shuffled


# --- the recorder ---------------------------------------------------------------------------


@dataclass
class _Forward:
    """What the hooks saw of the last forward pass and its backward pass."""

    next_k: int = 0  # the layer expected next (0: a new pass starts)
    x: torch.Tensor | None = None
    outs: dict[int, torch.Tensor] = field(default_factory=dict)


class Recorder:
    """A PyTorch loop being recorded; made by :func:`record`. ``rec.step(x, y, per_sample)``
    once per step; ``rec.path`` is the run folder (``load_tensor(rec, "d3")`` reads it).

    Each step's values are copied at once into two preallocated buffers (the data and what
    the layers computed; the parameters after the step), so that no object per step outlives
    it: thousands of small tensors held until a chunk is written would wake Python's garbage
    collector over PyTorch's hundreds of thousands of objects, again and again.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        layers: Sequence[_Layer],
        stack: Stack,
        run: RunWriter,
    ) -> None:
        self.run = run
        self.path = run.path
        self.model = model
        self.optimizer = optimizer
        self.layers = list(layers)
        self.top = layers[-1].k  # the last layer's number, K
        self.numbers = list(range(2, self.top + 1))  # the leaf modules' layer numbers
        self.stack = stack
        self.n_out = int(stack.n_out)
        self.params = _linear_params(layers)
        # Flat views of the parameters: they follow the optimizer's in-place updates.
        self.flat = [p.detach().view(-1) for p in self.params]
        self.dtype = np.float32 if run.numerics.name == "float32" else np.float64
        self.rtol = CONVENTION_RTOL[run.numerics.name]
        # A row's values, in the buffer's order: x, y, loss, o2 … oK, then ∂Loss/∂o2 … ∂oK.
        sizes = stack.sizes
        self.fields = [("x", stack.n_in), ("y", self.n_out), ("loss", 1)]
        self.fields += [(f"o{k}", sizes[k - 1]) for k in self.numbers]
        self.fields += [(f"d{k + 1}", sizes[k - 1]) for k in self.numbers]
        self.width = sum(w for _, w in self.fields)
        self._buffers(CHUNK_ROWS)
        # The parameters after each step of the chunk; row 0: before its first step.
        first = self.params[0]
        self.after = torch.empty(CHUNK_STEPS + 1, sum(p.numel() for p in self.params),
                                 dtype=first.dtype, device=first.device)  # fmt: skip
        self.after_views = list(self.after)
        self.rows = 0  # rows of the chunk in the buffers
        self.m: list[int] = []  # rows of each step of the chunk
        self.lrs: list[float] = []
        self.befores: dict[int, torch.Tensor] = {}  # steps that did not start where one ended
        self.pending_m = 0  # rows of a step between rec.step and optimizer.step
        self.started = False
        self.after_versions: list[int] = []
        self.seen = _Forward()
        self.last_handoff = time.monotonic()
        self.handles: list[Any] = []
        self.closed = False
        self._hook()

    # -- hooks ----------------------------------------------------------------------------------

    def _hook(self) -> None:
        for layer in self.layers:
            self.handles.append(layer.module.register_forward_hook(self._forward_hook(layer)))
        self.handles.append(self.optimizer.register_step_pre_hook(self._before_step))
        self.handles.append(self.optimizer.register_step_post_hook(self._after_step))

    def _forward_hook(self, layer: _Layer) -> Any:
        k, first = layer.k, layer.k == 2

        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            seen = self.seen
            if first:
                seen.x, seen.outs = args[0], {}
            elif seen.next_k != k or args[0] is not seen.outs.get(k - 1):
                raise ModelError(
                    f"layer {k} ({layer.name}) did not take the output of layer {k - 1}: "
                    "steptrace records models whose forward chains their layers in order, "
                    "each once (like nn.Sequential)"
                )
            seen.outs[k] = output
            seen.next_k = k + 1
            if output.requires_grad:
                # ∂Loss/∂o_k lands in output.grad during backward (a hook kept in C++: far
                # cheaper than a Python tensor hook per layer and step).
                output.retain_grad()

        return hook

    def step(self, x: torch.Tensor, y: torch.Tensor, per_sample: torch.Tensor) -> None:
        """Record this step: call it after ``backward()``, before ``optimizer.step()``.
        ``x`` and ``y`` are the step's data (one row per data input), ``per_sample`` each
        row's loss ½ Σ (o − y)² (its mean is the loss the step learns from)."""
        # Run every step: few torch operations (each costs a microsecond or two); the chunk
        # is turned into rows and checked in bulk (_write_chunk).
        seen = self.seen
        if self.pending_m or self.closed or seen.next_k != self.top + 1:
            self._misuse()
        outs = [seen.outs[k] for k in self.numbers]
        grads = cast(list[torch.Tensor], [o.grad for o in outs])
        if any(g is None for g in grads):
            if not outs[-1].requires_grad:
                raise ConfigError(
                    "rec.step(...) after a forward pass without gradients (torch.no_grad, a "
                    "validation pass?): call it right after the backward() of the step's own "
                    "forward pass"
                )
            raise ConfigError(
                "rec.step(...) before backward(): call it after per_sample.mean().backward()"
            )
        if x is not seen.x and (seen.x is None or not torch.equal(x, seen.x)):
            raise ConfigError("rec.step(x, ...): x is not the input of the last forward pass")
        m = x.shape[0]
        if y.shape != (m, self.n_out):
            if y.numel() != m * self.n_out:
                raise ConfigError(
                    f"rec.step: y has shape {tuple(y.shape)}, expected ({m}, {self.n_out})"
                )
            y = y.reshape(m, self.n_out)
        if per_sample.shape != (m,):
            if per_sample.numel() != m:
                raise ConfigError(
                    f"rec.step: per_sample holds {per_sample.numel()} losses, expected {m} (one "
                    "per data input: ((out - y) ** 2).sum(dim=1) / 2)"
                )
            per_sample = per_sample.reshape(m)
        if self.rows + m > self.capacity:
            self._write_chunk()
            if m > self.capacity:  # a batch larger than the buffer
                self._buffers(m)
        # One row per data input: x, y, loss, o2 … oK, ∂Loss/∂o2 … ∂Loss/∂oK. Detached: the
        # copy is no part of the graph.
        if x.requires_grad or y.requires_grad:
            x, y = x.detach(), y.detach()
        torch.cat([x, y, per_sample.detach().unsqueeze(1), *[o.detach() for o in outs], *grads],
                  dim=1, out=self._rows_view(self.rows, m))  # fmt: skip
        self.pending_m = m
        seen.next_k = 0  # this forward pass is taken

    def _buffers(self, rows: int) -> None:
        """The buffer of the chunk's values, ``rows`` rows (a bigger one for a bigger batch)."""
        self.capacity = rows
        self.data = torch.empty(rows, self.width, dtype=self.params[0].dtype,
                                device=self.params[0].device)  # fmt: skip
        # Views made once: slicing a tensor anew each step costs more than the copy.
        self.views: dict[tuple[int, int], torch.Tensor] = {}

    def _rows_view(self, start: int, m: int) -> torch.Tensor:
        view = self.views.get((start, m))
        if view is None:
            if len(self.views) > 4 * CHUNK_ROWS:
                self.views.clear()
            view = self.views[start, m] = self.data[start : start + m]
        return view

    def _misuse(self) -> None:
        if self.closed:
            raise ConfigError("rec.step(...) after the recording ended")
        if self.pending_m:
            raise ConfigError(
                f"rec.step(...) twice without optimizer.step() in between (step "
                f"{self._step_number()})"
            )
        raise ConfigError("rec.step(...) before a forward pass through the model")

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self.pending_m:
            raise ConfigError(
                f"optimizer.step() without rec.step(x, y, per_sample) before it (step "
                f"{self._step_number()}): call rec.step after backward(), before "
                "optimizer.step(), every step"
            )
        # Nothing changed the parameters in place since the last step ended (their version
        # counters say): they are what it left, in self.after. Else (the first step, a clamp,
        # a manual change) read them.
        if not self.started:
            torch.cat(self.flat, out=self.after_views[0])
            self.started = True
        elif self._versions() != self.after_versions:
            self.befores[len(self.m)] = torch.cat(self.flat)

    def _versions(self) -> list[int]:
        return [p._version for p in self.params]

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        s = len(self.m)
        torch.cat(self.flat, out=self.after_views[s + 1])
        self.after_versions = self._versions()
        self.m.append(self.pending_m)
        self.lrs.append(float(self.optimizer.param_groups[0]["lr"]))
        self.rows += self.pending_m
        self.pending_m = 0
        if (
            (s == 0 and self.run.steps == 0)  # the first step: check it at once
            or s + 1 >= CHUNK_STEPS
            or time.monotonic() - self.last_handoff >= HANDOFF_SECONDS
        ):  # fmt: skip
            self._write_chunk()

    def _step_number(self) -> int:
        return self.run.steps + len(self.m)

    # -- rows -----------------------------------------------------------------------------------

    def _write_chunk(self) -> None:
        """The chunk's steps as rows, every tensor of the trace, to the run."""
        self.last_handoff = time.monotonic()
        steps = len(self.m)
        if not steps:
            return
        m = np.array(self.m, dtype=np.int64)
        rows = self.rows
        raw = self.data[:rows].detach().cpu().numpy().astype(self.dtype)
        params = self.after[: steps + 1].detach().cpu().numpy().astype(self.dtype)
        before_steps = params[:-1].copy()
        for s, tensor in self.befores.items():
            before_steps[s] = tensor.detach().cpu().numpy()
        lrs = list(self.lrs)
        # The next chunk starts from the parameters this one ended with.
        self.after[0] = self.after[steps]
        self.m, self.lrs, self.befores, self.rows = [], [], {}, 0
        fields = self._fields(raw, m)
        x, y, loss = fields["x"], fields["y"], fields["loss"].reshape(-1)
        o = {1: x, **{k: fields[f"o{k}"] for k in self.numbers}}
        d = {k + 1: fields[f"d{k + 1}"] for k in self.numbers}
        before = np.repeat(before_steps, m, axis=0)
        after = np.repeat(params[1:], m, axis=0)
        self._check_conventions(o[self.top], y, loss, d[self.top + 1], m)
        # δ2 (and δ1): PyTorch computes no gradient for the data; layer 2's backward rule
        # gives it from δ3, the input layer's passes it on.
        p_cols = self.stack.unflat(list(before.T))
        with np.errstate(all="ignore"):
            d2, _ = self.stack.layer(2).backward(list(x.T), list(o[2].T), list(d[3].T),
                                                 p_cols.get(2))  # fmt: skip
        d[2] = d[1] = np.column_stack(d2).astype(self.dtype)
        values: dict[str, Array] = {"x": x, "y": y, "loss": loss.reshape(-1, 1)}
        values.update({f"o{k}": v for k, v in o.items()})
        values.update({f"d{k}": v for k, v in d.items()})
        values.update(self._parameters(before, after, o, d))
        self.run.write_rows(values, m.tolist(), lr=lrs)

    def _fields(self, raw: Array, m: Array) -> dict[str, Array]:
        """The buffer's values by field (columns of its rows)."""
        out, offset = {}, 0
        for name, w in self.fields:
            out[name] = raw[:, offset : offset + w]
            offset += w
        return out

    def _parameters(
        self, before: Array, after: Array, o: dict[int, Array], d: dict[int, Array]
    ) -> dict[str, Array]:
        """Each linear layer's parameters before and after, and each row's gradients by the
        layer's formulas: ∂W = δ_out ⊗ x, ∂b = δ_out."""
        out: dict[str, Array] = {}
        pos = 0
        for layer in self.layers:
            mod = layer.module
            if not isinstance(mod, nn.Linear):
                continue
            k, n = layer.k, mod.out_features * mod.in_features
            with np.errstate(all="ignore"):
                grad = d[k + 1][:, :, None] * o[k - 1][:, None, :]  # δ_out,j x_i
            out[f"grad_w{k}"] = grad.reshape(len(grad), n)
            out[f"w{k}_before"] = before[:, pos : pos + n]
            out[f"w{k}_after"] = after[:, pos : pos + n]
            pos += n
            if mod.bias is not None:
                b = mod.out_features
                out[f"grad_b{k}"] = d[k + 1]  # δ_out,j
                out[f"b{k}_before"] = before[:, pos : pos + b]
                out[f"b{k}_after"] = after[:, pos : pos + b]
                pos += b
        return out

    def _check_conventions(self, o: Array, y: Array, loss: Array, d_top: Array, m: Array) -> None:
        """The loop's loss is steptrace's: ½ Σ (o − y)² per row, δ at the loss (o − y)/m."""
        rows_m = np.repeat(m, m).astype(self.dtype).reshape(-1, 1)
        with np.errstate(all="ignore"):
            want_loss = ((o - y) ** 2).sum(axis=1) / 2
            want_d = (o - y) / rows_m
        finite = np.isfinite(want_loss) & np.isfinite(loss)
        scale = float(np.abs(want_loss[finite]).max()) if finite.any() else 0.0
        if not np.allclose(loss[finite], want_loss[finite], rtol=self.rtol, atol=self.rtol * scale):
            raise ConfigError(
                "per_sample is not each row's squared error: steptrace records the loss "
                "½ Σ (o − y)², per_sample = ((out - y) ** 2).sum(dim=1) / 2"
            )
        ok = np.isfinite(want_d) & np.isfinite(d_top)
        scale = float(np.abs(want_d[ok]).max()) if ok.any() else 0.0
        if not np.allclose(d_top[ok], want_d[ok], rtol=self.rtol, atol=self.rtol * scale):
            nonzero = ok & (want_d != 0)
            ratio = float(np.median(d_top[nonzero] / want_d[nonzero])) if nonzero.any() else 0.0
            raise ConfigError(
                f"the gradient at the model's output is {ratio:.4g} × (o − y)/m: steptrace "
                "records the mean of the rows' losses, per_sample.mean().backward() (not "
                ".sum(), not nn.MSELoss, which averages over outputs too and drops the ½)"
            )

    # -- the end --------------------------------------------------------------------------------

    def close(self, error: BaseException | None = None) -> None:
        """Write the last steps, remove the hooks, close the run (incomplete with the reason
        when ``error`` stopped the loop)."""
        if self.closed:
            return
        self.closed = True
        try:
            problem: BaseException | None = error
            try:
                self._write_chunk()
            except SteptraceError as exc:
                problem = problem or exc
            if problem is None and self.pending_m:
                problem = ConfigError(
                    f"rec.step(...) of step {self._step_number()} was not followed by "
                    "optimizer.step()"
                )
            if problem is None:
                self.run.close("complete")
            else:
                self.run.close("incomplete", stop_reason(problem, self.run.steps))
                if error is None:
                    raise problem
        finally:
            self.remove_hooks()
            self.seen = _Forward()  # the last forward pass's tensors (and graph) let go

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    @property
    def status(self) -> str:
        return self.run.status

    @property
    def summary(self) -> Any:
        return self.run.summary

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(exc)

    def __repr__(self) -> str:
        return f"Recorder({str(self.path)!r}, {self.run.steps} steps, {self.run.status})"


def _numpy(tensors: Sequence[torch.Tensor], dtype: Any, stack: bool = False) -> Array:
    """Tensors of the chunk's steps as one numpy array: rows one after the other (or, with
    ``stack``, one row per tensor)."""
    joined = torch.stack(list(tensors)) if stack else torch.cat(list(tensors))
    out: Array = joined.detach().cpu().numpy().astype(dtype, copy=False)
    return out.reshape(len(out), -1)
