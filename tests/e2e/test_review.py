"""Issue #15: the review workspace at /review, in process (the browser tests are in
test_review_browser.py): sign-in, lock-out, CSRF, roles, the queue, a request, deciding through
the `$decide` recorder, the 409 path, the notice PDF, the numbers page and the audit trail."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from fhir_adapter.api.app import create_app
from fhir_adapter.bootstrap import Container
from fhir_adapter.cli import app
from fhir_adapter.review.accounts import Role, StaffAccounts
from tests.e2e.test_operations import decide_params, pended_task
from tests.fakes import FrozenClock
from tests.tokens import bearer
from tests.worker import render_notices

PASSWORD = "correct horse battery staple"
REVIEWER_CREDENTIALS = "MD, Internal Medicine"
PATEL = "http://directory.test/directory/fhir/PractitionerRole/patel-role"


@dataclass
class Workspace:
    http: httpx.AsyncClient  # the browser side: cookies, no token
    fhir: httpx.AsyncClient  # the FHIR API, with a token
    accounts: StaffAccounts
    container: Container


@pytest.fixture
async def ws(container: Container) -> AsyncIterator[Workspace]:
    accounts = StaffAccounts(container.store.engine)  # type: ignore[attr-defined]
    now = container.workflow.clock()
    await accounts.add(
        "alice",
        PASSWORD,
        role=Role.REVIEWER,
        credentials=REVIEWER_CREDENTIALS,
        now=now,
        npi="1972819302",
        specialty="207R00000X",
    )
    await accounts.add("bob", PASSWORD, role=Role.AUDITOR, credentials="", now=now)
    transport = httpx.ASGITransport(app=create_app(container=container))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
        httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver/fhir",
            headers={"content-type": "application/fhir+json", **bearer(container)},
        ) as fhir,
    ):
        yield Workspace(http, fhir, accounts, container)


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no hidden {name} in the page"
    return found.group(1)


async def sign_in(http: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
    form = await http.get("/review/sign-in")
    return await http.post(
        "/review/sign-in",
        data={
            "csrf": hidden(form.text, "csrf"),
            "name": name,
            "password": password,
            "next": "/review",
        },
    )


async def page_csrf(http: httpx.AsyncClient) -> str:
    return hidden((await http.get("/review")).text, "csrf")


async def decide(ws: Workspace, task_id: str, **fields: str) -> httpx.Response:
    """Post the decision form with the signed-in member's CSRF token."""
    return await ws.http.post(
        f"/review/requests/{task_id}/decide", data={"csrf": await page_csrf(ws.http), **fields}
    )


async def test_pages_need_a_signed_in_staff_member(ws: Workspace) -> None:
    for path in ("/review", "/review/numbers", "/review/requests/abc", "/review/notices/x.pdf"):
        answer = await ws.http.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/review/sign-in?next=")
    # a bearer token of the FHIR API is not a staff session
    answer = await ws.http.get("/review", headers=bearer(ws.container))
    assert answer.status_code == 303


async def test_sign_in_sets_a_strict_session_cookie_and_the_page_a_strict_csp(
    ws: Workspace,
) -> None:
    answer = await sign_in(ws.http, "alice")
    assert answer.status_code == 303 and answer.headers["location"] == "/review"
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("review_session=")
    )
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/review" in cookie
    assert "Secure" not in cookie  # plain http here; `https` requests get Secure
    queue = await ws.http.get("/review")
    assert queue.status_code == 200
    csp = queue.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe" not in csp
    assert "frame-ancestors 'none'" in csp
    assert "<script>" not in queue.text and " style=" not in queue.text  # nothing inline
    assert queue.headers["cache-control"] == "no-store"


async def test_a_wrong_password_is_refused_and_five_lock_the_account(
    ws: Workspace, clock: FrozenClock
) -> None:
    wrong = await sign_in(ws.http, "alice", "not the password")
    assert wrong.status_code == 401
    assert "Sign-in refused" in wrong.text and "after repeated failures" not in wrong.text
    assert "review_session" not in wrong.headers.get("set-cookie", "")
    unknown = await sign_in(ws.http, "nobody")
    assert unknown.status_code == 401  # the same answer: names cannot be probed
    for _ in range(4):
        assert (await sign_in(ws.http, "alice", "still wrong")).status_code == 401
    locked = await sign_in(ws.http, "alice")  # the right password, but locked now
    assert locked.status_code == 401 and "after repeated failures" in locked.text
    clock.advance(minutes=16)
    assert (await sign_in(ws.http, "alice")).status_code == 303


