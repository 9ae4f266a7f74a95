"""What choosing what is recorded costs, and what a flight recorder keeps (issue 21).

1. The CNN of the PyTorch issue (bench/torch_cnn.py's: a convolution, batch norm, ReLU, max
   pooling, dropout, a linear layer; 8 × 8 images, batches of 32, Adam, float32, one thread)
   trained without steptrace, then recorded with per-step figures alone (``every`` beyond the
   run: step 0's values only), ``keep_last=50`` and ``every=100``, side by side, CPU time of
   the process (its threads too), best of ``--repeat``. Goals: ≤ 1.05×, ≤ 1.15×, ≤ 1.1× the
   untraced loop. Beside each, its floor (bench/floor.py): the least a recorder built on
   PyTorch's hooks pays for the same figures and values, measured in the same run.
2. A network too big to record whole (three convolutions on 28 × 28 images, about 90 k
   parameters) trained for 10,000 steps with ``keep_last=50`` and
   ``trigger="loss_spike:10,nonfinite"``, a loss spike injected (one batch × 100,000): the trace
   stays under 100 MB and holds the spike's window. Every value of one of its rows is about
   1.1 million numbers, one column each: a part's footer then outgrows what Parquet readers
   accept, so the window keeps the last layers' values and parameters (``layers``,
   ``tensors``; ``--big-layers``, ``--big-tensors``).

    python bench/flight.py                  # both, printed as tables
    python bench/flight.py --steps 200 --big-steps 300 --json   # smaller, as JSON
    python bench/flight.py --big-steps 0    # the costs alone

Data are drawn (no download): images of noise, classes at random.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import floor  # bench/floor.py: the least a hook-based recorder pays, the yardstick
import torch_cnn  # bench/torch_cnn.py: the PyTorch issue's network and loop

BATCH = 32
GOALS = {"figures alone": 1.05, "keep_last=50": 1.15, "every=100": 1.10}
SPIKE_FACTOR = 1e5
#: Steps recorded before the steady state is timed (the run opened, its first step written).
SETTLED = 50
QUIET = 3.0
HANDOFF_WAIT = 0.3


def _big_cnn() -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 10),
    )  # fmt: skip


def _data(n: int) -> tuple[Any, Any]:
    import torch

    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _train(model: Any, steps: int, rec_args: dict[str, Any] | None, out: Path,
           spike_at: int | None = None) -> tuple[float, Any]:  # fmt: skip
    """Seconds (CPU of this process) for ``steps`` steps, recorded with ``rec_args`` if given."""
    import torch
    import torch.nn.functional as F

    import steptrace

    X, Y = _data(BATCH * 64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.process_time()
    rec = steptrace.torch.record(model, optimizer, out=out, **rec_args) if rec_args else None
    try:
        for s in range(steps):
            i = (s % 64) * BATCH
            x, y = X[i : i + BATCH], Y[i : i + BATCH]
            if s == spike_at:
                x = x * SPIKE_FACTOR  # one corrupted batch: the loss spikes
            optimizer.zero_grad()
            per_sample = F.cross_entropy(model(x), y, reduction="none")
            per_sample.mean().backward()
            if rec is not None:
                rec.step(x, y, per_sample)
            optimizer.step()
    finally:
        if rec is not None:
            rec.close()
    return time.process_time() - start, rec


def _settling(steps: int) -> int:
    """Steps recorded before the steady state is timed (at least 2: see :func:`_issue_cnn`)."""
    return max(2, min(SETTLED, steps // 2))


def _issue_cnn(steps: int, rec_args: dict[str, Any] | None, out: Path) -> tuple[float, float, Any]:
    """Seconds (CPU of this process) for ``steps`` steps of bench/torch_cnn.py's network and
    loop after 20 warm-up steps, recorded with ``rec_args`` if given: the whole (the run
    opened and closed inside the timing), and the steps after the first :data:`SETTLED`
    alone (the recording's steady state: the run open, its first steps handed over and
    written; the writer's thread is given :data:`QUIET` seconds for them, which the whole
    counts)."""
    import steptrace

    model, optimizer, x, y = torch_cnn._network()
    torch_cnn._train(model, optimizer, x, y, 20)
    first = _settling(steps)
    wait = steps >= 2 * SETTLED  # a run too short for a steady state (a harness check) waits not
    start = time.process_time()
    if rec_args is None:
        torch_cnn._train(model, optimizer, x, y, first)
        settled = time.process_time()
        torch_cnn._train(model, optimizer, x, y, steps - first)
        end = time.process_time()
        return end - start, end - settled, None
    with steptrace.torch.record(model, optimizer, out=out, loss="cross_entropy",
                                **rec_args) as rec:  # fmt: skip
        torch_cnn._train(model, optimizer, x, y, first - 2, rec)
        # Twice, a step after a pause hands the captured steps over (a chunk goes a quarter
        # second after the last at most), and the writer is given time to write them; the
        # second block makes it flush the first step's row group (its 15,381 columns). So the
        # writer's one-off costs (that row group, pyarrow's first import of pandas: ~1 s of
        # CPU together) fall in the whole run, not in the steady state.
        for _ in range(2):
            if wait:
                time.sleep(HANDOFF_WAIT)
            torch_cnn._train(model, optimizer, x, y, 1, rec)
            if wait:
                time.sleep(QUIET)
        settled = time.process_time()
        torch_cnn._train(model, optimizer, x, y, steps - first, rec)
        steady = time.process_time() - settled
    return time.process_time() - start, steady, rec  # process time: the sleep is not in it


def measure_costs(steps: int = 1_000, repeat: int = 2) -> dict[str, Any]:
    """CPU milliseconds per step of the issue's CNN untraced and recorded three ways (each the
    best of ``repeat``, the ways taken in turn), and the ratios."""
    import torch

    torch.set_num_threads(1)
    configs: dict[str, dict[str, Any] | None] = {
        "untraced": None,
        "figures alone": {"every": 10**9, "name": "figures"},
        "keep_last=50": {"keep_last": 50, "name": "flight"},
        "every=100": {"every": 100, "name": "every"},
    }
    out: dict[str, Any] = {"steps": steps, "repeat": repeat, "bytes": {}}
    best: dict[str, float] = {}
    steady: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            for label, args in configs.items():
                named = None if args is None else {**args, "name": f"{args['name']}-{i}"}
                seconds, settled, rec = _issue_cnn(steps, named, Path(tmp))
                best[label] = min(best.get(label, seconds), seconds)
                steady[label] = min(steady.get(label, settled), settled)
                if rec is not None:
                    out["bytes"][label] = _bytes(rec.path)
    out["per_step_ms"] = {k: 1e3 * v / steps for k, v in best.items()}
    out["steady_ms"] = {k: 1e3 * v / max(steps - _settling(steps), 1)
                        for k, v in steady.items()}  # fmt: skip
    for key, ms in (("ratio", out["per_step_ms"]), ("steady_ratio", out["steady_ms"])):
        out[key] = {k: v / ms["untraced"] for k, v in ms.items() if k != "untraced"}
    return out


def measure_big(
    steps: int = 10_000,
    keep_last: int = 50,
    layers: list[int] | None = None,
    tensors: list[str] | None = None,
) -> dict[str, Any]:
    """The big network flight-recorded for ``steps`` steps, a spike injected at 60 %."""
    import torch

    import steptrace

    torch.set_num_threads(1)
    spike = int(steps * 0.6)
    model = _big_cnn()
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        args = {"keep_last": keep_last, "trigger": "loss_spike:10,nonfinite", "name": "big",
                "layers": layers, "tensors": tensors}  # fmt: skip
        seconds, rec = _train(model, steps, args, Path(tmp), spike_at=spike)
        info = json.loads((rec.path / "_run.json").read_text())
        held = sorted(set(steptrace.load_trace(rec.path, columns=["step"])["step"]))
        fired = info.get("triggers", [])
        spikes = [f for f in fired if f["kind"] == "loss_spike"]
        return {
            "params": params, "steps": steps, "spike_at": spike, "keep_last": keep_last,
            "seconds": seconds, "bytes": _bytes(rec.path), "triggers": fired,
            "spike_window_held": bool(spikes) and all(
                s in held for s in range(spikes[0]["window"][0], spikes[0]["window"][1] + 1)
            ),
            "spike_step": spikes[0]["step"] if spikes else None,
            "steps_held": len(held), "figures": len(steptrace.load_scalars(rec.path)),
        }  # fmt: skip


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000, help="steps of each cost run")
    parser.add_argument("--repeat", type=int, default=2, help="best of R runs of each")
    parser.add_argument("--big-steps", type=int, default=10_000, help="0: skip it")
    parser.add_argument("--keep-last", type=int, default=50)
    # The pooling's output (layer 9) and the linear layer (11); the flattening (10) between
    # them only holds layer 9's values again, reshaped.
    parser.add_argument("--big-layers", default="9,11", help="the layers the window keeps")
    parser.add_argument("--big-tensors", default="loss,y,o*,w*_after,b*_after")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    costs = measure_costs(args.steps, args.repeat)
    costs["floor"] = floor.measure(args.steps, args.repeat)["ratio"]
    big = None
    if args.big_steps:
        layers = [int(k) for k in args.big_layers.split(",")] if args.big_layers else None
        tensors = args.big_tensors.split(",") if args.big_tensors else None
        big = measure_big(args.big_steps, args.keep_last, layers, tensors)
    if args.json:
        print(json.dumps({"costs": costs, "big": big}, indent=2))
        return
    print(f"The PyTorch issue's CNN, batches of {BATCH}, Adam, float32, {costs['steps']:,} steps "
          f"(CPU ms a step, best of {costs['repeat']}; steady: after the first {SETTLED} "
          "recorded, the run's opening and closing left out)")  # fmt: skip
    print(f"  {'':<18} {'whole run':>16}  {'steady':>15}  {'floor':>6}")
    print(f"  untraced           {costs['per_step_ms']['untraced']:8.2f}  "
          f"{'':6}  {costs['steady_ms']['untraced']:8.2f}")  # fmt: skip
    for label, goal in GOALS.items():
        ms, ratio = costs["per_step_ms"][label], costs["ratio"][label]
        steady, steady_ratio = costs["steady_ms"][label], costs["steady_ratio"][label]
        size = costs["bytes"][label] / 2**20
        print(f"  {label:<18} {ms:8.2f}  {ratio:5.2f}×  {steady:8.2f}  {steady_ratio:5.2f}×  "
              f"{costs['floor'][label]:5.2f}×  (goal ≤ {goal}×)  {size:7.1f} MiB")  # fmt: skip
    if big is None:
        return
    print(f"\nBig network: {big['params']:,} parameters, {big['steps']:,} steps, keep_last "
          f"{big['keep_last']}, spike injected at step {big['spike_at']}")  # fmt: skip
    print(
        f"  trace {big['bytes'] / 2**20:.1f} MiB (goal < 100 MB); {big['steps_held']} steps "
        f"held; per-step figures of {big['figures']:,} steps; {big['seconds']:.0f} s CPU"
    )
    print(f"  spike's window held: {big['spike_window_held']} (fired at {big['spike_step']})")
    for f in big["triggers"]:
        print(f"    {f['kind']} at step {f['step']}: window {f['window']} ({f['reason']})")


if __name__ == "__main__":
    main()
