"""Consultation reports close the loop: the Task completes and the report reaches the PCP's own
FHIR endpoint exactly once, and the member, through the transactional outbox."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pypdf
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.api.app import create_app
from fhir_adapter.bootstrap import Container, build_container
from fhir_adapter.config import Settings
from fhir_adapter.delivery.http import HttpDeliverer
from fhir_adapter.directory.client import DirectoryClient
from fhir_adapter.ports.store import RENDER
from fhir_adapter.store.sql import SqlResourceStore
from tests.conftest import BASE_URL, DIRECTORY_BASE, count_rows
from tests.factories import example_request
from tests.fakes import FrozenClock, SwitchableTransport
from tests.receiver import Receiver
from tests.tokens import bearer
from tests.worker import render_notices


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def ehr_transport(receiver: Receiver) -> SwitchableTransport:
    return SwitchableTransport(httpx.ASGITransport(app=receiver.app))


@pytest.fixture
async def loop_container(
    settings: Settings,
    engine: AsyncEngine,
    directory_app: FastAPI,
    ehr_transport: SwitchableTransport,
    clock: FrozenClock,
) -> AsyncIterator[Container]:
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=directory_app), base_url="http://directory.test"
        ) as dir_http,
        httpx.AsyncClient(transport=ehr_transport) as ehr_http,
    ):
        directory = DirectoryClient(
            dir_http, DIRECTORY_BASE, network="Organization/medi-cal-network", backoff_seconds=0.001
        )
        settings = settings.model_copy(update={"delivery_max_attempts": 6})
        yield await build_container(
            settings,
            store=SqlResourceStore(engine, base_url=settings.fhir_base_url),
            directory=directory,
            deliverer=HttpDeliverer(ehr_http),
            clock=clock,
        )


@pytest.fixture
async def api(loop_container: Container) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(container=loop_container)),
        base_url=BASE_URL,
        headers=bearer(loop_container),
    ) as client:
        yield client


async def approved_request(
    api: httpx.AsyncClient, suffix: str, name: str = "in-network-specialist-care"
) -> dict[str, str]:
    answer = (await api.post("", json=example_request(name, suffix))).json()
    keys = {
        e["response"]["location"].split("/")[0]: e["response"]["location"].split("/_history")[0]
        for e in answer["entry"]
    }
    return keys


def member_pdf_text(communication: dict[str, Any]) -> str:
    """The text of the PDF letter a Communication carries."""
    pdf = next(
        p["contentAttachment"]["data"]
        for p in communication["payload"]
        if p.get("contentAttachment", {}).get("contentType") == "application/pdf"
    )
    reader = pypdf.PdfReader(io.BytesIO(base64.b64decode(pdf)))
    return " ".join(" ".join((page.extract_text() or "").split()) for page in reader.pages)


def report(request_key: str, patient_key: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}]
        },
        "subject": {"reference": patient_key},
        "basedOn": [{"reference": request_key}],
        "conclusion": "Agree with the recommended procedure.",
        **extra,
    }


def report_with_proposal(keys: dict[str, str]) -> dict[str, Any]:
    """A transaction: the Consultation Report and the procedure it recommends."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:4e1b2a3c-0000-4000-8000-000000000002",
                "resource": report(keys["ServiceRequest"], keys["Patient"]),
                "request": {"method": "POST", "url": "DiagnosticReport"},
            },
            {
                "fullUrl": "urn:uuid:4e1b2a3c-0000-4000-8000-000000000001",
                "resource": {
                    "resourceType": "ServiceRequest",
                    "status": "active",
                    "intent": "proposal",
                    "code": {"text": "MRI of the knee"},
                    "subject": {"reference": keys["Patient"]},
                    "basedOn": [{"reference": keys["ServiceRequest"]}],
                },
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
        ],
    }


