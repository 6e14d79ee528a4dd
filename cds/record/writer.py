"""A background writer: one thread per process writes hook-call records in batches, one transaction for
everything queued meanwhile. Items nobody waits for gather for up to LINGER_S; an item a caller waits for
(group commit) is written at once with whatever else is queued, so under load batches grow by themselves."""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BATCH = 500
LINGER_S = 0.2  # what nobody waits for gathers this long after the first item: fewer, larger transactions
# (a record is durable in the spool meanwhile; batches of 100 calls cost the writer 30 % less a call than of 30)
_FLUSH, _STOP = object(), object()  # markers: wake up and write what is queued; and then stop


# What `write` returns: None when every item is written, else for each item None or the exception that kept it out.
Outcomes = Sequence[Exception | None] | None


class BackgroundWriter(Generic[T]):
    """Hands queued items to `write` in batches on its own thread, and settles each item's future with its
    outcome (see `Outcomes`; when `write` raises, every item of the batch gets the exception). `idle` (optional)
    runs every `idle_every_s`, also while nothing queues. Started on first use in each process, so it survives
    a fork; drained at exit."""

    def __init__(self, write: Callable[[list[T]], Outcomes], capacity: int = 10_000,
                 idle: Callable[[], None] | None = None, idle_every_s: float = 5.0):
        self._write = write
        self._idle = idle
        self._idle_every_s = idle_every_s
        self._queue: queue.Queue[tuple[T, Future[None] | None] | object] = queue.Queue(capacity)
        self._lock = threading.Lock()
        self._hurry = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def submit(self, item: T, wait: bool = False) -> Future[None] | None:
        """Queue an item. `wait`: a caller waits for it, so the batch is written without lingering, and the
        future returned is settled once it is. Raises queue.Full when the queue is full."""
        self._ensure_running()
        done: Future[None] | None = Future() if wait else None
        self._queue.put_nowait((item, done))
        if wait:
            self._hurry.set()
        return done

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

    def _next(self) -> object:
        """The next queued item, running the idle task whenever nothing came for `idle_every_s`."""
        while True:
            try:
                return self._queue.get(timeout=self._idle_every_s if self._idle else None)
            except queue.Empty:
                self._run_idle()

    def _run_idle(self) -> None:
        if self._idle is None:
            return
        try:
            self._idle()
        except Exception:  # the writer must outlive any error
            log.exception("audit writer: unexpected error while idle")

    def _run(self) -> None:
        idle_due = time.monotonic() + self._idle_every_s
        while True:
            batch = [self._next()]
            if self._queue.qsize() < MAX_BATCH and isinstance(batch[0], tuple):
                self._hurry.wait(LINGER_S)  # let a batch gather, unless someone waits for it
            self._hurry.clear()  # whatever hurried is queued by now, so it is in this batch
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            items = [item for item in batch if isinstance(item, tuple)]
            if items:
                self._write_settling([item for item, _ in items], [done for _, done in items])
            for _ in batch:
                self._queue.task_done()
            if _STOP in batch:
                return
            if self._idle and time.monotonic() >= idle_due:  # a busy writer still runs it now and then
                self._run_idle()
                idle_due = time.monotonic() + self._idle_every_s

    def _write_settling(self, items: list[T], futures: list[Future[None] | None]) -> None:
        """Write a batch and settle its futures; never raises, so that the writer outlives any error."""
        try:
            outcomes = list(self._write(items) or [None] * len(items))
            if len(outcomes) != len(items):
                raise RuntimeError(f"write gave {len(outcomes)} outcomes for {len(items)} items")
        except Exception as exc:  # handed to whoever waits for these items
            log.exception("audit writer: unexpected error")
            outcomes = [exc] * len(items)
        for done, failure in zip(futures, outcomes, strict=True):
            if done is None:
                continue
            if failure is None:
                done.set_result(None)
            else:
                done.set_exception(failure)
