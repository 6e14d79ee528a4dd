"""The spool: a record is on disk (fdatasync) before `append` returns, and concurrent appends share a sync."""

from __future__ import annotations

import os
import threading
import uuid

from cds.record.spool import Spool

THREADS, APPENDS_EACH = 8, 40


def test_every_append_returns_after_a_sync_that_covers_it_and_concurrent_appends_share_syncs(tmp_path,
                                                                                           monkeypatch):
    spool = Spool(tmp_path / "spool")
    real_sync = os.fdatasync
    synced: list[bytes] = []  # what each finished sync covered: the file's records when it began
    lock = threading.Lock()

    def observed_sync(fd: int) -> None:
        content = os.pread(fd, os.fstat(fd).st_size, 0).split(b"\0", 1)[0]
        real_sync(fd)  # the real system call, only watched
        with lock:
            synced.append(content)

    monkeypatch.setattr(os, "fdatasync", observed_sync)
    unsynced: list[str] = []

    def appender() -> None:
        for _ in range(APPENDS_EACH):
            key = str(uuid.uuid4())
            number = spool.append({"id": key})
            with lock:
                if not any(key.encode() in content for content in synced):
                    unsynced.append(key)
            spool.settle([number], committed=True)

    threads = [threading.Thread(target=appender) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spool.close()
    assert unsynced == []
    assert 0 < len(synced) < THREADS * APPENDS_EACH  # calls appending together share one sync
    assert list((tmp_path / "spool").iterdir()) == []  # all settled as committed: deleted
