"""Two replicas on one database, as behind one proxy: each started as the container image starts (tests/image.py)
on its own loopback port, both on one PostgreSQL database, with one trusted-client registry and one public base
URL. A JWT one replica accepted is refused by the other; the audit records of both land in the one database; and
feedback one takes on a card the other gave is seen through the other."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from time import monotonic, sleep

import pytest
import requests

from cds.record import Store
from tests import tokens
from tests.helpers import free_port, load, run_cds
from tests.image import image_servers
from tests.postgres import new_database
from tests.test_api_audit import assertion_ids

SERVICE = tokens.SERVICE_PATH  # order-sign-crd, the hook of the request sent
RECORDED_WITHIN_S = 5.0  # the background writer commits within about 50 ms; this bounds a slow machine


@dataclass(frozen=True)
class Replica:
    url: str
    settings: dict[str, str]  # its CDS_* environment

    def post(self, path: str, body: dict, token: str | None = None) -> requests.Response:
        """A call as the test EHR makes it: signed for the public URL, whichever replica the proxy picked."""
        return requests.post(self.url + path, json=body, headers=tokens.bearer(token or tokens.mint(path)),
                             timeout=5)

    def answer(self) -> tuple[str, str]:
        """Send an order-sign call for a home infrared device; its coverage-assertion-id and its card's uuid."""
        response = self.post(SERVICE, order_sign())
        assert response.status_code == 200, response.text
        [assertion_id] = assertion_ids(response.json())
        return assertion_id, response.json()["cards"][0]["uuid"]


def order_sign() -> dict:
    """A realistic call, under a hookInstance of its own."""
    return load("e0221-home-device.json") | {"hookInstance": str(uuid.uuid4())}


@pytest.fixture(scope="module")
def database(postgres_url) -> Iterator[str]:
    with new_database(postgres_url) as url:
        yield url


@pytest.fixture(scope="module")
def replicas(database, tmp_path_factory) -> Iterator[tuple[Replica, Replica]]:
    tmp = tmp_path_factory.mktemp("replicas")
    # One worker each keeps the test light: replicas, not workers, are what it is about (tests/test_replay.py).
    shared = {"CDS_DATABASE_URL": database, "CDS_CLIENTS_FILE": str(tokens.write_registry(tmp)),
              "CDS_PUBLIC_BASE_URL": tokens.BASE, "CDS_WORKERS": "1"}
    settings = [shared | {"CDS_PORT": str(free_port()), "CDS_DATA_DIR": str(tmp / name)} for name in ("a", "b")]
    assert settings[0]["CDS_PORT"] != settings[1]["CDS_PORT"]
    with image_servers(*((each, tmp / f"{each['CDS_PORT']}.log") for each in settings)) as urls:
        yield Replica(urls[0], settings[0]), Replica(urls[1], settings[1])


@pytest.fixture(scope="module")
def store(database) -> Iterator[Store]:
    store = Store(database)
    yield store
    store.close()


def recorded(store: Store, assertion_id: str, until: Callable[[dict], object] = bool) -> dict:
    """The decision's record once committed (and `until` holds of it): polled, within RECORDED_WITHIN_S."""
    deadline = monotonic() + RECORDED_WITHIN_S
    while (report := store.decision_report(assertion_id)) is None or not until(report):
        assert monotonic() < deadline, f"decision {assertion_id} not recorded within {RECORDED_WITHIN_S} s"
        sleep(0.02)
    return report


def test_both_replicas_are_ready_on_the_one_database(replicas):
    for replica in replicas:
        ready = requests.get(f"{replica.url}/ready", timeout=5)
        assert ready.status_code == 200
        assert [check["detail"].split(" answered")[0] for check in ready.json()["checks"]
                if check["name"] == "store"] == ["postgresql"]


def test_a_token_one_replica_accepted_is_refused_by_the_other(replicas):
    a, b = replicas
    token = tokens.mint(SERVICE)
    assert a.post(SERVICE, order_sign(), token).status_code == 200
    assert b.post(SERVICE, order_sign(), token).status_code == 401
    assert b.post(SERVICE, order_sign()).status_code == 200  # a fresh token: only the replay was refused


def test_the_audit_records_of_both_replicas_land_in_the_one_database(replicas, store):
    a, b = replicas
    sent = {}
    for replica in (a, b):
        body = order_sign()
        response = replica.post(SERVICE, body)
        assert response.status_code == 200
        [assertion_id] = assertion_ids(response.json())
        sent[assertion_id] = body["hookInstance"], response.json()["cards"][0]["uuid"]

    for assertion_id, (hook_instance, card) in sent.items():
        report = recorded(store, assertion_id)
        assert (report["hook_instance"], report["card_uuid"], report["status"]) == (hook_instance, card, 200)
        assert report["policy_id"] == "DME101.045" and report["outcome"] == "not-covered"
        # Either replica's configuration reads every replica's records.
        for replica in (a, b):
            shown = run_cds("audit", "show", assertion_id, env=replica.settings)
            assert shown.exit_code == 0, shown.output
            assert f"hookInstance {hook_instance}" in shown.stdout


def test_feedback_one_replica_takes_on_a_card_the_other_gave_is_seen_through_the_other(replicas, store):
    a, b = replicas
    assertion_id, card = b.answer()
    when = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    feedback = {"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": when, "overrideReason": {
        "reason": {"system": "urn:cds-coverage:override-reason", "code": "patient-pays"}}}]}
    # Sent at once: it may reach the database before B's record of the card; either way it joins the decision.
    assert a.post(f"{SERVICE}/feedback", feedback).status_code == 200

    [entry] = recorded(store, assertion_id, until=lambda report: report["feedback"])["feedback"]
    assert (entry["card_uuid"], entry["outcome"], entry["override_code"]) == (card, "overridden", "patient-pays")
    shown = run_cds("audit", "show", assertion_id, env=b.settings)
    assert shown.exit_code == 0, shown.output
    assert "Feedback (1)" in shown.stdout and "overridden  reason patient-pays" in shown.stdout
