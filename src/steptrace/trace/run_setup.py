"""What :func:`steptrace.open_run` is given, checked and turned into a run's metadata: the
model, the learning rate, the data (its names, or the dataset itself from arrays) and the plan.

Everything the user can get wrong is refused here, before a run folder is made, with one line
saying what to give instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..model.spec import Model, load_model
from ..numerics import Numerics, get_numerics, parse_exact
from ..schedule import steps_per_epoch
from .placement import DataInfo
from .schema import Tensor, run_metadata_head

if TYPE_CHECKING:
    from ..data import Dataset

__all__ = ["GraphSpec", "ModelLike", "Plan", "Setup", "check_graph_setup", "check_setup",
           "plan_meta"]  # fmt: skip

#: A model as :func:`steptrace.load_model` takes it: a model file's path, its JSON as a dict, or
#: a :class:`~steptrace.Model`.
ModelLike = str | Path | Mapping[str, Any] | Model


@dataclass(frozen=True)
class Plan:
    """A plan given in advance: the dataset's rows visited ``epochs`` times in steps of
    ``batch_size``, in order or in steptrace's shuffled order of ``seed``."""

    epochs: int
    batch_size: int
    shuffle: bool
    seed: int | None


@dataclass(frozen=True)
class GraphSpec:
    """A run another framework computed on a network of its own (docs/trace-format.md, "Runs
    of any network"): the tensors it records, in file order, its network as ``model`` (a model
    file when the network is a stack of the series' layers) and ``graph`` (which tensor feeds
    which), both stored in the metadata as they are."""

    tensors: tuple[Tensor, ...]
    model: dict[str, Any]
    graph: dict[str, Any]


@dataclass(frozen=True)
class Setup:
    """A run as :func:`~steptrace.open_run` was asked for it, checked. ``plan`` is ``None``
    when the plan is learned from the data the loop feeds."""

    numerics: Numerics
    model: Model | GraphSpec
    lr_text: str
    lr: Fraction
    dataset: Dataset | None
    data_name: str
    features: list[str]
    targets: list[str]
    plan: Plan | None
    name: str  # the run's name when none is given

    def metadata(self, run_id: str, recorded_with: Mapping[str, Any] | None) -> dict[str, Any]:
        """The run's metadata before its plan is known."""
        # A loop's own values are stored as it gave them: steptrace does not vouch that its δ1
        # is its δ2, or that it left the parameters where the next step found them.
        if isinstance(self.model, GraphSpec):
            meta = graph_metadata_head(run_id, self.numerics, self.lr_text, self.lr, self.model)
        else:
            meta = run_metadata_head(
                run_id, self.numerics, self.lr_text, self.lr, self.model, len(self.targets),
                store_all=True,
            )  # fmt: skip
        if recorded_with is not None:
            meta["recorded_with"] = json.loads(json.dumps(dict(recorded_with)))
        return meta

    def data_info(self) -> DataInfo:
        """The data the run draws from (its values checked against the run's numbers)."""
        return DataInfo(self.data_name, self.features, self.targets, self.dataset, self.numerics)


