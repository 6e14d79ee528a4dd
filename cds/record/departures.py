"""Where decided orders depart from FHIR R4, logged for the EHR's integrators from a sample of the orders.

The check is a full fhir.resources validation (about 0.1 ms an order, more than the decision itself), and no
answer depends on it. An EHR build's departures repeat on every order it sends, so checking one order per
client every so often finds them without every call paying for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from cds.fhir import DraftOrder
from cds.policy.facts import Order

log = logging.getLogger(__name__)


class DepartureLog:
    """Checks the orders of at most one call per client in each `interval_ms` (0: every call's) and logs the
    departures it finds, by element path, never values."""

    def __init__(self, interval_ms: int):
        self.interval = interval_ms / 1000
        self._next_check: dict[str | None, float] = {}  # by client iss (None: unauthenticated demo calls)
        self._lock = threading.Lock()

    def check(self, orders: Iterable[Order], client: str | None) -> None:
        if self.interval:
            now = time.monotonic()
            with self._lock:
                if now < self._next_check.get(client, 0.0):
                    return
                self._next_check[client] = now + self.interval
        for order in orders:
            if isinstance(order, DraftOrder) and order.problems:
                log.warning("%s departs from FHIR R4 (%s); its coverage information echoes it as sent",
                            order.reference or order.resource_type, "; ".join(order.problems))
