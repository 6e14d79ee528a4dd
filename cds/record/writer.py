"""A background writer: hook calls are answered without waiting for their records, which one thread per
process commits in batches (one transaction for everything queued meanwhile)."""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BATCH = 500
LINGER_S = 0.05  # gather what arrives this long after the first item: fewer, larger transactions
_FLUSH, _STOP = object(), object()  # markers: write what is gathered now; and then stop


class BackgroundWriter(Generic[T]):
    """Hands queued items to `write` in batches on its own thread. `write` must not raise: it applies the
    failure policy itself. Started on first use in each process, so it survives a fork; drained at exit."""

    def __init__(self, write: Callable[[list[T]], None], capacity: int = 10_000):
        self._write = write
        self._queue: queue.Queue[T | object] = queue.Queue(capacity)
        self._lock = threading.Lock()
        self._hurry = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def submit(self, item: T) -> bool:
        """Queue an item; False when the queue is full (the database cannot keep up)."""
        self._ensure_running()
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            return False

    def flush(self) -> None:
        """Wait until everything queued so far is written (or its failure handled)."""
        if self._running():
            self._queue.put(_FLUSH)
            self._hurry.set()
            self._queue.join()

    def close(self) -> None:
        if self._running():
            self._queue.put(_STOP)
            self._hurry.set()
            if self._thread is not None:
                self._thread.join()

    def _running(self) -> bool:
        return self._thread is not None and self._pid == os.getpid() and self._thread.is_alive()

    def _ensure_running(self) -> None:
        if self._running():
            return
        with self._lock:
            if not self._running():
                if self._pid != os.getpid():  # first use, or a forked child: the parent's queue is not ours
                    self._queue = queue.Queue(self._queue.maxsize)
                    atexit.register(self.close)
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="cds-audit-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            if self._queue.qsize() < MAX_BATCH and batch[0] is not _FLUSH and batch[0] is not _STOP:
                self._hurry.wait(LINGER_S)  # let a batch gather, without waking for each item
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(item is _FLUSH for item in batch):
                self._hurry.clear()  # everything queued before that flush is in this batch
            items: list[T] = [item for item in batch if item is not _FLUSH and item is not _STOP]  # type: ignore[misc]
            try:
                if items:
                    self._write(items)
            except Exception:  # the writer must outlive any error; `write` should not let one through
                log.exception("audit writer: unexpected error")
            for _ in batch:
                self._queue.task_done()
            if any(item is _STOP for item in batch):
                return
