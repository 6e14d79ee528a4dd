"""Policy files: validated at start-up with the file and field named; a new policy is only a new file."""

import copy
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from cds.config import EXAMPLE_PLAN_DIRECTORY, Settings, SettingsError
from cds.pipeline import check_configured_files
from cds.policy import PolicyError, load_policies
from cds.policy.loader import BUILT_IN
from cds.web.app import create_app
from tests import tokens
from tests.helpers import DATA, load

TEST_POLICIES = DATA / "policies"
DME = yaml.safe_load((BUILT_IN / "DME101.045.yaml").read_text())


def write(directory: Path, name: str, data) -> Path:
    path = directory / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def broken(**changes):
    data = copy.deepcopy(DME)
    data["id"] = "TST901.001"
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        target = data
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return data


def test_built_in_policy_loads_with_its_codes_and_references():
    (policy,) = load_policies()
    assert policy.id == "DME101.045" and policy.spec.effective.isoformat() == "2025-10-01"
    assert {c.code for c in policy.spec.codes} == {"97026", "E0221", "A4639"}
    assert "is considered not medically necessary" in policy.spec.coverage_statement
    assert policy.link == "https://medicalpolicy.hcsc.com/home.html?corpEntCd=HCSC"
    assert str(policy.spec.references[0].url) == "https://www.cms.gov/medicare-coverage-database/view/ncd.aspx?NCDId=315"


@pytest.mark.parametrize(("changes", "field"), [
    ({"coverage_statement": None}, "coverage_statement: Field required"),
    ({"effective": "October 2025"}, "effective"),
    ({"decision.covered": "maybe"}, "decision.covered"),
    ({"codes.0.system": "ICD-10"}, "codes[0].system"),
    ({"codes.1.code": "E 0221"}, "codes[1].code"),
    ({"excluded_codes.0.codes": ["E0249-E0200"]}, "excluded_codes[0].codes"),
    ({"excluded_codes.0.descriptors": {"E0250": "Hospital bed"}}, "descriptors name codes not in codes: E0250"),
    ({"excluded_codes.0.descriptors": {"E0215": " "}}, "a short descriptor of at least 3 characters"),
    ({"link": "not a url"}, "link"),
    ({"applies_to": ["Patient"]}, "applies_to[0]"),
    ({"text.terms": []}, "text.terms"),
    ({"summary": "a misspelt or unknown field"}, "summary: Extra inputs are not permitted"),
    ({"codes": [DME["codes"][0], DME["codes"][0]]}, "codes listed more than once: 97026"),
])
def test_invalid_policy_file_names_file_and_field(tmp_path, changes, field):
    path = write(tmp_path, "bad.yaml", broken(**changes))
    with pytest.raises(PolicyError) as error:
        load_policies([tmp_path])
    assert str(path) in str(error.value) and field in str(error.value)


@pytest.mark.parametrize(("content", "message"), [
    ("id: [unclosed", "not valid YAML"),
    ("- just\n- a list\n", "must hold a mapping"),
])
def test_unreadable_policy_file_is_named(tmp_path, content, message):
    path = write(tmp_path, "bad.yml", content)
    with pytest.raises(PolicyError, match=message) as error:
        load_policies([tmp_path])
    assert str(path) in str(error.value)


def test_duplicate_policy_id_names_both_files(tmp_path):
    path = write(tmp_path, "copy.yaml", DME)
    with pytest.raises(PolicyError, match="already defined") as error:
        load_policies([tmp_path])
    assert str(path) in str(error.value) and "DME101.045.yaml" in str(error.value)


def test_missing_policy_directory_is_named(tmp_path):
    with pytest.raises(PolicyError, match="does not exist"):
        load_policies([tmp_path / "nowhere"])


def test_bad_policy_stops_app_start_up(tmp_path):
    write(tmp_path, "bad.yaml", broken(**{"decision.reason": None}))
    with pytest.raises(SettingsError, match=r"CDS_POLICY_DIRS: .*decision\.reason"):
        create_app(Settings(policy_dirs=(str(tmp_path),)))


def test_bad_policy_stops_cds_serve_naming_file_and_field(tmp_path):
    path = write(tmp_path, "bad.yaml", broken(**{"codes.0.name": None}))
    cds = str(Path(sys.executable).with_name("cds"))
    result = subprocess.run([cds, "serve", "--port", "1"], capture_output=True, text=True, timeout=20,
                            env={"CDS_POLICY_DIRS": str(tmp_path), "PATH": ""})
    assert result.returncode != 0
    assert str(path) in result.stderr and "codes[0].name" in result.stderr


