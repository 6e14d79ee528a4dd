"""GET /openapi.json: the OpenAPI 3.1 document of the HTTP API (cds/web/openapi.yaml), read once."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, Response

from cds import __version__
from cds.web.routes import json_response

DOCUMENT = Path(__file__).with_name("openapi.yaml")
bp = Blueprint("openapi", __name__)


@cache
def openapi_document() -> dict[str, Any]:
    document = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    document["info"]["version"] = __version__
    return document


@bp.get("/openapi.json")
def openapi() -> Response:
    return json_response(openapi_document())
