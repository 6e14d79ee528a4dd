"""The checks the Inferno Da Vinci CRD server test kit (v0.13.0) makes of a CRD server, as tests of this one, for
answers of CRD 2.0.1 (no davinci-crd.requestedVersion, or 2.0/2.1: validated against the 2.0.1 profile, as
Inferno does) and of CRD 2.2 (validated against the 2.2 slices and invariants): discovery shape, every call 200 with
valid JSON, cards' required and optional fields, coverage-information valid against the profile with the crd-ci
invariants, the echoed order keeping what its profile requires, and distinct assertion ids across coverages."""

from __future__ import annotations

import copy
import re

import pytest

from hooks import HOOKS
from tests.crd_profile import has_empty_element, problems_2_0_1, problems_2_2, required_order_elements
from tests.helpers import EXAMPLES, load
from tests.test_examples import sent_resources

COVERAGE_INFORMATION = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
TOPIC_SYSTEMS = {"2.0.1": "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp",
                 "2.2": "http://terminology.hl7.org/CodeSystem/cdshooks-card-type"}
CARD_TYPES = {"coverage-info", "unsolicited-determ", "claim", "insurance", "limits", "network", "appropriate-use",
              "cost", "therapy-alternatives-opt", "therapy-alternatives-req", "clinical-reminder",
              "duplicate-therapy", "contraindication", "guideline", "off-guideline"}
SERVICE = {hook.name: hook.service_id for hook in HOOKS}
PROFILED = ("DeviceRequest", "ServiceRequest")  # the order profiles in tests/data/ig-crd-2.0.1
ORDER_TYPES = {"DeviceRequest", "MedicationRequest", "ServiceRequest", "NutritionOrder", "VisionPrescription",
               "CommunicationRequest", "Appointment"}
# Every request the project keeps: the CRD generator's, Inferno's and the guide's, and each worked example.
REQUESTS = ["crd-request-generator/order-sign-devicerequest-e0221.json",
            "crd-request-generator/order-select-devicerequest-e0221.json",
            "crd-request-generator/order-sign-servicerequest-97026.json",
            "inferno-order-sign.json", "inferno-order-select.json", "crd-order-sign-servicerequests.json",
            "crd-2.1-order-sign.json", *sorted(path.name for path in EXAMPLES.glob("*.json"))]
NOT_CHECKED = "without checking the member's benefits"  # what a card decided without a Coverage says
# requestedVersion sent -> the CRD version whose profile the answer must satisfy
VERSIONS = {None: "2.0.1", "2.0": "2.0.1", "2.1": "2.0.1", "2.2": "2.2"}


def test_discovery_has_the_shape_inferno_checks(client):
    response = client.get("/cds-services")
    assert response.status_code == 200 and response.is_json  # 1.02
    services = response.get_json()["services"]
    assert isinstance(services, list) and services
    option_sets = []
    for service in services:  # 1.03
        assert all(isinstance(service[field], str) and service[field] for field in ("hook", "description", "id"))
        options = service["extension"]["davinci-crd.configuration-options"]
        for option in options:  # dev-4: the four mandatory elements and a default
            assert set(option) == {"code", "type", "name", "description", "default"}
            assert option["type"] in ("boolean", "integer")
            assert isinstance(option["default"], bool if option["type"] == "boolean" else int)
            assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", option["code"])  # dev-7: a usable JSON property name
        booleans = {o["code"] for o in options if o["type"] == "boolean"}
        assert booleans <= CARD_TYPES  # dev-7: switches are CRD card types
        for field in ("code", "name", "description"):  # dev-8
            values = [option[field] for option in options]
            assert len(values) == len(set(values)), field
        option_sets.append([{k: v for k, v in option.items() if k != "default"} for option in options])
    # dev-9: the same codes, names and descriptions (secondary hooks may switch them off by default)
    assert all(options == option_sets[0] for options in option_sets)


def coverage_information_expected(request: dict, answer: dict, version: str) -> bool:
    """Whether the answer must carry coverage-information: asked for, and a Coverage to point to (the member's,
    or from 2.2 on the one an order's insurance names)."""
    if request["extension"].get("davinci-crd.configuration", {}).get("coverage-info") is False:
        return False
    decided_under_coverage = any(NOT_CHECKED not in card.get("detail", "") for card in answer["cards"])
    insured = any("insurance" in order for order in sent_resources(request).values())
    return decided_under_coverage or (version == "2.2" and insured)


