"""Where the recorder's computing thread spends a row's time, stage by stage, in one process.

    python bench/stages.py article     # the article's neuron, 1,000,000 rows, float64
    python bench/stages.py mlp         # the 3-2-1 network of bench/mlp.py, 1,000,000 rows

Blocks are computed in the calling thread (no Parquet writing), and each stage is timed by
wrapping the function that does it: the generated loop, the path rebuilt by numpy, the rest of
the walk (lists into arrays), and every other value on columns. Prints ns a row, best of
``--repeats``. To compare two versions side by side, run the older one from a git worktree:
``PYTHONPATH=/tmp/old/src python bench/stages.py mlp``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlp
import run as bench

import steptrace
from steptrace.train import columns, compiled
from steptrace.train.settings import Settings


def settings_for(which: str, rows: int, folder: Path) -> tuple[steptrace.Dataset, Settings]:
    if which == "article":
        ds = bench.seed_dataset()
        return ds, Settings.parse(ds, bench.LR, numerics="float64", init=bench.INIT,
                                  epochs=max(1, rows // 3))  # fmt: skip
    ds = steptrace.load_dataset(mlp.write_dataset(folder / "data.csv"))
    epochs = max(1, rows // mlp.SAMPLES)
    return ds, Settings.parse(ds, mlp.LR, numerics="float64", model=str(mlp.MODEL), epochs=epochs)


def one_pass(ds: steptrace.Dataset, settings: Settings) -> dict[str, float]:
    """Seconds a row of each stage, over one recording's blocks."""
    spent = dict.fromkeys(["walk", "loop", "rebuild", "columns"], 0.0)

    def timed(stage: str, f: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                spent[stage] += time.perf_counter() - start

        return wrapper

    originals = (columns.walk, columns.chunk_columns, compiled.compile_walk)
    rebuild = getattr(compiled, "Rebuild", None)
    path = rebuild.path if rebuild is not None else None

    def compile_walk(*args: Any) -> Any:
        walk = originals[2](*args)
        if dataclasses.is_dataclass(walk):  # session 5 on: a Walk with its loop
            return dataclasses.replace(walk, loop=timed("loop", walk.loop))
        return timed("loop", walk)

    columns.walk = timed("walk", originals[0])
    columns.chunk_columns = timed("columns", originals[1])
    compiled.compile_walk = compile_walk  # type: ignore[assignment]
    if rebuild is not None:
        rebuild.path = timed("rebuild", path)
    try:
        rows = sum(len(b["step"]) for b in columns.compute_blocks(ds, settings))
    finally:
        columns.walk, columns.chunk_columns, compiled.compile_walk = originals
        if rebuild is not None:
            rebuild.path = path
    spent["arrays"] = spent["walk"] - spent["loop"] - spent["rebuild"]
    return {stage: seconds / rows for stage, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=["article", "mlp"])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ds, settings = settings_for(args.model, args.rows, Path(tmp))
        passes = [one_pass(ds, settings) for _ in range(args.repeats)]
    best = min(passes, key=lambda p: p["walk"] + p["columns"])
    print(f"{args.model}: ns a row, best of {args.repeats} (by walk + columns)")
    for stage in ("walk", "loop", "rebuild", "arrays", "columns"):
        print(f"  {stage:<8} {best[stage] * 1e9:8.0f}")


if __name__ == "__main__":
    main()
