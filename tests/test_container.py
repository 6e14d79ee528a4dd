"""The container image built from docker/Dockerfile, unchanged, and run on a private Docker engine.

Its base, python:3.11-slim, is made here without a registry (scripts/image-base: Debian bookworm by
debootstrap, Debian's Python 3.11). The image runs with its defaults alone, and with the `docker run` commands
of docs/operating.md: in production (read-only root file system, a clients file of the test EHR's key readable
by the image's user, a PostgreSQL store, signed calls over loopback, a graceful stop with a call in hand) and
in demo mode. The private engine has no bridge network, so a documented `-p` becomes the host's network
(listening on loopback) or none. Skipped only where no Docker engine can start.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml

from cds.console.scenarios import CATALOGUE
from tests import tokens
from tests.conftest import load
from tests.dockerd import Engine, NoEngine, private_engine
from tests.helpers import free_port
from tests.image import ROOT
from tests.postgres import new_database
from tests.test_compose import proxy

TAG = "cds-coverage:test"
RUNTIME_UID = 10001
# What the image build may take from nothing (its base made, every dependency downloaded), and a container's start.
BUILD_SECONDS = 900
START_SECONDS = 90
DOCS = ROOT / "docs" / "operating.md"
OPTIONS_WITH_VALUES = frozenset({"--name", "-p", "-e", "-v", "--stop-timeout"})


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    try:
        with private_engine() as engine:
            yield engine
    except NoEngine as exc:
        pytest.skip(f"no Docker engine can start here: {exc}")


@pytest.fixture(scope="module")
def base(engine: Engine) -> str:
    made = subprocess.run([str(ROOT / "scripts" / "image-base")], env=engine.env, capture_output=True, text=True,
                          timeout=BUILD_SECONDS)
    assert made.returncode == 0, made.stderr[-3000:]
    return "python:3.11-slim"


@pytest.fixture(scope="module")
def image(engine: Engine, base: str) -> str:
    # The build's steps reach PyPI through the host's network: the private engine has no bridge of its own. The
    # build stage gets a tag of its own, so its layers (the pinned dependencies) outlive the engine's pruning of
    # untagged images and serve the next run's build from its cache.
    for options in (["--target", "build", "--tag", f"{TAG}-build-stage"], ["--tag", TAG]):
        engine.docker("build", "--network", "host", *options, "-f", "docker/Dockerfile", ".", cwd=ROOT,
                      timeout=BUILD_SECONDS)
    return TAG


class Container:
    def __init__(self, engine: Engine, *args: str) -> None:
        self.engine = engine
        self.name = f"cds-test-{uuid.uuid4().hex[:12]}"
        engine.docker("run", "--detach", "--name", self.name, *args)

    def inspect(self, template: str) -> str:
        return self.engine.docker("inspect", "--format", template, self.name).stdout.strip()

    def logs(self) -> str:
        result = self.engine.docker("logs", self.name)
        return result.stdout + result.stderr

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.engine.docker("exec", self.name, *argv, check=False)

    def wait_healthy(self) -> None:
        """Until the image's own HEALTHCHECK reports the container healthy (its first check runs after 10 s)."""
        deadline = time.monotonic() + START_SECONDS
        while (status := self.inspect("{{.State.Status}} {{.State.Health.Status}}")) != "running healthy":
            assert status.split()[0] == "running", f"container {status}:\n{self.logs()[-3000:]}"
            assert time.monotonic() < deadline, f"not healthy in {START_SECONDS} s:\n{self.logs()[-3000:]}"
            time.sleep(0.5)

    def wait_exited(self) -> int:
        deadline = time.monotonic() + START_SECONDS
        while self.inspect("{{.State.Status}}") != "exited":
            assert time.monotonic() < deadline, f"still running after {START_SECONDS} s:\n{self.logs()[-3000:]}"
            time.sleep(0.2)
        return int(self.inspect("{{.State.ExitCode}}"))

    def stop(self) -> int:
        """`docker stop` with more time than gunicorn's graceful timeout (10 s), as the docs say; the exit code."""
        self.engine.docker("stop", "--time", "15", self.name, timeout=30)
        return int(self.inspect("{{.State.ExitCode}}"))

    def runtime_ids(self) -> tuple[int, int]:
        """The real uid and gid of PID 1 (gunicorn's master), read from the process itself."""
        status = self.exec("cat", "/proc/1/status").stdout
        fields = {line.split(":")[0]: line.split()[1] for line in status.splitlines()
                  if line.startswith(("Uid:", "Gid:"))}
        return int(fields["Uid"]), int(fields["Gid"])

    def get_inside(self, path: str) -> tuple[int, str]:
        """GET on the container's own loopback (it may have no network at all): status and body."""
        script = ("import sys, urllib.error, urllib.request as r\n"
                  "try:\n    a = r.urlopen('http://127.0.0.1:8080' + sys.argv[1], timeout=5)\n"
                  "except urllib.error.HTTPError as e:\n    a = e\n"
                  "print(a.status); print(a.read().decode())")
        out = self.exec("python", "-c", script, path)
        assert out.returncode == 0, out.stderr
        status, body = out.stdout.split("\n", 1)
        return int(status), body

    def post_inside(self, path: str, body: dict) -> int:
        script = ("import sys, urllib.error, urllib.request as r\n"
                  "q = r.Request('http://127.0.0.1:8080' + sys.argv[1], data=sys.argv[2].encode(),"
                  " headers={'Content-Type': 'application/json'})\n"
                  "try:\n    print(r.urlopen(q, timeout=5).status)\nexcept urllib.error.HTTPError as e:\n"
                  "    print(e.status)")
        out = self.exec("python", "-c", script, path, json.dumps(body))
        assert out.returncode == 0, out.stderr
        return int(out.stdout)

    def remove(self) -> None:
        self.engine.docker("rm", "--force", "--volumes", self.name, check=False)


