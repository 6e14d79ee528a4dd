"""Every Prometheus metric of the service, with one helper per event so other modules just call them.

Under gunicorn each worker writes its values to PROMETHEUS_MULTIPROC_DIR (the gunicorn configuration sets it
before any worker starts) and /metrics sums all workers' files. Label values must come from small fixed
sets (policy ids, outcome codes, resource types), never from request content.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

REQUESTS = Counter("cds_http_requests", "HTTP requests answered, by endpoint, CDS service and status",
                   ["endpoint", "service", "status"])
REQUEST_SECONDS = Histogram("cds_http_request_duration_seconds", "Time to answer an HTTP request",
                            ["endpoint", "service"],
                            # Dense below the CRD 5-second budget, where an EHR starts to give up.
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 4, 5))
DECISIONS = Counter("cds_decisions", "Coverage decisions, by policy and outcome", ["policy", "outcome"])
FALLBACK_FETCHES = Counter("cds_fallback_fetches", "FHIR reads from fhirServer for data missing from prefetch",
                           ["resource"])
FALLBACK_FETCH_FAILURES = Counter("cds_fallback_fetch_failures", "Fallback FHIR reads that failed",
                                  ["resource", "reason"])
STORE_FAILURES = Counter("cds_store_failures", "Audit, feedback or replay store operations that failed",
                         ["operation"])


def request(endpoint: str, service: str, status: int, seconds: float) -> None:
    REQUESTS.labels(endpoint, service, str(status)).inc()
    REQUEST_SECONDS.labels(endpoint, service).observe(seconds)


def decision(policy_id: str, outcome: str) -> None:
    DECISIONS.labels(policy_id, outcome).inc()


def fallback_fetch(resource_type: str) -> None:
    FALLBACK_FETCHES.labels(resource_type).inc()


def fallback_fetch_failed(resource_type: str, reason: str) -> None:
    """`reason` is a short fixed word: timeout, connection, http-<status>, invalid."""
    FALLBACK_FETCH_FAILURES.labels(resource_type, reason).inc()


def store_failure(operation: str, failures: int = 1) -> None:
    STORE_FAILURES.labels(operation).inc(failures)


def exposition_registry() -> CollectorRegistry:
    """The registry /metrics renders: all workers' files under gunicorn, this process's metrics otherwise."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY

