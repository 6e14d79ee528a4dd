"""State mandate files and their settings: validated at start-up like policies, referenced by id from any policy,
with the child age limit and the qualifying diagnoses configurable; and the answers they lead to over HTTP."""

import copy

import pytest
import yaml

from cds.config import EXAMPLE_PLAN_DIRECTORY, Settings, SettingsError
from cds.pipeline import load_configured_policies
from cds.policy import PolicyError, load_policies
from cds.policy.loader import BUILT_IN, MANDATES
from cds.render.coverage import COVERAGE_INFORMATION
from cds.web.app import create_app
from tests.crd_profile import problems_dual
from tests.helpers import load

IL = yaml.safe_load((BUILT_IN / MANDATES / "IL-PA-103-0458.yaml").read_text())
DME = yaml.safe_load((BUILT_IN / "DME101.045.yaml").read_text())
PLANS = str(EXAMPLE_PLAN_DIRECTORY)


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def mandate(**changes):
    data = {**copy.deepcopy(IL), "id": "IL-TEST-1"}
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return data


def test_the_built_in_policy_references_the_illinois_mandate():
    (policy,) = load_policies()
    (il,) = policy.mandates
    assert il.id == "IL-PA-103-0458" and il.spec.jurisdiction == "IL" and il.child_age_limit == 19
    assert il.spec.citation == "Illinois Public Act 103-0458 (215 ILCS 5/356z.61 as cited by HCSC)"
    assert il.diagnoses.names == ("low tone neuromuscular impairment", "neurological impairment",
                                  "cognitive impairment", "genetic syndrome with cognitive or neuromuscular impairment")
    assert len(policy.indications.names) == 4


@pytest.mark.parametrize(("changes", "field"), [
    ({"qualifying_diagnoses": [{"name": "palsy", "icd10cm": ["G8"]}]}, "qualifying_diagnoses[0].icd10cm"),
    ({"qualifying_diagnoses": [{"name": "palsy", "icd10cm": ["G80.1234X"]}]}, "qualifying_diagnoses[0].icd10cm"),
    ({"lines_of_business": ["medicare"]}, "lines_of_business[0]"),
    ({"jurisdiction": "Atlantis"}, "jurisdiction: Value error, 'Atlantis' is not a US state or territory"),
    ({"citation": None}, "citation: Field required"),
    ({"products": []}, "products"),
    ({"diagnoses_label": None}, "diagnoses_label must say in words"),
    ({"age_limit": 18}, "age_limit: Extra inputs are not permitted"),
    ({"id": "Illinois mandate"}, "id"),
])
def test_invalid_mandate_file_names_file_and_field(tmp_path, changes, field):
    path = write(tmp_path / MANDATES / "bad.yaml", mandate(**changes))
    with pytest.raises(PolicyError) as error:
        load_policies([tmp_path])
    assert str(path) in str(error.value) and field in str(error.value)


def test_duplicate_mandate_id_names_both_files(tmp_path):
    path = write(tmp_path / MANDATES / "copy.yaml", IL)
    with pytest.raises(PolicyError, match="mandate IL-PA-103-0458 is already defined") as error:
        load_policies([tmp_path])
    assert str(path) in str(error.value)


def test_a_policy_naming_a_mandate_no_file_defines_stops_start_up(tmp_path):
    path = write(tmp_path / "policy.yaml", {**DME, "id": "TST902.001", "mandates": ["TX-NOPE-1"]})
    with pytest.raises(SettingsError, match=r"CDS_POLICY_DIRS: .*mandates: no mandate file defines TX-NOPE-1") as error:
        create_app(Settings(policy_dirs=(str(tmp_path),)))
    assert str(path) in str(error.value)


def test_any_policy_may_reference_a_mandate_and_each_directory_may_add_mandates(tmp_path):
    write(tmp_path / MANDATES / "tx.yaml", mandate(id="TX-TEST-1", jurisdiction="Texas", children=False,
                                                   qualifying_diagnoses=[]))
    write(tmp_path / "policy.yaml", {**DME, "id": "TST902.001", "mandates": ["IL-PA-103-0458", "TX-TEST-1"]})
    policies = load_policies([tmp_path])
    assert [m.id for m in policies[1].mandates] == ["IL-PA-103-0458", "TX-TEST-1"]
    texas = policies[1].mandates[1]
    assert (texas.spec.jurisdiction, texas.child_age_limit, texas.diagnoses) == ("TX", None, None)


# ------------------------------------------------------------------------------------------------- settings

def test_mandate_settings_from_the_environment(tmp_path):
    overrides = write(tmp_path / "diagnoses.yaml", {"IL-PA-103-0458": [{"name": "autism", "icd10cm": ["F84.0"]}]})
    settings = Settings.from_env({"CDS_MANDATE_CHILD_AGE_LIMIT": "18", "CDS_MANDATE_DIAGNOSES_FILE": str(overrides)})
    assert (settings.mandate_child_age_limit, settings.mandate_diagnoses_file) == (18, str(overrides))
    assert Settings.from_env({}).mandate_child_age_limit == 19


@pytest.mark.parametrize("value", ["0", "27", "nineteen"])
def test_child_age_limit_out_of_range_is_refused(value):
    with pytest.raises(SettingsError, match="CDS_MANDATE_CHILD_AGE_LIMIT"):
        Settings.from_env({"CDS_MANDATE_CHILD_AGE_LIMIT": value})


