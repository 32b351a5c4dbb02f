"""Written notices go out with every decision: denials (42 CFR 438.404) and approvals, to the
member and to the requester, as Communications carrying the letter as HTML and PDF."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import pypdf

from fhir_adapter.bootstrap import Container
from fhir_adapter.services.notices import pending_translations
from fhir_adapter.workflow.pas import authorization_number
from tests.factories import example_request
from tests.fakes import FrozenClock
from tests.worker import render_notices


async def submit(client: httpx.AsyncClient, bundle: dict[str, Any]) -> dict[str, str]:
    answer = (await client.post("", json=bundle)).json()
    return {
        e["response"]["location"].split("/")[0]: e["response"]["location"].split("/_history")[0]
        for e in answer["entry"]
    }


async def notices(client: httpx.AsyncClient, request_key: str) -> dict[str, dict[str, Any]]:
    found = (
        (await client.get("/Communication", params={"based-on": request_key}))
        .json()
        .get("entry", [])
    )
    return {
        (
            "member"
            if e["resource"]["recipient"][0]["reference"].startswith("Patient/")
            else "requester"
        ): e["resource"]
        for e in found
    }


def letter(notice: dict[str, Any]) -> tuple[str, str]:
    """The HTML and the PDF's text of a notice."""
    attachments = {
        p["contentAttachment"]["contentType"].split(";")[0]: p["contentAttachment"]
        for p in notice["payload"]
        if "contentAttachment" in p
    }
    html = base64.b64decode(attachments["text/html"]["data"]).decode()
    pdf = pypdf.PdfReader(io.BytesIO(base64.b64decode(attachments["application/pdf"]["data"])))
    text = " ".join(" ".join((page.extract_text() or "").split()) for page in pdf.pages)
    return html, text


def speaking(bundle: dict[str, Any], language: str) -> dict[str, Any]:
    """The Bundle's Patient, made to prefer `language`."""
    patient: dict[str, Any] = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    patient["communication"] = [
        {
            "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": language}]},
            "preferred": True,
        }
    ]
    return patient


async def test_denial_notices_to_member_and_requester(
    client: httpx.AsyncClient, container: Container
) -> None:
    keys = await submit(client, example_request("denied"))
    await render_notices(container)
    sent = await notices(client, keys["ServiceRequest"])
    assert set(sent) == {"member", "requester"}
    member = sent["member"]
    assert member["status"] == "completed" and member["sent"]
    assert member["about"][0]["reference"].startswith("ClaimResponse/")
    html, pdf_text = letter(member)
    for text in (html, pdf_text):
        assert "January 24, 2027" in text  # appeal by: the notice date (2026-11-25) + 60 days
        assert "December 5, 2026" in text  # continuing services: + 10 days
        assert "State Hearing" in text and "grievance" in text.lower()
    # Only an administrative fact denies by machine: here, coverage that ended before the request.
    # The rule trail stays on the ClaimResponse and the provider's copy, not the member's letter.
    assert "coverage_is_active" not in pdf_text and "Rule:" not in pdf_text
    for contact in ("1-888-466-2219", "1-877-688-9891", "www.dmhc.ca.gov", "1-888-452-8609"):
        assert contact in pdf_text
    requester = sent["requester"]
    _, requester_text = letter(requester)
    assert "coverage_is_active" in requester_text
    assert requester["recipient"][0]["reference"].startswith("PractitionerRole/")
    assert requester["status"] == "in-progress"  # on its way to the requester's endpoint


async def test_out_of_network_approval_names_provider_and_authorization(
    client: httpx.AsyncClient, container: Container
) -> None:
    keys = await submit(client, example_request("out-of-network"))
    await render_notices(container)
    member = (await notices(client, keys["ServiceRequest"]))["member"]
    html, pdf_text = letter(member)
    task_id = keys["Task"].split("/")[1]
    for text in (html, pdf_text):
        assert "Lindqvist" in text
        assert authorization_number(task_id) in text
        assert "February 23, 2027" in text  # valid 90 days from 2026-11-25


async def test_member_notice_in_spanish_when_the_member_prefers_it(
    client: httpx.AsyncClient, container: Container
) -> None:
    bundle = example_request("denied", "-es")
    speaking(bundle, "es-MX")
    keys = await submit(client, bundle)
    await render_notices(container)
    member = (await notices(client, keys["ServiceRequest"]))["member"]
    html, pdf_text = letter(member)
    assert member["payload"][1]["contentAttachment"]["language"] == "es"
    assert "24 de enero de 2027" in html and "24 de enero de 2027" in pdf_text
    assert "Audiencia Estatal" in html


async def test_deadline_denial_is_noticed_the_day_it_expires(
    client: httpx.AsyncClient, container: Container, clock: FrozenClock
) -> None:
    keys = await submit(client, example_request("review"))
    assert (
        await notices(client, keys["ServiceRequest"]) == {}
    )  # pended: nothing decided, nothing owed
    clock.advance(days=7, seconds=1)
    assert await container.workflow.expire_overdue() == 1
    await render_notices(container)
    member = (await notices(client, keys["ServiceRequest"]))["member"]
    assert member["sent"].startswith("2026-12-02")
    _, pdf_text = letter(member)
    assert "We did not make a decision within the time the law allows." in pdf_text
    assert "deadline_expired" not in pdf_text


async def test_a_member_whose_language_has_no_template_gets_english_taglines_and_a_flag(
    client: httpx.AsyncClient, container: Container
) -> None:
    bundle = example_request("denied", "-vi")
    patient = speaking(bundle, "vi")
    patient["extension"] = [
        {
            "url": "https://fhir-adapter.org/fhir/StructureDefinition/notice-large-print",
            "valueBoolean": True,
        }
    ]
    keys = await submit(client, bundle)
    await render_notices(container)
    sent = await notices(client, keys["ServiceRequest"])
    member = sent["member"]
    _, pdf_text = letter(member)
    # English, with the Vietnamese tagline before the letter itself: never silently English.
    assert pdf_text.index("CHÚ Ý") < pdf_text.index("has denied your request")
    flags = [c for category in member["category"] for c in category["coding"]]
    assert {
        "system": "https://fhir-adapter.org/fhir/CodeSystem/notice-flag",
        "code": "translation-owed",
        "display": "Translation owed",
    } in flags
    assert {
        "url": "https://fhir-adapter.org/fhir/StructureDefinition/notice-requested-language",
        "valueCode": "vi",
    } in member["extension"]
    assert "translation-owed" not in str(sent["requester"].get("category"))
    # Large print, as the member asked.
    html = base64.b64decode(member["payload"][1]["contentAttachment"]["data"]).decode()
    assert "font-size: 18.0pt" in html
    # The operator's list of letters owed in another language.
    owed = await pending_translations(container.store)
    assert [(o.communication, o.language) for o in owed] == [
        (f"Communication/{member['id']}", "vi")
    ]
