import pytest

ORIGIN = "https://ehr.example.org"


@pytest.mark.parametrize("path", ["/cds-services", "/cds-services/order-sign-crd",
                                  "/cds-services/order-sign-crd/feedback"])
def test_preflight_is_answered_without_authentication(client, path):
    response = client.options(path, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert response.headers["Access-Control-Max-Age"]


def test_cors_headers_on_success_and_on_errors(client, order_sign):
    headers = {"Origin": ORIGIN}
    assert client.get("/cds-services", headers=headers).headers["Access-Control-Allow-Origin"] == ORIGIN
    bad = client.post("/cds-services/order-sign-crd", data="{", content_type="application/json", headers=headers)
    assert bad.status_code == 400
    assert bad.headers["Access-Control-Allow-Origin"] == ORIGIN
    missing = client.post("/cds-services/nope", json=order_sign, headers=headers)
    assert missing.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_origin_not_allowed_gets_no_cors_header(client):
    response = client.get("/cds-services", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" in response.headers["Vary"]


def test_demo_mode_allows_any_origin(sqlite_url, tmp_path):
    from cds.config import Settings
    from cds.web.app import create_app

    client = create_app(Settings(demo=True, database_url=sqlite_url, data_dir=str(tmp_path)).resolved()).test_client()
    response = client.get("/cds-services", headers={"Origin": "https://sandbox.cds-hooks.org"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("path", ["/ready", "/metrics", "/health", "/openapi.json"])
def test_demo_mode_shares_only_the_cds_hooks_endpoints_with_other_origins(sqlite_url, tmp_path, path):
    """The sandbox calls discovery, services and feedback; what the operator reads stays same-origin."""
    from cds.config import Settings
    from cds.web.app import create_app

    client = create_app(Settings(demo=True, database_url=sqlite_url, data_dir=str(tmp_path)).resolved()).test_client()
    origin = {"Origin": "https://sandbox.cds-hooks.org"}
    assert client.get("/cds-services", headers=origin).headers["Access-Control-Allow-Origin"] == "*"
    answer = client.get(path, headers=origin)
    assert answer.status_code == 200
    assert not [name for name, _ in answer.headers.items() if name.lower().startswith("access-control-")]
    preflight = client.options(path, headers=origin | {"Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in preflight.headers