@pytest.mark.parametrize(("content", "message"), [
    ({"IL-PA-103-0458": [{"name": "palsy", "icd10cm": ["G8"]}]}, "IL-PA-103-0458[0].icd10cm: Value error, 'G8' is not"),
    ({"IL-PA-103-0458": []}, "IL-PA-103-0458: List should have at least 1 item"),
    (["G80"], "Input should be a valid dictionary"),
    ("key: [unclosed", "not valid YAML"),
])
def test_unusable_diagnoses_file_is_refused_at_start_up(tmp_path, content, message):
    path = write(tmp_path / "diagnoses.yaml", content)
    with pytest.raises(SettingsError, match="CDS_MANDATE_DIAGNOSES_FILE") as error:
        load_configured_policies(Settings.from_env({"CDS_MANDATE_DIAGNOSES_FILE": str(path)}))
    assert str(path) in str(error.value) and message in str(error.value)
    with pytest.raises(SettingsError, match="cannot be read"):
        load_configured_policies(Settings.from_env({"CDS_MANDATE_DIAGNOSES_FILE": str(tmp_path / "missing.yaml")}))


def test_diagnoses_file_for_a_mandate_no_file_defines_stops_start_up(tmp_path):
    path = write(tmp_path / "diagnoses.yaml", {"IL-PA-999": [{"name": "palsy", "icd10cm": ["G80"]}]})
    with pytest.raises(SettingsError, match=r"CDS_MANDATE_DIAGNOSES_FILE: .*no mandate file defines IL-PA-999"):
        create_app(Settings(mandate_diagnoses_file=str(path)))


# ------------------------------------------------------------------------------------------ over HTTP

def post(client, body):
    service = "order-select-crd" if body["hook"] == "order-select" else "order-sign-crd"
    response = client.post(f"/cds-services/{service}", json=body)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    (card,) = answer["cards"]
    coded = {}
    for action in answer.get("systemActions", []):
        (extension,) = [e for e in action["resource"]["extension"] if e["url"] == COVERAGE_INFORMATION]
        assert problems_dual(extension) == []
        coded = {p["url"]: p["valueCode"] for p in extension["extension"] if "valueCode" in p}
    return card, coded


def test_the_diagnoses_file_replaces_the_qualifying_groups(make_app, tmp_path):
    path = write(tmp_path / "diagnoses.yaml", {"IL-PA-103-0458": [{"name": "autism spectrum disorder",
                                                                    "icd10cm": ["F84.0"]}]})
    client = make_app(plan_directory=PLANS, mandate_diagnoses_file=str(path)).test_client()
    body = load("il-child-cerebral-palsy-hmo.json")
    card, coded = post(client, body)
    assert coded == {"covered": "conditional", "pa-needed": "conditional", "info-needed": "OTH"}
    assert "- the plan's diagnosis screen found no qualifying diagnosis among the patient's recorded diagnoses " \
           "(G80.1)" in card["detail"]
    body["context"]["draftOrders"]["entry"][0]["resource"]["reasonCode"] = [
        {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F84.0", "display": "Autistic disorder"}]}]
    card, coded = post(client, body)
    assert coded["covered"] == "covered"
    assert "F84.0 Autistic disorder (the order's reason) is a qualifying diagnosis (autism spectrum disorder, on the " \
           "plan's diagnosis screen)" in card["detail"]


def test_the_child_age_limit_setting_decides_over_http(make_app):
    client = make_app(plan_directory=PLANS, mandate_child_age_limit=9).test_client()
    card, coded = post(client, load("il-child-cerebral-palsy-hmo.json"))
    assert coded == {"covered": "conditional", "pa-needed": "conditional", "info-needed": "OTH"}
    assert "- the patient is 9 on the order's date: the Act, as the policy quotes it, gives no age for \"children\", " \
           "and the plan's rule counts patients under 9 as children: verify with the payer whether the mandate " \
           "reaches a patient aged 9" in card["detail"]


def test_order_select_may_cover_without_asking_for_documentation(make_app):
    body = load("il-child-cerebral-palsy-hmo.json")
    body["hook"] = "order-select"
    body["context"]["selections"] = ["DeviceRequest/dr-e0221-5102"]
    card, coded = post(make_app(plan_directory=PLANS).test_client(), body)
    assert card["indicator"] == "info" and "Plan requirement (the plan's utilization management, as this mandate " \
        "file states it): Prior authorization, with clinical documentation" in card["detail"]
    assert coded == {"covered": "covered", "pa-needed": "auth-needed"}  # no doc-needed on a secondary hook (§hook-19)


def test_without_the_plan_directory_the_illinois_child_is_conditional_on_every_plan_fact(client):
    card, coded = post(client, load("il-child-cerebral-palsy-hmo.json"))
    assert coded == {"covered": "conditional", "pa-needed": "conditional", "info-needed": "OTH"}
    assert card["indicator"] == "warning"
    assert "**Not known, and how to resolve it:**\n- the plan's situs state (whose insurance law governs the plan) " \
           "is not known (no plan directory is configured): verify with the payer" in card["detail"]
    assert "- plan funding (fully insured or self-funded) is not known (no plan directory is configured): verify " \
           "the member's plan with the payer" in card["detail"]


def test_diagnoses_file_for_a_mandate_without_a_diagnoses_label_stops_start_up(tmp_path):
    write(tmp_path / MANDATES / "tx.yaml", mandate(id="TX-TEST-1", jurisdiction="TX", qualifying_diagnoses=[],
                                                   diagnoses_label=None))
    path = write(tmp_path / "diagnoses.yaml", {"TX-TEST-1": [{"name": "palsy", "icd10cm": ["G80"]}]})
    with pytest.raises(PolicyError, match="TX-TEST-1 have no diagnoses_label"):
        load_policies([tmp_path], diagnoses_file=path)
