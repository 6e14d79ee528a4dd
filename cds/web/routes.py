"""HTTP endpoints: discovery, service calls, feedback and health. Views read the body and write the answer; the
work is the pipeline's (cds/pipeline.py)."""

from __future__ import annotations

import logging

import orjson
from flask import Blueprint, Response, current_app, request

from cds.auth import authenticate
from cds.logs import bind_request_id
from cds.pipeline import answer_hook_call
from cds.protocol import parse_feedback
from cds.record import feedback_records
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
    return json_response(answer_hook_call(current_app.extensions["cds"], service_id, request, _read_hook_body))


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    authenticate()
    services_with_id(service_id)
    received = parse_feedback(_read_body())
    receipt = current_app.extensions["cds_store"].record_feedback(service_id, feedback_records(received.feedback))
    log.info("feedback for %s: %d stored (%d for unknown cards), %d repeated", service_id, receipt.stored,
             receipt.unmatched, receipt.repeated)
    return json_response({})


@bp.get("/health")
def health() -> Response:
    return json_response({"status": "ok"})


def _read_body() -> dict:
    return read_json_object(request, current_app.config["CDS_SETTINGS"].max_json_depth)


def _read_hook_body() -> dict:
    """A hook call's body; its hookInstance tags the log lines that follow."""
    body = _read_body()
    bind_request_id(body.get("hookInstance"))
    return body
