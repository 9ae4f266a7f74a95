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
digit). A linear or conv2d layer without ``weights`` starts from weights drawn from the run's
seed (see :func:`random_weights`) and biases at 0; the drawn values are stored exactly in the
run's metadata, so the run can be verified, resumed and recorded again.

The images chapters' layers (:mod:`.images`) take an input layer with a ``"shape": [C, H, W]``:
the data's features, row-major, become C channels of H × W values. Every layer's settings are
checked against the shape of what it receives, so a model that cannot run says which layer and
which field in one line, before anything is recorded.
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
from .images import Conv2d, MaxPool2d, Normalization
from .kinds import LAYERS, LOSSES
from .layers import Input, Layer, LeakyRelu, Linear, Params, Shape
from .stack import ParamSet, Stack

__all__ = ["ARTICLE_INIT", "Model", "article_model", "load_model", "random_weights"]

#: The article's initial weights w² = (1/200, −3000/11 600 000, 1/5800). The article's first
#: formula prints the middle weight without its minus sign; its tables (o2 = 0 for the first
#: and third patients) need it.
ARTICLE_INIT: tuple[str, ...] = ("1/200", "-3000/11600000", "1/5800")
#: Default slope of a leaky ReLU, as the series uses it.
DEFAULT_SLOPE = "1/100"
#: Default ε of a normalization layer (inside the square root).
DEFAULT_EPS = "1/100000"
#: Weights a linear layer may have: a trace stores one column per recorded value (its weights
#: after each step and each row's gradients), and Parquet files of more columns are unusable.
MAX_WEIGHTS = 100_000
#: Fields each layer type may have (besides ``type``).
FIELDS: dict[str, tuple[str, ...]] = {
    "input": ("shape",),
    "linear": ("out", "bias", "weights", "biases"),
    "leaky_relu": ("slope",),
    "conv2d": ("out", "kernel", "bias", "weights", "biases"),
    "maxpool2d": ("size",),
    "normalization": ("eps", "gamma", "beta"),
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
        """The stack in a number system (a leaky ReLU's slope, a normalization's ε rounded
        into it)."""
        return Stack(tuple(_layer(spec, numerics) for spec in self.layers),
                     LOSSES[self.loss](), self.n_in)  # fmt: skip

    def params(self, numerics: Numerics) -> ParamSet:
        """The initial parameters rounded into a number system."""

        def made(a: Any) -> Any:
            return numerics.array([numerics.make(q) for q in a.reshape(-1)]).reshape(a.shape)

        return {
            k: Params(made(p.w), None if p.b is None else made(p.b)) for k, p in self.init.items()
        }

    def exact_values(self) -> list[Fraction]:
        return [q for k in sorted(self.init) for q in self.init[k].flat()]

    def named_values(self, k: int) -> list[tuple[str, Fraction]]:
        """Layer k's initial parameters, each with the field that gives it in a model file
        (``weights[2][1]``, ``biases[1]``; ``gamma[1]`` … for a normalization)."""
        p = self.init[k]
        w_name, b_name = (("gamma", "beta") if self.layers[k - 1]["type"] == "normalization"
                          else ("weights", "biases"))  # fmt: skip
        out = [(w_name + "".join(f"[{i + 1}]" for i in idx), q) for idx, q in np.ndenumerate(p.w)]
        if p.b is not None:
            out += [(f"{b_name}[{j + 1}]", q) for (j,), q in np.ndenumerate(p.b)]
        return out

    def to_json(self) -> dict[str, Any]:
        """The model as a model file writes it, initial parameters as exact texts."""
        layers = []
        for k, spec in enumerate(self.layers, 1):
            entry = dict(spec)
            if k in self.init:
                p = self.init[k]
                texts = np.vectorize(str, otypes=[object])
                if spec["type"] == "normalization":
                    entry["gamma"], entry["beta"] = texts(p.w).tolist(), texts(p.b).tolist()
                else:
                    entry["weights"] = texts(p.w).tolist()
                    if p.b is not None:
                        entry["biases"] = texts(p.b).tolist()
            layers.append(entry)
        return {"name": self.name, "layers": layers, "loss": self.loss}

    def describe(self) -> str:
        """``input(3) → linear(2, bias) → relu → linear(1) → squared_error``; an image's
        layers with their shapes: ``input(2×6×6) → conv2d(3, 3×3, bias) → …``"""
        parts: list[str] = []
        shape: Shape = (self.n_in,)
        for spec in self.layers:
            kind = spec["type"]
            if kind == "input":
                shape = tuple(spec.get("shape") or shape)
                parts.append(f"input({_times(shape)})")
            elif kind in ("linear", "conv2d"):
                k = f", {spec['kernel']}×{spec['kernel']}" if kind == "conv2d" else ""
                parts.append(f"{kind}({spec['out']}{k}{', bias' if spec['bias'] else ''})")
            elif kind == "leaky_relu":
                parts.append(f"leaky_relu({spec['slope']})")
            elif kind == "maxpool2d":
                parts.append(f"maxpool2d({spec['size']})")
            elif kind == "flatten":
                parts.append(f"flatten({_times(_layer(spec, _EXACT).out_shape(shape))})")
            else:
                parts.append(kind)
            shape = _layer(spec, _EXACT).out_shape(shape)
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
    return Model("article", layers, "squared_error", n_in, {2: Params(_objects([weights]))})


_EXACT = Numerics("exact", None)


def _times(shape: Sequence[int]) -> str:
    return "×".join(str(n) for n in shape)


def _objects(nested: Any) -> Any:
    """Exact values as a numpy array of ``Fraction`` objects, in their nested shape."""
    return np.array(nested, dtype=object)


def _layer(spec: Mapping[str, Any], numerics: Numerics) -> Layer:
    """A layer of a model file's checked settings, in a number system."""
    kind = spec["type"]
    if kind == "input":
        return Input(tuple(spec["shape"]) if spec.get("shape") else None)
    if kind == "linear":
        return Linear(int(spec["out"]), bool(spec["bias"]))
    if kind == "conv2d":
        return Conv2d(int(spec["out"]), int(spec["kernel"]), bool(spec["bias"]))
    if kind == "maxpool2d":
        return MaxPool2d(int(spec["size"]))
    if kind == "leaky_relu":
        return LeakyRelu(numerics.make(parse_exact(spec["slope"])), spec["slope"])
    if kind == "normalization":
        return Normalization(numerics.make(parse_exact(spec["eps"])), spec["eps"])
    return LAYERS[kind]()


def random_weights(
    n_out: int, n_in: int, rng: np.random.Generator, shape: Shape | None = None
) -> Any:
    """Weights drawn uniformly from [−1/√n_in, 1/√n_in] (PyTorch's default range for linear
    and convolution layers, n_in the inputs each output reads: in·k·k for a kernel), on a grid
    of 1/10 000 so that they are short exact fractions; in ``shape`` (default n_out × n_in),
    as an array of ``Fraction``."""
    bound = int(RANDOM_GRID / math.sqrt(n_in))
    drawn = rng.integers(-bound, bound, size=shape or (n_out, n_in), endpoint=True)
    return np.vectorize(lambda v: Fraction(int(v), RANDOM_GRID), otypes=[object])(drawn)


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
    reader = _Reader(where, n_in, seed)
    for k, layer in enumerate(layers, 1):
        reader.read(k, layer)
    name = str(data.get("name", "model"))
    return Model(name, tuple(reader.specs), str(loss), n_in, reader.init, drawn=reader.drawn)


class _Reader:
    """Reads a model file's layers in order, keeping the shape of what each one receives."""

    def __init__(self, where: str, n_in: int, seed: int | None) -> None:
        self.where, self.n_in, self.seed = where, n_in, seed
        self.shape: Shape = (n_in,)
        self.specs: list[dict[str, Any]] = []
        self.init: dict[int, Params] = {}
        self.rng: np.random.Generator | None = None

    @property
    def drawn(self) -> bool:
        return self.rng is not None

    def random(self) -> np.random.Generator:
        if self.rng is None:
            self.rng = np.random.default_rng(self.seed if self.seed is not None else 0)
        return self.rng

    def read(self, k: int, layer: Any) -> None:
        if not isinstance(layer, dict) or "type" not in layer:
            raise ModelError(f'{self.where}: layer {k} must be an object with a "type"')
        kind = layer["type"]
        if kind not in LAYERS:
            raise ModelError(f"{self.where}: layer {k}: unknown type {kind!r}; choose one of: "
                             f"{', '.join(LAYERS)}")  # fmt: skip
        at = f"{self.where}: layer {k} ({kind})"
        extra = sorted(set(layer) - {"type", *FIELDS.get(kind, ())})
        if extra:
            allowed = ", ".join(("type", *FIELDS.get(kind, ())))
            raise ModelError(f"{at}: unknown field {extra[0]!r} (fields: {allowed})")
        if (k == 1) != (kind == "input"):
            raise ModelError(
                f"{at}: the input layer comes first and only first (the series numbers it L1)"
            )
        spec: dict[str, Any] = {"type": kind}
        if kind == "input" and "shape" in layer:
            spec["shape"] = self.image_shape(layer["shape"], at)
        if kind == "leaky_relu":
            spec["slope"] = str(layer.get("slope", DEFAULT_SLOPE))
            _number(spec["slope"], f"{at}: slope")
        if kind == "normalization":
            spec["eps"] = str(layer.get("eps", DEFAULT_EPS))
            if _number(spec["eps"], f"{at}: eps") <= 0:
                raise ModelError(f'{at}: "eps" must be greater than 0, got {spec["eps"]}')
        if kind in ("linear", "conv2d"):
            what = "neurons" if kind == "linear" else "output channels"
            spec["out"] = _whole(layer.get("out"), f'{at}: "out"', f"a whole number of {what} ≥ 1")
            spec["bias"] = layer.get("bias", True)
            if not isinstance(spec["bias"], bool):
                raise ModelError(f'{at}: "bias" must be true or false, got {spec["bias"]!r}')
        if kind == "conv2d":
            spec["kernel"] = self.odd(layer, at)
        if kind == "maxpool2d":
            spec["size"] = _whole(layer.get("size", 2), f'{at}: "size"', "a whole number ≥ 1")
        built = _layer({**spec, "shape": spec.get("shape")}, _EXACT)
        error = built.shape_error(self.shape) if kind != "input" else None
        if error:
            raise ModelError(f"{at}: {error}")
        if built.has_params:
            self.init[k] = self.params(k, kind, layer, built, at)
        self.specs.append(spec)
        self.shape = spec["shape"] if kind == "input" and "shape" in spec else (
            built.out_shape(self.shape))  # fmt: skip

    def image_shape(self, raw: Any, at: str) -> tuple[int, int, int]:
        if (
            not isinstance(raw, list)
            or len(raw) != 3
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in raw)
        ):
            raise ModelError(f'{at}: "shape" must be [channels, rows, columns] of whole '
                             f"numbers ≥ 1, got {raw!r}")  # fmt: skip
        c, h, w = raw
        if c * h * w != self.n_in:
            raise ModelError(f'{at}: "shape" {c}×{h}×{w} holds {c * h * w} values but the data '
                             f"has {self.n_in} feature columns (one per value, row-major: "
                             "channel, row, column)")  # fmt: skip
        return c, h, w

    def odd(self, layer: dict[str, Any], at: str) -> int:
        kernel = layer.get("kernel", 3)
        if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
            raise ModelError(f'{at}: "kernel" must be an odd whole number (1, 3, 5 …: the output '
                             f"keeps the input's size), got {kernel!r}")  # fmt: skip
        return kernel

    def params(self, k: int, kind: str, layer: dict[str, Any], built: Layer, at: str) -> Params:
        w_shape, b_shape = built.param_shapes(self.shape)
        if kind == "normalization":
            n = w_shape[0]
            each = "one per channel" if len(self.shape) == 3 else "one per neuron"
            gamma = _vector(layer.get("gamma", ["1"] * n), n, f"{at}: gamma", each)
            beta = _vector(layer.get("beta", ["0"] * n), n, f"{at}: beta", each)
            return Params(_objects(gamma), _objects(beta))
        size = 1
        for n in w_shape:
            size *= n
        if size > MAX_WEIGHTS:
            shape = (f"{w_shape[0]:,} neurons × {w_shape[1]:,} inputs" if kind == "linear"
                     else " × ".join(f"{n:,}" for n in w_shape))  # fmt: skip
            raise ModelError(
                f"{at}: {shape} is {size:,} weights; a trace holds a column per value, so a "
                f"layer has at most {MAX_WEIGHTS:,}"
            )
        if "weights" in layer:
            weights = _nested(layer["weights"], w_shape, f"{at}: weights")
        else:
            reads = size // w_shape[0]  # the inputs each output reads
            weights = random_weights(w_shape[0], reads, self.random(), w_shape)
        biases = None
        if b_shape is not None:
            each = "one per output channel" if kind == "conv2d" else "one per neuron"
            biases = _objects(_vector(layer.get("biases", ["0"] * b_shape[0]), b_shape[0],
                                      f"{at}: biases", each))  # fmt: skip
        elif "biases" in layer:
            raise ModelError(f'{at}: "biases" given but "bias" is false')
        return Params(weights, biases)


def _whole(value: Any, what: str, wanted: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{what} must be {wanted}, got {value!r}")
    return value


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


def _nested(raw: Any, shape: Shape, what: str) -> Any:
    """Nested lists of exact numbers in ``shape`` (a linear layer's out × in, a convolution's
    out × in × k × k), as an array of ``Fraction``; anything else names where it is wrong."""
    if len(shape) == 2:
        return _objects(_matrix(raw, shape[0], shape[1], what))

    def read(value: Any, depth: int, at: str) -> Any:
        if depth == len(shape):
            return _number(value, f"{what}{at}")
        if not isinstance(value, list) or len(value) != shape[depth]:
            got = f"{len(value)} values" if isinstance(value, list) else repr(value)
            raise ModelError(
                f"{what}{at}: needs {shape[depth]} values, got {got}: the weights of a conv2d "
                f"layer are out × in × kernel × kernel ({' × '.join(map(str, shape))})"
            )
        return [read(v, depth + 1, f"{at}[{i}]") for i, v in enumerate(value, 1)]

    return _objects(read(raw, 0, ""))


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
