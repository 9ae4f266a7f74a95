"""The PyTorch networks the adapter's tests record: every module, loss and optimizer the
adapter knows, residual blocks, a module called twice, functional calls between modules, and
modules of the user's own; each with its data, its per-sample loss and a training loop.

Imported by tests/test_torch_*.py (which import torch first, or skip without it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

PerSample = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Net:
    """A network ready to train: model, optimizer, data, per-sample loss, loss name."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor
    per_sample: PerSample
    loss: str
    batch: int = 4


def squared_error(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((out - y) ** 2).sum(dim=1) / 2


def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y, reduction="none")


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out, y, reduction="none").mean(dim=1)


def bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(out, y, reduction="none").mean(dim=1)


def l1(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out - y).abs().sum(dim=1)


class Block(nn.Module):
    """A residual block: relu(x + bn(conv(relu(bn(conv(x))))))."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x  # torchvision's BasicBlock: the sum in place
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.block = Block(2)
        self.pool = nn.AvgPool2d(2)
        self.flat = nn.Flatten()
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flat(self.pool(self.block(self.stem(x)))))


class Twice(nn.Module):
    """A module called twice, a functional tanh and a skip sum between modules."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 4)
        self.shared = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        h = self.shared(h) + h
        return self.out(self.shared(h))


class Scale(nn.Module):
    """A module of the user's own, with a parameter."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Custom(nn.Module):
    """Modules of the user's own, a parameter of no leaf module, in-place ReLU, the series'
    activations."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 5), nn.LeakyReLU(0.1), Scale(5),
                                  nn.ReLU(inplace=True), nn.Identity())  # fmt: skip
        self.gate = nn.Parameter(torch.tensor([0.7]))
        self.head = nn.Linear(5, 2)
        self.squash = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.squash(self.head(self.body(x) * self.gate))


def _images(n: int, c: int = 1, size: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def _classes(n: int, k: int, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))


def cnn(dtype: torch.dtype = torch.float64) -> Net:
    """The issue's CNN on 8 × 8 images, Adam, cross-entropy."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
                          nn.Linear(128, 10)).to(dtype)  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return Net(model, optimizer, _images(16).to(dtype), _classes(16, 10), cross_entropy,
               "cross_entropy")  # fmt: skip


def small_cnn() -> Net:
    """The issue's CNN, narrower (2 channels of 4 × 4 images): its every kind of value in a
    trace of a few hundred columns."""
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
                          nn.Linear(8, 3)).double()  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return Net(model, optimizer, _images(16, size=4).double(), _classes(16, 3), cross_entropy,
               "cross_entropy")  # fmt: skip


def series_cnn() -> Net:
    """conv2d → relu → maxpool2d → flatten → linear: a stack of the series' layers, plain SGD on
    the squared error."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(12, 1)).double()  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x = _images(6, c=2, size=4).double()
    y = x.sum(dim=(1, 2, 3)).reshape(-1, 1) / 16
    return Net(model, optimizer, x, y, squared_error, "squared_error", batch=2)


def residual() -> Net:
    torch.manual_seed(1)
    model = ResNet().double()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    return Net(model, optimizer, _images(12, size=4).double(), _classes(12, 5), cross_entropy,
               "cross_entropy")  # fmt: skip


def twice() -> Net:
    torch.manual_seed(2)
    model = Twice().double()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-2, momentum=0.5, centered=True,
                                    weight_decay=0.01)  # fmt: skip
    x = torch.rand(12, 3, generator=torch.Generator().manual_seed(4)).double()
    y = torch.stack([x.sum(dim=1), x[:, 0] - x[:, 1]], dim=1)
    return Net(model, optimizer, x, y, mse, "mse")


def zoo() -> Net:
    """Strided convolution, tanh, average pooling, layer norm, GELU, dropout, softmax; SGD with
    momentum, dampening and weight decay; bce with logits."""
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.Tanh(), nn.AvgPool2d(2, stride=1),
        nn.Flatten(), nn.Linear(36, 8), nn.LayerNorm(8), nn.GELU(), nn.Dropout(0.3),
        nn.Linear(8, 3), nn.Softmax(dim=1), nn.Linear(3, 2),
    ).double()  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, dampening=0.1,
                                weight_decay=1e-3)  # fmt: skip
    x = _images(12).double()
    y = (x.mean(dim=(1, 2, 3)) > 0.5).double().reshape(-1, 1).repeat(1, 2)
    return Net(model, optimizer, x, y, bce, "bce_with_logits")


def nesterov() -> Net:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.8, nesterov=True,
                                weight_decay=0.01)  # fmt: skip
    x = torch.rand(8, 3, generator=torch.Generator().manual_seed(6)).double()
    return Net(model, optimizer, x, x.sum(dim=1, keepdim=True), squared_error, "squared_error")


def mlp() -> Net:
    """The 3-2-1 network, SGD with Nesterov momentum on the squared error."""
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.8, nesterov=True)
    x = torch.rand(3, 3, generator=torch.Generator().manual_seed(8)).double()
    return Net(model, optimizer, x, x.sum(dim=1, keepdim=True), squared_error, "squared_error",
               batch=1)  # fmt: skip


def custom() -> Net:
    torch.manual_seed(6)
    model = Custom().double()
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.1)
    x = torch.rand(8, 3, generator=torch.Generator().manual_seed(7)).double()
    y = torch.stack([x[:, 0], x[:, 1] * x[:, 2]], dim=1)
    return Net(model, optimizer, x, y, l1, "custom")


NETS: dict[str, Callable[[], Net]] = {
    "cnn": cnn, "cnn-float32": lambda: cnn(torch.float32), "small-cnn": small_cnn,
    "series-cnn": series_cnn,
    "residual": residual, "twice": twice, "zoo": zoo, "nesterov": nesterov, "mlp": mlp,
    "custom": custom,
}  # fmt: skip


def train(net: Net, epochs: int, rec: Any = None, stop_at: int | None = None) -> list[float]:
    """Epoch after epoch over the data in batches; each step's loss. ``rec`` records it."""
    losses = []
    step = 0
    n = len(net.x)
    for _ in range(epochs):
        for i in range(0, n, net.batch):
            if stop_at is not None and step == stop_at:
                raise RuntimeError("the loop broke")
            xb, yb = net.x[i : i + net.batch], net.y[i : i + net.batch]
            net.optimizer.zero_grad()
            out = net.model(xb)
            per_sample = net.per_sample(out, yb)
            per_sample.mean().backward()
            if rec is not None:
                rec.step(xb, yb, per_sample)
            net.optimizer.step()
            losses.append(float(per_sample.detach().mean()))
            step += 1
    return losses


def state_of(net: Net) -> dict[str, torch.Tensor]:
    """Everything training leaves: parameters, buffers, the optimizer's state, the RNG."""
    out = {f"model.{k}": v.detach().clone() for k, v in net.model.state_dict().items()}
    for i, state in net.optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                out[f"optimizer.{i}.{key}"] = value.clone()
    out["rng"] = torch.get_rng_state()
    return out
