"""Mailing proof (issue #11): the mailing service's answer can carry the date it mails a member's
letter, and the Communication records when the service accepted it and that date."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import respx

from fhir_adapter.delivery.http import HttpDeliverer
from fhir_adapter.workflow.letters import NOTICE_MAILED_ON_URL, NOTICE_MAILING_URL, mailing_proof

URL = "https://mail.example/notices"
BUNDLE = {"resourceType": "Bundle", "type": "transaction", "entry": [{}, {}]}


def answer(**extra: Any) -> dict[str, Any]:
    entries = [{"response": {"status": "201 Created"}}, {"response": {"status": "201 Created"}}]
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": entries, **extra}


@respx.mock
async def test_the_mailing_date_the_service_returns_is_read() -> None:
    mailed = {"url": NOTICE_MAILED_ON_URL, "valueDate": "2026-11-27"}
    respx.post(URL).respond(200, json=answer(extension=[mailed]))
    async with httpx.AsyncClient() as http:
        attempt = await HttpDeliverer(http).post_transaction(URL, BUNDLE)

    assert attempt.delivered and attempt.mailed_on == "2026-11-27"


@respx.mock
async def test_a_mailing_date_on_an_entry_response_is_read_and_junk_is_ignored() -> None:
    body = answer()
    body["entry"][1]["response"]["extension"] = [
        {"url": NOTICE_MAILED_ON_URL, "valueDate": "next week"},
        {"url": NOTICE_MAILED_ON_URL, "valueDate": "2026-12-01"},
    ]
    respx.post(URL).respond(200, json=body)
    async with httpx.AsyncClient() as http:
        attempt = await HttpDeliverer(http).post_transaction(URL, BUNDLE)

    assert attempt.mailed_on == "2026-12-01"


@respx.mock
async def test_no_mailing_date_when_the_service_gives_none() -> None:
    respx.post(URL).respond(200, json=answer())
    async with httpx.AsyncClient() as http:
        attempt = await HttpDeliverer(http).post_transaction(URL, BUNDLE)

    assert attempt.delivered and attempt.mailed_on is None


def test_the_proof_replaces_an_earlier_one_and_keeps_other_extensions() -> None:
    other = {"url": "https://example.org/other", "valueString": "kept"}
    first = mailing_proof([other], accepted=datetime(2026, 11, 25, tzinfo=UTC), mailed_on=None)
    again = mailing_proof(
        first, accepted=datetime(2026, 11, 26, 9, 30, tzinfo=UTC), mailed_on="2026-11-27"
    )

    assert again == [
        other,
        {"url": NOTICE_MAILING_URL, "valueDateTime": "2026-11-26T09:30:00.000Z"},
        {"url": NOTICE_MAILED_ON_URL, "valueDate": "2026-11-27"},
    ]
