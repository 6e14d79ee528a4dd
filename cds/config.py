"""One Settings object, read once from CDS_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from cds.fhirfetch import base_url_problem
from cds.plans import PlanDirectoryError, load_plan_directory

MIB = 1024 * 1024
LOG_FORMATS = ("json", "text")


class SettingsError(ValueError):
    """A CDS_* variable holds a value the service cannot use; the message names it."""


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name}={raw!r}: expected true/false")


def _int(name: str, raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected an integer") from None
    if value < 0:
        raise SettingsError(f"{name}={raw!r}: must not be negative")
    return value


def _float(name: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number") from None
    if not value > 0 or value == float("inf"):
        raise SettingsError(f"{name}={raw!r}: must be a positive number")
    return value


def _list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


_PARSERS = {bool: _bool, int: _int, float: _float, tuple: _list, str: lambda name, raw: raw.strip()}


@dataclass(frozen=True)
class Settings:
    """Every setting of the service. Each field `x` is read from `CDS_X`; see the README."""

    demo: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    threads: int = 4
    log_level: str = "INFO"
    log_format: str = "text"
    metrics_enabled: bool = True
    public_base_url: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 5 * MIB
    max_json_depth: int = 64
    max_draft_orders: int = 200
    payer_name: str = "Health Care Service Corporation"
    policy_dirs: tuple[str, ...] = ()
    policy_url_template: str = ""
    # Member data: where it may be fetched from, and how long and how much a call may take.
    fhir_servers: tuple[str, ...] = ()
    fetch_budget_seconds: float = 2.0
    fetch_max_bytes: int = 4 * MIB
    fetch_max_pages: int = 5
    plan_directory: str = ""
    strict_crd: bool = False
    served_payers: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"CDS_{f.name.upper()}"
            if name not in env:
                continue
            values[f.name] = _PARSERS[type(f.default)](name, env[name])
        values.update(overrides)
        return cls(**values).resolved()

    def resolved(self) -> Settings:
        """Apply demo-mode defaults and check values that depend on each other."""
        settings = self
        if settings.demo:
            settings = replace(
                settings,
                host="127.0.0.1" if settings.host in ("", "127.0.0.1") else settings.host,
                cors_origins=settings.cors_origins or ("*",),
            )
        if settings.log_format not in LOG_FORMATS:
            raise SettingsError(f"CDS_LOG_FORMAT={settings.log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
        if settings.max_json_depth < 8:
            raise SettingsError("CDS_MAX_JSON_DEPTH must be at least 8 to admit a CDS Hooks request")
        if settings.max_body_bytes < 1024:
            raise SettingsError("CDS_MAX_BODY_BYTES must be at least 1024")
        if not settings.payer_name:
            raise SettingsError("CDS_PAYER_NAME must not be empty")
        _check_url_template(settings.policy_url_template)
        if not 0 < settings.fetch_budget_seconds <= 3:  # the answer must still come within the worker timeout
            raise SettingsError("CDS_FETCH_BUDGET_SECONDS must be above 0 and at most 3")
        if settings.fetch_max_bytes < 1024 or settings.fetch_max_pages < 1:
            raise SettingsError("CDS_FETCH_MAX_BYTES must be at least 1024 and CDS_FETCH_MAX_PAGES at least 1")
        for base in settings.fhir_servers:
            problem = base_url_problem(base, settings.demo)
            if problem:
                raise SettingsError(f"CDS_FHIR_SERVERS entry {base!r}: {problem}")
        if settings.plan_directory:
            try:
                load_plan_directory(settings.plan_directory)
            except PlanDirectoryError as exc:
                raise SettingsError(f"CDS_PLAN_DIRECTORY={settings.plan_directory!r}: {exc}") from None
        return settings

    def demo_relaxations(self) -> list[str]:
        """What demo mode relaxes, said at start-up so nobody runs it by mistake."""
        if not self.demo:
            return []
        return [
            "bound to loopback only",
            "CORS allows any origin" if "*" in self.cors_origins else "CORS origins as configured",
            "member data may be fetched over http and from any FHIR server on loopback",
        ]


def _check_url_template(template: str) -> None:
    if not template:
        return
    try:
        url = template.format(id="DME101.045", effective="2025-10-01")
    except (KeyError, IndexError, ValueError) as exc:
        raise SettingsError(
            f"CDS_POLICY_URL_TEMPLATE={template!r}: only {{id}} and {{effective}} may be filled in ({exc})"
        ) from None
    if not url.startswith(("https://", "http://")):
        raise SettingsError(f"CDS_POLICY_URL_TEMPLATE={template!r}: must be an absolute http(s) URL")
