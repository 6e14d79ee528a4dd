"""Draft orders: normalised the way sloppy clients need, checked against R4 when the problems are read."""

from cds.fhir import parse_draft_order, prune_empty
from tests.helpers import load


def test_clean_order_has_no_problems_and_keeps_its_content():
    resource = load("crd-order-sign-servicerequests.json")["context"]["draftOrders"]["entry"][0]["resource"]
    order = parse_draft_order(resource)
    assert order.problems == ()
    assert order.resource == resource
    assert order.reference == f"{resource['resourceType']}/{resource['id']}"


def test_malformed_order_names_the_elements_at_fault_without_their_values():
    order = parse_draft_order({"resourceType": "ServiceRequest", "id": "bad", "status": 42,
                               "intent": "order", "subject": {"reference": "Patient/secret-value"}, "code": []})
    assert order.problems and any(problem.startswith("status") for problem in order.problems)
    assert not any("42" in problem or "secret" in problem for problem in order.problems)
    assert "code" not in order.resource


def test_unknown_resource_type_is_a_problem_not_an_error():
    assert parse_draft_order({"resourceType": "MedicationOrder", "id": "dstu2"}).problems == (
        "MedicationOrder is not a FHIR R4 resource type",
    )


def test_prune_empty_drops_empty_and_null_members_at_every_level():
    value = {"a": {}, "b": [], "c": "", "d": None, "e": [{"f": None}, {"g": 1}], "h": {"i": [""]}, "j": "null"}
    assert prune_empty(value) == {"e": [{"g": 1}], "j": "null"}
    clean = {"a": [1, {"b": "x"}], "c": True}
    assert prune_empty(clean) == {"a": [1, {"b": "x"}], "c": True}
