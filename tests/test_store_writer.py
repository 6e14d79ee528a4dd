"""The background writer on its own: batches, back-pressure, flush."""

import queue
import threading
import time

import pytest

from cds.record.writer import LINGER_S, MAX_BATCH, BackgroundWriter


def test_flush_waits_for_everything_queued_even_beyond_one_batch_and_keeps_order():
    written: list[list[int]] = []
    writer = BackgroundWriter(written.append)
    items = list(range(MAX_BATCH * 2 + 7))
    for item in items:
        writer.submit(item)
    started = time.monotonic()
    writer.flush()
    assert time.monotonic() - started < 2
    assert [item for batch in written for item in batch] == items
    assert max(len(batch) for batch in written) <= MAX_BATCH
    writer.close()


def test_a_full_queue_refuses_rather_than_blocks():
    release = threading.Event()

    def stuck(batch: list[int]) -> None:
        release.wait(5)

    writer = BackgroundWriter(stuck, capacity=1)
    with pytest.raises(queue.Full):
        for n in range(MAX_BATCH + 5):  # the writer is stuck on its first batch
            writer.submit(n)
    release.set()
    writer.close()


def test_the_writer_outlives_a_failing_write():
    written: list[int] = []

    def write(batch: list[int]) -> None:
        if 0 in batch:
            raise RuntimeError("boom")
        written.extend(batch)

    writer = BackgroundWriter(write)
    writer.submit(0)
    writer.flush()
    writer.submit(1)
    writer.flush()
    assert written == [1]
    writer.close()


def test_a_caller_waiting_for_its_item_is_told_once_the_batch_holding_it_is_written():
    written: list[list[int]] = []
    writer = BackgroundWriter(written.append)
    assert writer.submit(1) is None  # nobody waits: no future
    done = writer.submit(2, wait=True)
    started = time.monotonic()
    done.result(timeout=2)
    assert time.monotonic() - started < LINGER_S  # written at once, not after the batching window
    assert [item for batch in written for item in batch] == [1, 2]
    writer.close()


def test_a_waiting_caller_gets_the_error_that_kept_its_item_out():
    def refuse(batch: list[int]) -> list[Exception | None]:
        return [ValueError(f"no {item}") if item % 2 else None for item in batch]

    writer = BackgroundWriter(refuse)
    even, odd = writer.submit(2, wait=True), writer.submit(3, wait=True)
    assert even.result(timeout=2) is None
    with pytest.raises(ValueError, match="no 3"):
        odd.result(timeout=2)
    writer.close()
