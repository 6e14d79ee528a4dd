"""Write docs/conformance.md: every crd-server statement of Da Vinci CRD 2.2.1 with where this service stands.

Reads docs/conformance/Requirements-fromNarrative.json (the guide's numbered statements) and
docs/conformance/status.yaml (this service's status of each). `python scripts/conformance.py` writes the page;
`--check` exits 1, saying why, when the page is out of date, a statement has no status, a status is not one of
met/partly/not-applicable/not-yet or lacks what it needs, or a named test does not exist.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "docs" / "conformance" / "Requirements-fromNarrative.json"
STATUS = ROOT / "docs" / "conformance" / "status.yaml"
PAGE = ROOT / "docs" / "conformance.md"
ACTOR = "crd-server"
STATUSES = {"met": "met", "partly": "partly", "not-applicable": "not applicable", "not-yet": "not yet"}
_KEYWORD = re.compile(r"\*\*(SHALL NOT|SHALL|SHOULD NOT|SHOULD|MAY)\*\*")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")


@dataclass(frozen=True)
class Statement:
    key: str
    level: str  # SHALL, SHALL NOT, SHOULD, SHOULD NOT, MAY, or two joined by "/"
    text: str


def server_statements() -> list[Statement]:
    """The guide's statements whose actors include the CRD server, in the guide's order."""
    found = []
    for statement in json.loads(REQUIREMENTS.read_text(encoding="utf-8"))["statement"]:
        actors = {e.get("valueId") for e in statement.get("extension", []) if e["url"].endswith("statementactor")}
        if ACTOR in actors:
            found.append(Statement(statement["key"], _level(statement), statement["requirement"]))
    return found


def _level(statement: dict) -> str:
    """SHALL/SHOULD/MAY as the statement gives it; the negative forms, which the file leaves out, from its text."""
    levels = statement.get("conformance") or list(dict.fromkeys(_KEYWORD.findall(statement["requirement"])))
    return "/".join(level.replace("-", " ") for level in levels) or "?"


def problems(statements: list[Statement], status: dict) -> list[str]:
    """Why the status file does not account for the statements, or []."""
    found = []
    keys = {s.key for s in statements}
    found += [f"{key}: not in {STATUS.name}" for key in sorted(keys - status.keys())]
    found += [f"{key}: in {STATUS.name} but not a crd-server statement" for key in sorted(status.keys() - keys)]
    for statement in statements:
        entry = status.get(statement.key)
        if not isinstance(entry, dict):
            continue
        state, tests, note = entry.get("status"), entry.get("tests") or [], entry.get("note")
        if state not in STATUSES:
            found.append(f"{statement.key}: status {state!r} is not one of {', '.join(STATUSES)}")
        if state == "met" and not tests:
            found.append(f"{statement.key}: met, but no test named")
        if state in ("partly", "not-applicable", "not-yet") and not note:
            found.append(f"{statement.key}: {state} needs a note saying what is missing or why")
        found += [f"{statement.key}: {problem}" for test in tests if (problem := test_problem(test))]
    return found


def test_problem(test: str) -> str | None:
    """Why `tests/test_x.py::test_name` names no test function, or None."""
    path, _, name = test.partition("::")
    file = ROOT / path
    if not (path.startswith("tests/") and file.is_file() and name):
        return f"{test}: no such test file"
    names = {node.name for node in ast.walk(ast.parse(file.read_text(encoding="utf-8")))
             if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    return None if name in names else f"{test}: no such test"


def render(statements: list[Statement], status: dict) -> str:
    counts = Counter((s.level.split("/")[0], status[s.key]["status"]) for s in statements)
    levels = sorted({level for level, _ in counts}, key=["SHALL", "SHALL NOT", "SHOULD", "SHOULD NOT", "MAY"].index)
    lines = [
        "# Conformance to Da Vinci CRD 2.2.1",
        "",
        "<!-- Written by scripts/conformance.py from docs/conformance/status.yaml; edit that file, not this one. -->",
        "",
        f"Every statement of CRD 2.2.1 whose actor is the CRD server ({len(statements)} of the guide's numbered "
        "statements, from its `Requirements-fromNarrative.json`), with where this service stands: **met** (the "
        "tests that show it), **partly** (what is missing), **not applicable** (why), or **not yet**. CI fails when "
        "a statement is missing here or a named test does not exist (tests/test_conformance.py).",
        "",
        "| Level | " + " | ".join(STATUSES.values()) + " |",
        "|---|" + "---|" * len(STATUSES),
        *(f"| {level} | " + " | ".join(str(counts[(level, state)]) for state in STATUSES) + " |" for level in levels),
        "",
        "Where the guide contradicts itself, the choice is under hook-13 (400 for a call without one usable "
        "Coverage) and resp-45 (`not-covered` for it): the service follows resp-45 by default; `CDS_STRICT_CRD=true` "
        "chooses hook-13.",
        "",
        "| Key | Level | Statement | Status | Shown by, or why |",
        "|---|---|---|---|---|",
    ]
    for statement in statements:
        entry = status[statement.key]
        tests = "<br>".join(f"`{test}`" for test in entry.get("tests") or [])
        why = "<br>".join(part for part in (_cell(entry.get("note") or ""), tests) if part)
        lines.append(f"| {statement.key} | {statement.level} | {_cell(statement.text, 300)} | "
                     f"{STATUSES[entry['status']]} | {why} |")
    return "\n".join(lines) + "\n"


def _cell(text: str, limit: int | None = None) -> str:
    """Text for one table cell: one line, links reduced to their text, pipes escaped, optionally shortened."""
    text = " ".join(_LINK.sub(r"\1", text).split()).replace("|", "\\|")
    if limit and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def main(argv: list[str]) -> int:
    statements = server_statements()
    status = yaml.safe_load(STATUS.read_text(encoding="utf-8")) or {}
    found = problems(statements, status)
    if found:
        print("\n".join(found), file=sys.stderr)
        return 1
    page = render(statements, status)
    if "--check" in argv:
        if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != page:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run python scripts/conformance.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}: {len(statements)} statements")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
