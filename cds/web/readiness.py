"""The readiness checks GET /ready runs (cds/ops.py): the medical policies are loaded, the audit store answers."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

from cds.config import parse_database_url
from cds.pipeline import Service
from cds.record import Store
from cds.record.engine import describe_database_error
from cds.web.ops import ReadinessCheck

# An orchestrator's readiness probe typically gives up after one second: answer before it does.
STORE_PROBE_TIMEOUT_S = 1.0


def policies_loaded(service: Service) -> ReadinessCheck:
    """Ready when at least one policy is loaded; the detail names each with its version."""

    def check() -> tuple[str, bool, str]:
        loaded = ", ".join(f"{policy.id} version {policy.spec.version}" for policy in service.policies)
        return "policies", bool(loaded), loaded or "no policy loaded"

    return check


class StoreProbe:
    """`SELECT 1` through the store's own connection pool, on a helper thread: a database that hangs (PostgreSQL's
    connect timeout is 2 s) makes the check fail after STORE_PROBE_TIMEOUT_S rather than hold /ready. While a
    probe is still waiting, later checks wait on that one: at most one is in flight per process."""

    def __init__(self, store: Store, timeout_s: float = STORE_PROBE_TIMEOUT_S):
        self._store = store
        self._engine = store.engine
        self._password = parse_database_url(store.url).password
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._in_flight: Future[float] | None = None

    def __call__(self) -> tuple[str, bool, str]:
        with self._lock:
            if self._in_flight is None or self._in_flight.done():
                self._in_flight = self._start()
            probe = self._in_flight
        try:
            seconds = probe.result(timeout=self._timeout_s)
        except TimeoutError:
            return "store", False, f"{self._engine.dialect.name}: no answer within {self._timeout_s:g} s"
        except Exception as exc:  # any failure means not ready: named in the detail, not raised
            return "store", False, self._describe(exc)
        return "store", True, f"{self._engine.dialect.name} answered in {seconds * 1000:.1f} ms"

    def _start(self) -> Future[float]:
        probe: Future[float] = Future()

        def run() -> None:
            started = time.perf_counter()
            try:
                self._store.ping()
                probe.set_result(time.perf_counter() - started)
            except BaseException as exc:  # handed to the waiting check
                probe.set_exception(exc)

        # A daemon thread, so that a probe stuck on a silent network never delays the worker's exit.
        threading.Thread(target=run, name="cds-store-probe", daemon=True).start()
        return probe

    def _describe(self, exc: BaseException) -> str:
        """The driver's error kind and first line (never the statement), with the URL's password masked."""
        detail = describe_database_error(exc)
        return detail.replace(self._password, "***") if self._password else detail