@contextmanager
def _run(engine: Engine, *args: str) -> Iterator[Container]:
    container = Container(engine, *args)
    try:
        yield container
    finally:
        container.remove()


@pytest.fixture(scope="module")
def defaults(engine: Engine, image: str) -> Iterator[Container]:
    """`docker run IMAGE` with no settings at all, on no network."""
    with _run(engine, "--network", "none", image) as container:
        yield container


@pytest.fixture(scope="module")
def production(engine: Engine, image: str, postgres_url: str, tmp_path_factory) -> Iterator[tuple[Container, str]]:
    """docs/operating.md's production command with this test's values: the test EHR's clients file (root's,
    readable by the image's group, as the docs say), a database of the test PostgreSQL, the host's network on
    loopback for -p; the container and its base URL."""
    registry = tokens.write_registry(tmp_path_factory.mktemp("registry"))
    os.chown(registry, 0, RUNTIME_UID)
    registry.chmod(0o640)
    port = free_port()
    with new_database(postgres_url) as database:
        options = documented_run("cds", ["--network", "host", "-e", "CDS_HOST=127.0.0.1", "-e", f"CDS_PORT={port}"],
                                 env={"CDS_PUBLIC_BASE_URL": tokens.BASE, "CDS_DATABASE_URL": database},
                                 mounts={"/run/secrets/cds-clients": str(registry)})
        with _run(engine, *options, image) as container:
            container.wait_healthy()
            yield container, f"http://127.0.0.1:{port}"


def documented_run(name: str, publish: list[str], env: dict[str, str] | None = None,
                   mounts: dict[str, str] | None = None) -> list[str]:
    """The options of docs/operating.md's `docker run` of container `name`, for this engine: its -p replaced by
    `publish`, each `-e NAME=...` named in `env` given that value, each `-v ...:TARGET` named in `mounts` that
    source. Container names, --rm and -d are Container's own."""
    env, mounts = env or {}, mounts or {}
    text = DOCS.read_text().replace("\\\n", " ")
    [line] = [line for line in text.splitlines() if line.startswith("docker run") and f" --name {name} " in line]
    words = shlex.split(line)[2:]
    assert words.pop() == "cds-coverage"
    options, used = [], set()
    while words:
        option = words.pop(0)
        value = words.pop(0) if option in OPTIONS_WITH_VALUES else None
        if option in ("--name", "--rm", "-d"):
            continue
        if option == "-p":
            options += publish
            continue
        if option == "-e" and value.split("=", 1)[0] in env:
            used.add(key := value.split("=", 1)[0])
            value = f"{key}={env[key]}"
        if option == "-v" and value.split(":")[1] in mounts:
            used.add(target := value.split(":")[1])
            value = ":".join([mounts[target], *value.split(":")[1:]])
        options += [option] if value is None else [option, value]
    assert used == env.keys() | mounts.keys(), f"docs/operating.md's {name!r} command lacks {env.keys() - used}"
    return options


