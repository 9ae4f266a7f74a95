"""The one definition of the trace format: columns, Arrow types, metadata, version.

``docs/trace-format.md`` is the written specification; ``tests/test_schema.py`` checks that
it and this module agree field by field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..errors import NewerFormatError, TraceError

__all__ = [
    "EXACT_SUFFIX",
    "FIELDS",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "Field",
    "arrow_schema",
    "check_version",
    "column_names",
    "vector",
]

#: Version of the trace format (not of the package). Readers accept the same major version
#: and refuse a newer one.
FORMAT_VERSION = "1.0"
#: The one Parquet key-value metadata key holding the run's metadata as JSON.
METADATA_KEY = "steptrace"
#: Suffix of the exact rational text column beside each value column (exact runs only).
EXACT_SUFFIX = "_exact"


@dataclass(frozen=True)
class Field:
    """A column, or a family of columns ``name_1 … name_n`` when ``per_feature``."""

    name: str
    type: pa.DataType
    meaning: str
    per_feature: bool = False
    width_one: bool = False  # a vector of one component, written name_1 as in the article
    value: bool = True  # a recorded number (gets an exact text column in exact runs)

    def names(self, n: int) -> list[str]:
        if self.per_feature:
            return [f"{self.name}_{k}" for k in range(1, n + 1)]
        if self.width_one:
            return [f"{self.name}_1"]
        return [self.name]

    @property
    def pattern(self) -> str:
        """How the spec writes the field: ``x_k``, ``o2_1`` or ``loss``."""
        if self.per_feature:
            return f"{self.name}_k"
        return f"{self.name}_1" if self.width_one else self.name


F64 = pa.float64()
FIELDS: tuple[Field, ...] = (
    Field("run_id", pa.string(), "identifier of the run, the same on every row", value=False),
    Field("step", pa.int64(), "0-based index of the weight update", value=False),
    Field("epoch", pa.int64(), "0-based epoch", value=False),
    Field("sample", pa.int64(), "0-based row of the dataset", value=False),
    Field("numerics", pa.string(), "number system: exact, float64 or float32", value=False),
    Field("batch_size", pa.int64(), "the run's batch size n", value=False),
    Field("lr", F64, "learning rate α"),
    Field("x", F64, "data input, component k", per_feature=True),
    Field("y", F64, "data output (expectation)", width_one=True),
    Field("o1", F64, "o1 = L1(x) = x", per_feature=True),
    Field("o2", F64, "o2 = L2(o1) = w . o1", width_one=True),
    Field("o3", F64, "o3 = L3(o2) = o2 if o2 >= 0 else 0", width_one=True),
    Field("loss", F64, "this sample's loss 1/2 (o3 - y)^2"),
    Field("d4", F64, "δ4 = (o3 - y) / m, m the rows of this step", width_one=True),
    Field("d3", F64, "δ3 = δ4 if o2 >= 0 else 0", width_one=True),
    Field("d2", F64, "δ2 = δ3 . w", per_feature=True),
    Field("d1", F64, "δ1 = δ2", per_feature=True),
    Field("grad", F64, "this sample's gradient δ3 * o1", per_feature=True),
    Field("w_before", F64, "the step's weights before the update", per_feature=True),
    Field("w_after", F64, "the step's weights after ŵ = w - α * Σ grad", per_feature=True),
)


def column_names(n: int, exact: bool = False) -> list[str]:
    """All column names of a trace with ``n`` features, in file order."""
    names = [name for f in FIELDS for name in f.names(n)]
    if exact:
        names += [name + EXACT_SUFFIX for name in value_names(n)]
    return names


def value_names(n: int) -> list[str]:
    """The recorded numbers' columns (the ones with an exact text twin in exact runs)."""
    return [name for f in FIELDS if f.value for name in f.names(n)]


def vector(name: str, n: int) -> list[str]:
    """The column names of one field: ``vector("w_after", 3) == ["w_after_1", ...]``."""
    for f in FIELDS:
        if f.name == name:
            return f.names(n)
    raise KeyError(name)


def arrow_schema(n: int, exact: bool, metadata: dict[str, Any]) -> pa.Schema:
    """The Arrow schema of a trace, run metadata attached under :data:`METADATA_KEY`."""
    fields = [pa.field(name, f.type, nullable=False) for f in FIELDS for name in f.names(n)]
    if exact:
        fields += [
            pa.field(name + EXACT_SUFFIX, pa.string(), nullable=False) for name in value_names(n)
        ]
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})


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
            f"{meta.get('steptrace_version', '?')}); this steptrace reads format "
            f"{ours}.x: upgrade with 'pip install -U steptrace'"
        )


def metadata_of(schema: pa.Schema, where: str) -> dict[str, Any]:
    """The run metadata stored in a Parquet/Arrow schema, version-checked."""
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
    return meta
