"""The container's HEALTHCHECK (`python -m cds.tools.healthcheck`): exit 0 when this host's GET /health answers 200.
With `--ready`, GET /ready instead: the replica can serve calls (policies loaded, store reachable), which is what
a proxy should route on (docker/compose.yaml).

Python rather than curl, which the slim image does not carry.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request

from cds.config import Settings

WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m cds.tools.healthcheck", description=__doc__.split("\n")[0])
    parser.add_argument("--ready", action="store_true", help="check GET /ready instead of GET /health")
    path = "/ready" if parser.parse_args(argv).ready else "/health"
    settings = Settings.from_env()
    host = "127.0.0.1" if settings.host in WILDCARD_HOSTS else settings.host
    url = f"http://{f'[{host}]' if ':' in host else host}:{settings.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:  # HTTPError (e.g. /ready's 503) among them
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
