import uuid

import pytest

from tests.helpers import outcome
from tests.records import a_call, a_decision

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


@pytest.fixture
def recorded(database_url, make_app):
    """The app on each database, with one decision recorded as the pipeline records it."""
    app = make_app(database_url=database_url)
    store = app.extensions["cds_store"]
    call = a_call()
    given = a_decision(call)
    store.record_call(call, [given])
    return app.test_client(), store, given


def test_feedback_is_stored_with_the_decision_of_its_card_once(recorded):
    client, store, given = recorded
    reason = {"reason": {"code": "patient-pays", "system": "http://example.org/reasons", "display": "Patient pays"},
              "userComment": "told of non-coverage"}
    body = {"feedback": [{"card": given.card_uuid, "outcome": "overridden", "overrideReason": reason,
                          "outcomeTimestamp": WHEN}]}
    assert client.post(FEEDBACK, json=body).status_code == 200
    assert client.post(FEEDBACK, json=body).status_code == 200  # a retried delivery
    entries = store.decision_report(given.coverage_assertion_id)["feedback"]
    assert [(e["outcome"], e["override_code"], e["override_system"], e["override_display"], e["override_comment"])
            for e in entries] == [("overridden", "patient-pays", "http://example.org/reasons", "Patient pays",
                                   "told of non-coverage")]


def test_accepted_suggestions_are_stored(recorded):
    client, store, given = recorded
    body = {"feedback": [{"card": given.card_uuid, "outcome": "accepted", "outcomeTimestamp": WHEN,
                          "acceptedSuggestions": [{"id": given.suggestion_uuids[0]}]}]}
    assert client.post(FEEDBACK, json=body).status_code == 200
    [entry] = store.decision_report(given.coverage_assertion_id)["feedback"]
    assert (entry["outcome"], entry["accepted_suggestions"]) == ("accepted", list(given.suggestion_uuids))


def test_feedback_on_an_unknown_card_is_200_and_kept_unmatched(recorded):
    client, store, _ = recorded
    unmatched = store.stats()[1]
    body = {"feedback": [{"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": WHEN}]}
    response = client.post(FEEDBACK, json=body)
    assert (response.status_code, response.get_json()) == (200, {})
    assert store.stats()[1] == unmatched + 1
