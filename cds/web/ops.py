"""Operations: GET /ready and GET /metrics, and a metric sample plus an access log line for every request."""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter

from flask import Flask, Response, abort, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cds import metrics
from cds.config import Settings, is_loopback
from cds.web.routes import json_response
from hooks import SERVICE_IDS

log = logging.getLogger(__name__)
access_log = logging.getLogger("cds.access")

# A readiness check answers (name, ok, detail); create_app adds the policies' and the store's (cds/readiness.py).
ReadinessCheck = Callable[[], tuple[str, bool, str]]

# Polled every few seconds by orchestrators and scrapers: logged only at debug level unless they fail.
_PROBES = frozenset({"health", "ready", "metrics"})


def register_ops(app: Flask, settings: Settings) -> None:
    """Register before any other request hook, so every answer is measured, refusals included."""
    app.extensions["readiness_checks"] = []
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


def add_readiness_check(app: Flask, check: ReadinessCheck) -> None:
    app.extensions["readiness_checks"].append(check)


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
    results = [_run(check) for check in current_app.extensions["readiness_checks"]]
    failing = [result for result in results if not result["ok"]]
    if failing:
        log.warning("not ready: %s", "; ".join(f"{result['name']}: {result['detail']}" for result in failing))
    if not is_operator():
        results = [{"name": result["name"], "ok": result["ok"]} for result in results]
    return json_response({"status": "unavailable" if failing else "ready", "checks": results},
                         503 if failing else 200)


def _run(check: ReadinessCheck) -> dict:
    try:
        name, ok, detail = check()
    except Exception as exc:
        log.exception("readiness check %s failed", getattr(check, "__name__", check))
        name, ok, detail = getattr(check, "__name__", "check"), False, f"raised {type(exc).__name__}"
    return {"name": name, "ok": bool(ok), "detail": detail}

