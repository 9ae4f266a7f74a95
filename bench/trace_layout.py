"""Trace layouts for wide rows: one float64 column per value, or one column per tensor.

    python bench/trace_layout.py                    # 100,000 rows of each network
    python bench/trace_layout.py --rows 20000       # quicker
    python bench/trace_layout.py --row-group 4096   # row groups of another size than the writer's
    python bench/trace_layout.py --quick            # tiny sizes: checks the harness works

Writes the same synthetic trace in three layouts and measures them side by side: ``columns``
(today's: a float64 column per component, ``o2_3_1_1``), ``fixed_size_list`` (a
``fixed_size_list<float64>[n]`` column per tensor, row-major) and ``fixed_shape_tensor`` (the
same as Arrow's canonical extension type, which keeps the shape); scalars and the key columns
stay plain. Two networks: a small CNN (input 1×8×8, conv 4×3×3 with bias, relu, 2×2 max-pool,
flatten, linear 64→1; batches of 16) and the series' 3-2-1 network (examples/mlp-3-2-1.json;
one sample a step). Each value is stored once, as the recorder does. The data (lr, x, y, o1)
are 1,000 samples repeated every epoch; the parameters move by ~1e-6 a step; every other value
is random float64.

The Parquet options are the writer's (``writer.parquet_options``; a tensor's columns' go to its
list's values, ``o2.list.element``), and blocks of whole steps are written as a row group once
the writer's ``group_rows`` are pending (at most 64 MB of values), as the writer does. Each file
is written in a fresh process, for its peak memory (Linux). Each timing is the best of
``--repeats`` passes, the layouts taking turns in each (``--clock cpu``: CPU seconds, steadier
on a shared machine); every layout must read back the same numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import multiprocessing
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from steptrace.model.spec import load_model
from steptrace.numerics import NUMERICS
from steptrace.trace.schema import KEY_FIELDS, Tensor, arrow_schema, stack_tensors, value_names
from steptrace.trace.writer import group_rows, parquet_options

LAYOUTS = ("columns", "fixed_size_list", "fixed_shape_tensor")
SAMPLES = 1_000  # the dataset's rows: the data repeat every epoch
BLOCK = 8_192  # rows of a block the recorder hands the writer (at most a row group's)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
MLP = Path(__file__).resolve().parents[1] / "examples" / "mlp-3-2-1.json"
#: The mean of one component by DuckDB and by Polars: each line runs as the report prints it.
READERS = {
    "columns": ("SELECT avg({column}) FROM '{path}'",
                'pl.scan_parquet("{path}").select(pl.col("{column}").mean())'),
    "fixed_size_list": ("SELECT avg({tensor}[{k}]) FROM '{path}'",
                        'pl.scan_parquet("{path}").select(pl.col("{tensor}").arr.get({i}).mean())'),
    "fixed_shape_tensor": ("SELECT avg({tensor}[{k}]) FROM '{path}'",
                           'pl.scan_parquet("{path}")'
                           '.select(pl.col("{tensor}").ext.storage().arr.get({i}).mean())'),
}  # fmt: skip
COLUMNS = ("MB on disk", "B/value", "write rows/s", "write peak MB", "one step ms",
           "one tensor ms", "pandas s", "pandas wide s", "DuckDB ms", "Polars ms")  # fmt: skip


def parameters(k: int, w: tuple[int, ...], b: tuple[int, ...], grad_b: str | None) -> list[Tensor]:
    """Layer k's gradients and parameters as the recorder lists them: the ones before a step are
    the ones after the step before; a bias gradient that is a δ is that δ (``grad_b``)."""
    return [Tensor(f"grad_w{k}", w),
            Tensor(f"w{k}_before", w, same_as=f"w{k}_after", previous_step=True),
            Tensor(f"w{k}_after", w), Tensor(f"grad_b{k}", b, same_as=grad_b),
            Tensor(f"b{k}_before", b, same_as=f"b{k}_after", previous_step=True),
            Tensor(f"b{k}_after", b)]  # fmt: skip


def cnn_tensors() -> list[Tensor]:
    """Layers 1 input, 2 conv, 3 relu, 4 max-pool, 5 flatten, 6 linear; 7 is the loss. A conv's
    bias gradient sums δ3 over the positions: it is stored."""
    image, conv, pooled = (1, 8, 8), (4, 8, 8), (4, 4, 4)
    return [Tensor("lr", (), data=True), Tensor("x", image, data=True),
            Tensor("y", (1,), data=True), Tensor("o1", image, data=True),
            Tensor("o2", conv), Tensor("o3", conv), Tensor("o4", pooled), Tensor("o5", (64,)),
            Tensor("o6", (1,)), Tensor("loss", ()), Tensor("d7", (1,)), Tensor("d6", (64,)),
            Tensor("d5", pooled), Tensor("d4", conv), Tensor("d3", conv), Tensor("d2", image),
            Tensor("d1", image, same_as="d2"), *parameters(2, (4, 1, 3, 3), (4,), None),
            *parameters(6, (1, 64), (1,), "d7")]  # fmt: skip


@dataclass(frozen=True)
class Network:
    name: str
    tensors: list[Tensor]
    batch: int

    @property
    def stored(self) -> list[Tensor]:
        return [t for t in self.tensors if t.stored]

    @property
    def values(self) -> int:
        return sum(t.size for t in self.stored)

    @property
    def widest(self) -> Tensor:
        return max(self.stored, key=lambda t: t.size)

    @property
    def group_rows(self) -> int:
        """The writer's rows a row group, for this network's columns."""
        return group_rows(len(arrow_schema(self.tensors, False, self.meta, stored=True)))

    @property
    def meta(self) -> dict[str, Any]:
        return {"dataset": {"rows": SAMPLES}, "tensors": [t.as_json() for t in self.tensors]}


MLP_STACK = load_model(MLP, n_in=3).stack(NUMERICS["float64"])
NETWORKS = [Network("CNN", cnn_tensors(), 16), Network("3-2-1", stack_tensors(MLP_STACK, 1), 1)]


def blocks(net: Network, rows: int, most: int, seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """A run's rows in blocks of ``most`` rows (whole steps), each tensor as an array (rows,
    *shape)."""
    rng = np.random.default_rng(seed)
    data = {t.name: rng.standard_normal((SAMPLES, *t.shape)) for t in net.stored if t.data}
    data["lr"] = np.full(SAMPLES, 0.01)
    after = {t.name: rng.standard_normal(t.shape) for t in net.stored if t.name.endswith("_after")}
    size = -(-most // net.batch) * net.batch  # whole steps
    for start in range(0, rows, size):
        row = np.arange(start, min(start + size, rows))
        block = {"step": row // net.batch, "epoch": row // SAMPLES, "sample": row % SAMPLES}
        for t in net.stored:
            if t.data:
                block[t.name] = data[t.name][row % SAMPLES]
            elif t.name in after:
                moves = rng.standard_normal((len(row) // net.batch, *t.shape)) * 1e-6
                path = after[t.name] + np.cumsum(moves, axis=0)
                after[t.name] = path[-1]
                block[t.name] = np.repeat(path, net.batch, axis=0)
            else:
                block[t.name] = rng.standard_normal((len(row), *t.shape))
        yield block


def schema_of(layout: str, net: Network) -> pa.Schema:
    """The writer's schema, or the same with a column per tensor."""
    flat = arrow_schema(net.tensors, False, net.meta, stored=True)
    if layout == "columns":
        return flat
    fields = [flat.field(f.pattern) for f in KEY_FIELDS]
    for t in net.stored:
        if not t.shape:
            fields.append(flat.field(t.name))
        elif layout == "fixed_shape_tensor":
            fields.append(pa.field(t.name, pa.fixed_shape_tensor(pa.float64(), t.shape), False))
        else:
            item = pa.field("element", pa.float64(), nullable=False)
            fields.append(pa.field(t.name, pa.list_(item, t.size), nullable=False))
    return pa.schema(fields, metadata=flat.metadata)