def test_build_context_holds_only_what_the_image_needs(engine, base):
    """The root .dockerignore, as the legacy builder applies it (BuildKit reads the same file): no .git, no
    docker/.env (the database password), TLS keys or clients files, whatever lies in the working tree."""
    engine.docker("build", "--network", "none", "--tag", "cds-context:test", "-f", "-", ".", cwd=ROOT,
                  input=f"FROM {base}\nCOPY . /context\n")
    listed = engine.docker("run", "--rm", "--network", "none", "cds-context:test",
                           "find", "/context", "-type", "f").stdout.split()
    files = {str(Path(path).relative_to("/context")) for path in listed}
    allowed = {"constraints.txt", "pyproject.toml", "README.md", "LICENSE", "docker/gunicorn.conf.py"}
    assert {"pyproject.toml", "constraints.txt", "docker/gunicorn.conf.py", "cds/web/app.py"} <= files
    outside = sorted(f for f in files if f not in allowed and f.split("/")[0] not in ("cds", "hooks", "fhir_examples"))
    assert outside == []
    assert not [f for f in files if "__pycache__" in f]


def test_image_runs_with_its_defaults_alone(defaults):
    defaults.wait_healthy()
    status, body = defaults.get_inside("/ready")
    assert status == 200, body
    assert [(check["name"], check["ok"]) for check in json.loads(body)["checks"]] == [("policies", True),
                                                                                    ("store", True)]
    assert defaults.exec("python", "-m", "cds.tools.healthcheck", "--ready").returncode == 0
    assert defaults.post_inside(tokens.SERVICE_PATH, load("e0221-home-device.json")) == 401  # no client trusted
    assert defaults.runtime_ids() == (RUNTIME_UID, RUNTIME_UID)
    # The SQLite store lives in the image's volume, owned by the runtime user.
    assert defaults.exec("test", "-O", "/var/lib/cds/cds.sqlite3").returncode == 0
    assert "/var/lib/cds" in defaults.inspect("{{json .Mounts}}")
    logs = defaults.logs()
    assert "Traceback" not in logs and "alembic.runtime.plugins" not in logs
    assert all(json.loads(line)["level"] for line in logs.splitlines())  # JSON lines, the image's log format
    assert defaults.stop() == 0


def test_production_run_serves_signed_calls_from_a_read_only_root_with_a_postgresql_store(production):
    container, url = production
    ready = requests.get(f"{url}/ready", timeout=5)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"][1]["detail"].startswith("postgresql answered")
    assert container.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"
    assert container.runtime_ids() == (RUNTIME_UID, RUNTIME_UID)
    answered = _order_sign(url, tokens.mint())
    assert answered.status_code == 200, answered.text
    cards = answered.json()["cards"]
    assert cards and all(card["summary"] and card["source"]["label"] for card in cards)
    assert _order_sign(url, None).status_code == 401


