"""The container's HEALTHCHECK (`python -m cds.tools.healthcheck`): exit 0 when this host's GET /health answers 200.

Python rather than curl, which the slim image does not carry.
"""

from __future__ import annotations

import sys
import urllib.request

from cds.config import Settings

WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def main() -> int:
    settings = Settings.from_env()
    host = "127.0.0.1" if settings.host in WILDCARD_HOSTS else settings.host
    url = f"http://{f'[{host}]' if ':' in host else host}:{settings.port}/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
