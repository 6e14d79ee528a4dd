"""The one gunicorn configuration, from Settings: `cds serve` applies it, and so does the container image
through docker/gunicorn.conf.py. Keeping it in one place keeps what CI tests and what production runs alike.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import socket
import struct
import sys
import tempfile
import time
from collections import deque
from functools import partial
from glob import glob
from pathlib import Path
from typing import Any

from gunicorn import glogging
from gunicorn.workers.gthread import TConn, ThreadWorker

from cds.config import Settings, unknown_variables
from cds.logs import logging_config, quiet_after_first_worker
from cds.web.framing import WAITING, Framing, RequestFraming

# Below the CRD 5-second response budget: a stuck worker is replaced before the EHR gives up.
WORKER_TIMEOUT_SECONDS = 4
# On SIGTERM, workers finish the calls in hand for up to this long (within Kubernetes' default 30 s grace).
GRACEFUL_TIMEOUT_SECONDS = 10

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# A worker holding n connections waits n steps (at most ACCEPT_DELAY_STEPS) before it accepts another.
ACCEPT_DELAY_STEP_S = 0.0001
ACCEPT_DELAY_STEPS = 10
# A request (head and body) must arrive whole within this long of its first byte, or of the connection, or the
# connection is closed with 408; a thread takes it only once it is all there.
REQUEST_READ_TIMEOUT_SECONDS = 5
READ_CHUNK = 256 * 1024
READ_TIMEOUT_OPTION = struct.pack("ll", REQUEST_READ_TIMEOUT_SECONDS, 0)  # struct timeval for SO_RCVTIMEO


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """Gunicorn settings by name, as a config file's globals take them (names an older gunicorn lacks are
    ignored there, and by `cds serve` alike)."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    options: dict[str, Any] = {
        # The service, and the operator listener for /metrics when CDS_METRICS_BIND names one (cds.web.ops).
        "bind": [f"{host}:{settings.port}", *([settings.metrics_bind] if settings.metrics_bind else [])],
        "workers": settings.workers,
        "threads": settings.threads,
        "worker_class": f"{__name__}.{RequestReadingWorker.__qualname__}",
        # The body limit, for the worker to stop reading a body the app will refuse as too large.
        "post_fork": partial(_set_body_limit, settings.max_body_bytes),
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
    options["on_starting"] = on_starting
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


def _set_body_limit(limit: int, server: Any, worker: Any) -> None:
    """Gunicorn's post_fork hook: the worker learns the body limit, and start-up warnings stay the first worker's."""
    worker.max_body_bytes = limit
    quiet_after_first_worker(server, worker)


class RequestReadingWorker(SpreadingThreadWorker):
    """Reads every request whole (head and body) in the worker's event loop before a thread takes it.

    A gthread worker hands each connection to one of its few threads as soon as a byte arrives, and the thread
    then blocks until the request is complete: four clients sending one byte each, or fifty sending a byte a
    second, held every thread of a two-worker server and stopped it. Here a connection waits in the event
    loop, costing a socket and its buffer, until its request is all there (cds.web.framing) or
    REQUEST_READ_TIMEOUT_SECONDS have passed (then it is closed with 408). A request over the size limits goes
    to a thread as soon as that is known, to be refused without the rest, and its connection is then closed."""

    max_body_bytes = Settings.max_body_bytes

    def init_process(self) -> None:
        self.reading: deque[tuple[float, TConn]] = deque()  # by deadline: connections still receiving a request
        cfg = self.cfg
        # The parser refuses a head over its limits; until it is that long, more of it may still come.
        self.max_head = cfg.limit_request_line + cfg.limit_request_fields * (cfg.limit_request_field_size + 2) + 4
        super().init_process()

    def enqueue_req(self, conn: TConn) -> None:
        """Every way a request reaches a thread (a new connection, a kept-alive one with data, bytes read ahead
        behind the last request) comes here: wait in the event loop until the request is whole."""
        if not conn.initialized:
            # A bound on every read a thread makes, should one ever find the request short of what it needs
            # (one the parser refuses without reading all of it, for example).
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, READ_TIMEOUT_OPTION)
        pending = bytearray(conn.parser.unreader.take_buffered() if conn.parser else b"")
        conn.cds_pending, conn.cds_whole, conn.cds_continued = pending, False, False
        conn.cds_framing = RequestFraming(self.max_head, self.max_body_bytes)
        conn.cds_deadline = time.monotonic() + REQUEST_READ_TIMEOUT_SECONDS
        conn.sock.setblocking(False)
        state: Framing | None = conn.cds_framing.feed(pending) if pending else WAITING
        if state and not state.complete:  # on a kept-alive connection the request is usually here already
            state = self._receive(conn)
        if not self._settle(conn, state):
            self.reading.append((conn.cds_deadline, conn))
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))

    def _on_request_bytes(self, conn: TConn, sock: Any) -> None:
        state = self._receive(conn)
        if state is None or state.complete:
            self.poller.unregister(sock)
            self.reading.remove((conn.cds_deadline, conn))
        self._settle(conn, state)

    def _receive(self, conn: TConn) -> Framing | None:
        """The request's framing once what has come is read; None when the client went away."""
        try:
            data = conn.sock.recv(READ_CHUNK)
        except BlockingIOError:
            return WAITING
        except OSError:
            return None
        if not data:
            return None
        conn.cds_pending += data
        return conn.cds_framing.feed(conn.cds_pending)

    def _settle(self, conn: TConn, state: Framing | None) -> bool:
        """Act on the framing: hand the connection to a thread once its request is in, or close it when the
        client went away (True); else tell a client waiting for it to go on (False: more is to come)."""
        if state is None:
            self._drop(conn)
            return True
        if state.complete:
            conn.cds_whole = state.whole
            self.tpool.submit(self.handle, conn).add_done_callback(
                lambda future: self.method_queue.defer(self.finish_request, conn, future))
            return True
        if state.expects_continue and not conn.cds_continued:
            conn.cds_continued = True
            _send_quietly(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
        return False

    def _drop(self, conn: TConn, answer: bytes = b"") -> None:
        if answer:
            _send_quietly(conn.sock, answer)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Called on every turn of the event loop: close connections whose request did not arrive in time."""
        super().murder_pending()
        now = time.monotonic()
        while self.reading and self.reading[0][0] <= now:
            _, conn = self.reading.popleft()
            self.poller.unregister(conn.sock)
            self._drop(conn, b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")

    def handle(self, conn: TConn) -> Any:
        """In a thread, with the request in hand: the parser reads it from what was received."""
        if not conn.initialized:
            conn.sock.setblocking(True)
            conn.init()
        conn.parser.unreader.unread(conn.cds_pending)
        conn.cds_pending = bytearray()
        conn.data_ready = True
        return super().handle(conn)

    def handle_request(self, req: Any, conn: TConn) -> Any:
        if conn.cds_continued:  # the client was told to go on from the event loop: once is enough
            req._expected_100_continue = False
        return super().handle_request(req, conn)

    def _keepalive_after(self, conn: TConn, keepalive: bool) -> bool:
        # A request refused before all of it came: what follows on the connection is not worth waiting for.
        return conn.cds_whole and super()._keepalive_after(conn, keepalive)


def _send_quietly(sock: Any, data: bytes) -> None:
    with contextlib.suppress(OSError):  # a client that went away needs no answer
        sock.send(data)


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
