"""Every request in fhir_examples/ through the real app over HTTP: exactly its expected cards and actions."""

import pytest
import yaml
from hypothesis import given

from cds.crd import COVERAGE_INFORMATION, TOPIC_SYSTEM_TEMP
from tests.conftest import EXAMPLES, load
from tests.crd_profile import has_empty_element, problems_dual, required_order_elements
from tests.test_fuzz import FUZZ, mutated, post

EXPECTED = yaml.safe_load((EXAMPLES / "expected.yaml").read_text())
SERVICE = {"order-sign": "order-sign-crd", "order-select": "order-select-crd"}


def test_every_example_has_an_expectation_and_a_readme_row():
    files = {path.name for path in EXAMPLES.glob("*.json")}
    assert files == set(EXPECTED)
    assert len(files) >= 12
    readme = (EXAMPLES / "README.md").read_text()
    for name in files:
        assert f"[{name}]({name})" in readme, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_yields_exactly_its_expected_cards_and_actions(client, name):
    body, expected = load(name), EXPECTED[name]
    response = client.post(f"/cds-services/{SERVICE[body['hook']]}", json=body)
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
        assert card["source"]["topic"] == {"system": expected.get("topic_system", TOPIC_SYSTEM_TEMP),
                                           "code": "off-guideline", "display": "Off Guideline"}
        assert ("not by a billing code" in card["detail"]) == (want["matched"] == "text")
        assert card["suggestions"][0]["actions"] == [
            {"type": "delete", "description": card["suggestions"][0]["actions"][0]["description"],
             "resourceId": want["order"]}]

    actions = answer.get("systemActions", [])
    assert [(a["resource"]["resourceType"] + "/" + a["resource"]["id"]) for a in actions] == \
        [want["order"] for want in expected["actions"]]
    orders = {f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
              for e in body["context"]["draftOrders"]["entry"]}
    for action, want in zip(actions, expected["actions"], strict=True):
        assert action["type"] == "update" and action["description"]
        extension = action["resource"]["extension"][-1]
        assert extension["url"] == COVERAGE_INFORMATION
        parts = {p["url"]: p for p in extension["extension"]}
        assert parts["covered"]["valueCode"] == want["covered"]
        assert parts["coverage"]["valueReference"]["reference"] == want["coverage"]
        assert "pa-needed" not in parts and "doc-needed" not in parts
        assert problems_dual(extension) == []
        original = orders[want["order"]]
        assert {k: v for k, v in action["resource"].items() if k != "extension"} == \
            {k: v for k, v in original.items() if k != "extension"}
        for element in required_order_elements(original["resourceType"]):
            assert any(key.startswith(element.removesuffix("[x]")) for key in action["resource"]), element


MATCHING = [load(name) for name in ("text-only-anodyne.json", "device-code-reference.json",
                                    "order-select-selection-only.json", "sandbox-style-no-coverage.json")]


@FUZZ
@given(body=mutated(MATCHING))
def test_mutated_matching_requests_never_5xx(client, body):
    hook = body.get("hook")
    service = SERVICE.get(hook, "order-sign-crd") if isinstance(hook, str) else "order-sign-crd"
    assert post(client, f"/cds-services/{service}", body).status_code in (200, 400)
