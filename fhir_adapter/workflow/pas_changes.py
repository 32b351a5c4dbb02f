"""What a PAS Claim update asks for, and the ClaimResponse of a cancelled request (pure).

PAS IG, specification "Updating Authorization Requests": an update is a `$submit` whose first
entry is a PAS Claim Update naming the Claim it replaces in `Claim.related.claim` (spec-65). A
certificationType of 3 (Cancel) on the Claim cancels the whole request; so does an update whose
every item is cancelled (infoCancelled modifier, or certificationType 3 on the item, spec-69/70).
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, Literal

from fhir_adapter.codes import CLIENT_ID_SYSTEM, X12_REVIEW_ACTION_SYSTEM, review_action_codes
from fhir_adapter.fhir.dates import format_instant

PAS_SD = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition"
CERTIFICATION_TYPE = f"{PAS_SD}/extension-certificationType"
INFO_CANCELLED = f"{PAS_SD}/modifierextension-infoCancelled"
INFO_CHANGED = f"{PAS_SD}/extension-infoChanged"
X12_CERTIFICATION_TYPE_SYSTEM = "https://codesystem.x12.org/005010/1322"
CANCEL = "3"
# X12 306 (HCR01) "C": Cancelled. Not a determination, so the metrics keep the first final one.
REVIEW_ACTION_CANCELLED = "C"
# Who submitted a request through `Claim/$submit`: the OAuth client, recorded on the Task (and
# on an administrative ClaimResponse) so that only that client can inquire about or change it.
SUBMITTER_EXTENSION = "https://fhir-adapter.org/fhir/StructureDefinition/submitting-client"

Change = Literal["cancel", "update"]


def related_claim_reference(claim: dict[str, Any]) -> str | None:
    """`Claim.related[0].claim.reference` of a PAS Claim Update; None for a new request."""
    for related in claim.get("related") or []:
        reference = (related.get("claim") or {}).get("reference")
        if isinstance(reference, str) and reference:
            return reference
    return None


def _certification(holder: dict[str, Any]) -> str | None:
    for extension in holder.get("extension") or []:
        if extension.get("url") == CERTIFICATION_TYPE:
            for coding in (extension.get("valueCodeableConcept") or {}).get("coding") or []:
                if coding.get("system") in (None, X12_CERTIFICATION_TYPE_SYSTEM):
                    return str(coding.get("code"))
    return None


def item_cancelled(item: dict[str, Any]) -> bool:
    """spec-69/70: an item removed from the request."""
    flagged = any(
        m.get("url") == INFO_CANCELLED and m.get("valueBoolean") is True
        for m in item.get("modifierExtension") or []
    )
    return flagged or _certification(item) == CANCEL


def change_of(claim: dict[str, Any]) -> Change:
    """Cancel (certificationType 3 on the Claim, or every item cancelled) or update."""
    items = claim.get("item") or []
    if _certification(claim) == CANCEL or (items and all(item_cancelled(i) for i in items)):
        return "cancel"
    return "update"


def submitter_extension(client_id: str) -> dict[str, Any]:
    return {
        "url": SUBMITTER_EXTENSION,
        "valueIdentifier": {"system": CLIENT_ID_SYSTEM, "value": client_id},
    }


def submitter_of(resource: dict[str, Any]) -> str | None:
    """The client id recorded by `submitter_extension`, if any."""
    for extension in resource.get("extension") or []:
        if extension.get("url") == SUBMITTER_EXTENSION:
            value = (extension.get("valueIdentifier") or {}).get("value")
            return str(value) if value else None
    return None


def cancelled_claim_response(
    response: dict[str, Any], *, now: datetime, reason: str
) -> dict[str, Any]:
    """The next version of a ClaimResponse, saying the request was cancelled: review action C on
    every item, outcome complete, the reason as disposition and as a note. The decision it may
    have carried stays in the earlier versions (the metrics read the first final one)."""
    cancelled = copy.deepcopy(response)
    cancelled.pop("meta", None)
    for part in review_action_codes(cancelled):
        part["valueCodeableConcept"] = {
            "coding": [
                {
                    "system": X12_REVIEW_ACTION_SYSTEM,
                    "code": REVIEW_ACTION_CANCELLED,
                    "display": "Cancelled",
                }
            ]
        }
    cancelled["outcome"] = "complete"
    cancelled["disposition"] = f"Cancelled: {reason}"
    cancelled["created"] = format_instant(now)
    cancelled.pop("preAuthPeriod", None)
    notes = list(cancelled.get("processNote") or [])
    notes.append({"number": len(notes) + 1, "type": "display", "text": f"Cancelled: {reason}"})
    cancelled["processNote"] = notes
    return cancelled
