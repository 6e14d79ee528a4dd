"""When the store fails: a hook call is answered once its record is spooled, and the spool replayed into the
database when it takes records again; refused when the record is nowhere durable, or audit is required."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from cds.record import Store, StoreUnavailable, store_failures
from cds.record.schema import decision
from cds.record.store import RETRY_AFTER_S
from tests.helpers import outcome
from tests.postgres import throwaway_postgres
from tests.records import a_call, a_decision

FEEDBACK = "/cds-services/order-sign-crd/feedback"
ONE_FEEDBACK = {"feedback": [{"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-26T10:15:30Z"}]}


@pytest.fixture
def sqlite_path(tmp_path) -> Path:
    path = tmp_path / "store.sqlite3"
    Store(f"sqlite:///{path}").start().close()
    return path


@pytest.fixture
def read_only_url(sqlite_path) -> str:
    """A migrated SQLite file opened read-only: every write fails, as on a full or read-only disk."""
    return f"sqlite:///file:{sqlite_path}?mode=ro&uri=true"


def spooled_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl")) if directory.is_dir() else []


def assert_answer_survives(store: Store) -> str:
    """The call is answered at once; its record is in the spool. Returns its coverage-assertion-id."""
    call = a_call()
    given = a_decision(call)
    spooled, lost = store_failures("spooled"), store_failures("record_call")
    store.audit(call, [given])  # in the spool before it returns
    assert given.coverage_assertion_id in "".join(path.read_text() for path in spooled_files(store.spool.directory))
    store.flush()  # the writer tried the database, and left the record in the spool
    assert (store_failures("spooled"), store_failures("record_call")) == (spooled + 1, lost)
    assert given.coverage_assertion_id in "".join(path.read_text() for path in spooled_files(store.spool.directory))
    return given.coverage_assertion_id


def assert_fails_closed(store: Store, caplog) -> None:
    call = a_call()
    given = a_decision(call)
    lost = store_failures("record_call")
    with caplog.at_level(logging.ERROR), pytest.raises(StoreUnavailable) as refused:
        store.audit(call, [given])
    assert refused.value.status == 503
    assert store_failures("record_call") == lost + 1
    assert f"{given.coverage_assertion_id} DeviceRequest/dr-0 DME101.045@2024-03-15 not-covered" in caplog.text
    assert call.patient_id not in caplog.text


def stored(url: str, assertion_id: str) -> int:
    from sqlalchemy import create_engine, func, select
    engine = create_engine(url)
    with engine.connect() as connection:
        found = connection.execute(select(func.count()).select_from(decision)
                                   .where(decision.c.coverage_assertion_id == assertion_id)).scalar_one()
    engine.dispose()
    return found


def test_by_default_a_record_the_database_refuses_is_spooled_and_replayed_once_it_takes_records(
        sqlite_path, read_only_url, tmp_path):
    spool = tmp_path / "spool"
    refusing = Store(read_only_url, spool_dir=str(spool))
    assertion_ids = [assert_answer_survives(refusing) for _ in range(3)]
    refusing.close()  # as a process that stops: its spool file is left for another
    assert spooled_files(spool)

    url = f"sqlite:///{sqlite_path}"
    Store(url, spool_dir=str(spool)).start().close()  # start-up replays it
    assert [stored(url, assertion_id) for assertion_id in assertion_ids] == [1, 1, 1]
    assert spooled_files(spool) == []
    Store(url, spool_dir=str(spool)).start().close()
    assert [stored(url, assertion_id) for assertion_id in assertion_ids] == [1, 1, 1]  # exactly once


def test_a_record_neither_the_database_nor_the_spool_takes_refuses_the_call(read_only_url, tmp_path, caplog):
    unwritable = tmp_path / "not-a-directory"
    unwritable.write_text("")
    assert_fails_closed(Store(read_only_url, spool_dir=str(unwritable)), caplog)
    assert_fails_closed(Store(read_only_url), caplog)  # no spool at all


def test_without_a_writable_spool_a_call_waits_for_its_commit(sqlite_path, tmp_path):
    unwritable = tmp_path / "not-a-directory"
    unwritable.write_text("")
    store = Store(f"sqlite:///{sqlite_path}", spool_dir=str(unwritable))
    for _ in range(2):
        call = a_call()
        given = a_decision(call)
        store.audit(call, [given])  # no flush: committed before it returned
        assert stored(f"sqlite:///{sqlite_path}", given.coverage_assertion_id) == 1
    store.close()


def test_with_audit_required_a_failed_write_refuses_the_call_and_nothing_is_spooled(read_only_url, tmp_path,
                                                                                    caplog):
    store = Store(read_only_url, required=True, spool_dir=str(tmp_path / "spool"))
    assert store.spool is None
    assert_fails_closed(store, caplog)
    assert not (tmp_path / "spool").exists()


def test_feedback_the_store_cannot_keep_is_503_with_an_operation_outcome(read_only_url, make_app):
    client = make_app(database_url=read_only_url).test_client()
    response = client.post(FEEDBACK, json=ONE_FEEDBACK)
    assert response.status_code == 503
    assert outcome(response)["code"] == "transient"
    assert "readonly" not in response.get_data(as_text=True)  # the cause goes to the log, not the client


def test_a_postgresql_that_stops_is_survived_by_default_spooled_and_replayed_when_it_returns(tmp_path, caplog,
                                                                                           make_app):
    with throwaway_postgres() as server:
        lenient = Store(server.url, spool_dir=str(tmp_path / "spool")).start()
        strict = Store(server.url, required=True).start()
        for store in (lenient, strict):
            call = a_call()
            store.audit(call, [a_decision(call)])  # pooled connections now open
            store.flush()
        server.stop()
        spooled = [assert_answer_survives(lenient)]
        assert_fails_closed(strict, caplog)

        started = time.monotonic()
        spooled.append(assert_answer_survives(lenient))  # fails fast while the database is known to be down
        assert time.monotonic() - started < 0.5

        app = make_app(database_url=server.url)  # start-up survives it too
        assert app.test_client().post(FEEDBACK, json=ONE_FEEDBACK).status_code == 503

        server.start()
        deadline = time.monotonic() + 15  # the writer looks at its spool every few seconds
        while lenient.spool.pending:
            assert time.monotonic() < deadline, "the spool was not replayed once the database returned"
            time.sleep(0.1)
        assert [stored(server.url, assertion_id) for assertion_id in spooled] == [1, 1]
        for store in (lenient, strict, app.extensions["cds_store"]):
            store.close()


def test_by_default_replay_checks_fall_back_to_this_host_during_an_outage_and_move_into_the_database_after(
        tmp_path, caplog):
    with throwaway_postgres() as server:
        store = Store(server.url, spool_dir=str(tmp_path / "spool")).start()
        strict = Store(server.url, required=True).start()
        expires = time.time() + 300
        assert store.seen_jti("iss-1", "before", expires) is False
        server.stop()
        assert store.seen_jti("iss-1", "during", expires) is False  # answered from this host's file
        assert store.seen_jti("iss-1", "during", expires) is True  # a replay at this host is caught
        assert store.seen_jti("iss-1", "before", expires) is False  # the documented gap: not known here
        with pytest.raises(StoreUnavailable):
            strict.seen_jti("iss-1", "strict", expires)  # audit required: 503

        server.start()
        time.sleep(RETRY_AFTER_S)  # the store tries the database again
        with caplog.at_level(logging.WARNING):
            assert store.seen_jti("iss-1", "during", expires) is True  # moved first, then checked: a replay
        assert "JWT id 'before' from iss 'iss-1' was accepted during the database outage" in caplog.text
        assert store.seen_jti("iss-1", "after", expires) is False
        other = Store(server.url).start()  # another replica, which never saw the outage
        assert other.seen_jti("iss-1", "during", expires) is True
        for each in (store, strict, other):
            each.close()
