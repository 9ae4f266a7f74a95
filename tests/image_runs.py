"""A small image network and its data, shared by the tests of the tools that read image runs.

Two 2 × 4 × 4 images (pixels in quarters, read exactly) and input [2, 4, 4] → conv2d (2
channels, 3 × 3, with bias) → relu → maxpool2d 2 → flatten → linear 1. Channel 0's kernel is
all −1/4 with bias −1, so on these non-negative pixels its ReLU never opens: a dead channel.
Channel 1's kernel is non-negative, so its ReLU is always open.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import steptrace

SHAPE = (2, 4, 4)
PIXELS = 2 * 4 * 4
#: Each image's pixels, row-major (channel, row, column), in quarters; then its target.
IMAGES = [
    ([str((i % 5) / 4) for i in range(PIXELS)], "1"),
    ([str(((3 * i) % 5) / 4) for i in range(PIXELS)], "0"),
]

_DEAD = [[["-1/4"] * 3] * 3] * 2  # every input channel, every position
_OPEN = [
    [["0", "1/4", "0"], ["1/4", "1/2", "1/4"], ["0", "1/4", "0"]],
    [["0", "0", "0"], ["0", "1/4", "0"], ["0", "0", "0"]],
]
CNN: dict[str, Any] = {
    "layers": [
        {"type": "input", "shape": list(SHAPE)},
        {"type": "conv2d", "out": 2, "kernel": 3, "bias": True,
         "weights": [_DEAD, _OPEN], "biases": ["-1", "0"]},
        {"type": "relu"},
        {"type": "maxpool2d", "size": 2},
        {"type": "flatten"},
        {"type": "linear", "out": 1, "bias": True,
         "weights": [["1/8", "-1/8", "1/4", "0", "1/8", "1/8", "-1/4", "1/2"]], "biases": ["0"]},
    ],
    "loss": "squared_error",
}  # fmt: skip


def write_images(path: Path) -> Path:
    """The two images as a CSV file: pixel columns p1 … p32, then the target t."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([f"p{i}" for i in range(1, PIXELS + 1)] + ["t"])
        for pixels, target in IMAGES:
            out.writerow([*pixels, target])
    return path


def record_images(folder: Path, lr: str, *, name: str, **settings: Any) -> steptrace.RunResult:
    """One run of :data:`CNN` on the two images (exact, one epoch, unless ``settings`` say:
    another ``model`` too)."""
    data = write_images(folder / "images.csv")
    settings = {"numerics": "exact", "model": CNN, **settings}
    return steptrace.record(data, lr=lr, target="t", out=folder / "runs", name=name, **settings)
