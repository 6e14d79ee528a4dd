"""Least exposure: the SQLite store private to the service's user, /ready's details for operators only,
/metrics on an operator listener of its own (CDS_METRICS_BIND)."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from cds.config import Settings, SettingsError
from tests.helpers import free_port, metric_value, wait_until_up

CDS = str(Path(sys.executable).with_name("cds"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)  # the common default, under which files are created world-readable
    yield
    os.umask(previous)


def test_the_data_directory_and_every_store_file_are_private(make_app, tmp_path, umask_022, order_sign):
    data = tmp_path / "data"
    client = make_app(database_url="", data_dir=str(data)).test_client()
    assert client.post("/cds-services/order-sign-crd", json=order_sign).status_code == 200
    expected = {"cds.sqlite3", "cds.sqlite3-wal", "cds-replay.sqlite3", "cds-replay.sqlite3-wal"}
    deadline = time.monotonic() + 5
    while not expected <= {path.name for path in data.iterdir()} and time.monotonic() < deadline:
        time.sleep(0.05)  # the background writer records the call
    files = sorted(path.name for path in data.iterdir())
    assert expected <= set(files)
    assert mode(data) == 0o700
    assert {name: mode(data / name) for name in files} == {
        name: 0o700 if (data / name).is_dir() else 0o600 for name in files}  # the spool is a directory


def test_store_files_others_can_read_are_named_at_start_up(make_app, tmp_path, caplog):
    data = tmp_path / "shared"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "cds.sqlite3").touch(mode=0o644)
    (data / "cds.sqlite3").chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="cds.record.engine"):
        make_app(database_url="", data_dir=str(data))
    assert f"{data} has mode 755: others may read audit records; chmod 700 {data}" in caplog.text
    assert f"{data / 'cds.sqlite3'} has mode 644: others may read audit records; chmod 600" in caplog.text


def test_ready_names_its_checks_to_anyone_and_their_details_only_to_operators(client):
    from_afar = client.get("/ready", environ_base={"REMOTE_ADDR": "203.0.113.9"}).get_json()
    assert from_afar == {"status": "ready", "checks": [{"name": "policies", "ok": True}, {"name": "store", "ok": True}]}
    on_this_host = client.get("/ready").get_json()
    assert on_this_host["checks"][1]["detail"].startswith("sqlite answered in")


@pytest.mark.parametrize("bind", ["9100", "127.0.0.1:", "127.0.0.1:99999", "127.0.0.1:8080"])
def test_a_metrics_bind_that_cannot_work_stops_start_up(bind):
    with pytest.raises(SettingsError, match="CDS_METRICS_BIND"):
        Settings(metrics_bind=bind).resolved()
    with pytest.raises(SettingsError, match="CDS_METRICS_ENABLED is false"):
        Settings(metrics_bind="127.0.0.1:9100", metrics_enabled=False).resolved()


def test_metrics_are_served_on_the_operator_listener_only(tmp_path):
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS_"))} | {
        "CDS_DATA_DIR": str(tmp_path), "CDS_METRICS_BIND": f"127.0.0.1:{metrics_port}"}
    process = subprocess.Popen([CDS, "serve", "--port", str(port), "--workers", "1"], stderr=subprocess.PIPE,
                               text=True, env=env)
    service, operator = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    try:
        wait_until_up(f"{service}/health", process)
        assert requests.get(f"{service}/cds-services", timeout=5).status_code == 200
        assert requests.get(f"{service}/metrics", timeout=5).status_code == 404
        # The Host header does not make the service port the operator's.
        assert requests.get(f"{service}/metrics", headers={"Host": f"127.0.0.1:{metrics_port}"},
                            timeout=5).status_code == 404
        scraped = requests.get(f"{operator}/metrics", timeout=5)
        assert scraped.status_code == 200
        assert metric_value(scraped.text, "cds_http_requests_total", endpoint="discovery", status="200") == 1
        assert requests.get(f"{operator}/ready", timeout=5).json()["checks"][1]["detail"]
        assert requests.get(f"{operator}/health", timeout=5).status_code == 200
        assert requests.get(f"{operator}/cds-services", timeout=5).status_code == 404
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert f"Metrics on http://127.0.0.1:{metrics_port}/metrics" in stderr
