"""CDS client authentication: the trusted-client registry, and the Bearer JWT checked on each call."""

from __future__ import annotations

import base64
import binascii
import logging
import math
import threading
import time
from collections.abc import Collection, Iterable
from concurrent.futures import wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import jwt
import orjson
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from flask import Request, current_app, g, request
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cds.config import ASYMMETRIC_ALGORITHMS, Settings, SettingsError
from cds.console.key import demo_trusted_jwks
from cds.errors import CdsError, quote
from cds.jwks import JwksFetcher, jwks_url_problem
from cds.logs import say_at_start_up
from cds.member.fetch import FetchError
from cds.urls import is_loopback

log = logging.getLogger(__name__)

JWKS_MAX_AGE_SECONDS = 3600
JWKS_MIN_REFETCH_SECONDS = 30  # tokens naming unknown kids cannot make us hammer a client's JWKS URL
MAX_TOKEN_CHARS = 8192
MAX_JTI_CHARS = 256
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]  # CDS Hooks has no `sub`: never require it
TIME_CLAIMS = ("exp", "iat", "nbf")
MAX_NUMERIC_DATE = 2**33  # the year 2242: seconds beyond any token's lifetime, within what a datetime holds


class Unauthorized(CdsError):
    """401 with the same bare body whatever went wrong: why a token failed is for the log only."""

    def __init__(self) -> None:
        super().__init__(401, "Authentication failed.", "login")
        self.headers = {"WWW-Authenticate": "Bearer"}


class Refused(Exception):
    """Why a call was not authenticated; logged, never sent."""


class RegistryError(SettingsError):
    """The trusted-client registry cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class RegisteredClient:
    """An authenticated caller: a client of the trusted-client registry, as its token named it."""

    iss: str
    tenant: str | None
    fhir_servers: tuple[str, ...]  # the FHIR base URLs this client may have the service fetch from


# --- Keys -----------------------------------------------------------------------------------------------

Keys = dict[tuple[str, str], jwt.PyJWK]  # (kid, alg) -> verification key


def parse_jwks(jwks: Any, algorithms: Collection[str]) -> Keys:
    """The signing keys of a JWK Set that verify one of `algorithms`, by kid and algorithm."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError("a JWK Set is an object with a 'keys' array")
    keys: Keys = {}
    for jwk in jwks["keys"]:
        if isinstance(jwk, dict) and {"d", "p", "q", "k"} & jwk.keys():
            raise ValueError(f"key {jwk.get('kid')} holds private or secret material; list public keys only")
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or jwk.get("use", "sig") != "sig":
            continue
        # An RSA key without `alg` serves every RSA algorithm; EC and OKP keys imply theirs by curve.
        if jwk.get("kty") == "RSA" and "alg" not in jwk:
            candidates: Iterable[str | None] = [alg for alg in algorithms if alg[:2] in ("RS", "PS")]
        else:
            candidates = [None]
        for alg in candidates:
            try:
                key = jwt.PyJWK(jwk, alg)
            except jwt.PyJWTError:
                continue
            if key.algorithm_name in algorithms:
                keys[(jwk["kid"], key.algorithm_name)] = key
    return keys


# The CRD request generator's key server keeps every key it was sent, one per page load, oldest first: its list is
# read up to KEY_LIST_MAX_BYTES (some 2,000 RSA keys), and only its newest KEY_LIST_NEWEST keys are used.
KEY_LIST_MAX_BYTES = 1024 * 1024
KEY_LIST_NEWEST = 256


def parse_key_list(document: Any, algorithms: Collection[str]) -> Keys:
    """The keys of a key list as the HL7 CRD request generator's key server serves it: a JSON array of
    `{"id": kid, "pem": key}`, the key a public JWK (what the generator puts there) or PEM text; the newest
    KEY_LIST_NEWEST, the last in the list."""
    if not isinstance(document, list):
        raise ValueError("a key list (jwks_format: pem-list) is a JSON array of {id, pem} objects")
    jwks = []
    for item in document[-KEY_LIST_NEWEST:]:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        key = _pem_jwk(item["pem"]) if isinstance(item.get("pem"), str) else item.get("pem")
        if isinstance(key, dict):
            jwks.append({**key, "kid": item["id"]})  # the entry's id names the key
    return parse_jwks({"keys": jwks}, algorithms)


