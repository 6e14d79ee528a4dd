"""The baseline: a bare Flask endpoint that parses the same JSON body and returns a fixed card.

It runs under the service's own gunicorn configuration (cds.tools.server.GunicornServer, same Settings), so the only
difference the benchmark sees is the work the service does for a request.
`python -m bench.baseline --port 8081`

With `--check-tokens` it first checks the call's JWT as the service does (`cds.auth.Authenticator`: signature,
`iss`, `aud`, `exp`, from the service's CDS_CLIENTS_FILE and CDS_PUBLIC_BASE_URL), without the replay record:
the least any endpoint that CDS Hooks clients may call must do.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import orjson
from flask import Flask, Response, request

from cds.auth import Authenticator, Unauthorized
from cds.config import Settings
from cds.tools.server import GunicornServer

CARD = {
    "cards": [{
        "uuid": "5f1c2a9e-4a5b-4d0e-9a55-2b1f3c7d8e90",
        "summary": "Infrared therapy device: not medically necessary (policy DME101.045)",
        "indicator": "warning",
        "source": {"label": "Baseline payer", "url": "https://payer.example.org/policies/DME101.045"},
        "links": [{"label": "CMS NCD 270.6", "url": "https://www.cms.gov/medicare-coverage-database/",
                   "type": "absolute"}],
    }]
}


class NoReplayRecords:
    """Every jti is new: the token-checking baseline keeps no records."""

    def seen_jti(self, iss: str, jti: str, expires_at: float) -> bool:
        return False


def create_app(authenticator: Authenticator | None = None) -> Flask:
    app = Flask(__name__)

    @app.post("/cds-services/<service_id>")
    def call_service(service_id: str) -> Response:
        if authenticator:
            try:
                authenticator.authenticate(request)
            except Unauthorized:
                return Response(b'{"resourceType": "OperationOutcome"}', status=401, mimetype="application/json")
        orjson.loads(request.get_data())
        return Response(orjson.dumps(CARD), mimetype="application/json")

    @app.get("/health")
    def health() -> Response:
        return Response(orjson.dumps({"status": "ok"}), mimetype="application/json")

    return app


class BaselineServer(GunicornServer):
    """The service's gunicorn configuration, serving the baseline app."""

    def __init__(self, settings: Settings, check_tokens: bool = False):
        self.check_tokens = check_tokens
        super().__init__(settings)

    def load(self) -> Flask:
        return create_app(Authenticator(self.settings, NoReplayRecords()) if self.check_tokens else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--check-tokens", action="store_true", help="check each call's JWT as the service does")
    args = parser.parse_args()
    BaselineServer(replace(Settings.from_env(), host=args.host, port=args.port), args.check_tokens).run()


if __name__ == "__main__":
    main()