def test_cds_serve_checks_each_configured_file_as_a_worker_loads_it(tmp_path):
    """What `cds serve` runs once before forking: the clients file (its JWK Set URLs judged as in the mode the
    settings say), the policies and the plan directory; a file that is not usable is named with its variable."""
    developer = {"iss": "https://dev-ehr.test", "jwks_url": "http://127.0.0.1:9/jwks.json"}  # http: demo mode only
    settings = Settings(demo=True, clients_file=str(tokens.write_registry(tmp_path, developer)),
                        plan_directory=str(EXAMPLE_PLAN_DIRECTORY)).resolved()
    check_configured_files(settings)
    with pytest.raises(SettingsError, match=r"CDS_CLIENTS_FILE .*jwks_url http://127\.0\.0\.1:9/jwks\.json"):
        check_configured_files(replace(settings, demo=False))
    (tmp_path / "policies").mkdir()
    write(tmp_path / "policies", "bad.yaml", broken(**{"decision.reason": None}))
    with pytest.raises(SettingsError, match=r"^CDS_POLICY_DIRS: policy file not usable: .*decision\.reason"):
        check_configured_files(replace(settings, policy_dirs=(str(tmp_path / "policies"),)))
    plans = write(tmp_path, "plans.yaml", "plans: [1, 2\n")
    with pytest.raises(SettingsError, match=rf"^CDS_PLAN_DIRECTORY='{plans}': "):
        check_configured_files(replace(settings, plan_directory=str(plans)))


def test_policy_dirs_and_url_template_settings(tmp_path):
    settings = Settings.from_env({"CDS_POLICY_DIRS": f"{TEST_POLICIES}, {tmp_path}",
                                  "CDS_POLICY_URL_TEMPLATE": "https://medicalpolicy.bcbsil.com/p/{id}_{effective}"})
    assert settings.policy_dirs == (str(TEST_POLICIES), str(tmp_path))
    policies = load_policies(settings.policy_dirs[:1], settings.policy_url_template)
    assert [p.id for p in policies] == ["DME101.045", "TST900.001"]
    assert policies[0].link == "https://medicalpolicy.bcbsil.com/p/DME101.045_2025-10-01"


def test_the_url_template_setting_gives_the_cards_their_policy_link(make_app):
    client = make_app(policy_url_template="https://medicalpolicy.example.org/p/{id}").test_client()
    [card] = client.post("/cds-services/order-sign-crd", json=load("e0221-home-device.json")).get_json()["cards"]
    assert card["source"]["url"] == "https://medicalpolicy.example.org/p/DME101.045"


@pytest.mark.parametrize("template", ["https://x.example/{category}", "https://x.example/{", "/relative/{id}"])
def test_bad_url_template_is_refused(template):
    with pytest.raises(SettingsError, match="CDS_POLICY_URL_TEMPLATE"):
        Settings.from_env({"CDS_POLICY_URL_TEMPLATE": template})


def test_a_second_policy_needs_only_a_new_file(make_app):
    client = make_app(policy_dirs=(str(TEST_POLICIES),)).test_client()
    body = load("two-orders-one-matches.json")
    laser = {"resourceType": "ServiceRequest", "id": "sr-laser", "status": "draft", "intent": "original-order",
             "code": {"coding": [{"system": "https://bluebutton.cms.gov/resources/codesystem/hcpcs", "code": "S8948"}]},
             "subject": {"reference": "Patient/pat-tx-4821"}, "authoredOn": "2026-11-26",
             "requester": {"reference": "PractitionerRole/prr-neuro-207"}}
    body["context"]["draftOrders"]["entry"].append({"resource": laser})
    answer = client.post("/cds-services/order-sign-crd", json=body).get_json()
    summaries = sorted(card["summary"] for card in answer["cards"])
    assert summaries == [
        "Infrared heating pad system (E0221) not covered: not medically necessary, policy DME101.045",
        "Low-level laser therapy (S8948) not covered: investigational, policy TST900.001",
    ]
    assert sorted(a["resource"]["id"] for a in answer["systemActions"]) == ["dr-e0221-4821b", "sr-laser"]
    # Without the setting the laser order is not any policy's business.
    plain = make_app().test_client().post("/cds-services/order-sign-crd", json=body).get_json()
    assert len(plain["cards"]) == 1
