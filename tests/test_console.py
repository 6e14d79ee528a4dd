"""The console's settings, access rules, demo signing key, request building and answer rendering, through the
app's HTTP interface. The browser flows are in tests/test_console_browser.py."""

from __future__ import annotations

import base64
import html
import json
import re
import stat

import pytest
import requests
from markupsafe import escape
from werkzeug.datastructures import MultiDict

from cds.config import Settings, SettingsError
from cds.console.answer import answer_view, render_markdown
from cds.console.insights import Filters, days_chart, override_reasons, per_policy
from cds.console.key import DEMO_KEY_FILE, console_signer
from cds.console.orders import build_request
from cds.policy.review import review_sections
from cds.record.store import PolicyStats
from tests import tokens
from tests.helpers import EXAMPLES, free_port, run_cds, serve_on_loopback

ADMIN_TOKEN = "an-admin-credential-of-some-length"
SERVICE = "/cds-services/order-sign-crd"


def basic(password: str, user: str = "admin") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def example_form() -> dict:
    prefetch = json.loads((EXAMPLES / "e0221-home-device.json").read_text())["prefetch"]
    return {"service": "order-sign-crd", "hook": "order-sign", **prefetch,
            "orders": [{"type": "DeviceRequest", "system": "https://bluebutton.cms.gov/resources/codesystem/hcpcs",
                        "code": "E0221"}]}


@pytest.mark.parametrize(("env", "named"), [
    ({"CDS_CONSOLE_ENABLED": "true"}, "CDS_CONSOLE_ADMIN_TOKEN"),
    ({"CDS_CONSOLE_ENABLED": "true", "CDS_CONSOLE_ADMIN_TOKEN": "short"}, "CDS_CONSOLE_ADMIN_TOKEN"),
    ({"CDS_CONSOLE_ENABLED": "maybe"}, "CDS_CONSOLE_ENABLED"),
])
def test_console_settings_that_cannot_be_used_stop_start_up_naming_the_variable(env, named):
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_a_console_key_file_that_cannot_sign_stops_start_up_naming_the_variable(make_app, tmp_path):
    (tmp_path / "public.json").write_text('{"kty": "EC", "kid": "k"}')
    for path in (tmp_path / "missing.json", tmp_path / "public.json"):
        with pytest.raises(SettingsError, match="CDS_CONSOLE_KEY_FILE"):
            make_app(demo=True, console_key_file=str(path))


def test_console_settings_enabled_with_an_admin_credential():
    settings = Settings.from_env({"CDS_CONSOLE_ENABLED": "yes", "CDS_CONSOLE_ADMIN_TOKEN": ADMIN_TOKEN})
    assert settings.console_on and ADMIN_TOKEN not in repr(settings)
    assert Settings.from_env({"CDS_DEMO": "1"}).console_on
    assert not Settings.from_env({}).console_on


def test_outside_demo_the_console_is_not_served_unless_enabled(make_app):
    client = make_app().test_client()
    assert client.get("/console/", headers={"Authorization": ""}).status_code == 404
    assert client.post("/console/api/send", json={}, headers={"Authorization": ""}).status_code == 404


def test_enabled_outside_demo_every_console_request_needs_the_admin_credential(make_app):
    client = make_app(console_enabled=True, console_admin_token=ADMIN_TOKEN).test_client()
    for method, path in [("GET", "/console/"), ("GET", "/console/insights"), ("GET", "/console/policies"),
                         ("POST", "/console/api/send"), ("POST", "/console/api/feedback"),
                         ("POST", "/console/api/discover"), ("GET", "/console/static/console.js")]:
        for headers in ({"Authorization": ""}, basic("wrong-credential-of-length"), {"Authorization": "Bearer x"}):
            refused = client.open(path, method=method, json={}, headers=headers)
            assert refused.status_code == 401, (path, headers)
            assert refused.headers["WWW-Authenticate"].startswith("Basic")
            assert b"DME101.045" not in refused.data and b"pat-" not in refused.data
    page = client.get("/console/insights", headers=basic(ADMIN_TOKEN))
    assert page.status_code == 200 and b"How the policies are doing" in page.data


