"""Assertions, runners and server helpers shared by the tests."""

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from click.testing import CliRunner, Result
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.serving import make_server

from cds.tools.cli import main

DATA = Path(__file__).parent / "data"
EXAMPLES = Path(__file__).parent.parent / "fhir_examples"


def load(name: str) -> dict:
    """A request body from tests/data (reference requests) or fhir_examples/."""
    path = DATA / name if (DATA / name).exists() else EXAMPLES / name
    return json.loads(path.read_text())


def serve_on_loopback(app, port: int = 0) -> Iterator[str]:
    """Serve `app` on loopback until the generator is closed; yields its base URL."""
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


@contextmanager
def silent_https_server() -> Iterator[tuple[str, Callable[[], bytes]]]:
    """An https FHIR base URL on loopback whose server accepts connections and never answers, so a fetch from it
    fails when its time budget runs out; `first_bytes()` is what the first connection sent (b"": nobody
    connected). A TLS ClientHello starts with byte 0x16: the service did try to fetch from it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)

        def first_bytes() -> bytes:
            try:
                connection, _ = listener.accept()
            except BlockingIOError:
                return b""
            with connection:
                connection.settimeout(5)
                return connection.recv(5)

        yield f"https://127.0.0.1:{listener.getsockname()[1]}/fhir", first_bytes


def outcome(response) -> dict:
    """The first issue of an OperationOutcome body, checked for the shape every error must have."""
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    issue = body["issue"][0]
    assert issue["severity"] == "error" and issue["diagnostics"]
    return issue


def run_cds(*args: object, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    """`cds ARGS` run in-process as from a script: output is not a terminal, so it is plain text."""
    return CliRunner().invoke(main, [str(arg) for arg in args], env=env, input=input, catch_exceptions=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 20) -> requests.Response:
    """The first answer of a server process starting on loopback; fails fast if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited with {process.returncode}"
        try:  # a request taken while no worker has booted yet waits for one: asked once, answered once
            return requests.get(url, timeout=(1, max(deadline - time.monotonic(), 1)))
        except (requests.ConnectionError, requests.Timeout):  # not listening yet
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """A sample's value in a Prometheus text exposition (0 when absent)."""
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def decide_order(order, facts, policies, devices=None, on=None):
    """The engine's decision on one order as the pipeline makes it (match, the order's own facts, decide), or None
    when no policy covers it."""
    from datetime import date

    from cds.member import order_facts
    from cds.pipeline import new_assertion_id
    from cds.policy import decide, match_order

    found = match_order(order, policies, devices)
    on = on or date.today()
    return decide(found, order_facts(facts, order, on), on, new_assertion_id()) if found else None


def device_request(concept=None, **extra):
    """A draft DeviceRequest as an EHR sends it, ordering `concept` (a CodeableConcept) when given."""
    from cds.fhir import parse_draft_order

    resource = {"resourceType": "DeviceRequest", "id": "dr-1", "status": "draft", "intent": "original-order",
                "subject": {"reference": "Patient/p1"}, **extra}
    if concept is not None:
        resource["codeCodeableConcept"] = concept
    return parse_draft_order(resource)


def service_request(concept):
    """A draft ServiceRequest for `concept`."""
    from cds.fhir import parse_draft_order

    return parse_draft_order({"resourceType": "ServiceRequest", "id": "sr-1", "status": "draft",
                              "intent": "original-order", "code": concept, "subject": {"reference": "Patient/p1"}})
