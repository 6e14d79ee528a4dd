"""Replay detection holds across a real gunicorn's workers: seen token ids live in the shared store
(across processes and databases: tests/test_store.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests import tokens
from tests.test_cli import CDS, free_port, wait_until_up

REPLAY_REFUSED = re.compile(r"\[(\d+)\] WARNING cds\.auth: 401 .*replayed jti")


def test_a_token_replayed_against_two_gunicorn_workers_is_accepted_exactly_once(tmp_path, order_sign):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CDS_")},
           "CDS_CLIENTS_FILE": str(tokens.write_registry(tmp_path)), "CDS_PUBLIC_BASE_URL": base,
           "CDS_DATA_DIR": str(tmp_path), "CDS_THREADS": "1"}
    server = subprocess.Popen([CDS, "serve", "--port", str(port), "--workers", "2"], env=env,
                              stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(server.stderr), daemon=True).start()
    token = tokens.mint(aud=base + tokens.SERVICE_PATH)

    def send(_: int) -> int:
        with requests.Session() as session:  # a new connection each time, for any worker to take
            return session.post(base + tokens.SERVICE_PATH, json=order_sign, timeout=10,
                                headers={**tokens.bearer(token), "Connection": "close"}).status_code

    def refusing_workers() -> set[str]:
        return {match.group(1) for line in list(log) if (match := REPLAY_REFUSED.search(line))}

    statuses: list[int] = []
    try:
        wait_until_up(f"{base}/health", server)
        with ThreadPoolExecutor(8) as pool:
            for _ in range(10):  # concurrent batches until both workers have refused the token
                statuses += pool.map(send, range(16))
                time.sleep(0.05)
                if len(refusing_workers()) == 2:
                    break
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    assert statuses.count(200) == 1 and statuses.count(401) == len(statuses) - 1
    assert len(refusing_workers()) == 2, "both worker processes must have been sent the token"
