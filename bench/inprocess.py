"""In-process figures, without HTTP: engine decisions per second, and request handling time (Flask test
client) against the number of draft orders and of prefetched conditions, with a straight-line fit.

The app runs as a deployment runs it: authentication on (each call signed by the bench EHR with its own
token, minted outside the timed part), the audit store recording to SQLite in a temporary directory.

`python -m bench.inprocess` prints the handling time of the main bodies as JSON (used by `--compare`).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import orjson
from flask import Flask
from flask.testing import FlaskClient

import cds
from bench import scenarios
from bench.ehr import BenchEhr
from bench.load import percentile
from cds.config import Settings
from cds.protocol import parse_hook_request
from cds.web.app import create_app
from hooks import order_sign

ORDER_COUNTS = (1, 5, 20, 50)
CONDITION_COUNTS = (0, 50, 200, 1000)
LINEAR_R2 = 0.98
BASE_URL = "https://cds.bench.example.org"  # the public base URL the in-process app is configured with


class Caller:
    """The app's test client, with a fresh signed Authorization header for each call."""

    def __init__(self, app: Flask, ehr: BenchEhr):
        self.app = app
        self.client: FlaskClient = app.test_client()
        self.ehr = ehr

    def headers(self, path: str = scenarios.SERVICE_PATH) -> dict[str, str]:
        return {"Authorization": self.ehr.authorization(BASE_URL + path)}

    def post(self, data: bytes, headers: dict[str, str], path: str = scenarios.SERVICE_PATH) -> None:
        response = self.client.post(path, data=data, content_type="application/json", headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"service answered {response.status_code}: {response.get_data(as_text=True)[:300]}")


@contextmanager
def bench_app() -> Iterator[Caller]:
    """The real app with production settings, plus what a deployment sets: a registry trusting the bench EHR,
    the public base URL and the audit store (SQLite in a temporary CDS_DATA_DIR)."""
    ehr = BenchEhr()
    with tempfile.TemporaryDirectory(prefix="cds-bench-inprocess-") as tmp:
        clients_file = ehr.write_registry(Path(tmp) / "clients.json")
        app = create_app(Settings.from_env({"CDS_CLIENTS_FILE": str(clients_file), "CDS_PUBLIC_BASE_URL": BASE_URL,
                                            "CDS_DATA_DIR": tmp}))
        try:
            yield Caller(app, ehr)
        finally:
            app.extensions["cds_store"].close()


def sample_seconds(call: Callable[[Any], Any], budget: float, prepare: Callable[[], Any] = lambda: None,
                   min_runs: int = 5, max_runs: int = 20000) -> list[float]:
    """Times of `call(prepare())` over repeated runs within about `budget` seconds, after a short warm-up;
    `prepare` (e.g. minting a token) is not timed."""
    for _ in range(3):
        call(prepare())
    times: list[float] = []
    clock = time.perf_counter
    stop = clock() + budget
    while len(times) < min_runs or (clock() < stop and len(times) < max_runs):
        argument = prepare()
        began = clock()
        call(argument)
        times.append(clock() - began)
    return times


def request_samples(caller: Caller, body: dict[str, Any], budget: float) -> list[float]:
    data = orjson.dumps(body)
    return sample_seconds(lambda headers: caller.post(data, headers), budget, caller.headers)


def request_seconds(caller: Caller, body: dict[str, Any], budget: float) -> float:
    """Median handling time of one signed request with `body`."""
    return statistics.median(request_samples(caller, body, budget))


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least-squares straight line y = intercept + slope x, with R²."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = mean_y - slope * mean_x
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return {"slope": slope, "intercept": intercept, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0}


