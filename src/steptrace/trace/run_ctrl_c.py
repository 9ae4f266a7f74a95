"""Ctrl-C while a run is open: it interrupts the training loop as usual, except while rows are
being placed or written; then it is held until they are, so that no part is lost.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from .flight import sigterm_held

__all__ = ["HeldCtrlC"]


class HeldCtrlC:
    """Ctrl-C caught from now until :meth:`release`; held inside :meth:`held`.

    Outside the main thread (where no handler can be set) it changes nothing."""

    def __init__(self) -> None:
        self.writing = False  # rows are being placed or written: Ctrl-C waits
        self.pressed = False  # Ctrl-C came while they were, and is held
        self._previous: Any = None
        self._catch()

    def _catch(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_sigint(signum: int, frame: FrameType | None) -> None:
            if self.writing:
                self.pressed = True
            else:
                self._pass(frame)

        with contextlib.suppress(ValueError):  # not settable here (an embedded interpreter)
            self._previous = signal.signal(signal.SIGINT, on_sigint)

    def _pass(self, frame: FrameType | None) -> None:
        """Ctrl-C as it would have been handled without the run: the previous handler."""
        previous = self._previous
        if callable(previous):
            previous(signal.SIGINT, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Ctrl-C waits while inside (nested: until the outermost ends), and SIGTERM (a flight
        recorder's: :func:`.flight.sigterm_held`)."""
        writing, self.writing = self.writing, True
        try:
            with sigterm_held():
                yield
        finally:
            self.writing = writing

    def raise_held(self) -> None:
        """A Ctrl-C held until now, handled as it would have been when pressed."""
        if self.pressed and not self.writing:
            self.pressed = False
            self._pass(None)

    def release(self) -> None:
        """The previous handler back."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
