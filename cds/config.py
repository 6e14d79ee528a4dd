"""One Settings object, read once from CDS_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

MIB = 1024 * 1024
EXAMPLE_DATABASE_URL = "postgresql+psycopg://cds:secret@db.example.org/cds"


class SettingsError(ValueError):
    """A CDS_* variable holds a value the service cannot use; the message names it."""


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name}={raw!r}: expected true/false")


def _int(name: str, raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected an integer") from None
    if value < 0:
        raise SettingsError(f"{name}={raw!r}: must not be negative")
    return value


def parse_database_url(url: str) -> URL:
    """A store URL the service can use: PostgreSQL, or a SQLite file every worker process can open."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SettingsError(f"CDS_DATABASE_URL: not a database URL (e.g. {EXAMPLE_DATABASE_URL})") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise SettingsError(f"CDS_DATABASE_URL: the store runs on SQLite or PostgreSQL, not {backend}")
    if backend == "sqlite" and (not parsed.database or parsed.database == ":memory:"):
        raise SettingsError("CDS_DATABASE_URL: SQLite needs a file that every worker process can open")
    return parsed


def _list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


_PARSERS = {bool: _bool, int: _int, tuple: _list, str: lambda name, raw: raw.strip()}


@dataclass(frozen=True)
class Settings:
    """Every setting of the service. Each field `x` is read from `CDS_X`; see the README."""

    demo: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    threads: int = 4
    log_level: str = "INFO"
    public_base_url: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 5 * MIB
    max_json_depth: int = 64
    max_draft_orders: int = 200
    data_dir: str = "cds-data"
    database_url: str = field(default="", repr=False)  # may hold a password
    audit_required: bool = False
    audit_capture_payloads: bool = False
    audit_retention_days: int = 30

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"CDS_{f.name.upper()}"
            if name not in env:
                continue
            values[f.name] = _PARSERS[type(f.default)](name, env[name])
        values.update(overrides)
        return cls(**values).resolved()

    def resolved(self) -> Settings:
        """Apply demo-mode defaults and check values that depend on each other."""
        settings = self
        if settings.demo:
            settings = replace(
                settings,
                host="127.0.0.1" if settings.host in ("", "127.0.0.1") else settings.host,
                cors_origins=settings.cors_origins or ("*",),
            )
        if settings.max_json_depth < 8:
            raise SettingsError("CDS_MAX_JSON_DEPTH must be at least 8 to admit a CDS Hooks request")
        if settings.max_body_bytes < 1024:
            raise SettingsError("CDS_MAX_BODY_BYTES must be at least 1024")
        if settings.database_url:
            parse_database_url(settings.database_url)
        return settings

    @property
    def store_url(self) -> str:
        """The audit store's SQLAlchemy URL: CDS_DATABASE_URL, else a SQLite file in CDS_DATA_DIR."""
        return self.database_url or f"sqlite:///{os.path.abspath(os.path.join(self.data_dir, 'cds.sqlite3'))}"

    def demo_relaxations(self) -> list[str]:
        """What demo mode relaxes, said at start-up so nobody runs it by mistake."""
        if not self.demo:
            return []
        return [
            "bound to loopback only",
            "CORS allows any origin" if "*" in self.cors_origins else "CORS origins as configured",
        ]
