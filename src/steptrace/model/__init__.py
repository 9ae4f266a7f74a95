"""The model: layers (forward beside backward), stacks of them, and models as users write them.

- :mod:`.layers` — one class per layer of the series, and the squared-error loss;
- :mod:`.images` — the images chapters' layers: conv2d, maxpool2d, flatten, normalization;
- :mod:`.kinds` — every layer type a model file may name;
- :mod:`.stack` — a stack of layers: forward, backward and update for a step's data inputs;
- :mod:`.spec` — model files, the article's model, random initial weights.
"""

from __future__ import annotations

from .kinds import LAYERS
from .layers import Layer, Params
from .spec import ARTICLE_INIT, Model, article_model, load_model
from .stack import Backward, Stack

__all__ = [
    "ARTICLE_INIT",
    "LAYERS",
    "Backward",
    "Layer",
    "Model",
    "Params",
    "Stack",
    "article_model",
    "load_model",
]
