"""No answered decision goes unrecorded: a real `cds serve` on loopback under a bounded load of signed
order-sign calls, a worker killed with SIGKILL mid-run, PostgreSQL stopped and started again mid-run, and a
process killed while its records waited in the spool. Every coverage-assertion-id answered with 200 must be
in the store, exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, func, select

from cds.record.schema import decision
from tests import tokens
from tests.conftest import load
from tests.helpers import free_port, wait_until_up
from tests.postgres import PostgresServer, new_database, throwaway_postgres
from tests.test_api_audit import assertion_ids
from tests.test_cli import CDS

CALLS = 600  # signed calls per load, 8 at a time: a few seconds on a shared 2-core machine
CONCURRENCY = 8
ROOT = Path(__file__).parent.parent


@dataclass
class Load:
    """The answers of a bounded load: coverage-assertion-ids answered with 200, and other outcomes."""

    answered: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)  # set by the fault: no more calls

    @property
    def done(self) -> int:
        return len(self.answered) + len(self.other)


class Service:
    """`cds serve` on a free loopback port, with the test EHR trusted and the store as given."""

    def __init__(self, tmp_path: Path, database_url: str | None, workers: int = 2):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("CDS_")},
                    "CDS_CLIENTS_FILE": str(tokens.write_registry(tmp_path)), "CDS_PUBLIC_BASE_URL": self.base,
                    "CDS_DATA_DIR": str(tmp_path / "data"), "CDS_LOG_LEVEL": "WARNING"}
        if database_url:
            self.env["CDS_DATABASE_URL"] = database_url
        self.database_url = database_url or f"sqlite:///{tmp_path / 'data' / 'cds.sqlite3'}"
        self.log = tmp_path / f"serve-{self.port}.log"
        self.workers = workers
        self.process: subprocess.Popen | None = None

    def start(self) -> Service:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([CDS, "serve", "--port", str(self.port), "--workers", str(self.workers)],
                                            env=self.env, stdout=log, stderr=log, start_new_session=True)
        wait_until_up(f"{self.base}/health", self.process, timeout=30)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)

    def kill_all(self) -> None:
        """SIGKILL to the master and every worker at once: nothing gets to drain or clean up."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def call(self, session: requests.Session) -> requests.Response:
        body = load("e0221-home-device.json") | {"hookInstance": str(uuid.uuid4())}
        token = tokens.mint(aud=self.base + tokens.SERVICE_PATH)
        return session.post(self.base + tokens.SERVICE_PATH, json=body, headers=tokens.bearer(token), timeout=10)

    def load(self, calls: int = CALLS, during: Callable[[Load], None] | None = None) -> Load:
        """`calls` signed calls (fewer if `load.stop` is set), CONCURRENCY at a time, each connection kept alive
        until it breaks; `during(load)` runs beside them (the fault)."""
        result = Load()
        remaining = iter(range(calls))
        take = threading.Lock()

        def client() -> None:
            session = requests.Session()
            while True:
                with take:
                    if next(remaining, None) is None or result.stop.is_set():
                        return
                try:
                    response = self.call(session)
                except requests.RequestException as exc:  # a killed worker's connections break
                    outcome, ids = type(exc).__name__, []
                    session = requests.Session()
                else:
                    outcome = str(response.status_code)
                    ids = assertion_ids(response.json()) if response.status_code == 200 else []
                    assert response.status_code != 200 or len(ids) == 1, response.text
                with result.lock:
                    (result.answered.extend(ids) if ids else result.other.append(outcome))

        with ThreadPoolExecutor(CONCURRENCY + 1) as pool:
            clients = [pool.submit(client) for _ in range(CONCURRENCY)]
            fault = pool.submit(during, result) if during else None
            for each in [*clients, *([fault] if fault else [])]:
                each.result(timeout=120)
        return result