def growth(caller: Caller, kind: str, sizes: tuple[int, ...], budget: float) -> dict[str, Any]:
    """Handling time against `kind` (orders or conditions). Linear: a straight line fits (R² >= 0.98) and the
    largest step costs per item no more than twice the fitted slope (no superlinear tail)."""
    ms = [request_seconds(caller, scenarios.order_sign(**{kind: size}), budget) * 1000 for size in sizes]
    fit = linear_fit([float(s) for s in sizes], ms)
    last_step = (ms[-1] - ms[-2]) / (sizes[-1] - sizes[-2])
    return {
        "sizes": list(sizes),
        "median_ms": [round(m, 3) for m in ms],
        "slope_us_per_item": round(fit["slope"] * 1000, 2),
        "intercept_ms": round(fit["intercept"], 3),
        "r2": round(fit["r2"], 4),
        "last_step_us_per_item": round(last_step * 1000, 2),
        "linear": fit["r2"] >= LINEAR_R2 and last_step <= 2 * max(fit["slope"], 1e-9),
    }


def engine_rate(app: Flask, budget: float) -> dict[str, Any]:
    """Decisions per second of the pure engine, cds.policy.decide, on the main scenario's order and the member facts
    the pipeline reads from its prefetch."""
    from cds.member import order_facts  # imported here: `--compare` runs this module against older trees
    from cds.pipeline import member_facts
    from cds.policy import decide, match_order

    service = app.extensions["cds"]
    hook = order_sign.HOOK
    request = parse_hook_request(scenarios.order_sign(), hook.requires_selections, service.settings.max_draft_orders)
    order = hook.judged_orders(request)[0]
    today = date.today()
    facts = member_facts(service, request, None, today)
    if match_order(order, service.policies) is None:
        raise RuntimeError("the engine found no policy for the main scenario's order")

    def decision(_: int) -> Any:
        return decide(match_order(order, service.policies), order_facts(facts, order, today), today, "id")  # type: ignore[arg-type]

    seconds = statistics.median(sample_seconds(decision, budget))
    return {"measured": "cds.policy match_order and decide on the main scenario's order and member facts",
            "decisions_per_s": round(1 / seconds), "us_per_decision": round(seconds * 1e6, 2)}


def figures(budget: float = 0.5) -> dict[str, Any]:
    with bench_app() as caller:
        return {
            "engine": engine_rate(caller.app, budget),
            "main_request_ms": round(request_seconds(caller, scenarios.order_sign(), budget) * 1000, 3),
            "growth": {
                "orders": growth(caller, "orders", ORDER_COUNTS, budget),
                "conditions": growth(caller, "conditions", CONDITION_COUNTS, budget),
            },
        }


def profile(name: str = "main", seconds: float = 3.0, top: int = 25) -> str:
    """cProfile over the in-process handling of scenario `name` (signed, recorded): the top functions by own
    and by total time. Minting the tokens is left out."""
    body = scenarios.scenarios()[name].body
    data = orjson.dumps(body)
    profiler = cProfile.Profile()
    runs = 0
    with bench_app() as caller:
        request_seconds(caller, body, 0.1)  # warm: imports and caches are not the hot path
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            headers = caller.headers()
            profiler.enable()
            caller.post(data, headers)
            profiler.disable()
            runs += 1
        profiler.enable()
        caller.app.extensions["cds_store"].flush()  # the background writer's share, for the calls profiled
        profiler.disable()
    out = io.StringIO()
    print(f"{runs} requests of scenario {name!r} in process; top {top} by own time, then by cumulative time",
          file=out)
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


COMPARED = {"main": {}, "orders-20": {"orders": 20}, "orders-50": {"orders": 50},
            "conditions-200": {"conditions": 200}, "conditions-1000": {"conditions": 1000}}


def main() -> None:
    """Median and 99th percentile handling time (ms) of the compared bodies, as JSON, for the importable `cds`."""
    budget = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
    figures: dict[str, dict[str, float]] = {"median_ms": {}, "p99_ms": {}}
    with bench_app() as caller:
        for name, kw in COMPARED.items():
            times = sorted(request_samples(caller, scenarios.order_sign(**kw), budget))
            figures["median_ms"][name] = statistics.median(times) * 1000
            figures["p99_ms"][name] = percentile(times, 99) * 1000
    print(orjson.dumps({"cds": cds.__file__, **figures}).decode())


if __name__ == "__main__":
    main()
