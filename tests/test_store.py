"""The audit store against SQLite and a real PostgreSQL: records, feedback, JWT ids, migrations, workers."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, make_url, select

from cds.record import FeedbackReceipt, FeedbackRecord, Store, StoreUnavailable, store_failures
from cds.record.engine import alembic_config, head_revision, make_engine, replay_url
from cds.record.schema import decision, hook_call, metadata
from tests.records import E0221, a_call, a_decision

FORK = multiprocessing.get_context("fork")
WORKERS, CALLS_EACH = 4, 50


def count(store: Store, table, *where) -> int:
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def test_migrations_from_empty_build_the_schema_the_code_uses(empty_database_url):
    store = Store(empty_database_url).start()
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() == head_revision() == "0003"
        assert compare_metadata(context, metadata) == []
    store.close()


def test_a_store_at_the_first_revision_keeps_its_records_when_migrated(empty_database_url):
    engine = make_engine(empty_database_url)
    with engine.connect().execution_options(sqlite_begin="EXCLUSIVE") as connection, connection.begin():
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(hook_call.insert().values(  # the columns revision 0001 has
            id="old-call", time=datetime.now(UTC), service_id="order-sign-crd", hook="order-sign",
            hook_instance="h-1", status=200, latency_ms=1.0, orders=[]))
    engine.dispose()
    store = Store(empty_database_url).start()
    with store.engine.connect() as connection:
        row = connection.execute(select(hook_call).where(hook_call.c.id == "old-call")).mappings().one()
    assert (row["hook_instance"], row["status"], row["refusal"]) == ("h-1", 200, None)


def test_a_store_at_the_first_revision_is_upgraded_keeping_its_decisions(empty_database_url):
    """0003 adds the performer a decided order was dispatched to; decisions recorded before it keep theirs."""
    engine = make_engine(empty_database_url)
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    call = a_call()
    before = a_decision(call)
    with engine.begin() as connection:  # a call and its decision as the first revision's code wrote them
        connection.execute(hook_call.insert(), {
            "id": str(uuid.uuid4()), "time": call.time, "service_id": call.service_id, "hook": call.hook,
            "hook_instance": call.hook_instance, "status": 200, "latency_ms": 1.0, "orders": []})
        call_id = connection.execute(select(hook_call.c.id)).scalar_one()
        connection.execute(decision.insert(), {
            "coverage_assertion_id": before.coverage_assertion_id, "call_id": call_id,
            "hook_instance": call.hook_instance, "order_reference": before.order_reference,
            "order_codes": list(before.order_codes), "policy_id": before.policy_id,
            "policy_version": before.policy_version, "outcome": before.outcome, "reason": before.reason,
            "suggestion_uuids": [], "decided_at": before.decided_at})
    engine.dispose()
    store = Store(empty_database_url).start()
    assert store.decision_report(before.coverage_assertion_id)["order_reference"] == before.order_reference
    assert store.decision_report(before.coverage_assertion_id)["performer"] is None
    dispatched = a_call()
    after = replace(a_decision(dispatched), performer="Organization/supplier-1")
    store.record_call(dispatched, [after])
    assert store.decision_report(after.coverage_assertion_id)["performer"] == "Organization/supplier-1"
    store.close()


def test_every_decision_is_found_again_by_its_coverage_assertion_id(store):
    call = a_call(orders=2)
    decisions = [a_decision(call, order=0), a_decision(call, order=1)]
    store.record_call(call, decisions)
    for given in decisions:
        report = store.decision_report(given.coverage_assertion_id)
        assert report["order_reference"] == given.order_reference
        assert report["order_codes"] == [E0221]
        assert (report["policy_id"], report["policy_version"]) == ("DME101.045", "2024-03-15")
        assert report["outcome"] == "not-covered" and report["reason"] == given.reason
        assert report["decided_at"] == given.decided_at  # timezone-aware UTC, to the microsecond
        assert report["card_uuid"] == given.card_uuid
        assert report["suggestion_uuids"] == list(given.suggestion_uuids)
        assert (report["hook_instance"], report["service_id"], report["client_iss"], report["status"]) == (
            call.hook_instance, "order-sign-crd", "https://ehr.example.org", 200)
    assert store.decision_report("no-such-id") is None


@pytest.mark.parametrize("microsecond", [0, 123456])
def test_records_the_writer_inserts_through_the_driver_are_stored_as_sqlalchemy_stores_them(database_url,
                                                                                          microsecond):
    """The writer's hot path builds its rows by hand (cds.record.inserts); the database must hold exactly what
    SQLAlchemy's types would have written, read raw, without any type processing."""
    from cds.record.records import JudgedOrder
    from cds.record.store import _rows

    store = Store(database_url, capture_payloads=True).start()
    when = datetime(2026, 5, 1, 9, 30, 15, microsecond, tzinfo=timezone(timedelta(hours=-5)))
    call = a_call(time=when, request={"hook": "order-sign", "ü": [1.5, None]}, response={"cards": []},
                  orders=0, refusal=None)
    call = replace(call, orders=(JudgedOrder("DeviceRequest/1", (E0221, "x|y")), JudgedOrder(None, (), "Org/2")))
    given = [a_decision(call), replace(a_decision(call, order=1), card_uuid=None, suggestion_uuids=(),
                                       coverage_reference=None, performer="Organization/s")]
    by_driver = store.record_call(call, given)
    twin = [replace(d, coverage_assertion_id=str(uuid.uuid4())) for d in given]
    by_sqlalchemy = "by-sqlalchemy-" + str(uuid.uuid4())[:8]
    rows = _rows(by_sqlalchemy, call, twin)
    with store.engine.begin() as connection:
        connection.execute(hook_call.insert(), [rows["call"]])
        connection.execute(decision.insert(), rows["decisions"])

    def raw(sql: str, key: str) -> list[tuple]:
        with store.engine.connect() as connection:
            return [tuple(row) for row in connection.exec_driver_sql(sql.format(key=key))]

    calls = "SELECT * FROM hook_call WHERE id = '{key}'"
    assert raw(calls, by_driver)[0][1:] == raw(calls, by_sqlalchemy)[0][1:]
    decisions = "SELECT * FROM decision WHERE call_id = '{key}' ORDER BY order_reference"
    assert [row[2:] for row in raw(decisions, by_driver)] == [row[2:] for row in raw(decisions, by_sqlalchemy)]
    assert store.decision_report(given[0].coverage_assertion_id)["decided_at"] == when
    store.close()


