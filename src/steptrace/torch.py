"""``steptrace.torch``: the PyTorch adapter's public names, so that ``import steptrace.torch``
and ``from steptrace.torch import record`` work as ``steptrace.torch.record`` does. The adapter
itself is :mod:`steptrace.adapters.torch`.

Importing this module imports PyTorch; importing ``steptrace`` alone does not.
"""

from __future__ import annotations

from .adapters.torch import Recorder, record

__all__ = ["Recorder", "record"]
