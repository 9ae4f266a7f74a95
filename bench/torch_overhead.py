"""What recording a PyTorch loop with ``steptrace.torch.record`` costs.

The 3-2-1 network (linear with bias, ReLU, linear with bias) of examples/mlp-3-2-1.json,
trained by PyTorch in float64, one step per data input (SGD), over a dataset of 1,000 rows:
the same loop timed without and with ``steptrace.torch.record`` around it. The goal is at most
1.5× (issue 12). Recording writes every value (~60 columns a row) to a trace in a temporary
folder; the time includes opening and closing the run (its last flush, and for a learned plan
writing the plan into every part).

    python bench/torch_overhead.py             # prints the table; --steps N, --repeat R
    python bench/torch_overhead.py --json      # the figures as JSON; --clock wall

``measure()`` is what bench/run.py calls for its row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODEL_FILE = REPO / "examples" / "mlp-3-2-1.json"
GOAL = 1.5


def _network() -> tuple[Any, Any, Any, Any]:
    """The 3-2-1 network with the model file's weights, its optimizer, and a dataset."""
    import torch
    from torch import nn

    spec = json.loads(MODEL_FILE.read_text(encoding="utf-8"))
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    with torch.no_grad():
        for module, layer in ((model[0], spec["layers"][1]), (model[2], spec["layers"][3])):
            weights = [[float(Fraction(v)) for v in row] for row in layer["weights"]]
            module.weight.copy_(torch.tensor(weights, dtype=torch.float64))
            module.bias.copy_(torch.tensor([float(Fraction(v)) for v in layer["biases"]],
                                           dtype=torch.float64))  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1_000, 3, dtype=torch.float64, generator=generator)
    y = (x @ torch.tensor([[0.5], [-0.25], [0.75]], dtype=torch.float64)) + 0.1
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    return model, optimizer, x, y


def _train(model: Any, optimizer: Any, x: Any, y: Any, steps: int, rec: Any = None) -> None:
    """Per-sample SGD as the issue writes it (``rec.step`` when recording)."""
    n = len(x)
    for s in range(steps):
        xi, yi = x[s % n : s % n + 1], y[s % n : s % n + 1]
        optimizer.zero_grad()
        out = model(xi)
        per_sample = ((out - yi) ** 2).sum(dim=1) / 2
        per_sample.mean().backward()
        if rec is not None:
            rec.step(xi, yi, per_sample)
        optimizer.step()


def measure(steps: int = 100_000, repeat: int = 3, clock: str = "cpu") -> dict[str, Any]:
    """Microseconds per step without and with recording (best of ``repeat``), and the ratios:
    ``record(model, optimizer)`` as the issue calls it (the plan learned, written into every
    part when the run closes), and with the plan given (``dataset=``, ``epochs=``). ``clock``
    ``cpu`` counts this process's CPU time (all its threads), steadier than ``wall`` on a
    shared machine; the whole recording is timed, opening and closing included."""
    import torch

    import steptrace

    torch.set_num_threads(1)  # a tiny network: threads only add overhead
    now = time.process_time if clock == "cpu" else time.perf_counter
    times: dict[str, list[float]] = {"plain": [], "learned": [], "declared": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            model, optimizer, x, y = _network()
            _train(model, optimizer, x, y, 500)  # warm up
            t0 = now()
            _train(model, optimizer, x, y, steps)
            times["plain"].append((now() - t0) / steps)
            for kind in ("learned", "declared"):
                model, optimizer, x, y = _network()
                plan: dict[str, Any] = {}
                if kind == "declared":
                    plan = {"dataset": (x, y), "epochs": -(-steps // len(x)), "batch_size": 1}
                t0 = now()
                with steptrace.torch.record(
                    model, optimizer, out=tmp, name=f"bench-{kind}-{i}", **plan
                ) as rec:
                    _train(model, optimizer, x, y, steps, rec)
                times[kind].append((now() - t0) / steps)
                rows = steptrace.open_trace(rec.path).num_rows
                assert rows == steps, (rows, steps)
    best = {k: min(v) * 1e6 for k, v in times.items()}
    return {
        "steps": steps,
        "clock": clock,
        "plain_us_per_step": best["plain"],
        "recorded_us_per_step": best["learned"],
        "declared_us_per_step": best["declared"],
        "ratio": best["learned"] / best["plain"],
        "declared_ratio": best["declared"] / best["plain"],
        "median_ratio": statistics.median(
            r / p for r, p in zip(times["learned"], times["plain"], strict=True)
        ),
        "goal": GOAL,
        "torch": str(torch.__version__),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.steps, args.repeat, args.clock)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"PyTorch {result['torch']}, 3-2-1 network, float64, per-sample SGD, "
          f"{result['steps']} steps, {args.clock} time (best of {args.repeat})")  # fmt: skip
    print(f"  without steptrace:            {result['plain_us_per_step']:7.1f} µs/step")
    print(f"  record(model, optimizer):     {result['recorded_us_per_step']:7.1f} µs/step  "
          f"{result['ratio']:.2f}×")  # fmt: skip
    print(f"  record(..., dataset, epochs): {result['declared_us_per_step']:7.1f} µs/step  "
          f"{result['declared_ratio']:.2f}×")  # fmt: skip
    verdict = "within" if result["ratio"] <= GOAL else "over"
    print(f"  goal ≤ {GOAL}×: {verdict} (median ratio {result['median_ratio']:.2f}×)")


if __name__ == "__main__":
    main()
