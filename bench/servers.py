"""The servers under test, each a gunicorn process tree on loopback, and the CPU they use."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

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

    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str], workdir: Path):
        self.name = name
        self.argv = argv
        self.port = port
        self.env = env
        self.workdir = workdir
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


def service(port: int, env: dict[str, str], workdir: Path) -> Server:
    """The service exactly as `cds serve` runs it in production (not demo mode)."""
    argv = [sys.executable, "-c", "from cds.cli import main; main()", "serve", "--host", "127.0.0.1",
            "--port", str(port)]
    return Server("service", argv, port, env, workdir)


def baseline(port: int, env: dict[str, str], workdir: Path) -> Server:
    """The bare Flask endpoint under the same gunicorn settings (bench/baseline.py)."""
    argv = [sys.executable, "-m", "bench.baseline", "--port", str(port)]
    return Server("baseline", argv, port, env, workdir)


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
