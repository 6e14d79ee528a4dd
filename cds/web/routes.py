"""HTTP endpoints: discovery, service calls, feedback and health."""

from __future__ import annotations

import logging
import time

import orjson
from flask import Blueprint, Response, current_app, g, request

from cds.auth import authenticate
from cds.errors import BadRequest, CdsError, NotFound, quote
from cds.logs import bind_request_id
from cds.protocol import parse_feedback, parse_hook_request, to_wire
from cds.record import feedback_records
from cds.record.calls import call_records
from cds.web.body import read_json_object
from hooks import HOOKS, services_with_id

log = logging.getLogger(__name__)
bp = Blueprint("cds", __name__)


def json_response(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status=status, mimetype="application/json")


@bp.get("/cds-services")
def discovery() -> Response:
    if current_app.config["CDS_SETTINGS"].auth_discovery:
        authenticate()
    return json_response({"services": [hook.discovery_entry() for hook in HOOKS]})


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    started = time.perf_counter()
    authenticate()
    hooks = _hooks_for(service_id)
    settings = current_app.config["CDS_SETTINGS"]
    body = read_json_object(request, settings.max_json_depth)
    bind_request_id(body.get("hookInstance"))
    hook_name = body.get("hook")
    if not isinstance(hook_name, str) or not hook_name:
        raise BadRequest("hook is required and must be a string.", "hook", "required")
    hook = hooks.get(hook_name)
    if hook is None:
        served = ", ".join(sorted(hooks))
        raise BadRequest(f"Service {service_id} answers the hook {served}, not {quote(hook_name)}.", "hook",
                         "not-supported")
    hook_request = parse_hook_request(body, hook.requires_selections, settings.max_draft_orders)
    store = current_app.extensions["cds_store"]
    try:
        answer, rendered = current_app.extensions["cds"].respond(hook, hook_request, g.cds_client)
    except CdsError as error:  # e.g. 412 or a strict-mode 400: recorded too, then answered
        store.audit(*call_records(service_id, hook_request, g.cds_client, error.status, _ms_since(started)))
        raise
    wire = to_wire(answer)
    payloads = (body, wire) if settings.audit_capture_payloads else None
    store.audit(*call_records(service_id, hook_request, g.cds_client, 200, _ms_since(started), rendered, answer,
                              payloads))
    return json_response(wire)


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    authenticate()
    _hooks_for(service_id)
    settings = current_app.config["CDS_SETTINGS"]
    received = parse_feedback(read_json_object(request, settings.max_json_depth))
    receipt = current_app.extensions["cds_store"].record_feedback(service_id, feedback_records(received.feedback))
    log.info("feedback for %s: %d stored (%d for unknown cards), %d repeated", service_id, receipt.stored,
             receipt.unmatched, receipt.repeated)
    return json_response({})


@bp.get("/health")
def health() -> Response:
    return json_response({"status": "ok"})


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _hooks_for(service_id: str) -> dict:
    hooks = services_with_id(service_id)
    if not hooks:
        known = ", ".join(sorted({hook.service_id for hook in HOOKS}))
        raise NotFound(f"No service {quote(service_id)}; this server offers {known} (see GET /cds-services).")
    return hooks
