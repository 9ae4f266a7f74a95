"""The one definition of the trace format: tensors, columns, Arrow types, metadata, version.

A trace stores *tensors* (``x``, ``o2``, ``w2_before`` …), each flattened into one float64
column per component, named after the tensor and the component's 1-based index
(``w2_before_1_3`` is row 1, column 3 of layer 2's weights before the step). The run's
metadata lists its tensors and their shapes, so any reader can put them back together
(:func:`steptrace.load_tensor` does).

``docs/trace-format.md`` is the written specification; ``tests/test_schema.py`` checks that
it and this module agree field by field.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import pyarrow as pa

from .._version import __version__
from ..errors import NewerFormatError, TraceError
from ..model.layers import Input, Linear
from ..model.spec import Model, article_model
from ..model.stack import Stack
from ..numerics import NUMERICS, Numerics

__all__ = [
    "EXACT_SUFFIX",
    "FAMILIES",
    "FORMAT_VERSION",
    "KEY_FIELDS",
    "METADATA_KEY",
    "Family",
    "Tensor",
    "after_columns",
    "arrow_schema",
    "check_version",
    "column_names",
    "expand",
    "metadata_of",
    "numpy_name",
    "run_metadata_head",
    "split_column",
    "stack_tensors",
    "tensors_from_columns",
    "tensors_of",
    "upgrade_v1",
    "value_names",
]

#: Version of the trace format (not of the package). Readers accept this major version and the
#: ones before it, and refuse a newer one.
FORMAT_VERSION = "2.2"
#: The one Parquet key-value metadata key holding the run's metadata as JSON.
METADATA_KEY = "steptrace"
#: Suffix of the exact rational text column beside each value column (exact runs only).
EXACT_SUFFIX = "_exact"


@dataclass(frozen=True)
class Family:
    """A kind of column, as the spec's table lists it: ``o{k}_i`` stands for o1_1, o2_3 …"""

    pattern: str
    type: pa.DataType
    meaning: str
    required: str = "yes"


F64 = pa.float64()
_W, _B = "layers with weights", "layers with biases"
_ONCE = ", or marked same_as"  # see "Values stored once" in docs/trace-format.md
#: Columns that place a row (not recorded numbers), in file order.
KEY_FIELDS: tuple[Family, ...] = (
    Family("run_id", pa.string(), "identifier of the run, the same on every row"),
    Family("step", pa.int64(), "0-based index of the weight update"),
    Family("epoch", pa.int64(), "0-based epoch"),
    Family("sample", pa.int64(), "0-based row of the dataset"),
    Family("numerics", pa.string(), "number system: exact, float64 or float32"),
    Family("batch_size", pa.int64(), "the run's batch size n"),
)
#: Every family of columns, in file order (``<value>_exact`` twins follow in exact runs).
FAMILIES: tuple[Family, ...] = (
    *KEY_FIELDS,
    Family("lr", F64, "learning rate α"),
    Family("x_i", F64, "data input, feature i (an image: channel, row, column)"),
    Family("y_j", F64, "data output (expectation), target j"),
    Family("o{k}_i", F64, "output of layer k, neuron i (an image: channel, row, column)"),
    Family("loss", F64, "this row's loss"),
    Family("d{k}_i", F64, "δk = ∂Loss/∂(input of layer k), component i; k up to the loss",
           "yes" + _ONCE),
    Family("grad_w{k}_j_i", F64, "this row's gradient of layer k's weight W_{j,i}", _W),
    Family("w{k}_before_j_i", F64, "layer k's weight W_{j,i} before the step's update",
           _W + _ONCE),
    Family("w{k}_after_j_i", F64, "the same after ŵ = w − α · Σ grad", _W),
    Family("grad_b{k}_j", F64, "this row's gradient of layer k's bias b_j", _B + _ONCE),
    Family("b{k}_before_j", F64, "layer k's bias b_j before the step's update", _B + _ONCE),
    Family("b{k}_after_j", F64, "the same after b̂ = b − α · Σ grad", _B),
)  # fmt: skip


