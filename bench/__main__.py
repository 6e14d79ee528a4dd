"""`python -m bench`: the service and a bare Flask baseline under the same gunicorn settings, loaded in turn on
loopback with every scenario, plus in-process figures. Table on stdout, JSON in bench/results/latest.json.

`python -m bench --profile [SCENARIO]` profiles the in-process handling instead;
`python -m bench --compare REV` compares in-process handling time with git revision REV.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from bench import inprocess, report, scenarios, servers
from bench.compare import compare
from bench.compare import table as compare_table
from bench.ehr import ALGORITHMS, BenchEhr, new_key
from bench.fhir_server import FhirServer
from bench.load import Load, run
from cds.config import Settings
from cds.web.serving import gunicorn_options
from tests.postgres import postgres_server

DEFAULT_OUTPUT = servers.ROOT / "bench" / "results" / "latest.json"
LOAD_GENERATOR = ("bench/load.py: closed-loop keep-alive HTTP/1.1 client in several processes, every request "
                  "signed with its own pre-minted JWT (see bench/README.md)")
START_POSTGRES = "start"


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per server and scenario (5000)")
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds per server and scenario (30)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (16)")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes (2)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds per scenario, service and baseline alternating; the median round counts (1)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured requests per connection first (10)")
    parser.add_argument("--scenarios", nargs="+", choices=list(scenarios.scenarios()), default=None,
                        help="scenarios to load (all)")
    parser.add_argument("--in-process-budget", type=float, default=0.5,
                        help="seconds spent timing each in-process figure (0.5)")
    parser.add_argument("--postgres", nargs="?", const=START_POSTGRES, metavar="URL",
                        help="audit store on PostgreSQL: this URL, or without one a throwaway server on loopback "
                             "(default: SQLite in a temporary CDS_DATA_DIR)")
    parser.add_argument("--jwt-alg", choices=ALGORITHMS, default="ES384",
                        help="algorithm the bench EHR signs its calls with (ES384)")
    parser.add_argument("--recording-cost", action="store_true",
                        help="also load the service side by side with itself with audit recording switched off "
                             "(bench/unrecorded.py)")
    parser.add_argument("--jwt-baseline", action="store_true",
                        help="also load a baseline that checks each call's JWT as the service does (bench/baseline.py)")
    parser.add_argument("--setting", action="append", default=[], type=_setting, metavar="CDS_NAME=VALUE",
                        help="a setting for every service started (recorded or not), e.g. CDS_SPOOL_SYNC=true; "
                             "repeatable (default: production defaults)")
    parser.add_argument("--no-http", action="store_true", help="skip the load on the servers")
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process figures")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON report ({DEFAULT_OUTPUT})")
    parser.add_argument("--profile", nargs="?", const="main", choices=list(scenarios.scenarios()),
                        help="profile the in-process handling of a scenario (main) and stop")
    parser.add_argument("--compare", metavar="REV", help="compare in-process handling time with a git revision")
    args = parser.parse_args(argv)
    if min(args.requests, args.connections, args.processes, args.rounds) < 1 or args.time_limit <= 0 \
            or args.warmup < 0:
        parser.error("--requests, --connections, --processes, --rounds and --time-limit must be positive")
    return args


def _setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.startswith("CDS_"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a service setting as CDS_NAME=VALUE")
    return name, value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.profile:
        print(inprocess.profile(args.profile))
        return 0
    if args.compare:
        print(compare_table(compare(args.compare)))
        return 0
    settings = Settings.from_env(dict(args.setting))
    gunicorn = gunicorn_options(settings)
    result: dict[str, Any] = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *argv]),
        "revision": report.git_revision(servers.ROOT),
        "machine": report.machine(),
        "settings": {
            "requests": args.requests, "rounds": args.rounds, "time_limit_s": args.time_limit,
            "connections": args.connections, "generator_processes": args.processes,
            "warmup_per_connection": args.warmup, "jwt_alg": args.jwt_alg,
            "gunicorn": {name: gunicorn[name] for name in ("workers", "threads", "worker_class", "timeout")},
            "service_settings": dict(args.setting),
        },
        "load_generator": LOAD_GENERATOR,
        "store": "PostgreSQL" if args.postgres else "SQLite",
        "http": {},
    }
    try:
        if not args.no_http:
            result["http"], result["records"] = http_figures(args)
    except (BenchError, RuntimeError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    result["machine"]["load_average_at_end"] = report.machine()["load_average_at_start"]
    result["notes"] = notes(result["http"], settings)
    if not args.no_in_process:
        result["in_process"] = inprocess.figures(args.in_process_budget)
    result["targets"] = report.targets(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(report.table(result))
    print(f"\nJSON report: {args.output}")
    return 0


def notes(http: dict[str, Any], settings: Settings | None = None) -> list[str]:
    """What a reader must know to read the figures right."""
    found = []
    waiting = [name for name, on in (("CDS_SPOOL_SYNC", settings and settings.spool_sync),
                                     ("CDS_AUDIT_REQUIRED", settings and settings.audit_required)) if on]
    if waiting and any("recording_cost" in figures for figures in http.values()):
        found.append(f"recording's cost with {' and '.join(waiting)} on: calls wait for the disk or the database, and "
                     "loaded side by side the unrecorded service uses that time, so these figures show recording's "
                     "CPU but not its waits; the service's own rows, loaded alone, show what the waits cost.")
    for name, figures in http.items():
        if figures.get("service_mode") == "demo":
            found.append(f"{name}: the service ran in demo mode, the only mode that fetches over http from "
                         "loopback (the bench FHIR server); authentication, the audit store and the pipeline are as "
                         "in production, but the fetch is plain http where production uses https.")
        if figures.get("fhir_server_expected") and not figures["fhir_fetches"]:
            found.append(f"{name}: the service asked the FHIR server nothing, so these are the figures of a call "
                         "without prefetch and without its fallback fetch.")
        if apart := figures.get("recording_cost", {}).get("rounds_not_side_by_side_throughout"):
            found.append(f"{name}: in {apart} round(s) the recorded or the unrecorded service answered its every "
                         "request before the time limit and the other ran on alone: give more --requests.")
    return found


def http_figures(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, int]]:
    """Each scenario's figures; and the hook calls sent to the recording services against those their audit
    stores hold once they have stopped (nothing may be lost)."""
    ehr = BenchEhr(new_key(args.jwt_alg))
    with tempfile.TemporaryDirectory(prefix="cds-bench-") as tmp, FhirServer() as fhir, \
            contextlib.ExitStack() as database:
        workdir = Path(tmp)
        database_url = args.postgres
        if database_url == START_POSTGRES:
            database_url = database.enter_context(postgres_server())
        setup = servers.ServiceSetup(workdir, ehr.write_registry(workdir / "clients.json", (fhir.base_url,)),
                                     database_url, tuple(args.setting))
        started: dict[str, servers.Server] = {}
        with contextlib.ExitStack() as stack:
            figures = load_scenarios(args, setup, stack, started, fhir, ehr)
        recording = [server for server in started.values() if server.store_url]
        records = {"hook_calls_sent": sum(server.hook_calls_sent for server in recording),
                   "hook_calls_recorded": sum(servers.hook_calls_recorded(url)
                                              for url in {server.store_url for server in recording})}
        return figures, records


def load_scenarios(args: argparse.Namespace, setup: servers.ServiceSetup, stack: contextlib.ExitStack,
                   started: dict[str, servers.Server], fhir: FhirServer, ehr: BenchEhr) -> dict[str, Any]:
    """Every chosen scenario's figures. Servers are started when first needed (into `started`, by name) and
    stopped with `stack`."""
    figures: dict[str, Any] = {}

    def server(name: str, start: Callable[[int], servers.Server]) -> servers.Server:
        if name not in started:
            started[name] = stack.enter_context(start(servers.free_port()))
        return started[name]

    for name, scenario in scenarios.scenarios(fhir.base_url).items():
        if args.scenarios and name not in args.scenarios:
            continue
        roles = {
            "service": server(f"service-demo-{scenario.demo}",
                              partial(servers.service, setup=setup, demo=scenario.demo)),
            "baseline": server("baseline", partial(servers.baseline, workdir=setup.workdir)),
        }
        if args.recording_cost and not scenario.demo:
            roles["unrecorded"] = server("unrecorded", partial(servers.service, setup=setup, recording=False))
        if args.jwt_baseline:
            roles["baseline-jwt"] = server("baseline-jwt", partial(servers.token_checking_baseline, setup=setup))
        figures[name] = scenario_figures(scenario, roles, fhir, ehr, args)
    return figures


def scenario_figures(scenario: scenarios.Scenario, roles: dict[str, servers.Server], fhir: FhirServer,
                     ehr: BenchEhr, args: argparse.Namespace) -> dict[str, Any]:
    body = orjson.dumps(scenario.body)
    unrecorded = roles.pop("unrecorded", None)
    rounds: dict[str, list[dict[str, Any]]] = {role: [] for role in roles}
    if unrecorded:
        rounds |= {"recorded": [], "unrecorded": []}
    fetches: Counter = Counter()  # what the service asked the FHIR server, over all its rounds
    for _ in range(args.rounds):  # alternating, so every server sees the same spells of outside load
        for role, server in roles.items():
            before = fhir.counted()
            rounds[role].append(measure(server, scenario.path, body, ehr, args))
            if role == "service":
                fetches.update(fhir.counted())
                fetches.subtract(before)
        if unrecorded:
            recorded, not_recorded = side_by_side((roles["service"], unrecorded), scenario.path, body, ehr, args,
                                                  seconds=rounds["service"][-1]["elapsed_s"])
            rounds["recorded"].append(recorded)
            rounds["unrecorded"].append(not_recorded)
    figures: dict[str, Any] = {"description": scenario.description, "request_bytes": len(body),
                               "service_mode": "demo" if scenario.demo else "production"}
    figures.update({role: median_round(runs) for role, runs in rounds.items()})
    figures["fhir_fetches"] = {k: v for k, v in fetches.items() if v}
    figures["fhir_server_expected"] = "prefetch" not in scenario.body
    figures["ratio"] = report.ratios(figures["service"], figures["baseline"])
    if "baseline-jwt" in figures:
        figures["ratio_to_jwt_baseline"] = report.ratios(figures["service"], figures["baseline-jwt"])
    if unrecorded:
        figures["recording_cost"] = report.recording_cost(rounds["recorded"], rounds["unrecorded"])
    return figures


def side_by_side(pair: tuple[servers.Server, ...], path: str, body: bytes, ehr: BenchEhr,
                 args: argparse.Namespace, seconds: float) -> list[dict[str, Any]]:
    """Load the servers at the same time for `seconds`, each with the run's connections, so that they share
    the machine and every spell of outside load: their figures compare what a request costs each, where rounds
    loaded in turn differ by more than that on a shared machine. Each stops at the time limit (its request budget,
    that of a server loaded alone for as long, is not reached while it shares the machine)."""
    together = threading.Barrier(len(pair))
    figures: list[dict[str, Any]] = [{} for _ in pair]
    failures: list[BaseException] = []

    def load(index: int, server: servers.Server) -> None:
        try:
            figures[index] = measure(server, path, body, ehr, args, time_limit=seconds, together=together)
        except BaseException as exc:  # handed to the main thread, which raises it
            failures.append(exc)
            together.abort()

    threads = [threading.Thread(target=load, args=(index, server)) for index, server in enumerate(pair)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    for run_ in figures:
        run_.pop("other_cpu_cores", None)  # the machine's other users include the server alongside
    return figures


def median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput, noting every round's throughput."""
    chosen = sorted(runs, key=lambda r: r["throughput_rps"])[(len(runs) - 1) // 2]
    return {**chosen, "rounds_throughput_rps": [r["throughput_rps"] for r in runs]} if len(runs) > 1 else chosen


def measure(server: servers.Server, path: str, body: bytes, ehr: BenchEhr, args: argparse.Namespace,
            time_limit: float | None = None, together: threading.Barrier | None = None) -> dict[str, Any]:
    """One load of `server` (see `run`; `time_limit` instead of the run's)."""
    answer = preflight(server, path, body, ehr)
    load = Load(port=server.port, path=path, body=body, requests=args.requests, connections=args.connections,
                time_limit=time_limit or args.time_limit, processes=args.processes, warmup=args.warmup, ehr=ehr)
    start: dict[str, float | None] = {}
    outcome = run(load, together=together, on_start=lambda: start.update(server=server.cpu_seconds(),
                                                                         machine=servers.machine_busy_seconds()))
    figures = outcome.summary()
    server_cores = _cores(start["server"], server.cpu_seconds(), outcome.elapsed)
    machine_cores = _cores(start["machine"], servers.machine_busy_seconds(), outcome.elapsed)
    if server_cores is not None:
        figures["server_cpu_cores"] = server_cores
        if figures["throughput_rps"]:  # robust against outside load, unlike throughput
            figures["server_cpu_us_per_request"] = round(server_cores / figures["throughput_rps"] * 1e6, 1)
        if machine_cores is not None:  # other users of the machine, the harness and the FHIR server
            figures["other_cpu_cores"] = round(max(0.0, machine_cores - server_cores - figures["client_cpu_cores"]), 3)
    figures["hook_calls_sent"] = 1 + args.connections * args.warmup + outcome.completed + sum(
        outcome.errors.values())
    server.hook_calls_sent += figures["hook_calls_sent"]
    figures["answer"] = answer
    return figures


def _cores(start: float | None, end: float | None, elapsed: float) -> float | None:
    return round((end - start) / elapsed, 3) if start is not None and end is not None and elapsed else None


def preflight(server: servers.Server, path: str, body: bytes, ehr: BenchEhr) -> dict[str, Any]:
    """One signed call before the load: it must succeed, and the report says what the server answered."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Content-Type": "application/json",
               "Authorization": ehr.authorization(f"http://127.0.0.1:{server.port}{path}")}
    try:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        status, data = response.status, response.read()
    finally:
        connection.close()
    if status != 200:
        raise BenchError(f"{server.name} answered {status} to {path}: {data[:500]!r}; its log ends:\n"
                         f"{server.log_tail()}")
    answer = orjson.loads(data)
    return {"cards": len(answer.get("cards", [])), "systemActions": len(answer.get("systemActions", []))}


if __name__ == "__main__":
    sys.exit(main())
