"""Fetching a trusted client's JWK Set from its registered `jwks_url`, with the guards of FHIR fetches
(cds.member.fetch): https only outside demo mode, only the URL as registered (a redirect is a failed fetch,
never followed), no proxy from the environment, a size cap after decompression and one time budget."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import orjson
import urllib3
from urllib3.exceptions import HTTPError

from cds.member.fetch import Deadline, FetchError, connections, read_bounded
from cds.urls import base_url_problem

JWKS_TIMEOUT_SECONDS = 2.0  # the whole fetch, connecting included, well inside the 4-second worker timeout
JWKS_MAX_BYTES = 64 * 1024  # a JWK Set of a few dozen RSA keys fits
CONNECT_TIMEOUT = 1.0
FETCH_THREADS = 2
SOURCE = "the JWK Set URL"


def jwks_url_problem(url: str, demo: bool) -> str | None:
    """What makes `url` unfit as a client's JWK Set URL, or None: the FHIR base URL rules (absolute https, or
    http in demo mode; no credentials, query or fragment; no dot segments)."""
    return base_url_problem(url, demo)


class JwksFetcher:
    """One per process. Fetches run on a small pool of their own: the calling request thread waits for the
    budget at most, whatever the server does (a server that drips its answer holds a fetch thread, never a
    request thread). `proxy`: the proxy to fetch through (CDS_JWKS_PROXY); none otherwise, whatever the
    environment says."""

    def __init__(self, demo: bool = False, proxy: str = "", budget: float = JWKS_TIMEOUT_SECONDS,
                 max_bytes: int = JWKS_MAX_BYTES):
        self.demo = demo
        self.budget = budget
        self.max_bytes = max_bytes
        self.http = connections(FETCH_THREADS, proxy)
        self.pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="jwks-fetch")

    def start(self, work: Any) -> Future[None]:
        """Run `work()` (which fetches) on the fetch pool."""
        return self.pool.submit(work)

    def fetch(self, url: str, max_bytes: int | None = None) -> Any:
        """The JSON document at `url` (at most `max_bytes`, by default the fetcher's), or FetchError saying why not."""
        problem = jwks_url_problem(url, self.demo)
        if problem:
            raise FetchError(f"{SOURCE} is refused: {problem}", "refused")
        deadline = Deadline.after(self.budget)
        try:
            response = self.http.request(
                "GET", url, headers={"Accept": "application/json", "Accept-Encoding": "gzip, deflate"},
                redirect=False, preload_content=False,
                timeout=urllib3.Timeout(connect=min(CONNECT_TIMEOUT, self.budget), read=self.budget))
            try:
                if 300 <= response.status < 400:
                    raise FetchError(f"{SOURCE} answered a redirect (HTTP {response.status}), which is not "
                                     "followed: register the URL the keys are served at", "redirect")
                if response.status != 200:
                    raise FetchError(f"{SOURCE} answered HTTP {response.status}", f"http-{response.status}")
                body = read_bounded(response, max_bytes or self.max_bytes, deadline, SOURCE, self.budget)
            except BaseException:
                response.close()  # not read to its end: the connection cannot be reused
                raise
            finally:
                response.release_conn()
        except (urllib3.exceptions.TimeoutError, TimeoutError):
            raise FetchError(f"{SOURCE} did not answer within {self.budget:g} s", "timeout") from None
        except (HTTPError, OSError):
            raise FetchError(f"{SOURCE} could not be reached", "connection") from None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise FetchError(f"{SOURCE} sent something other than JSON", "invalid") from None
