"""A tiny FHIR server on loopback for the fallback fetch: the bench member's Patient, Coverage and Conditions.

Answers are serialised once; searches return the member's resources whatever the query. It counts what it
is asked, so the report can say whether the service fetched at all.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import orjson

from bench import scenarios

FHIR_JSON = "application/fhir+json"
NOT_FOUND = orjson.dumps({"resourceType": "OperationOutcome",
                          "issue": [{"severity": "error", "code": "not-found", "diagnostics": "Not found."}]})


class FhirServer:
    def __init__(self, conditions: int = 3):
        self.answers = {
            f"/fhir/Patient/{scenarios.PATIENT_ID}": orjson.dumps(scenarios.patient()),
            "/fhir/Coverage": orjson.dumps(scenarios.coverage_bundle()),
            "/fhir/Condition": orjson.dumps(scenarios.conditions_bundle(conditions)),
        }
        self.counts: Counter = Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def counted(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def __enter__(self) -> FhirServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real FHIR server

            def setup(self) -> None:
                super().setup()
                # Head and body go out in separate writes: without this, Nagle's algorithm holds the body
                # until the client's delayed ACK, about 40 ms per fetch.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path.rstrip("/")
                body = owner.answers.get(path)
                resource_type = path.removeprefix("/fhir/").split("/")[0] or "other"
                with owner._lock:
                    owner.counts[resource_type if body else "not-found"] += 1
                    if self.headers.get("Authorization") == f"Bearer {scenarios.ACCESS_TOKEN}":
                        owner.counts["with-access-token"] += 1
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", FHIR_JSON)
                self.send_header("Content-Length", str(len(body or NOT_FOUND)))
                self.end_headers()
                self.wfile.write(body or NOT_FOUND)

            def log_message(self, *args) -> None:  # quiet: the counts are the record
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
