"""A local append-only spool for records the database could not take: what an answer was given for stays on
disk until the database has it.

Each process appends to a file of its own in the spool directory (`<pid>-<random>.jsonl`, one JSON record a
line, fsynced before the answer goes out) and holds an exclusive `flock` on it while it lives. A file nobody
holds a lock on was left by a process that died: any process of the service may take it over, replay it into
the database and delete it. Replay is idempotent (records keep their keys), so a record replayed twice, or
spooled and also committed, is stored once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

Entry = dict[str, Any]  # one spooled record: JSON-ready
SUFFIX = ".jsonl"
DRAINING = ".draining"  # a file of this process being replayed; appends go to a fresh file meanwhile


class Spool:
    """One per process and directory; safe to share between threads."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._pid = 0
        self._fd: int | None = None  # the file this process appends to
        self._path: Path | None = None
        self._kept: list[tuple[int, Path]] = []  # files of this process waiting for the database, held locked

    @property
    def pending(self) -> bool:
        """This process has spooled records the database does not have yet."""
        return self._pid == os.getpid() and (self._fd is not None or bool(self._kept))

    def append(self, entries: Sequence[Entry]) -> None:
        """Append records and fsync them. Raises OSError when the disk cannot take them."""
        data = b"".join(orjson.dumps(entry) + b"\n" for entry in entries)
        with self._lock:
            fd = self._own_file()
            os.write(fd, data)
            os.fsync(fd)

    def replay_own(self, replay: Callable[[list[Entry]], None]) -> int:
        """Hand this process's spooled records to `replay`, a file at a time, deleting each file once it
        returns; how many were replayed. When `replay` raises, the rest stay for a later try. Appends made
        meanwhile go to a new file."""
        with self._lock:
            if self._pid != os.getpid():
                return 0
            if self._fd is not None and self._path is not None:
                draining = self._path.with_suffix(DRAINING)
                os.rename(self._path, draining)  # the lock stays with the open file
                self._kept.append((self._fd, draining))
                self._fd = self._path = None
            kept, self._kept = self._kept, []
        replayed = 0
        try:
            while kept:
                fd, path = kept[0]
                entries = list(_read(fd, path))
                replay(entries)
                path.unlink()
                os.close(fd)
                kept.pop(0)
                replayed += len(entries)
        finally:
            with self._lock:
                self._kept[:0] = kept
        return replayed

    def replay_orphans(self, replay: Callable[[list[Entry]], None]) -> int:
        """Replay and delete the spool files of processes that died; how many records were replayed."""
        replayed = 0
        for path in self._files():
            with _taken(path) as fd:
                if fd is None:
                    continue
                entries = list(_read(fd, path))
                replay(entries)
                path.unlink(missing_ok=True)
                replayed += len(entries)
                log.info("replayed %d records spooled by a process that stopped (%s)", len(entries), path.name)
        return replayed

    def close(self) -> None:
        """Let go of this process's files: what they still hold is replayed by the next process to look."""
        with self._lock:
            if self._pid == os.getpid():
                for fd in [fd for fd, _ in self._kept] + ([self._fd] if self._fd is not None else []):
                    os.close(fd)
            self._pid, self._fd, self._path, self._kept = 0, None, None, []

    def _files(self) -> list[Path]:
        """Every spool file; those of living processes (this one's included) are locked, so skipped."""
        if not self.directory.is_dir():
            return []
        return sorted(path for path in self.directory.iterdir() if path.suffix in (SUFFIX, DRAINING))

    def _own_file(self) -> int:
        if self._pid != os.getpid():  # first append, or a forked child: the parent's files are not ours
            self._pid, self._fd, self._path, self._kept = os.getpid(), None, None, []
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
            self._fd, self._path = fd, path
        return self._fd


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


def _read(fd: int, path: Path) -> Iterator[Entry]:
    """The records of a spool file. A last line cut short (its process killed mid-write) was never
    answered for: it is skipped, and said so."""
    with open(os.dup(fd), "rb") as file:
        file.seek(0)
        for number, line in enumerate(file, 1):
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                log.warning("spool %s: line %d is incomplete (written when its process was killed); skipped",
                            path.name, number)