@functools.cache
def _column_names(name: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    """A tensor's column names, made once (a wide tensor has thousands, asked for each block
    of rows)."""
    if not shape:
        return (name,)
    ranges = [range(1, n + 1) for n in shape]
    return tuple(name + "".join(f"_{i}" for i in idx) for idx in itertools.product(*ranges))


@dataclass(frozen=True)
class Tensor:
    """One recorded quantity: its name, the shape of one row's value, whether it only
    repeats the data (x, y, and the outputs of the layers before the first with parameters),
    and whether it is stored or known from another tensor (``same_as``): the same row's values
    of that tensor or, with ``previous_step``, its values on the step before."""

    name: str
    shape: tuple[int, ...]
    data: bool = False
    same_as: str | None = None
    previous_step: bool = False

    @property
    def stored(self) -> bool:
        """Whether the trace's files hold this tensor's columns."""
        return self.same_as is None

    def columns(self) -> list[str]:
        """``x_1 … x_n``; ``w2_before_1_1 … w2_before_1_3``; ``loss`` for a scalar."""
        return list(_column_names(self.name, self.shape))

    @property
    def size(self) -> int:
        size = 1
        for n in self.shape:
            size *= n
        return size

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "shape": list(self.shape)}
        if self.data:
            out["data"] = True
        if self.same_as is not None:
            out["same_as"] = self.same_as
        if self.previous_step:
            out["previous_step"] = True
        return out


def stack_tensors(stack: Stack, n_targets: int, *, store_all: bool = False) -> list[Tensor]:
    """Every tensor a run of ``stack`` records, in file order.

    Each computed value is stored once: what the layers' formulas make equal to another tensor
    is marked ``same_as`` it (the δ of an input or identity layer is the δ above it,
    grad_b{k} = δ{k+1}), and the parameters before a step are the ones after the step before
    (``previous_step``). ``store_all`` stores every tensor (for values a loop computed its own
    way, which steptrace cannot vouch for).
    """
    shapes = stack.shapes
    first_params = min(stack.param_layers, default=len(shapes) + 1)

    def known(other: str, previous: bool = False) -> dict[str, Any]:
        return {} if store_all else {"same_as": other, "previous_step": previous}

    def passes(k: int) -> bool:
        """An input or identity layer: δ passes through unchanged."""
        return isinstance(stack.layer(k), Input)

    out = [Tensor("lr", (), data=True)]
    out += [Tensor("x", stack.in_shape, data=True), Tensor("y", (n_targets,), data=True)]
    # The outputs stay stored even where they repeat the input (o1 = x): the data's own
    # columns are dictionary-encoded to almost nothing, and verify tells a changed x_k from
    # a changed o1_k by the two copies.
    out += [Tensor(f"o{k}", shape, data=k < first_params) for k, shape in enumerate(shapes, 1)]
    out.append(Tensor("loss", ()))
    for k in range(stack.loss_number, 0, -1):
        above = known(f"d{k + 1}") if k < stack.loss_number and passes(k) else {}
        out.append(Tensor(f"d{k}", stack.in_shape_of(k), **above))
    for k in stack.param_layers:
        w_shape, b_shape = stack.param_shapes(k)
        out += [Tensor(f"grad_w{k}", w_shape),
                Tensor(f"w{k}_before", w_shape, **known(f"w{k}_after", previous=True)),
                Tensor(f"w{k}_after", w_shape)]  # fmt: skip
        if b_shape is not None:
            # A linear layer's ∂Loss/∂b is the δ above it; a convolution's sums it.
            same = known(f"d{k + 1}") if isinstance(stack.layer(k), Linear) else {}
            out += [Tensor(f"grad_b{k}", b_shape, **same),
                    Tensor(f"b{k}_before", b_shape, **known(f"b{k}_after", previous=True)),
                    Tensor(f"b{k}_after", b_shape)]  # fmt: skip
    return out


def tensors_of(meta: dict[str, Any]) -> list[Tensor]:
    """The tensors a run's metadata lists (``tensors``: name and shape of each)."""
    listed = meta.get("tensors")
    if not isinstance(listed, list):
        raise TraceError("the run metadata lists no tensors; not a steptrace trace")
    out = []
    for t in listed:
        if not isinstance(t, dict) or "name" not in t or not isinstance(t.get("shape"), list):
            raise TraceError(f"the run metadata's tensor {t!r} has no name and shape")
        name, same_as = str(t["name"]), t.get("same_as")
        out.append(
            Tensor(name, tuple(int(n) for n in t["shape"]), data=bool(t.get("data")),
                   same_as=None if same_as is None else str(same_as),
                   previous_step=bool(t.get("previous_step")))
        )  # fmt: skip
    return out


