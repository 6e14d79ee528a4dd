"""Every request in fhir_examples/ through the real app in demo mode (with the example plan directory, as the
quick start serves them): exactly its expected cards and actions."""

import pytest
import yaml
from hypothesis import given

from cds.config import EXAMPLE_PLAN_DIRECTORY
from cds.fhir import model_class, validation_problems
from cds.render.configuration import TOPIC_SYSTEM_TEMP
from cds.render.coverage import COVERAGE_INFORMATION
from hooks import HOOKS
from tests.crd_profile import has_empty_element, problems_2_2, problems_dual, required_order_elements
from tests.helpers import EXAMPLES, load
from tests.test_fuzz import FUZZ, mutated, post

EXPECTED = yaml.safe_load((EXAMPLES / "expected.yaml").read_text())
SERVICE = {hook.name: hook.service_id for hook in HOOKS}
CRD_2_0_1_PROFILED = ("DeviceRequest", "ServiceRequest")  # the order profiles in tests/data/ig-crd-2.0.1
CODED = ("covered", "pa-needed", "doc-needed", "doc-purpose", "info-needed")


@pytest.fixture
def examples_client(make_app):
    """Demo mode as the quick start runs it: its default plan directory is the example one."""
    app = make_app(demo=True)
    assert app.config["CDS_SETTINGS"].plan_directory == EXAMPLE_PLAN_DIRECTORY
    return app.test_client()


def test_every_example_has_an_expectation_and_a_readme_row():
    files = {path.name for path in EXAMPLES.glob("*.json")}
    assert files == set(EXPECTED)
    assert len(files) >= 12
    readme = (EXAMPLES / "README.md").read_text()
    for name in files:
        assert f"[{name}]({name})" in readme, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_yields_exactly_its_expected_cards_and_actions(examples_client, name):
    body, expected = load(name), EXPECTED[name]
    response = examples_client.post(f"/cds-services/{SERVICE[body['hook']]}", json=body)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    # No null or empty member anywhere, `cards: []` being the one exception.
    assert not any(has_empty_element(item) for item in [*answer["cards"], *answer.get("systemActions", [])])
    assert answer.get("systemActions", True)

    cards = answer["cards"]
    assert len(cards) == len(expected["cards"])
    for card, want in zip(cards, expected["cards"], strict=True):
        assert card["extension"]["davinci-crd.associated-resource"] == [{"reference": want["order"]}]
        assert card["summary"] == want["summary"] and len(card["summary"]) < 140
        assert card["indicator"] == want.get("indicator", "warning")
        assert card["source"]["label"] == want["source"]
        topic = want.get("topic", "off-guideline")
        assert card["source"]["topic"] == {"system": expected.get("topic_system", TOPIC_SYSTEM_TEMP), "code": topic,
                                           "display": {"off-guideline": "Off Guideline",
                                                       "coverage-info": "Coverage Information"}[topic]}
        assert ("not by a billing code" in card["detail"]) == (want["matched"] == "text")
        for text in want.get("detail_has", []):
            assert text in card["detail"], text
        for text in want.get("detail_lacks", []):
            assert text not in card["detail"], text
        if card["indicator"] == "info":  # may be covered: nothing to remove, nothing to override
            assert "suggestions" not in card and "overrideReasons" not in card
        else:
            assert card["suggestions"][0]["actions"] == [
                {"type": "delete", "description": card["suggestions"][0]["actions"][0]["description"],
                 "resourceId": want["order"]}]

    actions = answer.get("systemActions", [])
    assert [(a["resource"]["resourceType"] + "/" + a["resource"]["id"]) for a in actions] == \
        [want["order"] for want in expected["actions"]]
    orders = sent_resources(body)
    for action, want in zip(actions, expected["actions"], strict=True):
        assert action["type"] == "update" and action["description"]
        extension = action["resource"]["extension"][-1]
        assert extension["url"] == COVERAGE_INFORMATION
        parts = {p["url"]: p for p in extension["extension"]}
        assert {url: p["valueCode"] for url, p in parts.items() if "valueCode" in p} == \
            {url: want[url] for url in CODED if url in want}
        assert parts["coverage"]["valueReference"]["reference"] == want["coverage"]
        for text in want.get("reason_has", []):
            assert text in parts["reason"]["valueCodeableConcept"]["text"], text
        # Valid under CRD 2.0.1 and 2.2 at once, or, for a client that asked for 2.2, under 2.2.
        asked_2_2 = (body.get("extension") or {}).get("davinci-crd.requestedVersion") == "2.2"
        assert (problems_2_2(extension) if asked_2_2 else problems_dual(extension)) == []
        original = orders[want["order"]]
        assert {k: v for k, v in action["resource"].items() if k != "extension"} == \
            {k: v for k, v in original.items() if k != "extension"}
        if original["resourceType"] in CRD_2_0_1_PROFILED:
            for element in required_order_elements(original["resourceType"]):
                assert any(key.startswith(element.removesuffix("[x]")) for key in action["resource"]), element
        else:  # an Appointment: at least valid FHIR R4, coverage information included
            assert validation_problems(model_class(original["resourceType"]), action["resource"]) == ()


def sent_resources(body: dict) -> dict[str, dict]:
    """Every resource with an id the request carries, by `Type/id`: in its context (draft orders, appointments,
    fulfillment Tasks) and its prefetch."""
    found: dict[str, dict] = {}

    def walk(value):
        if isinstance(value, dict):
            if isinstance(value.get("resourceType"), str) and isinstance(value.get("id"), str):
                found.setdefault(f"{value['resourceType']}/{value['id']}", value)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk([body["context"], body.get("prefetch")])
    return found


MATCHING = [load(name) for name in ("text-only-anodyne.json", "device-code-reference.json",
                                    "order-select-selection-only.json", "sandbox-style-no-coverage.json")]


@FUZZ
@given(body=mutated(MATCHING))
def test_mutated_matching_requests_never_5xx(client, body):
    hook = body.get("hook")
    service = SERVICE.get(hook, "order-sign-crd") if isinstance(hook, str) else "order-sign-crd"
    assert post(client, f"/cds-services/{service}", body).status_code in (200, 400)


MEMBER_DEPENDENT = [load(name) for name in ("il-child-cerebral-palsy-hmo.json", "il-child-funding-unknown.json",
                                            "medicare-diabetic-polyneuropathy.json")]


@FUZZ
@given(body=mutated(MEMBER_DEPENDENT))
def test_mutated_member_data_never_5xx(examples_client, body):
    assert post(examples_client, "/cds-services/order-sign-crd", body).status_code in (200, 400)


NEW_HOOKS = [load(name) for name in ("order-dispatch-e0221-supplier.json", "appointment-book-97026-clinic.json",
                                     "encounter-start-il-child-mandate.json", "encounter-discharge-e0221-home.json")]


@FUZZ
@given(body=mutated(NEW_HOOKS))
def test_mutated_dispatch_booking_and_encounter_requests_never_5xx(examples_client, body):
    """Orders named by reference that cannot be had (no fhirServer here) are a 412; nothing is ever a 5xx."""
    hook = body.get("hook")
    service = SERVICE.get(hook, "order-dispatch-crd") if isinstance(hook, str) else "order-dispatch-crd"
    assert post(examples_client, f"/cds-services/{service}", body).status_code in (200, 400, 412)