def test_only_references_and_codes_are_kept_unless_payload_capture_is_on(database_url):
    request = {"hook": "order-sign", "fhirAuthorization": {"access_token": "secret-token", "scope": "x"}}
    response = {"cards": [{"summary": "not covered"}]}
    minimal = Store(database_url)
    call = a_call(request=request, response=response)
    minimal.record_call(call, [a_decision(call)])
    with minimal.engine.connect() as connection:
        row = connection.execute(select(hook_call).where(hook_call.c.hook_instance == call.hook_instance)).one()
    assert row.request is None and row.response is None
    assert row.orders == [{"reference": "DeviceRequest/dr-0", "codes": [E0221]}]

    capturing = Store(database_url, capture_payloads=True)
    call = a_call(request=request, response=response)
    capturing.record_call(call)
    with capturing.engine.connect() as connection:
        row = connection.execute(select(hook_call).where(hook_call.c.hook_instance == call.hook_instance)).one()
    assert row.response == response
    assert row.request["fhirAuthorization"] == {"access_token": "[not stored]", "scope": "x"}
    assert "secret-token" not in str(row.request)


def test_purge_clears_payloads_past_retention_and_keeps_the_decisions(database_url):
    store = Store(database_url, capture_payloads=True, retention_days=30)
    old = a_call(time=datetime.now(UTC) - timedelta(days=31), request={"hook": "order-sign"}, response={"cards": []})
    recent = a_call(request={"hook": "order-sign"}, response={"cards": []})
    old_decision = a_decision(old)
    store.record_call(old, [old_decision])
    store.record_call(recent)
    report = store.purge()
    assert report.payloads_cleared >= 1
    assert count(store, hook_call, hook_call.c.hook_instance == old.hook_instance,
                 hook_call.c.request.is_(None), hook_call.c.response.is_(None)) == 1
    assert count(store, hook_call, hook_call.c.hook_instance == recent.hook_instance,
                 hook_call.c.request.is_not(None)) == 1
    assert store.decision_report(old_decision.coverage_assertion_id)["outcome"] == "not-covered"


