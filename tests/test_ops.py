"""GET /ready and GET /metrics, and the metric helpers other modules call."""

from dataclasses import replace

from cds import metrics
from cds.web.app import create_app
from cds.web.ops import add_readiness_check
from tests.helpers import metric_value, outcome


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return response.get_data(as_text=True)


def test_a_failing_or_raising_check_makes_ready_503_naming_it(app, client):
    add_readiness_check(app, lambda: ("policies", False, "no policy loaded"))

    def store():
        raise ConnectionError("postgresql://cds:s3cret@db/cds is unreachable")

    add_readiness_check(app, store)
    response = client.get("/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable" and "resourceType" not in body
    assert [(c["name"], c["detail"]) for c in body["checks"] if not c["ok"]] == [
        ("policies", "no policy loaded"), ("store", "raised ConnectionError")]
    assert "s3cret" not in response.get_data(as_text=True)


def test_requests_are_counted_by_known_service_and_status(client, order_sign):
    before = scrape(client)
    assert client.post("/cds-services/order-sign-crd", json=order_sign).status_code == 200
    assert client.post("/cds-services/jane-doe-1961", json=order_sign).status_code == 404
    after = scrape(client)

    def delta(**labels):
        return (metric_value(after, "cds_http_requests_total", **labels)
                - metric_value(before, "cds_http_requests_total", **labels))

    assert delta(endpoint="call_service", service="order-sign-crd", status="200") == 1
    # A client cannot mint label values: an unknown service id is counted as "unknown".
    assert delta(endpoint="call_service", service="unknown", status="404") == 1
    assert "jane-doe" not in after
    assert metric_value(after, "cds_http_request_duration_seconds_count", endpoint="call_service",
                        service="order-sign-crd") >= 1


def test_helpers_count_decisions_fallback_fetches_and_store_failures(client):
    counted = [("cds_decisions_total", {"policy": "DME101.045", "outcome": "not-covered"}),
               ("cds_fallback_fetches_total", {"resource": "Coverage"}),
               ("cds_fallback_fetch_failures_total", {"resource": "Coverage", "reason": "timeout"}),
               ("cds_store_failures_total", {"operation": "audit"})]
    before = scrape(client)
    metrics.decision("DME101.045", "not-covered")
    metrics.fallback_fetch("Coverage")
    metrics.fallback_fetch_failed("Coverage", "timeout")
    metrics.store_failure("audit")
    after = scrape(client)
    for name, labels in counted:
        assert metric_value(after, name, **labels) - metric_value(before, name, **labels) == 1, name


def test_metrics_can_be_switched_off(settings):
    client = create_app(replace(settings, metrics_enabled=False)).test_client()
    response = client.get("/metrics")
    assert response.status_code == 404
    outcome(response)


def test_the_pipeline_counts_its_decisions_and_fallback_fetches(client):
    from tests.helpers import load

    def count(text, name, **labels):
        return metric_value(text, name, **labels)

    before = client.get("/metrics").get_data(as_text=True)
    assert client.post("/cds-services/order-sign-crd", json=load("e0221-home-device.json")).status_code == 200
    body = load("e0221-home-device.json")
    body.pop("prefetch")
    body["fhirServer"] = "https://fhir.not-registered.example/r4"  # refused before any connection
    assert client.post("/cds-services/order-sign-crd", json=body).status_code == 200
    after = client.get("/metrics").get_data(as_text=True)
    decisions = {"policy": "DME101.045", "outcome": "not-covered"}
    assert count(after, "cds_decisions_total", **decisions) - count(before, "cds_decisions_total", **decisions) == 2
    for resource in ("Patient", "Coverage", "Condition"):
        fetched = {"resource": resource}
        failed = {"resource": resource, "reason": "refused"}
        assert count(after, "cds_fallback_fetches_total", **fetched) - \
            count(before, "cds_fallback_fetches_total", **fetched) == 1
        assert count(after, "cds_fallback_fetch_failures_total", **failed) - \
            count(before, "cds_fallback_fetch_failures_total", **failed) == 1
