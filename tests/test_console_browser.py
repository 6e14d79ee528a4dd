"""The console in real Chromium (Playwright), against a real `cds serve --demo` on loopback: an order as an EHR
sends it, its card and coverage-information, feedback found in the store, the insights that count it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from pytest_httpserver import HTTPServer

from cds.config import EXAMPLE_PLAN_DIRECTORY
from cds.record import Store
from hooks import HOOKS
from tests.browser import ROOT, demo_service, launch
from tests.helpers import serve_on_loopback

ADMIN_TOKEN = "console-admin-credential-for-tests"
E0221_SUMMARY = "Infrared heating pad system (E0221) not covered: not medically necessary, policy DME101.045"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A demo service as the quick start runs it (with the examples' plan directory); its URL and data dir."""
    data = tmp_path_factory.mktemp("console-demo")
    with demo_service(data, CDS_PLAN_DIRECTORY=EXAMPLE_PLAN_DIRECTORY) as url:
        yield url, data


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == []


def recorded(store: Store, assertion_id: str, until=bool, within_s: float = 5) -> dict:
    """The decision's record once committed by the service's background writer (and `until` holds of it)."""
    deadline = time.monotonic() + within_s
    while (report := store.decision_report(assertion_id)) is None or not until(report):
        assert time.monotonic() < deadline, f"decision {assertion_id} not recorded as expected"
        time.sleep(0.05)
    return report


def send_e0221(page: Page) -> str:
    """Sign and send the form's order; the coverage-assertion-id of the one coverage-information row."""
    page.click("#send")
    expect(page.locator("#status")).to_contain_text("200 from")
    expect(page.locator(".card .summary")).to_have_text([E0221_SUMMARY])
    row = page.locator("#coverage-table tbody tr")
    expect(row).to_have_count(1)
    return row.locator(".c-coverage-assertion-id").inner_text()


def test_an_e0221_order_shows_card_and_coverage_information_and_its_feedback_reaches_the_insights(service, page):
    url, data = service
    store = Store(f"sqlite:///{data}/cds.sqlite3")
    page.goto(f"{url}/console/")
    expect(page.locator("#discovery-status")).to_contain_text(f"{len(HOOKS)} service(s)")
    page.select_option("#scenario", "commercial-tx-ppo")
    expect(page.locator("#orders .o-code")).to_have_value("E0221")

    assertion_id = send_e0221(page)
    expect(page.locator("#status")).to_contain_text("(signed)")
    card = page.locator(".card")
    expect(card.locator(".indicator")).to_have_text("warning")
    expect(card.locator(".card-head a")).to_have_text("Blue Cross and Blue Shield of Texas")
    expect(card.locator(".detail blockquote").first).to_contain_text("is considered not medically necessary")
    expect(card.locator(".links a").first).to_have_text("Medical policy DME101.045: Infrared Therapy Devices")
    row = page.locator("#coverage-table tbody tr")
    expect(row.locator(".c-order")).to_have_text("DeviceRequest/console-order-1")
    expect(row.locator(".c-covered")).to_have_text("not-covered")
    expect(row.locator(".c-coverage")).to_have_text("Coverage/cov-bcbstx-4821")
    expect(page.locator("#orders .o-coverage")).to_contain_text(f"not-covered (assertion {assertion_id})")
    answer = json.loads(page.locator("#response-json").text_content())
    request = json.loads(page.locator("#request-json").text_content())
    assert request["prefetch"]["coverage"]["entry"][0]["resource"]["id"] == "cov-bcbstx-4821"
    [suggestion] = answer["cards"][0]["suggestions"]

    # Applying the suggestion removes the draft order and sends `accepted` feedback, stored with the decision.
    card.locator("button.suggestion").click()
    expect(card.locator(".feedback-status")).to_contain_text("feedback sent (accepted)")
    expect(page.locator("#orders .order-row")).to_have_count(0)
    report = recorded(store, assertion_id, until=lambda r: r["feedback"])
    assert [(f["outcome"], f["accepted_suggestions"]) for f in report["feedback"]] == [
        ("accepted", [suggestion["uuid"]])]

    # A new order, overridden with one of the card's reasons and a comment.
    page.click("#add-order")
    page.locator("#orders .o-choice").select_option(label="E0221 Infrared heating pad system")
    second_id = send_e0221(page)
    card = page.locator(".card")
    card.locator(".override-reason").select_option(label="Coverage verified with the member's health plan")
    card.locator(".override-comment").fill("plan confirmed by phone")
    card.locator("button.override").click()
    expect(card.locator(".feedback-status")).to_contain_text("feedback sent (overridden)")
    report = recorded(store, second_id, until=lambda r: r["feedback"])
    [entry] = report["feedback"]
    assert (entry["outcome"], entry["override_code"], entry["override_comment"]) == (
        "overridden", "benefit-verified", "plan confirmed by phone")
    assert report["client_iss"] == "urn:cds-coverage:console"

    # The insights count both decisions, the acceptance and the override, by policy and by reason.
    page.click("text=Insights")
    policy = page.locator("#policy-table tr[data-policy='DME101.045']")
    expect(policy.locator(".decisions")).to_have_text("2")
    expect(policy.locator(".with-feedback")).to_have_text("2")
    expect(policy.locator(".accepted")).to_have_text("1")
    expect(policy.locator(".overridden")).to_have_text("1")
    expect(policy.locator(".override-rate")).to_have_text("50%")
    expect(page.locator("#reason-table tr[data-code='benefit-verified'] .n")).to_have_text("1")
    expect(page.locator("#recent-table")).to_contain_text(second_id)
    page.select_option("select[name=outcome]", "covered")
    page.click("button[type=submit]")
    expect(page.locator("#policy-table")).to_contain_text("No decisions.")
    store.close()


