"""One Settings object, read once from CDS_* environment variables.

Reading settings checks values and loads nothing: the files they name (policies, plan directory, diagnoses) are
loaded once, where the service is built (cds/pipeline.py), and a bad one stops start-up naming its variable.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from cds.policy.mandate import DEFAULT_CHILD_AGE_LIMIT
from cds.urls import base_url_problem, is_loopback

MIB = 1024 * 1024
EXAMPLE_DATABASE_URL = "postgresql+psycopg://cds:secret@db.example.org/cds"
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# CDS_* variables that are not settings of the service but are expected beside them.
OTHER_VARIABLES = frozenset({"CDS_TEST_DATABASE_URL", "CDS_DB_PASSWORD", "CDS_HTTPS_PORT", "CDS_HTTP_PORT"})

# The public CDS Hooks sandbox as a trusted client: a development aid (its private key is public).
SANDBOX_CLIENTS_FILE = str(Path(__file__).parent / "data" / "clients-sandbox.yaml")
# The fictional plans of the example requests in fhir_examples/: demo mode answers every example as documented.
EXAMPLE_PLAN_DIRECTORY = str(Path(__file__).parent / "data" / "example-plan-directory.yaml")

# Asymmetric JWS algorithms a CDS client may sign with. CDS Hooks forbids `none` and every symmetric (HMAC) one.
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                   "ES256", "ES384", "ES512", "EdDSA"})


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


def parse_database_url(url: str) -> URL:
    """A store URL the service can use: PostgreSQL, or a SQLite file every worker process can open."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SettingsError(f"CDS_DATABASE_URL: not a database URL (e.g. {EXAMPLE_DATABASE_URL})") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise SettingsError(f"CDS_DATABASE_URL: the store runs on SQLite or PostgreSQL, not {backend}")
    if backend == "sqlite" and (not parsed.database or parsed.database == ":memory:"):
        raise SettingsError("CDS_DATABASE_URL: SQLite needs a file that every worker process can open")
    return parsed


def _list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


_PARSERS = {bool: _bool, int: _int, float: _float, tuple: _list, str: lambda name, raw: raw.strip()}


