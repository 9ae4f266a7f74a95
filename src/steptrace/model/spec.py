"""Models as users write them: a JSON model file, the article's model, or a random start.

A model file lists the layers in order (L1 first, the input layer) and the loss::

    {"layers": [
       {"type": "input"},
       {"type": "linear", "out": 2, "bias": true,
        "weights": [["1/200", "-3/11600", "1/5800"], ["-1/1000", "1/2000", "-1/4000"]],
        "biases": ["0", "1/10"]},
       {"type": "relu"},
       {"type": "linear", "out": 1, "bias": false, "weights": [["1/2", "-1/3"]]},
       {"type": "leaky_relu", "slope": "1/100"}],
     "loss": "squared_error"}

Numbers are read exactly, like ``--lr`` (``"1/200"``, ``"1e-3"``, or JSON numbers digit for
digit). A linear layer without ``weights`` starts from weights drawn from the run's seed (see
:func:`random_weights`) and biases at 0; the drawn values are stored exactly in the run's
metadata, so the run can be verified, resumed and recorded again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelError
from ..numerics import Numerics, parse_exact
from .layers import LAYERS, LOSSES, Layer, LeakyRelu, Linear, Params
from .stack import ParamSet, Stack

__all__ = ["ARTICLE_INIT", "Model", "article_model", "load_model", "random_weights"]

#: The article's initial weights w² = (1/200, −3000/11 600 000, 1/5800). The article's first
#: formula prints the middle weight without its minus sign; its tables (o2 = 0 for the first
#: and third patients) need it.
ARTICLE_INIT: tuple[str, ...] = ("1/200", "-3000/11600000", "1/5800")
#: Default slope of a leaky ReLU, as the series uses it.
DEFAULT_SLOPE = "1/100"
#: Weights a linear layer may have: a trace stores one column per recorded value (its weights
#: after each step and each row's gradients), and Parquet files of more columns are unusable.
MAX_WEIGHTS = 100_000
#: Fields each layer type may have (besides ``type``).
FIELDS: dict[str, tuple[str, ...]] = {
    "linear": ("out", "bias", "weights", "biases"),
    "leaky_relu": ("slope",),
}
#: Random weights are multiples of this, so that exact runs start from short fractions.
RANDOM_GRID = 10_000


@dataclass(frozen=True)
class Model:
    """A stack's structure and its initial parameters, every number an exact rational."""

    name: str
    layers: tuple[dict[str, Any], ...]  # each layer's settings: type, out, bias, slope
    loss: str
    n_in: int
    init: dict[int, Params]  # initial parameters by layer number, as Fractions
    #: Whether some weights were drawn from the seed (the model file left them out).
    drawn: bool = False

    @property
    def rational(self) -> bool:
        """Whether exact arithmetic can run every layer."""
        return all(LAYERS[spec["type"]].rational for spec in self.layers)

    def stack(self, numerics: Numerics) -> Stack:
        """The stack in a number system (a leaky ReLU's slope rounded into it)."""
        layers: list[Layer] = []
        for spec in self.layers:
            kind = spec["type"]
            if kind == "linear":
                layers.append(Linear(int(spec["out"]), bool(spec["bias"])))
            elif kind == "leaky_relu":
                slope = spec["slope"]
                layers.append(LeakyRelu(numerics.make(parse_exact(slope)), slope))
            else:
                layers.append(LAYERS[kind]())
        return Stack(tuple(layers), LOSSES[self.loss](), self.n_in)

    def params(self, numerics: Numerics) -> ParamSet:
        """The initial parameters rounded into a number system."""
        return {
            k: Params(
                [[numerics.make(q) for q in row] for row in p.w],
                None if p.b is None else [numerics.make(q) for q in p.b],
            )
            for k, p in self.init.items()
        }

    def exact_values(self) -> list[Fraction]:
        return [q for k in sorted(self.init) for q in self.init[k].flat()]

    def to_json(self) -> dict[str, Any]:
        """The model as a model file writes it, initial parameters as exact texts."""
        layers = []
        for k, spec in enumerate(self.layers, 1):
            entry = dict(spec)
            if k in self.init:
                p = self.init[k]
                entry["weights"] = [[str(q) for q in row] for row in p.w]
                if p.b is not None:
                    entry["biases"] = [str(q) for q in p.b]
            layers.append(entry)
        return {"name": self.name, "layers": layers, "loss": self.loss}

    def describe(self) -> str:
        """``input(3) → linear(2, bias) → relu → linear(1) → squared_error``"""
        parts, n = [], self.n_in
        for spec in self.layers:
            kind = spec["type"]
            if kind == "input":
                parts.append(f"input({n})")
            elif kind == "linear":
                n = int(spec["out"])
                parts.append(f"linear({n}{', bias' if spec['bias'] else ''})")
            elif kind == "leaky_relu":
                parts.append(f"leaky_relu({spec['slope']})")
            else:
                parts.append(kind)
        return " → ".join([*parts, self.loss])


