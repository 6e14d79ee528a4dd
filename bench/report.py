"""The benchmark's report: the machine, targets against figures, and a table for people."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

TARGET_RATIO = 0.6
TARGET_P99_MS = 25.0
TARGET_CONNECTIONS = 16
TARGET_RECORDING_RATIO = 0.9  # recording may cut throughput by at most 10 % (the audit store's target)
ROLES = ("service", "baseline", "baseline-jwt", "recorded", "unrecorded")  # the last two: side by side


def machine() -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],  # 1, 5 and 15 minutes
    }


def git_revision(root: Path) -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}{'+changes' if dirty else ''}" if rev else "unknown"


def ratios(service: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    """service / baseline: throughput (higher is better) and latency percentiles (lower is better)."""
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    return {
        "throughput": ratio(service["throughput_rps"], baseline["throughput_rps"]),
        **{p: ratio(service["latency_ms"][p], baseline["latency_ms"][p]) for p in ("p50", "p95", "p99")},
    }


def recording_cost(recorded: list[dict[str, Any]], unrecorded: list[dict[str, Any]]) -> dict[str, Any]:
    """The service recording ÷ the same service not recording, loaded side by side round by round (so each pair
    shared the machine and its outside load), and the median over rounds: throughput, and server CPU per
    request. `judged` is the lower of the throughput ratio and the inverse of the CPU ratio (the throughput
    each would reach on equal CPU): sharing the machine, the scheduler may give the recording service, which
    has a writer thread more, a little more of it, which its throughput alone would not show."""
    def paired(key: str) -> list[float | None]:
        return [round(r[key] / u[key], 3) if r.get(key) and u.get(key) else None
                for r, u in zip(recorded, unrecorded, strict=True)]

    def median(values: list[float | None]) -> float | None:
        known = sorted(v for v in values if v is not None)
        return statistics.median(known) if known else None

    throughput, cpu = paired("throughput_rps"), paired("server_cpu_us_per_request")
    judged = [min(t, round(1 / c, 3)) if t and c else t for t, c in zip(throughput, cpu, strict=True)]
    return {"judged_ratio": median(judged), "judged_ratio_rounds": judged,
            "throughput_ratio": median(throughput), "throughput_ratio_rounds": throughput,
            "cpu_per_request_ratio": median(cpu), "cpu_per_request_ratio_rounds": cpu,
            # a load that ran out of requests before the time limit left the other alone for the rest
            "rounds_not_side_by_side_throughout": sum(not (r["stopped_by_time_limit"] and u["stopped_by_time_limit"])
                                                      for r, u in zip(recorded, unrecorded, strict=True))}


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets against this run's figures (reported, never asserted)."""
    result: dict[str, Any] = {}
    main = report["http"].get("main")
    if main:
        ratio = main["ratio"]["throughput"]
        result["throughput_ratio_main"] = {"target": f">= {TARGET_RATIO}", "measured": ratio,
                                           "met": ratio is not None and ratio >= TARGET_RATIO}
        p99 = main["service"]["latency_ms"]["p99"]
        at_target_load = report["settings"]["connections"] == TARGET_CONNECTIONS
        result["p99_ms_main"] = {
            "target": f"<= {TARGET_P99_MS} at {TARGET_CONNECTIONS} connections", "measured": p99,
            "met": (p99 is not None and p99 <= TARGET_P99_MS) if at_target_load else None,
            **({} if at_target_load else {"note": f"run at {TARGET_CONNECTIONS} connections to judge"}),
        }
    cost = (main or {}).get("recording_cost")
    if cost:
        ratio = cost["judged_ratio"]
        result["recording_cost_main"] = {"target": f">= {TARGET_RECORDING_RATIO} of not recording",
                                         "measured": ratio,
                                         "met": ratio is not None and ratio >= TARGET_RECORDING_RATIO}
    growth = report.get("in_process", {}).get("growth", {})
    for kind, figures in growth.items():
        result[f"linear_in_{kind}"] = {"target": "linear", "measured": f"R² {figures['r2']}, "
                                       f"{figures['slope_us_per_item']} µs per item", "met": figures["linear"]}
    return result


