"""Every error status carries an OperationOutcome a developer can act on."""

import json

import pytest

from cds.app import create_app
from cds.config import Settings
from tests.helpers import outcome

SERVICE = "/cds-services/order-sign-crd"


def test_unparsable_json_is_400(client):
    response = client.post(SERVICE, data='{"hook": ', content_type="application/json")
    assert response.status_code == 400
    assert "not valid JSON" in outcome(response)["diagnostics"]


def test_bad_utf8_is_400(client):
    response = client.post(SERVICE, data=b'{"hook": "\xff\xfe"}', content_type="application/json")
    assert response.status_code == 400
    assert "UTF-8" in outcome(response)["diagnostics"]


@pytest.mark.parametrize("body", ["[]", '"text"', "42", "null", "true"])
def test_body_that_is_not_an_object_is_400(client, body):
    response = client.post(SERVICE, data=body, content_type="application/json")
    assert response.status_code == 400
    assert "must be a JSON object" in outcome(response)["diagnostics"]


def test_unknown_service_is_404(client, order_sign):
    response = client.post("/cds-services/no-such-service", json=order_sign)
    assert response.status_code == 404
    assert outcome(response)["code"] == "not-found"


def test_unknown_path_is_404_with_outcome(client):
    response = client.get("/nothing-here")
    assert response.status_code == 404
    outcome(response)


@pytest.mark.parametrize(("method", "path"), [("get", SERVICE), ("put", "/cds-services"),
                                               ("delete", f"{SERVICE}/feedback")])
def test_wrong_method_is_405(client, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"] or "GET" in response.headers["Allow"]
    outcome(response)


def test_body_over_limit_is_413(sqlite_url):
    app = create_app(Settings(max_body_bytes=2048, database_url=sqlite_url).resolved())
    body = json.dumps({"hook": "order-sign", "padding": "x" * 4096})
    response = app.test_client().post(SERVICE, data=body, content_type="application/json")
    assert response.status_code == 413
    assert "2048" in outcome(response)["diagnostics"]


def test_default_body_limit_is_5_mib(client):
    body = b'{"pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    response = client.post(SERVICE, data=body, content_type="application/json")
    assert response.status_code == 413


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None,
                                          "application/json; charset=latin-1"])
def test_content_type_other_than_json_is_415(client, order_sign, content_type):
    kwargs = {"content_type": content_type} if content_type else {}
    response = client.post(SERVICE, data=json.dumps(order_sign), **kwargs)
    assert response.status_code == 415
    outcome(response)


@pytest.mark.parametrize("depth", [65, 2000, 200_000])
def test_deeply_nested_json_is_refused_without_exhausting_the_stack(client, depth):
    body = '{"a":' * depth + "1" + "}" * depth
    response = client.post(SERVICE, data=body, content_type="application/json")
    assert response.status_code == 400
    outcome(response)


def test_error_message_does_not_echo_control_characters(client, order_sign):
    order_sign["context"]["userId"] = "Practitioner/x\n<script>" + "y" * 500
    response = client.post(SERVICE, json=order_sign)
    diagnostics = outcome(response)["diagnostics"]
    assert "\n" not in diagnostics and len(diagnostics) < 200
