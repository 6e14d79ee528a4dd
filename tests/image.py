"""The container image's start command and configuration, read from docker/Dockerfile and run outside Docker.

Tests run the Dockerfile's CMD and HEALTHCHECK from the repository root, as the image does from /app, with the
image's ENV and this virtualenv's programs: quick, and beside any test that needs replicas of the service.
tests/test_container.py builds and runs the image itself on a Docker engine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import wait_until_up

ROOT = Path(__file__).parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def final_stage() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile's last stage, continuation lines joined."""
    lines = re.sub(r"\\\n", " ", DOCKERFILE.read_text()).splitlines()
    instructions = [tuple(line.strip().split(None, 1)) for line in lines if line.strip() and line[0] != "#"]
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return [(word.upper(), rest) for word, rest in instructions[last_from:]]


def instruction(name: str) -> str:
    return [rest for word, rest in final_stage() if word == name][-1]


def image_cmd() -> list[str]:
    return json.loads(instruction("CMD"))


def image_healthcheck() -> list[str]:
    return json.loads(instruction("HEALTHCHECK").split(" CMD ", 1)[1])


def image_env() -> dict[str, str]:
    return dict(item.split("=", 1) for _, rest in final_stage() if _ == "ENV" for item in shlex.split(rest))


def here(argv: list[str]) -> list[str]:
    """The image's command with its program taken from this virtualenv (python, gunicorn)."""
    program = sys.executable if argv[0] == "python" else str(Path(sys.executable).with_name(argv[0]))
    return [program, *argv[1:]]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS_"))}


@contextmanager
def image_servers(*servers: tuple[dict[str, str], Path]) -> Iterator[list[str]]:
    """The image's CMD serving on loopback, once per (settings, log): the image's ENV with `settings` (CDS_PORT
    among them), stderr written to `log`. All start at once, as replicas rolled out together do; yields their base
    URLs once each answers /health, then stops them all with SIGTERM, as `docker stop` does. The image's own
    directories (its data volume, its metrics in /dev/shm) become ones of each server's beside its log, unless
    `settings` name others."""
    processes, urls = [], []
    try:
        for settings, log in servers:
            own = {"CDS_DATA_DIR": str(log.with_suffix(".data")),
                   "PROMETHEUS_MULTIPROC_DIR": str(log.with_suffix(".metrics"))}
            env = clean_env() | image_env() | {"CDS_HOST": "127.0.0.1"} | own | settings
            with log.open("w") as stderr:
                processes.append(subprocess.Popen(here(image_cmd()), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                                  stderr=stderr))
            urls.append(f"http://127.0.0.1:{env['CDS_PORT']}")
        for process, url in zip(processes, urls, strict=True):
            wait_until_up(f"{url}/health", process)
        yield urls
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=20)
