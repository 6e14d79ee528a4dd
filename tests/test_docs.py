"""The documentation is true and findable.

Every fenced block marked for it is run, in the order of its file, against real servers on free loopback
ports (8080 in the docs is the service, 8081 the example FHIR server), from a scratch directory that holds
the checkout's fhir_examples/, tests/, cds/ and .venv/:

- `<!-- docs-test: serve -->` before a block starts the command in the background and waits for it to answer
  HTTP (a later one on the same port replaces it);
- `<!-- docs-test -->` before a `sh` block runs it with bash; every command must succeed;
- `<!-- docs-test: answer FILE PATH -->` before a `json` block: that block is the part at PATH (keys and
  indexes, dot-separated) of the running service's answer to the request in FILE; uuids and dates may differ;
- `<!-- docs-test -->` before a `text` block of `$ command` lines and their output runs each command and
  compares what it prints (stdout and stderr) with the output shown. A line `...` stands for any lines;
  times of day, durations in ms and uuids may differ, and a uuid first seen in an output stands for the
  same value in later commands.

Also: the README stays a short front door, and every relative link leads to a file and heading that exist."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "fhir_examples" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
MARKED = re.compile(r"^<!-- docs-test(?:: (?P<kind>serve|answer)(?P<args>[^>]*?))? -->\n"
                    r"```(?P<lang>\w*)\n(?P<body>.*?)^```", re.S | re.M)
ISO_DATE = re.compile(r"\d{4}-\d\d-\d\d")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
VARIABLE = re.compile(rf"{UUID.pattern}|\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d|\d+(?:\.\d+)? ms\b")
DOC_PORTS = {"8080": "service", "8081": "fhir"}
COMMAND_TIMEOUT = 60
START_TIMEOUT = 30


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", path.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_readme_is_a_short_front_door():
    assert len((ROOT / "README.md").read_bytes()) < 12 * 1024


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    broken = []
    for target in LINK.findall(FENCE.sub("", path.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert broken == []


# ------------------------------------------------------------------------------------------ documented commands


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@dataclass
class Session:
    """One doc file's commands: a scratch directory, its ports, its background servers, the uuids bound."""

    directory: Path
    ports: dict[str, str] = field(default_factory=lambda: {doc: free_port() for doc in DOC_PORTS})
    servers: dict[str, subprocess.Popen] = field(default_factory=dict)
    uuids: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS_", "FORCE_COLOR"))}
        return {**clean, "CDS_PORT": self.ports["8080"], "COLUMNS": "120", "PATH": f"{ROOT / '.venv' / 'bin'}:"
                f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def local(self, text: str) -> str:
        """The documented text with this session's ports and the uuids bound so far."""
        for doc, port in self.ports.items():
            text = re.sub(rf"(?<=[:\s]){doc}\b", port, text)
        for documented, actual in self.uuids.items():
            text = text.replace(documented, actual)
        return text

    def serve(self, command: str) -> None:
        doc_port = "8081" if "fhir serve" in command else "8080"
        if previous := self.servers.pop(doc_port, None):
            stop(previous)
        process = subprocess.Popen(["bash", "-c", self.local(command)], cwd=self.directory, env=self.env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        self.servers[doc_port] = process
        wait_for_http(int(self.ports[doc_port]), process)

    def run(self, script: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", self.local(script)], cwd=self.directory,
                              env=self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)

    def check_transcript(self, body: str) -> None:
        for command, expected in transcript(body):
            result = self.run(f"{command} 2>&1 || true")
            self.compare(command, expected, result.stdout)

    def compare(self, command: str, expected: str, actual: str) -> None:
        pattern, new = expected_pattern(self.local(expected), set(self.uuids.values()))
        found = re.fullmatch(pattern, actual.rstrip("\n") + "\n")
        assert found, f"$ {command}\n--- documented:\n{expected}\n--- printed:\n{actual}"
        self.uuids.update({documented: found.group(group) for group, documented in new.items()})

    def check_answer(self, args: str, documented: str) -> None:
        file, path = args.split()
        request = json.loads((self.directory / file).read_text())
        service = {"order-sign": "order-sign-crd", "order-select": "order-select-crd"}[request["hook"]]
        answer = requests.post(f"http://127.0.0.1:{self.ports['8080']}/cds-services/{service}", json=request,
                               timeout=COMMAND_TIMEOUT).json()
        for key in path.split("."):
            answer = answer[int(key) if re.fullmatch(r"-?\d+", key) else key]
        assert comparable(answer) == comparable(json.loads(documented)), json.dumps(answer, indent=2)

    def close(self) -> None:
        for process in self.servers.values():
            stop(process)


def comparable(value: Any) -> Any:
    """JSON with its uuids and dates as placeholders: they differ from call to call."""
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [comparable(item) for item in value]
    if isinstance(value, str) and UUID.fullmatch(value):
        return "<uuid>"
    if isinstance(value, str) and ISO_DATE.fullmatch(value):
        return "<date>"
    return value


def transcript(body: str) -> Iterator[tuple[str, str]]:
    """(command, its output) for each `$ ` line of a transcript; a trailing backslash continues a command."""
    lines = body.rstrip("\n").split("\n")
    i = 0
    while i < len(lines):
        assert lines[i].startswith("$ "), f"a transcript line that is not a command: {lines[i]!r}"
        command = lines[i][2:]
        while command.endswith("\\"):
            i += 1
            command = command[:-1] + lines[i].strip() + " "
        i += 1
        output = []
        while i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        yield command.strip(), "\n".join(output).rstrip("\n")


def expected_pattern(expected: str, bound: set[str]) -> tuple[str, dict[str, str]]:
    """A regex for the output shown: `...` lines match any lines, variable parts any value of their kind;
    uuids not bound yet are captured (group name -> documented uuid)."""
    new: dict[str, str] = {}
    parts = []
    for line in expected.split("\n"):
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
            continue
        pieces, last = [], 0
        for match in VARIABLE.finditer(line):
            pieces.append(re.escape(line[last:match.start()]))
            value = match.group()
            if UUID.fullmatch(value) and value not in bound and value not in new.values():
                new[f"u{len(new)}"] = value
                pieces.append(rf"(?P<u{len(new) - 1}>{UUID.pattern})")
            elif UUID.fullmatch(value):
                pieces.append(re.escape(value) if value in bound else UUID.pattern)
            else:
                pieces.append(r"[\d.]+ ms" if value.endswith("ms") else r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
            last = match.end()
        pieces.append(re.escape(line[last:]))
        parts.append("".join(pieces) + r"\n")
    return "".join(parts), new


def wait_for_http(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server exited: {process.stderr.read()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                connection.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                if connection.recv(12).startswith(b"HTTP/"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"nothing answered on port {port}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


DOCUMENTED = [path for path in DOCS if MARKED.search(path.read_text())]


@pytest.mark.parametrize("path", DOCUMENTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_commands_do_what_the_docs_say(path, tmp_path):
    for name in ("fhir_examples", "tests", "cds", ".venv"):
        (tmp_path / name).symlink_to(ROOT / name if name != ".venv" else Path(sys.executable).parent.parent)
    session = Session(tmp_path)
    try:
        for block in MARKED.finditer(path.read_text()):
            body = block["body"]
            if block["kind"] == "serve":
                session.serve(body.strip())
            elif block["kind"] == "answer":
                session.check_answer(block["args"], body)
            elif block["lang"] == "text":
                session.check_transcript(body)
            else:
                result = session.run(body)
                assert result.returncode == 0, f"{body}\n--- printed:\n{result.stdout}{result.stderr}"
    finally:
        session.close()


def test_a_transcript_that_no_longer_holds_fails():
    """The comparison itself: a wrong line fails, variable parts and `...` do not, and uuids bind."""
    session = Session(Path("."))
    session.compare("x", "card 01a23124-2bc5-71fe-ab24-eef4331927ce\n...\ndone in 2.5 ms",
                    "card 01a2ffff-2bc5-71fe-ab24-eef4331927ce\nmore\nlines\ndone in 12.0 ms")
    assert session.uuids == {"01a23124-2bc5-71fe-ab24-eef4331927ce": "01a2ffff-2bc5-71fe-ab24-eef4331927ce"}
    assert session.local("show 01a23124-2bc5-71fe-ab24-eef4331927ce") == "show 01a2ffff-2bc5-71fe-ab24-eef4331927ce"
    with pytest.raises(AssertionError):
        session.compare("x", "Outcome: covered", "Outcome: not-covered")
    with pytest.raises(AssertionError):
        session.compare("x", "card 01a23124-2bc5-71fe-ab24-eef4331927ce", "card 11111111-2bc5-71fe-ab24-eef4331927ce")


def yaml_block_after(path: Path, heading_text: str) -> str:
    text = path.read_text()
    return text.split(heading_text, 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]


def test_the_documented_clients_file_registers_its_ehr(tmp_path):
    from cds.auth import load_registry

    registry = tmp_path / "clients.yaml"
    registry.write_text(yaml_block_after(ROOT / "docs" / "integrating.md", "To register an EHR"))
    [client] = load_registry(str(registry), ["ES384", "RS384"]).values()
    assert client.iss == "https://ehr.example.org"
    assert client.tenants == {"hospital-north", "hospital-south"}
    assert client.fhir_servers == ("https://fhir.ehr.example.org/R4",)


def test_the_documented_generator_entry_trusts_its_key_list_for_rs256_in_demo_mode(tmp_path):
    from cds.auth import RegistryError, load_registry
    from cds.jwks import JwksFetcher

    registry = tmp_path / "generator-clients.yaml"
    registry.write_text(yaml_block_after(ROOT / "docs" / "integrating.md", "**The HL7 Da Vinci CRD request generator"))
    [client] = load_registry(str(registry), ["ES384", "RS384"], JwksFetcher(demo=True)).values()
    assert client.iss == "http://localhost:8080/fhir/r4" and client.algorithms == ("RS256",)
    assert list(client.remote) == ["http://localhost:3000/public_keys"]
    assert client.remote["http://localhost:3000/public_keys"].key_format == "pem-list"
    with pytest.raises(RegistryError, match="http is allowed only in demo mode"):  # plain http: demo mode only
        load_registry(str(registry), ["ES384", "RS384"])


def test_the_documented_diagnoses_file_replaces_the_mandates_groups(tmp_path):
    from cds.policy.loader import read_diagnoses_overrides

    groups = tmp_path / "diagnoses.yaml"
    groups.write_text(yaml_block_after(ROOT / "docs" / "policies.md", "## State mandates"))
    overrides = read_diagnoses_overrides(groups)
    assert [group.name for group in overrides["IL-PA-103-0458"]] == ["neurological impairment", "cognitive impairment"]
