"""Real Chromium (Debian's `chromium`) driven by Playwright for Python, and a real `cds serve --demo` for it
to open. Used by the browser tests and by scripts/screenshots.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Playwright

from tests.helpers import free_port, wait_until_up

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
CDS = str(Path(sys.executable).with_name("cds"))
ROOT = Path(__file__).resolve().parent.parent


def launch(playwright: Playwright) -> Browser:
    """Debian's Chromium: Playwright never downloads a browser here."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextmanager
def demo_service(data_dir: Path, **env: str) -> Iterator[str]:
    """`cds serve --demo` on a free loopback port with its store in `data_dir`; yields its base URL."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    environment |= {"CDS_DATA_DIR": str(data_dir), "CDS_PORT": str(port), "CDS_WORKERS": "2", **env}
    process = subprocess.Popen([CDS, "serve", "--demo"], cwd=ROOT, env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", process, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