def recorded(url: str, assertion_ids: list[str]) -> dict[str, int]:
    """How many decision records each coverage-assertion-id has."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(decision.c.coverage_assertion_id, func.count())
                                      .group_by(decision.c.coverage_assertion_id)).all()
    finally:
        engine.dispose()
    found = dict(rows)
    return {assertion_id: found.get(assertion_id, 0) for assertion_id in assertion_ids}


def missing(url: str, assertion_ids: list[str]) -> list[str]:
    return [assertion_id for assertion_id, count in recorded(url, assertion_ids).items() if count != 1]


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A server of this module's own, which the outage test stops and starts."""
    with throwaway_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, postgres) -> Iterator[str | None]:
    """None: the default SQLite store in CDS_DATA_DIR; else a new PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    with new_database(postgres.url) as url:
        yield url


@contextmanager
def serving(tmp_path: Path, database_url: str | None, audit_required: bool = False) -> Iterator[Service]:
    service = Service(tmp_path, database_url)
    if audit_required:
        service.env["CDS_AUDIT_REQUIRED"] = "true"
    service.start()
    try:
        yield service
    finally:
        service.stop()


def test_a_worker_killed_mid_load_loses_no_answered_decision(tmp_path, database):
    with serving(tmp_path, database) as service:
        killed: list[int] = []

        def kill_a_worker(load: Load) -> None:
            wait_for(lambda: load.done >= CALLS // 3, 60, "the load did not get going")
            killed.append(service.worker_pids()[0])
            os.kill(killed[0], signal.SIGKILL)

        load = service.load(during=kill_a_worker)
        answered_after = service.load(calls=20).answered  # the replacement worker answers too
    assert killed and len(load.answered) >= CALLS // 3
    assert missing(service.database_url, load.answered + answered_after) == []


@pytest.mark.parametrize("audit_required", [False, True], ids=["by-default", "audit-required"])
def test_postgresql_stopped_and_started_mid_load_loses_no_answered_decision_and_ready_recovers_at_once(
        tmp_path, audit_required):
    with throwaway_postgres() as postgres, serving(tmp_path, postgres.url, audit_required) as service:
        url = postgres.url
        ready_after: list[int] = []
        resumed: list[float] = []
        during: dict[str, int] = {}

        def outage(load: Load) -> None:
            wait_for(lambda: load.done >= CALLS // 4, 60, "the load did not get going")
            postgres.stop()
            answered, refused = len(load.answered), len(load.other)
            time.sleep(2)
            during.update(answered=len(load.answered) - answered, refused=len(load.other) - refused)
            postgres.start()
            started, answered = time.monotonic(), len(load.answered)
            with requests.Session() as session:  # new connections, for each worker to answer some
                ready_after.extend(session.get(f"{service.base}/ready", timeout=5, headers={"Connection": "close"})
                                   .status_code for _ in range(10))
            wait_for(lambda: len(load.answered) > answered + 10, 10, "calls were not answered again")
            resumed.append(time.monotonic() - started)
            load.stop.set()

        load = service.load(calls=20_000, during=outage)  # refusals are quick: the fault says when to stop
        # Records spooled meanwhile reach the database within the writer's next look at its spool.
        wait_for(lambda: not missing(url, load.answered), 15, "spooled records were not replayed")
    assert ready_after == [200] * 10
    assert resumed[0] < 3, f"calls were answered again only {resumed[0]:.1f} s after the database returned"
    assert len(load.answered) >= CALLS // 4
    if audit_required:  # refused while the database is away: 503, safe to retry
        assert set(load.other) == {"503"} and during["refused"] > 0
    else:  # answered throughout: records wait in the spool, tokens are checked against this host's
        assert load.other == [] and during["answered"] > 0


SPOOL_AND_DIE = """
import os, signal, sys
from cds.record import Store
from tests.records import a_call, a_decision
store = Store(sys.argv[1], spool_dir=sys.argv[2])
for _ in range(int(sys.argv[3])):
    call = a_call()
    given = a_decision(call)
    store.audit(call, [given])  # answered: durable in the spool, as the database refuses it
    print(given.coverage_assertion_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_spool_left_by_a_killed_process_is_replayed_when_the_service_starts(tmp_path, database):
    service = Service(tmp_path, database)
    if database is None:  # SQLite: the same file, opened read-only, refuses every write
        Service(tmp_path, None).start().stop()  # creates and migrates it
        refusing = f"sqlite:///file:{service.database_url.removeprefix('sqlite:///')}?mode=ro&uri=true"
    else:
        refusing = f"postgresql+psycopg://cds@127.0.0.1:{free_port()}/cds"  # nobody listens there
    spool = Path(service.env["CDS_DATA_DIR"]) / "spool"
    killed = subprocess.run([sys.executable, "-c", SPOOL_AND_DIE, refusing, str(spool), "40"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    answered = killed.stdout.split()
    assert len(answered) == 40 and list(spool.glob("*.jsonl"))
    if database is None:
        assert len(missing(service.database_url, answered)) == 40

    service.start()  # each worker replays what it finds at start-up; the first to lock a file takes it
    try:
        wait_for(lambda: not list(spool.glob("*.jsonl")), 10, "the spool was not replayed at start-up")
        assert missing(service.database_url, answered) == []
    finally:
        service.stop()
