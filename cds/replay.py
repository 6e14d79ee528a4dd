"""JWT replay detection: remember each token id until its token expires, across worker processes."""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Protocol

from cds.errors import CdsError

log = logging.getLogger(__name__)

PURGE_EVERY = 500  # calls between sweeps of expired ids


class ReplayCache(Protocol):
    def seen(self, jti: str, expires_at: float) -> bool:
        """Record `jti` until `expires_at` (epoch seconds); True when it was already recorded and unexpired."""
        ...


class SqliteReplayCache:
    """Seen token ids in one SQLite file that every worker process on the host shares.

    One atomic upsert per call decides: a new id (or one whose earlier record has expired) is written and
    reported unseen; a live one is left alone and reported seen. SQLite's file locking makes this hold
    across gunicorn workers. Several hosts need a shared database instead.
    """

    def __init__(self, directory: str = ""):
        folder = Path(directory or Path(tempfile.gettempdir()) / "cds-coverage")
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = folder / "seen-jti.sqlite3"
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid = 0
        self._calls = 0
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        # Opened per process: a connection must not cross a fork (gunicorn --preload).
        if self._connection is None or self._pid != os.getpid():
            connection = sqlite3.connect(self.path, timeout=2.0, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")  # WAL: no fsync per insert; a crash may forget the last few
            connection.execute("CREATE TABLE IF NOT EXISTS seen_jti (jti TEXT PRIMARY KEY, expires_at REAL NOT NULL)")
            connection.execute("CREATE INDEX IF NOT EXISTS seen_jti_expiry ON seen_jti (expires_at)")
            self._connection, self._pid = connection, os.getpid()
        return self._connection

    def seen(self, jti: str, expires_at: float) -> bool:
        now = time.time()
        with self._lock:
            try:
                connection = self._connect()
                inserted = connection.execute(
                    "INSERT INTO seen_jti (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO UPDATE"
                    " SET expires_at = excluded.expires_at WHERE seen_jti.expires_at < ?",
                    (jti, expires_at, now),
                ).rowcount
                self._calls += 1
                if self._calls % PURGE_EVERY == 0:
                    connection.execute("DELETE FROM seen_jti WHERE expires_at < ?", (now,))
            except sqlite3.Error as exc:
                log.error("replay store %s failed: %s", self.path, exc)
                raise CdsError(503, "Token replay protection is unavailable; try again.", "transient") from None
        return inserted == 0
