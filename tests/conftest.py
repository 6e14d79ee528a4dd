"""Shared fixtures: the real app, driven through its HTTP interface."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from cds.app import create_app
from cds.config import Settings
from cds.store import Store
from tests.postgres import postgres_server

DATA = Path(__file__).parent / "data"
EXAMPLES = Path(__file__).parent.parent / "fhir_examples"


def load(name: str) -> dict:
    """A request body from tests/data (reference requests) or fhir_examples/."""
    path = DATA / name if (DATA / name).exists() else EXAMPLES / name
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory) -> str:
    """One SQLite store for the session: apps share it, so its schema is migrated once."""
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/cds.sqlite3"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL on loopback for the session (or CDS_TEST_DATABASE_URL)."""
    with postgres_server() as url:
        yield url


@pytest.fixture
def settings(sqlite_url) -> Settings:
    return Settings(cors_origins=("https://ehr.example.org",), database_url=sqlite_url).resolved()


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def order_sign() -> dict:
    return copy.deepcopy(load("sandbox-order-sign-rx.json"))


@pytest.fixture
def order_select() -> dict:
    return copy.deepcopy(load("inferno-order-select.json"))


@pytest.fixture(scope="session", params=["sqlite_url", "postgres_url"], ids=["sqlite", "postgresql"])
def database_url(request) -> str:
    """Each store test runs against SQLite and against PostgreSQL."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def store(database_url) -> Iterator[Store]:
    store = Store(database_url).start()
    yield store
    store.close()


@pytest.fixture
def empty_database_url(database_url, tmp_path) -> Iterator[str]:
    """A database with nothing in it, on the same server as `database_url`."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path}/empty.sqlite3"
        return
    name = f"cds_{uuid.uuid4().hex[:12]}"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    admin.dispose()
