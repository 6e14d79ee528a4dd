"""The service with audit recording switched off: a bench-only switch, never a product setting (CRD expects
every call recorded). Everything else stays as `cds serve` runs it: the same Settings and gunicorn configuration,
authentication with the replay check in the store, the decision metrics. Against the real service it shows
what recording costs a call: building the records, queueing them and the background writer's transactions.

`python -m bench.unrecorded --port 8082` (with the service's CDS_* environment)
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from flask import Flask, current_app

from cds.config import Settings
from cds.tools.cli import GunicornServer


def _not_recorded(*records: Any) -> None:
    """Store.audit, switched off."""


def switch_off_recording(app: Flask) -> Flask:
    """`app` records nothing from now on; other apps in the process are untouched."""
    import cds.web.routes  # imported late: gunicorn sets up multiprocess metrics before a worker imports it

    app.extensions["cds_store"].audit = _not_recorded
    if not getattr(cds.web.routes.call_records, "switchable", False):
        cds.web.routes.call_records = _switchable(cds.web.routes.call_records)
    return app


def _switchable(call_records: Any) -> Any:
    """The record step of cds.web.routes, which for a switched-off app only counts the decisions (as it also does)."""
    from cds import metrics
    from cds.render.coverage import COVERED_CODE

    def records_unless_off(service_id: str, request: Any, client: Any, status: int, latency_ms: float,
                           rendered: Any = (), *rest: Any) -> Any:
        if current_app.extensions["cds_store"].audit is not _not_recorded:
            return call_records(service_id, request, client, status, latency_ms, rendered, *rest)
        for item in rendered:
            metrics.decision(item.decision.policy_id, COVERED_CODE[item.decision.outcome])
        return None, ()

    records_unless_off.switchable = True  # type: ignore[attr-defined]
    return records_unless_off


class UnrecordedServer(GunicornServer):
    def load(self) -> Flask:
        return switch_off_recording(super().load())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    UnrecordedServer(replace(Settings.from_env(), host="127.0.0.1", port=args.port)).run()


if __name__ == "__main__":
    main()
