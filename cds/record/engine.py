"""Database engines for the store, and schema migrations that several processes may start at once."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import time
from functools import cache
from pathlib import Path

import orjson
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex, CreateTable

from cds.config import parse_database_url
from cds.record.schema import seen_jti

log = logging.getLogger(__name__)
logging.getLogger("alembic").setLevel(logging.WARNING)  # its per-connection chatter; the outcome is logged here

BUSY_TIMEOUT_MS = 2000  # a hook call waits at most this long for SQLite's write lock
CONNECT_TIMEOUT_S = 2  # nor this long for PostgreSQL to accept a connection
MIGRATION_WAIT_MS = 120_000  # start-up waits this long for another process's migration
MIGRATION_LOCK_KEY = 7_270_006_245  # pg_advisory_xact_lock key that serialises migrations


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def make_engine(url: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS, autocommit: bool = False, durable: bool = False,
                **options) -> Engine:
    """An engine for the store. Parameters stay out of error messages and logs: they hold patient ids.
    `autocommit`: every statement is its own transaction, for writes that are one statement (a begin and a
    commit would only add round trips and, on SQLite, lock waits). `durable`: on SQLite, every commit is
    synced to disk (`synchronous=FULL`; else `NORMAL`, which in WAL mode syncs at checkpoints only, so the
    last commits can be lost with the host's power). PostgreSQL commits are durable as it is configured."""
    parsed = parse_database_url(url)
    options = {"json_serializer": _json, "hide_parameters": True, **options}
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        if autocommit:
            options["isolation_level"] = "AUTOCOMMIT"
        return create_engine(parsed, pool_timeout=CONNECT_TIMEOUT_S,
                             connect_args={"connect_timeout": CONNECT_TIMEOUT_S}, **options)
    if not parsed.query.get("uri"):
        make_private(Path(parsed.database or ""))
    engine = create_engine(parsed, pool_timeout=BUSY_TIMEOUT_MS / 1000, **options)
    _configure_sqlite(engine, busy_timeout_ms, begin=not autocommit, synchronous="FULL" if durable else "NORMAL")
    return engine


def make_private(database: Path) -> None:
    """Create a SQLite database file readable by this user only (0600), in a directory of its own (0700) when it
    has to be made: the store holds patient ids, and whole requests when payloads are captured. SQLite gives its
    -wal and -shm files the mode of the database file. Files or a directory already there that others may read
    are left as they are, with a warning."""
    if not database.parent.exists():
        database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # several workers may start at once
        os.close(os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    _warn_if_open_to_others(str(database.parent))
    for path in (database, database.with_name(f"{database.name}-wal"), database.with_name(f"{database.name}-shm")):
        _warn_if_open_to_others(str(path))


@cache  # once per path and process
def _warn_if_open_to_others(path: str) -> None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        log.warning("%s has mode %o: others may read audit records; chmod %s %s", path, mode,
                    "700" if os.path.isdir(path) else "600", path)


def replay_url(url: str) -> str:
    """Where seen JWT ids are kept. On SQLite, a file of their own beside the store's: SQLite has one write
    lock per file, and a call's replay check should not wait while the audit writer commits a batch. Elsewhere
    (and for a URI-form SQLite database) the store's own database."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.query.get("uri"):
        return url
    path = Path(parsed.database or "")
    return parsed.set(database=str(path.with_name(f"{path.stem}-replay{path.suffix}"))).render_as_string(
        hide_password=False)


def create_replay_table(engine: Engine) -> None:
    """The seen-id table in a replay file of its own (the store's migrations make it in the store's database).
    Idempotent, so workers starting together may all run it."""
    with engine.connect() as connection:
        connection.execute(CreateTable(seen_jti, if_not_exists=True))
        for index in seen_jti.indexes:
            connection.execute(CreateIndex(index, if_not_exists=True))


def _configure_sqlite(engine: Engine, busy_timeout_ms: int, begin: bool = True, synchronous: str = "NORMAL") -> None:
    """WAL lets readers and one writer work at once; BEGIN IMMEDIATE takes the write lock up front, so a
    writer waits its turn (busy timeout) rather than failing mid-transaction when another process wrote.
    Without `begin`, the driver's autocommit mode stays: each statement commits on its own."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun below, not by the driver
        for pragma in (f"busy_timeout={busy_timeout_ms}", f"synchronous={synchronous}", "foreign_keys=ON"):
            dbapi_connection.execute(f"PRAGMA {pragma}")
        _use_wal(dbapi_connection, busy_timeout_ms / 1000)

    if begin:
        @event.listens_for(engine, "begin")
        def _begin(connection) -> None:
            mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
            connection.exec_driver_sql(f"BEGIN {mode}")


def _use_wal(dbapi_connection: sqlite3.Connection, wait_s: float) -> None:
    """Switch a new database to WAL (it stays so). The switch ignores the busy timeout, so when several
    processes open a new file at once it is retried here."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if dbapi_connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                dbapi_connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "cds:record/migrations")
    return config


@cache
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def schema_revision(connection: Connection) -> str | None:
    """The schema revision the database is at; None when it holds no audit store."""
    return MigrationContext.configure(connection).get_current_revision()


def migrate(url: str) -> None:
    """Bring the schema to the newest revision. Safe when many workers and hosts start together: the
    upgrade runs under PostgreSQL's advisory lock or SQLite's exclusive lock, so one migrates and the
    others then find it done."""
    engine = make_engine(url, busy_timeout_ms=MIGRATION_WAIT_MS)
    try:
        with engine.connect().execution_options(sqlite_begin="DEFERRED") as connection:
            current = schema_revision(connection)
        if current == head_revision():
            return
        with engine.connect().execution_options(sqlite_begin="EXCLUSIVE") as connection:
            sqlite = engine.dialect.name == "sqlite"
            if sqlite:  # SQLite alters a table by copying it: its children's foreign keys are checked after
                connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            with connection.begin():
                if not sqlite:
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                config = alembic_config()
                config.attributes["connection"] = connection
                command.upgrade(config, "head")  # finds nothing to do when another process just did it
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError("audit store migration left records whose foreign keys do not hold")
            if sqlite:
                connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
        log.info("audit store schema at revision %s (was %s)", head_revision(), current or "empty")
    finally:
        engine.dispose()


def describe_database_error(exc: BaseException) -> str:
    """The driver's error kind and first line: never the statement or its parameters."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first_line = (str(cause).strip().splitlines() or [""])[0][:200]
    return f"{type(cause).__name__}: {first_line}"
