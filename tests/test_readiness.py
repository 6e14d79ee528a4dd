"""GET /ready over HTTP: ready while the policies are loaded and the audit store answers; 503 naming the check
that fails, within about a second even when the database hangs; ready again once the database is back."""

from __future__ import annotations

import re
import socket
from time import perf_counter

import pytest
import yaml
from sqlalchemy.engine import make_url

from cds.policy.loader import BUILT_IN
from tests.postgres import throwaway_postgres

PASSWORD = "s3cret-pw"  # in the database URL; must never be shown
BOUND_S = 1.5  # the probe gives up after 1 s; the rest is slack for a shared machine


def ready(client) -> tuple[int, dict[str, dict], float]:
    """The status, the checks by name, and how long the answer took."""
    started = perf_counter()
    response = client.get("/ready")
    elapsed = perf_counter() - started
    body = response.get_json()
    assert body["status"] == ("ready" if response.status_code == 200 else "unavailable")
    assert PASSWORD not in response.get_data(as_text=True)
    return response.status_code, {check["name"]: check for check in body["checks"]}, elapsed


def failing(checks: dict[str, dict]) -> list[str]:
    return [name for name, check in checks.items() if not check["ok"]]


@pytest.fixture
def stoppable_postgres():
    with throwaway_postgres() as server:
        yield server


def test_ready_names_each_loaded_policy_with_its_version_and_the_store_that_answered(client):
    status, checks, _ = ready(client)
    assert status == 200 and list(checks) == ["policies", "store"]
    policy = yaml.safe_load((BUILT_IN / "DME101.045.yaml").read_text())
    assert checks["policies"] == {"name": "policies", "ok": True, "detail": f"DME101.045 version {policy['version']}"}
    assert checks["store"]["ok"] and re.fullmatch(r"sqlite answered in \d+\.\d ms", checks["store"]["detail"])


def test_not_ready_without_a_policy(app, client):
    app.extensions["cds"].policies = ()
    status, checks, _ = ready(client)
    assert status == 503 and failing(checks) == ["policies"]
    assert checks["policies"]["detail"] == "no policy loaded"


def test_a_stopped_database_makes_ready_503_naming_the_store_and_its_restart_makes_it_ready(
        make_app, stoppable_postgres):
    # The throwaway server trusts loopback, so it ignores the password; the check must still never show it.
    url = make_url(stoppable_postgres.url).set(password=PASSWORD).render_as_string(hide_password=False)
    app = make_app(database_url=url)
    client = app.test_client()
    try:
        status, checks, _ = ready(client)
        assert status == 200 and checks["store"]["detail"].startswith("postgresql answered in ")

        stoppable_postgres.stop()
        for _ in range(2):  # the pooled connection the server dropped, then a new connection refused
            status, checks, elapsed = ready(client)
            assert status == 503 and failing(checks) == ["store"] and elapsed < BOUND_S
            assert checks["store"]["detail"].startswith("OperationalError: ")

        stoppable_postgres.start()
        status, checks, _ = ready(client)
        assert status == 200 and failing(checks) == []
    finally:
        app.extensions["cds_store"].close()


def test_a_database_that_never_answers_fails_ready_within_a_second(make_app):
    # A listening socket that never accepts: connections are made, then no server ever speaks.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.setblocking(False)
        app = make_app(database_url=f"postgresql+psycopg://cds:{PASSWORD}@127.0.0.1:{silent.getsockname()[1]}/cds")
        client = app.test_client()
        connections(silent)  # start-up's attempt to migrate the schema
        status, checks, elapsed = ready(client)
        assert status == 503 and failing(checks) == ["store"] and elapsed < BOUND_S
        assert checks["store"]["detail"] == "postgresql: no answer within 1 s"
        # Asked again while that probe still waits (PostgreSQL's connect timeout is 2 s): this answer comes within
        # the bound too, and no second probe is begun.
        status, checks, elapsed = ready(client)
        assert status == 503 and failing(checks) == ["store"] and elapsed < BOUND_S
        assert connections(silent) == 1
        app.extensions["cds_store"].close()


def connections(listener: socket.socket) -> int:
    """How many connections were made to `listener` since last asked (each accepted and closed now)."""
    count = 0
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1
