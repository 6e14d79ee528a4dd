"""The `cds` command: `cds serve` runs the service under gunicorn; `cds discover`, `cds send`, `cds order` and
`cds feedback` script calls to any CDS service from a terminal; `cds keys` makes and converts signing keys;
`cds fhir serve` serves the example patients; `cds audit` reads the audit store.

Heavy modules (the service, gunicorn, HTTP clients, cryptography) are imported by the command that needs
them, so `cds --help` and usage errors answer at once."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cds import __version__
from cds.tools.audit import audit
from cds.tools.fhir_server import fhir
from cds.tools.keys import keys

if TYPE_CHECKING:
    from cds.tools.client import CdsClient
    from cds.tools.signing import Signer

T = TypeVar("T")
# The hooks `cds order` can call (cds/tools/order_request.py builds each), named here so `--help` loads nothing.
ORDER_HOOKS = ("order-sign", "order-select", "order-dispatch", "appointment-book", "encounter-start",
               "encounter-discharge")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="cds", message="%(prog)s %(version)s")
def main() -> None:
    """Coverage decision support for EHR order entry (CDS Hooks 2.0, Da Vinci CRD)."""


@main.command()
@click.option("--host", help="Address to bind (default CDS_HOST or 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to bind (default CDS_PORT or 8080).")
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes (default CDS_WORKERS or 2).")
@click.option("--demo", is_flag=True, help="Quick-start mode: loopback only, permissive CORS (also CDS_DEMO=1).")
def serve(host: str | None, port: int | None, workers: int | None, demo: bool) -> None:
    """Run the service under gunicorn."""
    from cds.tools.server import run

    run(host, port, workers, demo)


# ------------------------------------------------------------------------------------------ client scripts


def signing_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--key, --kid, --iss and --jku, turned into one `signer` argument (None: calls go unsigned)."""

    @click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path),
                  help="Private key to sign each call with, as CDS Hooks requires: a JWK (from `cds keys new`) "
                  "or a PEM file.")
    @click.option("--kid", help="Key id the service knows the key by (default: the JWK's kid, or a PEM key's "
                  "RFC 7638 thumbprint).")
    @click.option("--iss", metavar="URL", help="Issuer (iss) of the signed JWT: this client's URL as registered.")
    @click.option("--jku", metavar="URL", help="Where the service can fetch this client's JWK set (optional).")
    @functools.wraps(command)
    def with_signer(key_file: Path | None, kid: str | None, iss: str | None, jku: str | None, **kwargs: Any) -> Any:
        if key_file is None:
            if iss or jku or kid:
                raise click.UsageError("--iss, --kid and --jku sign calls and need --key")
            return command(signer=None, **kwargs)
        if not iss:
            raise click.UsageError("--key needs --iss, the issuer the service knows this client by")
        from cds.tools.signing import KeyFileError, Signer

        try:
            signer = Signer.from_file(key_file, iss, jku, kid)
        except KeyFileError as exc:
            raise click.BadParameter(str(exc), param_hint="--key") from None
        return command(signer=signer, **kwargs)

    return with_signer


def cds_client(url: str, signer: Signer | None) -> tuple[CdsClient, str | None]:
    """A client of the server at URL, and the service id the URL names (if any)."""
    from cds.tools.client import CdsClient, split_service_url

    try:
        base, service_id = split_service_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None
    return CdsClient(base, signer), service_id


def or_exit(call: Callable[[], T]) -> T:
    """The call's result; on failure, say what went wrong (with the OperationOutcome) and exit 1."""
    from cds.tools.client import CallFailed
    from cds.tools.printer import console, print_failure

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
    from cds.tools.printer import console, print_services

    client, _ = cds_client(url, signer)
    print_services(console(), or_exit(lambda: client.services))


@main.command()
@click.argument("url")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one file's answer as the service sent it; for "
              "several files, one array of {file, service, answer} (or {file, service, error}).")
