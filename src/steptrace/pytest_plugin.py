"""pytest plugin: golden-trace regression tests (registered via the ``pytest11`` entry point)."""
