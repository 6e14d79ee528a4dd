"""GET FHIR data from an EHR's FHIR server: allow-listed, within one time budget per call, bounded in size, never
redirected to another host. A failure comes back as a FetchError whose message says why in plain words, without
a token, a URL or patient data, so it can be shown to a clinician and logged."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import certifi
import orjson
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError

from cds.urls import fhir_server_refusal, url_location

if TYPE_CHECKING:
    from cds.config import Settings

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
CONNECT_TIMEOUT = 1.0  # a server that cannot accept a connection within a second is down as far as an EHR call goes
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ACCEPT_ENCODING = "gzip, deflate"  # bodies are bounded after decompression (`read_bounded`)
CHUNK = 64 * 1024


class FetchError(Exception):
    """Data could not be fetched; the message says why, `reason` in one fixed word (for metrics)."""

    def __init__(self, message: str, reason: str = "error"):
        super().__init__(message)
        self.reason = reason


# -------------------------------------------------------------------------------------------------- fetching


@dataclass(frozen=True)
class Deadline:
    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()


@dataclass(frozen=True)
class Fetched:
    """A resource as fetched; for a search, a Bundle holding the entries of every page read."""

    resource: dict[str, Any]
    incomplete: str | None = None  # why search results may lack entries


@dataclass(frozen=True)
class _Call:
    """What every request of one hook call shares: where, with which token, until when."""

    fhir_server: str
    token: str | None
    deadline: Deadline
    allowed: tuple[str, ...]
    demo: bool

    def refusal(self, url: str) -> str | None:
        """Why a next-page link or a redirect target may not be followed, or None."""
        if url_location(url)[:3] != url_location(self.fhir_server)[:3]:
            return "it is on another host than the FHIR server"
        return fhir_server_refusal(urlsplit(url)._replace(query="", fragment="").geturl(), self.allowed, self.demo)


class FhirFetcher:
    """One per process: pooled HTTP connections and a small thread pool, shared by every hook call."""

    def __init__(self, settings: Settings):
        self.allowed = settings.fhir_servers
        self.demo = settings.demo
        self.budget = settings.fetch_budget_seconds
        self.max_bytes = settings.fetch_max_bytes
        self.max_pages = settings.fetch_max_pages
        workers = max(4, settings.threads * 3)  # every request thread can fetch its three prefetch keys at once
        self.http = connections(workers)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="fhir-fetch")

    def fetch_all(
        self,
        fhir_server: str,
        token: str | None,
        wanted: Mapping[str, str | dict[str, Any]],
        deadline: Deadline | None = None,
        allowed: Iterable[str] | None = None,
    ) -> dict[str, Fetched | FetchError]:
        """Fetch each wanted item concurrently: a relative path to GET from `fhir_server`, or a search Bundle
        already in hand whose further pages to read. Answers by the deadline (one budget for the whole call)
        whatever the servers do; `allowed` overrides the configured allow-list (e.g. per client)."""
        deadline = deadline or Deadline.after(self.budget)
        allowed = tuple(self.allowed if allowed is None else allowed)
        refusal = fhir_server_refusal(fhir_server, allowed, self.demo)
        if refusal:
            refused: dict[str, Fetched | FetchError] = {key: FetchError(refusal, "refused") for key in wanted}
            _count(wanted, refused)
            return refused
        call = _Call(fhir_server, token, deadline, allowed, self.demo)
        futures = {key: self.pool.submit(self._fetch, call, item) for key, item in wanted.items()}
        wait(futures.values(), timeout=max(0.0, deadline.remaining()))
        results: dict[str, Fetched | FetchError] = {}
        for key, future in futures.items():
            if not future.done():
                future.cancel()
                results[key] = FetchError(f"the FHIR server did not answer within {self.budget:g} s", "timeout")
            elif isinstance(future.exception(), FetchError):
                results[key] = future.exception()  # type: ignore[assignment]
            elif future.exception() is not None:
                log.error("fetching %s failed unexpectedly", key, exc_info=future.exception())
                results[key] = FetchError("fetching from the FHIR server failed unexpectedly", "error")
            else:
                results[key] = future.result()
        _count(wanted, results)
        return results

    def _fetch(self, call: _Call, item: str | dict[str, Any]) -> Fetched:
        first = self._get_json(call, f"{call.fhir_server}/{item}") if isinstance(item, str) else item
        return self._with_all_pages(call, first)

    def _with_all_pages(self, call: _Call, bundle: dict[str, Any]) -> Fetched:
        if bundle.get("resourceType") != "Bundle":
            return Fetched(bundle)
        entries = list(_entries(bundle))
        page, incomplete = bundle, None
        for pages_read in range(1, self.max_pages + 1):
            next_url = next_link(page)
            if not next_url:
                break
            next_url = urljoin(call.fhir_server + "/", next_url)
            refusal = call.refusal(next_url)
            if pages_read == self.max_pages or refusal:
                incomplete = (f"the next page of results was not read because {refusal}" if refusal else
                              f"only the first {self.max_pages} pages of results were read")
                break
            try:
                page = self._get_json(call, next_url)
            except FetchError as exc:
                incomplete = f"a further page of results could not be read: {exc}"
                break
            if page.get("resourceType") != "Bundle":
                incomplete = "a further page of results was not a Bundle"
                break
            entries.extend(_entries(page))
        merged = {key: value for key, value in bundle.items() if key != "link"}
        return Fetched({**merged, "entry": entries}, incomplete)

    def _get_json(self, call: _Call, url: str) -> dict[str, Any]:
        headers = {"Accept": FHIR_JSON, "Accept-Encoding": ACCEPT_ENCODING}
        if call.token:
            headers["Authorization"] = f"Bearer {call.token}"
        for _ in range(MAX_REDIRECTS + 1):
            remaining = call.deadline.remaining()
            if remaining <= 0:
                raise FetchError(f"the FHIR server did not answer within {self.budget:g} s", "timeout")
            try:
                response = self.http.request(
                    "GET", url, headers=headers, redirect=False, preload_content=False,
                    timeout=urllib3.Timeout(connect=min(CONNECT_TIMEOUT, remaining), read=remaining))
                try:
                    if response.status in REDIRECT_STATUSES and "location" in response.headers:
                        response.close()  # its body is not read: the connection cannot be reused
                        url = urljoin(url, response.headers["location"])
                        refusal = call.refusal(url)
                        if refusal:
                            raise FetchError(f"the FHIR server redirected elsewhere, not followed because {refusal}",
                                             "redirect")
                        continue
                    _check_status(response.status, bool(call.token))
                    body = read_bounded(response, self.max_bytes, call.deadline, "the FHIR server", self.budget)
                except BaseException:
                    response.close()
                    raise
                finally:
                    response.release_conn()  # back to the pool: kept alive when read to the end, else replaced
            except NewConnectionError:  # urllib3 files it under connect timeouts: the server refused or is unknown
                raise FetchError("the FHIR server could not be reached", "connection") from None
            except (urllib3.exceptions.TimeoutError, TimeoutError):
                raise FetchError(f"the FHIR server did not answer within {self.budget:g} s", "timeout") from None
            except (HTTPError, OSError):
                raise FetchError("the FHIR server could not be reached", "connection") from None
            return _fhir_json(body)
        raise FetchError("the FHIR server redirected too many times", "redirect")


def read_bounded(response: urllib3.BaseHTTPResponse, max_bytes: int, deadline: Deadline, source: str,
                 budget: float) -> bytes:
    """The body, decoded, refused above max_bytes (a compressed body is bounded as it is decompressed, piece
    by piece); read piece by piece so a slow drip cannot outlast the deadline. `source` names the sender
    and `budget` the time it had, for the FetchError."""
    too_large = FetchError(f"{source} sent more than {max_bytes} bytes", "too-large")
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    while chunk := response.read1(CHUNK, decode_content=True):
        body += chunk
        if len(body) > max_bytes:
            raise too_large
        if deadline.remaining() <= 0:
            raise FetchError(f"{source} did not answer within {budget:g} s", "timeout")
    return bytes(body)


def _count(wanted: Mapping[str, str | dict[str, Any]], results: Mapping[str, Fetched | FetchError]) -> None:
    from cds import metrics  # imported late: gunicorn sets up multiprocess metrics before workers import it

    for key, result in results.items():
        item = wanted[key]
        resource = item.split("?")[0].split("/")[0] if isinstance(item, str) else "Bundle"
        metrics.fallback_fetch(resource)
        if isinstance(result, FetchError):
            metrics.fallback_fetch_failed(resource, result.reason)


def connections(pool_size: int, proxy: str = "") -> urllib3.PoolManager:
    """urllib3 itself, without the requests layer (which cost 140 µs of CPU a GET, three GETs a call). It reads
    no proxy or netrc from the environment and keeps no cookie, so an EHR's token and its data go only where
    this service sends them and nothing of one patient's call is kept for the next. TLS is verified against
    the public CA bundle (certifi). No retries: the call's time budget decides. `proxy`: through that proxy,
    only when a setting names one."""
    if proxy:
        return urllib3.ProxyManager(proxy, num_pools=16, maxsize=pool_size, ca_certs=certifi.where(), retries=False)
    return urllib3.PoolManager(num_pools=16, maxsize=pool_size, ca_certs=certifi.where(), retries=False)


def _check_status(status: int, token_sent: bool) -> None:
    if 200 <= status < 300:
        return
    if status in (401, 403):
        if token_sent:
            raise FetchError(f"the FHIR server refused the access token (HTTP {status})", f"http-{status}")
        raise FetchError(f"the FHIR server requires authorization and the request carried none (HTTP {status})",
                         f"http-{status}")
    raise FetchError(f"the FHIR server answered HTTP {status}", f"http-{status}")


def _fhir_json(body: bytes) -> dict[str, Any]:
    try:
        resource = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise FetchError("the FHIR server sent something other than JSON", "invalid") from None
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise FetchError("the FHIR server sent JSON that is not a FHIR resource", "invalid")
    if resource["resourceType"] == "OperationOutcome":
        raise FetchError("the FHIR server answered with an error (OperationOutcome)", "invalid")
    return resource


def _entries(bundle: dict[str, Any]) -> list[Any]:
    entries = bundle.get("entry")
    return entries if isinstance(entries, list) else []


def next_link(bundle: dict[str, Any]) -> str | None:
    links = bundle.get("link")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None
