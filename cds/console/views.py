"""The console's pages and the JSON endpoints its pages call (all under /console).

Access: in demo mode the console is open (the service is bound to loopback); outside demo mode it is served
only when CDS_CONSOLE_ENABLED is on, and then, as in demo mode when CDS_CONSOLE_ADMIN_TOKEN is set, every
request must carry the admin credential (HTTP Basic, any user name). Requests from another origin are
refused, whatever the CORS settings of the CDS endpoints.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request

from cds.config import Settings
from cds.console import insights as insights_model
from cds.console.answer import answer_view
from cds.console.key import console_signer
from cds.console.orders import FormError, build_request, code_choices
from cds.console.policies import policy_views
from cds.console.relay import TargetRefused, call, target_base
from cds.console.scenarios import scenarios
from cds.policy.review import INTRO, TITLE, review_sections
from cds.web.body import read_json_object
from hooks import HOOKS

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates", static_folder="static")

CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
FEEDBACK_OUTCOMES = ("accepted", "overridden")
SERVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,127}")  # one path segment, never `.` or `..`


def register_console(app: Flask, settings: Settings) -> None:
    """Serve the console when settings turn it on (demo mode, or enabled with an admin credential)."""
    if settings.console_on:
        app.extensions["cds_console_signer"] = console_signer(settings)
        app.register_blueprint(bp)


def _settings() -> Settings:
    return current_app.config["CDS_SETTINGS"]


@bp.before_request
def _guard() -> Response | None:
    fetch_site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if fetch_site in ("cross-site", "same-site") or (origin and urlsplit(origin).netloc != request.host):
        return _plain(403, "The console answers only its own pages.")
    token = _settings().console_admin_token
    given = request.authorization.password if request.authorization else None
    if token and not (given and hmac.compare_digest(given.encode(), token.encode())):
        return _plain(401, "Sign in with the console's admin credential.",
                      {"WWW-Authenticate": 'Basic realm="CDS console", charset="UTF-8"'})
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"  # pages and answers may hold patient data
    return response


def _plain(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(text + "\n", status=status, mimetype="text/plain", headers=headers)


# ------------------------------------------------------------------------------------------------- pages


@bp.get("/")
def try_order() -> str:
    settings = _settings()
    return render_template(
        "try.html", page="try", own_base=_own_base(), scenarios=scenarios(),
        scenario_data=[asdict(scenario) for scenario in scenarios()],
        codes=code_choices(current_app.extensions["cds"].policies), hooks=HOOKS,
        signed=current_app.extensions["cds_console_signer"] is not None, iss=settings.console_iss,
        plan_directory=bool(settings.plan_directory), demo=settings.demo)


@bp.get("/insights")
def insights() -> str:
    filters = insights_model.Filters.from_args(request.args)
    return render_template("insights.html", page="insights",
                           **insights_model.report(current_app.extensions["cds_store"], filters))


@bp.get("/policies")
def policies() -> str:
    loaded = current_app.extensions["cds"].policies
    return render_template("policies.html", page="policies", policies=policy_views(loaded),
                           review=review_sections(loaded), review_title=TITLE, review_intro=INTRO)


# --------------------------------------------------------------------------------------- JSON endpoints


@bp.post("/api/discover")
def discover() -> Response:
    form = _form()
    answer = call(_signer(), _target(form), "", method="GET")
    return jsonify(answer=answer.as_json())


@bp.post("/api/send")
def send() -> Response:
    form = _form()
    base = _target(form)
    service = _service(form)
    try:
        hook_request = form["raw"] if form.get("raw") is not None else build_request(form)
    except FormError as exc:
        return _bad(str(exc))
    if not isinstance(hook_request, dict):
        return _bad("raw: a pasted request is a JSON object")
    answer = call(_signer(), base, f"/{service}", hook_request)
    view = answer_view(answer.body) if answer.status == 200 else None
    return jsonify(request=hook_request, answer=answer.as_json(), view=view)


@bp.post("/api/feedback")
def feedback() -> Response:
    form = _form()
    base = _target(form)
    service = _service(form)
    card, outcome, suggestions = form.get("card"), form.get("outcome"), form.get("acceptedSuggestions") or []
    if not isinstance(card, str) or not card or outcome not in FEEDBACK_OUTCOMES or not isinstance(suggestions, list):
        return _bad("card, outcome (accepted or overridden) and acceptedSuggestions (a list) are required")
    entry: dict[str, Any] = {"card": card, "outcome": outcome,
                             "outcomeTimestamp": datetime.now(UTC).isoformat(timespec="milliseconds")}
    if outcome == "accepted":
        entry["acceptedSuggestions"] = [{"id": str(suggestion)} for suggestion in suggestions]
    elif isinstance(form.get("overrideReason"), dict):
        entry["overrideReason"] = form["overrideReason"]
    body = {"feedback": [entry]}
    answer = call(_signer(), base, f"/{service}/feedback", body)
    return jsonify(request=body, answer=answer.as_json())


class _Refused(Exception):
    """A console request that cannot be carried out: answered 400 with the message."""


@bp.errorhandler(_Refused)
def _refused(error: _Refused) -> Response:
    return _bad(str(error))


def _bad(message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = 400
    return response


def _form() -> dict[str, Any]:
    """The JSON object posted, read as the CDS endpoints read theirs (400 with an OperationOutcome if not)."""
    return read_json_object(request, _settings().max_json_depth)


def _service(form: dict[str, Any]) -> str:
    service = form.get("service")
    if not isinstance(service, str) or not SERVICE_ID.fullmatch(service):
        raise _Refused("service: a CDS service id, such as order-sign-crd")
    return service


def _target(form: dict[str, Any]) -> str:
    try:
        return target_base(_settings(), form.get("target"), _own_base())
    except TargetRefused as exc:
        raise _Refused(f"target: {exc}") from None


def _signer():
    return current_app.extensions["cds_console_signer"]


def _own_base() -> str:
    """This service's base URL as its clients call it: the page's own origin when it is a public base."""
    bases = _settings().public_bases()
    here = request.host_url.rstrip("/")
    return here if here in bases or not bases else bases[0]
