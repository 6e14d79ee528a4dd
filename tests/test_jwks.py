"""A registered client's JWK Set URL served by a hostile loopback server: a gzip bomb, a drip, a redirect to
another server's key, plain http outside demo mode, proxy variables in the environment. None may hold more than
one thread, take more than the fetch budget, or let a key from anywhere but the registered URL be trusted."""

from __future__ import annotations

import gzip
import json
import resource
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from cds import auth
from cds.auth import RegistryError, load_registry
from cds.jwks import JWKS_MAX_BYTES, JWKS_TIMEOUT_SECONDS, JwksFetcher
from cds.member.fetch import FetchError
from tests import tokens
from tests.helpers import serve_on_loopback
from tests.tokens import OTHER_EC_KEY, SERVICE_PATH, bearer, mint

ISS = "https://hostile-ehr.test"
ATTACKER_JWKS = {"keys": [tokens.public_jwk(OTHER_EC_KEY, "attacker", "ES384")]}
BOMB_MIB = 256  # decompressed; about 256 KiB on the wire


def _bomb() -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    block = b"\0" * (1024 * 1024)
    return b"".join([*(compressor.compress(block) for _ in range(BOMB_MIB)), compressor.flush()])


class Hostile(ThreadingHTTPServer):
    """Serves each path its own way; counts the requests per path. Every answer ends within 10 s."""

    daemon_threads = True

    def __init__(self, redirect_to: str = ""):
        self.hits: Counter[str] = Counter()
        self.redirect_to = redirect_to
        self.stop = threading.Event()
        super().__init__(("127.0.0.1", 0), HostileHandler)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class HostileHandler(BaseHTTPRequestHandler):
    server: Hostile
    bomb = b""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits[self.path] += 1
        if self.path == "/bomb.json":  # close-delimited, so only decompression can bound it
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(HostileHandler.bomb)
        elif self.path in ("/drip.json", "/drip-head.json"):
            if self.path == "/drip.json":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
            self.wfile.flush()
            for _ in range(100):  # a byte every 0.1 s, for 10 s at most
                if self.server.stop.wait(0.1):
                    break
                try:
                    self.wfile.write(b"H" if self.path == "/drip-head.json" else b" ")
                    self.wfile.flush()
                except OSError:
                    break
        elif self.path == "/moved.json":
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:  # the attacker's own key set, or a proxy asked for any URL
            body = json.dumps(ATTACKER_JWKS).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


@pytest.fixture(scope="module", autouse=True)
def _bomb_made():
    HostileHandler.bomb = _bomb()


@pytest.fixture
def hostile():
    servers: list[Hostile] = []

    def start(redirect_to: str = "") -> Hostile:
        server = Hostile(redirect_to)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop.set()
        server.shutdown()
        server.server_close()


def client_with_jwks_url(make_app, tmp_path, url: str, **settings):
    entry = {"iss": ISS, "jwks_url": url}
    return make_app(clients_file=str(tokens.write_registry(tmp_path, entry)), demo=True, **settings)


def forged(kid: str = "attacker") -> str:
    return mint(iss=ISS, key=OTHER_EC_KEY, kid=kid)


def test_a_gzip_bomb_is_cut_at_the_size_cap_as_it_is_decompressed(hostile):
    server = hostile()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(FetchError, match=f"more than {JWKS_MAX_BYTES} bytes") as refused:
        JwksFetcher(demo=True).fetch(server.url("/bomb.json"))
    assert refused.value.reason == "too-large"
    assert time.monotonic() - started < JWKS_TIMEOUT_SECONDS
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 32 * 1024, f"peak memory grew by {grown_kib} KiB for a {BOMB_MIB} MiB bomb"


@pytest.mark.parametrize("path", ["/drip.json", "/drip-head.json"], ids=["body", "head"])
def test_a_drip_holds_the_call_for_the_budget_at_most(make_app, tmp_path, hostile, order_sign, path):
    server = hostile()
    client = client_with_jwks_url(make_app, tmp_path, server.url(path)).test_client()
    started = time.monotonic()
    response = client.post(SERVICE_PATH, json=order_sign, headers=bearer(forged()))
    assert response.status_code == 401
    assert time.monotonic() - started < JWKS_TIMEOUT_SECONDS + 0.5


