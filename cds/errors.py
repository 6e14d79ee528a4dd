"""Errors a client can cause, mapped to an HTTP status and a FHIR OperationOutcome in one place."""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from flask import Flask, Response, current_app
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def quote(value: Any, limit: int = 64) -> str:
    """A client-supplied value made safe to put in a message: printable, bounded, quoted."""
    text = _UNPRINTABLE.sub("?", str(value))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"'{text}'"


class CdsError(Exception):
    """An error answered with `status` and an OperationOutcome issue of FHIR issue type `code`."""

    headers: dict[str, str] | None = None  # extra response headers, e.g. WWW-Authenticate on a 401

    def __init__(self, status: int, diagnostics: str, code: str = "invalid", expression: str | None = None):
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.expression = expression


class BadRequest(CdsError):
    def __init__(self, diagnostics: str, expression: str | None = None, code: str = "invalid"):
        super().__init__(400, diagnostics, code, expression)


class NotFound(CdsError):
    def __init__(self, diagnostics: str):
        super().__init__(404, diagnostics, "not-found")


def operation_outcome(diagnostics: str, code: str = "invalid", expression: str | None = None) -> dict:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def outcome_response(status: int, outcome: dict, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(outcome), status=status, mimetype="application/json", headers=headers)


# Werkzeug's own errors (routing, method, size) in the words a developer needs, by status.
_HTTP_MESSAGES = {
    404: ("not-found", "No such endpoint. Discovery is GET /cds-services; services are POST /cds-services/{id}."),
    405: ("not-supported", "Method not allowed here; see the Allow header."),
    413: ("too-costly", "Request body is larger than this service accepts."),
    431: ("too-costly", "Request headers are larger than this service accepts."),
}


def http_issue_code(status: int) -> str:
    """The FHIR issue type a Werkzeug error of `status` is answered with."""
    return _HTTP_MESSAGES.get(status, ("processing", ""))[0]


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(CdsError)
    def _cds_error(error: CdsError) -> Response:
        log.info("request refused: %s %s", error.status, error.diagnostics)
        return outcome_response(error.status, operation_outcome(error.diagnostics, error.code, error.expression),
                                error.headers)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code, message = _HTTP_MESSAGES.get(status, ("processing", error.description or error.name))
        if status == 413 and current_app.config.get("MAX_CONTENT_LENGTH"):
            message = f"{message[:-1]}: at most {current_app.config['MAX_CONTENT_LENGTH']} bytes."
        allowed = getattr(error, "valid_methods", None)
        headers = {"Allow": ", ".join(allowed)} if allowed else None
        return outcome_response(status, operation_outcome(message, code), headers)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unexpected error while handling a request")
        return outcome_response(500, operation_outcome("Internal error; it has been logged.", "exception"))
