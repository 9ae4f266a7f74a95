"""The model: layers (forward beside backward), stacks of them, and models as users write them.

- :mod:`.layers` — one class per layer of the series, and the squared-error loss;
- :mod:`.stack` — a stack of layers: forward, backward and update for one data input;
- :mod:`.spec` — model files, the article's model, random initial weights.
"""

from __future__ import annotations

from .layers import LAYERS, Layer, Params
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
