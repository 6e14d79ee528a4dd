"""The CDS Hooks this service answers, one module per hook; the one place that says which hooks exist and how a
service id and a hook name resolve to one."""

from __future__ import annotations

from typing import Any

from cds.errors import BadRequest, NotFound, quote
from hooks import appointment_book, encounter_discharge, encounter_start, order_dispatch, order_select, order_sign
from hooks.spec import Hook

HOOKS: tuple[Hook, ...] = (order_sign.HOOK, order_select.HOOK, order_dispatch.HOOK, appointment_book.HOOK,
                          encounter_start.HOOK, encounter_discharge.HOOK)
SERVICE_IDS: frozenset[str] = frozenset(hook.service_id for hook in HOOKS)


def services_with_id(service_id: str) -> dict[str, Hook]:
    """The hooks served under `service_id`, by hook name (an id may serve several hooks); 404 when there are none."""
    hooks = {hook.name: hook for hook in HOOKS if hook.service_id == service_id}
    if not hooks:
        known = ", ".join(sorted(SERVICE_IDS))
        raise NotFound(f"No service {quote(service_id)}; this server offers {known} (see GET /cds-services).")
    return hooks


def hook_for(service_id: str, body: dict[str, Any]) -> Hook:
    """The hook a request body names, as served under `service_id`; 400 when the body names none it serves."""
    hooks = services_with_id(service_id)
    name = body.get("hook")
    if not isinstance(name, str) or not name:
        raise BadRequest("hook is required and must be a string.", "hook", "required")
    if name not in hooks:
        served = ", ".join(sorted(hooks))
        raise BadRequest(f"Service {service_id} answers the hook {served}, not {quote(name)}.", "hook",
                         "not-supported")
    return hooks[name]
