"""Fetching from an EHR's FHIR server: allow-list, time budget, size bound, redirects, faults; a real server on
loopback for every case."""

import gzip
import json
import socket
import threading
import time

import pytest
from werkzeug import Response

from cds.config import Settings
from cds.member.fetch import Fetched, FetchError, FhirFetcher
from cds.urls import fhir_server_refusal

BUDGET = 0.5
MAX_BYTES = 64 * 1024
PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "2016-05-14"}


@pytest.fixture(scope="module")
def fetcher():
    settings = Settings(demo=True, fetch_budget_seconds=BUDGET, fetch_max_bytes=MAX_BYTES, fetch_max_pages=3)
    return FhirFetcher(settings.resolved())


@pytest.fixture
def release():
    """Set at teardown so server threads that hold a response back finish."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def listener():
    """A listening socket that never accepts: whether anyone tried to connect can be asked afterwards."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def connection_attempted(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
    except BlockingIOError:
        return False
    return True


def fetch_one(fetcher, base, path="Patient/p1", token="secret-token"):
    started = time.monotonic()
    result = fetcher.fetch_all(base, token, {"key": path})["key"]
    return result, time.monotonic() - started


# ------------------------------------------------------------------------------------------- allow-list


ALLOWED = ("https://ehr.example.org/fhir", "https://other.example.org:8443/r4/")


@pytest.mark.parametrize("url", [
    "https://ehr.example.org/fhir",
    "https://EHR.example.org:443/fhir/tenant-7",
    "https://other.example.org:8443/r4",
])
def test_urls_under_an_allowed_base_are_allowed(url):
    assert fhir_server_refusal(url, ALLOWED, demo=False) is None


@pytest.mark.parametrize(("url", "why"), [
    ("https://ehr.example.org/fhirx", "allow-list"),
    ("https://ehr.example.org/admin", "allow-list"),
    ("https://ehr.example.org:8443/fhir", "allow-list"),
    ("https://ehr.example.org.evil.example/fhir", "allow-list"),
    ("https://other.example.org/r4", "allow-list"),
    ("http://ehr.example.org/fhir", "http is allowed only in demo mode"),
    ("https://user:pw@ehr.example.org/fhir", "credentials"),
    ("https://ehr.example.org/fhir/../admin", ".. segments"),
    ("https://ehr.example.org/fhir/%2e%2e/admin", ".. segments"),
    ("https://ehr.example.org:99999/fhir", "port"),
    ("http://127.0.0.1:8080/fhir", "http is allowed only in demo mode"),
    ("https://127.0.0.1/fhir", "allow-list"),
])
def test_other_urls_are_refused_saying_why(url, why):
    assert why in fhir_server_refusal(url, ALLOWED, demo=False)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9999/fhir", "http://localhost/fhir", "http://[::1]:8080/r4"])
def test_demo_mode_allows_loopback_over_http(url):
    assert fhir_server_refusal(url, (), demo=True) is None


def test_demo_mode_allows_no_other_host():
    assert fhir_server_refusal("http://10.0.0.8/fhir", (), demo=True)
    assert fhir_server_refusal("https://ehr.example.org/fhir", (), demo=True)


def test_the_allowed_list_is_an_argument_so_it_can_differ_per_client():
    assert fhir_server_refusal("https://ehr.example.org/fhir", ["https://ehr.example.org/fhir"], demo=False) is None
    assert fhir_server_refusal("https://ehr.example.org/fhir", ["https://b.example/fhir"], demo=False)


def test_refused_server_gets_no_connection_at_all(listener):
    port = listener.getsockname()[1]
    fetcher = FhirFetcher(Settings(fhir_servers=("https://ehr.example.org/fhir",)).resolved())
    for base in (f"http://127.0.0.1:{port}/fhir", f"https://127.0.0.1:{port}/fhir"):
        result, _ = fetch_one(fetcher, base)
        assert isinstance(result, FetchError)
    result = fetcher.fetch_all(f"http://127.0.0.1:{port}", None, {"a": "Patient/1"},
                               allowed=[f"http://127.0.0.1:{port}"])["a"]
    assert "http is allowed only in demo mode" in str(result)
    assert not connection_attempted(listener)


# ---------------------------------------------------------------------------------------------- success


def test_read_sends_accept_and_bearer_token(fetcher, fhir_server):
    fhir_server.expect_request("/fhir/Patient/p1", headers={"Accept": "application/fhir+json",
                                                             "Accept-Encoding": "gzip, deflate",
                                                             "Authorization": "Bearer secret-token"}
                               ).respond_with_json(PATIENT)
    result, _ = fetch_one(fetcher, fhir_server.url_for("/fhir"))
    assert result == Fetched(PATIENT)


def test_no_authorization_header_without_a_token(fetcher, fhir_server):
    fhir_server.expect_request("/fhir/Patient/p1").respond_with_json(PATIENT)
    result, _ = fetch_one(fetcher, fhir_server.url_for("/fhir"), token=None)
    assert result == Fetched(PATIENT)
    request, _ = fhir_server.log[0]
    assert "Authorization" not in request.headers


