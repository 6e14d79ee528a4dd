"""CDS Hooks answers for a person in a terminal: services, cards with their Markdown, links, suggestions and
override reasons, and each Da Vinci CRD coverage-information action as one line.

In a terminal, rich renders the Markdown a card's detail carries, colours the indicator, draws tables and
wraps every line to the terminal's width. Written to a pipe or a file, or with NO_COLOR set, the output is plain
text: no escape codes, no box drawing, no trailing padding, and no line broken, so it can be searched and cut."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from rich import box
from rich.console import Console, RenderableType
from rich.markdown import Markdown
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from cds.fhirjson import as_dict
from cds.render.coverage import COVERAGE_INFORMATION

if TYPE_CHECKING:
    from cds.tools.client import CallFailed

INDICATOR_STYLES = {"critical": "bold white on red", "warning": "bold black on yellow", "info": "bold cyan"}
COVERED = {"covered": ("covered", "green"), "not-covered": ("not covered", "bold red"),
           "conditional": ("coverage conditional", "yellow"), "indeterminate": ("coverage indeterminate", "yellow")}
PRIOR_AUTH = {"no-auth": "no prior auth needed", "auth-needed": "prior auth needed",
              "performpa": "performer must request prior auth", "satisfied": "prior auth satisfied",
              "conditional": "prior auth conditional", "indeterminate": "prior auth indeterminate"}
SELECTION = {"at-most-one": "choose at most one", "any": "choose any"}
INDENT = 4
MAX_ERROR_BODY = 500
PLAIN_WIDTH = 10_000  # plain text is never wrapped
_TRAILING_SPACE = re.compile(r"[ \t]+(?=\n)")


class _PlainText:
    """A pipe or file: rich pads its layout to the console width; strip that padding line by line."""

    def __init__(self, file: TextIO):
        self.file = file

    def write(self, text: str) -> int:
        return self.file.write(_TRAILING_SPACE.sub("", text))

    def flush(self) -> None:
        self.file.flush()


def console(stderr: bool = False) -> Console:
    """A terminal (wrapped to its width, in colour; FORCE_COLOR makes any output one), or plain text: a pipe,
    a file, or NO_COLOR set."""
    file = sys.stderr if stderr else sys.stdout
    if (file.isatty() or os.environ.get("FORCE_COLOR")) and not os.environ.get("NO_COLOR"):
        return Console(file=file, highlight=False, emoji=False)
    return Console(file=_PlainText(file), highlight=False, emoji=False, no_color=True, color_system=None,  # type: ignore[arg-type]
                   width=PLAIN_WIDTH)


def is_plain(out: Console) -> bool:
    return out.width == PLAIN_WIDTH


def print_table(out: Console, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns fitted to the terminal (cells wrap); plain text: aligned columns, two spaces apart, one row a line."""
    if is_plain(out):
        cells = [[str(cell) for cell in row] for row in [headers, *rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        for row in cells:
            out.print(Text("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))),
                      soft_wrap=True)
        return
    table = Table(*headers, header_style="bold", box=box.SIMPLE_HEAD)
    for cells_of_row in rows:
        table.add_row(*(Text(str(cell)) for cell in cells_of_row))
    out.print(table)


def print_services(out: Console, services: list[dict[str, Any]]) -> None:
    if not services:
        out.print("The server offers no services.")
        return
    rows = []
    for service in services:
        prefetch = service.get("prefetch")
        keys = ", ".join(prefetch) if isinstance(prefetch, dict) else ""
        rows.append([service.get("id"), service.get("hook"), service.get("title") or "", keys])
    print_table(out, ["ID", "HOOK", "TITLE", "PREFETCH KEYS"], rows)


def print_answer(out: Console, answer: dict[str, Any]) -> None:
    cards = [card for card in answer.get("cards") or [] if isinstance(card, dict)]
    actions = [action for action in answer.get("systemActions") or [] if isinstance(action, dict)]
    if not cards and not actions:
        out.print("No cards: the service has no guidance for this request.")
    for number, card in enumerate(cards, 1):
        print_card(out, number, card)
    if actions:
        out.print(Text("System actions", style="bold"))
        for action in actions:
            for line in action_lines(action):
                print_line(out, line)


def print_card(out: Console, number: int, card: dict[str, Any]) -> None:
    indicator = str(card.get("indicator") or "info")
    print_wrapped(out, Text.assemble(f"{number}. ", (f" {indicator.upper()} ", INDICATOR_STYLES.get(indicator, "bold")),
                                     " ", (str(card.get("summary") or ""), "bold")), indent=0)
    print_line(out, Text(source_line(card), style="dim"))
    if isinstance(card.get("detail"), str):
        print_wrapped(out, Markdown(card["detail"], hyperlinks=False))
    links = [link for link in card.get("links") or [] if isinstance(link, dict)]
    if links:
        print_line(out, Text("Links", style="bold"))
        for link in links:
            print_line(out, Text(f"  • {link_line(link)}"))
    suggestions = [s for s in card.get("suggestions") or [] if isinstance(s, dict)]
    if suggestions:
        how = SELECTION.get(str(card.get("selectionBehavior")))
        print_line(out, Text(f"Suggestions ({how})" if how else "Suggestions", style="bold"))
        for suggestion in suggestions:
            recommended = " (recommended)" if suggestion.get("isRecommended") else ""
            print_line(out, Text(f"  • {suggestion.get('label')}{recommended}"))
            for action in suggestion.get("actions") or []:
                if isinstance(action, dict):
                    print_line(out, Text(f"      {change_line(action)}"))
    reasons = [coding_text(reason) for reason in card.get("overrideReasons") or [] if isinstance(reason, dict)]
    if reasons:
        print_line(out, Text.assemble(("Override reasons: ", "bold"), "; ".join(reasons)))
    out.print()


def print_line(out: Console, line: Text) -> None:
    """One indented line; in a terminal, wrapped to its width under the indent."""
    print_wrapped(out, line)


def print_wrapped(out: Console, renderable: RenderableType, indent: int = INDENT) -> None:
    if is_plain(out) and isinstance(renderable, Text):
        for line in renderable.split("\n"):
            out.print(Text(" " * indent) + line, soft_wrap=True)
    else:
        out.print(Padding(renderable, (0, 0, 0, indent)))


def source_line(card: dict[str, Any]) -> str:
    source = as_dict(card.get("source"))
    parts = [f"From {source.get('label') or 'an unnamed source'}"]
    if isinstance(source.get("topic"), dict):
        parts.append(coding_text(source["topic"]))
    extension = as_dict(card.get("extension"))
    orders = [str(ref["reference"]) for ref in extension.get("davinci-crd.associated-resource") or []
              if isinstance(ref, dict) and ref.get("reference")]
    if orders:
        parts.append("for " + ", ".join(orders))
    if card.get("uuid"):
        parts.append(f"card {card['uuid']}")
    return " · ".join(parts)


def link_line(link: dict[str, Any]) -> str:
    kind = " (SMART app)" if link.get("type") == "smart" else ""
    return f"{link.get('label')}: {link.get('url')}{kind}"


def change_line(action: dict[str, Any]) -> str:
    """What a suggestion or system action does: `create DeviceRequest/1: description`."""
    resource = as_dict(action.get("resource"))
    target = action.get("resourceId") or "/".join(str(resource[k]) for k in ("resourceType", "id") if k in resource)
    description = action.get("description")
    return f"{action.get('type')} {target or 'a resource'}" + (f": {description}" if description else "")


def coding_text(coding: dict[str, Any]) -> str:
    return str(coding.get("display") or coding.get("code") or "")


def action_lines(action: dict[str, Any]) -> list[Text]:
    """A coverage-information line for each assertion on the order; other system actions as what they do."""
    resource = as_dict(action.get("resource"))
    assertions = [extension for extension in resource.get("extension") or []
                  if isinstance(extension, dict) and extension.get("url") == COVERAGE_INFORMATION]
    if not assertions:
        return [Text(change_line(action))]
    reference = f"{resource.get('resourceType')}/{resource.get('id')}"
    return [coverage_line(reference, assertion) for assertion in assertions]


def coverage_line(reference: str, assertion: dict[str, Any]) -> Text:
    """`ServiceRequest/1: not covered · reason "…" · assertion 8f3…`: order, covered, pa-needed,
    doc-needed, info-needed, reason text and coverage-assertion-id, in that order, the absent left out."""
    values: dict[str, list[Any]] = {}
    for part in assertion.get("extension") or []:
        if isinstance(part, dict):
            value = next((v for k, v in part.items() if k.startswith("value")), None)
            values.setdefault(str(part.get("url")), []).append(value)

    def first(name: str) -> str | None:
        found = values.get(name)
        return str(found[0]) if found and found[0] is not None else None

    line = Text(f"{reference}: ")
    pieces: list[Text] = []
    if covered := first("covered"):
        words, style = COVERED.get(covered, (f"covered {covered}", "bold"))
        pieces.append(Text(words, style=style))
    if pa_needed := first("pa-needed"):
        pa_id = first("satisfied-pa-id")
        pieces.append(Text(PRIOR_AUTH.get(pa_needed, f"prior auth {pa_needed}") + (f" ({pa_id})" if pa_id else "")))
    for name, label in (("doc-needed", "documentation"), ("info-needed", "information needed")):
        if values.get(name):
            pieces.append(Text(f"{label}: " + ", ".join(str(v) for v in values[name])))
    reasons = [reason_text(v) for v in values.get("reason", []) if isinstance(v, dict)]
    if reasons:
        pieces.append(Text("reason " + "; ".join(f'"{reason}"' for reason in reasons if reason)))
    if assertion_id := first("coverage-assertion-id"):
        pieces.append(Text(f"assertion {assertion_id}", style="dim"))
    return line.append(Text(" · ").join(pieces))


def reason_text(concept: dict[str, Any]) -> str:
    codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    return str(concept.get("text") or next((coding_text(c) for c in codings), ""))


def print_failure(err: Console, failure: CallFailed, label: str = "") -> None:
    """What went wrong, with the OperationOutcome's issues when the server sent one."""
    print_wrapped(err, Text.assemble(("Error: ", "bold red"), f"{label}: " if label else "", str(failure)), indent=0)
    if failure.outcome is not None:
        for issue in failure.outcome.get("issue") or []:
            if isinstance(issue, dict):
                print_line(err, Text(issue_line(issue)))
    elif failure.body.strip():
        print_wrapped(err, Text(failure.body.strip()[:MAX_ERROR_BODY]))


def issue_line(issue: dict[str, Any]) -> str:
    """`error invalid at context.userId: …`, as an OperationOutcome issue reads."""
    expression = issue.get("expression")
    where = f" at {', '.join(map(str, expression))}" if isinstance(expression, list) and expression else ""
    details = as_dict(issue.get("details"))
    text = issue.get("diagnostics") or details.get("text") or ""
    return f"{issue.get('severity', 'error')} {issue.get('code', '')}{where}: {text}".strip()
