"""Hostile clients against a real `cds serve` on loopback, exposed directly (no proxy in front): sockets that
send nothing, one byte, or a byte at a time must not stop normal calls; bodies are bounded however they are
framed. Each attack is bounded in sockets and seconds."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cds.web.serving import REQUEST_READ_TIMEOUT_SECONDS
from tests.helpers import free_port, load, wait_until_up

CDS = str(Path(sys.executable).with_name("cds"))
MAX_BODY = 64 * 1024
SERVICE = "/cds-services/order-sign-crd"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, int]]:
    """The service as `cds serve` runs it: 2 workers x 2 threads. Demo mode without authentication, so that a
    hook call from loopback is answered 200 (authentication is tested elsewhere)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")} | {
        "CDS_DATA_DIR": str(tmp_path_factory.mktemp("data")), "CDS_AUTH_DISABLED": "true",
        "CDS_MAX_BODY_BYTES": str(MAX_BODY)}
    process = subprocess.Popen([CDS, "serve", "--demo", "--port", str(port)], stderr=subprocess.DEVNULL, env=env)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", process)
        yield "127.0.0.1", port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def order_sign_bytes() -> bytes:
    return json.dumps(load("sandbox-order-sign-rx.json")).encode()


def connect(server: tuple[str, int], first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(server, timeout=10)
    if first:
        sock.sendall(first)
    return sock


def answer_head(sock: socket.socket) -> bytes:
    """Bytes up to the end of the first answer's head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_idle_one_byte_and_dripping_sockets_leave_normal_calls_answered_within_a_second(server):
    base = f"http://{server[0]}:{server[1]}"
    hook_head = f"POST {SERVICE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
    idle = [connect(server) for _ in range(4)]
    one_byte = [connect(server, b"P") for _ in range(4)]
    # 25 send their head a byte at a time; 25 send a whole head, then their body a byte at a time.
    head_drips = [connect(server) for _ in range(25)]
    body_drips = [connect(server, hook_head + b"Content-Length: 5000\r\n\r\n{") for _ in range(25)]
    # Framed by the last of several transfer codings, then stalled mid-chunk.
    codings = [connect(server, hook_head + b"Transfer-Encoding: gzip, chunked\r\n\r\n10\r\n{") for _ in range(4)]
    stop = threading.Event()

    def drip() -> None:
        for index in range(len(hook_head)):
            if stop.wait(0.1):
                return
            for sock in head_drips:
                sock.send(hook_head[index:index + 1])
            for sock in body_drips:
                sock.send(b" ")

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        time.sleep(0.3)  # every attacking socket accepted and waiting
        body = order_sign_bytes()
        for _ in range(5):
            assert requests.get(f"{base}/health", timeout=1).status_code == 200
            call = requests.post(base + SERVICE, data=body, headers={"Content-Type": "application/json"}, timeout=1)
            assert call.status_code == 200 and "cards" in call.json()
        # A request that does not arrive whole in time ends with 408 and a closed connection.
        one_byte[0].settimeout(REQUEST_READ_TIMEOUT_SECONDS + 2)
        assert answer_head(one_byte[0]).startswith(b"HTTP/1.1 408")
        assert one_byte[0].recv(1) == b""
    finally:
        stop.set()
        dripper.join()
        for sock in idle + one_byte + head_drips + body_drips + codings:
            sock.close()


def chunked(body: bytes, size: int) -> bytes:
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def post_raw(server: tuple[str, int], head: str, body: bytes) -> tuple[int, bytes]:
    with connect(server, f"POST {SERVICE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{head}\r\n"
                 .encode() + body) as sock:
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def test_a_chunked_body_over_the_limit_is_413_and_one_within_it_is_served(server):
    status, body = post_raw(server, "Transfer-Encoding: chunked\r\n", chunked(b" " * (MAX_BODY + 100), 4096))
    assert status == 413
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "too-costly"
    status, body = post_raw(server, "Transfer-Encoding: chunked\r\n", chunked(order_sign_bytes(), 1000))
    assert status == 200 and "cards" in json.loads(body)


@pytest.mark.parametrize("head, body", [
    ("Content-Length: +5\r\n", b"{}"),
    ("Content-Length: 2\r\nContent-Length: 2\r\n", b"{}"),
    ("Transfer-Encoding: chunked\r\nContent-Length: 2\r\n", b"2\r\n{}\r\n0\r\n\r\n"),
    ("Transfer-Encoding: gzip\r\n", b"{}"),
    ("Transfer-Encoding: chunked\r\n", b"0x2\r\n{}\r\n0\r\n\r\n"),
], ids=["signed-length", "repeated-length", "both-framings", "unknown-coding", "prefixed-chunk-size"])
def test_a_malformed_framing_is_400_at_once(server, head, body):
    started = time.monotonic()
    status, _ = post_raw(server, head, body)
    assert status == 400
    assert time.monotonic() - started < 1


def test_a_declared_length_over_the_limit_is_413_at_once_without_the_body(server):
    with connect(server, f"POST {SERVICE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode()) as sock:
        sock.settimeout(2)
        assert answer_head(sock).startswith(b"HTTP/1.1 413")


def test_a_client_expecting_100_continue_is_told_to_send_its_body(server):
    body = order_sign_bytes()
    with connect(server, f"POST {SERVICE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()) as sock:
        sock.settimeout(2)
        assert sock.recv(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert answer_head(sock).startswith(b"HTTP/1.1 200")  # told once, not again


def test_pipelined_requests_on_a_kept_alive_connection_are_all_answered(server):
    with connect(server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 3) as sock:
        sock.settimeout(2)
        answers = b""
        while answers.count(b"HTTP/1.1 200") < 3:
            chunk = sock.recv(65536)
            assert chunk, answers
            answers += chunk
