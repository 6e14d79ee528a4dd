"""HTTP to CDS services and FHIR servers for the `cds` scripts: timeouts, bounded answers, clear failures."""

from __future__ import annotations

import json
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import requests

if TYPE_CHECKING:
    from cds.tools.signing import Signer

TIMEOUT = (5, 30)  # seconds to connect, seconds to wait for an answer
MAX_ANSWER_BYTES = 10 * 1024 * 1024


class CallFailed(Exception):
    """A call that gave no usable answer. `outcome` is the OperationOutcome the server sent, if any."""

    def __init__(self, message: str, status: int | None = None, outcome: dict[str, Any] | None = None,
                 body: str = ""):
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.body = body


def base_url(url: str) -> str:
    """An absolute http(s) URL without query or fragment, and without a trailing slash."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"{url!r} is not an absolute http(s) URL without query, such as http://127.0.0.1:8080")
    return url


def split_service_url(url: str) -> tuple[str, str | None]:
    """(base URL, service id) from `{base}`, `{base}/cds-services` or `{base}/cds-services/{id}`."""
    url = base_url(url)
    base, found, rest = url.rpartition("/cds-services")
    if not found:
        return url, None
    service_id = rest.removeprefix("/")
    if rest and (not rest.startswith("/") or "/" in service_id):
        raise ValueError(f"{url!r} is neither a discovery URL (…/cds-services) nor a service (…/cds-services/ID)")
    return base, unquote(service_id) or None


class CdsClient:
    """One CDS service base URL; every call carries a fresh JWT when a signer is given."""

    def __init__(self, base: str, signer: Signer | None = None):
        self.base_url = base_url(base)
        self.signer = signer
        self.session = requests.Session()

    @property
    def discovery_url(self) -> str:
        return f"{self.base_url}/cds-services"

    def service_url(self, service_id: str) -> str:
        return f"{self.discovery_url}/{quote(service_id, safe='')}"

    @cached_property
    def services(self) -> list[dict[str, Any]]:
        """The discovery answer's services (asked once per client)."""
        answer = self._request("GET", self.discovery_url)
        services = answer.get("services") if isinstance(answer, dict) else None
        if not isinstance(services, list):
            raise CallFailed(f"{self.discovery_url} did not answer with a CDS Hooks discovery document "
                             "(no services list)")
        return [service for service in services if isinstance(service, dict)]

    def service_for(self, hook: str, service_id: str | None = None) -> dict[str, Any]:
        """The one discovered service that answers `hook` (and has `service_id`, when given)."""
        matches = [s for s in self.services
                   if s.get("hook") == hook and (service_id is None or s.get("id") == service_id)]
        if len(matches) == 1:
            return matches[0]
        offered = ", ".join(f"{s.get('id')} ({s.get('hook')})" for s in self.services) or "nothing"
        if not matches:
            wanted = f"service {service_id!r} for {hook}" if service_id else f"service for {hook}"
            raise CallFailed(f"{self.discovery_url} offers no {wanted}; it offers {offered}")
        ids = ", ".join(str(s.get("id")) for s in matches)
        raise CallFailed(f"{self.discovery_url} offers several services for {hook} ({ids}); "
                         "name one with the URL …/cds-services/ID")

    def call(self, service_url: str, request: dict[str, Any]) -> dict[str, Any]:
        answer = self._request("POST", service_url, request)
        if not isinstance(answer, dict) or not isinstance(answer.get("cards"), list):
            raise CallFailed(f"{service_url} did not answer with CDS Hooks cards (no cards list)")
        return answer

    def feedback(self, service_url: str, feedback: list[dict[str, Any]]) -> None:
        """CDS Hooks feedback on cards the service at `service_url` gave."""
        self._request("POST", f"{service_url}/feedback", {"feedback": feedback})

    def _request(self, method: str, url: str, body: Any = None) -> Any:
        headers = {"Accept": "application/json"}
        if self.signer:
            headers["Authorization"] = f"Bearer {self.signer.token(audience=url)}"
        return fetch_json(self.session, method, url, headers, body)


class FhirClient:
    """Reads from a FHIR server, with a bearer token when one is given."""

    def __init__(self, base: str, token: str | None = None):
        self.base_url = base_url(base)
        self.session = requests.Session()
        self.headers = {"Accept": "application/fhir+json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def read(self, relative_url: str) -> dict[str, Any]:
        """A resource or search Bundle, e.g. `Patient/123` or `Coverage?patient=123&status=active`."""
        url = f"{self.base_url}/{relative_url.lstrip('/')}"
        data = fetch_json(self.session, "GET", url, self.headers)
        if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
            raise CallFailed(f"{url} did not answer with a FHIR resource")
        return data


def fetch_json(session: requests.Session, method: str, url: str, headers: dict[str, str],
               body: Any = None, timeout: tuple[float, float] = TIMEOUT) -> Any:
    """The JSON a 2xx answer holds; anything else raises CallFailed. Redirects are not followed, so a
    JWT audience or a bearer token never travels to a URL nobody named."""
    try:
        with session.request(method, url, headers=headers, json=body, timeout=timeout, stream=True,
                             allow_redirects=False) as response:
            raw = _read_bounded(response, url)
    except requests.Timeout:
        raise CallFailed(f"{method} {url}: no answer within {timeout[1]:g} seconds") from None
    except requests.ConnectionError:
        raise CallFailed(f"{method} {url}: cannot connect") from None
    except requests.RequestException as exc:
        raise CallFailed(f"{method} {url}: {type(exc).__name__}") from None
    data = _json_or_none(raw)
    if not 200 <= response.status_code < 300:
        outcome = data if isinstance(data, dict) and data.get("resourceType") == "OperationOutcome" else None
        raise CallFailed(f"{url} answered {response.status_code} {response.reason}", response.status_code,
                         outcome, raw.decode("utf-8", "replace"))
    if data is None:
        raise CallFailed(f"{url} answered {response.status_code} but not with JSON")
    return data


def _read_bounded(response: requests.Response, url: str) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise CallFailed(f"{url} answered with more than {MAX_ANSWER_BYTES // (1024 * 1024)} MiB")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None
