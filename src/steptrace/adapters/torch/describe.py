"""What a recorded PyTorch run says about itself: the network as a model file (its initial
parameters as exact rational texts of the floats PyTorch held), ``recorded_with`` (PyTorch, its
version, the optimizer and whether its update is plain SGD), and the loop's dataset as
:func:`steptrace.open_run` takes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import ConfigError, ModelError
from ...numerics import Numerics
from .layers import Layer


def exact(v: float) -> str:
    """The exact value of a float as a rational text (``0.5`` → ``1/2``)."""
    return str(Fraction(v))


# --- the network ----------------------------------------------------------------------------


def model_json(
    model: nn.Module, layers: Sequence[Layer], num: Numerics
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
            specs.append(_linear_json(m))
            width = int(m.out_features)
        elif isinstance(m, nn.LeakyReLU):
            slope = float(m.negative_slope)
            # As typed (0.01) when the run computes with the same slope; else exactly.
            text = repr(slope)
            if num.make(Fraction(text)) != num.make(Fraction(slope)):
                text = exact(slope)
            specs.append({"type": "leaky_relu", "slope": text})
        else:
            specs.append({"type": layer.type})
    return {"name": type(model).__name__, "layers": specs, "loss": "squared_error"}, n_in


def _linear_json(m: nn.Linear) -> dict[str, Any]:
    w = m.weight.detach().cpu().double().tolist()
    spec: dict[str, Any] = {"type": "linear", "out": int(m.out_features),
                            "bias": m.bias is not None,
                            "weights": [[exact(v) for v in row] for row in w]}  # fmt: skip
    if m.bias is not None:
        spec["biases"] = [exact(v) for v in m.bias.detach().cpu().double().tolist()]
    return spec


# --- the framework --------------------------------------------------------------------------


def recorded_with(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The run's ``recorded_with`` metadata: PyTorch, the optimizer and its settings, and
    which update the parameters followed."""
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


def loop_dataset(source: Any) -> tuple[Any, int | None, bool]:
    """The data the loop draws from, as ``open_run`` takes it; the loader's batch size and
    whether it shuffles (or drops its last batch: neither follows a plan steptrace knows)."""
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
    return (x, y), batch, shuffled
