"""The servers under test, each a gunicorn process tree on loopback, and the CPU they use."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from cds.config import Settings
from cds.record.engine import make_engine
from cds.record.schema import hook_call

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment without any CDS_* setting (production defaults), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return {**env, **extra}


class Server:
    """A server process started with `argv`, answering GET /health on `port` once up."""

    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str], workdir: Path,
                 store_url: str | None = None):
        self.name = name
        self.argv = argv
        self.port = port
        self.env = env
        self.workdir = workdir
        self.store_url = store_url  # where it records its hook calls, if it does
        self.hook_calls_sent = 0  # counted by the harness, to compare with what the store holds
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_until_up()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _wait_until_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.1)
            finally:
                connection.close()
        raise RuntimeError(f"{self.name} did not answer on port {self.port}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def cpu_seconds(self) -> float | None:
        """CPU time of the server's whole process tree (gunicorn master and workers) so far."""
        return tree_cpu_seconds(self.process.pid) if self.process else None


@dataclass(frozen=True)
class ServiceSetup:
    """What every service the harness starts shares: the trusted-client registry and the audit store."""

    workdir: Path
    clients_file: Path
    database_url: str | None = None  # None: SQLite in the service's own CDS_DATA_DIR under workdir
    settings: tuple[tuple[str, str], ...] = ()  # CDS_* settings every service gets (`--setting`)

    def env(self, name: str, port: int, demo: bool) -> dict[str, str]:
        """Production settings (no CDS_* from the caller), plus what a deployment must set: the registry, the
        public base URL the EHR calls (the token's `aud`), and where the audit store is; then `settings`."""
        store = ({"CDS_DATABASE_URL": self.database_url} if self.database_url
                 else {"CDS_DATA_DIR": str(self._data_dir(name))})
        return server_env({"CDS_CLIENTS_FILE": str(self.clients_file),
                           "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", **store,
                           **({"CDS_DEMO": "true"} if demo else {}), **dict(self.settings)})

    def store_url(self, name: str) -> str:
        return Settings(data_dir=str(self._data_dir(name)), database_url=self.database_url or "").store_url

    def _data_dir(self, name: str) -> Path:
        return self.workdir / f"{name}-data"


def service(port: int, setup: ServiceSetup, *, demo: bool = False, recording: bool = True) -> Server:
    """The service as `cds serve` runs it in production: authentication on, audit store recording. `demo`:
    demo mode (fetches over http from loopback); `recording=False`: the bench-only variant that records
    nothing (bench/unrecorded.py), to measure what recording costs."""
    name = "service" + ("-demo" if demo else "") + ("" if recording else "-unrecorded")
    command = ["-c", "from cds.tools.cli import main; main()", "serve", "--host", "127.0.0.1"] if recording \
        else ["-m", "bench.unrecorded"]
    argv = [sys.executable, *command, "--port", str(port)]
    return Server(name, argv, port, setup.env(name, port, demo), setup.workdir,
                  setup.store_url(name) if recording else None)


def baseline(port: int, workdir: Path) -> Server:
    """The bare Flask endpoint under the same gunicorn settings (bench/baseline.py)."""
    argv = [sys.executable, "-m", "bench.baseline", "--port", str(port)]
    return Server("baseline", argv, port, server_env({}), workdir)


def token_checking_baseline(port: int, setup: ServiceSetup) -> Server:
    """The baseline that first checks each call's JWT as the service does, with the service's registry and
    public base URL (bench/baseline.py --check-tokens)."""
    argv = [sys.executable, "-m", "bench.baseline", "--check-tokens", "--port", str(port)]
    env = server_env({"CDS_CLIENTS_FILE": str(setup.clients_file), "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"})
    return Server("baseline-jwt", argv, port, env, setup.workdir)


def hook_calls_recorded(store_url: str) -> int:
    """How many hook calls the audit store at `store_url` holds."""
    engine = make_engine(store_url)
    try:
        with engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(hook_call)).scalar_one()
    finally:
        engine.dispose()


def machine_busy_seconds() -> float | None:
    """CPU seconds every process on the machine has used since boot, all cores together (Linux)."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks[:8]) - idle - iowait) / CLOCK_TICKS  # user..steal; guest time is already in user


def tree_cpu_seconds(root: int) -> float | None:
    """User plus system CPU seconds of `root` and its descendants, from /proc (Linux); None elsewhere."""
    table: dict[int, tuple[int, int]] = {}  # pid -> (parent pid, CPU ticks)
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ... utime, stime
        table[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    if root not in table:
        return None
    tree, grew = {root}, True
    while grew:
        children = {pid for pid, (parent, _) in table.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    return sum(table[pid][1] for pid in tree) / CLOCK_TICKS
