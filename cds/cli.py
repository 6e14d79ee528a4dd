"""The `cds` command: `cds serve` runs the service under gunicorn."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from dataclasses import replace

import click
from gunicorn.app.base import BaseApplication

from cds.audit_cli import audit
from cds.config import Settings, SettingsError

# Below the CRD 5-second response budget: a stuck worker is replaced before the EHR gives up.
WORKER_TIMEOUT_SECONDS = 4


class GunicornServer(BaseApplication):
    """Gunicorn with its configuration from Settings rather than from a command line or file."""

    def __init__(self, settings: Settings):
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        for key, value in {
            "bind": f"[{s.host}]:{s.port}" if ":" in s.host else f"{s.host}:{s.port}",
            "workers": s.workers,
            "threads": s.threads,
            "worker_class": "gthread",
            "timeout": WORKER_TIMEOUT_SECONDS,
            "graceful_timeout": 10,
            "keepalive": 5,
            "limit_request_line": 8190,
            "limit_request_fields": 100,
            "limit_request_field_size": 16384,
            "accesslog": None,
            "loglevel": s.log_level.lower(),
        }.items():
            self.cfg.set(key, value)

    def load(self):
        from cds.app import create_app

        return create_app(self.settings)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.group()
def main() -> None:
    """Coverage decision support for EHR order entry (CDS Hooks 2.0, Da Vinci CRD)."""


@main.command()
@click.option("--host", help="Address to bind (default CDS_HOST or 127.0.0.1).")
@click.option("--port", type=int, help="Port to bind (default CDS_PORT or 8080).")
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes (default CDS_WORKERS or 2).")
@click.option("--demo", is_flag=True, help="Quick-start mode: loopback only, permissive CORS (also CDS_DEMO=1).")
def serve(host: str | None, port: int | None, workers: int | None, demo: bool) -> None:
    """Run the service under gunicorn."""
    try:
        settings = Settings.from_env(**({"demo": True} if demo else {}))
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    overrides = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    settings = replace(settings, **overrides)
    if settings.demo and not is_loopback(settings.host):
        raise click.UsageError(f"demo mode binds to loopback only; --host {settings.host} is not loopback")
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("SERVER_SOFTWARE", "cds")
    click.echo(f"CDS service on http://{settings.host}:{settings.port}/cds-services", err=True)
    GunicornServer(settings).run()


main.add_command(audit)