def test_feedback_joins_its_decision_repeats_are_idempotent_and_unknown_cards_are_kept(store):
    call = a_call()
    given = a_decision(call)
    store.record_call(call, [given])
    when = datetime(2026, 11, 26, 10, 15, 30, 123000, tzinfo=UTC)
    overridden = FeedbackRecord(given.card_uuid, "overridden", when, override_code="patient-pays",
                                override_system="http://example.org/reasons", override_display="Patient pays",
                                override_comment="told of non-coverage")
    unknown = FeedbackRecord(f"unknown-{uuid.uuid4()}", "accepted", when, accepted_suggestions=("s1",))
    assert store.record_feedback("order-sign-crd", [overridden, unknown]) == FeedbackReceipt(stored=2, unmatched=1)
    chicago = timezone(timedelta(hours=-6))
    same_instant_elsewhere = FeedbackRecord(given.card_uuid, "overridden", when.astimezone(chicago))
    assert store.record_feedback("order-sign-crd", [overridden, same_instant_elsewhere]) == FeedbackReceipt(
        repeated=2)

    entries = store.decision_report(given.coverage_assertion_id)["feedback"]
    assert len(entries) == 1
    assert entries[0]["outcome_time"] == when
    assert (entries[0]["override_code"], entries[0]["override_display"], entries[0]["override_comment"]) == (
        "patient-pays", "Patient pays", "told of non-coverage")


def test_feedback_that_came_before_its_decisions_joins_them_however_many_a_record_holds(store, monkeypatch):
    monkeypatch.setattr("cds.record.store.JOIN_CHUNK", 2)  # five cards: joined in three statements
    call = a_call(orders=5)
    decisions = [a_decision(call, order) for order in range(5)]
    early = [FeedbackRecord(d.card_uuid, "accepted", datetime.now(UTC), accepted_suggestions=("s1",))
             for d in decisions[::2]]
    assert store.record_feedback("order-sign-crd", early) == FeedbackReceipt(stored=3, unmatched=3)
    store.record_call(call, decisions)
    assert [len(store.decision_report(d.coverage_assertion_id)["feedback"]) for d in decisions] == [1, 0, 1, 0, 1]


def test_a_jwt_id_is_a_replay_the_second_time_until_it_expires(store):
    jti, expires = str(uuid.uuid4()), time.time() + 300
    assert store.seen_jti("https://ehr.example.org", jti, expires) is False
    assert store.seen_jti("https://ehr.example.org", jti, expires) is True
    assert store.seen_jti("https://other.example.org", jti, expires) is False  # ids are per issuer
    assert store.seen_jti("iss", jti, datetime.now(UTC) + timedelta(minutes=5)) is False  # a datetime works too
    assert store.seen_jti("iss", jti, datetime.now(UTC) + timedelta(minutes=5)) is True


