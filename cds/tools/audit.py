"""`cds audit`: what was decided, for which order, under which policy, and what clinicians did with it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from cds.record import Store

# The outcomes a decision is recorded with: the CRD `covered` code answered (cds.render.coverage.ASSERTED_CODES; a
# test keeps them equal).
OUTCOMES = ("covered", "not-covered", "conditional", "indeterminate")
SHORT_SYSTEMS = {"http://www.ama-assn.org/go/cpt": "cpt", "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets":
                 "hcpcs", "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": "hcpcs",
                 "https://bluebutton.cms.gov/resources/codesystem/hcpcs": "hcpcs",
                 "urn:oid:2.16.840.1.113883.6.285": "hcpcs", "urn:oid:2.16.840.1.113883.6.14": "hcpcs",
                 "urn:oid:2.16.840.1.113883.6.12": "cpt"}


class When(click.ParamType):
    """A date (2026-05-01) or date and time (2026-05-01T12:00), UTC unless an offset is given. As an end
    bound, a bare date includes that whole day."""

    name = "date"

    def __init__(self, end: bool = False):
        self.end = end

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        try:
            when = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a date (2026-05-01) or a date and time (2026-05-01T12:00)", param, ctx)
        if self.end and len(value) == len("2026-05-01"):
            when += timedelta(days=1)
        return when if when.tzinfo else when.replace(tzinfo=UTC)


def _open_store() -> Store:
    """The store the service's settings name. A SQLite file that does not exist is not created, nor is the schema
    created or upgraded: the service writes the store, `cds audit` only reads it (purge included)."""
    from cds.config import Settings, SettingsError, parse_database_url
    from cds.record import Store

    try:
        settings = Settings.from_env()
        url = parse_database_url(settings.store_url)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    if url.get_backend_name() == "sqlite" and not url.query.get("uri") and not Path(url.database or "").is_file():
        where = "CDS_DATABASE_URL" if settings.database_url else f"CDS_DATA_DIR={settings.data_dir!r}, relative to " \
            "the working directory"
        raise click.ClickException(f"no audit store at {url.database} ({where}). Run cds audit where `cds serve` "
                                   "runs, or set CDS_DATA_DIR or CDS_DATABASE_URL as the service has them.")
    store = Store.from_settings(settings)
    store.check_schema()  # never created or upgraded here
    return store


class AuditGroup(click.Group):
    """Every subcommand answers a store failure with one clear line rather than a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:  # the store's modules are imported only once a subcommand has used them
            from cds.config import Settings, parse_database_url
            from cds.record import StoreUnavailable

            if not isinstance(exc, StoreUnavailable):
                raise
            where = parse_database_url(Settings.from_env().store_url).render_as_string(hide_password=True)
            raise click.ClickException(f"the audit store at {where} is unavailable: {exc.reason}") from None


@click.group(cls=AuditGroup)
def audit() -> None:
    """Audit records: every decision by its coverage-assertion-id, with its feedback (CDS_DATABASE_URL)."""


@audit.command()
@click.argument("coverage_assertion_id")
def show(coverage_assertion_id: str) -> None:
    """What was decided, when, for which order, under which policy version, and the feedback it got. A decision
    whose record still waits in this host's spool (CDS_DATA_DIR/spool) is shown from there."""
    report = _open_store().decision_report(coverage_assertion_id)
    if report is None:
        raise click.ClickException(f"no decision with coverage-assertion-id {coverage_assertion_id}")
    click.echo(f"Coverage assertion {report['coverage_assertion_id']}")
    for label, value in [
        ("Decided", _time(report["decided_at"])),
        ("Outcome", report["outcome"]),
        ("Reason", report["reason"]),
        ("Policy", f"{report['policy_id']} version {report['policy_version']}"),
        ("Order", _order(report["order_reference"], report["order_codes"])),
        ("Performer", report.get("performer")),
        ("Coverage", report["coverage_reference"]),
        ("Card", _card(report["card_uuid"], report["suggestion_uuids"])),
        ("Hook call", f"{report['hook']} to {report['service_id']} at {_time(report['call_time'])}, "
                      f"hookInstance {report['hook_instance']}"),
        ("Client", " ".join(filter(None, [report["client_iss"], report["client_tenant"] and
                                          f"tenant {report['client_tenant']}"])) or None),
        ("Answered", f"{report['status']} in {report['latency_ms']:.1f} ms"),
        ("Payload", "request and response captured" if report["payload_captured"] else "not kept"),
        ("Recorded", "in the spool on this host, not yet in the database" if report["spooled"] else None),
    ]:
        if value:
            click.echo(f"  {label + ':':<11}{value}")
    entries = report["feedback"]
    click.echo(f"Feedback ({len(entries)})" if entries else "Feedback: none yet")
    for entry in entries:
        click.echo(f"  {_time(entry['outcome_time'])}  {_feedback(entry)}")


