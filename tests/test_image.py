"""The container image's start command, configuration and healthcheck, run as-is outside Docker
(tests/image.py): its CMD with two gunicorn workers, and its HEALTHCHECK."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from tests import tokens
from tests.helpers import free_port, load, metric_value
from tests.image import (
    ROOT,
    clean_env,
    final_stage,
    here,
    image_cmd,
    image_env,
    image_healthcheck,
    image_servers,
    instruction,
)

# What a request may carry that must never reach a log.
ACCESS_TOKEN = "ya29.a0AfB-secret-access-token-7Qx"
PATIENT_GIVEN, PATIENT_FAMILY = "Quintessa", "Marchbanks"


@dataclass
class Server:
    argv: list[str]
    url: str
    port: int
    log: Path
    metrics_dir: Path

    def log_records(self) -> list[dict]:
        """Every complete line: the last may still be being written by a worker."""
        return [json.loads(line) for line in self.log.read_text().split("\n")[:-1]]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("image")
    metrics_dir = tmp / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"a previous run's counts")
    port = free_port()
    settings = {
        "CDS_PORT": str(port), "CDS_WORKERS": "2", "CDS_LOG_LEVEL": "DEBUG",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "CDS_CLIENTS_FILE": str(tokens.write_registry(tmp)),
        "CDS_PUBLIC_BASE_URL": tokens.BASE, "CDS_DATA_DIR": str(tmp),
    }
    log = tmp / "stderr.log"
    with image_servers((settings, log)) as [url]:
        yield Server(here(image_cmd()), url, port, log, metrics_dir)


def test_the_server_under_test_runs_the_image_command(server):
    cmd = image_cmd()
    assert cmd == ["gunicorn", "-c", "docker/gunicorn.conf.py", "cds.web.app:create_app()"]
    assert [Path(server.argv[0]).name, *server.argv[1:]] == cmd
    copies = [rest.split() for word, rest in final_stage() if word == "COPY"]
    assert ["docker/gunicorn.conf.py", "docker/gunicorn.conf.py"] in copies and instruction("WORKDIR") == "/app"


def test_image_is_slim_python_and_runs_unprivileged():
    assert [rest for word, rest in final_stage() if word == "FROM"] == ["python:3.11-slim"]
    assert instruction("USER") not in ("root", "0")
    assert image_env()["CDS_HOST"] == "0.0.0.0" and image_env()["CDS_LOG_FORMAT"] == "json"


def test_health_and_ready(server):
    assert requests.get(f"{server.url}/health", timeout=5).json() == {"status": "ok"}
    ready = requests.get(f"{server.url}/ready", timeout=5)
    assert ready.status_code == 200
    assert [(check["name"], check["ok"]) for check in ready.json()["checks"]] == [("policies", True), ("store", True)]


def test_healthcheck_command_passes_while_serving_and_fails_when_nothing_answers(server):
    env = clean_env() | image_env()
    command = here(image_healthcheck())
    alive = subprocess.run(command, env={**env, "CDS_PORT": str(server.port)}, capture_output=True, timeout=20)
    assert alive.returncode == 0, alive.stderr
    ready = subprocess.run([*command, "--ready"], env={**env, "CDS_PORT": str(server.port)}, capture_output=True,
                           timeout=20)
    assert ready.returncode == 0, ready.stderr
    dead = subprocess.run(command, env={**env, "CDS_PORT": str(free_port())}, capture_output=True, timeout=20)
    assert dead.returncode == 1


def test_metrics_add_up_across_both_workers(server):
    assert not (server.metrics_dir / "counter_1.db").exists(), "a previous run's metrics must be cleared"
    before = metric_value(requests.get(f"{server.url}/metrics", timeout=5).text, "cds_http_requests_total",
                          endpoint="discovery", service="", status="200")
    seen = len(server.log_records())
    sent = 0
    # Each request on a new connection; keep on until both workers have answered some (bounded).
    while sent < 10 or (len(_discovery_workers(server, seen)) < 2 and sent < 200):
        assert requests.get(f"{server.url}/cds-services", timeout=5).status_code == 200
        sent += 1
    workers = _discovery_workers(server, seen)
    assert len(workers) == 2 and sum(workers.values()) == sent
    metrics = requests.get(f"{server.url}/metrics", timeout=5)
    assert metrics.headers["Content-Type"].startswith("text/plain")
    after = metric_value(metrics.text, "cds_http_requests_total", endpoint="discovery", service="", status="200")
    assert after - before == sent
    assert metric_value(metrics.text, "cds_http_request_duration_seconds_count", endpoint="discovery") >= sent


def _discovery_workers(server: Server, skip: int) -> Counter:
    return Counter(r["pid"] for r in server.log_records()[skip:]
                   if r["logger"] == "cds.access" and r["message"].startswith("GET /cds-services 200"))


def test_logs_are_json_with_the_request_id_and_no_tokens_or_patient_data(server):
    body = load("sandbox-order-sign-rx.json")
    body["hookInstance"] = "0f5d3a52-8d2c-4b8e-9a51-6c1e2f7d9b03"
    body["fhirAuthorization"] = {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/Patient.read", "subject": "cds-service"}
    body["prefetch"]["patient"]["name"] = [{"family": PATIENT_FAMILY, "given": [PATIENT_GIVEN]}]
    client_jwts = [tokens.mint(), tokens.mint()]
    query = f"?patient={PATIENT_GIVEN}+{PATIENT_FAMILY}&access_token={ACCESS_TOKEN}"
    answered = requests.post(f"{server.url}/cds-services/order-sign-crd{query}", json=body,
                             headers=tokens.bearer(client_jwts[0]), timeout=5)
    assert answered.status_code == 200
    refused = requests.post(f"{server.url}/cds-services/order-sign-crd", json={**body, "hook": "order-select"},
                            headers=tokens.bearer(client_jwts[1]), timeout=5)
    assert refused.status_code == 400

    text = server.log.read_text()
    for secret in (ACCESS_TOKEN, *client_jwts, PATIENT_GIVEN, PATIENT_FAMILY):
        assert secret not in text
    records = server.log_records()  # every line parses as one JSON object
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    calls = [r for r in records if r.get("request_id") == body["hookInstance"] and r["logger"] == "cds.access"]
    assert [(r["status"], r["service"]) for r in calls] == [(200, "order-sign-crd"), (400, "order-sign-crd")]
    assert all(r["latency_ms"] >= 0 for r in calls)


@pytest.mark.parametrize(("variable", "name", "text", "said"), [
    ("CDS_POLICY_DIRS", "broken.yaml", "id: BROKEN\n", "CDS_POLICY_DIRS: policy file not usable"),
    ("CDS_PLAN_DIRECTORY", "plans.yaml", "plans: [1, 2\n", "CDS_PLAN_DIRECTORY="),
])
def test_a_file_the_service_cannot_use_stops_the_image_command_once_naming_its_variable(tmp_path, variable, name,
                                                                                        text, said):
    """Checked by gunicorn's master as it reads docker/gunicorn.conf.py, before any worker boots, as `cds serve`
    does: not once per worker, each failing to boot in turn."""
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / name).write_text(text)
    setting = str(tmp_path / "files") if variable == "CDS_POLICY_DIRS" else str(tmp_path / "files" / name)
    env = clean_env() | image_env() | {
        "CDS_HOST": "127.0.0.1", "CDS_PORT": str(free_port()), "CDS_WORKERS": "2", "CDS_DATA_DIR": str(tmp_path),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), variable: setting}
    result = subprocess.run(here(image_cmd()), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    [line] = [line for line in result.stderr.splitlines() if said in line]
    assert line.startswith(f"cds: {variable}")
    assert "Booting worker" not in result.stderr and "Traceback" not in result.stderr


def test_compose_runs_replicas_behind_tls_with_postgres_and_documents_every_setting():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    app, proxy, db = (compose["services"][name] for name in ("app", "proxy", "db"))
    assert app["deploy"]["replicas"] >= 2 and app["build"]["dockerfile"] == "docker/Dockerfile"
    assert app["environment"]["CDS_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "healthcheck" in db and "healthcheck" in proxy  # app: the image's HEALTHCHECK
    nginx = (ROOT / "docker" / "nginx.conf").read_text()
    assert proxy["ports"][0].endswith(":443") and "listen 443 ssl" in nginx
    docs = (ROOT / "README.md").read_text() + (ROOT / "docs" / "operating.md").read_text()
    undocumented = [name for name in app["environment"] if f"`{name}`" not in docs]
    assert undocumented == []


def test_compose_routes_on_readiness_checks_the_database_itself_and_redirects_to_the_published_port():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    app, proxy, db = (compose["services"][name] for name in ("app", "proxy", "db"))
    assert app["healthcheck"]["test"] == ["CMD", *image_healthcheck(), "--ready"]
    assert proxy["depends_on"]["app"]["condition"] == "service_healthy"
    [check] = db["healthcheck"]["test"][1:]
    assert "psql -h 127.0.0.1 -U cds -d cds" in check  # over TCP: the first-start server listens on a socket only
    # nginx.conf is a template the nginx image fills in: only CDS_* variables, written over its nginx.conf.
    assert "./nginx.conf:/etc/nginx/templates/nginx.conf.template:ro" in proxy["volumes"]
    assert proxy["environment"]["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx"
    assert proxy["environment"]["NGINX_ENVSUBST_FILTER"] == "^CDS_"
    assert proxy["environment"]["CDS_HTTPS_PORT"] == "${CDS_HTTPS_PORT:-443}"
    assert proxy["ports"][0] == "${CDS_HTTPS_PORT:-443}:443"
    nginx = (ROOT / "docker" / "nginx.conf").read_text()
    assert "return 301 https://$host:${CDS_HTTPS_PORT}$request_uri;" in nginx
    assert set(re.findall(r"\$\{(\w+)\}", nginx)) == {"CDS_HTTPS_PORT"}
