"""The audit store: hook calls, decisions, feedback and seen JWT ids, on SQLite or PostgreSQL.

Durability. A hook call is answered only once its record is durable. By default the record is first appended
to the local spool and synced (`cds.record.spool`), then committed by this process's background writer with
whatever queued meanwhile, in one transaction (synced to disk on SQLite too); the spool keeps what the
database has not taken, and is replayed into it once it answers again, or at start-up by any process of the
service when the process that wrote it died. Replays are idempotent: every record keeps its key. When the
spool cannot be written (and with CDS_AUDIT_REQUIRED), the call waits for the commit of the batch its record
is in (group commit).

Failure policy, one choice: CDS_AUDIT_REQUIRED. By default, while the database is unreachable, hook calls
are answered and their records stay in the spool, and JWT replay checks fall back to this host's file of the
ids seen during the outage (`cds.record.replays`); a call is refused with 503 only when its record can be
neither spooled nor committed. With CDS_AUDIT_REQUIRED nothing is spooled nor checked locally: a call whose
record the database does not take, or whose token cannot be checked there, is refused with 503. Feedback
cannot be stored without the database: 503, which a client may retry.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as WaitTimeout
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, bindparam, case, delete, distinct, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from uuid_utils import uuid7  # the native one: a call key costs 1 µs, not 7 (through the stdlib UUID)

from cds.config import Settings
from cds.errors import CdsError, quote
from cds.record.engine import (
    create_replay_table,
    describe_database_error,
    head_revision,
    make_engine,
    migrate,
    replay_url,
    schema_revision,
)
from cds.record.inserts import Record, RecordInserts
from cds.record.records import DecisionRecord, FeedbackRecord, HookCall, JudgedOrder
from cds.record.replays import LocalReplays
from cds.record.schema import decision, feedback, hook_call, seen_jti
from cds.record.spool import Entry, Spool
from cds.record.writer import BackgroundWriter, Outcomes

log = logging.getLogger(__name__)
T = TypeVar("T")
# A record for the writer: its call's key, the call, its decisions, and the spool file it is in (None: not spooled).
Queued = tuple[str, HookCall, tuple[DecisionRecord, ...], int | None]

JOIN_CHUNK = 500  # card uuids per statement that joins early feedback to its decision
MAX_REPLAY_BATCH = 500  # spooled records per transaction when they are replayed
RETRY_AFTER_S = 1.0  # after the database could not be reached, fail fast for this long before trying again
COMMIT_WAIT_S = 1.0  # a call not spooled waits this long for its batch's commit, else it is refused with 503
SPOOL_RETRY_S = 60.0  # after the spool could not be written, calls wait for their commit this long
SPOOL_CHECK_EVERY_S = 5.0  # the writer replays spooled records this often while there are any
JTI_PURGE_EVERY_S = 60.0

_failures: Counter[str] = Counter()
_failures_lock = threading.Lock()


def store_failures(operation: str | None = None) -> int:
    """Store operations that failed in this process: all, or one of record_call (records lost: neither committed
    nor spooled), spooled (records the database did not take, kept in the spool), feedback, jti, read, purge."""
    with _failures_lock:
        return _failures[operation] if operation else sum(_failures.values())


def _count_failure(operation: str, failures: int = 1) -> None:
    from cds import metrics  # imported late: gunicorn sets up multiprocess metrics before workers import it

    with _failures_lock:
        _failures[operation] += failures
    metrics.store_failure(operation, failures)


class _KnownDown(ConnectionError):
    """Failed fast: the database could not be reached moments ago."""


class StoreUnavailable(CdsError):
    """Answered 503 with an OperationOutcome; `reason` (for logs and the CLI) is never sent to a client."""

    def __init__(self, reason: str) -> None:
        super().__init__(503, "The audit store is unavailable, so this request was not processed; try again.",
                         "transient")
        self.reason = reason


@dataclass(frozen=True)
class FeedbackReceipt:
    stored: int = 0
    repeated: int = 0
    unmatched: int = 0  # stored, but the card uuid matched no recorded decision


@dataclass(frozen=True)
class PolicyStats:
    policy_id: str
    by_outcome: dict[str, int]
    with_feedback: int  # decisions whose card got feedback
    overridden: int  # ... of which at least one entry overrode the card

    @property
    def decisions(self) -> int:
        return sum(self.by_outcome.values())

    @property
    def override_rate(self) -> float | None:
        return self.overridden / self.with_feedback if self.with_feedback else None


@dataclass(frozen=True)
class PurgeReport:
    payloads_cleared: int
    jtis_deleted: int


class Store:
    """One per process, created at start-up; safe to share between threads."""

    def __init__(self, url: str, *, required: bool = False, capture_payloads: bool = False,
                 retention_days: int = 30, spool_dir: str | None = None, spool_sync: bool = False):
        self.url = url
        self.required = required
        self.capture_payloads = capture_payloads
        self.retention_days = retention_days
        # Durable commits: a record leaves the spool once committed, so on SQLite its commit must be on disk.
        self.engine: Engine = make_engine(url, durable=True)
        self._reader = self.engine.execution_options(sqlite_begin="DEFERRED")  # reads take no write lock
        # Seen JWT ids: one self-committing insert a call (a transaction around it would only add round trips
        # and, on SQLite, lock waits), in a database file of their own on SQLite (see `replay_url`).
        self.replay_url = replay_url(url)
        self._replay = make_engine(self.replay_url, autocommit=True)
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        self._insert = dialect.insert
        self._jti_insert = dialect.insert(seen_jti).on_conflict_do_nothing().returning(seen_jti.c.jti)
        self._jtis_insert = dialect.insert(seen_jti).on_conflict_do_nothing().returning(seen_jti.c.iss,
                                                                                       seen_jti.c.jti)
        self._inserts = RecordInserts(self.engine.dialect)
        self._new_calls = dialect.insert(hook_call).on_conflict_do_nothing(index_elements=["id"]).returning(
            hook_call.c.id)  # replays: a call already stored is skipped
        # Where records go while the database cannot take them; none with audit required (those calls get 503).
        self.spool = Spool(spool_dir, sync=spool_sync) if spool_dir and not required else None
        # Where seen JWT ids are kept while the database cannot be reached: none with audit required (503).
        self.local_replays = LocalReplays(spool_dir) if spool_dir and not required else None
        self._writer: BackgroundWriter[Queued] = BackgroundWriter(
            self._write_batch, idle=self._replay_spool if self.spool else None, idle_every_s=SPOOL_CHECK_EVERY_S)
        self._spooling = False
        self._spool_retry_at = 0.0
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._retry_at = 0.0
        self._next_jti_purge = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(settings.store_url, required=settings.audit_required,
                   capture_payloads=settings.audit_capture_payloads,
                   retention_days=settings.audit_retention_days, spool_dir=settings.spool_dir,
                   spool_sync=settings.spool_sync)

    def start(self) -> Store:
        """Migrate the schema now, and replay what processes that died left in the spool. A database that is
        down does not stop start-up: it is logged and counted, the migration is tried again on the next use
        (the failure policy then applies), and the spool is replayed once the database answers."""
        try:
            self._run("start", lambda _connection: None)
        except StoreUnavailable:
            log.error("audit store unreachable at start-up; will retry on first use")
            return self
        if self.spool:
            self._replay_spool()
        return self

    def close(self) -> None:
        """Write what is queued; records still spooled stay on disk for the next process to replay."""
        self._writer.close()
        if self.spool:
            self.spool.close()
        if self.local_replays:
            self.local_replays.close()
        self.engine.dispose()
        self._replay.dispose()

    # ------------------------------------------------------------------------------------------ writes

    def record_call(self, call: HookCall, decisions: Sequence[DecisionRecord] = ()) -> str:
        """Record a hook call and its decisions now, in one short transaction; returns the call's id.
        Raises StoreUnavailable. The pipeline calls `audit`, which applies the failure policy."""
        call_id = str(uuid7())
        self._insert_records([(call_id, self._kept_payloads(call), tuple(decisions))], "record_call")
        return call_id

    def audit(self, call: HookCall, decisions: Sequence[DecisionRecord] = (), wait: bool = True) -> None:
        """Record a hook call under the failure policy, before its answer is sent.

        Returns once the record is durable: in the spool (synced to disk with CDS_SPOOL_SYNC; the writer
        commits it within 200 ms), or, without one, committed with the batch this process's writer is
        gathering. Raises StoreUnavailable (503) when it is neither. Without `wait` (a refused call, which
        carries no decision) the record is never synced to disk first, even with CDS_SPOOL_SYNC."""
        call_id, call, decisions = str(uuid7()), self._kept_payloads(call), tuple(decisions)
        number = self._spooled(call_id, call, decisions, sync=wait)
        try:
            done = self._writer.submit((call_id, call, decisions, number), wait=number is None and wait)
        except queue.Full:
            if number is not None and self.spool:  # the writer cannot keep up: the record waits in the spool
                self.spool.settle([number], committed=False)
                return
            self._lost([_rows(call_id, call, decisions)], StoreUnavailable("the write queue is full"))
        if done is None:
            return
        try:
            done.result(timeout=COMMIT_WAIT_S)
        except WaitTimeout:
            self._lost([_rows(call_id, call, decisions)], StoreUnavailable(f"no commit within {COMMIT_WAIT_S:g} s"))
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise StoreUnavailable(describe_database_error(exc)) from exc

    def ping(self) -> None:
        """`SELECT 1` through the store's pool (on SQLite without taking the write lock), for readiness. A
        pooled connection the database dropped (it restarted) is replaced at once: the database answering
        again is seen on the first try. On success, operations that were failing fast are tried again now.
        Raises the driver's error."""
        for attempt in (1, 2):
            try:
                with self._reader.connect() as connection:
                    connection.exec_driver_sql("SELECT 1")
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
            else:
                self._retry_at = 0.0
                return

    def flush(self) -> None:
        """Wait until the records `audit` queued so far are written."""
        self._writer.flush()

    def record_feedback(self, service_id: str, records: Sequence[FeedbackRecord]) -> FeedbackReceipt:
        """Store feedback entries, each joined to the decision whose card it names. A repeated entry
        (same card, outcome and time) is stored once; one for an unknown card is kept as unmatched."""
        received_at = datetime.now(UTC)

        def write(connection: Connection) -> FeedbackReceipt:
            counts: Counter[str] = Counter()
            for record in records:
                decision_of_card = (select(decision.c.coverage_assertion_id)
                                    .where(decision.c.card_uuid == record.card_uuid).limit(1).scalar_subquery())
                statement = (self._insert(feedback).values(
                    card_uuid=record.card_uuid, coverage_assertion_id=decision_of_card, service_id=service_id,
                    outcome=record.outcome, outcome_time=record.outcome_time,
                    accepted_suggestions=list(record.accepted_suggestions), override_code=record.override_code,
                    override_system=record.override_system, override_display=record.override_display,
                    override_comment=record.override_comment, received_at=received_at,
                ).on_conflict_do_nothing(index_elements=["card_uuid", "outcome", "outcome_time"])
                             .returning(feedback.c.coverage_assertion_id))
                stored = connection.execute(statement).first()
                if stored is None:
                    counts["repeated"] += 1
                else:
                    counts["stored"] += 1
                    counts["unmatched"] += stored.coverage_assertion_id is None
            return FeedbackReceipt(**counts)

        return self._run("feedback", write)

    def seen_jti(self, iss: str, jti: str, expires_at: datetime | float) -> bool:
        """Remember a JWT id until it expires; True when (iss, jti) was seen before, i.e. a replay.
        Atomic across processes and hosts: one insert, committed on its own, which conflicts with a seen id
        (on every call, so without the round trips and lock waits of a transaction around it). While the
        database cannot be reached, by default checked against this host's ids of the outage
        (`cds.record.replays`); with audit required, or when that fails too, StoreUnavailable (503)."""
        row = {"iss": iss, "jti": jti, "expires_at": _as_datetime(expires_at)}
        try:
            return self._seen_in_database(row)
        except StoreUnavailable:
            if self.local_replays is None:
                raise
        try:
            return self.local_replays.seen_jti(row)
        except Exception as exc:
            _count_failure("jti")
            log.error("audit store: seen JWT ids cannot be kept on this host either: %s",
                      describe_database_error(exc))
            raise StoreUnavailable(describe_database_error(exc)) from exc

    def _seen_in_database(self, row: dict[str, Any]) -> bool:
        if self.local_replays and self.local_replays.move_due():
            self._move_local_replays()  # first, so that a replay of an id kept there is caught here
        purge_now = time.monotonic() >= self._next_jti_purge
        if purge_now:
            expired = delete(seen_jti).where(seen_jti.c.expires_at < datetime.now(UTC))
            self._run("jti", lambda connection: connection.execute(expired), replay=True)
        replay = self._run("jti", lambda connection: connection.execute(self._jti_insert, row).first() is None,
                           replay=True)  # no row inserted: seen before
        if purge_now:
            self._next_jti_purge = time.monotonic() + JTI_PURGE_EVERY_S
        return replay

    def _move_local_replays(self) -> None:
        """The ids this host kept during an outage, into the database; those it already held were replays
        accepted meanwhile (first used before the outage or at another replica): logged."""
        if self.local_replays is None:
            return

        def move_into(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
            return self._run("jti", lambda connection: {
                (found.iss, found.jti) for found in connection.execute(self._jtis_insert, rows)}, replay=True)

        def reachable() -> None:
            self._run("jti", lambda connection: connection.exec_driver_sql("SELECT 1"), replay=True)

        try:
            replayed = self.local_replays.move(reachable, move_into)
        except (DBAPIError, OSError) as exc:  # the local file (the database fails as StoreUnavailable): retried
            log.error("audit store: JWT ids kept on this host during an outage cannot be read: %s",
                      describe_database_error(exc))
            return
        for iss, jti in replayed:
            log.warning("JWT id %s from iss %s was accepted during the database outage although seen before it or "
                        "at another replica: a replay not caught then", quote(jti), quote(iss, 200))

    def purge(self, retention_days: int | None = None, now: datetime | None = None) -> PurgeReport:
        """Clear captured request/response bodies older than the retention period; delete expired JWT ids.
        The minimal records (references, codes, decisions, feedback) are kept for dispute resolution."""
        now = now or datetime.now(UTC)
        cutoff = now - timedelta(days=self.retention_days if retention_days is None else retention_days)

        clear = (update(hook_call)
                 .where(hook_call.c.time < cutoff, or_(hook_call.c.request.is_not(None),
                                                       hook_call.c.response.is_not(None)))
                 .values(request=None, response=None))
        payloads = self._run("purge", lambda connection: connection.execute(clear).rowcount)
        expired = delete(seen_jti).where(seen_jti.c.expires_at < now)
        jtis = self._run("purge", lambda connection: connection.execute(expired).rowcount, replay=True)
        return PurgeReport(payloads, jtis)

    # ------------------------------------------------------------------------------------------- reads

    def decision_report(self, coverage_assertion_id: str) -> dict[str, Any] | None:
        """A decision with the hook call that gave it and the feedback on its card; None when unknown. A decision
        still in this host's spool (not yet in the database, or the database unreachable) is found there, with
        `spooled` true."""
        try:
            found = self._stored_decision_report(coverage_assertion_id)
        except StoreUnavailable:
            spooled = self._spooled_decision_report(coverage_assertion_id, with_feedback=False)
            if spooled is None:
                raise
            return spooled
        return found or self._spooled_decision_report(coverage_assertion_id)

    def _spooled_decision_report(self, coverage_assertion_id: str, with_feedback: bool = True) -> dict[str, Any] | None:
        """The report of a decision found in the spool files on disk; the feedback on its card from the database."""
        found = next((entry for entry in map(_from_spool, self.spool.records() if self.spool else ())
                      if any(row["coverage_assertion_id"] == coverage_assertion_id for row in entry["decisions"])),
                     None)
        if found is None:
            return None
        call = found["call"]
        given = next(row for row in found["decisions"] if row["coverage_assertion_id"] == coverage_assertion_id)
        on_card = select(feedback).where(feedback.c.card_uuid == given["card_uuid"]).order_by(feedback.c.outcome_time)
        entries = self._run("read", lambda c: [dict(row) for row in c.execute(on_card).mappings()], reading=True) \
            if with_feedback and given["card_uuid"] else []
        return {**given, "service_id": call["service_id"], "hook": call["hook"], "call_time": call["time"],
                "client_iss": call["client_iss"], "client_tenant": call["client_tenant"], "status": call["status"],
                "latency_ms": call["latency_ms"], "payload_captured": call["request"] is not None,
                "feedback": entries, "spooled": True}

    def _stored_decision_report(self, coverage_assertion_id: str) -> dict[str, Any] | None:

        def read(connection: Connection) -> dict[str, Any] | None:
            found = connection.execute(
                select(decision, hook_call.c.service_id, hook_call.c.hook, hook_call.c.time.label("call_time"),
                       hook_call.c.client_iss, hook_call.c.client_tenant, hook_call.c.status,
                       hook_call.c.latency_ms, hook_call.c.request.is_not(None).label("payload_captured"))
                .join(hook_call, hook_call.c.id == decision.c.call_id)
                .where(decision.c.coverage_assertion_id == coverage_assertion_id)
            ).mappings().first()
            if found is None:
                return None
            entries = connection.execute(
                select(feedback).where(feedback.c.coverage_assertion_id == coverage_assertion_id)
                .order_by(feedback.c.outcome_time)
            ).mappings().all()
            return {**found, "feedback": [dict(entry) for entry in entries], "spooled": False}

        return self._run("read", read, reading=True)

    def decisions(self, since: datetime | None = None, until: datetime | None = None, policy_id: str | None = None,
                  outcome: str | None = None, limit: int = 100, client: str | None = None) -> list[dict[str, Any]]:
        """Decisions newest first, each with how many feedback entries accepted or overrode its card, and the
        hook and client of the call that gave it."""
        per_card = (select(feedback.c.coverage_assertion_id,
                           func.count().label("feedback"),
                           func.sum(case((feedback.c.outcome == "overridden", 1), else_=0)).label("overridden"))
                    .group_by(feedback.c.coverage_assertion_id).subquery())
        query = (select(decision.c.decided_at, decision.c.coverage_assertion_id, decision.c.policy_id,
                        decision.c.policy_version, decision.c.outcome, decision.c.order_reference,
                        decision.c.order_codes, func.coalesce(per_card.c.feedback, 0).label("feedback"),
                        func.coalesce(per_card.c.overridden, 0).label("overridden"), decision.c.card_uuid,
                        hook_call.c.hook, hook_call.c.client_iss)
                 .join(hook_call, hook_call.c.id == decision.c.call_id)
                 .outerjoin(per_card, per_card.c.coverage_assertion_id == decision.c.coverage_assertion_id)
                 .where(*_filters(since, until, policy_id, outcome, client))
                 .order_by(decision.c.decided_at.desc()).limit(limit))
        return self._run("read", lambda c: [dict(row) for row in c.execute(query).mappings()], reading=True)

    def stats(self, since: datetime | None = None, until: datetime | None = None, policy_id: str | None = None,
              outcome: str | None = None, client: str | None = None) -> tuple[list[PolicyStats], int]:
        """Per policy: decisions by outcome and how often feedback overrode them; and the unmatched feedback."""
        where = _filters(since, until, policy_id, outcome, client)
        by_outcome = (select(decision.c.policy_id, decision.c.outcome, func.count().label("n"))
                      .join(hook_call, hook_call.c.id == decision.c.call_id)
                      .where(*where).group_by(decision.c.policy_id, decision.c.outcome))
        overridden_id = case((feedback.c.outcome == "overridden", feedback.c.coverage_assertion_id))
        with_feedback = (select(decision.c.policy_id,
                                func.count(distinct(feedback.c.coverage_assertion_id)).label("with_feedback"),
                                func.count(distinct(overridden_id)).label("overridden"))
                         .join(feedback, feedback.c.coverage_assertion_id == decision.c.coverage_assertion_id)
                         .join(hook_call, hook_call.c.id == decision.c.call_id)
                         .where(*where).group_by(decision.c.policy_id))
        unmatched = select(func.count()).select_from(feedback).where(feedback.c.coverage_assertion_id.is_(None))

        def read(connection: Connection) -> tuple[list[PolicyStats], int]:
            outcomes: dict[str, dict[str, int]] = {}
            for row in connection.execute(by_outcome):
                outcomes.setdefault(row.policy_id, {})[row.outcome] = row.n
            feedback_counts = {row.policy_id: (row.with_feedback, row.overridden)
                               for row in connection.execute(with_feedback)}
            stats = [PolicyStats(policy_id, counts, *feedback_counts.get(policy_id, (0, 0)))
                     for policy_id, counts in sorted(outcomes.items())]
            return stats, connection.execute(unmatched).scalar_one()

        return self._run("read", read, reading=True)

    def decision_counts(self, since: datetime | None = None, until: datetime | None = None,
                        policy_id: str | None = None, outcome: str | None = None,
                        client: str | None = None) -> list[dict[str, Any]]:
        """Decisions counted by UTC day (YYYY-MM-DD), policy, outcome and hook, oldest day first."""
        day = _utc_day(self.engine.dialect.name).label("day")
        query = (select(day, decision.c.policy_id, decision.c.outcome, hook_call.c.hook, func.count().label("n"))
                 .join(hook_call, hook_call.c.id == decision.c.call_id)
                 .where(*_filters(since, until, policy_id, outcome, client))
                 .group_by(day, decision.c.policy_id, decision.c.outcome, hook_call.c.hook)
                 .order_by(day, decision.c.policy_id, decision.c.outcome, hook_call.c.hook))
        return self._run("read", lambda c: [dict(row) for row in c.execute(query).mappings()], reading=True)

    def feedback_counts(self, since: datetime | None = None, until: datetime | None = None,
                        policy_id: str | None = None, outcome: str | None = None,
                        client: str | None = None) -> list[dict[str, Any]]:
        """Feedback on the decisions chosen (by when they were decided), counted by policy, feedback outcome and
        override reason: `entries`, and `decisions`, the decisions with at least one such entry."""
        query = (select(decision.c.policy_id, feedback.c.outcome, feedback.c.override_code,
                        func.max(feedback.c.override_display).label("override_display"),
                        func.count().label("entries"),
                        func.count(distinct(decision.c.coverage_assertion_id)).label("decisions"))
                 .join(feedback, feedback.c.coverage_assertion_id == decision.c.coverage_assertion_id)
                 .join(hook_call, hook_call.c.id == decision.c.call_id)
                 .where(*_filters(since, until, policy_id, outcome, client))
                 .group_by(decision.c.policy_id, feedback.c.outcome, feedback.c.override_code)
                 .order_by(decision.c.policy_id, feedback.c.outcome, feedback.c.override_code.nulls_first()))
        return self._run("read", lambda c: [dict(row) for row in c.execute(query).mappings()], reading=True)

    def clients(self) -> list[str]:
        """The issuers of the recorded hook calls that gave decisions, for choosing one."""
        query = (select(hook_call.c.client_iss).distinct().join(decision, decision.c.call_id == hook_call.c.id)
                 .where(hook_call.c.client_iss.is_not(None)).order_by(hook_call.c.client_iss))
        return self._run("read", lambda c: list(c.execute(query).scalars()), reading=True)

    # --------------------------------------------------------------------------------------- machinery

    def _kept_payloads(self, call: HookCall) -> HookCall:
        """The call as it may be kept: its bodies only with payload capture on, and never the access token."""
        if not self.capture_payloads:
            return replace(call, request=None, response=None) if call.request or call.response else call
        request = _without_secrets(call.request)
        return call if request is call.request else replace(call, request=request)

    def _insert_records(self, records: Sequence[Record], operation: str, failures: int | None = None) -> None:
        """Hook calls and their decisions in one transaction (two multi-row inserts through the driver)."""

        def write(connection: Connection) -> None:
            _join_late_feedback(connection, self._inserts.run(connection, records))

        self._run(operation, write, failures=len(records) if failures is None else failures)

    def _insert_replayed(self, entries: Sequence[Entry]) -> None:
        """Spooled records in one transaction; a call already stored is skipped with its decisions."""
        call_rows = [entry["call"] for entry in entries]

        def write(connection: Connection) -> None:
            new = {row.id for row in connection.execute(self._new_calls, call_rows)}
            rows = [row for entry in entries for row in entry["decisions"] if row["call_id"] in new]
            if rows:
                connection.execute(decision.insert(), rows)
            _join_late_feedback(connection, [row["card_uuid"] for row in rows if row["card_uuid"]])

        self._run("replay", write, failures=0)

    def _spooled(self, call_id: str, call: HookCall, decisions: tuple[DecisionRecord, ...], sync: bool) -> int | None:
        """Append the record to the spool (synced to disk with `sync`); the spool file's number, or None without
        a spool or when the disk refuses it (then the call waits for the commit; the spool is tried again after
        SPOOL_RETRY_S)."""
        if self.spool is None or time.monotonic() < self._spool_retry_at:
            return None
        try:
            return self.spool.append({"id": call_id, "call": call, "decisions": decisions}, sync=sync)
        except OSError as exc:
            _count_failure("spool")
            self._spool_retry_at = time.monotonic() + SPOOL_RETRY_S
            log.error("audit store: the spool %s cannot be written (%s); calls wait for their record's commit",
                      self.spool.directory, describe_database_error(exc))
            return None

    def _write_batch(self, items: list[Queued]) -> Outcomes:
        """The writer's batch, in one transaction. When a bad record (a repeated coverage-assertion-id) spoils
        it, each is tried alone, so that one costs only itself; when the database cannot take it, spooled
        records stay in the spool. A record that is nowhere durable gets its StoreUnavailable: its call is
        answered 503."""
        try:
            self._insert_records([item[:3] for item in items], "record_call", failures=0)
        except StoreUnavailable as exc:
            if _bad_record(exc):
                return [self._write_alone(item) for item in items]
            return self._not_taken(items, exc)
        self._settle(items, committed=True)
        if self.spool and self.spool.pending:
            self._replay_spool()  # the database takes records again
        return None

    def _write_alone(self, item: Queued) -> StoreUnavailable | None:
        try:
            self._insert_records([item[:3]], "record_call", failures=0)
        except StoreUnavailable as exc:
            if not _bad_record(exc):
                return self._not_taken([item], exc)[0]
            self._settle([item], committed=True)  # it can never be stored: not kept for a replay either
            try:
                self._lost([_rows(*item[:3])], exc)
            except StoreUnavailable as lost:
                return lost
        self._settle([item], committed=True)
        return None

    def _not_taken(self, items: Sequence[Queued], cause: StoreUnavailable) -> list[StoreUnavailable | None]:
        """Records the database did not take: spooled ones stay in the spool; the others are lost."""
        self._settle(items, committed=False)
        outcomes: list[StoreUnavailable | None] = []
        for call_id, call, decisions, number in items:
            if number is None:
                try:
                    self._lost([_rows(call_id, call, decisions)], cause)
                except StoreUnavailable as lost:
                    outcomes.append(lost)
                    continue
            outcomes.append(None)
        spooled = sum(item[3] is not None for item in items)
        if spooled and self.spool:
            _count_failure("spooled", spooled)
            if not self._spooling:
                self._spooling = True
                log.error("audit store: the database does not take records (%s); they wait in the spool %s "
                          "until it does", cause.reason, self.spool.directory)
        return outcomes

    def _settle(self, items: Sequence[Queued], committed: bool) -> None:
        numbers = [item[3] for item in items if item[3] is not None]
        if numbers and self.spool:
            self.spool.settle(numbers, committed)

    def _lost(self, entries: Sequence[Entry], cause: StoreUnavailable) -> None:
        """Records neither spooled nor committed: logged with what was decided, counted, and `cause` raised so
        that their calls are answered 503."""
        _count_failure("record_call", len(entries))
        self._log_unrecorded(entries)
        raise cause

    def _replay_spool(self) -> None:
        """Replay what this process spooled and what processes that died left. Quiet while the database is
        still away: the records stay, and this runs again (the writer's idle task)."""
        if self.spool is None:
            return
        self.spool.rotate()
        try:
            self._move_local_replays()
            own = self.spool.replay_own(self._replay_spooled)
            orphaned = self.spool.replay_orphans(self._replay_spooled)
        except StoreUnavailable:
            return
        if own:
            log.warning("audit store: the database takes records again; %d spooled records replayed", own)
        if orphaned:
            log.warning("audit store: %d records spooled by processes that stopped replayed", orphaned)
        self._spooling = False

    def _replay_spooled(self, spooled: list[Entry]) -> None:
        """Spooled records into the database, idempotently, in batches. Raises StoreUnavailable while it
        cannot take them; a record it refuses for itself is logged, counted and dropped."""
        entries = [_from_spool(entry) for entry in spooled]
        for start in range(0, len(entries), MAX_REPLAY_BATCH):
            batch = entries[start:start + MAX_REPLAY_BATCH]
            try:
                self._insert_replayed(batch)
            except StoreUnavailable as exc:
                if not _bad_record(exc):
                    raise
                for entry in batch:
                    try:
                        self._insert_replayed([entry])
                    except StoreUnavailable as alone:
                        if not _bad_record(alone):
                            raise
                        _count_failure("record_call")
                        self._log_unrecorded([entry])

    def _log_unrecorded(self, entries: Sequence[Entry]) -> None:
        """What was decided goes to the log (no patient data, no payloads)."""
        for entry in entries:
            call = entry["call"]
            given = "; ".join(f"{d['coverage_assertion_id']} {d['order_reference']} "
                              f"{d['policy_id']}@{d['policy_version']} {d['outcome']}"
                              for d in entry["decisions"]) or "none"
            log.error("hook call %s of %s not recorded in the audit store; decisions given: %s",
                      quote(call["hook_instance"] or "(none)", 130)[1:-1], call["service_id"], given)

    def check_schema(self) -> None:
        """For readers that must neither create the schema nor upgrade it (`cds audit`): raise StoreUnavailable,
        saying why, unless the database holds the schema this version of the service writes."""
        try:
            with self._reader.connect() as connection:
                current = schema_revision(connection)
        except Exception as exc:
            raise StoreUnavailable(describe_database_error(exc)) from exc
        head = head_revision()
        if current is None:
            raise StoreUnavailable("it holds no audit records (no schema): is it the database the service records to?")
        if current != head:
            raise StoreUnavailable(f"its schema is at revision {current}, not {head} as this version of the service "
                                   "writes it: run the `cds` of the service that records there, or start that service "
                                   "once (it upgrades the schema)")
        self._create_replay_table()
        self._schema_ready = True

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                migrate(self.url)
                self._create_replay_table()
                self._schema_ready = True

    def _create_replay_table(self) -> None:
        if self.replay_url != self.url:  # the service's own seen-id file beside the store: idempotent
            create_replay_table(self._replay)

    def _run(self, operation: str, work: Callable[[Connection], T], reading: bool = False, failures: int = 1,
             replay: bool = False) -> T:
        """Run `work` in one transaction (`replay`: on the seen-id database, each statement in its own). Any
        failure is logged (without data), counted as `failures`, and raised as StoreUnavailable. A pooled
        connection the database dropped is retried once on a fresh one."""
        try:
            for attempt in (1, 2):
                connection = self._connect(self._replay if replay else self._reader if reading
                                           else self.engine)
                try:
                    with connection, connection.begin():
                        return work(connection)
                except DBAPIError as exc:
                    if attempt == 2 or not exc.connection_invalidated:
                        raise
        except Exception as exc:
            _count_failure(operation, failures)
            reason = describe_database_error(exc)
            # Said once when the database goes away, not again for each operation failed fast meanwhile.
            log.log(logging.DEBUG if isinstance(exc, _KnownDown) else logging.ERROR, "audit store: %s failed: %s",
                    operation, reason)
            raise StoreUnavailable(reason) from exc
        raise AssertionError("unreachable")

    def _connect(self, engine: Engine) -> Connection:
        """A connection on a current schema. When the database cannot be reached, later calls fail fast
        for a few seconds rather than each waiting out the connect timeout."""
        if time.monotonic() < self._retry_at:
            raise _KnownDown("the database could not be reached moments ago")
        try:
            self._ensure_schema()
            return engine.connect()
        except Exception:
            self._retry_at = time.monotonic() + RETRY_AFTER_S
            raise


def _join_late_feedback(connection: Connection, cards: Sequence[str]) -> None:
    """Feedback can arrive before its decision's record: join it now. One cached statement, the cards as a list
    parameter, in chunks that stay within a database's parameter limit."""
    for start in range(0, len(cards), JOIN_CHUNK):
        connection.execute(_JOIN_LATE_FEEDBACK, {"cards": cards[start:start + JOIN_CHUNK]})


_JOIN_LATE_FEEDBACK = (
    update(feedback)
    .where(feedback.c.coverage_assertion_id.is_(None), feedback.c.card_uuid.in_(bindparam("cards", expanding=True)))
    .values(coverage_assertion_id=select(decision.c.coverage_assertion_id)
            .where(decision.c.card_uuid == feedback.c.card_uuid).limit(1).scalar_subquery())
)


def _filters(since: datetime | None, until: datetime | None, policy_id: str | None = None,
             outcome: str | None = None, client: str | None = None) -> list:
    """Conditions on decisions; `client` needs the query joined to the hook call."""
    conditions = [hook_call.c.client_iss == client] if client else []
    if since:
        conditions.append(decision.c.decided_at >= since)
    if until:
        conditions.append(decision.c.decided_at < until)
    if policy_id:
        conditions.append(decision.c.policy_id == policy_id)
    if outcome:
        conditions.append(decision.c.outcome == outcome)
    return conditions


def _utc_day(dialect: str) -> Any:
    """A decision's UTC day as YYYY-MM-DD text. SQLite keeps naive UTC text; PostgreSQL a timestamptz."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", decision.c.decided_at), "YYYY-MM-DD")
    return func.date(decision.c.decided_at)


def _judged_order(order: JudgedOrder) -> dict[str, Any]:
    row: dict[str, Any] = {"reference": order.reference, "codes": list(order.codes)}
    if order.performer:
        row["performer"] = order.performer
    return row


def _without_secrets(request: dict[str, Any] | None) -> dict[str, Any] | None:
    """The request as captured: never the FHIR access token it carries."""
    authorization = (request or {}).get("fhirAuthorization")
    if request is not None and isinstance(authorization, dict) and "access_token" in authorization:
        return {**request, "fhirAuthorization": {**authorization, "access_token": "[not stored]"}}
    return request


def _bad_record(exc: StoreUnavailable) -> bool:
    """The database refused the records themselves (a key already taken, a value it cannot hold), not for
    being away: trying them again will not help."""
    return isinstance(exc.__cause__, IntegrityError | DataError)


def _rows(call_id: str, call: HookCall, decisions: Sequence[DecisionRecord]) -> Entry:
    """The rows of a call and its decisions, under the call's key."""
    return {"call": {
        "id": call_id, "time": call.time, "service_id": call.service_id, "hook": call.hook,
        "hook_instance": call.hook_instance, "client_iss": call.client_iss, "client_tenant": call.client_tenant,
        "patient_id": call.patient_id, "status": call.status, "latency_ms": call.latency_ms,
        "orders": [_judged_order(order) for order in call.orders],
        "request": call.request, "response": call.response, "refusal": call.refusal,
    }, "decisions": [{
        "coverage_assertion_id": d.coverage_assertion_id, "call_id": call_id, "hook_instance": d.hook_instance,
        "order_reference": d.order_reference, "order_codes": list(d.order_codes), "policy_id": d.policy_id,
        "policy_version": d.policy_version, "outcome": d.outcome, "reason": d.reason, "card_uuid": d.card_uuid,
        "suggestion_uuids": list(d.suggestion_uuids), "coverage_reference": d.coverage_reference,
        "decided_at": d.decided_at, "performer": d.performer,
    } for d in decisions]}


def _from_spool(spooled: dict[str, Any]) -> Entry:
    """The rows of a record read back from the spool, where it is the call's key, the call and its decisions as
    JSON (their field names are the columns' names)."""
    call_id, call = spooled["id"], spooled["call"]
    return {"call": {"refusal": None, **call, "id": call_id, "time": datetime.fromisoformat(call["time"])},
            "decisions": [{**row, "call_id": call_id, "decided_at": datetime.fromisoformat(row["decided_at"])}
                          for row in spooled["decisions"]]}


def _as_datetime(value: datetime | float) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