def article_model(
    init: str | Sequence[str | float | Fraction] | None = None,
    n_in: int = 3,
    dataset: str = "the dataset",
) -> Model:
    """The article's model: input → linear(1 neuron, no bias) → relu, squared error, with the
    article's weights or ``init`` (one weight per feature of ``dataset``, named in errors)."""
    if init is None:
        if n_in != len(ARTICLE_INIT):
            raise ConfigError(
                f"{dataset} has {n_in} feature columns but the article's weights are "
                f"{len(ARTICLE_INIT)}; give --init with {n_in} comma-separated weights"
            )
        init = ARTICLE_INIT
    parts = init.split(",") if isinstance(init, str) else list(init)
    weights = [parse_exact(p, what=f"initial weight {k}") for k, p in enumerate(parts, 1)]
    if len(weights) != n_in:
        raise ConfigError(
            f"--init has {len(weights)} weights but {dataset} has {n_in} feature columns; "
            "give one weight per feature"
        )
    layers = ({"type": "input"}, {"type": "linear", "out": 1, "bias": False}, {"type": "relu"})
    return Model("article", layers, "squared_error", n_in, {2: Params([weights], None)})


def random_weights(n_out: int, n_in: int, rng: np.random.Generator) -> list[list[Fraction]]:
    """Weights drawn uniformly from [−1/√n_in, 1/√n_in] (PyTorch's default range for a linear
    layer), on a grid of 1/10 000 so that they are short exact fractions."""
    bound = int(RANDOM_GRID / math.sqrt(n_in))
    drawn = rng.integers(-bound, bound, size=(n_out, n_in), endpoint=True)
    return [[Fraction(int(v), RANDOM_GRID) for v in row] for row in drawn]


def load_model(
    source: str | Path | Mapping[str, Any] | Model, n_in: int, seed: int | None = None
) -> Model:
    """A model from a file path, a dict of the model file's shape, or ``"article"``.

    ``n_in`` is the dataset's feature count; ``seed`` draws the weights a file leaves out.
    Anything wrong raises :class:`ModelError` naming the layer and the field.
    """
    if isinstance(source, Model):
        return source
    if isinstance(source, Mapping):
        return _parse(dict(source), n_in, seed, "model")
    if str(source) == "article":
        return article_model(n_in=n_in)
    path = Path(source)
    if not path.exists():
        raise ModelError(f"model file {str(path)!r} does not exist (or use --model article)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path.name}: cannot be read ({exc})") from None
    try:
        data = json.loads(text, parse_float=str, parse_constant=str)
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"{path.name}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise ModelError(f"{path.name}: nested too deeply to be a model file") from None
    if not isinstance(data, dict):
        raise ModelError(
            f'{path.name}: a model file is a JSON object {{"layers": [...], "loss": ...}}'
        )
    data.setdefault("name", path.stem)
    return _parse(data, n_in, seed, path.name)


