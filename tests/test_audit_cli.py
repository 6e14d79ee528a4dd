"""`cds audit` against a populated store on each database: what a person sees."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from cds.record import FeedbackRecord, Store
from cds.tools.cli import main
from hooks import HOOKS
from tests.conftest import load
from tests.records import E0221, a_call, a_decision
from tests.test_api_audit import assertion_ids

DAY = datetime(2026, 5, 1, 9, tzinfo=UTC)
CDS = str(Path(sys.executable).with_name("cds"))


@pytest.fixture
def populated(empty_database_url):
    """Three decisions over three days under two policies; feedback on two cards and on an unknown one."""
    store = Store(empty_database_url, capture_payloads=True)
    calls = [a_call(time=DAY + timedelta(days=i), request={"hook": "order-sign"}) for i in range(3)]
    decided = [a_decision(calls[0]), a_decision(calls[1]), a_decision(calls[2], policy_id="TEST-2", outcome="covered")]
    for call, given in zip(calls, decided, strict=True):
        store.record_call(call, [given])
    store.record_feedback("order-sign-crd", [
        FeedbackRecord(decided[0].card_uuid, "overridden", DAY + timedelta(minutes=5), override_code="patient-pays",
                       override_system="http://example.org/reasons", override_display="Patient pays",
                       override_comment="told of non-coverage"),
        FeedbackRecord(decided[1].card_uuid, "accepted", DAY + timedelta(days=1),
                       accepted_suggestions=decided[1].suggestion_uuids),
        FeedbackRecord(str(uuid.uuid4()), "overridden", DAY),
    ])
    store.close()
    return empty_database_url, decided


def cds_audit(url: str, *args: str):
    return CliRunner().invoke(main, ["audit", *args], env={"CDS_DATABASE_URL": url})


def test_show_prints_the_decision_its_order_policy_version_and_feedback(populated):
    url, decided = populated
    result = cds_audit(url, "show", decided[0].coverage_assertion_id)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"Coverage assertion {decided[0].coverage_assertion_id}"
    for line in [
        "  Decided:   2026-05-01 09:00:00 UTC",
        "  Outcome:   not-covered",
        f"  Reason:    {decided[0].reason}",
        "  Policy:    DME101.045 version 2024-03-15",
        f"  Order:     DeviceRequest/dr-0 [{E0221}]",
        "  Coverage:  Coverage/cov-1",
        f"  Card:      {decided[0].card_uuid} (suggestions {decided[0].suggestion_uuids[0]})",
        "  Client:    https://ehr.example.org tenant tenant-1",
        "  Answered:  200 in 12.5 ms",
        "  Payload:   request and response captured",
        "Feedback (1)",
        '  2026-05-01 09:05:00 UTC  overridden  reason patient-pays (http://example.org/reasons) "Patient pays"  '
        'comment "told of non-coverage"',
    ]:
        assert line in lines
    assert "pat-1" not in result.output  # minimum necessary: no patient id on screen


def test_show_of_an_unknown_id_says_so(populated):
    url, _ = populated
    result = cds_audit(url, "show", "nope")
    assert result.exit_code == 1
    assert "no decision with coverage-assertion-id nope" in result.output


def test_list_filters_by_policy_date_and_outcome(populated):
    url, decided = populated
    ids = [d.coverage_assertion_id for d in decided]
    listed = cds_audit(url, "list", "--policy", "DME101.045").output.splitlines()
    assert listed[0].split() == ["DECIDED", "(UTC)", "COVERAGE-ASSERTION-ID", "POLICY", "OUTCOME", "ORDER", "FEEDBACK"]
    assert [line.split()[2] for line in listed[1:]] == [ids[1], ids[0]]  # newest first
    # Well-known code systems by the names `cds order --code` takes, so a row fits a terminal.
    assert listed[2].split()[3:] == ["DME101.045@2024-03-15", "not-covered", "DeviceRequest/dr-0", "[hcpcs|E0221]",
                                     "1/1", "overridden"]
    one_day = cds_audit(url, "list", "--since", "2026-05-02", "--until", "2026-05-02").output.splitlines()
    assert [line.split()[2] for line in one_day[1:]] == [ids[1]]
    covered = cds_audit(url, "list", "--outcome", "covered").output.splitlines()
    assert [line.split()[2] for line in covered[1:]] == [ids[2]]
    assert cds_audit(url, "list", "--policy", "NONE").output == "No decisions match.\n"
    bad = cds_audit(url, "list", "--since", "May 1st")
    assert bad.exit_code == 2 and "is not a date" in bad.output
    bogus = cds_audit(url, "list", "--outcome", "bogus")
    assert bogus.exit_code == 2 and "'bogus' is not one of 'covered', 'not-covered', 'conditional'" \
        in bogus.output


def test_outcome_choices_are_the_outcomes_decisions_are_recorded_with():
    from cds.render.coverage import ASSERTED_CODES
    from cds.tools.audit import OUTCOMES

    assert set(OUTCOMES) == ASSERTED_CODES


def test_stats_counts_outcomes_and_override_rate_per_policy(populated):
    url, _ = populated
    result = cds_audit(url, "stats")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    assert rows[0] == ["POLICY", "DECISIONS", "COVERED", "NOT-COVERED", "WITH", "FEEDBACK", "OVERRIDDEN",
                       "OVERRIDE", "RATE"]
    assert rows[1] == ["DME101.045", "2", "0", "2", "2", "1", "50%"]
    assert rows[2] == ["TEST-2", "1", "1", "0", "0", "0", "-"]
    assert "Feedback on unknown cards (kept unmatched): 1" in result.output
    since = cds_audit(url, "stats", "--since", "2026-05-02").output.splitlines()
    assert since[1].split() == ["DME101.045", "1", "0", "1", "1", "0", "0%"]


def test_purge_clears_payloads_past_retention_only(populated):
    url, decided = populated
    kept = cds_audit(url, "purge", "--retention-days", "100000")
    assert kept.output.startswith("Cleared captured payloads of 0 hook call(s) older than 100000 day(s)")
    cleared = cds_audit(url, "purge")  # CDS_AUDIT_RETENTION_DAYS: 30; the calls are from May 2026
    assert cleared.output == ("Cleared captured payloads of 3 hook call(s) older than 30 day(s); "
                              "deleted 0 expired JWT id(s).\n")
    shown = cds_audit(url, "show", decided[0].coverage_assertion_id).output
    assert "Payload:   not kept" in shown and "Outcome:   not-covered" in shown


def test_the_cds_command_reports_an_unreachable_store_in_one_line_without_its_password():
    env = {**os.environ, "CDS_DATABASE_URL": "postgresql+psycopg://cds:s3cret@127.0.0.1:1/cds"}
    result = subprocess.run([CDS, "audit", "list"], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 1
    assert "Error: the audit store at postgresql+psycopg://cds:***@127.0.0.1:1/cds is unavailable" in result.stderr
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr


# An example request of each hook that gets a card and an assertion without a plan directory.
EXAMPLE_OF = {"order-sign": "e0221-home-device.json", "order-select": "order-select-selection-only.json",
              "order-dispatch": "order-dispatch-e0221-supplier.json",
              "appointment-book": "appointment-book-97026-clinic.json",
              "encounter-start": "encounter-start-il-child-mandate.json",
              "encounter-discharge": "encounter-discharge-e0221-home.json"}


@pytest.mark.parametrize("hook", HOOKS, ids=lambda hook: hook.name)
def test_show_gives_the_decision_the_call_and_the_feedback_of_an_answer_of_each_hook(make_app, tmp_path, hook):
    url = f"sqlite:///{tmp_path}/store.sqlite3"
    app = make_app(database_url=url)
    client = app.test_client()
    body = load(EXAMPLE_OF[hook.name]) | {"hookInstance": str(uuid.uuid4())}
    answer = client.post(f"/cds-services/{hook.service_id}", json=body)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    [assertion_id] = assertion_ids(answer.get_json())
    card = answer.get_json()["cards"][0]["uuid"]
    feedback = {"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-12-01T10:00:00Z",
                              "overrideReason": {"reason": {"system": "urn:cds-coverage:override-reason",
                                                            "code": "patient-pays"}}}]}
    assert client.post(f"/cds-services/{hook.service_id}/feedback", json=feedback).status_code == 200

    app.extensions["cds_store"].flush()  # spooled before the answer; in the database within about 50 ms
    shown = cds_audit(url, "show", assertion_id)
    assert shown.exit_code == 0, shown.output
    assert f"  Hook call: {hook.name} to {hook.service_id} at " in shown.output
    assert f"hookInstance {body['hookInstance']}" in shown.output
    assert f"  Card:      {card}" in shown.output
    assert "Feedback (1)" in shown.output and "overridden  reason patient-pays" in shown.output


@pytest.mark.parametrize("command", [["list"], ["stats"], ["show", "01a23124-2bc5-71fe-ab24-eef4331927ce"], ["purge"]])
def test_audit_refuses_to_create_a_store_it_was_asked_to_read(tmp_path, command):
    """Run from a directory where the service never ran, it says where it looked instead of making an empty store."""
    result = subprocess.run([CDS, "audit", *command], capture_output=True, text=True, cwd=tmp_path, timeout=30,
                            env={k: v for k, v in os.environ.items() if not k.startswith("CDS_")})
    assert result.returncode == 1
    assert f"Error: no audit store at {tmp_path}/cds-data/cds.sqlite3 (CDS_DATA_DIR='cds-data', relative to the " \
           "working directory)" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("hook", HOOKS, ids=lambda hook: hook.name)
def test_show_finds_a_decision_of_each_hook_whose_record_still_waits_in_the_spool(make_app, tmp_path, hook):
    """The database refuses writes (a read-only file), so the answered call's record stays in the spool."""
    path = tmp_path / "store.sqlite3"
    Store(f"sqlite:///{path}").start().close()
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    client = make_app(database_url=read_only, data_dir=str(tmp_path)).test_client()
    body = load(EXAMPLE_OF[hook.name]) | {"hookInstance": str(uuid.uuid4())}
    answer = client.post(f"/cds-services/{hook.service_id}", json=body)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    [assertion_id] = assertion_ids(answer.get_json())

    url = f"sqlite:///{path}"  # read by `cds audit` as the service's settings name it
    shown = CliRunner().invoke(main, ["audit", "show", assertion_id],
                               env={"CDS_DATABASE_URL": url, "CDS_DATA_DIR": str(tmp_path)})
    assert shown.exit_code == 0, shown.output
    assert f"Coverage assertion {assertion_id}" in shown.output
    assert f"  Hook call: {hook.name} to {hook.service_id} at " in shown.output
    assert f"hookInstance {body['hookInstance']}" in shown.output
    assert f"  Card:      {answer.get_json()['cards'][0]['uuid']}" in shown.output
    assert "  Recorded:  in the spool on this host, not yet in the database" in shown.output
    elsewhere = CliRunner().invoke(main, ["audit", "show", assertion_id],
                                   env={"CDS_DATABASE_URL": url, "CDS_DATA_DIR": str(tmp_path / "other")})
    assert elsewhere.exit_code == 1 and "no decision with coverage-assertion-id" in elsewhere.output