def _pem_jwk(pem: str) -> dict[str, Any] | None:
    """A PEM public key (RSA or EC) as a JWK, or None when it is not one."""
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        return None
    if isinstance(key, rsa.RSAPublicKey):
        return RSAAlgorithm.to_jwk(key, as_dict=True)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ECAlgorithm.to_jwk(key, as_dict=True)
    return None


KEY_SET_PARSERS = {"jwks": parse_jwks, "pem-list": parse_key_list}  # a registry entry's jwks_format
KeySetFormat = Literal["jwks", "pem-list"]


class RemoteJwks:
    """A client's JWK Set at a URL: fetched when first needed and cached; fetched again when it is old or
    a token names a kid it lacks (key rotation), at most once every JWKS_MIN_REFETCH_SECONDS. One fetch at a
    time: a token that needs the keys while they are being fetched is checked against the keys already known,
    so tokens naming made-up kids hold one thread at most, for the fetch budget at most."""

    def __init__(self, url: str, algorithms: Collection[str], fetcher: JwksFetcher, key_format: KeySetFormat = "jwks"):
        self.url = url
        self._algorithms = algorithms
        self._fetcher = fetcher
        self.key_format = key_format
        self._parse = KEY_SET_PARSERS[key_format]
        self._max_bytes = KEY_LIST_MAX_BYTES if key_format == "pem-list" else None
        self._keys: Keys = {}
        self.problem: str | None = None  # why the last fetch gave no keys, if it failed
        self._fetched_at = -math.inf
        self._fetching = threading.Lock()  # held from the start of a fetch to its end

    def key(self, kid: str, alg: str) -> jwt.PyJWK | None:
        if (kid, alg) not in self._keys or time.monotonic() - self._fetched_at > JWKS_MAX_AGE_SECONDS:
            self._refresh()
        return self._keys.get((kid, alg))

    def _refresh(self) -> None:
        since = time.monotonic() - self._fetched_at
        if since < JWKS_MIN_REFETCH_SECONDS:
            log.warning("JWK Set %s not fetched again: it was fetched %.0f s ago, and the next fetch is allowed "
                        "in %.0f s (a kid it lacks, such as a rotated key, is found only then)", self.url, since,
                        JWKS_MIN_REFETCH_SECONDS - since)
            return
        if not self._fetching.acquire(blocking=False):  # being fetched: checked against the keys known
            return
        self._fetched_at = time.monotonic()
        try:
            fetch = self._fetcher.start(self._fetch)
        except RuntimeError:  # the pool is shutting down
            self._fetching.release()
            return
        wait([fetch], timeout=self._fetcher.budget)

    def _fetch(self) -> None:
        try:
            document = self._fetcher.fetch(self.url, self._max_bytes)
            if self.key_format == "jwks" and isinstance(document, list):
                raise ValueError("it is a JSON array, not a JWK Set; a key server that serves a list of {id, pem} "
                                 "keys, as the CRD request generator's does, is registered with jwks_format: pem-list")
            self._keys = self._parse(document, self._algorithms)
            self.problem = None
        except (FetchError, ValueError) as exc:
            self.problem = str(exc)
            log.warning("JWK Set %s could not be fetched, keeping the keys already known: %s", self.url, exc)
        finally:
            self._fetching.release()


# --- SMART scopes ----------------------------------------------------------------------------------------

# One SMART scope: v1 `user/Coverage.read`, `patient/*.*`; v2 (CDS Hooks 3.0) `user/Coverage.rs`, `patient/*.r`,
# optionally narrowed by a query (`patient/Condition.rs?category=problem-list-item`).
# --- Registry -------------------------------------------------------------------------------------------