def _parse(data: dict[str, Any], n_in: int, seed: int | None, where: str) -> Model:
    unknown = sorted(set(data) - {"layers", "loss", "name"})
    if unknown:
        raise ModelError(f"{where}: unknown field {unknown[0]!r} (fields: layers, loss, name)")
    layers = data.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ModelError(f'{where}: "layers" must be a non-empty list of layers')
    loss = data.get("loss", "squared_error")
    if loss not in LOSSES:
        raise ModelError(f"{where}: unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    specs: list[dict[str, Any]] = []
    init: dict[int, Params] = {}
    rng: np.random.Generator | None = None
    width = n_in
    for k, layer in enumerate(layers, 1):
        if not isinstance(layer, dict) or "type" not in layer:
            raise ModelError(f'{where}: layer {k} must be an object with a "type"')
        kind = layer["type"]
        if kind not in LAYERS:
            raise ModelError(
                f"{where}: layer {k}: unknown type {kind!r}; choose one of: {', '.join(LAYERS)}"
            )
        at = f"{where}: layer {k} ({kind})"
        extra = sorted(set(layer) - {"type", *FIELDS.get(kind, ())})
        if extra:
            allowed = ", ".join(("type", *FIELDS.get(kind, ())))
            raise ModelError(f"{at}: unknown field {extra[0]!r} (fields: {allowed})")
        if (k == 1) != (kind == "input"):
            raise ModelError(
                f"{at}: the input layer comes first and only first (the series numbers it L1)"
            )
        spec: dict[str, Any] = {"type": kind}
        if kind == "leaky_relu":
            slope = str(layer.get("slope", DEFAULT_SLOPE))
            _number(slope, f"{at}: slope")
            spec["slope"] = slope
        if kind == "linear":
            out, bias = layer.get("out"), layer.get("bias", True)
            if isinstance(out, bool) or not isinstance(out, int) or out < 1:
                raise ModelError(f'{at}: "out" must be a whole number of neurons ≥ 1, got {out!r}')
            if not isinstance(bias, bool):
                raise ModelError(f'{at}: "bias" must be true or false, got {bias!r}')
            if out * width > MAX_WEIGHTS:
                raise ModelError(
                    f"{at}: {out:,} neurons × {width:,} inputs is {out * width:,} weights; a "
                    f"trace holds a column per value, so a layer has at most {MAX_WEIGHTS:,}"
                )
            spec.update(out=out, bias=bias)
            if "weights" in layer:
                weights = _matrix(layer["weights"], out, width, f"{at}: weights")
            else:
                if rng is None:
                    rng = np.random.default_rng(seed if seed is not None else 0)
                weights = random_weights(out, width, rng)
            biases = None
            if bias:
                raw = layer.get("biases", ["0"] * out)
                biases = _vector(raw, out, f"{at}: biases", "one per neuron")
            elif "biases" in layer:
                raise ModelError(f'{at}: "biases" given but "bias" is false')
            init[k] = Params(weights, biases)
            width = out
        specs.append(spec)
    name = str(data.get("name", "model"))
    return Model(name, tuple(specs), str(loss), n_in, init, drawn=rng is not None)


def _number(value: Any, what: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ModelError(f"{what}: {value!r} is not a number such as 0.5, 1e-7 or 1/200")
    try:
        return parse_exact(str(value), what=what)
    except ConfigError as exc:
        raise ModelError(str(exc)) from None


def _vector(raw: Any, n: int, what: str, each: str) -> list[Fraction]:
    if not isinstance(raw, list) or len(raw) != n:
        got = f"{len(raw)} values" if isinstance(raw, list) else repr(raw)
        raise ModelError(f"{what}: needs a list of {n} values ({each}), got {got}")
    return [_number(v, f"{what}[{i}]") for i, v in enumerate(raw, 1)]


def _matrix(raw: Any, rows: int, cols: int, what: str) -> list[list[Fraction]]:
    if not isinstance(raw, list) or len(raw) != rows:
        got = f"{len(raw)} rows" if isinstance(raw, list) else repr(raw)
        raise ModelError(f'{what}: needs {rows} rows (one per neuron, "out"), got {got}')
    out = []
    for j, row in enumerate(raw, 1):
        if not isinstance(row, list) or len(row) != cols:
            got = f"{len(row)} values" if isinstance(row, list) else repr(row)
            raise ModelError(
                f"{what}: row {j} needs {cols} values (one per input of the layer below), got {got}"
            )
        out.append([_number(v, f"{what}[{j}][{i}]") for i, v in enumerate(row, 1)])
    return out
