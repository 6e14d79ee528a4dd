"""The `cds` command: `cds serve` runs the service under gunicorn; `cds discover`, `cds send`, `cds order`
and `cds keys` script calls to any CDS service from a terminal."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click
from gunicorn.app.base import BaseApplication
from rich.text import Text

from cds.auth import load_registry
from cds.config import Settings, SettingsError
from cds.fhirjson import ID_PATTERN
from cds.jwks import JwksFetcher
from cds.pipeline import load_configured_plans, load_configured_policies
from cds.protocol import USER_ID_PATTERN
from cds.tools.audit import audit
from cds.tools.client import CallFailed, CdsClient, FhirClient, split_service_url
from cds.tools.order_request import ORDER_HOOKS, Coding, build_order_request
from cds.tools.printer import console, print_answer, print_failure, print_services
from cds.tools.signing import KeyFileError, Signer, new_private_jwk, public_jwks, read_private_jwk, write_private_jwk
from cds.web.serving import gunicorn_options

T = TypeVar("T")


class GunicornServer(BaseApplication):
    """Gunicorn configured from Settings by cds/gunicorn_config.py, the configuration the container uses too."""

    def __init__(self, settings: Settings):
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            if key in self.cfg.settings:  # as gunicorn reads a config file
                self.cfg.set(key, value)

    def load(self):
        from cds.web.app import create_app

        return create_app(self.settings)


@click.group()
def main() -> None:
    """Coverage decision support for EHR order entry (CDS Hooks 2.0, Da Vinci CRD)."""


@main.command()
@click.option("--host", help="Address to bind (default CDS_HOST or 127.0.0.1).")
@click.option("--port", type=int, help="Port to bind (default CDS_PORT or 8080).")
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes (default CDS_WORKERS or 2).")
@click.option("--demo", is_flag=True, help="Quick-start mode: loopback only, permissive CORS (also CDS_DEMO=1).")
def serve(host: str | None, port: int | None, workers: int | None, demo: bool) -> None:
    """Run the service under gunicorn."""
    try:
        settings = Settings.from_env(None, demo=True) if demo else Settings.from_env()
        if settings.clients_file:  # fail here, naming the problem, rather than in every worker
            load_registry(settings.clients_file, settings.jwt_algorithms, JwksFetcher(settings.demo))
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    overrides: dict[str, Any] = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items()
                                 if v is not None}
    settings = replace(settings, **overrides)
    problem = settings.demo_host_problem()
    if problem:
        raise click.UsageError(problem)
    try:  # fail here, with the variable, file and field named, rather than in every worker
        load_configured_policies(settings)
        load_configured_plans(settings)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    os.environ.setdefault("SERVER_SOFTWARE", "cds")
    click.echo(f"CDS service on http://{settings.host}:{settings.port}/cds-services", err=True)
    if settings.metrics_bind:
        click.echo(f"Metrics on http://{settings.metrics_bind}/metrics (operators only)", err=True)
    GunicornServer(settings).run()


# ------------------------------------------------------------------------------------------ client scripts


def signing_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--key, --iss and --jku, turned into one `signer` argument (None: calls go unsigned)."""

    @click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path),
                  help="Private JWK (from `cds keys new`) to sign each call with, as CDS Hooks requires.")
    @click.option("--iss", metavar="URL", help="Issuer (iss) of the signed JWT: this client's URL as registered.")
    @click.option("--jku", metavar="URL", help="Where the service can fetch this client's JWK set (optional).")
    @functools.wraps(command)
    def with_signer(key_file: Path | None, iss: str | None, jku: str | None, **kwargs: Any) -> Any:
        if key_file is None:
            if iss or jku:
                raise click.UsageError("--iss and --jku sign calls and need --key")
            return command(signer=None, **kwargs)
        if not iss:
            raise click.UsageError("--key needs --iss, the issuer the service knows this client by")
        try:
            signer = Signer.from_file(key_file, iss, jku)
        except KeyFileError as exc:
            raise click.BadParameter(str(exc), param_hint="--key") from None
        return command(signer=signer, **kwargs)

    return with_signer


def service_url_argument(url: str) -> tuple[str, str | None]:
    try:
        return split_service_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None


def or_exit(call: Callable[[], T]) -> T:
    """The call's result; on failure, say what went wrong (with the OperationOutcome) and exit 1."""
    try:
        return call()
    except CallFailed as failure:
        print_failure(console(stderr=True), failure)
        raise SystemExit(1) from None


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@main.command()
@click.argument("url")
@signing_options
def discover(url: str, signer: Signer | None) -> None:
    """The services a CDS server offers: id, hook, title and prefetch keys.

    URL is the server's base URL or its discovery URL (…/cds-services).
    """
    base, _ = service_url_argument(url)
    client = CdsClient(base, signer)
    print_services(console(), or_exit(lambda: client.services))


@main.command()
@click.argument("url")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print each answer as the service sent it (JSON).")
@signing_options
def send(url: str, files: tuple[Path, ...], as_json: bool, signer: Signer | None) -> None:
    """Post hook requests (JSON files) to a CDS service and show each answer.

    URL is a service (…/cds-services/ID), or a server (…/cds-services), which sends each file to the service
    for its hook. Exits 1 when any call fails.
    """
    base, service_id = service_url_argument(url)
    requests_by_file = {path: read_hook_request(path, needs_hook=service_id is None) for path in files}
    client = CdsClient(base, signer)
    out = console()
    failed = False
    for path, request in requests_by_file.items():
        try:
            target = client.service_url(service_id or client.service_for(request["hook"])["id"])
            answer = client.call(target, request)
        except CallFailed as failure:
            failed = True
            if as_json and failure.outcome:
                print_json(failure.outcome)
            print_failure(console(stderr=True), failure, str(path))
            continue
        if as_json:
            print_json(answer)
        else:
            out.print(Text.assemble((str(path), "bold"), f" → {target}"), soft_wrap=True)
            print_answer(out, answer)
    if failed:
        raise SystemExit(1)