def test_docker_stop_finishes_the_call_in_hand_and_exits_0(production):
    container, url = production
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps(load("e0221-home-device.json") | {"hookInstance": str(uuid.uuid4())}).encode()
    head = (f"POST {tokens.SERVICE_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {tokens.mint()}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as call:
        call.sendall(head.encode() + body[:200])
        time.sleep(0.5)  # a worker thread has the call in hand, waiting for the rest of its body
        # The documented --stop-timeout (15 s), not docker stop's default of 10 s, bounds the stop.
        stopping = subprocess.Popen(container.engine.argv("stop", container.name),
                                    env=container.engine.env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_log(container, "Handling signal: term")  # gunicorn's master has it, and passes it on
        time.sleep(0.5)
        call.sendall(body[200:])
        response = http.client.HTTPResponse(call)
        response.begin()
        answer = json.loads(response.read())
    assert stopping.wait(timeout=30) == 0
    assert response.status == 200 and answer["cards"]
    assert container.inspect("{{.Config.StopTimeout}}") == "15"
    assert container.inspect("{{.State.Status}} {{.State.ExitCode}}") == "exited 0"


def test_a_clients_file_the_runtime_user_cannot_read_stops_the_container_saying_so(engine, image, tmp_path):
    registry = tokens.write_registry(tmp_path)
    registry.chmod(0o600)  # root's alone, as a secret often is mounted
    with _run(engine, "--network", "none", "--env", "CDS_CLIENTS_FILE=/run/secrets/cds-clients",
                          "--volume", f"{registry}:/run/secrets/cds-clients:ro", image) as container:
        assert container.wait_exited() != 0
        logs = container.logs()
        assert f"CDS_CLIENTS_FILE=/run/secrets/cds-clients is missing or not readable by uid {RUNTIME_UID}" in logs
        assert "Traceback" not in logs


def test_demo_mode_refuses_to_listen_beyond_loopback_unless_told(engine, image):
    with _run(engine, "--network", "none", "--env", "CDS_DEMO=true", image) as container:
        assert container.wait_exited() != 0
        logs = container.logs()
        assert "demo mode listens on loopback only, not on 0.0.0.0" in logs
        assert "private key is public" in logs and "CDS_DEMO_ALLOW_REMOTE=true" in logs


def test_documented_demo_run_says_it_listens_beyond_loopback_and_keeps_authentication(engine, image):
    # CDS_AUTH_DISABLED added: it must have no effect on a service listening beyond loopback.
    options = documented_run("cds-demo", ["--network", "none"])
    with _run(engine, *options, "-e", "CDS_AUTH_DISABLED=true", image) as container:
        container.wait_healthy()
        warnings = [json.loads(line)["message"] for line in container.logs().splitlines() if "demo mode" in line]
        assert any("listening on 0.0.0.0, beyond loopback" in line for line in warnings), warnings
        assert any("anyone who reaches the port can sign calls" in line for line in warnings), warnings
        assert not any("loopback only" in line or "authentication is OFF" in line for line in warnings), warnings
        # The console's member scenarios come with the image (its fhir_examples/).
        status, page = container.get_inside("/console/")
        assert status == 200 and "No member scenarios" not in page
        assert [label for _, label, _ in CATALOGUE if label not in page] == []
        # Even from the container's own loopback: authentication cannot be turned off through a published port.
        assert container.post_inside(tokens.SERVICE_PATH, load("sandbox-order-sign-rx.json")) == 401


def test_compose_app_service_runs_in_the_image_behind_the_proxy_config(engine, image, postgres_url, tmp_path):
    """Two replicas as docker/compose.yaml's app service runs them (its environment, read-only root, /tmp in
    memory, the clients file as a secret readable by the image's group, its --ready healthcheck) on one
    PostgreSQL, behind docker/nginx.conf under Debian's nginx (tests/test_compose.py). What differs, for the host
    network this engine has: each replica's ports, and this test's database and public URL."""
    app = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]["app"]
    assert app["read_only"] is True and app["tmpfs"] == ["/tmp"] and app["secrets"] == ["cds-clients"]
    registry = tokens.write_registry(tmp_path)
    os.chown(registry, 0, RUNTIME_UID)
    registry.chmod(0o640)  # as the compose file's header says
    health = app["healthcheck"]
    assert health["test"][0] == "CMD"
    with new_database(postgres_url) as database:
        ports, containers = [free_port(), free_port()], []
        try:
            for port in ports:
                env = _compose_environment(app["environment"]) | {
                    "CDS_HOST": "127.0.0.1", "CDS_PORT": str(port), "CDS_METRICS_BIND": f"127.0.0.1:{free_port()}",
                    "CDS_DATABASE_URL": database, "CDS_PUBLIC_BASE_URL": tokens.BASE}
                options = ["--network", "host", "--read-only", "--tmpfs", "/tmp",
                           "--volume", f"{registry}:{env['CDS_CLIENTS_FILE']}:ro",
                           "--health-cmd", shlex.join(health["test"][1:]), "--health-interval", health["interval"],
                           "--health-timeout", health["timeout"], "--health-retries", str(health["retries"]),
                           "--health-start-period", health["start_period"],
                           "--stop-timeout", app["stop_grace_period"].removesuffix("s")]
                options += [word for name, value in env.items() for word in ("--env", f"{name}={value}")]
                containers.append(Container(engine, *options, image))
            for container in containers:
                container.wait_healthy()  # healthy here means ready: the compose healthcheck
            with proxy(tmp_path / "proxy", ports) as front:
                answers = [front.call() for _ in range(6)]
                assert [answer.status_code for answer in answers] == [200] * 6, answers[-1].text
                assert {tried[0] for _, tried in front.upstreams()} == {f"127.0.0.1:{port}" for port in ports}
                token = tokens.mint()
                assert [front.call(token).status_code for _ in range(2)] == [200, 401]  # one database's replays
            for container in containers:
                assert container.stop() == 0
        finally:
            for container in containers:
                container.remove()


def _compose_environment(environment: dict[str, str]) -> dict[str, str]:
    """The compose file's values with `${NAME:-default}` taken as the default (this test sets what has none)."""
    values = {name: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)) for name, value in environment.items()}
    assert [name for name, value in values.items() if "${" in value] == ["CDS_DATABASE_URL"]
    return values


def _order_sign(url: str, jwt: str | None) -> requests.Response:
    body = load("e0221-home-device.json") | {"hookInstance": str(uuid.uuid4())}
    return requests.post(f"{url}{tokens.SERVICE_PATH}", json=body, headers=tokens.bearer(jwt) if jwt else {},
                         timeout=10)


def _wait_for_log(container: Container, text: str) -> None:
    deadline = time.monotonic() + 10
    while text not in container.logs():
        assert time.monotonic() < deadline, f"no {text!r} in the container's log within 10 s"
        time.sleep(0.1)