def table(report: dict[str, Any]) -> str:
    """The HTTP figures, one row per server and scenario, then the in-process figures and targets."""
    header = (f"{'scenario':<16}{'server':<12}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
              f"{'max ms':>9}{'ok':>7}{'errors':>8}{'server':>8}{'gen':>6}{'other':>7}")
    lines = [header, "-" * len(header)]
    if chosen := report["settings"].get("service_settings"):
        lines.insert(0, "Service settings: " + " ".join(f"{name}={value}" for name, value in chosen.items()))
    for name, run in report["http"].items():
        for server in (role for role in ROLES if role in run):
            r = run[server]
            lat = r["latency_ms"]
            lines.append(
                f"{name if server == 'service' else '':<16}{server:<12}{r['throughput_rps']:>9.0f}"
                f"{_num(lat['p50'])}{_num(lat['p95'])}{_num(lat['p99'])}{_num(lat['max'])}"
                f"{r['completed']:>7}{sum(r['errors'].values()):>8}{_num(r.get('server_cpu_cores'), 2, 8)}"
                f"{_num(r['client_cpu_cores'], 2, 6)}{_num(r.get('other_cpu_cores'), 2, 7)}")
        for label, key in (("ratio", "ratio"), ("ratio-jwt", "ratio_to_jwt_baseline")):
            if key in run:
                q = run[key]
                lines.append(f"{'':<16}{label:<12}{_num(q['throughput'], 2)}{_num(q['p50'], 2)}{_num(q['p95'], 2)}"
                             f"{_num(q['p99'], 2)}")
        if "recording_cost" in run:
            cost = run["recording_cost"]
            lines.append(f"{'':<16}recording (recorded ÷ unrecorded, loaded side by side): throughput "
                         f"{_num(cost['throughput_ratio'], 3, 0).strip()}, server CPU per request "
                         f"{_num(cost['cpu_per_request_ratio'], 3, 0).strip()} times; judged "
                         f"{_num(cost['judged_ratio'], 3, 0).strip()} (the lower of the throughput and 1 ÷ CPU)")
        if run["service_mode"] != "production":
            lines.append(f"{'':<16}service in {run['service_mode']} mode (see the notes)")
        if run["fhir_fetches"] or run["fhir_server_expected"]:
            lines.append(f"{'':<16}FHIR server requests during the service's runs: {run['fhir_fetches'] or 'none'}")
    records = report.get("records")
    if records:
        lines.append(f"Audit store: {records['hook_calls_recorded']} hook calls recorded of "
                     f"{records['hook_calls_sent']} sent to the recording services ({report['store']}).")
    if report["http"]:
        lines.append(f"Last three columns: cores busy on average ({report['machine']['nproc']} in all): the server's "
                     "processes, the load generator, everything else (other users, harness, FHIR server).")
    inproc = report.get("in_process")
    if inproc:
        engine = inproc["engine"]
        lines += ["", f"In process: {engine['decisions_per_s']} decisions/s ({engine['measured']})",
                  f"  main scenario request: {inproc['main_request_ms']} ms (Flask test client)"]
        for kind, g in inproc["growth"].items():
            points = ", ".join(f"{s}: {m} ms" for s, m in zip(g["sizes"], g["median_ms"], strict=True))
            lines.append(f"  {kind:<10} {points}; {g['slope_us_per_item']} µs per item, R² {g['r2']}, "
                         f"{'linear' if g['linear'] else 'NOT linear'}")
    lines += [""] + [f"Note: {note}" for note in report.get("notes", [])]
    lines += ["", "Targets (reported, not enforced):"]
    for name, t in report["targets"].items():
        verdict = {True: "met", False: "NOT met", None: "not judged"}[t["met"]]
        lines.append(f"  {name:<24} target {t['target']:<32} measured {t['measured']}: {verdict}")
    return "\n".join(lines)


def _num(value: float | None, digits: int = 1, width: int = 9) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"
