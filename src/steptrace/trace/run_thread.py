"""A run's trace writer in a thread of its own: Parquet encoding and compression release the
GIL, so on a second core the rows are written while the training loop goes on. A buffer of
rows is handed over as it is and turned into columns here, off the loop's thread (or, for a
run that writes few of its blocks, read where its rows lie: :class:`RowsBlock`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from typing import Any

from .run_buffer import Block, RowBuffer, RowsBlock
from .scalars import BAD_WEIGHTS
from .summary import SummaryTracker
from .writer import USER_TRIGGER, TraceWriter

__all__ = ["WriterThread"]

#: Buffers kept for the loop to fill again (as many as the queue holds).
SPARE_BUFFERS = 2


class WriterThread:
    """The trace writer in a thread of its own. Blocks wait in a short queue (memory stays
    flat: a loop faster than the disk waits for it); an error writing is raised in the loop's
    thread at the next hand-off, or when the run closes."""

    def __init__(self, writer: TraceWriter, tracker: SummaryTracker, after: list[str]) -> None:
        self.writer, self.tracker, self.after = writer, tracker, after
        self.queue: queue.Queue[dict[str, Any] | RowBuffer | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        # Buffers made into blocks, for the loop to fill again: a wide row's buffer is tens of
        # MB, whose pages a new one would have the kernel fault in afresh.
        self.spare: list[RowBuffer] = []
        self.thread = threading.Thread(target=self._run, name="steptrace-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue  # the run is lost from here: drain until the end
            try:
                block = self._block(item)
                self.writer.write(block)
                if USER_TRIGGER not in block:  # a flight recorder's trigger holds no rows
                    self.tracker.update(block, self._weights(block))
            except BaseException as exc:  # raised again in the loop's thread
                self.error = exc

    def _weights(self, block: Mapping[str, Any]) -> list[Any]:
        """The new weights' columns, which the summary checks finite: none when the block
        knows them all finite (a buffer's, from its columns' sums: thousands of columns);
        one for steps given by their figures, which say whether they are."""
        if isinstance(block, Block | RowsBlock) and block.finite(self.after):
            return []
        if BAD_WEIGHTS in block:
            return [block[BAD_WEIGHTS]]
        return [block[c] for c in self.after]

    def _block(self, item: dict[str, Any] | RowBuffer) -> Mapping[str, Any]:
        """A buffer's rows as a block (the buffer kept to be filled again), or the block. A
        run that writes few of its blocks reads them where the rows lie: the buffer is kept
        once the block is dropped (a flight recorder's, when its steps leave the window)."""
        if not isinstance(item, RowBuffer):
            return item
        if not self.writer.keeper.selection.everything:
            return item.rows_block(self._keep)
        block = item.block()
        self._keep(item)
        return block

    def _keep(self, buffer: RowBuffer) -> None:
        """``buffer`` kept for the loop to fill again (list.append: safe from any thread)."""
        if len(self.spare) < SPARE_BUFFERS:
            self.spare.append(buffer.emptied())

    def put(self, block: dict[str, Any] | RowBuffer) -> None:
        """Queue a block, or a buffer of rows (no longer written to) to be made one here."""
        self._raise()
        self.queue.put(block)

    def finish(self) -> None:
        """Wait for every block to be written (once; later calls only re-raise)."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error
