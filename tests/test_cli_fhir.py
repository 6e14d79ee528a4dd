"""`cds fhir serve`: a real loopback FHIR server process with the example patients, read by `cds order` and by
the real service's fallback fetch."""

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import EXAMPLES, run_cds

CDS = str(Path(sys.executable).with_name("cds"))


@pytest.fixture(scope="module")
def example_fhir() -> Iterator[str]:
    """`cds fhir serve --port 0` running; yields its base URL as its banner names it."""
    process = subprocess.Popen([CDS, "fhir", "serve", "--port", "0", "--examples", str(EXAMPLES)],
                               stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stderr.readline()
        found = re.match(r"FHIR server on (http://127\.0\.0\.1:\d+/fhir): (\d+) resources", banner)
        assert found, banner
        yield found.group(1)
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_reads_and_searches_answer_with_the_example_resources(example_fhir):
    request = json.loads((EXAMPLES / "il-child-cerebral-palsy-hmo.json").read_text())
    patient = requests.get(f"{example_fhir}/Patient/pat-il-5102", timeout=5)
    assert patient.status_code == 200 and patient.headers["Content-Type"] == "application/fhir+json"
    assert patient.json() == request["prefetch"]["patient"]
    coverage = requests.get(f"{example_fhir}/Coverage", params={"patient": "pat-il-5102", "status": "active"},
                            timeout=5).json()
    assert coverage["type"] == "searchset"
    prefetched = request["prefetch"]["coverage"]["entry"]
    assert [e["resource"] for e in coverage["entry"]] == [e["resource"] for e in prefetched]
    conditions = requests.get(f"{example_fhir}/Condition?patient=Patient/pat-il-5102&clinical-status=active",
                              timeout=5).json()
    assert {e["resource"]["id"] for e in conditions["entry"]} == \
        {e["resource"]["id"] for e in request["prefetch"]["conditions"]["entry"]}
    none = requests.get(f"{example_fhir}/Condition?patient=pat-il-5102&clinical-status=resolved", timeout=5).json()
    assert none["total"] == 0 and none["entry"] == []


@pytest.mark.parametrize(("path", "status"), [("Patient/nobody", 404), ("Patient/a/b/c", 404), ("", 404)])
def test_unknown_resources_get_an_operation_outcome(example_fhir, path, status):
    response = requests.get(f"{example_fhir}/{path}", timeout=5)
    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"
    assert requests.post(f"{example_fhir}/Patient", json={}, timeout=5).status_code == 405


@pytest.mark.parametrize("prefetch", ["--prefetch", "--no-prefetch"])
def test_cds_order_gets_the_example_answer_with_prefetch_or_by_fallback_fetch(example_fhir, live_service, prefetch):
    """Without prefetch the real service reads the patient from the FHIR server itself (demo mode: loopback)."""
    result = run_cds("order", live_service, "--fhir-server", example_fhir, "--patient", "pat-tx-4821",
                     "--code", "hcpcs|E0221", prefetch, "--json")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    [card] = answer["cards"]
    assert card["summary"] == "Infrared heating pad system (E0221) not covered: not medically necessary, policy " \
        "DME101.045"
    assert card["source"]["label"] == "Blue Cross and Blue Shield of Texas"  # the Coverage was read either way
    [action] = answer["systemActions"]
    coverage = action["resource"]["extension"][-1]["extension"][0]
    assert coverage == {"url": "coverage", "valueReference": {"reference": "Coverage/cov-bcbstx-4821"}}


def test_a_port_in_use_is_reported_as_such(example_fhir):
    port = example_fhir.split(":")[2].split("/")[0]
    result = subprocess.run([CDS, "fhir", "serve", "--port", port], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"Error: cannot listen on 127.0.0.1:{port}: Address already in use (another process uses it" \
        in result.stderr
