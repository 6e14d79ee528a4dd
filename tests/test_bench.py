"""The benchmark harness runs end to end in a tiny mode and reports every figure; no performance is asserted."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jwt
import pytest
import requests

from bench import scenarios, servers
from bench.ehr import ALGORITHMS, BenchEhr, new_key
from bench.fhir_server import FhirServer
from bench.load import Load, percentile, run
from cds.auth import load_registry
from cds.config import Settings

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--requests", "50", "--connections", "2", "--processes", "2", "--warmup", "1", "--time-limit", "10",
        "--in-process-budget", "0.02", "--recording-cost", "--jwt-baseline"]


def run_bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m bench` in a process group of its own: on a timeout the servers it started go with it."""
    process = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_harness_loads_service_and_baseline_and_reports_every_figure(tmp_path):
    output = tmp_path / "latest.json"
    result = run_bench(*TINY, "--setting", "CDS_THREADS=3", "--output", str(output), timeout=240)
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text())
    assert report["settings"]["service_settings"] == {"CDS_THREADS": "3"}
    assert report["settings"]["gunicorn"]["threads"] == 3 and "Service settings: CDS_THREADS=3" in result.stdout

    assert set(report["http"]) == set(scenarios.scenarios())
    for name, figures in report["http"].items():
        assert name in result.stdout
        demo = name == "fallback-fetch"  # outside demo mode the service fetches over https only
        assert figures["service_mode"] == ("demo" if demo else "production")
        side_by_side = () if demo else ("recorded", "unrecorded")
        roles = ("service", "baseline", "baseline-jwt", *side_by_side)
        assert set(roles) <= set(figures)
        for server in roles:
            run_ = figures[server]
            assert run_["errors"] == {}, (name, server, run_)
            # Loaded in turn, each server answers every request; side by side, each runs until the time limit.
            assert run_["completed"] == 50 if server not in side_by_side else run_["completed"] > 0, (name, server)
            # Side by side, the machine's other users include the server alongside: no `other` figure.
            assert ("other_cpu_cores" in run_) == (server not in side_by_side), (name, server)
            latency = run_["latency_ms"]
            assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
            assert run_["throughput_rps"] > 0 and run_["server_cpu_cores"] >= 0 and run_["client_cpu_cores"] >= 0
            assert isinstance(run_["answer"]["cards"], int)
        assert set(figures["ratio"]) == set(figures["ratio_to_jwt_baseline"]) == {"throughput", "p50", "p95", "p99"}
        if not demo:
            cost = figures["recording_cost"]
            assert cost["throughput_ratio"] > 0 and cost["cpu_per_request_ratio"] > 0
            assert cost["judged_ratio"] <= min(cost["throughput_ratio"], 1 / cost["cpu_per_request_ratio"]) + 0.001
    # Member data came from the FHIR server, with the access token the request carried.
    fetched = report["http"]["fallback-fetch"]["fhir_fetches"]
    assert min(fetched["Patient"], fetched["Coverage"], fetched["Condition"]) >= 50
    assert fetched["with-access-token"] == fetched["Patient"] + fetched["Coverage"] + fetched["Condition"]
    assert all(not figures["fhir_fetches"] for name, figures in report["http"].items() if name != "fallback-fetch")
    # Every signed call the recording services answered is in their audit stores.
    assert report["records"]["hook_calls_recorded"] == report["records"]["hook_calls_sent"] > 5 * 50

    growth = report["in_process"]["growth"]
    assert growth["orders"]["sizes"] == [1, 5, 20, 50] and growth["conditions"]["sizes"] == [0, 50, 200, 1000]
    for figures in growth.values():
        assert len(figures["median_ms"]) == 4 and isinstance(figures["linear"], bool)
        assert {"slope_us_per_item", "r2"} <= set(figures)
    assert report["in_process"]["engine"]["decisions_per_s"] > 0
    assert set(report["targets"]) == {"throughput_ratio_main", "p99_ms_main", "recording_cost_main",
                                      "linear_in_orders", "linear_in_conditions"}
    assert report["targets"]["p99_ms_main"]["met"] is None  # 2 connections: the 16-connection target is not judged
    assert report["machine"]["nproc"] >= 1 and report["machine"]["cpu_model"]
    assert "Targets" in result.stdout


def test_a_setting_given_to_the_bench_reaches_every_service_it_starts_and_only_cds_settings_are_taken(tmp_path):
    from bench.__main__ import parse_args

    args = parse_args(["--setting", "CDS_SPOOL_SYNC=true", "--setting", "CDS_THREADS=4"])
    setup = servers.ServiceSetup(tmp_path, tmp_path / "clients.json", settings=tuple(args.setting))
    for recording in (True, False):
        env = servers.service(servers.free_port(), setup, recording=recording).env
        assert (env["CDS_SPOOL_SYNC"], env["CDS_THREADS"]) == ("true", "4")
    for wrong in ("SPOOL_SYNC=true", "CDS_SPOOL_SYNC"):
        with pytest.raises(SystemExit):
            parse_args(["--setting", wrong])


