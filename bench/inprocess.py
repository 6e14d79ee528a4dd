"""In-process figures, without HTTP: engine decisions per second, and request handling time (Flask test
client) against the number of draft orders and of prefetched conditions, with a straight-line fit.

`python -m bench.inprocess` prints the handling time of the main bodies as JSON (used by `--compare`).
"""

from __future__ import annotations

import cProfile
import importlib
import inspect
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

import cds
from bench import scenarios
from bench.load import percentile
from cds.app import create_app
from cds.config import Settings
from cds.protocol import parse_hook_request
from hooks import order_sign

ORDER_COUNTS = (1, 5, 20, 50)
CONDITION_COUNTS = (0, 50, 200, 1000)
LINEAR_R2 = 0.98


def make_app():
    """The real app with production settings (as `cds serve` reads them, no demo)."""
    return create_app(Settings.from_env({}))


def sample_seconds(call: Callable[[], Any], budget: float, min_runs: int = 5, max_runs: int = 20000) -> list[float]:
    """Times of `call` over repeated runs within about `budget` seconds, after a short warm-up."""
    for _ in range(3):
        call()
    times: list[float] = []
    clock = time.perf_counter
    stop = clock() + budget
    while len(times) < min_runs or (clock() < stop and len(times) < max_runs):
        began = clock()
        call()
        times.append(clock() - began)
    return times


def median_seconds(call: Callable[[], Any], budget: float) -> float:
    return statistics.median(sample_seconds(call, budget))


def request_samples(client, body: dict[str, Any], budget: float) -> list[float]:
    data = orjson.dumps(body)

    def post() -> None:
        response = client.post(scenarios.SERVICE_PATH, data=data, content_type="application/json")
        if response.status_code != 200:
            raise RuntimeError(f"service answered {response.status_code}: {response.get_data(as_text=True)[:300]}")

    return sample_seconds(post, budget)


def request_seconds(client, body: dict[str, Any], budget: float) -> float:
    """Median handling time of one request with `body`."""
    return statistics.median(request_samples(client, body, budget))


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


def growth(client, kind: str, sizes: tuple[int, ...], budget: float) -> dict[str, Any]:
    """Handling time against `kind` (orders or conditions). Linear: a straight line fits (R² >= 0.98) and the
    largest step costs per item no more than twice the fitted slope (no superlinear tail)."""
    ms = [request_seconds(client, scenarios.order_sign(**{kind: size}), budget) * 1000 for size in sizes]
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


def engine_rate(app, budget: float) -> dict[str, Any]:
    """Decisions per second of the pure engine (cds.policy.engine.decide) called with the arguments the
    pipeline gives it for the main scenario; without an engine, the rate of the pipeline's answer()."""
    service = app.extensions["cds"]
    hook = order_sign.HOOK
    body = scenarios.order_sign()
    request = parse_hook_request(body, hook.requires_selections, service.settings.max_draft_orders)
    orders = len(hook.judged_orders(request))
    with app.app_context():
        decide = _engine_decide()
        call = _captured_call(decide, lambda: service.answer(hook, request)) if decide else None
        if call:
            seconds = median_seconds(call, budget)
            return {"measured": "cds.policy.engine.decide, with the arguments the pipeline passes (main scenario)",
                    "decisions_per_s": round(1 / seconds), "us_per_decision": round(seconds * 1e6, 2)}
        seconds = median_seconds(lambda: service.answer(hook, request), budget)
    reason = ("cds.policy.engine does not exist yet" if decide is None
              else "the pipeline did not call cds.policy.engine.decide for the main scenario")
    return {"measured": f"pipeline answer() ({reason}): orders judged per second, including facts",
            "decisions_per_s": round(orders / seconds), "us_per_decision": round(seconds / orders * 1e6, 2)}


def _engine_decide() -> Callable | None:
    try:
        engine = importlib.import_module("cds.policy.engine")
    except ModuleNotFoundError:
        return None
    decide = getattr(engine, "decide", None)
    return decide if callable(decide) else None


def _captured_call(function: Callable, pipeline: Callable[[], Any]) -> Callable[[], Any] | None:
    """A call of `function` with the arguments of its first call while `pipeline()` runs, or None."""
    code = inspect.unwrap(function).__code__
    captured: list[dict[str, Any]] = []

    def profiler(frame, event, arg) -> None:
        if event == "call" and frame.f_code is code and not captured:
            captured.append(dict(frame.f_locals))

    sys.setprofile(profiler)
    try:
        pipeline()
    finally:
        sys.setprofile(None)
    if not captured:
        return None
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, parameter in inspect.signature(inspect.unwrap(function)).parameters.items():
        value = captured[0][name]
        if parameter.kind is parameter.VAR_POSITIONAL:
            args.extend(value)
        elif parameter.kind is parameter.VAR_KEYWORD:
            kwargs.update(value)
        elif parameter.kind is parameter.POSITIONAL_ONLY:
            args.append(value)
        else:
            kwargs[name] = value
    return lambda: function(*args, **kwargs)


def figures(budget: float = 0.5) -> dict[str, Any]:
    app = make_app()
    client = app.test_client()
    return {
        "engine": engine_rate(app, budget),
        "main_request_ms": round(request_seconds(client, scenarios.order_sign(), budget) * 1000, 3),
        "growth": {
            "orders": growth(client, "orders", ORDER_COUNTS, budget),
            "conditions": growth(client, "conditions", CONDITION_COUNTS, budget),
        },
    }


def profile(name: str = "main", seconds: float = 3.0, top: int = 25) -> str:
    """cProfile over the in-process handling of scenario `name`: the top functions by own and by total time."""
    client = make_app().test_client()
    body = scenarios.scenarios()[name].body
    data = orjson.dumps(body)
    request_seconds(client, body, 0.1)  # warm: imports and caches are not the hot path
    profiler = cProfile.Profile()
    profiler.enable()
    runs = 0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        client.post(scenarios.SERVICE_PATH, data=data, content_type="application/json")
        runs += 1
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
    client = make_app().test_client()
    figures: dict[str, dict[str, float]] = {"median_ms": {}, "p99_ms": {}}
    for name, kw in COMPARED.items():
        times = sorted(request_samples(client, scenarios.order_sign(**kw), budget))
        figures["median_ms"][name] = statistics.median(times) * 1000
        figures["p99_ms"][name] = percentile(times, 99) * 1000
    print(orjson.dumps({"cds": cds.__file__, **figures}).decode())


if __name__ == "__main__":
    main()
