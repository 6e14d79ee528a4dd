"""HTTP endpoints: discovery, service calls, feedback and health."""

from __future__ import annotations

import logging

import orjson
from flask import Blueprint, Response, current_app, request

from cds.errors import BadRequest, NotFound, quote
from cds.jsonbody import read_json_object
from cds.protocol import parse_feedback, parse_hook_request, to_wire
from cds.store import feedback_records
from hooks import HOOKS, services_with_id

log = logging.getLogger(__name__)
bp = Blueprint("cds", __name__)


def json_response(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status=status, mimetype="application/json")


@bp.get("/cds-services")
def discovery() -> Response:
    return json_response({"services": [hook.discovery_entry() for hook in HOOKS]})


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    hooks = _hooks_for(service_id)
    settings = current_app.config["CDS_SETTINGS"]
    body = read_json_object(request, settings.max_json_depth)
    hook_name = body.get("hook")
    if not isinstance(hook_name, str) or not hook_name:
        raise BadRequest("hook is required and must be a string.", "hook", "required")
    hook = hooks.get(hook_name)
    if hook is None:
        served = ", ".join(sorted(hooks))
        raise BadRequest(f"Service {service_id} answers the hook {served}, not {quote(hook_name)}.", "hook",
                         "not-supported")
    hook_request = parse_hook_request(body, hook.requires_selections, settings.max_draft_orders)
    answer = current_app.extensions["cds"].answer(hook, hook_request)
    return json_response(to_wire(answer))


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
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


def _hooks_for(service_id: str) -> dict:
    hooks = services_with_id(service_id)
    if not hooks:
        known = ", ".join(sorted({hook.service_id for hook in HOOKS}))
        raise NotFound(f"No service {quote(service_id)}; this server offers {known} (see GET /cds-services).")
    return hooks
