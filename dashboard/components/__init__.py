"""Page building blocks. Each component owns the ``session_state`` keys under its prefix."""
