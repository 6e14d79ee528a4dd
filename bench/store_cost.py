"""What recording costs a hook call, through the real app with and without `Store.audit`, on SQLite and on
PostgreSQL: the throughput ratio and the latency added.

    .venv/bin/python bench/store_cost.py [--calls 2000] [--postgres URL]

Each call is an order-sign POST through the app's HTTP interface (Flask test client, one thread). "Recorded"
adds what the pipeline adds after building its answer: `audit` of the call with one decision per judged
order; by default through the background writer (the time to write everything is inside the measurement),
and with CDS_AUDIT_REQUIRED committed before the answer, one transaction per call.

Throughput is calls per CPU-second of this process, all threads included (the SQLite engine runs inside
it): what bounds a CPU-bound service, and robust on a machine whose other load comes and goes. Latency is
wall-clock. Without --postgres a throwaway PostgreSQL server is started on loopback from the installed
Debian binaries (fsync off, as in the tests). Rounds of the modes alternate so that drift hits all alike;
each figure is the median over the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cds.app import create_app  # noqa: E402
from cds.config import Settings  # noqa: E402
from cds.store import DecisionRecord, HookCall, JudgedOrder, store_failures  # noqa: E402
from tests.postgres import postgres_server  # noqa: E402

REQUEST = json.loads((ROOT / "tests/data/crd-order-sign-servicerequests.json").read_text())
ROUNDS = 20


def judged_orders(request: dict) -> tuple[JudgedOrder, ...]:
    orders = []
    for entry in request["context"]["draftOrders"]["entry"]:
        resource = entry["resource"]
        codes = tuple(f"{c.get('system', '')}|{c['code']}" for c in resource.get("code", {}).get("coding", []))
        orders.append(JudgedOrder(f"{resource['resourceType']}/{resource['id']}", codes))
    return tuple(orders)


def records(orders: tuple[JudgedOrder, ...], latency_ms: float) -> tuple[HookCall, list[DecisionRecord]]:
    now = datetime.now(UTC)
    call = HookCall(now, "order-sign-crd", "order-sign", str(uuid.uuid4()), 200, latency_ms, orders,
                    "https://ehr.example.org", None, "pat-1")
    decisions = [DecisionRecord(str(uuid.uuid4()), call.hook_instance, order.reference, order.codes, "DME101.045",
                                "2024-03-15", "not-covered", "Not medically necessary (DME101.045, NCD 270.6).",
                                now, str(uuid.uuid4()), (str(uuid.uuid4()),), "Coverage/cov-1")
                 for order in orders]
    return call, decisions


def measure(url: str, calls: int) -> tuple[dict[str, float], dict[str, float]]:
    """Calls per CPU-second and wall-clock microseconds per call: not recorded, recorded by default, and
    recorded with audit required."""
    apps = {mode: create_app(Settings(database_url=url, audit_required=mode == "required").resolved())
            for mode in ("default", "required")}
    clients = {mode: app.test_client() for mode, app in apps.items()}
    stores = {mode: app.extensions["cds_store"] for mode, app in apps.items()}
    orders = judged_orders(REQUEST)

    def one_call(mode: str) -> None:
        started = time.perf_counter()
        response = clients[mode if mode != "none" else "default"].post("/cds-services/order-sign-crd", json=REQUEST)
        assert response.status_code == 200, response.get_data(as_text=True)
        if mode != "none":
            stores[mode].audit(*records(orders, (time.perf_counter() - started) * 1000))

    modes = ("none", "default", "required")
    for mode in modes:  # warm-up: imports, caches, pooled connections, the writer thread
        for _ in range(50):
            one_call(mode)
    stores["default"].flush()
    per_cpu_second: dict[str, list[float]] = {mode: [] for mode in modes}
    latency_us: dict[str, list[float]] = {mode: [] for mode in modes}
    per_round = max(1, calls // ROUNDS)
    for _ in range(ROUNDS):
        for mode in modes:
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(per_round):
                one_call(mode)
            stores["default"].flush()  # everything queued is written inside the measured time
            per_cpu_second[mode].append(per_round / (time.process_time() - cpu))
            latency_us[mode].append((time.perf_counter() - wall) / per_round * 1e6)
    assert store_failures() == 0
    for store in stores.values():
        store.close()
    return {mode: statistics.median(values) for mode, values in per_cpu_second.items()}, {
        mode: statistics.median(values) for mode, values in latency_us.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per mode and database (default 2000)")
    parser.add_argument("--postgres", help="a PostgreSQL URL to use instead of a throwaway server")
    args = parser.parse_args()
    print("calls per CPU-second (ratio to not recorded) and wall-clock latency per call")
    print(f"{'database':<12}{'not recorded':>18}{'recorded':>26}{'audit required':>26}")
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
        postgres = args.postgres or stack.enter_context(postgres_server())
        for name, url in (("SQLite", f"sqlite:///{directory}/bench.sqlite3"), ("PostgreSQL", postgres)):
            rate, latency = measure(url, args.calls)
            row = [f"{rate['none']:.0f}/s {latency['none']:.0f} µs"]
            row += [f"{rate[mode]:.0f}/s ({rate[mode] / rate['none']:.2f}) {latency[mode]:.0f} µs"
                    for mode in ("default", "required")]
            print(f"{name:<12}{row[0]:>18}{row[1]:>26}{row[2]:>26}")


if __name__ == "__main__":
    main()