def test_keys_are_fetched_concurrently(fhir_server):
    fetcher = FhirFetcher(Settings(demo=True, fetch_budget_seconds=1.0).resolved())

    def slow(request):
        time.sleep(0.4)
        return Response(b'{"resourceType": "Patient"}', content_type="application/fhir+json")

    fhir_server.expect_request("/fhir/Patient/1").respond_with_handler(slow)
    started = time.monotonic()
    results = fetcher.fetch_all(fhir_server.url_for("/fhir"), None, {k: "Patient/1" for k in "abc"})
    assert all(isinstance(r, Fetched) for r in results.values()), results
    assert time.monotonic() - started < 1.0  # one after the other would take 1.2 s


def test_same_host_redirect_is_followed_with_the_token(fetcher, fhir_server):
    fhir_server.expect_request("/fhir/Patient/p1").respond_with_data(
        status=302, headers={"Location": "/fhir/Patient/p1-merged"})
    fhir_server.expect_request("/fhir/Patient/p1-merged", headers={"Authorization": "Bearer secret-token"}
                               ).respond_with_json(PATIENT)
    result, _ = fetch_one(fetcher, fhir_server.url_for("/fhir"))
    assert result == Fetched(PATIENT)


# ------------------------------------------------------------------------------------------------ faults


def test_redirect_to_another_host_is_not_followed(fetcher, fhir_server, listener):
    elsewhere = f"http://localhost:{listener.getsockname()[1]}/fhir/Patient/p1"
    fhir_server.expect_request("/fhir/Patient/p1").respond_with_data(status=307, headers={"Location": elsewhere})
    result, _ = fetch_one(fetcher, fhir_server.url_for("/fhir"))
    assert isinstance(result, FetchError)
    assert "redirected elsewhere" in str(result) and "another host" in str(result)
    assert not connection_attempted(listener)


@pytest.mark.parametrize(("status", "token", "message"), [
    (401, "secret-token", "refused the access token (HTTP 401)"),
    (403, "secret-token", "refused the access token (HTTP 403)"),
    (401, None, "requires authorization and the request carried none"),
    (404, "secret-token", "answered HTTP 404"),
    (500, "secret-token", "answered HTTP 500"),
    (503, "secret-token", "answered HTTP 503"),
])
def test_error_statuses_say_what_happened(fetcher, fhir_server, status, token, message):
    fhir_server.expect_request("/fhir/Patient/p1").respond_with_json(
        {"resourceType": "OperationOutcome", "issue": []}, status=status)
    result, _ = fetch_one(fetcher, fhir_server.url_for("/fhir"), token=token)
    assert isinstance(result, FetchError)
    assert message in str(result)
    assert "secret-token" not in str(result)


@pytest.mark.parametrize(("body", "message"), [
    (b"<html><body>Service temporarily unavailable</body></html>", "something other than JSON"),
    (b'{"resourceType": "Patient", "id": ', "something other than JSON"),
    (b"\xff\xfe\x00garbage", "something other than JSON"),
    (b'[{"resourceType": "Patient"}]', "not a FHIR resource"),
    (b'{"id": "p1"}', "not a FHIR resource"),
    (b'{"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing"}]}',
     "OperationOutcome"),
])
def test_garbage_is_a_clear_failure(fetcher, fhir_server, body, message):
    fhir_server.expect_request("/fhir/Patient/p1").respond_with_data(body, content_type="application/fhir+json")
    result, _ = fetch_one(fetcher, fhir_server.url_for("/fhir"))
    assert isinstance(result, FetchError)
    assert message in str(result)


def oversized_json() -> bytes:
    return b'{"resourceType": "Patient", "text": "' + b"x" * (MAX_BYTES * 4) + b'"}'


@pytest.mark.parametrize("response", [
    lambda: Response(oversized_json(), content_type="application/fhir+json"),  # with Content-Length
    lambda: Response(iter([oversized_json()[i:i + 4096] for i in range(0, len(oversized_json()), 4096)]),
                     content_type="application/fhir+json"),  # streamed, no length
    lambda: Response(gzip.compress(oversized_json() * 40), content_type="application/fhir+json",
                     headers={"Content-Encoding": "gzip"}),  # small on the wire, huge once decoded
], ids=["declared", "streamed", "gzip-bomb"])
def test_oversized_responses_are_refused(fetcher, fhir_server, response):
    fhir_server.expect_request("/fhir/Patient/p1").respond_with_handler(lambda request: response())
    result, _ = fetch_one(fetcher, fhir_server.url_for("/fhir"))
    assert isinstance(result, FetchError)
    assert f"more than {MAX_BYTES} bytes" in str(result)


def hanging(release):
    def hang(request):
        release.wait(5)
        return Response(b"{}")
    return hang


