"""The least any recorder built on PyTorch's hooks pays for issue 21's three ways of recording,
on the same CNN and loop as bench/flight.py: a yardstick for its goals (≤ 1.05×, ≤ 1.15×,
≤ 1.1× the untraced loop), with no steptrace in it.

Each floor does only what its way must do, in the fewest PyTorch calls found:

- **figures alone**: a forward hook on each leaf module keeps its output (and asks for its
  gradient: a NaN may first appear in a δ); after ``backward()`` each output's and each δ's
  smallest and largest value (``aminmax``, the cheapest reduction of a tensor on CPU: the
  largest |o| and whether anything is non-finite), ‖grad‖ of every parameter at once
  (``_foreach_norm``) and the parameters kept; after ``optimizer.step()`` ‖w‖ and ‖Δw‖ at
  once, and every figure read back in one call. No check that the network took the same
  path, no sample numbers, no batch norm statistics, no Adam state, nothing written until
  the end;
- **keep_last=50**: the same, and every tensor of the step (outputs, δ, parameters, their
  gradients, Adam's moments) copied into a ring of 50 preallocated slots in one
  ``_foreach_copy_``;
- **every=100**: the figures, and every 100th step's values (one row per image: x, every
  output and δ; the parameters, gradients and Adam's moments repeated on each row, as
  steptrace's rows hold them) written to Parquet, one column per value, in row groups of
  1,024 rows (LZ4, no dictionary, no statistics: the cheapest encoding pyarrow has).

    python bench/floor.py                    # the table (CPU of the process, best of 2)
    python bench/floor.py --steps 200 --json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch_cnn  # bench/torch_cnn.py: the PyTorch issue's network and loop

GOALS = {"figures alone": 1.05, "keep_last=50": 1.15, "every=100": 1.10}
KEEP_LAST = 50
EVERY = 100
GROUP_ROWS = 1_024


class Floor:
    """A minimal recorder with steptrace's ``rec.step(x, y, per_sample)`` call (see the
    module docstring); ``kind`` one of :data:`GOALS`."""

    def __init__(self, model: Any, optimizer: Any, kind: str, out: Path) -> None:
        import torch

        self.torch, self.kind, self.out = torch, kind, out
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = optimizer
        leaves = [m for m in model.modules() if not list(m.children())]
        self.handles = [m.register_forward_hook(self._output) for m in leaves]
        self.handles.append(optimizer.register_step_post_hook(self._after))
        self.before = [p.detach().clone() for p in self.params]
        self.outputs: list[Any] = []
        self.ends: list[Any] = []
        self.grad_norms: list[Any] = []
        self.figures: list[list[float]] = []
        self.step_number = 0
        self.ring: list[list[Any]] | None = None  # keep_last: a slot of copies a step
        self.held: list[Any] = []  # every=100: the held steps' rows, on the host
        self.writer: Any = None

    def _output(self, module: Any, args: Any, output: Any) -> None:
        if output.requires_grad:
            output.retain_grad()
        self.outputs.append(output)

    def step(self, x: Any, y: Any, per_sample: Any) -> None:
        torch = self.torch
        with torch.no_grad():
            parts = [x, *self.outputs, *(o.grad for o in self.outputs if o.grad is not None)]
            self.ends = [torch.aminmax(p) for p in parts]
            grads = [p.grad for p in self.params]
            self.grad_norms = list(torch._foreach_norm(grads))
            torch._foreach_copy_(self.before, self.params)
            self.loss = per_sample.mean()
            if self.kind == "keep_last=50":
                self._keep([*parts, *self.params, *grads])
            elif self.kind == "every=100" and self.step_number % EVERY == 0:
                self._hold(x.shape[0], parts, grads)

    def _keep(self, tensors: list[Any]) -> None:
        if self.ring is None:
            self.ring = [[t.detach().clone() for t in tensors] for _ in range(KEEP_LAST)]
        self.torch._foreach_copy_(self.ring[self.step_number % KEEP_LAST], tensors)

    def _hold(self, m: int, parts: list[Any], grads: list[Any]) -> None:
        torch = self.torch
        state = [t for p in self.params for t in self.optimizer.state.get(p, {}).values()
                 if t.dim()]  # fmt: skip
        per_step = torch.cat([t.reshape(-1) for t in (*self.params, *grads, *state)])
        rows = torch.cat([*(p.reshape(m, -1) for p in parts), per_step.expand(m, -1)], dim=1)
        self.held.append(rows.numpy().copy())
        if sum(len(r) for r in self.held) >= GROUP_ROWS:
            self._write()

    def _write(self) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        matrix = np.concatenate(self.held).T.copy()  # a column per value
        self.held = []
        table = pa.Table.from_arrays(list(matrix), names=[f"v{i}" for i in range(len(matrix))])
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.out / "values.parquet", table.schema,
                                           compression="lz4", use_dictionary=False,
                                           write_statistics=False)  # fmt: skip
        self.writer.write_table(table)

    def _after(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        torch = self.torch
        with torch.no_grad():
            w = torch._foreach_norm(self.params)
            dw = torch._foreach_norm(torch._foreach_sub(self.params, self.before))
            ends = [e for pair in self.ends for e in pair]
            self.figures.append(torch.stack([*ends, *self.grad_norms, *w, *dw, self.loss])
                                .tolist())  # fmt: skip
        self.outputs = []
        self.step_number += 1

    def close(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for handle in self.handles:
            handle.remove()
        if self.held:
            self._write()
        if self.writer is not None:
            self.writer.close()
        columns = list(zip(*self.figures, strict=True))
        table = pa.Table.from_arrays([pa.array(c) for c in columns],
                                     names=[f"f{i}" for i in range(len(columns))])  # fmt: skip
        pq.write_table(table, self.out / "figures.parquet")


def measure(steps: int = 1_000, repeat: int = 2) -> dict[str, Any]:
    """CPU milliseconds a step of the loop untraced and under each floor (best of
    ``repeat``, taken in turn), after 20 warm-up steps, and the ratios."""
    import torch

    torch.set_num_threads(1)
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            for kind in ("untraced", *GOALS):
                model, optimizer, x, y = torch_cnn._network()
                torch_cnn._train(model, optimizer, x, y, 20)
                out = Path(tmp) / f"{i}-{kind[:4]}"
                out.mkdir()
                start = time.process_time()
                rec = None if kind == "untraced" else Floor(model, optimizer, kind, out)
                torch_cnn._train(model, optimizer, x, y, steps, rec)
                if rec is not None:
                    rec.close()
                seconds = time.process_time() - start
                best[kind] = min(best.get(kind, seconds), seconds)
    ms = {k: 1e3 * v / steps for k, v in best.items()}
    return {"steps": steps, "repeat": repeat, "per_step_ms": ms,
            "ratio": {k: v / ms["untraced"] for k, v in ms.items() if k != "untraced"}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.steps, args.repeat)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"The least a hook-based recorder pays: the issue's CNN, {result['steps']:,} steps "
          f"(CPU ms a step, best of {result['repeat']})")  # fmt: skip
    print(f"  untraced           {result['per_step_ms']['untraced']:8.2f}")
    for kind, goal in GOALS.items():
        print(f"  {kind:<18} {result['per_step_ms'][kind]:8.2f}  {result['ratio'][kind]:5.2f}×"
              f"  (goal ≤ {goal}×)")  # fmt: skip


if __name__ == "__main__":
    main()