@dataclass(frozen=True)
class Settings:
    """Every setting of the service. Each field `x` is read from `CDS_X`; see docs/operating.md."""

    demo: bool = False
    demo_allow_remote: bool = False  # demo mode beyond loopback, e.g. in a container: said explicitly, or refused
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    threads: int = 2
    log_level: str = "INFO"
    log_format: str = "text"
    metrics_enabled: bool = True
    metrics_bind: str = ""  # HOST:PORT of an operator listener for /metrics (then not on the service port)
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
    # State mandates: the age under which a patient is a child, and a file replacing their qualifying diagnoses.
    mandate_child_age_limit: int = DEFAULT_CHILD_AGE_LIMIT
    mandate_diagnoses_file: str = ""
    strict_crd: bool = False
    r4_check_interval_ms: int = 1000  # decided orders checked against R4: one call's per client per interval
    served_payers: tuple[str, ...] = ()
    clients_file: str = ""
    jwt_algorithms: tuple[str, ...] = ("ES384", "RS384")
    clock_skew_seconds: int = 60
    # The longest a client token may live (exp - iat): the CRD request generator signs 24-hour tokens.
    max_token_lifetime_seconds: int = 86400
    jwks_proxy: str = ""  # a proxy for JWK Set fetches; none by default, whatever the environment says
    auth_discovery: bool = False
    auth_disabled: bool = False
    data_dir: str = "cds-data"
    database_url: str = field(default="", repr=False)  # may hold a password
    audit_required: bool = False
    # Sync each answered call's spooled record to disk before answering: it then survives a power loss of the
    # host too, at a cost in throughput (docs/operating.md). Off, it survives any crash of the service's processes.
    spool_sync: bool = False
    audit_capture_payloads: bool = False
    audit_retention_days: int = 30
    # The web console at /console (cds/console/): on in demo mode; elsewhere only with an admin credential.
    console_enabled: bool = False
    console_admin_token: str = field(default="", repr=False)
    console_key_file: str = ""  # outside demo: the private JWK the console signs its calls with
    console_iss: str = "urn:cds-coverage:console"

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
                clients_file=settings.clients_file or SANDBOX_CLIENTS_FILE,
                plan_directory=settings.plan_directory or EXAMPLE_PLAN_DIRECTORY,
            )
            problem = settings.demo_host_problem()
            if problem:
                raise SettingsError(f"CDS_HOST={settings.host}: {problem}")
        _check_process(settings)
        _check_urls(settings)
        for directory in settings.policy_dirs:
            if not os.path.isdir(directory):
                raise SettingsError(f"CDS_POLICY_DIRS entry {directory!r}: no such directory")
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
        if not 1 <= settings.mandate_child_age_limit <= 26:
            raise SettingsError("CDS_MANDATE_CHILD_AGE_LIMIT must be between 1 and 26 (children are under it)")
        if not settings.jwt_algorithms:
            raise SettingsError("CDS_JWT_ALGORITHMS must name at least one algorithm")
        for alg in settings.jwt_algorithms:
            if alg not in ASYMMETRIC_ALGORITHMS:
                raise SettingsError(f"CDS_JWT_ALGORITHMS: {alg!r} is not allowed; CDS Hooks forbids 'none' and "
                                    f"symmetric algorithms. Choose from {', '.join(sorted(ASYMMETRIC_ALGORITHMS))}")
        if settings.metrics_bind:
            _check_metrics_bind(settings)
        if settings.max_token_lifetime_seconds < 60:
            raise SettingsError("CDS_MAX_TOKEN_LIFETIME_SECONDS must be at least 60")
        if settings.jwks_proxy and not settings.jwks_proxy.startswith(("http://", "https://")):
            raise SettingsError(f"CDS_JWKS_PROXY={settings.jwks_proxy!r}: expected an http(s) proxy URL")
        if settings.database_url:
            parse_database_url(settings.database_url)
        _check_console(settings)
        return settings

    def public_bases(self) -> tuple[str, ...]:
        """Public base URLs without a trailing slash. Demo mode defaults to this host's loopback names."""
        bases = self.public_base_url
        if not bases and self.demo:
            bases = (f"http://localhost:{self.port}", f"http://127.0.0.1:{self.port}")
        return tuple(base.rstrip("/") for base in bases)

    @property
    def console_on(self) -> bool:
        """The console is served in demo mode, or when enabled (which requires an admin credential)."""
        return self.demo or self.console_enabled

    @property
    def metrics_port(self) -> int | None:
        """The operator listener's port (CDS_METRICS_BIND), if there is one."""
        return int(self.metrics_bind.rsplit(":", 1)[1]) if self.metrics_bind else None

    @property
    def auth_off(self) -> bool:
        """Authentication is off only when asked for, in demo mode, bound to loopback."""
        return self.auth_disabled and self.demo and is_loopback(self.host)

    @property
    def store_url(self) -> str:
        """The audit store's SQLAlchemy URL: CDS_DATABASE_URL, else a SQLite file in CDS_DATA_DIR."""
        return self.database_url or f"sqlite:///{os.path.abspath(os.path.join(self.data_dir, 'cds.sqlite3'))}"

    def demo_host_problem(self) -> str | None:
        """Why demo mode may not listen on this host: beyond loopback only when CDS_DEMO_ALLOW_REMOTE says so."""
        if not self.demo or is_loopback(self.host) or self.demo_allow_remote:
            return None
        return (f"demo mode listens on loopback only, not on {self.host}: it trusts the public CDS Hooks sandbox "
                "key, whose private key is public, so anyone who reaches the port can sign calls it accepts. "
                "Set CDS_DEMO_ALLOW_REMOTE=true to listen there anyway (e.g. in a container whose port is "
                "published on 127.0.0.1 only)")

    @property
    def spool_dir(self) -> str:
        """Where records wait while the audit store's database cannot take them: CDS_DATA_DIR/spool."""
        return os.path.abspath(os.path.join(self.data_dir, "spool"))

    def demo_relaxations(self) -> list[str]:
        """What demo mode relaxes, said at start-up so nobody runs it by mistake."""
        if not self.demo:
            return []
        loopback = is_loopback(self.host)
        relaxations = [
            "bound to loopback only" if loopback else
            f"listening on {self.host}, beyond loopback (CDS_DEMO_ALLOW_REMOTE): whoever reaches the port is served",
            "CORS allows any origin" if "*" in self.cors_origins else "CORS origins as configured",
            "member data may be fetched over http and from any FHIR server on loopback",
        ]
        if self.auth_off:
            relaxations.append("authentication is OFF (CDS_AUTH_DISABLED): any loopback caller is served")
        elif self.clients_file == SANDBOX_CLIENTS_FILE:
            relaxations.append("trusts the public CDS Hooks sandbox key, whose private key is public"
                               + ("" if loopback else ": anyone who reaches the port can sign calls it accepts"))
        relaxations.append("the console at /console is open"
                           + (" with the admin credential" if self.console_admin_token else " to any loopback caller")
                           + f" and signs its calls with its own key, trusted as {self.console_iss}")
        if self.plan_directory == EXAMPLE_PLAN_DIRECTORY:
            relaxations.append("plans are looked up in the example plan directory (fictional plans)")
        return relaxations



