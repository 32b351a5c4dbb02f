"""Claim and ClaimResponse in the Da Vinci PAS shape (fhir.md §1.5-1.7), built from a decision (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fhir_adapter.codes import (
    ADJUDICATION_SYSTEM,
    CLAIM_TYPE_SYSTEM,
    DENIAL_REASON_SYSTEM,
    DENIAL_TEXT,
    PAS_ADMIN_REFERENCE,
    PAS_AUTHORIZED_PROVIDER,
    PAS_REQUESTED_SERVICE,
    PAS_REVIEW_ACTION,
    PAS_REVIEW_ACTION_CODE,
    PAS_REVIEWER,
    REVIEW_REASON_SYSTEM,
    REVIEW_TEXT,
    RULE_TRAIL_EXTENSION,
    X12_REVIEW_ACTION_SYSTEM,
    X12_SERVICE_TYPE_SYSTEM,
)
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.policy.decision import Decision, Outcome
from fhir_adapter.policy.facts import Provider

TRACE_SYSTEM = "urn:trnorg:fhir-adapter"
AUTHORIZATION_DAYS = 90
_CONSULTATION = {
    "coding": [{"system": X12_SERVICE_TYPE_SYSTEM, "code": "3", "display": "Consultation"}]
}
_PROFESSIONAL = {"coding": [{"system": CLAIM_TYPE_SYSTEM, "code": "professional"}]}


def build_claim(
    *,
    task_id: str,
    request_key: str,
    patient: str,
    coverage: str,
    provider: str,
    insurer: str,
    expedited: bool,
    now: datetime,
) -> dict[str, Any]:
    """The preauthorization Claim the adapter files for a second-opinion request."""
    return {
        "resourceType": "Claim",
        "identifier": [{"system": TRACE_SYSTEM, "value": task_id}],
        "status": "active",
        "type": _PROFESSIONAL,
        "use": "preauthorization",
        "patient": {"reference": patient},
        "created": format_instant(now),
        "insurer": {"reference": insurer},
        "provider": {"reference": provider},
        "priority": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/processpriority",
                    "code": "stat" if expedited else "normal",
                }
            ]
        },
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": coverage}}],
        "item": [
            {
                "sequence": 1,
                "extension": [
                    {"url": PAS_REQUESTED_SERVICE, "valueReference": {"reference": request_key}}
                ],
                "category": _CONSULTATION,
                "productOrService": _CONSULTATION,
            }
        ],
    }


def authorization_number(task_id: str) -> str:
    return "SMO-" + task_id.replace("-", "")[:12].upper()


def build_claim_response(
    decision: Decision,
    *,
    task_id: str,
    claim_key: str,
    patient: str,
    insurer: str,
    requestor: str | None,
    now: datetime,
    reviewer: dict[str, Any] | None = None,
    note: str | None = None,
    authorized_until: datetime | None = None,
) -> dict[str, Any]:
    """The ClaimResponse that records `decision`: review action, providers, reason, rule trail,
    and for a reviewer's decision who decided and the reason they gave."""
    outcome = decision.outcome
    response: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "extension": [
            _trail_extension(step.rule, step.basis, step.result) for step in decision.trail
        ],
        "identifier": [{"system": TRACE_SYSTEM, "value": task_id}],
        "status": "active",
        "type": _PROFESSIONAL,
        "use": "preauthorization",
        "patient": {"reference": patient},
        "created": format_instant(now),
        "insurer": {"reference": insurer},
        "request": {"reference": claim_key},
        "outcome": "complete" if outcome.is_final else "partial",
        "disposition": disposition(decision),
        "item": [_decided_item(decision, task_id)],
    }
    if requestor:
        response["requestor"] = {"reference": requestor}
    if outcome is Outcome.APPROVED_OUT_OF_NETWORK:
        response["preAuthRef"] = authorization_number(task_id)
        response["preAuthPeriod"] = {
            "start": format_instant(now),
            "end": format_instant(authorized_until or now + timedelta(days=AUTHORIZATION_DAYS)),
        }
    notes = _process_notes(decision, note)
    if notes:
        response["processNote"] = notes
    if reviewer:
        response.setdefault("extension", []).append(reviewer)
    if not response["extension"]:
        del response["extension"]
    return response