async def test_report_completes_the_task_and_reaches_pcp_and_member(
    api: httpx.AsyncClient, loop_container: Container, receiver: Receiver
) -> None:
    keys = await approved_request(api, "-r1")
    await render_notices(loop_container)
    bundle = report_with_proposal(keys)
    response = await api.post("", json=bundle)
    assert response.status_code == 200, response.text
    await render_notices(loop_container)  # the member's letter (issue #13: after the answer)
    task = (await api.get(f"/{keys['Task']}")).json()
    assert task["status"] == "completed"
    assert task["output"][-1]["valueReference"]["reference"].startswith("DiagnosticReport/")
    communications = (
        await api.get("/Communication", params={"based-on": keys["ServiceRequest"]})
    ).json()["entry"]
    by_recipient = {
        c["resource"]["recipient"][0]["reference"].split("/")[0]: c["resource"]
        for c in communications
    }
    assert set(by_recipient) == {"PractitionerRole", "Patient"}
    assert (
        by_recipient["Patient"]["status"] == "completed"
    )  # available to the member through the API
    assert by_recipient["PractitionerRole"]["status"] == "in-progress"
    member_view = (await api.get("/Communication", params={"recipient": keys["Patient"]})).json()
    assert member_view["total"] == 2  # the approval notice and the report
    payload = [
        p.get("contentReference", {}).get("reference", "")
        for p in by_recipient["Patient"]["payload"]
    ]
    assert any(
        p.startswith("ServiceRequest/") for p in payload
    )  # the recommended procedure travels too
    # The member's copy is a letter: what the second opinion found, in the member's language.
    member_letter = member_pdf_text(by_recipient["Patient"])
    assert "The results of your second opinion" in member_letter
    assert "What the second opinion found and recommends" in member_letter
    assert "Agree with the recommended procedure." in member_letter
    assert (
        await loop_container.delivery.run_due() == 2
    )  # the report, and the requester's approval notice
    assert len(receiver.reports_received()) == 1
    assert (
        receiver.of_type("DiagnosticReport")[0]["conclusion"]
        == "Agree with the recommended procedure."
    )
    assert len(receiver.of_type("ServiceRequest")) == 1
    pcp_copy = (await api.get(f"/Communication/{by_recipient['PractitionerRole']['id']}")).json()
    assert pcp_copy["status"] == "completed" and pcp_copy["sent"]


async def test_the_member_copy_is_drafted_with_a_durable_render_job_and_rendered_after(
    api: httpx.AsyncClient, loop_container: Container, clock: FrozenClock
) -> None:
    """Issue #13: right after the report's 200 the member's copy exists in `preparation` with its
    render job committed; a worker started afresh (a restart) renders it, keeping the report
    and its proposals beside the letter."""
    keys = await approved_request(api, "-drafted")
    await render_notices(loop_container)
    response = await api.post("", json=report_with_proposal(keys))
    assert response.status_code == 200, response.text
    written = [e["response"]["location"].split("/_history")[0] for e in response.json()["entry"]]
    report_key, proposal_key = written  # the DiagnosticReport and the ServiceRequest, in order
    copies = (await api.get("/Communication", params={"recipient": keys["Patient"]})).json()
    member_copy = next(
        c["resource"]
        for c in copies["entry"]
        if c["resource"]["about"][0]["reference"] == report_key
    )
    assert member_copy["status"] == "preparation" and "sent" not in member_copy
    references = [{"contentReference": {"reference": k}} for k in (report_key, proposal_key)]
    assert member_copy["payload"][1:] == references  # no letter yet
    async with loop_container.store.transaction(write=False) as tx:  # committed with the answer
        jobs = [
            j for j in await tx.outbox.items(limit=1000) if j.communication_id == member_copy["id"]
        ]
    assert [(j.destination, j.state) for j in jobs] == [(RENDER, "pending")]
    assert jobs[0].payload and jobs[0].payload["letter"]["kind"] == "report-member"

    restarted = await build_container(loop_container.settings, clock=clock)  # its own engine
    try:
        assert await render_notices(restarted) == 1
    finally:
        await restarted.aclose()
    rendered = (await api.get(f"/Communication/{member_copy['id']}")).json()
    assert rendered["status"] == "completed" and rendered["sent"]  # read through the API
    title, *kept, html, pdf = rendered["payload"]
    assert title == {"contentString": "The results of your second opinion"}
    assert kept == references
    assert html["contentAttachment"]["contentType"] == "text/html; charset=utf-8"
    assert pdf["contentAttachment"]["contentType"] == "application/pdf"
    assert "Agree with the recommended procedure." in member_pdf_text(rendered)
    assert rendered["identifier"] == member_copy["identifier"]
    assert await render_notices(loop_container) == 0  # rendered once