@signing_options
def send(url: str, files: tuple[Path, ...], as_json: bool, signer: Signer | None) -> None:
    """Post hook requests (JSON files) to a CDS service and show each answer.

    URL is a service (…/cds-services/ID), or a server (…/cds-services), which sends each file to the service
    for its hook. Exits 1 when any call fails.
    """
    from rich.text import Text

    from cds.tools.client import CallFailed
    from cds.tools.printer import console, print_answer, print_failure, print_wrapped

    client, service_id = cds_client(url, signer)
    requests_by_file = {path: read_hook_request(path, needs_hook=service_id is None) for path in files}
    out = console()
    results: list[dict[str, Any]] = []
    for path, request in requests_by_file.items():
        target = None
        try:
            target = client.service_url(service_id or client.service_for(request["hook"])["id"])
            answer = client.call(target, request)
        except CallFailed as failure:
            print_failure(console(stderr=True), failure, str(path))
            results.append({"file": str(path), "service": target, "error": failure.outcome or str(failure)})
            continue
        results.append({"file": str(path), "service": target, "answer": answer})
        if not as_json:
            print_wrapped(out, Text.assemble((str(path), "bold"), f" → {target}"), indent=0)
            print_answer(out, answer)
    if as_json:
        if len(results) > 1:
            print_json(results)
        elif isinstance(shown := results[0].get("answer", results[0].get("error")), dict):
            print_json(shown)  # the answer, or the OperationOutcome, as the service sent it
    if any("error" in result for result in results):
        raise SystemExit(1)


def read_hook_request(path: Path, needs_hook: bool) -> dict[str, Any]:
    request = read_json_object(path, "FILES")
    if needs_hook and not isinstance(request.get("hook"), str):
        raise click.BadParameter(f"{path} names no hook; give the service URL …/cds-services/ID",
                                 param_hint="FILES")
    return request


def read_json_object(path: Path, param_hint: str) -> dict[str, Any]:
    try:
        data = json.loads(sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise click.BadParameter(f"{path} is not a readable JSON file ({exc})", param_hint=param_hint) from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} holds no JSON object", param_hint=param_hint)
    return data


@main.command()
@click.argument("url")
@click.option("--fhir-server", required=True, metavar="URL", help="Base URL of the FHIR server holding the patient "
              "(`cds fhir serve` serves the example patients).")
@click.option("--patient", required=True, metavar="ID", help="The patient's id on that server.")
@click.option("--code", "code_text", required=True, metavar="SYSTEM|CODE",
              help="What is ordered, e.g. hcpcs|E0221 or cpt|97026 (cpt, hcpcs, snomed, loinc stand for their "
              "system URIs; any other system is given as its URI).")
@click.option("--hook", type=click.Choice(ORDER_HOOKS), default="order-sign", show_default=True)
@click.option("--performer", metavar="TYPE/ID", help="order-dispatch: who the order is sent to, e.g. "
              "Organization/dme-supplier.")
@click.option("--user", default="Practitioner/cds-cli", show_default=True, metavar="TYPE/ID",
              help="Who orders: context.userId and the order's requester.")
@click.option("--token", envvar="FHIR_TOKEN", help="Bearer token for the FHIR server (or set FHIR_TOKEN); the "
              "service gets it too, as fhirAuthorization.")
@click.option("--prefetch/--no-prefetch", default=True, show_default=True,
              help="Read what the service's prefetch asks for and send it; without, the service fetches it from "
              "the FHIR server itself.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as the service sent it (JSON).")