def check_setup(
    *,
    model: ModelLike,
    lr: str | float | Fraction,
    numerics: str,
    dataset: Dataset | tuple[Any, Any] | None,
    epochs: int | None,
    batch_size: int | None,
    shuffle: bool,
    seed: int | None,
    features: int | Sequence[str] | None,
    targets: int | Sequence[str] | None,
    dataset_name: str | None,
) -> Setup:
    """:func:`~steptrace.open_run`'s arguments checked against each other; see its doc."""
    num = get_numerics(numerics)
    if num.is_exact:
        raise ConfigError(
            "open_run records float runs (float64 or float32); exact runs are recorded by "
            "steptrace.record, which computes every value itself"
        )
    data = _as_dataset(dataset, features, targets, dataset_name) if dataset is not None else None
    n_in = data.n_features if data is not None else _width(features, model)
    chosen = load_model(model, n_in) if not isinstance(model, Model) else model
    if chosen.n_in != n_in:
        raise ConfigError(f"the model reads {chosen.n_in} features but the data has {n_in}")
    if chosen.drawn:
        raise ConfigError(
            "the model file leaves some weights out; give every initial weight (a run stores "
            "the parameters it starts from)"
        )
    stack = chosen.stack(num)
    for k, params in sorted(chosen.init.items()):
        if not all(num.fits(q) for q in params.flat()):
            raise ConfigError(f"layer {k}: an initial parameter is too large for {num.name}")
    if data is not None:
        target_names = list(data.targets)
        feature_names = list(data.features)
    else:
        feature_names = _names(features, n_in, "x")
        target_names = _names(targets, stack.n_out, "y")
    if len(target_names) != stack.n_out:
        raise ConfigError(
            f"the model gives {stack.n_out} output(s) but the data has {len(target_names)} "
            "target(s); give one target per output neuron"
        )
    lr_text, lr_q = _lr(lr, num)
    declared = None
    if data is not None and epochs is not None and batch_size is not None:
        _check_plan(len(data), epochs, batch_size)
        if shuffle and seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        declared = Plan(epochs, batch_size, shuffle, seed)
    elif shuffle:
        raise ConfigError(
            "shuffle=True needs the plan: give dataset, epochs and batch_size, and follow "
            "run.plan()'s order"
        )
    return Setup(
        num, chosen, lr_text, lr_q, data,
        dataset_name or (data.name if data is not None else "loop"),
        feature_names, target_names, declared,
        f"{dataset_name or 'run'}-{num.name}-lr{lr_text}",
    )  # fmt: skip


def check_graph_setup(
    *,
    spec: GraphSpec,
    lr: str | float | Fraction,
    numerics: str,
    dataset: Dataset | tuple[Any, Any] | None,
    epochs: int | None,
    batch_size: int | None,
    features: int | Sequence[str] | None,
    targets: int | Sequence[str] | None,
    dataset_name: str | None,
) -> Setup:
    """What an adapter gives for a run of a network of its own, checked as
    :func:`check_setup` checks a stack's (``x`` and ``y`` of ``spec.tensors`` say how many
    features and targets each data input has)."""
    num = get_numerics(numerics)
    if num.is_exact:
        raise ConfigError("a framework's run is recorded in float64 or float32")
    shapes = {t.name: t.size for t in spec.tensors}
    n_in, n_out = shapes["x"], shapes["y"]
    data = _as_dataset(dataset, features, targets, dataset_name) if dataset is not None else None
    if data is not None and (data.n_features, len(data.targets)) != (n_in, n_out):
        raise ConfigError(
            f"the dataset has {data.n_features} feature(s) and {len(data.targets)} target(s) "
            f"per row, but the loop's data inputs have {n_in} and {n_out}"
        )
    feature_names = list(data.features) if data is not None else _names(features, n_in, "x")
    target_names = list(data.targets) if data is not None else _names(targets, n_out, "y")
    lr_text, lr_q = _lr(lr, num)
    declared = None
    if data is not None and epochs is not None and batch_size is not None:
        _check_plan(len(data), epochs, batch_size)
        declared = Plan(epochs, batch_size, False, None)
    return Setup(
        num, spec, lr_text, lr_q, data,
        dataset_name or (data.name if data is not None else "loop"),
        feature_names, target_names, declared, f"{dataset_name or 'run'}-{num.name}-lr{lr_text}",
    )  # fmt: skip


def graph_metadata_head(
    run_id: str, numerics: Numerics, lr_text: str, lr: Fraction, spec: GraphSpec
) -> dict[str, Any]:
    """The head of a graph run's metadata: :func:`~.schema.run_metadata_head`'s keys, the
    network's ``model`` and ``tensors`` as the adapter gives them, and its ``graph``."""
    head = run_metadata_head(run_id, numerics, lr_text, lr, _PLACEHOLDER, 1, store_all=True)
    head.update(model=spec.model, tensors=[t.as_json() for t in spec.tensors], graph=spec.graph)
    return head


#: The smallest model, whose metadata head a graph run's replaces (keys and order kept).
_PLACEHOLDER = Model("network", ({"type": "input"},), "squared_error", 1, {})


