"""The spool: a local append-only log of every hook-call record, written before the call is answered and
deleted once the database has the records. What an answer was given for is in a spool file before the answer
leaves, whatever then happens to the process or the database.

Each process appends to files of its own in the spool directory (`<pid>-<random>.jsonl`, one JSON record a
line) and holds an exclusive `flock` on each while it lives. The writer commits the records from memory as
usual; a file whose records are all committed is deleted. A file whose records the database did not take
is kept and replayed from disk once it takes them again. A file nobody holds a lock on was left by a process
that died: any process of the service takes it over, replays it and deletes it. Replay is idempotent
(records keep their keys), so a record committed and then replayed is stored once.

Files are allocated up front and mapped into memory, so an append is a copy into the page cache: the record
then survives the process being killed. With CDS_SPOOL_SYNC on it is also made durable with `fdatasync` before
the call is answered, so that it survives the host losing power. The sync is shared (group sync): one thread
of a process syncs at a time, and the records appended while it does wait for the next sync, which covers them
all, so concurrent calls share one. Without it, the files of records the database did not take are synced when
the writer keeps them. A new file's directory entry is synced before its first record is appended.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import mmap
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

Entry = dict[str, Any]  # one spooled record: JSON-ready
SUFFIX = ".jsonl"
ROTATE_S = 1.0  # a process starts a new file this often, so that committed ones can be deleted
FILE_BYTES = 1 << 20  # each file's size (or one record's, when larger); the unused rest is zeros


@dataclass
class _File:
    fd: int
    path: Path
    opened: float  # when appends began to go to it
    map: mmap.mmap  # the whole file, allocated up front: an append is a copy into memory, with no system call
    used: int = 0
    synced: int = 0  # the bytes known to be on disk
    outstanding: int = 0  # records appended that the writer has not settled yet
    kept: bool = False  # holds records the database did not take: replayed from disk

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


class Spool:
    """One per process and directory; safe to share between threads."""

    def __init__(self, directory: str | Path, rotate_s: float = ROTATE_S, sync: bool = True):
        self.directory = Path(directory)
        self._sync_appends = sync  # CDS_SPOOL_SYNC: off, an append reaches the page cache only
        self._rotate_s = rotate_s
        self._lock = threading.Lock()
        self._pid = 0
        self._files: dict[int, _File] = {}
        self._current: int | None = None  # the file appends go to
        self._ready: _File | None = None  # the next one, made ahead by the writer (see `prepare`)
        self._committed: list[_File] = []  # files to delete, outside the lock (an unlink may wait for the disk)
        self._next = 0
        self._synced = threading.Condition()  # a sync ended (see `_sync`)
        self._syncing = False

    def append(self, entry: Entry, sync: bool = True) -> int:
        """Append a record and return once it is on disk (`sync`; else once it is in the page cache, which
        survives the process, not the host's power), before its call is answered; the number of the file it is
        in, to `settle` it with once the writer is done with it. Raises OSError when the disk refuses it."""
        line = orjson.dumps(entry) + b"\n"  # JSON escapes control characters: no NUL, which marks the end
        with self._lock:
            number = self._current_file(len(line))
            spooled = self._files[number]
            spooled.map[spooled.used:spooled.used + len(line)] = line
            spooled.used += len(line)
            spooled.outstanding += 1
            end = spooled.used
        try:
            if sync and self._sync_appends:
                self._sync(spooled, end)
        except OSError:
            self.settle([number], committed=True)  # not durable here: its call waits for the commit instead
            raise
        return number

    def _sync(self, spooled: _File, end: int) -> None:
        """Return once the first `end` bytes of the file are on disk. One thread runs `fdatasync` at a time (it
        releases the GIL); whoever appended meanwhile waits for it to end, and the next sync covers them all."""
        with self._synced:
            while spooled.synced < end:
                if self._syncing:
                    self._synced.wait()
                    continue
                self._syncing, covered = True, spooled.used  # every record copied into the file so far
                self._synced.release()
                try:
                    os.fdatasync(spooled.fd)
                finally:
                    self._synced.acquire()
                    self._syncing = False
                    self._synced.notify_all()
                spooled.synced = max(spooled.synced, covered)

    def settle(self, numbers: Sequence[int], committed: bool) -> None:
        """The writer is done with these records: committed, or not taken by the database (kept, to replay).
        Without a sync per append, the files of kept records are synced now: they may wait for the database
        longer than a power loss takes to come."""
        with self._lock:
            for number in numbers:
                spooled = self._files[number]
                spooled.outstanding -= 1
                spooled.kept = spooled.kept or not committed
            kept = [] if committed or self._sync_appends else [self._files[number] for number in set(numbers)]
            self._rotate()
        self._delete_taken()
        self.prepare()
        for spooled in kept:
            try:
                self._sync(spooled, spooled.used)
            except OSError as exc:  # they stay in the page cache, replayed from there while the host runs
                log.error("spool %s: cannot sync records kept for the database (%s)", spooled.path.name, exc)

    def rotate(self) -> None:
        """Start a new file when the current one is old enough, and delete those whose records are committed."""
        with self._lock:
            self._rotate()
        self._delete_taken()

    def prepare(self) -> None:
        """Make the next file ahead (run by the writer), so that no call waits while one is made: allocating it
        and syncing its directory entry can take milliseconds, during which no thread of the process could
        append. When it fails, the next append makes the file itself and says why."""
        with self._lock:
            if self._pid != os.getpid() or self._ready is not None:
                return
        try:
            made = self._new_file(FILE_BYTES)
        except OSError:
            return
        with self._lock:
            if self._pid == os.getpid() and self._ready is None:
                self._ready = made
                return
        _delete(made)

    def _rotate(self) -> None:
        if self._current is not None and time.monotonic() - self._files[self._current].opened >= self._rotate_s:
            self._current = None
        self._delete_committed()

    @property
    def pending(self) -> bool:
        """This process holds records the database did not take."""
        return self._pid == os.getpid() and any(spooled.kept for spooled in self._files.values())

    def replay_own(self, replay: Callable[[list[Entry]], None]) -> int:
        """Hand the records of this process the database did not take to `replay`, a file at a time, deleting
        each once it returns; how many were replayed. When it raises, the rest stay for a later try."""
        with self._lock:
            if self._pid != os.getpid():
                return 0
            if self._current is not None and self._files[self._current].kept:
                self._current = None  # appends go to a new file; this one is replayed
            ready = [spooled for number, spooled in self._files.items()
                     if spooled.kept and spooled.outstanding == 0 and number != self._current]
        replayed = 0
        for spooled in ready:
            entries = list(_read(spooled.fd, spooled.path))
            replay(entries)
            with self._lock:
                spooled.kept = False
                self._delete_committed()
            replayed += len(entries)
        self._delete_taken()
        return replayed

    def replay_orphans(self, replay: Callable[[list[Entry]], None]) -> int:
        """Replay and delete the spool files of processes that died; how many records were replayed."""
        replayed = 0
        for path in self._paths():
            with _taken(path) as fd:
                if fd is None:
                    continue
                entries = list(_read(fd, path))
                replay(entries)
                path.unlink(missing_ok=True)
                replayed += len(entries)
                log.info("replayed %d records spooled by a process that stopped (%s)", len(entries), path.name)
        return replayed

    def records(self) -> Iterator[Entry]:
        """Every record in the spool files on disk, of living processes and dead ones alike, without taking any
        (for reading: `cds audit show`). A last line still being written is skipped."""
        for path in self._paths():
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:  # committed and deleted meanwhile
                continue
            try:
                yield from _read(fd, path, quiet=True)
            finally:
                os.close(fd)

    def close(self) -> None:
        """Delete the files whose records are all committed, and let go of the others: what they hold is
        replayed by the next process of the service to look. Also run at exit (after the writer drained)."""
        with self._lock:
            if self._pid == os.getpid():
                self._current = None
                self._delete_committed()
                if self._ready is not None:
                    self._committed.append(self._ready)  # empty
                for spooled in self._files.values():
                    spooled.close()
            self._pid, self._files, self._current, self._ready = 0, {}, None, None
        self._delete_taken()

    def _delete_committed(self) -> None:
        """Take the files, other than the current one, whose records are all committed, to be deleted once the
        lock is released (`_delete_taken`)."""
        if self._pid != os.getpid():
            return
        for number, spooled in list(self._files.items()):
            if number != self._current and spooled.outstanding == 0 and not spooled.kept:
                self._committed.append(spooled)
                del self._files[number]

    def _delete_taken(self) -> None:
        with self._lock:
            taken, self._committed = self._committed, []
        for spooled in taken:
            _delete(spooled)

    def _paths(self) -> list[Path]:
        """Every spool file; those of living processes (this one's included) are locked, so skipped."""
        if not self.directory.is_dir():
            return []
        return sorted(path for path in self.directory.iterdir() if path.suffix == SUFFIX)

    def _current_file(self, room: int) -> int:
        """The file to append `room` bytes to: a new one when there is none, or too little room is left."""
        if self._pid != os.getpid():  # first append, or a forked child: the parent's files are not ours
            self._pid, self._files, self._current, self._ready, self._committed = os.getpid(), {}, None, None, []
            atexit.register(self.close)
        current = self._files.get(self._current) if self._current is not None else None
        if current is not None and current.used + room > len(current.map):
            self._current = None
            self._delete_committed()
        if self._current is None:
            ready, self._ready = self._ready, None
            if ready is None or len(ready.map) < room:
                if ready is not None:
                    self._committed.append(ready)
                ready = self._new_file(max(FILE_BYTES, room))
            ready.opened = time.monotonic()
            self._next += 1
            self._files[self._next] = ready
            self._current = self._next
        return self._current

    def _new_file(self, size: int) -> _File:
        """A new spool file of `size` bytes: allocated, locked, and its name synced to disk."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # its records hold patient ids
        path = self.directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
            os.posix_fallocate(fd, 0, size)  # the disk space is taken now, not while a call waits
            _sync_directory(self.directory)  # the new file's name survives a power loss
            return _File(fd, path, 0.0, mmap.mmap(fd, size))
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise


def _delete(spooled: _File) -> None:
    spooled.path.unlink(missing_ok=True)
    spooled.close()


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _taken(path: Path) -> Iterator[int | None]:
    """The file opened and locked, when no living process holds it (else None); closed afterwards."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:  # replayed and deleted by another process meanwhile
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its process lives, or another one is replaying it
            yield None
            return
        yield None if os.fstat(fd).st_nlink == 0 else fd  # deleted once replayed by the one that held it
    finally:
        os.close(fd)


def _read(fd: int, path: Path, quiet: bool = False) -> Iterator[Entry]:
    """The records of a spool file, up to the zeros of its unused rest. A last line cut short (its process
    killed mid-write) was never answered for: it is skipped, and said so unless `quiet`."""
    data = os.pread(fd, os.fstat(fd).st_size, 0)
    end = data.find(b"\0")
    lines = (data if end < 0 else data[:end]).split(b"\n")
    if lines[-1] and not quiet:
        log.warning("spool %s: its last record is incomplete (written as its process was killed); skipped",
                    path.name)
    for line in lines[:-1]:
        yield orjson.loads(line)
