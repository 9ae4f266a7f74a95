"""What recording a PyTorch CNN with ``steptrace.torch.record`` costs (issue 20).

The issue's network on 8 × 8 grey images: Conv2d(1, 8, 3, padding=1), BatchNorm2d, ReLU,
MaxPool2d(2), Dropout(0.25), Flatten, Linear(128, 10); Adam, cross-entropy, batches of 32,
float32, one thread. The same loop is timed without and with ``record`` around it, every value
recorded (about 15,400 values a row: each layer's output and δ, each row's gradients, the
parameters, the gradients Adam used and its state before and after each step, batch norm's
statistics, dropout's masks), the run opened and closed inside the timing. Two more rows say
where the time goes: the adapter's own hooks and copies alone (``capture``), and those with the
chunk turned into the trace's values (``values``), neither writing anything. The goal is at most
2× the loop's time (and 1.5× for the 3-2-1 network: bench/torch_overhead.py).

    python bench/torch_cnn.py                 # the table; --steps N, --repeat R, --clock wall
    python bench/torch_cnn.py --steps 320     # whole epochs: a learned plan keeps its numbering
    python bench/torch_cnn.py --json          # the figures as JSON
    python bench/torch_cnn.py --quick         # a few steps: that it runs
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL = 2.0
BATCH = 32
ROWS = 1_024


def _network() -> tuple[Any, Any, Any, Any]:
    """The issue's CNN, its optimizer, and a dataset of images and classes."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(0.25), nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(ROWS, 1, 8, 8, generator=generator)
    y = torch.randint(0, 10, (ROWS,), generator=generator)
    return model, optimizer, x, y


def _train(model: Any, optimizer: Any, x: Any, y: Any, steps: int, rec: Any = None) -> None:
    """Adam on the cross-entropy, batches of 32 in order (``rec.step`` when recording)."""
    from torch.nn import functional as F

    for s in range(steps):
        i = (s * BATCH) % ROWS
        xb, yb = x[i : i + BATCH], y[i : i + BATCH]
        optimizer.zero_grad()
        per_sample = F.cross_entropy(model(xb), yb, reduction="none")
        per_sample.mean().backward()
        if rec is not None:
            rec.step(xb, yb, per_sample)
        optimizer.step()


def _without_writing(values: bool) -> Any:
    """A recorder that captures each chunk (and with ``values`` makes the trace's values of
    it) but writes nothing: what the adapter itself costs."""
    from steptrace.adapters.torch import recorder
    from steptrace.adapters.torch.values import chunk_values

    class Captured(recorder.Recorder):
        done = 0

        def _written(self) -> int:
            return self.done

        def _write_chunk(self) -> None:
            chunk = self.capture.take()
            if chunk is None:
                return
            self.done += len(chunk.m)
            if values:
                assert self.graph is not None and self.spec is not None
                chunk_values(self.graph, self.optim, self.spec.tensors, chunk)

    return Captured


def _recorded(kind: str, steps: int, out: str, i: int, now: Any) -> tuple[float, int, int]:
    """Seconds a step, values a row and bytes written for one recording of ``kind``."""
    import steptrace
    from steptrace.adapters.torch import RunArgs

    model, optimizer, x, y = _network()
    _train(model, optimizer, x, y, 20)  # warm up, as the plain loop is
    plan: dict[str, Any] = {}
    if kind == "declared":
        plan = {"dataset": (x, y), "epochs": -(-steps * BATCH // ROWS), "batch_size": BATCH}
    t0 = now()
    if kind in ("capture", "values"):
        args = RunArgs(out, f"{kind}-{i}", "float32", "cross_entropy", None, None, None, None,
                       None, None, 1.0)  # fmt: skip
        rec = _without_writing(kind == "values")(model, optimizer, args)
        with rec:
            _train(model, optimizer, x, y, steps, rec)
        return (now() - t0) / steps, 0, 0
    with steptrace.torch.record(model, optimizer, out=out, name=f"{kind}-{i}",
                                loss="cross_entropy", **plan) as rec:  # fmt: skip
        _train(model, optimizer, x, y, steps, rec)
    elapsed = now() - t0
    trace = steptrace.open_trace(rec.path)
    assert trace.num_rows == steps * BATCH, (trace.num_rows, steps)
    width = sum(t.size for t in trace.tensors)
    size = sum(p.stat().st_size for p in Path(rec.path).glob("part-*.parquet"))
    return elapsed / steps, width, size


def measure(steps: int = 300, repeat: int = 2, clock: str = "cpu") -> dict[str, Any]:
    """Milliseconds a step without and with recording (best of ``repeat``) and the ratios.
    ``clock`` ``cpu`` counts this process's CPU time (its threads: the trace is written by a
    thread of its own), ``wall`` the time that passes."""
    import torch

    torch.set_num_threads(1)
    now = time.process_time if clock == "cpu" else time.perf_counter
    kinds = ("capture", "values", "learned", "declared")
    times: dict[str, list[float]] = {"plain": [], **{k: [] for k in kinds}}
    width = size = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            model, optimizer, x, y = _network()
            _train(model, optimizer, x, y, 20)
            t0 = now()
            _train(model, optimizer, x, y, steps)
            times["plain"].append((now() - t0) / steps)
            for kind in kinds:
                seconds, w, s = _recorded(kind, steps, tmp, i, now)
                times[kind].append(seconds)
                width, size = (w, s) if w else (width, size)
    best = {k: min(v) * 1e3 for k, v in times.items()}
    return {
        "steps": steps, "batch": BATCH, "clock": clock, "torch": str(torch.__version__),
        "plain_ms_per_step": best["plain"],
        **{f"{k}_ms_per_step": best[k] for k in kinds},
        **{f"{k}_ratio": best[k] / best["plain"] for k in kinds},
        "values_per_row": width, "bytes_per_step": size / steps if steps else 0.0,
        "goal": GOAL,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="10 steps, once")
    args = parser.parse_args()
    steps, repeat = (10, 1) if args.quick else (args.steps, args.repeat)
    result = measure(steps, repeat, args.clock)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"PyTorch {result['torch']}, issue 20's CNN, float32, Adam, cross-entropy, batches of "
          f"{BATCH}, {steps} steps, {args.clock} time (best of {repeat})")  # fmt: skip
    print(f"  without steptrace:                 {result['plain_ms_per_step']:8.2f} ms/step")
    rows = [("capture", "hooks and copies only, nothing written"),
            ("values", "… and the trace's values made"),
            ("learned", "record(model, optimizer)"),
            ("declared", "record(..., dataset, epochs)")]  # fmt: skip
    for kind, label in rows:
        print(f"  {label:<35}{result[f'{kind}_ms_per_step']:8.2f} ms/step  "
              f"{result[f'{kind}_ratio']:6.2f}×")  # fmt: skip
    print(f"  {result['values_per_row']:,} values a row; {result['bytes_per_step'] / 1e3:,.0f} kB "
          "written a step")  # fmt: skip
    verdict = "within" if result["learned_ratio"] <= GOAL else "over"
    print(f"  goal ≤ {GOAL}×: {verdict}")


if __name__ == "__main__":
    main()