def options_of(layout: str, net: Network) -> dict[str, Any]:
    """The writer's options; with a column per tensor, its columns' options go to its values."""
    options = parquet_options(arrow_schema(net.tensors, False, net.meta, stored=True))
    if layout == "columns":
        return options
    path = {c: f"{t.name}.list.element" for t in net.stored if t.shape for c in t.columns()}
    dictionary = dict.fromkeys(path.get(c, c) for c in options["use_dictionary"] or [])
    options["use_dictionary"] = list(dictionary) or False
    options["column_encoding"] = {path.get(c, c): e for c, e in options["column_encoding"].items()}
    return options


def table_of(block: dict[str, np.ndarray], layout: str, net: Network, schema: pa.Schema) -> Any:
    n = len(block["step"])
    columns: dict[str, Any] = {k: block[k] for k in ("step", "epoch", "sample")}
    columns |= {"run_id": pa.repeat(pa.scalar("bench"), n), "batch_size": [net.batch] * n,
                "numerics": pa.repeat(pa.scalar("float64"), n)}  # fmt: skip
    for t in net.stored:
        values = block[t.name]
        if not t.shape:
            columns[t.name] = values
        elif layout == "columns":  # a contiguous array a component, as the recorder makes them
            rows = np.ascontiguousarray(values.reshape(n, -1).T)
            columns.update(zip(t.columns(), rows, strict=True))
        else:
            kind = schema.field(t.name).type
            storage = getattr(kind, "storage_type", kind)
            array = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), type=storage)
            tensor = layout == "fixed_shape_tensor"
            columns[t.name] = pa.ExtensionArray.from_storage(kind, array) if tensor else array
    return pa.Table.from_pydict(columns, schema=schema)


