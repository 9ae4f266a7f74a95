"""Other frameworks writing steptrace traces, each an optional import.

- :mod:`steptrace.adapters.torch` (``steptrace.torch``) — record a PyTorch training loop.

Each adapter writes through :func:`steptrace.open_run`, the framework-neutral writer.
"""
