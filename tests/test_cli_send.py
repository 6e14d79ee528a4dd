"""`cds discover` and `cds send` against the real app on loopback, and against a loopback CDS service that
answers with realistic cards and coverage information."""

import json
import re
import socket
from pathlib import Path

import pytest

from cds.tools.printer import COVERAGE_INFORMATION
from hooks import HOOKS
from tests.helpers import DATA, EXAMPLES, load, run_cds

REFERENCE_REQUESTS = sorted(path for path in DATA.glob("*.json") if "hook" in json.loads(path.read_text()))

INFRARED_CARD = {
    "uuid": "5b1c6b7e-0a43-4a4e-9a55-8d0f8f0f6a11",
    "summary": "Infrared therapy devices are not medically necessary (policy DME101.045)",
    "indicator": "warning",
    "source": {
        "label": "Blue Cross and Blue Shield of Illinois",
        "topic": {"system": "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp", "code": "coverage-info",
                  "display": "Coverage Information"},
    },
    "detail": "The use of infrared therapy devices and any related accessories **is considered not medically "
              "necessary**.\n\n- Policy: [DME101.045](https://medicalpolicy.example.org/DME101.045)\n"
              "- Basis: CMS NCD 270.6",
    "links": [{"label": "CMS NCD 270.6 Infrared Therapy Devices",
               "url": "https://www.cms.gov/medicare-coverage-database/view/ncd.aspx?NCDId=315", "type": "absolute"}],
    "suggestions": [{
        "label": "Remove the infrared heating pad order",
        "uuid": "0d1f7a48-5f0e-4a36-9d0e-2f1b6b7cc2a1",
        "isRecommended": True,
        "actions": [{"type": "delete", "description": "Remove the E0221 order", "resourceId": "DeviceRequest/ir-1"}],
    }],
    "selectionBehavior": "at-most-one",
    "overrideReasons": [
        {"system": "http://example.org/override-reasons", "code": "il-child", "display": "Illinois child mandate"},
        {"system": "http://example.org/override-reasons", "code": "declined", "display": "Patient will self-pay"},
    ],
    "extension": {"davinci-crd.associated-resource": [{"reference": "DeviceRequest/ir-1"}]},
}