def tensors_from_columns(names: Sequence[str]) -> list[Tensor]:
    """The tensors a table's value columns hold, their shapes from the largest index of each
    position (for tables that come without metadata, such as a DataFrame)."""
    shapes: dict[str, list[int]] = {}
    for name in names:
        if name.endswith(EXACT_SUFFIX) or name in {f.pattern for f in KEY_FIELDS}:
            continue
        split = split_column(name)
        if split is None:
            continue
        tensor, index = split
        shape = shapes.setdefault(tensor, [0] * len(index))
        if len(shape) == len(index):
            shapes[tensor] = [max(a, b) for a, b in zip(shape, index, strict=True)]
    return [Tensor(name, tuple(shape)) for name, shape in shapes.items()]


#: A value column: its tensor's name, then the value's index, each position after a ``_``.
_COLUMN = re.compile(r"(.*?[a-z]\d*(?:_before|_after)?)((?:_\d+)*)")


def split_column(name: str) -> tuple[str, tuple[int, ...]] | None:
    """A value column's tensor and index (from 1, as :meth:`Tensor.columns` writes it):
    ``w2_after_1_3`` → ``("w2_after", (1, 3))``, ``loss`` → ``("loss", ())``; None for a name
    that is no tensor's column."""
    m = _COLUMN.fullmatch(name)
    if m is None:
        return None
    return m.group(1), tuple(int(i) for i in m.group(2).split("_")[1:])


def numpy_name(name: str) -> tuple[str, tuple[int, ...]] | None:
    """A value written as numpy indexes its tensor, ``o2[1, 3, 0]`` (spaces optional), as its
    tensor and index from 1 (``("o2", (2, 4, 1))``, the column ``o2_2_4_1``); None for any
    other name."""
    m = re.fullmatch(r"\s*(\w+?)\s*\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]\s*", name)
    if m is None:
        return None
    return m.group(1), tuple(int(i) + 1 for i in m.group(2).split(","))


def value_names(tensors: Sequence[Tensor]) -> list[str]:
    """The recorded numbers' columns (the ones with an exact text twin in exact runs)."""
    return [c for t in tensors for c in t.columns()]


def column_names(tensors: Sequence[Tensor], exact: bool = False) -> list[str]:
    """All column names of a trace, in file order."""
    values = value_names(tensors)
    names = [f.pattern for f in KEY_FIELDS] + values
    if exact:
        names += [name + EXACT_SUFFIX for name in values]
    return names


def arrow_schema(
    tensors: Sequence[Tensor], exact: bool, metadata: dict[str, Any], *, stored: bool = False
) -> pa.Schema:
    """The Arrow schema of a trace, run metadata attached under :data:`METADATA_KEY`: every
    tensor's columns as readers see them, or with ``stored`` the ones its files hold."""
    values = value_names([t for t in tensors if t.stored or not stored])
    fields = [pa.field(f.pattern, f.type, nullable=False) for f in KEY_FIELDS]
    fields += [pa.field(name, F64, nullable=False) for name in values]
    if exact:
        fields += [pa.field(name + EXACT_SUFFIX, pa.string(), nullable=False) for name in values]
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})


def after_columns(tensors: Sequence[Tensor]) -> list[str]:
    """The columns of every parameter after the step (``w2_after_1_1`` …, ``b2_after_1`` …):
    where a run's divergence shows first."""
    return [c for t in tensors if re.fullmatch(r"[wb]\d+_after", t.name) for c in t.columns()]


#: Families of tensors a name without its layer number means: ``w_after`` is every ``w{k}_after``.
_FAMILY = re.compile(r"^(o|d|grad_w|grad_b|w_before|w_after|b_before|b_after)$")


def expand(name: str, columns: Sequence[str]) -> list[str]:
    """The columns a name means: the column itself, or as numpy indexes its tensor
    (``o2[1, 3, 0]`` → ``o2_2_4_1``), a tensor's components (``w2_after`` → ``w2_after_1_1``
    …), or a family's across layers (``w_after`` → every ``w{k}_after_…``; ``o``, ``d``,
    ``grad_w`` … likewise). In the order of ``columns``."""
    if name in columns:
        return [name]
    indexed = numpy_name(name)
    if indexed is not None:
        column = indexed[0] + "".join(f"_{i}" for i in indexed[1])
        return [column] if column in columns else []
    pattern = re.escape(name) + r"(_\d+)+"
    family = _FAMILY.match(name)
    if family:
        head = name.split("_")
        if name in ("o", "d"):
            pattern = name + r"\d+(_\d+)+"
        elif name.startswith("grad_"):
            pattern = re.escape(name) + r"\d+(_\d+)+"
        else:
            pattern = head[0] + r"\d+_" + head[1] + r"(_\d+)+"
    return [c for c in columns if re.fullmatch(pattern, c)]


