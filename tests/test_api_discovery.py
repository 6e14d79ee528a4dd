import re

TOKEN = re.compile(r"\{\{(.*?)\}\}")


def test_discovery_lists_one_service_per_hook(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    services = response.get_json()["services"]
    assert {(s["hook"], s["id"]) for s in services} == {
        ("order-sign", "order-sign-crd"),
        ("order-select", "order-select-crd"),
    }
    for service in services:
        assert service["title"] and service["description"]


def test_prefetch_templates_use_root_level_context_tokens_only(client):
    for service in client.get("/cds-services").get_json()["services"]:
        assert {"patient", "coverage", "conditions"} <= service["prefetch"].keys()
        for template in service["prefetch"].values():
            for token in TOKEN.findall(template):
                assert token in ("context.patientId", "context.userId", "context.encounterId"), template


def test_discovery_carries_crd_extensions(client):
    for service in client.get("/cds-services").get_json()["services"]:
        extension = service["extension"]
        assert extension["davinci-crd.version"]
        for version in extension["davinci-crd.version"]:
            assert re.fullmatch(r"[1-9]\d*\.[1-9]\d*", version)  # CRD invariant crdver-1
        options = extension["davinci-crd.configuration-options"]
        codes = [option["code"] for option in options]
        assert len(codes) == len(set(codes))
        assert "coverage-info" in codes and "max-cards" in codes
        for option in options:
            assert set(option) == {"code", "type", "name", "description", "default"}
            assert option["type"] in ("boolean", "integer")


def test_health(client):
    assert client.get("/health").status_code == 200
