"""CORS for browser-based CDS clients (the CDS Hooks sandbox): preflight without authentication, headers on every
response of the CDS Hooks endpoints, discovery, service calls and feedback. Nothing else (readiness, metrics, the
console) is shared with other origins, whatever CDS_CORS_ORIGINS allows."""

from __future__ import annotations

from flask import Flask, Response, request

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type"
MAX_AGE = "86400"
CDS_HOOKS_PREFIX = "/cds-services"


def _cds_hooks_endpoint() -> bool:
    return request.path == CDS_HOOKS_PREFIX or request.path.startswith(f"{CDS_HOOKS_PREFIX}/")


def register_cors(app: Flask, origins: tuple[str, ...]) -> None:
    allow_any = "*" in origins
    allowed = frozenset(origins)

    def allowed_origin() -> str | None:
        origin = request.headers.get("Origin")
        if allow_any:
            return "*"
        return origin if origin in allowed else None

    @app.before_request
    def _preflight() -> Response | None:
        # Answered before authentication: browsers send no credentials on a preflight.
        if request.method == "OPTIONS" and request.routing_exception is None and _cds_hooks_endpoint():
            return Response(status=204, headers={"Allow": ALLOW_METHODS})
        return None

    @app.after_request
    def _cors_headers(response: Response) -> Response:
        if not _cds_hooks_endpoint():
            return response
        origin = allowed_origin()
        if origin:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "Content-Type"
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
                response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
                response.headers["Access-Control-Max-Age"] = MAX_AGE
        if not allow_any:
            response.vary.add("Origin")
        return response
