"""What a PAS `$submit` becomes here (pure): the Task asking for the second opinion, and, for a
request decided administratively, how its ClaimResponse names the submitter's Claim and the kept
copy of the submitted Bundle."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson

from fhir_adapter.codes import TASK_CODE_SYSTEM
from fhir_adapter.fhir.bundle_references import BundleReferences
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.workflow import pas_changes


def fulfillment_task(
    claim: dict[str, Any],
    entries: list[dict[str, Any]],
    resolved: BundleReferences,
    request_index: int,
    now: datetime,
    client_id: str | None,
) -> dict[str, Any]:
    """The Task that asks for the second opinion the PAS request's ServiceRequest describes
    (for, requester and priority from it, else from the Claim)."""
    request_url = entries[request_index]["fullUrl"]
    request = entries[request_index]["resource"]

    def as_written_in_task(value: Any, holder: int) -> Any:
        """A reference copied from entry `holder` into the Task (whose fullUrl is a urn)
        must name its target by fullUrl, or it would resolve against another base."""
        if not isinstance(value, dict) or not isinstance(value.get("reference"), str):
            return value
        target = resolved.target(holder, value["reference"])
        return value if target is None else {"reference": entries[target]["fullUrl"]}

    requester = (
        as_written_in_task(request["requester"], request_index)
        if request.get("requester")
        else as_written_in_task(claim.get("provider"), 0)
    )
    subject = (
        as_written_in_task(request["subject"], request_index)
        if request.get("subject")
        else as_written_in_task(claim.get("patient"), 0)
    )
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": "fulfill"}]},
        "focus": {"reference": request_url},
        "for": subject,
        "requester": requester,
        "authoredOn": format_instant(now),
    }
    if request.get("priority"):
        task["priority"] = request["priority"]
    if client_id:
        task["extension"] = [pas_changes.submitter_extension(client_id)]
    return task


def name_submission(
    response: dict[str, Any],
    claim: dict[str, Any],
    patient: dict[str, Any],
    client_id: str | None,
) -> None:
    """Make an administrative ClaimResponse name the submitter's Claim and member logically (their
    resources are not ours to keep), the submitter's own number, and the submitting client."""
    claim_identifier = (claim.get("identifier") or [None])[0]
    response["request"] = (
        {"identifier": claim_identifier} if claim_identifier else {"display": "PAS Claim"}
    )
    response["patient"] = patient
    if isinstance(claim_identifier, dict) and claim_identifier.get("value"):
        # the submitter's own number for the request: what a later inquiry or update names
        response["identifier"].append(
            {k: claim_identifier[k] for k in ("system", "value") if k in claim_identifier}
        )
    if client_id:
        response["extension"] = [
            *response.get("extension", []),
            pas_changes.submitter_extension(client_id),
        ]


def submitted_bundle_document(
    body: dict[str, Any], patient: dict[str, Any], now: datetime, response_key: str
) -> dict[str, Any]:
    """The submitted PAS Bundle, as submitted, kept as a DocumentReference beside its answer."""
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"text": "Da Vinci PAS request Bundle, as submitted"},
        "subject": patient,
        "date": format_instant(now),
        "content": [
            {
                "attachment": {
                    "contentType": "application/fhir+json",
                    "data": base64.b64encode(orjson.dumps(body)).decode(),
                }
            }
        ],
        "context": {"related": [{"reference": response_key}]},
    }
