"""What recording costs a hook call, through the real app with recording on and switched off, on SQLite and on
PostgreSQL: the throughput ratio and the latency added.

    .venv/bin/python bench/store_cost.py [--calls 2000] [--postgres URL]

Each call is a signed order-sign POST through the app's HTTP interface (Flask test client, one thread), every
one with its own token minted before the timed round. "Not recorded" is the same app with recording switched
off (bench/unrecorded.py); "recorded" records as the service does, through the background writer (the time to
write everything is inside the measurement); with CDS_AUDIT_REQUIRED each call commits its record before its
answer, one transaction per call. Replayed-token checks go to the store in every mode.

Throughput is calls per CPU-second of this process, all threads included (the SQLite engine runs inside
it): what bounds a CPU-bound service, and robust on a machine whose other load comes and goes. Latency is
wall-clock. Without --postgres a throwaway PostgreSQL server is started on loopback from the installed
Debian binaries (fsync off, as in the tests). Rounds of the modes alternate so that drift hits all alike;
each figure is the median over the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ehr import BenchEhr  # noqa: E402
from bench.unrecorded import switch_off_recording  # noqa: E402
from cds.config import Settings  # noqa: E402
from cds.record import store_failures  # noqa: E402
from cds.web.app import create_app  # noqa: E402
from tests.postgres import postgres_server  # noqa: E402

REQUEST = (ROOT / "tests/data/crd-order-sign-servicerequests.json").read_bytes()
PATH = "/cds-services/order-sign-crd"
BASE_URL = "https://cds.bench.example.org"
MODES = ("none", "default", "required")
ROUNDS = 20


def measure(url: str, calls: int, ehr: BenchEhr, clients_file: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Calls per CPU-second and wall-clock microseconds per call: not recorded, recorded by default, and
    recorded with audit required."""
    def app(mode: str):
        settings = Settings(database_url=url, audit_required=mode == "required", clients_file=str(clients_file),
                            public_base_url=(BASE_URL,)).resolved()
        return switch_off_recording(create_app(settings)) if mode == "none" else create_app(settings)

    apps = {mode: app(mode) for mode in MODES}
    clients = {mode: app.test_client() for mode, app in apps.items()}
    stores = {mode: app.extensions["cds_store"] for mode, app in apps.items()}

    def calls_with(mode: str, tokens: list[str]) -> None:
        for token in tokens:
            response = clients[mode].post(PATH, data=REQUEST, content_type="application/json",
                                          headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.get_data(as_text=True)

    for mode in MODES:  # warm-up: imports, caches, pooled connections, the writer thread
        calls_with(mode, ehr.tokens(BASE_URL + PATH, 50))
    stores["default"].flush()
    per_cpu_second: dict[str, list[float]] = {mode: [] for mode in MODES}
    latency_us: dict[str, list[float]] = {mode: [] for mode in MODES}
    per_round = max(1, calls // ROUNDS)
    for _ in range(ROUNDS):
        for mode in MODES:
            tokens = ehr.tokens(BASE_URL + PATH, per_round)  # signing is the client's work: not timed
            cpu, wall = time.process_time(), time.perf_counter()
            calls_with(mode, tokens)
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
    ehr = BenchEhr()
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
        clients_file = ehr.write_registry(Path(directory) / "clients.json")
        postgres = args.postgres or stack.enter_context(postgres_server())
        for name, url in (("SQLite", f"sqlite:///{directory}/bench.sqlite3"), ("PostgreSQL", postgres)):
            rate, latency = measure(url, args.calls, ehr, clients_file)
            row = [f"{rate['none']:.0f}/s {latency['none']:.0f} µs"]
            row += [f"{rate[mode]:.0f}/s ({rate[mode] / rate['none']:.2f}) {latency[mode]:.0f} µs"
                    for mode in ("default", "required")]
            print(f"{name:<12}{row[0]:>18}{row[1]:>26}{row[2]:>26}")


if __name__ == "__main__":
    main()
