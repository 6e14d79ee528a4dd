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

from flask import Flask

from cds.config import Settings
from cds.record import Recorder
from cds.tools.server import GunicornServer


class _Unrecorded(Recorder):
    """The record step without its audit records: decisions are still counted and R4 departures logged."""

    def write(self, *call: Any) -> None:
        pass


def switch_off_recording(app: Flask) -> Flask:
    """`app` writes no audit record from now on; other apps in the process are untouched."""
    service = app.extensions["cds"]
    recorder = service.recorder
    service.recorder = _Unrecorded(recorder.store, recorder.departures, recorder.capture_payloads)
    return app


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
