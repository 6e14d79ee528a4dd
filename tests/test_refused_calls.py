"""Every hook call is recorded, refused ones included: status, client once authenticated, the reason's
category; the body only with payload capture on."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import select

from cds.record.schema import hook_call
from tests import tokens

SERVICE = tokens.SERVICE_PATH


@pytest.fixture
def audited(make_app, tmp_path):
    def make(**settings):
        app = make_app(database_url=f"sqlite:///{tmp_path}/store.sqlite3", **settings)
        return app.test_client(), app.extensions["cds_store"]

    return make


def recorded_calls(store) -> list[dict]:
    store.flush()
    with store.engine.connect() as connection:
        return [dict(row) for row in connection.execute(select(hook_call).order_by(hook_call.c.time)).mappings()]


def test_a_call_refused_before_authentication_is_recorded_without_a_client(audited, order_sign):
    client, store = audited()
    response = client.post(SERVICE, json=order_sign, headers={"Authorization": ""})
    assert response.status_code == 401
    [call] = recorded_calls(store)
    assert (call["service_id"], call["status"], call["refusal"]) == ("order-sign-crd", 401, "login")
    assert (call["client_iss"], call["hook"], call["hook_instance"], call["request"]) == (None, None, None, None)


def test_a_call_to_an_unknown_service_is_recorded_with_its_client(audited, order_sign):
    client, store = audited()
    assert client.post("/cds-services/no-such-service", json=order_sign).status_code == 404
    [call] = recorded_calls(store)
    assert (call["service_id"], call["status"], call["refusal"]) == ("no-such-service", 404, "not-found")
    assert call["client_iss"] == tokens.EHR


def test_a_call_refused_with_400_after_authentication_keeps_its_hook_instance_but_not_its_body(audited,
                                                                                              order_sign):
    client, store = audited()
    body = order_sign | {"hook": "patient-view", "hookInstance": str(uuid.uuid4())}
    assert client.post(SERVICE, json=body).status_code == 400
    [call] = recorded_calls(store)
    assert (call["status"], call["refusal"], call["client_iss"]) == (400, "not-supported", tokens.EHR)
    assert (call["hook"], call["hook_instance"], call["request"]) == ("patient-view", body["hookInstance"], None)


def test_with_payload_capture_a_refused_call_keeps_its_body(audited, order_sign):
    client, store = audited(audit_capture_payloads=True)
    body = {**order_sign, "context": "not an object", "hookInstance": str(uuid.uuid4())}
    assert client.post(SERVICE, json=body).status_code == 400
    [call] = recorded_calls(store)
    assert call["request"]["hookInstance"] == body["hookInstance"] and call["refusal"] == "invalid"


def test_a_body_over_the_limit_and_an_unreadable_one_are_recorded(audited):
    client, store = audited(max_body_bytes=2048)
    assert client.post(SERVICE, data="x" * 4096, content_type="application/json").status_code == 413
    assert client.post(SERVICE, data="{not json", content_type="application/json").status_code == 400
    calls = recorded_calls(store)
    assert [(call["status"], call["refusal"]) for call in calls] == [(413, "too-costly"), (400, "structure")]
    assert [call["hook"] for call in calls] == [None, None]


def test_an_answered_call_is_recorded_once_and_not_as_refused(audited, order_sign):
    client, store = audited()
    assert client.post(SERVICE, json=order_sign).status_code == 200
    [call] = recorded_calls(store)
    assert (call["status"], call["refusal"], call["hook_instance"]) == (200, None, order_sign["hookInstance"])


def test_a_call_refused_for_its_requested_version_is_recorded_with_the_orders_it_sent(audited, order_sign):
    client, store = audited()
    order_sign.setdefault("extension", {})["davinci-crd.requestedVersion"] = "1.0"
    assert client.post(SERVICE, json=order_sign).status_code == 422
    [call] = recorded_calls(store)
    order = order_sign["context"]["draftOrders"]["entry"][0]["resource"]
    assert (call["status"], call["hook_instance"]) == (422, order_sign["hookInstance"])
    assert [o["reference"] for o in call["orders"]] == [f"{order['resourceType']}/{order['id']}"]


def test_a_call_refused_after_it_was_parsed_is_recorded_with_its_client(audited, order_sign):
    client, store = audited()
    order_sign.setdefault("extension", {})["davinci-crd.requestedVersion"] = "1.0"
    assert client.post(SERVICE, json=order_sign).status_code == 422
    [call] = recorded_calls(store)
    assert call["client_iss"] == tokens.EHR


def test_with_payload_capture_an_answered_call_keeps_its_request_and_answer(audited, order_sign):
    client, store = audited(audit_capture_payloads=True)
    answer = client.post(SERVICE, json=order_sign).get_json()
    [call] = recorded_calls(store)
    assert call["request"]["hookInstance"] == order_sign["hookInstance"]
    assert call["response"]["cards"][0]["uuid"] == answer["cards"][0]["uuid"]


def test_an_answered_call_is_recorded_with_its_latency_in_milliseconds(audited, order_sign):
    client, store = audited()
    started = time.perf_counter()
    assert client.post(SERVICE, json=order_sign).status_code == 200
    elapsed_ms = (time.perf_counter() - started) * 1000
    [call] = recorded_calls(store)
    assert elapsed_ms / 20 < call["latency_ms"] <= elapsed_ms
