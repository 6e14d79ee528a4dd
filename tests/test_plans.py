"""The plan directory file: loaded once, checked, every problem named where it is."""

import json
from datetime import date

import pytest

from cds.config import EXAMPLE_PLAN_DIRECTORY, Settings, SettingsError
from cds.member.plans import PlanDirectoryError, load_plan_directory
from cds.pipeline import load_configured_plans
from tests.helpers import DATA

IDS = frozenset({"urn:oid:2.16.840.1.113883.6.300|70670"})


def write(tmp_path, text, name="plans.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_directory_loads_and_answers_lookups():
    directory = load_plan_directory(EXAMPLE_PLAN_DIRECTORY)
    match = directory.lookup(IDS, "B41725", "anything")
    assert match.plan_listed and match.payer_name == "Blue Cross and Blue Shield of Illinois"
    assert (match.facts.funding, match.facts.situs_state, match.facts.plan_start) == (
        "fully-insured", "IL", date(2025, 1, 1))
    assert directory.lookup(frozenset({"nobody"}), "B41725", None) is None
    assert not directory.lookup(IDS, None, None).plan_listed


def test_json_directory_loads(tmp_path):
    path = write(tmp_path, json.dumps({"payers": [{"identifiers": ["P1"], "plans": [
        {"plan": "GOLD", "product": "HMO", "situs_state": "Texas", "plan_start": "2025-01-01"}]}]}), "plans.json")
    match = load_plan_directory(path).lookup(frozenset({"P1"}), None, "GOLD")
    assert (match.facts.product, match.facts.situs_state, match.facts.plan_start) == ("HMO", "TX", date(2025, 1, 1))


@pytest.mark.parametrize(("text", "message"), [
    ("payers:\n  - name: X\n", "payers[0].identifiers: Field required"),
    ("payers:\n  - identifiers: []\n", "payers[0].identifiers: List should have at least 1 item"),
    ("payers:\n  - identifiers: [A]\n    funding: partly\n", "payers[0].funding"),
    ("payers:\n  - identifiers: [A]\n    situs_state: Narnia\n", "not a US state"),
    ("payers:\n  - identifiers: [A]\n    plans:\n      - group: 0012345\n", "quote identifiers"),
    ("payers:\n  - identifiers: [A]\n    plans:\n      - funding: self-funded\n", "needs a group or a plan"),
    ("payers:\n  - identifiers: [A]\n    plans:\n      - {group: G}\n      - {group: G}\n", "listed twice"),
    ("payers:\n  - identifiers: [A]\n  - identifiers: [B, A]\n", "'A' also names payers.0"),
    ("payers:\n  - identifiers: [A]\n    color: blue\n", "payers[0].color: Extra inputs are not permitted"),
    ("payers: [\n", "not valid YAML or JSON"),
    ("- just a list\n", "Input should be a valid dictionary"),
])
def test_bad_directory_is_refused_saying_where(tmp_path, text, message):
    with pytest.raises(PlanDirectoryError) as raised:
        load_plan_directory(write(tmp_path, text))
    assert message in str(raised.value)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(PlanDirectoryError, match="cannot be read"):
        load_plan_directory(tmp_path / "nope.yaml")


def test_bad_directory_stops_start_up_naming_the_variable(tmp_path):
    path = write(tmp_path, "payers: [\n")
    with pytest.raises(SettingsError, match="CDS_PLAN_DIRECTORY"):
        load_configured_plans(Settings.from_env({"CDS_PLAN_DIRECTORY": str(path)}))


def test_the_documented_example_is_a_valid_directory(tmp_path):
    docs = (DATA.parent.parent / "docs" / "policies.md").read_text()
    example = docs.split("## Plan directory", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    directory = load_plan_directory(write(tmp_path, example))
    match = directory.lookup(IDS, "B41725", "HMO-SILVER")
    assert (match.facts.product, match.facts.situs_state, match.facts.plan_start) == ("HMO", "IL", date(2025, 7, 1))
