"""Which URLs the service may call out to: the rules shared by settings, member-data fetches and key fetches."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit


def base_url_problem(url: str, demo: bool) -> str | None:
    """What makes `url` unfit as a FHIR base URL to fetch from, or None."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        return "its port is not valid"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "it is not an absolute http(s) URL"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "it must not carry credentials, a query or a fragment"
    if any(segment in (".", "..") for segment in unquote(parts.path).split("/")):
        return "its path must not contain . or .. segments"
    if parts.scheme == "http" and not demo:
        return "http is allowed only in demo mode; use https"
    return None


def fhir_server_refusal(url: str, allowed: Iterable[str], demo: bool) -> str | None:
    """Why data may not be fetched from `url`, or None when it may. It must lie under one of the `allowed` base
    URLs (same scheme, host and port; the same path or one below it) or, in demo mode, be on loopback."""
    problem = base_url_problem(url, demo)
    if problem:
        return f"the FHIR server address is refused: {problem}"
    if demo and is_loopback(urlsplit(url).hostname or ""):
        return None
    target = url_location(url)
    if any(_under(target, url_location(base)) for base in allowed if not base_url_problem(base, demo)):
        return None
    return "the FHIR server is not on this service's allow-list (CDS_FHIR_SERVERS)"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_location(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a malformed port matches no well-formed URL
        port = -1
    return parts.scheme.lower(), (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def _under(target: tuple[str, str, int | None, str], base: tuple[str, str, int | None, str]) -> bool:
    path, base_path = target[3], base[3]
    return target[:3] == base[:3] and (path == base_path or path.startswith(base_path + "/"))