def read_hook_request(path: Path, needs_hook: bool) -> dict[str, Any]:
    try:
        request = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise click.BadParameter(f"{path} is not a readable JSON file ({exc})", param_hint="FILES") from None
    if not isinstance(request, dict):
        raise click.BadParameter(f"{path} holds no JSON object", param_hint="FILES")
    if needs_hook and not isinstance(request.get("hook"), str):
        raise click.BadParameter(f"{path} names no hook; give the service URL …/cds-services/ID",
                                 param_hint="FILES")
    return request


@main.command()
@click.argument("url")
@click.option("--fhir-server", required=True, metavar="URL", help="Base URL of the FHIR server holding the patient.")
@click.option("--patient", required=True, metavar="ID", help="The patient's id on that server.")
@click.option("--code", "code_text", required=True, metavar="SYSTEM|CODE",
              help="What is ordered, e.g. hcpcs|E0221 or cpt|97026 (cpt, hcpcs, snomed, loinc stand for their "
              "system URIs).")
@click.option("--hook", type=click.Choice(ORDER_HOOKS), default="order-sign", show_default=True)
@click.option("--performer", metavar="TYPE/ID", help="order-dispatch: who the order is sent to, e.g. "
              "Organization/dme-supplier.")
@click.option("--user", default="Practitioner/cds-cli", show_default=True, metavar="TYPE/ID",
              help="Who orders: context.userId and the order's requester.")
@click.option("--token", envvar="FHIR_TOKEN", help="Bearer token for the FHIR server (or set FHIR_TOKEN); the "
              "service gets it too, as fhirAuthorization.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as the service sent it (JSON).")
@signing_options
def order(url: str, fhir_server: str, patient: str, code_text: str, hook: str, performer: str | None, user: str,
          token: str | None, as_json: bool, signer: Signer | None) -> None:
    """Order one code for a patient as an EHR would, and show the answer.

    Reads what the service's prefetch asks for (patient, active coverage, conditions) from the FHIR server,
    builds the hook call with a DeviceRequest (HCPCS E and A codes) or a ServiceRequest, and sends it.
    URL is the CDS server, or one service on it (…/cds-services/ID).
    """
    base, service_id = service_url_argument(url)
    try:
        fhir = FhirClient(fhir_server, token)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fhir-server") from None
    try:
        coding = Coding.parse(code_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--code") from None
    if not ID_PATTERN.fullmatch(patient):
        raise click.BadParameter(f"{patient!r} is not a FHIR id", param_hint="--patient")
    if not USER_ID_PATTERN.fullmatch(user):
        raise click.BadParameter(f"{user!r} is not a reference such as Practitioner/123", param_hint="--user")
    if (hook == "order-dispatch") != bool(performer) or (performer and not USER_ID_PATTERN.fullmatch(performer)):
        raise click.BadParameter("order-dispatch needs, and only it takes, a reference such as Organization/123",
                                 param_hint="--performer")
    client = CdsClient(base, signer)
    service = or_exit(lambda: client.service_for(hook, service_id))
    target = client.service_url(service["id"])
    request = or_exit(lambda: build_order_request(service, coding, patient, user, fhir, token, performer))
    judged = "Appointment" if hook == "appointment-book" else coding.order_type
    click.echo(f"{hook} → {target}: {judged} {coding.code} ({coding.system}) "
               f"for Patient/{patient}", err=True)
    answer = or_exit(lambda: client.call(target, request))
    if as_json:
        print_json(answer)
    else:
        print_answer(console(), answer)


@main.group()
def keys() -> None:
    """Key pairs that sign calls to CDS services (CDS Hooks JWT)."""


@keys.command("new")
@click.option("--out", default="cds-client-key.json", show_default=True, type=click.Path(dir_okay=False,
              path_type=Path), help="Where to write the private key (never overwritten).")
def keys_new(out: Path) -> None:
    """Create an ES384 key pair; print the public JWK set to register with each service."""
    jwk = new_private_jwk()
    try:
        write_private_jwk(out, jwk)
    except FileExistsError:
        raise click.BadParameter(f"{out} exists; it is not overwritten", param_hint="--out") from None
    except OSError as exc:
        raise click.BadParameter(f"cannot write {out}: {exc.strerror}", param_hint="--out") from None
    print_json(public_jwks(jwk))
    click.echo(f"Private key written to {out} (kid {jwk['kid']}); keep it secret. Register the JWK set above "
               f"with each service, then sign calls with --key {out} --iss YOUR-ISSUER-URL.", err=True)


@keys.command("public")
@click.argument("key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def keys_public(key_file: Path) -> None:
    """Print the public JWK set of a private key file again."""
    try:
        print_json(public_jwks(read_private_jwk(key_file)))
    except KeyFileError as exc:
        raise click.BadParameter(str(exc), param_hint="KEY_FILE") from None


main.add_command(audit)
