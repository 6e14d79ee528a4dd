"""The load generator: a closed loop over keep-alive HTTP/1.1 connections, spread over a few processes.

Each process drives its connections from one event loop (non-blocking sockets, epoll): every connection sends
prepared request bytes, reads the whole response and times it, then sends the next. Signed like a registered
EHR's calls, every request carries its own JWT (the service refuses a replayed `jti`): each process mints the
tokens it will send before the timed run, so signing never loads the generator while it measures. The run stops at
a fixed number of requests or at the time limit, whichever comes first. Latencies are kept exactly (no
histogram buckets, no coordinated-omission "correction"), so the percentiles are those of real requests.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import re
import resource
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.ehr import BenchEhr

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CONNECTION_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
REQUEST_TIMEOUT_S = 10.0  # a request without an answer by then is an error
START_TIMEOUT_S = 120.0  # connecting and warming up every connection


@dataclass(frozen=True)
class Load:
    port: int
    path: str
    body: bytes
    requests: int
    connections: int = 16
    time_limit: float = 30.0
    processes: int = 2
    warmup: int = 10  # requests per connection before measuring: imports, caches, keep-alive set-up
    host: str = "127.0.0.1"
    ehr: BenchEhr | None = None  # signs each request; None: no Authorization header

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def heads(self, count: int) -> list[bytes]:
        """The heads of `count` requests, each with its own token when signed; the body follows each."""
        head = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n")
        if self.ehr is None:
            return [f"{head}\r\n".encode()] * count
        return [f"{head}Authorization: Bearer {token}\r\n\r\n".encode()
                for token in self.ehr.tokens(self.url, count)]


@dataclass
class LoadResult:
    latencies: list[float]  # seconds, successful (2xx) requests only
    errors: Counter = field(default_factory=Counter)
    elapsed: float = 0.0
    client_cpu: float = 0.0  # CPU seconds the generator used while measuring
    stopped_by_time_limit: bool = False

    @property
    def completed(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        elapsed = self.elapsed or float("nan")
        return {
            "completed": self.completed,
            "errors": dict(self.errors),
            "elapsed_s": round(self.elapsed, 3),
            "stopped_by_time_limit": self.stopped_by_time_limit,
            "throughput_rps": round(self.completed / elapsed, 1) if self.completed else 0.0,
            "latency_ms": {
                "p50": _ms(percentile(ordered, 50)),
                "p95": _ms(percentile(ordered, 95)),
                "p99": _ms(percentile(ordered, 99)),
                "mean": _ms(sum(ordered) / len(ordered)) if ordered else None,
                "max": _ms(ordered[-1]) if ordered else None,
            },
            "client_cpu_cores": round(self.client_cpu / elapsed, 3),
            "client_cpu_us_per_request": round(self.client_cpu / self.completed * 1e6, 1) if self.completed else None,
        }


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * p // 100))  # ceil
    return ordered[int(rank) - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def run(load: Load, on_start=None, together: threading.Barrier | None = None) -> LoadResult:
    """Drive `load` to completion. `on_start()` is called the moment measuring begins (e.g. to read CPU).
    `together`: a barrier shared with loads run at the same time from other threads; measuring begins once
    every one of them has its connections warmed up, so that they measure over the same spell."""
    processes = max(1, min(load.processes, load.connections))
    shares = [load.connections // processes + (i < load.connections % processes) for i in range(processes)]
    budgets = [load.requests * share // load.connections for share in shares]
    budgets[0] += load.requests - sum(budgets)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    results = ctx.Queue()
    workers = [ctx.Process(target=_process_main, args=(load, budget, share, barrier, results), daemon=True)
               for budget, share in zip(budgets, shares, strict=True)]
    for worker in workers:
        worker.start()
    try:
        _wait_for_all(barrier, workers, together)
        if on_start:
            on_start()
        parts = [_next_result(results, workers, load.time_limit + REQUEST_TIMEOUT_S + 30) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()
                worker.join()
    merged = LoadResult(latencies=[])
    for part in parts:
        merged.latencies.extend(part["latencies"])
        merged.errors.update(part["errors"])
        merged.client_cpu += part["cpu"]
        merged.stopped_by_time_limit |= part["stopped_by_time_limit"]
    merged.elapsed = max(p["end"] for p in parts) - min(p["start"] for p in parts)
    return merged


def _wait_for_all(barrier, workers: list, together: threading.Barrier | None = None) -> None:
    """Pass the start barrier with the workers (and first `together` with the other loads), or fail fast if one
    of them died before reaching it."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while barrier.n_waiting < barrier.parties - 1:
        if time.monotonic() > deadline or not all(worker.is_alive() for worker in workers):
            barrier.abort()
            if together:
                together.abort()
            raise RuntimeError("the load generator could not start its connections")
        time.sleep(0.01)
    if together:
        try:
            together.wait(START_TIMEOUT_S)
        except threading.BrokenBarrierError:
            barrier.abort()
            raise RuntimeError("a load run alongside could not start its connections") from None
    barrier.wait(START_TIMEOUT_S)


def _next_result(results, workers: list, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=0.2)
        except queue.Empty:
            if not any(worker.is_alive() for worker in workers) and results.empty():
                break
    raise RuntimeError("a load generator process stopped without its figures")


# ------------------------------------------------------------------------------------ in each process


