"""Issue #15, "Must show": the review workspace in a real Chromium (Debian's `chromium`, driven by
Playwright through its executable path; `playwright install` is never run) against a real
`fhir-adapter serve` process on a free loopback port.

A reviewer signs in, finds the pended request at the top of the queue, denies it; the Task and
ClaimResponse change through the FHIR API and the member's notice appears. A wrong password, a
missing CSRF token and an auditor trying to decide are refused. axe-core (vendored in
tests/vendor/, injected only here) reports no serious or critical violation on any page, and
browsing the workspace with JavaScript on raises no Content-Security-Policy violation.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.test_live_server import (  # the fixtures too, for this module's tests
    LiveServer,
    _server_env,
    live,  # noqa: F401
    live_server,  # noqa: F401
)
from tests.factories import example_request

playwright_api = pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.live

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(__file__).parents[1] / "vendor" / "axe.min.js"
PASSWORD = "correct horse battery staple"


def add_staff(env: dict[str, str], workdir: Path, name: str, *options: str) -> None:
    """`fhir-adapter staff add NAME ... --password-stdin`, as an administrator runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "fhir_adapter", "staff", "add", name, *options, "--password-stdin"],
        input=f"{PASSWORD}\n".encode(),
        env=env,
        cwd=workdir,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()


REVIEWER = (
    "--role",
    "reviewer",
    "--credentials",
    "MD, Internal Medicine",
    "--specialty",
    "207R00000X",
)