def run_metadata_head(
    name: str,
    numerics: Numerics,
    lr_text: str,
    lr: Fraction,
    model: Model,
    n_targets: int,
    *,
    store_all: bool = False,
) -> dict[str, Any]:
    """The metadata every new run starts with, however it is recorded (steptrace's recorder,
    :func:`steptrace.open_run`): format and versions, identity, who records it, the number
    system, the learning rate, the model and its tensors (``store_all``: see
    :func:`stack_tensors`). The plan and the dataset follow."""
    stack = model.stack(numerics)
    return {
        "format_version": FORMAT_VERSION,
        "steptrace_version": __version__,
        "run_id": uuid.uuid4().hex,
        "name": name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "recorded_by": {"host": socket.gethostname(), "pid": os.getpid()},
        "numerics": numerics.name,
        "lr": lr_text,
        "lr_exact": str(lr),
        "model": model.to_json(),
        "tensors": [t.as_json() for t in stack_tensors(stack, n_targets, store_all=store_all)],
    }


def check_version(meta: dict[str, Any], where: str) -> None:
    """Refuse metadata of a newer major format version, with a message saying what to do."""
    version = str(meta.get("format_version", ""))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise TraceError(f"{where}: not a steptrace trace (no format version)") from None
    ours = int(FORMAT_VERSION.split(".")[0])
    if major > ours:
        raise NewerFormatError(
            f"{where} uses trace format {version} (written by steptrace "
            f"{meta.get('steptrace_version', '?')}); this steptrace reads formats up to "
            f"{ours}.x: upgrade with 'pip install -U steptrace'"
        )


def metadata_of(schema: pa.Schema, where: str) -> dict[str, Any]:
    """The run metadata stored in a Parquet/Arrow schema, version-checked, upgraded to the
    current version's keys (see :func:`upgrade_v1`)."""
    raw = (schema.metadata or {}).get(METADATA_KEY.encode())
    if raw is None:
        raise TraceError(f"{where}: not a steptrace trace (no '{METADATA_KEY}' metadata)")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise TraceError(f"{where}: its steptrace metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise TraceError(f"{where}: its steptrace metadata is not a JSON object")
    check_version(meta, where)
    return upgrade_v1(meta)


# --- version 1 ------------------------------------------------------------------------------------
# Version 1 recorded only the article's model (input → linear(1, no bias) → relu) and named its
# weights w_before_k, w_after_k and grad_k. Its other columns (x_k, y_1, o1_k … d1_k, loss) are
# already version 2's names for that stack.

_V1_WEIGHTS = {"w_before": "w2_before_1", "w_after": "w2_after_1", "grad": "grad_w2_1"}
_V1_COLUMN = re.compile(r"^(w_before|w_after|grad)_(\d+)(_exact)?$")


def is_v1(meta: dict[str, Any]) -> bool:
    return str(meta.get("format_version", "")).split(".")[0] == "1"


def upgrade_v1(meta: dict[str, Any]) -> dict[str, Any]:
    """Version 1 metadata in version 2's keys: the article's model with the run's ``init`` as
    ``model``, ``tensors``, and ``dataset.targets``; ``format_version`` stays as written.
    Later versions are returned as they are."""
    if not is_v1(meta) or "tensors" in meta:
        return meta
    meta = dict(meta)
    dataset = dict(meta.get("dataset") or {})
    features = dataset.get("features") or []
    init = meta.pop("init", None)
    if "target" in dataset:
        dataset["targets"] = [dataset.pop("target")]
    meta["dataset"] = dataset
    try:
        model = article_model(init, n_in=len(features))
    except Exception:  # a damaged v1 trace: verify names what is wrong with it
        meta["init"] = init
        return meta
    stack = model.stack(NUMERICS["float64"])
    meta["model"] = model.to_json()
    meta["tensors"] = [t.as_json() for t in stack_tensors(stack, 1, store_all=True)]
    return meta


def v1_column(name: str) -> str:
    """The version 1 name of a version 2 column (the same but for the article's weights)."""
    for old, new in _V1_WEIGHTS.items():
        prefix = new + "_"
        if name.startswith(prefix):
            return f"{old}_{name.removeprefix(prefix)}"
    return name


def v2_column(name: str) -> str:
    """The version 2 name of a version 1 column."""
    m = _V1_COLUMN.match(name)
    if m is None:
        return name
    return f"{_V1_WEIGHTS[m.group(1)]}_{m.group(2)}{m.group(3) or ''}"