def test_on_sqlite_replay_checks_do_not_wait_for_the_audit_write_lock(sqlite_url):
    store = Store(sqlite_url).start()
    assert store.replay_url != store.url  # a file of its own beside the store's
    writer = sqlite3.connect(make_url(sqlite_url).database, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the store's write lock held, as the audit writer holds it mid-batch
    try:
        assert store.seen_jti("iss", str(uuid.uuid4()), time.time() + 60) is False  # would fail after the busy timeout
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        store.close()


@pytest.mark.parametrize(("url", "replay"), [
    ("sqlite:////data/cds.sqlite3", "sqlite:////data/cds-replay.sqlite3"),
    ("sqlite:///relative/audit.db", "sqlite:///relative/audit-replay.db"),
    ("sqlite:///file:store?mode=memory&uri=true", "sqlite:///file:store?mode=memory&uri=true"),
    ("postgresql+psycopg://cds:secret@db:5432/cds", "postgresql+psycopg://cds:secret@db:5432/cds"),
])
def test_seen_jwt_ids_get_a_sqlite_file_of_their_own_and_share_any_other_database(url, replay):
    assert replay_url(url) == replay


def test_expired_jwt_ids_are_purged(database_url):
    store = Store(database_url)
    store.seen_jti("iss", f"expired-{uuid.uuid4()}", time.time() - 1)
    assert store.purge().jtis_deleted >= 1
    store.seen_jti("iss", f"expired-{uuid.uuid4()}", time.time() - 1)
    fresh = Store(database_url)  # a new process purges expired ids on its first check
    jti = str(uuid.uuid4())
    assert fresh.seen_jti("iss", jti, time.time() + 60) is False
    assert fresh.purge().jtis_deleted == 0


def test_list_filters_by_date_policy_and_outcome_and_stats_count_overrides(store):
    policy = f"TEST-{uuid.uuid4().hex[:8]}"
    day = datetime(2026, 5, 1, 9, tzinfo=UTC)
    calls = [a_call(time=day + timedelta(days=i)) for i in range(3)]
    decided = [a_decision(calls[0], policy_id=policy), a_decision(calls[1], policy_id=policy),
               a_decision(calls[2], policy_id=policy, outcome="covered")]
    for call, given in zip(calls, decided, strict=True):
        store.record_call(call, [given])
    store.record_feedback("order-sign-crd", [
        FeedbackRecord(decided[0].card_uuid, "overridden", day, override_code="patient-pays"),
        FeedbackRecord(decided[1].card_uuid, "accepted", day, accepted_suggestions=decided[1].suggestion_uuids),
    ])

    listed = store.decisions(policy_id=policy)
    assert [row["coverage_assertion_id"] for row in listed] == [d.coverage_assertion_id for d in reversed(decided)]
    assert (listed[-1]["feedback"], listed[-1]["overridden"]) == (1, 1)
    assert [r["coverage_assertion_id"] for r in store.decisions(policy_id=policy, outcome="covered")] == [
        decided[2].coverage_assertion_id]
    assert [r["coverage_assertion_id"] for r in store.decisions(since=day + timedelta(days=1),
                                                                until=day + timedelta(days=2), policy_id=policy)] == [
        decided[1].coverage_assertion_id]

    stats = next(s for s in store.stats()[0] if s.policy_id == policy)
    assert stats.by_outcome == {"not-covered": 2, "covered": 1}
    assert (stats.decisions, stats.with_feedback, stats.overridden, stats.override_rate) == (3, 2, 1, 0.5)


def test_counts_by_day_policy_outcome_and_hook_feedback_by_reason_and_the_client_filter(store):
    policy, client = f"TEST-{uuid.uuid4().hex[:8]}", f"https://ehr-{uuid.uuid4().hex[:8]}.example.org"
    day = datetime(2026, 6, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # 2026-06-02 04:30 UTC
    calls = [replace(a_call(time=day), client_iss=client),
             replace(a_call(time=day + timedelta(days=1)), client_iss=client),
             replace(a_call(time=day + timedelta(days=1)), hook="order-select")]
    decided = [a_decision(calls[0], policy_id=policy), a_decision(calls[1], policy_id=policy),
               a_decision(calls[2], policy_id=policy, outcome="covered")]
    for call, given in zip(calls, decided, strict=True):
        store.record_call(call, [given])
    store.record_feedback("order-sign-crd", [
        FeedbackRecord(decided[0].card_uuid, "overridden", day, override_code="patient-pays",
                       override_display="Patient pays", override_comment="told"),
        FeedbackRecord(decided[0].card_uuid, "overridden", day + timedelta(seconds=1), override_code="patient-pays"),
        FeedbackRecord(decided[1].card_uuid, "accepted", day, accepted_suggestions=decided[1].suggestion_uuids),
        FeedbackRecord(decided[2].card_uuid, "overridden", day),
    ])

    assert store.decision_counts(policy_id=policy) == [
        {"day": "2026-06-02", "policy_id": policy, "outcome": "not-covered", "hook": "order-sign", "n": 1},
        {"day": "2026-06-03", "policy_id": policy, "outcome": "covered", "hook": "order-select", "n": 1},
        {"day": "2026-06-03", "policy_id": policy, "outcome": "not-covered", "hook": "order-sign", "n": 1},
    ]
    assert [row["n"] for row in store.decision_counts(policy_id=policy, client=client)] == [1, 1]
    assert store.feedback_counts(policy_id=policy) == [
        {"policy_id": policy, "outcome": "accepted", "override_code": None, "override_display": None,
         "entries": 1, "decisions": 1},
        {"policy_id": policy, "outcome": "overridden", "override_code": None, "override_display": None,
         "entries": 1, "decisions": 1},
        {"policy_id": policy, "outcome": "overridden", "override_code": "patient-pays",
         "override_display": "Patient pays", "entries": 2, "decisions": 1},
    ]
    assert [row["entries"] for row in store.feedback_counts(policy_id=policy, outcome="covered")] == [1]
    assert store.feedback_counts(policy_id=policy, since=day + timedelta(days=2)) == []

    listed = store.decisions(policy_id=policy, client=client)
    assert [row["coverage_assertion_id"] for row in listed] == [decided[1].coverage_assertion_id,
                                                                 decided[0].coverage_assertion_id]
    assert (listed[0]["hook"], listed[0]["client_iss"], listed[0]["card_uuid"]) == (
        "order-sign", client, decided[1].card_uuid)
    [stats], _ = store.stats(policy_id=policy, client=client)
    assert (stats.decisions, stats.with_feedback, stats.overridden) == (2, 2, 1)
    assert client in store.clients()


def test_audit_writes_in_the_background_by_default_and_before_returning_when_required(database_url):
    background, synchronous = Store(database_url), Store(database_url, required=True)
    call = a_call()
    queued = a_decision(call)
    background.audit(call, [queued])
    background.flush()
    assert background.decision_report(queued.coverage_assertion_id)["outcome"] == "not-covered"
    call = a_call()
    committed = a_decision(call)
    synchronous.audit(call, [committed])
    assert synchronous.decision_report(committed.coverage_assertion_id)["outcome"] == "not-covered"


def test_a_bad_record_among_queued_ones_costs_only_itself(store, caplog):
    first = a_call()
    taken = a_decision(first)
    store.record_call(first, [taken])
    calls = [a_call() for _ in range(3)]
    given = [a_decision(call) for call in calls]
    given[1] = replace(given[1], coverage_assertion_id=taken.coverage_assertion_id)  # a repeated key
    failures = store_failures("record_call")
    for call, decided in zip(calls, given, strict=True):
        store.audit(call, [decided], wait=False)  # queued together: one batch
    store.flush()
    assert [count(store, hook_call, hook_call.c.hook_instance == call.hook_instance) for call in calls] == [1, 0, 1]
    assert store_failures("record_call") == failures + 1
    assert f"hook call {calls[1].hook_instance} of order-sign-crd not recorded" in caplog.text
    with pytest.raises(StoreUnavailable):  # a call waiting for such a record is refused rather than answered
        store.audit(calls[1], [given[1]])


def test_records_still_queued_when_a_process_exits_are_written(database_url):
    hook_instance = str(uuid.uuid4())
    script = ("import sys; from cds.record import Store; from tests.records import a_call, a_decision; "
              "call = a_call(sys.argv[2]); Store(sys.argv[1]).audit(call, [a_decision(call)])")
    subprocess.run([sys.executable, "-c", script, database_url, hook_instance], check=True, timeout=60,
                   cwd=Path(__file__).parent.parent)
    assert count(Store(database_url), hook_call, hook_call.c.hook_instance == hook_instance) == 1


# ------------------------------------------------------------------------------ several worker processes


def _worker_records(url: str, prefix: str, barrier) -> None:
    barrier.wait()  # start together: all migrate the empty database at once, then write at once
    store = Store(url).start()
    failures = store_failures()
    for n in range(CALLS_EACH):
        call = a_call(hook_instance=f"{prefix}-{n}", orders=2)
        if n % 2:
            store.audit(call, [a_decision(call, 0), a_decision(call, 1)])  # queued for the background writer
        else:
            store.record_call(call, [a_decision(call, 0), a_decision(call, 1)])
    store.close()  # drains the queue, as a gunicorn worker does at exit
    if store_failures() != failures:
        raise SystemExit(1)


def _worker_checks_jtis(url: str, jtis: list[str], barrier, firsts) -> None:
    store = Store(url).start()
    barrier.wait()
    firsts.put(sum(not store.seen_jti("iss", jti, time.time() + 60) for jti in jtis))


def test_worker_processes_starting_and_writing_together_lose_nothing(empty_database_url):
    barrier = FORK.Barrier(WORKERS)
    workers = [FORK.Process(target=_worker_records, args=(empty_database_url, f"w{i}", barrier))
               for i in range(WORKERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0] * WORKERS
    store = Store(empty_database_url)
    assert count(store, hook_call) == WORKERS * CALLS_EACH
    assert count(store, decision) == WORKERS * CALLS_EACH * 2
    store.close()


def test_a_jwt_id_is_new_to_exactly_one_of_several_processes(database_url):
    jtis = [str(uuid.uuid4()) for _ in range(20)]
    barrier, firsts = FORK.Barrier(WORKERS), FORK.Queue()
    workers = [FORK.Process(target=_worker_checks_jtis, args=(database_url, jtis, barrier, firsts))
               for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    total = sum(firsts.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(60)
    assert total == len(jtis)


def test_on_sqlite_record_commits_are_synced_to_disk_before_their_spool_file_goes(sqlite_url):
    """A record leaves the spool once committed, so its commit must survive a power loss (synchronous=FULL, 2);
    seen JWT ids, written on every call, are synced at checkpoints (NORMAL, 1)."""
    store = Store(sqlite_url).start()
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2
    with store._replay.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar_one() == 1
    store.close()
