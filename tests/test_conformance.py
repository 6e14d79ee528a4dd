"""docs/conformance.md: every crd-server statement of CRD 2.2.1 accounted for, each named test real, the page as
scripts/conformance.py writes it."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "conformance.py"
sys.path.insert(0, str(SCRIPT.parent))
import conformance  # noqa: E402  (a script, not a package)


def status() -> dict:
    return yaml.safe_load(conformance.STATUS.read_text(encoding="utf-8"))


def test_the_matrix_is_complete_and_the_page_up_to_date():
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_every_crd_server_statement_is_in_the_matrix_with_its_level():
    statements = conformance.server_statements()
    assert len(statements) == 141  # of the guide's 232; the rest are the client's alone
    page = conformance.PAGE.read_text(encoding="utf-8")
    levels = {s.key: s.level for s in statements}
    assert levels["hook-16"] == "SHALL" and levels["resp-25"] == "SHALL NOT" and levels["hook-13"] == "SHALL/SHOULD"
    for statement in statements:
        assert f"| {statement.key} | {statement.level} |" in page


def test_every_shall_is_met_or_says_why_not():
    entries = status()
    for statement in conformance.server_statements():
        entry = entries[statement.key]
        if statement.level.startswith("SHALL") and entry["status"] != "met":
            assert entry.get("note"), statement.key


def test_a_missing_statement_a_missing_test_or_a_bare_status_fails_the_check():
    statements = conformance.server_statements()
    entries = status()
    assert conformance.problems(statements, entries) == []
    broken = copy.deepcopy(entries)
    del broken["hook-16"]
    broken["resp-43"]["tests"] = ["tests/test_crd_2_2.py::test_that_does_not_exist"]
    broken["sec-2"].pop("note")
    broken["dev-1"]["status"] = "done"
    assert conformance.problems(statements, broken) == [
        "hook-16: not in status.yaml",
        "dev-1: status 'done' is not one of met, partly, not-applicable, not-yet",
        "resp-43: tests/test_crd_2_2.py::test_that_does_not_exist: no such test",
        "sec-2: partly needs a note saying what is missing or why",
    ]