def plan_meta(
    info: DataInfo, rows: int, epochs: int, batch_size: int, shuffle: bool, seed: int | None,
    total_known: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """The metadata a run's plan fills in: its epochs and steps, and the data it visits.
    ``steps`` is left out when the loop declared no total (a learned plan, until it closes
    complete): no reader then states one."""
    spe = steps_per_epoch(rows, batch_size)
    data = info.dataset
    total = {"steps": spe * epochs} if total_known else {}
    return {
        "epochs": epochs,
        "batch_size": batch_size,
        "shuffle": shuffle,
        "seed": seed,
        "steps_per_epoch": spe,
        **total,
        "dataset": {
            "name": info.name,
            "sha256": data.sha256 if data is not None else "",
            "rows": rows,
            "features": list(info.features),
            "targets": list(info.targets),
            "source": data.source if data is not None else "recorded",
        },
    }


def _as_dataset(
    source: Any,
    features: int | Sequence[str] | None,
    targets: int | Sequence[str] | None,
    name: str | None,
) -> Dataset:
    """A steptrace :class:`Dataset` from a Dataset or ``(inputs, outputs)`` arrays."""
    from ..data import Dataset

    if isinstance(source, Dataset):
        return source
    if not isinstance(source, tuple) or len(source) != 2:
        raise ConfigError(
            "dataset must be a steptrace Dataset or a pair (inputs, outputs) of arrays, got "
            f"{type(source).__name__}"
        )
    x = np.asarray(source[0], dtype=np.float64)
    y = np.asarray(source[1], dtype=np.float64)
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or not len(x):
        raise ConfigError(
            f"dataset: inputs (rows × features) and outputs (rows × targets) with the same rows, "
            f"got shapes {x.shape} and {y.shape}"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ConfigError("dataset: every value must be finite (no NaN or infinity)")
    return Dataset(
        name or "data",
        tuple(_names(features, x.shape[1], "x")),
        tuple(_names(targets, y.shape[1], "y")),
        tuple(tuple(Fraction(float(v)) for v in row) for row in x),
        tuple(tuple(Fraction(float(v)) for v in row) for row in y),
        source="arrays",
    )


def _names(given: int | Sequence[str] | None, n: int, prefix: str) -> list[str]:
    if given is None or isinstance(given, int):
        count = n if given is None else given
        return [f"{prefix}{i}" for i in range(1, count + 1)]
    names = [str(g) for g in given]
    if len(names) != n:
        what = "features" if prefix == "x" else "targets"
        raise ConfigError(f"{len(names)} {what} named, but the data has {n}")
    return names


def _width(features: int | Sequence[str] | None, model: ModelLike) -> int:
    """Features of the data: as given, or the width the model's first weights read."""
    if isinstance(features, int):
        return features
    if features is not None:
        return len(features)
    if isinstance(model, Model):
        return model.n_in
    spec: Any = model
    if not isinstance(model, Mapping):
        try:
            spec = json.loads(Path(model).read_text(encoding="utf-8"), parse_float=str)
        except (OSError, ValueError):
            spec = None
    for layer in (spec or {}).get("layers", []) if isinstance(spec, Mapping) else []:
        if isinstance(layer, Mapping) and isinstance(layer.get("weights"), list):
            first = layer["weights"][0] if layer["weights"] else None
            if isinstance(first, list):
                return len(first)
    raise ConfigError("say how many features the data has (features=3 or their names)")


def _lr(lr: str | float | Fraction, num: Numerics) -> tuple[str, Fraction]:
    if isinstance(lr, float):
        text = re.sub(r"e([-+]?)0*(\d)", lambda m: f"e{m[1].strip('+')}{m[2]}", repr(lr))
        # The text as the user typed it, when it gives the run the same learning rate.
        if num.make(parse_exact(text)) != num.make(Fraction(lr)):
            text = str(Fraction(lr))
    else:
        text = str(lr).strip()
    q = parse_exact(text, what="learning rate")
    if q <= 0:
        raise ConfigError(f"learning rate must be greater than 0, got {text}")
    return text, q


def _check_plan(rows: int, epochs: int, batch_size: int) -> None:
    for what, value in (("epochs", epochs), ("batch size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{what} must be a whole number of at least 1, got {value!r}")
    if batch_size > rows:
        raise ConfigError(f"batch size {batch_size} is larger than the dataset ({rows} rows)")
