"""A private Docker engine for the image tests, from Debian's docker.io (scripts/test installs it).

Its own data root, exec root and socket in a temporary directory, its own (empty) daemon configuration, and no
bridge network or iptables rules: containers run on the host's network (listening on loopback) or on none, so
the engine changes nothing on the machine. Stopped, and its directory removed, on exit.

Its images and layers are kept for the next run in $CDS_IMAGE_CACHE/engine (default /var/cache/cds-image, as
scripts/image-base's), so a build whose pinned dependencies have not changed reuses their layer. One engine at a
time uses that data root, under a lock; another running meanwhile gets a data root of its own, removed on exit.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

START_SECONDS = 60
CACHE = Path(os.environ.get("CDS_IMAGE_CACHE", "/var/cache/cds-image"))


class NoEngine(RuntimeError):
    """No Docker engine can start on this machine; the message says why."""


@dataclass
class Engine:
    socket: Path

    @property
    def env(self) -> dict[str, str]:
        """The environment the docker CLI (and scripts/image-base) talk to this engine with."""
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "0"}

    @staticmethod
    def argv(*args: str) -> list[str]:
        """A docker command line, with Debian's docker CLI (of the engine's own version) where installed."""
        return ["/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker") or "docker", *args]

    def docker(self, *args: str, timeout: float = 60, check: bool = True,
               **kwargs) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True, timeout=timeout,
                                **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args[:3])} exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result


@contextmanager
def private_engine() -> Iterator[Engine]:
    dockerd = shutil.which("dockerd")
    if os.geteuid() != 0:
        raise NoEngine("a private dockerd needs root")
    if not dockerd:
        raise NoEngine("dockerd is not installed (scripts/test installs Debian's docker.io)")
    root = Path(tempfile.mkdtemp(prefix="cds-dockerd-", dir="/tmp"))  # short: socket paths are limited
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "engine.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            data_root = CACHE / "engine"
        except BlockingIOError:  # another engine has the kept data root now
            data_root = root / "data"
        try:
            try:
                engine, process = _start(dockerd, root, data_root)
            except NoEngine:
                if data_root == root / "data":
                    raise
                shutil.rmtree(data_root, ignore_errors=True)  # a kept data root this engine cannot use: anew
                engine, process = _start(dockerd, root, data_root)
            try:
                yield engine
            finally:
                _stop(engine, process)
                _unmount_under(data_root)
        finally:
            _unmount_under(root)
            shutil.rmtree(root, ignore_errors=True)


def _start(dockerd: str, root: Path, data_root: Path) -> tuple[Engine, subprocess.Popen]:
    (root / "daemon.json").write_text("{}")
    engine = Engine(root / "docker.sock")
    with (root / "dockerd.log").open("w") as log:
        process = subprocess.Popen(
            [dockerd, "--config-file", str(root / "daemon.json"), "--data-root", str(data_root),
             "--exec-root", str(root / "exec"), "--pidfile", str(root / "dockerd.pid"),
             "--host", f"unix://{engine.socket}", "--bridge=none", "--iptables=false", "--ip-masq=false",
             "--log-level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(engine, process, root / "dockerd.log")
    except NoEngine:
        _stop(engine, process)
        raise
    return engine, process


def _wait_until_up(engine: Engine, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NoEngine(f"dockerd exited with {process.returncode}: {log.read_text()[-1500:]}")
        if engine.docker("version", check=False, timeout=10).returncode == 0:
            return
        time.sleep(0.5)
    raise NoEngine(f"dockerd did not answer within {START_SECONDS} s: {log.read_text()[-1500:]}")


def _stop(engine: Engine, process: subprocess.Popen) -> None:
    if process.poll() is None:
        containers = engine.docker("ps", "-aq", check=False, timeout=20).stdout.split()
        if containers:
            engine.docker("rm", "-f", "-v", *containers, check=False, timeout=60)
        engine.docker("image", "prune", "--force", check=False, timeout=120)  # images no tag names any more
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _unmount_under(root: Path) -> None:
    """Mounts the engine may have left (overlays, its shm), deepest first, so the directory can go."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{root}/")]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