async def test_sign_in_without_its_csrf_token_is_refused(ws: Workspace) -> None:
    await ws.http.get("/review/sign-in")
    answer = await ws.http.post(
        "/review/sign-in", data={"name": "alice", "password": PASSWORD, "next": "/review"}
    )
    assert answer.status_code == 403
    assert (await ws.http.get("/review")).status_code == 303  # not signed in


async def test_the_queue_shows_the_pended_request_with_its_time_left(ws: Workspace) -> None:
    task = await pended_task(ws.fhir)
    await sign_in(ws.http, "alice")
    page = (await ws.http.get("/review")).text
    assert f"/review/requests/{task['id']}" in page
    assert "1 waiting for a decision" in page
    assert "Member Example" in page
    assert re.search(r"\d+ d \d+ h", page)  # time left to the deadline
    assert "names none of the five listed reasons" in page
    filtered = (await ws.http.get("/review", params={"expedited": "yes"})).text
    assert f"/review/requests/{task['id']}" not in filtered
    assert "No pended request matches" in filtered


async def test_a_request_past_the_warning_share_is_marked(
    ws: Workspace, clock: FrozenClock
) -> None:
    await pended_task(ws.fhir)
    await sign_in(ws.http, "alice")
    assert 'class="tag warn"' not in (await ws.http.get("/review")).text
    period = (await ws.fhir.get("/Task", params={"status": "on-hold"})).json()["entry"][0][
        "resource"
    ]["restriction"]["period"]
    start, end = (datetime.fromisoformat(period[k]) for k in ("start", "end"))
    clock.now = start + (end - start) * 0.8
    await sign_in(ws.http, "alice")  # the session is still good; sign in again anyway
    page = (await ws.http.get("/review")).text
    assert '<tr class="warned">' in page and 'class="tag warn">Due soon' in page
    assert "1 past 75% of the time allowed" in page


async def test_the_request_page_shows_what_a_reviewer_needs_and_no_more(ws: Workspace) -> None:
    task = await pended_task(ws.fhir)
    await sign_in(ws.http, "alice")
    page = (await ws.http.get(f"/review/requests/{task['id']}")).text
    assert "Member Example" in page and "M1006" in page
    patient = (await ws.fhir.get("/Patient", params={"identifier": "M1006"})).json()
    birth = patient["entry"][0]["resource"].get("birthDate")
    assert birth and birth not in page  # minimum necessary: no birth date
    assert "Condition in question" in page
    # the rule trail, each rule with its legal basis
    assert re.search(r"reason_is_listed</th><td>pending-review</td><td>Policy II A-E", page)
    assert "History of the request" in page and "on-hold" in page
    # the directory's candidates, with how to reach them
    assert re.search(
        r"<th scope=\"row\">Dr\. [A-Z][a-z]+ [A-Z][a-z]+</th><td>In network</td>", page
    )
    assert "phone" in page
    assert 'name="csrf"' in page


async def test_a_reviewer_denies_through_the_decide_recorder(ws: Workspace) -> None:
    task = await pended_task(ws.fhir)
    await sign_in(ws.http, "alice")
    answer = await decide(
        ws,
        task["id"],
        decision="denied",
        denial_code="insufficient-information",
        reason="The records sent do not describe the condition in question.",
    )
    assert answer.status_code == 303, answer.text
    stored = (await ws.fhir.get(f"/Task/{task['id']}")).json()
    assert stored["status"] == "rejected"
    response = (
        await ws.fhir.get(
            "/ClaimResponse", params={"identifier": f"urn:trnorg:fhir-adapter|{task['id']}"}
        )
    ).json()["entry"][0]["resource"]
    reviewer = next(e for e in response["extension"] if e["url"].endswith("claimResponseReviewer"))
    who = next(p for p in reviewer["extension"] if p["url"] == "reviewer")["valueReference"]
    assert who["display"] == f"alice, {REVIEWER_CREDENTIALS}"
    notes = " ".join(n["text"] for n in response["processNote"])
    assert "do not describe the condition" in notes and "does not allow a decision" in notes
    await render_notices(ws.container)
    page = (await ws.http.get(f"/review/requests/{task['id']}")).text
    assert "Open the PDF" in page
    pdf_path = re.search(r'href="(/review/notices/[^"]+\.pdf)"', page)
    assert pdf_path
    pdf = await ws.http.get(pdf_path.group(1))
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")