@signing_options
def order(url: str, fhir_server: str, patient: str, code_text: str, hook: str, performer: str | None, user: str,
          token: str | None, prefetch: bool, as_json: bool, signer: Signer | None) -> None:
    """Order one code for a patient as an EHR would, and show the answer.

    Reads what the service's prefetch asks for (patient, active coverage, conditions) from the FHIR server,
    builds the hook call with a DeviceRequest (HCPCS E and A codes) or a ServiceRequest, and sends it.
    URL is the CDS server, or one service on it (…/cds-services/ID).
    """
    from cds.fhirjson import ID_PATTERN
    from cds.protocol import USER_ID_PATTERN
    from cds.tools.client import FhirClient
    from cds.tools.order_request import Coding, build_order_request
    from cds.tools.printer import console, print_answer

    try:
        fhir_client = FhirClient(fhir_server, token)
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
    client, service_id = cds_client(url, signer)
    service = or_exit(lambda: client.service_for(hook, service_id))
    target = client.service_url(service["id"])
    request = or_exit(lambda: build_order_request(service, coding, patient, user, fhir_client, token, performer,
                                                  prefetch))
    judged = "Appointment" if hook == "appointment-book" else coding.order_type
    click.echo(f"{hook} → {target}: {judged} {coding.code} ({coding.system}) "
               f"for Patient/{patient}", err=True)
    answer = or_exit(lambda: client.call(target, request))
    if as_json:
        print_json(answer)
    else:
        print_answer(console(), answer)


@main.command()
@click.argument("url")
@click.argument("answer", metavar="ANSWER|CARD")
@click.option("--outcome", type=click.Choice(["accepted", "overridden"]), required=True,
              help="What the clinician did with the card.")
@click.option("--reason", metavar="CODE", help="Overridden: the override reason, one of the codes the card offers "
              "(with a bare card uuid: SYSTEM|CODE or CODE).")
@click.option("--comment", help="Overridden: the clinician's comment.")
@click.option("--card", "card_ids", multiple=True, metavar="UUID", help="Only this card of the answer (repeatable; "
              "default: every card).")
@click.option("--suggestion", "suggestion_ids", multiple=True, metavar="UUID",
              help="Accepted: the suggestion taken (repeatable; default: the card's only or recommended one).")
@signing_options
def feedback(url: str, answer: str, outcome: str, reason: str | None, comment: str | None,
             card_ids: tuple[str, ...], suggestion_ids: tuple[str, ...], signer: Signer | None) -> None:
    """Tell a CDS service what the clinician did with its cards (CDS Hooks feedback).

    URL is the service that gave the cards (…/cds-services/ID). ANSWER is its answer as `cds send --json`
    or `cds order --json` printed it (a file, or - for standard input), or CARD the uuid of one card.
    """
    from cds.tools.feedback import FeedbackError, entries_for_answer, entry_for_card

    if outcome == "accepted" and (reason or comment):
        raise click.UsageError("--reason and --comment explain an override; they go with --outcome overridden")
    if outcome == "overridden" and suggestion_ids:
        raise click.UsageError("--suggestion names the suggestion taken; it goes with --outcome accepted")
    client, service_id = cds_client(url, signer)
    if service_id is None:
        raise click.BadParameter(f"{url} names no service; feedback goes to the service that gave the card, "
                                 "…/cds-services/ID", param_hint="URL")
    try:
        if answer == "-" or Path(answer).is_file():
            entries = entries_for_answer(read_json_object(Path(answer), "ANSWER"), outcome, reason, comment,
                                         card_ids, suggestion_ids)
        else:
            entries = [entry_for_card(answer, outcome, reason, comment, suggestion_ids)]
    except FeedbackError as exc:
        raise click.UsageError(str(exc)) from None
    target = client.service_url(service_id)
    or_exit(lambda: client.feedback(target, entries))
    for entry in entries:
        told = entry.get("overrideReason", {}).get("reason", {}).get("code") or ", ".join(
            s["id"] for s in entry.get("acceptedSuggestions", []))
        click.echo(f"card {entry['card']}: {entry['outcome']}" + (f" ({told})" if told else ""))
    click.echo(f"Feedback on {len(entries)} card(s) sent to {target}/feedback", err=True)


main.add_command(keys)
main.add_command(fhir)
main.add_command(audit)
