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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


def _run_as_owner(args: list[str], owner: str | None) -> None:
    command = ["runuser", "-u", owner, "--", *args] if owner else args
    subprocess.run(command, check=True, capture_output=True, timeout=60)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh database on a server started for this test run."""
    if os.environ.get("CDS_TEST_DATABASE_URL"):
        yield os.environ["CDS_TEST_DATABASE_URL"]
        return
    bindir = _bin_dir()
    owner = "postgres" if os.geteuid() == 0 else None  # initdb refuses to run as root
    workdir = Path(tempfile.mkdtemp(prefix="cds-pg-"))
    if owner:
        entry = pwd.getpwnam(owner)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
    data, port = workdir / "data", _free_port()
    _run_as_owner([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"], owner)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {workdir} -c fsync=off -c max_connections=200"
    _run_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(workdir / "log"),
                   "-w", "start"], owner)
    try:
        _run_as_owner([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "cds"], owner)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/cds"
    finally:
        _run_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], owner)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    with postgres_server() as url:
        print(url)
        time.sleep(1)