@pytest.fixture
async def served(
    database_url: str,
    engine: AsyncEngine,
    live_server: LiveServer,  # noqa: F811 (test_live_server's fixture)
    tmp_path: Path,
) -> LiveServer:
    """`fhir-adapter serve` over a migrated, emptied database (`engine` comes first), with a
    reviewer and an auditor added by the CLI as an administrator would (no restart needed)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    env = _server_env(live_server.port, database_url)
    add_staff(env, tmp_path, "alice", *REVIEWER)
    add_staff(env, tmp_path, "bob", "--role", "auditor")
    return live_server


@pytest.fixture
def fhir(served: LiveServer, live: httpx.AsyncClient) -> httpx.AsyncClient:  # noqa: F811
    """The FHIR API of the served process, with a token (test_live_server's `live`)."""
    return live


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


def origin(server: LiveServer) -> str:
    return f"http://127.0.0.1:{server.port}"


async def pend(fhir: httpx.AsyncClient, suffix: str) -> str:
    """Submit the example that the rules cannot settle; returns the pended Task's id."""
    answer = await fhir.post("", json=example_request("review", suffix))
    assert answer.status_code == 200, answer.text
    location = next(
        e["response"]["location"]
        for e in answer.json()["entry"]
        if e["response"]["location"].startswith("Task/")
    )
    task_id = location.split("/")[1]
    task = (await fhir.get(f"/Task/{task_id}")).json()
    assert task["status"] == "on-hold"
    return task_id


async def serious_violations(page: Any) -> list[str]:
    """axe-core's serious and critical violations of the page as it is now."""
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("async () => await axe.run(document)")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def sign_in(page: Any, server: LiveServer, name: str, password: str = PASSWORD) -> None:
    await page.goto(f"{origin(server)}/review")
    await page.get_by_label("Account name").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def test_a_reviewer_decides_a_pended_request_in_the_browser(
    served: LiveServer, fhir: httpx.AsyncClient, browser: Any
) -> None:
    task_id = await pend(fhir, "-browser-1")
    context = await browser.new_context(viewport={"width": 1366, "height": 768})
    page = await context.new_page()
    refused_by_csp: list[str] = []
    page.on(
        "console",
        lambda message: (
            refused_by_csp.append(message.text)
            if "Content Security Policy" in message.text
            else None
        ),
    )

    await sign_in(page, served, "alice", "not the password")
    await page.get_by_role("alert").filter(has_text="Sign-in refused").wait_for()
    await sign_in(page, served, "alice")
    await page.get_by_role("heading", name="Pended requests").wait_for()
    first = page.locator("table.queue tbody tr").first
    assert await first.get_by_role("link").get_attribute("href") == f"/review/requests/{task_id}"
    assert re.search(r"\d+ d \d+ h", await first.inner_text())  # the time left

    await first.get_by_role("link").click()
    await page.get_by_role("heading", name="Rule trail").wait_for()
    deny = page.locator("form", has=page.get_by_role("heading", name="Deny"))
    await deny.get_by_label("Reason").select_option("insufficient-information")
    await deny.get_by_label("In your words").fill("The records do not describe the question.")
    await deny.get_by_role("button", name="Deny").click()
    await page.get_by_text("Status: rejected").wait_for()
    await page.get_by_role("link", name=re.compile("Open the PDF")).first.wait_for()

    task = (await fhir.get(f"/Task/{task_id}")).json()
    assert task["status"] == "rejected"
    response = (
        await fhir.get(
            "/ClaimResponse", params={"identifier": f"urn:trnorg:fhir-adapter|{task_id}"}
        )
    ).json()["entry"][0]["resource"]
    assert response["outcome"] == "complete"
    assert "alice, MD, Internal Medicine" in str(response["extension"])
    notices = (
        await fhir.get("/Communication", params={"subject": task["for"]["reference"]})
    ).json()
    member_notices = [
        e["resource"]
        for e in notices.get("entry", [])
        if e["resource"]["recipient"][0]["reference"] == task["for"]["reference"]
    ]
    assert member_notices, "the member's notice"
    pdf_link = await page.get_by_role("link", name=re.compile("Open the PDF")).first.get_attribute(
        "href"
    )
    pdf = await page.request.get(f"{origin(served)}{pdf_link}")
    assert pdf.headers["content-type"] == "application/pdf"
    assert (await pdf.body()).startswith(b"%PDF")
    await page.get_by_role("link", name="Plan's numbers").click()
    await page.get_by_role("heading", name="Today's timeliness").wait_for()
    assert not refused_by_csp, refused_by_csp
    await context.close()


async def test_missing_csrf_and_an_auditor_are_refused_in_the_browser(
    served: LiveServer, fhir: httpx.AsyncClient, browser: Any
) -> None:
    task_id = await pend(fhir, "-browser-2")
    context = await browser.new_context()
    page = await context.new_page()
    await sign_in(page, served, "alice")
    await page.get_by_role("heading", name="Pended requests").wait_for()
    # the session cookie goes along (same browser context), the CSRF token does not
    forged = await page.request.post(
        f"{origin(served)}/review/requests/{task_id}/decide",
        form={"decision": "denied", "denial_code": "other", "reason": "forged"},
        max_redirects=0,
    )
    assert forged.status == 403
    assert (await fhir.get(f"/Task/{task_id}")).json()["status"] == "on-hold"
    await context.close()

    context = await browser.new_context()
    page = await context.new_page()
    await sign_in(page, served, "bob")
    await page.goto(f"{origin(served)}/review/requests/{task_id}")
    await page.get_by_text("may read this request but not decide").wait_for()
    deny = page.locator("form", has=page.get_by_role("heading", name="Deny"))
    await deny.get_by_label("In your words").fill("An auditor tries.")
    await deny.get_by_role("button", name="Deny").click()
    await page.get_by_role("alert").filter(has_text="may read requests but not decide").wait_for()
    assert (await fhir.get(f"/Task/{task_id}")).json()["status"] == "on-hold"
    await context.close()


async def test_axe_finds_no_serious_violation_on_any_page(
    served: LiveServer, fhir: httpx.AsyncClient, browser: Any
) -> None:
    task_id = await pend(fhir, "-browser-3")
    # axe is injected as an inline script, which the pages' CSP rightly refuses: bypass it here
    context = await browser.new_context(bypass_csp=True, viewport={"width": 1366, "height": 768})
    page = await context.new_page()
    found: dict[str, list[str]] = {}
    await page.goto(f"{origin(served)}/review/sign-in")
    found["sign-in"] = await serious_violations(page)
    await sign_in(page, served, "alice")
    await page.get_by_role("heading", name="Pended requests").wait_for()
    found["queue"] = await serious_violations(page)
    await page.goto(f"{origin(served)}/review/requests/{task_id}")
    found["request"] = await serious_violations(page)
    await page.goto(f"{origin(served)}/review/numbers")
    found["numbers"] = await serious_violations(page)
    await page.goto(f"{origin(served)}/review/requests/{task_id}")
    await page.keyboard.press("Tab")  # the skip link comes first and is visible on focus
    skip = page.get_by_role("link", name="Skip to main content")
    assert await skip.evaluate("e => e === document.activeElement")
    assert await skip.is_visible()
    assert found == {"sign-in": [], "queue": [], "request": [], "numbers": []}
    await context.close()