@audit.command(name="list")
@click.option("--since", type=When(), help="Decided on or after this date (UTC).")
@click.option("--until", type=When(end=True), help="Decided before the end of this date (UTC).")
@click.option("--policy", "policy_id", help="Only this policy id.")
@click.option("--outcome", type=click.Choice(OUTCOMES), help="Only this outcome.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
def list_decisions(since: datetime | None, until: datetime | None, policy_id: str | None, outcome: str | None,
                   limit: int) -> None:
    """Decisions, newest first."""
    rows = _open_store().decisions(since, until, policy_id, outcome, limit)
    if not rows:
        click.echo("No decisions match.")
        return
    _table(["DECIDED (UTC)", "COVERAGE-ASSERTION-ID", "POLICY", "OUTCOME", "ORDER", "FEEDBACK"], [
        [_time(row["decided_at"], zone=False), row["coverage_assertion_id"],
         f"{row['policy_id']}@{row['policy_version']}", row["outcome"],
         _order(row["order_reference"], row["order_codes"], short=True),
         f"{row['overridden']}/{row['feedback']} overridden" if row["feedback"] else "-"]
        for row in rows])


@audit.command()
@click.option("--since", type=When(), help="Decided on or after this date (UTC).")
@click.option("--until", type=When(end=True), help="Decided before the end of this date (UTC).")
def stats(since: datetime | None, until: datetime | None) -> None:
    """Decisions by outcome, and how often clinicians overrode them, per policy."""
    per_policy, unmatched = _open_store().stats(since, until)
    if not per_policy:
        click.echo("No decisions match.")
    else:
        outcomes = sorted({outcome for policy in per_policy for outcome in policy.by_outcome})
        _table(["POLICY", "DECISIONS", *(o.upper() for o in outcomes), "WITH FEEDBACK", "OVERRIDDEN",
                "OVERRIDE RATE"], [
            [p.policy_id, p.decisions, *(p.by_outcome.get(o, 0) for o in outcomes), p.with_feedback, p.overridden,
             "-" if p.override_rate is None else f"{p.override_rate:.0%}"]
            for p in per_policy])
        click.echo("Override rate: decisions overridden at least once, of those whose card got feedback.")
    if unmatched:
        click.echo(f"Feedback on unknown cards (kept unmatched): {unmatched}")


@audit.command()
@click.option("--retention-days", type=click.IntRange(0), help="Keep payloads this many days "
              "(default CDS_AUDIT_RETENTION_DAYS).")
def purge(retention_days: int | None) -> None:
    """Clear captured request/response bodies past the retention period and expired JWT ids.
    Decisions, their references and codes, and feedback are kept."""
    store = _open_store()
    days = store.retention_days if retention_days is None else retention_days
    report = store.purge(days)
    click.echo(f"Cleared captured payloads of {report.payloads_cleared} hook call(s) older than {days} day(s); "
               f"deleted {report.jtis_deleted} expired JWT id(s).")


def _time(when: datetime, zone: bool = True) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if zone else "")


def _order(reference: str | None, codes: Sequence[str], short: bool = False) -> str:
    """`DeviceRequest/1 [system|code]`; short: well-known systems by the name `cds order --code` takes."""
    if short:
        codes = [SHORT_SYSTEMS.get(system, system) + bar + code for system, bar, code in map(_split_code, codes)]
    return f"{reference or '(no id)'}" + (f" [{', '.join(codes)}]" if codes else "")


def _split_code(code: str) -> tuple[str, str, str]:
    return code.rpartition("|")


def _card(card_uuid: str | None, suggestions: Sequence[str]) -> str | None:
    if not card_uuid:
        return None
    return card_uuid + (f" (suggestions {', '.join(suggestions)})" if suggestions else "")


def _feedback(entry: dict[str, Any]) -> str:
    parts = [entry["outcome"]]
    if entry["accepted_suggestions"]:
        parts.append(f"suggestions {', '.join(entry['accepted_suggestions'])}")
    if entry["override_code"]:
        reason = entry["override_code"] + (f" ({entry['override_system']})" if entry["override_system"] else "")
        parts.append(f"reason {reason}" + (f' "{entry["override_display"]}"' if entry["override_display"] else ""))
    if entry["override_comment"]:
        parts.append(f'comment "{entry["override_comment"]}"')
    return "  ".join(parts)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from cds.tools.printer import console, print_table

    print_table(console(), headers, rows)
