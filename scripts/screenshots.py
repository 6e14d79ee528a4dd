"""The console screenshots in docs/, made in the same Chromium the browser tests use.

    .venv/bin/python scripts/screenshots.py [--url http://127.0.0.1:8080] [--out docs]

Without --url it starts `cds serve --demo` (with the examples' plan directory) on a free loopback port and a
throwaway store. Either way it sends orders through the console, gives feedback, and photographs the pages.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

from tests.browser import demo_service, launch  # noqa: E402

VIEWPORT = {"width": 1400, "height": 1000}


def send(page: Page, scenario: str, code: str) -> None:
    page.select_option("#scenario", scenario)
    page.locator("#orders .o-choice").last.select_option(label=code)
    page.click("#send")
    expect(page.locator("#status")).to_contain_text("200 from")


def take(base: str, out: Path) -> list[Path]:
    """Send orders for a few members, give feedback, and save the order, insights and policies pages."""
    out.mkdir(parents=True, exist_ok=True)
    shots = [out / "console-insights.png", out / "console-policies.png", out / "console-order.png"]
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_context(viewport=VIEWPORT).new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{base}/console/")
        expect(page.locator("#discovery-status")).to_contain_text("service(s)")
        send(page, "medicare-advantage-il", "E0221 Infrared heating pad system")
        page.locator(".card button.suggestion").first.click()
        expect(page.locator(".card .feedback-status").first).to_contain_text("feedback sent")
        page.click("#add-order")
        send(page, "commercial-ok-hmo-ulcer", "A4639 Replacement pad for infrared heating pad system, each")
        page.locator(".card .override-reason").first.select_option(index=0)
        page.locator(".card button.override").first.click()
        expect(page.locator(".card .feedback-status").first).to_contain_text("feedback sent")
        page.goto(f"{base}/console/insights")
        page.screenshot(path=shots[0], full_page=True)
        page.goto(f"{base}/console/policies")
        page.screenshot(path=shots[1])
        page.goto(f"{base}/console/")
        expect(page.locator("#discovery-status")).to_contain_text("service(s)")
        send(page, "commercial-tx-ppo", "E0221 Infrared heating pad system")
        page.screenshot(path=shots[2], full_page=True)
        browser.close()
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service in demo mode (default: start one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where to write the PNG files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        started = demo_service(Path(data), CDS_PLAN_DIRECTORY=str(ROOT / "cds/data/example-plan-directory.yaml"))
        with nullcontext(args.url.rstrip("/")) if args.url else started as base:
            for shot in take(base, args.out):
                print(shot)


if __name__ == "__main__":
    main()
