"""`cds serve`: the service under gunicorn, configured as the container image configures it."""

from __future__ import annotations

import os
from dataclasses import replace

import click
from gunicorn.app.base import BaseApplication

from cds.auth import load_registry
from cds.config import Settings, SettingsError
from cds.pipeline import load_configured_plans, load_configured_policies
from cds.web.serving import gunicorn_options


class GunicornServer(BaseApplication):
    """Gunicorn configured from Settings by cds/web/serving.py, the configuration the container uses too."""

    def __init__(self, settings: Settings):
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            if key in self.cfg.settings:  # as gunicorn reads a config file
                self.cfg.set(key, value)

    def load(self):
        from cds.web.app import create_app

        return create_app(self.settings)


def run(host: str | None, port: int | None, workers: int | None, demo: bool) -> None:
    try:
        settings = Settings.from_env(**({"demo": True} if demo else {}))
        if settings.clients_file:  # fail here, naming the problem, rather than in every worker
            load_registry(settings.clients_file, settings.jwt_algorithms)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    overrides = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    settings = replace(settings, **overrides)
    problem = settings.demo_host_problem()
    if problem:
        raise click.UsageError(problem)
    try:  # fail here, with the variable, file and field named, rather than in every worker
        load_configured_policies(settings)
        load_configured_plans(settings)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    os.environ.setdefault("SERVER_SOFTWARE", "cds")
    click.echo(f"CDS service on http://{settings.host}:{settings.port}/cds-services", err=True)
    GunicornServer(settings).run()
