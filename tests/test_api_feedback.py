import pytest

from tests.helpers import outcome

FEEDBACK = "/cds-services/order-sign-crd/feedback"
WHEN = "2026-11-26T10:15:30.123Z"


def test_accepted_feedback_is_200(client):
    body = {"feedback": [{"card": "c1", "outcome": "accepted", "acceptedSuggestions": [{"id": "s1"}],
                          "outcomeTimestamp": WHEN}]}
    response = client.post(FEEDBACK, json=body)
    assert response.status_code == 200
    assert response.get_json() == {}


@pytest.mark.parametrize("reason", [
    {"reason": {"code": "patient-pays", "system": "http://example.org/reasons", "display": "Patient pays"},
     "userComment": "told of non-coverage"},
    {"reason": {"code": "patient-pays", "system": "http://example.org/reasons"}},  # sandbox: no display
    {"code": "patient-pays", "system": "http://example.org/reasons"},  # pre-2.0 flat form
])
def test_overridden_feedback_forms_are_accepted(client, reason):
    body = {"feedback": [{"card": "c1", "outcome": "overridden", "overrideReason": reason, "outcomeTimestamp": WHEN}]}
    assert client.post(FEEDBACK, json=body).status_code == 200


def test_repeated_feedback_is_accepted(client):
    body = {"feedback": [{"card": "c1", "outcome": "overridden", "outcomeTimestamp": WHEN}]}
    assert client.post(FEEDBACK, json=body).status_code == 200
    assert client.post(FEEDBACK, json=body).status_code == 200


@pytest.mark.parametrize(("item", "where"), [
    ({"outcome": "accepted", "acceptedSuggestions": [{"id": "s"}], "outcomeTimestamp": WHEN}, "feedback[0].card"),
    ({"card": "c", "outcome": "maybe", "outcomeTimestamp": WHEN}, "feedback[0].outcome"),
    ({"card": "c", "outcome": "overridden"}, "feedback[0].outcomeTimestamp"),
    ({"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"}, "feedback[0].outcomeTimestamp"),
    ({"card": "c", "outcome": "accepted", "outcomeTimestamp": WHEN}, "feedback[0]"),
])
def test_malformed_feedback_is_400(client, item, where):
    response = client.post(FEEDBACK, json={"feedback": [item]})
    assert response.status_code == 400
    assert outcome(response)["expression"] == [where]


@pytest.mark.parametrize("body", [{}, {"feedback": []}, {"feedback": "x"}])
def test_feedback_without_items_is_400(client, body):
    assert client.post(FEEDBACK, json=body).status_code == 400


def test_feedback_for_unknown_service_is_404(client):
    response = client.post("/cds-services/nope/feedback", json={"feedback": []})
    assert response.status_code == 404
