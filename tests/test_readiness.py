"""GET /ready over HTTP: ready while the policies are loaded and the audit store answers; 503 naming the check
that fails, within about a second even when the database hangs; ready again once the database is back."""

from __future__ import annotations

import re
import socket
import time
import uuid
from time import perf_counter

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from cds.policy.loader import BUILT_IN
from cds.record.schema import hook_call
from cds.web.ops import VERDICT_MAX_AGE_S, add_readiness_check
from tests import tokens
from tests.helpers import outcome
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


def test_while_a_check_calls_need_fails_they_are_refused_before_anything_is_done_with_them(app, order_sign):
    """Refused before authentication: the token's id is not recorded, nor the call; the same token is served
    once the check passes. What lets a proxy send such a refused call to another replica."""
    client = app.test_client()
    refusals_before = recorded_503s(app)
    warm = {"ok": False}
    add_readiness_check(app, lambda: ("warming", warm["ok"], "warming up"))
    token = tokens.mint()
    body = order_sign | {"hookInstance": str(uuid.uuid4())}
    refused = client.post(tokens.SERVICE_PATH, json=body, headers=tokens.bearer(token))
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert outcome(refused)["code"] == "transient" and "not ready" in outcome(refused)["diagnostics"]
    assert client.post(tokens.SERVICE_PATH, json=body, headers={"Authorization": "Bearer nonsense"}).status_code == 503
    assert client.post(f"{tokens.SERVICE_PATH}/feedback", json={"feedback": []}).status_code == 503
    assert client.get("/cds-services").status_code == 200  # discovery needs neither policies nor store

    warm["ok"] = True
    time.sleep(VERDICT_MAX_AGE_S + 0.1)  # the verdict a call is judged by is at most this old
    answered = client.post(tokens.SERVICE_PATH, json=body, headers=tokens.bearer(token))
    assert answered.status_code == 200, answered.get_data(as_text=True)
    assert client.post(tokens.SERVICE_PATH, json=body, headers=tokens.bearer(token)).status_code == 401  # replayed
    assert recorded_503s(app) == refusals_before  # the refused calls left no record


def recorded_503s(app) -> int:
    store = app.extensions["cds_store"]
    store.flush()
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).where(hook_call.c.status == 503)).scalar_one()


def test_a_check_calls_do_not_need_fails_ready_but_refuses_no_call(app, client, order_sign):
    add_readiness_check(app, lambda: ("advisory", False, "reported only"), calls_need_it=False)
    assert client.get("/ready").status_code == 503
    assert client.post(tokens.SERVICE_PATH, json=order_sign).status_code == 200


def test_the_store_check_refuses_calls_only_when_audit_is_required(make_app, order_sign):
    """By default a call does what the store's failure policy says while the database is unreachable; with audit
    required no call can be answered without it, so calls are refused before anything is done."""
    with socket.create_server(("127.0.0.1", 0)) as closed:
        unreachable = f"postgresql+psycopg://cds:{PASSWORD}@127.0.0.1:{closed.getsockname()[1]}/cds"
    for required in (False, True):
        app = make_app(database_url=unreachable, audit_required=required)
        try:
            answer = app.test_client().post(tokens.SERVICE_PATH, json=order_sign)
            refused_as_not_ready = answer.status_code == 503 and "not ready" in outcome(answer)["diagnostics"]
            assert refused_as_not_ready == required, answer.get_data(as_text=True)
        finally:
            app.extensions["cds_store"].close()