def test_the_token_checking_baseline_answers_only_calls_the_service_would_authenticate(tmp_path):
    ehr = BenchEhr(new_key("ES384"))
    setup = servers.ServiceSetup(tmp_path, ehr.write_registry(tmp_path / "clients.json"))
    with servers.token_checking_baseline(servers.free_port(), setup) as baseline:
        url = f"http://127.0.0.1:{baseline.port}{scenarios.SERVICE_PATH}"

        def call(authorization: str | None) -> int:
            headers = {"Authorization": authorization} if authorization else {}
            return requests.post(url, data=b"{}", headers=headers, timeout=10).status_code

        assert call(ehr.authorization(url)) == 200
        assert call(None) == 401
        assert call(ehr.authorization(url + "/feedback")) == 401  # a token for another URL
        assert call(BenchEhr(new_key("ES384")).authorization(url)) == 401  # signed with a key not registered


def test_fhir_server_serves_the_member_and_counts_what_it_is_asked():
    with FhirServer() as fhir:
        headers = {"Authorization": f"Bearer {scenarios.ACCESS_TOKEN}"}
        patient = requests.get(f"{fhir.base_url}/Patient/{scenarios.PATIENT_ID}", headers=headers, timeout=5)
        coverage = requests.get(f"{fhir.base_url}/Coverage?patient={scenarios.PATIENT_ID}&status=active", timeout=5)
        missing = requests.get(f"{fhir.base_url}/Observation/1", timeout=5)
        assert patient.json() == scenarios.patient()
        assert coverage.json()["entry"][0]["resource"] == scenarios.coverage()
        assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"
        assert fhir.counted() == {"Patient": 1, "Coverage": 1, "not-found": 1, "with-access-token": 1}


def test_load_generator_counts_error_statuses_and_survives_closed_connections():
    with FhirServer() as fhir:  # answers POST with 501 and closes the connection
        result = run(Load(port=fhir.port, path="/fhir/Patient", body=b"{}", requests=20, connections=2, processes=1,
                          warmup=0, time_limit=10))
    assert result.completed == 0 and result.errors == {"HTTP 501": 20}


def test_loads_run_side_by_side_begin_measuring_together_however_long_each_takes_to_get_ready():
    ehr = BenchEhr(new_key("ES384"))
    together, began = threading.Barrier(2), {}

    def load(name: str, requests: int) -> None:  # a load's tokens are minted before it measures
        run(Load(port=fhir.port, path="/fhir/Patient", body=b"{}", requests=requests, connections=1, processes=1,
                 warmup=0, time_limit=10, ehr=ehr), on_start=lambda: began.update({name: time.monotonic()}),
            together=together)

    with FhirServer() as fhir:
        threads = [threading.Thread(target=load, args=args) for args in (("quick", 1), ("slow", 8000))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert abs(began["quick"] - began["slow"]) < 0.3, began


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_load_generator_signs_each_request_with_its_own_token_for_the_url_called(tmp_path, alg):
    ehr = BenchEhr(new_key(alg))
    load = Load(port=8123, path=scenarios.SERVICE_PATH, body=b"{}", requests=3, ehr=ehr)
    heads = load.heads(3)
    tokens = [head.split(b"Authorization: Bearer ")[1].split(b"\r\n")[0].decode() for head in heads]
    key = next(iter(load_registry(str(ehr.write_registry(tmp_path / "clients.json")), [alg])[ehr.iss]
                    .pinned.values()))
    claims = [jwt.decode(token, key, algorithms=[alg], audience="http://127.0.0.1:8123/cds-services/order-sign-crd",
                         issuer=ehr.iss) for token in tokens]
    assert len({c["jti"] for c in claims}) == 3
    assert all(head.endswith(b"\r\n\r\n") and b"Content-Length: 2\r\n" in head for head in heads)


def test_recording_cost_is_judged_on_the_lower_of_throughput_and_inverse_cpu_and_notes_loads_not_side_by_side():
    from bench.__main__ import notes
    from bench.report import recording_cost

    def run_(rps: float, cpu_us: float, stopped: bool = True) -> dict:
        return {"throughput_rps": rps, "server_cpu_us_per_request": cpu_us, "stopped_by_time_limit": stopped}

    # Round 1: more of the machine went to the recorded service (throughput 0.95, CPU 1.10 times: 0.909);
    # round 2: it waited (throughput 0.80, CPU 1.0); round 3: the unrecorded one ran out of requests first.
    cost = recording_cost([run_(190, 5500), run_(160, 5000), run_(200, 5200)],
                          [run_(200, 5000), run_(200, 5000), run_(200, 5000, stopped=False)])
    assert cost["throughput_ratio_rounds"] == [0.95, 0.8, 1.0]
    assert cost["cpu_per_request_ratio_rounds"] == [1.1, 1.0, 1.04]
    assert cost["judged_ratio_rounds"] == [0.909, 0.8, 0.962] and cost["judged_ratio"] == 0.909
    assert cost["rounds_not_side_by_side_throughout"] == 1
    assert any("in 1 round(s)" in note for note in notes({"main": {"recording_cost": cost}}))
    assert not notes({"main": {"recording_cost": {**cost, "rounds_not_side_by_side_throughout": 0}}})
    # With calls waiting for the disk, the figures side by side are recording's CPU only, and say so.
    waiting = notes({"main": {"recording_cost": {**cost, "rounds_not_side_by_side_throughout": 0}}},
                    Settings.from_env({"CDS_SPOOL_SYNC": "true"}))
    assert len(waiting) == 1 and "CDS_SPOOL_SYNC on" in waiting[0] and "not its waits" in waiting[0]


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([], 50) is None