NOT_COVERED_ACTION = {
    "type": "update",
    "description": "Coverage information for DeviceRequest/ir-1",
    "resource": {
        "resourceType": "DeviceRequest", "id": "ir-1", "status": "draft", "intent": "original-order",
        "codeCodeableConcept": {"coding": [{"system": "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                                            "code": "E0221"}]},
        "subject": {"reference": "Patient/pat1"},
        "extension": [{"url": COVERAGE_INFORMATION, "extension": [
            {"url": "coverage", "valueReference": {"reference": "Coverage/cov1"}},
            {"url": "covered", "valueCode": "not-covered"},
            {"url": "reason", "valueCodeableConcept": {"text": "Not medically necessary under DME101.045"}},
            {"url": "date", "valueDate": "2025-10-01"},
            {"url": "coverage-assertion-id", "valueString": "a1b2c3d4"},
        ]}],
    },
}


def realistic_answer() -> dict:
    """Our infrared card and not-covered action, then the CRD IG's and Inferno's example shapes."""
    ig = load("answers/crd-2.2-response.json")
    return {
        "cards": [INFRARED_CARD, *ig["cards"]],
        "systemActions": [NOT_COVERED_ACTION, *ig["systemActions"],
                          load("answers/inferno-coverage-info-conditional.json")],
    }


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# ------------------------------------------------------------------------------------------------ discover


@pytest.mark.parametrize("path", ["", "/cds-services", "/cds-services/"])
def test_discover_shows_each_service_of_the_real_app_as_a_table_row(live_service, path):
    result = run_cds("discover", live_service + path)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "HOOK", "TITLE", "PREFETCH", "KEYS"]
    rows = {line.split("  ")[0].strip(): [cell.strip() for cell in line.split("  ") if cell.strip()]
            for line in lines[1:]}
    assert set(rows) == {hook.service_id for hook in HOOKS}
    for hook in HOOKS:
        cells = rows[hook.service_id]
        assert cells[1] == hook.name
        assert cells[2] == hook.title
        assert cells[3].startswith("patient, coverage, conditions")
    # Not a terminal: plain text, aligned columns, no escape codes, no box drawing, no padding.
    assert "\x1b[" not in result.stdout
    assert not any("\u2500" <= char <= "\u257f" for char in result.stdout)
    assert all(line == line.rstrip() for line in lines)
    assert len({line.index(" ") for line in lines[1:]}) >= 1


def test_discover_error_status_prints_the_operation_outcome_and_exits_1(httpserver_ipv4):
    httpserver_ipv4.expect_request("/cds-services").respond_with_json(
        {"resourceType": "OperationOutcome",
         "issue": [{"severity": "error", "code": "security", "diagnostics": "Client not registered"}]},
        status=401)
    result = run_cds("discover", httpserver_ipv4.url_for("/"))
    assert result.exit_code == 1
    assert "answered 401" in result.stderr
    assert "error security: Client not registered" in result.stderr
    assert result.stdout == ""


def test_discover_says_when_nothing_listens():
    url = closed_port_url()
    result = run_cds("discover", url)
    assert result.exit_code == 1
    assert f"GET {url}/cds-services: cannot connect" in result.stderr


def test_discover_refuses_a_url_that_is_not_http():
    result = run_cds("discover", "ftp://127.0.0.1/cds-services")
    assert result.exit_code == 2
    assert "not an absolute http(s) URL" in result.stderr


# ---------------------------------------------------------------------------------------------------- send


def test_send_routes_each_reference_request_to_the_service_for_its_hook(live_service):
    result = run_cds("send", live_service, *REFERENCE_REQUESTS)
    assert result.exit_code == 0, result.stderr
    for path in REFERENCE_REQUESTS:
        service = "order-select-crd" if load(path.name)["hook"] == "order-select" else "order-sign-crd"
        assert f"{path} → {live_service}/cds-services/{service}" in result.stdout
    assert result.stdout.count("No cards: the service has no guidance for this request.") == len(REFERENCE_REQUESTS)


def test_send_routes_dispatch_and_booking_examples_to_their_services(live_service):
    examples = [EXAMPLES / "order-dispatch-e0221-supplier.json", EXAMPLES / "appointment-book-97026-clinic.json"]
    result = run_cds("send", live_service, *examples)
    assert result.exit_code == 0, result.stderr
    for path, service in zip(examples, ("order-dispatch-crd", "appointment-book-crd"), strict=True):
        assert f"{path} → {live_service}/cds-services/{service}" in result.stdout
    assert "DeviceRequest/dr-e0221-4821: not covered" in result.stdout
    assert "Appointment/apt-97026-1142: not covered" in result.stdout


def test_send_json_of_several_files_prints_one_array_naming_each_file(live_service):
    url = f"{live_service}/cds-services/order-sign-crd"
    files = [DATA / "sandbox-order-sign-rx.json", DATA / "inferno-order-select.json", DATA / "inferno-order-sign.json"]
    result = run_cds("send", url, *files, "--json")
    assert result.exit_code == 1  # one call failed
    answers = json.loads(result.stdout)
    assert [a["file"] for a in answers] == [str(f) for f in files]
    assert {a["service"] for a in answers} == {url}
    assert answers[0]["answer"] == answers[2]["answer"] == {"cards": []}
    assert answers[1]["error"]["resourceType"] == "OperationOutcome" and "answer" not in answers[1]


def test_send_error_status_prints_the_outcome_goes_on_and_exits_1(live_service):
    url = f"{live_service}/cds-services/order-sign-crd"
    result = run_cds("send", url, DATA / "inferno-order-select.json", DATA / "inferno-order-sign.json")
    assert result.exit_code == 1
    assert f"Error: {DATA / 'inferno-order-select.json'}: {url} answered 400 BAD REQUEST" in result.stderr
    assert "error not-supported at hook: Service order-sign-crd answers the hook order-sign, not 'order-select'." \
        in result.stderr
    assert f"{DATA / 'inferno-order-sign.json'} → {url}" in result.stdout  # the next file was still sent


def test_send_json_error_prints_the_raw_outcome(live_service):
    result = run_cds("send", f"{live_service}/cds-services/no-such-service", DATA / "inferno-order-sign.json",
                     "--json")
    assert result.exit_code == 1
    outcome = json.loads(result.stdout)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "not-found"
    assert "answered 404" in result.stderr


def test_send_renders_cards_and_coverage_information_for_a_person(httpserver_ipv4):
    httpserver_ipv4.expect_request("/cds-services/crd", method="POST").respond_with_json(realistic_answer())
    result = run_cds("send", httpserver_ipv4.url_for("/cds-services/crd"), DATA / "sandbox-order-sign-rx.json")
    assert result.exit_code == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    # The card: indicator, summary, source, Markdown rendered (no markup left), links, suggestions, reasons.
    assert "1.  WARNING  Infrared therapy devices are not medically necessary (policy DME101.045)" in lines
    assert ("From Blue Cross and Blue Shield of Illinois · Coverage Information · for DeviceRequest/ir-1 · "
            "card 5b1c6b7e-0a43-4a4e-9a55-8d0f8f0f6a11" in lines)
    assert ("The use of infrared therapy devices and any related accessories is considered not medically "
            "necessary.") in " ".join(result.stdout.split())  # however the paragraph wraps
    assert "**" not in result.stdout
    assert "• Policy: DME101.045 (https://medicalpolicy.example.org/DME101.045)" in lines
    assert "• CMS NCD 270.6 Infrared Therapy Devices: " \
           "https://www.cms.gov/medicare-coverage-database/view/ncd.aspx?NCDId=315" in lines
    assert "Suggestions (choose at most one)" in lines
    assert "• Remove the infrared heating pad order (recommended)" in lines
    assert "delete DeviceRequest/ir-1: Remove the E0221 order" in lines
    assert "Override reasons: Illinois child mandate; Patient will self-pay" in lines
    # The CRD IG example's cards, including a delete + create suggestion.
    assert "2.  INFO  Patient is overdue for a PAP smear" in lines
    assert "create DeviceRequest/BBB: Add specific (discounted) device order" in lines
    # One line per coverage-information action.
    system_actions = lines[lines.index("System actions") + 1:]
    assert system_actions == [
        'DeviceRequest/ir-1: not covered · reason "Not medically necessary under DME101.045" · assertion a1b2c3d4',
        "ServiceRequest/idfromcontext: covered · prior auth satisfied (Q8U119) · documentation: conditional · "
        'information needed: OTH · reason "In-network required unless exigent circumstances"; '
        '"Diagnosis needed to determine documentation requirements" · assertion 12345ABC',
        "DeviceRequest/devreq-015-e0250: coverage conditional · documentation: clinical · "
        "information needed: performer · assertion 550534aef317a1ceb97d8eac9577428c4b7714654e819cd64e42844b7e42ec6d",
    ]
    assert all(line == line.rstrip() for line in result.stdout.splitlines())  # no padding in a pipe


def test_send_json_prints_the_answer_as_sent(httpserver_ipv4):
    httpserver_ipv4.expect_request("/cds-services/crd", method="POST").respond_with_json(realistic_answer())
    result = run_cds("send", httpserver_ipv4.url_for("/cds-services/crd"), DATA / "sandbox-order-sign-rx.json",
                     "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == realistic_answer()


def test_send_posts_the_file_as_it_is(httpserver_ipv4):
    httpserver_ipv4.expect_request("/cds-services/crd", method="POST",
                                   json=load("sandbox-order-sign-pama.json")).respond_with_json({"cards": []})
    result = run_cds("send", httpserver_ipv4.url_for("/cds-services/crd"), DATA / "sandbox-order-sign-pama.json")
    assert result.exit_code == 0, result.stderr
    httpserver_ipv4.check_assertions()


@pytest.mark.parametrize(("status", "body", "says"), [
    (502, "<html><body>Bad gateway</body></html>", "answered 502 BAD GATEWAY"),
    (200, '{"services": []}', "did not answer with CDS Hooks cards"),
    (200, "<html>not json</html>", "answered 200 but not with JSON"),
    (302, "", "answered 302 FOUND"),  # a redirect is not followed: the JWT's aud names this URL only
])
def test_send_unusable_answers_exit_1_with_what_came_back(httpserver_ipv4, status, body, says):
    httpserver_ipv4.expect_request("/cds-services/crd").respond_with_data(
        body, status=status, headers={"Location": "http://127.0.0.1:9/elsewhere"} if status == 302 else None)
    result = run_cds("send", httpserver_ipv4.url_for("/cds-services/crd"), DATA / "inferno-order-sign.json")
    assert result.exit_code == 1
    assert says in result.stderr
    if status == 502:
        assert "Bad gateway" in result.stderr


def test_send_refuses_a_file_that_is_not_a_hook_request(live_service, tmp_path: Path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = run_cds("send", live_service, broken)
    assert result.exit_code == 2
    assert f"{broken} is not a readable JSON file" in result.stderr
    result = run_cds("send", live_service, DATA / "sandbox-jwks.json")
    assert result.exit_code == 2
    assert "names no hook; give the service URL" in result.stderr


def test_send_says_when_no_service_answers_the_hook(httpserver_ipv4):
    httpserver_ipv4.expect_request("/cds-services").respond_with_json(
        {"services": [{"id": "pama", "hook": "order-select", "description": "imaging"}]})
    result = run_cds("send", httpserver_ipv4.url_for("/"), DATA / "inferno-order-sign.json")
    assert result.exit_code == 1
    assert "offers no service for order-sign; it offers pama (order-select)" in result.stderr


def test_send_in_a_terminal_colours_the_indicator_and_renders_markdown(httpserver_ipv4):
    httpserver_ipv4.expect_request("/cds-services/crd", method="POST").respond_with_json(realistic_answer())
    result = run_cds("send", httpserver_ipv4.url_for("/cds-services/crd"), DATA / "sandbox-order-sign-rx.json",
                     env={"FORCE_COLOR": "1"})  # what rich does for a terminal
    assert result.exit_code == 0
    assert "\x1b[1;30;43m WARNING \x1b[0m" in result.stdout
    assert "\x1b[1mconsidered not medically necessary\x1b[0m" in result.stdout  # the **bold** part
    assert "**" not in result.stdout


def test_in_a_pipe_no_line_is_broken_and_in_a_terminal_every_line_fits_its_width(httpserver_ipv4):
    httpserver_ipv4.expect_request("/cds-services/crd", method="POST").respond_with_json(realistic_answer())
    url, request = httpserver_ipv4.url_for("/cds-services/crd"), DATA / "sandbox-order-sign-rx.json"
    piped = run_cds("send", url, request, env={"COLUMNS": "60"})
    lines = piped.stdout.splitlines()
    assert any(len(line) > 60 for line in lines)  # plain text: long lines stay whole, whatever COLUMNS says
    assert "    The use of infrared therapy devices and any related accessories is considered not medically " \
           "necessary." in lines
    terminal = run_cds("send", url, request, env={"FORCE_COLOR": "1", "COLUMNS": "60"})
    text = re.sub(r"\x1b\[[0-9;]*m", "", terminal.stdout)
    assert all(len(line) <= 60 for line in text.splitlines()), max(text.splitlines(), key=len)
    words = " ".join(text.split())  # summary, source, links, override reasons: wrapped, not cut
    assert "Infrared therapy devices are not medically necessary (policy DME101.045)" in words
    assert "Override reasons: Illinois child mandate; Patient will self-pay" in words


def test_no_color_gives_plain_text_in_a_terminal_too(live_service):
    result = run_cds("discover", live_service, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert "\x1b[" not in result.stdout
    assert not any("\u2500" <= char <= "\u257f" for char in result.stdout)
    boxed = run_cds("discover", live_service, env={"FORCE_COLOR": "1", "COLUMNS": "200"})
    assert any("\u2500" <= char <= "\u257f" for char in boxed.stdout)  # a terminal gets the drawn table
