"""`fhir-adapter notices samples`: the letters of each kind, as the service writes them for the
example requests, saved as PDFs (examples/notices/) for a reviewer to read.

The examples go through the whole service (the in-process server of `fhir-adapter demo`: real
HTTP, SQLite in a temporary folder, the built-in directory), so the samples are exactly what a
member and a provider would get; only the member's language and print preference are varied.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fhir_adapter.bootstrap import examples_dir
from fhir_adapter.demo.walkthrough import DEMO_SCOPE, consultation_report, in_process_service
from fhir_adapter.fhir.elements import ResourceKey
from fhir_adapter.notices.language import LARGE_PRINT_URL
from fhir_adapter.security.client import discover_token_endpoint, request_token


@dataclass(frozen=True, slots=True)
class Sample:
    """One example request, submitted with the member's preferences changed as given."""

    example: str
    suffix: str
    language: str | None = None  # BCP-47 code set as the member's preferred language
    large_print: bool = False
    letters: dict[str, str] = field(default_factory=dict)  # "member"/"requester" -> file name


SAMPLES = (
    Sample(
        "denied",
        "-sample-en",
        letters={"member": "denial-member-en.pdf", "requester": "denial-requester-en.pdf"},
    ),
    Sample("denied", "-sample-es", "es-MX", letters={"member": "denial-member-es.pdf"}),
    Sample(
        "denied",
        "-sample-vi",
        "vi",
        large_print=True,
        letters={"member": "denial-member-vi-no-template-large-print.pdf"},
    ),
    Sample(
        "in-network-specialist-care",
        "-sample-en",
        letters={
            "member": "approval-member-in-network-en.pdf",
            "requester": "approval-requester-in-network-en.pdf",
        },
    ),
    Sample(
        "out-of-network",
        "-sample-es",
        "es",
        letters={"member": "approval-member-out-of-network-es.pdf"},
    ),
)
REPORT_SAMPLE = Sample(
    "in-network-specialist-care", "-sample-report", letters={"member": "report-member-en.pdf"}
)
REPORT_TEXT = (
    "Consultation for a second opinion on the proposed right knee arthroscopy.\n\n"
    "History and examination: knee pain for eight months after a fall; mild swelling; no "
    "locking. MRI shows a small tear of the medial meniscus.\n\n"
    "Recommendation: surgery is reasonable but not urgent. Six weeks of physical therapy first "
    "is a good option; if the pain continues, arthroscopy."
)
REPORT_CONCLUSION = (
    "Surgery is reasonable but not urgent. Six weeks of physical therapy first is a good option; "
    "if the pain continues, arthroscopy."
)


def sample_request(sample: Sample) -> dict[str, Any]:
    """The example request Bundle under new identifiers, with the sample's member preferences."""
    bundle: dict[str, Any] = json.loads(
        (examples_dir() / "requests" / f"{sample.example}.json").read_text(encoding="utf-8")
    )
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        if resource["resourceType"] in ("ServiceRequest", "Task", "Patient"):
            for identifier in resource.get("identifier", []):
                identifier["value"] += sample.suffix
            if request.get("ifNoneExist"):
                request["ifNoneExist"] += sample.suffix
        if resource["resourceType"] != "Patient":
            continue
        if sample.language:
            resource["communication"] = [
                {
                    "language": {
                        "coding": [{"system": "urn:ietf:bcp:47", "code": sample.language}]
                    },
                    "preferred": True,
                }
            ]
        if sample.large_print:
            resource["extension"] = [
                *resource.get("extension", []),
                {"url": LARGE_PRINT_URL, "valueBoolean": True},
            ]
    return bundle


async def write_samples(target: Path, say: Callable[[str], None] = print) -> list[Path]:
    """Run the samples through an in-process service and save each letter's PDF in `target`."""
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    async with in_process_service() as (base_url, credentials):
        async with httpx.AsyncClient(timeout=60) as http:
            token_url = await discover_token_endpoint(http, base_url)
            token = await request_token(http, token_url, credentials, DEMO_SCOPE)
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        async with httpx.AsyncClient(base_url=base_url, timeout=60, headers=headers) as client:
            for sample in SAMPLES:
                keys = await _submit(client, sample)
                letters = await _letters(client, keys["ServiceRequest"], "ClaimResponse/")
                written += _save(target, sample, letters, say)
            keys = await _submit(client, REPORT_SAMPLE)
            report = _report(keys)
            answer = await client.post("/DiagnosticReport", json=report)
            answer.raise_for_status()
            letters = await _letters(client, keys["ServiceRequest"], "DiagnosticReport/")
            written += _save(target, REPORT_SAMPLE, letters, say)
    return written


async def _submit(client: httpx.AsyncClient, sample: Sample) -> dict[str, str]:
    response = await client.post(
        "", json=sample_request(sample), headers={"Content-Type": "application/fhir+json"}
    )
    response.raise_for_status()
    return {
        key.type: str(key)
        for key in (ResourceKey.parse(e["response"]["location"]) for e in response.json()["entry"])
    }


async def _letters(
    client: httpx.AsyncClient, request_key: str, about: str
) -> dict[str, dict[str, Any]]:
    found = (
        await client.get("/Communication", params={"based-on": request_key, "_count": "100"})
    ).json()
    letters: dict[str, dict[str, Any]] = {}
    for entry in found.get("entry", []):
        resource = entry["resource"]
        if not any(a.get("reference", "").startswith(about) for a in resource.get("about", [])):
            continue
        to = (
            "member"
            if resource["recipient"][0]["reference"].startswith("Patient/")
            else "requester"
        )
        letters[to] = resource
    return letters


def _save(
    target: Path, sample: Sample, letters: dict[str, dict[str, Any]], say: Callable[[str], None]
) -> list[Path]:
    written = []
    for to, name in sample.letters.items():
        communication = letters.get(to)
        pdf = next(
            (
                p["contentAttachment"]["data"]
                for p in (communication or {}).get("payload", [])
                if p.get("contentAttachment", {}).get("contentType") == "application/pdf"
            ),
            None,
        )
        if pdf is None:
            raise RuntimeError(f"{sample.example}: no {to} letter was written")
        path = target / name
        path.write_bytes(base64.b64decode(pdf))
        say(f"{path}  ({communication['payload'][0]['contentString']})")  # type: ignore[index]
        written.append(path)
    return written


def _report(keys: dict[str, str]) -> dict[str, Any]:
    return consultation_report(
        keys,
        REPORT_CONCLUSION,
        performer=[{"display": "Dr. Elena Park, Orthopaedic Surgery"}],
        presentedForm=[
            {
                "contentType": "text/plain; charset=utf-8",
                "language": "en",
                "data": base64.b64encode(REPORT_TEXT.encode()).decode(),
                "title": "Consultation report",
            }
        ],
    )
