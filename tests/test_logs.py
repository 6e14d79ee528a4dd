"""Log records: JSON or text, tagged with the hookInstance, never carrying what a client sent."""

import io
import json
import logging
import sys

import pytest

from cds.logs import JsonFormatter, TextFormatter


@pytest.fixture
def access_log():
    """What the app's access logger writes during requests, formatted as in production (JSON)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("cds.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def test_access_line_carries_request_id_service_status_and_latency(client, order_sign, access_log):
    assert client.post("/cds-services/order-sign-crd", json=order_sign).status_code == 200
    [record] = access_log()
    assert record["request_id"] == order_sign["hookInstance"]
    assert (record["logger"], record["level"], record["service"], record["status"]) == (
        "cds.access", "INFO", "order-sign-crd", 200)
    assert record["message"].startswith("POST /cds-services/order-sign-crd 200 in ")
    assert record["latency_ms"] >= 0 and record["time"].endswith("+00:00")


def test_a_hook_instance_that_is_not_an_id_is_not_logged(client, order_sign, access_log):
    order_sign["hookInstance"] = "Jane Doe, born 1961-04-02"
    client.post("/cds-services/order-sign-crd", json=order_sign)
    [record] = access_log()
    assert "request_id" not in record and "Jane" not in json.dumps(record)


def test_probes_are_logged_only_at_debug_level(client, access_log):
    client.get("/health")
    client.get("/ready")
    assert access_log() == []


# An exception message quoting a request, as a parser's may; kept off the source line the stack shows.
LEAKY_MESSAGE = "patient Jane Doe, token eyJhbGciOi.secret"


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_exception_messages_are_left_out_but_type_and_stack_kept(formatter):
    try:
        raise ValueError(LEAKY_MESSAGE)
    except ValueError:
        record = logging.getLogger("cds.test").makeRecord(
            "cds.test", logging.ERROR, __file__, 1, "unexpected error", (), exc_info=sys.exc_info())
    text = formatter.format(record)
    assert "Jane" not in text and "eyJ" not in text
    assert "ValueError" in text and "test_exception_messages_are_left_out" in text


def test_only_named_fields_are_written():
    record = logging.getLogger("cds.test").makeRecord(
        "cds.test", logging.INFO, __file__, 1, "called", (), None, extra={"status": 200, "body": {"name": "Jane"}})
    entry = json.loads(JsonFormatter().format(record))
    assert entry["status"] == 200 and "body" not in entry
    assert set(entry) == {"time", "level", "logger", "message", "pid", "status"}
