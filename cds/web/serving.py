"""The one gunicorn configuration, from Settings: `cds serve` applies it, and so does the container image
through docker/gunicorn.conf.py. Keeping it in one place keeps what CI tests and what production runs alike.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from glob import glob
from pathlib import Path
from typing import Any

from gunicorn import glogging
from gunicorn.workers.gthread import ThreadWorker

from cds.config import Settings, unknown_variables
from cds.logs import logging_config, quiet_after_first_worker

# Below the CRD 5-second response budget: a stuck worker is replaced before the EHR gives up.
WORKER_TIMEOUT_SECONDS = 4
# On SIGTERM, workers finish the calls in hand for up to this long (within Kubernetes' default 30 s grace).
GRACEFUL_TIMEOUT_SECONDS = 10

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# A worker holding n connections waits n steps (at most ACCEPT_DELAY_STEPS) before it accepts another.
ACCEPT_DELAY_STEP_S = 0.0001
ACCEPT_DELAY_STEPS = 10


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """Gunicorn settings by name, as a config file's globals take them (names an older gunicorn lacks are
    ignored there, and by `cds serve` alike)."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    options: dict[str, Any] = {
        "bind": f"{host}:{settings.port}",
        "workers": settings.workers,
        "threads": settings.threads,
        "worker_class": f"{__name__}.{SpreadingThreadWorker.__qualname__}",
        "timeout": WORKER_TIMEOUT_SECONDS,
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        "keepalive": 5,
        # Request-line and header bounds: a CDS client JWT in Authorization fits, a header flood does not.
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        "limit_request_field_size": 16384,
        # The worker heartbeat file on a memory filesystem: a container's overlay disk can stall it.
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        "accesslog": None,  # the app writes its own access lines, with service, status and latency
        "logger_class": f"{__name__}.{NoAccessLinesLogger.__qualname__}",
        "loglevel": settings.log_level.lower(),
        "logconfig_dict": logging_config(settings),
        "proc_name": "cds",
        # No runtime control socket: it sits at one path per user, shared by every instance on the host.
        "control_socket_disable": True,
    }
    options.update(on_starting=on_starting, post_fork=quiet_after_first_worker)
    if settings.metrics_enabled:
        options.update(on_starting=on_starting_with_metrics, child_exit=forget_worker, on_exit=remove_metrics_dir)
    return options


def on_starting(server: Any) -> None:
    """Gunicorn's on_starting hook, in the master, once: CDS_* variables that name no setting are said."""
    for problem in unknown_variables():
        server.log.warning("%s", problem)


def on_starting_with_metrics(server: Any) -> None:
    on_starting(server)
    prepare_metrics_dir(server)


class SpreadingThreadWorker(ThreadWorker):
    """Gunicorn's gthread worker, spreading new connections evenly over the workers.

    Every worker wakes for a new connection and the first to accept it keeps it for as long as the client
    keeps it alive, and EHRs and proxies keep a few connections alive for long. Left to that race, one worker
    took 14 of 16 connections opened together and served them on one core while the other idled. Here a worker
    waits a moment for each connection it already holds before accepting, so the one holding fewer wins."""

    def accept(self, *args: Any) -> None:
        if self.nr_conns and self.cfg.workers > 1:
            time.sleep(min(self.nr_conns, ACCEPT_DELAY_STEPS) * ACCEPT_DELAY_STEP_S)
        super().accept(*args)


class NoAccessLinesLogger(glogging.Logger):
    """Gunicorn's logger without its access lines. The app logs each request itself (cds.access); gunicorn
    would otherwise build every request's log fields, headers and environ included, only to drop them."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        pass


_owned_metrics_dir: str | None = None


def prepare_metrics_dir(server: Any) -> None:
    """Gunicorn's on_starting hook, in the master before any worker forks: give the workers an empty
    PROMETHEUS_MULTIPROC_DIR (a private temporary one unless set), so /metrics sums all of them."""
    global _owned_metrics_dir
    values = sys.modules.get("prometheus_client.values")
    if values and not getattr(values.ValueClass, "_multiprocess", False):
        # The value store is chosen when prometheus_client is imported; too late now, and silently wrong.
        raise RuntimeError(f"prometheus_client was imported before {METRICS_DIR_VARIABLE} was set; "
                           "metrics would not add up across workers")
    path = os.environ.get(METRICS_DIR_VARIABLE)
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for stale in glob(os.path.join(path, "*.db")):  # a previous run's counts would be added to ours
            os.remove(stale)
    else:
        _owned_metrics_dir = os.environ[METRICS_DIR_VARIABLE] = tempfile.mkdtemp(prefix="cds-metrics-")
    server.log.info("metrics of all workers kept in %s", os.environ[METRICS_DIR_VARIABLE])


def forget_worker(server: Any, worker: Any) -> None:
    """Gunicorn's child_exit hook: drop a dead worker's live gauges (its counters keep counting in the sum)."""
    from prometheus_client import multiprocess  # imported only now, after the directory is set

    multiprocess.mark_process_dead(worker.pid)


def remove_metrics_dir(server: Any) -> None:
    """Gunicorn's on_exit hook: remove the temporary metrics directory this master made."""
    if _owned_metrics_dir:
        shutil.rmtree(_owned_metrics_dir, ignore_errors=True)
