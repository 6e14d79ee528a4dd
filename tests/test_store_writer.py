"""The background writer on its own: batches, back-pressure, flush."""

import threading
import time

from cds.record.writer import MAX_BATCH, BackgroundWriter


def test_flush_waits_for_everything_queued_even_beyond_one_batch_and_keeps_order():
    written: list[list[int]] = []
    writer = BackgroundWriter(written.append)
    items = list(range(MAX_BATCH * 2 + 7))
    for item in items:
        assert writer.submit(item)
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
    accepted = [writer.submit(n) for n in range(MAX_BATCH + 5)]  # the writer is stuck on its first batch
    assert accepted[-1] is None
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
