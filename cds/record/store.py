"""The audit store: hook calls, decisions, feedback and seen JWT ids, on SQLite or PostgreSQL.

Failure policy. By default a hook call's answer never waits for the store nor fails with it: a background
writer commits its record within milliseconds, and a record that cannot be written is logged with what was
decided and counted (`store_failures`). With CDS_AUDIT_REQUIRED the record is committed before the answer
is sent, and the call is refused with 503 when it cannot be. Feedback and JWT replay checks cannot be
answered without the store: 503, which a client may retry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, bindparam, case, delete, distinct, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from uuid_utils.compat import uuid7

from cds.config import Settings
from cds.errors import CdsError, quote
from cds.record.engine import create_replay_table, describe_database_error, make_engine, migrate, replay_url
from cds.record.records import DecisionRecord, FeedbackRecord, HookCall, JudgedOrder
from cds.record.schema import decision, feedback, hook_call, seen_jti
from cds.record.writer import BackgroundWriter

log = logging.getLogger(__name__)
T = TypeVar("T")
Decided = tuple[HookCall, tuple[DecisionRecord, ...]]

JOIN_CHUNK = 500  # card uuids per statement that joins early feedback to its decision
RETRY_AFTER_S = 5.0  # after the database could not be reached, fail fast for this long before trying again
JTI_PURGE_EVERY_S = 60.0

_failures: Counter[str] = Counter()
_failures_lock = threading.Lock()


def store_failures(operation: str | None = None) -> int:
    """Store operations that failed in this process: all, or one of record_call, feedback, jti, read, purge."""
    with _failures_lock:
        return _failures[operation] if operation else sum(_failures.values())


def _count_failure(operation: str, failures: int = 1) -> None:
    from cds import metrics  # imported late: gunicorn sets up multiprocess metrics before workers import it

    with _failures_lock:
        _failures[operation] += failures
    metrics.store_failure(operation, failures)


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
                 retention_days: int = 30):
        self.url = url
        self.required = required
        self.capture_payloads = capture_payloads
        self.retention_days = retention_days
        self.engine: Engine = make_engine(url)
        self._reader = self.engine.execution_options(sqlite_begin="DEFERRED")  # reads take no write lock
        # Seen JWT ids: one self-committing insert a call (a transaction around it would only add round trips
        # and, on SQLite, lock waits), in a database file of their own on SQLite (see `replay_url`).
        self.replay_url = replay_url(url)
        self._replay = make_engine(self.replay_url, autocommit=True)
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        self._insert = dialect.insert
        self._jti_insert = dialect.insert(seen_jti).on_conflict_do_nothing().returning(seen_jti.c.jti)
        self._writer: BackgroundWriter[Decided] = BackgroundWriter(self._write_queued)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._retry_at = 0.0
        self._next_jti_purge = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(settings.store_url, required=settings.audit_required,
                   capture_payloads=settings.audit_capture_payloads,
                   retention_days=settings.audit_retention_days)

    def start(self) -> Store:
        """Migrate the schema now. A database that is down does not stop start-up: it is logged and
        counted, and the migration is tried again on the next use (the failure policy then applies)."""
        try:
            self._run("start", lambda _connection: None)
        except StoreUnavailable:
            log.error("audit store unreachable at start-up; will retry on first use")
        return self

    def close(self) -> None:
        self._writer.close()
        self.engine.dispose()
        self._replay.dispose()

    # ------------------------------------------------------------------------------------------ writes

    def record_call(self, call: HookCall, decisions: Sequence[DecisionRecord] = ()) -> str:
        """Record a hook call and its decisions now, in one short transaction; returns the call's id.
        Raises StoreUnavailable. The pipeline calls `audit`, which applies the failure policy."""
        return self._record([(call, tuple(decisions))])[0]

    def audit(self, call: HookCall, decisions: Sequence[DecisionRecord] = ()) -> None:
        """Record a hook call under the failure policy, after its answer is built.

        By default the answer never waits for the store: the record is queued for this process's background
        writer, which commits it within milliseconds; a record that cannot be written is logged with what was
        decided (ids, references, codes) and counted. With audit required the record is committed before the
        answer is sent, and StoreUnavailable (503) is raised when it cannot be."""
        decided = (call, tuple(decisions))
        if self.required:
            self.record_call(*decided)
        elif not self._writer.submit(decided):
            _count_failure("record_call")
            log.error("audit store: write queue full")
            self._log_unrecorded([decided])

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
        (on every call, so without the round trips and lock waits of a transaction around it)."""
        row = {"iss": iss, "jti": jti, "expires_at": _as_datetime(expires_at)}
        purge_now = time.monotonic() >= self._next_jti_purge
        if purge_now:
            expired = delete(seen_jti).where(seen_jti.c.expires_at < datetime.now(UTC))
            self._run("jti", lambda connection: connection.execute(expired), replay=True)
        replay = self._run("jti", lambda connection: connection.execute(self._jti_insert, row).first() is None,
                           replay=True)  # no row inserted: seen before
        if purge_now:
            self._next_jti_purge = time.monotonic() + JTI_PURGE_EVERY_S
        return replay

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
        """A decision with the hook call that gave it and the feedback on its card; None when unknown."""

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
            return {**found, "feedback": [dict(entry) for entry in entries]}

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

    def _record(self, batch: Sequence[Decided], failures: int | None = None) -> list[str]:
        """Record hook calls and their decisions in one transaction (two multi-row inserts)."""
        call_rows, decision_rows = [], []
        for call, decisions in batch:
            call_id = str(uuid7())
            call_rows.append({
                "id": call_id, "time": call.time, "service_id": call.service_id, "hook": call.hook,
                "hook_instance": call.hook_instance, "client_iss": call.client_iss,
                "client_tenant": call.client_tenant, "patient_id": call.patient_id, "status": call.status,
                "latency_ms": call.latency_ms,
                "orders": [_judged_order(order) for order in call.orders],
                "request": _without_secrets(call.request) if self.capture_payloads else None,
                "response": call.response if self.capture_payloads else None,
            })
            decision_rows.extend({
                "coverage_assertion_id": d.coverage_assertion_id, "call_id": call_id,
                "hook_instance": d.hook_instance, "order_reference": d.order_reference,
                "order_codes": list(d.order_codes), "policy_id": d.policy_id, "policy_version": d.policy_version,
                "outcome": d.outcome, "reason": d.reason, "card_uuid": d.card_uuid,
                "suggestion_uuids": list(d.suggestion_uuids), "coverage_reference": d.coverage_reference,
                "decided_at": d.decided_at, "performer": d.performer,
            } for d in decisions)

        cards = [row["card_uuid"] for row in decision_rows if row["card_uuid"]]

        def write(connection: Connection) -> None:
            connection.execute(hook_call.insert(), call_rows)
            if decision_rows:
                connection.execute(decision.insert(), decision_rows)
            # Feedback can arrive before its decision's queued record: join it now. One cached statement,
            # the cards as a list parameter, in chunks that stay within a database's parameter limit.
            for start in range(0, len(cards), JOIN_CHUNK):
                connection.execute(_JOIN_LATE_FEEDBACK, {"cards": cards[start:start + JOIN_CHUNK]})

        self._run("record_call", write, failures=len(batch) if failures is None else failures)
        return [row["id"] for row in call_rows]

    def _write_queued(self, batch: list[Decided]) -> None:
        """The background writer's batch: on failure, each call is tried alone so that one bad record
        (a repeated coverage-assertion-id) costs only itself; while the database is down, none are."""
        try:
            self._record(batch, failures=0)
            return
        except StoreUnavailable:
            pass
        if time.monotonic() < self._retry_at:
            _count_failure("record_call", len(batch))
            self._log_unrecorded(batch)
            return
        for decided in batch:
            try:
                self._record([decided])
            except StoreUnavailable:
                self._log_unrecorded([decided])

    def _log_unrecorded(self, batch: Sequence[Decided]) -> None:
        """So that no answer is lost: what was decided goes to the log (no patient data, no payloads)."""
        for call, decisions in batch:
            given = "; ".join(f"{d.coverage_assertion_id} {d.order_reference} {d.policy_id}@{d.policy_version} "
                              f"{d.outcome}" for d in decisions) or "none"
            log.error("hook call %s of %s not recorded in the audit store; decisions given: %s",
                      quote(call.hook_instance, 130)[1:-1], call.service_id, given)

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                migrate(self.url)
                if self.replay_url != self.url:
                    create_replay_table(self._replay)
                self._schema_ready = True

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
            log.error("audit store: %s failed: %s", operation, reason)
            raise StoreUnavailable(reason) from exc
        raise AssertionError("unreachable")

    def _connect(self, engine: Engine) -> Connection:
        """A connection on a current schema. When the database cannot be reached, later calls fail fast
        for a few seconds rather than each waiting out the connect timeout."""
        if time.monotonic() < self._retry_at:
            raise ConnectionError("the database could not be reached moments ago")
        try:
            self._ensure_schema()
            return engine.connect()
        except Exception:
            self._retry_at = time.monotonic() + RETRY_AFTER_S
            raise


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
    if isinstance(authorization, dict) and "access_token" in authorization:
        return {**request, "fhirAuthorization": {**authorization, "access_token": "[not stored]"}}
    return request


def _as_datetime(value: datetime | float) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
