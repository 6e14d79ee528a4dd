"""Seen JWT ids while the audit store's database cannot be reached: a SQLite file on this host, beside the spool.

By default a hook call is answered during a database outage (its record waits in the spool), so its token's
replay check cannot wait for the database either. It falls back to this file, which every process of the
service on this host (replica) shares: a token used twice at this replica during the outage is refused the
second time. Its reach ends there: a token first used before the outage, or at another replica, is not known
here, so its replay at this replica during the outage is accepted. Once the database answers again, the ids
kept here are moved into it (by each process's first call after the outage, and within a second by any
process that checks a token); an id the database already held is such a replay, found late, and logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.dialects import sqlite

from cds.record.engine import create_replay_table, make_engine
from cds.record.schema import seen_jti

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0  # while the database answers, a process looks for ids to move this often
FILE_NAME = "seen-jti-outage.sqlite3"

# Hands rows of seen ids to the database; returns the (iss, jti) of those it did not know yet.
MoveInto = Callable[[list[dict[str, Any]]], set[tuple[str, str]]]


class LocalReplays:
    """One per process; the file is created on first use. Safe to share between threads."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / FILE_NAME
        self._engine: Engine | None = None
        self._insert = sqlite.insert(seen_jti).on_conflict_do_nothing().returning(seen_jti.c.jti)
        self._kept_here = False  # this process kept ids here since they were last moved
        self._next_check = 0.0

    def seen_jti(self, row: dict[str, Any]) -> bool:
        """Remember (iss, jti) until it expires; True when this replica saw it during the outage. Raises the
        driver's error when the file cannot be written."""
        with self._ready().connect() as connection:
            replay = connection.execute(self._insert, row).first() is None
        self._kept_here = True
        return replay

    def move_due(self) -> bool:
        """Whether ids may be waiting here to be moved into the database: this process kept some, or it has not
        looked for a second."""
        return self._kept_here or time.monotonic() >= self._next_check

    def move(self, reachable: Callable[[], object], move_into: MoveInto) -> list[tuple[str, str]]:
        """Move the unexpired ids kept here into the database, under this file's write lock (processes moving
        at once take turns). Returns those the database already held: replays accepted during the outage.
        Raises when the database does not take them (`reachable` is called first, so that while it is away
        the ids are not read for nothing); they stay here for the next try."""
        self._next_check = time.monotonic() + CHECK_EVERY_S
        if not self.path.exists():
            self._kept_here = False
            return []
        with self._ready().connect() as connection:
            if connection.execute(select(func.count()).select_from(seen_jti)).scalar_one() == 0:
                self._kept_here = False
                return []
            reachable()
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                rows = [dict(row) for row in connection.execute(
                    select(seen_jti).where(seen_jti.c.expires_at >= datetime.now(UTC))).mappings()]
                new = move_into(rows) if rows else set()
                connection.execute(delete(seen_jti))
            except BaseException:
                connection.exec_driver_sql("ROLLBACK")
                raise
            connection.exec_driver_sql("COMMIT")
        self._kept_here = False
        return [(row["iss"], row["jti"]) for row in rows if (row["iss"], row["jti"]) not in new]

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def _ready(self) -> Engine:
        if self._engine is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            engine = make_engine(f"sqlite:///{self.path}", autocommit=True)
            create_replay_table(engine)
            self._engine = engine
        return self._engine
