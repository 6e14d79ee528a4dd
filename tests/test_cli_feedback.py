"""`cds feedback`: feedback on the cards of a real answer, sent to the real app over HTTP and stored with the
decision each card carried."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import EXAMPLES, run_cds, serve_on_loopback


@pytest.fixture
def served(make_app) -> Iterator[tuple[str, object]]:
    """The real app in demo mode without authentication on loopback: its base URL, and its store."""
    app = make_app(demo=True, auth_disabled=True)
    for url in serve_on_loopback(app):
        yield url, app.extensions["cds_store"]


@pytest.fixture
def answer(served, tmp_path: Path) -> tuple[Path, dict]:
    """The real service's answer to the E0221 example, as `cds send --json` wrote it to a file."""
    result = run_cds("send", served[0], EXAMPLES / "e0221-home-device.json", "--json")
    assert result.exit_code == 0, result.stderr
    path = tmp_path / "answer.json"
    path.write_text(result.stdout)
    return path, json.loads(result.stdout)


def feedback_stored(store, answer: dict) -> list[dict]:
    store.flush()
    assertion = answer["systemActions"][0]["resource"]["extension"][-1]["extension"][-1]["valueString"]
    return store.decision_report(assertion)["feedback"]


def test_an_override_with_a_reason_the_card_offers_is_stored_with_the_decision(served, answer):
    url, store = served
    path, sent = answer
    card = sent["cards"][0]
    result = run_cds("feedback", f"{url}/cds-services/order-sign-crd", path, "--outcome", "overridden",
                     "--reason", "patient-pays", "--comment", "told of non-coverage")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"card {card['uuid']}: overridden (patient-pays)\n"
    [entry] = feedback_stored(store, sent)
    assert (entry["outcome"], entry["override_code"], entry["override_system"]) == \
        ("overridden", "patient-pays", "urn:cds-coverage:override-reason")
    assert entry["override_display"] == "Patient informed of non-coverage and chooses to pay"  # as the card offers it
    assert entry["override_comment"] == "told of non-coverage"


def test_accepted_names_the_cards_only_suggestion_and_reads_the_answer_from_stdin(served, answer):
    url, store = served
    path, sent = answer
    result = run_cds("feedback", f"{url}/cds-services/order-sign-crd", "-", "--outcome", "accepted",
                     input=path.read_text())
    assert result.exit_code == 0, result.stderr
    [entry] = feedback_stored(store, sent)
    assert entry["outcome"] == "accepted"
    assert entry["accepted_suggestions"] == [sent["cards"][0]["suggestions"][0]["uuid"]]


def test_a_card_known_only_by_its_uuid(served, answer):
    url, store = served
    _, sent = answer
    card = sent["cards"][0]["uuid"]
    result = run_cds("feedback", f"{url}/cds-services/order-sign-crd", card, "--outcome", "overridden",
                     "--reason", "urn:cds-coverage:override-reason|benefit-verified")
    assert result.exit_code == 0, result.stderr
    [entry] = feedback_stored(store, sent)
    assert (entry["override_code"], entry["override_system"]) == \
        ("benefit-verified", "urn:cds-coverage:override-reason")


def test_an_override_with_a_standard_cds_hooks_reason_is_stored_with_its_system(served, answer):
    url, store = served
    path, sent = answer
    result = run_cds("feedback", f"{url}/cds-services/order-sign-crd", path, "--outcome", "overridden",
                     "--reason", "recipient-disagrees-evidence")
    assert result.exit_code == 0, result.stderr
    [entry] = feedback_stored(store, sent)
    assert (entry["override_code"], entry["override_system"], entry["override_display"]) == (
        "recipient-disagrees-evidence", "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
        "Recipient disagrees with recommendation because of issues with the evidence")


@pytest.mark.parametrize(("args", "says"), [
    (["--outcome", "overridden", "--reason", "nope"],
     "offers the override reasons benefit-verified, patient-pays, recipient-disagrees-evidence, not 'nope'"),
    (["--outcome", "accepted", "--reason", "patient-pays"], "--reason and --comment explain an override"),
    (["--outcome", "accepted", "--suggestion", "no-such-suggestion"], "has no suggestion no-such-suggestion"),
    (["--outcome", "overridden", "--card", "no-such-card"], "the answer has no card no-such-card"),
    (["--outcome", "maybe"], "'maybe' is not one of 'accepted', 'overridden'"),
])
def test_feedback_that_does_not_fit_the_cards_is_refused_before_sending(served, answer, args, says):
    url, store = served
    path, sent = answer
    result = run_cds("feedback", f"{url}/cds-services/order-sign-crd", path, *args)
    assert result.exit_code == 2
    assert says in result.stderr
    assert feedback_stored(store, sent) == []


def test_feedback_needs_the_service_that_gave_the_card(served, answer):
    result = run_cds("feedback", served[0], answer[0], "--outcome", "overridden")
    assert result.exit_code == 2
    assert "names no service; feedback goes to the service that gave the card, …/cds-services/ID" in result.stderr


def test_feedback_the_service_refuses_prints_its_outcome_and_exits_1(served, answer):
    result = run_cds("feedback", f"{served[0]}/cds-services/no-such-service", answer[0], "--outcome", "overridden")
    assert result.exit_code == 1
    assert "answered 404" in result.stderr and "error not-found" in result.stderr