class ClientEntry(BaseModel):
    """One trusted client in the registry file."""

    model_config = ConfigDict(extra="forbid")

    iss: str = Field(min_length=1)
    jwks: dict[str, Any] | None = None
    jwks_file: str | None = None
    jwks_url: tuple[str, ...] = ()
    jwks_format: KeySetFormat = "jwks"  # what jwks_url serves: a JWK Set, or the CRD request generator's key list
    algorithms: tuple[str, ...] = ()  # the algorithms this client signs with, if not CDS_JWT_ALGORITHMS
    tenants: tuple[str, ...] = ()
    fhir_servers: tuple[str, ...] = ()

    @field_validator("jwks_url", "algorithms", "tenants", "fhir_servers", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        refused = [alg for alg in value if alg not in ASYMMETRIC_ALGORITHMS]
        if refused:
            raise ValueError(f"{', '.join(refused)} not allowed: CDS Hooks forbids 'none' and symmetric algorithms; "
                             f"choose from {', '.join(sorted(ASYMMETRIC_ALGORITHMS))}")
        return value

    @model_validator(mode="after")
    def _has_keys(self) -> ClientEntry:
        if not (self.jwks or self.jwks_file or self.jwks_url):
            raise ValueError("give the client's keys as jwks, jwks_file or jwks_url")
        return self


class RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clients: list[ClientEntry]


@dataclass(frozen=True)
class TrustedClient:
    iss: str
    pinned: Keys
    remote: dict[str, RemoteJwks]  # by URL: the only `jku` values honoured
    tenants: frozenset[str]
    fhir_servers: tuple[str, ...]
    algorithms: tuple[str, ...] = ()  # what it may sign with (empty: CDS_JWT_ALGORITHMS)

    def key_problem(self, jku: str | None) -> str:
        """Why the key sets the token could use gave no key, when a fetch of one failed ('' otherwise)."""
        failed = [f"{url} could not be used: {source.problem}" for url, source in self.remote.items()
                  if source.problem and jku in (None, url)]
        return f"; the key set at {'; '.join(failed)}" if failed else ""

    def key(self, kid: str, alg: str, jku: str | None) -> jwt.PyJWK | None:
        """The key for `kid`: pinned first, then from the JWK Set URLs (only the token's `jku`, if it names one)."""
        if jku is not None and jku not in self.remote:
            raise Refused(f"untrusted jku {quote(jku, 200)} for iss {quote(self.iss, 200)}")
        key = self.pinned.get((kid, alg))
        for source in [self.remote[jku]] if jku else self.remote.values():
            key = key or source.key(kid, alg)
        return key


def load_registry(path: str, algorithms: Collection[str], fetcher: JwksFetcher | None = None
                  ) -> dict[str, TrustedClient]:
    """The trusted clients of a YAML or JSON registry file, by iss. Pinned key files are read now; JWK Set
    URLs are fetched by `fetcher` (by default as outside demo mode: https only)."""
    file = Path(path)
    fetcher = fetcher or JwksFetcher()
    try:
        entries = RegistryFile.model_validate(_read(file)).clients
        clients: dict[str, TrustedClient] = {}
        for entry in entries:
            if entry.iss in clients:
                raise ValueError(f"iss {entry.iss} is listed twice")
            allowed = entry.algorithms or tuple(algorithms)
            pinned = parse_jwks(entry.jwks, allowed) if entry.jwks else {}
            if entry.jwks_file:
                pinned |= parse_jwks(_read(file.parent / entry.jwks_file), allowed)
            if not pinned and not entry.jwks_url:
                raise ValueError(f"client {entry.iss} has no key usable with {', '.join(allowed)}")
            for url in entry.jwks_url:
                problem = jwks_url_problem(url, fetcher.demo)
                if problem:
                    raise ValueError(f"client {entry.iss}: jwks_url {url} is not usable: {problem}")
            clients[entry.iss] = TrustedClient(
                iss=entry.iss,
                pinned=pinned,
                remote={url: RemoteJwks(url, allowed, fetcher, entry.jwks_format) for url in entry.jwks_url},
                tenants=frozenset(entry.tenants),
                fhir_servers=tuple(url.rstrip("/") for url in entry.fhir_servers),
                algorithms=allowed,
            )
    except ValidationError as exc:
        raise RegistryError(f"CDS_CLIENTS_FILE {path}: {_first_error(exc)}") from None
    except OSError as exc:
        unread = exc.filename or path
        raise RegistryError(f"CDS_CLIENTS_FILE {path}: {unread} cannot be read ({exc.strerror})") from None
    except (yaml.YAMLError, ValueError) as exc:
        raise RegistryError(f"CDS_CLIENTS_FILE {path}: {exc}") from None
    return clients


def _first_error(exc: ValidationError) -> str:
    """`clients[0]: give the client's keys as ...`: where in the file, and what is wrong, in one line."""
    error = exc.errors()[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    return f"{where or 'the file'}: {error['msg'].removeprefix('Value error, ')}"


def _read(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML or JSON (JSON is YAML)


# --- Verification ---------------------------------------------------------------------------------------


class ReplayRecords(Protocol):
    def seen_jti(self, iss: str, jti: str, expires_at: float) -> bool:
        """Record the id until `expires_at`; True when it was already recorded (a replay). Shared by every
        process and host that serves the same clients (the audit store's database)."""
        ...


class Authenticator:
    """Verifies CDS Hooks client JWTs (CDS Hooks 2.0 §Trusting CDS Clients). Built once per process."""

    def __init__(self, settings: Settings, replay: ReplayRecords):
        self.algorithms = list(settings.jwt_algorithms)
        self.skew = settings.clock_skew_seconds
        self.bases = settings.public_bases()
        self.off = settings.auth_off
        self.max_lifetime = settings.max_token_lifetime_seconds
        fetcher = JwksFetcher(settings.demo, settings.jwks_proxy)
        self.clients = load_registry(settings.clients_file, self.algorithms, fetcher) if settings.clients_file else {}
        if jwks := demo_trusted_jwks(settings):  # demo mode only: the console's own key (cds/console/key.py)
            self.clients[settings.console_iss] = TrustedClient(settings.console_iss, parse_jwks(jwks, self.algorithms),
                                                               {}, frozenset(), ())
        self.replay = replay
        # Why no call can be authenticated, if that is so: said at start-up and on every refused call.
        self.problem = None
        if not settings.clients_file:
            self.problem = "CDS_CLIENTS_FILE is not set, so no CDS client is trusted"
        elif not self.bases:
            self.problem = "CDS_PUBLIC_BASE_URL is not set, so no token's aud can match"
        self._announce(settings)

    def _announce(self, settings: Settings) -> None:
        if settings.auth_disabled and not self.off:
            say_at_start_up(log, logging.WARNING,
                            "CDS_AUTH_DISABLED is ignored: it is honoured only in demo mode bound to loopback")
        if self.off:
            say_at_start_up(log, logging.WARNING,
                            "authentication is OFF: calls from loopback are served without a token")
        elif self.problem:
            say_at_start_up(log, logging.ERROR, "every authenticated call will be refused with 401: %s", self.problem)
        else:
            say_at_start_up(log, logging.INFO, "trusting %d CDS client(s): %s; audiences under %s", len(self.clients),
                            ", ".join(sorted(self.clients)) or "none", ", ".join(self.bases))

    def authenticate(self, request: Request) -> RegisteredClient | None:
        """The verified caller of `request` (None when authentication is off), or Unauthorized."""
        if self.off and is_loopback(request.remote_addr or ""):
            return None
        try:
            if self.problem:
                raise Refused(self.problem)
            scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Refused("no Bearer token")
            return self.verify(token.strip(), request.path)
        except Refused as reason:
            log.warning("401 for %s %s: %s", request.method, quote(request.path, 200), reason)
            raise Unauthorized from None

    def verify(self, token: str, path: str) -> RegisteredClient:
        """Check `token` for a call to `path`, in the CDS Hooks best-practice order; Refused says why not."""
        if len(token) > MAX_TOKEN_CHARS:
            raise Refused("token too long")
        header, unverified = _peek(token) or _read_unverified(token)
        iss = unverified.get("iss")
        alg, kid, jku = header.get("alg"), header.get("kid"), header.get("jku")
        client = self.clients.get(iss) if isinstance(iss, str) else None
        allowed = (client.algorithms if client else ()) or tuple(self.algorithms)
        if not isinstance(alg, str) or alg not in allowed:  # never `none` or HMAC: nothing may allow them
            raise Refused(f"alg {quote(alg)} is not allowed" + (
                f" for iss {quote(iss, 200)}, which may sign with {', '.join(allowed)} (CDS_JWT_ALGORITHMS, or "
                "the algorithms of its registry entry)" if client else ""))
        if not isinstance(kid, str) or not kid:
            raise Refused("no kid in the JWT header")
        if jku is not None and not isinstance(jku, str):
            raise Refused("jku is not a string")
        if client is None:
            raise Refused(f"unknown iss {quote(iss, 200)}")
        key = client.key(kid, alg, jku)
        if key is None:
            raise Refused(f"no {alg} key with kid {quote(kid)} for iss {quote(iss, 200)}{client.key_problem(jku)}")
        try:
            claims = jwt.decode(token, key, algorithms=[alg], audience=self.audiences(path), issuer=client.iss,
                                leeway=self.skew, options={"require": REQUIRED_CLAIMS})
        except jwt.InvalidSignatureError as exc:
            raise Refused(f"{type(exc).__name__} ({quote(exc, 120)}) for iss {quote(iss, 200)}") from None
        except jwt.DecodeError as exc:  # malformed in a way the lenient peek let through
            raise Refused(f"not a readable JWT ({quote(exc, 120)})") from None
        except jwt.PyJWTError as exc:
            raise Refused(f"{type(exc).__name__} ({quote(exc, 120)}) for iss {quote(iss, 200)}") from None
        problem = lifetime_problem(claims, self.max_lifetime)
        if problem:
            raise Refused(f"{problem} for iss {quote(iss, 200)}")
        tenant = claims.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise Refused("tenant is not a string")
        if client.tenants and tenant not in client.tenants:
            raise Refused(f"tenant {quote(tenant)} is not registered for iss {quote(iss, 200)}")
        jti = claims["jti"]
        if not jti or len(jti) > MAX_JTI_CHARS:
            raise Refused("jti empty or too long")
        # Remembered while the token could still pass: exp is at most max_lifetime after iat (not in the future).
        if self.replay.seen_jti(client.iss, jti, claims["exp"] + self.skew):
            raise Refused(f"replayed jti {quote(jti)} from iss {quote(iss, 200)}")
        return RegisteredClient(iss=client.iss, tenant=tenant, fhir_servers=client.fhir_servers)

    def audiences(self, path: str) -> list[str]:
        """`aud` values accepted for a call to `path`: each public base URL plus the path, one trailing slash
        allowed. Never request.url: proxies and host aliases change it."""
        return [f"{base}{path}{slash}" for base in self.bases for slash in ("", "/")]


def lifetime_problem(claims: dict[str, Any], max_lifetime: int) -> str | None:
    """Why the token's times are refused, or None: exp, iat and nbf (if given) must be whole numbers of
    seconds in a sane range, and exp at most `max_lifetime` after iat (CDS Hooks asks for short-lived tokens).
    PyJWT has checked them against the clock; it also accepts numeric strings and fractions."""
    for name in TIME_CLAIMS:
        value = claims.get(name)
        if name in claims and (type(value) is not int or not 0 <= value <= MAX_NUMERIC_DATE):
            return f"{name} is not a whole number of seconds since 1970 in a sane range"
    if claims["exp"] - claims["iat"] > max_lifetime:
        return f"lifetime {claims['exp'] - claims['iat']} s is over the {max_lifetime} s allowed"
    return None


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The header and claims, unverified and read leniently, only to choose the key: PyJWT reads the token
    strictly, once, as it verifies it. None when they cannot be read so (PyJWT then says why)."""
    try:
        parts = [orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
                 for segment in token.split(".")[:2]]
    except (ValueError, binascii.Error):  # orjson.JSONDecodeError is a ValueError
        return None
    if len(parts) == 2 and all(isinstance(part, dict) for part in parts):
        return parts[0], parts[1]
    return None


def _read_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        unverified = jwt.decode_complete(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise Refused(f"not a readable JWT ({quote(exc, 120)})") from None
    return unverified["header"], unverified["payload"]


def authenticate() -> None:
    """Authenticate the current request, setting `flask.g.cds_client` (None when authentication is off)."""
    g.cds_client = current_app.extensions["cds_auth"].authenticate(request)
