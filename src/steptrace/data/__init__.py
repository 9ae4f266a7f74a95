"""Datasets: the embedded ones (the article's three patients, a small set of images) and users'
CSV, Parquet and ``.npz`` files or folders of PNG images, every value an exact rational.

``dataset.py`` holds :class:`Dataset`; ``embedded.py`` the datasets steptrace carries;
``loader.py`` :func:`load_dataset`, which reads a file into named columns (``tables.py``: CSV
and Parquet; ``arrays.py``: ``.npz``; ``pictures.py``: PNG images) and chooses the features and
targets among them the same way for every type (``table.py``).
"""

from __future__ import annotations

from .dataset import Dataset
from .embedded import seed_dataset, shapes_dataset
from .loader import load_dataset

__all__ = ["Dataset", "load_dataset", "seed_dataset", "shapes_dataset"]