def _process_main(load: Load, budget: int, connections: int, barrier, results) -> None:
    warmup = connections * load.warmup
    heads = load.heads(warmup + budget)  # before the timed run: signing costs more than sending
    loop = _EventLoop((load.host, load.port), iter(heads), load.body, connections)
    loop.drive(warmup, time.monotonic() + START_TIMEOUT_S)
    barrier.wait(START_TIMEOUT_S)
    start, cpu_start = time.monotonic(), _cpu_seconds()
    latencies, errors, stopped = loop.drive(budget, start + load.time_limit)
    results.put({"latencies": latencies, "errors": errors, "cpu": _cpu_seconds() - cpu_start, "start": start,
                 "end": time.monotonic(), "stopped_by_time_limit": stopped})
    loop.close()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Connection:
    """One keep-alive connection: writes a request as the socket takes it, reads the response as it comes."""

    def __init__(self, address: tuple[str, int]):
        self.address = address
        self.sock: socket.socket | None = None
        self.began = 0.0
        self.unsent: list[memoryview] = []  # head and body, sent together without copying them into one
        self.received = bytearray()
        self.keep_alive = True

    def open(self) -> socket.socket:
        self.sock = socket.create_connection(self.address, timeout=REQUEST_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        return self.sock

    def begin(self, now: float, head: bytes, body: bytes) -> None:
        self.began = now
        self.unsent = [memoryview(head), memoryview(body)]
        self.received.clear()

    def write(self) -> bool:
        """Send what the socket takes now; True once the whole request is sent."""
        with contextlib.suppress(BlockingIOError):
            sent = self.sock.sendmsg(self.unsent)
            while self.unsent and sent >= len(self.unsent[0]):
                sent -= len(self.unsent.pop(0))
            if self.unsent:
                self.unsent[0] = self.unsent[0][sent:]
        return not self.unsent

    def read(self) -> int | None:
        """Take what has arrived; the status code once the whole response is in, else None."""
        try:
            chunk = self.sock.recv(262144)
        except BlockingIOError:
            return None
        if not chunk:
            raise ConnectionResetError("closed by the server")
        self.received += chunk
        head_end = self.received.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = bytes(self.received[:head_end])
        length = _CONTENT_LENGTH.search(head)
        if not head.startswith(b"HTTP/1.") or length is None:
            raise ValueError("response without a status line or Content-Length")
        if len(self.received) - head_end - 4 < int(length.group(1)):
            return None
        self.keep_alive = _CONNECTION_CLOSE.search(head) is None
        return int(head[9:12])


class _EventLoop:
    """The closed loop over one process's connections."""

    def __init__(self, address: tuple[str, int], heads: Iterator[bytes], body: bytes, connections: int):
        self.selector = selectors.DefaultSelector()
        self.connections = [_Connection(address) for _ in range(connections)]
        self.heads = heads  # one per request, used up in order: a token is never sent twice
        self.body = body

    def drive(self, budget: int, deadline: float) -> tuple[list[float], Counter, bool]:
        """Send `budget` requests (fewer if `deadline` passes first); latencies, errors, stopped by deadline."""
        latencies: list[float] = []
        errors: Counter = Counter()
        clock = time.perf_counter
        issued = 0
        stopped = False
        in_flight: set[_Connection] = set()

        def start(connection: _Connection) -> None:
            nonlocal issued, stopped
            while issued < budget:
                if time.monotonic() >= deadline:
                    stopped = True
                    return
                issued += 1
                try:
                    if connection.sock is None:
                        self.selector.register(connection.open(), selectors.EVENT_READ, connection)
                    connection.begin(clock(), next(self.heads), self.body)
                    if not connection.write():
                        self.selector.modify(connection.sock, selectors.EVENT_WRITE, connection)
                    in_flight.add(connection)
                    return
                except OSError as exc:
                    errors[type(exc).__name__] += 1
                    self._close(connection)

        for connection in self.connections:
            start(connection)
        next_check = clock() + 0.5  # for requests past their time
        while in_flight:
            for key, events in self.selector.select(timeout=0.5):
                connection = key.data
                try:
                    if events & selectors.EVENT_WRITE:
                        if connection.write():
                            self.selector.modify(connection.sock, selectors.EVENT_READ, connection)
                        continue
                    status = connection.read()
                    if status is None:
                        continue
                except (OSError, ValueError) as exc:
                    errors[type(exc).__name__] += 1
                    self._close(connection)
                else:
                    if 200 <= status < 300:
                        latencies.append(clock() - connection.began)
                    else:
                        errors[f"HTTP {status}"] += 1
                    if not connection.keep_alive:
                        self._close(connection)
                in_flight.discard(connection)
                start(connection)
            now = clock()
            if now < next_check:
                continue
            next_check = now + 0.5
            for connection in [c for c in in_flight if now - c.began > REQUEST_TIMEOUT_S]:
                errors["timeout"] += 1
                self._close(connection)
                in_flight.discard(connection)
                start(connection)
        return latencies, errors, stopped

    def _close(self, connection: _Connection) -> None:
        if connection.sock is not None:
            self.selector.unregister(connection.sock)
            connection.sock.close()
            connection.sock = None

    def close(self) -> None:
        for connection in self.connections:
            self._close(connection)
        self.selector.close()
