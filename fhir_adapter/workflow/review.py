"""A reviewer's decision on a pended request, read from the `$decide` Parameters (pure).

42 CFR 438.210(b)(3): a denial is decided by someone with appropriate clinical expertise, so the
reviewer and their specialty are required and recorded on the ClaimResponse.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_adapter.errors import InvalidRequestError, UnprocessableEntityError
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.fhir.validation import validate_resource
from fhir_adapter.policy.decision import Outcome

DECIDE_OPERATION = "https://fhir-adapter.org/fhir/OperationDefinition/Task-decide"
_DECISIONS = {
    Outcome.APPROVED_IN_NETWORK.value: Outcome.APPROVED_IN_NETWORK,
    Outcome.APPROVED_OUT_OF_NETWORK.value: Outcome.APPROVED_OUT_OF_NETWORK,
    Outcome.DENIED.value: Outcome.DENIED,
}


@dataclass(frozen=True, slots=True)
class ReviewerDecision:
    outcome: Outcome
    providers: tuple[str, ...]
    reason: str | None
    reviewer: str
    reviewer_npi: str | None
    reviewer_specialty: dict[str, Any]
    reviewer_display: str | None = None  # name and credentials (the review workspace sets it)
    authorized_until: datetime | None = None  # out of network: the authorization's end


def parse_review(body: Any) -> ReviewerDecision:
    """Read `decision`, `provider` (0..*), `reason`, `reviewer`, `reviewerNPI`, `reviewerSpecialty`."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequestError("$decide takes a Parameters resource", expression="resourceType")
    # FHIR structure first (a 400 naming the element): every value below is then of its type,
    # e.g. valueCode a string and valueReference an object, never a list or a number.
    validate_resource(body)
    params: dict[str, list[dict[str, Any]]] = {}
    for parameter in body.get("parameter") or []:
        if isinstance(parameter, dict) and isinstance(parameter.get("name"), str):
            params.setdefault(parameter["name"], []).append(parameter)

    def one(name: str, key: str) -> Any:
        values = [p.get(key) for p in params.get(name, []) if p.get(key) is not None]
        return values[0] if len(values) == 1 else None

    issues: list[Issue] = []
    decision = one("decision", "valueCode")
    if decision not in _DECISIONS:
        issues.append(
            _issue("required", "decision", f"valueCode must be one of {', '.join(_DECISIONS)}")
        )
    reviewer = (one("reviewer", "valueReference") or {}).get("reference")
    if not reviewer:
        issues.append(
            _issue(
                "required", "reviewer", "valueReference to the reviewing Practitioner is required"
            )
        )
    specialty = one("reviewerSpecialty", "valueCodeableConcept")
    if not specialty:
        issues.append(
            _issue(
                "required",
                "reviewerSpecialty",
                "the reviewer's specialty (valueCodeableConcept) is required",
            )
        )
    providers = tuple(
        p["valueReference"]["reference"]
        for p in params.get("provider", [])
        if isinstance(p.get("valueReference"), dict) and p["valueReference"].get("reference")
    )
    reason = one("reason", "valueString")
    outcome = _DECISIONS.get(decision) if isinstance(decision, str) else None
    issues.extend(_decision_issues(outcome, providers, reason))
    if issues:
        raise UnprocessableEntityError(issues=issues)
    assert outcome is not None and reviewer
    return ReviewerDecision(
        outcome=outcome,
        providers=providers,
        reason=reason,
        reviewer=reviewer,
        reviewer_npi=one("reviewerNPI", "valueString"),
        reviewer_specialty=specialty,
    )


def _issue(code: str, name: str, text: str) -> Issue:
    """An issue located at the Parameters parameter `name`."""
    where = f"Parameters.parameter.where(name='{name}')"
    return Issue(code, f"{where}: {text}", where)


def _decision_issues(
    outcome: Outcome | None, providers: tuple[str, ...], reason: str | None
) -> list[Issue]:
    """What the decision needs besides itself: approvals name providers (out of network, exactly
    one), a denial its reason."""
    issues: list[Issue] = []
    if outcome in (Outcome.APPROVED_IN_NETWORK, Outcome.APPROVED_OUT_OF_NETWORK) and not providers:
        issues.append(
            _issue(
                "business-rule", "provider", "an approval names the provider(s) the member may see"
            )
        )
    if outcome is Outcome.APPROVED_OUT_OF_NETWORK and len(providers) != 1:
        issues.append(
            _issue(
                "business-rule",
                "provider",
                "an out-of-network authorization names exactly one provider",
            )
        )
    if outcome is Outcome.DENIED and not reason:
        issues.append(
            _issue("business-rule", "reason", "a denial needs its specific reason (valueString)")
        )
    return issues
