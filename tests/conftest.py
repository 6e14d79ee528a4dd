"""Shared fixtures: the real app, driven through its HTTP interface, with authentication on.

The `client` fixture signs every request as the registered test EHR (a fresh JWT per request, `aud` the
URL called), so tests exercise the real authentication without thinking about it. A test that sets its
own Authorization header sends that instead (an empty one: none at all). `make_app(**settings)` builds such
an app with other settings.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient
from werkzeug.datastructures import Headers

from cds.config import Settings
from cds.record import Store
from cds.web.app import create_app
from tests import tokens
from tests.helpers import load, serve_on_loopback
from tests.postgres import new_database, postgres_server


class SignedClient(FlaskClient):
    """A test client that signs each request as the test EHR unless it carries an Authorization header."""

    def open(self, *args, **kwargs):
        path = args[0] if args and isinstance(args[0], str) else kwargs.get("path", "/")
        headers = Headers(kwargs.pop("headers", None) or {})
        if headers.get("Authorization") == "":
            del headers["Authorization"]
        elif "Authorization" not in headers and kwargs.get("method", "GET") != "OPTIONS":
            base = self.application.config["CDS_SETTINGS"].public_bases()[0]
            headers["Authorization"] = f"Bearer {tokens.mint(aud=base + urlsplit(path).path)}"
        return super().open(*args, headers=headers, **kwargs)


@pytest.fixture(scope="session")
def clients_file(tmp_path_factory) -> Path:
    return tokens.write_registry(tmp_path_factory.mktemp("registry"))


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
def settings(clients_file, sqlite_url, tmp_path) -> Settings:
    return Settings(cors_origins=("https://ehr.example.org",), clients_file=str(clients_file),
                    public_base_url=(tokens.BASE,), database_url=sqlite_url, data_dir=str(tmp_path)).resolved()


@pytest.fixture
def make_app(settings):
    """An app whose test client signs its requests, with `overrides` applied to the test settings. Its store is
    closed after the test, so that no writer thread outlives it."""
    made = []

    def make(**overrides):
        app = create_app(replace(settings, **overrides).resolved())
        app.test_client_class = SignedClient
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["cds_store"].close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def order_sign() -> dict:
    """An order-sign call whose order a policy covers (E0221, with patient and coverage prefetched): the service
    decides, renders and records it."""
    return copy.deepcopy(load("e0221-home-device.json"))


@pytest.fixture
def order_select() -> dict:
    """An order-select call whose selected order a policy covers."""
    return copy.deepcopy(load("order-select-selection-only.json"))


@pytest.fixture
def live_service(make_app) -> Iterator[str]:
    """The real app in demo mode without authentication, served over HTTP on a free loopback port (as a
    developer runs it); yields its base URL. Signed calls against a real server: tests/test_cli_keys.py."""
    yield from serve_on_loopback(make_app(demo=True, auth_disabled=True))


@pytest.fixture(scope="session")
def _fhir_server_process():
    from pytest_httpserver import HTTPServer

    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def fhir_server(_fhir_server_process):
    """A real FHIR HTTP server on loopback (pytest-httpserver, threaded); expectations are cleared per test."""
    _fhir_server_process.clear()
    yield _fhir_server_process
    _fhir_server_process.clear()


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
    with new_database(database_url) as url:
        yield url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under mutation testing (scripts/mutation), run the fastest test files first and each file's fastest tests
    first: mutmut stops a mutant's run at its first failing test, so most mutants are decided within seconds."""
    stats = Path("mutmut-stats.json")
    if not os.environ.get("MUTANT_UNDER_TEST") or not stats.is_file():
        return
    seconds = json.loads(stats.read_text())["duration_by_test"]
    by_file: dict[str, list[float]] = {}
    for item in items:
        by_file.setdefault(item.nodeid.split("::")[0], []).append(seconds.get(item.nodeid, 0.0))
    mean = {path: sum(times) / len(times) for path, times in by_file.items()}
    items.sort(key=lambda item: (mean[item.nodeid.split("::")[0]], item.nodeid.split("::")[0],
                                 seconds.get(item.nodeid, 0.0)))
