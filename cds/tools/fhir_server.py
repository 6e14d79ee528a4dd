"""`cds fhir serve`: a small read-only FHIR R4 server on loopback holding the example patients, their coverage,
conditions and orders (from the requests in fhir_examples/), so `cds order` and the service's fallback fetch
can be tried with nothing else running.

It answers reads (`Patient/ID`) and searches (`Coverage?patient=ID&status=active`), filtering on the patient
(`patient`, `subject`, `beneficiary`), `_id`, `status` and `clinical-status`; other search parameters are
ignored, as FHIR allows, and the Bundle's self link says which were used."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click

from cds.console.scenarios import examples_directory

FHIR_JSON = "application/fhir+json"
PATIENT_PARAMETERS = ("patient", "subject", "beneficiary")
USED_PARAMETERS = (*PATIENT_PARAMETERS, "_id", "status", "clinical-status")


def example_resources(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every resource with an id in the example requests' prefetch and draft orders, by (type, id); the first
    file (in name order) that holds a resource wins."""
    resources: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        request = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(request, dict) or "hook" not in request:
            continue
        values = [*(request.get("prefetch") or {}).values(), (request.get("context") or {}).get("draftOrders")]
        for resource in _flatten(values):
            resources.setdefault((resource["resourceType"], resource["id"]), resource)
    return resources


def _flatten(values: Iterable[Any]) -> Iterator[dict[str, Any]]:
    for value in values:
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            yield from _flatten(entry.get("resource") for entry in value.get("entry") or [] if isinstance(entry, dict))
        elif isinstance(value.get("resourceType"), str) and isinstance(value.get("id"), str):
            yield value


def matches(resource: dict[str, Any], parameters: dict[str, str]) -> bool:
    return all(_value_matches(resource, name, wanted.split(",")) for name, wanted in parameters.items())


def _value_matches(resource: dict[str, Any], name: str, wanted: list[str]) -> bool:
    """One search parameter; a comma means any of the values."""
    if name in PATIENT_PARAMETERS:
        fields = ("subject", "patient", "beneficiary") if name == "patient" else (name,)  # as FHIR R4 defines it
        field = next((resource[f] for f in fields if isinstance(resource.get(f), dict)), None)
        reference = field.get("reference") if isinstance(field, dict) else None
        return any(reference in (value, f"Patient/{value}") for value in wanted)
    if name == "clinical-status":
        return any(c.get("code") in wanted for c in (resource.get("clinicalStatus") or {}).get("coding") or [])
    return resource.get("id" if name == "_id" else name) in wanted


def outcome(code: str, text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}


class ExampleFhirServer:
    """The WSGI application: reads and searches over the example resources, under /fhir."""

    def __init__(self, resources: dict[tuple[str, str], dict[str, Any]]):
        self.resources = resources

    def answer(self, method: str, path: str, query: dict[str, str], base: str) -> tuple[int, dict[str, Any]]:
        if method not in ("GET", "HEAD"):
            return 405, outcome("not-supported", "This server is read-only.")
        parts = [part for part in path.removeprefix("/fhir").split("/") if part]
        if not path.startswith("/fhir") or not 1 <= len(parts) <= 2:
            return 404, outcome("not-found", "Not a FHIR read or search under /fhir.")
        if len(parts) == 2:
            resource = self.resources.get((parts[0], parts[1]))
            if resource is None:
                return 404, outcome("not-found", f"{parts[0]}/{parts[1]} is not known.")
            return 200, resource
        used = {name: value for name, value in query.items() if name in USED_PARAMETERS}
        found = [r for (kind, _), r in self.resources.items() if kind == parts[0] and matches(r, used)]
        self_url = f"{base}/{parts[0]}" + (f"?{urlencode(used)}" if used else "")
        return 200, {"resourceType": "Bundle", "type": "searchset", "total": len(found),
                     "link": [{"relation": "self", "url": self_url}],
                     "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r,
                                "search": {"mode": "match"}} for r in found]}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        from werkzeug.wrappers import Request, Response

        request = Request(environ)
        status, body = self.answer(request.method, request.path, request.args.to_dict(), request.host_url + "fhir")
        return list(Response(json.dumps(body), status, content_type=FHIR_JSON)(environ, start_response))


def patients_summary(resources: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    lines = []
    for (kind, resource_id), patient in sorted(resources.items()):
        if kind != "Patient":
            continue
        name: dict[str, Any] = next(iter(patient.get("name") or []), {})
        given = " ".join(name.get("given") or [])
        state = next((a.get("state") for a in patient.get("address") or [] if a.get("state")), "")
        lines.append(f"  {resource_id:<16} {given} {name.get('family', '')}".rstrip()
                     + f", born {patient.get('birthDate', '?')}" + (f", {state}" if state else ""))
    return lines


@click.group()
def fhir() -> None:
    """A FHIR server to try `cds order` and the service's fallback fetch with."""


@fhir.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=8081, show_default=True,
              help="Port on 127.0.0.1 (0: any free port).")
@click.option("--examples", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory of example hook requests (default: fhir_examples/ here or in the source checkout).")
def serve(port: int, examples: Path | None) -> None:
    """Serve the example patients, coverage, conditions and orders read-only on loopback, until interrupted."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIServer, make_server

    class ThreadingServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    directory = examples or examples_directory()
    if directory is None:
        raise click.UsageError("no fhir_examples/ here or in the source checkout; give --examples DIR")
    resources = example_resources(directory)
    try:
        server = make_server("127.0.0.1", port, ExampleFhirServer(resources), server_class=ThreadingServer)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}"
                                   + (" (another process uses it; pick another with --port)"
                                      if exc.errno == 98 else "")) from None
    base = f"http://127.0.0.1:{server.server_port}/fhir"
    click.echo(f"FHIR server on {base}: {len(resources)} resources from {directory}. Patients:", err=True)
    click.echo("\n".join(patients_summary(resources)), err=True)
    click.echo(f"Try: cds order http://127.0.0.1:8080 --fhir-server {base} --patient pat-tx-4821 "
               "--code 'hcpcs|E0221'", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
