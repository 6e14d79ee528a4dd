"""The spool: a record is on disk (fdatasync) before `append` returns, and concurrent appends share a sync."""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import replace

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


def test_with_spool_sync_on_an_answered_call_waits_for_its_record_on_disk_and_a_refused_one_does_not(
        tmp_path, monkeypatch):
    """CDS_SPOOL_SYNC=true. A refused call carries no decision: its record is spooled without a sync (a flood of
    401s costs no disk flushes), while an answered call's record is synced before `audit` returns."""
    from cds.record import Store
    from tests.records import a_call, a_decision

    store = Store(f"sqlite:///{tmp_path}/store.sqlite3", spool_dir=str(tmp_path / "spool"), spool_sync=True).start()
    real_sync, synced_files = os.fdatasync, []

    def observed_sync(fd: int) -> None:
        real_sync(fd)
        synced_files.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fdatasync", observed_sync)
    refused = replace(a_call(), status=401, refusal="login")
    store.audit(refused, wait=False)
    assert [path for path in synced_files if path.endswith(".jsonl")] == []
    answered = a_call()
    store.audit(answered, [a_decision(answered)])
    assert len([path for path in synced_files if path.endswith(".jsonl")]) == 1
    store.close()


def test_by_default_an_answered_call_does_not_wait_for_the_disk(tmp_path, monkeypatch):
    """CDS_SPOOL_SYNC off (the default): records reach the page cache only (they survive the process, not a power
    loss)."""
    from cds.config import Settings
    from cds.record import Store
    from tests.records import a_call, a_decision

    settings = Settings.from_env({"CDS_DATA_DIR": str(tmp_path)})
    store = Store.from_settings(settings).start()
    real_sync, synced_files = os.fdatasync, []

    def observed_sync(fd: int) -> None:
        real_sync(fd)
        synced_files.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fdatasync", observed_sync)
    answered = a_call()
    store.audit(answered, [a_decision(answered)])
    assert list((tmp_path / "spool").glob("*.jsonl")) and not [p for p in synced_files if p.endswith(".jsonl")]
    store.close()


def test_without_a_sync_per_call_the_records_the_database_did_not_take_are_synced_as_they_are_kept(tmp_path,
                                                                                                   monkeypatch):
    """They may wait in the spool for as long as the database is down: on disk, not only in the page cache."""
    spool = Spool(tmp_path / "spool", sync=False)
    real_sync, synced = os.fdatasync, []

    def observed_sync(fd: int) -> None:
        real_sync(fd)
        synced.append(os.pread(fd, os.fstat(fd).st_size, 0).split(b"\0", 1)[0])

    monkeypatch.setattr(os, "fdatasync", observed_sync)
    committed, kept = spool.append({"id": "committed"}), spool.append({"id": "kept"})
    assert synced == []  # appends alone wait for no disk
    spool.settle([committed], committed=True)
    assert synced == []
    spool.settle([kept], committed=False)
    assert len(synced) == 1 and b'"kept"' in synced[0]
    spool.close()


def test_the_writer_makes_the_next_file_ahead_so_that_no_append_waits_for_a_directory_sync(tmp_path, monkeypatch):
    spool = Spool(tmp_path / "spool", rotate_s=0.0, sync=False)  # every settle starts a new file
    real_fsync, directory_syncs = os.fsync, []

    def observed_fsync(fd: int) -> None:
        real_fsync(fd)
        directory_syncs.append(fd)

    monkeypatch.setattr(os, "fsync", observed_fsync)
    spool.settle([spool.append({"id": "first"})], committed=True)  # the first file is made by its append
    assert len(directory_syncs) == 2  # the first file's, then the next one's, made ahead by `settle`
    for key in ("second", "third"):
        directory_syncs.clear()
        number = spool.append({"id": key})
        assert directory_syncs == []  # appended to the file made ahead
        spool.settle([number], committed=True)
    assert len(list((tmp_path / "spool").iterdir())) == 1  # the committed ones deleted; the next one ready
    spool.close()
    assert list((tmp_path / "spool").iterdir()) == []
