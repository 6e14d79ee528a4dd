"""Shared fixtures: the real app, driven through its HTTP interface."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from cds.app import create_app
from cds.config import Settings

DATA = Path(__file__).parent / "data"
EXAMPLES = Path(__file__).parent.parent / "fhir_examples"


def load(name: str) -> dict:
    """A request body from tests/data (reference requests) or fhir_examples/."""
    path = DATA / name if (DATA / name).exists() else EXAMPLES / name
    return json.loads(path.read_text())


@pytest.fixture
def settings() -> Settings:
    return Settings(cors_origins=("https://ehr.example.org",)).resolved()


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


@pytest.fixture
def live_service(app) -> Iterator[str]:
    """The real app served over HTTP on a free loopback port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


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
