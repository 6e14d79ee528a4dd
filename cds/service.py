"""The request pipeline after protocol checks: orders to judge, member facts, decisions, the answer."""

from __future__ import annotations

from cds.config import Settings
from cds.facts import member_facts
from cds.prefetch import member_data
from cds.protocol import CdsResponse, HookRequest
from hooks.spec import Hook


class CoverageService:
    """Built once per process at start-up; answers one validated hook call at a time."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def answer(self, hook: Hook, request: HookRequest) -> CdsResponse:
        orders = hook.judged_orders(request)
        if not orders:
            return CdsResponse()
        facts = member_facts(member_data(request))  # noqa: F841  (decisions come with the policy engine)
        return CdsResponse()
