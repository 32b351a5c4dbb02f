"""Screenshots of the review workspace for docs/review/: `python -m tests.review_screenshots
docs/review`. Starts `fhir-adapter serve` on a free loopback port over a temporary SQLite
database, adds a reviewer, submits a few requests the rules pend, and photographs the queue, a
request and the numbers page in Debian's chromium at a laptop's 1366x768."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import async_playwright

from tests.e2e.test_live_server import _server_env, _wait_until_up, free_port, start_server
from tests.e2e.test_review_browser import CHROMIUM, CHROMIUM_ARGS, PASSWORD, REVIEWER, add_staff
from tests.factories import example_request
from tests.tokens import live_token

DECIDED_BY_RULE = ("in-network-specialist-care", "out-of-network", "denied", "expedited")
MEMBERS = (("Rivera", "Ana", "routine"), ("Nguyen", "Bao", "urgent"), ("Okonkwo", "Ada", "routine"))


def _request(family: str, given: str, priority: str, suffix: str) -> dict[str, Any]:
    bundle = example_request("review", suffix)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource["name"] = [{"family": family, "given": [given]}]
        if resource["resourceType"] in ("ServiceRequest", "Task"):
            resource["priority"] = priority
    return bundle


async def take(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        database_url = f"sqlite+aiosqlite:///{workdir / 'screens.db'}"
        port = free_port()
        env = _server_env(port, database_url)
        add_staff(env, workdir, "dr.lee", *REVIEWER)
        server = start_server(port, env, workdir)
        try:
            await _wait_until_up(server)
            origin = f"http://127.0.0.1:{port}"
            token = await live_token(database_url, origin)
            async with httpx.AsyncClient(
                base_url=server.base_url,
                headers={
                    "content-type": "application/fhir+json",
                    "authorization": f"Bearer {token}",
                },
                timeout=30.0,
            ) as fhir:
                for i, (family, given, priority) in enumerate(MEMBERS):
                    answer = await fhir.post(
                        "", json=_request(family, given, priority, f"-shot{i}")
                    )
                    answer.raise_for_status()
                for example in DECIDED_BY_RULE:  # something for the numbers page to count
                    answer = await fhir.post("", json=example_request(example, "-shot"))
                    answer.raise_for_status()
            return await _photograph(origin, out)
        finally:
            server.stop()


async def _photograph(origin: str, out: Path) -> list[Path]:
    shots = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1366, "height": 768})
        await page.goto(f"{origin}/review")
        await page.get_by_label("Account name").fill("dr.lee")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("heading", name="Pended requests").wait_for()
        shots.append(out / "queue.png")
        await page.screenshot(path=shots[-1], full_page=True)
        await page.locator("table.queue tbody tr").first.get_by_role("link").click()
        await page.get_by_role("heading", name="Rule trail").wait_for()
        shots.append(out / "request.png")
        await page.screenshot(path=shots[-1], full_page=True)
        await page.get_by_role("link", name="Plan's numbers").click()
        await page.get_by_role("heading", name="Today's timeliness").wait_for()
        shots.append(out / "numbers.png")
        await page.screenshot(path=shots[-1], full_page=True)
        await browser.close()
    return shots


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/review")
    for shot in asyncio.run(take(out)):
        sys.stdout.write(f"{shot}\n")


if __name__ == "__main__":
    main()
