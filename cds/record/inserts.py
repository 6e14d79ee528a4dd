"""Hook calls and their decisions inserted through the database driver: the audit writer's hot path.

SQLAlchemy's per-row parameter processing cost the writer about as much as the database's own work. Here the
statements are compiled once by SQLAlchemy for the engine's dialect, and each row is built straight from the
records, its values converted as the schema's types convert them: times in UTC (naive text on SQLite, as
SQLAlchemy's SQLite DATETIME stores them), JSON as orjson text. `tests/test_store.py` checks that rows written
this way read back exactly as rows written through SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Dialect, Table

from cds.record.records import DecisionRecord, HookCall
from cds.record.schema import decision, hook_call

# What the writer hands over: a call's key, the call and its decisions.
Record = tuple[str, HookCall, Sequence[DecisionRecord]]


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _sqlite_time(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


class _Insert:
    """One table's INSERT as the driver takes it: SQL text, and rows as tuples (positional parameters) or dicts."""

    def __init__(self, table: Table, dialect: Dialect):
        self.columns = [column.name for column in table.c]
        compiled = table.insert().compile(dialect=dialect, column_keys=self.columns)
        self.sql = str(compiled)
        positions = compiled.positiontup
        if positions is not None and list(positions) != self.columns:
            raise RuntimeError(f"{table.name}: parameters compiled in another order than the columns")
        self.positional = positions is not None

    def run(self, connection: Connection, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            connection.exec_driver_sql(self.sql, rows if self.positional else
                                       [dict(zip(self.columns, row, strict=True)) for row in rows])


class RecordInserts:
    """The calls and decisions of a batch of records, in two multi-row inserts on a connection in a transaction."""

    def __init__(self, dialect: Dialect):
        self._calls = _Insert(hook_call, dialect)
        self._decisions = _Insert(decision, dialect)
        self._time: Callable[[datetime], Any] = _sqlite_time if dialect.name == "sqlite" else _utc

    def run(self, connection: Connection, records: Sequence[Record]) -> list[str]:
        """Insert the records; the uuids of the cards their decisions were given on (for joining early feedback)."""
        time = self._time
        calls: list[tuple[Any, ...]] = []
        decisions: list[tuple[Any, ...]] = []
        for call_id, call, given in records:
            calls.append((
                call_id, time(call.time), call.service_id, call.hook, call.hook_instance, call.client_iss,
                call.client_tenant, call.patient_id, call.status, call.refusal, call.latency_ms,
                _json([{"reference": order.reference, "codes": order.codes,
                        **({"performer": order.performer} if order.performer else {})} for order in call.orders]),
                None if call.request is None else _json(call.request),
                None if call.response is None else _json(call.response)))
            decisions.extend((
                d.coverage_assertion_id, call_id, d.hook_instance, d.order_reference, _json(d.order_codes),
                d.policy_id, d.policy_version, d.outcome, d.reason, d.card_uuid, _json(d.suggestion_uuids),
                d.coverage_reference, time(d.decided_at), d.performer) for d in given)
        self._calls.run(connection, calls)
        self._decisions.run(connection, decisions)
        return [row[9] for row in decisions if row[9]]