def test_forged_tokens_with_made_up_kids_hold_one_thread_at_most(make_app, tmp_path, hostile, order_sign,
                                                                  monkeypatch):
    """Six forged tokens at once, each naming a kid the service has never seen, against a dripping key
    server: one of them waits for the one fetch (the budget at most); the others are refused at once."""
    monkeypatch.setattr(auth, "JWKS_MIN_REFETCH_SECONDS", 0)  # else only the first could even try
    server = hostile()
    app = client_with_jwks_url(make_app, tmp_path, server.url("/drip.json"))
    serving = serve_on_loopback(app)
    base = next(serving)

    def call(index: int) -> tuple[int, float]:
        started = time.monotonic()
        token = mint(iss=ISS, key=OTHER_EC_KEY, kid=f"made-up-{index}", aud=tokens.BASE + SERVICE_PATH)
        response = requests.post(base + SERVICE_PATH, json=order_sign, headers=bearer(token), timeout=10)
        return response.status_code, time.monotonic() - started

    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(call, range(6)))
    finally:
        serving.close()
    assert [status for status, _ in answers] == [401] * 6
    assert server.hits["/drip.json"] == 1
    seconds = sorted(elapsed for _, elapsed in answers)
    assert seconds[-1] < JWKS_TIMEOUT_SECONDS + 0.5
    assert seconds[-2] < 0.5, seconds  # only the fetching call waited


def test_a_redirect_is_a_failed_fetch_and_never_followed(make_app, tmp_path, hostile, order_sign, caplog):
    """An open redirect on the EHR's key host must not let another server's key sign for that EHR."""
    attacker = hostile()
    moved = hostile(redirect_to=attacker.url("/jwks.json"))
    client = client_with_jwks_url(make_app, tmp_path, moved.url("/moved.json")).test_client()
    response = client.post(SERVICE_PATH, json=order_sign, headers=bearer(forged()))
    assert response.status_code == 401
    assert moved.hits["/moved.json"] == 1 and attacker.hits["/jwks.json"] == 0
    assert "answered a redirect (HTTP 302), which is not followed" in caplog.text


def test_http_key_urls_are_refused_outside_demo_mode(make_app, tmp_path, hostile):
    server = hostile()
    registry = tokens.write_registry(tmp_path, {"iss": ISS, "jwks_url": server.url("/jwks.json")})
    with pytest.raises(RegistryError, match=r"jwks_url .* http is allowed only in demo mode; use https"):
        make_app(clients_file=str(registry))
    with pytest.raises(RegistryError, match="http is allowed only in demo mode"):
        load_registry(str(registry), ["ES384"])
    assert sum(server.hits.values()) == 0


def test_proxy_variables_of_the_environment_are_ignored_unless_a_setting_names_a_proxy(
        make_app, tmp_path, hostile, order_sign, monkeypatch):
    proxy, keys = hostile(), hostile()
    keys_url = keys.url("/jwks.json")
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy.url(""))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = client_with_jwks_url(make_app, tmp_path, keys_url).test_client()
    assert client.post(SERVICE_PATH, json=order_sign, headers=bearer(forged())).status_code == 200
    assert sum(proxy.hits.values()) == 0 and keys.hits["/jwks.json"] == 1

    through_proxy = client_with_jwks_url(make_app, tmp_path, keys_url, jwks_proxy=proxy.url("")).test_client()
    assert through_proxy.post(SERVICE_PATH, json=order_sign, headers=bearer(forged())).status_code == 200
    assert proxy.hits[keys_url] == 1 and keys.hits["/jwks.json"] == 1


def test_a_gzip_encoded_key_set_is_read(hostile, monkeypatch):
    """Compression as such is fine: the cap applies to what it decompresses to."""
    server = hostile()
    monkeypatch.setattr(HostileHandler, "bomb", gzip.compress(json.dumps(ATTACKER_JWKS).encode()))
    assert JwksFetcher(demo=True).fetch(server.url("/bomb.json")) == ATTACKER_JWKS
