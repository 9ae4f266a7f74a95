"""Folders of runs for the dashboard's tests: the article, a learning-rate comparison, a run
that diverges, runs of images, and the files that are not runs (corrupt, foreign, newer
format)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import steptrace
from tests.image_runs import CNN, write_images

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


def batches(out: Path, name: str = "batches") -> Path:
    """The article's model and data, exact, α = 1, the three data inputs in one mini-batch a
    step, two epochs: step 1 is data inputs 4–6."""
    return steptrace.record(
        "seed", lr="1", numerics="exact", batch_size=3, epochs=2, out=out, name=name
    ).path


def narrow_loss(out: Path, name: str = "narrow") -> Path:
    """A float64 run whose loss stays between 0.118 and 0.136 over its 6 steps: one input of
    1, targets near 1/2, starting from w = 0 (loss ½·0.52² at step 0)."""
    csv = out.parent / "half.csv"
    csv.write_text("a,y\n1,0.52\n1,0.51\n1,0.5\n", encoding="utf-8")
    return steptrace.record(
        csv, lr="0.005", numerics="float64", init="0", epochs=2, out=out, name=name
    ).path


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


#: examples/shapes.json: input(1×8×8) → conv2d(2, 3×3, bias) → relu → maxpool2d(2) → flatten →
#: linear(1, bias), for the embedded crosses and squares.
SHAPES = Path(__file__).resolve().parent.parent / "examples" / "shapes.json"


def shapes(out: Path, name: str = "shapes", lr: str = "0.05", epochs: int = 2) -> Path:
    """The README's image run: examples/shapes.json on the embedded crosses and squares,
    float64, seed 1 (16 steps an epoch)."""
    return steptrace.record(
        "shapes", lr=lr, numerics="float64", model=SHAPES, seed=1, epochs=epochs, out=out,
        name=name,
    ).path  # fmt: skip


def cnn(out: Path, name: str = "cnn", lr: str = "1/10") -> Path:
    """tests/image_runs.py's network on its two images, exact, one epoch (two steps): its
    values are worked out in tests/test_views.py."""
    data = write_images(out.parent / "images.csv")
    return steptrace.record(
        data, lr=lr, target="t", numerics="exact", model=CNN, out=out, name=name
    ).path


class Growing:
    """A run written part by part by the test itself, as a recorder would write it: its lock
    held (so readers see it ``running``), ``_run.json`` incomplete until :meth:`finish`, each
    part renamed into place whole. Its rows are those of a float64 run of the article's data
    (``epochs`` × 3 steps), cut into ``parts`` parts of whole steps."""

    def __init__(self, out: Path, name: str = "growing", epochs: int = 200, parts: int = 4,
                 lr: str = "1e-9") -> None:  # fmt: skip
        import fcntl

        source = steptrace.record(
            "seed", lr=lr, numerics="float64", init=MOVING_INIT, epochs=epochs,
            out=out.parent / f"{name}-source", name=name,
        ).path  # fmt: skip
        rows = pa.concat_tables([pq.read_table(f) for f in sorted(source.glob("part-*.parquet"))])
        steps = rows["step"].to_numpy()
        cuts = [int(c) for c in (steps.max() + 1) * (1 + np.arange(parts)) // parts]
        bounds = np.searchsorted(steps, [0, *cuts])
        self.chunks = [rows.slice(a, b - a) for a, b in itertools.pairwise(bounds)]
        self.last_steps = [c - 1 for c in cuts]
        self.final = json.loads((source / "_run.json").read_text(encoding="utf-8"))
        self.path = out / name
        self.path.mkdir()
        self.flushed = 0
        started = {**self.final, "status": "incomplete", "reason": None, "summary": {}}
        (self.path / "_run.json").write_text(json.dumps(started), encoding="utf-8")
        self._lock = open(self.path / ".lock", "a")  # noqa: SIM115 - held until finish()
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    @property
    def last(self) -> int:
        """The last step flushed so far (-1 before the first flush)."""
        return self.last_steps[self.flushed - 1] if self.flushed else -1

    def flush(self) -> int:
        """Put the next part in place, whole (written aside, then renamed); its last step."""
        tmp = self.path / f".part-{self.flushed:06d}.parquet.tmp"
        pq.write_table(self.chunks[self.flushed], tmp, row_group_size=999)
        tmp.rename(self.path / f"part-{self.flushed:06d}.parquet")
        self.flushed += 1
        return self.last

    def finish(self, status: str = "complete") -> None:
        """End the run: flush what is left (when complete), write its status, let go of the
        lock."""
        while status == "complete" and self.flushed < len(self.chunks):
            self.flush()
        final = self.final if status == "complete" else {
            **self.final, "status": status, "reason": "interrupted by the test", "summary": {}
        }  # fmt: skip
        (self.path / "_run.json").write_text(json.dumps(final), encoding="utf-8")
        self._lock.close()

    def __enter__(self) -> Growing:
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.close()