def _check_metrics_bind(settings: Settings) -> None:
    host, _, port = settings.metrics_bind.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"CDS_METRICS_BIND={settings.metrics_bind!r}: expected HOST:PORT, e.g. 127.0.0.1:9100")
    if int(port) == settings.port:
        raise SettingsError("CDS_METRICS_BIND must name another port than the service's (CDS_PORT)")
    if not settings.metrics_enabled:
        raise SettingsError("CDS_METRICS_BIND is set but CDS_METRICS_ENABLED is false")


def unknown_variables(env: Mapping[str, str] | None = None) -> list[str]:
    """CDS_* variables that name no setting, each with the setting it may have meant: said at start-up."""
    env = os.environ if env is None else env
    known = [f"CDS_{f.name.upper()}" for f in fields(Settings)]
    found = []
    for name in sorted(env):
        if name.startswith("CDS_") and name not in known and name not in OTHER_VARIABLES:
            close = difflib.get_close_matches(name, known, n=1)
            found.append(f"{name} is not a setting of this service" + (f" (did you mean {close[0]}?)" if close else ""))
    return found


def _check_process(settings: Settings) -> None:
    if not settings.host:
        raise SettingsError("CDS_HOST must not be empty (127.0.0.1 for this machine only, 0.0.0.0 for every address)")
    if not 1 <= settings.port <= 65535:
        raise SettingsError(f"CDS_PORT={settings.port}: must be a port between 1 and 65535")
    if settings.workers < 1:
        raise SettingsError(f"CDS_WORKERS={settings.workers}: at least one worker process is needed to answer calls")
    if settings.threads < 1:
        raise SettingsError(f"CDS_THREADS={settings.threads}: each worker needs at least one thread")
    if settings.log_level.upper() not in LOG_LEVELS:
        raise SettingsError(f"CDS_LOG_LEVEL={settings.log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
    if not settings.data_dir:
        raise SettingsError("CDS_DATA_DIR must not be empty")


def _check_urls(settings: Settings) -> None:
    for base in settings.public_base_url:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise SettingsError(f"CDS_PUBLIC_BASE_URL entry {base!r}: expected an absolute http(s) URL without query, "
                                "the part before /cds-services (e.g. https://cds.payer.example.org)")
    for origin in settings.cors_origins:
        parts = urlsplit(origin)
        if origin != "*" and (parts.scheme not in ("http", "https") or not parts.hostname
                              or parts.path not in ("", "/") or parts.query or parts.fragment):
            raise SettingsError(f"CDS_CORS_ORIGINS entry {origin!r}: expected * or a browser origin, scheme and host "
                                "(e.g. https://ehr.example.org)")


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


CONSOLE_TOKEN_MIN_CHARS = 16


def _check_console(settings: Settings) -> None:
    token = settings.console_admin_token
    if settings.console_enabled and not settings.demo and not token:
        raise SettingsError("CDS_CONSOLE_ENABLED=true outside demo mode needs CDS_CONSOLE_ADMIN_TOKEN, the "
                            "credential every console request must carry")
    if token and len(token) < CONSOLE_TOKEN_MIN_CHARS:
        raise SettingsError(f"CDS_CONSOLE_ADMIN_TOKEN must be at least {CONSOLE_TOKEN_MIN_CHARS} characters "
                            "(e.g. from `openssl rand -hex 24`)")
    if not settings.console_iss:
        raise SettingsError("CDS_CONSOLE_ISS must not be empty")
