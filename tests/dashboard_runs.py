"""Folders of runs for the dashboard's tests: the article, a learning-rate comparison, a run
that diverges, and the files that are not runs (corrupt, foreign, newer format)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import steptrace

#: Initial weights for float runs whose weights keep moving (the ReLU gate stays open).
MOVING_INIT = "0.005,-0.0002,0.0002"


def article(out: Path, name: str = "article", lr: str = "1") -> Path:
    """The article's run, exact: step 2 is its 3rd data input."""
    return steptrace.record("seed", lr=lr, numerics="exact", out=out, name=name).path


def lr_sweep(out: Path, lrs: tuple[str, ...] = ("1e-9", "1e-8"), epochs: int = 3) -> list[Path]:
    results = steptrace.sweep(
        list(lrs), numerics="float64", init=MOVING_INIT, epochs=epochs, out=out, name="sweep"
    )
    return [r.path for r in results]


def diverging(out: Path) -> Path:
    """A float64 run whose second step overflows: loss inf at step 1."""
    csv = out.parent / "boom.csv"
    csv.write_text("a,b,y\n1,1,10\n1,2,12\n", encoding="utf-8")
    run = steptrace.record(
        csv, lr="1e200", numerics="float64", init="0.1,0.1", epochs=3, out=out, name="boom"
    )
    return run.path


def corrupt(out: Path, source: Path) -> Path:
    """A run folder whose metadata is fine but whose part file is garbage."""
    bad = out / "corrupt"
    bad.mkdir()
    shutil.copy(source / "_run.json", bad / "_run.json")
    (bad / "part-000000.parquet").write_bytes(b"this is not parquet at all")
    return bad


def foreign(out: Path) -> Path:
    """A folder holding a Parquet file that steptrace did not write."""
    other = out / "foreign"
    other.mkdir()
    pq.write_table(pa.table({"a": [1, 2, 3]}), other / "data.parquet")
    return other


def newer(out: Path, source: Path) -> Path:
    """A copy of a run claiming a trace format from the future."""
    future = out / "future"
    shutil.copytree(source, future)
    meta = json.loads((future / "_run.json").read_text(encoding="utf-8"))
    meta["format_version"] = "99.0"
    (future / "_run.json").write_text(json.dumps(meta), encoding="utf-8")
    return future


#: The two-layer network of examples/two-layer.json: input → linear(2, bias) → relu →
#: linear(1) → leaky_relu(1/100).
TWO_LAYER = Path(__file__).resolve().parent.parent / "examples" / "two-layer.json"


def two_layer(out: Path, name: str = "two-layer", lr: str = "1/10") -> Path:
    """examples/two-layer.json on the article's data, exact, two epochs."""
    return steptrace.record(
        "seed", lr=lr, numerics="exact", model=TWO_LAYER, out=out, name=name, epochs=2
    ).path