def _schema(url: str) -> dict[str, set[str]]:
    """Each table of the database, with its columns."""
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        inspector = inspect(engine)
        return {table: {column["name"] for column in inspector.get_columns(table)}
                for table in inspector.get_table_names()}
    finally:
        engine.dispose()


def test_audit_says_when_the_database_holds_no_audit_store_and_leaves_it_as_it_was(empty_database_url):
    """A reader: it neither creates the schema in a database named by mistake nor upgrades the service's."""
    if empty_database_url.startswith("sqlite"):
        Path(empty_database_url.removeprefix("sqlite:///")).touch()  # a file there, but no store in it
    result = cds_audit(empty_database_url, "list")
    assert result.exit_code == 1
    assert "is unavailable: it holds no audit records (no schema): is it the database the service records to?" \
        in result.output
    assert _schema(empty_database_url) == {}


def test_audit_refuses_a_schema_older_than_the_one_it_reads_and_does_not_upgrade_it(empty_database_url):
    from alembic import command

    from cds.record.engine import alembic_config, make_engine

    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0002")
    finally:
        engine.dispose()
    result = cds_audit(empty_database_url, "list")
    assert result.exit_code == 1
    assert "its schema is at revision 0002, not 0003 as this version of the service writes it" in result.output
    assert "performer" not in _schema(empty_database_url)["decision"]


def test_audit_reads_a_store_named_by_a_sqlite_uri(tmp_path):
    """`sqlite:///file:…?mode=ro&uri=true`: read-only, as an auditor may open the service's file."""
    path = tmp_path / "cds.sqlite3"
    store = Store(f"sqlite:///{path}")
    call = a_call()
    given = a_decision(call)
    store.record_call(call, [given])
    store.close()
    result = cds_audit(f"sqlite:///file:{path}?mode=ro&uri=true", "show", given.coverage_assertion_id)
    assert result.exit_code == 0, result.output
    assert f"Coverage assertion {given.coverage_assertion_id}" in result.output
