"""The compose stack (docker/compose.yaml, docker/nginx.conf) as far as it runs here, without its images (no
registry reaches nginx:1.28-alpine or postgres:16-alpine) and without Docker Compose v2 (Debian has v1):

- replicas are the image's command (tests/image.py) on loopback, on a real PostgreSQL, as compose runs them;
- the proxy is docker/nginx.conf run by Debian's nginx (1.22), with only what that nginx or this machine lacks
  changed (`loopback_config` lists each change): no Docker DNS (`resolver`, `resolve`: one `server` line per
  replica instead, with the file's own parameters), no `http2 on` (nginx 1.25), loopback ports, files in a
  temporary directory;
- the compose file is checked by Debian's docker-compose (1.29, v1) `config`, which knows every key the file
  uses but its top-level `name` (a v2 key, left out of the copy it reads).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from tests import tokens
from tests.helpers import free_port, load
from tests.image import ROOT, image_servers
from tests.postgres import new_database

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CALLS = 12
NOT_READY = "not ready"  # in the service's refusal of a call while it is not ready


@dataclass(frozen=True)
class Proxy:
    https: str
    http: str
    certificate: Path
    access_log: Path

    def call(self, token: str | None = None) -> requests.Response:
        body = load("e0221-home-device.json") | {"hookInstance": str(uuid.uuid4())}
        return requests.post(f"{self.https}{tokens.SERVICE_PATH}", json=body,
                             headers=tokens.bearer(token or tokens.mint()), verify=self.certificate, timeout=10)

    def upstreams(self) -> list[tuple[int, list[str]]]:
        """Each logged call's status and the replicas nginx tried for it, in order."""
        rows = []
        for line in self.access_log.read_text().splitlines():
            if '"POST ' in line:
                status, _, tried = line.split('" ', 1)[1].split(" ", 2)
                rows.append((int(status), tried.split(", ")))
        return rows


def replica(tmp: Path, name: str, database: str) -> tuple[dict[str, str], Path]:
    """One replica's settings as compose gives them (its clients file, database, public URL), and its log."""
    settings = {"CDS_PORT": str(free_port()), "CDS_WORKERS": "1", "CDS_DATABASE_URL": database,
                "CDS_CLIENTS_FILE": str(tokens.write_registry(tmp)), "CDS_PUBLIC_BASE_URL": tokens.BASE,
                "CDS_AUDIT_REQUIRED": "true", "CDS_DATA_DIR": str(tmp / name)}
    return settings, tmp / f"{name}.log"


def absent(database: str) -> str:
    """A database of the same server that does not exist: a replica on it is not ready (its store fails)."""
    url = make_url(database)
    return url.set(database=f"{url.database}_absent").render_as_string(hide_password=False)


def loopback_config(text: str, https: int, http: int, replicas: list[int], folder: Path) -> str:
    """docker/nginx.conf for Debian's nginx on loopback; each change must apply as often as said, so that a change
    of the file that this test no longer follows fails here rather than passing untested."""
    changes = [  # (pattern, replacement, times)
        (r"\$\{CDS_HTTPS_PORT\}", str(https), 1),  # what the nginx image's entrypoint fills in
        (r"\n *resolver [^;]*;", "", 1),  # Docker's DNS
        (r"server app:8080 resolve ([^;]*);", lambda m: " ".join(f"server 127.0.0.1:{p} {m[1]};" for p in replicas), 1),
        (r"\n *http2 on;", "", 1),  # nginx 1.25 and later
        (r"listen 80;", f"listen 127.0.0.1:{http};", 1),
        (r"listen 443 ssl;", f"listen 127.0.0.1:{https} ssl;", 1),
        (r"/etc/nginx/certs/", f"{folder}/", 2),
        (r"/dev/stdout", f"{folder}/access.log", 1),
        (r"/dev/stderr", f"{folder}/error.log", 1),
        (r"\nhttp \{", f"\nhttp {{\n    client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy;", 1),
    ]
    for pattern, replacement, times in changes:
        text, made = re.subn(pattern, replacement, text)
        assert made == times, f"docker/nginx.conf: {pattern!r} found {made} times, not {times}"
    return text