def test_a_server_that_never_answers_times_out_within_the_budget(fetcher, fhir_server, release):
    fhir_server.expect_request("/fhir/Patient/p1").respond_with_handler(hanging(release))
    result, elapsed = fetch_one(fetcher, fhir_server.url_for("/fhir"))
    assert isinstance(result, FetchError)
    assert "did not answer within 0.5 s" in str(result)
    assert elapsed < BUDGET + 0.3


def test_a_slow_drip_cannot_outlast_the_budget(fetcher, fhir_server, release):
    def drip():
        yield b'{"resourceType": "Patient", "text": "'
        while not release.wait(0.05):
            yield b"x"

    fhir_server.expect_request("/fhir/Patient/p1").respond_with_handler(
        lambda request: Response(drip(), content_type="application/fhir+json"))
    result, elapsed = fetch_one(fetcher, fhir_server.url_for("/fhir"))
    assert isinstance(result, FetchError)
    assert "did not answer within" in str(result)
    assert elapsed < BUDGET + 0.3


def test_a_server_that_is_down_fails_fast(fetcher):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    result, elapsed = fetch_one(fetcher, f"http://127.0.0.1:{port}/fhir")
    assert isinstance(result, FetchError)
    assert "could not be reached" in str(result)
    assert elapsed < BUDGET


def test_one_budget_for_the_whole_call(fhir_server, release):
    fetcher = FhirFetcher(Settings(demo=True, fetch_budget_seconds=BUDGET).resolved())
    fhir_server.expect_request("/fhir/Patient/fast").respond_with_json(PATIENT)
    fhir_server.expect_request("/fhir/Patient/slow").respond_with_handler(hanging(release))
    started = time.monotonic()
    results = fetcher.fetch_all(fhir_server.url_for("/fhir"), None, {"fast": "Patient/fast", "slow": "Patient/slow"})
    assert time.monotonic() - started < BUDGET + 0.3
    assert results["fast"] == Fetched(PATIENT)
    assert isinstance(results["slow"], FetchError)


# -------------------------------------------------------------------------------------------- pagination


def page(entries, next_url=None):
    bundle = {"resourceType": "Bundle", "type": "searchset",
              "entry": [{"resource": {"resourceType": "Condition", "id": str(i)}} for i in entries]}
    if next_url:
        bundle["link"] = [{"relation": "self", "url": "ignored"}, {"relation": "next", "url": next_url}]
    return bundle


def ids(fetched: Fetched) -> list[str]:
    return [e["resource"]["id"] for e in fetched.resource["entry"]]


def test_next_links_are_followed_with_the_token(fetcher, fhir_server):
    base = fhir_server.url_for("/fhir")
    fhir_server.expect_request("/fhir/Condition", query_string="patient=p1").respond_with_json(
        page([1, 2], f"{base}?_getpages=abc&_offset=2"))
    fhir_server.expect_request("/fhir", query_string="_getpages=abc&_offset=2",
                               headers={"Authorization": "Bearer secret-token"}).respond_with_json(page([3]))
    result, _ = fetch_one(fetcher, base, "Condition?patient=p1")
    assert ids(result) == ["1", "2", "3"]
    assert result.incomplete is None
    assert "link" not in result.resource


def test_pages_are_read_up_to_the_bound(fetcher, fhir_server):
    base = fhir_server.url_for("/fhir")
    counter = iter(range(100))

    def endless(request):
        n = next(counter)
        return Response(json.dumps(page([n], f"{base}/Condition?page={n + 1}")), content_type="application/fhir+json")

    fhir_server.expect_request("/fhir/Condition").respond_with_handler(endless)
    result, _ = fetch_one(fetcher, base, "Condition?patient=p1")
    assert ids(result) == ["0", "1", "2"]
    assert "only the first 3 pages" in result.incomplete
    assert len(fhir_server.log) == 3


def test_next_link_to_another_host_is_not_followed(fetcher, fhir_server, listener):
    elsewhere = f"http://localhost:{listener.getsockname()[1]}/fhir/Condition?page=2"
    fhir_server.expect_request("/fhir/Condition").respond_with_json(page([1], elsewhere))
    result, _ = fetch_one(fetcher, fhir_server.url_for("/fhir"), "Condition?patient=p1")
    assert ids(result) == ["1"]
    assert "another host" in result.incomplete
    assert not connection_attempted(listener)


def test_a_failing_later_page_leaves_the_results_marked_incomplete(fetcher, fhir_server):
    base = fhir_server.url_for("/fhir")
    fhir_server.expect_request("/fhir/Condition", query_string="patient=p1").respond_with_json(
        page([1], f"{base}/Condition?page=2"))
    fhir_server.expect_request("/fhir/Condition", query_string="page=2").respond_with_data("oops", status=500)
    result, _ = fetch_one(fetcher, base, "Condition?patient=p1")
    assert ids(result) == ["1"]
    assert "HTTP 500" in result.incomplete