def _decided_item(decision: Decision, task_id: str) -> dict[str, Any]:
    """The ClaimResponse's one item: the X12 review action with the authorization number (and
    the denial's reason), the providers authorized, and a pended request's reference."""
    outcome = decision.outcome
    action: list[dict[str, Any]] = [
        {
            "url": PAS_REVIEW_ACTION_CODE,
            "valueCodeableConcept": {
                "coding": [
                    {"system": X12_REVIEW_ACTION_SYSTEM, "code": outcome.review_action.value}
                ]
            },
        },
        {"url": "number", "valueString": authorization_number(task_id)},
    ]
    if decision.denial_reason:
        action.append({"url": "reasonCode", "valueCodeableConcept": _reason_concept(decision)})
    item_extensions: list[dict[str, Any]] = [
        {
            "url": PAS_AUTHORIZED_PROVIDER,
            "extension": [
                {
                    "url": "provider",
                    "valueReference": {
                        "reference": provider.role_reference,
                        **({"display": provider.display} if provider.display else {}),
                    },
                }
            ],
        }
        for provider in decision.providers
    ]
    if not outcome.is_final:
        item_extensions.append(
            {"url": PAS_ADMIN_REFERENCE, "valueString": "PEND-" + authorization_number(task_id)[4:]}
        )
    item: dict[str, Any] = {
        "itemSequence": 1,
        "adjudication": [
            {
                "category": {"coding": [{"system": ADJUDICATION_SYSTEM, "code": "submitted"}]},
                "extension": [{"url": PAS_REVIEW_ACTION, "extension": action}],
            }
        ],
    }
    if item_extensions:
        item["extension"] = item_extensions
    return item


def _process_notes(decision: Decision, note: str | None) -> list[dict[str, Any]]:
    """The notes the submitter shows: the disposition of a denial or review, how to reach each
    provider offered, and the reviewer's note."""
    notes = [disposition(decision)] if decision.denial_reason or decision.review_reason else []
    notes += [line for p in decision.providers if (line := contact_line(p))]
    if note:
        notes.append(note)
    return [{"number": i, "type": "display", "text": text} for i, text in enumerate(notes, start=1)]


def contact_line(provider: Provider) -> str | None:
    """How to reach an offered provider, as the directory lists them (directory data, not PHI)."""
    parts = [
        provider.organization_name,
        ", ".join(provider.address) if provider.address else None,
        f"phone {provider.phone}" if provider.phone else None,
    ]
    known = [p for p in parts if p]
    if not known:
        return None
    return f"{provider.display or provider.role_reference}: " + "; ".join(known)


def reviewer_extension(
    reviewer: str, npi: str | None, specialty: dict[str, Any], *, display: str | None = None
) -> dict[str, Any]:
    """PAS claimResponseReviewer: a person decided, with their NPI and specialty (and, from the
    review workspace, their name and credentials as the reference's display)."""
    who: dict[str, Any] = {"reference": reviewer, **({"display": display} if display else {})}
    parts: list[dict[str, Any]] = [
        {"url": "wasHumanReviewedFlag", "valueBoolean": True},
        {"url": "reviewer", "valueReference": who},
        {"url": "reviewerSpecialty", "valueCodeableConcept": specialty},
    ]
    if npi:
        parts.insert(1, {"url": "reviewerNPI", "valueString": npi})
    return {"url": PAS_REVIEWER, "extension": parts}


def disposition(decision: Decision) -> str:
    """One sentence a person can read: what was decided and why."""
    outcome = decision.outcome
    if outcome is Outcome.APPROVED_IN_NETWORK:
        return (
            "Approved: no authorization is needed for a qualified in-network provider; "
            f"{len(decision.providers)} qualified provider(s) listed. No cost to the member."
        )
    if outcome is Outcome.APPROVED_OUT_OF_NETWORK:
        return (
            "Approved out of network: no qualified in-network provider is available, so the plan "
            "authorizes the listed out-of-network provider at no cost to the member."
        )
    if outcome is Outcome.DENIED and decision.denial_reason:
        rule = decision.deciding_rule
        basis = f" (rule: {rule.rule}; basis: {rule.basis})" if rule else ""
        return f"Denied: {DENIAL_TEXT[decision.denial_reason]}{basis}"
    if outcome is Outcome.PENDING_DIRECTORY:
        return "Pended: the provider directory could not be reached; the request will be decided when it answers."
    reason = (
        REVIEW_TEXT[decision.review_reason] if decision.review_reason else "A reviewer decides."
    )
    return f"Pended for clinical review: {reason}"


def _reason_concept(decision: Decision) -> dict[str, Any]:
    if decision.denial_reason:
        return {
            "coding": [{"system": DENIAL_REASON_SYSTEM, "code": decision.denial_reason.value}],
            "text": DENIAL_TEXT[decision.denial_reason],
        }
    assert decision.review_reason is not None
    return {
        "coding": [{"system": REVIEW_REASON_SYSTEM, "code": decision.review_reason.value}],
        "text": REVIEW_TEXT[decision.review_reason],
    }


def _trail_extension(rule: str, basis: str, result: str) -> dict[str, Any]:
    return {
        "url": RULE_TRAIL_EXTENSION,
        "extension": [
            {"url": "rule", "valueString": rule},
            {"url": "basis", "valueString": basis},
            {"url": "result", "valueCode": result},
        ],
    }
