"""A CDS Hooks answer as an EHR shows it: cards with their detail rendered from Markdown, and the CRD
coverage-information of each system action as table rows beside the order it annotates.

Markdown is rendered by markdown-it-py with raw HTML off: HTML in a card (a `<script>`, an `onerror`) comes
out as text, and links with `javascript:` or `data:` URLs are not made links. The console's pages also carry
a Content-Security-Policy that runs no inline script.
"""

from __future__ import annotations

from typing import Any

from markdown_it import MarkdownIt

from cds.render.coverage import COVERAGE_INFORMATION

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False})
COVERAGE_COLUMNS = ("covered", "pa-needed", "doc-needed", "doc-purpose", "info-needed", "reason", "coverage",
                    "coverage-assertion-id", "date")


def render_markdown(text: Any) -> str:
    """Safe HTML for a card's Markdown detail."""
    return _markdown.render(text) if isinstance(text, str) else ""


def answer_view(body: Any) -> dict[str, Any]:
    """What the page shows of an answer: each card with `detailHtml`, and the coverage-information rows."""
    if not isinstance(body, dict):
        return {"cards": [], "coverage": []}
    cards = [card for card in body.get("cards") or [] if isinstance(card, dict)]
    actions = [action for action in body.get("systemActions") or [] if isinstance(action, dict)]
    return {"cards": [{**card, "detailHtml": render_markdown(card.get("detail"))} for card in cards],
            "coverage": [row for action in actions for row in coverage_rows(action)]}


def coverage_rows(action: dict[str, Any]) -> list[dict[str, str]]:
    """One row per coverage-information extension on the action's resource."""
    resource = action.get("resource")
    if not isinstance(resource, dict):
        return []
    order = f"{resource.get('resourceType')}/{resource.get('id')}"
    return [{"order": order, "action": str(action.get("type") or ""), **_columns(extension)}
            for extension in resource.get("extension") or []
            if isinstance(extension, dict) and extension.get("url") == COVERAGE_INFORMATION]


def _columns(extension: dict[str, Any]) -> dict[str, str]:
    values: dict[str, list[str]] = {}
    for part in extension.get("extension") or []:
        if isinstance(part, dict) and part.get("url") in COVERAGE_COLUMNS:
            values.setdefault(part["url"], []).append(_value(part))
    return {column: ", ".join(values.get(column, [])) for column in COVERAGE_COLUMNS}


def _value(part: dict[str, Any]) -> str:
    for name, value in part.items():
        if not name.startswith("value"):
            continue
        if isinstance(value, dict):
            if "reference" in value:
                return str(value["reference"])
            codings = value.get("coding") or []
            return str(value.get("text") or ", ".join(str(c.get("display") or c.get("code")) for c in codings
                                                      if isinstance(c, dict)))
        return str(value)
    return ""
