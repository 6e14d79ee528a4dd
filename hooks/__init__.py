"""The CDS Hooks this service answers: one module per hook."""

from __future__ import annotations

from hooks import order_select, order_sign
from hooks.spec import Hook

HOOKS: tuple[Hook, ...] = (order_sign.HOOK, order_select.HOOK)


def services_with_id(service_id: str) -> dict[str, Hook]:
    """The hooks served under `service_id`, by hook name (an id may serve several hooks)."""
    return {hook.name: hook for hook in HOOKS if hook.service_id == service_id}
