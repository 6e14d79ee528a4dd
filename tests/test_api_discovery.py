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
        ("order-dispatch", "order-dispatch-crd"),
        ("appointment-book", "appointment-book-crd"),
        ("encounter-start", "encounter-start-crd"),
        ("encounter-discharge", "encounter-discharge-crd"),
    }
    for service in services:
        assert service["title"] and service["description"]


ROOT_TOKENS = ("context.patientId", "context.userId", "context.encounterId")
# Where the hook's context names its orders only by reference or in a Bundle, CRD's standard prefetch reaches them
# with FHIRPath tokens (CRD 2.2 clients execute them; CDS Hooks 2.0 clients skip such templates).
FHIRPATH_ROOTS = {"order-dispatch": "context.dispatchedOrders.", "appointment-book": "context.appointments."}


def test_member_data_templates_use_root_level_context_tokens_only(client):
    for service in client.get("/cds-services").get_json()["services"]:
        prefetch = service["prefetch"]
        assert {"patient", "coverage", "conditions"} <= prefetch.keys()
        for key in ("patient", "coverage", "conditions"):
            assert all(token in ROOT_TOKENS for token in TOKEN.findall(prefetch[key])), prefetch[key]


def test_other_templates_start_from_the_hook_context_or_another_key(client):
    for service in client.get("/cds-services").get_json()["services"]:
        for template in service["prefetch"].values():
            for token in TOKEN.findall(template):
                root = FHIRPATH_ROOTS.get(service["hook"])
                assert token in ROOT_TOKENS or (root and token.startswith(root)) or \
                    (token.startswith("%") and token[1:].split(".")[0] in service["prefetch"]), template


def test_discovery_carries_crd_extensions(client):
    for service in client.get("/cds-services").get_json()["services"]:
        extension = service["extension"]
        assert extension["davinci-crd.version"]
        for version in extension["davinci-crd.version"]:
            assert re.fullmatch(r"[1-9]\d*\.\d+", version)  # major.minor, as CRD deviations.md gives it ("2.0")
        options = extension["davinci-crd.configuration-options"]
        codes = [option["code"] for option in options]
        assert len(codes) == len(set(codes))
        assert "coverage-info" in codes and "max-cards" in codes
        for option in options:
            assert set(option) == {"code", "type", "name", "description", "default"}
            assert option["type"] in ("boolean", "integer")


def test_health(client):
    assert client.get("/health").status_code == 200
