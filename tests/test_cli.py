"""`cds serve` starts the real service under gunicorn on loopback."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

CDS = str(Path(sys.executable).with_name("cds"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 20) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            return requests.get(url, timeout=1)
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def test_serve_demo_answers_discovery_and_says_what_it_relaxes(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")} | {"CDS_DATA_DIR": str(tmp_path)}
    process = subprocess.Popen([CDS, "serve", "--demo", "--port", str(port), "--workers", "1"],
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        response = wait_until_up(f"http://127.0.0.1:{port}/cds-services", process)
        assert response.status_code == 200
        assert len(response.json()["services"]) == 2
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    assert "demo mode" in stderr and "CORS allows any origin" in stderr


def test_demo_refuses_a_non_loopback_host():
    result = subprocess.run([CDS, "serve", "--demo", "--host", "0.0.0.0"], capture_output=True, text=True,
                            timeout=20)
    assert result.returncode != 0
    assert "loopback" in result.stderr


def test_bad_setting_stops_start_up_naming_the_variable():
    env = {**os.environ, "CDS_PORT": "eighty"}
    result = subprocess.run([CDS, "serve"], capture_output=True, text=True, env=env, timeout=20)
    assert result.returncode != 0
    assert "CDS_PORT" in result.stderr