def check_card(card: dict, version: str) -> None:
    """.05 and .06: a card's required fields, and its optional ones when present."""
    assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140
    assert card["indicator"] in ("info", "warning", "critical")
    assert isinstance(card["source"]["label"], str) and card["source"]["label"]
    topic = card["source"]["topic"]
    assert topic["system"] == TOPIC_SYSTEMS[version] and topic["code"] in CARD_TYPES
    if card.get("suggestions"):
        assert card["selectionBehavior"] in ("at-most-one", "any")
        for suggestion in card["suggestions"]:
            assert suggestion["label"] and suggestion["uuid"] and suggestion["actions"]
            for action in suggestion["actions"]:
                check_action(action)
    for link in card.get("links", []):
        assert link["label"] and re.match(r"https?://", link["url"]) and link["type"] in ("absolute", "smart")
        assert "appContext" not in link or link["type"] == "smart"
    for reason in card.get("overrideReasons", []):
        assert reason["code"] and reason["system"] and reason["display"]


def check_action(action: dict) -> None:
    assert action["type"] in ("create", "update", "delete") and isinstance(action["description"], str)
    if action["type"] == "delete":
        assert re.fullmatch(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}", action["resourceId"])
    else:
        assert isinstance(action["resource"], dict) and action["resource"]["resourceType"]


def check_coverage_information(action: dict, request: dict, version: str) -> list[dict]:
    """.10 and .11: an update of one of the call's orders carrying the extension, valid against the profile."""
    assert action["type"] == "update"
    resource = action["resource"]
    assert resource["resourceType"] in ORDER_TYPES
    original = sent_resources(request)[f"{resource['resourceType']}/{resource['id']}"]  # the order or appointment
    for element in required_order_elements(resource["resourceType"]) if resource["resourceType"] in PROFILED else ():
        assert (element in resource) == (element in original), element  # what the profile requires is kept
    extensions = [e for e in resource.get("extension", []) if e["url"] == COVERAGE_INFORMATION]
    assert extensions
    for extension in extensions:
        problems = problems_2_0_1(extension) if version == "2.0.1" else problems_2_2(extension)
        assert problems == [], problems
    return extensions


def distinct_ids_across_coverages(extensions: list[dict]) -> None:
    """.11: the same coverage, the same assertion id; different coverages, distinct ones."""
    by_coverage: dict[str, set[str]] = {}
    for extension in extensions:
        parts = {p["url"]: p for p in extension["extension"]}
        by_coverage.setdefault(parts["coverage"]["valueReference"]["reference"], set()).add(
            parts["coverage-assertion-id"]["valueString"])
    ids = [assertion for found in by_coverage.values() for assertion in found]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("requested", list(VERSIONS), ids=lambda v: f"requested-{v}")
@pytest.mark.parametrize("name", REQUESTS)
def test_answers_pass_the_checks_inferno_makes(client, name, requested):
    request = copy.deepcopy(load(name))
    request.setdefault("extension", {}).pop("davinci-crd.requestedVersion", None)
    if requested:
        request["extension"]["davinci-crd.requestedVersion"] = requested
    version = VERSIONS[requested]
    response = client.post(f"/cds-services/{SERVICE[request['hook']]}", json=request)
    assert response.status_code == 200 and response.is_json, response.get_json()  # .01
    answer = response.get_json()
    assert not any(has_empty_element(item) for item in [*answer["cards"], *answer.get("systemActions", [])])
    assert isinstance(answer["cards"], list)  # .05
    for card in answer["cards"]:
        check_card(card, version)
        assert COVERAGE_INFORMATION not in str(card)  # resp-25: coverage-information never in a card
    if request["hook"] == "order-sign" and answer["cards"] and coverage_information_expected(request, answer, version):
        assert answer.get("systemActions")  # .05: present on order-sign
    extensions = []
    for action in answer.get("systemActions", []):
        check_action(action)
        extensions += check_coverage_information(action, request, version)
    distinct_ids_across_coverages(extensions)
