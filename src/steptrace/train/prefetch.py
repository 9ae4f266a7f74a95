"""Computing ahead: a generator's items produced in a background thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any, TypeVar

__all__ = ["prefetch"]

T = TypeVar("T")

_DONE = object()


class _Raised:
    """An exception of the producer, on its way to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(items: Iterator[T], depth: int = 1) -> Generator[T, None, None]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    Exceptions raised by ``items`` are raised here, in the consumer; closing this iterator
    early (``break``, an error while writing) stops the thread after its current item.

    >>> list(prefetch(iter(range(3))))
    [0, 1, 2]
    """
    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(ready, item, stop):
                    return
            _put(ready, _DONE, stop)
        except BaseException as exc:  # handed to the consumer, which raises it
            _put(ready, _Raised(exc), stop)

    thread = threading.Thread(target=produce, name="steptrace-blocks", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()


def _put(ready: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Queue ``item`` unless the consumer has gone; whether it was queued."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=0.05)
        except queue.Full:
            continue
        return True
    return False