@pytest.mark.parametrize("path", ["denied", "review"])
async def test_report_for_an_undecided_or_denied_request_is_422(
    api: httpx.AsyncClient, engine: AsyncEngine, path: str
) -> None:
    keys = await approved_request(api, f"-{path}", name=path)
    before = await count_rows(engine)
    response = await api.post(
        "/DiagnosticReport", json=report(keys["ServiceRequest"], keys["Patient"])
    )
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == ["DiagnosticReport.basedOn"]
    assert await count_rows(engine) == before


async def test_second_report_for_a_completed_request_is_422(api: httpx.AsyncClient) -> None:
    keys = await approved_request(api, "-twice")
    assert (
        await api.post("/DiagnosticReport", json=report(keys["ServiceRequest"], keys["Patient"]))
    ).status_code == 201
    again = await api.post(
        "/DiagnosticReport", json=report(keys["ServiceRequest"], keys["Patient"])
    )
    assert again.status_code == 422
    assert "completed" in again.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        ({"code": {"text": "note"}}, "DiagnosticReport.code"),
        ({"status": "preliminary"}, "DiagnosticReport.status"),
        ({"conclusion": None}, "DiagnosticReport.conclusion"),
    ],
    ids=["not-a-consult-note", "not-final", "no-content"],
)
async def test_incomplete_reports_are_422(
    api: httpx.AsyncClient, change: dict[str, Any], expression: str
) -> None:
    keys = await approved_request(api, "-bad")
    body = {
        k: v
        for k, v in {**report(keys["ServiceRequest"], keys["Patient"]), **change}.items()
        if v is not None
    }
    response = await api.post("/DiagnosticReport", json=body)
    assert response.status_code == 422, response.text
    assert expression in [e for i in response.json()["issue"] for e in i["expression"]]


