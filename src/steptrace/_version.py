"""The version of steptrace (the trace format has its own, in ``trace/schema.py``)."""

__version__ = "0.1.0"
