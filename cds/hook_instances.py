"""hookInstance reuse: CDS Hooks gives every call a new hookInstance (a UUID). Some clients send one for every
call; that is a client defect, said once per client in the log, and harmless here: each call is recorded under
its own id (hook_call.id), never keyed by hookInstance."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from cds.errors import quote

log = logging.getLogger(__name__)

REMEMBERED = 4096  # recent (client, hookInstance) pairs kept per process: memory stays bounded


class HookInstances:
    """The hookInstance values of recent calls, per client, in one process."""

    def __init__(self, remembered: int = REMEMBERED):
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._told: set[str] = set()
        self._remembered = remembered
        self._lock = threading.Lock()

    def note(self, client: str, hook_instance: str) -> bool:
        """Remember a call's hookInstance; True when `client` sent it before (logged the first time only)."""
        key = (client, hook_instance)
        with self._lock:
            reused = key in self._seen
            self._seen[key] = None
            self._seen.move_to_end(key)
            if len(self._seen) > self._remembered:
                self._seen.popitem(last=False)
            tell = reused and client not in self._told and len(self._told) < self._remembered
            if tell:
                self._told.add(client)
        if tell:
            log.warning("client %s reuses hookInstance %s across calls; CDS Hooks asks for a new one per call. "
                        "Each call is still recorded on its own. Said once per client.", quote(client, 200),
                        quote(hook_instance, 130))
        return reused