def test_a_member_scenario_edited_in_the_form_changes_the_answer(service, page):
    url, _ = service
    page.goto(f"{url}/console/")
    page.select_option("#scenario", "il-child-hmo")
    expect(page.locator("#birth-date")).to_have_value("2017-02-09")
    expect(page.locator("#state")).to_have_value("IL")
    page.click("#send")
    card = page.locator(".card")
    expect(card.locator(".summary")).to_contain_text("may be covered under an Illinois mandate")
    expect(card.locator(".indicator")).to_have_text("info")
    row = page.locator("#coverage-table tbody tr")
    expect(row.locator(".c-covered")).to_have_text("covered")
    expect(row.locator(".c-pa-needed")).to_have_text("auth-needed")

    page.fill("#birth-date", "1990-01-01")
    page.locator("#birth-date").dispatch_event("change")
    page.fill("#condition-code", "Q90.9")
    page.fill("#condition-text", "Down syndrome, unspecified")
    page.click("#add-condition")
    page.click("#send")
    expect(card.locator(".summary")).to_have_text([E0221_SUMMARY])
    expect(card.locator(".detail")).to_contain_text("by the plan's rule a patient of 26 or older is not a child")
    expect(row.locator(".c-covered")).to_have_text("not-covered")
    sent = json.loads(page.locator("#request-json").text_content())["prefetch"]
    assert sent["patient"]["birthDate"] == "1990-01-01"
    assert sent["conditions"]["entry"][-1]["resource"]["code"]["coding"][0]["code"] == "Q90.9"

    # The CRD configuration options the service declares: coverage-info off drops the system action.
    expect(page.locator("#opt-max-cards")).to_have_attribute("placeholder", "10")
    page.uncheck("#opt-coverage-info")
    page.click("#send")
    expect(page.locator("#coverage-table tbody")).to_have_text("No system action.")
    expect(card.locator(".summary")).to_have_text([E0221_SUMMARY])
    extension = json.loads(page.locator("#request-json").text_content())["extension"]
    assert extension == {"davinci-crd.configuration": {"coverage-info": False}, "davinci-crd.requestedVersion": "2.2"}


@pytest.fixture
def script_card_service(httpserver: HTTPServer) -> str:
    """Another CDS service on loopback whose card detail carries HTML, script and a javascript: link."""
    detail = ("**Bold** <script>window.pwned = 1</script> <img src=x onerror=\"window.pwned = 2\"> "
              "[click](javascript:window.pwned=3)")
    httpserver.expect_request("/cds-services", method="GET").respond_with_json(
        {"services": [{"id": "other", "hook": "order-sign", "description": "another payer"}]})
    httpserver.expect_request("/cds-services/other", method="POST").respond_with_json(
        {"cards": [{"uuid": "c-1", "summary": "<b>not bold</b>", "indicator": "info", "detail": detail,
                    "source": {"label": "Other payer", "url": "javascript:window.pwned=4"}}]})
    return httpserver.url_for("").rstrip("/")


def test_a_card_detail_with_script_shows_it_as_text_and_runs_nothing(service, page, script_card_service):
    url, _ = service
    page.goto(f"{url}/console/")
    page.fill("#target", script_card_service)
    page.click("#discover")
    expect(page.locator("#discovery-status")).to_contain_text(f"1 service(s) at {script_card_service}")
    page.click("#send")
    detail = page.locator(".card .detail")
    expect(detail).to_contain_text('<script>window.pwned = 1</script> <img src=x onerror="window.pwned = 2">')
    expect(detail.locator("strong")).to_have_text("Bold")
    assert detail.locator("script, img").count() == 0
    assert page.locator(".card a[href^='javascript']").count() == 0
    expect(page.locator(".card .summary")).to_have_text("<b>not bold</b>")
    page.locator(".card .detail").click()
    assert page.evaluate("window.pwned") is None


def test_outside_demo_the_console_is_refused_without_the_admin_credential(make_app, browser):
    served = serve_on_loopback(make_app(console_enabled=True, console_admin_token=ADMIN_TOKEN))
    url = next(served)
    try:
        anonymous = browser.new_context()  # its request API: a headless page cannot answer the Basic challenge
        for path in ("/console/", "/console/insights", "/console/policies"):
            refused = anonymous.request.get(url + path)
            assert refused.status == 401 and refused.headers["www-authenticate"].startswith("Basic")
            assert "DME101.045" not in refused.text()
        assert anonymous.request.post(url + "/console/api/send", data={}).status == 401
        anonymous.close()
        wrong = browser.new_context(http_credentials={"username": "admin", "password": "not-the-credential"})
        assert wrong.request.get(url + "/console/insights").status == 401
        wrong.close()
        admin = browser.new_context(http_credentials={"username": "admin", "password": ADMIN_TOKEN})
        page = admin.new_page()
        assert page.goto(url + "/console/insights").status == 200
        expect(page.locator("h1")).to_have_text("How the policies are doing")
        admin.close()
    finally:
        served.close()
    served = serve_on_loopback(make_app())  # not enabled: not served at all
    url = next(served)
    try:
        context = browser.new_context()
        assert context.new_page().goto(url + "/console/").status == 404
        context.close()
    finally:
        served.close()


def test_the_screenshot_script_makes_the_pictures_of_the_docs(service, tmp_path):
    """docs/console.md's pictures come from scripts/screenshots.py (it adds decisions: run last here)."""
    url, _ = service
    made = subprocess.run([sys.executable, str(ROOT / "scripts" / "screenshots.py"), "--url", url, "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stderr
    for name in ("console-order.png", "console-insights.png", "console-policies.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
        assert f"]({name})" in (ROOT / "docs" / "console.md").read_text()
