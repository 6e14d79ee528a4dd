"""A throwaway PostgreSQL server on loopback for the store tests, from the installed server binaries.

Set CDS_TEST_DATABASE_URL to use a server that is already running instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url


def _bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if shutil.which("pg_config"):
        candidates.append(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip())
    for candidate in reversed(candidates):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise RuntimeError("PostgreSQL server binaries not found: install Debian's postgresql package (.ci/run does)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A throwaway server in a temporary directory on a free loopback port, which a test may stop and start."""

    def __init__(self) -> None:
        self.bindir = _bin_dir()
        self.owner = "postgres" if os.geteuid() == 0 else None  # initdb refuses to run as root
        self.workdir = Path(tempfile.mkdtemp(prefix="cds-pg-"))
        if self.owner:
            entry = pwd.getpwnam(self.owner)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        self.data, self.port = self.workdir / "data", _free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/cds"
        self.running = False
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.workdir} -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.workdir / "log"), "-w", "start")
        self.running = True

    def stop(self) -> None:
        """Stop at once, as a crashed or unplugged server would: clients get no goodbye."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self.running = False

    def create_database(self, name: str) -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self.owner:
            command = ["runuser", "-u", self.owner, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)


@contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """A server started for this test run, with an empty database `cds` (the server's `url`)."""
    server = PostgresServer()
    try:
        server.start()
        server.create_database("cds")
        yield server
    finally:
        if server.running:
            server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh database on a server started for this test run."""
    if os.environ.get("CDS_TEST_DATABASE_URL"):
        yield os.environ["CDS_TEST_DATABASE_URL"]
        return
    with throwaway_postgres() as server:
        yield server.url


@contextmanager
def new_database(server_url: str) -> Iterator[str]:
    """The URL of a new, empty database on the server `server_url` names; dropped afterwards."""
    name = f"cds_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


if __name__ == "__main__":
    with postgres_server() as url:
        print(url)
        time.sleep(1)
