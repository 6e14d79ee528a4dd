"""The console's calls to a CDS service, made server-side as an EHR makes them: a fresh signed JWT per call
(`aud` the URL called), no redirects followed, bounded answers. The browser never sees a token."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests

from cds.config import Settings
from cds.tools.client import CallFailed, base_url, fetch_json
from cds.tools.signing import Signer

# A CDS service answers within seconds (CRD asks for 5 at most): a console request never waits much longer.
TIMEOUT = (3.0, 10.0)


class TargetRefused(ValueError):
    """The console will not call this URL; the message says why."""


@dataclass(frozen=True)
class Answer:
    url: str
    status: int
    body: Any  # the JSON answer, or the error text
    elapsed_ms: float
    signed: bool

    def as_json(self) -> dict[str, Any]:
        return {"url": self.url, "status": self.status, "body": self.body, "elapsedMs": round(self.elapsed_ms, 1),
                "signed": self.signed}


def target_base(settings: Settings, given: Any, own_base: str) -> str:
    """The CDS base URL to call: any http(s) one in demo mode, else only this service's own."""
    if given is not None and not isinstance(given, str):
        raise TargetRefused("a URL is a string")
    try:
        base = base_url(given or own_base)
    except ValueError as exc:
        raise TargetRefused(str(exc)) from None
    if not settings.demo and base not in {own_base, *settings.public_bases()}:
        raise TargetRefused("outside demo mode the console calls only this service")
    return base


def call(signer: Signer | None, base: str, path: str, body: Any = None, method: str = "POST") -> Answer:
    """One call to `{base}/cds-services{path}` (`path` empty or `/ID...`, ids checked by the caller), signed
    when a signer is given; errors are answers too."""
    url = f"{base}/cds-services{path}"
    headers = {"Accept": "application/json"}
    if signer:
        headers["Authorization"] = f"Bearer {signer.token(audience=url)}"
    started = time.perf_counter()
    try:
        with requests.Session() as session:
            data = fetch_json(session, method, url, headers, body, TIMEOUT)
        status = 200
    except CallFailed as failed:
        status = failed.status or 0
        data = failed.outcome or failed.body or str(failed)
    return Answer(url, status, data, (time.perf_counter() - started) * 1000, signer is not None)