async def test_an_out_of_network_approval_carries_the_period_the_reviewer_set(
    ws: Workspace,
) -> None:
    task = await pended_task(ws.fhir)
    await sign_in(ws.http, "alice")
    answer = await decide(
        ws,
        task["id"],
        decision="approved-out-of-network",
        provider_other=PATEL,
        authorized_until="2027-02-28",
    )
    assert answer.status_code == 303, answer.text
    response = (
        await ws.fhir.get(
            "/ClaimResponse", params={"identifier": f"urn:trnorg:fhir-adapter|{task['id']}"}
        )
    ).json()["entry"][0]["resource"]
    assert response["preAuthPeriod"]["end"].startswith("2027-02-28")


async def test_a_decision_without_the_csrf_token_is_refused(ws: Workspace) -> None:
    task = await pended_task(ws.fhir)
    await sign_in(ws.http, "alice")
    answer = await ws.http.post(
        f"/review/requests/{task['id']}/decide",
        data={"decision": "denied", "denial_code": "other", "reason": "no"},
    )
    assert answer.status_code == 403
    assert (await ws.fhir.get(f"/Task/{task['id']}")).json()["status"] == "on-hold"


async def test_an_auditor_reads_but_cannot_decide(ws: Workspace) -> None:
    task = await pended_task(ws.fhir)
    await sign_in(ws.http, "bob")
    page = await ws.http.get(f"/review/requests/{task['id']}")
    assert page.status_code == 200 and "may read this request but not decide" in page.text
    answer = await decide(ws, task["id"], decision="denied", denial_code="other", reason="no")
    assert answer.status_code == 403 and "auditor" in answer.text
    assert (await ws.fhir.get(f"/Task/{task['id']}")).json()["status"] == "on-hold"


async def test_a_request_decided_elsewhere_meanwhile_is_not_decided_twice(ws: Workspace) -> None:
    task = await pended_task(ws.fhir)
    await sign_in(ws.http, "alice")
    csrf = await page_csrf(ws.http)
    by_api = await ws.fhir.post(
        f"/Task/{task['id']}/$decide",
        json=decide_params(
            "approved-in-network", provider={"valueReference": {"reference": PATEL}}
        ),
    )
    assert by_api.status_code == 200, by_api.text
    answer = await ws.http.post(
        f"/review/requests/{task['id']}/decide",
        data={"csrf": csrf, "decision": "denied", "denial_code": "other", "reason": "late"},
    )
    assert answer.status_code == 409
    assert "decided elsewhere meanwhile" in answer.text
    assert (await ws.fhir.get(f"/Task/{task['id']}")).json()["status"] == "accepted"


async def test_an_incomplete_decision_says_what_is_missing(ws: Workspace) -> None:
    task = await pended_task(ws.fhir)
    await sign_in(ws.http, "alice")
    answer = await ws.http.post(
        f"/review/requests/{task['id']}/decide",
        data={"csrf": await page_csrf(ws.http), "decision": "approved-in-network"},
    )
    assert answer.status_code == 422 and "pick one" in answer.text


async def test_the_numbers_page_shows_the_metrics_and_todays_timeliness(ws: Workspace) -> None:
    await pended_task(ws.fhir)
    await sign_in(ws.http, "bob")
    page = await ws.http.get("/review/numbers", params={"start": "2026-11-01", "end": "2026-11-30"})
    assert page.status_code == 200
    assert "Today's timeliness" in page.text and "CMS-0057-F" in page.text
    assert "<svg" in page.text and "Undecided and past the deadline" in page.text
    bad = await ws.http.get("/review/numbers", params={"start": "2026-11-30", "end": "2026-11-01"})
    assert bad.status_code == 422


