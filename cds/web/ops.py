"""Operations: GET /ready and GET /metrics, a metric sample plus an access log line for every request, and the
refusal of hook and feedback calls while this process is not ready."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from time import monotonic, perf_counter

from flask import Flask, Response, abort, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cds import metrics
from cds.config import Settings, is_loopback
from cds.errors import CdsError
from cds.web.routes import json_response
from hooks import SERVICE_IDS

log = logging.getLogger(__name__)
access_log = logging.getLogger("cds.access")

# A readiness check answers (name, ok, detail); create_app adds the policies' and the store's (cds/readiness.py).
ReadinessCheck = Callable[[], tuple[str, bool, str]]

# Polled every few seconds by orchestrators and scrapers: logged only at debug level unless they fail.
_PROBES = frozenset({"health", "ready", "metrics"})
# The calls refused while not ready: those that need what the checks check (the policies, the store).
_GATED = frozenset({"cds.call_service", "cds.feedback"})
# How old the readiness verdict a call is judged by may be before it is checked again.
VERDICT_MAX_AGE_S = 1.0


class NotReady(CdsError):
    """A call refused before anything was done with it (no authentication, no JWT-id record, no audit record),
    so it is safe to send again, here or to another instance: what a proxy retries on another replica."""

    def __init__(self) -> None:
        super().__init__(503, "This instance of the service is not ready (GET /ready says why), so nothing was done "
                              "with this request; send it again, here or to another instance.", "transient")
        self.headers = {"Retry-After": "1"}


class Readiness:
    """This process's readiness checks, and the last verdict of those that calls need, by which hook and feedback
    calls are refused while one of them fails. A call never waits for the checks while the last verdict was
    ready: when it is over VERDICT_MAX_AGE_S old, the checks run again on a helper thread. While not ready, a call
    finding the verdict that old runs them itself (the store's probe gives up after a second), so recovery is
    seen at once."""

    def __init__(self) -> None:
        self.checks: list[tuple[ReadinessCheck, bool]] = []  # each check, and whether calls need it to pass
        self._ready: bool | None = None  # no verdict yet
        self._checked_at = 0.0
        self._lock = threading.Lock()
        self._refreshing = False

    def report(self) -> list[dict]:
        """Run every check now: their results, each with `name`, `ok` and `detail`. Updates the verdict."""
        results = [_run(check) for check, _ in self.checks]
        failing = [result for result, (_, needed) in zip(results, self.checks, strict=True)
                   if needed and not result["ok"]]
        with self._lock:
            was, self._ready, self._checked_at = self._ready, not failing, monotonic()
        if failing and was is not False:
            log.warning("not ready, so hook and feedback calls are refused with 503: %s", _named(failing))
        elif not failing and was is False:
            log.warning("ready again: hook and feedback calls are served")
        return results

    def serving(self) -> bool:
        """Whether a call may be served now, by the verdict of at most about VERDICT_MAX_AGE_S ago."""
        ready, age = self._ready, monotonic() - self._checked_at
        if ready is None or (not ready and age > VERDICT_MAX_AGE_S):
            self.report()
            return bool(self._ready)
        if age > VERDICT_MAX_AGE_S:
            self._refresh_in_background()
        return ready

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True

        def refresh() -> None:
            try:
                self.report()
            finally:
                self._refreshing = False

        threading.Thread(target=refresh, name="cds-readiness", daemon=True).start()


def register_ops(app: Flask, settings: Settings) -> None:
    """Register before any other request hook, so every answer is measured, refusals included."""
    app.extensions["readiness"] = readiness = Readiness()
    app.extensions["operator_port"] = settings.metrics_port
    app.add_url_rule("/ready", "ready", ready)
    if settings.metrics_enabled:
        registry = metrics.exposition_registry()
        app.add_url_rule("/metrics", "metrics",
                         lambda: Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST))

    @app.before_request
    def _start_clock() -> None:
        g.started = perf_counter()

    if settings.metrics_port:
        @app.before_request
        def _separate_listeners() -> None:
            """/metrics only on the operator listener, which serves nothing but the probes besides."""
            endpoint = (request.endpoint or "").rsplit(".", 1)[-1]
            if not (endpoint in _PROBES if on_operator_port() else endpoint != "metrics"):
                abort(404)

    @app.before_request
    def _refuse_while_not_ready() -> None:
        """Before authentication and everything else the call would do: a refusal leaves no trace but its log
        line and metric, and a proxy may send the call to another replica (docs/operating.md)."""
        if request.endpoint in _GATED and request.method == "POST" and not readiness.serving():
            raise NotReady

    @app.after_request
    def _observe(response: Response) -> Response:
        seconds = perf_counter() - g.pop("started", perf_counter())
        endpoint = (request.endpoint or "unmatched").rsplit(".", 1)[-1]
        service_id = (request.view_args or {}).get("service_id")
        # Only known ids become label values: a client must not be able to mint new time series.
        service = service_id if service_id in SERVICE_IDS else "unknown" if service_id else ""
        status = response.status_code
        metrics.request(endpoint, service, status, seconds)
        level = logging.WARNING if status >= 500 else logging.DEBUG if endpoint in _PROBES else logging.INFO
        # The route, not the raw path or query: nothing the client typed reaches the log.
        path = request.url_rule.rule.replace("<service_id>", service) if request.url_rule else "(no route)"
        fields = {"status": status, "latency_ms": round(seconds * 1000, 1)} | ({"service": service} if service else {})
        access_log.log(level, "%s %s %s in %.1f ms", request.method, path, status, seconds * 1000, extra=fields)
        return response


def add_readiness_check(app: Flask, check: ReadinessCheck, calls_need_it: bool = True) -> None:
    """A check GET /ready runs. While one that calls need fails, hook and feedback calls are refused with 503;
    one they do not need (`calls_need_it=False`) is reported, and fails /ready, but refuses no call."""
    app.extensions["readiness"].checks.append((check, calls_need_it))


def on_operator_port() -> bool:
    """The request came in on the operator listener (CDS_METRICS_BIND): the port the connection was accepted
    on, which a client cannot change (the Host header can)."""
    port = current_app.extensions["operator_port"]
    connection = request.environ.get("gunicorn.socket")
    return bool(port) and connection is not None and connection.getsockname()[1] == port


def is_operator() -> bool:
    """The caller is on this host or came in on the operator listener."""
    return is_loopback(request.remote_addr or "") or on_operator_port()


def ready() -> Response:
    """200 when every readiness check passes, else 503; either way the checks and their results. The details
    (a database's error names its host and port) only to operators: others learn which check fails."""
    results = current_app.extensions["readiness"].report()
    failing = [result for result in results if not result["ok"]]
    if failing:
        log.warning("not ready: %s", _named(failing))
    if not is_operator():
        results = [{"name": result["name"], "ok": result["ok"]} for result in results]
    return json_response({"status": "unavailable" if failing else "ready", "checks": results},
                         503 if failing else 200)


def _named(failing: list[dict]) -> str:
    return "; ".join(f"{result['name']}: {result['detail']}" for result in failing)


def _run(check: ReadinessCheck) -> dict:
    try:
        name, ok, detail = check()
    except Exception as exc:
        log.exception("readiness check %s failed", getattr(check, "__name__", check))
        name, ok, detail = getattr(check, "__name__", "check"), False, f"raised {type(exc).__name__}"
    return {"name": name, "ok": bool(ok), "detail": detail}

