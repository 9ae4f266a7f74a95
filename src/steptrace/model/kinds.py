"""Every layer type and loss a model file may name, by the name it uses."""

from __future__ import annotations

from .images import Conv2d, Flatten, MaxPool2d, Normalization
from .layers import (
    Heaviside,
    Identity,
    Input,
    Layer,
    LeakyRelu,
    Linear,
    Logistic,
    Relu,
    SquaredError,
)

__all__ = ["IMAGE_LAYERS", "LAYERS", "LOSSES"]

#: Every layer type a model file may name.
LAYERS: dict[str, type[Layer]] = {
    cls.type: cls
    for cls in (
        Input,
        Identity,
        Linear,
        Relu,
        LeakyRelu,
        Heaviside,
        Logistic,
        Conv2d,
        MaxPool2d,
        Flatten,
        Normalization,
    )
}
#: The layers that only take images.
IMAGE_LAYERS = frozenset({Conv2d.type, MaxPool2d.type, Flatten.type})
LOSSES: dict[str, type[SquaredError]] = {SquaredError.type: SquaredError}
