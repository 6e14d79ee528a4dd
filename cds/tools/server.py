"""`cds serve`: the service under gunicorn, configured as the container image configures it."""

from __future__ import annotations

import errno
import http.client
import os
import socket
import threading
import time
from dataclasses import replace
from typing import Any

import click
from gunicorn.app.base import BaseApplication

from cds.config import Settings, SettingsError
from cds.pipeline import check_configured_files
from cds.web.serving import gunicorn_options

BANNER_WAIT_SECONDS = 60


class GunicornServer(BaseApplication):
    """Gunicorn configured from Settings by cds/web/serving.py, the configuration the container uses too.
    With a `banner`, it is printed once the port is bound and a worker answers."""

    def __init__(self, settings: Settings, banner: str | None = None):
        self.settings = settings
        self.banner = banner
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            if key in self.cfg.settings:  # as gunicorn reads a config file
                self.cfg.set(key, value)
        if self.banner:
            self.cfg.set("when_ready", self._announce_when_answering)

    def _announce_when_answering(self, server) -> None:
        """Gunicorn's when_ready hook, in the master once it listens: the banner waits for a worker's answer."""
        probe = (_probe_host(self.settings.host), self.settings.port)
        threading.Thread(target=_announce, args=(probe, self.banner), daemon=True).start()

    def load(self):
        from cds.web.app import create_app

        return create_app(self.settings)


def run(host: str | None, port: int | None, workers: int | None, demo: bool) -> None:
    try:
        settings = Settings.from_env(None, demo=True) if demo else Settings.from_env()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    overrides: dict[str, Any] = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items()
                                 if v is not None}
    settings = replace(settings, **overrides)
    if problem := settings.demo_host_problem():  # the host came from --host: CDS_HOST is checked with the rest
        raise click.UsageError(f"--host {host}: {problem}")
    try:  # fail here, with the variable, file and field named, rather than in every worker
        check_configured_files(settings)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    _check_port_free(settings.host, settings.port, "--port" if port else "CDS_PORT")
    os.environ.setdefault("SERVER_SOFTWARE", "cds")
    banner = f"CDS service on http://{_url_host(settings.host)}:{settings.port}/cds-services"
    if settings.metrics_bind:
        banner += f"\nMetrics on http://{settings.metrics_bind}/metrics (operators only)"
    GunicornServer(settings, banner=banner).run()


def _check_port_free(host: str, port: int, option: str) -> None:
    """A port another process listens on is said as such, before gunicorn retries it for seconds."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        raise click.UsageError(f"cannot bind {host!r}: not an address or host name of this machine") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(f"port {port} on {host} is in use by another process; stop it or pick "
                                           f"another port with {option}") from None
            raise click.ClickException(f"cannot bind {host}:{port}: {exc.strerror}") from None


def _announce(probe: tuple[str, int], banner: str) -> None:
    deadline = time.monotonic() + BANNER_WAIT_SECONDS
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection(*probe, timeout=2)
        try:
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                click.echo(banner, err=True)
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.1)


def _probe_host(host: str) -> str:
    """Where this machine reaches a server bound to `host` (the wildcard addresses through loopback)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return "::1" if host == "::" else host


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