@contextmanager
def proxy(folder: Path, replicas: list[int]) -> Iterator[Proxy]:
    """docker/nginx.conf in front of `replicas` (their loopback ports), with a certificate made as the compose
    file's header says; stopped on exit."""
    folder.mkdir()
    https, http = free_port(), free_port()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(folder / "tls.key"),
                    "-out", str(folder / "tls.crt")], check=True, capture_output=True, timeout=60)
    config = folder / "nginx.conf"
    config.write_text(loopback_config((ROOT / "docker" / "nginx.conf").read_text(), https, http, replicas, folder))
    argv = [NGINX, "-p", str(folder), "-c", str(config), "-g", f"daemon off; pid {folder}/nginx.pid;"
            + (" user root;" if os.geteuid() == 0 else "")]
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                requests.get(f"http://127.0.0.1:{http}/proxy-health", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "nginx did not answer within 10 s"
                time.sleep(0.1)
        yield Proxy(f"https://127.0.0.1:{https}", f"http://127.0.0.1:{http}", folder / "tls.crt",
                    folder / "access.log")
    finally:
        process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def refusals(log: Path) -> list[dict]:
    """The hook calls a replica refused with 503, from its JSON log."""
    return [record for line in log.read_text().splitlines() if line.startswith("{")
            for record in [json.loads(line)]
            if record["logger"] == "cds.access" and record["message"].startswith(f"POST {tokens.SERVICE_PATH} 503")]


@pytest.fixture(scope="module")
def nginx() -> str:
    if not os.path.exists(NGINX):
        pytest.skip("nginx is not installed (scripts/test installs Debian's nginx)")
    return NGINX


def test_a_replica_not_ready_refuses_calls_before_authentication_and_serves_once_ready(postgres_url, tmp_path):
    """The image's command with audit required (no call can be answered without the database), on a database
    that does not exist yet: a 503 before anything else, the same token served once the database exists."""
    name = f"cds_{uuid.uuid4().hex[:12]}"
    database = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with image_servers(replica(tmp_path, "late", database)) as [url]:
            assert requests.get(f"{url}/ready", timeout=5).status_code == 503
            token = tokens.mint()
            body = load("e0221-home-device.json") | {"hookInstance": str(uuid.uuid4())}
            refused = requests.post(f"{url}{tokens.SERVICE_PATH}", json=body, headers=tokens.bearer(token), timeout=5)
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
            assert NOT_READY in refused.json()["issue"][0]["diagnostics"]
            unsigned = requests.post(f"{url}{tokens.SERVICE_PATH}", json=body, timeout=5)
            assert unsigned.status_code == 503  # not 401: refused before authentication
            assert requests.get(f"{url}/cds-services", timeout=5).status_code == 200

            with admin.connect() as connection:
                connection.exec_driver_sql(f"CREATE DATABASE {name}")
            deadline = time.monotonic() + 10
            while requests.get(f"{url}/ready", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "not ready within 10 s of the database's creation"
                time.sleep(0.2)
            time.sleep(1.1)  # the verdict calls are judged by is at most a second old
            answered = requests.post(f"{url}{tokens.SERVICE_PATH}", json=body, headers=tokens.bearer(token),
                                     timeout=5)
            assert answered.status_code == 200, answered.text
            replayed = requests.post(f"{url}{tokens.SERVICE_PATH}", json=body, headers=tokens.bearer(token),
                                     timeout=5)
            assert replayed.status_code == 401  # the token's id is recorded now, by the call that was served
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def test_the_proxy_sends_calls_past_a_replica_that_is_not_ready_and_takes_it_out_of_rotation(
        nginx, postgres_url, tmp_path):
    with new_database(postgres_url) as database:
        servers = [replica(tmp_path, "unready", absent(database)), replica(tmp_path, "ready", database)]
        ports = [int(settings["CDS_PORT"]) for settings, _ in servers]
        with image_servers(*servers), proxy(tmp_path / "proxy", ports) as front:
            answers = [front.call() for _ in range(CALLS)]
            assert [answer.status_code for answer in answers] == [200] * CALLS, answers[-1].text
            # The replica that is not ready was tried once, refused before doing anything, and then left alone
            # (max_fails=1, fail_timeout=3s): its refusal was sent on to the ready replica.
            unready, ready = (f"127.0.0.1:{port}" for port in ports)
            assert 1 <= len(refusals(servers[0][1])) <= 2  # nginx's two workers may each have tried it once
            tried = front.upstreams()
            assert [row for row in tried if row[1][0] == unready] == [(200, [unready, ready])] * len(
                refusals(servers[0][1]))
            assert all(row == (200, [ready]) for row in tried if row[1][0] != unready)

            # And the rest of the front: HTTP to the published HTTPS port, metrics not passed on.
            redirect = requests.get(f"{front.http}/cds-services?x=1", allow_redirects=False, timeout=5)
            assert redirect.status_code == 301
            assert redirect.headers["Location"] == f"{front.https}/cds-services?x=1"
            assert requests.get(f"{front.https}/metrics", verify=front.certificate, timeout=5).status_code == 404


def test_when_no_replica_can_take_a_call_the_proxy_answers_an_operation_outcome(nginx, postgres_url, tmp_path):
    """A replica that is not ready and one that is gone (nothing listens on its port): every call gets a 503
    with an OperationOutcome, the replica's own or the proxy's once both are out of rotation, never nginx's page."""
    with new_database(postgres_url) as database:
        unready = replica(tmp_path, "unready", absent(database))
        with image_servers(unready), proxy(tmp_path / "proxy", [int(unready[0]["CDS_PORT"]), free_port()]) as front:
            said = []
            for _ in range(4):
                answer = front.call()
                assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
                assert answer.headers["Content-Type"].startswith("application/json")
                issue = answer.json()["issue"][0]
                assert answer.json()["resourceType"] == "OperationOutcome" and issue["code"] == "transient"
                said.append(issue["diagnostics"])
            # Both out of rotation after the first call (max_fails=1): the proxy's own answer from then on.
            assert said[1:] == ["No instance of the service could take this request; send it again."] * 3


def test_docker_compose_reads_the_compose_file(tmp_path):
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (scripts/test installs Debian's)")
    file = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    assert file.pop("name") == "cds-coverage"  # Compose v2's project name; v1 knows no such key
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(file))
    (tmp_path / "empty.env").write_text("")  # not a docker/.env this checkout may hold
    argv = [compose, "--project-directory", str(ROOT / "docker"), "--env-file", str(tmp_path / "empty.env"),
            "-f", str(tmp_path / "compose.yaml"), "config"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "CDS_DB_PASSWORD": "0123abcd"})
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    app, proxy_, db = (resolved["services"][name] for name in ("app", "proxy", "db"))
    assert app["build"]["context"] == str(ROOT) and app["deploy"]["replicas"] == 3
    assert app["environment"]["CDS_DATABASE_URL"] == "postgresql+psycopg://cds:0123abcd@db:5432/cds"
    assert app["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert proxy_["depends_on"] == {"app": {"condition": "service_healthy"}}
    assert resolved["secrets"]["cds-clients"]["file"] == str(ROOT / "docker" / "clients.yaml")
    assert db["environment"]["POSTGRES_PASSWORD"] == "0123abcd"
    unset = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                           env={k: v for k, v in os.environ.items() if k != "CDS_DB_PASSWORD"})
    assert unset.returncode != 0 and "set CDS_DB_PASSWORD in docker/.env" in unset.stderr
