"""Every answer the service gives can be found again by its coverage-assertion-id, on SQLite and PostgreSQL:
the hook call, each decision and the feedback on its card, recorded through the real HTTP interface."""

from __future__ import annotations

import copy
import uuid

import pytest
from sqlalchemy import select

from cds.record.schema import decision, hook_call
from tests import tokens
from tests.helpers import load, run_cds

SERVICE = "/cds-services/order-sign-crd"
WHEN = "2026-11-26T10:15:30.123Z"


@pytest.fixture
def audited(make_app, database_url):
    app = make_app(database_url=database_url)
    return app.test_client(), app.extensions["cds_store"]


def assertion_ids(answer: dict) -> list[str]:
    return [sub["valueString"] for action in answer.get("systemActions", [])
            for ext in action["resource"]["extension"] for sub in ext["extension"]
            if sub["url"] == "coverage-assertion-id"]


def test_each_decision_is_found_by_the_coverage_assertion_id_it_was_answered_with(audited):
    client, store = audited
    body = load("two-orders-one-matches.json")
    answer = client.post(SERVICE, json=body).get_json()
    [assertion_id] = assertion_ids(answer)
    [card] = answer["cards"]
    store.flush()

    report = store.decision_report(assertion_id)
    assert report["outcome"] == "not-covered"
    assert report["policy_id"] == "DME101.045" and report["policy_version"]
    assert report["order_reference"] == "DeviceRequest/dr-e0221-4821b"
    assert any(code.endswith("|E0221") for code in report["order_codes"])
    assert report["card_uuid"] == card["uuid"]
    assert list(report["suggestion_uuids"]) == [s["uuid"] for s in card["suggestions"]]
    assert report["hook_instance"] == body["hookInstance"]
    assert report["client_iss"] == tokens.EHR
    assert report["status"] == 200 and report["coverage_reference"].startswith("Coverage/")


def test_record_keys_the_service_mints_are_time_ordered_uuids(audited):
    """UUIDv7: each new record lands at the end of its indexes, not on a random page of them."""
    client, store = audited
    assertions, cards = [], []
    for _ in range(3):
        answer = client.post(SERVICE, json=load("e0221-home-device.json")).get_json()
        assertions += [uuid.UUID(i) for i in assertion_ids(answer)]
        cards += [uuid.UUID(card["uuid"]) for card in answer["cards"]]
    store.flush()
    with store.engine.connect() as connection:
        newest = connection.execute(select(hook_call.c.id).order_by(hook_call.c.time.desc()).limit(3)).scalars()
        calls = [uuid.UUID(call) for call in reversed(list(newest))]
    for ids in (assertions, cards, calls):
        assert [i.version for i in ids] == [7, 7, 7]
        assert ids == sorted(ids)  # later calls, later keys


def test_feedback_on_a_card_joins_its_decision_even_when_it_arrives_before_the_record(audited):
    client, store = audited
    answer = client.post(SERVICE, json=load("e0221-home-device.json")).get_json()
    [assertion_id] = assertion_ids(answer)
    card = answer["cards"][0]["uuid"]
    feedback = {"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": WHEN, "overrideReason": {
        "reason": {"system": "urn:cds-coverage:override-reason", "code": "patient-pays"}}}]}
    assert client.post(f"{SERVICE}/feedback", json=feedback).status_code == 200
    store.flush()
    [entry] = store.decision_report(assertion_id)["feedback"]
    assert entry["outcome"] == "overridden" and entry["override_code"] == "patient-pays"


def test_a_decision_whose_card_max_cards_dropped_is_recorded_without_a_card(audited):
    client, store = audited
    answer = client.post(SERVICE, json=load("crd-2.2-max-cards.json")).get_json()
    ids = assertion_ids(answer)
    assert len(ids) == 2 and len(answer["cards"]) == 1
    store.flush()
    cards = {store.decision_report(i)["card_uuid"] for i in ids}
    assert cards == {answer["cards"][0]["uuid"], None}


def test_a_decision_answered_without_coverage_information_is_recorded_with_its_coverage(audited):
    client, store = audited
    body = load("e0221-home-device.json")
    body["extension"] = {"davinci-crd.configuration": {"coverage-info": False}}
    answer = client.post(SERVICE, json=body).get_json()
    [card] = answer["cards"]
    assert not answer.get("systemActions")
    store.flush()
    with store.engine.connect() as connection:
        [(outcome, coverage)] = connection.execute(select(decision.c.outcome, decision.c.coverage_reference)
                                                   .where(decision.c.card_uuid == card["uuid"])).all()
    coverage_sent = body["prefetch"]["coverage"]["entry"][0]["resource"]["id"]
    assert (outcome, coverage) == ("not-covered", f"Coverage/{coverage_sent}")


def test_audit_show_prints_the_decision_a_response_carried(audited, database_url):
    client, store = audited
    answer = client.post(SERVICE, json=load("e0221-home-device.json")).get_json()
    [assertion_id] = assertion_ids(answer)
    store.flush()
    shown = run_cds("audit", "show", assertion_id, env={"CDS_DATABASE_URL": database_url})
    assert shown.exit_code == 0, shown.stderr
    assert f"Coverage assertion {assertion_id}" in shown.stdout
    assert "Policy:    DME101.045 version" in shown.stdout
    assert "DeviceRequest/dr-e0221-4821" in shown.stdout


def test_a_call_refused_after_parsing_is_recorded_with_its_status(make_app, database_url):
    app = make_app(database_url=database_url, strict_crd=True)
    client, store = app.test_client(), app.extensions["cds_store"]
    body = copy.deepcopy(load("e0221-home-device.json"))
    body["hookInstance"] = str(uuid.uuid4())
    body["prefetch"]["coverage"] = {"resourceType": "Bundle", "type": "searchset"}  # no Coverage: strict 400
    assert client.post(SERVICE, json=body).status_code == 400
    store.flush()
    with store.engine.connect() as connection:
        statuses = connection.execute(select(hook_call.c.status)
                                      .where(hook_call.c.hook_instance == body["hookInstance"])).scalars().all()
    assert statuses == [400]