async def test_sign_out_and_disable_end_the_session(ws: Workspace) -> None:
    await sign_in(ws.http, "alice")
    await ws.http.post("/review/sign-out", data={"csrf": await page_csrf(ws.http)})
    assert (await ws.http.get("/review")).status_code == 303
    await sign_in(ws.http, "alice")
    assert await ws.accounts.disable("alice")
    assert (await ws.http.get("/review")).status_code == 303
    assert (await sign_in(ws.http, "alice")).status_code == 401


async def test_views_and_decisions_are_audited_with_the_staff_member_as_agent(
    ws: Workspace,
) -> None:
    task = await pended_task(ws.fhir)
    await sign_in(ws.http, "alice")
    await ws.http.get(f"/review/requests/{task['id']}")
    await decide(
        ws, task["id"], decision="denied", denial_code="other", reason="Reviewed; not needed."
    )
    await ws.container.audit.flush()
    events = (await ws.fhir.get("/AuditEvent", params={"altid": "alice", "_count": "100"})).json()
    found = [e["resource"] for e in events.get("entry", [])]
    actions = {e["outcomeDesc"].split(",")[0] for e in found}
    assert {
        "review workspace: sign-in",
        "review workspace: view-request",
        "review workspace: decide",
    } <= actions
    decision = next(e for e in found if "decide" in e["outcomeDesc"])
    assert decision["entity"][0]["what"]["reference"] == f"Task/{task['id']}"
    assert decision["agent"][0]["who"]["identifier"]["value"] == "alice"
    text = str(found)
    assert "Member Example" not in text and "Reviewed; not needed" not in text  # no PHI


async def test_a_decision_without_a_session_goes_to_sign_in_and_changes_nothing(
    ws: Workspace,
) -> None:
    task = await pended_task(ws.fhir)
    answer = await ws.http.post(
        f"/review/requests/{task['id']}/decide",
        data={"decision": "denied", "denial_code": "other", "reason": "no"},
    )
    assert answer.status_code == 303 and "/review/sign-in" in answer.headers["location"]
    assert (await ws.fhir.get(f"/Task/{task['id']}")).json()["status"] == "on-hold"


async def test_sign_in_never_redirects_off_the_workspace(ws: Workspace) -> None:
    form = await ws.http.get("/review/sign-in", params={"next": "https://evil.example/x"})
    assert 'name="next" value="/review"' in form.text
    answer = await ws.http.post(
        "/review/sign-in",
        data={
            "csrf": hidden(form.text, "csrf"),
            "name": "alice",
            "password": PASSWORD,
            "next": "//evil.example/x",
        },
    )
    assert answer.headers["location"] == "/review"


def test_the_staff_commands_add_list_and_disable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FHIR_ADAPTER_DATABASE_URL", f"sqlite:///{tmp_path / 'staff.db'}")
    runner = CliRunner()
    base = ["staff", "add", "dr.lee", "--role", "reviewer", "--password-stdin"]
    missing = runner.invoke(app, base, input=f"{PASSWORD}\n")
    assert missing.exit_code == 2 and "--credentials and --specialty" in missing.output
    full = [*base, "--credentials", "MD", "--specialty", "207R00000X"]
    short = runner.invoke(app, full, input="short\n")
    assert short.exit_code == 2 and "12 characters" in short.output
    added = runner.invoke(app, full, input=f"{PASSWORD}\n")
    assert added.exit_code == 0, added.output
    again = runner.invoke(app, full, input=f"{PASSWORD}\n")
    assert again.exit_code == 2 and "exists already" in again.output
    wrong_role = runner.invoke(app, ["staff", "add", "x", "--role", "admin", "--password-stdin"])
    assert wrong_role.exit_code == 2
    listed = runner.invoke(app, ["staff", "list"])
    assert "dr.lee  reviewer  MD" in listed.output and PASSWORD not in listed.output
    assert runner.invoke(app, ["staff", "disable", "dr.lee"]).exit_code == 0
    assert "disabled" in runner.invoke(app, ["staff", "list"]).output
    assert runner.invoke(app, ["staff", "disable", "nobody"]).exit_code == 2


async def test_over_https_the_session_cookie_is_secure(ws: Workspace) -> None:
    transport = httpx.ASGITransport(app=create_app(container=ws.container))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as https:
        answer = await sign_in(https, "alice")
    assert answer.status_code == 303
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("review_session=")
    )
    assert "Secure" in cookie and "HttpOnly" in cookie