def test_in_demo_mode_the_console_is_open_unless_a_credential_is_set(make_app):
    assert make_app(demo=True).test_client().get("/console/", headers={"Authorization": ""}).status_code == 200
    locked = make_app(demo=True, console_admin_token=ADMIN_TOKEN).test_client()
    assert locked.get("/console/", headers={"Authorization": ""}).status_code == 401
    assert locked.get("/console/", headers=basic(ADMIN_TOKEN)).status_code == 200


def test_requests_from_another_origin_are_refused_whatever_the_cors_settings(make_app):
    client = make_app(demo=True).test_client()  # demo mode: CORS allows any origin on the CDS endpoints
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        assert client.get("/console/insights", headers={"Authorization": "", **headers}).status_code == 403
        assert client.post("/console/api/send", json=example_form(),
                           headers={"Authorization": "", **headers}).status_code == 403
    same = client.get("/console/insights", headers={"Authorization": "", "Origin": "http://localhost",
                                                     "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200


def test_console_pages_run_no_inline_script_and_are_not_cached(make_app):
    page = make_app(demo=True).test_client().get("/console/", headers={"Authorization": ""})
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert page.headers["Cache-Control"] == "no-store"
    assert b"<script>" not in page.data  # only the external script and the JSON data block


def test_demo_mode_signs_with_a_key_of_its_own_that_only_demo_mode_trusts(make_app, tmp_path):
    demo = make_app(demo=True, data_dir=str(tmp_path))
    key_file = tmp_path / DEMO_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    created = key_file.read_text()
    make_app(demo=True, data_dir=str(tmp_path))  # another worker process: it reads the key, never replaces it
    assert key_file.read_text() == created and '"d"' in created
    signer = console_signer(demo.config["CDS_SETTINGS"])
    body = json.loads((EXAMPLES / "e0221-home-device.json").read_text())
    token = signer.token(audience=f"{tokens.BASE}{SERVICE}")
    answered = demo.test_client().post(SERVICE, json=body, headers={"Authorization": f"Bearer {token}"})
    assert answered.status_code == 200 and answered.get_json()["cards"]

    # The same key file, outside demo mode: not trusted (and the console is not even served).
    production = make_app(data_dir=str(tmp_path))
    token = signer.token(audience=f"{tokens.BASE}{SERVICE}")
    refused = production.test_client().post(SERVICE, json=body, headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401


def test_a_form_that_cannot_make_a_request_is_answered_400_naming_the_field(make_app):
    client = make_app(demo=True).test_client()
    for change, named in [({"patient": None}, "patient"), ({"orders": []}, "orders"),
                          ({"orders": [{"type": "Observation", "code": "x"}]}, "orders[0].type"),
                          ({"orders": [{"type": "DeviceRequest"}]}, "orders[0]"),
                          ({"configuration": {"max-cards": "two"}}, "configuration"),
                          ({"coverage": "none"}, "coverage"), ({"service": ""}, "service"),
                          ({"target": "ftp://example.org"}, "target"), ({"raw": [1, 2]}, "raw")]:
        answered = client.post("/console/api/send", json=example_form() | change, headers={"Authorization": ""})
        assert answered.status_code == 400, change
        assert answered.get_json()["error"].startswith(named), answered.get_json()
    not_json = client.post("/console/api/send", data="{", content_type="application/json",
                           headers={"Authorization": ""})
    assert not_json.status_code == 400 and not_json.get_json()["resourceType"] == "OperationOutcome"


def test_outside_demo_the_console_calls_only_this_service(make_app):
    client = make_app(console_enabled=True, console_admin_token=ADMIN_TOKEN).test_client()
    answered = client.post("/console/api/send", json=example_form() | {"target": "http://127.0.0.1:9"},
                           headers=basic(ADMIN_TOKEN))
    assert answered.status_code == 400
    assert "outside demo mode the console calls only this service" in answered.get_json()["error"]


def test_markdown_is_rendered_with_raw_html_and_script_links_left_as_text():
    html = render_markdown("**Basis** <script>alert(1)</script> <img src=x onerror=alert(2)> [x](javascript:alert(3))")
    assert "<strong>Basis</strong>" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html and "<img" not in html
    assert 'href="javascript' not in html
    assert render_markdown(None) == ""


def test_answer_view_lists_each_coverage_information_beside_its_order():
    answer = json.loads((EXAMPLES / "crd-2.2-max-cards.json").read_text())  # a request: its orders stand in
    orders = [entry["resource"] for entry in answer["context"]["draftOrders"]["entry"]]
    extension = {"url": "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information",
                 "extension": [{"url": "coverage", "valueReference": {"reference": "Coverage/c1"}},
                               {"url": "covered", "valueCode": "conditional"},
                               {"url": "pa-needed", "valueCode": "conditional"},
                               {"url": "info-needed", "valueCode": "OTH"},
                               {"url": "reason", "valueCodeableConcept": {"text": "plan funding not known"}},
                               {"url": "date", "valueDate": "2026-11-26"},
                               {"url": "coverage-assertion-id", "valueString": "a-1"}]}
    view = answer_view({"cards": [{"summary": "s", "detail": "*d*"}, "not a card"],
                        "systemActions": [{"type": "update", "resource": {**orders[0], "extension": [extension]}},
                                          {"type": "update", "resource": orders[1]}]})
    assert view["cards"] == [{"summary": "s", "detail": "*d*", "detailHtml": "<p><em>d</em></p>\n"}]
    [row] = view["coverage"]
    assert row == {"order": f"{orders[0]['resourceType']}/{orders[0]['id']}", "action": "update",
                   "covered": "conditional", "pa-needed": "conditional", "doc-needed": "", "doc-purpose": "",
                   "info-needed": "OTH", "reason": "plan funding not known", "coverage": "Coverage/c1",
                   "coverage-assertion-id": "a-1", "date": "2026-11-26"}
    assert answer_view("not JSON") == {"cards": [], "coverage": []}


@pytest.mark.parametrize("path", ["/console/api/send", "/console/api/feedback", "/console/api/discover"])
@pytest.mark.parametrize("body", [
    {}, {"service": 7}, {"service": ".."}, {"service": "a/b"}, {"target": ["x"]}, {"target": "http://[::1"},
    {"service": "s", "card": "c", "outcome": "accepted", "acceptedSuggestions": 5},
    {"service": "s", "card": "c", "outcome": "overridden", "overrideReason": "x"},
    {"service": "s", "patient": {"resourceType": "Patient", "id": {"x": 1}}, "hook": "order-sign",
     "coverage": {"resourceType": "Bundle", "entry": 3}, "orders": [{"type": "DeviceRequest", "code": 1}]},
    {"service": "s", "hook": "order-select", "patient": {"resourceType": "Patient", "id": "p"},
     "orders": ["x"], "configuration": []},
])
def test_no_console_request_gets_a_500(make_app, path, body):
    client = make_app(demo=True).test_client()
    answered = client.post(path, json={"target": "http://127.0.0.1:9", **body}, headers={"Authorization": ""})
    assert answered.status_code in (200, 400), answered.data
    if answered.status_code == 200:  # carried out: the unreachable service is reported, not raised
        assert answered.get_json()["answer"]["status"] == 0


def test_the_form_builds_orders_of_any_code_or_text_and_order_select_names_only_the_selected():
    form = example_form() | {"hook": "order-select", "requestedVersion": "2.2",
                             "configuration": {"coverage-info": False, "max-cards": 1},
                             "orders": [{"type": "ServiceRequest", "system": "http://www.ama-assn.org/go/cpt",
                                         "code": "97026", "display": "Application of a modality; infrared"},
                                        {"type": "DeviceRequest", "text": "Anodyne Therapy System, home unit",
                                         "selected": False}]}
    request = build_request(form)
    first, second = (entry["resource"] for entry in request["context"]["draftOrders"]["entry"])
    assert first["code"]["coding"] == [{"system": "http://www.ama-assn.org/go/cpt", "code": "97026",
                                        "display": "Application of a modality; infrared"}]
    assert second["codeCodeableConcept"] == {"text": "Anodyne Therapy System, home unit"}
    assert first["insurance"] == [{"reference": "Coverage/cov-bcbstx-4821"}]
    assert first["subject"] == {"reference": "Patient/pat-tx-4821"}
    assert request["context"]["selections"] == ["ServiceRequest/console-order-1"]
    assert request["extension"] == {"davinci-crd.configuration": {"coverage-info": False, "max-cards": 1},
                                    "davinci-crd.requestedVersion": "2.2"}
    assert set(request["prefetch"]) == {"patient", "coverage", "conditions"} and "fhirServer" not in request
    without = build_request(example_form() | {"coverage": None, "conditions": None})
    assert without["prefetch"]["coverage"] is None and "insurance" not in \
        without["context"]["draftOrders"]["entry"][0]["resource"]


def test_insights_charts_scale_to_the_busiest_day_and_rates_follow_cds_audit_stats():
    counts = [{"day": f"2026-01-{d:02d}", "policy_id": "P", "outcome": "not-covered", "hook": "order-sign", "n": d}
              for d in range(1, 31)]
    chart = days_chart(counts)
    assert chart["peak"] == 30 and max(bar["h"] for bar in chart["bars"]) == chart["height"] - 30
    assert len(chart["labels"]) <= 10 and chart["bars"][-1]["x"] + chart["bars"][-1]["w"] <= chart["width"]
    feedback = [{"policy_id": "P", "outcome": "accepted", "override_code": None, "override_display": None,
                 "entries": 1, "decisions": 1},
                {"policy_id": "P", "outcome": "overridden", "override_code": "patient-pays",
                 "override_display": "Patient pays", "entries": 3, "decisions": 2}]
    stats = [PolicyStats("P", {"not-covered": 465}, with_feedback=4, overridden=2)]
    [policy] = per_policy(stats, counts, feedback)
    assert (policy["decisions"], policy["accepted"], policy["override_rate"], policy["accept_rate"]) == (
        465, 1, 0.5, 0.25)
    assert policy["by_hook"] == {"order-sign": 465}
    assert override_reasons(feedback) == [{"code": "patient-pays", "label": "Patient pays", "entries": 3}]
    assert Filters.from_args(MultiDict({"since": "yesterday"})).problems == (
        "since: 'yesterday' is not a date (YYYY-MM-DD)",)
    assert Filters.from_args(MultiDict({"until": "2026-01-31"})).query()["until"].isoformat() == (
        "2026-02-01T00:00:00+00:00")


def test_the_console_key_prints_as_the_public_key_set_to_register_elsewhere(make_app, tmp_path):
    make_app(demo=True, data_dir=str(tmp_path))
    result = run_cds("keys", "public", tmp_path / DEMO_KEY_FILE)  # as docs/console.md says
    assert result.exit_code == 0
    [key] = json.loads(result.stdout)["keys"]
    assert key["kty"] == "EC" and key["alg"] == "ES384" and "d" not in key


def test_outside_demo_the_console_signs_with_its_key_file_registered_like_any_ehr(make_app, tmp_path):
    key_file = tmp_path / "console-key.json"
    assert run_cds("keys", "new", "--out", key_file).exit_code == 0
    jwks = json.loads(run_cds("keys", "public", key_file).stdout)
    registry = tokens.write_registry(tmp_path, {"iss": "https://payer.example.org/console", "jwks": jwks})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    served = serve_on_loopback(make_app(console_enabled=True, console_admin_token=ADMIN_TOKEN,
                                        console_key_file=str(key_file), console_iss="https://payer.example.org/console",
                                        clients_file=str(registry), public_base_url=(base,)), port)
    assert next(served) == base
    try:
        answered = requests.post(f"{base}/console/api/send", json=example_form(), headers=basic(ADMIN_TOKEN),
                                 timeout=15).json()
    finally:
        served.close()
    assert (answered["answer"]["status"], answered["answer"]["signed"]) == (200, True)
    assert [row["covered"] for row in answered["view"]["coverage"]] == ["not-covered"]


def test_insights_say_when_the_store_cannot_be_read(make_app):
    client = make_app(console_enabled=True, console_admin_token=ADMIN_TOKEN,
                      database_url="postgresql+psycopg://cds@127.0.0.1:9/cds").test_client()
    page = client.get("/console/insights", headers=basic(ADMIN_TOKEN))
    assert page.status_code == 200 and b"The audit store could not be read" in page.data


@pytest.mark.parametrize(("hook", "judged"), [("order-dispatch", "DeviceRequest"), ("appointment-book", "Appointment"),
                                            ("encounter-start", "DeviceRequest")])
def test_the_console_dispatches_and_books_the_orders_of_its_form(make_app, hook, judged):
    server = serve_on_loopback(make_app(demo=True, auth_disabled=True))
    url = next(server)
    try:
        form = example_form() | {"service": f"{hook}-crd", "hook": hook, "target": url,
                                 "configuration": {"coverage-info": True, "off-guideline": True}}
        sent = requests.post(f"{url}/console/api/send", json=form, timeout=10).json()
    finally:
        server.close()
    assert sent["request"]["hook"] == hook
    answer = sent["answer"]
    assert answer["status"] == 200, answer
    [card] = answer["body"]["cards"]
    assert card["extension"]["davinci-crd.associated-resource"][0]["reference"].startswith(f"{judged}/")
    assert [a["resource"]["resourceType"] for a in answer["body"]["systemActions"]] == [judged]


# ------------------------------------------------------------------------------------- what the pages show

def _cells(page: str) -> list[list[str]]:
    """The rows of every table of a page, each as its cells' text (whitespace collapsed, entities decoded)."""
    rows = re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)
    return [[" ".join(html.unescape(re.sub(r"<[^>]+>", " ", cell)).split())
             for cell in re.findall(r"<td>(.*?)</td>", row, flags=re.S)] for row in rows]


def test_the_policies_page_shows_the_review_table_itself(make_app):
    """Every row of docs/review-table.md, from the same source, and no second list of what cards say."""
    app = make_app(demo=True)
    page = app.test_client().get("/console/policies", headers={"Authorization": ""}).get_data(as_text=True)
    shown = _cells(page)
    sections = review_sections(app.extensions["cds"].policies)
    for section in sections:
        assert f"<h2>{escape(section.heading)}</h2>" in page, section.heading
        for row in section.rows:
            assert [" ".join(cell.split()) for cell in row] in shown, row
    table = (EXAMPLES.parent / "docs" / "review-table.md").read_text(encoding="utf-8")
    said = [row for row in table.splitlines() if row.startswith("| ") and not row.startswith("| Text |")]
    assert len(said) == sum(len(section.rows) for section in sections)
    assert "line-unknown-verdict" in page and page.count('class="grid said"') == len(sections)


def test_the_console_offers_codes_by_the_short_descriptors_of_the_policy_files(make_app):
    app = make_app(demo=True)
    client = app.test_client()
    order_page = client.get("/console/", headers={"Authorization": ""}).get_data(as_text=True)
    policies_page = client.get("/console/policies", headers={"Authorization": ""}).get_data(as_text=True)
    for page in (order_page, policies_page):
        assert "Application of a modality" not in page and "dynamic photonic" not in page
    spec = app.extensions["cds"].policies[0].spec
    offered = [(code.code, code.descriptor) for code in spec.codes]
    offered += [(code, text) for group in spec.excluded_codes for code, text in group.descriptors.items()]
    assert ("97026", "Infrared therapy") in offered and ("97024", "Diathermy eg microwave") in offered
    for code, descriptor in offered:
        assert f'data-code="{code}" data-display="{descriptor}"' in order_page, code
