"""When the store fails: a hook call is still answered, logged and counted; or refused when audit is required."""

from __future__ import annotations

import logging
import time

import pytest

from cds.record import Store, StoreUnavailable, store_failures
from tests.helpers import outcome
from tests.postgres import postgres_server
from tests.records import a_call, a_decision

FEEDBACK = "/cds-services/order-sign-crd/feedback"
ONE_FEEDBACK = {"feedback": [{"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-26T10:15:30Z"}]}


@pytest.fixture
def read_only_url(tmp_path) -> str:
    """A migrated SQLite file opened read-only: every write fails, as on a full or read-only disk."""
    path = tmp_path / "store.sqlite3"
    Store(f"sqlite:///{path}").start().close()
    return f"sqlite:///file:{path}?mode=ro&uri=true"


def assert_answer_survives(store: Store, caplog) -> None:
    call = a_call()
    given = a_decision(call)
    failures = store_failures("record_call")
    with caplog.at_level(logging.ERROR):
        store.audit(call, [given])  # returns at once: the answer goes out
        store.flush()
    assert store_failures("record_call") == failures + 1
    assert f"{given.coverage_assertion_id} DeviceRequest/dr-0 DME101.045@2024-03-15 not-covered" in caplog.text
    assert call.patient_id not in caplog.text


def assert_fails_closed(store: Store) -> None:
    call = a_call()
    with pytest.raises(StoreUnavailable) as refused:
        store.audit(call, [a_decision(call)])
    assert refused.value.status == 503


def test_by_default_a_failed_write_is_logged_counted_and_the_call_answered(read_only_url, caplog):
    assert_answer_survives(Store(read_only_url), caplog)


def test_with_audit_required_a_failed_write_refuses_the_call(read_only_url):
    assert_fails_closed(Store(read_only_url, required=True))


def test_feedback_the_store_cannot_keep_is_503_with_an_operation_outcome(read_only_url, make_app):
    client = make_app(database_url=read_only_url).test_client()
    response = client.post(FEEDBACK, json=ONE_FEEDBACK)
    assert response.status_code == 503
    assert outcome(response)["code"] == "transient"
    assert "readonly" not in response.get_data(as_text=True)  # the cause goes to the log, not the client


def test_a_postgresql_that_stops_is_survived_by_default_and_fails_closed_when_required(monkeypatch, caplog,
                                                                                       make_app):
    monkeypatch.delenv("CDS_TEST_DATABASE_URL", raising=False)  # this test stops its own server
    with postgres_server() as url:
        lenient, strict = Store(url).start(), Store(url, required=True).start()
        for store in (lenient, strict):
            call = a_call()
            store.audit(call, [a_decision(call)])  # pooled connections now open
            store.flush()
    assert_answer_survives(lenient, caplog)
    assert_fails_closed(strict)

    started = time.monotonic()
    assert_answer_survives(lenient, caplog)  # fails fast while the database is known to be down
    assert time.monotonic() - started < 0.5

    app = make_app(database_url=url)  # start-up survives it too
    assert app.test_client().post(FEEDBACK, json=ONE_FEEDBACK).status_code == 503
