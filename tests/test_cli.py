"""`cds serve` starts the real service under gunicorn on loopback."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import requests

from hooks import HOOKS
from tests.helpers import free_port, metric_value, wait_until_up

CDS = str(Path(sys.executable).with_name("cds"))


def test_serve_demo_answers_discovery_and_says_what_it_relaxes(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")} | {"CDS_DATA_DIR": str(tmp_path)}
    process = subprocess.Popen([CDS, "serve", "--demo", "--port", str(port), "--workers", "1"],
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        response = wait_until_up(f"http://127.0.0.1:{port}/cds-services", process)
        assert response.status_code == 200
        assert len(response.json()["services"]) == len(HOOKS)
        oversized = requests.get(f"http://127.0.0.1:{port}/cds-services", headers={"Authorization": "x" * 20000},
                                 timeout=5)
        assert oversized.status_code == 431
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    assert "demo mode" in stderr and "CORS allows any origin" in stderr
    assert "trusts the public CDS Hooks sandbox key" in stderr


def test_serve_runs_the_shared_gunicorn_configuration():
    """JSON logs, summed metrics and their private directory, removed on exit: cds/gunicorn_config.py at work."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS_"))}
    process = subprocess.Popen([CDS, "serve", "--port", str(port), "--workers", "1"], stderr=subprocess.PIPE,
                               text=True, env={**env, "CDS_LOG_FORMAT": "json"})
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", process)  # probes may time out and repeat on a busy host
        assert requests.get(f"http://127.0.0.1:{port}/cds-services", timeout=10).status_code == 200
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    assert metric_value(metrics, "cds_http_requests_total", endpoint="discovery", status="200") == 1
    records = [json.loads(line) for line in stderr.splitlines() if not line.startswith("CDS service on")]
    loggers = {record["logger"] for record in records}
    assert {"gunicorn.error", "cds.access"} <= loggers and "gunicorn.access" not in loggers  # the app's lines only
    metrics_dir = next(r["message"].rsplit(" ", 1)[1] for r in records if r["message"].startswith("metrics of"))
    assert not Path(metrics_dir).exists()


def test_serve_spreads_connections_kept_alive_over_its_workers(tmp_path):
    """An EHR keeps a few connections open for long; each worker must get its share of them, or one core
    serves them all while the other idles (left to gunicorn's accept race: 14 or all 16 of 16 on one)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")} | {
        "CDS_DATA_DIR": str(tmp_path), "CDS_LOG_FORMAT": "json"}
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr_file:
        process = subprocess.Popen([CDS, "serve", "--port", str(port), "--workers", "2"], stderr=stderr_file,
                                   text=True, env=env)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", process)
        _wait_for_workers_serving(port, log, 2)  # else a loaded machine's late worker looks like no spreading
        connections = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(16)]
        for connection in connections:
            connection.sendall(b"GET /cds-services HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for connection in connections:
            assert connection.makefile("rb").readline().startswith(b"HTTP/1.1 200")
            connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    served = Counter(record["pid"] for record in _log_records(log)
                     if record["logger"] == "cds.access" and record["message"].startswith("GET /cds-services 200"))
    assert sum(served.values()) == 16
    assert len(served) == 2 and min(served.values()) >= 4, served


def _log_records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _wait_for_workers_serving(port: int, log: Path, workers: int, timeout: float = 30) -> None:
    """Until `workers` workers have each answered a call of its own (one connection a call), so all are up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            connection.makefile("rb").read()
        serving = {record["pid"] for record in _log_records(log)
                   if record["logger"] == "cds.access" and record["message"].startswith("GET /openapi.json 200")}
        if len(serving) >= workers:
            return
        time.sleep(0.05)
    raise AssertionError(f"{workers} workers did not answer within {timeout} s")