async def test_a_report_about_another_member_is_422_and_reaches_nobody(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Policy VI sends the report to the request's member and PCP: one naming another patient
    would put that patient's findings in this member's record and their PCP's EHR."""
    keys = await approved_request(api, "-mine")
    other = await approved_request(api, "-other", name="member-selected-provider")
    assert other["Patient"] != keys["Patient"]
    before = await count_rows(engine)
    for subject in ({"reference": other["Patient"]}, None):
        body = report(keys["ServiceRequest"], keys["Patient"], subject=subject)
        if subject is None:
            del body["subject"]
        response = await api.post("/DiagnosticReport", json=body)
        assert response.status_code == 422, response.text
        issues = response.json()["issue"]
        assert [e for i in issues for e in i["expression"]] == ["DiagnosticReport.subject"]
        assert other["Patient"].split("/")[1] not in response.text
    assert await count_rows(engine) == before
    assert (await api.get(f"/{keys['Task']}")).json()["status"] == "accepted"


async def test_flaky_receiver_gets_every_report_exactly_once(
    api: httpx.AsyncClient,
    loop_container: Container,
    receiver: Receiver,
    ehr_transport: SwitchableTransport,
    clock: FrozenClock,
) -> None:
    receiver.fail_rate = 0.3
    reports = 24
    for i in range(reports):
        keys = await approved_request(api, f"-flaky{i}")
        await render_notices(loop_container)
        assert (
            await api.post(
                "/DiagnosticReport", json=report(keys["ServiceRequest"], keys["Patient"])
            )
        ).status_code == 201
    ehr_transport.down = True  # down for a stretch: every attempt fails
    for _ in range(2):
        await loop_container.delivery.run_due(limit=100)
        clock.advance(seconds=30)
    ehr_transport.down = False
    for _ in range(60):
        if not await loop_container.delivery.run_due(limit=100):
            clock.advance(minutes=10)
            if not await loop_container.delivery.run_due(limit=100):
                break
        clock.advance(minutes=10)
    assert len(receiver.reports_received()) == reports
    assert (
        len(receiver.of_type("Communication")) == 2 * reports
    )  # and each requester's approval notice
    assert len(receiver.of_type("DiagnosticReport")) == reports
    assert receiver.posts > reports  # failures really happened and were retried
    async with loop_container.store.transaction(write=False) as tx:
        delivered = await tx.outbox.items(state="delivered", limit=1000)
        failed = await tx.outbox.items(state="failed", limit=1000)
    assert len(delivered) == 2 * reports and not failed


async def test_undeliverable_reports_fail_visibly_and_can_be_retried(
    api: httpx.AsyncClient, loop_container: Container, receiver: Receiver, clock: FrozenClock
) -> None:
    keys = await approved_request(api, "-dead")
    await render_notices(loop_container)
    assert (
        await api.post("/DiagnosticReport", json=report(keys["ServiceRequest"], keys["Patient"]))
    ).status_code == 201
    receiver.garbage = True  # 200 with HTML: never counts as delivered
    for _ in range(6):
        await loop_container.delivery.run_due()
        clock.advance(hours=3)
    async with loop_container.store.transaction(write=False) as tx:
        failures = await tx.outbox.items(state="failed")
    assert len(failures) == 2  # the report and the requester's notice, both to the PCP's EHR
    for failure in failures:
        assert failure.attempts == 6 and failure.last_error == "answer is not JSON"
    about = {
        f.id: (await api.get(f"/Communication/{f.communication_id}")).json()["about"][0][
            "reference"
        ]
        for f in failures
    }
    failed = next(f for f in failures if about[f.id].startswith("DiagnosticReport/"))
    communication = (await api.get(f"/Communication/{failed.communication_id}")).json()
    assert communication["status"] == "not-done"
    assert "after 6 attempts" in communication["statusReason"]["text"]
    receiver.garbage = False
    assert await loop_container.delivery.retry_failed() == 2  # both come back
    assert await loop_container.delivery.run_due() == 2
    assert (await api.get(f"/Communication/{failed.communication_id}")).json()[
        "status"
    ] == "completed"
    assert len(receiver.reports_received()) == 1
    assert len(receiver.of_type("Communication")) == 2


async def test_member_copy_is_posted_to_the_notice_url_when_set(
    settings: Settings,
    engine: AsyncEngine,
    directory_app: FastAPI,
    ehr_transport: SwitchableTransport,
    receiver: Receiver,
    clock: FrozenClock,
) -> None:
    settings = settings.model_copy(update={"member_notice_url": "http://print-vendor.test/notices"})
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=directory_app), base_url="http://directory.test"
        ) as dir_http,
        httpx.AsyncClient(transport=ehr_transport) as ehr_http,
    ):
        directory = DirectoryClient(
            dir_http, DIRECTORY_BASE, network="Organization/medi-cal-network"
        )
        container = await build_container(
            settings,
            store=SqlResourceStore(engine, base_url=settings.fhir_base_url),
            directory=directory,
            deliverer=HttpDeliverer(ehr_http),
            clock=clock,
        )
        transport = httpx.ASGITransport(app=create_app(container=container))
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, headers=bearer(container)
        ) as api:
            keys = await approved_request(api, "-notice")
            await render_notices(container)
            assert (
                await api.post(
                    "/DiagnosticReport", json=report(keys["ServiceRequest"], keys["Patient"])
                )
            ).status_code == 201
            await render_notices(container)  # the member's report letter
            to_member = (
                await api.get("/Communication", params={"recipient": keys["Patient"]})
            ).json()["entry"]
            assert {c["resource"]["status"] for c in to_member} == {"in-progress"}  # notice, report
            # The PCP's report, the requester's notice, and the member's notice and report.
            receiver.mails_on = "2026-11-27"
            assert await container.delivery.run_due() == 4
            for communication in to_member:
                current = (
                    await api.get(f"/Communication/{communication['resource']['id']}")
                ).json()
                assert current["status"] == "completed"
                # Mailing proof: when the mailing service took it, and the date it mails it.
                proof = {e["url"].rsplit("/", 1)[-1]: e for e in current["extension"]}
                assert proof["notice-mailing"]["valueDateTime"] == current["sent"]
                assert current["sent"].startswith(clock().date().isoformat())
                assert proof["notice-mailed-on"]["valueDate"] == "2026-11-27"
    # The mailing service gets the member's letters themselves.
    mailed = [
        c
        for c in receiver.of_type("Communication")
        if c["subject"] and any("contentAttachment" in p for p in c["payload"])
    ]
    titles = {c["payload"][0].get("contentString") for c in mailed}
    assert "The results of your second opinion" in titles  # the member's report letter
    assert len(mailed) == 3  # and the two approval notices
    assert len(receiver.of_type("Communication")) == 4