def memory(field: str) -> int:
    """This process's ``VmRSS`` (resident memory now) or ``VmHWM`` (its peak), in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))


def write_file(
    path: Path, layout: str, net: Network, rows: int, row_group: int, clock: str
) -> list[float]:
    """Write a trace file as ``TraceWriter`` does (in a process of its own): the seconds spent
    turning blocks into tables and writing them, and the peak memory above the start's, in MB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak back to the memory in use now
    before, now = memory("VmRSS"), CLOCKS[clock]
    schema = schema_of(layout, net)
    start = now()
    writer = pq.ParquetWriter(path, schema, **options_of(layout, net))
    spent, pending = now() - start, []
    # Making a block is not timed; None marks the end.
    for block in itertools.chain(blocks(net, rows, min(BLOCK, row_group)), [None]):
        start = now()
        if block is not None:
            pending.append(table_of(block, layout, net, schema))
        if pending and (block is None or sum(t.num_rows for t in pending) >= row_group):
            table = pa.concat_tables(pending)
            writer.write_table(table, row_group_size=table.num_rows)
            pending = []
        spent += now() - start
    start = now()
    writer.close()
    return [spent + now() - start, (memory("VmHWM") - before) / 1e6]


def as_array(column: pa.ChunkedArray, t: Tensor) -> np.ndarray:
    """A tensor's column (a scalar, a list or a tensor a row) as an array (rows, *shape)."""
    array = column.combine_chunks()
    if isinstance(array, pa.FixedShapeTensorArray):
        return array.to_numpy_ndarray()
    return (array.flatten() if t.shape else array).to_numpy().reshape(-1, *t.shape)


def read_tensor(path: Path, layout: str, t: Tensor) -> np.ndarray:
    """One tensor of every row as an array (rows, *shape)."""
    if layout != "columns":
        return as_array(pq.read_table(path, columns=[t.name]).column(t.name), t)
    table = pq.read_table(path, columns=t.columns())
    return np.column_stack([c.to_numpy() for c in table.columns]).reshape(-1, *t.shape)


def wide_frame(path: Path, layout: str, net: Network) -> pd.DataFrame:
    """The whole file as today's DataFrame, a float64 column per value."""
    if layout == "columns":
        return pd.read_parquet(path)
    table = pq.read_table(path)
    keys = table.select([f.pattern for f in KEY_FIELDS]).to_pandas()
    values = [as_array(table.column(t.name), t).reshape(len(keys), -1) for t in net.stored]
    frame = pd.DataFrame(np.hstack(values), columns=value_names(net.stored))
    return pd.concat([keys, frame], axis=1)


def reader_lines(layout: str, net: Network, path: str) -> list[str]:
    """The DuckDB and Polars lines computing the mean of one component of the widest tensor."""
    t = net.widest
    k = t.size // 2 + 1  # 1-based, in the middle of the tensor
    names = {"path": path, "tensor": t.name, "column": t.columns()[k - 1], "k": k, "i": k - 1}
    return [line.format(**names) for line in READERS[layout]]


def read_pass(path: Path, layout: str, net: Network, clock: str) -> dict[str, Any]:
    """Each read once: its seconds and what it gave (a reader that cannot: None and why)."""
    step = pq.read_metadata(path).num_rows // net.batch // 2
    sql, polars = reader_lines(layout, net, str(path))
    reads = {
        "one step ms": lambda: pq.read_table(path, filters=[("step", "==", step)]).num_rows,
        "one tensor ms": lambda: read_tensor(path, layout, net.widest),
        "pandas s": lambda: len(pd.read_parquet(path)),
        "pandas wide s": lambda: wide_frame(path, layout, net).shape,
        "DuckDB ms": lambda: duckdb.sql(sql).fetchall()[0][0],
        "Polars ms": lambda: eval(polars, {"pl": pl}).collect().item(),
    }
    out: dict[str, tuple[float | None, Any]] = {}
    for name, read in reads.items():
        start = CLOCKS[clock]()
        try:
            got = read()
        except (duckdb.Error, pl.exceptions.PolarsError) as exc:  # can it read this layout?
            out[name] = (None, f"fails ({type(exc).__name__})")
            continue
        seconds = CLOCKS[clock]() - start
        if isinstance(got, np.ndarray):  # a digest: the arrays are too big to keep every pass
            got = (got.shape, hashlib.sha1(got.tobytes()).hexdigest())
        out[name] = (seconds, got)
    return out