def test_demo_refuses_a_non_loopback_host_naming_where_it_came_from():
    result = subprocess.run([CDS, "serve", "--demo", "--host", "0.0.0.0"], capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 2
    assert "Error: --host 0.0.0.0: demo mode listens on loopback only, not on 0.0.0.0" in result.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")} | {"CDS_HOST": "0.0.0.0"}
    result = subprocess.run([CDS, "serve", "--demo"], capture_output=True, text=True, timeout=20, env=env)
    assert "Error: CDS_HOST=0.0.0.0: demo mode listens on loopback only, not on 0.0.0.0" in result.stderr


def test_the_banner_comes_once_a_worker_answers(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")} | {"CDS_DATA_DIR": str(tmp_path)}
    process = subprocess.Popen([CDS, "serve", "--port", str(port), "--workers", "1"], stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        before = []
        for line in process.stderr:
            if line.startswith("CDS service on"):
                break
            before.append(line)
        assert line == f"CDS service on http://127.0.0.1:{port}/cds-services\n"
        assert any("Booting worker" in earlier for earlier in before)
        assert requests.get(f"http://127.0.0.1:{port}/cds-services", timeout=5).status_code == 200  # at once
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)


def test_start_up_warnings_come_once_whatever_the_workers(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")} | {
        "CDS_DATA_DIR": str(tmp_path), "CDS_AUTH_DISABLED": "true", "CDS_PORTT": "8081"}
    process = subprocess.Popen([CDS, "serve", "--demo", "--port", str(port), "--workers", "3"],
                               stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if line.startswith("CDS service on"):
                break
        wait_until_up(f"http://127.0.0.1:{port}/health", process)
        time.sleep(1)  # every worker booted and built its app
    finally:
        process.send_signal(signal.SIGTERM)
        lines += process.communicate(timeout=20)[1].splitlines(keepends=True)
    logged = "".join(lines)
    assert logged.count("Booting worker") == 3
    for message in ("demo mode: bound to loopback only", "authentication is OFF: calls from loopback",
                    "CDS_PORTT is not a setting of this service (did you mean CDS_PORT?)", "CDS service on"):
        assert logged.count(message) == 1, message


def test_a_port_in_use_is_reported_as_such_without_a_banner():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
        result = subprocess.run([CDS, "serve", "--port", str(port)], capture_output=True, text=True, timeout=20,
                                env=env)
        by_variable = subprocess.run([CDS, "serve"], capture_output=True, text=True, timeout=20,
                                     env={**env, "CDS_PORT": str(port)})
    assert result.returncode == 1
    assert f"Error: port {port} on 127.0.0.1 is in use by another process; stop it or pick another port with " \
           "--port" in result.stderr
    assert "CDS service on" not in result.stderr
    assert by_variable.stderr.rstrip().endswith("pick another port with CDS_PORT")


def test_bad_setting_stops_start_up_naming_the_variable():
    env = {**os.environ, "CDS_PORT": "eighty"}
    result = subprocess.run([CDS, "serve"], capture_output=True, text=True, env=env, timeout=20)
    assert result.returncode != 0
    assert "CDS_PORT" in result.stderr


def test_an_unusable_clients_file_stops_start_up_naming_it(tmp_path):
    registry = tmp_path / "clients.yaml"
    registry.write_text("clients:\n  - iss: https://ehr.example\n")
    env = {**os.environ, "CDS_CLIENTS_FILE": str(registry)}
    result = subprocess.run([CDS, "serve"], capture_output=True, text=True, env=env, timeout=20)
    assert result.returncode != 0
    assert f"Error: CDS_CLIENTS_FILE {registry}: clients[0]: give the client's keys as jwks, jwks_file or jwks_url" \
        in result.stderr
    assert "validation error" not in result.stderr and "pydantic" not in result.stderr


def test_version_and_python_dash_m():
    from cds import __version__

    for command in ([CDS, "--version"], [sys.executable, "-m", "cds", "--version"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert (result.returncode, result.stdout) == (0, f"cds {__version__}\n")
    result = subprocess.run([sys.executable, "-m", "cds", "--help"], capture_output=True, text=True, timeout=30)
    assert result.stdout.startswith("Usage: cds [OPTIONS] COMMAND [ARGS]...")
    for command in ("serve", "discover", "send", "order", "feedback", "keys", "fhir", "audit"):
        assert f"\n  {command} " in result.stdout


def test_help_loads_none_of_the_heavy_modules():
    """`cds --help` and usage errors answer at once: the service, its HTTP, database and FHIR libraries are
    imported only by the command that needs them."""
    probe = ("import sys; from cds.tools.cli import main\n"
             "for args in (['--help'], ['audit', '--help'], ['keys', 'new', '--help'], ['send', '--bogus']):\n"
             "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
             "heavy = ('sqlalchemy', 'gunicorn', 'rich', 'requests', 'jwt', 'cryptography', 'fhir', 'pydantic', "
             "'flask', 'cds.config', 'cds.pipeline', 'cds.record')\n"
             "print(sorted({m.split('.')[0] if not m.startswith('cds.') else m for m in sys.modules "
             "if m.startswith(heavy)}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert result.stdout.splitlines()[-1] == "[]", result.stderr
