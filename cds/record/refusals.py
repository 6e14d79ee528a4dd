"""Hook calls refused before they were decided (401, 404, 400, 413, 415, ...) are recorded too: when, which
service, the status, the client when it was authenticated, and the reason's category. Never the body, unless
payload capture is on; never what the client typed, beyond a bounded, printable service id and hookInstance."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException

from cds.errors import CdsError, http_issue_code, quote
from cds.record.records import HookCall

if TYPE_CHECKING:
    from cds.auth import RegisteredClient
    from cds.record.store import Store

FIELD_LIMIT = 128  # characters kept of a service id or hookInstance the client sent


def refused_call(service_id: str, error: CdsError | HTTPException, latency_ms: float,
                 client: RegisteredClient | None = None, body: dict[str, Any] | None = None) -> HookCall:
    """The record of a call refused with `error`. `client`: the caller, once authenticated; `body`: the request
    JSON, once read (its hook and hookInstance are kept; the body itself only with payload capture)."""
    status, category = (error.status, error.code) if isinstance(error, CdsError) else (
        error.code or 500, http_issue_code(error.code or 500))
    hook, hook_instance = (_bounded(body.get(name)) for name in ("hook", "hookInstance")) if body else (None, None)
    return HookCall(time=datetime.now(UTC), service_id=_bounded(service_id) or "", hook=hook,
                    hook_instance=hook_instance, status=status, latency_ms=latency_ms,
                    client_iss=client.iss if client else None, client_tenant=client.tenant if client else None,
                    request=body, refusal=category)


def record_refusal(store: Store, service_id: str, error: CdsError | HTTPException, latency_ms: float,
                   client: RegisteredClient | None = None, body: dict[str, Any] | None = None) -> None:
    """Record a refused call; the refusal goes out at once (it carries no decision, so nothing waits for it)."""
    store.audit(refused_call(service_id, error, latency_ms, client, body), wait=False)


def _bounded(value: object) -> str | None:
    return quote(value, FIELD_LIMIT)[1:-1] if isinstance(value, str) and value else None