def row_of(net: Network, path: Path, passes: list[dict[str, Any]], first: Any) -> dict[str, Any]:
    """A layout's figures (the best time of its passes, the largest peak; 3 significant digits)
    and what it read, which must be what the ``first`` layout read (not a reader's failure)."""
    rows, size = pq.read_metadata(path).num_rows, path.stat().st_size
    write = min(p["write"][0] for p in passes), max(p["write"][1] for p in passes)
    figures = {"MB on disk": size / 1e6, "B/value": size / (rows * net.values),
               "write rows/s": rows / write[0], "write peak MB": write[1]}  # fmt: skip
    got = {name: passes[0][name][1] for name in COLUMNS[4:]}
    for name in COLUMNS[4:]:
        seconds = [p[name][0] for p in passes if p[name][0] is not None]
        figures[name] = min(seconds) * (1e3 if name.endswith("ms") else 1) if seconds else got[name]
        mine, theirs = got[name], (first or got)[name]
        if isinstance(mine, float) and isinstance(theirs, float):
            assert np.isclose(mine, theirs), (path.name, name, mine, theirs)
        elif not isinstance(mine, str):
            assert mine == theirs, (path.name, name, mine, theirs)
    cells = [(f"{v:,.0f}" if v >= 100 else f"{v:.3g}") if isinstance(v, float) else v
             for v in figures.values()]  # fmt: skip
    return {"cells": cells, "got": got}


def example(path: Path, layout: str, net: Network) -> str:
    """A layout's reader lines, and the type DuckDB and Polars give the widest tensor."""
    sql, polars = reader_lines(layout, net, "trace.parquet")
    if layout == "columns":
        return f"- {layout}: `{sql}` · `{polars}`"
    t = net.widest.name
    duck = duckdb.sql(f"DESCRIBE SELECT {t} FROM '{path}'").fetchall()[0][1]
    seen = f"DuckDB reads {t} as {duck}, Polars as {pl.scan_parquet(path).collect_schema()[t]}"
    return f"- {layout}: `{sql}` · `{polars}`; {seen}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--row-group", type=int, help="rows a row group (the writer's: its own)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clock", choices=CLOCKS, default="wall", help="cpu: the CPU seconds of"
                        " every thread of the process, steadier on a shared machine")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeats = 2_000, 1
    print(f"{platform.machine()}, {os.cpu_count()} CPUs · load {os.getloadavg()[0]:.2f} · "
          f"Python {platform.python_version()} · pyarrow {pa.__version__} · DuckDB "
          f"{duckdb.__version__} · Polars {pl.__version__} · {args.rows:,} rows · {args.clock} "
          f"time, best of {args.repeats}\n")  # fmt: skip
    print("| network | layout | rows a group | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---:|" * (len(COLUMNS) + 1))
    spawn = multiprocessing.get_context("spawn")  # a fresh process a file: its own peak memory
    with (tempfile.TemporaryDirectory() as tmp,
          ProcessPoolExecutor(1, mp_context=spawn, max_tasks_per_child=1) as pool):  # fmt: skip
        for net in NETWORKS:
            rows, group = args.rows - args.rows % net.batch, args.row_group or net.group_rows
            paths = {layout: Path(tmp) / f"{net.name}-{layout}.parquet" for layout in LAYOUTS}
            passes: dict[str, list[dict[str, Any]]] = {layout: [] for layout in LAYOUTS}
            for _ in range(args.repeats):
                for layout, path in paths.items():
                    job = (write_file, path, layout, net, rows, group, args.clock)
                    write = pool.submit(*job).result()
                    passes[layout].append(
                        {"write": write, **read_pass(path, layout, net, args.clock)}
                    )
            first = None
            for layout, path in paths.items():
                row = row_of(net, path, passes[layout], first)
                first = first or row["got"]
                name = f"{net.name} ({net.values:,} values, {len(net.stored)} tensors)"
                print(
                    f"| {name} | {layout} | {group:,} | " + " | ".join(row["cells"]) + " |",
                    flush=True,
                )
            if net is NETWORKS[0]:
                examples = [example(path, layout, net) for layout, path in paths.items()]
    print(f"\nThe readers' lines (on the {NETWORKS[0].name}'s file), each run as shown:\n")
    print("\n".join(examples))


if __name__ == "__main__":
    main()
