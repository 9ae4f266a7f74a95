"""Issue 11's yardsticks: the 3-2-1 network of ``examples/mlp-3-2-1.json`` trained per sample
in float64 without steptrace.

    o = W2 · ReLU(W1 · x + b1) + b2,   loss = ½ (o − y)²,   p ← p − α · ∂loss/∂p

- :func:`plain_sgd` is the loop as one writes it by hand: weights in lists of floats, one
  sample at a time, nothing recorded, no numpy.
- :func:`unrolled_sgd` is the same loop written out for this one network, a local variable per
  weight: the fastest Python there is for it, and what steptrace's compiled walk generates.
- :func:`torch_sgd` is PyTorch's usual training loop (``nn.Sequential``, ``torch.optim.SGD``)
  in ``torch.float64``.

Both plain loops perform the series' operations in the series' order — dot products added left
to right, the bias added last, ReLU'(0) = 1, every gradient taken at the step's weights before
any is updated, ``w − α·grad`` — so they end with steptrace's weights bit for bit, which the
benchmark checks. The dataset is a CSV that both read (steptrace exactly, these loops with
``float()``: the same doubles).
"""

from __future__ import annotations

import csv
import json
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

MODEL = Path(__file__).resolve().parents[1] / "examples" / "mlp-3-2-1.json"
LR = "0.01"
#: Samples in the dataset; a run of N rows is N / SAMPLES epochs.
SAMPLES = 1_000

Vector = list[float]
Weights = tuple[list[Vector], Vector, Vector, float]  # W1 (2 × 3), b1, W2 (1 × 2, flat), b2
Data = list[tuple[Vector, float]]


def write_dataset(path: Path, rows: int = SAMPLES, seed: int = 0) -> Path:
    """A CSV of ``rows`` samples (a, b, c → y) of unit scale: a teacher 3-2-1 network plus
    noise, three decimals each. With the noise, per-sample SGD keeps every weight moving in
    every bit, as in real training (a converged, constant trace would flatter every figure)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (rows, 3))
    h1 = np.maximum(0, 0.8 * x[:, 0] - 0.5 * x[:, 1] + 0.3 * x[:, 2] + 0.1)
    h2 = np.maximum(0, -0.4 * x[:, 0] + 0.9 * x[:, 1] + 0.6 * x[:, 2])
    y = 1.5 * h1 - 0.7 * h2 + 0.2 + rng.normal(0, 0.1, rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["a", "b", "c", "y"])
        for row, target in zip(x, y, strict=True):
            out.writerow([f"{v:.3f}" for v in (*row, target)])
    return path


def read_dataset(path: Path) -> Data:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [([float(v) for v in row[:-1]], float(row[-1])) for row in rows]


def initial_weights(model: Path = MODEL) -> Weights:
    """The model file's weights and biases as floats (each exact text rounded once)."""
    linear = [layer for layer in json.loads(model.read_text())["layers"] if "weights" in layer]
    first, second = linear

    def floats(texts: list[str]) -> Vector:
        return [float(Fraction(t)) for t in texts]

    return (
        [floats(row) for row in first["weights"]],
        floats(first["biases"]),
        floats(second["weights"][0]),
        float(Fraction(second["biases"][0])),
    )


def flat(weights: Weights) -> Vector:
    """W1 row by row, b1, W2, b2: the order of steptrace's parameters."""
    w1, b1, w2, b2 = weights
    return [*w1[0], *w1[1], *b1, *w2, b2]


def _dot(w: Vector, x: Vector) -> float:
    total = w[0] * x[0]
    for i in range(1, len(w)):
        total = total + w[i] * x[i]
    return total


def plain_sgd(data: Data, weights: Weights, lr: float, epochs: int) -> Weights:
    """Per-sample SGD on lists of floats, nothing recorded."""
    w1, b1, w2, b2 = weights
    for _ in range(epochs):
        for x, y in data:
            # forward: z = W1·x + b1, h = ReLU(z), o = W2·h + b2
            z = [_dot(row, x) + b for row, b in zip(w1, b1, strict=True)]
            h = [zj if zj >= 0 else 0.0 for zj in z]
            o = _dot(w2, h) + b2
            # backward: δ = o − y (the derivative of ½(o − y)²), δz_j = δ·W2_j where z_j ≥ 0
            d = o - y
            dz = [d * w if zj >= 0 else 0.0 for w, zj in zip(w2, z, strict=True)]
            # update, every gradient taken at this step's weights
            w1 = [
                [w - lr * (dj * xi) for w, xi in zip(row, x, strict=True)]
                for row, dj in zip(w1, dz, strict=True)
            ]
            b1 = [b - lr * dj for b, dj in zip(b1, dz, strict=True)]
            w2 = [w - lr * (d * hj) for w, hj in zip(w2, h, strict=True)]
            b2 = b2 - lr * d
    return w1, b1, w2, b2


def unrolled_sgd(data: Data, weights: Weights, lr: float, epochs: int) -> Weights:
    """:func:`plain_sgd` written out for the 3-2-1 network, one local variable per weight."""
    ((p0, p1, p2), (p3, p4, p5)), (p6, p7), (p8, p9), p10 = weights
    rows = [(*x, y) for x, y in data]
    for _ in range(epochs):
        for x0, x1, x2, y in rows:
            z0 = p0 * x0 + p1 * x1 + p2 * x2 + p6
            z1 = p3 * x0 + p4 * x1 + p5 * x2 + p7
            open0, open1 = z0 >= 0, z1 >= 0
            h0 = z0 if open0 else 0.0
            h1 = z1 if open1 else 0.0
            d = p8 * h0 + p9 * h1 + p10 - y
            d0 = d * p8 if open0 else 0.0
            d1 = d * p9 if open1 else 0.0
            p0, p1, p2 = p0 - lr * (d0 * x0), p1 - lr * (d0 * x1), p2 - lr * (d0 * x2)
            p3, p4, p5 = p3 - lr * (d1 * x0), p4 - lr * (d1 * x1), p5 - lr * (d1 * x2)
            p6, p7 = p6 - lr * d0, p7 - lr * d1
            p8, p9, p10 = p8 - lr * (d * h0), p9 - lr * (d * h1), p10 - lr * d
    return [[p0, p1, p2], [p3, p4, p5]], [p6, p7], [p8, p9], p10


def torch_sgd(data: Data, weights: Weights, lr: float, steps: int) -> tuple[float, Weights]:
    """PyTorch's training loop for the same network, float64, one sample per step, for
    ``steps`` steps: seconds taken (model built and data converted beforehand) and weights."""
    import torch
    from torch import nn

    w1, b1, w2, b2 = weights
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(w1, dtype=torch.float64))
        model[0].bias.copy_(torch.tensor(b1, dtype=torch.float64))
        model[2].weight.copy_(torch.tensor([w2], dtype=torch.float64))
        model[2].bias.copy_(torch.tensor([b2], dtype=torch.float64))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    xs = torch.tensor([x for x, _ in data], dtype=torch.float64)
    ys = torch.tensor([[y] for _, y in data], dtype=torch.float64)
    n = len(data)
    start = time.perf_counter()
    for step in range(steps):
        x, y = xs[step % n], ys[step % n]
        optimizer.zero_grad()
        loss = 0.5 * ((model(x) - y) ** 2).sum()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    w = [p.detach().tolist() for p in model.parameters()]
    return seconds, (w[0], w[1], w[2][0], w[3][0])
